"""A short-lived consumer on the network, for `ask`, `models` and `peers`.

`consumer_session` starts a libp2p host with the home's key, ledger and
reputation table, joins through the bootstrap peers and yields a `JobClient`;
everything stops when the block ends. With a chain (`--chain-rpc`/`--chain-contract`,
or the chain of a `testnet up --chain` directory), the client pays through the home
account's channels and reads providers' stake from the chain, as a node's does
(docs/settlement.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import trio

from p2pinfer import identity as identity_store
from p2pinfer.errors import JobTimeoutError, PeerUnreachableError, UsageError
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import ClientConfig, JobOutcome, TextDelta
from p2pinfer.market.ledger import Ledger, ledger_path
from p2pinfer.net.adverts import VerifiedAdvert
from p2pinfer.net.config import NetConfig, parse_peer_addr
from p2pinfer.net.host import run_host
from p2pinfer.net.relay_rules import RelayClientConfig, is_circuit_addr
from p2pinfer.node.run import grant_faucet
from p2pinfer.protocol import ChatTurn, JobParams, Receipt
from p2pinfer.protocol.codec import decode_as
from p2pinfer.settle.account import account_of
from p2pinfer.settle.node_stakes import watch_stakes
from p2pinfer.settle.payer import PayerBook
from p2pinfer.settle.stakes import StakeBook
from p2pinfer.settle.wiring import reach_chain
from p2pinfer.testnet import processes as testnet
from p2pinfer.testnet.chain import CONSUMER_HOME
from p2pinfer.testnet.processes import TESTNET_FAUCET
from p2pinfer.verify.reputation_store import ReputationBook, reputation_path


@dataclass(frozen=True)
class SessionConfig:
    home: Path
    bootstrap: tuple[str, ...]
    listen: tuple[str, ...] = ("/ip4/127.0.0.1/tcp/0",)
    client: ClientConfig = field(default_factory=ClientConfig)
    faucet: int = 0
    connect_timeout_s: float = 15.0
    chain_rpc: str | None = None  # settlement on: both set (settle.wiring.ChainFlags)
    chain_contract: str | None = None
    # After a relayed dial, try DCUtR for a direct connection (`ask --dcutr`); it needs a
    # listen address others can reach (through a NAT: `--listen /ip4/0.0.0.0/tcp/PORT`).
    dcutr: bool = False


def session_config(
    home: Path | None,
    bootstrap: Sequence[str],
    testnet_dir: Path | None,
    *,
    client: ClientConfig = ClientConfig(),
    faucet: int = 0,
    chain_rpc: str | None = None,
    chain_contract: str | None = None,
    listen: Sequence[str] = (),
    dcutr: bool = False,
) -> SessionConfig:
    """Where a consumer command runs from: with `--testnet DIR`, its live nodes are the
    bootstrap peers, `DIR/consumer` the default home (granted testnet credit once) and
    its chain, if it has one, the chain to pay on unless one is given."""
    if (chain_rpc is None) != (chain_contract is None):
        raise UsageError("--chain-rpc and --chain-contract go together (or neither: no chain)")
    peers = list(bootstrap)
    if testnet_dir is not None:
        peers += [n.listen_addrs[0] for n in testnet.status(testnet_dir)
                  if n.alive and n.listen_addrs]
        if not peers:
            raise UsageError(f"the testnet in {testnet_dir} has no live node")
        if home is None:
            home = testnet_dir / CONSUMER_HOME
            faucet = faucet or TESTNET_FAUCET
        spec = testnet.chain_of(testnet_dir)
        if chain_rpc is None and spec is not None:
            chain_rpc, chain_contract = spec.rpc, spec.channels
    if not peers:
        raise UsageError("no peer to join: pass --bootstrap /ip4/.../tcp/N/p2p/<PeerID> "
                         "or --testnet DIR")
    for addr in peers:
        parse_peer_addr(addr)
    from p2pinfer.config import resolve_home

    return SessionConfig(resolve_home(home), tuple(peers),
                         listen=tuple(listen) or SessionConfig.listen, client=client,
                         faucet=faucet, chain_rpc=chain_rpc, chain_contract=chain_contract,
                         dcutr=dcutr)


@asynccontextmanager
async def consumer_session(config: SessionConfig) -> AsyncIterator[JobClient]:
    """A JobClient on a host of its own, connected to at least one bootstrap peer
    (PeerUnreachableError if none answers within connect_timeout_s)."""
    config.home.mkdir(parents=True, exist_ok=True)
    identity = identity_store.load_or_create(config.home)
    chain = await reach_chain(config, identity)  # settlement: exit 15 if unreachable
    with Ledger.open(ledger_path(config.home), identity) as ledger, \
            ReputationBook.open(reputation_path(config.home)) as reputation:
        grant_faucet(ledger, identity, config.faucet)
        payer = PayerBook(chain, account_of(identity), ledger) if chain else None
        net_config = NetConfig(identity, listen_addrs=config.listen, bootstrap=config.bootstrap,
                               relay_client=RelayClientConfig(dcutr=config.dcutr))
        async with run_host(net_config) as net, trio.open_nursery() as nursery:
            stakes = watch_stakes(StakeBook(chain), net, nursery) if chain else None
            wanted = {str(parse_peer_addr(a).peer_id.to_base58()) for a in config.bootstrap}
            with trio.move_on_after(config.connect_timeout_s):
                while not wanted & set(net.peers()):
                    await trio.sleep(0.02)
            if not wanted & set(net.peers()):
                raise PeerUnreachableError(
                    f"could not reach any bootstrap peer within {config.connect_timeout_s:g} s")
            try:
                yield JobClient(net, identity, ledger=ledger, reputation=reputation,
                                config=config.client, payer=payer, stakes=stakes)
            finally:
                nursery.cancel_scope.cancel()


@dataclass(frozen=True)
class AskRequest:
    model: str
    prompt: str
    system: str | None = None
    params: JobParams = field(default_factory=JobParams)
    timeout_s: float = 300.0


async def ask(
    client: JobClient, request: AskRequest, on_delta: Callable[[TextDelta], None]
) -> JobOutcome:
    """Run one chat job, calling `on_delta` as text arrives; JobTimeoutError after timeout_s."""
    turns = [ChatTurn("system", request.system)] if request.system else []
    turns.append(ChatTurn("user", request.prompt))
    try:
        with trio.fail_after(request.timeout_s):
            async with client.job(request.model, turns, request.params) as job:
                async for delta in job:
                    on_delta(delta)
    except trio.TooSlowError as exc:
        raise JobTimeoutError(f"no complete answer within {request.timeout_s:g} s") from exc
    assert job.outcome is not None
    return job.outcome


def voucher_of(client: JobClient, outcome: JobOutcome) -> dict[str, object] | None:
    """The voucher `outcome`'s receipt carried (settlement on): the cumulative owed to the
    provider's account, the signer (this home's account) and its signature; else None."""
    receipt = decode_as(outcome.receipt, Receipt).msg
    if client.payer is None or receipt.cumulative is None or receipt.voucher is None:
        return None
    return {"cumulative": receipt.cumulative, "amount": receipt.amount,
            "signer": client.payer.account.address,
            "channels_contract": client.payer.chain.channels_address,
            "chain_id": client.payer.chain.chain_id, "signature": "0x" + receipt.voucher.hex()}


@dataclass(frozen=True)
class ModelSummary:
    model: str
    providers: int
    best_price_per_1k: int
    best_generation_tps: float


@dataclass(frozen=True)
class PeerSummary:
    peer_id: str
    addrs: tuple[str, ...]
    models: tuple[str, ...]
    engine: str
    capacity: int
    stake: int
    rtt_ms: float | None
    # public: this session dialled it (or a dial-back reached it); private: a dial-back
    # it asked us for failed; unknown: neither (docs/network.md, "Reachability").
    reachability: str = "unknown"

    @property
    def relays(self) -> tuple[str, ...]:
        """PeerIDs of the relays its advert says it can be reached through."""
        return tuple(dict.fromkeys(relay_of(a) for a in self.addrs if is_circuit_addr(a)))


def relay_of(circuit: str) -> str:
    """The relay's PeerID in `.../p2p/<relay>/p2p-circuit/...`."""
    return circuit.split("/p2p-circuit")[0].rsplit("/p2p/", 1)[-1]


