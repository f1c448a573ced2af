"""The checked-in artifacts are what the checked-in sources compile to."""

from __future__ import annotations

import pytest

from p2pinfer.settle import build
from p2pinfer.settle.artifacts import load_artifacts, vyper_version

pytest.importorskip("vyper")  # the compiler is a dev dependency


def test_recompiling_the_sources_gives_the_checked_in_artifacts() -> None:
    assert build.ARTIFACTS_PATH.read_text(encoding="utf-8") == build.render(build.compile_all()), (
        "artifacts.json is stale: run python -m p2pinfer.settle.build and commit both"
    )


def test_loader_reads_every_contract() -> None:
    artifacts = load_artifacts()
    assert sorted(artifacts) == sorted(build.CONTRACT_NAMES)
    for name, artifact in artifacts.items():
        assert artifact.name == name
        assert artifact.bytecode.startswith("0x") and len(artifact.bytecode) > 1_000
        assert any(entry["type"] == "constructor" for entry in artifact.abi)
    assert vyper_version().startswith("0.4.3")
