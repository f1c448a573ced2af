"""The network-level attacks of docs/security.md, run against one real testnet.

Run from the repository root:
    python bench/attacks.py [--only NAME ...] [--pace-floor TOKENS_PER_S] [--out FILE]
Writes bench/results/attacks.json (or FILE there) and prints a summary.
`--pace-floor` starts the nodes with that `--min-tokens-per-s` (0: none, as before
attack 33's defence), for the dripping provider's before and after.

One 3-node SmolLM2 testnet (tests/support/attack_net.py: node 0 bootstrap and
consumer gateway, nodes 1-2 providers) serves an honest load through node 0's
gateway for the whole run. First a quiet phase measures that load alone; then
each attack (the same attack code the e2e tests in tests/e2e/attacks/ run) is run
once, and for the time it runs the bench records the honest jobs' success rate
(goal >= 99 %), and per node its CPU seconds, CPU share and peak RSS.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from bench._common import machine, median, results_path, utc_now, write_result
from tests.support import (
    attack_adverts,
    attack_drip,
    attack_gov,
    attack_money,
    attack_net,
    attack_replay_window,
    attack_reports,
)
from tests.support.attack_net import AttackNet

RESULTS = results_path("attacks.json")
QUIET_S = 30.0
LINGER_S = 30.0

Attack = Callable[[AttackNet], dict[str, Any]]


def _linger(seconds: float) -> dict[str, Any]:
    """Keep measuring the honest load after an attack that is over once sent."""
    time.sleep(seconds)
    return {"measured_after_s": seconds}


def _trio(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    result: dict[str, Any] = trio.run(lambda: fn(*args, **kwargs))
    return result


def attacks(workdir: Path) -> dict[str, Attack]:
    """Each network-level attack by name: run it once against `net`, return what it did
    (the same attack code as the e2e test named after it, in tests/e2e/attacks/)."""
    return {
        "sybil_adverts": lambda net: {**attack_adverts.run_sync(net, count=2000, extra_models=4,
                                                               timeout_s=300),
                                      **_linger(LINGER_S)},
        "engine_jam_by_made_up_reports": lambda net: {**attack_reports.run_sync(net),
                                                      **_linger(LINGER_S)},
        "governance_takeover": lambda net: _trio(attack_gov.run, net),
        "overcharge": lambda net: _trio(attack_money.run_overcharge, net, workdir),
        "free_inference_and_slot_hogging": lambda net: _trio(attack_money.run_freeloader, net),
        "replay_window_fill": lambda net: _trio(attack_replay_window.run, net),
        "dripping_provider": lambda net: _trio(attack_drip.run, net),
    }


class NodeSampler:
    """CPU seconds and peak RSS of every node process (and its children) while it runs."""

    def __init__(self, net: AttackNet) -> None:
        self._procs = {n.index: psutil.Process(n.pid) for n in net.nodes}
        self._peak: dict[int, int] = dict.fromkeys(self._procs, 0)
        self._cpu0 = {i: self._cpu(p) for i, p in self._procs.items()}
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @staticmethod
    def _cpu(proc: psutil.Process) -> float:
        times = proc.cpu_times()
        return float(times.user + times.system + times.children_user + times.children_system)

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            for i, proc in self._procs.items():
                with contextlib.suppress(psutil.Error):
                    self._peak[i] = max(self._peak[i], proc.memory_info().rss)

    def finish(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        elapsed = time.monotonic() - self._t0
        nodes = {}
        for i, proc in self._procs.items():
            try:
                cpu = self._cpu(proc) - self._cpu0[i]
                rss = proc.memory_info().rss
            except psutil.Error:
                cpu, rss = float("nan"), 0
            nodes[f"node{i}"] = {"cpu_s": round(cpu, 2), "cpu_share": round(cpu / elapsed, 3),
                                 "peak_rss_mb": round(max(self._peak[i], rss) / 2**20, 1)}
        return {"elapsed_s": round(elapsed, 1), "nodes": nodes}


def measured(net: AttackNet, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """`run()` with an honest load beside it and the nodes sampled; the combined record."""
    sampler = NodeSampler(net)
    with attack_net.honest_load(net.gateway()) as load:
        did = run()
    usage = sampler.finish()
    return {"attack": did, "honest_jobs": load.jobs,
            "honest_success_rate": round(load.success_rate, 4),
            "honest_failures": load.failures[:5],
            "honest_job_s": {"p50": median(load.seconds),
                             "max": round(max(load.seconds), 2)} if load.seconds else None,
            **usage}


def quiet() -> dict[str, Any]:
    """No attack: the honest load alone, for comparison."""
    time.sleep(QUIET_S)
    return {"what": f"no attack for {QUIET_S:g} s"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="run just these attacks")
    parser.add_argument("--pace-floor", type=float, default=None,
                        help="the nodes' --min-tokens-per-s (default: theirs; 0: none)")
    parser.add_argument("--out", default=None,
                        help="results file name in bench/results (default attacks.json)")
    args = parser.parse_args()
    out = results_path(args.out) if args.out else RESULTS
    results: dict[str, Any] = {
        "when": utc_now(), "pace_floor": args.pace_floor,
        "machine": machine(), "goal_honest_success_rate": 0.99, "attacks": {}}
    with tempfile.TemporaryDirectory() as tmp, attack_net.attack_testnet(
            Path(tmp) / "net", min_tokens_per_s=args.pace_floor) as net:
        chosen = {k: v for k, v in attacks(Path(tmp)).items() if not args.only or k in args.only}
        results["quiet"] = measured(net, quiet)
        for name, attack in chosen.items():
            print(f"== {name}", flush=True)
            results["attacks"][name] = record = measured(net, lambda a=attack: a(net))
            print(f"   honest {record['honest_success_rate']:.1%} of {record['honest_jobs']} "
                  f"jobs; {record['elapsed_s']} s", flush=True)
    write_result(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