def summarize_models(adverts: Sequence[VerifiedAdvert]) -> list[ModelSummary]:
    """Per model: how many providers, the lowest price, the fastest measured generation."""
    by_model: dict[str, list[tuple[int, float]]] = {}
    for advert in adverts:
        for offer in advert.advert.models:
            by_model.setdefault(offer.name, []).append(
                (offer.price_per_1k, offer.generation_tps_milli / 1000))
    return [
        ModelSummary(name, len(offers), min(p for p, _ in offers), max(t for _, t in offers))
        for name, offers in sorted(by_model.items())
    ]


def summarize_peers(client: JobClient, adverts: Sequence[VerifiedAdvert]) -> list[PeerSummary]:
    """Every peer that answered with an advert, and every other connected peer."""
    reach = client.net.peer_reachability
    out = [
        PeerSummary(a.signer, a.advert.listen_addrs, tuple(m.name for m in a.advert.models),
                    a.advert.engine, a.advert.capacity, a.advert.stake, client.rtt_ms(a.signer),
                    reach(a.signer))
        for a in adverts
    ]
    seen = {p.peer_id for p in out}
    out += [PeerSummary(pid, (), (), "", 0, 0, client.rtt_ms(pid), reach(pid))
            for pid in client.net.peers() if pid not in seen]
    return sorted(out, key=lambda p: p.peer_id)
