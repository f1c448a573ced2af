"""Gateway benchmark: the HTTP gateway against `p2pinfer ask`, on a real 3-node testnet.

Run from the repository root:  python bench/gateway.py [--runs 8] [--tokens 64]
(`--features-only`: only the last item below, on a testnet of its own; add
`--providers-on-engine-http` for nodes that serve through one `engine serve`)
Writes bench/results/gateway.json (date, machine, numbers):

- side by side, the same greedy job through node 0's gateway (`/api/generate`,
  streamed, timed by the HTTP client) and through `p2pinfer ask --json` (timed by
  its own consumer client): time to first token and generation tokens/s
  ((completion tokens - 1) / (total - TTFT), the same definition for both);
- the TTFT the gateway adds: per gateway job, the HTTP client's TTFT minus the
  node's own consumer TTFT for that job (from its /metrics histogram), next to
  the plain HTTP round trip to the same node (`GET /api/version`) measured
  between the jobs: the part of the added time that any loopback HTTP call pays;
- requests/s with a 1-token generation at concurrency 16 through the gateway
  (nodes run `--queue 16` so requests wait for a slot instead of being refused);
- the same load on the gateway alone (a FakeNodeView in this process): the HTTP
  layer's own capacity;
- embeddings/s and structured-output (json_schema) TTFT through the gateway against
  the embedded engine in this process, same inputs (bench/gateway_features.py; the
  nodes run `--engine-option embedding=true`).

Every node runs on this machine, so the numbers include the providers' CPU load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import (  # noqa: E402
    machine,
    median,
    percentile,
    results_path,
    utc_now,
    write_result,
)
from bench.gateway_features import features  # noqa: E402
from p2pinfer.gateway import GatewayConfig, run_gateway  # noqa: E402
from p2pinfer.testnet import processes as testnet  # noqa: E402
from tests.support.gateway import MODEL, FakeNodeView  # noqa: E402

RESULTS = results_path("gateway.json")
PROMPT = "Write a long story about a dragon who learns to bake bread."
CONCURRENCY = 16


def tokens_per_s(tokens: int, total_ms: float, ttft_ms: float) -> float:
    gen_ms = total_ms - ttft_ms
    return (tokens - 1) * 1000 / gen_ms if tokens > 1 and gen_ms > 0 else 0.0


def node_ttft_sum(url: str) -> tuple[float, float]:
    """(sum of seconds, count) of the node's consumer TTFT histogram."""
    total = count = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith('p2pinfer_time_to_first_token_seconds_sum{role="consumer"}'):
            total = float(line.split()[-1])
        if line.startswith('p2pinfer_time_to_first_token_seconds_count{role="consumer"}'):
            count = float(line.split()[-1])
    return total, count


def gateway_job(client: httpx.Client, url: str, max_tokens: int) -> dict[str, float]:
    """One streamed greedy job through the gateway, timed by the HTTP client.

    `client` is made once and kept, as OpenAI's and Ollama's client libraries keep
    theirs: a new httpx client per request spends ~21 ms building its TLS context
    (measured here), which an earlier version of this script counted as gateway time."""
    before, n_before = node_ttft_sum(url)
    body = {"model": MODEL, "prompt": PROMPT, "stream": True,
            "options": {"num_predict": max_tokens, "temperature": 0, "seed": 1}}
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    with client.stream("POST", f"{url}/api/generate", json=body, timeout=300) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if not line:
                continue
            chunk = json.loads(line)
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            if first is None and chunk.get("response"):
                first = time.perf_counter()
            if chunk.get("done"):
                tokens = int(chunk.get("eval_count", 0))
    end = time.perf_counter()
    after, n_after = node_ttft_sum(url)
    assert first is not None and n_after == n_before + 1
    ttft_ms, total_ms = (first - start) * 1000, (end - start) * 1000
    return {"ttft_ms": ttft_ms, "node_ttft_ms": (after - before) * 1000, "total_ms": total_ms,
            "tokens": tokens, "tokens_per_s": tokens_per_s(tokens, total_ms, ttft_ms)}


