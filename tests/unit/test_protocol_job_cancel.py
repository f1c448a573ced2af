"""A job stopped at the consumer's word (attack 66): the consumer's signed JobCancel, the
provider's `cancelled` result charging what it sent, and the receipt that pays it; and
the cancels a provider must not take (another key's, another job's, a second one)."""

from __future__ import annotations

import pytest

from p2pinfer.errors import StateError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    CancelAsked,
    JobCancel,
    ProtocolViolation,
    ProviderState,
    ReceiptReceived,
    ResultReceived,
    charge_for,
)
from p2pinfer.protocol.charges import prompt_token_bound, prompt_token_estimate
from tests.unit.protocol_job_helpers import frame, started
from tests.unit.protocol_strategies import CONSUMER, NOW_MS


def test_a_cancelled_job_charges_what_was_sent_and_is_paid() -> None:
    consumer, provider = started()
    consumer.receive_data(provider.chunk("Blue and"), NOW_MS)
    [asked] = provider.receive_data(consumer.cancel(), NOW_MS)
    assert isinstance(asked, CancelAsked) and provider.cancel_asked
    assert provider.state is ProviderState.STREAMING  # the output so far, then the result
    tail = provider.chunk(" green")
    prompt = prompt_token_estimate(consumer.request.msg)
    assert 0 < prompt <= prompt_token_bound(consumer.request.msg)
    result = provider.finish(prompt_tokens=prompt, completion_tokens=3,
                             finish_reason="cancelled", now_ms=NOW_MS)
    events = consumer.receive_data(tail + result, NOW_MS)
    assert isinstance(events[-1], ResultReceived)
    assert events[-1].result.msg.charged == charge_for(400, prompt + 3) > 0
    [paid] = provider.receive_data(consumer.receipt(), NOW_MS)
    assert isinstance(paid, ReceiptReceived) and provider.state is ProviderState.DONE


def test_a_cancel_that_crosses_the_result_is_harmless() -> None:
    consumer, provider = started()
    consumer.receive_data(provider.chunk("Blue"), NOW_MS)
    result = provider.finish(prompt_tokens=20, completion_tokens=1, finish_reason="stop",
                             now_ms=NOW_MS)
    cancel = consumer.cancel()  # sent before the result arrived
    assert isinstance(consumer.receive_data(result, NOW_MS)[-1], ResultReceived)
    [crossed, paid] = provider.receive_data(cancel + consumer.receipt(), NOW_MS)
    assert isinstance(crossed, CancelAsked) and isinstance(paid, ReceiptReceived)


def test_a_cancel_from_another_key_or_for_another_job_or_twice_is_a_violation() -> None:
    for signer, job_id in ((NodeIdentity.generate(), None), (CONSUMER, bytes(16))):
        consumer, provider = started()
        bad = frame(JobCancel(job_id or consumer.job_id), signer)
        [event] = provider.receive_data(bad, NOW_MS)
        assert isinstance(event, ProtocolViolation)
        assert "signed by the consumer" in str(event.error) or "another job" in str(event.error)
    consumer, provider = started()
    cancel = consumer.cancel()
    with pytest.raises(StateError):
        consumer.cancel()  # once
    [first, second] = provider.receive_data(cancel + cancel, NOW_MS)
    assert isinstance(first, CancelAsked) and isinstance(second, ProtocolViolation)


def test_only_a_streaming_job_can_be_cancelled() -> None:
    consumer, provider = started()
    consumer.receive_data(provider.finish(prompt_tokens=1, completion_tokens=0,
                                          finish_reason="stop", now_ms=NOW_MS), NOW_MS)
    with pytest.raises(StateError):
        consumer.cancel()
