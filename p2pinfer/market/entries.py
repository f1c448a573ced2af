"""What a ledger entry says, independent of SQLite: bodies, accounts, postings, hashes.

An entry body is a canonical msgpack map `{v, seq, kind, at, ...kind fields}`.
Its hash chains it to the entry before: entry_hash = sha256(prev_hash || body).
The node signs `p2pinfer/v1/ledger || entry_hash`. Everything the SQLite
columns hold besides these (kind, idempotency key, subject, postings) is
derived from the body by the functions here, so `Ledger.verify` can recompute
and compare it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, ClassVar

from p2pinfer.errors import DecodeError, ValidationError
from p2pinfer.identity import peer_id_from_public_key
from p2pinfer.market import canonical
from p2pinfer.market.channel_entries import RedemptionBody, VoucherBody
from p2pinfer.market.split import PART_NAMES, Split
from p2pinfer.market.stake import StakeDeclaration

ENTRY_DOMAIN = b"p2pinfer/v1/ledger"
GENESIS_PREV = bytes(32)
BODY_VERSION = 1
MAX_EVIDENCE = 1 << 20  # one protocol frame
#: A new slash entry names its proof by hash (sha256: 32 bytes), never holds the proof
#: (Ledger.record_slash); entries already written with more still read and verify.
MAX_SLASH_EVIDENCE = 64

FAUCET_ACCOUNT = "faucet"
BURN_ACCOUNT = "burn"
TREASURY_ACCOUNT = "treasury"
VALIDATORS_POOL = "pool:validators"
STAKERS_POOL = "pool:stakers"


def peer_account(public_key: bytes) -> str:
    """The ledger account of a peer: `peer:` + its PeerID."""
    return "peer:" + peer_id_from_public_key(public_key)


@dataclass(frozen=True)
class Posting:
    """`amount` micro-credits into `account` (negative: out of it)."""

    account: str
    amount: int


def _postings(*moves: tuple[str, int]) -> tuple[Posting, ...]:
    # Merge per account and drop zeros, so a body has exactly one set of postings.
    total: dict[str, int] = {}
    for account, amount in moves:
        total[account] = total.get(account, 0) + amount
    return tuple(Posting(a, n) for a, n in sorted(total.items()) if n != 0)


def _take(fields: dict[str, Any], key: str, kind: type, what: str) -> Any:
    if key not in fields:
        raise ValidationError(f"{what}: missing field {key!r}")
    value: Any = fields[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValidationError(f"{what}: field {key!r} must be {kind.__name__}")
    if isinstance(value, int) and value < 0:
        raise ValidationError(f"{what}: field {key!r} must be >= 0")
    if isinstance(value, bytes | str) and len(value) > MAX_EVIDENCE:
        raise ValidationError(f"{what}: field {key!r} is too large")
    return value


def _key(fields: dict[str, Any], key: str, what: str) -> bytes:
    value: bytes = _take(fields, key, bytes, what)
    if len(value) != 32:
        raise ValidationError(f"{what}: field {key!r} must be a 32-byte public key")
    return value


def _exact_keys(fields: dict[str, Any], keys: set[str], what: str) -> None:
    if set(fields) != keys:
        raise ValidationError(f"{what}: fields {sorted(fields)} != {sorted(keys)}")


@dataclass(frozen=True)
class FaucetGrant:
    """Testnet credits minted to `recipient`; `grant_id` (if not empty) is unique."""

    kind: ClassVar[str] = "faucet"
    recipient: bytes
    amount: int
    grant_id: str = ""

    def fields(self) -> dict[str, Any]:
        return {"to": self.recipient, "amount": self.amount, "grant": self.grant_id}

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> FaucetGrant:
        _exact_keys(f, {"to", "amount", "grant"}, cls.kind)
        return cls(_key(f, "to", cls.kind), _take(f, "amount", int, cls.kind),
                   _take(f, "grant", str, cls.kind))

    def postings(self) -> tuple[Posting, ...]:
        return _postings(
            (FAUCET_ACCOUNT, -self.amount), (peer_account(self.recipient), self.amount)
        )

    def idem_key(self) -> str | None:
        return self.grant_id or None

    def subject(self) -> str:
        return peer_account(self.recipient)


@dataclass(frozen=True)
class ChargeBody:
    """A paid job: `consumer` pays `amount`, split by `preset` with the provider's `quality_pm`.

    `result` and `receipt` are the provider's signed JobResult and the
    consumer's signed Receipt exactly as received, kept so they can be re-checked.
    """

    kind: ClassVar[str] = "charge"
    job_id: bytes
    model: str
    provider: bytes
    consumer: bytes
    tokens: int
    amount: int
    preset: str
    quality_pm: int
    split: Split
    result: bytes
    receipt: bytes

    def fields(self) -> dict[str, Any]:
        parts = dict(self.split.parts())
        parts["forfeited"] = self.split.forfeited
        return {
            "job": self.job_id, "model": self.model, "provider": self.provider,
            "consumer": self.consumer, "tokens": self.tokens, "amount": self.amount,
            "preset": self.preset, "quality": self.quality_pm, "parts": parts,
            "result": self.result, "receipt": self.receipt,
        }

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> ChargeBody:
        w = cls.kind
        _exact_keys(f, {"job", "model", "provider", "consumer", "tokens", "amount", "preset",
                        "quality", "parts", "result", "receipt"}, w)
        parts: dict[str, Any] = _take(f, "parts", dict, w)
        _exact_keys(parts, {*PART_NAMES, "forfeited"}, w + " parts")
        amount: int = _take(f, "amount", int, w)
        values = {name: _take(parts, name, int, w + " parts") for name in parts}
        split = Split(amount, values["providers"], values["validators"], values["stakers"],
                      values["treasury"], values["burn"], values["forfeited"])
        if sum(n for _, n in split.parts()) != amount or split.forfeited > split.burn:
            raise ValidationError("charge: parts do not add up to the amount")
        quality: int = _take(f, "quality", int, w)
        if quality > 1000:
            raise ValidationError("charge: quality must be 0..1000 per mille")
        return cls(_take(f, "job", bytes, w), _take(f, "model", str, w), _key(f, "provider", w),
                   _key(f, "consumer", w), _take(f, "tokens", int, w), amount,
                   _take(f, "preset", str, w), quality, split, _take(f, "result", bytes, w),
                   _take(f, "receipt", bytes, w))

    def postings(self) -> tuple[Posting, ...]:
        s = self.split
        return _postings(
            (peer_account(self.consumer), -self.amount),
            (peer_account(self.provider), s.providers),
            (VALIDATORS_POOL, s.validators),
            (STAKERS_POOL, s.stakers),
            (TREASURY_ACCOUNT, s.treasury),
            (BURN_ACCOUNT, s.burn),
        )

    def idem_key(self) -> str | None:
        return self.job_id.hex()

    def subject(self) -> str:
        return peer_account(self.provider)


@dataclass(frozen=True)
class ReceiptBody:
    """A receipted job held as evidence without moving money in this ledger
    (e.g. one seen by a validator); at most one per job id."""

    kind: ClassVar[str] = "receipt"
    job_id: bytes
    provider: bytes
    consumer: bytes
    amount: int
    receipt: bytes

    def fields(self) -> dict[str, Any]:
        return {"job": self.job_id, "provider": self.provider, "consumer": self.consumer,
                "amount": self.amount, "receipt": self.receipt}

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> ReceiptBody:
        w = cls.kind
        _exact_keys(f, {"job", "provider", "consumer", "amount", "receipt"}, w)
        return cls(_take(f, "job", bytes, w), _key(f, "provider", w), _key(f, "consumer", w),
                   _take(f, "amount", int, w), _take(f, "receipt", bytes, w))

    def postings(self) -> tuple[Posting, ...]:
        return ()

    def idem_key(self) -> str | None:
        return self.job_id.hex()

    def subject(self) -> str:
        return peer_account(self.provider)


@dataclass(frozen=True)
class StakeBody:
    """A provider's signed stake declaration, stored as the bytes it signed."""

    kind: ClassVar[str] = "stake"
    declaration: StakeDeclaration

    def fields(self) -> dict[str, Any]:
        return {"decl": self.declaration.encode()}

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> StakeBody:
        _exact_keys(f, {"decl"}, cls.kind)
        return cls(StakeDeclaration.decode(_take(f, "decl", bytes, cls.kind)))

    def postings(self) -> tuple[Posting, ...]:
        return ()

    def idem_key(self) -> str | None:
        return hashlib.sha256(self.declaration.encode()).hexdigest()

    def subject(self) -> str:
        return peer_account(self.declaration.provider)


