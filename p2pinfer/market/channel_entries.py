"""Ledger entries for payment channels (docs/settlement.md): vouchers and redemptions.

They move no credits in the local ledger (the chain holds the money: no postings);
they are the node's durable journal of what it signed or holds, and of what it
redeemed, hash-chained and checked by `ledger --verify` like every other entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from p2pinfer.errors import ValidationError

VoucherRole = Literal["signed", "held"]


def _get(fields: dict[str, Any], key: str, kind: type, what: str, size: int | None = None) -> Any:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, kind):
        raise ValidationError(f"{what}: field {key!r} must be {kind.__name__}")
    if isinstance(value, int) and value < 0:
        raise ValidationError(f"{what}: field {key!r} must be >= 0")
    if size is not None and isinstance(value, bytes) and len(value) != size:
        raise ValidationError(f"{what}: field {key!r} must be {size} bytes")
    if isinstance(value, str | bytes) and len(value) > 256:
        raise ValidationError(f"{what}: field {key!r} is too large")
    return value


def _exact(fields: dict[str, Any], keys: set[str], what: str) -> None:
    if set(fields) != keys:
        raise ValidationError(f"{what}: fields {sorted(fields)} != {sorted(keys)}")


def channel_subject(channels: bytes, consumer: bytes, provider: bytes) -> str:
    """The subject of every voucher entry of one channel (indexed: a node reads its
    newest cumulative back at start)."""
    return f"channel:{channels.hex()}:{consumer.hex()}:{provider.hex()}"


@dataclass(frozen=True)
class VoucherBody:
    """A voucher this node signed as the consumer ("signed", journaled before it is sent)
    or received and checked as the provider ("held"). Addresses are 20 raw bytes."""

    kind: ClassVar[str] = "voucher"
    role: VoucherRole
    channels: bytes
    consumer: bytes
    provider: bytes
    job_id: bytes
    amount: int  # this job's charge
    cumulative: int  # all the consumer ever owed the provider on this channel contract
    signature: bytes  # 65 bytes, the consumer's EIP-191 voucher

    def fields(self) -> dict[str, Any]:
        return {"role": self.role, "channels": self.channels, "consumer": self.consumer,
                "provider": self.provider, "job": self.job_id, "amount": self.amount,
                "cumulative": self.cumulative, "sig": self.signature}

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> VoucherBody:
        w = cls.kind
        _exact(f, {"role", "channels", "consumer", "provider", "job", "amount", "cumulative",
                   "sig"}, w)
        role = _get(f, "role", str, w)
        if role not in ("signed", "held"):
            raise ValidationError(f"voucher: role {role!r} is not 'signed' or 'held'")
        amount, cumulative = _get(f, "amount", int, w), _get(f, "cumulative", int, w)
        if cumulative < amount:
            raise ValidationError("voucher: cumulative is less than the job's amount")
        return cls(role, _get(f, "channels", bytes, w, 20), _get(f, "consumer", bytes, w, 20),
                   _get(f, "provider", bytes, w, 20), _get(f, "job", bytes, w, 16), amount,
                   cumulative, _get(f, "sig", bytes, w, 65))

    def postings(self) -> tuple[Any, ...]:
        return ()

    def idem_key(self) -> str | None:
        # One entry per role and cumulative on a channel: a replayed voucher is refused.
        return f"{self.role}:{self.subject()}:{self.cumulative}"

    def subject(self) -> str:
        return channel_subject(self.channels, self.consumer, self.provider)


@dataclass(frozen=True)
class RedeemedClaim:
    """One consumer's voucher in a redemption: `amount` = cumulative - redeemed before."""

    consumer: bytes
    cumulative: int
    amount: int


@dataclass(frozen=True)
class RedemptionBody:
    """A mined `redeem_many` of this node (the provider): what it redeemed, from whom."""

    kind: ClassVar[str] = "redemption"
    channels: bytes
    provider: bytes
    tx_hash: str
    block: int
    gas_used: int
    claims: tuple[RedeemedClaim, ...]

    @property
    def amount(self) -> int:
        """All the redemption took out of the channels (before the split)."""
        return sum(c.amount for c in self.claims)

    def fields(self) -> dict[str, Any]:
        return {"channels": self.channels, "provider": self.provider, "tx": self.tx_hash,
                "block": self.block, "gas": self.gas_used,
                "claims": [[c.consumer, c.cumulative, c.amount] for c in self.claims]}

    @classmethod
    def from_fields(cls, f: dict[str, Any]) -> RedemptionBody:
        w = cls.kind
        _exact(f, {"channels", "provider", "tx", "block", "gas", "claims"}, w)
        raw = f.get("claims")
        if not isinstance(raw, list) or not 1 <= len(raw) <= 64:
            raise ValidationError("redemption: claims must be a list of 1..64")
        claims = []
        for item in raw:
            if not isinstance(item, list) or len(item) != 3:
                raise ValidationError("redemption: a claim is [consumer, cumulative, amount]")
            part = dict(zip(("consumer", "cumulative", "amount"), item, strict=True))
            claims.append(RedeemedClaim(_get(part, "consumer", bytes, w, 20),
                                        _get(part, "cumulative", int, w),
                                        _get(part, "amount", int, w)))
        return cls(_get(f, "channels", bytes, w, 20), _get(f, "provider", bytes, w, 20),
                   _get(f, "tx", str, w), _get(f, "block", int, w), _get(f, "gas", int, w),
                   tuple(claims))

    def postings(self) -> tuple[Any, ...]:
        return ()

    def idem_key(self) -> str | None:
        return self.tx_hash

    def subject(self) -> str:
        return f"redeem:{self.channels.hex()}:{self.provider.hex()}"
