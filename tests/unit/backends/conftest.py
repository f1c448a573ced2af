from __future__ import annotations

from pathlib import Path

import pytest

from p2pinfer.testing.tiny_model import write_tiny_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random llama GGUF (fixed seed), written once per test session."""
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")
