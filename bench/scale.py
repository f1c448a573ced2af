"""Scale and churn, measured: a 50-process testnet on one machine, a consumer in this process.

Run from the repository root:  python bench/scale.py [--nodes 50] [--churn-s 90]
Writes bench/results/scale.json and bench/results/scale.png.

Node 0 is a `--backend none` bootstrap; every other node joins through it with
`--bootstrap` as a user would. Most providers run the FAKE engine
`--backend fake-stream=RATE` (filler tokens at RATE tokens/s, model `fake:latest`;
it logs that it is a fake); `--real` of them run the embedded engine on the
generated tiny model (`tiny:latest`). Measured:

1. advert propagation (signing at a provider to admission in another node's catalog,
   from the nodes' DEBUG lines), p50/p99, over a window of republish rounds;
2. DHT provider lookup from cold consumers (a fresh host joined through node 0, its
   first `find_providers`), p50/p99, and how many providers each found;
3. RSS per node; CPU seconds per node per minute of idle nodes (gossip, DHT upkeep,
   republishing) from the processes' /proc CPU times over the window;
4. churn: while workers send a steady job load for `fake:latest`, a random fake
   provider is killed (SIGKILL) and started again (same home) every
   60/(churn% x providers) s. Success rate, failovers, added latency per failover,
   and the ledgers: every completed job charged once by the consumer, no failed
   attempt charged anywhere, no provider charging a job twice.

The testnet itself (start-up, restartable nodes) is in bench/_scale_net.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, results_path, utc_now, write_result
from bench._scale_net import FAKE, Net, build
from bench.network import summary
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.protocol import JobParams
from p2pinfer.testing.tiny_model import write_tiny_model
from p2pinfer.testnet import processes as testnet

RESULTS = results_path("scale.json")
ADMITTED = re.compile(r"advert admitted peer=\S+ seq=(\d+) delay_ms=(-?\d+)")


def cpu_s(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return float("nan")


async def measure_idle(net: Net, window_s: float, interval_s: float) -> dict[str, Any]:
    pids = {n.index: n.pid for n in net.state.nodes}
    t0_ms = time.time_ns() // 1_000_000
    before = {i: cpu_s(p) for i, p in pids.items()}
    await trio.sleep(window_s)
    per_min = {i: (cpu_s(p) - before[i]) / window_s * 60 for i, p in pids.items()}
    delays: list[float] = []
    for n in net.state.nodes:
        text = (Path(n.home) / "node.log").read_text(errors="replace")
        delays += [float(d) for seq, d in ADMITTED.findall(text) if int(seq) >= t0_ms]
    providers = len(pids) - 1
    rss = {i: psutil.Process(p).memory_info().rss / 2**20 for i, p in pids.items()
           if testnet.pid_alive(p)}

    def of(kind: str, table: dict[int, float]) -> dict[str, float]:
        return summary([v for i, v in table.items() if net.kinds[i] == kind and v == v])

    return {
        "window_s": window_s, "advert_interval_s": interval_s,
        "advert_propagation_ms": summary(delays),
        "advert_admissions_seen": len(delays),
        "advert_admissions_expected": int(providers * (providers) * window_s / interval_s),
        "idle_cpu_s_per_node_per_min": {"fake": of("fake", per_min), "tiny": of("tiny", per_min),
                                        "bootstrap": round(per_min[0], 2)},
        "rss_mb": {"fake": of("fake", rss), "tiny": of("tiny", rss),
                   "bootstrap": round(rss.get(0, float("nan")), 1)},
    }


async def cold_lookups(bootstrap: str, count: int, serving: int) -> dict[str, Any]:
    """`count` fresh consumers, one after another: join, then the first DHT lookup."""
    join_ms: list[float] = []
    lookup_ms: list[float] = []
    found: list[int] = []
    for _ in range(count):
        t0 = time.perf_counter()
        async with run_host(NetConfig(NodeIdentity.generate(), bootstrap=(bootstrap,))) as host:
            with trio.fail_after(60):
                while not host.peers():
                    await trio.sleep(0.02)
            join_ms.append((time.perf_counter() - t0) * 1000)
            t1 = time.perf_counter()
            refs = await host.find_providers(FAKE, count=serving + 5)
            lookup_ms.append((time.perf_counter() - t1) * 1000)
            found.append(len(refs))
    return {"consumers": count, "join_ms": summary(join_ms), "lookup_ms": summary(lookup_ms),
            "providers_found": summary([float(f) for f in found]), "serving": serving,
            "method": "each consumer is a fresh host (new key, empty routing table) joined "
                      "through node 0; the lookup is its first find_providers(fake:latest)"}


def charges(home: Path) -> list[str]:
    """Job ids (hex) of the charge entries in a node's ledger (read-only)."""
    path = home / "ledger.sqlite3"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [r[0] for r in conn.execute(
            "SELECT idem_key FROM entries WHERE kind = 'charge'")]
    finally:
        conn.close()


