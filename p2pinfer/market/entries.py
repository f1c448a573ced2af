"""What a ledger entry says, independent of SQLite: bodies, accounts, postings, hashes.

An entry body is a canonical msgpack map `{v, seq, kind, at, ...kind fields}`; each
kind's fields are a schema dataclass (protocol/schema.py) whose `kind` names it.
Its hash chains it to the entry before: entry_hash = sha256(prev_hash || body).
The node signs `p2pinfer/v1/ledger || entry_hash`. Everything the SQLite
columns hold besides these (kind, idempotency key, subject, postings) is
derived from the body by the functions here, so `Ledger.verify` can recompute
and compare it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from p2pinfer.errors import DecodeError, ValidationError
from p2pinfer.identity import peer_id_from_public_key
from p2pinfer.market.channel_entries import RedemptionBody, VoucherBody
from p2pinfer.market.entry_body import EntryBodyBase
from p2pinfer.market.entry_body import Posting as Posting  # its home before entry_body.py
from p2pinfer.market.split import Split
from p2pinfer.market.stake import StakeDeclaration
from p2pinfer.protocol import canonical
from p2pinfer.protocol.canonical import MAX_INT
from p2pinfer.protocol.records import Signer, sign_bytes, verify_bytes
from p2pinfer.protocol.schema import Range, Size, Wire, from_wire, to_wire

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

# The field types of entry bodies: amounts are never negative, keys are Ed25519's.
_Amount = Annotated[int, Range(0, MAX_INT)]
_Key = Annotated[bytes, Size(32, 32)]
_Blob = Annotated[bytes, Size(0, MAX_EVIDENCE)]
_Text = Annotated[str, Size(0, MAX_EVIDENCE)]


def peer_account(public_key: bytes) -> str:
    """The ledger account of a peer: `peer:` + its PeerID."""
    return "peer:" + peer_id_from_public_key(public_key)


def _postings(*moves: tuple[str, int]) -> tuple[Posting, ...]:
    # Merge per account and drop zeros, so a body has exactly one set of postings.
    total: dict[str, int] = {}
    for account, amount in moves:
        total[account] = total.get(account, 0) + amount
    return tuple(Posting(a, n) for a, n in sorted(total.items()) if n != 0)


class _PerJob(EntryBodyBase):
    """A body about one job of `provider`'s: at most one of its kind per job id."""

    job_id: bytes
    provider: bytes

    def idem_key(self) -> str | None:
        return self.job_id.hex()

    def subject(self) -> str:
        return peer_account(self.provider)


@dataclass(frozen=True)
class FaucetGrant(EntryBodyBase):
    """Testnet credits minted to `recipient`; `grant_id` (if not empty) is unique."""

    kind: ClassVar[str] = "faucet"
    recipient: Annotated[_Key, Wire(key="to")]
    amount: _Amount
    grant_id: Annotated[_Text, Wire(key="grant")] = ""

    def postings(self) -> tuple[Posting, ...]:
        return _postings(
            (FAUCET_ACCOUNT, -self.amount), (peer_account(self.recipient), self.amount)
        )

    def idem_key(self) -> str | None:
        return self.grant_id or None

    def subject(self) -> str:
        return peer_account(self.recipient)


@dataclass(frozen=True)
class ChargeParts:
    """A charge's split as its entry holds it (`Split` without the charge, which is the
    entry's `amount`)."""

    providers: _Amount
    validators: _Amount
    stakers: _Amount
    treasury: _Amount
    burn: _Amount
    forfeited: _Amount

    @classmethod
    def of(cls, split: Split) -> ChargeParts:
        return cls(split.providers, split.validators, split.stakers, split.treasury, split.burn,
                   split.forfeited)


@dataclass(frozen=True)
class ChargeBody(_PerJob):
    """A paid job: `consumer` pays `amount`, split by `preset` with the provider's `quality_pm`.

    `result` and `receipt` are the provider's signed JobResult and the
    consumer's signed Receipt exactly as received, kept so they can be re-checked.
    """

    kind: ClassVar[str] = "charge"
    job_id: Annotated[_Blob, Wire(key="job")]
    model: _Text
    provider: _Key
    consumer: _Key
    tokens: _Amount
    amount: _Amount
    preset: _Text
    quality_pm: Annotated[_Amount, Wire(key="quality")]
    parts: ChargeParts
    result: _Blob
    receipt: _Blob

    @property
    def split(self) -> Split:
        p = self.parts
        return Split(self.amount, p.providers, p.validators, p.stakers, p.treasury, p.burn,
                     p.forfeited)

    def validate(self) -> None:
        s = self.split
        if sum(n for _, n in s.parts()) != self.amount or s.forfeited > s.burn:
            raise ValidationError("charge: parts do not add up to the amount")
        if self.quality_pm > 1000:
            raise ValidationError("charge: quality must be 0..1000 per mille")

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


