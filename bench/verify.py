"""Detection experiment on a real testnet: how many check jobs until a cheater is excluded.

For each fault (substitute-model, truncate, garbage) a fresh `p2pinfer.testnet.processes`:
nodes 0..H-1 honest providers, node H the cheater (`--fault`), node H+1 a validator
(`--validator --check-interval S`). The script polls every node's reputation
table (SQLite, read-only) until the validator's breaker for the cheater is open
and, within a bound, until every honest node's is; it records the check jobs the
cheater had served by then, and every failed check of an honest provider (false
positives).
Verification cost (`--cost-s`): the same honest providers serve a steady job load
from a consumer in this process while the validator checks at the default rate
(one check job every `VerifyConfig().check_interval_s`); every engine runs one
thread, so a process's CPU time is its compute (no spinning worker threads). The
processes' CPU seconds over the window give the validator's compute per provider
token served and its share of the network's compute, counting the providers'
time spent serving the check jobs as verification cost too.

    python bench/verify.py [--model tiny|smollm2] [--honest 4] [--check-interval 1]
                           [--fp-checks 500] [--cost-s 180]

writes bench/results/verify.json. The detection and false-positive runs are in
bench/_verify_detection.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine, results_path, write_result  # noqa: E402
from bench._verify_detection import peer_id, run_false_positives, run_fault, table  # noqa: E402
from bench.scale import cpu_s  # noqa: E402
from p2pinfer.identity import NodeIdentity  # noqa: E402
from p2pinfer.jobs.client import JobClient  # noqa: E402
from p2pinfer.jobs.job_types import ClientConfig  # noqa: E402
from p2pinfer.net.config import NetConfig  # noqa: E402
from p2pinfer.net.host import run_host  # noqa: E402
from p2pinfer.protocol import JobParams  # noqa: E402
from p2pinfer.testnet import processes as testnet  # noqa: E402
from p2pinfer.validator.checker import prompt_set  # noqa: E402
from p2pinfer.verify.config import VerifyConfig  # noqa: E402

RESULT = results_path("verify.json")


class LoadClient(JobClient):
    """An ordinary consumer that leaves the validator's node out (it also serves the
    model): the load is the providers' traffic, the validator's CPU its checks."""

    skip: frozenset[str] = frozenset()

    async def candidates(
        self, model: str, *, dht: bool = False, exclude: set[str] | frozenset[str] = frozenset()
    ) -> Any:
        return await super().candidates(model, dht=dht, exclude=set(exclude) | self.skip)


async def steady_load(
    bootstrap: str,
    model: str,
    skip: str,
    seconds: float,
    workers: int,
    max_tokens: int,
    texts: Sequence[str],
) -> dict[str, Any]:
    identity = NodeIdentity.generate()
    rng = random.Random(7)
    served: dict[str, int] = {}
    jobs = errors = 0
    async with run_host(NetConfig(identity, bootstrap=(bootstrap,))) as host:
        client = LoadClient(host, identity, config=ClientConfig(require_credit=False))
        client.skip = frozenset({skip})
        with trio.fail_after(120):
            while not {e.peer_id for e in host.catalog.providers(client.resolve_model(model))
                       } - {skip}:  # fmt: skip
                await trio.sleep(0.2)
        model = client.resolve_model(model)
        await trio.sleep(5)  # every provider's advert heard
        deadline = trio.current_time() + seconds

        async def worker() -> None:
            nonlocal jobs, errors
            while trio.current_time() < deadline:
                params = JobParams(
                    max_tokens=max_tokens, temperature=0.7, seed=rng.randrange(1 << 30)
                )
                try:
                    out = await client.run(model, rng.choice(texts), params)
                except Exception:  # counted; the load goes on
                    errors += 1
                    continue
                jobs += 1
                served[out.provider] = served.get(out.provider, 0) + out.completion_tokens

        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
    return {"jobs": jobs, "errors": errors, "tokens_by_provider": served}


def checks_done(home: Path, ids: set[str]) -> int:
    """Checks the validator has recorded against `ids`."""
    vt = table(home)
    return sum(vt[p].checks_passed + vt[p].checks_failed for p in ids if p in vt)


# Over 60 lines by design: one testnet's start, steady load, measurement and stop in order.
def run_cost(
    work: Path, models: list[str], honest: int, seconds: float, workers: int, max_tokens: int
) -> dict[str, Any]:
    """Providers under a steady load, the validator at the default check rate."""
    val = honest
    one_thread = ["--engine-option", "n_threads=1", "--engine-option", "n_threads_batch=1"]
    state = testnet.up(
        work,
        honest + 1,
        models=models,
        gateway=False,
        options=testnet.NodeOptions(benchmark=False, advert_interval_s=2.0),
        node_args={
            i: one_thread + (["--validator"] if i == val else []) for i in range(honest + 1)
        },
        start_timeout_s=300,
    )
    homes = [Path(n.home) for n in state.nodes]
    pids = [n.pid for n in state.nodes]
    try:
        ids = {peer_id(h) for h in homes[:honest]}
        validator_id = peer_id(homes[val])
        bootstrap = testnet.bootstrap_addr(work)
        model = "smollm2:135m" if models == ["smollm2:135m"] else models[0].split("=")[0]
        checks_before = checks_done(homes[val], ids)
        cpu_before = [cpu_s(p) for p in pids]
        started = time.monotonic()
        load = trio.run(
            steady_load, bootstrap, model, validator_id, seconds, workers, max_tokens, prompt_set()
        )
        elapsed = time.monotonic() - started
        cpu_after = [cpu_s(p) for p in pids]
        checks_after = checks_done(homes[val], ids)
    finally:
        testnet.down(work)
    used = [round(a - b, 2) for a, b in zip(cpu_after, cpu_before, strict=True)]
    providers_cpu, validator_cpu = sum(used[:honest]), used[val]
    checks = checks_after - checks_before
    load_tokens = sum(load["tokens_by_provider"].values())
    check_tokens = checks * VerifyConfig().check_max_tokens  # an upper bound
    # Providers' time on check jobs, in proportion to the tokens they served for them.
    on_checks = providers_cpu * check_tokens / (check_tokens + load_tokens) if load_tokens else 0
    total = providers_cpu + validator_cpu
    return {
        "seconds": round(elapsed, 1),
        "load_workers": workers,
        "max_tokens": max_tokens,
        "engine_threads_per_node": 1,
        "jobs": load["jobs"],
        "job_errors": load["errors"],
        "tokens_served_by_providers": load_tokens,
        "checks_by_validator": checks,
        "check_interval_s": VerifyConfig().check_interval_s,
        "cpu_s": {
            "providers": round(providers_cpu, 2),
            "validator": round(validator_cpu, 2),
            "per_node": used,
        },
        "validator_cpu_ms_per_provider_token": round(1000 * validator_cpu / load_tokens, 3)
        if load_tokens
        else None,
        "validator_cpu_ms_per_check": round(1000 * validator_cpu / checks, 1) if checks else None,
        "provider_cpu_ms_per_token": round(1000 * providers_cpu / (load_tokens + check_tokens), 3)
        if load_tokens
        else None,
        "verification_share_of_network_compute_pct": round(
            100 * (validator_cpu + on_checks) / total, 2
        )
        if total
        else None,
        "validator_share_pct": round(100 * validator_cpu / total, 2) if total else None,
        "goal": "<= 5% of network compute at the default check rate",
    }


# Over 60 lines by design: the bench's options, then its runs and result in order.
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=("tiny", "smollm2"), default="tiny")
    ap.add_argument("--honest", type=int, default=4)
    ap.add_argument("--check-interval", type=float, default=1.0)
    ap.add_argument("--deadline", type=float, default=240.0)
    ap.add_argument("--settle", type=float, default=30.0)
    ap.add_argument("--faults", default="substitute-model,truncate,garbage")
    ap.add_argument(
        "--gen-tok-s",
        type=float,
        default=0.0,
        help="providers' measured generation rate, for the cost estimate",
    )
    ap.add_argument(
        "--fp-checks",
        type=int,
        default=0,
        help="also run honest-only checks until this many (false positives)",
    )
    ap.add_argument("--fp-interval", type=float, default=0.2)
    ap.add_argument("--fp-deadline", type=float, default=300.0)
    ap.add_argument(
        "--cost-s",
        type=float,
        default=0.0,
        help="also measure the verification cost over this many seconds of load",
    )
    ap.add_argument("--cost-workers", type=int, default=4)
    ap.add_argument("--cost-tokens", type=int, default=64)
    args = ap.parse_args()

    from p2pinfer.backends.models import smollm2_path
    from p2pinfer.testing.tiny_model import write_tiny_model

    load_before = os.getloadavg()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if args.model == "tiny":
            models = [f"tiny={write_tiny_model(base / 'tiny.gguf', seed=0)}"]
            substitute = f"sub={write_tiny_model(base / 'sub.gguf', seed=1)}"
        else:
            from bench._verify_thresholds_runs import requantize

            smol = smollm2_path()
            assert smol is not None
            models = ["smollm2:135m"]
            substitute = f"sub={requantize(smol, base / 'q40.gguf', 2)}"
        for kind in [k for k in args.faults.split(",") if k]:
            fault = f"substitute-model={substitute}" if kind == "substitute-model" else kind
            print(f"-- {kind}", flush=True)
            res = run_fault(
                base / kind,
                fault,
                models,
                args.honest,
                args.check_interval,
                args.deadline,
                args.settle,
            )
            print(json.dumps(res), flush=True)
            results.append(res)
        cost_run = (
            run_cost(
                base / "cost", models, args.honest, args.cost_s, args.cost_workers, args.cost_tokens
            )
            if args.cost_s
            else None
        )
        fp_run = (
            run_false_positives(
                base / "honest",
                models,
                args.honest,
                args.fp_interval,
                args.fp_checks,
                args.fp_deadline,
            )
            if args.fp_checks
            else None
        )
    default = VerifyConfig()
    cost: dict[str, Any] = {
        "default_check_interval_s": default.check_interval_s,
        "check_max_tokens": default.check_max_tokens,
        "validator_reference_tok_s_at_default_rate": default.check_max_tokens
        / default.check_interval_s,
    }
    if args.gen_tok_s > 0:
        network = args.gen_tok_s * (args.honest + 1)
        cost["providers_gen_tok_s_total"] = network
        cost["validator_share_of_network_compute_pct"] = round(
            100 * cost["validator_reference_tok_s_at_default_rate"] / network, 2
        )
    out = {
        "model": args.model,
        "honest_providers": args.honest,
        "validators": 1,
        "check_interval_s": args.check_interval,
        "thresholds": vars(default.thresholds),
        "faults": results,
        "honest_only_run": fp_run,
        "false_positives": sum(r["honest_checks_failed"] for r in results)
        + (fp_run["failed"] if fp_run else 0),
        "honest_checks": sum(r["honest_checks_passed"] + r["honest_checks_failed"] for r in results)
        + (fp_run["honest_checks"] if fp_run else 0),
        "cost": cost,
        "cost_run": cost_run,
        "machine": machine(load_avg_before=load_before),
    }
    write_result(RESULT, out, indent=1)
    print(json.dumps({k: v for k, v in out.items() if k != "faults"}, indent=1))


if __name__ == "__main__":
    main()
