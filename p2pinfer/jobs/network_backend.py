"""The network as a `Backend`: list_models is what providers advertise, chat/generate run
jobs through `JobClient` with failover. So `api.server.create_app(NetworkBackend(...))`
is an Ollama/OpenAI gateway into the network.

Which provider served a request, its job id and the charge are published on
`current_job_meta` (a ContextVar holding a `NetworkJobSlot` the caller put there), so
an HTTP layer can turn them into response headers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from p2pinfer.backends import tools
from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    Embeddings,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    Timings,
    TokenDelta,
    Usage,
)
from p2pinfer.backends.output_format import check_grammar
from p2pinfer.errors import (
    AllProvidersFailedError,
    BadRequestError,
    EngineResponseError,
    EngineUnavailable,
    InsufficientCreditError,
    JobTimeoutError,
    ModelNotFound,
    NetworkError,
    NoProvidersError,
    ValidationError,
)
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import TextDelta
from p2pinfer.jobs.logprobs import from_wire as logprobs_from_wire
from p2pinfer.jobs.net_job import NetJob
from p2pinfer.protocol import ChatTurn, JobParams
from p2pinfer.protocol.embedding import decode_vectors
from p2pinfer.protocol.schema import to_wire


@dataclass
class NetworkJobSlot:
    """Filled in while a request runs: who serves it, its job id and, at the end, the charge."""

    provider: str | None = None
    job_id: str | None = None
    charged: int | None = None
    failovers: int = 0
    price_per_1k: int | None = None  # what the serving provider accepted the job at
    path: str | None = None  # `direct`, `relayed` (through a relay) or `moved` (off it)


current_job_meta: ContextVar[NetworkJobSlot | None] = ContextVar("p2pinfer_job_meta", default=None)

DEFAULT_MAX_TOKENS = 1024  # when the caller sets no limit (Ollama's num_predict -1)
MAX_TURNS = 1024  # JobRequest.messages' wire cap
#: Inputs per embed job: 32 vectors of the longest length a consumer reads (16,384
#: float32 values, 87 KiB of base64 each) stay under its 4 M-character output limit.
EMBED_BATCH = 32


def job_params(params: SamplingParams, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> JobParams:
    """The wire's parameters for a backend request, clamped to the wire's bounds."""
    return JobParams(
        max_tokens=params.max_tokens if params.max_tokens > 0 else default_max_tokens,
        temperature=float(min(max(params.temperature, 0.0), 10.0)),
        top_p=float(min(max(params.top_p, 0.0), 1.0)),
        top_k=max(params.top_k, 0),
        seed=None if params.seed is None else params.seed % 2**32,
        stop=tuple(s for s in params.stop if s),  # over the wire's 16: a 400 (wire_job)
        # Neutral values stay off the wire (older providers read the request); others are
        # carried as given, and one out of the wire's range is a 400 (wire_job).
        min_p=_unless(params.min_p, 0.0),
        repeat_penalty=_unless(params.repeat_penalty, 1.0),
        presence_penalty=_unless(params.presence_penalty, 0.0),
        frequency_penalty=_unless(params.frequency_penalty, 0.0),
        output_format=params.output_format,
        top_logprobs=params.top_logprobs,
        tools=params.tools,
        tool_choice=params.tool_choice,
    )


def _unless(value: float, neutral: float) -> float | None:
    return None if value == neutral else float(value)


class NetworkBackend:
    """A Backend whose engine is the network (see module doc)."""

    name = "network"

    def __init__(self, client: JobClient, *, default_max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        self.client = client
        self._default_max_tokens = default_max_tokens

    async def list_models(self) -> list[ModelInfo]:
        """Every model some live provider advertises (its cheapest provider's details)."""
        catalog = self.client.net.catalog
        out: list[ModelInfo] = []
        for name in catalog.models():
            providers = catalog.providers(name)
            if not providers:
                continue
            offer = providers[0].offer
            out.append(ModelInfo(
                name=name, digest=offer.digest, parameter_size=offer.parameter_size,
                quantization=offer.quantization, context_length=offer.context_length,
                family=offer.family or "", size_bytes=offer.size_bytes or 0,
                modified_at_ms=offer.modified_at or 0,
                embedding_length=next((p.offer.embedding_length for p in providers
                                       if p.offer.embedding_length), 0),
            ))
        return out

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        return self._stream(model, list(messages), params)

    def generate(
        self, model: str, prompt: str, params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        return self._stream(model, prompt, params)

    async def aclose(self) -> None:
        """Nothing to release: the client belongs to the node."""

    async def embed(self, model: str, inputs: Sequence[str]) -> Embeddings:
        """Vectors from providers that embed with `model`: one embed job per
        EMBED_BATCH inputs, in order (the job meta names the last job; its charge is
        the sum)."""
        meta = current_job_meta.get()
        for text in inputs:
            wire_job(text, SamplingParams(), self._default_max_tokens)  # 400s, as a prompt's
        vectors: list[tuple[float, ...]] = []
        tokens = charged = 0
        for start in range(0, len(inputs), EMBED_BATCH):
            batch = list(inputs[start:start + EMBED_BATCH])
            try:
                outcome = await self.client.embed(model, batch)
                got = decode_vectors(outcome.text, len(batch))
            except NetworkError as exc:
                raise backend_error(exc) from exc
            except InsufficientCreditError as exc:
                raise EngineUnavailable(str(exc)) from exc
            except ValidationError as exc:  # the provider's receipted output is malformed
                raise EngineResponseError(f"the provider's embeddings: {exc}") from exc
            if vectors and got and len(got[0]) != len(vectors[0]):
                raise EngineResponseError("providers gave vectors of different lengths")
            vectors.extend(tuple(v) for v in got)
            tokens += outcome.prompt_tokens
            charged += outcome.charged
            if meta is not None:
                meta.provider, meta.job_id = outcome.provider, outcome.job_id
                meta.charged, meta.failovers = charged, len(outcome.failovers)
                meta.path = outcome.path
        return Embeddings(tuple(vectors), tokens)

    @asynccontextmanager
    async def _stream(
        self, model: str, input: str | list[ChatMessage], params: SamplingParams
    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        meta = current_job_meta.get()
        wire_input, wire_params = wire_job(input, params, self._default_max_tokens)
        try:
            async with self.client.job(model, wire_input, wire_params) as job:
                # Errors before the first token are raised on entering, as Backend says.
                first = await job.next_delta()
                yield _Events(job, first, meta)
        except NetworkError as exc:
            raise backend_error(exc) from exc
        except InsufficientCreditError as exc:
            raise EngineUnavailable(str(exc)) from exc


def wire_job(
    input: str | Sequence[ChatMessage], params: SamplingParams, default_max_tokens: int
) -> tuple[str | list[ChatTurn], JobParams]:
    """The request as the wire carries it; BadRequestError (HTTP 400) for what the wire
    cannot carry: a field over its cap (a stop string over 256 characters, a message over
    262,144, an output format's schema over its bounds, or one llama.cpp cannot follow)
    or text with a lone surrogate (not encodable as UTF-8)."""
    texts = [input] if isinstance(input, str) else [m.content for m in input]
    for text in (*texts, *params.stop):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequestError(
                "the request's text is not valid Unicode (a lone surrogate such as \\ud800)"
            ) from None
    try:
        wire_params = job_params(params, default_max_tokens)
        to_wire(wire_params)
        check_grammar(wire_params.output_format)  # a schema no engine here could follow
        check_grammar(tools.grammar_format(wire_params.tools, wire_params.tool_choice))
        if isinstance(input, str):
            to_wire(ChatTurn("user", input))  # a prompt has a turn's cap
            return input, wire_params
        if len(input) > MAX_TURNS:
            raise ValidationError(f"{len(input)} messages, more than {MAX_TURNS}")
        turns = [ChatTurn(m.role, m.content, m.tool_calls, m.tool_name or None)
                 for m in input]
        for turn in turns:
            to_wire(turn)
        return turns, wire_params
    except ValidationError as exc:
        raise BadRequestError(f"the network cannot carry this request: {exc}") from None


def backend_error(exc: NetworkError) -> EngineUnavailable | ModelNotFound | EngineResponseError:
    """The Backend error (and so the HTTP status) for a network failure."""
    if isinstance(exc, NoProvidersError):
        return ModelNotFound(str(exc))
    if isinstance(exc, AllProvidersFailedError | JobTimeoutError):
        return EngineUnavailable(str(exc))
    return EngineResponseError(str(exc))


class _Events:
    """TokenDeltas from the job, then one Completion."""

    def __init__(self, job: NetJob, first: TextDelta | None, meta: NetworkJobSlot | None) -> None:
        self._job = job
        self._first = first
        self._first_pending = True
        self._meta = meta
        self._delivered = False
        self._done = False
        self._charged = False
        self._update_meta()

    def __aiter__(self) -> _Events:
        return self

    def _update_meta(self) -> None:
        if self._meta is not None:
            self._meta.provider = self._job.provider
            self._meta.job_id = self._job.job_id
            self._meta.failovers = len(self._job.failovers)
            self._meta.price_per_1k = self._job.price_per_1k
            self._meta.path = self._job.path
            # The charge only with the Completion: a short job is often complete when its
            # first piece is read, and a streamed reply's headers (built at that piece)
            # must not carry a charge one time and not the next.
            if self._done and self._job.outcome is not None and not self._charged:
                # Added, not set: a request of several jobs (OpenAI's `n`) pays for all.
                self._charged = True
                self._meta.charged = (self._meta.charged or 0) + self._job.outcome.charged

    async def __anext__(self) -> StreamEvent:
        if self._done:
            raise StopAsyncIteration
        if self._first_pending:
            self._first_pending = False
            delta = self._first
        else:
            try:
                delta = await self._job.next_delta()
            except NetworkError as exc:
                raise backend_error(exc) from exc
        if delta is None:
            return self._completion()
        restart, self._delivered = delta.restart and self._delivered, True
        self._update_meta()
        return TokenDelta(delta.text, logprobs_from_wire(delta.logprobs), restart=restart)

    def _completion(self) -> Completion:
        self._done = True
        self._update_meta()
        outcome = self._job.outcome
        assert outcome is not None
        reason = outcome.finish_reason
        return Completion(
            finish_reason="length" if reason == "length" else "stop",
            usage=Usage(outcome.prompt_tokens, outcome.completion_tokens),
            timings=Timings(total_ns=int(outcome.total_ms * 1e6)),
        )
