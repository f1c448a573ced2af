"""The provider's redeemer: turns held vouchers into tokens with `redeem_many`, when it
is worth the gas or a reclaim is near (docs/settlement.md, "Node side").

Policy (`RedeemPolicy`, checked every `check_every_s`, or every half `max_interval_s`
when that is shorter, as on a testnet): take the channels whose
newest held voucher is above what the chain redeemed, largest first, at most
`max_batch` (64, the contract's limit) in one transaction, and redeem them when

- a channel among them has a reclaim pending within `reclaim_margin_s` (the
  consumer could take its deposit back with our vouchers unredeemed), or
- nothing was redeemed for `max_interval_s` (vouchers do not sit forever) and the
  share is worth at least the gas (bench/settlement.py found the interval alone
  redeeming at 18-276x its value at 1 gwei: a redemption at a loss waits), or
- the provider's share of the batch is worth more than `gas_multiple` times what
  the transaction costs at the current gas price:
  owed x provider_share_bps / 10^4 x wei_per_unit > K x gas_price x
  (gas_per_tx + gas_per_claim x claims).

`gas_multiple` 0 ignores gas altogether (testnets: their ether is free).

Each redemption is journaled in the ledger (tx hash, block, gas, per-consumer
amounts). A failed one is retried with exponential backoff; nothing here ever
blocks a job (it runs in its own task, chain calls in a worker thread).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from p2pinfer.market.channel_entries import RedeemedClaim, RedemptionBody
from p2pinfer.market.ledger import Ledger
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.channels import Channel, ChannelBook, journal_settlement
from p2pinfer.settle.ports import TxOutcome, VoucherClaim

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RedeemPolicy:
    """When to redeem; see the module doc. Defaults in comments."""

    gas_multiple: int = 10  # K: the share must be worth 10x the gas
    max_interval_s: float = 6 * 3600.0  # redeem whatever is owed at least every 6 h
    reclaim_margin_s: float = 3600.0  # redeem a channel 1 h before its reclaim is due
    check_every_s: float = 30.0
    max_batch: int = 64  # consumers per redeem_many (the contract's DynArray bound)
    provider_share_bps: int = 6000  # the seed preset's provider split
    wei_per_unit: int = 1_000_000  # what one token unit (micro-credit) is worth in wei
    # redeem_many's cost, measured by bench/settlement.py (py-evm, seed preset): about
    # 59,800 gas a transaction plus 17,700 a consumer once its channel was redeemed
    # before (a channel's first redemption costs about 68k more: new storage).
    gas_per_tx: int = 60_000
    gas_per_claim: int = 18_000
    backoff_s: float = 5.0  # first retry after a failed redemption, doubling
    max_backoff_s: float = 600.0


def choose_batch(channels: Sequence[Channel], policy: RedeemPolicy, *, gas_price: int,
                 now_unix: float, idle_s: float) -> list[Channel]:
    """The channels to redeem now (empty: not worth it yet). `idle_s`: seconds since the
    last redemption."""
    owed = sorted((c for c in channels if c.owed > 0 and c.signature),
                  key=lambda c: c.owed, reverse=True)
    if not owed:
        return []
    urgent = [c for c in owed
              if c.state.reclaim_at and c.state.reclaim_at - now_unix <= policy.reclaim_margin_s]
    batch = (urgent + [c for c in owed if c not in urgent])[:policy.max_batch]
    if urgent or policy.gas_multiple == 0:
        return batch
    value_wei = sum(c.owed for c in batch) * policy.provider_share_bps // 10_000 * (
        policy.wei_per_unit)
    cost_wei = gas_price * (policy.gas_per_tx + policy.gas_per_claim * len(batch))
    if idle_s >= policy.max_interval_s and value_wei >= cost_wei:
        return batch
    return batch if value_wei > policy.gas_multiple * cost_wei else []


class Redeemer:
    """Redeems `book`'s held vouchers by `policy` (a task in the node's nursery: `run`)."""

    def __init__(
        self,
        book: ChannelBook,
        ledger: Ledger | None = None,
        policy: RedeemPolicy = RedeemPolicy(),
        *,
        limiter: trio.CapacityLimiter | None = None,
        clock_s: Callable[[], float] = trio.current_time,
        wall_s: Callable[[], float] = time.time,
    ) -> None:
        self.book = book
        self.chain = book.chain
        self.ledger = ledger
        self.policy = policy
        self._limiter = limiter or trio.CapacityLimiter(1)
        self._clock = clock_s
        self._wall = wall_s
        self._last = clock_s()  # the last redemption (or the start)
        self.redemptions: list[RedemptionBody] = []  # this run's, for status and tests

    async def step(self) -> RedemptionBody | None:
        """Redeem once if the policy says so; the journaled redemption, or None. Chain
        errors propagate (`run` retries them)."""
        if not any(c.owed for c in self.book.channels.values()):
            return None  # nothing held above what the chain paid: no RPC either
        gas_price = await trio.to_thread.run_sync(self.chain.gas_price, limiter=self._limiter)
        batch = choose_batch(list(self.book.channels.values()), self.policy,
                             gas_price=gas_price, now_unix=self._wall(),
                             idle_s=self._clock() - self._last)
        if not batch:
            return None
        claims = [VoucherClaim(c.consumer, c.held, c.signature) for c in batch]
        before = {c.consumer: c.state.redeemed for c in batch}
        outcome: TxOutcome = await trio.to_thread.run_sync(
            self.chain.redeem_many, claims, limiter=self._limiter)
        for claim in claims:
            self.book.redeemed(claim.consumer, claim.cumulative)
        self._last = self._clock()
        body = RedemptionBody(
            address_bytes(self.chain.channels_address), address_bytes(self.chain.address),
            outcome.tx_hash, outcome.block, outcome.gas_used,
            tuple(RedeemedClaim(address_bytes(c.consumer), c.cumulative,
                                c.cumulative - before[c.consumer]) for c in claims))
        log.info("redeemed tx=%s block=%d consumers=%d amount=%d gas=%d", outcome.tx_hash,
                 outcome.block, len(claims), body.amount, outcome.gas_used)
        self.redemptions.append(body)
        await journal_settlement(self.ledger, body, self._limiter,
                                 f"redemption tx={body.tx_hash}")
        return body

    async def run(self) -> None:
        """Check every `check_every_s` and redeem when due, until cancelled; after a failure,
        refresh the channels and retry with backoff."""
        delay = self.policy.backoff_s
        while True:
            try:
                await self.step()
            except Exception as exc:  # a revert, a dropped RPC: retry, never crash the node
                log.warning("redemption failed, retrying in %.0f s error=%s", delay, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, self.policy.max_backoff_s)
                await self.book.refresh()
                continue
            delay = self.policy.backoff_s
            await trio.sleep(min(self.policy.check_every_s, self.policy.max_interval_s / 2))
