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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass


@dataclass
class _Admission:
    """One admitted group: its prepaid slot and how many of its requests have yet to queue."""

    to_queue: int
    lock: asyncio.Lock
    prepaid: bool = True
    open: bool = True

    def queued(self) -> None:
        self.to_queue -= 1
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
    async def group(self, size: int) -> AsyncIterator[None]:
        """Admit one group of ``size`` requests: wait for the earlier groups' requests to queue and for
        a free slot, which the group's first request takes; plan and send its requests inside."""
        self._bind()
        await self._admission.acquire()
        try:
            await self._free.acquire()
        except BaseException:
            self._admission.release()
            raise
        admission = _Admission(size, self._admission)
        token = self._group.set(admission)
        try:
            yield
        finally:
            self._group.reset(token)
            admission.close()  # the group ended before all its requests queued
            if admission.prepaid:  # ... or before its first request
                self._free.release()

    @asynccontextmanager
    async def request(self) -> AsyncIterator[None]:
        """Hold a slot for one model request (the group's prepaid one first)."""
        self._bind()
        admission = self._group.get()
        prepaid = admission is not None and admission.prepaid
        if admission is not None:
            admission.prepaid = False
            admission.queued()  # the next group is admitted behind this request, not before it
        if not prepaid:
            await self._free.acquire()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._free.release()

    def _bind(self) -> None:
        """Fresh primitives for a new event loop (a process may run several in turn, one at a time)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._free, self._admission = loop, asyncio.Semaphore(self.size), asyncio.Lock()
