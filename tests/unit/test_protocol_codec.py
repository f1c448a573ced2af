"""The canonical signed codec: round trips, tamper evidence, domain separation, hostile bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from p2pinfer.errors import (
    DecodeError,
    FrameTooLarge,
    ProtocolError,
    SignatureError,
    ValidationError,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    MESSAGE_TYPES,
    Advert,
    AdvertHardware,
    CheckReport,
    Chunk,
    Gpu,
    JobAccept,
    JobParams,
    JobReject,
    JobRequest,
    JobResult,
    Metric,
    ModelOffer,
    Receipt,
    SlashVote,
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
from tests.unit.protocol_strategies import (
    CONSUMER,
    NOW_MS,
    PROVIDER,
    STRATEGIES,
    any_message,
    job_requests,
)

TYPES = sorted(STRATEGIES)


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def envelope(t: str, body: Any, public_key: bytes, sig: bytes, v: Any = 1) -> bytes:
    """An envelope built by hand, the way docs/protocol.md describes it."""
    return pack({"body": body, "from": public_key, "sig": sig, "t": t, "v": v})


def documented_payload(domain_type: str, t: str, body: Any, public_key: bytes) -> bytes:
    unsigned = {"body": body, "from": public_key, "t": t, "v": 1}
    return f"p2pinfer/v1/{domain_type}".encode() + b"\x00" + pack(unsigned)


def sample(type_name: str) -> WireMessage:
    """One fixed, realistic, valid message of each type."""
    return _SAMPLES[type_name]


def _request() -> JobRequest:
    return JobRequest(
        job_id=bytes(range(16)),
        provider=PROVIDER.peer_id,
        model="smollm2:135m",
        kind="generate",
        prompt="Why is the sky blue?",
        params=JobParams(max_tokens=64, temperature=0.0, seed=42, stop=("\n\n",)),
        max_price_per_1k=200,
        issued_at=NOW_MS,
        expires_at=NOW_MS + 60_000,
        digest="ab" * 32,
    )


def _samples() -> dict[str, WireMessage]:
    request = sign(_request(), CONSUMER)
    result = JobResult(
        job_id=request.msg.job_id,
        request_hash=request.hash,
        output_hash=output_hash("Rayleigh scattering."),
        digest="ab" * 32,
        prompt_tokens=9,
        completion_tokens=4,
        prompt_ms=12,
        generation_ms=80,
        total_ms=95,
        finish_reason="stop",
        charged=3,
        finished_at=NOW_MS + 95,
    )
    advert = Advert(
        models=(ModelOffer("smollm2:135m", "ab" * 32, "135M", "Q8_0", 8192, 950_000, 48_500, 200),),
        hardware=AdvertHardware("AMD EPYC 7B13", 2, 7_900, (Gpu("NVIDIA H100", 81_559),)),
        engine="llama.cpp",
        stake=5_000_000,
        capacity=2,
        listen_addrs=("/ip4/192.0.2.7/tcp/4001",),
        seq=NOW_MS,
        issued_at=NOW_MS,
        ttl_ms=600_000,
    )
    return {
        "advert": advert,
        "job_request": request.msg,
        "job_accept": JobAccept(request.msg.job_id, 180),
        "job_reject": JobReject(request.msg.job_id, "busy", "2 jobs running", 1_500),
        "chunk": Chunk(request.msg.job_id, 3, " scattering."),
        "job_result": result,
        "receipt": Receipt(request.msg.job_id, sign(result, PROVIDER).hash, 3, PROVIDER.peer_id),
        "check_report": CheckReport(
            request=request.raw,
            result=sign(result, PROVIDER).raw,
            provider_output="Rayleigh scattering.",
            reference_output_hash=output_hash("Rayleigh scattering of light."),
            reference_digest="ab" * 32,
            metrics=(Metric("prefix_agreement_permille", 650), Metric("logprob_delta_milli", -35)),
            verdict="pass",
            issued_at=NOW_MS,
        ),
        "slash_vote": SlashVote(
            provider=PROVIDER.peer_id,
            provider_payee=bytes.fromhex("ab" * 20),
            amount=5_000_000_000,
            evidence=output_hash("a check report"),
            validator=bytes.fromhex("cd" * 20),
            validator_binding=bytes(range(65)),
            signature=bytes(range(1, 66)),
            issued_at=NOW_MS,
        ),
    }


_SAMPLES = _samples()


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


# --- structure, canonical form, field checks -------------------------------------


def _resigned(t: str, body: Any, v: Any = 1) -> bytes:
    """An envelope with a valid signature over whatever it carries (even a bad body)."""
    unsigned = {"body": body, "from": CONSUMER.public_key, "t": t, "v": v}
    payload = f"p2pinfer/v1/{t}".encode() + b"\x00" + pack(unsigned)
    return envelope(t, body, CONSUMER.public_key, CONSUMER.sign(payload), v)


def test_unknown_version_is_rejected() -> None:
    with pytest.raises(DecodeError, match="version"):
        decode(_resigned("job_accept", to_wire(sample("job_accept")), v=2))


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(DecodeError, match="unknown message type"):
        decode(_resigned("job_cancel", to_wire(sample("job_accept"))))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda b: b.update(extra=1), "unknown fields"),
        (lambda b: b.pop("price_per_1k"), "missing fields"),
        (lambda b: b.update(price_per_1k=1.5), "expected int"),
        (lambda b: b.update(price_per_1k=True), "expected int"),
        (lambda b: b.update(price_per_1k=-1), "outside"),
        (lambda b: b.update(price_per_1k=2**64 - 1), "outside"),
        (lambda b: b.update(job_id=b"short"), "bytes"),
        (lambda b: b.update(job_id="0123456789abcdef"), "expected bytes"),
    ],
)
def test_a_correctly_signed_but_malformed_body_is_rejected(change: Any, message: str) -> None:
    body = to_wire(sample("job_accept"))
    change(body)
    with pytest.raises(ValidationError, match=message):
        decode(_resigned("job_accept", dict(sorted(body.items()))))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 10.5, -0.1])
def test_sampling_floats_must_be_finite_and_in_range(bad: float) -> None:
    req = sample("job_request")
    body = to_wire(req)
    body["params"]["temperature"] = bad
    with pytest.raises(ValidationError, match="temperature"):
        decode(_resigned("job_request", body))
    with pytest.raises(ValidationError):
        sign(dataclasses.replace(req, params=JobParams(temperature=bad)), CONSUMER)  # type: ignore[arg-type]


def test_an_int_where_a_float_belongs_is_rejected() -> None:
    body = to_wire(sample("job_request"))
    body["params"]["top_p"] = 1
    with pytest.raises(ValidationError, match="expected float"):
        decode(_resigned("job_request", body))


def test_unsorted_keys_are_not_canonical() -> None:
    signed = sign(sample("job_accept"), CONSUMER)
    body = dict(reversed(list(to_wire(signed.msg).items())))
    with pytest.raises(DecodeError, match="non-canonical"):
        decode(envelope("job_accept", body, signed.signer, signed.sig))


def test_a_wider_integer_encoding_is_not_canonical() -> None:
    signed = sign(sample("chunk"), CONSUMER)
    assert isinstance(signed.msg, Chunk)
    small = pack({"seq": signed.msg.seq})
    # Re-encode seq as a uint64 (0xcf) instead of its shortest form.
    wide = pack({"seq": 2**40})[:-9] + b"\xcf" + signed.msg.seq.to_bytes(8, "big")
    raw = signed.raw.replace(small[1:], wide[1:], 1)
    assert raw != signed.raw
    with pytest.raises(DecodeError, match="non-canonical"):
        decode(raw)


def test_trailing_bytes_are_rejected() -> None:
    with pytest.raises(DecodeError):
        decode(sign(sample("chunk"), CONSUMER).raw + b"\x00")


def test_an_oversize_field_is_refused_before_signing() -> None:
    chunk = Chunk(job_id=bytes(16), seq=0, text="x" * 65_537)
    with pytest.raises(ValidationError, match=r"Chunk\.text: 65537 characters"):
        sign(chunk, PROVIDER)


def test_inconsistent_fields_cannot_be_built() -> None:
    with pytest.raises(ValidationError, match="chat job"):
        dataclasses.replace(_request(), kind="chat")
    with pytest.raises(ValidationError, match="PeerID"):
        dataclasses.replace(_request(), provider="not-a-peer")
    with pytest.raises(ValidationError, match="expires_at"):
        dataclasses.replace(_request(), expires_at=NOW_MS)


def test_a_message_over_one_mib_is_refused_unread() -> None:
    with pytest.raises(FrameTooLarge):
        decode(b"\x85" + bytes(1 << 20))


def test_a_text_that_cannot_be_utf8_is_refused() -> None:
    with pytest.raises(ValidationError, match="cannot encode"):
        sign(Chunk(job_id=bytes(16), seq=0, text="\ud800"), PROVIDER)


def test_malformed_key_or_signature_is_a_signature_error() -> None:
    signed = sign(sample("chunk"), CONSUMER)
    body = to_wire(signed.msg)
    with pytest.raises(SignatureError):
        decode(envelope("chunk", body, signed.signer[:31], signed.sig))
    with pytest.raises(SignatureError):
        decode(envelope("chunk", body, signed.signer, b""))


# --- hostile input ------------------------------------------------------------------


def _hostile_inputs(n: int, seed: int) -> list[bytes]:
    """Random bytes, random msgpack values, and valid messages with random damage."""
    rng = random.Random(seed)
    valid = [sign(sample(t), CONSUMER).raw for t in TYPES]
    out: list[bytes] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            out.append(rng.randbytes(rng.randrange(0, 64)))
        elif kind == 1:
            out.append(rng.choice([b"\x85", b"\xde\x00\x05", b"\x81\xa4body"]) + rng.randbytes(40))
        elif kind == 2:
            raw = bytearray(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                raw[rng.randrange(len(raw))] = rng.randrange(256)
            out.append(bytes(raw))
        else:
            raw = rng.choice(valid)
            cut = rng.randrange(len(raw))
            out.append(raw[:cut] + rng.randbytes(rng.randrange(0, 8)) + raw[cut + 1 :])
    return out


def test_ten_thousand_random_inputs_raise_only_protocol_errors() -> None:
    valid = {sign(sample(t), CONSUMER).raw for t in TYPES}
    for data in _hostile_inputs(10_000, seed=1):
        try:
            decode(data)
        except ProtocolError:
            continue
        # Only an input that the damage left unchanged may decode.
        assert data in valid


@given(st.binary(max_size=512))
def test_arbitrary_bytes_raise_only_protocol_errors(data: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        decode(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text()
    | st.binary(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=20,
)


@given(msgpack_values)
def test_arbitrary_msgpack_values_raise_only_protocol_errors(value: Any) -> None:
    bogus = {"body": value, "from": bytes(32), "sig": bytes(64), "t": "chunk", "v": 1}
    for wrapped in (value, bogus):
        with contextlib.suppress(ProtocolError):
            decode(pack(wrapped))


# --- evidence, hashes, keys ------------------------------------------------------------


def test_evidence_of_a_check_report_opens_and_names_the_provider() -> None:
    report = sample("check_report")
    assert isinstance(report, CheckReport)
    evidence = open_evidence(report)
    assert evidence.provider == PROVIDER.peer_id
    assert evidence.request.msg == _request()


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
    assume(other != _request())
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