def http_round_trip_ms(url: str, samples: int = 20) -> float:
    """Median `GET /api/version` round trip on a kept-alive connection."""
    times = []
    with httpx.Client(base_url=url, timeout=10) as client:
        client.get("/api/version")
        for _ in range(samples):
            started = time.perf_counter()
            client.get("/api/version")
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def ask_job(directory: Path, max_tokens: int) -> dict[str, float]:
    """The same job with `p2pinfer ask --json` (its own client's timings)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "p2pinfer", "ask", PROMPT, "--model", MODEL, "--json",
         "--testnet", str(directory), "--max-tokens", str(max_tokens), "--temperature", "0",
         "--seed", "1"],
        capture_output=True, text=True, env=env, timeout=300, check=True)  # fmt: skip
    out = json.loads(run.stdout)
    tokens = int(out["usage"]["completion_tokens"])
    return {"ttft_ms": out["ttft_ms"], "total_ms": out["total_ms"], "tokens": tokens,
            "tokens_per_s": tokens_per_s(tokens, out["total_ms"], out["ttft_ms"])}


async def load(url: str, requests: int, path: str = "/api/generate") -> dict[str, Any]:
    """`requests` 1-token generations, CONCURRENCY at a time; requests/s and latencies."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    todo = iter(range(requests))
    body = {"model": MODEL, "prompt": "Hi", "stream": False, "options": {"num_predict": 1}}
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            for _ in todo:
                started = time.perf_counter()
                reply = await client.post(path, json=body)
                if reply.status_code == 200:
                    latencies.append((time.perf_counter() - started) * 1000)
                else:
                    errors[str(reply.status_code)] = errors.get(str(reply.status_code), 0) + 1

        started = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for _ in range(CONCURRENCY):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - started
    ordered = sorted(latencies)
    return {
        "requests": requests, "concurrency": CONCURRENCY, "ok": len(latencies),
        "errors_by_status": errors, "seconds": round(elapsed, 2),
        "requests_per_s": round(len(latencies) / elapsed, 2),
        "latency_median_ms": median(ordered),
        "latency_p90_ms": round(percentile(ordered, 0.9), 2) if ordered else None,
    }  # fmt: skip


async def gateway_alone(requests: int) -> dict[str, Any]:
    async with trio.open_nursery() as nursery:
        config = GatewayConfig(port=0, rate_per_s=0)
        binding = await nursery.start(partial(run_gateway, FakeNodeView(), config))
        result = await load(binding.url, requests)
        nursery.cancel_scope.cancel()
    return result


def side_by_side(
    gateway: list[dict[str, float]], ask: list[dict[str, float]], rtt_ms: list[float]
) -> dict[str, Any]:
    gw_tps, ask_tps = median([g["tokens_per_s"] for g in gateway]), median(
        [a["tokens_per_s"] for a in ask])
    added = [g["ttft_ms"] - g["node_ttft_ms"] for g in gateway]
    return {
        "gateway": {"ttft_median_ms": median([g["ttft_ms"] for g in gateway]),
                    "tokens_per_s_median": gw_tps,
                    "node_ttft_median_ms": median([g["node_ttft_ms"] for g in gateway])},
        "ask": {"ttft_median_ms": median([a["ttft_ms"] for a in ask]),
                "tokens_per_s_median": ask_tps},
        "tokens_per_s_ratio_gateway_over_ask": round(gw_tps / ask_tps, 3) if ask_tps else None,
        "gateway_added_ttft_median_ms": median(added),
        "gateway_added_ttft_max_ms": round(max(added), 2),
        "http_round_trip_median_ms": median(rtt_ms),
        "goal": ">= 0.97x tokens/s, < 10 ms added median TTFT",
        "runs": {"gateway": gateway, "ask": ask},
    }  # fmt: skip


def wait_for_providers(url: str, count: int = 2, timeout_s: float = 60.0) -> None:
    """Wait (at most `timeout_s`) until the catalog of the node whose gateway is `url`
    lists `count` providers: jobs before that go to whichever advert came first."""
    deadline = time.monotonic() + timeout_s
    while len({e["provider"] for e in httpx.get(f"{url}/admin/catalog").json()[
            "entries"]}) < count and time.monotonic() < deadline:  # fmt: skip
        time.sleep(0.2)


