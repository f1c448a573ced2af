"""Paid jobs first: background work (re-running reported jobs) gets the engine only when
no paid job wants it, and gives it back the moment one does.

The job server's engine is wrapped in `EngineGate.paid(backend)`: each stream it opens
counts as a paid job for as long as it is open. `EngineGate.background()` is how the
report receiver runs a re-run: it waits (bounded) until no paid stream has been open
for `quiet_s`, then runs its block in a cancel scope that the next paid stream cancels
(`Preempted`). The embedded engine stops within one token once its stream is left, so a
paid job waits at most one token, or one scoring pass (one batched forward pass over a
text that fits the engine's context), for a re-run it pre-empts. A re-run never holds
one of the job server's model slots.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from p2pinfer.backends.base import Backend, ChatMessage, ModelInfo, SamplingParams, StreamEvent
from p2pinfer.errors import P2PInferError

#: How long the engine must have been free of paid streams before a re-run starts:
#: jobs arriving back to back (a gateway's client) leave gaps shorter than this.
QUIET_S = 2.0
#: How long a re-run waits for such a quiet moment before it is given up.
WAIT_S = 60.0

EventStream = AbstractAsyncContextManager[AsyncIterator[StreamEvent]]


class Preempted(P2PInferError):
    """A paid job wanted the engine: the background work was stopped (or never started)."""


class EngineGate:
    """Counts the paid streams open on an engine and keeps background work out of their way."""

    def __init__(self, *, quiet_s: float = QUIET_S, wait_s: float = WAIT_S) -> None:
        self.quiet_s, self.wait_s = quiet_s, wait_s
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

    @asynccontextmanager
    async def background(self) -> AsyncIterator[None]:
        """Run the block once the engine is idle; Preempted if it is not within `wait_s`
        or a paid stream opens while the block runs (the block is cancelled)."""
        with trio.move_on_after(self.wait_s):
            while not self.idle():
                if self.paid_open:
                    await self._changed.wait()
                else:
                    quiet_for = trio.current_time() - self._last_paid
                    await trio.sleep(max(0.0, self.quiet_s - quiet_for))
        if not self.idle():
            raise Preempted("the engine was busy with paid jobs")
        scope = trio.CancelScope()
        self._background.add(scope)
        try:
            with scope:
                yield
        finally:
            self._background.discard(scope)
        if scope.cancelled_caught:
            self.preempted += 1
            raise Preempted("a paid job pre-empted it")


class PaidBackend:
    """A Backend whose streams count as paid jobs on an `EngineGate`."""

    def __init__(self, inner: Backend, gate: EngineGate) -> None:
        self.inner, self._gate = inner, gate
        self.name = inner.name

    async def list_models(self) -> list[ModelInfo]:
        return await self.inner.list_models()

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> EventStream:
        return self._paid(lambda: self.inner.chat(model, messages, params))

    def generate(self, model: str, prompt: str, params: SamplingParams) -> EventStream:
        return self._paid(lambda: self.inner.generate(model, prompt, params))

    async def aclose(self) -> None:
        await self.inner.aclose()

    @asynccontextmanager
    async def _paid(self, open_stream: Callable[[], EventStream]
                    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        async with self._gate.paid_stream(), open_stream() as events:
            yield events
