"""Request slots (``request_slots``): the batch stays full, and each group is planned when a slot is free for it."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from self_improve.request_slots import RequestSlots


@dataclass
class Trace:
    """What a simulated run did, in event-loop order."""

    events: list[tuple[str, str]] = field(default_factory=list)
    most_in_flight: int = 0
    in_flight_at_plan: list[int] = field(default_factory=list)


async def run_group(slots: RequestSlots, trace: Trace, name: str, durations: list[float]) -> None:
    """A host's group: plan inside the admission, then one request per duration, concurrently."""

    async def request(index: int, duration: float) -> None:
        async with slots.request():
            trace.most_in_flight = max(trace.most_in_flight, slots.in_flight)
            trace.events.append(("start", f"{name}{index}"))
            await asyncio.sleep(duration)
        trace.events.append(("end", f"{name}{index}"))

    async with slots.group(len(durations)):
        trace.in_flight_at_plan.append(slots.in_flight)
        trace.events.append(("plan", name))
        await asyncio.sleep(0)  # planning may await (a remote store)
        await asyncio.gather(*(request(index, duration) for index, duration in enumerate(durations)))


async def run_all(size: int, groups: dict[str, list[float]]) -> Trace:
    slots, trace = RequestSlots(size), Trace()
    await asyncio.gather(*(run_group(slots, trace, name, durations) for name, durations in groups.items()))
    assert slots.in_flight == 0
    return trace


def test_a_freed_slot_goes_to_the_next_group_instead_of_idling_through_the_tail() -> None:
    trace = asyncio.run(run_all(2, {"a": [0.30, 0.01], "b": [0.01, 0.01]}))
    events = trace.events
    assert events.index(("plan", "b")) < events.index(("end", "a0"))  # b starts during a's long answer
    assert events.index(("start", "b0")) < events.index(("end", "a0"))


def test_a_group_is_planned_only_when_a_slot_is_free_for_it() -> None:
    trace = asyncio.run(run_all(2, {"a": [0.05, 0.05], "b": [0.01]}))
    events = trace.events
    assert events.index(("plan", "b")) > min(events.index(("end", "a0")), events.index(("end", "a1")))


def test_the_next_group_is_planned_after_every_request_of_the_earlier_group_has_queued() -> None:
    trace = asyncio.run(run_all(1, {"a": [0.02, 0.02, 0.02], "b": [0.01]}))
    starts = [name for kind, name in trace.events if kind == "start"]
    assert starts == ["a0", "a1", "a2", "b0"]
    assert trace.events.index(("plan", "b")) > trace.events.index(("start", "a2"))


def test_a_group_that_fails_before_its_requests_gives_its_slot_back() -> None:
    async def scenario() -> Trace:
        slots, trace = RequestSlots(1), Trace()
        with pytest.raises(RuntimeError, match="planning failed"):
            async with slots.group(2):
                raise RuntimeError("planning failed")
        await run_group(slots, trace, "b", [0.0, 0.0])
        return trace

    trace = asyncio.run(scenario())
    assert [name for kind, name in trace.events if kind == "end"] == ["b0", "b1"]


def test_slots_serve_one_event_loop_after_another() -> None:
    slots = RequestSlots(1)
    for _ in range(2):
        trace = Trace()
        asyncio.run(run_group(slots, trace, "a", [0.0, 0.0]))
        assert [kind for kind, _ in trace.events].count("end") == 2


def test_fewer_than_one_slot_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"request_slots: must be >= 1, got 0"):
        RequestSlots(0)


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 4),
       groups=st.lists(st.lists(st.sampled_from([0.0, 0.001, 0.003]), min_size=1, max_size=4), min_size=1,
                       max_size=6))
def test_never_more_requests_in_flight_than_slots_and_groups_planned_in_arrival_order(
        size: int, groups: list[list[float]]) -> None:
    trace = asyncio.run(run_all(size, {f"g{index}-": durations for index, durations in enumerate(groups)}))
    assert trace.most_in_flight <= size
    assert all(count < size for count in trace.in_flight_at_plan)  # the group's own slot was free
    assert [name for kind, name in trace.events if kind == "plan"] == [f"g{index}-" for index in range(len(groups))]
    assert sum(kind == "end" for kind, _ in trace.events) == sum(map(len, groups))


