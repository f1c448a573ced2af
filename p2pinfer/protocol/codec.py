"""Canonical msgpack encoding and Ed25519 signatures of protocol messages.

A message on the wire is one msgpack map, the envelope:

    {"body": <message fields>, "from": <32-byte Ed25519 public key>,
     "sig": <64-byte signature>, "t": <type>, "v": 1}

`sig` signs `domain || 0x00 || canonical({"body", "from", "t", "v"})` where
`domain` is `p2pinfer/v1/<type>`, so a signature made for one type never
verifies as another. Canonical means protocol/canonical.py's rules under its
WIRE profile (floats allowed, as float64); signing and verifying go through
protocol/records.py's `sign_bytes`/`verify_bytes`, like every signed record.
`decode` accepts only bytes that re-encode to themselves, so each message has
exactly one encoding and `Signed.hash` (sha256 of it) names it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Generic, TypeVar

from p2pinfer.errors import (
    DecodeError,
    FrameTooLarge,
    SignatureError,
    ValidationError,
)
from p2pinfer.identity import peer_id_from_public_key
from p2pinfer.protocol import canonical
from p2pinfer.protocol.check_messages import ChargeProof, CheckReport
from p2pinfer.protocol.messages import MESSAGE_TYPES, JobAccept, JobRequest, JobResult, Message
from p2pinfer.protocol.records import Signer as Signer  # its home before records.py
from p2pinfer.protocol.records import sign_bytes, verify_bytes
from p2pinfer.protocol.schema import from_wire, to_wire
from p2pinfer.protocol.wire_types import PROTOCOL_VERSION, WireMessage

MAX_MESSAGE_BYTES = 1 << 20
"""No encoded message may be larger (the default frame limit)."""

_ENVELOPE_KEYS = frozenset({"body", "from", "sig", "t", "v"})

M = TypeVar("M", bound=WireMessage)
N = TypeVar("N", bound=WireMessage)


@dataclass(frozen=True)
class Signed(Generic[M]):
    """A message with its signer, signature and exact encoding (`raw`)."""

    msg: M
    signer: bytes  # 32-byte Ed25519 public key
    sig: bytes = field(repr=False)
    raw: bytes = field(repr=False)

    @cached_property
    def hash(self) -> bytes:
        """sha256 of `raw`: the message's name in results, receipts and ledgers."""
        return hashlib.sha256(self.raw).digest()

    @property
    def signer_peer_id(self) -> str:
        return peer_id_from_public_key(self.signer)

    def expect(self, cls: type[N]) -> Signed[N]:
        """This message typed as `cls`; DecodeError if it is another type."""
        if not isinstance(self.msg, cls):
            raise DecodeError(f"expected a {cls.TYPE} message, got {type(self.msg).TYPE}")
        return self  # type: ignore[return-value]  # narrowed by the isinstance check


def sign(msg: M, signer: Signer) -> Signed[M]:
    """Sign `msg` as `signer`; ValidationError if a field is out of bounds or too big."""
    body = to_wire(msg)
    public_key = bytes(signer.public_key)
    sig = sign_bytes(signer, _domain(msg.TYPE), _pack(_unsigned(msg.TYPE, body, public_key)))
    raw = _pack(_envelope(msg.TYPE, body, public_key, sig))
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ValidationError(f"{msg.TYPE} message is {len(raw)} bytes, over {MAX_MESSAGE_BYTES}")
    return Signed(msg, public_key, sig, raw)


def encode(signed: Signed[Any]) -> bytes:
    """The wire bytes of a signed message (one frame's body)."""
    return signed.raw


