"""Stake.slash: M-of-N validator signatures over the slash digest, once per evidence."""

from __future__ import annotations

import pytest

from tests.unit.settle.conftest import VALIDATOR_MIN_STAKE, Chain, events, reverts

EVIDENCE = bytes.fromhex("ab" * 32)
NOT_ENOUGH = "not enough validator signatures"


@pytest.fixture
def staked(chain: Chain) -> Chain:
    """Provider accounts[1] locks 1000; validators accounts[5..7] lock the minimum."""
    chain.lock(chain.accounts[1], 1_000)
    for validator in chain.accounts[5:8]:
        chain.lock(validator, VALIDATOR_MIN_STAKE)
    return chain


def slash(chain: Chain, amount: int, signers: list[str], evidence: bytes = EVIDENCE) -> object:
    provider = chain.accounts[1]
    sigs = chain.slash_sigs(provider, amount, evidence, signers)
    call = chain.stake.functions.slash(provider, amount, evidence, sigs)
    return chain.tx(chain.accounts[4], call)  # anyone may send a slash


def test_slash_with_threshold_signatures_burns_the_stake(staked: Chain) -> None:
    chain, provider = staked, staked.accounts[1]
    supply = chain.supply()
    receipt = slash(chain, 300, chain.accounts[5:7])
    assert chain.stake.functions.stake_of(provider).call() == 700
    assert chain.stake.functions.total_stake().call() == 700 + 3 * VALIDATOR_MIN_STAKE
    assert supply - chain.supply() == 300
    assert chain.balance(chain.stake.address) == 700 + 3 * VALIDATOR_MIN_STAKE
    (event,) = events(chain.stake.events.Slashed, receipt)
    assert dict(event["args"]) == {"provider": provider, "amount": 300, "evidence": EVIDENCE}
    assert chain.stake.functions.evidence_used(EVIDENCE).call()


def test_one_signature_short_of_the_threshold_is_refused(staked: Chain) -> None:
    with reverts(NOT_ENOUGH):
        slash(staked, 300, staked.accounts[5:6])
    with reverts(NOT_ENOUGH):
        slash(staked, 300, [])
    assert staked.stake.functions.stake_of(staked.accounts[1]).call() == 1_000


def test_a_signer_counts_once(staked: Chain) -> None:
    with reverts(NOT_ENOUGH):
        slash(staked, 300, [staked.accounts[5], staked.accounts[5]])


def test_unstaked_and_under_minimum_signers_do_not_count(staked: Chain) -> None:
    chain = staked
    under = chain.accounts[8]
    chain.lock(under, VALIDATOR_MIN_STAKE - 1)
    unstaked = chain.accounts[2]
    with reverts(NOT_ENOUGH):
        slash(chain, 300, [chain.accounts[5], unstaked])
    with reverts(NOT_ENOUGH):
        slash(chain, 300, [chain.accounts[5], under])


def test_unbonding_validators_do_not_count(staked: Chain) -> None:
    chain = staked
    chain.tx(chain.accounts[6], chain.stake.functions.begin_unbond(1))
    with reverts(NOT_ENOUGH):
        slash(chain, 300, chain.accounts[5:7])


def test_the_provider_cannot_sign_its_own_slash(staked: Chain) -> None:
    chain = staked
    chain.lock(chain.accounts[1], VALIDATOR_MIN_STAKE)  # staked enough to be a validator
    with reverts(NOT_ENOUGH):
        slash(chain, 300, [chain.accounts[5], chain.accounts[1]])


def test_signatures_over_another_amount_or_evidence_do_not_count(staked: Chain) -> None:
    chain, provider = staked, staked.accounts[1]
    good = chain.slash_sigs(provider, 300, EVIDENCE, chain.accounts[5:6])
    wrong_amount = chain.slash_sigs(provider, 301, EVIDENCE, chain.accounts[6:7])
    wrong_evidence = chain.slash_sigs(provider, 300, bytes(32), chain.accounts[6:7])
    for bad in (wrong_amount, wrong_evidence, [b"\x00" * 65], [b"junk"]):
        with reverts(NOT_ENOUGH):
            chain.tx(chain.accounts[4],
                     chain.stake.functions.slash(provider, 300, EVIDENCE, good + bad))


