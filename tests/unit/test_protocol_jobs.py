"""The job state machines, talking to each other and to lying peers, all in memory."""

from __future__ import annotations

import dataclasses
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.errors import ReplayError, SignatureError, StateError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    CLOCK_SKEW_MS,
    MAX_REQUEST_AGE_MS,
    MAX_REQUEST_LIFETIME_MS,
    Accepted,
    ChatTurn,
    Chunk,
    ChunkReceived,
    ConsumerJob,
    ConsumerState,
    Failure,
    JobAccept,
    JobParams,
    JobRequest,
    JobResult,
    PeerClosed,
    ProtocolViolation,
    ProviderJob,
    ProviderState,
    Receipt,
    ReceiptReceived,
    Rejected,
    ReplayWindow,
    RequestReceived,
    ResultReceived,
    WireMessage,
    charge_for,
    encode_frame,
    output_hash,
    sign,
)
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER

DIGEST = "cd" * 32


def new_request(**changes: object) -> JobRequest:
    base = JobRequest(
        job_id=os.urandom(16),
        provider=PROVIDER.peer_id,
        model="smollm2:135m",
        kind="chat",
        messages=(ChatTurn("system", "Be brief."), ChatTurn("user", "Name a colour.")),
        params=JobParams(max_tokens=32, temperature=0.0, seed=1),
        max_price_per_1k=500,
        issued_at=NOW_MS,
        expires_at=NOW_MS + 60_000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def frame(msg: WireMessage, signer: NodeIdentity = PROVIDER) -> bytes:
    return encode_frame(sign(msg, signer).raw)


def started(**changes: object) -> tuple[ConsumerJob, ProviderJob]:
    """A consumer and a provider with the request delivered and accepted at 400."""
    consumer = ConsumerJob(CONSUMER, new_request(**changes))
    provider = ProviderJob(PROVIDER, ReplayWindow())
    [event] = provider.receive_data(consumer.start(), NOW_MS)
    assert isinstance(event, RequestReceived)
    provider.admit(NOW_MS)
    [accepted] = consumer.receive_data(provider.accept(400), NOW_MS)
    assert isinstance(accepted, Accepted) and accepted.price_per_1k == 400
    return consumer, provider


def result_for(consumer: ConsumerJob, text: str, **changes: object) -> JobResult:
    """What an honest provider would sign after streaming `text` at 400 per 1k."""
    base = JobResult(
        job_id=consumer.job_id,
        request_hash=consumer.request.hash,
        output_hash=output_hash(text),
        digest=DIGEST,
        prompt_tokens=20,
        completion_tokens=3,
        prompt_ms=5,
        generation_ms=30,
        total_ms=40,
        finish_reason="stop",
        charged=charge_for(400, 23),
        finished_at=NOW_MS + 40,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def split(data: bytes, rng: random.Random) -> list[bytes]:
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


# --- the happy path ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    pieces=st.lists(st.text(max_size=30), max_size=8),
    kind=st.sampled_from(["chat", "generate"]),
    rng=st.randoms(use_true_random=False),
)
def test_a_full_job_runs_between_both_machines(
    pieces: list[str], kind: str, rng: random.Random
) -> None:
    changes: dict[str, object] = {"kind": kind}
    if kind == "generate":
        changes.update(messages=(), prompt="The sky is")
    consumer = ConsumerJob(CONSUMER, new_request(**changes))
    provider = ProviderJob(PROVIDER, ReplayWindow())

    def to_provider(data: bytes) -> list[object]:
        return [e for part in split(data, rng) for e in provider.receive_data(part, NOW_MS)]

    def to_consumer(data: bytes) -> list[object]:
        return [e for part in split(data, rng) for e in consumer.receive_data(part, NOW_MS)]

    [received] = to_provider(consumer.start())
    assert isinstance(received, RequestReceived)
    assert received.request.msg == consumer.request.msg
    assert received.request.signer == CONSUMER.public_key

    provider.admit(NOW_MS)
    wire = provider.accept(300) + b"".join(provider.chunk(p) for p in pieces)
    wire += provider.finish(
        prompt_tokens=11,
        completion_tokens=len(pieces),
        finish_reason="stop",
        now_ms=NOW_MS + 900,
        digest=DIGEST,
        total_ms=900,
    )
    events = to_consumer(wire)
    assert isinstance(events[0], Accepted)
    chunks = [e for e in events if isinstance(e, ChunkReceived)]
    assert [c.seq for c in chunks] == list(range(len(pieces)))
    assert "".join(c.text for c in chunks) == "".join(pieces)
    assert isinstance(events[-1], ResultReceived)
    assert len(events) == len(pieces) + 2

    [paid] = to_provider(consumer.receipt())
    assert isinstance(paid, ReceiptReceived)
    assert consumer.state is ConsumerState.DONE and provider.state is ProviderState.DONE
    # Both sides hold the same signed evidence for their ledgers.
    assert consumer.result is not None and provider.result is not None
    assert consumer.result.raw == provider.result.raw
    assert consumer.receipt_message is not None and provider.receipt is not None
    assert consumer.receipt_message.raw == provider.receipt.raw
    assert provider.receipt.msg.amount == charge_for(300, 11 + len(pieces))
    assert provider.receipt.msg.result_hash == provider.result.hash
    assert provider.result.msg.output_hash == output_hash("".join(pieces))


def test_charge_rounds_up_to_the_micro_credit() -> None:
    assert charge_for(400, 23) == 10  # 9.2 -> 10
    assert charge_for(1000, 7) == 7
    assert charge_for(0, 10_000) == 0


# --- rejects -----------------------------------------------------------------------------


def test_a_reject_reaches_the_consumer_with_its_code_and_retry_hint() -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    provider = ProviderJob(PROVIDER, ReplayWindow())
    provider.receive_data(consumer.start(), NOW_MS)
    [event] = consumer.receive_data(provider.reject("busy", "2 jobs running", 1_500), NOW_MS)
    assert isinstance(event, Rejected)
    assert (event.code, event.message, event.retry_after_ms) == ("busy", "2 jobs running", 1_500)
    assert consumer.state is ConsumerState.CLOSED and provider.state is ProviderState.CLOSED
    with pytest.raises(StateError):
        consumer.receipt()


def test_a_provider_can_abandon_a_job_mid_stream_and_is_owed_nothing() -> None:
    consumer, provider = started()
    events = consumer.receive_data(
        provider.chunk("Bl") + provider.reject("internal_error", "engine crashed"), NOW_MS
    )
    assert isinstance(events[0], ChunkReceived) and isinstance(events[1], Rejected)
    assert consumer.result is None
    with pytest.raises(StateError):
        consumer.receipt()


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda raw: raw[:-70] + bytes([raw[-70] ^ 1]) + raw[-69:], "bad_signature"),
        (lambda raw: b"\x05hello", "bad_request"),
        (lambda raw: b"\xff\xff\xff\xff\x0f", "over_limits"),
    ],
)
def test_a_bad_request_is_answered_with_the_matching_reject_code(tamper: object, code: str) -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    provider = ProviderJob(PROVIDER, ReplayWindow())
    [violation] = provider.receive_data(tamper(consumer.start()), NOW_MS)  # type: ignore[operator]
    assert isinstance(violation, ProtocolViolation) and violation.code == code
    assert provider.state is ProviderState.ERROR
    [rejected] = consumer.receive_data(
        provider.reject(violation.code, str(violation.error)), NOW_MS
    )
    assert isinstance(rejected, Rejected) and rejected.code == code


