"""The Lua scripts behind ``redis_buffer.RedisBuffer`` and the invariants of the keys they keep.

Redis runs one script at a time and never half of one, so a group's update
(rescore the parent, evict, insert the children, count the step) is seen by
every other worker entirely or not at all, and a client killed mid-call
leaves nothing half-written.

Key layout (``KEYS`` in this order, all under the store's prefix):

1. ``meta``: hash ``version``, ``capacity``, ``kappa``, ``store_responses``.
2. ``state``: hash ``step`` (groups observed), ``next_id``, ``depth_sum``,
   ``score_sum``, ``clients`` (clients connected so far: numbers each
   client's sampling stream).
3. ``scores``: sorted set, member = id zero-padded to 16 digits, score = S.
   Equal scores sort by member, so the first member is the lowest score and,
   among ties, the oldest id: the instance a full store replaces.
4. ``body``: hash id -> JSON of ``instance_id``, ``created_step``, ``task``,
   ``iterates``, ``iterate_correct``, ``parent_id`` (never changes).
5. ``scored``: hash id -> step at which the score was last set.
6. ``sampled``: hash id -> times sampled.
7. ``info``: hash id -> JSON ``[dedupe key, task_id, depth, slot]``.
8. ``keys``: hash dedupe key -> id.
9. ``tasks``: hash task_id -> instances held for it.
10. ``leaves``: hash slot -> id. Slots are 0..size-1; a new instance takes the
    slot of the one it evicts.
11. ``tree``: hash node -> weight, a sum tree over slots: with P the least
    power of two >= capacity, node P + slot holds exp(kappa (S - 0.25)) (at
    most ~1, so it cannot overflow) and node n < P holds node 2n + node 2n+1.
    A draw walks down from the root in log2(P) steps, so sampling costs
    O(log N) instead of a pass over all N scores. Slots are ``ExitBuffer``'s
    slots (same insertion and replacement), and the walk finds the slot where
    the cumulative weight passes u * total as ``numpy``'s ``choice`` does, so
    both stores draw the same instances from the same generator state.

Memory (``maxmemory`` with ``maxmemory-policy noeviction``): every script opens with a
``#!lua`` shebang. A script that declares no ``no-writes`` flag is one Redis 7 refuses
whole, before its first line runs, while the server's memory is above ``maxmemory``
(``OOM command not allowed when used memory > 'maxmemory'``); once started it runs to the
end, even if its writes take the memory past the limit. So a full server refuses a group
or a draw entirely and never keeps half of one. Without the shebang Redis would instead
refuse the script's first write that may add memory, which is only safe while that write
comes before every other write (an ``HDEL`` or ``ZREM`` first would let the rest through
over the limit): the shebang does not depend on the order. The read-only scripts declare
``no-writes``, so metrics and snapshots (``read_snapshot``: ``check_invariants``, ``state_dict``)
still answer while the server is full. Needs Redis >= 7.0.

Scores travel as the client's ``repr(float)`` strings and are handed to
``ZADD`` unchanged; numbers the scripts compute are written with ``%.17g``:
a Lua number turned into a string by default keeps only 14 digits.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import redis

from self_improve.buffer.state import MAX_SCORE, response_key
from self_improve.buffer.sum_tree import TINY_TOTAL

KEY_NAMES: tuple[str, ...] = ("meta", "state", "scores", "body", "scored", "sampled", "info", "keys", "tasks",
                              "leaves", "tree")
"""The suffixes of the store's keys, in ``KEYS`` order."""

_WRITES = "#!lua\n"
"""The shebang of a script that writes: refused whole while memory is above ``maxmemory``."""

_READS = "#!lua flags=no-writes\n"
"""The shebang of a script that only reads: runs while memory is above ``maxmemory``."""

_KEYS = """local meta, state, scores, body, scored, sampled, info, keys, tasks, leaves, tree =
    KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
local function fmt(x) return string.format('%.17g', x) end
"""

