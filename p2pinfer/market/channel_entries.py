"""Ledger entries for payment channels (docs/settlement.md): vouchers and redemptions.

They move no credits in the local ledger (the chain holds the money: no postings);
they are the node's durable journal of what it signed or holds, and of what it
redeemed, hash-chained and checked by `ledger --verify` like every other entry. Their
fields are schema dataclasses (protocol/schema.py), like every entry body's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

from p2pinfer.errors import ValidationError
from p2pinfer.market.entry_body import EntryBodyBase
from p2pinfer.protocol.canonical import MAX_INT
from p2pinfer.protocol.schema import POSITIONAL, Range, Size, Wire

VoucherRole = Literal["signed", "held"]
_Amount = Annotated[int, Range(0, MAX_INT)]
_Address = Annotated[bytes, Size(20, 20)]  # an EVM address, raw


def channel_subject(channels: bytes, consumer: bytes, provider: bytes) -> str:
    """The subject of every voucher entry of one channel (indexed: a node reads its
    newest cumulative back at start)."""
    return f"channel:{channels.hex()}:{consumer.hex()}:{provider.hex()}"


@dataclass(frozen=True)
class VoucherBody(EntryBodyBase):
    """A voucher this node signed as the consumer ("signed", journaled before it is sent)
    or received and checked as the provider ("held"). Addresses are 20 raw bytes."""

    kind: ClassVar[str] = "voucher"
    role: VoucherRole
    channels: _Address
    consumer: _Address
    provider: _Address
    job_id: Annotated[bytes, Size(16, 16), Wire(key="job")]
    amount: _Amount  # this job's charge
    cumulative: _Amount  # all the consumer ever owed the provider on this channel contract
    signature: Annotated[bytes, Size(65, 65), Wire(key="sig")]  # the consumer's EIP-191 voucher

    def validate(self) -> None:
        if self.cumulative < self.amount:
            raise ValidationError("voucher: cumulative is less than the job's amount")

    def idem_key(self) -> str | None:
        # One entry per role and cumulative on a channel: a replayed voucher is refused.
        return f"{self.role}:{self.subject()}:{self.cumulative}"

    def subject(self) -> str:
        return channel_subject(self.channels, self.consumer, self.provider)


@dataclass(frozen=True)
class RedeemedClaim:
    """One consumer's voucher in a redemption: `amount` = cumulative - redeemed before.
    Held as the array `[consumer, cumulative, amount]`."""

    consumer: _Address
    cumulative: _Amount
    amount: _Amount


@dataclass(frozen=True)
class RedemptionBody(EntryBodyBase):
    """A mined `redeem_many` of this node (the provider): what it redeemed, from whom."""

    kind: ClassVar[str] = "redemption"
    channels: _Address
    provider: _Address
    tx_hash: Annotated[str, Size(0, 256), Wire(key="tx")]
    block: _Amount
    gas_used: Annotated[_Amount, Wire(key="gas")]
    claims: Annotated[tuple[Annotated[RedeemedClaim, POSITIONAL], ...], Size(1, 64)]

    @property
    def amount(self) -> int:
        """All the redemption took out of the channels (before the split)."""
        return sum(c.amount for c in self.claims)

    def idem_key(self) -> str | None:
        return self.tx_hash

    def subject(self) -> str:
        return f"redeem:{self.channels.hex()}:{self.provider.hex()}"