def test_bad_signatures_beside_enough_good_ones_do_not_block_a_slash(staked: Chain) -> None:
    chain = staked
    provider = chain.accounts[1]
    sigs = chain.slash_sigs(provider, 300, EVIDENCE,
                            [chain.accounts[5], chain.accounts[2], chain.accounts[5],
                             chain.accounts[6]])
    chain.tx(chain.accounts[4], chain.stake.functions.slash(provider, 300, EVIDENCE, sigs))
    assert chain.stake.functions.stake_of(provider).call() == 700


def test_evidence_is_used_once(staked: Chain) -> None:
    slash(staked, 300, staked.accounts[5:7])
    with reverts("evidence already used"):
        slash(staked, 300, staked.accounts[5:8])
    with reverts("evidence already used"):  # not even for another amount
        slash(staked, 100, staked.accounts[5:7])
    slash(staked, 100, staked.accounts[6:8], evidence=bytes.fromhex("cd" * 32))
    assert staked.stake.functions.stake_of(staked.accounts[1]).call() == 600


def test_slash_takes_locked_stake_first_then_unbonding(staked: Chain) -> None:
    chain, provider = staked, staked.accounts[1]
    chain.tx(provider, chain.stake.functions.begin_unbond(400))  # locked 600, unbonding 400
    supply = chain.supply()
    receipt = slash(chain, 800, chain.accounts[5:7])
    assert chain.stake.functions.stake_of(provider).call() == 0
    assert chain.stake.functions.unbonding(provider).call() == 200
    assert supply - chain.supply() == 800
    (event,) = events(chain.stake.events.Slashed, receipt)
    assert event["args"]["amount"] == 800


def test_slash_of_more_than_the_stake_takes_all_of_it(staked: Chain) -> None:
    chain, provider = staked, staked.accounts[1]
    chain.tx(provider, chain.stake.functions.begin_unbond(400))
    supply = chain.supply()
    receipt = slash(chain, 10**12, chain.accounts[5:8])
    assert chain.stake.functions.stake_of(provider).call() == 0
    assert chain.stake.functions.unbonding(provider).call() == 0
    assert supply - chain.supply() == 1_000
    (event,) = events(chain.stake.events.Slashed, receipt)
    assert event["args"]["amount"] == 1_000
    assert chain.stake.functions.total_stake().call() == 3 * VALIDATOR_MIN_STAKE


def test_slash_lowers_stake_at_from_its_block_on(staked: Chain) -> None:
    chain, provider = staked, staked.accounts[1]
    before = chain.block()
    slash(chain, 250, chain.accounts[5:7])
    assert chain.stake.functions.stake_at(provider, before).call() == 1_000
    assert chain.stake.functions.stake_at(provider, chain.block()).call() == 750
    assert chain.stake.functions.total_stake_at(before).call() == 1_000 + 3 * VALIDATOR_MIN_STAKE


def test_the_zero_address_has_no_stake_and_cannot_be_slashed(staked: Chain) -> None:
    chain, zero = staked, "0x" + "00" * 20
    assert chain.stake.functions.stake_of(zero).call() == 0
    assert chain.stake.functions.stake_at(zero, chain.block()).call() == 0
    sigs = chain.slash_sigs(zero, 1_000, EVIDENCE, chain.accounts[5:8])
    with reverts("provider is the zero address"):
        chain.tx(chain.accounts[4], chain.stake.functions.slash(zero, 1_000, EVIDENCE, sigs))
    assert chain.stake.functions.total_stake().call() == 1_000 + 3 * VALIDATOR_MIN_STAKE
