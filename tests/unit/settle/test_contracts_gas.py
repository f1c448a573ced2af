"""Gas of the common calls stays near what docs/settlement.md reports ("Gas").

Run with -s to print the table. Each ceiling is the measured value plus ~5%: a
change that costs more should update the doc and the number here, on purpose.
"""

from __future__ import annotations

from tests.unit.settle.conftest import VALIDATOR_MIN_STAKE, Chain

CEILINGS = {
    "deposit (new channel)": 91_000,  # measured 85_829
    "deposit (existing channel)": 45_000,  # measured 42_029
    "redeem (first)": 150_000,  # measured 142_493
    "redeem (later)": 78_000,  # measured 74_069
    "redeem_many of 10 (first)": 428_000,  # measured 407_594
    "lock (first)": 164_000,  # measured 155_340
    "lock (again, later block)": 105_000,  # measured 99_572
    "begin_unbond": 140_000,  # measured 133_393
    "slash, 2 signatures": 159_000,  # measured 150_822
    "slash, 3 signatures": 170_000,  # measured 161_122
    "distribute_pool": 109_000,  # measured 103_434
    "claim": 92_000,  # measured 86_773
}


def measure(chain: Chain) -> dict[str, int]:
    gas: dict[str, int] = {}
    provider, consumer = chain.accounts[1], chain.accounts[2]
    chain.give(consumer, 20_000_000)
    chain.approve(consumer, chain.channels.address, 20_000_000)
    deposit = chain.channels.functions.deposit
    gas["deposit (new channel)"] = chain.tx(consumer, deposit(provider, 10_000_000))["gasUsed"]
    gas["deposit (existing channel)"] = chain.tx(consumer, deposit(provider, 10_000_000))[
        "gasUsed"]
    gas["redeem (first)"] = chain.redeem(provider, consumer, 1_000_000)["gasUsed"]
    gas["redeem (later)"] = chain.redeem(provider, consumer, 2_000_000)["gasUsed"]

    consumers = chain.accounts[10:20]
    for c in consumers:
        chain.deposit(c, provider, 1_000_000)
    sigs = [chain.voucher(c, provider, 500_000) for c in consumers]
    call = chain.channels.functions.redeem_many(consumers, [500_000] * 10, sigs)
    gas["redeem_many of 10 (first)"] = chain.tx(provider, call)["gasUsed"]

    staker = chain.accounts[3]
    chain.give(staker, 2 * VALIDATOR_MIN_STAKE)
    chain.approve(staker, chain.stake.address, 2 * VALIDATOR_MIN_STAKE)
    lock = chain.stake.functions.lock
    gas["lock (first)"] = chain.tx(staker, lock(VALIDATOR_MIN_STAKE))["gasUsed"]
    gas["lock (again, later block)"] = chain.tx(staker, lock(VALIDATOR_MIN_STAKE))["gasUsed"]
    gas["begin_unbond"] = chain.tx(staker, chain.stake.functions.begin_unbond(1))["gasUsed"]

    for v in chain.accounts[5:8]:
        chain.lock(v, VALIDATOR_MIN_STAKE)
    chain.lock(provider, 1_000_000)
    for n, evidence in ((2, b"\x02" * 32), (3, b"\x03" * 32)):
        sigs = chain.slash_sigs(provider, 1_000, evidence, chain.accounts[5:5 + n])
        call = chain.stake.functions.slash(provider, 1_000, evidence, sigs)
        gas[f"slash, {n} signatures"] = chain.tx(chain.accounts[4], call)["gasUsed"]

    chain.advance(chain.channels.functions.epoch_s().call())
    call = chain.channels.functions.distribute_pool()
    gas["distribute_pool"] = chain.tx(chain.accounts[4], call)["gasUsed"]
    gas["claim"] = chain.tx(staker, chain.stake.functions.claim())["gasUsed"]
    return gas


def test_gas_stays_within_the_documented_ceilings(chain: Chain) -> None:
    gas = measure(chain)
    for name, used in gas.items():
        print(f"{name:32} {used:>9,}")
    assert set(gas) == set(CEILINGS)
    over = {name: used for name, used in gas.items() if used > CEILINGS[name]}
    assert not over, f"over the ceilings: {over}"