def test_a_replayed_request_is_rejected_by_the_shared_window() -> None:
    window = ReplayWindow()
    consumer = ConsumerJob(CONSUMER, new_request())
    request_bytes = consumer.start()
    first = ProviderJob(PROVIDER, window)
    [received] = first.receive_data(request_bytes, NOW_MS)
    assert isinstance(received, RequestReceived)
    first.admit(NOW_MS, peer=CONSUMER.peer_id)
    again = ProviderJob(PROVIDER, window)
    [received] = again.receive_data(request_bytes, NOW_MS + 5_000)
    assert isinstance(received, RequestReceived)
    with pytest.raises(ReplayError) as caught:
        again.admit(NOW_MS + 5_000, peer="12D3KooWsomeoneElse")
    assert caught.value.reject_code == "replayed"


def test_a_request_takes_replay_room_only_once_admitted() -> None:
    window = ReplayWindow()
    provider = ProviderJob(PROVIDER, window)
    [received] = provider.receive_data(ConsumerJob(CONSUMER, new_request()).start(), NOW_MS)
    assert isinstance(received, RequestReceived)
    assert len(window) == 0  # read and checked, but the provider has not decided yet
    with pytest.raises(StateError, match="admit"):
        provider.accept(400)
    provider.admit(NOW_MS, peer=CONSUMER.peer_id)
    assert len(window) == 1 and window.held_by(CONSUMER.peer_id) == 1
    provider.accept(400)


