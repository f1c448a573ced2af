"""Paid jobs first: background work (re-running reported jobs) gets the engine only when
no paid job wants it, and gives it back the moment one does.

The job server's engine is wrapped in `EngineGate.paid(backend)`: each stream it opens
counts as a paid job for as long as it is open. `EngineGate.run(work)` is how the
report receiver runs a re-run: it waits until no paid stream has been open for
`quiet_s`, then runs `work` in a cancel scope that the next paid stream cancels, and
starts it again at the next quiet moment, all within `wait_s` (else `Preempted`).
After `max_preemptions` pre-emptions, the next attempt is not pre-empted: work that
only fits between paid jobs would otherwise never finish on a busy engine (a re-run of
a fraud report, while check jobs keep arriving every few seconds); a paid job then
waits for that one attempt, whose length the caller bounds (`max_run_s`, and for
re-runs `verify.reports`' limits and budget).

The embedded engine stops within one token once its stream is left, and a cancelled
scoring pass of pre-emptible work before its next 64-token chunk
(`backends.base.preemptible_work`), so a paid job waits at most one token or one
chunk, or the prompt of the re-run's own generation (which llama.cpp evaluates in one
go: verify.reports bounds it to RECHECK_MAX_PROMPT_CHARS), for a re-run it pre-empts.
A re-run never holds one of the job server's model slots.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

import trio

from p2pinfer.backends.base import (
    Backend,
    EventStream,
    StreamEvent,
    WrappedBackend,
    preemptible_work,
)
from p2pinfer.errors import P2PInferError

#: How long the engine must have been free of paid streams before a re-run starts:
#: a consumer's next job usually follows its last within this (one round trip and its
#: own think time), so a re-run does not start only to be pre-empted at once.
QUIET_S = 0.5
#: How long a re-run may wait for quiet moments and run, pre-emptions included, before
#: it is given up (so also the longest one re-run can take).
WAIT_S = 60.0

T = TypeVar("T")


class Preempted(P2PInferError):
    """A paid job wanted the engine: the background work was stopped (or never started)."""


@dataclass
class EngineTime:
    """Seconds background work held the engine (what a re-run budget is charged), on the
    gate's `charge_clock`."""

    seconds: float = 0.0


class EngineGate:
    """Counts the paid streams open on an engine and keeps background work out of their way."""

    def __init__(self, *, quiet_s: float = QUIET_S, wait_s: float = WAIT_S,
                 charge_clock: Callable[[], float] | None = None) -> None:
        """`charge_clock` measures what background work is charged (`EngineTime`): wall
        time by default; an engine in this process passes `time.process_time`, the CPU
        it really spent, which wall time overstates when other processes share the
        cores (six nodes on two in bench/verify.py: a 1 s re-run took 25 s of wall)."""
        self.quiet_s, self.wait_s = quiet_s, wait_s
        self._charge_clock = charge_clock or trio.current_time
        self.paid_open = 0
        self.preempted = 0  # background blocks a paid stream cancelled
        self._last_paid = -float("inf")  # trio time the last paid stream closed
        self._changed = trio.Event()
        self._background: set[trio.CancelScope] = set()

    def paid(self, backend: Backend) -> Backend:
        """`backend`, with every stream it opens counted as a paid job."""
        return PaidBackend(backend, self)

    @asynccontextmanager
    async def paid_stream(self) -> AsyncIterator[None]:
        """Mark the block as a paid job on the engine: background work stops now."""
        self.paid_open += 1
        for scope in self._background:
            scope.cancel()
        try:
            yield
        finally:
            self.paid_open -= 1
            self._last_paid = trio.current_time()
            self._changed.set()
            self._changed = trio.Event()

    def idle(self) -> bool:
        """No paid stream open, and none for `quiet_s`."""
        return self.paid_open == 0 and trio.current_time() - self._last_paid >= self.quiet_s

    async def run(
        self, work: Callable[[], Awaitable[T]], used: EngineTime | None = None, *,
        max_run_s: float | None = None, max_preemptions: int | None = None,
    ) -> T:
        """`work()` in the background: started once the engine is idle, cancelled when a
        paid stream opens, and started again at the next idle moment, all within
        `wait_s`, and running `max_run_s` at most, attempts together. After
        `max_preemptions` pre-emptions (None: never) the next attempt runs to its end
        or to those limits (wall time). Preempted if it did not finish within them.
        `used` gets what `work` ran on the charge clock (waiting for the engine not
        counted). `work` is called once per attempt: to keep progress across attempts it
        must remember what it did."""
        used = used if used is not None else EngineTime()
        run_limit = self.wait_s if max_run_s is None else min(self.wait_s, max_run_s)
        preemptions, ran = 0, 0.0
        with trio.move_on_after(self.wait_s):
            while ran < run_limit:
                await self._until_idle()
                scope = trio.CancelScope(deadline=trio.current_time() + run_limit - ran)
                if max_preemptions is None or preemptions < max_preemptions:
                    self._background.add(scope)
                started, charged_from = trio.current_time(), self._charge_clock()
                mark = preemptible_work.set(True)
                try:
                    with scope:
                        return await work()
                finally:
                    preemptible_work.reset(mark)
                    self._background.discard(scope)
                    ran += trio.current_time() - started
                    used.seconds += max(0.0, self._charge_clock() - charged_from)
                if scope.cancel_called and trio.current_time() < scope.deadline:
                    self.preempted += 1
                    preemptions += 1
            raise Preempted(f"ran its {run_limit:.1f} s of budget, not done")
        raise Preempted(f"not done within {self.wait_s:g} s, paid jobs first")

    async def _until_idle(self) -> None:
        while not self.idle():
            if self.paid_open:
                await self._changed.wait()
            else:
                quiet_for = trio.current_time() - self._last_paid
                await trio.sleep(max(0.0, self.quiet_s - quiet_for))


class PaidBackend(WrappedBackend):
    """A Backend whose streams count as paid jobs on an `EngineGate`."""

    def __init__(self, inner: Backend, gate: EngineGate) -> None:
        super().__init__(inner)
        self._gate = gate

    @asynccontextmanager
    async def _wrap(self, model: str, open_stream: Callable[[], EventStream]
                    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        async with self._gate.paid_stream(), open_stream() as events:
            yield events
