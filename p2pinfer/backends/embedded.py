"""The embedded engine: llama.cpp in this process, through llama-cpp-python.

Generation runs in a worker thread (`trio.to_thread.run_sync` under a
`CapacityLimiter`: `parallel` generations at once, 1 by default, never two on
the same model); tokens come back through a trio memory channel. Leaving the stream's context sets a
`threading.Event` that the token loop checks after every sampled token, so the
engine stops within one token. `tokens_generated` counts every token sampled,
which is how tests prove it. What runs in the worker thread (loading, the token
loop, scoring) is `backends/embedded_thread.py`.

The first token is the one exception to "the worker never waits for the event
loop": after it, the worker waits (at most `first_token_wait_s`) until the
caller comes back for the next event, i.e. has passed the first one on (the
HTTP server has written it to the client). Meanwhile the event loop has the
GIL and the worker's core to itself, instead of sharing them with the next
token's evaluation: on 2 cores this took 1-2 ms off the time to first token
through `engine serve`, at the cost of that much delay before the second token.

By default every request starts from an empty KV cache (`cache_prompt=False`):
reusing a cached prompt prefix changes batch shapes and so, slightly, the
logits, and a verifier needs the same request to give the same tokens whatever
ran before. Set `cache_prompt=True` for lower latency on repeated prefixes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio

from p2pinfer.backends.base import (
    ChatMessage,
    Embeddings,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TextScore,
    preemptible_work,
)
from p2pinfer.backends.embedded_thread import EngineThreadWork, LoadedModel
from p2pinfer.backends.gguf_meta import (
    GGUFMetadata,
    MetadataValue,
    human_parameter_count,
    read_gguf_metadata,
)
from p2pinfer.backends.llama_embed import EmbeddingEngine
from p2pinfer.backends.llama_thread import (
    Events,
    Failure,
    Job,
    Outbox,
    single_exception,
)
from p2pinfer.backends.models import DigestCache, ModelSource, normalize_name
from p2pinfer.backends.tools import prompt_messages
from p2pinfer.errors import EngineResponseError, ModelNotFound
from p2pinfer.tasks import beside

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Tokens per decode when scoring work a paid job may pre-empt: at SmolLM2's ~300 prompt
#: tokens/s on 2 cores, about 0.2 s before a cancelled pass lets the engine go.
PREEMPTIBLE_SCORE_CHUNK = 64


def _embedding_length(meta: GGUFMetadata) -> int:
    value = meta.values.get(f"{meta.architecture}.embedding_length")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def llama_cpp_available() -> bool:
    """True when llama-cpp-python (the `embedded` extra) is installed."""
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


class EmbeddedBackend(EngineThreadWork):
    """llama.cpp in-process. Models load on first use and stay loaded."""

    name = "embedded"

    def __init__(
        self,
        models: Sequence[ModelSource],
        *,
        cache_dir: Path | None = None,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        parallel: int = 1,
        cache_prompt: bool = False,
        first_token_wait_s: float = 0.05,
        llama_options: dict[str, Any] | None = None,
        embedding: bool = False,
    ) -> None:
        self._models: dict[str, LoadedModel] = {}
        for source in models:
            self._models.setdefault(source.name.lower(), LoadedModel(source))
        self._digests = DigestCache(cache_dir / "digests.json" if cache_dir else None)
        self._n_ctx, self._n_threads, self._n_batch = n_ctx, n_threads, n_batch
        self._cache_prompt = cache_prompt
        self._first_token_wait_s = first_token_wait_s
        # More `llama_cpp.Llama` settings (flash_attn, type_k, ...): what an operator may
        # tune, and what bench/verify_thresholds.py varies as honest drift.
        self._llama_options = dict(llama_options or {})
        self._limiter = trio.CapacityLimiter(parallel)
        self._count_lock = threading.Lock()
        self._tokens_generated = 0
        self._running = 0
        # With `embedding`, every model also embeds text (a second instance, llama_embed).
        self._embedding = embedding
        self._embedders: dict[str, EmbeddingEngine] = {}

    @property
    def tokens_generated(self) -> int:
        """Tokens sampled by this engine since it started, all streams together."""
        return self._tokens_generated

    @property
    def running(self) -> int:
        """Generations whose worker thread has not finished yet."""
        return self._running

    def _count_token(self) -> None:
        with self._count_lock:
            self._tokens_generated += 1

    def _lookup(self, model: str) -> LoadedModel:
        entry = self._models.get(normalize_name(model).lower())
        if entry is None:
            raise ModelNotFound(f"model '{model}' not found")
        return entry

    # -- model information -------------------------------------------------

    def _describe(self, entry: LoadedModel) -> ModelInfo:
        with entry.lock:
            if entry.info is None:
                path = entry.source.path
                try:
                    stat = path.stat()
                except OSError as exc:
                    raise ModelNotFound(f"model file {path} is gone: {exc.strerror}") from None
                meta = read_gguf_metadata(path)
                entry.meta = meta
                entry.info = ModelInfo(
                    name=entry.source.name,
                    digest=self._digests.digest(path),
                    family=meta.architecture,
                    parameter_size=human_parameter_count(meta.parameter_count),
                    quantization=meta.quantization,
                    context_length=meta.context_length,
                    size_bytes=stat.st_size,
                    chat_template=bool(meta.chat_template),
                    modified_at_ms=stat.st_mtime_ns // 1_000_000,
                    embedding_length=_embedding_length(meta) if self._embedding else 0,
                )
            return entry.info

    async def list_models(self) -> list[ModelInfo]:
        """Every configured model, with its digest (hashed once, then cached)."""
        entries = list(self._models.values())
        known = [e.info for e in entries if e.info is not None]
        if len(known) == len(entries):
            return known  # the usual case: no thread hop on the request path
        return await trio.to_thread.run_sync(lambda: [self._describe(e) for e in entries])

    async def model_metadata(self, model: str) -> dict[str, MetadataValue]:
        """The model file's GGUF key/values (arrays left out), plus its parameter count."""
        entry = self._lookup(model)
        await trio.to_thread.run_sync(self._describe, entry)
        assert entry.meta is not None
        values = dict(entry.meta.values)
        values["general.parameter_count"] = entry.meta.parameter_count
        return values

    # -- generation ----------------------------------------------------------

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream a chat completion through the model's own chat template (tools offered
        in a system message: SmolLM2's template renders none; backends/tools.py)."""
        payload = prompt_messages(messages, params.tools, params.tool_choice)
        return self._stream(model, "chat", payload, params)

    def generate(
        self, model: str, prompt: str, params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        """Stream a raw completion of `prompt` (no template)."""
        return self._stream(model, "generate", prompt, params)

    async def score_chat(
        self, model: str, messages: Sequence[ChatMessage], answer: str
    ) -> TextScore | None:
        """Score `answer` as the reply to `messages` (see `backends/llama_score.py`);
        None when the text cannot be turned back into the model's tokens."""
        payload = prompt_messages(messages, None, None)
        return await self._score(model, "chat", payload, answer)

    async def score_generate(self, model: str, prompt: str, answer: str) -> TextScore | None:
        """Score `answer` as the raw continuation of `prompt`."""
        return await self._score(model, "generate", prompt, answer)

    async def _score(
        self, model: str, kind: str, payload: object, answer: str
    ) -> TextScore | None:
        entry = self._lookup(model)
        # Like a generation: in a worker thread, under the same limiter and model lock.
        # Cancelled, the pass stops before its next chunk (None); pre-emptible work
        # decodes in chunks of PREEMPTIBLE_SCORE_CHUNK tokens so that is soon.
        chunk = PREEMPTIBLE_SCORE_CHUNK if preemptible_work.get() else None
        return await self._stoppable(
            lambda stop: self._score_in_thread(entry, kind, payload, answer, stop, chunk))

    async def embed(self, model: str, inputs: Sequence[str]) -> Embeddings:
        """One L2-normalised vector per input (only with `embedding=True`). Cancelled,
        the engine stops after the batch it is decoding (llama_embed.py, attack 82)."""
        entry = self._lookup(model)
        if not self._embedding:
            raise ModelNotFound(f"model '{model}' does not embed on this engine")
        key = entry.source.name.lower()
        embedder = self._embedders.get(key)
        if embedder is None:
            embedder = self._embedders[key] = EmbeddingEngine(
                entry.source.name, entry.source.path, n_ctx=self._n_ctx,
                n_threads=self._n_threads, options=self._llama_options)
        embeddings = await self._stoppable(partial(embedder.embed, list(inputs)),
                                           abandon=True)
        if embeddings is None:  # not reached: the stop is set only on a cancel (abandoned)
            raise EngineResponseError(f"{model} stopped embedding")
        return embeddings

    async def _stoppable(
        self, work: Callable[[threading.Event], _T | None], *, abandon: bool = False
    ) -> _T | None:
        """`work(stop)` in a worker thread under the engine's limiter; a cancellation
        sets `stop` and waits for `work` to notice it and return, or with `abandon`
        returns at once (the thread holds the limiter until it has noticed: an embedding
        finishes the batch it is decoding, and a job stopped by its consumer gets its
        `cancelled` result without waiting for that batch)."""
        stop = threading.Event()

        async def stop_when_cancelled(_: trio.CancelScope) -> None:
            try:
                await trio.sleep_forever()
            finally:
                stop.set()

        async def run() -> _T | None:
            # The ignore: trio_typing's stale stubs predate `abandon_on_cancel` (trio 0.23).
            return await trio.to_thread.run_sync(  # type: ignore[call-arg]
                work, stop, limiter=self._limiter, abandon_on_cancel=abandon)

        return await beside(stop_when_cancelled, run)

    async def aclose(self) -> None:
        """Forget loaded models (llama.cpp frees them when they are collected)."""
        for embedder in self._embedders.values():
            embedder.close()
        for entry in self._models.values():
            with entry.lock:
                llama, entry.llama = entry.llama, None
            if llama is not None:
                llama.close()

    @asynccontextmanager
    async def _stream(
        self, model: str, kind: str, payload: object, params: SamplingParams
    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        entry = self._lookup(model)
        job = Job(started_ns=time.perf_counter_ns())
        # Unbounded: the worker thread must never wait for the event loop (that
        # would slow generation); a stream holds at most max_tokens small events.
        send, receive = trio.open_memory_channel[object](math.inf)
        outbox = Outbox(send, trio.lowlevel.current_trio_token())

        async def run() -> None:
            self._running += 1
            try:
                await trio.to_thread.run_sync(
                    self._generate_in_thread,
                    entry,
                    kind,
                    payload,
                    params,
                    job,
                    outbox,
                    limiter=self._limiter,
                )
            finally:
                self._running -= 1
                # Queued after every event the thread sent (run_sync_soon is FIFO).
                outbox.close()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run)
                try:
                    # Wait for the first event so that errors before the first token
                    # (loading, a prompt longer than the context) raise here.
                    try:
                        first = await receive.receive()
                    except trio.EndOfChannel:
                        raise EngineResponseError("the engine stopped without an answer") from None
                    if isinstance(first, Failure):
                        raise first.error
                    yield Events(first, receive, on_next=job.first_taken.set)
                finally:
                    job.stop.set()
                    job.first_taken.set()
                    receive.close()
        except BaseExceptionGroup as group:
            # The caller's block runs inside this nursery; give its exception (or
            # ours) back as it was raised, not wrapped in a group.
            single = single_exception(group)
            raise single from single.__cause__
