"""Per-model speed on this machine: prompt tokens/s, generation tokens/s, time to first token.

Measured through the `Backend` interface (so the same code measures the
embedded engine, an Ollama server or an OpenAI-compatible one), timed on this
side of the stream, and cached on disk by model digest + hardware fingerprint:
a node measures each model once per machine.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from p2pinfer.backends.base import Backend, Completion, ModelInfo, SamplingParams, TokenDelta
from p2pinfer.errors import EngineResponseError

log = logging.getLogger(__name__)

# A fixed prompt long enough (~100 tokens) to time prompt processing.
BENCH_PROMPT = (
    "The history of the lighthouse begins in the ancient world, where fires were lit on "
    "hilltops to guide ships safely into harbour. The most famous of these, the Pharos of "
    "Alexandria, stood for more than a thousand years. Later, towers of stone and iron "
    "carried oil lamps, then lenses that gathered light into a beam visible for many miles. "
    "Keepers lived in small houses beside the towers and trimmed the wicks through long "
    "winter nights. Write the next part of this history:"
)

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class BenchResult:
    """Medians over `runs` greedy generations of the benchmark prompt."""

    model: str
    digest: str
    hardware: str  # MachineProfile.fingerprint()
    backend: str
    prompt_tokens_per_s: float
    gen_tokens_per_s: float
    ttft_ms: float
    prompt_tokens: int
    gen_tokens: int
    runs: int
    measured_at_ms: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class _Run:
    ttft_s: float
    prompt_tokens_per_s: float
    gen_tokens_per_s: float
    prompt_tokens: int
    gen_tokens: int


async def _one_run(backend: Backend, model: str, max_tokens: int) -> _Run:
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=0)
    started = time.perf_counter()
    first = last = 0.0
    deltas = 0
    done: Completion | None = None
    async with backend.generate(model, BENCH_PROMPT, params) as events:
        async for event in events:
            if isinstance(event, TokenDelta):
                last = time.perf_counter()
                first = first or last
                deltas += 1
            else:
                done = event
    if done is None or deltas == 0:
        raise EngineResponseError(f"{model} produced no tokens for the benchmark")
    ttft = first - started
    generated = done.usage.completion_tokens or deltas
    # Tokens after the first one, over the time they took (the first is in the TTFT).
    gen_rate = (generated - 1) / (last - first) if generated > 1 and last > first else 0.0
    prompt_s = done.timings.prompt_eval_ns / 1e9 if done.timings.prompt_eval_ns else ttft
    prompt_rate = done.usage.prompt_tokens / prompt_s if prompt_s > 0 else 0.0
    return _Run(ttft, prompt_rate, gen_rate, done.usage.prompt_tokens, generated)


async def run_benchmark(
    backend: Backend,
    model: ModelInfo,
    hardware: str,
    *,
    runs: int = 3,
    max_tokens: int = 64,
    on_progress: ProgressCallback | None = None,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> BenchResult:
    """Warm up once (loading the model), then time `runs` generations; report medians."""
    total = runs + 1
    await _one_run(backend, model.name, 4)
    if on_progress:
        on_progress(1, total)
    results = []
    for index in range(runs):
        results.append(await _one_run(backend, model.name, max_tokens))
        if on_progress:
            on_progress(index + 2, total)
    return BenchResult(
        model=model.name,
        digest=model.digest,
        hardware=hardware,
        backend=backend.name,
        prompt_tokens_per_s=round(statistics.median(r.prompt_tokens_per_s for r in results), 2),
        gen_tokens_per_s=round(statistics.median(r.gen_tokens_per_s for r in results), 2),
        ttft_ms=round(statistics.median(r.ttft_s for r in results) * 1000, 2),
        prompt_tokens=results[-1].prompt_tokens,
        gen_tokens=int(statistics.median(r.gen_tokens for r in results)),
        runs=runs,
        measured_at_ms=now_ms(),
    )


class BenchCache:
    """Benchmark results in one JSON file, keyed by model digest and hardware fingerprint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @staticmethod
    def key(model: ModelInfo, hardware: str, backend: str) -> str:
        # Without a digest (OpenAI-compatible servers) the name is all we have.
        return f"{backend}:{model.digest or model.name}@{hardware}"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            log.warning("ignoring unreadable benchmark cache %s", self.path)
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, model: ModelInfo, hardware: str, backend: str) -> BenchResult | None:
        entry = self._load().get(self.key(model, hardware, backend))
        if not isinstance(entry, dict):
            return None
        try:
            return BenchResult(**entry)
        except TypeError:
            return None

    def put(self, result: BenchResult, model: ModelInfo) -> None:
        data = self._load()
        data[self.key(model, result.hardware, result.backend)] = result.to_json()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        tmp.replace(self.path)


async def cached_benchmark(
    backend: Backend,
    model: ModelInfo,
    hardware: str,
    cache: BenchCache,
    *,
    force: bool = False,
    runs: int = 3,
    max_tokens: int = 64,
    on_progress: ProgressCallback | None = None,
) -> tuple[BenchResult, bool]:
    """The cached result for (model digest, hardware), else a fresh one; True if cached."""
    if not force:
        cached = cache.get(model, hardware, backend.name)
        if cached is not None:
            return cached, True
    result = await run_benchmark(
        backend, model, hardware, runs=runs, max_tokens=max_tokens, on_progress=on_progress
    )
    cache.put(result, model)
    return result, False
