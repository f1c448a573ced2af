"""Stake.vy: locking, unbonding, withdrawing, and stake at past blocks."""

from __future__ import annotations

import pytest
from web3.contract import Contract

from p2pinfer.settle.artifacts import load_artifacts
from tests.unit.settle.conftest import UNBONDING_S, Chain, TransactionFailed, events, reverts


def test_lock_moves_credit_into_stake(chain: Chain) -> None:
    staker = chain.accounts[1]
    receipt = chain.lock(staker, 1_000)
    chain.lock(staker, 500)
    assert chain.stake.functions.stake_of(staker).call() == 1_500
    assert chain.stake.functions.total_stake().call() == 1_500
    assert chain.balance(staker) == 0
    assert chain.balance(chain.stake.address) == 1_500
    (event,) = events(chain.stake.events.Locked, receipt)
    assert dict(event["args"]) == {"staker": staker, "amount": 1_000}


def test_lock_needs_an_allowance_and_an_amount(chain: Chain) -> None:
    staker = chain.accounts[1]
    chain.give(staker, 1_000)
    with reverts("nothing to lock"):
        chain.tx(staker, chain.stake.functions.lock(0))
    with pytest.raises(TransactionFailed):  # transferFrom underflows the missing allowance
        chain.tx(staker, chain.stake.functions.lock(1_000))


def test_unbonding_stake_is_not_locked_and_waits(chain: Chain) -> None:
    staker = chain.accounts[1]
    chain.lock(staker, 1_000)
    chain.tx(staker, chain.stake.functions.begin_unbond(400))
    release_at = chain.now() + UNBONDING_S
    assert chain.stake.functions.stake_of(staker).call() == 600
    assert chain.stake.functions.total_stake().call() == 600
    assert chain.stake.functions.unbonding(staker).call() == 400
    assert chain.stake.functions.release_at(staker).call() == release_at
    with reverts("still unbonding"):
        chain.tx(staker, chain.stake.functions.withdraw())
    chain.advance(UNBONDING_S - 5)
    with reverts("still unbonding"):
        chain.tx(staker, chain.stake.functions.withdraw())
    chain.advance(5)
    chain.tx(staker, chain.stake.functions.withdraw())
    assert chain.balance(staker) == 400
    assert chain.stake.functions.unbonding(staker).call() == 0
    with reverts("nothing unbonding"):
        chain.tx(staker, chain.stake.functions.withdraw())


def test_a_second_unbond_adds_to_the_lot_and_restarts_its_clock(chain: Chain) -> None:
    staker = chain.accounts[1]
    chain.lock(staker, 1_000)
    chain.tx(staker, chain.stake.functions.begin_unbond(100))
    chain.advance(UNBONDING_S - 100)
    chain.tx(staker, chain.stake.functions.begin_unbond(200))
    assert chain.stake.functions.release_at(staker).call() == chain.now() + UNBONDING_S
    chain.advance(150)  # the first lot's time has passed, but the clock restarted
    with reverts("still unbonding"):
        chain.tx(staker, chain.stake.functions.withdraw())
    chain.advance(UNBONDING_S)
    chain.tx(staker, chain.stake.functions.withdraw())
    assert chain.balance(staker) == 300
    assert chain.stake.functions.stake_of(staker).call() == 700


def test_unbond_more_than_locked_is_refused(chain: Chain) -> None:
    staker = chain.accounts[1]
    chain.lock(staker, 1_000)
    with reverts("not enough locked stake"):
        chain.tx(staker, chain.stake.functions.begin_unbond(1_001))
    with reverts("nothing to unbond"):
        chain.tx(staker, chain.stake.functions.begin_unbond(0))


def test_stake_at_answers_for_every_past_block(chain: Chain) -> None:
    staker, other = chain.accounts[1], chain.accounts[2]
    before = chain.block()
    history: list[tuple[int, int]] = []  # (block, staker's locked stake at its end)
    locked = 0
    for amount in (100, 20, 3, 400, 50, 6, 7_000):  # enough checkpoints to bisect
        chain.lock(staker, amount)
        locked += amount
        history.append((chain.block(), locked))
        chain.advance(10)  # blocks with no checkpoint in between
    chain.tx(staker, chain.stake.functions.begin_unbond(579))
    history.append((chain.block(), locked - 579))
    chain.lock(other, 1_000)
    other_block = chain.block()
    at = chain.stake.functions.stake_at
    assert at(staker, before).call() == 0
    for blk, amount in history:
        assert at(staker, blk).call() == amount
        assert at(staker, blk + 1).call() == amount  # no change until the next checkpoint
        assert at(staker, blk - 1).call() != amount
    assert at(staker, chain.block() + 1_000).call() == 7_000
    assert at(other, other_block - 1).call() == 0
    total_at = chain.stake.functions.total_stake_at
    assert total_at(before).call() == 0
    assert total_at(history[3][0]).call() == 523
    assert total_at(other_block - 1).call() == 7_000
    assert total_at(other_block).call() == 8_000


def test_stake_at_of_a_never_staked_account_is_zero(chain: Chain) -> None:
    assert chain.stake.functions.stake_at(chain.accounts[3], chain.block()).call() == 0
    assert chain.stake.functions.total_stake_at(chain.block()).call() == 0


def test_stake_that_would_not_fit_a_checkpoint_is_refused(chain: Chain) -> None:
    art = load_artifacts()
    huge = 2**200

    def deploy(name: str, *args: object) -> Contract:
        factory = chain.w3.eth.contract(abi=list(art[name].abi), bytecode=art[name].bytecode)
        receipt = chain.tx(chain.deployer, factory.constructor(*args))
        return chain.w3.eth.contract(address=receipt["contractAddress"], abi=list(art[name].abi))

    credit = deploy("Credit", huge, huge)
    stake = deploy("Stake", credit.address, 1, 1, 1)
    chain.tx(chain.deployer, credit.functions.approve(stake.address, huge))
    chain.tx(chain.deployer, stake.functions.lock(2**192 - 1))
    with reverts("stake too large"):
        chain.tx(chain.deployer, stake.functions.lock(1))
