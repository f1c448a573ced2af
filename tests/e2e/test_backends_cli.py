"""`p2pinfer hw` and `p2pinfer engine serve` as a user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from p2pinfer.testing.tiny_model import write_tiny_model
from tests.support.backends import ENGINE_READY, REPO_ROOT


def p2pinfer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "p2pinfer", *args],
        capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=timeout,
    )  # fmt: skip


def test_hw_json_describes_the_machine() -> None:
    result = p2pinfer("hw", "--json")
    assert result.returncode == 0, result.stderr
    hardware = json.loads(result.stdout)["hardware"]
    assert hardware["cpu_threads"] >= hardware["cpu_cores"] >= 1
    assert hardware["ram_total_bytes"] > 0 and isinstance(hardware["gpus"], list)
    assert len(hardware["fingerprint"]) == 16


@pytest.mark.engine
@pytest.mark.skipif(not ENGINE_READY, reason="needs llama-cpp-python")
def test_hw_bench_measures_once_then_answers_from_the_cache(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path / "tiny.gguf")
    args = ("hw", "--bench", str(model), "--runs", "2", "--json", "--home", str(tmp_path / "h"))
    first = p2pinfer(*args)
    assert first.returncode == 0, first.stderr
    measured = json.loads(first.stdout)["benchmark"]
    assert measured["model"] == "tiny:latest" and measured["cached"] is False
    assert measured["gen_tokens_per_s"] > 0 and measured["prompt_tokens_per_s"] > 0
    assert measured["ttft_ms"] > 0 and measured["runs"] == 2
    second = json.loads(p2pinfer(*args).stdout)["benchmark"]
    assert second == {**measured, "cached": True}


def test_bad_arguments_are_one_line_errors_with_exit_code_2(tmp_path: Path) -> None:
    missing = p2pinfer("engine", "serve", "--model", str(tmp_path / "nope.gguf"))
    assert missing.returncode == 2
    assert missing.stderr.strip() == f"error: model file not found: {tmp_path / 'nope.gguf'}"
    bogus = p2pinfer("hw", "--bench", "x", "--backend", "bogus")
    assert bogus.returncode == 2 and bogus.stderr.strip().startswith("error: bad --backend")
