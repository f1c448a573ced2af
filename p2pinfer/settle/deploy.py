"""Deploy the three settlement contracts, from an unlocked node account or a local key.

`deploy_all` deploys Credit, then Stake, then Channels, and returns their
addresses as a `Deployment`. The deployer is either an address the node signs
for (eth-tester's `w3.eth.accounts[0]`) or an eth_account `LocalAccount`
whose key signs here (`p2pinfer chain serve`, real chains).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, cast

from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.contract.contract import ContractConstructor, ContractFunction
from web3.types import TxParams, TxReceipt

from p2pinfer.errors import ChainRevertedError
from p2pinfer.market.pricing import MICRO_PER_CREDIT
from p2pinfer.market.split import (
    BASIS_POINTS,
    BURN,
    PROVIDERS,
    STAKERS,
    TREASURY,
    VALIDATORS,
    preset_named,
)
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE
from p2pinfer.settle.account import ChainAccount
from p2pinfer.settle.artifacts import load_artifacts

#: The founding document's supply: 1,000,000,000 credits at most, 100,000,000 issued.
DEFAULT_MAX_SUPPLY = 1_000_000_000 * MICRO_PER_CREDIT
DEFAULT_INITIAL_SUPPLY = 100_000_000 * MICRO_PER_CREDIT
DEFAULT_UNBONDING_S = 7 * 24 * 3600
DEFAULT_RECLAIM_TIMEOUT_S = 24 * 3600
DEFAULT_EPOCH_S = 24 * 3600

Deployer = str | LocalAccount


@dataclass(frozen=True)
class Deployment:
    """Where the contracts live: the chain id and the three checksummed addresses."""

    chain_id: int
    credit: str
    stake: str
    channels: str

    def to_json(self) -> str:
        """This deployment as a JSON object (sorted keys)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Deployment:
        """A deployment from JSON; keys beyond the four (a chain file's rpc, faucet) are ignored."""
        data: dict[str, Any] = json.loads(text)
        return cls(
            chain_id=int(data["chain_id"]),
            credit=Web3.to_checksum_address(data["credit"]),
            stake=Web3.to_checksum_address(data["stake"]),
            channels=Web3.to_checksum_address(data["channels"]),
        )


def split_bps_of(preset: str) -> tuple[int, int, int, int]:
    """(provider, pool, burn, treasury) basis points of a p2pinfer.market.split preset.

    The chain has one pool for validators and stakers alike (paid to stakers), so it
    gets both shares. UsageError for an unknown preset name.
    """
    split = preset_named(preset)
    bps = (
        split.share(PROVIDERS),
        split.share(VALIDATORS) + split.share(STAKERS),
        split.share(BURN),
        split.share(TREASURY),
    )
    assert sum(bps) == BASIS_POINTS  # make_preset validated the sum
    return bps


def address_of(sender: Deployer) -> str:
    """The checksummed address of an unlocked account or a local key."""
    if isinstance(sender, str):
        return Web3.to_checksum_address(sender)
    return Web3.to_checksum_address(sender.address)


def send(w3: Web3, sender: Deployer, call: ContractFunction | ContractConstructor) -> TxReceipt:
    """Sends `call` as a transaction from `sender` and waits for its receipt.

    An unlocked address is sent through the node; a local key signs here. Raises
    ChainRevertedError if the transaction was mined but failed.
    """
    params: TxParams = {"from": address_of(sender)}
    if isinstance(sender, str):
        tx_hash = w3.eth.send_transaction(call.build_transaction(params))
    else:
        params["nonce"] = w3.eth.get_transaction_count(sender.address, "pending")
        tx = call.build_transaction(params)
        signed = sender.sign_transaction(cast(dict[str, Any], tx))
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
    if receipt["status"] != 1:
        raise ChainRevertedError(f"transaction {tx_hash.hex()} failed")
    return receipt


def _deploy(w3: Web3, sender: Deployer, name: str, *args: Any) -> str:
    artifact = load_artifacts()[name]
    factory = w3.eth.contract(abi=list(artifact.abi), bytecode=artifact.bytecode)
    receipt = send(w3, sender, factory.constructor(*args))
    address = receipt["contractAddress"]
    if address is None:
        raise ChainRevertedError(f"deploying {name} created no contract")
    return Web3.to_checksum_address(address)


def deploy_all(
    w3: Web3,
    deployer: Deployer,
    *,
    preset: str = "seed",
    unbonding_s: int = DEFAULT_UNBONDING_S,
    slash_threshold: int = 2,
    validator_min_stake: int = DEFAULT_MINIMUM_STAKE,
    reclaim_timeout_s: int = DEFAULT_RECLAIM_TIMEOUT_S,
    epoch_s: int = DEFAULT_EPOCH_S,
    treasury: str | None = None,
    initial_supply: int = DEFAULT_INITIAL_SUPPLY,
    max_supply: int = DEFAULT_MAX_SUPPLY,
) -> Deployment:
    """Deploys Credit (the initial supply minted to `deployer`), Stake and Channels.

    `preset` names a split of p2pinfer.market.split (seed, bme, render); the treasury
    defaults to the deployer. The contracts have no owner: these values are final.
    """
    split = split_bps_of(preset)
    credit = _deploy(w3, deployer, "Credit", initial_supply, max_supply)
    stake = _deploy(w3, deployer, "Stake", credit, unbonding_s, slash_threshold,
                    validator_min_stake)
    channels = _deploy(
        w3, deployer, "Channels", credit, stake,
        Web3.to_checksum_address(treasury) if treasury else address_of(deployer),
        list(split), reclaim_timeout_s, epoch_s,
    )
    return Deployment(chain_id=w3.eth.chain_id, credit=credit, stake=stake, channels=channels)


def deploy_to(rpc: str, account: ChainAccount, **params: Any) -> Deployment:
    """`deploy_all` on the chain at `rpc` from `account` (a node's derived account: it
    signs locally and pays the gas); chain errors mapped as everywhere
    (`settle.transact.chain_errors`)."""
    from eth_account import Account
    from web3.providers.rpc import HTTPProvider

    from p2pinfer.settle.transact import chain_errors

    w3 = Web3(HTTPProvider(rpc, request_kwargs={"timeout": 30}))
    with chain_errors(rpc, "deploying the contracts"):
        return deploy_all(w3, Account.from_key(account.private_key), **params)
