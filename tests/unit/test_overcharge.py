"""Overcharge (issue 14, attack 5): the consumer signs no receipt for a charge it cannot
bound from its own request and the text it received; the provider clamps its claims."""

from __future__ import annotations

import dataclasses
import os

import pytest

from p2pinfer.errors import OverchargeError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    Accepted,
    ChatTurn,
    Chunk,
    ConsumerJob,
    ConsumerState,
    Failure,
    JobAccept,
    JobParams,
    JobRequest,
    JobResult,
    ProviderJob,
    ReplayWindow,
    ResultReceived,
    WireMessage,
    charge_for,
    encode_frame,
    output_hash,
    sign,
)
from p2pinfer.protocol.charges import (
    COMPLETION_ALLOWANCE,
    PROMPT_OVERHEAD_PER_JOB,
    PROMPT_OVERHEAD_PER_MESSAGE,
    agreed_price,
    completion_token_bound,
    max_charge,
    prompt_token_bound,
)
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.reputation import DEFAULT_REPUTATION, convict, new_peer
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER

MESSAGES = (ChatTurn("system", "Be brief."), ChatTurn("user", "Name a colour."))
PROMPT_BOUND = len("Be brief.Name a colour.") + PROMPT_OVERHEAD_PER_JOB + 2 * (
    PROMPT_OVERHEAD_PER_MESSAGE)


