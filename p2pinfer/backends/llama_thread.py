"""The worker-thread side of the embedded engine: token hooks and the hand-off to trio.

`Job` is shared by the trio task and the worker thread; `TokenHook` sees every
sampled token (counts it, notes end-of-generation, says whether to go on);
`Outbox` passes events to trio without ever waiting for the event loop;
`Events` is what a stream's caller iterates.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

import trio

from p2pinfer.backends.base import Completion, StreamEvent, TokenDelta, TokenLogprob
from p2pinfer.errors import BackendError, EngineResponseError


@dataclass
class Job:
    """One generation, shared between the trio side and the worker thread."""

    stop: threading.Event = field(default_factory=threading.Event)
    # Set once the caller came back for the event after the first (it passed that one on).
    first_taken: threading.Event = field(default_factory=threading.Event)
    prompt_tokens: int = 0
    sampled: int = 0
    ended_on_eog: bool = False
    started_ns: int = 0
    first_token_ns: int = 0
    # With log probabilities asked: those of the tokens sampled since the last delta.
    logprobs: list[TokenLogprob] = field(default_factory=list)


@dataclass(frozen=True)
class Failure:
    """An error to raise in the caller's task."""

    error: BackendError


class TokenHook:
    """Called by the engine for each sampled token; says whether to go on."""

    def __init__(self, job: Job, is_eog: Callable[[int], bool], count: Callable[[], None],
                 measure: Callable[[int], TokenLogprob] | None = None) -> None:
        self._job, self._is_eog, self._count = job, is_eog, count
        self._measure = measure  # a token's log probability, when they were asked for

    def prompt(self, n_tokens: int) -> None:
        self._job.prompt_tokens = n_tokens

    def token(self, token: int) -> bool:
        job = self._job
        if job.sampled == 0:
            job.first_token_ns = time.perf_counter_ns()
        job.sampled += 1
        self._count()
        if self._is_eog(token):
            job.ended_on_eog = True
        elif self._measure is not None:
            job.logprobs.append(self._measure(token))
        return not job.stop.is_set()


class PromptCapture:
    """A hook that keeps the prompt's tokens and lets nothing be generated: how a scorer
    gets exactly the tokens a generation would start from (chat template included).
    The generator raises `PromptCaptured` at once, which ends the completion call."""

    def __init__(self) -> None:
        self.tokens: list[int] | None = None


class PromptCaptured(Exception):
    """Raised through llama-cpp-python's completion call once the prompt is captured."""


def hooked_llama_class() -> Any:
    """A `Llama` whose token generator reports each token to `token_hook` and can stop."""
    import llama_cpp

    class HookedLlama(llama_cpp.Llama):  # type: ignore[misc, unused-ignore]
        token_hook: TokenHook | PromptCapture | None = None

        def generate(  # type: ignore[override, unused-ignore]
            self, tokens: Sequence[int], *args: Any, **kwargs: Any
        ) -> Iterator[int]:
            # llama-cpp-python's completion loop pulls tokens from here; returning
            # ends it before the next token is evaluated.
            hook = self.token_hook
            if isinstance(hook, PromptCapture):
                hook.tokens = list(tokens)
                raise PromptCaptured
            inner = super().generate(tokens, *args, **kwargs)
            if hook is None:
                yield from inner
                return
            hook.prompt(len(tokens))
            try:
                for token in inner:
                    if not hook.token(token):
                        return
                    yield token
            finally:
                inner.close()

    return HookedLlama


class Events:
    """The iterator a stream yields: events from the worker thread, in order.

    `on_next` is called once, when the caller first asks for an event after the first
    (so it has dealt with that one).
    """

    def __init__(
        self,
        first: object,
        receive: trio.MemoryReceiveChannel[object],
        *,
        on_next: Callable[[], None] | None = None,
    ) -> None:
        self._next: object | None = first
        self._receive = receive
        self._on_next = on_next
        self._done = False

    def __aiter__(self) -> Events:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._done:
            raise StopAsyncIteration
        item = self._next
        self._next = None
        if item is None:
            on_next, self._on_next = self._on_next, None
            if on_next is not None:
                on_next()
            try:
                item = await self._receive.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError):
                self._done = True
                raise EngineResponseError("the engine stopped without finishing") from None
        if isinstance(item, Failure):
            self._done = True
            raise item.error
        if isinstance(item, Completion):
            self._done = True
        assert isinstance(item, TokenDelta | Completion)
        return item


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one exception in a (nested) group, or the group itself if there are several."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    if len(leaves) != 1:
        return group
    return leaves[0]


class Outbox:
    """Hands events from the worker thread to trio without waiting for the loop."""

    def __init__(
        self, send: trio.MemorySendChannel[object], token: trio.lowlevel.TrioToken
    ) -> None:
        self._send, self._token = send, token

    def _deliver(self, item: object) -> None:
        # If the reader left, the item is dropped; the worker sees job.stop and ends.
        with suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._send.send_nowait(item)

    def put(self, item: object) -> None:
        """From the worker thread: queue `item` for the reader (never blocks)."""
        self._token.run_sync_soon(self._deliver, item)

    def close(self) -> None:
        """From the trio thread, after the worker is done: end of the stream."""
        self._token.run_sync_soon(self._send.close)
