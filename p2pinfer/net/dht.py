"""Kademlia provider records: "peer P serves model M".

The key of a model is sha256(`p2pinfer/model/<name>`), handed to py-libp2p as
the hex of the sha256 *multihash* (`1220` + digest). py-libp2p turns a key
string into bytes by trying a CID, then hex, then UTF-8; the multihash form
is what a CID-aware peer (go/rust libp2p) would also use, and a unit test pins
that it maps to exactly `0x12 0x20 || digest`.

Two py-libp2p behaviours shape this module (see docs/network.md):
- `KadDHT.provide` only stores locally when it knows no peers, so records are
  re-provided after every new bootstrap connection and on a timer.
- `KadDHT.find_providers` answers from the local store alone as soon as it
  holds any record for the key (our own, or cached from an earlier lookup),
  so it would never see a provider that joined later. `find_providers` here
  always also asks the closest peers on the network and merges the answers.
- It also kept every provider another peer's answer named in the node's own store,
  which the node then served to others as records it held, and cut the merged
  list at 20 by PeerID: one lying DHT node answering with PeerIDs made up to sort
  first hid every honest provider and spread its made-up records
  (tests/integration/test_net_dht_poisoning.py). Here an answer is used for this
  lookup only, and providers are ranked by how many sources (our own records, each
  peer that answered) name them, then by their place in each, ties in random order
  (`rank_providers`).
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

import multiaddr
import trio
from libp2p.kad_dht.utils import sort_peer_ids_by_distance
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from p2pinfer.net.compat.kad_server_peers import ServerPeersKadDHT
from p2pinfer.net.compat.provider_records import MAX_ADDRS
from p2pinfer.net.reachability import ReachabilityWatch

log = logging.getLogger(__name__)

P_P2P = 421  # multicodec of the /p2p/<PeerID> component

DEFAULT_PROVIDE_INTERVAL_S = 600.0
"""How often every provided model is announced again (records live 48 h in py-libp2p)."""

FEW_PEERS = 4
"""Below this many connections a node refreshes its routing table every
`NetConfig.few_peers_refresh_s` instead of every provide interval (`refresh_wait_s`)."""


class RefreshTimes(Protocol):
    """The two intervals `refresh_wait_s` reads (`NetConfig` has them)."""

    @property
    def provide_interval_s(self) -> float: ...

    @property
    def few_peers_refresh_s(self) -> float: ...


def refresh_wait_s(connected: int, times: RefreshTimes) -> float:
    """How long the routing table may go without a refresh (a walk that meets, and
    connects to, the peers our peers know). With few connections, often: a node that
    joined through its bootstrap before the network's other public nodes did would
    otherwise know only the bootstrap until the next provide interval, too few peers for
    an AutoNAT verdict (two must agree) and none to take a relay slot at."""
    if connected < FEW_PEERS:
        return min(times.provide_interval_s, times.few_peers_refresh_s)
    return times.provide_interval_s


class Refresher:
    """The DHT's two timers: the routing-table walk and the re-provide of every model.

    Both run after each new connection (`new_peer`: the walk meets the new peer's
    neighbours, the records reach it). Otherwise the walk comes every `refresh_wait_s`
    (often while the node has few connections) and the re-provide every provide
    interval only: a lonely node walks every 30 s without announcing its models as often.
    """

    def __init__(
        self, walk: Callable[[], Awaitable[None]], records: ProviderRecords,
        connected: Callable[[], int], times: RefreshTimes,
    ) -> None:
        self._walk, self._records, self._connected, self._times = walk, records, connected, times
        self._new_peers = trio.Event()

    def new_peer(self) -> None:
        """A connection to a peer we were not connected to: walk and announce again soon."""
        self._new_peers.set()

    async def run(self) -> None:
        """Walk and re-provide as the class says, until cancelled."""
        provided_at = trio.current_time()
        while True:
            with trio.move_on_after(refresh_wait_s(self._connected(), self._times)):
                await self._new_peers.wait()
            new_peer, self._new_peers = self._new_peers.is_set(), trio.Event()
            await self._walk()
            if new_peer or trio.current_time() - provided_at >= self._times.provide_interval_s:
                provided_at = trio.current_time()
                await self._records.reprovide_all()


LOOKUP_PEER_TIMEOUT_S = 5.0
"""Bound on asking one peer for providers."""

CLOSEST_LOOKUP_TIMEOUT_S = 10.0
"""Bound on the iterative closest-peer walk. py-libp2p checks its own 30 s cap only
between rounds; on a 50-node testnet of starved processes cold lookups took 30 s
and mostly found nothing (bench/scale.py)."""

NEAREST_CONNECTED_ASKED = 8
"""Connected peers nearest the key, asked at once, beside the walk."""

MAX_PER_ANSWER = 20
"""Providers taken from one source: our own records, or one peer's answer (Kademlia's k)."""

PATCHED = {  # a private method: find_providers alone answers from the local store
    "libp2p.kad_dht.provider_store:ProviderStore._get_providers_from_peer_with_closers":
        "082ac365ec4e6156",
    "libp2p.kad_dht.peer_routing:PeerRouting.find_closest_peers_network": "4780b8ae36ee8d08",
}
"""py-libp2p functions this module overrides or relies on, with their 0.8.1 source digest
(`net.compat._canary`; checked by tests/unit/net/compat/test_in_place.py)."""


def model_key_digest(model: str) -> bytes:
    """sha256 of `p2pinfer/model/<model>`: the DHT key of a model (DESIGN.md)."""
    return hashlib.sha256(f"p2pinfer/model/{model}".encode()).digest()


def model_key(model: str) -> str:
    """The key string given to py-libp2p: hex of the sha256 multihash of `model_key_digest`."""
    return "1220" + model_key_digest(model).hex()


def model_key_bytes(model: str) -> bytes:
    """The bytes py-libp2p stores the record under (the sha256 multihash)."""
    return b"\x12\x20" + model_key_digest(model)


@dataclass(frozen=True)
class ProviderRef:
    """A peer that announced a model in the DHT, and the addresses it gave."""

    peer_id: str
    addrs: tuple[str, ...]


class ProviderRecords:
    """Provide and look up model provider records on a running KadDHT."""

    def __init__(self, dht: ServerPeersKadDHT, local_peer_id: str) -> None:
        self._dht = dht
        self._local_peer_id = local_peer_id
        self._models: set[str] = set()

    async def follow_reachability(self, watch: ReachabilityWatch) -> None:
        """The DHT's mode as AutoNAT says (`follow_reachability`), until cancelled."""
        await follow_reachability(self._dht, watch)

    @property
    def dht_mode(self) -> str:
        """"server" while this node serves the DHT, "client" while it only queries it."""
        return "server" if self._dht.server else "client"

    @property
    def models(self) -> frozenset[str]:
        """Models this node announces."""
        return frozenset(self._models)

    async def provide(self, model: str) -> bool:
        """Announce that this node serves `model` (kept and re-announced until shutdown).

        Returns whether at least the local record was stored; reaching remote
        peers is best effort (retried by `reprovide_all`).
        """
        self._models.add(model)
        try:
            return bool(await self._dht.provide(model_key(model)))
        except Exception as exc:  # py-libp2p raises assorted errors on flaky peers
            log.warning("dht provide failed model=%s error=%r", model, exc)
            return False

    def retain(self, models: set[str]) -> None:
        """Stop re-announcing models not in `models` (their records expire on their own)."""
        self._models &= models

    async def reprovide_all(self) -> None:
        """Announce every provided model again (after new connections, and periodically)."""
        for model in sorted(self._models):
            await self.provide(model)

    async def find(self, model: str, *, count: int = 20) -> list[ProviderRef]:
        """Peers that announced `model`: local records plus the closest peers' answers,
        ranked by `rank_providers` (the local node left out: it cannot dial itself).
        The answers are used for this lookup only, not kept."""
        key = model_key_bytes(model)
        sources: list[list[PeerInfo]] = [list(self._dht.provider_store.get_providers(key))]
        asked: set[ID] = set()
        async with trio.open_nursery() as nursery:

            def ask(peer: ID) -> None:
                if peer not in asked:
                    asked.add(peer)
                    nursery.start_soon(self._ask_peer, peer, key, sources)

            # The connected peers nearest the key answer at once while the walk goes
            # on, so a walk that stalls (slow or starved peers) still finds what
            # our neighbours hold.
            for peer in self._nearest_connected(key):
                ask(peer)
            closest: list[ID] = []
            with trio.move_on_after(CLOSEST_LOOKUP_TIMEOUT_S) as walk:
                try:
                    closest = await self._dht.peer_routing.find_closest_peers_network(key)
                except Exception as exc:
                    log.warning("dht closest-peer lookup failed model=%s error=%r", model, exc)
            if walk.cancelled_caught:
                log.info("dht closest-peer lookup cut after %.0f s model=%s",
                         CLOSEST_LOOKUP_TIMEOUT_S, model)
            for peer in closest:
                ask(peer)
        return rank_providers(sources, self._local_peer_id, count)

    def _nearest_connected(self, key: bytes) -> list[ID]:
        peers = list(self._dht.host.get_connected_peers())
        return sort_peer_ids_by_distance(key, peers)[:NEAREST_CONNECTED_ASKED]

    async def _ask_peer(self, peer: ID, key: bytes, sources: list[list[PeerInfo]]) -> None:
        if peer.to_base58() == self._local_peer_id:
            return
        store = self._dht.provider_store
        with trio.move_on_after(LOOKUP_PEER_TIMEOUT_S):
            try:
                providers, _closer = await store._get_providers_from_peer_with_closers(peer, key)
            except Exception as exc:
                log.debug("provider query failed peer=%s error=%r", peer, exc)
                return
            sources.append(list(providers))  # this lookup's, not our store's: unsigned


