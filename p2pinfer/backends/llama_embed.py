"""Embeddings in the embedded engine: a second llama.cpp instance per model, made with
`embedding=True` and mean pooling (a generating instance cannot also pool: llama.cpp
fixes both when the context is made). Loaded on first use, like the generating one;
each input is its own sequence, truncated to the context, and the vectors come out
L2-normalised, as Ollama's `/api/embed` gives them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
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

    def embed(self, inputs: Sequence[str]) -> Embeddings:
        """Vectors for `inputs` (call from a worker thread); BadRequestError for an empty
        text (llama.cpp cannot decode zero tokens)."""
        if any(not text for text in inputs):
            raise BadRequestError("an input to embed is empty")
        with self._lock:
            llama = self._load()
            try:
                vectors, tokens = llama.embed(list(inputs), normalize=True, truncate=True,
                                              return_count=True)
            except Exception as exc:  # llama-cpp-python raises what the C side left it
                # A failed decode can leave the context unusable: start the next afresh.
                self._llama = None
                llama.close()
                raise EngineResponseError(f"{self.name} could not embed: {exc}") from None
        return Embeddings(tuple(tuple(float(x) for x in v) for v in vectors), int(tokens))

    def close(self) -> None:
        with self._lock:
            llama, self._llama = self._llama, None
        if llama is not None:
            llama.close()
