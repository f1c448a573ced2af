"""bench/gateway_timeline.py: its patch of trace marks still applies to the code, and its
reading of a trace (one clock, several processes) gives each step's median per side."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bench.gateway_timeline import job_marks, segments, timeline

ROOT = Path(__file__).resolve().parents[2]
PATCH = ROOT / "bench" / "gateway_timeline.patch"


def test_the_marks_patch_applies_to_the_code_as_it_is() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    check = subprocess.run(["git", "apply", "--check", str(PATCH)], cwd=ROOT,
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0, (
        "bench/gateway_timeline.patch no longer applies (re-make it as its module doc "
        f"says): {check.stderr}")
    assert "p2pinfer/_trace.py" in PATCH.read_text()


def trace(*jobs: tuple[str, list[tuple[str, str, float]]]) -> list[list[str]]:
    """Trace lines: a warm-up job, START, then `jobs` as (kind, [(pid, label, ms)])."""
    lines = [["1", "c_send", "0", "0"], ["1", "START", "1000000", "0"]]
    for kind, marks in jobs:
        for pid, label, ms in [("1", "c_send", marks[0][2]), ("1", f"c_kind_{kind}", 0.0),
                               *marks[1:]]:  # fmt: skip
            lines.append([pid, label, str(int(ms * 1e6)), "0"])
    return lines


Mark = tuple[str, str, float]  # pid, label, ms


def job(kind: str, start: float, e_start: float, e_tok1: float, first: float,
        extra: tuple[Mark, ...] = ()) -> tuple[str, list[Mark]]:
    return kind, [("1", "c_send", start), ("9", "e_start", start + e_start), *extra,
                  ("9", "e_tok1_emit", start + e_tok1), ("1", "c_first", start + first)]


def test_each_side_gets_its_own_medians_from_the_clients_send() -> None:
    lines = trace(job("gateway", 10, 6, 96, 100), job("engine", 200, 2, 92, 95),
                  job("gateway", 400, 8, 98, 104), job("engine", 600, 2, 94, 97),
                  job("gateway", 800, 7, 97, 102))  # fmt: skip
    rows = {r["mark"]: r for r in timeline(lines, "gateway")}
    assert rows["e_start"] == {"mark": "e_start", "jobs": 3, "median_ms": 7.0}
    assert rows["c_first"]["median_ms"] == 102.0
    assert "c_kind_gateway" not in rows  # the side's label is not a step
    assert segments(lines, "gateway") == {"before_engine_ms": 7.0, "engine_ms": 90.0,
                                          "after_engine_ms": 5.0, "ttft_ms": 102.0, "jobs": 3}
    assert segments(lines, "engine") == {"before_engine_ms": 2.0, "engine_ms": 91.0,
                                         "after_engine_ms": 3.0, "ttft_ms": 96.0, "jobs": 2}


def test_the_nodes_background_marks_are_left_out_of_engine_jobs() -> None:
    noise = (("5", "p_negotiate", 201.0),)  # a node's own stream during an engine job
    lines = trace(job("engine", 200, 2, 92, 95, noise))
    assert "p_negotiate" in job_marks(lines)[0]
    assert "p_negotiate" not in job_marks(lines, frozenset({"5"}))[0]
    assert [r["mark"] for r in timeline(lines, "engine", frozenset({"5"}))] == [
        "c_send", "e_start", "e_tok1_emit", "c_first"]
