"""Where a structured gateway job's time to first token goes, step by step, on one clock.

bench/gateway.py gives the ratio (engine TTFT over gateway TTFT); this gives the path
behind it. The marks are not in the code: `bench/gateway_timeline.patch` adds them
(a `p2pinfer/_trace.py` and ~30 `mark()` calls in the gateway, the consumer's job,
the stream opener, the provider's job server and the engine thread). Run it as

    git apply bench/gateway_timeline.patch
    .venv/bin/python bench/gateway_timeline.py [--jobs 24]
    git apply -R bench/gateway_timeline.patch

After a change to a line the patch marks, re-make it: apply it with `git apply --3way`,
mend the conflict, then `git add -N p2pinfer/_trace.py && git diff p2pinfer >
bench/gateway_timeline.patch` and revert (tests/unit/test_gateway_timeline.py checks
that it applies to the code as it is).

It starts a 3-node testnet (embedded llama.cpp, SmolLM2, the settings bench/gateway.py
uses), sends `--jobs` streamed json_schema chats to node 0's gateway one at a time
(after 4 warm-up jobs), and prints the median time of each mark from the client's send
(every process reads CLOCK_MONOTONIC, so the marks of the client, node 0 and the
provider share one timeline). The table goes to bench/results/gateway_timeline.json.

Mark names: `c_` the HTTP client (this process), `n_` node 0 (gateway and consumer),
`p_` the provider's job server, `e_` the provider's engine thread. A mark that runs
after a write returns (`p_chunk1_written`, `p_accept_written`) can come after the
bytes were already read on the other side: the writing task waits for the GIL while
the engine thread generates.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS_DIR, machine, median, utc_now, write_result
from bench.gateway import engine_server, wait_for_providers
from bench.gateway_features import structured_body
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.testnet import processes as testnet

TRACE = Path(tempfile.gettempdir()) / "p2pinfer-gateway-timeline.log"
RESULTS = RESULTS_DIR / "gateway_timeline.json"


def mark(label: str) -> None:
    try:
        from p2pinfer._trace import mark as trace_mark  # type: ignore[import-not-found]
    except ImportError:
        sys.exit("apply bench/gateway_timeline.patch first (see this file's doc)")
    trace_mark(label)


async def one_job(http: httpx.AsyncClient, kind: str) -> None:
    body = structured_body()
    mark("c_send")
    mark(f"c_kind_{kind}")
    first = False
    async with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not first and line.startswith("data: {"):
                choices = json.loads(line[len("data: "):])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    first = True
                    mark("c_first")
    mark("c_end")


async def jobs(url: str, engine_url: str, count: int) -> None:
    """`count` jobs through the gateway and as many through `engine serve`, alternating."""
    async with httpx.AsyncClient(base_url=url, trust_env=False, timeout=60) as gateway, \
            httpx.AsyncClient(base_url=engine_url, trust_env=False, timeout=60) as engine:
        for _ in range(4):
            await one_job(gateway, "gateway")
            await one_job(engine, "engine")
        mark("START")
        for _ in range(count):
            await one_job(gateway, "gateway")
            await trio.sleep(0.1)
            await one_job(engine, "engine")
            await trio.sleep(0.1)


def job_marks(lines: list[list[str]],
              ignore_pids: frozenset[str] = frozenset()) -> list[dict[str, float]]:
    """Per job after START (each begins at a `c_send`): each mark's first time, in ms,
    the marks of `ignore_pids` left out."""
    start = max(i for i, fields in enumerate(lines) if fields[1] == "START")
    jobs: list[dict[str, float]] = []
    for pid, label, ns, _cpu in lines[start + 1:]:
        if label == "c_send":
            jobs.append({})
        if jobs and label not in jobs[-1] and pid not in ignore_pids:
            jobs[-1][label] = int(ns) / 1e6
    return jobs


def timeline(lines: list[list[str]], kind: str,
             ignore_pids: frozenset[str] = frozenset()) -> list[dict[str, float | int | str]]:
    """Median ms from `c_send` of each mark in the `kind` jobs, earliest first (the
    nodes' marks are ignored for engine jobs: their background streams)."""
    per_job = [job for job in job_marks(lines, ignore_pids) if f"c_kind_{kind}" in job]
    order: list[str] = []
    for job in per_job:
        order.extend(label for label in job if label not in order)
    rows: list[dict[str, float | int | str]] = []
    for label in (label for label in order if not label.startswith("c_kind_")):
        offsets = [job[label] - job["c_send"] for job in per_job if label in job]
        rows.append({"mark": label, "jobs": len(offsets), "median_ms": median(offsets)})
    rows.sort(key=lambda row: row["median_ms"])
    return rows


def segments(lines: list[list[str]], kind: str) -> dict[str, float]:
    """Medians over the `kind` jobs of: before the engine (send to `e_start`), the engine
    (`e_start` to its first token) and after it (that token to the client's `c_first`)."""
    ends = {"e_start", "e_tok1_emit", "c_first"}
    mine = [j for j in job_marks(lines) if f"c_kind_{kind}" in j and ends <= j.keys()]
    return {"before_engine_ms": median([j["e_start"] - j["c_send"] for j in mine]),
            "engine_ms": median([j["e_tok1_emit"] - j["e_start"] for j in mine]),
            "after_engine_ms": median([j["c_first"] - j["e_tok1_emit"] for j in mine]),
            "ttft_ms": median([j["c_first"] - j["c_send"] for j in mine]), "jobs": len(mine)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24, help="jobs each way, alternating")
    args = parser.parse_args()
    os.environ["P2PINFER_TRACE"] = str(TRACE)  # read by p2pinfer._trace, here and in the nodes
    os.environ["P2PINFER_GATEWAY_RATE_LIMIT"] = "0"
    mark("CHECK")  # exits at once when the patch is not applied
    TRACE.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="p2pinfer-timeline-") as tmp, \
            engine_server() as engine_url:
        directory = Path(tmp) / "testnet"
        options = testnet.NodeOptions(benchmark=False, engine_options=("embedding=true",))
        testnet.up(directory, 3, models=[SMOLLM2], options=options)
        try:
            nodes = testnet.status(directory)
            url, node_pids = str(nodes[0].gateway_url), frozenset(str(n.pid) for n in nodes)
            wait_for_providers(url)
            trio.run(jobs, url, engine_url, args.jobs)
        finally:
            testnet.down(directory)
    lines = [line.split() for line in TRACE.read_text().splitlines()]
    result = {"gateway": timeline(lines, "gateway"),
              "engine": timeline(lines, "engine", node_pids)}
    split = {"gateway": segments(lines, "gateway"), "engine": segments(lines, "engine")}
    write_result(RESULTS, {"date": utc_now(), "machine": machine(), "jobs": args.jobs,
                           "segments": split, "timeline": result})  # fmt: skip
    engine = {row["mark"]: row["median_ms"] for row in result["engine"]}
    print(f"{'mark':20s} {'gateway':>9s} {'engine serve':>13s}")
    for row in result["gateway"]:
        other = engine.get(str(row["mark"]))
        print(f"{row['mark']:20s} {row['median_ms']:9.2f}"
              + (f" {other:13.2f}" if other is not None else ""))
    print(json.dumps(split, indent=2))


if __name__ == "__main__":
    main()