async def run_shared_group(slots: RequestSlots, trace: Trace, name: str, choices: int, duration: float) -> None:
    """A host's group under ``group_request``: one request for all its ``choices``, prepaid at admission."""
    async with slots.group(1, choices):
        trace.in_flight_at_plan.append(slots.in_flight)
        trace.events.append(("plan", name))
        await asyncio.sleep(0)
        async with slots.request(choices):
            trace.most_in_flight = max(trace.most_in_flight, slots.in_flight)
            trace.events.append(("start", name))
            await asyncio.sleep(duration)
        trace.events.append(("end", name))


def test_a_request_for_g_choices_holds_g_slots_and_the_next_group_waits_for_g_free() -> None:
    async def scenario() -> Trace:
        slots, trace = RequestSlots(6), Trace()
        await asyncio.gather(run_shared_group(slots, trace, "a", 4, 0.03), run_shared_group(slots, trace, "b", 4, 0.0))
        return trace

    trace = asyncio.run(scenario())
    assert trace.most_in_flight == 4
    assert trace.events.index(("plan", "b")) > trace.events.index(("end", "a"))  # 2 free slots are not 4


async def run_streamed_group(slots: RequestSlots, trace: Trace, name: str, durations: list[float]) -> None:
    """A group under ``group_request``, streamed: one request whose choices end after their
    ``durations``, each giving its slot back as it ends."""
    async with slots.group(1, len(durations)):
        trace.events.append(("plan", name))
        async with slots.request(len(durations)) as choice_ended:
            trace.most_in_flight = max(trace.most_in_flight, slots.in_flight)
            waited = 0.0
            for duration in sorted(durations):
                await asyncio.sleep(duration - waited)
                waited = duration
                choice_ended()
                trace.events.append(("choice ended", name))
        trace.events.append(("end", name))


def test_a_streamed_choice_that_ends_gives_its_slot_to_the_next_group_at_once() -> None:
    async def scenario() -> tuple[Trace, RequestSlots]:
        slots, trace = RequestSlots(4), Trace()
        await asyncio.gather(run_streamed_group(slots, trace, "a", [0.0, 0.0, 0.05, 0.05]),
                             run_streamed_group(slots, trace, "b", [0.0, 0.0]))
        return trace, slots

    trace, slots = asyncio.run(scenario())
    assert trace.events.index(("plan", "b")) < trace.events.index(("end", "a"))  # a's two short choices made room
    assert trace.most_in_flight <= 4 and slots.in_flight == 0


def test_a_choice_ended_twice_frees_one_slot_only() -> None:
    async def scenario() -> bool:
        slots = RequestSlots(2)
        async with slots.request(1) as choice_ended:
            choice_ended()
            choice_ended()
            assert slots.in_flight == 0
        async with slots.request(2):
            try:  # both slots are taken: a third request must wait
                await asyncio.wait_for(slots.request(1).__aenter__(), timeout=0.05)
            except TimeoutError:
                return True
        return False

    assert asyncio.run(scenario())


def test_a_request_for_more_choices_than_slots_is_refused_by_name() -> None:
    async def scenario() -> None:
        async with RequestSlots(2).group(1, 4):
            pass

    with pytest.raises(ValueError, match=r"request_slots: must be >= 4, the choices of one request, got 2"):
        asyncio.run(scenario())


@settings(max_examples=40, deadline=None)
@given(size=st.integers(1, 8), data=st.data())
def test_shared_and_streamed_groups_beside_single_requests_all_finish_within_the_slots(size: int, data) -> None:
    shared = data.draw(st.lists(st.tuples(st.integers(1, size), st.sampled_from([0.0, 0.001, 0.003])),
                                min_size=1, max_size=6))
    single = data.draw(st.lists(st.lists(st.sampled_from([0.0, 0.002]), min_size=1, max_size=3), max_size=3))
    streamed = data.draw(st.lists(st.lists(st.sampled_from([0.0, 0.001, 0.003]), min_size=1, max_size=size),
                                  max_size=3))

    async def scenario() -> Trace:
        slots, trace = RequestSlots(size), Trace()
        runs = [run_shared_group(slots, trace, f"s{index}", choices, duration)
                for index, (choices, duration) in enumerate(shared)]
        runs += [run_group(slots, trace, f"g{index}-", durations) for index, durations in enumerate(single)]
        runs += [run_streamed_group(slots, trace, f"t{index}-", durations) for index, durations in enumerate(streamed)]
        await asyncio.wait_for(asyncio.gather(*runs), timeout=10)  # a deadlock fails here
        assert slots.in_flight == 0
        return trace

    trace = asyncio.run(scenario())
    assert trace.most_in_flight <= size
    assert sum(kind == "end" for kind, _ in trace.events) == len(shared) + sum(map(len, single)) + len(streamed)
