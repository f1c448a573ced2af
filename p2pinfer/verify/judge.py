"""Judging a provider's answer against our own engine: its score of the text, and a
re-run of the signed request unless the score alone passes it (`verify/compare.py`).

Used by the validator and consumer re-checks (`validator/checker.py`) and by the report
receiver's re-runs (`verify/report_receiver.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from p2pinfer.backends.base import (
    Backend,
    ChatMessage,
    Completion,
    Embedder,
    TextScore,
    TextScorer,
    TokenDelta,
    Usage,
)
from p2pinfer.backends.job_params import sampling_params
from p2pinfer.errors import BackendError, ModelNotFound
from p2pinfer.protocol import JobParams, JobRequest, JobResult
from p2pinfer.protocol.embedding import encode_vectors
from p2pinfer.verify.claims import with_claims_judged
from p2pinfer.verify.compare import (
    CompareThresholds,
    Comparison,
    Verdict,
    compare_by_likelihood,
    compare_embeddings,
    compare_outputs,
)

log = logging.getLogger(__name__)


async def rerun(backend: Backend, request: JobRequest) -> tuple[str, Usage | None]:
    """Our own engine's answer to `request`, with its model and sampling parameters (for
    an embed job: its vectors, as the job's output text), and its token counts (None:
    the engine gave none)."""
    if request.kind == "embed":
        if not isinstance(backend, Embedder):
            raise ModelNotFound(f"this engine does not embed with {request.model}")
        embeddings = await backend.embed(request.model, request.inputs or ())
        return encode_vectors(embeddings.vectors), Usage(embeddings.prompt_tokens, 0)
    # The same sampling; log probabilities change no token and are not compared.
    params = replace(sampling_params(request), top_logprobs=None)
    if request.kind == "chat":
        turns = [ChatMessage(t.role, t.content, t.tool_calls, t.tool_name)
                 for t in request.messages]
        stream = backend.chat(request.model, turns, params)
    else:
        stream = backend.generate(request.model, request.prompt or "", params)
    parts: list[str] = []
    usage: Usage | None = None
    async with stream as events:
        async for event in events:
            if isinstance(event, Completion):
                usage = event.usage
                break
            if isinstance(event, TokenDelta):
                parts.append(event.text)
    return "".join(parts), usage


async def score_output(backend: Backend, request: JobRequest, text: str) -> TextScore | None:
    """Our engine's score of a provider's answer `text` to `request`; None when the engine
    cannot score a text (or failed to: the check then falls back on token agreement)."""
    if not isinstance(backend, TextScorer):
        return None
    try:
        if request.kind == "chat":
            turns = [ChatMessage(t.role, t.content, t.tool_calls, t.tool_name)
                     for t in request.messages]
            return await backend.score_chat(request.model, turns, text)
        return await backend.score_generate(request.model, request.prompt or "", text)
    except BackendError as exc:
        log.warning("answer not scored model=%s error=%s", request.model, exc)
        return None


def is_greedy(params: JobParams) -> bool:
    """Whether a request asks for the model's greedy choices (nothing sampled)."""
    return params.temperature == 0.0 or params.top_k == 1


@dataclass
class JudgeMemo:
    """What a judgement has computed so far: a pre-empted re-run starts again from here,
    not from the start (`EngineGate.run` calls the work once per attempt)."""

    scored: bool = False
    score: TextScore | None = None
    reference: str | None = None
    usage: Usage | None = None  # the re-run's token counts


async def judge_answer(
    backend: Backend, request: JobRequest, result: JobResult, text: str,
    thresholds: CompareThresholds, memo: JudgeMemo | None = None,
) -> tuple[str, Comparison]:
    """Judge the provider's answer `text` to `request`: (our reference output, or "" when
    none was needed, and the comparison). A greedy answer our engine can score and
    finds consistent passes on its likelihood alone (`compare_by_likelihood`: the
    re-run could not change that verdict); otherwise we re-run the request on our
    engine with its parameters and compare the two answers (`compare_outputs`), so
    every wrong answer is found wrong by a re-run. A reshaped request (a penalty or an
    output format) is judged by the re-run alone. An answer that passes fails still
    when its token claims are over our engine's counts, the score's or the re-run's
    (verify/claims.py)."""
    memo = memo if memo is not None else JudgeMemo()
    if request.kind == "embed":  # vectors: the re-run's, compared by cosine similarity
        if memo.reference is None:
            memo.reference, memo.usage = await rerun(backend, request)
        return memo.reference, compare_embeddings(
            memo.reference, text, len(request.inputs or ()), thresholds)
    if not memo.scored:
        # The score is the raw model's: under a penalty or a grammar the sampler picks
        # from other logits, so only the re-run (same parameters) can judge the answer.
        raw_model = not request.params.reshaped
        memo.score = await score_output(backend, request, text) if raw_model else None
        memo.scored = True
    score = memo.score
    greedy = is_greedy(request.params)
    # A stop string also ends an answer "naturally" where the model would not stop.
    claimed_stop = result.finish_reason == "stop" and not request.params.stop
    if score is not None:
        judged = compare_by_likelihood(text, score, thresholds, greedy=greedy,
                                       claimed_stop=claimed_stop)
        if judged is not None and judged.verdict is Verdict.CONSISTENT:
            return "", with_claims_judged(judged, request, result, score.prompt_tokens,
                                          score.tokens, thresholds)
    if memo.reference is None:
        memo.reference, memo.usage = await rerun(backend, request)
    reference, usage = memo.reference, memo.usage
    comparison = compare_outputs(reference, text, thresholds, score=score, greedy=greedy,
                                 claimed_stop=claimed_stop)
    # Our counts: the prompt's through our template; the answer's own (the score's
    # tokenization of it, or the re-run's count when the re-run gave the same text).
    prompt = usage.prompt_tokens if usage is not None else (
        score.prompt_tokens if score is not None else None)
    answer = score.tokens if score is not None else (
        usage.completion_tokens if usage is not None and reference == text else None)
    return reference, with_claims_judged(comparison, request, result, prompt, answer,
                                         thresholds)