@contextmanager
def engine_server(*, embedding: bool = False) -> Iterator[str]:
    """`p2pinfer engine serve` with SmolLM2 on a free port (the engine's own HTTP API, as a
    user runs it beside their node; `embedding`: with `--embedding`, for nodes that embed
    through it); yields its URL."""
    cmd = [sys.executable, "-m", "p2pinfer", "engine", "serve", "--port", "0",
           "--model", MODEL, *(["--embedding"] if embedding else [])]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"engine serve did not start (printed {url!r})")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def features_only(runs: int, *, providers_on_engine_http: bool = False) -> None:
    """Embeddings/s and structured-output TTFT on a fresh testnet, into gateway.json.

    `providers_on_engine_http`: the nodes serve through `--backend ollama=<URL>` of one
    `engine serve`, the one the engine-HTTP side calls, as a user's node runs beside their
    Ollama; then that side and the gateway side share one engine process, and what
    differs between them is only the network and the provider's HTTP hop to its engine."""
    with tempfile.TemporaryDirectory(prefix="p2pinfer-bench-") as tmp, \
            engine_server(embedding=providers_on_engine_http) as engine_url:
        directory = Path(tmp) / "testnet"
        if providers_on_engine_http:
            options = testnet.NodeOptions(benchmark=False)
            testnet.up(directory, 3, backend=f"ollama={engine_url}", options=options)
        else:
            options = testnet.NodeOptions(benchmark=False, engine_options=("embedding=true",))
            testnet.up(directory, 3, models=[MODEL], options=options)
        try:
            urls = [str(n.gateway_url) for n in testnet.status(directory)]
            url = urls[0]
            wait_for_providers(url)
            numbers = trio.run(features, url, runs, urls, engine_url)
        finally:
            testnet.down(directory)
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    key = "features_vs_engine_providers_on_engine_http" if providers_on_engine_http \
        else "features_vs_engine"
    result[key] = {"date": utc_now(), "machine": machine(), **numbers}
    write_result(RESULTS, result)
    print(json.dumps(numbers, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=12, help="jobs each way, interleaved")
    parser.add_argument("--tokens", type=int, default=64, help="max tokens per job")
    parser.add_argument("--load-requests", type=int, default=96)
    parser.add_argument("--feature-runs", type=int, default=30,
                        help="embedding batches and structured chats each way")  # fmt: skip
    parser.add_argument("--features-only", action="store_true", help="only embeddings/s "
                        "and structured TTFT (kept next to the last full run's numbers)")
    parser.add_argument("--providers-on-engine-http", action="store_true", help="with "
                        "--features-only: nodes serve via the engine-HTTP side's engine")
    args = parser.parse_args()
    os.environ["P2PINFER_GATEWAY_RATE_LIMIT"] = "0"  # measure capacity, not the limiter
    if args.features_only:
        features_only(args.feature_runs, providers_on_engine_http=args.providers_on_engine_http)
        return
    with tempfile.TemporaryDirectory(prefix="p2pinfer-bench-") as tmp:
        directory = Path(tmp) / "testnet"
        queue = ["--queue", str(CONCURRENCY)]
        options = testnet.NodeOptions(benchmark=False, engine_options=("embedding=true",))
        testnet.up(directory, 3, models=[MODEL], options=options,
                   node_args={i: queue for i in range(3)})  # fmt: skip
        try:
            urls = [str(n.gateway_url) for n in testnet.status(directory)]
            url = urls[0]
            wait_for_providers(url)
            client = httpx.Client(trust_env=False)
            gateway_job(client, url, 8)  # warm both paths: model pages, connections
            ask_job(directory, 8)
            gateway_runs, ask_runs, rtts = [], [], []
            for i in range(args.runs):
                print(f"run {i + 1}/{args.runs}", file=sys.stderr)
                rtts.append(http_round_trip_ms(url))
                gateway_runs.append(gateway_job(client, url, args.tokens))
                ask_runs.append(ask_job(directory, args.tokens))
            client.close()
            print("embeddings and structured output", file=sys.stderr)
            with engine_server() as engine_url:
                feature_numbers = trio.run(features, url, args.feature_runs, urls, engine_url)
            network_load = trio.run(load, url, args.load_requests)
        finally:
            testnet.down(directory)
    alone = trio.run(gateway_alone, args.load_requests * 4)
    result = {
        "date": utc_now(),
        "machine": machine(),
        "model": MODEL, "max_tokens": args.tokens, "prompt": PROMPT,
        "testnet": "3 nodes on this machine, embedded llama.cpp, --queue 16, embedding=true",
        "streaming_job": side_by_side(gateway_runs, ask_runs, rtts),
        "one_token_load_through_network": network_load,
        "one_token_load_gateway_alone": alone,
        "features_vs_engine": feature_numbers,
    }  # fmt: skip
    write_result(RESULTS, result)
    summary = {k: v for k, v in result["streaming_job"].items() if k != "runs"}
    print(json.dumps({**summary, "load": network_load, "alone": alone,
                      "features": feature_numbers}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