_CHECK_CONFIG = """
local CONFIG = {'version', 'capacity', 'kappa', 'store_responses'}

-- Compare the configuration in ARGV[1..4] with meta, creating meta when absent.
-- Returns nil when it matches, 'created', or {'mismatch', field, stored value}.
local function check_config()
    local stored = redis.call('HMGET', meta, unpack(CONFIG))
    if not stored[1] then
        for i, field in ipairs(CONFIG) do redis.call('HSET', meta, field, ARGV[i]) end
        return 'created'
    end
    for i, field in ipairs(CONFIG) do
        if stored[i] ~= ARGV[i] then return {'mismatch', field, stored[i]} end
    end
    return nil
end
"""

_TREE = """
local function tree_width(capacity)
    local width = 1
    while width < capacity do width = width * 2 end
    return width
end

-- Leaves written since the last flush; flush recomputes their ancestors level by level.
local dirty = {}
local function set_leaf(width, kappa, slot, score)
    redis.call('HSET', tree, width + slot, fmt(math.exp(kappa * (tonumber(score) - 0.25))))
    dirty[width + slot] = true
end
local function flush()
    local level = dirty
    while next(level) do
        local parents = {}
        for node in pairs(level) do
            if node > 1 then parents[math.floor(node / 2)] = true end
        end
        for node in pairs(parents) do
            local children = redis.call('HMGET', tree, 2 * node, 2 * node + 1)
            redis.call('HSET', tree, node, fmt((tonumber(children[1]) or 0) + (tonumber(children[2]) or 0)))
        end
        level = parents
    end
    dirty = {}
end
"""

CONFIGURE = _WRITES + _KEYS + _CHECK_CONFIG + """
local result = check_config()
if type(result) == 'table' then return result end
return {result or 'ok', redis.call('HINCRBY', state, 'clients', 1) - 1}
"""
"""Create or check the configuration and number the new client (0, 1, ...): returns
``{'ok' or 'created', index}`` or ``{'mismatch', field, stored}``. ARGV: version,
capacity, kappa, store_responses."""

OBSERVE = _WRITES + _KEYS + _CHECK_CONFIG + _TREE + """
-- ARGV: 4 config values, token, parent member ('' for none), parent dedupe key, S,
-- then 5 per child: dedupe key, score, task_id, depth, body JSON without its opening brace.
local config = check_config()
if type(config) == 'table' then return config end
if not redis.call('SET', KEYS[12], '1', 'NX', 'EX', 3600) then return {'duplicate'} end
local capacity, kappa = tonumber(ARGV[2]), tonumber(ARGV[3])
local width = tree_width(capacity)
local parent, parent_key, group_score = ARGV[6], ARGV[7], ARGV[8]
local step = redis.call('HINCRBY', state, 'step', 1)
local score_sum = tonumber(redis.call('HGET', state, 'score_sum')) or 0

if parent ~= '' then
    local held = redis.call('HGET', info, parent)
    if held then
        local record = cjson.decode(held)
        if record[1] == parent_key then
            score_sum = score_sum - tonumber(redis.call('ZSCORE', scores, parent)) + tonumber(group_score)
            redis.call('ZADD', scores, 'XX', group_score, parent)
            redis.call('HSET', scored, parent, step)
            set_leaf(width, kappa, record[4], group_score)
        end
    end
end

-- Drop an instance from every index and return its slot.
local function evict(member, score)
    local key, task, depth, slot = unpack(cjson.decode(redis.call('HGET', info, member)))
    for _, hash in ipairs({body, scored, sampled, info}) do redis.call('HDEL', hash, member) end
    redis.call('ZREM', scores, member)
    redis.call('HDEL', keys, key)
    if redis.call('HINCRBY', tasks, task, -1) <= 0 then redis.call('HDEL', tasks, task) end
    redis.call('HINCRBY', state, 'depth_sum', 0 - depth)  -- not -depth: Lua writes -0
    score_sum = score_sum - tonumber(score)
    return slot
end

for i = 9, #ARGV, 5 do
    local key, score, task, depth, fragment = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local slot = nil
    if redis.call('HEXISTS', keys, key) == 0 then
        local size = redis.call('ZCARD', scores)
        if size < capacity then
            slot = size
        else
            local lowest = redis.call('ZRANGE', scores, 0, 0, 'WITHSCORES')
            if tonumber(score) >= tonumber(lowest[2]) then slot = evict(lowest[1], lowest[2]) end
        end
    end
    if slot then
        local id = redis.call('HINCRBY', state, 'next_id', 1) - 1
        local member = string.format('%016d', id)
        redis.call('ZADD', scores, score, member)
        redis.call('HSET', body, member,
            string.format('{"instance_id": %d, "created_step": %d, ', id, step) .. fragment)
        redis.call('HSET', scored, member, step)
        redis.call('HSET', sampled, member, 0)
        redis.call('HSET', info, member, cjson.encode({key, task, tonumber(depth), slot}))
        redis.call('HSET', keys, key, member)
        redis.call('HINCRBY', tasks, task, 1)
        redis.call('HINCRBY', state, 'depth_sum', depth)
        redis.call('HSET', leaves, slot, member)
        set_leaf(width, kappa, slot, score)
        score_sum = score_sum + tonumber(score)
    end
end
flush()
redis.call('HSET', state, 'score_sum', fmt(score_sum))
return {config or 'ok'}
"""
"""Apply one group (Algorithm 1, lines 9-13); returns ``{'ok'}``, ``{'created'}`` (the
configuration was missing: the server lost its data), ``{'duplicate'}`` (a retry of a
group already applied) or ``{'mismatch', field, stored}``. KEYS[12] is the group's token."""

