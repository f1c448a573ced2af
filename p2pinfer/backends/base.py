"""The one interface every inference engine is used through.

A backend lists its models and streams completions as `TokenDelta` events
followed by exactly one `Completion`. Cancelling is closing the stream: leaving
the `async with backend.chat(...) as events:` block (or a trio cancel scope
around it) makes the engine stop generating before the next token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Literal, Protocol

Role = Literal["system", "user", "assistant", "tool"]
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class ModelInfo:
    """What a node tells the network about one model it serves."""

    name: str
    digest: str  # 64 lowercase hex: sha256 of the model file (or the engine's digest)
    family: str = ""
    parameter_size: str = ""  # e.g. "135M", "7.6B"
    quantization: str = ""  # e.g. "Q4_1", "Q4_K_M"
    context_length: int = 0
    size_bytes: int = 0


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters, in the network's terms (see protocol.messages)."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_p: float = 0.9
    top_k: int = 40
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenDelta:
    """One piece of generated text, usually one token."""

    text: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    """Durations in nanoseconds, as Ollama reports them."""

    total_ns: int = 0
    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0


@dataclass(frozen=True)
class Completion:
    """The last event of a stream: how and why generation ended."""

    finish_reason: FinishReason
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)


StreamEvent = TokenDelta | Completion


class Backend(Protocol):
    """An inference engine. All methods raise only `p2pinfer.errors.BackendError` subclasses."""

    name: str

    async def list_models(self) -> list[ModelInfo]:
        """The models this engine serves now."""
        ...

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream a chat completion; leaving the context stops generation."""
        ...

    def generate(
        self, model: str, prompt: str, params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream a raw completion of `prompt` (no chat template)."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and loaded models."""
        ...
