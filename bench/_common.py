"""What every bench script shares: where results go and how they are written, what
machine they were measured on, the date, and percentiles.

A script puts the repository root on `sys.path` and then `from bench._common import ...`.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"


def results_path(name: str) -> Path:
    """bench/results/<name>: where a script writes its numbers by default."""
    return RESULTS_DIR / name


def write_result(path: Path, result: dict[str, Any], *, indent: int = 2) -> None:
    """Write `result` as JSON (one trailing newline), creating the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=indent) + "\n")


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(**extra: Any) -> dict[str, Any]:
    """What the numbers were measured on, and the load at the time; `extra` adds notes
    (a shared VM, load averages taken earlier)."""
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "arch": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        **extra,
    }


def utc_now() -> str:
    """The date and time (UTC, to the second) a result is stamped with."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def median(values: Sequence[float], digits: int = 2) -> float:
    """The median, rounded to `digits`; NaN for no values."""
    return round(statistics.median(values), digits) if values else float("nan")
