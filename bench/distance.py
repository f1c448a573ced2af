"""Distance, measured: a consumer here, providers behind a relay that delays every byte.

Run from the repository root:  python bench/distance.py [--rtts 0,20,80,200] [--runs 8]
Writes bench/results/distance.json.

The issue asks for `tc netem` between Docker containers; this VM's kernel has no
sch_netem ("Specified qdisc kind is unknown"), so the delay is a userspace TCP relay
(`DelayProxy`, 127.0.0.2 -> 127.0.0.1; the consumer refuses 127.0.0.1) holding each
byte RTT/2 per direction. Providers are node
processes with the FAKE engine `--backend fake-stream=30` (30 tokens/s, max_tokens 60).
RTT 0 (the same relay, no delay) is the local baseline. Then two equal providers
(same price) at 20 and 80 ms: which one the client picks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, results_path, utc_now, write_result
from bench.network import summary
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.protocol import ChatTurn, JobParams
from p2pinfer.testnet import processes as testnet

RESULTS = results_path("distance.json")
PREFIX = "p2pinfer-distance-"
MODEL = "fake:latest"
RATE = 30.0


class DelayProxy:
    """A TCP relay, 127.0.0.2 to a provider on 127.0.0.1, holding every byte RTT/2 in
    each direction: a round trip through it grows by RTT (bandwidth is not limited). Stands in for
    `tc netem`, which this VM's kernel lacks (no sch_netem)."""

    def __init__(self, upstream_port: int, rtt_ms: int) -> None:
        self.upstream_port = upstream_port
        self.one_way_s = rtt_ms / 2000
        self.port = 0

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.2")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    async def _handle(self, client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, upstream, nursery.cancel_scope)
            nursery.start_soon(self._pipe, upstream, client, nursery.cancel_scope)

    async def _pipe(self, src: trio.SocketStream, dst: trio.SocketStream,
                    scope: trio.CancelScope) -> None:
        send, recv = trio.open_memory_channel[tuple[float, bytes]](math.inf)

        async def delayed() -> None:
            async for due, data in recv:
                await trio.sleep_until(due)
                await dst.send_all(data)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(delayed)
            try:
                while data := await src.receive_some(65536):
                    send.send_nowait((trio.current_time() + self.one_way_s, data))
            except trio.BrokenResourceError:
                pass
            await trio.sleep(self.one_way_s)
            scope.cancel()


def start_providers(directory: Path, count: int) -> list[tuple[str, int]]:
    """`count` provider processes (the FAKE 30 tokens/s engine); (peer id, port) each."""
    opts = testnet.NodeOptions(benchmark=False)
    args = ["--backend", f"fake-stream={RATE:g}", "--models", MODEL, "--price", "1000",
            "--max-concurrency", "4"]
    testnet.up(directory, count, backend="none", gateway=False, options=opts,
               node_args={i: args for i in range(count)})
    out = []
    for node in testnet.status(directory):
        addr = node.listen_addrs[0]
        out.append((str(node.peer_id), int(addr.split("/tcp/")[1].split("/")[0])))
    return out


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
            "tokens_per_s": tokens / (last - t0),
            "stream_tokens_per_s": (tokens - 1) / (last - first) if last > first else 0.0,
            "chunks": job.outcome.chunks,
            "total_ms": (last - t0) * 1000}


async def consumer(addrs: list[str], work: Path) -> tuple[Any, Any, Any]:
    identity = NodeIdentity.generate()
    ledger = Ledger.open(work / f"c{time.time_ns()}.sqlite3", identity)
    ledger.record_faucet(identity.public_key, 10**12, grant_id="bench")
    # The providers' own address (127.0.0.1) is refused, so every byte takes the relay
    # on 127.0.0.2 even where an advert or identify offers the direct address.
    return identity, ledger, run_host(NetConfig(identity, bootstrap=tuple(addrs),
                                                deny_ips=("127.0.0.1",)))


async def at_rtt(provider: tuple[str, int], rtt: int, runs: int, max_tokens: int,
                 work: Path) -> dict[str, Any]:
    peer, port = provider
    proxy = DelayProxy(port, rtt)
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.serve)
        identity, ledger, host = await consumer(
            [f"/ip4/127.0.0.2/tcp/{proxy.port}/p2p/{peer}"], work)
        async with host as net:
            with trio.fail_after(30):
                while not net.peers():
                    await trio.sleep(0.02)
            client = JobClient(net, identity, ledger=ledger, config=ClientConfig())
            await one_job(client, 4)  # warm-up: RTT probe, connection
            rows = [await one_job(client, max_tokens) for _ in range(runs)]
            rtt_seen = client.rtt_ms(peer)
        ledger.close()
        nursery.cancel_scope.cancel()
    return {"rtt_ms": rtt, "info_rtt_measured_ms": rtt_seen,
            "ttft_ms": summary([r["ttft_ms"] for r in rows]),
            "tokens_per_s": summary([r["tokens_per_s"] for r in rows]),
            "stream_tokens_per_s": summary([r["stream_tokens_per_s"] for r in rows]),
            "chunks": summary([float(r["chunks"]) for r in rows])}