SAMPLE = _WRITES + _KEYS + _TREE + """
-- ARGV: capacity, kappa, u in [0, 1). Draws member i with probability exp(kappa S_i) / sum_j exp(kappa S_j).
-- KEYS[12] is the draw's id: a retry of a draw already made (its reply lost) returns the same
-- instance without counting it again.
if redis.call('ZCARD', scores) == 0 then return false end
local drawn = redis.call('GET', KEYS[12])
if drawn and redis.call('HEXISTS', body, drawn) == 1 then
    return {redis.call('HGET', body, drawn), redis.call('ZSCORE', scores, drawn), redis.call('HGET', scored, drawn),
            redis.call('HGET', sampled, drawn)}
end
local capacity, kappa, u = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local width = tree_width(capacity)
local total = tonumber(redis.call('HGET', tree, 1))
local member
if total >= """ + repr(TINY_TOTAL) + """ then
    local target, node = u * total, 1
    while node < width do
        local left = tonumber(redis.call('HGET', tree, 2 * node)) or 0
        if target < left then
            node = 2 * node
        else
            target, node = target - left, 2 * node + 1
        end
    end
    member = redis.call('HGET', leaves, node - width)
else  -- the same walk over the slots in order, with weights relative to the top score
    local top = tonumber(redis.call('ZRANGE', scores, -1, -1, 'WITHSCORES')[2])
    local size = redis.call('ZCARD', scores)
    local members, weights, sum = {}, {}, 0
    for slot = 0, size - 1 do
        members[slot] = redis.call('HGET', leaves, slot)
        weights[slot] = math.exp(kappa * (tonumber(redis.call('ZSCORE', scores, members[slot])) - top))
        sum = sum + weights[slot]
    end
    local target, slot = u * sum, 0
    while slot < size - 1 and target >= weights[slot] do
        target, slot = target - weights[slot], slot + 1
    end
    member = members[slot]
end
local times = redis.call('HINCRBY', sampled, member, 1)
redis.call('SET', KEYS[12], member, 'EX', 300)
return {redis.call('HGET', body, member), redis.call('ZSCORE', scores, member), redis.call('HGET', scored, member),
        times}
"""
"""One weighted draw and its ``times_sampled`` increment; ``nil`` when empty. Returns body,
score, scored step, times sampled."""

