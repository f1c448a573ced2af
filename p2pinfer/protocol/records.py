"""Signed records: the one way p2pinfer signs, verifies, encodes and decodes what it signs.

Every signature in p2pinfer covers `domain || content`, where `domain` names
what is signed (so a signature made for one kind never verifies as another)
and `content` is canonical msgpack (protocol/canonical.py) or a hash of it.
`sign_bytes` and `verify_bytes` are the only places that sign and verify:
protocol messages (codec.py, domain `p2pinfer/v1/<type>` + 0x00), ledger
entries (market/entries.py, `p2pinfer/v1/ledger` over the entry hash) and
the self-contained records below use them.

A self-contained signed record (a stake declaration, a governance proposal or
vote) is a frozen schema dataclass (protocol/schema.py) with class constants:
`DOMAIN`, `HEADER` (the constant keys of its map, e.g. `{"t": "stake", "v": 1}`),
`SIGNER` (the attribute holding the signer's 32-byte key), `MAX_BYTES`, a
`signature` field under the key `sig`, and `validate()` for the checks between
fields. Its encoding is the canonical map of HEADER and every field; its signer
signs `DOMAIN || canonical(that map without sig)`.
"""

from __future__ import annotations

import dataclasses
import hashlib
from functools import cached_property
from typing import Any, ClassVar, Protocol, Self, TypeVar, cast

from p2pinfer.errors import DecodeError, ValidationError
from p2pinfer.identity import verify_signature
from p2pinfer.protocol import canonical
from p2pinfer.protocol.schema import from_wire, to_wire

SIG_KEY = "sig"


class Signer(Protocol):
    """Anything that can sign as an Ed25519 key, e.g. `p2pinfer.identity.NodeIdentity`."""

    @property
    def public_key(self) -> bytes: ...

    def sign(self, message: bytes) -> bytes: ...


def sign_bytes(signer: Signer, domain: bytes, content: bytes) -> bytes:
    """`signer`'s 64-byte Ed25519 signature over `domain || content`."""
    return bytes(signer.sign(domain + content))


def verify_bytes(public_key: bytes, domain: bytes, content: bytes, signature: bytes) -> None:
    """SignatureError unless `signature` is `public_key`'s over `domain || content`."""
    verify_signature(public_key, domain + content, signature)


class SignedRecord:
    """Base of a self-contained signed record (see the module docstring): subclasses are
    frozen dataclasses that set the class constants and declare the fields."""

    DOMAIN: ClassVar[bytes]
    HEADER: ClassVar[dict[str, str | int]]
    SIGNER: ClassVar[str]
    MAX_BYTES: ClassVar[int]
    signature: bytes

    def validate(self) -> None:
        """ValidationError unless the fields agree with each other (each field's own bounds
        are the schema's); nothing to check by default."""

    def signing_bytes(self) -> bytes:
        """What the signer signs: DOMAIN || canonical map without `sig`."""
        return signing_bytes(self)

    def encode(self) -> bytes:
        """The record as sent and stored: canonical map of every field, `sig` included."""
        return encode_record(self)

    @classmethod
    def decode(cls, data: bytes) -> Self:
        """Parse `encode()`'s output (DecodeError/ValidationError on anything else); the
        signature is not checked here."""
        return decode_record(cls, data)

    @property
    def author(self) -> bytes:
        """The signer's 32-byte public key."""
        key: bytes = getattr(self, self.SIGNER)
        return key

    @cached_property
    def id(self) -> bytes:
        """sha256 of the signed bytes: names the content, not one signature (computed once)."""
        return hashlib.sha256(self.signing_bytes()).digest()


R = TypeVar("R", bound=SignedRecord)


def record_map(record: SignedRecord, *, signed: bool = True) -> dict[str, Any]:
    """The record's map: HEADER and every field (without `sig` unless `signed`);
    ValidationError if a field is out of its bounds."""
    body = to_wire(record)
    if not signed:
        body.pop(SIG_KEY)
    return {**type(record).HEADER, **body}


def encode_record(record: SignedRecord) -> bytes:
    """The record as sent and stored: canonical map of HEADER and all fields, `sig` included."""
    return canonical.encode(record_map(record))


def signing_bytes(record: SignedRecord) -> bytes:
    """What the record's signer signs: DOMAIN || canonical map without `sig`."""
    return type(record).DOMAIN + canonical.encode(record_map(record, signed=False))


def decode_record(cls: type[R], data: bytes) -> R:
    """Parse and validate (not verify) a `cls` from exactly its encoding. DecodeError if the
    bytes are too many, not canonical, or not this kind of record; ValidationError on a field."""
    return cast(R, decode_one_of((cls,), data))


def decode_one_of(classes: tuple[type[SignedRecord], ...], data: bytes) -> SignedRecord:
    """`decode_record` for whichever of `classes` has the HEADER that `data` carries."""
    if not isinstance(data, bytes):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    limit = max(cls.MAX_BYTES for cls in classes)
    if len(data) > limit:
        raise DecodeError(f"{' or '.join(c.__name__ for c in classes)} over {limit} bytes")
    value = canonical.decode(data)
    cls = next((c for c in classes if isinstance(value, dict) and _has_header(value, c)), None)
    if cls is None:
        raise DecodeError(f"not a {' or '.join(_kind(c) for c in classes)}")
    if len(data) > cls.MAX_BYTES:
        raise DecodeError(f"{cls.__name__} over {cls.MAX_BYTES} bytes")
    record = from_wire(cls, {k: v for k, v in value.items() if k not in cls.HEADER})
    if encode_record(record) != data:  # e.g. an optional key present as nil
        raise DecodeError(f"non-canonical {cls.__name__}")
    record.validate()
    return record


def _has_header(value: dict[str, Any], cls: type[SignedRecord]) -> bool:
    # type() too: True == 1, but {"v": true} is not a version 1 record.
    return all(type(value.get(key)) is type(const) and value[key] == const
               for key, const in cls.HEADER.items())


def sign_record(draft: R, signer: Signer) -> R:
    """`draft` (its signature ignored) validated and signed by `signer`, whose key it must
    name as its SIGNER (ValidationError otherwise)."""
    content = canonical.encode(record_map(draft, signed=False))
    draft.validate()
    if draft.author != bytes(signer.public_key):
        raise ValidationError(f"{type(draft).__name__} names another key than its signer's")
    signature = sign_bytes(signer, type(draft).DOMAIN, content)
    return dataclasses.replace(draft, signature=signature)  # type: ignore[type-var]  # a dataclass


def verify_record(record: SignedRecord) -> None:
    """ValidationError unless its fields are in bounds, SignatureError unless signed by its
    SIGNER (`validate()` is not called: decoding did, and a draft may be checked for less)."""
    content = canonical.encode(record_map(record, signed=False))
    cls = type(record)
    verify_bytes(getattr(record, cls.SIGNER), cls.DOMAIN, content, record.signature)


def _kind(cls: type[SignedRecord]) -> str:
    header = " ".join(f"{k}={v}" for k, v in sorted(cls.HEADER.items()))
    return f"{cls.__name__} ({header})"
