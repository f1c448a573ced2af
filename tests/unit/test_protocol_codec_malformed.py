"""The canonical signed codec refusing what is not a valid message: bad structure and
fields, non-canonical encodings, oversize or undecodable input, and hostile bytes."""

from __future__ import annotations

import contextlib
import dataclasses
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.errors import (
    DecodeError,
    FrameTooLarge,
    ProtocolError,
    SignatureError,
    ValidationError,
)
from p2pinfer.protocol import Chunk, JobParams, decode, sign
from p2pinfer.protocol.schema import to_wire
from tests.unit.protocol_samples import TYPES, envelope, pack, resigned, sample, sample_request
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER

# --- structure, canonical form, field checks -------------------------------------


def test_unknown_version_is_rejected() -> None:
    with pytest.raises(DecodeError, match="version"):
        decode(resigned("job_accept", to_wire(sample("job_accept")), v=2))


def test_unknown_type_is_rejected() -> None:
    with pytest.raises(DecodeError, match="unknown message type"):
        decode(resigned("job_pause", to_wire(sample("job_accept"))))


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
        decode(resigned("job_accept", dict(sorted(body.items()))))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 10.5, -0.1])
def test_sampling_floats_must_be_finite_and_in_range(bad: float) -> None:
    req = sample("job_request")
    body = to_wire(req)
    body["params"]["temperature"] = bad
    with pytest.raises(ValidationError, match="temperature"):
        decode(resigned("job_request", body))
    with pytest.raises(ValidationError):
        sign(dataclasses.replace(req, params=JobParams(temperature=bad)), CONSUMER)  # type: ignore[arg-type]


def test_an_int_where_a_float_belongs_is_rejected() -> None:
    body = to_wire(sample("job_request"))
    body["params"]["top_p"] = 1
    with pytest.raises(ValidationError, match="expected float"):
        decode(resigned("job_request", body))


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
        dataclasses.replace(sample_request(), kind="chat")
    with pytest.raises(ValidationError, match="PeerID"):
        dataclasses.replace(sample_request(), provider="not-a-peer")
    with pytest.raises(ValidationError, match="expires_at"):
        dataclasses.replace(sample_request(), expires_at=NOW_MS)


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


