"""Network benchmark: real py-libp2p hosts on loopback, in one trio process.

Run from the repository root:  python bench/net.py [--rounds 20]
Prints a summary and writes bench/results/net.json (date, machine, numbers):
connect time, info-protocol RTT, advert latency over two gossip hops (A-B-C),
DHT lookup time in a 6-node network, one-way framed stream throughput, and the CPU of a
job-like exchange (a pipelined stream open with a 400-byte request, a 200-byte answer,
close) with `compat.quick_locks` and with libp2p's own stream locks, alternating.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, percentile, results_path, utc_now, write_result
from p2pinfer.errors import StreamClosedError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.advert_gate import ADVERTS_PER_SIGNER_PER_S
from p2pinfer.net.adverts import ADVERTS_TOPIC, Catalog
from p2pinfer.net.compat import quick_locks
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream, encode_frame
from p2pinfer.protocol import Advert, AdvertHardware, ModelOffer

RESULTS = results_path("net.json")
MODEL = "smollm2:135m"
SINK = "/p2pinfer-bench/sink/1.0.0"


def config(ip: str = "127.0.0.1", **kw: Any) -> NetConfig:
    return NetConfig(NodeIdentity.generate(), listen_addrs=(f"/ip4/{ip}/tcp/0",), **kw)


def template() -> Advert:
    offer = ModelOffer(MODEL, "ab" * 32, "135M", "Q8_0", 2048, 400_000, 25_000, 100)
    hw = AdvertHardware("bench", 2, 4096, ())
    return Advert((offer,), hw, "llama.cpp", 0, 1, (), 0, 0, 60_000)


def seq_of(catalog: Catalog, peer_id: str) -> int:
    advert = catalog.advert_of(peer_id)
    return -1 if advert is None else advert.seq


def summary(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 2),
        "p90_ms": round(percentile(ordered, 0.9), 2),
        "max_ms": round(ordered[-1], 2),
    }


async def bench_connect(rounds: int) -> dict[str, float]:
    samples = []
    async with run_host(config()) as server:
        for _ in range(rounds):
            async with run_host(config()) as client:
                started = time.perf_counter()
                await client.connect(server.addrs()[0])
                samples.append((time.perf_counter() - started) * 1000)
    return summary(samples)


async def bench_info(rounds: int) -> dict[str, float]:
    async with run_host(config()) as provider, run_host(config()) as consumer:
        await provider.publish_advert(provider.sign_advert(template()))
        await consumer.connect(provider.addrs()[0])
        samples = []
        for _ in range(rounds):
            fetched = await consumer.fetch_advert(provider.peer_id)
            assert fetched is not None
            samples.append(fetched.rtt_ms)
    return summary(samples)


async def bench_gossip(rounds: int) -> dict[str, float]:
    async with AsyncExitStack() as stack:
        b = await stack.enter_async_context(run_host(config("127.0.0.2")))
        a = await stack.enter_async_context(run_host(config("127.0.0.1", deny_ips=("127.0.0.3",))))
        c = await stack.enter_async_context(run_host(config("127.0.0.3", deny_ips=("127.0.0.1",))))
        await a.connect(b.addrs()[0])
        await c.connect(b.addrs()[0])
        await b.wait_for_mesh(c.peer_id, ADVERTS_TOPIC)
        await a.wait_for_mesh(b.peer_id, ADVERTS_TOPIC)
        samples = []
        for _ in range(rounds):
            # A signer's adverts are relayed 16 at once, then 4 a second (attack 51): more
            # rounds at once would wait at B, untimed, for ever.
            await trio.sleep(1 / ADVERTS_PER_SIGNER_PER_S)
            raw = a.sign_advert(template())
            started = time.perf_counter()
            advert = await a.publish_advert(raw)
            await c.catalog.wait_for(lambda cat, s=advert.seq: seq_of(cat, a.peer_id) == s)
            samples.append((time.perf_counter() - started) * 1000)
    return summary(samples)


async def bench_dht(rounds: int) -> dict[str, float]:
    async with AsyncExitStack() as stack:
        boot = await stack.enter_async_context(run_host(config()))
        joined = (boot.addrs()[0],)
        nodes: list[NetHost] = []
        for _ in range(4):
            nodes.append(await stack.enter_async_context(run_host(config(bootstrap=joined))))
        await nodes[0].provide(MODEL)
        consumer = await stack.enter_async_context(run_host(config(bootstrap=joined)))
        while not await consumer.find_providers(MODEL):
            await trio.sleep(0.05)
        samples = []
        for _ in range(rounds):
            started = time.perf_counter()
            found = await consumer.find_providers(MODEL)
            samples.append((time.perf_counter() - started) * 1000)
            assert [r.peer_id for r in found] == [nodes[0].peer_id]
    return summary(samples)


async def bench_stream(total_bytes: int, frame_bytes: int) -> dict[str, float]:
    received = trio.Event()

    async def sink(stream: NetStream) -> None:
        got = 0
        while got < total_bytes:
            try:
                got += len(await stream.read_frame(max_size=frame_bytes))
            except StreamClosedError:
                break
        received.set()

    async with run_host(config()) as server, run_host(config()) as client:
        server.set_stream_handler(SINK, sink)
        await client.connect(server.addrs()[0])
        stream = await client.open_stream(server.peer_id, SINK)
        payload = b"\x5a" * frame_bytes
        started = time.perf_counter()
        for _ in range(total_bytes // frame_bytes):
            await stream.write_frame(payload)
        await received.wait()
        elapsed = time.perf_counter() - started
        await stream.close()
    return {
        "bytes": total_bytes,
        "frame_bytes": frame_bytes,
        "mb_per_s": round(total_bytes / elapsed / 1e6, 1),
    }


@asynccontextmanager
async def exchange_pair(stock_locks: bool) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Two connected hosts; yields one job-like exchange between them (a pipelined open
    with a 400-byte request, a 200-byte answer, close). `stock_locks`: the connection
    and its streams keep libp2p's own locks, else get `compat.quick_locks`' (what nodes run)."""

    async def answer(stream: NetStream) -> None:
        await stream.read_frame(max_size=4096)
        await stream.write_frame(b"a" * 200)
        await stream.close()

    async with run_host(config()) as server, run_host(config()) as client:
        server.set_stream_handler(SINK, answer)
        first = encode_frame(b"r" * 400, 4096)

        async def exchange() -> None:
            with quick_locks.installed(not stock_locks):  # the streams, at both ends
                stream = await client.open_stream(server.peer_id, SINK, first=first)
                await stream.read_frame(max_size=4096)
                await stream.close()

        with quick_locks.installed(not stock_locks):  # the connection
            await client.connect(server.addrs()[0])
        for _ in range(20):  # warm up
            await exchange()
        yield exchange