def rank_providers(sources: list[list[PeerInfo]], local_peer_id: str, count: int
                   ) -> list[ProviderRef]:
    """The `count` best providers that `sources` name (our own records, then each answering
    peer's list; the first MAX_PER_ANSWER distinct PeerIDs of each), us left out.

    No source is trusted: a provider named by more sources ranks higher, then one named
    earlier in some source, ties in random order, so one source that names many made-up
    peers takes no more than its share of places, and cannot choose PeerIDs that win a
    tie. A provider's addresses are those its sources gave, in their order, at most
    MAX_ADDRS."""
    votes: dict[str, int] = {}
    place: dict[str, int] = {}
    addrs: dict[str, list[str]] = {}
    for source in sources:
        seen: set[str] = set()
        for info in source:
            pid = info.peer_id.to_base58()
            if pid == local_peer_id or pid in seen:
                continue
            if len(seen) >= MAX_PER_ANSWER:
                break
            seen.add(pid)
            votes[pid] = votes.get(pid, 0) + 1
            place[pid] = min(place.get(pid, len(seen)), len(seen))
            known = addrs.setdefault(pid, [])
            for text in map(str, info.addrs):
                if len(known) < MAX_ADDRS and text not in known:
                    known.append(text)
    ties = {pid: random.random() for pid in votes}
    best = sorted(votes, key=lambda pid: (-votes[pid], place[pid], ties[pid]))
    return [ProviderRef(pid, tuple(addrs[pid])) for pid in best[:count]]


