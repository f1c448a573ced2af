"""Detection experiment on a real testnet: how many check jobs until a cheater is excluded.

For each fault (substitute-model, truncate, garbage) a fresh `p2pinfer.testnet`:
nodes 0..H-1 honest providers, node H the cheater (`--fault`), node H+1 a validator
(`--validator --check-interval S`). The script polls every node's reputation
table (SQLite, read-only) until the validator's breaker for the cheater is open
and, within a bound, until every honest node's is; it records the check jobs the
cheater had served by then, and every failed check of an honest provider (false
positives). Validator cost: reference tokens per second at the default check rate
against the providers' measured generation rate.

    python bench/verify.py [--model tiny|smollm2] [--honest 4] [--check-interval 1]

writes bench/results/verify.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pinfer import testnet  # noqa: E402
from p2pinfer.verify.breaker import BreakerState  # noqa: E402
from p2pinfer.verify.checker import VerifyConfig  # noqa: E402
from p2pinfer.verify.reputation_store import ReputationBook, reputation_path  # noqa: E402

RESULT = ROOT / "bench" / "results" / "verify.json"


def table(home: Path) -> dict[str, Any]:
    path = reputation_path(home)
    if not path.exists():
        return {}
    try:
        with ReputationBook.open(path, create=False) as book:
            return {p.peer_id: p for p in book.peers()}
    except Exception:  # a table being written: read again next poll
        return {}


def peer_id(home: Path) -> str:
    status = testnet.read_node_status(home)
    assert status is not None
    return str(status["peer_id"])


def run_fault(work: Path, fault: str, models: list[str], honest: int, interval: float,
              deadline_s: float, settle_s: float) -> dict[str, Any]:
    cheat, val = honest, honest + 1
    state = testnet.up(work, honest + 2, models=models, faults={cheat: fault}, gateway=False,
                       options=testnet.NodeOptions(benchmark=False, advert_interval_s=2.0),
                       node_args={val: ["--validator", "--check-interval", f"{interval:g}"]},
                       start_timeout_s=300)
    homes = [Path(n.home) for n in state.nodes]
    try:
        cheater = peer_id(homes[cheat])
        honest_ids = {peer_id(h) for h in homes[:honest]}
        started = time.monotonic()
        validator_at: int | None = None
        excluded_by: dict[str, int] = {}
        while time.monotonic() - started < deadline_s:
            vt = table(homes[val])
            rec = vt.get(cheater)
            if rec is not None and validator_at is None and \
                    rec.breaker.state is BreakerState.OPEN:
                validator_at = rec.checks_passed + rec.checks_failed
                settle_until = time.monotonic() + settle_s
            for i in range(honest):
                r = table(homes[i]).get(cheater)
                if r is not None and r.breaker.state is BreakerState.OPEN and \
                        str(i) not in excluded_by:
                    jobs = vt.get(cheater)
                    excluded_by[str(i)] = (jobs.checks_passed + jobs.checks_failed) if jobs else -1
            if validator_at is not None and (len(excluded_by) == honest
                                             or time.monotonic() > settle_until):
                break
            time.sleep(1.0)
        vt = table(homes[val])
        honest_checks = [vt[p] for p in honest_ids if p in vt]
        c = vt.get(cheater)
        return {
            "fault": fault,
            "validator_excluded_after_checks": validator_at,
            "honest_nodes_excluded_after_checks": excluded_by,
            "honest_nodes_excluding": f"{len(excluded_by)}/{honest}",
            "cheater_checks": {"passed": c.checks_passed, "failed": c.checks_failed} if c else None,
            "honest_checks_passed": sum(r.checks_passed for r in honest_checks),
            "honest_checks_failed": sum(r.checks_failed for r in honest_checks),
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        testnet.down(work)


def run_false_positives(work: Path, models: list[str], honest: int, interval: float,
                        target: int, deadline_s: float) -> dict[str, Any]:
    """Honest providers and a validator only: check until `target` checks or the deadline."""
    val = honest
    state = testnet.up(work, honest + 1, models=models, gateway=False,
                       options=testnet.NodeOptions(benchmark=False, advert_interval_s=2.0),
                       node_args={val: ["--validator", "--check-interval", f"{interval:g}"]},
                       start_timeout_s=300)
    homes = [Path(n.home) for n in state.nodes]
    try:
        ids = {peer_id(h) for h in homes[:honest]}
        started = time.monotonic()
        done = failed = 0
        while time.monotonic() - started < deadline_s:
            vt = table(homes[val])
            recs = [vt[p] for p in ids if p in vt]
            done = sum(r.checks_passed + r.checks_failed for r in recs)
            failed = sum(r.checks_failed for r in recs)
            if done >= target:
                break
            time.sleep(2.0)
        return {"honest_checks": done, "failed": failed,
                "seconds": round(time.monotonic() - started, 1)}
    finally:
        testnet.down(work)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--honest", type=int, default=4)
    ap.add_argument("--check-interval", type=float, default=1.0)
    ap.add_argument("--deadline", type=float, default=240.0)
    ap.add_argument("--settle", type=float, default=30.0)
    ap.add_argument("--faults", default="substitute-model,truncate,garbage")
    ap.add_argument("--gen-tok-s", type=float, default=0.0,
                    help="providers' measured generation rate, for the cost estimate")
    ap.add_argument("--fp-checks", type=int, default=0,
                    help="also run honest-only checks until this many (false positives)")
    ap.add_argument("--fp-interval", type=float, default=0.2)
    ap.add_argument("--fp-deadline", type=float, default=300.0)
    args = ap.parse_args()

    from p2pinfer.backends.models import smollm2_path
    from p2pinfer.backends.tiny_model import write_tiny_model

    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if args.model == "tiny":
            models = [f"tiny={write_tiny_model(base / 'tiny.gguf', seed=0)}"]
            substitute = f"sub={write_tiny_model(base / 'sub.gguf', seed=1)}"
        else:
            from bench.verify_thresholds import requantize

            smol = smollm2_path()
            assert smol is not None
            models = ["smollm2:135m"]
            substitute = f"sub={requantize(smol, base / 'q40.gguf', 2)}"
        for kind in args.faults.split(","):
            fault = f"substitute-model={substitute}" if kind == "substitute-model" else kind
            print(f"-- {kind}", flush=True)
            res = run_fault(base / kind, fault, models, args.honest, args.check_interval,
                            args.deadline, args.settle)
            print(json.dumps(res), flush=True)
            results.append(res)
        fp_run = run_false_positives(base / "honest", models, args.honest, args.fp_interval,
                                     args.fp_checks, args.fp_deadline) if args.fp_checks else None
    default = VerifyConfig()
    cost: dict[str, Any] = {
        "default_check_interval_s": default.check_interval_s,
        "check_max_tokens": default.check_max_tokens,
        "validator_reference_tok_s_at_default_rate":
            default.check_max_tokens / default.check_interval_s,
    }
    if args.gen_tok_s > 0:
        network = args.gen_tok_s * (args.honest + 1)
        cost["providers_gen_tok_s_total"] = network
        cost["validator_share_of_network_compute_pct"] = round(
            100 * cost["validator_reference_tok_s_at_default_rate"] / network, 2)
    out = {
        "model": args.model, "honest_providers": args.honest, "validators": 1,
        "check_interval_s": args.check_interval, "thresholds": vars(default.thresholds),
        "faults": results,
        "honest_only_run": fp_run,
        "false_positives": sum(r["honest_checks_failed"] for r in results)
        + (fp_run["failed"] if fp_run else 0),
        "honest_checks": sum(r["honest_checks_passed"] + r["honest_checks_failed"]
                             for r in results) + (fp_run["honest_checks"] if fp_run else 0),
        "cost": cost,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(),
    }
    RESULT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "faults"}, indent=1))


if __name__ == "__main__":
    main()