REBUILD_TREE = _WRITES + _KEYS + _TREE + """
-- ARGV: capacity, kappa. Recompute every weight from ``leaves`` and ``scores`` (after a load).
local width = tree_width(tonumber(ARGV[1]))
redis.call('DEL', tree)
local flat = redis.call('HGETALL', leaves)
for i = 1, #flat, 2 do
    set_leaf(width, tonumber(ARGV[2]), tonumber(flat[i]), redis.call('ZSCORE', scores, flat[i + 1]))
end
flush()
"""
"""Rebuild the sum tree (``load_state_dict`` runs it inside its transaction)."""

METRICS = _READS + _KEYS + """
local size = redis.call('ZCARD', scores)
local top = redis.call('ZRANGE', scores, -1, -1, 'WITHSCORES')
local counters = redis.call('HMGET', state, 'score_sum', 'depth_sum')
return {size, counters[1] or '0', top[2] or '0', counters[2] or '0', redis.call('HLEN', tasks)}
"""
"""Size, sum of scores, max score, sum of depths and distinct tasks: O(log N) on the server."""

SNAPSHOT = _READS + """
-- KEYS: the keys to read; ARGV[i] 'z' (a sorted set, read with its scores) or 'h' (a hash).
local out = {}
for i, key in ipairs(KEYS) do
    if ARGV[i] == 'z' then out[i] = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
    else out[i] = redis.call('HGETALL', key) end
end
return out
"""
"""One consistent snapshot of several keys, each as a flat list of field, value (member, score):
``read_snapshot``'s way while the server's memory is full."""


