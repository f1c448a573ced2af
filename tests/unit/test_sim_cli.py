"""`p2pinfer sim ...` as a user runs it, in subprocesses."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def p2pinfer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "p2pinfer", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


def test_sim_run_writes_a_csv_row_a_day_and_png_plots(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = p2pinfer("sim", "run", "--preset", "bme", "--days", "20", "--seed", "3",
                    "--providers", "60", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with (out / "kpis.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["day"]) for r in rows] == list(range(20))
    for column in ("utilisation_pct", "revenue_usd", "revenue_growth_30d_pct", "providers",
                   "retention_30d_pct", "mean_quality_pm", "burned_credits", "supply_credits",
                   "provider_earnings_usd", "provider_costs_usd", "token_price_usd",
                   "price_usd_per_m"):
        assert column in rows[0]
    assert rows[0]["providers"] == "60"
    for name in ("network.png", "economics.png", "token.png"):
        assert (out / name).read_bytes().startswith(PNG_MAGIC)
    assert "bme" in done.stdout


def test_sim_run_is_reproducible_from_the_command_line(tmp_path: Path) -> None:
    args = ("sim", "run", "--days", "15", "--providers", "40", "--seed", "5", "--no-plots")
    assert p2pinfer(*args, "--out", str(tmp_path / "a")).returncode == 0
    assert p2pinfer(*args, "--out", str(tmp_path / "b")).returncode == 0
    assert (tmp_path / "a" / "kpis.csv").read_bytes() == (tmp_path / "b" / "kpis.csv").read_bytes()


def test_sim_compare_writes_one_table_and_one_plot(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    done = p2pinfer("sim", "compare", "--presets", "seed,bme,render,bme+stabilizer", "--days",
                    "10", "--providers", "40", "--seeds", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    with (out / "compare.csv").open() as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["", "seed", "bme", "render", "bme+stabilizer"]
    assert table[1][0].startswith("providers")
    assert all(cell.startswith("40 → ") for cell in table[1][1:])
    assert all(all(cell for cell in row[1:]) for row in table[1:])
    assert (out / "compare.png").read_bytes().startswith(PNG_MAGIC)
    for name in ("seed", "bme", "render"):
        assert (out / f"{name}.csv").exists()


def test_a_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[network]\nproviders = 3\n")
    done = p2pinfer("sim", "run", "--config", str(config), "--out", str(tmp_path / "x"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "unknown key network.providers" in done.stderr
    assert "Traceback" not in done.stderr
    done = p2pinfer("sim", "run", "--preset", "nope", "--out", str(tmp_path / "x"))
    assert done.returncode == 2 and "unknown sim preset" in done.stderr


def test_sim_projection_prints_the_documents_table_and_writes_its_plot(tmp_path: Path) -> None:
    out = tmp_path / "proj"
    done = p2pinfer("sim", "projection", "--years", "1", "--out", str(out), "--markdown",
                    timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| 5 | 100,000 | 1,500.00 | 150,000,000.00 |" in done.stdout
    assert (out / "projection.png").read_bytes().startswith(PNG_MAGIC)
    with (out / "projection-2.csv").open() as fh:  # the simulator's replay
        replay = list(csv.reader(fh))
    assert replay[1:] == [["1", "1,000", "500.00", "500,000.00"],
                          ["2", "5,000", "750.00", "3,750,000.00"],
                          ["3", "15,000", "1,000.00", "15,000,000.00"],
                          ["4", "40,000", "1,200.00", "48,000,000.00"],
                          ["5", "100,000", "1,500.00", "150,000,000.00"]]
