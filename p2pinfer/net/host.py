"""The node's libp2p host: Noise-only TCP+Yamux, GossipSub, Kademlia (`/p2pinfer/kad/1.0.0`),
and their timers.

`run_host(config)` is the one entry point: an async context manager that
starts everything, yields a `NetHost`, and on exit cancels every task it
started (one nursery, owned by the context) before stopping py-libp2p's
services and closing the listeners. Nothing here outlives the `async with`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.network.config import ConnectionConfig
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11, GossipSub
from libp2p.pubsub.score import ScoreParams
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.tools.anyio_service import background_trio_service

from p2pinfer.net import compat
from p2pinfer.net.autonat import dialer_host
from p2pinfer.net.compat import inbound_shares, inbound_streams
from p2pinfer.net.compat.auto_connect import quiet as quiet_auto_connector
from p2pinfer.net.compat.kad_protocol import build_dht
from p2pinfer.net.compat.listeners import close_host, listening
from p2pinfer.net.compat.publish_rate import RatedPubsub
from p2pinfer.net.compat.task_tree import memoize_task_parents
from p2pinfer.net.config import (
    NetConfig,
    parse_listen_addr,
    parse_multiaddr,
    parse_peer_addr,
)
from p2pinfer.net.dcutr import GuardedDCUtR
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay import RelayHop
from p2pinfer.net.relay_check import CHECK_PROTOCOL, RelayChecker
from p2pinfer.net.relay_client import RelayClient

log = logging.getLogger(__name__)


def build_libp2p_host(config: NetConfig) -> IHost:
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
        # One connection per peer: py-libp2p's dialer waits its 250 ms
        # happy-eyeballs delay after a *successful* dial unless the per-peer
        # connection limit is reached; at 1 a loopback connect takes ~6 ms.
        connection_config=ConnectionConfig(
            deny_list=list(config.deny_ips), max_connections_per_peer=1
        ),
    )


def build_gossipsub(config: NetConfig) -> GossipSub:
    """GossipSub v1.1 with D = 6 (4..12) and a fixed heartbeat of `gossip_heartbeat_s`.

    py-libp2p's "adaptive gossip" is off: every 30 s it scores the network's
    health from mesh sizes, peer scores and connection churn, and below 0.7
    sets the heartbeat to 60 s (below 0.4, 30 s) and raises D. On every
    testnet we ran, health settled at 0.5 within 30 s of start, so meshes were
    repaired and IHAVE gossip sent once a minute, and under churn not faster.

    Peer exchange is taken from no one (`accept_px_threshold` +inf): py-libp2p connects
    to every peer a PRUNE names by its signed record, from any sender (its thresholds
    default to -inf), and a record is signed by its own free key, so any peer could make
    the node dial addresses of its choosing, 16 a PRUNE (attack 58). Peers are found
    through the bootstrap list, the DHT and mDNS; we send no PX either (`do_px` off).
    """
    return GossipSub(
        score_params=ScoreParams(accept_px_threshold=math.inf),
        protocols=[PROTOCOL_ID_V11],
        degree=6,
        degree_low=4,
        degree_high=12,
        heartbeat_interval=config.gossip_heartbeat_s,
        max_messages_per_topic_per_second=config.gossip_max_msgs_per_topic_per_s,
        adaptive_gossip_enabled=False,
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
        ("libp2p.stream_muxer", logging.CRITICAL),  # ERROR per connection the peer drops
        ("libp2p.kad_dht", logging.CRITICAL),
        # ERROR each time a relay client ends a HOP stream after its one request
        ("libp2p.relay.circuit_v2", logging.CRITICAL),
        # ERROR with a traceback when a peer leaves before our identify answer is sent
        # (a short-lived `ask` quitting at once printed it under its one-line error)
        ("libp2p.identity.identify", logging.CRITICAL),
    ):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(lvl)


# Over 60 lines by design: the stack's nested lifetimes and the shutdown phase that
# decides which errors a clean stop may ignore read best in one place.
@asynccontextmanager
async def run_host(config: NetConfig) -> AsyncIterator[NetHost]:
    """Start a node's network stack and yield its `NetHost`; everything stops on exit.

    Raises UsageError for malformed addresses, NetworkError if a listen
    address cannot be bound. An exception from the `async with` body comes
    out as itself, not wrapped in the exception groups of the nurseries
    underneath.
    """
    quiet_libp2p_logging()
    compat.install()
    host = quiet_auto_connector(build_libp2p_host(config))
    inbound_shares.attach(host.get_network(), inbound_shares.InboundShares(
        config.max_inbound_per_address, limit_loopback=config.limit_loopback_inbound,
        reserve=config.inbound_reserve))
    inbound_streams.attach(host.get_network(), inbound_streams.StreamShares(
        limit_loopback=config.limit_loopback_inbound))
    gossipsub = build_gossipsub(config)
    pubsub = RatedPubsub(host, gossipsub, max_inbound_rpc_size=config.gossip_max_rpc_bytes)
    dht = build_dht(host)
    hop = RelayHop(host, config.relay)
    dcutr = GuardedDCUtR(host)
    listen = [parse_listen_addr(a) for a in config.listen_addrs]
    phase = "starting"
    try:
        async with (
            listening(host, listen, config.listen_addrs),
            background_trio_service(pubsub),
            background_trio_service(gossipsub),
            background_trio_service(dht),
            background_trio_service(hop),
            background_trio_service(dcutr),
            _autonat_dialer(config) as dialer,
        ):
            await pubsub.wait_until_ready()
            memoize_task_parents(pubsub.get_manager())
            try:
                async with trio.open_nursery() as nursery:
                    net = NetHost(config, host, pubsub, dht, nursery, dialer=dialer,
                                  relay=(hop, RelayClient(host, hop, config.relay_client)),
                                  dcutr=dcutr)
                    net.relay_check = RelayChecker(
                        host, net.relay_client, net.open_stream, direct=dcutr.has_direct,
                        public=lambda peer: net.peer_reachability(peer) == "public")
                    hop.on_stop = net.relay_check.saw_stop
                    net.set_stream_handler(CHECK_PROTOCOL, net.relay_check.serve)
                    nursery.start_soon(net.relay_check.run)
                    await net._start()
                    phase = "running"
                    try:
                        yield net
                    except BaseException:
                        phase = "failed"
                        raise
                    finally:
                        nursery.cancel_scope.cancel()
                if phase == "running":
                    phase = "closing"
            finally:
                # Connections first, while the services still run: a pubsub
                # RPC arriving after Pubsub stopped crashes py-libp2p's reader.
                await close_host(host)
    except BaseExceptionGroup as group:
        errors, others = group.split(Exception)
        if phase == "closing" and others is None and errors is not None:
            # The node's work ended cleanly; py-libp2p failing while tearing
            # down a connection must not turn a clean stop into a crash.
            log.warning("libp2p error during shutdown ignored: %r", errors.exceptions)
            return
        leaf = _sole_leaf(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__


@asynccontextmanager
async def _autonat_dialer(config: NetConfig) -> AsyncIterator[IHost | None]:
    """The host AutoNAT dial-backs go out from, if this node answers them; else None."""
    if not config.autonat.serve:
        yield None
        return
    async with dialer_host() as dialer:
        yield dialer


def _sole_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one exception inside nested single-member groups, or None if there are several."""
    inner: BaseException = group
    while isinstance(inner, BaseExceptionGroup):
        if len(inner.exceptions) != 1:
            return None
        inner = inner.exceptions[0]
    return inner
