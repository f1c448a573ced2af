"""deploy_all from an unlocked account or a local key, and Deployment's JSON form."""

from __future__ import annotations

import pytest
from eth_account import Account
from eth_tester import EthereumTester, PyEVMBackend
from web3 import EthereumTesterProvider, Web3

from p2pinfer.errors import UsageError
from p2pinfer.settle.artifacts import load_artifacts
from p2pinfer.settle.deploy import (
    DEFAULT_INITIAL_SUPPLY,
    DEFAULT_MAX_SUPPLY,
    Deployment,
    deploy_all,
    split_bps_of,
)


def test_presets_keep_the_market_split_names() -> None:
    assert split_bps_of("seed") == (6000, 1500, 1500, 1000)
    assert split_bps_of("bme") == (2500, 1000, 5000, 1500)
    assert split_bps_of("render") == (0, 0, 9500, 500)
    with pytest.raises(UsageError, match="unknown split preset"):
        split_bps_of("nope")


def test_deployment_round_trips_through_json_and_ignores_extra_keys() -> None:
    d = Deployment(1, "0x" + "11" * 20, "0x" + "22" * 20, "0x" + "33" * 20)
    assert Deployment.from_json(d.to_json()) == d
    assert Deployment.from_json('{"rpc": "http://x", "faucet": "0x0", ' + d.to_json()[1:]) == d


def test_deploy_from_a_local_key_mints_the_founding_supply_and_wires_the_contracts() -> None:
    w3 = Web3(EthereumTesterProvider(EthereumTester(PyEVMBackend())))
    deployer = Account.from_key((1234).to_bytes(32, "big"))
    w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": deployer.address, "value": 10**19})
    d = deploy_all(w3, deployer, preset="bme", treasury=w3.eth.accounts[3])
    art = load_artifacts()
    credit = w3.eth.contract(address=d.credit, abi=list(art["Credit"].abi))
    channels = w3.eth.contract(address=d.channels, abi=list(art["Channels"].abi))
    stake = w3.eth.contract(address=d.stake, abi=list(art["Stake"].abi))
    assert d.chain_id == w3.eth.chain_id
    assert credit.functions.balanceOf(deployer.address).call() == DEFAULT_INITIAL_SUPPLY
    assert credit.functions.totalSupply().call() == DEFAULT_INITIAL_SUPPLY == 10**14
    assert credit.functions.max_supply().call() == DEFAULT_MAX_SUPPLY == 10**15
    assert (credit.functions.name().call(), credit.functions.symbol().call()) == (
        "p2pinfer credit", "P2PC")
    assert credit.functions.decimals().call() == 6
    assert [channels.functions.split_bps(i).call() for i in range(4)] == [2500, 1000, 5000, 1500]
    assert channels.functions.treasury().call() == w3.eth.accounts[3]
    assert channels.functions.stake().call() == d.stake
    assert stake.functions.token().call() == d.credit
    assert stake.functions.slash_threshold().call() == 2
    assert stake.functions.validator_min_stake().call() == 10_000 * 10**6
