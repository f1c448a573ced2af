"""The stakers' pool: Channels collects its share, hands it to Stake once per epoch,
and stakers earn it pro rata to locked stake."""

from __future__ import annotations

from tests.unit.settle.conftest import EPOCH_S, Chain, events, reverts


def collect_pool(chain: Chain, amount: int) -> None:
    """Redeems vouchers whose pool share (seed: 15%) comes to `amount`."""
    consumer, provider = chain.accounts[12], chain.accounts[13]
    chain.deposit(consumer, provider, amount * 10_000 // 1_500)
    chain.redeem(provider, consumer, amount * 10_000 // 1_500)
    assert chain.channels.functions.pool_balance().call() == amount


def test_distribute_before_the_epoch_ends_is_refused(chain: Chain) -> None:
    collect_pool(chain, 300)
    with reverts("epoch not over"):
        chain.tx(chain.accounts[4], chain.channels.functions.distribute_pool())


def test_pool_is_paid_to_stakers_pro_rata_and_claimed(chain: Chain) -> None:
    alice, bob = chain.accounts[1], chain.accounts[2]
    chain.lock(alice, 1_000)
    chain.lock(bob, 3_000)
    collect_pool(chain, 3_000)
    chain.advance(EPOCH_S)
    receipt = chain.tx(chain.accounts[4], chain.channels.functions.distribute_pool())
    (event,) = events(chain.channels.events.PoolDistributed, receipt)
    assert event["args"]["amount"] == 3_000
    assert chain.channels.functions.pool_balance().call() == 0
    assert chain.balance(chain.channels.address) == 0
    assert chain.stake.functions.pending(alice).call() == 750
    assert chain.stake.functions.pending(bob).call() == 2_250
    chain.tx(alice, chain.stake.functions.claim())
    assert chain.balance(alice) == 750
    assert chain.stake.functions.pending(alice).call() == 0
    with reverts("epoch not over"):  # once per epoch
        chain.tx(chain.accounts[4], chain.channels.functions.distribute_pool())


def test_rewards_are_settled_before_any_stake_change(chain: Chain) -> None:
    alice, bob = chain.accounts[1], chain.accounts[2]
    chain.lock(alice, 1_000)
    fund(chain, 1_000)  # all alice's
    chain.lock(bob, 1_000)  # bob joins after: earns nothing of it
    chain.tx(alice, chain.stake.functions.begin_unbond(500))  # alice now 500 locked
    fund(chain, 1_500)  # alice 500/1500, bob 1000/1500
    assert chain.stake.functions.pending(alice).call() == 1_500
    assert chain.stake.functions.pending(bob).call() == 1_000
    chain.lock(bob, 500)  # settles bob's 1000 first
    assert chain.stake.functions.pending(bob).call() == 1_000
    chain.tx(bob, chain.stake.functions.claim())
    chain.tx(alice, chain.stake.functions.claim())
    assert chain.balance(alice) == 1_500
    assert chain.balance(bob) == 1_000


def test_slashed_stake_stops_earning(chain: Chain) -> None:
    provider, validators = chain.accounts[1], chain.accounts[5:7]
    for v in validators:
        chain.lock(v, 10_000_000)
    chain.lock(provider, 10_000_000)
    fund(chain, 3_000)  # 1000 each
    evidence = bytes(32)
    sigs = chain.slash_sigs(provider, 10_000_000, evidence, validators)
    chain.tx(chain.accounts[4],
             chain.stake.functions.slash(provider, 10_000_000, evidence, sigs))
    fund(chain, 2_000)  # only the validators now
    assert chain.stake.functions.pending(provider).call() == 1_000
    assert chain.stake.functions.pending(validators[0]).call() == 2_000


def test_pool_funded_with_nobody_staked_waits_for_stakers(chain: Chain) -> None:
    fund(chain, 500)
    assert chain.stake.functions.pool_unassigned().call() == 500
    chain.lock(chain.accounts[1], 100)
    fund(chain, 100)
    assert chain.stake.functions.pending(chain.accounts[1]).call() == 600
    assert chain.stake.functions.pool_unassigned().call() == 0


def test_rounding_never_pays_out_more_than_was_funded(chain: Chain) -> None:
    stakers = chain.accounts[1:4]
    for staker in stakers:
        chain.lock(staker, 1)
    for _ in range(3):
        fund(chain, 10)  # 10/3 each time: the remainder is carried, not lost
    assert [chain.stake.functions.pending(s).call() for s in stakers] == [10, 10, 10]


def fund(chain: Chain, amount: int) -> None:
    funder = chain.accounts[11]
    chain.give(funder, amount)
    chain.approve(funder, chain.stake.address, amount)
    chain.tx(funder, chain.stake.functions.fund_pool(amount))
