"""Running one accepted job on the backend, for the job server.

`run_generation` turns a JobRequest into a backend call and puts every token's
text into an `Outbox`, which the job server's writer drains into Chunks.
Faults (testing/faults.py) are applied here, where the tokens pass.
"""

from __future__ import annotations

import random
import string
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from p2pinfer.backends.base import (
    Backend,
    ChatMessage,
    Completion,
    Embedder,
    ModelInfo,
    TokenDelta,
)
from p2pinfer.backends.job_params import sampling_params
from p2pinfer.errors import EngineResponseError, ModelNotFound
from p2pinfer.jobs.logprobs import to_wire as logprobs_to_wire
from p2pinfer.protocol.charges import prompt_token_bound, prompt_token_estimate
from p2pinfer.protocol.embedding import encode_vectors
from p2pinfer.protocol.messages import JobRequest, TokenLogprobs
from p2pinfer.protocol.wire_types import FinishReason
from p2pinfer.testing.faults import Fault


@asynccontextmanager
async def collapsing_nursery() -> AsyncIterator[trio.Nursery]:
    """A nursery that raises a sole failure as itself rather than in an ExceptionGroup
    (trio's groups are strict), so callers can `except SomeError` as usual."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        leaf = sole_leaf(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__


def sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one non-Cancelled exception inside nested groups, if there is exactly one."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else None


FIRST_SENT_WAIT_S = 0.05
"""How long the generation waits, after the first token, for the writer to have sent it
(`Outbox.first_sent`) before it asks the engine for the next one."""


class Outbox:
    """Token texts waiting to be sent. The generation `put`s; the writer `take`s all
    that is pending at once, so tokens produced during a write leave as one Chunk.

    After the first token the generation waits (at most FIRST_SENT_WAIT_S) until the
    writer has sent it (`first_sent`): an embedded engine's worker thread stays parked
    meanwhile (backends/embedded.py), so the writer's Chunk, its Noise encryption and the
    socket write do not share the GIL and the cores with the second token's evaluation.
    """

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._logprobs: list[TokenLogprobs] = []  # of the pending parts' tokens
        self._pending_tokens = 0
        self._closed = False
        self._ready = trio.Event()
        self.tokens = 0  # put so far
        self.first_sent = trio.Event()  # set by the writer once the first token is out

    def put(self, text: str, logprobs: Sequence[TokenLogprobs] = ()) -> None:
        self._parts.append(text)
        self._logprobs.extend(logprobs)
        self._pending_tokens += 1
        self.tokens += 1
        self._ready.set()

    async def first_token_out(self, limit_s: float) -> None:
        """Right after the first `put`, wait until the writer has sent it (at most
        `limit_s`); after any other, return at once."""
        if self.tokens == 1:
            with trio.move_on_after(limit_s):
                await self.first_sent.wait()

    def take_logprobs(self) -> list[TokenLogprobs]:
        """The log probabilities of what the last `take` returned (call right after it)."""
        taken, self._logprobs = self._logprobs, []
        return taken

    def close(self) -> None:
        """No more tokens: `take` returns ("", 0) once the rest is taken."""
        self._closed = True
        self._ready.set()

    async def take(self) -> tuple[str, int]:
        """Everything pending (text, token count), waiting for at least one token; ("", 0)
        once closed and drained."""
        if not self._parts and not self._closed:
            await self._ready.wait()
        self._ready = trio.Event()
        text, count = "".join(self._parts), self._pending_tokens
        self._parts.clear()
        self._pending_tokens = 0
        return text, count


@dataclass(frozen=True)
class GenerationDone:
    """What the result reports about a generation."""

    prompt_tokens: int
    completion_tokens: int
    finish_reason: FinishReason
    prompt_ms: int = 0
    generation_ms: int = 0


def stopped(request: JobRequest, tokens: int) -> GenerationDone:
    """What the result of a generation stopped at the consumer's JobCancel claims: the
    `tokens` generated (all sent by then) and the prompt's estimate, read or being read
    when the cancel came (the engine stopped before it reported its count;
    protocol/charges.py; attack 67)."""
    return GenerationDone(prompt_token_estimate(request),
                          min(tokens, request.params.max_tokens), "cancelled")


def garbage_text(text: str, rng: random.Random) -> str:
    """Random letters as long as `text` (the `garbage` fault)."""
    return "".join(rng.choice(string.ascii_letters) for _ in text)


async def run_generation(
    backend: Backend,
    request: JobRequest,
    info: ModelInfo,
    outbox: Outbox,
    *,
    fault: Fault | None = None,
    rng: random.Random | None = None,
    first_sent_wait_s: float = FIRST_SENT_WAIT_S,
) -> GenerationDone:
    """Generate the answer to `request` with `info`'s model into `outbox` (closed at the
    end, also on error or cancellation). Raises BackendError if the engine fails. After
    the first token it waits for `outbox.first_sent` (at most `first_sent_wait_s`)."""
    kind = fault.kind if fault is not None else None
    model = fault.model if fault is not None and kind == "substitute-model" else info.name
    if request.kind == "embed":
        return await run_embedding(backend, model, request.inputs or (), outbox)
    params = sampling_params(request)
    rng = rng or random.Random()
    limit = max(1, request.params.max_tokens // 2) if kind == "truncate" else 0
    if request.kind == "chat":
        turns = [ChatMessage(t.role, t.content, t.tool_calls, t.tool_name)
                 for t in request.messages]
        stream = backend.chat(model, turns, params)
    else:
        stream = backend.generate(model, request.prompt or "", params)
    done: Completion | None = None
    try:
        async with stream as events:
            async for event in events:
                if isinstance(event, Completion):
                    done = event
                    break
                text = event.text if isinstance(event, TokenDelta) else ""
                if kind == "garbage":
                    text = garbage_text(text, rng)
                elif kind == "slow" and fault is not None:
                    await trio.sleep(fault.count / 1000)
                top = request.params.top_logprobs
                probs = event.logprobs if isinstance(event, TokenDelta) and top is not None \
                    else ()
                outbox.put(text, [logprobs_to_wire(p, top or 0) for p in probs])
                await outbox.first_token_out(first_sent_wait_s)
                if limit and outbox.tokens >= limit:
                    break  # leaving the context stops the engine
    finally:
        outbox.close()
    if kind == "truncate" and done is None:
        # The cheat: cut short, yet claim a natural end and bill the whole budget.
        chars = sum(len(t.content) for t in request.messages) + len(request.prompt or "")
        return GenerationDone(max(1, chars // 4), request.params.max_tokens, "stop")
    if done is None:
        raise EngineResponseError("the engine's stream ended without a final event")
    return claimed(request, done, kind == "inflate")


def claimed(request: JobRequest, done: Completion, inflate: bool = False) -> GenerationDone:
    """What the result claims for the engine's `done`; with `inflate` (the fault), the
    most a consumer's byte bounds allow (`ProviderJob.finish` clamps to them)."""
    if inflate:
        return GenerationDone(prompt_token_bound(request), request.params.max_tokens,
                              done.finish_reason)
    return GenerationDone(
        prompt_tokens=done.usage.prompt_tokens,
        completion_tokens=done.usage.completion_tokens,
        finish_reason=done.finish_reason,
        prompt_ms=done.timings.prompt_eval_ns // 1_000_000,
        generation_ms=done.timings.eval_ns // 1_000_000,
    )


async def run_embedding(
    backend: Backend, model: str, inputs: Sequence[str], outbox: Outbox
) -> GenerationDone:
    """Embed `inputs` into `outbox` as one piece (protocol/embedding.py); the charge is
    for the input tokens only."""
    try:
        if not isinstance(backend, Embedder):
            raise ModelNotFound(f"model '{model}' does not embed on this engine")
        embeddings = await backend.embed(model, inputs)
        if len(embeddings.vectors) != len(inputs):
            raise EngineResponseError(
                f"the engine gave {len(embeddings.vectors)} vectors for {len(inputs)} inputs")
        outbox.put(encode_vectors(embeddings.vectors))
    finally:
        outbox.close()
    return GenerationDone(prompt_tokens=embeddings.prompt_tokens, completion_tokens=0,
                          finish_reason="stop")
