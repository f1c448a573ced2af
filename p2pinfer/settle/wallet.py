"""What `p2pinfer wallet` does, apart from parsing and printing: find the chain (flags,
environment or a deployment file), derive the account from the node key, name a
provider, pick between starting and executing a reclaim, and describe balances."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from p2pinfer import identity
from p2pinfer.config import resolve_home
from p2pinfer.errors import ChainRevertedError, UsageError
from p2pinfer.settle.account import ChainAccount, account_of
from p2pinfer.settle.chain import Balances, ChainClient, checksum
from p2pinfer.settle.ports import TxOutcome
from p2pinfer.settle.units import units_to_credits, wei_to_ether

MISSING_CHAIN = ("no chain given: pass --chain-rpc URL and --chain-contract ADDRESS (or set "
                 "$P2PINFER_CHAIN_RPC and $P2PINFER_CHAIN_CONTRACT), or --deployment FILE "
                 "written by `p2pinfer chain serve`")


@dataclass(frozen=True)
class ChainTarget:
    """Where the settlement contracts live."""

    rpc: str
    channels: str
    chain_id: int | None = None  # known from a deployment file: checked on connect


def read_deployment(path: Path) -> dict[str, Any]:
    """The JSON a `p2pinfer chain serve` (or a deployment) wrote; UsageError if unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the deployment file {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("channels"), str):
        raise UsageError(f"{path} is not a deployment file (no \"channels\" address)")
    return data


def resolve_target(rpc: str | None, contract: str | None,
                   deployment: Path | None) -> ChainTarget:
    """Flags (or their environment variables) first, then the deployment file."""
    chain_id: int | None = None
    if deployment is not None:
        data = read_deployment(deployment)
        rpc = rpc or (str(data["rpc"]) if data.get("rpc") else None)
        contract = contract or str(data["channels"])
        raw_id = data.get("chain_id")
        chain_id = int(raw_id) if isinstance(raw_id, int) else None
    if not rpc or not contract:
        raise UsageError(MISSING_CHAIN)
    return ChainTarget(rpc=rpc, channels=str(checksum(contract, "contract address")),
                       chain_id=chain_id)


def load_account(key: Path | None, home: Path | None) -> ChainAccount:
    """The chain account of the node key file `key`, else of the key in `home` (default:
    $P2PINFER_HOME, else the platform data dir)."""
    node = identity.load_file(key) if key is not None else identity.load(resolve_home(home))
    return account_of(node)


def connect(target: ChainTarget, account: ChainAccount) -> ChainClient:
    return ChainClient.connect(target.rpc, target.channels, account,
                               expected_chain_id=target.chain_id)


def resolve_provider(text: str) -> str:
    """A provider's chain address from what the user typed: a 0x address. A PeerID
    cannot be turned into an address without its binding, so it is refused with a hint."""
    if text.startswith(("0x", "0X")):
        return str(checksum(text, "address"))
    raise UsageError(f"{text!r} is not a chain address: give the provider's chain address "
                     "(shown by its `p2pinfer wallet`)")


def withdraw(client: ChainClient, provider: str) -> tuple[str, TxOutcome]:
    """Start the channel's reclaim, or execute it when one is pending; which one, and its
    transaction. A reclaim that is not due yet fails with ChainRevertedError."""
    state = client.channel(client.address, provider)
    if state.reclaim_at == 0:
        return "start_reclaim", client.start_reclaim(provider)
    try:
        return "reclaim", client.reclaim(provider)
    except ChainRevertedError as exc:
        wait_s = state.reclaim_at - client.chain_time()
        if wait_s > 0:
            raise ChainRevertedError(f"{exc} (due in {wait_s} s)") from None
        raise


def outcome_json(outcome: TxOutcome) -> dict[str, Any]:
    return {"tx": outcome.tx_hash, "block": outcome.block, "gas_used": outcome.gas_used}


def _amount(units: int) -> dict[str, Any]:
    return {"units": units, "credits": units_to_credits(units)}


def balances_json(client: ChainClient, b: Balances) -> dict[str, Any]:
    """Balances as the `--json` output: amounts as {"units": int, "credits": "1.500000"}."""
    return {
        "address": b.address, "chain_id": client.chain_id, "rpc": client.rpc,
        "channels_contract": client.channels_address,
        "ether": {"wei": b.ether_wei, "ether": wei_to_ether(b.ether_wei)},
        "credits": _amount(b.credits), "locked_stake": _amount(b.locked_stake),
        "unbonding": _amount(b.unbonding), "release_at": b.release_at,
        "channels": [{
            "provider": c.provider, "deposit": _amount(c.state.deposit),
            "redeemed": _amount(c.state.redeemed), "unredeemed": _amount(c.state.unredeemed),
            "reclaim_at": c.state.reclaim_at,
        } for c in b.channels],
    }
