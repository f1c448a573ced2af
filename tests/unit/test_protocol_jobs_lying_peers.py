"""The job state machines against a lying or broken provider or consumer, all in memory."""

from __future__ import annotations

import dataclasses

import pytest

from p2pinfer.errors import SignatureError, StateError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    Chunk,
    ChunkReceived,
    ConsumerJob,
    ConsumerState,
    Failure,
    JobAccept,
    PeerClosed,
    ProtocolViolation,
    ProviderState,
    Receipt,
    charge_for,
)
from tests.unit.protocol_job_helpers import (
    DIGEST,
    finished_job,
    frame,
    new_request,
    result_for,
    started,
)
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER

# --- a lying or broken provider -----------------------------------------------------------


def test_a_wrong_output_hash_fails_the_job_and_nothing_is_receipted() -> None:
    consumer, _ = started()
    lie = frame(Chunk(consumer.job_id, 0, "Blue")) + frame(result_for(consumer, "Red"))
    events = consumer.receive_data(lie, NOW_MS)
    assert isinstance(events[-1], Failure)
    assert "output hash" in str(events[-1].error)
    assert consumer.state is ConsumerState.ERROR
    with pytest.raises(StateError):
        consumer.receipt()


def test_an_out_of_order_chunk_fails_the_job() -> None:
    consumer, _ = started()
    data = frame(Chunk(consumer.job_id, 0, "a")) + frame(Chunk(consumer.job_id, 2, "c"))
    events = consumer.receive_data(data, NOW_MS)
    assert isinstance(events[0], ChunkReceived)
    assert isinstance(events[1], Failure)
    assert "chunk 2 arrived, expected 1" in str(events[1].error)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"charged": charge_for(400, 23) + 1}, "charged"),
        ({"completion_tokens": 33}, "max_tokens"),
        ({"request_hash": bytes(32)}, "another request"),
        ({"digest": "ef" * 32}, "model build"),
    ],
)
def test_a_result_that_breaks_the_request_fails_the_job(
    changes: dict[str, object], message: str
) -> None:
    consumer, _ = started(digest=DIGEST)
    data = frame(Chunk(consumer.job_id, 0, "Blue")) + frame(result_for(consumer, "Blue", **changes))
    events = consumer.receive_data(data, NOW_MS)
    assert isinstance(events[-1], Failure)
    assert message in str(events[-1].error)


def test_messages_signed_by_anyone_but_the_provider_fail_the_job() -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    consumer.start()
    [event] = consumer.receive_data(
        frame(JobAccept(consumer.job_id, 1, consumer.request.hash), NodeIdentity.generate()), 0
    )
    assert isinstance(event, Failure) and isinstance(event.error, SignatureError)


def test_an_accept_over_the_max_price_fails_the_job() -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    consumer.start()
    accept = JobAccept(consumer.job_id, 501, consumer.request.hash)
    [event] = consumer.receive_data(frame(accept), NOW_MS)
    assert isinstance(event, Failure) and "over the max" in str(event.error)


def test_an_accept_after_the_request_expired_fails_the_job() -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    consumer.start()
    accept = JobAccept(consumer.job_id, 1, consumer.request.hash)
    [event] = consumer.receive_data(frame(accept), NOW_MS + 600_000)
    assert isinstance(event, Failure) and "expired" in str(event.error)


def test_a_provider_that_hangs_up_before_the_result_fails_the_job() -> None:
    consumer, provider = started()
    consumer.receive_data(provider.chunk("Bl"), NOW_MS)
    [event] = consumer.receive_eof()
    assert isinstance(event, Failure)
    assert consumer.state is ConsumerState.ERROR


# --- a lying or broken consumer -------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "signer", "message"),
    [
        ({"amount": 0}, CONSUMER, "amount 0"),
        ({"result_hash": bytes(32)}, CONSUMER, "another job or result"),
        ({}, NodeIdentity.from_seed(b"\x07" * 32), "not signed by the consumer"),
    ],
)
def test_a_bad_receipt_is_a_violation(
    changes: dict[str, object], signer: NodeIdentity, message: str
) -> None:
    consumer, provider = finished_job()
    assert provider.result is not None
    receipt = Receipt(consumer.job_id, provider.result.hash, 9, PROVIDER.peer_id)
    receipt = dataclasses.replace(receipt, **changes)  # type: ignore[arg-type]
    [event] = provider.receive_data(frame(receipt, signer), NOW_MS)
    assert isinstance(event, ProtocolViolation) and message in str(event.error)
    assert provider.receipt is None


def test_a_consumer_that_leaves_without_a_receipt_is_reported() -> None:
    _, provider = finished_job()
    assert provider.receive_eof() == [PeerClosed()]
    assert provider.state is ProviderState.ERROR and provider.receipt is None


def test_a_consumer_that_talks_during_the_stream_is_a_violation() -> None:
    _, provider = started()
    [event] = provider.receive_data(frame(JobAccept(bytes(16), 1, bytes(32)), CONSUMER), NOW_MS)
    assert isinstance(event, ProtocolViolation)
