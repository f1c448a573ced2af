"""The one interface every inference engine is used through.

A backend lists its models and streams completions as `TokenDelta` events
followed by exactly one `Completion`. Cancelling is closing the stream: leaving
the `async with backend.chat(...) as events:` block (or a trio cancel scope
around it) makes the engine stop generating before the next token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from p2pinfer.errors import EngineResponseError

Role = Literal["system", "user", "assistant", "tool"]

#: True in work that a paid job may pre-empt (verify.engine_gate): an engine that can
#: split its work finer (the embedded engine's scoring) does, so that cancelling the
#: work frees the engine sooner.
preemptible_work: ContextVar[bool] = ContextVar("preemptible_work", default=False)
FinishReason = Literal["stop", "length", "cancelled", "error"]


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str
    #: An assistant turn's tool calls: JSON text of [{"name", "arguments"}] (protocol/tools.py).
    tool_calls: str | None = None
    #: A tool turn's function name ("" when the client gave none).
    tool_name: str | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What a node tells the network about one model it serves."""

    name: str  # Ollama-style `model:tag`, e.g. "smollm2:135m"
    # 64 lowercase hex: sha256 of the model file (or the engine's digest); "" if unknown
    digest: str
    family: str = ""
    parameter_size: str = ""  # e.g. "135M", "7.6B"
    quantization: str = ""  # e.g. "Q4_1", "Q4_K_M"
    context_length: int = 0
    size_bytes: int = 0
    #: True when chat() applies the model's own chat template. Base models without one
    #: (e.g. Gemma 3 270M) say False: an Ollama-style non-raw generate then sends the
    #: prompt as is instead of wrapping it in a user message.
    chat_template: bool = True
    modified_at_ms: int = 0  # when the model file last changed (Unix ms); 0 if unknown
    #: The length of the vectors `Embedder.embed` gives for this model; 0: it does not embed.
    embedding_length: int = 0


@dataclass(frozen=True)
class SamplingParams:
    """Sampling parameters, in the network's terms (see protocol.messages)."""

    max_tokens: int = 256  # <= 0: no limit (generate until end of text or of the context)
    temperature: float = 0.8
    top_p: float = 0.9
    top_k: int = 40
    seed: int | None = None  # None: random
    stop: tuple[str, ...] = ()
    min_p: float = 0.0
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    #: Structured output: "json" or a JSON schema's text (backends/output_format.py).
    output_format: str | None = None
    #: Log probabilities: None off; k (0..20) each token's, with its k likeliest rivals.
    top_logprobs: int | None = None
    #: Tool calling: the tools' JSON text and the choice among them (protocol/tools.py).
    tools: str | None = None
    tool_choice: str | None = None


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log probability under the model (natural log, before any
    sampling setting), with the likeliest tokens at its place (`top`, best first)."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class TokenDelta:
    """One piece of generated text, usually one token; with `top_logprobs` asked, the
    log probabilities of the tokens it holds. `restart`: the answer so far is void and
    starts over with this piece (the network backend's failover: the next provider
    answered differently); a reply not yet sent drops what it gathered, a streamed one
    cannot take back what it sent (`restarted_mid_stream`)."""

    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    restart: bool = False


def restarted_mid_stream() -> EngineResponseError:
    """What a streamed reply ends with when its answer restarts (`TokenDelta.restart`)."""
    return EngineResponseError(
        "a provider failed mid-answer and the next one answered differently")


@dataclass(frozen=True)
class Usage:
    """Token counts; `completion_tokens` excludes the end-of-generation token."""

    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Timings:
    """Durations in nanoseconds, as Ollama reports them (0: not measured)."""

    total_ns: int = 0
    load_ns: int = 0  # loading the model for this request
    prompt_eval_ns: int = 0  # reading the prompt, up to the first generated token
    eval_ns: int = 0  # from the first generated token to the last


@dataclass(frozen=True)
class Completion:
    """The last event of a stream: how and why generation ended."""

    finish_reason: FinishReason
    usage: Usage = field(default_factory=Usage)
    timings: Timings = field(default_factory=Timings)


StreamEvent = TokenDelta | Completion


@dataclass(frozen=True)
class TextScore:
    """How an engine's model rates a given answer to a prompt, token by token (teacher
    forced: each answer token given the prompt and the answer tokens before it).

    In thousandths of a nat, integers: `logprobs_milli[i]` is the log probability of the
    answer's i-th token, `gaps_milli[i]` how far its logit lies below the best logit there
    (0: the model's own greedy choice); `end_logprob_milli` the log probability that
    generation ends right after the answer."""

    logprobs_milli: tuple[int, ...]
    gaps_milli: tuple[int, ...]
    end_logprob_milli: int
    prompt_tokens: int = 0

    @property
    def tokens(self) -> int:
        """Answer tokens scored (the engine's own tokenization of the text)."""
        return len(self.logprobs_milli)


@runtime_checkable
class TextScorer(Protocol):
    """An engine that can score a text (`TextScore`) besides generating one. The embedded
    engine can; engines behind HTTP APIs without per-token logits cannot. Both methods
    return None when `answer` cannot be turned back into the model's own tokens."""

    async def score_chat(
        self, model: str, messages: Sequence[ChatMessage], answer: str
    ) -> TextScore | None:
        """Score `answer` as the assistant's reply to `messages` (chat template applied)."""
        ...

    async def score_generate(self, model: str, prompt: str, answer: str) -> TextScore | None:
        """Score `answer` as the raw continuation of `prompt`."""
        ...


@dataclass(frozen=True)
class Embeddings:
    """Vectors for a list of texts, in their order (L2-normalised, as Ollama's)."""

    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int = 0


@runtime_checkable
class Embedder(Protocol):
    """An engine that embeds text (models whose `ModelInfo.embedding_length` is set)."""

    async def embed(self, model: str, inputs: Sequence[str]) -> Embeddings:
        """One vector per input; BackendError subclasses as `Backend` raises them
        (ModelNotFound for a model that does not embed)."""
        ...


class Backend(Protocol):
    """An inference engine. All methods raise only `p2pinfer.errors.BackendError` subclasses.

    `chat()`/`generate()` raise `ModelNotFound` (and other errors the engine reports
    before its first token) when the context is entered, not from the iterator, so a
    caller can still choose an HTTP status or another provider. An error after the
    first token is raised by the iterator (`EngineResponseError`/`EngineUnavailable`).
    The iterator yields `TokenDelta`s, then exactly one `Completion`, then stops.
    """

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


EventStream = AbstractAsyncContextManager[AsyncIterator[StreamEvent]]


class WrappedBackend:
    """A Backend that passes every stream of `inner` through `_wrap(model, open_stream)`:
    the base of the backends that watch or gate another engine's streams."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name

    async def list_models(self) -> list[ModelInfo]:
        return await self.inner.list_models()

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> EventStream:
        return self._wrap(model, lambda: self.inner.chat(model, messages, params))

    def generate(self, model: str, prompt: str, params: SamplingParams) -> EventStream:
        return self._wrap(model, lambda: self.inner.generate(model, prompt, params))

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def embed(self, model: str, inputs: Sequence[str]) -> Embeddings:
        """The inner engine's embeddings (not watched: no tokens stream)."""
        if not isinstance(self.inner, Embedder):
            from p2pinfer.errors import ModelNotFound

            raise ModelNotFound(f"{self.inner.name} does not embed text")
        return await self.inner.embed(model, inputs)

    def _wrap(self, model: str, open_stream: Callable[[], EventStream]) -> EventStream:
        raise NotImplementedError