@dataclass(frozen=True)
class ReceiptBody(_PerJob):
    """A receipted job held as evidence without moving money in this ledger
    (e.g. one seen by a validator); at most one per job id."""

    kind: ClassVar[str] = "receipt"
    job_id: Annotated[_Blob, Wire(key="job")]
    provider: _Key
    consumer: _Key
    amount: _Amount
    receipt: _Blob


@dataclass(frozen=True)
class StakeBody(EntryBodyBase):
    """A provider's signed stake declaration, stored as the bytes it signed."""

    kind: ClassVar[str] = "stake"
    declaration: Annotated[StakeDeclaration, Wire(key="decl", encoded=Size(0, MAX_EVIDENCE))]

    def idem_key(self) -> str | None:
        return hashlib.sha256(self.declaration.encode()).hexdigest()

    def subject(self) -> str:
        return peer_account(self.declaration.provider)


@dataclass(frozen=True)
class SlashBody(EntryBodyBase):
    """This observer slashes `amount` of `provider`'s stake for proven fraud.

    `evidence` names the proof: the sha256 of what was received (e.g. the
    CheckReport with the signed request and result), never the proof itself
    (Ledger.record_slash refuses more than MAX_SLASH_EVIDENCE bytes); `slash_id`
    (default: sha256 of the evidence) is unique, so one proof slashes once.
    """

    kind: ClassVar[str] = "slash"
    provider: _Key
    amount: _Amount
    reason: _Text
    evidence: _Blob
    slash_id: Annotated[_Text, Wire(key="slash")]

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
    """The canonical bytes that are hashed and stored for entry `seq`; ValidationError if a
    field is out of its bounds."""
    header = {"v": BODY_VERSION, "seq": seq, "kind": body.kind, "at": at_ms}
    return canonical.encode({**to_wire(body), **header})


def decode_body(data: bytes) -> tuple[int, int, EntryBody]:
    """(seq, at_ms, body) from stored bytes; DecodeError/ValidationError if they are not a body."""
    value = canonical.decode(data)
    if not isinstance(value, dict):
        raise DecodeError("entry body is not a map")
    header = {k: value.pop(k, None) for k in ("v", "seq", "kind", "at")}
    if type(header["v"]) is not int or header["v"] != BODY_VERSION:
        raise DecodeError(f"entry body version {header['v']!r} is not {BODY_VERSION}")
    cls = _KINDS.get(header["kind"]) if isinstance(header["kind"], str) else None
    if cls is None:
        raise DecodeError(f"unknown entry kind {header['kind']!r}")
    for name in ("seq", "at"):
        if type(header[name]) is not int:
            raise ValidationError(f"entry body: {name!r} must be an integer")
    body: EntryBody = from_wire(cls, value)
    if canonical.encode({**to_wire(body), **header}) != data:
        raise DecodeError("entry body is not canonical")
    body.validate()
    return header["seq"], header["at"], body


def chain_hash(prev_hash: bytes, body: bytes) -> bytes:
    """entry_hash = sha256(prev_hash || body)."""
    return hashlib.sha256(prev_hash + body).digest()


def signing_bytes(entry_hash: bytes) -> bytes:
    """What the ledger's owner signs for an entry: ENTRY_DOMAIN || entry_hash."""
    return ENTRY_DOMAIN + entry_hash


def sign_entry(signer: Signer, entry_hash: bytes) -> bytes:
    """The ledger owner's signature of an entry (over `signing_bytes(entry_hash)`)."""
    return sign_bytes(signer, ENTRY_DOMAIN, entry_hash)


def verify_entry(signer: bytes, entry_hash: bytes, signature: bytes) -> None:
    """SignatureError unless `signature` is `signer`'s over the entry with `entry_hash`."""
    verify_bytes(signer, ENTRY_DOMAIN, entry_hash, signature)