def test_an_admitted_id_is_kept_until_the_request_is_too_old_not_its_whole_lifetime() -> None:
    window = ReplayWindow()
    request = new_request(expires_at=NOW_MS + MAX_REQUEST_LIFETIME_MS)
    provider = ProviderJob(PROVIDER, window)
    provider.receive_data(ConsumerJob(CONSUMER, request).start(), NOW_MS)
    provider.admit(NOW_MS)
    too_old = request.issued_at + MAX_REQUEST_AGE_MS + CLOCK_SKEW_MS + 1
    window.check_and_remember(b"x" * 16, too_old + 1_000, too_old)
    assert len(window) == 1  # the first id is gone: its request would now be refused anyway
    late = ProviderJob(PROVIDER, window)
    [refused] = late.receive_data(ConsumerJob(CONSUMER, request).start(), too_old)
    assert isinstance(refused, ProtocolViolation) and refused.code == "expired"


@pytest.mark.parametrize(
    ("now_ms", "code"), [(NOW_MS + 120_000, "expired"), (NOW_MS - 3_600_000, "expired")]
)
def test_an_expired_or_future_request_is_rejected(now_ms: int, code: str) -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    [event] = ProviderJob(PROVIDER, ReplayWindow()).receive_data(consumer.start(), now_ms)
    assert isinstance(event, ProtocolViolation) and event.code == code


def test_a_request_for_another_provider_is_rejected() -> None:
    consumer = ConsumerJob(CONSUMER, new_request(provider=CONSUMER.peer_id))
    [event] = ProviderJob(PROVIDER, ReplayWindow()).receive_data(consumer.start(), NOW_MS)
    assert isinstance(event, ProtocolViolation) and event.code == "wrong_provider"


def test_a_first_message_that_is_not_a_request_is_rejected() -> None:
    stray = frame(JobAccept(bytes(16), 1), CONSUMER)
    [event] = ProviderJob(PROVIDER, ReplayWindow()).receive_data(stray, NOW_MS)
    assert isinstance(event, ProtocolViolation) and event.code == "bad_request"


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
        frame(JobAccept(consumer.job_id, 1), NodeIdentity.generate()), 0
    )
    assert isinstance(event, Failure) and isinstance(event.error, SignatureError)


def test_an_accept_over_the_max_price_fails_the_job() -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    consumer.start()
    [event] = consumer.receive_data(frame(JobAccept(consumer.job_id, 501)), NOW_MS)
    assert isinstance(event, Failure) and "over the max" in str(event.error)


def test_an_accept_after_the_request_expired_fails_the_job() -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    consumer.start()
    [event] = consumer.receive_data(frame(JobAccept(consumer.job_id, 1)), NOW_MS + 600_000)
    assert isinstance(event, Failure) and "expired" in str(event.error)


