"""The canonical signed codec: round trips, tamper evidence, domain separation, evidence.

Malformed and hostile input: test_protocol_codec_malformed.py.
"""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from p2pinfer.errors import DecodeError, ProtocolError, SignatureError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    MESSAGE_TYPES,
    CheckReport,
    JobAccept,
    JobRequest,
    JobResult,
    Receipt,
    WireMessage,
    decode,
    decode_as,
    open_evidence,
    output_hash,
    request_hash,
    sign,
    signing_payload,
)
from p2pinfer.protocol.schema import to_wire
from tests.unit.protocol_samples import (
    TYPES,
    documented_payload,
    envelope,
    pack,
    sample,
    sample_request,
)
from tests.unit.protocol_strategies import CONSUMER, PROVIDER, STRATEGIES, any_message, job_requests

# --- round trips ---------------------------------------------------------------


@pytest.mark.parametrize("type_name", TYPES)
@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=60)
def test_every_message_type_round_trips(type_name: str, data: st.DataObject) -> None:
    msg = data.draw(STRATEGIES[type_name])
    signed = sign(msg, CONSUMER)
    back = decode(signed.raw)
    assert back.msg == msg
    assert back.signer == CONSUMER.public_key
    assert back.signer_peer_id == CONSUMER.peer_id
    assert back.raw == signed.raw
    assert back.hash == hashlib.sha256(signed.raw).digest()
    assert decode_as(signed.raw, type(msg)).msg == msg


def test_signing_is_deterministic_so_each_message_has_one_encoding() -> None:
    msg = sample("job_request")
    assert sign(msg, CONSUMER).raw == sign(msg, CONSUMER).raw


def test_request_hash_is_sha256_of_the_signed_encoding() -> None:
    signed = sign(sample("job_request"), CONSUMER)
    assert isinstance(signed.msg, JobRequest)
    assert request_hash(signed) == hashlib.sha256(signed.raw).digest()  # type: ignore[arg-type]


def test_decode_as_refuses_another_type() -> None:
    raw = sign(sample("chunk"), PROVIDER).raw
    with pytest.raises(DecodeError, match="expected a job_result"):
        decode_as(raw, JobResult)


# --- tampering ---------------------------------------------------------------------


@pytest.mark.parametrize("type_name", TYPES)
def test_flipping_any_byte_of_a_signed_message_is_rejected(type_name: str) -> None:
    raw = sign(sample(type_name), PROVIDER).raw
    for i in range(len(raw)):
        for mask in (0x01, 0x80, 0xFF):
            bad = bytearray(raw)
            bad[i] ^= mask
            with pytest.raises(ProtocolError):
                decode(bytes(bad))


@pytest.mark.parametrize("type_name", TYPES)
@given(data=st.data())
@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=25)
def test_changing_any_field_breaks_the_signature(type_name: str, data: st.DataObject) -> None:
    original = data.draw(STRATEGIES[type_name])
    other = data.draw(STRATEGIES[type_name])
    signed = sign(original, CONSUMER)
    for field in dataclasses.fields(original):
        value = getattr(other, field.name)
        if value == getattr(original, field.name):
            continue
        try:
            forged = dataclasses.replace(original, **{field.name: value})
        except ProtocolError:
            continue  # the swap broke a cross-field rule; another example covers the field
        raw = envelope(type_name, to_wire(forged), signed.signer, signed.sig)
        with pytest.raises(SignatureError):
            decode(raw)


def test_another_signer_key_breaks_the_signature() -> None:
    signed = sign(sample("receipt"), CONSUMER)
    raw = envelope("receipt", to_wire(signed.msg), PROVIDER.public_key, signed.sig)
    with pytest.raises(SignatureError):
        decode(raw)


# --- domain separation ---------------------------------------------------------


def test_the_signature_covers_the_documented_payload() -> None:
    msg = sample("job_accept")
    body = to_wire(msg)
    payload = documented_payload("job_accept", "job_accept", body, CONSUMER.public_key)
    assert payload == signing_payload(msg, CONSUMER.public_key)
    raw = envelope("job_accept", body, CONSUMER.public_key, CONSUMER.sign(payload))
    assert decode(raw).msg == msg


@pytest.mark.parametrize("other_type", [t for t in TYPES if t != "job_accept"])
def test_a_signature_made_for_another_type_is_rejected(other_type: str) -> None:
    msg = sample("job_accept")
    body = to_wire(msg)
    # The signer signed these exact envelope fields, but under another type's domain.
    payload = documented_payload(other_type, "job_accept", body, CONSUMER.public_key)
    raw = envelope("job_accept", body, CONSUMER.public_key, CONSUMER.sign(payload))
    with pytest.raises(SignatureError):
        decode(raw)


def test_a_signature_without_the_domain_is_rejected() -> None:
    msg = sample("job_accept")
    body = to_wire(msg)
    unsigned = pack({"body": body, "from": CONSUMER.public_key, "t": "job_accept", "v": 1})
    raw = envelope("job_accept", body, CONSUMER.public_key, CONSUMER.sign(unsigned))
    with pytest.raises(SignatureError):
        decode(raw)


@pytest.mark.parametrize("source", TYPES)
def test_a_signed_message_relabelled_as_another_type_is_rejected(source: str) -> None:
    signed = sign(sample(source), CONSUMER)
    for target in TYPES:
        if target == source:
            continue
        raw = envelope(target, to_wire(signed.msg), signed.signer, signed.sig)
        with pytest.raises(ProtocolError):
            decode(raw)


# --- evidence, hashes, keys ------------------------------------------------------------


def test_evidence_of_a_check_report_opens_and_names_the_provider() -> None:
    report = sample("check_report")
    assert isinstance(report, CheckReport)
    evidence = open_evidence(report)
    assert evidence.provider == PROVIDER.peer_id
    assert evidence.request.msg == sample_request()


def test_evidence_with_a_swapped_output_is_rejected() -> None:
    report = sample("check_report")
    assert isinstance(report, CheckReport)
    with pytest.raises(ValidationError, match="provider output"):
        open_evidence(dataclasses.replace(report, provider_output="something else"))


def test_evidence_with_a_result_signed_by_someone_else_is_rejected() -> None:
    report = sample("check_report")
    assert isinstance(report, CheckReport)
    result = decode_as(report.result, JobResult)
    forged = sign(result.msg, NodeIdentity.generate()).raw
    with pytest.raises(ValidationError, match="requested provider"):
        open_evidence(dataclasses.replace(report, result=forged))


@given(job_requests())
def test_evidence_for_another_request_is_rejected(other: JobRequest) -> None:
    report = sample("check_report")
    assert isinstance(report, CheckReport)
    assume(other != sample_request())
    with pytest.raises(ValidationError, match="does not answer"):
        open_evidence(dataclasses.replace(report, request=sign(other, CONSUMER).raw))


def test_output_hash_is_sha256_of_utf8() -> None:
    assert output_hash("héllo") == hashlib.sha256("héllo".encode()).digest()


def test_the_registry_covers_every_type() -> None:
    assert set(MESSAGE_TYPES) == set(TYPES)
    assert {cls.domain() for cls in MESSAGE_TYPES.values()} == {
        f"p2pinfer/v1/{t}".encode() for t in TYPES
    }
    assert JobAccept.TYPE == "job_accept" and Receipt.TYPE == "receipt"


@given(any_message)
def test_any_message_decodes_to_an_equal_message(msg: WireMessage) -> None:
    assert decode(sign(msg, PROVIDER).raw).msg == msg
