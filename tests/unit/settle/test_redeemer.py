"""The provider's redeemer: batching, the gas-aware threshold, the reclaim deadline, the
journal and retries (FakeChainForTests, real SQLite ledger)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.market.channel_entries import RedemptionBody
from p2pinfer.market.ledger import Ledger
from p2pinfer.settle.account import account_of
from p2pinfer.settle.channels import ChannelBook, settle_receipt
from p2pinfer.settle.ports import ChannelState
from p2pinfer.settle.redeemer import Redeemer, RedeemPolicy, choose_batch
from p2pinfer.settle.vouchers import sign_digest, voucher_digest
from tests.support.fake_chain import FakeChainForTests

NOW = 1_900_000_000.0
CHEAP_GAS = RedeemPolicy(wei_per_unit=1_000_000)  # 1 gwei gas: 100k gas = 10^14 wei


class Provider:
    def __init__(self, tmp: Path) -> None:
        self.identity = NodeIdentity.generate()
        self.account = account_of(self.identity)
        self.chain = FakeChainForTests(self.account.address)
        self.ledger = Ledger.open(tmp / "provider.sqlite3", self.identity)
        self.book = ChannelBook(self.chain, self.ledger)

    async def paid(self, charges: list[int], deposit: int = 10**12) -> list[str]:
        """One consumer per charge, each with a funded channel and one held voucher."""
        consumers = []
        for charge in charges:
            acct = account_of(NodeIdentity.generate())
            self.chain.deposit(acct.address, self.account.address, deposit)
            hold = await self.book.admit(acct.address, charge)
            digest = voucher_digest(self.chain.channels_address, self.chain.chain_id,
                                    acct.address, self.account.address, charge)
            assert await settle_receipt(self.book, hold, os.urandom(16), charge, charge,
                                        sign_digest(acct.private_key, digest))
            consumers.append(acct.address)
        return consumers


@pytest.fixture
def provider(tmp_path: Path) -> Provider:
    return Provider(tmp_path)


def redeemer(provider: Provider, policy: RedeemPolicy = CHEAP_GAS, *,
             clock: list[float] | None = None) -> Redeemer:
    times = clock if clock is not None else [0.0]
    return Redeemer(provider.book, provider.ledger, policy, clock_s=lambda: times[0],
                    wall_s=lambda: NOW)


async def test_small_amounts_wait_until_worth_k_times_the_gas(provider: Provider) -> None:
    # Gas 1 gwei; the provider's share is 60%; a unit is worth 10^6 wei; K = 10.
    await provider.paid([1_000_000_000])
    r = redeemer(provider)
    # 1 claim: share 6e14 wei against 10 x 105k gas x 1 gwei = 1.05e15: wait.
    assert await r.step() is None and not provider.chain.redeem_calls
    await provider.paid([2_000_000_000])
    # 2 claims: share 1.8e15 wei against 10 x 150k gas x 1 gwei = 1.5e15: redeem both.
    body = await r.step()
    assert body is not None and len(body.claims) == 2
    assert len(provider.chain.redeem_calls) == 1


async def test_dear_gas_defers_the_same_batch(provider: Provider) -> None:
    await provider.paid([2_000_000_000] * 3)
    provider.chain.gas = 100 * 10**9  # 100 gwei
    r = redeemer(provider)
    assert await r.step() is None
    provider.chain.gas = 10**9
    assert await r.step() is not None


async def test_redemptions_batch_at_most_64_consumers_largest_first(provider: Provider) -> None:
    await provider.paid([10**9 + i for i in range(70)])
    r = redeemer(provider)
    first = await r.step()
    assert first is not None and len(first.claims) == 64
    assert min(c.amount for c in first.claims) == 10**9 + 6  # the six smallest wait
    # The 6 left: share 3.6e15 wei against 10 x 330k gas x 1 gwei = 3.3e15: redeemed next.
    second = await r.step()
    assert second is not None and len(second.claims) == 6
    assert len(provider.chain.redeem_calls) == 2


async def test_a_near_reclaim_forces_a_redemption_whatever_the_gas(provider: Provider) -> None:
    [consumer] = await provider.paid([10])
    r = redeemer(provider)
    assert await r.step() is None  # 10 units: never worth the gas
    provider.chain.start_reclaim(consumer, provider.account.address, at=int(NOW) + 7200)
    await provider.book.refresh()
    assert await r.step() is None  # 2 h away, margin 1 h
    provider.chain.start_reclaim(consumer, provider.account.address, at=int(NOW) + 1800)
    await provider.book.refresh()
    body = await r.step()
    assert body is not None and body.amount == 10


async def test_the_max_interval_redeems_what_is_owed_once_it_covers_the_gas(
        provider: Provider) -> None:
    # 2e8 units at 60 %: 1.2e14 wei, over the 7.8e13 wei of gas at 1 gwei but not 10x it.
    await provider.paid([200_000_000])
    clock = [0.0]
    r = redeemer(provider, RedeemPolicy(max_interval_s=3600), clock=clock)
    assert await r.step() is None
    clock[0] = 3600.0
    assert await r.step() is not None


async def test_the_max_interval_never_redeems_at_a_loss(provider: Provider) -> None:
    # bench/settlement.py: the interval alone redeemed 0.0004-credit jobs at 18-276x
    # their value in gas. 10 units are worth 6e6 wei; the transaction 7.8e13.
    await provider.paid([10])
    clock = [3600.0 * 24]
    assert await redeemer(provider, RedeemPolicy(max_interval_s=3600), clock=clock
                          ).step() is None
    # A testnet, where gas is free, redeems regardless (--redeem-gas-multiple 0).
    assert await redeemer(provider, RedeemPolicy(gas_multiple=0), clock=clock
                          ).step() is not None


async def test_each_redemption_is_journaled_and_the_ledger_verifies(provider: Provider) -> None:
    consumers = await provider.paid([3_000_000_000, 2_000_000_000])
    body = await redeemer(provider).step()
    assert body is not None
    [entry] = [e for e in provider.ledger.entries() if e.kind == "redemption"]
    assert isinstance(entry.body, RedemptionBody)
    assert entry.body.tx_hash == body.tx_hash and entry.body.block == body.block
    assert entry.body.amount == 5_000_000_000
    assert provider.chain.balances[provider.account.address] == 3_000_000_000
    provider.ledger.verify_or_raise()
    for consumer in consumers:
        assert provider.book.channels[consumer].owed == 0  # nothing redeemed twice
    assert await redeemer(provider).step() is None


async def test_a_failed_redemption_is_retried_with_backoff(provider: Provider) -> None:
    await provider.paid([5_000_000_000])
    provider.chain.fail_next_redeems = 2
    r = Redeemer(provider.book, provider.ledger,
                 RedeemPolicy(backoff_s=0.01, check_every_s=0.01), wall_s=lambda: NOW)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(r.run)
            while not r.redemptions:
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert len(provider.chain.redeem_calls) == 3


def test_choose_batch_puts_urgent_channels_first() -> None:
    from p2pinfer.settle.channels import Channel

    big = Channel("0x" + "aa" * 20, ChannelState(10**12, 0, 0), held=10**10, signature=b"s")
    urgent = Channel("0x" + "bb" * 20, ChannelState(10**12, 0, int(NOW) + 10), held=1,
                     signature=b"s")
    batch = choose_batch([big, urgent], RedeemPolicy(max_batch=1), gas_price=10**9,
                         now_unix=NOW, idle_s=0)
    assert batch == [urgent]
