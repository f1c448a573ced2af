"""The node's libp2p host: Noise-only TCP+Yamux, GossipSub, Kademlia, and their timers.

`run_host(config)` is the one entry point: an async context manager that
starts everything, yields a `NetHost`, and on exit cancels every task it
started (one nursery, owned by the context) before stopping py-libp2p's
services and closing the listeners. Nothing here outlives the `async with`.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
from libp2p import new_host
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import PeerInfo
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.pubsub import Pubsub
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from p2pinfer.errors import (
    NetworkError,
    P2PInferError,
    PeerTimeoutError,
    PeerUnreachableError,
    ValidationError,
)
from p2pinfer.net.adverts import ADVERTS_TOPIC, AdvertGate, Catalog, VerifiedAdvert
from p2pinfer.net.config import (
    ADDR_TTL_S,
    NetConfig,
    parse_listen_addr,
    parse_multiaddr,
    parse_peer_addr,
    parse_peer_id,
)
from p2pinfer.net.dht import ProviderRecords, ProviderRef, peer_addrs_to_multiaddrs
from p2pinfer.net.gossip import (
    GossipHandler,
    GossipMessage,
    GossipValidator,
    libp2p_validator,
    read_subscription,
)
from p2pinfer.net.info import INFO_PROTOCOL, FetchedAdvert, ask_advert, serve_info
from p2pinfer.net.mdns import MdnsBridge
from p2pinfer.net.streams import NetStream

log = logging.getLogger(__name__)

StreamHandler = Callable[[NetStream], Awaitable[None]]
"""Serves one inbound stream; the stream is closed (or reset on error) when it returns."""

ROUTING_REFRESH_TIMEOUT_S = 30.0
CLOSE_TIMEOUT_S = 5.0


def build_libp2p_host(config: NetConfig) -> Any:
    """A py-libp2p host with our key, Noise as its only security transport and Yamux.

    py-libp2p offers Noise, TLS, SECIO and /plaintext/2.0.0 unless told
    otherwise; naming Noise alone means a peer that cannot speak Noise fails
    the security negotiation and is never spoken to.
    """
    key_pair = config.identity.libp2p_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    listen = [parse_listen_addr(a) for a in config.listen_addrs]
    announce = [parse_multiaddr(a, what="announce") for a in config.announce_addrs]
    for text in config.bootstrap:
        parse_peer_addr(text)  # fail early, with a clear message
    return new_host(
        key_pair=key_pair,
        sec_opt={NOISE_PROTOCOL_ID: noise},
        muxer_preference="YAMUX",
        listen_addrs=listen,
        enable_mDNS=config.enable_mdns,
        announce_addrs=announce or None,
        connection_config=ConnectionConfig(deny_list=list(config.deny_ips)),
    )


def quiet_libp2p_logging(level: int = logging.ERROR) -> None:
    """Raise py-libp2p's log threshold, unless the user already chose one.

    Left alone, py-libp2p logs WARNINGs for routine remote behaviour (a DHT
    peer closing a stream, a rate-limited gossip message) and ERRORs when
    pubsub probes a peer without pubsub; a node's log should show our events.
    """
    for name, lvl in (
        ("libp2p", level),
        ("libp2p.host.basic_host", logging.CRITICAL),
        ("libp2p.network.swarm", logging.CRITICAL),  # ERROR per failed handshake of a peer
        ("libp2p.transport.tcp", logging.CRITICAL),  # ERROR per failed dial; we raise instead
        ("libp2p.protocol_muxer", logging.CRITICAL),  # ERROR per stream cut during negotiation
        ("libp2p.kad_dht", logging.CRITICAL),
    ):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(lvl)


@asynccontextmanager
async def run_host(config: NetConfig) -> AsyncIterator[NetHost]:
    """Start a node's network stack and yield its `NetHost`; everything stops on exit.

    Raises UsageError for malformed addresses, NetworkError if a listen
    address cannot be bound. An exception from the `async with` body comes
    out as itself, not wrapped in the exception groups of the nurseries
    underneath.
    """
    quiet_libp2p_logging()
    host = build_libp2p_host(config)
    gossipsub = GossipSub(
        protocols=[PROTOCOL_ID_V11],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=config.gossip_heartbeat_s,
        max_messages_per_topic_per_second=config.gossip_max_msgs_per_topic_per_s,
    )
    pubsub = Pubsub(host, gossipsub, max_inbound_rpc_size=config.gossip_max_rpc_bytes)
    dht = KadDHT(host, DHTMode.SERVER)
    listen = [parse_listen_addr(a) for a in config.listen_addrs]
    try:
        async with (
            _listening(host, listen, config.listen_addrs),
            background_trio_service(pubsub),
            background_trio_service(gossipsub),
            background_trio_service(dht),
        ):
            await pubsub.wait_until_ready()
            async with trio.open_nursery() as nursery:
                net = NetHost(config, host, pubsub, dht, nursery)
                await net._start()
                try:
                    yield net
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        leaf = _sole_leaf(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__


def _sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested single-member groups, or None if there are several."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner


@asynccontextmanager
async def _listening(host: Any, listen: list[Any], texts: tuple[str, ...]) -> AsyncIterator[None]:
    """`host.run(listen)`, then `host.close()`; a bind failure becomes one NetworkError.

    py-libp2p logs and swallows a failed bind, so the bound addresses are
    checked. Its TCP listeners run in trio *system* tasks that leaving
    `host.run` does not stop: without `host.close()` the port keeps accepting
    and completing handshakes for a host that is gone.
    """
    bound = True
    try:
        async with host.run(listen_addrs=listen):
            bound = len(host.get_transport_addrs()) == len(listen)
            if bound:
                yield
    finally:
        with trio.move_on_after(CLOSE_TIMEOUT_S) as scope:
            scope.shield = True  # runs while the node is being cancelled
            await host.close()
    if not bound:
        raise NetworkError(f"cannot listen on {', '.join(texts)}: address in use or unavailable")


class NetHost:
    """A running node's view of the network. Created by `run_host` only.

    Every background task (topic readers, advert republisher, DHT re-provider,
    bootstrap dialer, catalog expiry) runs in the nursery `run_host` owns.
    """

    def __init__(
        self, config: NetConfig, host: Any, pubsub: Any, dht: KadDHT, nursery: trio.Nursery
    ) -> None:
        self.config = config
        self.peer_id: str = config.identity.peer_id
        self.catalog = Catalog(
            local_peer_id=self.peer_id,
            clock_ms=config.clock_ms,
            max_ttl_ms=config.max_advert_ttl_ms,
            max_clock_skew_ms=config.max_clock_skew_ms,
        )
        self.advert_gate = AdvertGate(
            self.catalog, config.verify_advert, max_advert_bytes=config.max_advert_bytes
        )
        self._host = host
        self._pubsub = pubsub
        self._dht = dht
        self._records = ProviderRecords(dht, self.peer_id)
        self._nursery = nursery
        self._local_advert: bytes | None = None
        self._advertising = False
        self._new_peers = trio.Event()

    async def _start(self) -> None:
        self.set_stream_handler(INFO_PROTOCOL, self._serve_info)
        await self.subscribe(ADVERTS_TOPIC, validator=self._admit_advert)
        self._nursery.start_soon(self._expire_loop)
        self._nursery.start_soon(self._reprovide_loop)
        if self.config.bootstrap:
            self._nursery.start_soon(self._bootstrap_loop)
        if self.config.enable_mdns:
            bridge = MdnsBridge(self.peer_id)
            self._nursery.start_soon(bridge.run, self._connect_discovered)

    # -- peers and streams -------------------------------------------------

    def addrs(self) -> list[str]:
        """Addresses other nodes can dial, each ending in `/p2p/<our PeerID>`."""
        return [str(a) for a in self._host.get_addrs()]

    def peers(self) -> list[str]:
        """PeerIDs we have an open connection with."""
        return sorted(p.to_base58() for p in self._host.get_connected_peers())

    async def connect(self, addr: str) -> str:
        """Dial `/.../p2p/<PeerID>` (no-op if connected); return the PeerID.

        UsageError for a malformed address; PeerUnreachableError if the dial
        or the Noise handshake fails or takes over `dial_timeout_s`.
        """
        info = parse_peer_addr(addr)
        await self._connect_info(info, what=addr)
        return str(info.peer_id.to_base58())

    def add_peer_addrs(self, peer_id: str, addrs: tuple[str, ...]) -> None:
        """Remember where `peer_id` can be dialled (e.g. from its advert)."""
        maddrs = peer_addrs_to_multiaddrs(addrs)
        if maddrs:
            self._host.get_peerstore().add_addrs(parse_peer_id(peer_id), maddrs, ADDR_TTL_S)

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        """Serve inbound streams of `protocol` with `handler` (replaces any previous one).

        Handlers run in py-libp2p's connection tasks, which `run_host` owns; an
        exception is logged and resets the stream, never reaching py-libp2p.
        """

        async def serve(raw: Any) -> None:
            stream = NetStream(raw)
            try:
                await handler(stream)
            except P2PInferError as exc:
                log.info(
                    "stream ended protocol=%s peer=%s error=%s",
                    protocol,
                    stream.remote_peer_id,
                    exc,
                )
                await stream.reset()
                return
            except Exception:
                log.exception("stream handler failed protocol=%s", protocol)
                await stream.reset()
                return
            await stream.close()

        self._host.set_stream_handler(protocol, serve)

    async def open_stream(
        self, peer_id: str, protocol: str, *, timeout_s: float | None = None
    ) -> NetStream:
        """Open a stream to `peer_id` speaking `protocol`, dialling it if needed.

        Addresses come from the peerstore (connections, DHT records, mDNS)
        and from the peer's advert in the catalog. The caller owns the stream
        and must close or reset it. Raises PeerUnreachableError (no address,
        dial failed, protocol not supported) or PeerTimeoutError.
        """
        pid = parse_peer_id(peer_id)
        advert = self.catalog.advert_of(peer_id)
        if advert is not None:  # its own signed word on where to dial it
            self.add_peer_addrs(peer_id, advert.addrs)
        limit = self.config.dial_timeout_s if timeout_s is None else timeout_s
        try:
            with trio.fail_after(limit):
                raw = await self._host.new_stream(pid, [protocol])
        except trio.TooSlowError as exc:
            raise PeerTimeoutError(
                f"opening {protocol} to {peer_id} took over {limit:g} s"
            ) from exc
        except Exception as exc:
            raise PeerUnreachableError(f"cannot open {protocol} to {peer_id}: {exc}") from exc
        return NetStream(raw)

    # -- gossip --------------------------------------------------------------

    async def subscribe(
        self,
        topic: str,
        *,
        validator: GossipValidator | None = None,
        handler: GossipHandler | None = None,
    ) -> None:
        """Join `topic`: `validator` gates delivery and relaying, `handler` sees each message.

        One reader task per topic drains it (py-libp2p drops messages beyond
        32 unread). Call once per topic.
        """
        if validator is not None:
            self._pubsub.set_topic_validator(topic, libp2p_validator(topic, validator), False)
        subscription = await self._pubsub.subscribe(topic)
        self._nursery.start_soon(read_subscription, topic, subscription, handler)

    def topic_peers(self, topic: str) -> list[str]:
        """Connected peers known to be subscribed to `topic`."""
        return sorted(p.to_base58() for p in self._pubsub.peer_topics.get(topic, ()))

    async def wait_for_mesh(self, peer_id: str, topic: str, *, timeout_s: float = 10.0) -> None:
        """Return once `peer_id` is in our GossipSub mesh for `topic`; PeerTimeoutError if not."""
        try:
            await self._pubsub.wait_for_mesh(parse_peer_id(peer_id), topic, timeout=timeout_s)
        except trio.TooSlowError as exc:
            raise PeerTimeoutError(
                f"{peer_id} joined no {topic} mesh within {timeout_s:g} s"
            ) from exc

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish `data` on `topic`, signed by this node (our own validator runs first)."""
        await self._pubsub.publish(topic, data)

    # -- adverts ---------------------------------------------------------------

    @property
    def local_advert(self) -> bytes | None:
        """The signed advert this node last published (served by the info protocol)."""
        return self._local_advert

    async def publish_advert(self, raw: bytes) -> VerifiedAdvert:
        """Publish our signed advert on gossip, serve it over info, and provide its models.

        ValidationError if it is not ours, not newer than the last one, or too
        large; ProtocolError if it does not verify.
        """
        advert = self.config.verify_advert(raw)
        if advert.signer != self.peer_id:
            raise ValidationError(f"advert is signed by {advert.signer}, not by this node")
        if len(raw) > self.config.max_advert_bytes:
            raise ValidationError(
                f"advert is {len(raw)} bytes; the limit is {self.config.max_advert_bytes}"
            )
        stale = self.catalog.staleness(advert)
        if stale is not None:
            raise ValidationError(
                f"advert is stale ({stale}): seq and issued_at must be current and increasing"
            )
        self._local_advert = raw
        await self._pubsub.publish(ADVERTS_TOPIC, raw)
        models = {offer.model for offer in advert.offers}
        for model in models - self._records.models:
            self._nursery.start_soon(self._records.provide, model)
        self._records.retain(models)
        return advert

    def start_advertising(self, make_advert: Callable[[], bytes], interval_s: float) -> None:
        """Publish `make_advert()` now and every `interval_s` until shutdown.

        `make_advert` must return a fresh signed advert each call (a higher
        seq, a current issued_at); pick `interval_s` well under the TTL.
        """
        if self._advertising:
            raise ValidationError("this node is already advertising")
        self._advertising = True
        self._nursery.start_soon(self._advertise_loop, make_advert, interval_s)

    async def fetch_advert(
        self, peer_id: str, *, timeout_s: float | None = None
    ) -> FetchedAdvert | None:
        """Ask `peer_id` for its current advert over the info protocol; None if it has none.

        A fresh answer also updates the catalog. Raises NetworkError subclasses
        on transport failure, ProtocolError subclasses on a bad answer.
        """
        limit = self.config.dial_timeout_s if timeout_s is None else timeout_s
        stream = await self.open_stream(peer_id, INFO_PROTOCOL, timeout_s=limit)
        try:
            fetched = await ask_advert(
                stream,
                self.config.verify_advert,
                max_advert_bytes=self.config.max_advert_bytes,
                timeout_s=limit,
            )
        except BaseException:
            await stream.reset()
            raise
        if fetched is not None:
            self.catalog.admit(fetched.advert)  # an older or equal seq is simply not recorded
        return fetched

    # -- DHT -------------------------------------------------------------------

    async def provide(self, model: str) -> bool:
        """Announce in the DHT that we serve `model`; re-announced until shutdown."""
        return await self._records.provide(model)

    async def find_providers(self, model: str, *, count: int = 20) -> list[ProviderRef]:
        """Peers that announced `model` in the DHT (deduplicated, not us); their addrs are kept."""
        refs = await self._records.find(model, count=count)
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
            if fetched is not None and any(o.model == model for o in fetched.advert.offers):
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

    def _admit_advert(self, message: GossipMessage) -> bool:
        return self.advert_gate.check(message.publisher, message.data) is not None

    async def _serve_info(self, stream: NetStream) -> None:
        await serve_info(stream, lambda: self._local_advert)

    async def _advertise_loop(self, make_advert: Callable[[], bytes], interval_s: float) -> None:
        while True:
            try:
                await self.publish_advert(make_advert())
            except P2PInferError as exc:
                log.warning("advert not published error=%s", exc)
            await trio.sleep(interval_s)

    async def _expire_loop(self) -> None:
        while True:
            await trio.sleep(self.config.expire_interval_s)
            for peer_id in self.catalog.expire():
                log.info("provider expired peer=%s", peer_id)

    async def _reprovide_loop(self) -> None:
        while True:
            with trio.move_on_after(self.config.provide_interval_s):
                await self._new_peers.wait()
            self._new_peers = trio.Event()
            await self.refresh_routing_table()
            await self._records.reprovide_all()

    async def _bootstrap_loop(self) -> None:
        infos = [parse_peer_addr(a) for a in self.config.bootstrap]
        while True:
            connected = set(self._host.get_connected_peers())
            for info, text in zip(infos, self.config.bootstrap, strict=True):
                if info.peer_id in connected:
                    continue
                try:
                    await self._connect_info(info, what=text)
                except NetworkError as exc:
                    log.info("bootstrap peer unreachable addr=%s error=%s", text, exc)
            await trio.sleep(self.config.bootstrap_interval_s)

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
                await self._host.connect(info)
        except trio.TooSlowError as exc:
            raise PeerUnreachableError(
                f"connecting to {what} took over {self.config.dial_timeout_s:g} s"
            ) from exc
        except Exception as exc:
            raise PeerUnreachableError(f"cannot connect to {what}: {exc}") from exc
        if not already:
            log.info("connected peer=%s", info.peer_id)
            self._new_peers.set()  # wakes the re-provider: refresh routing, announce again
