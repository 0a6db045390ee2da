"""A ``sample()`` whose reply is lost after the server ran it is retried and counted once."""

from __future__ import annotations

import pytest
import redis

from redis_fixture import group_for, redis_server, redis_store  # noqa: F401 (fixture)
from self_improve.grouping import Task


@pytest.mark.redis
def test_a_draw_retried_after_a_lost_reply_counts_once(redis_server) -> None:
    store = redis_store(redis_server.url)
    store.observe(group_for(Task("t", "q", "1"), None, ("a", "b", "c"), (False, False, True), (0.0, 1.0, 1.0)))
    script, lost = store._sample, []

    def reply_lost_once(*args, **kwargs):
        reply = script(*args, **kwargs)  # the server ran the draw ...
        if not lost:
            lost.append(reply)
            raise redis.ConnectionError("reply lost")  # ... and the client never heard back
        return reply

    store._sample = reply_lost_once
    drawn = store.sample()
    assert lost and drawn.times_sampled == 1
    assert sum(instance.times_sampled for instance in store.instances()) == 1
    store._sample = script
    assert store.sample().times_sampled >= 1 and sum(i.times_sampled for i in store.instances()) == 2
    store.check_invariants()