async def bench_exchange(blocks: int, per_block: int = 25) -> dict[str, Any]:
    """CPU per job-like exchange, both hosts (one thread) together: what a job's request
    and answer cost the two ends' Python, without the engine; with `compat.quick_locks`
    and with libp2p's stock locks, in alternating blocks (the machine's speed drifts)."""
    cpu_us: dict[str, list[float]] = {"quick_locks": [], "stock_locks": []}
    async with exchange_pair(False) as quick, exchange_pair(True) as stock:
        for _ in range(blocks):
            for name, exchange in (("quick_locks", quick), ("stock_locks", stock)):
                for _ in range(per_block):
                    started = time.thread_time()
                    await exchange()
                    cpu_us[name].append((time.thread_time() - started) * 1e6)
    out: dict[str, Any] = {"n": blocks * per_block}
    for name, samples in cpu_us.items():
        samples.sort()
        out[name] = {"median_cpu_us": round(statistics.median(samples)),
                     "p90_cpu_us": round(percentile(samples, 0.9))}
    out["ratio"] = round(out["quick_locks"]["median_cpu_us"]
                         / out["stock_locks"]["median_cpu_us"], 3)
    return out


async def run(rounds: int) -> dict[str, Any]:
    with trio.fail_after(300):
        return {
            "connect": await bench_connect(max(5, rounds // 4)),
            "info_rtt": await bench_info(rounds),
            "advert_two_hops": await bench_gossip(rounds),
            "dht_find_providers_6_nodes": await bench_dht(rounds),
            "stream_one_way_4k_frames": await bench_stream(4 << 20, 4096),
            "stream_one_way_64k_frames": await bench_stream(16 << 20, 65536),
            "stream_one_way_300b_frames": await bench_stream(300 * 4000, 300),
            "job_like_exchange": await bench_exchange(rounds),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    results = trio.run(run, args.rounds)
    report = {
        "date": utc_now(),
        "machine": machine(),
        "results": results,
        "notes": "One trio process, 127.0.0.x, TCP + Noise + Yamux. Latencies include "
        "Python scheduling of every host in the same process; the machine may be shared.",
    }
    write_result(args.out, report)
    for name, value in results.items():
        print(f"{name:<30} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
