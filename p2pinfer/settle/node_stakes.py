"""Stake on chain, wired into a running node (docs/settlement.md, "Node side").

`start_stakes(chain, ...)` is the one call `node/run.py` makes: with no chain (settlement
off) it returns None and the node behaves as before; with one it starts the
`StakeBook` reader (providers' and validators' stake), the `Slasher` (votes on
`SLASH_TOPIC`, submissions) and the governance `ChainWeights`, and says what the
node's own advert carries (`with_payee`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import SLASH_TOPIC, Advert
from p2pinfer.settle.chain_weight import ChainWeights, OwnAccount
from p2pinfer.settle.ports import ChainPort
from p2pinfer.settle.slash_votes import SlashParams
from p2pinfer.settle.slasher import Slasher
from p2pinfer.settle.stakes import PeerClaim, StakeBook

if TYPE_CHECKING:
    from p2pinfer.market.ledger import Ledger
    from p2pinfer.net.gossip import GossipMessage
    from p2pinfer.net.nethost import NetHost

#: Used when the chain client cannot say (docs/settlement.md defaults for testnets).
DEFAULT_SLASH_THRESHOLD = 2
DEFAULT_VALIDATOR_MIN_STAKE = 10_000 * 1_000_000


@dataclass(frozen=True)
class StakeServices:
    """What a node with settlement on runs for stake."""

    book: StakeBook
    slasher: Slasher
    governance: ChainWeights
    own: OwnAccount  # this node's account and binding, which its adverts carry


def _read(chain: Any, name: str) -> Any:
    """`chain.name` or `chain.name()`; None when the client does not offer it."""
    value = getattr(chain, name, None)
    return value() if callable(value) else value


def slash_params_of(chain: ChainPort) -> SlashParams:
    """The Stake contract's address, threshold and validator minimum, as far as the chain
    client exposes them (`stake_address`, `slash_threshold`, `validator_min_stake`, or
    `settle.chain.ChainClient`'s web3 `stake` contract), else the testnet defaults.
    Blocking (may call the chain)."""
    stake = _read(chain, "stake_address")
    threshold = _read(chain, "slash_threshold")
    least = _read(chain, "validator_min_stake")
    contract: Any = getattr(chain, "stake", None)
    if stake is None and hasattr(contract, "functions"):  # ChainClient: its web3 contract
        stake = str(contract.address)
        threshold = contract.functions.slash_threshold().call()
        least = contract.functions.validator_min_stake().call()
    if not isinstance(stake, str):
        raise TypeError("the chain client must expose the Stake contract's address "
                        "(`stake_address`): slash signatures are over it")
    return SlashParams(stake, chain.chain_id,
                       int(threshold) if threshold is not None else DEFAULT_SLASH_THRESHOLD,
                       int(least) if least is not None else DEFAULT_VALIDATOR_MIN_STAKE)


async def start_stakes(
    chain: ChainPort | None, identity: NodeIdentity, net: NetHost, nursery: trio.Nursery, *,
    ledger: Ledger | None, clock_ms: Callable[[], int],
) -> StakeServices | None:
    """Start the stake services in `nursery` (None, and nothing started, without a chain)."""
    if chain is None:
        return None
    params = await trio.to_thread.run_sync(slash_params_of, chain)
    book = StakeBook(chain)
    slasher = Slasher(identity, chain, book, params, publish=net.publish, ledger=ledger,
                      clock_ms=clock_ms)

    def admit(message: GossipMessage) -> bool:
        return slasher.take(message.data) == ""  # only votes this node keeps are relayed

    await net.subscribe(SLASH_TOPIC, validator=admit)
    watch_stakes(book, net, nursery)
    nursery.start_soon(slasher.run)
    own = OwnAccount.of(identity)
    return StakeServices(book, slasher, ChainWeights(chain, own), own)


def watch_stakes(book: StakeBook, net: NetHost, nursery: trio.Nursery) -> StakeBook:
    """Run `book` in `nursery`, reading the stake of every provider `net` has an advert of
    (a node's stake services, and a consumer session's `--min-stake` check)."""
    def providers() -> list[PeerClaim]:
        adverts = (net.catalog.advert_of(p) for p in net.catalog.peer_ids())
        return [(a.signer, a.advert.payee, a.advert.payee_binding) for a in adverts if a]

    nursery.start_soon(partial(book.run, watch=providers))
    return book


def with_payee(build: Callable[[], Advert], stakes: StakeServices | None) -> Callable[[], Advert]:
    """`build`, with this node's bound account as the advert's payee when settlement is on."""
    if stakes is None:
        return build
    own = stakes.own
    return lambda: replace(build(), payee=own.wire, payee_binding=own.binding)
