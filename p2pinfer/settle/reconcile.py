"""The ledger journal against the chain (`p2pinfer ledger --verify --chain-rpc ...`).

The local ledger journals every voucher a node signed (as a consumer) or holds (as a
provider) and every redemption it mined (docs/settlement.md, "Ledger"). The chain is
where the money is, so `ledger --verify` with a chain also checks that the two tell
the same story, per channel on the configured Channels contract:

- as the consumer: the provider has redeemed no more than the largest cumulative
  voucher this node ever signed to it (more would mean a voucher this node did not
  journal: a lost journal, or a key used elsewhere);
- as the provider: the chain has redeemed at least what the journal's redemptions
  say (a journaled redemption the chain does not show was never mined, or was
  reverted), and no more than the largest voucher the journal holds (more would be a
  redemption by someone else with this node's key);
- every journaled redemption's transaction is on the chain and succeeded, where the
  chain client can look transactions up.

Entries of other Channels contracts (an older deployment) are left out and counted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from p2pinfer.market.channel_entries import RedemptionBody, VoucherBody
from p2pinfer.market.entries import Entry
from p2pinfer.settle.addresses import address_bytes, checksum_address
from p2pinfer.settle.ports import ChainPort


class TransactionLookup(Protocol):
    """A chain client that can say whether a mined transaction succeeded (None: unknown)."""

    def transaction_succeeded(self, tx_hash: str) -> bool | None: ...


@dataclass
class ChannelJournal:
    """What one node's journal says about one channel."""

    signed: int = 0  # largest cumulative this node signed (it is the consumer)
    held: int = 0  # largest cumulative this node holds (it is the provider)
    redeemed: int = 0  # largest cumulative this node redeemed on chain (provider)


@dataclass(frozen=True)
class Mismatch:
    """A channel or redemption where the journal and the chain disagree."""

    consumer: str
    provider: str
    reason: str


@dataclass(frozen=True)
class Reconciliation:
    """The outcome of `reconcile`."""

    channels: int
    redemptions: int
    other_contracts: int  # journal entries of another Channels contract, not checked
    mismatches: tuple[Mismatch, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return not self.mismatches


def journal_of(entries: Iterable[Entry], channels: bytes
               ) -> tuple[dict[tuple[bytes, bytes], ChannelJournal], list[RedemptionBody], int]:
    """Per (consumer, provider): what the journal says; the redemptions; and how many
    entries belong to another Channels contract."""
    by_channel: dict[tuple[bytes, bytes], ChannelJournal] = {}
    redemptions: list[RedemptionBody] = []
    other = 0
    for entry in entries:
        body = entry.body
        if isinstance(body, VoucherBody):
            if body.channels != channels:
                other += 1
                continue
            seen = by_channel.setdefault((body.consumer, body.provider), ChannelJournal())
            if body.role == "signed":
                seen.signed = max(seen.signed, body.cumulative)
            else:
                seen.held = max(seen.held, body.cumulative)
        elif isinstance(body, RedemptionBody):
            if body.channels != channels:
                other += 1
                continue
            redemptions.append(body)
            for claim in body.claims:
                seen = by_channel.setdefault((claim.consumer, body.provider), ChannelJournal())
                seen.redeemed = max(seen.redeemed, claim.cumulative)
    return by_channel, redemptions, other


def reconcile(entries: Iterable[Entry], chain: ChainPort) -> Reconciliation:
    """Check the journal in `entries` against `chain` (blocking: chain reads)."""
    channels = address_bytes(chain.channels_address)
    me = address_bytes(chain.address)
    by_channel, redemptions, other = journal_of(entries, channels)
    mismatches: list[Mismatch] = []
    for (consumer, provider), seen in sorted(by_channel.items()):
        c, p = checksum_address(consumer), checksum_address(provider)
        state = chain.channel(c, p)
        if consumer == me and state.redeemed > seen.signed:
            mismatches.append(Mismatch(c, p, (
                f"the provider redeemed {state.redeemed} units, more than the largest "
                f"voucher this node signed ({seen.signed})")))
        if provider == me:
            if state.redeemed < seen.redeemed:
                mismatches.append(Mismatch(c, p, (
                    f"the journal records redemptions up to {seen.redeemed} units, the chain "
                    f"only {state.redeemed}")))
            if state.redeemed > max(seen.held, seen.redeemed):
                mismatches.append(Mismatch(c, p, (
                    f"the chain shows {state.redeemed} units redeemed, more than any voucher "
                    f"the journal holds ({seen.held})")))
    lookup = chain if hasattr(chain, "transaction_succeeded") else None
    for redemption in redemptions:
        if lookup is None:
            break
        succeeded = lookup.transaction_succeeded(redemption.tx_hash)
        if succeeded is False or succeeded is None:
            mismatches.append(Mismatch("-", checksum_address(redemption.provider), (
                f"redemption {redemption.tx_hash} is "
                f"{'reverted' if succeeded is False else 'not on the chain'}")))
    return Reconciliation(len(by_channel), len(redemptions), other, tuple(mismatches))