def peer_addrs_to_multiaddrs(addrs: tuple[str, ...]) -> list[Multiaddr]:
    """Transport addresses (any `/p2p/<id>` suffix removed) from strings a remote peer gave.

    Malformed ones are skipped: they come from other peers, not from our user.
    """
    out: list[Multiaddr] = []
    for text in addrs:
        try:
            addr = multiaddr.Multiaddr(text)
            if addr.get_peer_id() is not None:
                addr = addr.decapsulate_code(P_P2P)
        except Exception:
            log.debug("skipping malformed multiaddr %r", text)
            continue
        out.append(addr)
    return out


PRUNE_INTERVAL_S = 5.0
"""How often `follow_reachability` prunes the routing table while the verdict holds."""


async def follow_reachability(dht: ServerPeersKadDHT, watch: ReachabilityWatch, *,
                              interval_s: float = PRUNE_INTERVAL_S) -> None:
    """Serve the DHT while AutoNAT finds this node public, not while private (client mode,
    as go-libp2p's ModeAuto: a peer nobody can dial would only be handed out to walks that
    then fail to dial it), switching as soon as the verdict changes; unknown changes
    nothing, so a node stays a server until a verdict says otherwise. While serving, drop
    peers that turned client from the routing table every `interval_s`. Runs until
    cancelled."""
    while True:
        status = watch.status
        if status != "unknown":
            await dht.set_server(status == "public")
        if dht.server:
            dht.prune_clients()
        with trio.move_on_after(interval_s):
            await watch.changed_from(status)