async def ranking(providers: list[tuple[str, int]], jobs: int, work: Path) -> dict[str, Any]:
    (near_id, near_port), (far_id, far_port) = providers[:2]
    near, far = DelayProxy(near_port, 20), DelayProxy(far_port, 80)
    async with trio.open_nursery() as nursery:
        await nursery.start(near.serve)
        await nursery.start(far.serve)
        identity, ledger, host = await consumer(
            [f"/ip4/127.0.0.2/tcp/{near.port}/p2p/{near_id}",
             f"/ip4/127.0.0.2/tcp/{far.port}/p2p/{far_id}"], work)
        async with host as net:
            with trio.fail_after(30):
                while len(net.peers()) < 2:
                    await trio.sleep(0.02)
            client = JobClient(net, identity, ledger=ledger, config=ClientConfig())
            # Both adverts in the catalog first: a job before that can only go to the one
            # provider known so far, which says nothing about the ranking.
            with trio.fail_after(30):
                while {c.peer_id for c in await client.candidates(MODEL)} != {near_id, far_id}:
                    await trio.sleep(0.1)
            picked = [(await one_job(client, 4))["provider"] for _ in range(jobs)]
            cands = await client.candidates(MODEL)
        ledger.close()
        nursery.cancel_scope.cancel()
    return {"jobs": jobs, "picked_near": picked.count(near_id),
            "picked_far": picked.count(far_id),
            "ranked": [{"peer": "near" if c.peer_id == near_id else "far",
                        "rtt_ms": c.rtt_ms, "rank_key": round(c.rank_key(), 1)} for c in cands]}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    result: dict[str, Any] = {"provider": f"FAKE fake-stream at {RATE:g} tokens/s, a node "
                                          "process; the delay is a userspace relay",
                              "max_tokens": args.max_tokens, "runs": args.runs, "by_rtt": []}
    with tempfile.TemporaryDirectory() as tmp:
        providers = start_providers(Path(tmp) / "net", 2)
        try:
            for rtt in args.rtts:
                row = await at_rtt(providers[0], rtt, args.runs, args.max_tokens, Path(tmp))
                print(json.dumps(row), flush=True)
                result["by_rtt"].append(row)
            result["ranking_20_vs_80_ms"] = await ranking(providers, args.rank_jobs, Path(tmp))
        finally:
            testnet.down(Path(tmp) / "net")
    base = result["by_rtt"][0]
    assert base["rtt_ms"] == 0
    for row in result["by_rtt"]:
        row["added_ttft_ms"] = round(row["ttft_ms"]["p50"] - base["ttft_ms"]["p50"], 1)
        row["ttft_goal_ms"] = 1.5 * row["rtt_ms"] + 20
        row["tokens_per_s_vs_local"] = round(
            row["tokens_per_s"]["p50"] / base["tokens_per_s"]["p50"], 3)
    result["goal"] = ("added TTFT <= 1.5 RTT + 20 ms; tokens/s >= 0.9x local at 200 ms RTT "
                      "for a 30 tokens/s provider")
    for row in result["by_rtt"]:
        row["stream_tokens_per_s_vs_local"] = round(
            row["stream_tokens_per_s"]["p50"] / base["stream_tokens_per_s"]["p50"], 3)
    result["method"] = ("tokens_per_s = completion tokens / (last text - job start), so it "
                        "includes time to first token; stream_tokens_per_s = (tokens - 1) / "
                        "(last text - first text), the rate once streaming; TTFT from "
                        "calling job() to the first text, both seen by the consumer; "
                        "'local' is RTT 0 through the same relay; the relay delays each "
                        "direction by RTT/2 (this VM's kernel has no sch_netem, so tc netem "
                        "and the Docker variant could not run)")
    result["machine"] = machine(load_avg_before=load_before,
                                shared="a VM shared with other work (see the load averages)")
    result["date"] = utc_now()
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtts", type=lambda s: [int(x) for x in s.split(",")],
                        default=[0, 20, 80, 200])
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=60)
    parser.add_argument("--rank-jobs", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    outcome = trio.run(main, arguments)
    write_result(arguments.out, outcome)
    print(f"wrote {arguments.out}")
