"""Settlement in a running node: the chain client from `--chain-rpc`/`--chain-contract`,
and the parts that pay and get paid through channels (docs/settlement.md, "Node side").

`connect_chain` is the one place a node reaches its chain (shared with the stake
checks). `Settlement` holds the consumer's `PayerBook`, the provider's
`ChannelBook` and the `Redeemer`, and runs their background tasks.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from p2pinfer.errors import ChainError, ChainUnreachableError
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import Ledger
from p2pinfer.settle.account import ChainAccount, account_of, bind_signature
from p2pinfer.settle.channels import ChannelBook
from p2pinfer.settle.payer import PayerBook
from p2pinfer.settle.ports import ChainPort
from p2pinfer.settle.redeemer import Redeemer, RedeemPolicy

log = logging.getLogger(__name__)


class ChainFlags(Protocol):
    """The part of the node's config that names its chain (NodeConfig has it)."""

    @property
    def chain_rpc(self) -> str | None: ...

    @property
    def chain_contract(self) -> str | None: ...


def connect_chain(config: ChainFlags, identity: NodeIdentity) -> ChainPort:
    """The chain client for `config`'s RPC URL and Channels contract, as `identity`'s
    derived account (blocking: call it through trio.to_thread). ChainUnreachableError
    (exit 15) with one clear line when the chain cannot be reached or has no Channels
    contract there."""
    if config.chain_rpc is None or config.chain_contract is None:
        raise ChainUnreachableError("settlement needs --chain-rpc and --chain-contract")
    try:  # the chain client (web3) is imported only by nodes that settle on a chain
        chain_module: Any = importlib.import_module("p2pinfer.settle.chain")
    except ImportError as exc:
        raise ChainUnreachableError(f"cannot load the chain client: {exc}") from exc
    account = account_of(identity)
    try:
        port: ChainPort = chain_module.ChainClient.connect(
            config.chain_rpc, config.chain_contract, account)
        port.block_number()
    except ChainError:
        raise
    except Exception as exc:  # any transport failure while connecting is "unreachable"
        raise ChainUnreachableError(
            f"cannot reach the chain at {config.chain_rpc}: {exc}") from exc
    return port


@dataclass
class Settlement:
    """The node's settlement parts over one chain client."""

    chain: ChainPort
    account: ChainAccount
    payer: PayerBook
    channels: ChannelBook
    redeemer: Redeemer

    @classmethod
    def build(cls, chain: ChainPort, identity: NodeIdentity, ledger: Ledger | None,
              policy: RedeemPolicy = RedeemPolicy()) -> Settlement:
        """The parts for `identity` (its derived account must be `chain.address`)."""
        account = account_of(identity)
        if account.address.lower() != chain.address.lower():
            raise ChainError(f"the chain client signs as {chain.address}, not this node's "
                             f"account {account.address}")
        # Each part its own worker thread: a redemption waiting for its receipt must not
        # hold up a first channel read on a job's admission.
        channels = ChannelBook(chain, ledger, binding=bind_signature(account, identity.peer_id))
        return cls(chain, account, PayerBook(chain, account, ledger), channels,
                   Redeemer(channels, ledger, policy))

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run the channel refreshes and the redeemer until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.channels.run)
            await nursery.start(self.payer.run)
            nursery.start_soon(self.redeemer.run)
            task_status.started()


async def reach_chain(config: ChainFlags, identity: NodeIdentity) -> ChainPort | None:
    """The node's chain client when `config` names a chain (None: settlement off), reached
    in a worker thread; ChainUnreachableError (exit 15) if it cannot be. A node calls this
    first, before its engine loads."""
    if config.chain_rpc is None:
        return None
    chain = await trio.to_thread.run_sync(connect_chain, config, identity)
    log.info("settlement on chain=%s channels=%s account=%s", chain.chain_id,
             chain.channels_address, chain.address)
    return chain
