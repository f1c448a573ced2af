"""Simulator speed: simulated days per second for 1,000 providers over 365 days (goal: the
run in under 30 s). Writes bench/results/sim.json.

    python bench/sim.py [--days N] [--providers N] [--seed S]

Runs each preset as configured (providers join and leave, so their number drifts) and a
`steady` run that holds exactly `--providers` providers all year (the seed preset with the
provider count on a schedule), the worst case for the per-provider work.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, results_path, write_result
from p2pinfer.sim.engine import simulate
from p2pinfer.sim.params import ScheduleParams, SimParams, preset_params

RESULTS = results_path("sim.json")


def runs(providers: int) -> dict[str, SimParams]:
    out = {}
    for name in ("seed", "bme", "render"):
        p = preset_params(name)
        out[name] = replace(p, network=replace(p.network, initial_providers=providers))
    seed = out["seed"]
    out["steady"] = replace(seed, schedule=ScheduleParams(providers_per_year=(providers,)))
    return out


def measure(params: SimParams, days: int, seed: int) -> dict[str, float | int]:
    start = time.perf_counter()
    rows = simulate(params, days, random.Random(seed))
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "days_per_s": round(days / seconds, 1),
        "provider_days": sum(r.providers for r in rows),
        "provider_days_per_s": round(sum(r.providers for r in rows) / seconds),
        "providers_end": rows[-1].providers,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    results = {name: measure(p, args.days, args.seed) for name, p in runs(args.providers).items()}
    worst = max(float(r["seconds"]) for r in results.values())
    report = {
        "days": args.days,
        "providers_at_launch": args.providers,
        "goal_s": 30,
        "slowest_run_s": worst,
        "meets_goal": worst < 30,
        "runs": results,
        "machine": machine(),
    }
    write_result(RESULTS, report)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
