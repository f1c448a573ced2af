"""The embedded engine's worker-thread side: loading a model, generating and scoring.

Everything here runs in a worker thread (`EmbeddedBackend` in `backends/embedded.py`
sends it there with `trio.to_thread.run_sync` and mixes `EngineThreadWork` in): it
never waits for the event loop except once, after the first token (see that
module's doc), and talks back only through the `Outbox`.
"""

from __future__ import annotations

import logging
import threading
import time
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from p2pinfer.backends.base import (
    Completion,
    FinishReason,
    ModelInfo,
    SamplingParams,
    TextScore,
    Timings,
    TokenDelta,
    Usage,
)
from p2pinfer.backends.gguf_meta import GGUFMetadata
from p2pinfer.backends.llama_logprobs import token_logprob
from p2pinfer.backends.llama_thread import Failure, Job, Outbox, TokenHook, hooked_llama_class
from p2pinfer.backends.models import ModelSource
from p2pinfer.backends.output_format import grammar_text
from p2pinfer.backends.tools import grammar_format
from p2pinfer.errors import BackendError, EngineResponseError, EngineUnavailable

log = logging.getLogger(__name__)


class LoadedModel:
    """A model source with its metadata, digest and (once loaded) its engine."""

    def __init__(self, source: ModelSource) -> None:
        self.source = source
        self.meta: GGUFMetadata | None = None
        self.info: ModelInfo | None = None
        self.llama: Any = None
        self.lock = threading.Lock()  # guards info and loading
        self.busy = threading.Lock()  # held while the model generates
        self.end_ids: list[int] | None = None  # end-of-generation tokens, for scoring


