"""`NetHost`: what a running node can do on the network (streams, gossip, adverts, DHT).

Dialing, streams (direct, then relayed), the DHT and the bootstrap/mDNS dialers are
here; topics and our advert are `GossipAndAdverts` (`net/host_gossip.py`).
`p2pinfer.net.host.run_host` creates it and owns its nursery and the libp2p objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.pubsub import Pubsub
from multiaddr import Multiaddr

from p2pinfer.errors import (
    NetworkError,
    P2PInferError,
    PeerTimeoutError,
    PeerUnreachableError,
    ProtocolNotSupportedError,
)
from p2pinfer.net.advert_gate import AdvertGate
from p2pinfer.net.adverts import ADVERTS_TOPIC, Catalog
from p2pinfer.net.autonat import AUTONAT_PROTOCOL_ID, AutoNat
from p2pinfer.net.autonat_rules import Reachability
from p2pinfer.net.compat import multistream_listener
from p2pinfer.net.compat.dial_addrs import connect, connect_info
from p2pinfer.net.compat.inbound_shares import SHARES_ATTR, value_peer
from p2pinfer.net.compat.kad_server_peers import ServerPeersKadDHT
from p2pinfer.net.compat.multistream import Proposal, open_proposed, refused_by_peer
from p2pinfer.net.config import ADDR_TTL_S, NetConfig, parse_peer_addr, parse_peer_id
from p2pinfer.net.dcutr import GuardedDCUtR
from p2pinfer.net.dht import ProviderRecords, ProviderRef, Refresher, peer_addrs_to_multiaddrs
from p2pinfer.net.host_gossip import GossipAndAdverts
from p2pinfer.net.info import INFO_PROTOCOL, FetchedAdvert, InfoRate
from p2pinfer.net.mdns import MdnsBridge
from p2pinfer.net.ping import serve_ping
from p2pinfer.net.relay import RelayHop, follow_reachability
from p2pinfer.net.relay_check import RelayChecker
from p2pinfer.net.relay_client import RelayClient
from p2pinfer.net.streams import NetStream, StreamHandler

log = logging.getLogger(__name__)

ROUTING_REFRESH_TIMEOUT_S = 30.0
BOOTSTRAP_FIRST_RETRY_S = 1.0  # after a failed bootstrap dial; doubles up to the interval


class NetHost(GossipAndAdverts):
    """A running node's view of the network; `run_host` creates it and runs its tasks."""
    relay_check: RelayChecker  # set by run_host: are our relays bringing us circuits?

    def __init__(
        self, config: NetConfig, host: IHost, pubsub: Pubsub, dht: ServerPeersKadDHT,
        nursery: trio.Nursery, *, dialer: IHost | None = None, relay: tuple[RelayHop, RelayClient],
        dcutr: GuardedDCUtR,
    ) -> None:
        self.config = config
        self.peer_id: str = config.identity.peer_id
        self.catalog = Catalog(
            local_peer_id=self.peer_id,
            clock_ms=config.clock_ms,
            max_ttl_ms=config.max_advert_ttl_ms,
            max_clock_skew_ms=config.max_clock_skew_ms,
        )
        self.advert_gate = AdvertGate(self.catalog, max_advert_bytes=config.max_advert_bytes)
        self.info_rate = InfoRate()  # who may have our advert answered now (attack 65)
        self._host, self._pubsub, self._dht = host, pubsub, dht
        self.records = ProviderRecords(dht, self.peer_id)  # the DHT: provider records, mode
        self._nursery = nursery
        self._local_advert: bytes | None = None
        self._advertising = False
        self._advert_seq = 0
        self.refresher = Refresher(self.refresh_routing_table, self.records,
                                   lambda: len(self._host.get_connected_peers()), config)
        self._topics: set[str] = set()
        self.autonat = AutoNat(self, dialer, config.autonat,
                               arrivals=getattr(host.get_network(), SHARES_ATTR, None))
        self.relay_hop, self.relay_client = relay
        self.relay_hop.our_relay = self.relay_client.holds_slot_at
        self.relay_hop.circuit_limits = self.relay_client.circuit_limits_at
        bootstrap = {parse_peer_addr(a).peer_id.to_base58() for a in config.bootstrap}
        self.relay_client.preferred = lambda: bootstrap
        self.dcutr = dcutr
        dcutr.own_relays = lambda: [slot.relay_addr for slot in self.relay_client.slots.values()]
        self.started_at = trio.current_time()  # how young its gossip catalog is
        #: Peers this host reaches through their relays only, never by a direct dial (a
        #: validator's check host: the provider sees the relay's address, not ours).
        self.relay_only: set[str] = set()

    async def _start(self) -> None:
        self.set_stream_handler(INFO_PROTOCOL, self._serve_info)
        self.ping_service = serve_ping(self._host)
        if self.config.autonat.serve:
            self.set_stream_handler(AUTONAT_PROTOCOL_ID, self.autonat.serve)
        self._nursery.start_soon(self.autonat.run)
        watch = self.autonat.watch  # what the relay and DHT modes follow
        if self.config.relay.mode == "on":
            self.relay_hop.start_serving()  # before the first identify goes out
        self._nursery.start_soon(follow_reachability, self.relay_hop, self.config.relay, watch)
        self._nursery.start_soon(self.relay_client.run, watch)
        self._nursery.start_soon(self.records.follow_reachability, watch)
        await self.subscribe(ADVERTS_TOPIC, validator=self._admit_advert)
        self._nursery.start_soon(self._expire_loop)
        self._nursery.start_soon(self.refresher.run)
        if self.config.bootstrap:
            self._nursery.start_soon(self._bootstrap_loop)
        if self.config.enable_mdns:
            bridge = MdnsBridge(self.peer_id)
            self._nursery.start_soon(bridge.run, self._connect_discovered)

    # -- peers and streams -------------------------------------------------

    def addrs(self) -> list[str]:
        """Addresses other nodes can dial, each ending in `/p2p/<our PeerID>`."""
        return [str(a) for a in self._host.get_addrs()]

    @property
    def reachability(self) -> Reachability:
        """Whether peers can dial this node: public, private or unknown (AutoNAT)."""
        return self.autonat.status

    def peer_reachability(self, peer_id: str) -> Reachability:
        """Whether `peer_id` can be dialled, as far as this node has seen (AutoNat.peer_status)."""
        return self.autonat.peer_status(peer_id, self._host)

    def peers(self) -> list[str]:
        """PeerIDs we have an open connection with."""
        return sorted(p.to_base58() for p in self._host.get_connected_peers())

    def value_peer(self, peer_id: str) -> None:
        """`peer_id` proved itself (a good job, a paid receipt): inbound slots kept for proven
        peers (compat/inbound_shares.py), DCUtR past the budget for all (`GuardedDCUtR`)."""
        pid = ID.from_base58(peer_id)
        value_peer(self._host.get_network(), pid)
        self.dcutr.value(pid)

    async def connect(self, addr: str) -> str:
        """Dial `/.../p2p/<PeerID>` (no-op if connected); return the PeerID. UsageError for
        a malformed address; PeerUnreachableError if the dial or the Noise handshake fails
        or takes over `dial_timeout_s`."""
        info = parse_peer_addr(addr)
        await self._connect_info(info, what=addr)
        return str(info.peer_id.to_base58())

    def add_peer_addrs(self, peer_id: str, addrs: tuple[str, ...]) -> None:
        """Remember where `peer_id` can be dialled (e.g. from its advert)."""
        maddrs = peer_addrs_to_multiaddrs(addrs)
        if maddrs:
            self._host.get_peerstore().add_addrs(parse_peer_id(peer_id), maddrs, ADDR_TTL_S)

    def set_stream_handler(self, protocol: str, handler: StreamHandler, *,
                           echo_with_answer: bool = False) -> None:
        """Serve inbound streams of `protocol` with `handler` (replaces any previous one).
        Handlers run in py-libp2p's connection tasks, which `run_host` owns; an exception
        is logged and resets the stream, never reaching py-libp2p. `echo_with_answer`: the
        echo rides with the handler's first write (`compat.multistream_listener`)."""

        async def serve(raw: INetStream) -> None:
            stream = NetStream(raw)
            try:
                await handler(stream)
            except P2PInferError as exc:
                log.info("stream ended protocol=%s peer=%s error=%s", protocol,
                         stream.remote_peer_id, exc)
                await stream.reset()
                return
            except Exception:
                log.exception("stream handler failed protocol=%s", protocol)
                await stream.reset()
                return
            await stream.close()

        self._host.set_stream_handler(TProtocol(protocol), serve)
        if echo_with_answer:
            multistream_listener.echo_with_answer(self._host.get_mux(), protocol)

    async def open_stream(self, peer_id: str, protocol: str, *, first: bytes | None = None,
                          timeout_s: float | None = None,
                          on_sent: Callable[[NetStream], None] | None = None) -> NetStream:
        """Open a stream to `peer_id` speaking `protocol`, dialling it if needed.

        With `first` (bytes the protocol starts with, e.g. a framed request) the
        negotiation is pipelined: `first` goes out in the same write as the protocol
        proposal, so the answer comes back one round trip later instead of three
        (`p2pinfer.net.compat.multistream`). Without it, py-libp2p's own lock-step negotiation.
        `on_sent` is given the stream once `first` is out, before the answer: if the caller
        is cancelled after that, the stream is left open for it to close or reset (a job's
        request may have been accepted already: `jobs/job_stop.py`).

        Addresses come from the peer's advert in the catalog, dialled first, and from
        the peerstore (connections, DHT records, mDNS; `compat.dial_addrs`). A peer
        with `/p2p-circuit` addresses and no connection yet gets `direct_first_s` (at
        most half of `timeout_s`) for a direct dial if one may work
        (`worth_a_direct_try`), then is dialled through its relay (`RelayClient.dial`)
        within what is left. Over a relay, DCUtR is tried for a
        direct connection before the stream (`dcutr`) or behind it (`dcutr_behind`).
        The caller owns the stream and must close or reset it. Raises
        PeerUnreachableError (no address, dial failed), ProtocolNotSupportedError (the
        peer refused `protocol`: `na`, or a reset before accepting it) or PeerTimeoutError.
        """
        advert = self.catalog.advert_of(peer_id)
        signed = advert.advert.listen_addrs if advert is not None else ()
        limit = self.config.dial_timeout_s if timeout_s is None else timeout_s
        deadline = trio.current_time() + limit  # the caller's bound covers every try
        want = Proposal(protocol, first, on_sent)
        if peer_id in self.relay_only:
            circuits = self.relay_client.circuit_addrs_of(peer_id, signed)
            return await self._open_relayed_only(peer_id, want, circuits, deadline)
        if peer_id in self.peers():  # connected: no address is parsed (the usual job)
            return await self._on_connection(peer_id, want, deadline)
        circuits = self.relay_client.circuit_addrs_of(peer_id, signed)
        if not circuits:
            return await self._open_stream(peer_id, want, timeout_s)
        if self.relay_client.direct_worth_trying(peer_id, signed):
            try:
                return await self._open_stream(peer_id, want, min(
                    limit / 2, self.relay_client.config.direct_first_s))
            except (PeerUnreachableError, PeerTimeoutError) as exc:
                log.info("direct dial failed, trying relays peer=%s error=%s", peer_id, exc)
        with trio.move_on_at(deadline):
            await self.relay_client.dial(peer_id, circuits)
            return await self._on_connection(peer_id, want, deadline)
        raise PeerTimeoutError(f"reaching {peer_id} through a relay took over {limit:g} s")

    async def _on_connection(self, peer_id: str, want: Proposal, deadline: float) -> NetStream:
        """A stream over the connection we hold to `peer_id`; if that runs through a relay,
        DCUtR first (`dcutr`) or in the background once the stream is open (`dcutr_behind`)."""
        pid, config = parse_peer_id(peer_id), self.relay_client.config
        if config.dcutr:
            await self.dcutr.maybe_upgrade(pid, deadline)
        stream = await self._open_stream(peer_id, want,
                                         max(deadline - trio.current_time(), 0.1))
        if config.dcutr_behind and not config.dcutr:
            self.dcutr.start_behind(pid, self._nursery)
        return stream

    async def _open_relayed_only(self, peer_id: str, want: Proposal,
                                 circuits: list[str], deadline: float) -> NetStream:
        """A stream to a `relay_only` peer: over the connection we hold with it, else
        through one of its relays; never a direct dial, not even when the connection
        is gone (py-libp2p would dial every address it knows, its direct ones too)."""
        if peer_id not in self.peers():
            if not circuits:
                raise PeerUnreachableError(
                    f"{peer_id} is reached through relays only and advertises none")
            with trio.move_on_at(deadline):
                await self.relay_client.dial(peer_id, circuits)
            if peer_id not in self.peers():
                raise PeerTimeoutError(f"no relay reached {peer_id} in time")
        # Should the connection drop before the stream opens, py-libp2p dials what its
        # peerstore holds (identify put the direct addresses there): leave it nothing,
        # and let `_open_stream` add none back from the advert.
        self._host.get_peerstore().clear_addrs(parse_peer_id(peer_id))
        return await self._open_stream(peer_id, want,
                                       max(deadline - trio.current_time(), 0.1),
                                       advert_addrs=False)

    async def _open_stream(self, peer_id: str, want: Proposal, timeout_s: float | None, *,
                           advert_addrs: bool = True) -> NetStream:
        pid, protocol = parse_peer_id(peer_id), want.protocol
        advert = self.catalog.advert_of(peer_id)
        # Its own signed word on where to dial it, for a dial, dialled first; over a
        # connection already up the stream needs none (parsing them cost ~80 us a job).
        own: list[Multiaddr] = []
        if advert is not None and advert_addrs and peer_id not in self.peers():
            own = peer_addrs_to_multiaddrs(advert.advert.listen_addrs)
            self._host.get_peerstore().add_addrs(pid, own, ADDR_TTL_S)
        limit = self.config.dial_timeout_s if timeout_s is None else timeout_s
        try:
            with trio.fail_after(limit):
                await connect(self._host.get_network(), pid, own)  # not py-libp2p's pick
                if want.first is None:
                    return NetStream(await self._host.new_stream(pid, [TProtocol(protocol)]))
                return await open_proposed(self._host.get_network(), pid, want, limit)
        except trio.TooSlowError as exc:
            # A connection that cannot open a stream in time is most likely dead (the
            # peer vanished or a partition ate its packets, and TCP has not noticed):
            # drop it, so the next attempt dials afresh instead of waiting on it again.
            await self._drop_connection(pid)
            raise PeerTimeoutError(
                f"opening {protocol} to {peer_id} took over {limit:g} s"
            ) from exc
        except (PeerUnreachableError, ProtocolNotSupportedError):
            raise
        except Exception as exc:
            if refused_by_peer(exc):
                raise ProtocolNotSupportedError(
                    f"peer {peer_id} does not support {protocol}") from exc
            raise PeerUnreachableError(f"cannot open {protocol} to {peer_id}: {exc}") from exc

    async def _drop_connection(self, pid: ID) -> None:
        if pid not in set(self._host.get_connected_peers()):
            return
        log.info("dropping unresponsive connection peer=%s", pid)
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await self._host.disconnect(pid)
            except Exception as exc:  # closing a dead connection may fail; it is gone anyway
                log.debug("closing connection failed peer=%s error=%s", pid, exc)

    # -- DHT -------------------------------------------------------------------

    async def provide(self, model: str) -> bool:
        """Announce in the DHT that we serve `model`; re-announced until shutdown."""
        return await self.records.provide(model)

    async def find_providers(self, model: str, *, count: int = 20) -> list[ProviderRef]:
        """Peers that announced `model` in the DHT (deduplicated, not us); their addrs are kept."""
        refs = await self.records.find(model, count=count)
        for ref in refs:
            self.add_peer_addrs(ref.peer_id, ref.addrs)
        return refs

    async def lookup_providers(self, model: str, *, timeout_s: float = 10.0) -> list[FetchedAdvert]:
        """DHT providers of `model` with a fetched, verified advert offering it; fastest first."""
        refs = await self.find_providers(model)
        results: list[FetchedAdvert] = []

        async def fetch(ref: ProviderRef) -> None:
            try:
                fetched = await self.fetch_advert(ref.peer_id, timeout_s=timeout_s)
            except P2PInferError as exc:
                log.info("advert fetch failed peer=%s error=%s", ref.peer_id, exc)
                return
            if fetched is not None and fetched.advert.offer(model) is not None:
                results.append(fetched)

        async with trio.open_nursery() as nursery:
            for ref in refs:
                nursery.start_soon(fetch, ref)
        return sorted(results, key=lambda f: f.rtt_ms)

    async def refresh_routing_table(self) -> None:
        """Look up peers near us so the DHT knows more than our direct connections."""
        with trio.move_on_after(ROUTING_REFRESH_TIMEOUT_S):
            try:
                await self._dht.refresh_routing_table()
            except Exception as exc:
                log.warning("routing table refresh failed error=%r", exc)

    # -- background tasks ----------------------------------------------------

    async def _bootstrap_loop(self) -> None:
        """Dial every bootstrap peer we are not connected to, every `bootstrap_interval_s`;
        after a failed dial sooner (1 s, then doubling up to it), so nodes started together
        meet within seconds whichever came up first."""
        infos = [parse_peer_addr(a) for a in self.config.bootstrap]
        retry_s = BOOTSTRAP_FIRST_RETRY_S
        while True:
            connected, failed = set(self._host.get_connected_peers()), False
            for info, text in zip(infos, self.config.bootstrap, strict=True):
                if info.peer_id in connected:
                    continue
                try:
                    await self._connect_info(info, what=text)
                except NetworkError as exc:
                    failed = True
                    log.info("bootstrap peer unreachable addr=%s error=%s", text, exc)
            interval = self.config.bootstrap_interval_s
            await trio.sleep(min(retry_s, interval) if failed else interval)
            retry_s = retry_s * 2 if failed else BOOTSTRAP_FIRST_RETRY_S

    async def _connect_discovered(self, info: PeerInfo) -> None:
        if info.peer_id in set(self._host.get_connected_peers()):
            return
        try:
            await self._connect_info(info, what=str(info.peer_id))
        except NetworkError as exc:
            log.info("mdns peer unreachable peer=%s error=%s", info.peer_id, exc)

    async def _connect_info(self, info: PeerInfo, *, what: str) -> None:
        already = info.peer_id in set(self._host.get_connected_peers())
        try:
            with trio.fail_after(self.config.dial_timeout_s):
                await connect_info(self._host, info)
        except trio.TooSlowError as exc:
            raise PeerUnreachableError(f"connecting to {what} took over "
                                       f"{self.config.dial_timeout_s:g} s") from exc
        except Exception as exc:
            raise PeerUnreachableError(f"cannot connect to {what}: {exc}") from exc
        if not already:
            log.info("connected peer=%s", info.peer_id)
            self.refresher.new_peer()  # walk and announce again
