"""Token claims against a checker's own counts (verify/claims.py, attack 83)."""

from __future__ import annotations

from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import ChatTurn, JobParams, JobRequest, JobResult
from p2pinfer.verify.claims import claim_allowed, overclaim, with_claims_judged
from p2pinfer.verify.compare import DEFAULT_THRESHOLDS, Comparison, Verdict

T = DEFAULT_THRESHOLDS


PROVIDER = NodeIdentity.generate().peer_id


def request(stop: tuple[str, ...] = ()) -> JobRequest:
    return JobRequest(job_id=b"\x01" * 16, provider=PROVIDER, model="m", kind="chat",
                      max_price_per_1k=1000, issued_at=1, expires_at=2,
                      messages=(ChatTurn("user", "What is the capital of France?"),),
                      params=JobParams(max_tokens=64, stop=stop))


def result(prompt: int, completion: int, finish: str = "stop") -> JobResult:
    return JobResult(job_id=b"\x01" * 16, request_hash=b"\x02" * 32, output_hash=b"\x03" * 32,
                     digest="sha256:0", prompt_tokens=prompt, completion_tokens=completion,
                     prompt_ms=0, generation_ms=0, total_ms=0,
                     finish_reason=finish,  # type: ignore[arg-type]
                     charged=0, finished_at=1)


def passed() -> Comparison:
    return Comparison(10, 10, 10, 1000, 1000, 1000, Verdict.IDENTICAL)


def test_honest_counts_and_another_templates_pass() -> None:
    assert overclaim(request(), result(31, 12), 31, 12, T) == ""
    # Another engine's template: a default system prompt of 30 tokens more.
    assert overclaim(request(), result(61, 13), 31, 12, T) == ""
    assert claim_allowed(31, T.prompt_claim_slack, T) == 31 + 7 + 64
    assert overclaim(request(), result(31, 26), 31, 8, T) == ""  # 8 + 2 + 16


def test_the_consumers_byte_bounds_are_caught() -> None:
    # What `inflate` claims for this chat: its bytes + 256 + 16 prompt tokens.
    why = overclaim(request(), result(302, 12), 31, 12, T)
    assert why == "claims 302 prompt tokens; our engine counts 31"
    why = overclaim(request(), result(31, 64), 31, 8, T)
    assert why == "claims 64 completion tokens; our engine counts 8 in the answer"


def test_what_cannot_be_counted_is_not_judged() -> None:
    assert overclaim(request(), result(302, 64), None, None, T) == ""
    assert overclaim(request(), result(302, 12), 0, 12, T) == ""  # no count: 0
    # A cancelled result claims the prompt's estimate (a quarter of its bound).
    assert overclaim(request(), result(302, 12, "cancelled"), 31, 12, T) == ""
    # A stop string's tokens were generated and then cut from the text.
    assert overclaim(request(stop=("x" * 200,)), result(31, 200), 31, 8, T) == ""


def test_only_a_passing_answer_is_turned_into_a_failure() -> None:
    lied = with_claims_judged(passed(), request(), result(302, 12), 31, 12, T)
    assert lied.verdict is Verdict.INCONSISTENT and "302 prompt tokens" in lied.overclaim
    assert with_claims_judged(passed(), request(), result(31, 12), 31, 12, T) == passed()
    failed = Comparison(10, 10, 0, 0, 0, 0, Verdict.INCONSISTENT)
    assert with_claims_judged(failed, request(), result(302, 12), 31, 12, T) == failed
