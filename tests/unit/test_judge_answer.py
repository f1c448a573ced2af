"""judge_answer: which checks need a re-run on the validator's engine (a fake engine
that counts its generations; the real engine's scores are in test_compare's terms)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

import trio

from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    SamplingParams,
    TextScore,
    TokenDelta,
    Usage,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import JobParams, JobRequest, JobResult
from p2pinfer.protocol.codec import output_hash
from p2pinfer.verify.compare import DEFAULT_THRESHOLDS as T
from p2pinfer.verify.compare import Verdict
from p2pinfer.verify.judge import judge_answer

ANSWER = "The sky looks blue because air scatters short wavelengths of sunlight more."


class FakeScoringEngine:
    """Scores every answer as `score` and answers every request with `reference`."""

    def __init__(self, score: TextScore, reference: str) -> None:
        self.score, self.reference, self.generations = score, reference, 0

    @asynccontextmanager
    async def _answer(self) -> AsyncIterator[AsyncIterator[Any]]:
        self.generations += 1

        async def events() -> AsyncIterator[Any]:
            yield TokenDelta(self.reference)
            yield Completion("stop", Usage(5, 12))

        yield events()

    def generate(self, model: str, prompt: str, params: SamplingParams) -> Any:
        return self._answer()

    def chat(self, model: str, messages: Sequence[ChatMessage], params: SamplingParams) -> Any:
        return self._answer()

    async def score_generate(self, model: str, prompt: str, answer: str) -> TextScore:
        return self.score

    async def score_chat(self, model: str, messages: Sequence[ChatMessage],
                         answer: str) -> TextScore:
        return self.score


def request_and_result(temperature: float) -> tuple[JobRequest, JobResult]:
    provider = NodeIdentity.generate()
    request = JobRequest(job_id=bytes(16), provider=provider.peer_id, model="m", kind="generate",
                         prompt="Why is the sky blue?", max_price_per_1k=1, issued_at=1,
                         expires_at=2, params=JobParams(max_tokens=64, temperature=temperature))
    result = JobResult(job_id=bytes(16), request_hash=b"\0" * 32, output_hash=output_hash(ANSWER),
                       digest="", prompt_tokens=5, completion_tokens=12, prompt_ms=1,
                       generation_ms=1, total_ms=2, finish_reason="length", charged=1,
                       finished_at=2)
    return request, result


def judge(engine: FakeScoringEngine, temperature: float = 0.0) -> tuple[str, Verdict]:
    request, result = request_and_result(temperature)

    async def run() -> tuple[str, Verdict]:
        reference, comparison = await judge_answer(engine, request, result, ANSWER, T)  # type: ignore[arg-type]
        return reference, comparison.verdict

    return trio.run(run)


def likely(n: int = 12) -> TextScore:
    return TextScore((-300,) * n, (0,) * n, -100)


def off_greedy(n: int = 12) -> TextScore:
    return TextScore((-300,) * n, (T.greedy_gap_milli + 1,) * n, -100)


def test_a_likely_greedy_answer_passes_without_a_re_run() -> None:
    engine = FakeScoringEngine(likely(), "something else entirely, never compared")
    assert judge(engine) == ("", Verdict.CONSISTENT)
    assert engine.generations == 0


def test_a_fail_is_confirmed_by_a_re_run() -> None:
    engine = FakeScoringEngine(off_greedy(), "A different answer about Rayleigh scattering.")
    reference, verdict = judge(engine)
    assert verdict is Verdict.INCONSISTENT and engine.generations == 1
    assert reference == "A different answer about Rayleigh scattering."


def test_an_exact_copy_of_our_own_answer_passes_whatever_its_score() -> None:
    # A flat model scores even its own greedy answer as unlikely: the re-run saves it.
    engine = FakeScoringEngine(off_greedy(), ANSWER)
    assert judge(engine) == (ANSWER, Verdict.IDENTICAL)
    assert engine.generations == 1


def test_a_sampled_answer_is_always_re_run() -> None:
    engine = FakeScoringEngine(likely(), ANSWER)
    assert judge(engine, temperature=0.8)[1] is Verdict.IDENTICAL
    assert engine.generations == 1


class CountingScoringEngine(FakeScoringEngine):
    """Counts its scoring passes too."""

    def __init__(self, score: TextScore, reference: str) -> None:
        super().__init__(score, reference)
        self.scorings = 0

    async def score_generate(self, model: str, prompt: str, answer: str) -> TextScore:
        self.scorings += 1
        return self.score


def test_a_judgement_started_again_after_a_preemption_does_not_redo_what_it_did() -> None:
    # EngineGate.run calls the work once per attempt; a re-run pre-empted during its
    # generation must not score the answer again (on a busy engine it would never end).
    from p2pinfer.verify.judge import JudgeMemo

    engine = CountingScoringEngine(off_greedy(), "A different answer about Rayleigh scattering.")
    request, result = request_and_result(0.0)
    memo = JudgeMemo()

    async def attempts() -> Verdict:
        await judge_answer(engine, request, result, ANSWER, T, memo)  # type: ignore[arg-type]
        _, comparison = await judge_answer(engine, request, result, ANSWER, T, memo)  # type: ignore[arg-type]
        return comparison.verdict

    assert trio.run(attempts) is Verdict.INCONSISTENT
    assert engine.scorings == 1 and engine.generations == 1


def test_a_penalised_answer_is_judged_by_a_re_run_not_the_raw_models_score() -> None:
    # Under a repeat penalty the sampler picks from other logits than the model scores:
    # a likely-looking score must not pass (nor an unlikely one fail) without a re-run.
    engine = FakeScoringEngine(TextScore((-100,) * 12, (0,) * 12, -500), ANSWER)
    request, result = request_and_result(0.0)
    request = replace(request, params=replace(request.params, repeat_penalty=1.3))

    async def run() -> tuple[str, Verdict]:
        reference, comparison = await judge_answer(engine, request, result, ANSWER, T)  # type: ignore[arg-type]
        return reference, comparison.verdict

    reference, verdict = trio.run(run)
    assert (reference, verdict, engine.generations) == (ANSWER, Verdict.IDENTICAL, 1)
