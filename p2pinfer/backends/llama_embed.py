"""Embeddings in the embedded engine: a second llama.cpp instance per model, made with
`embedding=True` and mean pooling (a generating instance cannot also pool: llama.cpp
fixes both when the context is made). Loaded on first use, like the generating one;
each input is its own sequence, truncated to the context, and the vectors come out
L2-normalised, as Ollama's `/api/embed` gives them.

llama.cpp decodes many inputs as one batch (up to n_batch tokens) and one batch cannot
be interrupted; a job's inputs together (128 texts of up to n_ctx tokens) took minutes
of the engine in one call. So the inputs go to llama-cpp-python's `embed` a batch at a
time, grouped as it groups them itself (the same batches, so the same vectors), and a
`stop` event set between batches ends the work: a free job pre-empted by a paying one,
or a consumer gone, lets the engine go after one batch, as a generation does after one
token (attack 82)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from p2pinfer.backends.base import Embeddings
from p2pinfer.errors import BadRequestError, EngineResponseError, EngineUnavailable


class EmbeddingEngine:
    """The embedding instance of one model file (thread-safe: one embedding at a time)."""

    def __init__(self, name: str, path: Path, *, n_ctx: int, n_threads: int | None,
                 options: dict[str, Any]) -> None:
        self.name, self.path = name, path
        self._n_ctx, self._n_threads, self._options = n_ctx, n_threads, options
        self._llama: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._llama is None:
            try:
                import llama_cpp
            except ImportError:
                raise EngineUnavailable(
                    "the embedded engine needs llama-cpp-python: pip install 'p2pinfer[embedded]'"
                ) from None
            kwargs: dict[str, Any] = {
                **self._options, "n_ctx": self._n_ctx, "n_batch": self._n_ctx,
                "n_ubatch": self._n_ctx, "embedding": True,
                "pooling_type": llama_cpp.LLAMA_POOLING_TYPE_MEAN}
            if self._n_threads:
                kwargs["n_threads"] = self._n_threads
            try:
                self._llama = llama_cpp.Llama(model_path=str(self.path), verbose=False, **kwargs)
            except (ValueError, RuntimeError, OSError) as exc:
                raise EngineResponseError(f"cannot load {self.name} to embed: {exc}") from None
        return self._llama

    def embed(
        self, inputs: Sequence[str], stop: threading.Event | None = None
    ) -> Embeddings | None:
        """Vectors for `inputs` (call from a worker thread), or None once `stop` is set
        (checked before each batch); BadRequestError for an empty text (llama.cpp cannot
        decode zero tokens)."""
        if any(not text for text in inputs):
            raise BadRequestError("an input to embed is empty")
        vectors: list[tuple[float, ...]] = []
        tokens = 0
        with self._lock:
            llama = self._load()
            try:
                for batch in decode_batches(llama, inputs):
                    if stop is not None and stop.is_set():
                        return None
                    got, count = llama.embed(batch, normalize=True, truncate=True,
                                             return_count=True)
                    vectors.extend(tuple(float(x) for x in v) for v in got)
                    tokens += int(count)
            except Exception as exc:  # llama-cpp-python raises what the C side left it
                # A failed decode can leave the context unusable: start the next afresh.
                self._llama = None
                llama.close()
                raise EngineResponseError(f"{self.name} could not embed: {exc}") from None
        return Embeddings(tuple(vectors), tokens)

    def close(self) -> None:
        with self._lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()


def decode_batches(llama: Any, inputs: Sequence[str]) -> Iterator[list[str]]:
    """`inputs` in the groups llama-cpp-python's `Llama.embed` decodes together (0.3.x:
    texts are added while their tokens, each cut to n_batch, fit in n_batch and the
    batch holds fewer than n_seq_max sequences), so that embedding group by group
    decodes the very batches one call would."""
    n_batch, n_seq_max = llama.n_batch, llama.context_params.n_seq_max
    batch: list[str] = []
    held = 0
    for text in inputs:
        n_tokens = min(len(llama.tokenize(text.encode("utf-8"))), n_batch)
        if batch and (held + n_tokens > n_batch or len(batch) >= n_seq_max):
            yield batch
            batch, held = [], 0
        batch.append(text)
        held += n_tokens
    if batch:
        yield batch
