"""Distance, measured: providers in Docker containers behind `tc netem` delays, a consumer here.

Run from the repository root (needs Docker, root for `tc`, and an image with p2pinfer's
dependencies, default `p2pinfer:test` from the docker branch):
    python bench/distance.py [--rtts 0,20,80,200] [--runs 8]
Writes bench/results/distance.json.

Each provider is a container running this checkout (mounted read-only, PYTHONPATH) with
the FAKE engine `--backend fake-stream=30` (30 tokens/s, named a fake in its log). The
delay is a netem qdisc on the host side of the container's veth, so every packet from
this host to the container waits RTT ms and the round trip grows by exactly RTT.
The consumer here runs jobs (max_tokens 60) and measures time to first token and
tokens/s; RTT 0 (same container set-up, no qdisc) is the local baseline.
Then two equal providers (same price) at 20 and 80 ms: which one the client picks.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.network import summary
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import Ledger
from p2pinfer.net import NetConfig, run_host
from p2pinfer.net.client import JobClient
from p2pinfer.net.job_types import ClientConfig
from p2pinfer.protocol import ChatTurn, JobParams

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "distance.json"
PREFIX = "p2pinfer-distance-"
MODEL = "fake:latest"
RATE = 30.0


def sh(*cmd: str, check: bool = True) -> str:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=60).stdout


def start_provider(image: str, name: str, rtt_ms: int) -> str:
    """Start a provider container with `rtt_ms` of netem delay; its /p2p/ multiaddr."""
    sh("docker", "rm", "-f", name, check=False)
    sh("docker", "run", "-d", "--name", name, "-v", f"{ROOT}:/src:ro", "-e", "PYTHONPATH=/src",
       "--entrypoint", "/opt/p2pinfer/bin/python", image, "-m", "p2pinfer", "node",
       "--home", "/tmp/h", "--listen", "/ip4/0.0.0.0/tcp/4001",
       "--backend", f"fake-stream={RATE:g}", "--models", MODEL, "--no-gateway",
       "--no-benchmark", "--price", "1000", "--max-concurrency", "4", "--faucet", "0")
    ip = sh("docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name).strip()
    deadline = time.monotonic() + 120
    peer = None
    while time.monotonic() < deadline:
        out = subprocess.run(["docker", "exec", name, "cat", "/tmp/h/node.json"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.strip():
            peer = json.loads(out.stdout)["peer_id"]
            break
        time.sleep(0.3)
    if peer is None:
        raise RuntimeError(f"{name} did not start: {sh('docker', 'logs', name, check=False)}")
    if rtt_ms:
        iflink = sh("docker", "exec", name, "cat", "/sys/class/net/eth0/iflink").strip()
        veth = next(line.split(":")[1].strip().split("@")[0]
                    for line in sh("ip", "-o", "link").splitlines()
                    if line.startswith(f"{iflink}:"))
        sh("tc", "qdisc", "replace", "dev", veth, "root", "netem", "delay", f"{rtt_ms}ms")
    return f"/ip4/{ip}/tcp/4001/p2p/{peer}"


def stop(names: list[str]) -> None:
    for name in names:
        sh("docker", "rm", "-f", name, check=False)  # removes its veth and qdisc too


async def one_job(client: JobClient, max_tokens: int) -> dict[str, Any]:
    params = JobParams(max_tokens=max_tokens, temperature=0.0)
    t0 = time.perf_counter()
    first = last = 0.0
    async with client.job(MODEL, [ChatTurn("user", "Say something.")], params) as job:
        async for _ in job:
            last = time.perf_counter()
            first = first or last
    assert job.outcome is not None
    tokens = job.outcome.completion_tokens
    return {"ttft_ms": (first - t0) * 1000, "provider": job.outcome.provider,
            "tokens_per_s": tokens / (last - t0), "chunks": job.outcome.chunks,
            "total_ms": (last - t0) * 1000}


async def consumer(addrs: list[str], work: Path) -> tuple[Any, Any, Any]:
    identity = NodeIdentity.generate()
    ledger = Ledger.open(work / f"c{time.time_ns()}.sqlite3", identity)
    ledger.record_faucet(identity.public_key, 10**12, grant_id="bench")
    return identity, ledger, run_host(NetConfig(identity, bootstrap=tuple(addrs)))


async def at_rtt(image: str, rtt: int, runs: int, max_tokens: int, work: Path
                 ) -> dict[str, Any]:
    name = f"{PREFIX}{rtt}"
    addr = start_provider(image, name, rtt)
    try:
        identity, ledger, host = await consumer([addr], work)
        async with host as net:
            with trio.fail_after(30):
                while not net.peers():
                    await trio.sleep(0.02)
            client = JobClient(net, identity, ledger=ledger, config=ClientConfig())
            await one_job(client, 4)  # warm-up: RTT probe, connection
            rows = [await one_job(client, max_tokens) for _ in range(runs)]
            rtt_seen = client.rtt_ms(net.peers()[0])
        ledger.close()
    finally:
        stop([name])
    return {"rtt_ms": rtt, "info_rtt_measured_ms": rtt_seen,
            "ttft_ms": summary([r["ttft_ms"] for r in rows]),
            "tokens_per_s": summary([r["tokens_per_s"] for r in rows]),
            "chunks": summary([float(r["chunks"]) for r in rows])}


async def ranking(image: str, jobs: int, work: Path) -> dict[str, Any]:
    names = [f"{PREFIX}near", f"{PREFIX}far"]
    near, far = start_provider(image, names[0], 20), start_provider(image, names[1], 80)
    try:
        identity, ledger, host = await consumer([near, far], work)
        async with host as net:
            with trio.fail_after(30):
                while len(net.peers()) < 2:
                    await trio.sleep(0.02)
            client = JobClient(net, identity, ledger=ledger, config=ClientConfig())
            picked = [(await one_job(client, 4))["provider"] for _ in range(jobs)]
            cands = await client.candidates(MODEL)
        ledger.close()
    finally:
        stop(names)
    near_id, far_id = near.rsplit("/", 1)[1], far.rsplit("/", 1)[1]
    return {"jobs": jobs, "picked_near": picked.count(near_id),
            "picked_far": picked.count(far_id),
            "ranked": [{"peer": "near" if c.peer_id == near_id else "far",
                        "rtt_ms": c.rtt_ms, "rank_key": round(c.rank_key(), 1)} for c in cands]}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    result: dict[str, Any] = {"provider": f"FAKE fake-stream at {RATE:g} tokens/s in Docker",
                              "max_tokens": args.max_tokens, "runs": args.runs, "by_rtt": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rtt in args.rtts:
            row = await at_rtt(args.image, rtt, args.runs, args.max_tokens, Path(tmp))
            print(json.dumps(row), flush=True)
            result["by_rtt"].append(row)
        result["ranking_20_vs_80_ms"] = await ranking(args.image, args.rank_jobs, Path(tmp))
    base = result["by_rtt"][0]
    assert base["rtt_ms"] == 0
    for row in result["by_rtt"]:
        row["added_ttft_ms"] = round(row["ttft_ms"]["p50"] - base["ttft_ms"]["p50"], 1)
        row["ttft_goal_ms"] = 1.5 * row["rtt_ms"] + 20
        row["tokens_per_s_vs_local"] = round(
            row["tokens_per_s"]["p50"] / base["tokens_per_s"]["p50"], 3)
    result["goal"] = ("added TTFT <= 1.5 RTT + 20 ms; tokens/s >= 0.9x local at 200 ms RTT "
                      "for a 30 tokens/s provider")
    result["method"] = ("tokens/s = completion tokens / (last chunk - job start), TTFT from "
                        "calling job() to the first text, both seen by the consumer; "
                        "'local' is RTT 0 through the same container bridge")
    result["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform(),
                         "load_avg_before": load_before, "load_avg_after": os.getloadavg()}
    result["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtts", type=lambda s: [int(x) for x in s.split(",")],
                        default=[0, 20, 80, 200])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--rank-jobs", type=int, default=10)
    parser.add_argument("--image", default="p2pinfer:test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    outcome = trio.run(main, arguments)
    arguments.out.parent.mkdir(parents=True, exist_ok=True)
    arguments.out.write_text(json.dumps(outcome, indent=2) + "\n")
    print(f"wrote {arguments.out}")