# Over 60 lines by design: the job workers and the killer share state in one nursery.
async def churn(net: Net, bootstrap: str, work: Path, seconds: float, percent: float,
                workers: int, max_tokens: int, seed: int, hot_pct: float) -> dict[str, Any]:
    """Jobs under churn. `hot_pct` % of the kills hit a provider that served one of the
    consumer's last jobs (so most likely the one serving it now): with 46 providers a
    uniformly random victim was almost never in use, and a run with no failover says
    nothing about failover. The rest are uniformly random, as churn in the wild."""
    rng = random.Random(seed)
    fakes = [i for i, k in net.kinds.items() if k == "fake"]
    peer_index: dict[str, int] = {}
    for i in fakes:
        status = testnet.read_node_status(net.directory / f"node{i}")
        if status is not None:
            peer_index[status.peer_id] = i
    recent: list[str] = []  # providers of the last jobs, newest last
    hot_kills = 0
    period_s = 60.0 / (percent / 100 * len(fakes))
    identity = NodeIdentity.generate()
    ledger = Ledger.open(work / "churn-consumer.sqlite3", identity)
    ledger.record_faucet(identity.public_key, 10**12, grant_id="bench")
    config = ClientConfig(max_attempts=6, accept_timeout_s=10, first_chunk_timeout_s=10,
                          chunk_timeout_s=5)
    rows: list[dict[str, Any]] = []
    errors: list[str] = []
    kills: list[dict[str, Any]] = []
    params = JobParams(max_tokens=max_tokens, temperature=0.0)
    async with run_host(NetConfig(identity, bootstrap=(bootstrap,))) as host:
        client = JobClient(host, identity, ledger=ledger, config=config)
        with trio.fail_after(120):  # the catalog fills by gossip
            while len(host.catalog.providers(FAKE)) < len(fakes) * 0.9:
                await trio.sleep(0.1)
        deadline = trio.current_time() + seconds

        async def worker() -> None:
            while trio.current_time() < deadline:
                t0 = time.perf_counter()
                try:
                    with trio.fail_after(60):
                        out = await client.run(FAKE, "Say something.", params)
                except Exception as exc:  # a lost job: counted, with why
                    errors.append(f"{type(exc).__name__}: {exc}")
                    continue
                recent.append(out.provider)
                del recent[:-6]
                rows.append({"ms": (time.perf_counter() - t0) * 1000, "job_id": out.job_id,
                             "provider": out.provider,
                             "failovers": len(out.failovers), "ttft_ms": out.ttft_ms,
                             "failed_ids": [f.job_id for f in out.failovers],
                             "reasons": [f.reason for f in out.failovers],
                             "tokens": out.completion_tokens})

        restarting: set[int] = set()

        async def restart(victim: int) -> None:
            t0 = time.perf_counter()
            net.spawn(victim)
            await trio.to_thread.run_sync(net.wait, victim)
            kills.append({"node": victim, "restart_s": round(time.perf_counter() - t0, 2)})
            restarting.discard(victim)

        async def churner() -> None:
            nonlocal hot_kills
            # Kills on a fixed clock, restarts in parallel: waiting for each restart
            # before the next kill stretched the period (and cut the churn rate) by
            # the restart time.
            async with trio.open_nursery() as restarts:
                next_kill = trio.current_time() + period_s / 2  # kills centred in the window
                while next_kill < deadline:
                    await trio.sleep_until(next_kill)
                    next_kill += period_s
                    hot = [peer_index[p] for p in reversed(recent)
                           if p in peer_index and peer_index[p] not in restarting]
                    if hot and rng.random() * 100 < hot_pct:
                        victim = hot[0]
                        hot_kills += 1
                    else:
                        victim = rng.choice([f for f in fakes if f not in restarting])
                    os.kill(net.pid(victim), signal.SIGKILL)
                    restarting.add(victim)
                    restarts.start_soon(restart, victim)

        async with trio.open_nursery() as nursery:
            for _ in range(workers):
                nursery.start_soon(worker)
            nursery.start_soon(churner)
    consumer_charges = [r[0] for r in sqlite3.connect(
        work / "churn-consumer.sqlite3").execute(
        "SELECT idem_key FROM entries WHERE kind = 'charge'")]
    ledger.close()
    provider_charges: list[str] = []
    for i in fakes:
        provider_charges += charges(net.directory / f"node{i}")
    done_ids = {r["job_id"] for r in rows}
    failed_ids = {j for r in rows for j in r["failed_ids"]}
    clean = [r["ms"] for r in rows if r["failovers"] == 0]
    with_fo = [r for r in rows if r["failovers"] > 0]
    base = statistics.median(clean) if clean else float("nan")
    added = [(r["ms"] - base) / r["failovers"] for r in with_fo]
    total = len(rows) + len(errors)
    return {
        "seconds": seconds, "providers": len(fakes), "churn_percent_per_min": percent,
        "kill_every_s": round(period_s, 2), "kills": len(kills),
        "kills_of_a_provider_in_recent_use": hot_kills,
        "providers_that_served": len({r["provider"] for r in rows}),
        "churn_percent_per_min_done": round(len(kills) / len(fakes) / seconds * 60 * 100, 1),
        "restart_to_listening_s": summary([k["restart_s"] for k in kills]),
        "workers": workers, "max_tokens": max_tokens,
        "jobs": total, "completed": len(rows), "lost": len(errors),
        "success_rate": round(len(rows) / total, 4) if total else None,
        "failovers": sum(r["failovers"] for r in rows),
        "failover_reasons": sorted({x for r in rows for x in r["reasons"]})[:10],
        "latency_ms_no_failover": summary(clean),
        "latency_ms_with_failover": summary([r["ms"] for r in with_fo]),
        "added_ms_per_failover": summary(added),
        "errors": sorted(set(errors))[:10],
        "ledger": {
            "consumer_charges": len(consumer_charges),
            "consumer_charged_twice": len(consumer_charges) - len(set(consumer_charges)),
            "consumer_charges_not_completed": len(set(consumer_charges) - done_ids),
            "completed_not_charged_by_consumer": len(done_ids - set(consumer_charges)),
            "provider_charges": len(provider_charges),
            "provider_charged_twice": len(provider_charges) - len(set(provider_charges)),
            "failed_attempts_charged_by_a_provider": len(failed_ids & set(provider_charges)),
            "completed_charged_by_provider": len(done_ids & set(provider_charges)),
        },
        "_churn_latencies": [(r["ms"], r["failovers"]) for r in rows],
        "goal": ">= 99% of jobs complete at 20% of providers churning per minute; "
                "no job charged twice",
    }


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    idle, dht, ch = result["idle"], result["dht"], result["churn"]
    delays = result["_advert_delays"]
    axes[0].hist(delays, bins=50, color="tab:blue")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("advert propagation, ms")
    axes[0].set_title(f"{result['nodes']} nodes: p50 {idle['advert_propagation_ms']['p50']:.0f}"
                      f" ms, p99 {idle['advert_propagation_ms']['p99']:.0f} ms")
    axes[1].bar(["join", "lookup"], [dht["join_ms"]["p50"], dht["lookup_ms"]["p50"]],
                yerr=[[0, 0], [dht["join_ms"]["p99"] - dht["join_ms"]["p50"],
                                dht["lookup_ms"]["p99"] - dht["lookup_ms"]["p50"]]],
                color="tab:green")
    axes[1].set_ylabel("ms (bar p50, whisker p99)")
    axes[1].set_title("cold consumer: join, first DHT lookup")
    lat = ch["_churn_latencies"]
    axes[2].scatter(range(len(lat)), [x[0] for x in lat], s=4,
                    c=["tab:red" if x[1] else "tab:gray" for x in lat])
    axes[2].set_yscale("log")
    axes[2].set_xlabel("job (red: failed over)")
    axes[2].set_ylabel("job latency, ms")
    axes[2].set_title(f"churn {ch['churn_percent_per_min']:g}%/min: "
                      f"{ch['completed']}/{ch['jobs']} completed")
    fig.suptitle(f"p2pinfer scale bench, {result['date']}, {result['machine']['cpus']} CPUs, "
                 f"load {result['machine']['load_avg_before'][0]:.1f}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="p2pinfer-scale-") as tmp:
        work = Path(tmp)
        tiny = write_tiny_model(work / "tiny.gguf")
        try:  # a node that fails to start still leaves the ones started before it to stop
            net, bootstrap, startup_s = build(work / "net", tiny, args.nodes, args.real,
                                              args.rate, args.interval)
            result: dict[str, Any] = {"nodes": args.nodes, "real_engine_nodes": args.real,
                                      "fake_nodes": args.nodes - 1 - args.real,
                                      "fake_rate_tokens_per_s": args.rate,
                                      "startup_s": round(startup_s, 1)}
            print(f"{args.nodes} nodes up in {startup_s:.0f} s", flush=True)
            t0_ms = time.time_ns() // 1_000_000
            result["idle"] = await measure_idle(net, args.window, args.interval)
            print(json.dumps(result["idle"], indent=1), flush=True)
            result["_advert_delays"] = [
                float(d) for n in net.state.nodes for seq, d in ADMITTED.findall(
                    (Path(n.home) / "node.log").read_text(errors="replace")) if int(seq) >= t0_ms]
            result["dht"] = await cold_lookups(bootstrap, args.lookups, result["fake_nodes"])
            print(json.dumps(result["dht"], indent=1), flush=True)
            load_mid = os.getloadavg()
            c = await churn(net, bootstrap, work, args.churn_s, args.churn, args.workers,
                            args.max_tokens, args.seed, args.hot_kills)
            result["churn"] = c
            print(json.dumps(c, indent=1), flush=True)
        finally:
            testnet.down(work / "net")
    result["machine"] = machine(
        load_avg_before=load_before, load_avg_before_churn=load_mid,
        note="one shared 2-core VM runs all nodes, the consumer and other helpers' work")
    result["date"] = utc_now()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--real", type=int, default=3, help="nodes on the real (tiny) engine")
    parser.add_argument("--rate", type=float, default=30.0, help="fake tokens/s")
    parser.add_argument("--interval", type=float, default=30.0, help="advert republish, s")
    parser.add_argument("--window", type=float, default=60.0, help="idle window, s")
    parser.add_argument("--lookups", type=int, default=10)
    parser.add_argument("--churn-s", type=float, default=90.0)
    parser.add_argument("--churn", type=float, default=20.0, help="%% of providers per min")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--hot-kills", type=float, default=50.0,
                        help="%% of kills aimed at a provider the consumer used last")
    parser.add_argument("--out", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    outcome = trio.run(main, arguments)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    plot(outcome, arguments.out.with_suffix(".png"))
    for key in [k for k in outcome if k.startswith("_")]:
        del outcome[key]
    del outcome["churn"]["_churn_latencies"]
    write_result(arguments.out, outcome)
    print(f"wrote {arguments.out}")