def read_snapshot(client: redis.Redis, prefix: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """One consistent snapshot of the store's keys ``names`` (``KEY_NAMES`` suffixes under ``prefix``),
    each as a dict (``scores``: member -> float), read in one MULTI/EXEC. A server whose memory is
    full refuses to queue a transaction, even of reads; the snapshot is then read by the read-only
    ``SNAPSHOT`` script instead (2-3x the server's time of the MULTI/EXEC, so not always)."""
    keys = [f"{prefix}:{name}" for name in names]
    pipe = client.pipeline(transaction=True)
    for name, key in zip(names, keys, strict=True):
        pipe.zrange(key, 0, -1, withscores=True) if name == "scores" else pipe.hgetall(key)
    try:
        return {name: dict(reply) for name, reply in zip(names, pipe.execute(), strict=True)}
    except redis.OutOfMemoryError:
        pass
    reply = client.register_script(SNAPSHOT)(keys=keys, args=["z" if name == "scores" else "h" for name in names])
    snapshot = {}
    for name, flat in zip(names, reply, strict=True):
        pairs = zip(flat[::2], flat[1::2], strict=True)
        snapshot[name] = {field: float(value) for field, value in pairs} if name == "scores" else dict(pairs)
    return snapshot


def dedupe_key(task_id: str, latest: str) -> str:
    """The store's de-duplication key: a 128-bit digest of ``buffer.state.response_key``, the
    file store's key (task_id, normalised latest iterate)."""
    return hashlib.blake2b(json.dumps(list(response_key(task_id, latest))).encode(), digest_size=16).hexdigest()


SCORE_TOLERANCE: float = 1e-9
"""How far above ``MAX_SCORE`` a stored score may lie: ``Group`` accepts returns up to 1e-9
beyond ``[0, max_return]``."""


def layout_problems(snap: dict[str, dict[str, Any]], capacity: int, kappa: float) -> list[str]:
    """Every broken invariant of one snapshot of the keys (``KEY_NAMES`` -> contents).

    Checked: size <= capacity; every index holds the same ids; each body's
    id is its own and below next_id; scores finite in [0, 0.25]; one id
    per (task, normalised response) key, matching the body; task counts,
    depth and score sums match; steps no later than ``step``; slots are
    0..size-1 and each tree node is its leaf's weight or its children's sum.
    """
    problems: list[str] = []
    members, scores, state = set(snap["scores"]), snap["scores"], snap["state"]
    if len(members) > capacity:
        problems.append(f"size {len(members)} above capacity {capacity}")
    for name in ("body", "scored", "sampled", "info"):
        if set(snap[name]) != members:
            problems.append(f"{name}: ids {sorted(set(snap[name]) ^ members)[:5]} differ from the scores index")
    if sorted(map(int, snap["leaves"])) != list(range(len(members))) or set(snap["leaves"].values()) != members:
        problems.append("leaves: the slots are not 0..size-1 over the held ids")
    step, next_id = int(state.get("step", 0)), int(state.get("next_id", 0))
    keys: dict[str, str] = {}
    tasks: Counter[str] = Counter()
    for member in sorted(members & set(snap["body"]) & set(snap["info"]) & set(snap["scored"])):
        raw, (key, task_id, depth, slot) = json.loads(snap["body"][member]), json.loads(snap["info"][member])
        if raw["instance_id"] != int(member) or not raw["instance_id"] < next_id:
            problems.append(f"body {member}: instance_id {raw['instance_id']} (next_id {next_id})")
        if not (math.isfinite(scores[member]) and 0.0 <= scores[member] <= MAX_SCORE + SCORE_TOLERANCE):
            problems.append(f"scores {member}: {scores[member]} outside [0, 0.25]")
        if not raw["created_step"] <= int(snap["scored"][member]) <= step:
            problems.append(f"scored {member}: step {snap['scored'][member]} outside [created, {step}]")
        latest = raw["iterates"][-1] if raw["iterates"] else ""
        if (key, task_id, depth) != (dedupe_key(raw["task"]["task_id"], latest), raw["task"]["task_id"],
                                     max(len(raw["iterates"]) - 1, 0)) or snap["leaves"].get(str(slot)) != member:
            problems.append(f"info {member}: {snap['info'][member]} does not match the body or the slots")
        if keys.setdefault(key, member) != member:
            problems.append(f"keys: {keys[key]} and {member} share a task and response")
        tasks[task_id] += 1
    if snap["keys"] != keys:
        problems.append("keys: the key index does not match the held instances")
    if {task: int(count) for task, count in snap["tasks"].items()} != dict(tasks):
        problems.append("tasks: the task counts do not match the held instances")
    depths = [json.loads(record)[2] for record in snap["info"].values()]
    if int(state.get("depth_sum", 0)) != sum(depths) or not math.isclose(
            float(state.get("score_sum", 0)), math.fsum(scores.values()), abs_tol=1e-9):
        problems.append(f"state: depth_sum or score_sum {state} does not match the held instances")
    return problems + _tree_problems(snap, capacity, kappa)


def _tree_problems(snap: dict[str, dict[str, Any]], capacity: int, kappa: float) -> list[str]:
    width = 1 << (capacity - 1).bit_length()
    tree = {int(node): float(value) for node, value in snap["tree"].items()}
    problems = [f"tree: leaf of slot {slot} is not exp(kappa (S - 0.25))" for slot, member in snap["leaves"].items()
                if not math.isclose(tree.get(width + int(slot), math.nan),
                                    math.exp(kappa * (snap["scores"].get(member, math.nan) - 0.25)),
                                    rel_tol=1e-12)]
    problems += [f"tree: node {node} is not the sum of its children" for node, value in tree.items()
                 if node < width and value != tree.get(2 * node, 0.0) + tree.get(2 * node + 1, 0.0)]
    stray = [node for node in tree if node >= width and str(node - width) not in snap["leaves"]]
    if stray or (snap["leaves"] and 1 not in tree):
        problems.append(f"tree: leaves {stray[:5]} of empty slots, or no root")
    return problems