def test_a_provider_that_hangs_up_before_the_result_fails_the_job() -> None:
    consumer, provider = started()
    consumer.receive_data(provider.chunk("Bl"), NOW_MS)
    [event] = consumer.receive_eof()
    assert isinstance(event, Failure)
    assert consumer.state is ConsumerState.ERROR


# --- a lying or broken consumer -------------------------------------------------------------


def _finished() -> tuple[ConsumerJob, ProviderJob]:
    consumer, provider = started()
    events = consumer.receive_data(
        provider.chunk("Blue")
        + provider.finish(prompt_tokens=20, completion_tokens=1, finish_reason="stop", now_ms=1),
        NOW_MS,
    )
    assert isinstance(events[-1], ResultReceived)
    return consumer, provider


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
    consumer, provider = _finished()
    assert provider.result is not None
    receipt = Receipt(consumer.job_id, provider.result.hash, 9, PROVIDER.peer_id)
    receipt = dataclasses.replace(receipt, **changes)  # type: ignore[arg-type]
    [event] = provider.receive_data(frame(receipt, signer), NOW_MS)
    assert isinstance(event, ProtocolViolation) and message in str(event.error)
    assert provider.receipt is None


def test_a_consumer_that_leaves_without_a_receipt_is_reported() -> None:
    _, provider = _finished()
    assert provider.receive_eof() == [PeerClosed()]
    assert provider.state is ProviderState.ERROR and provider.receipt is None


def test_a_consumer_that_talks_during_the_stream_is_a_violation() -> None:
    _, provider = started()
    [event] = provider.receive_data(frame(JobAccept(bytes(16), 1), CONSUMER), NOW_MS)
    assert isinstance(event, ProtocolViolation)


# --- illegal transitions -------------------------------------------------------------------------


def test_provider_methods_out_of_turn_raise_state_errors() -> None:
    provider = ProviderJob(PROVIDER, ReplayWindow())
    for action in (
        lambda: provider.accept(1),
        lambda: provider.chunk("x"),
        lambda: provider.finish(
            prompt_tokens=1, completion_tokens=1, finish_reason="stop", now_ms=0
        ),
        lambda: provider.reject("busy", "no"),
    ):
        with pytest.raises(StateError):
            action()
    _, provider = started()
    with pytest.raises(StateError):
        provider.accept(1)
    provider.finish(prompt_tokens=1, completion_tokens=0, finish_reason="stop", now_ms=0)
    with pytest.raises(StateError):
        provider.chunk("late")
    with pytest.raises(StateError):
        provider.reject("internal_error", "too late: the result is signed")


def test_a_provider_cannot_quote_over_the_consumers_max_or_overrun_max_tokens() -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    provider = ProviderJob(PROVIDER, ReplayWindow())
    provider.receive_data(consumer.start(), NOW_MS)
    provider.admit(NOW_MS)
    with pytest.raises(ValidationError, match="price_too_low"):
        provider.accept(501)
    provider.accept(500)
    with pytest.raises(ValidationError, match="max_tokens"):
        provider.finish(prompt_tokens=1, completion_tokens=33, finish_reason="length", now_ms=0)


def test_consumer_methods_out_of_turn_raise_state_errors() -> None:
    consumer = ConsumerJob(CONSUMER, new_request())
    with pytest.raises(StateError):
        consumer.receive_data(b"", NOW_MS)
    with pytest.raises(StateError):
        consumer.receipt()
    consumer.start()
    with pytest.raises(StateError):
        consumer.start()
    consumer, _ = _finished()
    consumer.receipt()
    with pytest.raises(StateError):
        consumer.receipt()
    with pytest.raises(StateError):
        consumer.receive_data(b"\x00", NOW_MS)


def test_a_finished_provider_takes_no_more_data() -> None:
    consumer, provider = _finished()
    provider.receive_data(consumer.receipt(), NOW_MS)
    with pytest.raises(StateError):
        provider.receive_data(b"\x00", NOW_MS)
    assert provider.receive_eof() == []
