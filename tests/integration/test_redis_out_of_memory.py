"""A Redis server that fills up mid-run (``maxmemory`` with ``maxmemory-policy noeviction``):
the run goes on with one warning, the store stays whole and valid, and it recovers when memory is freed."""

from __future__ import annotations

import logging

import pytest
import redis

from redis_fixture import own_server, redis_store  # noqa: F401 (fixtures)
from self_improve.buffer.store import StoreOutOfMemory
from self_improve.exit_config import ExitConfig
from self_improve.exit_loop import ExitLoop, GroupReport, Rollout
from self_improve.grouping import Task
from self_improve.viewer.snapshot import read_redis

pytestmark = pytest.mark.redis  # the real parts this file's tests start (pyproject's markers)

MAXMEMORY = 4 * 2**20
"""The server's limit: about 3 MB above the ~0.9 MB an empty Redis 7 server uses."""

RESPONSE_CHARS = 40_000
"""Characters per response: a group of 8 puts about 330 KB into the store. Above Redis's 32 KB "big argument" size, each
response gets a buffer of its own size as it arrives, so the point where the server is full does not move with
the growth of a shared input buffer (at 16,000 a group was now and then admitted again after a refusal)."""

WARNING = "buffer store unavailable"


def limit_memory(client: redis.Redis, maxmemory: int) -> None:
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", maxmemory)


def run_group(loop: ExitLoop, index: int) -> GroupReport:
    """One group of 8 distinct large responses, half of them correct (learnability 0.25)."""
    plan = loop.plan(Task(f"train-{index}", f"question {index}", "5"))
    rollouts = [Rollout(f"group {index} response {i} " + chr(97 + (index + i) % 26) * RESPONSE_CHARS,
                        float(i % 2), bool(i % 2)) for i in range(8)]
    return loop.finish(plan, rollouts)


def tokens(client: redis.Redis, prefix: str) -> int:
    return sum(1 for _ in client.scan_iter(f"{prefix}:group:*"))


def test_a_full_server_warns_once_keeps_the_store_whole_and_recovers(own_server, caplog) -> None:  # noqa: F811
    server = own_server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    limit_memory(client, MAXMEMORY)
    config = ExitConfig(buffer_size=4096, min_buffer_size=8, select_prob=0.5).resolved()
    store = redis_store(server.url, capacity=config.buffer_size, kappa=config.kappa)
    loop = ExitLoop(config, store)
    with caplog.at_level(logging.WARNING, logger="self_improve"):
        reports = [run_group(loop, index) for index in range(40)]

        observed = [report.observed for report in reports]
        full_from = observed.index(False)
        assert 3 <= full_from and not any(observed[full_from:]), observed  # full mid-run, and it stays full
        assert all(report.rewards == (0.0, 1.0) * 4 for report in reports), "every group is still scored"
        # Full: within one group of the limit (a group's own arguments count while it is checked).
        assert MAXMEMORY - 8 * RESPONSE_CHARS < client.info("memory")["used_memory"] <= MAXMEMORY + 8 * RESPONSE_CHARS
        warnings = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
        assert len(warnings) == 1, warnings
        for text in ("out of memory", "maxmemory", "maxmemory-policy noeviction", "CONFIG SET maxmemory"):
            assert text in warnings[0], warnings[0]

        # Nothing half-written: one token per counted group, every child of those groups held, all indexes agree.
        store.check_invariants()  # reads answer while the server is full (a read-only script)
        assert store.step == full_from == tokens(client, store.prefix)
        assert len(store) == 8 * full_from
        # Over the limit even at rest: every write script is refused before it runs, and a MULTI/EXEC
        # (load_state_dict) as a whole; the store is left exactly as it was.
        through_multi = store.state_dict()
        client.config_set("maxmemory", client.info("memory")["used_memory"] // 2)
        before = store.state_dict()  # reads still answer (a read-only script instead of MULTI/EXEC)
        assert before == through_multi
        assert store.metrics()["buffer_size"] == 8 * full_from
        assert len(read_redis(server.url, store.prefix).instances) == 8 * full_from  # and the viewer
        for refused in (lambda: store.observe(reports[-1].group), store.sample, lambda: store.load_state_dict(before)):
            with pytest.raises(StoreOutOfMemory, match="out of memory"):
                refused()
        after = store.state_dict()
        after.pop("rng"), before.pop("rng")  # the refused draw took its uniform number, as in an outage
        assert after == before and tokens(client, store.prefix) == full_from

        # Memory freed (limit raised): the next groups are observed again, with no new warning.
        client.config_set("maxmemory", 64 * 2**20)
        recovered = [run_group(loop, index) for index in range(40, 44)]
        assert all(report.observed for report in recovered)
        assert store.step == full_from + 4 and len(store) == 8 * (full_from + 4)
        store.check_invariants()
        assert sum(WARNING in r.getMessage() for r in caplog.records) == 1

        # A new outage warns again, once.
        limit_memory(client, MAXMEMORY)
        assert not any(run_group(loop, index).observed for index in range(44, 48))
        assert sum(WARNING in r.getMessage() for r in caplog.records) == 2
    store.check_invariants()
    client.close()


def test_a_worker_joining_a_full_server_is_refused_naming_out_of_memory(own_server) -> None:  # noqa: F811
    server = own_server.start()
    client = redis.Redis.from_url(server.url, decode_responses=True)
    limit_memory(client, 1)  # any used memory is above it
    with pytest.raises(ValueError, match=r"buffer_url: .* is out of memory .*raise the server's maxmemory"):
        redis_store(server.url)
    assert client.dbsize() == 0, "the refused worker wrote nothing"
    client.close()
