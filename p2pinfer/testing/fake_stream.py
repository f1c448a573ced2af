"""FakeStreamBackend: a FAKE engine for scale and churn testnets, not inference.

`--backend fake-stream=TOKENS_PER_S` serves the models named with `--models`
(default `fake:latest`) and answers every request with fixed filler tokens at
a steady rate, so fifty provider processes fit on one small machine. The text
is meaningless; the node logs a WARNING at start so nobody mistakes it for an
engine. Cancelling (leaving the context) stops the stream before the next token.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    Timings,
    TokenDelta,
    Usage,
)
from p2pinfer.errors import ModelNotFound, UsageError

log = logging.getLogger(__name__)

FAKE_MODEL_NAME = "fake:latest"
FAKE_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
DEFAULT_MAX_TOKENS = 64  # for max_tokens <= 0 (no limit): a fake must still end


def parse_rate(argument: str) -> float:
    """TOKENS_PER_S from `fake-stream=TOKENS_PER_S`; UsageError unless a positive number."""
    try:
        rate = float(argument)
    except ValueError:
        rate = 0.0
    if not rate > 0 or rate > 100_000:
        raise UsageError(f"bad --backend fake-stream={argument!r}: use fake-stream=TOKENS_PER_S")
    return rate


class FakeStreamBackend:
    """A fake engine: fixed filler tokens at `tokens_per_s`, for `models` (names)."""

    name = "fake-stream"

    def __init__(self, tokens_per_s: float, models: Sequence[str] = ()) -> None:
        self.tokens_per_s = tokens_per_s
        names = [m.split("=", 1)[0] for m in models] or [FAKE_MODEL_NAME]
        self._models = [
            ModelInfo(name=n if ":" in n else f"{n}:latest",
                      digest=hashlib.sha256(f"p2pinfer/fake/{n}".encode()).hexdigest(),
                      family="fake", parameter_size="0", quantization="none",
                      context_length=2048)
            for n in names
        ]
        log.warning("FAKE backend fake-stream: no inference, filler text at %.1f tokens/s "
                    "for %s (scale and churn testing only)", tokens_per_s,
                    ",".join(m.name for m in self._models))

    async def list_models(self) -> list[ModelInfo]:
        """The configured model names, with digests derived from the names."""
        return list(self._models)

    def _check(self, model: str) -> None:
        wanted = {model.lower(), f"{model.lower()}:latest"}
        if not any(m.name.lower() in wanted for m in self._models):
            raise ModelNotFound(f"model '{model}' not found")

    @asynccontextmanager
    async def _stream(self, model: str, prompt_chars: int, params: SamplingParams
                      ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        self._check(model)
        count = params.max_tokens if params.max_tokens > 0 else DEFAULT_MAX_TOKENS
        yield self._tokens(count, prompt_chars)

    async def _tokens(self, count: int, prompt_chars: int) -> AsyncIterator[StreamEvent]:
        started = trio.current_time()
        period = 1.0 / self.tokens_per_s
        for i in range(count):
            # Paced against the start, so a slow scheduler does not lower the rate.
            await trio.sleep_until(started + (i + 1) * period)
            yield TokenDelta(FAKE_WORDS[i % len(FAKE_WORDS)] + " ")
        elapsed_ns = int((trio.current_time() - started) * 1e9)
        yield Completion("length", Usage(max(1, prompt_chars // 4), count),
                         Timings(total_ns=elapsed_ns, eval_ns=elapsed_ns))

    def chat(self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
             ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream `params.max_tokens` filler tokens (64 when unlimited)."""
        return self._stream(model, sum(len(m.content) for m in messages), params)

    def generate(self, model: str, prompt: str, params: SamplingParams
                 ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """As chat(), for a raw prompt."""
        return self._stream(model, len(prompt), params)

    async def aclose(self) -> None:
        """Nothing to release."""
