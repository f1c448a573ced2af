"""The network, measured: real `p2pinfer node` processes on loopback, a consumer in this process.

Run from the repository root:  python bench/network.py [--runs 5] [--sizes 10,30]
Writes bench/results/network.json and prints a summary. Side by side, in one run:

1. tokens/s and time to first token of one greedy SmolLM2 job through the network
   (a provider node process, a JobClient here) vs the same engine called directly
   here, alternating runs so both see the same machine load;
2. jobs per second with tiny generations (the generated tiny model, 8 tokens) at
   concurrency 1, 4 and 16 against one provider process;
3. advert propagation (signing at a provider to admission in every other node's
   catalog, read from the nodes' DEBUG log lines) in 10- and 30-node testnets where
   every node but the bootstrap serves the tiny model; DHT provider lookup time from a
   fresh consumer joined through the bootstrap; RSS of idle node processes (models
   advertised, none loaded; and a `--backend none` node).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, percentile, results_path, utc_now, write_result
from p2pinfer.backends.base import ChatMessage, Completion, SamplingParams, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2, ModelSource, smollm2_path
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.protocol import ChatTurn, JobParams, JobResult, decode_as
from p2pinfer.testing.tiny_model import write_tiny_model
from p2pinfer.testnet import processes as testnet

RESULTS = results_path("network.json")
PROMPT = "Write a short story about a lighthouse keeper and a storm."
ADMITTED = re.compile(r"advert admitted peer=\S+ seq=(\d+) delay_ms=(-?\d+)")


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(percentile(values, 0.5), 2),
            "p99": round(percentile(values, 0.99), 2), "min": round(min(values, default=0), 2),
            "max": round(max(values, default=0), 2)}


def options(**kw: Any) -> testnet.NodeOptions:
    return testnet.NodeOptions(benchmark=False, **kw)


async def consumer(directory: Path, bootstrap: str, **config: Any) -> Any:
    """(host context, ledger) for a consumer joined through `bootstrap`, with credit."""
    identity = NodeIdentity.generate()
    ledger = Ledger.open(directory / "bench-consumer.sqlite3", identity)
    ledger.record_faucet(identity.public_key, 10**12, grant_id="bench")
    host = run_host(NetConfig(identity, bootstrap=(bootstrap,)))
    return identity, ledger, host, ClientConfig(**config)


# -- 1. engine vs network ----------------------------------------------------------------


async def direct_run(engine: EmbeddedBackend, max_tokens: int) -> dict[str, float]:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=1)
    started = time.perf_counter()
    first = last = 0.0
    tokens, prompt_ms = 0, 0.0
    async with engine.chat(SMOLLM2, [ChatMessage("user", PROMPT)], params) as events:
        async for event in events:
            if isinstance(event, TokenDelta):
                last = time.perf_counter()
                first = first or last
            elif isinstance(event, Completion):
                tokens = event.usage.completion_tokens
                prompt_ms = event.timings.prompt_eval_ns / 1e6
    return rates(started, first, last, tokens, prompt_ms)


async def network_run(client: JobClient, max_tokens: int) -> dict[str, float]:
    params = JobParams(max_tokens=max_tokens, temperature=0.0, seed=1)
    started = time.perf_counter()
    first = last = 0.0
    async with client.job(SMOLLM2, [ChatTurn("user", PROMPT)], params) as job:
        async for _ in job:
            last = time.perf_counter()
            first = first or last
    assert job.outcome is not None
    prompt_ms = float(decode_as(job.outcome.result, JobResult).msg.prompt_ms)
    return rates(started, first, last, job.outcome.completion_tokens, prompt_ms)


def rates(started: float, first: float, last: float, tokens: int, prompt_ms: float
          ) -> dict[str, float]:
    """Per run: time to first token, and its part beyond the engine's own prompt time
    (what the path adds, free of the prompt-processing noise of a loaded machine)."""
    ttft = (first - started) * 1000
    return {"ttft_ms": ttft, "ttft_beyond_prompt_ms": ttft - prompt_ms, "tokens": tokens,
            "tokens_per_s": (tokens - 1) / (last - first) if last > first else 0.0,
            "total_ms": (last - started) * 1000}


async def engine_vs_network(work: Path, runs: int, max_tokens: int) -> dict[str, Any]:
    directory = work / "engine"
    testnet.up(directory, 1, models=[SMOLLM2], gateway=False, options=options())
    try:
        [node] = testnet.status(directory)
        path = smollm2_path()
        assert path is not None
        engine = EmbeddedBackend([ModelSource(SMOLLM2, path)])
        identity, ledger, host, config = await consumer(directory, node.listen_addrs[0])
        async with host as net:
            client = JobClient(net, identity, ledger=ledger, config=config)
            await direct_run(engine, 8)  # warm-ups: load the model on both sides,
            await network_run(client, 8)  # dial the provider, measure its RTT once
            direct, network = [], []
            for _ in range(runs):
                direct.append(await direct_run(engine, max_tokens))
                network.append(await network_run(client, max_tokens))
        await engine.aclose()
        ledger.close()
    finally:
        testnet.down(directory)

    def field(rows: list[dict[str, float]], key: str) -> list[float]:
        return [r[key] for r in rows]

    def median(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(field(rows, key))

    paired_ttft = [n["ttft_ms"] - d["ttft_ms"] for d, n in zip(direct, network, strict=True)]
    paired_beyond = [n["ttft_beyond_prompt_ms"] - d["ttft_beyond_prompt_ms"]
                     for d, n in zip(direct, network, strict=True)]
    d_tps = median(direct, "tokens_per_s")
    return {
        "model": SMOLLM2, "max_tokens": max_tokens, "runs": runs,
        "tokens_generated": field(network, "tokens"),
        "direct": {k: summary(field(direct, k))
                   for k in ("tokens_per_s", "ttft_ms", "ttft_beyond_prompt_ms")},
        "network": {k: summary(field(network, k))
                    for k in ("tokens_per_s", "ttft_ms", "ttft_beyond_prompt_ms")},
        "tokens_per_s_ratio_median": round(median(network, "tokens_per_s") / d_tps, 3),
        "added_ttft_ms_median": round(median(network, "ttft_ms") - median(direct, "ttft_ms"), 1),
        "added_ttft_ms_median_of_pairs": round(statistics.median(paired_ttft), 1),
        "added_ttft_beyond_prompt_ms_median_of_pairs": round(statistics.median(paired_beyond),
                                                             1),
        "goal": ">= 0.95x tokens/s, < 30 ms added median time to first token",
        "method": "runs alternate direct/network; 'beyond_prompt' subtracts the engine's own "
                  "prompt-processing time (JobResult.prompt_ms / Completion timings), which "
                  "varies by hundreds of ms on a loaded machine",
    }


# -- 2. jobs per second ------------------------------------------------------------------


async def jobs_per_second(work: Path, tiny: Path, levels: list[int], seconds: float
                          ) -> dict[str, Any]:
    directory = work / "jobs"
    args = ["--max-concurrency", "16", "--queue", "64", "--price", "1000"]
    testnet.up(directory, 1, models=[f"tiny:latest={tiny}"], gateway=False, options=options(),
               node_args={0: args})
    out: dict[str, Any] = {"model": "tiny (generated, 2 layers)", "max_tokens": 8}
    try:
        [node] = testnet.status(directory)
        identity, ledger, host, config = await consumer(directory, node.listen_addrs[0])
        async with host as net:
            client = JobClient(net, identity, ledger=ledger, config=config)
            await client.run("tiny", "warm up", JobParams(max_tokens=8))
            for level in levels:
                out[f"concurrency_{level}"] = await load(client, level, seconds)
        ledger.close()
    finally:
        testnet.down(directory)
    return out


async def load(client: JobClient, level: int, seconds: float) -> dict[str, Any]:
    """`level` workers running tiny jobs back to back for `seconds`."""
    counts = {"jobs": 0, "failed": 0, "failovers": 0}
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                outcome = await client.run("tiny", "Hello there", JobParams(max_tokens=8))
            except Exception:
                counts["failed"] += 1
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            counts["jobs"] += 1
            counts["failovers"] += len(outcome.failovers)

    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(level):
            nursery.start_soon(worker)
    elapsed = time.perf_counter() - started
    return {**counts, "seconds": round(elapsed, 2),
            "jobs_per_s": round(counts["jobs"] / elapsed, 1), "latency_ms": summary(latencies)}


# -- 3. adverts, DHT, RSS ----------------------------------------------------------------


async def network_of(work: Path, tiny: Path, size: int, window_s: float, lookups: int,
                     interval_s: float) -> dict[str, Any]:
    directory = work / f"net{size}"
    node_args = {i: ["--log-level", "DEBUG"] for i in range(size)}
    node_args[0] = ["--log-level", "DEBUG", "--backend", "none"]
    started_up = time.perf_counter()
    testnet.up(directory, size, models=[f"tiny:latest={tiny}"], gateway=False,
               options=options(advert_interval_s=interval_s), node_args=node_args)
    try:
        startup_s = time.perf_counter() - started_up
        nodes = testnet.status(directory)
        all_up_ms = time.time_ns() // 1_000_000
        procs = [psutil.Process(n.pid) for n in nodes]
        cpu_before = [sum(p.cpu_times()[:2]) for p in procs]
        await trio.sleep(window_s)  # a measurement window: several republish rounds
        cpu_pct = [(sum(p.cpu_times()[:2]) - b) / window_s * 100
                   for p, b in zip(procs, cpu_before, strict=True) if p.is_running()]
        delays: list[float] = []
        for node in nodes:
            text = (Path(node.home) / "node.log").read_text(errors="replace")
            delays += [float(d) for seq, d in ADMITTED.findall(text) if int(seq) >= all_up_ms]
        rounds = window_s / interval_s
        expected = (size - 1) * (size - 1) * rounds  # publishers x receivers x rounds
        alive = [n for n in nodes if testnet.pid_alive(n.pid)]
        rss = {n.index: psutil.Process(n.pid).memory_info().rss / 2**20 for n in alive}
        _, ledger, host, _ = await consumer(directory, nodes[0].listen_addrs[0])
        lookup_ms: list[float] = []
        found: list[int] = []
        async with host as net:
            with trio.move_on_after(30):
                while not net.peers():
                    await trio.sleep(0.05)
            await net.refresh_routing_table()
            for _ in range(lookups):
                t0 = time.perf_counter()
                refs = await net.find_providers("tiny:latest", count=size)
                lookup_ms.append((time.perf_counter() - t0) * 1000)
                found.append(len(refs))
        ledger.close()
    finally:
        testnet.down(directory)
    tiny_rss = [v for i, v in rss.items() if i != 0]
    return {
        "nodes": size, "alive_at_end": len(alive), "startup_s": round(startup_s, 1),
        "advert_interval_s": interval_s,
        "advert_propagation_ms": summary(delays),
        "advert_admissions_seen": len(delays), "advert_admissions_expected": int(expected),
        "idle_cpu_percent_per_node": summary(cpu_pct),
        "dht_lookup_ms": summary(lookup_ms),
        "dht_providers_found": {"min": min(found), "max": max(found), "serving": size - 1},
        "idle_rss_mb": {"backend_none": round(rss.get(0, float("nan")), 1),
                        "tiny_advertised_not_loaded": summary(tiny_rss)},
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="p2pinfer-bench-") as tmp:
        work = Path(tmp)
        tiny = write_tiny_model(work / "tiny.gguf")
        result: dict[str, Any] = {}
        result["engine_vs_network"] = await engine_vs_network(work, args.runs, args.max_tokens)
        print(json.dumps(result["engine_vs_network"], indent=1), flush=True)
        result["jobs_per_second"] = await jobs_per_second(work, tiny, [1, 4, 16], args.seconds)
        print(json.dumps(result["jobs_per_second"], indent=1), flush=True)
        result["networks"] = []
        for size in args.sizes:
            row = await network_of(work, tiny, size, args.window, args.lookups, args.interval)
            print(json.dumps(row, indent=1), flush=True)
            result["networks"].append(row)
    result["machine"] = machine(
        load_avg_before=load_before,
        note="shared 2-core VM; other work ran at the same time (see load averages)")
    result["date"] = utc_now()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=8.0, help="per concurrency level")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10, 30])
    parser.add_argument("--window", type=float, default=30.0, help="advert window, seconds")
    parser.add_argument("--interval", type=float, default=10.0,
                        help="advert republication interval of the nodes, seconds")
    parser.add_argument("--lookups", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    outcome = trio.run(main, arguments)
    write_result(arguments.out, outcome)
    print(f"wrote {arguments.out}")