class EngineThreadWork:
    """Work done in the engine's worker threads; the settings are `EmbeddedBackend`'s."""

    _n_ctx: int
    _n_threads: int | None
    _n_batch: int
    _cache_prompt: bool
    _first_token_wait_s: float
    _llama_options: dict[str, Any]

    if TYPE_CHECKING:  # EmbeddedBackend's own: counts a sampled token
        def _count_token(self) -> None: ...

    def _load(self, entry: LoadedModel) -> tuple[Any, int]:
        """The loaded engine for `entry` and how long loading took now (0 if it was loaded)."""
        with entry.lock:
            if entry.llama is not None:
                return entry.llama, 0
            started = time.perf_counter_ns()
            kwargs: dict[str, Any] = {
                **self._llama_options, "n_ctx": self._n_ctx, "n_batch": self._n_batch
            }
            if self._n_threads:
                kwargs["n_threads"] = self._n_threads
            try:
                entry.llama = hooked_llama_class()(
                    model_path=str(entry.source.path), verbose=False, **kwargs
                )
            except ImportError:
                raise EngineUnavailable(
                    "the embedded engine needs llama-cpp-python: pip install 'p2pinfer[embedded]'"
                ) from None
            except (ValueError, RuntimeError, OSError) as exc:
                raise EngineResponseError(
                    f"cannot load {entry.source.name} from {entry.source.path}: {exc}"
                ) from None
            return entry.llama, time.perf_counter_ns() - started

    def _score_in_thread(
        self, entry: LoadedModel, kind: str, payload: object, answer: str,
        stop: threading.Event, chunk: int | None,
    ) -> TextScore | None:
        from p2pinfer.backends.llama_score import end_token_ids, score_continuation

        llama, _ = self._load(entry)
        with entry.busy:
            if entry.end_ids is None:
                entry.end_ids = end_token_ids(llama)
            try:
                return score_continuation(llama, kind, payload, answer, entry.end_ids,
                                          stop=stop, chunk_tokens=chunk)
            except ValueError as exc:  # longer than the context
                raise EngineResponseError(f"{entry.source.name}: {exc}") from None
            except RuntimeError as exc:  # llama_decode failed
                raise EngineResponseError(f"{entry.source.name} failed: {exc}") from None

    def _generate_in_thread(
        self,
        entry: LoadedModel,
        kind: str,
        payload: object,
        params: SamplingParams,
        job: Job,
        outbox: Outbox,
    ) -> None:
        emit = outbox.put
        try:
            try:
                llama, load_ns = self._load(entry)
            except BackendError as exc:
                emit(Failure(exc))
                return
            try:
                # A Llama object runs one generation at a time.
                with entry.busy:
                    if job.stop.is_set():  # the caller left while this waited
                        return
                    completion = self._run_llama(llama, kind, payload, params, job, emit)
            except BackendError as exc:  # e.g. a schema llama.cpp cannot follow
                emit(Failure(exc))
                return
            except ValueError as exc:  # llama-cpp-python: prompt longer than the context
                emit(Failure(EngineResponseError(f"{entry.source.name}: {exc}")))
                return
            except Exception as exc:
                log.exception("embedded engine failed")
                emit(Failure(EngineResponseError(f"{entry.source.name} failed: {exc}")))
                return
            if job.stop.is_set():
                return
            end = time.perf_counter_ns()
            first = job.first_token_ns or end
            emit(
                Completion(
                    finish_reason=completion,
                    usage=Usage(
                        prompt_tokens=job.prompt_tokens,
                        completion_tokens=job.sampled - (1 if job.ended_on_eog else 0),
                    ),
                    timings=Timings(
                        total_ns=end - job.started_ns,
                        load_ns=load_ns,
                        prompt_eval_ns=max(0, first - job.started_ns - load_ns),
                        eval_ns=end - first,
                    ),
                )
            )
        except trio.RunFinishedError:
            # trio is gone (the process is shutting down): nothing to deliver.
            job.stop.set()

    def _run_llama(
        self,
        llama: Any,
        kind: str,
        payload: object,
        params: SamplingParams,
        job: Job,
        emit: Any,
    ) -> FinishReason:
        import llama_cpp

        vocab = llama._model.vocab
        top = params.top_logprobs
        llama.token_hook = TokenHook(
            job, lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token)), self._count_token,
            None if top is None else partial(token_logprob, llama, top=top))
        if not self._cache_prompt:
            llama.reset()
        sampling = llama_sampling(params)
        finish: FinishReason = "stop"
        emitted = False
        if kind == "chat":
            chunks = llama.create_chat_completion(messages=payload, **sampling)
        else:
            chunks = llama.create_completion(prompt=payload, **sampling)
        try:
            for chunk in chunks:
                if job.stop.is_set():
                    break
                choice = chunk["choices"][0]
                text = choice["delta"].get("content") if kind == "chat" else choice["text"]
                if text:
                    emit(TokenDelta(text, tuple(job.logprobs)))
                    job.logprobs.clear()
                    if not emitted:
                        emitted = True
                        # Let the event loop pass the first token on before the next
                        # one is evaluated (see the module doc).
                        job.first_taken.wait(self._first_token_wait_s)
                if choice.get("finish_reason") == "length":
                    finish = "length"
        finally:
            chunks.close()
            llama.token_hook = None
        return finish


def llama_sampling(params: SamplingParams) -> dict[str, Any]:
    """llama-cpp-python's completion arguments for `params` (streamed), with the grammar
    of a forced tool call or an output format."""
    import llama_cpp

    sampling: dict[str, Any] = {
        "max_tokens": params.max_tokens if params.max_tokens > 0 else None,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "repeat_penalty": params.repeat_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
        "seed": params.seed,
        "stop": list(params.stop),
        "stream": True,
    }
    # A tool choice that makes the model call a tool constrains the answer to a call.
    constraint = grammar_format(params.tools, params.tool_choice) or params.output_format
    if constraint is not None:
        sampling["grammar"] = llama_cpp.llama_grammar.LlamaGrammar.from_string(
            grammar_text(constraint), verbose=False)
    return sampling
