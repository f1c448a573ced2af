"""A py-evm chain with the settlement contracts deployed once per test session (per preset).

Each test runs between a snapshot and a revert, so tests are independent and the
chain is deployed once for all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from eth_tester import EthereumTester, PyEVMBackend
from eth_tester.exceptions import TransactionFailed
from web3 import EthereumTesterProvider, Web3
from web3.contract import Contract
from web3.logs import DISCARD

from p2pinfer.settle.artifacts import load_artifacts
from p2pinfer.settle.deploy import Deployment, deploy_all
from p2pinfer.settle.vouchers import sign_digest, slash_digest, voucher_digest

UNBONDING_S = 7 * 24 * 3600
RECLAIM_TIMEOUT_S = 24 * 3600
EPOCH_S = 24 * 3600
SLASH_THRESHOLD = 2
VALIDATOR_MIN_STAKE = 10_000_000
#: Accounts beyond eth-tester's ten, for batches of many consumers.
EXTRA_ACCOUNTS = 14
TX_GAS = 5_000_000

__all__ = ["TransactionFailed"]


def reverts(reason: str) -> pytest.RaisesExc[TransactionFailed]:
    """Expects a revert with exactly `reason` (eth-tester raises TransactionFailed)."""
    return pytest.raises(TransactionFailed, match=f"^execution reverted: {reason}$")


@dataclass
class Chain:
    """The chain, the three contracts, and every account's private key."""

    tester: EthereumTester
    w3: Web3
    deployment: Deployment
    credit: Contract
    stake: Contract
    channels: Contract
    keys: dict[str, bytes]

    @property
    def accounts(self) -> list[str]:
        return list(self.keys)

    @property
    def deployer(self) -> str:
        return self.accounts[0]

    def tx(self, sender: str, call: Any) -> Any:
        """Transacts `call` from `sender`; the receipt (TransactionFailed on a revert)."""
        # An explicit gas limit skips estimate_gas, which re-runs the call a dozen times;
        # a failed transaction is then mined, and replaying it as a call gives the reason.
        tx_hash = call.transact({"from": sender, "gas": TX_GAS})
        receipt = self.w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            if not hasattr(call, "call"):  # a constructor: estimate_gas gives the reason
                call.estimate_gas({"from": sender})
            call.call({"from": sender, "gas": TX_GAS})
            raise AssertionError("the transaction failed, but its replay did not")
        return receipt

    def balance(self, account: str) -> int:
        return int(self.credit.functions.balanceOf(account).call())

    def supply(self) -> int:
        return int(self.credit.functions.totalSupply().call())

    def give(self, account: str, amount: int) -> None:
        """Credit from the deployer's initial supply."""
        self.tx(self.deployer, self.credit.functions.transfer(account, amount))

    def approve(self, owner: str, spender: str, amount: int) -> None:
        self.tx(owner, self.credit.functions.approve(spender, amount))

    def deposit(self, consumer: str, provider: str, amount: int) -> Any:
        self.give(consumer, amount)
        self.approve(consumer, self.channels.address, amount)
        return self.tx(consumer, self.channels.functions.deposit(provider, amount))

    def voucher(self, consumer: str, provider: str, cumulative: int,
                signer: str | None = None) -> bytes:
        """`signer`'s (by default the consumer's) signature over the voucher digest."""
        digest = voucher_digest(self.channels.address, self.deployment.chain_id, consumer,
                                provider, cumulative)
        return sign_digest(self.keys[signer or consumer], digest)

    def redeem(self, provider: str, consumer: str, cumulative: int,
               signer: str | None = None) -> Any:
        sig = self.voucher(consumer, provider, cumulative, signer)
        return self.tx(provider, self.channels.functions.redeem(consumer, cumulative, sig))

    def lock(self, staker: str, amount: int) -> Any:
        self.give(staker, amount)
        self.approve(staker, self.stake.address, amount)
        return self.tx(staker, self.stake.functions.lock(amount))

    def slash_sigs(self, provider: str, amount: int, evidence: bytes,
                   signers: list[str]) -> list[bytes]:
        digest = slash_digest(self.stake.address, self.deployment.chain_id, provider, amount,
                              evidence)
        return [sign_digest(self.keys[s], digest) for s in signers]

    def now(self) -> int:
        return int(self.w3.eth.get_block("latest")["timestamp"])

    def block(self) -> int:
        return int(self.w3.eth.block_number)

    def advance(self, seconds: int) -> None:
        """Mines a block `seconds` after the latest one."""
        self.tester.time_travel(self.now() + seconds)
        self.tester.mine_blocks()


def events(event: Any, receipt: Any) -> list[Any]:
    """`event`'s logs in `receipt` (other contracts' logs skipped quietly)."""
    return list(event().process_receipt(receipt, errors=DISCARD))


def make_chain(preset: str) -> Chain:
    """A fresh py-evm chain with the contracts deployed for `preset`."""
    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    account_keys = [k.to_bytes() for k in tester.backend.account_keys]
    keys = dict(zip(w3.eth.accounts, account_keys, strict=True))
    for i in range(EXTRA_ACCOUNTS):
        key = (len(keys) + 1 + i).to_bytes(32, "big")
        address = Web3.to_checksum_address(tester.add_account("0x" + key.hex()))
        w3.eth.send_transaction({"from": w3.eth.accounts[0], "to": address, "value": 10**20})
        keys[address] = key
    deployer = w3.eth.accounts[0]
    deployment = deploy_all(
        w3, deployer, preset=preset, unbonding_s=UNBONDING_S, slash_threshold=SLASH_THRESHOLD,
        validator_min_stake=VALIDATOR_MIN_STAKE, reclaim_timeout_s=RECLAIM_TIMEOUT_S,
        epoch_s=EPOCH_S, treasury=w3.eth.accounts[9],
    )
    artifacts = load_artifacts()

    def contract(name: str, address: str) -> Contract:
        return w3.eth.contract(address=address, abi=list(artifacts[name].abi))

    return Chain(
        tester, w3, deployment, contract("Credit", deployment.credit),
        contract("Stake", deployment.stake), contract("Channels", deployment.channels), keys,
    )


@pytest.fixture(scope="session")
def seed_chain() -> Chain:
    return make_chain("seed")


@pytest.fixture(scope="session")
def bme_chain() -> Chain:
    return make_chain("bme")


def _isolated(chain: Chain) -> Iterator[Chain]:
    snapshot = chain.tester.take_snapshot()
    try:
        yield chain
    finally:
        chain.tester.revert_to_snapshot(snapshot)


@pytest.fixture
def chain(seed_chain: Chain) -> Iterator[Chain]:
    """The seed-preset chain, reverted after the test."""
    yield from _isolated(seed_chain)


@pytest.fixture
def bme(bme_chain: Chain) -> Iterator[Chain]:
    """The bme-preset chain, reverted after the test."""
    yield from _isolated(bme_chain)