@dataclass(frozen=True)
class SlashBody:
    """This observer slashes `amount` of `provider`'s stake for proven fraud.

    `evidence` names the proof: the sha256 of what was received (e.g. the
    CheckReport with the signed request and result), never the proof itself
    (Ledger.record_slash refuses more than MAX_SLASH_EVIDENCE bytes); `slash_id`
    (default: sha256 of the evidence) is unique, so one proof slashes once.
    """

    kind: ClassVar[str] = "slash"
    provider: bytes
    amount: int
    reason: str
    evidence: bytes
    slash_id: str

    def fields(self) -> dict[str, Any]:
        return {"provider": self.provider, "amount": self.amount, "reason": self.reason,
                "evidence": self.evidence, "slash": self.slash_id}

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> SlashBody:
        w = cls.kind
        _exact_keys(f, {"provider", "amount", "reason", "evidence", "slash"}, w)
        return cls(_key(f, "provider", w), _take(f, "amount", int, w), _take(f, "reason", str, w),
                   _take(f, "evidence", bytes, w), _take(f, "slash", str, w))

    def postings(self) -> tuple[Posting, ...]:
        return ()

    def idem_key(self) -> str | None:
        return self.slash_id

    def subject(self) -> str:
        return peer_account(self.provider)


EntryBody = (FaucetGrant | ChargeBody | ReceiptBody | StakeBody | SlashBody | VoucherBody
             | RedemptionBody)
