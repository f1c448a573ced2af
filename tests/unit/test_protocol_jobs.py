"""The job state machines, talking to each other, all in memory: the happy path, rejects,
illegal transitions. Lying peers: test_protocol_jobs_lying_peers.py."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.errors import ReplayError, StateError, ValidationError
from p2pinfer.protocol import (
    CLOCK_SKEW_MS,
    MAX_REQUEST_AGE_MS,
    MAX_REQUEST_LIFETIME_MS,
    Accepted,
    ChunkReceived,
    ConsumerJob,
    ConsumerState,
    JobAccept,
    ProtocolViolation,
    ProviderJob,
    ProviderState,
    ReceiptReceived,
    Rejected,
    ReplayWindow,
    RequestReceived,
    ResultReceived,
    charge_for,
    output_hash,
)
from tests.unit.protocol_job_helpers import DIGEST, finished_job, frame, new_request, split, started
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER

# --- the happy path ------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    pieces=st.lists(st.text(min_size=1, max_size=30), max_size=8),  # as a provider sends
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
    stray = frame(JobAccept(bytes(16), 1, bytes(32)), CONSUMER)
    [event] = ProviderJob(PROVIDER, ReplayWindow()).receive_data(stray, NOW_MS)
    assert isinstance(event, ProtocolViolation) and event.code == "bad_request"


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
    consumer, _ = finished_job()
    consumer.receipt()
    with pytest.raises(StateError):
        consumer.receipt()
    with pytest.raises(StateError):
        consumer.receive_data(b"\x00", NOW_MS)


def test_a_finished_provider_takes_no_more_data() -> None:
    consumer, provider = finished_job()
    provider.receive_data(consumer.receipt(), NOW_MS)
    with pytest.raises(StateError):
        provider.receive_data(b"\x00", NOW_MS)
    assert provider.receive_eof() == []