def decode(data: bytes) -> Signed[Message]:
    """Parse, check and verify one message. Raises only ProtocolError subclasses:
    FrameTooLarge, DecodeError (not msgpack, bad envelope, unknown version or type,
    non-canonical), ValidationError (a field), SignatureError."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_MESSAGE_BYTES:
        raise FrameTooLarge(f"message is {len(data)} bytes, over {MAX_MESSAGE_BYTES}")
    env = _unpack(data)
    if not isinstance(env, dict) or env.keys() != _ENVELOPE_KEYS:
        raise DecodeError("not a p2pinfer message envelope")
    version, type_name = env["v"], env["t"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise DecodeError(f"unsupported protocol version {_short(version)}")
    if not isinstance(type_name, str) or type_name not in MESSAGE_TYPES:
        raise DecodeError(f"unknown message type {_short(type_name)}")
    public_key, sig = env["from"], env["sig"]
    if type(public_key) is not bytes or len(public_key) != 32:
        raise SignatureError("malformed signer key: expected 32 bytes")
    if type(sig) is not bytes or len(sig) != 64:
        raise SignatureError("missing or malformed signature: expected 64 bytes")
    msg = from_wire(MESSAGE_TYPES[type_name], env["body"])
    body = to_wire(msg)
    if _pack(_envelope(type_name, body, public_key, sig)) != data:
        raise DecodeError("non-canonical encoding")
    verify_bytes(public_key, _domain(type_name), _pack(_unsigned(type_name, body, public_key)), sig)
    return Signed(msg, public_key, sig, data)  # type: ignore[arg-type]  # MESSAGE_TYPES


def decode_as(data: bytes, cls: type[M]) -> Signed[M]:
    """`decode`, then require the message to be a `cls`."""
    return decode(data).expect(cls)


def signing_payload(msg: WireMessage, public_key: bytes) -> bytes:
    """The exact bytes an Ed25519 signature on `msg` by `public_key` covers."""
    return _signing_payload(msg.TYPE, to_wire(msg), public_key)


def request_hash(request: Signed[JobRequest]) -> bytes:
    """The hash a JobResult quotes: sha256 of the signed request's encoding."""
    return request.hash


def output_hash(text: str) -> bytes:
    """sha256 of the UTF-8 encoding of a job's full output."""
    return hashlib.sha256(text.encode("utf-8")).digest()


@dataclass(frozen=True)
class Evidence:
    """The checked contents of a CheckReport: who claimed what for which request."""

    request: Signed[JobRequest]
    result: Signed[JobResult]
    provider: str  # PeerID that signed the result


def open_evidence(report: CheckReport | ChargeProof) -> Evidence:
    """Verify a report's (or a charge proof's) evidence: both signatures, the result
    answers this request, it was signed by the provider the request named, and the
    provider output hashes to its output_hash. Raises ProtocolError subclasses."""
    if report.result is None:
        raise ValidationError("evidence: no result")
    request = decode_as(report.request, JobRequest)
    return open_result(request, report.result, report.provider_output)


def open_result(request: Signed[JobRequest], result_raw: bytes, output: str) -> Evidence:
    """`result_raw` decoded and checked as the requested provider's result of `request`
    with `output` as what it streamed. Raises ProtocolError subclasses."""
    result = decode_as(result_raw, JobResult)
    if result.msg.request_hash != request.hash or result.msg.job_id != request.msg.job_id:
        raise ValidationError("evidence: the result does not answer this request")
    if result.signer_peer_id != request.msg.provider:
        raise ValidationError("evidence: the result is not signed by the requested provider")
    if output_hash(output) != result.msg.output_hash:
        raise ValidationError("evidence: the provider output does not match the result's hash")
    return Evidence(request, result, result.signer_peer_id)


def open_accept(request: Signed[JobRequest], accept_raw: bytes) -> Signed[JobAccept]:
    """`accept_raw` decoded and checked as the requested provider's accept of `request`.
    Raises ProtocolError subclasses."""
    accept = decode_as(accept_raw, JobAccept)
    if accept.msg.request_hash != request.hash or accept.msg.job_id != request.msg.job_id:
        raise ValidationError("evidence: the accept does not take this request")
    if accept.signer_peer_id != request.msg.provider:
        raise ValidationError("evidence: the accept is not signed by the requested provider")
    return accept


def _envelope(type_name: str, body: dict[str, Any], public_key: bytes, sig: bytes) -> Any:
    return {"body": body, "from": public_key, "sig": sig, "t": type_name, "v": PROTOCOL_VERSION}


def _unsigned(type_name: str, body: dict[str, Any], public_key: bytes) -> Any:
    return {"body": body, "from": public_key, "t": type_name, "v": PROTOCOL_VERSION}


def _domain(type_name: str) -> bytes:
    # The type's domain string, then 0x00: no domain is a prefix of another's.
    return MESSAGE_TYPES[type_name].domain() + b"\x00"


def _signing_payload(type_name: str, body: dict[str, Any], public_key: bytes) -> bytes:
    return _domain(type_name) + _pack(_unsigned(type_name, body, public_key))


def _pack(obj: Any) -> bytes:
    return canonical.encode(obj, canonical.WIRE)


def _unpack(data: bytes) -> Any:
    return canonical.parse(data)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
