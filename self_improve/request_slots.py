"""Request slots: at most ``size`` model requests in flight across groups, and each group planned
when its first request can start (``request_slots``).

A server decodes a fixed number of requests at once (llama.cpp's ``--parallel``). When the
evaluator admits whole groups (vf-eval's ``-c`` counts groups of G), a group that waits for its
last, longest answer holds G slots while G-1 idle, and the next group cannot start. With request
slots the evaluator admits every group and the slots decide instead: a freed slot goes to the
next waiting request, so the batch stays full until the run's last answers; and a group is
planned (Algorithm 1, lines 3-7) only when a slot is free for it and every earlier group's
requests are queued, so it draws from the buffer as late as it can. Groups are admitted in
arrival order and requests get slots in the order they queued (asyncio's semaphore is FIFO).
Host-free: both hosts call :meth:`RequestSlots.group` around planning and
:meth:`RequestSlots.request` around each model request.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class _Admission:
    """One admitted group: its prepaid slots and how many of its requests have yet to queue."""

    to_queue: int
    lock: asyncio.Lock
    prepaid: int
    open: bool = True

    def queued(self, requests: int) -> None:
        self.to_queue -= requests
        if self.to_queue <= 0:
            self.close()

    def close(self) -> None:
        if self.open:
            self.open = False
            self.lock.release()


class RequestSlots:
    """At most ``size`` requests in flight; groups planned in arrival order, each when a slot is free.

    Args:
        size: requests in flight at once (the server's parallel slots), >= 1.
    """

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"request_slots: must be >= 1, got {size}")
        self.size = size
        self.in_flight = 0
        """Requests holding a slot now."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._free: asyncio.Semaphore  # made by _bind, for the running event loop
        self._admission: asyncio.Lock
        self._group: ContextVar[_Admission | None] = ContextVar(f"request_slots_{id(self)}", default=None)

    @asynccontextmanager
    async def group(self, size: int, request_size: int = 1) -> AsyncIterator[None]:
        """Admit one group of ``size`` requests: wait for the earlier groups' requests to queue and
        for ``request_size`` free slots, which the group's first request takes; plan and send its
        requests inside. A request for several choices (``group_request``) is decoded in as many
        slots; taking them here, one group at a time, means no two groups each hold part of the
        slots they need while they wait for the rest."""
        self._check(request_size)
        self._bind()
        await self._admission.acquire()
        prepaid = 0
        try:
            while prepaid < request_size:
                await self._free.acquire()
                prepaid += 1
        except BaseException:
            self._release(prepaid)
            self._admission.release()
            raise
        admission = _Admission(size, self._admission, prepaid)
        token = self._group.set(admission)
        try:
            yield
        finally:
            self._group.reset(token)
            admission.close()  # the group ended before all its requests queued
            self._release(admission.prepaid)  # ... or before its first request

    @asynccontextmanager
    async def request(self, count: int = 1) -> AsyncIterator[Callable[[], None]]:
        """Hold ``count`` slots for one model request of ``count`` choices, the group's prepaid ones
        first. It yields ``choice_ended()``: a streamed request calls it as each choice ends, and
        that choice's slot goes to the next waiter at once; the rest are freed when it returns."""
        self._check(count)
        self._bind()
        admission = self._group.get()
        held = 0
        if admission is not None:
            held = min(admission.prepaid, count)
            admission.prepaid -= held
            admission.queued(count)  # the next group is admitted behind this request, not before it
        try:
            while held < count:
                await self._free.acquire()
                held += 1
            self.in_flight += count
            ended = 0

            def choice_ended() -> None:
                nonlocal held, ended
                if ended < count:  # more calls than choices free nothing more
                    ended, held = ended + 1, held - 1
                    self.in_flight -= 1
                    self._free.release()

            try:
                yield choice_ended
            finally:
                self.in_flight -= count - ended
        finally:
            self._release(held)

    def _check(self, count: int) -> None:
        if not 1 <= count <= self.size:
            raise ValueError(f"request_slots: must be >= {count}, the choices of one request, got {self.size}")

    def _release(self, count: int) -> None:
        for _ in range(count):
            self._free.release()

    def _bind(self) -> None:
        """Fresh primitives for a new event loop (a process may run several in turn, one at a time)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._free, self._admission = loop, asyncio.Semaphore(self.size), asyncio.Lock()