_KINDS: dict[str, Any] = {
    cls.kind: cls for cls in (FaucetGrant, ChargeBody, ReceiptBody, StakeBody, SlashBody,
                              VoucherBody, RedemptionBody)
}
KINDS: tuple[str, ...] = tuple(_KINDS)


def body_amount(body: EntryBody) -> int:
    """The amount an entry is about (charged, granted, staked, slashed), for display."""
    if isinstance(body, StakeBody):
        return body.declaration.amount
    return body.amount


@dataclass(frozen=True)
class Entry:
    """One ledger entry as stored, its body decoded."""

    seq: int
    at_ms: int
    body: EntryBody
    prev_hash: bytes
    entry_hash: bytes
    signer: bytes
    signature: bytes

    @property
    def kind(self) -> str:
        return self.body.kind


def encode_body(seq: int, at_ms: int, body: EntryBody) -> bytes:
    """The canonical bytes that are hashed and stored for entry `seq`."""
    fields = body.fields()
    return canonical.encode({**fields, "v": BODY_VERSION, "seq": seq, "kind": body.kind,
                             "at": at_ms})


def decode_body(data: bytes) -> tuple[int, int, EntryBody]:
    """(seq, at_ms, body) from stored bytes; DecodeError/ValidationError if they are not a body."""
    value = canonical.decode(data)
    if not isinstance(value, dict):
        raise DecodeError("entry body is not a map")
    header = {k: value.pop(k, None) for k in ("v", "seq", "kind", "at")}
    if header["v"] != BODY_VERSION:
        raise DecodeError(f"entry body version {header['v']!r} is not {BODY_VERSION}")
    cls = _KINDS.get(header["kind"]) if isinstance(header["kind"], str) else None
    if cls is None:
        raise DecodeError(f"unknown entry kind {header['kind']!r}")
    for name in ("seq", "at"):
        if isinstance(header[name], bool) or not isinstance(header[name], int):
            raise ValidationError(f"entry body: {name!r} must be an integer")
    body: EntryBody = cls.from_fields(value)
    return header["seq"], header["at"], body


def chain_hash(prev_hash: bytes, body: bytes) -> bytes:
    """entry_hash = sha256(prev_hash || body)."""
    return hashlib.sha256(prev_hash + body).digest()


def signing_bytes(entry_hash: bytes) -> bytes:
    """What the ledger's owner signs for an entry."""
    return ENTRY_DOMAIN + entry_hash