def request(**changes: object) -> JobRequest:
    base = JobRequest(
        job_id=os.urandom(16), provider=PROVIDER.peer_id, model="smollm2:135m", kind="chat",
        messages=MESSAGES, params=JobParams(max_tokens=64, temperature=0.0, seed=1),
        max_price_per_1k=10_000, quoted_price_per_1k=1, issued_at=NOW_MS,
        expires_at=NOW_MS + 60_000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def frame(msg: WireMessage, signer: NodeIdentity = PROVIDER) -> bytes:
    return encode_frame(sign(msg, signer).raw)


def accepted(price: int = 1, **changes: object) -> ConsumerJob:
    consumer = ConsumerJob(CONSUMER, request(**changes))
    consumer.start()
    accept = JobAccept(consumer.job_id, price, consumer.request.hash)
    [event] = consumer.receive_data(frame(accept), NOW_MS)
    assert isinstance(event, Accepted)
    return consumer


def lying_result(consumer: ConsumerJob, text: str, **changes: object) -> JobResult:
    prompt = int(changes.pop("prompt_tokens", 20))  # type: ignore[call-overload]
    completion = int(changes.pop("completion_tokens", 2))  # type: ignore[call-overload]
    base = JobResult(
        job_id=consumer.job_id, request_hash=consumer.request.hash,
        output_hash=output_hash(text), digest="cd" * 32, prompt_tokens=prompt,
        completion_tokens=completion, prompt_ms=1, generation_ms=1, total_ms=2,
        finish_reason="stop", charged=charge_for(1, prompt + completion),
        finished_at=NOW_MS + 2,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def deliver(consumer: ConsumerJob, text: str, result: JobResult) -> list[object]:
    """`text` in one chunk (none when empty, as a provider sends it), then `result`."""
    chunk = frame(Chunk(consumer.job_id, 0, text)) if text else b""
    return list(consumer.receive_data(chunk + frame(result), NOW_MS))


def test_the_reported_overcharge_is_refused_and_kept_as_evidence() -> None:
    # The attack as found: price 1 advertised, accepted at the max, 2^32-1 prompt tokens.
    consumer = ConsumerJob(CONSUMER, request())
    consumer.start()
    accept = JobAccept(consumer.job_id, 10_000, consumer.request.hash)
    [event] = consumer.receive_data(frame(accept), NOW_MS)
    assert isinstance(event, Failure) and isinstance(event.error, OverchargeError)
    assert "over the max 1" in str(event.error) and consumer.refused_accept is not None
    assert consumer.state is ConsumerState.ERROR

    consumer = accepted()
    result = lying_result(consumer, "Blue", prompt_tokens=2**32 - 1)
    events = deliver(consumer, "Blue", result)
    assert isinstance(events[-1], Failure) and isinstance(events[-1].error, OverchargeError)
    assert "prompt tokens" in str(events[-1].error)
    assert consumer.result is None and consumer.refused_result is not None
    assert consumer.refused_result.msg == result  # the provider's own signature, kept
    with pytest.raises(Exception, match="no result to receipt"):
        consumer.receipt()


@pytest.mark.parametrize(("text", "changes", "message"), [
    ("Blue", {"prompt_tokens": PROMPT_BOUND + 1}, "prompt tokens"),
    ("Blue", {"completion_tokens": 4 + COMPLETION_ALLOWANCE + 1}, "completion tokens"),
    ("", {"completion_tokens": COMPLETION_ALLOWANCE + 1}, "completion tokens"),
    ("Blue", {"completion_tokens": 65}, "max_tokens"),
    ("Blue", {"finish_reason": "error"}, "'error'"),
    ("Blue", {"charged": charge_for(1, 22) + 1}, "charged"),
])
def test_each_kind_of_overcharge_is_refused(
    text: str, changes: dict[str, object], message: str
) -> None:
    consumer = accepted()
    events = deliver(consumer, text, lying_result(consumer, text, **changes))
    assert isinstance(events[-1], Failure) and isinstance(events[-1].error, OverchargeError)
    assert message in str(events[-1].error)
    assert consumer.result is None and consumer.receipt_message is None


def test_a_charge_within_every_bound_is_receipted() -> None:
    consumer = accepted()
    # Multi-byte text: tokens are bounded by bytes, not characters.
    text = "Bleu é 青"
    most = len(text.encode()) + COMPLETION_ALLOWANCE
    result = lying_result(consumer, text, prompt_tokens=PROMPT_BOUND, completion_tokens=most,
                          finish_reason="length")
    events = deliver(consumer, text, result)
    assert isinstance(events[-1], ResultReceived)
    assert consumer.receipt()
    assert consumer.receipt_message is not None
    assert consumer.receipt_message.msg.amount <= max_charge(consumer.request.msg)
    # An error result is fine when it charges nothing.
    consumer = accepted()
    events = deliver(consumer, "Bl", lying_result(consumer, "Bl", finish_reason="error",
                                                   charged=0))
    assert isinstance(events[-1], ResultReceived)


def test_the_bounds_follow_the_request() -> None:
    assert prompt_token_bound(request()) == PROMPT_BOUND
    generate = request(kind="generate", messages=(), prompt="héllo")
    assert prompt_token_bound(generate) == 6 + PROMPT_OVERHEAD_PER_JOB + (
        PROMPT_OVERHEAD_PER_MESSAGE)
    stops = request(params=JobParams(max_tokens=64, stop=("\n\nUser:",)))
    assert completion_token_bound(stops, 10) == 10 + 7 + COMPLETION_ALLOWANCE
    assert completion_token_bound(stops, 1000) == 64  # never over max_tokens
    assert agreed_price(request()) == 1
    assert agreed_price(request(quoted_price_per_1k=None)) == 10_000
    assert max_charge(request()) == charge_for(1, PROMPT_BOUND + 64)
    with pytest.raises(ValidationError, match="quoted_price_per_1k"):
        request(quoted_price_per_1k=10_001)


def test_an_honest_provider_clamps_its_claims_so_it_is_never_refused() -> None:
    consumer = ConsumerJob(CONSUMER, request(quoted_price_per_1k=300))
    provider = ProviderJob(PROVIDER, ReplayWindow())
    provider.receive_data(consumer.start(), NOW_MS)
    provider.admit(NOW_MS)
    with pytest.raises(ValidationError, match="price_too_low"):
        provider.accept(301)  # over the quote, though under the max
    wire = provider.accept(300) + provider.chunk("Blue")
    # The engine's counts (a template longer than the overheads, say) are clamped.
    wire += provider.finish(prompt_tokens=10**6, completion_tokens=60, finish_reason="stop",
                            now_ms=NOW_MS)
    events = consumer.receive_data(wire, NOW_MS)
    assert isinstance(events[-1], ResultReceived)
    res = events[-1].result.msg
    assert res.prompt_tokens == PROMPT_BOUND
    assert res.completion_tokens == 4 + COMPLETION_ALLOWANCE
    # Ending in error: nothing charged.
    consumer = ConsumerJob(CONSUMER, request(quoted_price_per_1k=300))
    provider = ProviderJob(PROVIDER, ReplayWindow())
    provider.receive_data(consumer.start(), NOW_MS)
    provider.admit(NOW_MS)
    wire = provider.accept(300) + provider.chunk("Bl")
    wire += provider.finish(prompt_tokens=5, completion_tokens=1, finish_reason="error",
                            now_ms=NOW_MS)
    events = consumer.receive_data(wire, NOW_MS)
    assert isinstance(events[-1], ResultReceived) and events[-1].result.msg.charged == 0


def test_a_convicted_provider_scores_zero_and_its_breaker_opens() -> None:
    rec = convict(new_peer(PROVIDER.peer_id, NOW_MS), NOW_MS)
    assert rec.score_pm == 0 and rec.breaker.state is BreakerState.OPEN
    assert rec.jobs_failed == 1
    again = convict(rec, NOW_MS + 1, DEFAULT_REPUTATION)
    assert again.breaker.state is BreakerState.OPEN
