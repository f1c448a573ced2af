"""Credit.vy: the ERC-20, its burn, and its fixed supply."""

from __future__ import annotations

import pytest

from p2pinfer.settle.artifacts import load_artifacts
from tests.unit.settle.conftest import Chain, TransactionFailed, events, reverts


def test_transfer_and_transfer_from_move_exact_amounts(chain: Chain) -> None:
    alice, bob, carol = chain.accounts[1], chain.accounts[2], chain.accounts[3]
    chain.give(alice, 1_000)
    receipt = chain.tx(alice, chain.credit.functions.transfer(bob, 300))
    (event,) = events(chain.credit.events.Transfer, receipt)
    assert dict(event["args"]) == {"sender": alice, "receiver": bob, "value": 300}
    chain.approve(alice, carol, 500)
    chain.tx(carol, chain.credit.functions.transferFrom(alice, carol, 200))
    assert chain.credit.functions.allowance(alice, carol).call() == 300
    assert [chain.balance(a) for a in (alice, bob, carol)] == [500, 300, 200]
    with pytest.raises(TransactionFailed):  # over the allowance
        chain.tx(carol, chain.credit.functions.transferFrom(alice, carol, 301))
    with pytest.raises(TransactionFailed):  # over the balance
        chain.tx(alice, chain.credit.functions.transfer(bob, 501))
    with reverts("transfer to the zero address"):
        chain.tx(alice, chain.credit.functions.transfer("0x" + "00" * 20, 1))


def test_unlimited_allowance_is_not_spent(chain: Chain) -> None:
    alice, carol = chain.accounts[1], chain.accounts[3]
    chain.give(alice, 1_000)
    chain.approve(alice, carol, 2**256 - 1)
    chain.tx(carol, chain.credit.functions.transferFrom(alice, carol, 400))
    assert chain.credit.functions.allowance(alice, carol).call() == 2**256 - 1


def test_burn_lowers_balance_and_total_supply(chain: Chain) -> None:
    alice = chain.accounts[1]
    chain.give(alice, 1_000)
    supply = chain.supply()
    receipt = chain.tx(alice, chain.credit.functions.burn(400))
    assert chain.balance(alice) == 600
    assert chain.supply() == supply - 400
    (event,) = events(chain.credit.events.Transfer, receipt)
    assert dict(event["args"]) == {"sender": alice, "receiver": "0x" + "00" * 20, "value": 400}
    with pytest.raises(TransactionFailed):
        chain.tx(alice, chain.credit.functions.burn(601))


def test_initial_supply_over_max_supply_is_refused(chain: Chain) -> None:
    art = load_artifacts()["Credit"]
    factory = chain.w3.eth.contract(abi=list(art.abi), bytecode=art.bytecode)
    with reverts("initial supply over max supply"):  # raised by the gas estimate
        factory.constructor(11, 10).transact({"from": chain.deployer})


def test_nothing_can_mint_after_deployment(chain: Chain) -> None:
    functions = {e["name"] for e in load_artifacts()["Credit"].abi if e["type"] == "function"}
    assert functions == {
        "name", "symbol", "decimals", "totalSupply", "max_supply", "balanceOf", "allowance",
        "transfer", "transferFrom", "approve", "burn",
    }
