"""AutoNAT v1 over `/p2pinfer/autonat/1.0.0`: is this node reachable from outside?

The wire format is AutoNAT v1's (libp2p/specs autonat/autonat-v1.md): one
varint-framed protobuf `Message` each way, DIAL (our peer id and addresses) then
DIAL_RESPONSE (OK with the address reached, or E_DIAL_ERROR / E_DIAL_REFUSED /
E_BAD_REQUEST). Only the protocol id is ours, like our DHT's (docs/network.md).

Why not py-libp2p 0.8.1's `libp2p.host.autonat`: its server "dials back" with
`host.connect`, which returns at once when a connection to the peer exists, and
the request itself arrived on one, so every answer is OK and every node would
think itself public; its `dial_peer` also dials every address the peerstore
holds for the peer, not only the filtered ones; and it has no rate limit. Here
the dial-back goes out from a separate dialer host (its own throwaway key, no
listener, as go-libp2p's AutoNAT service does): a new TCP connection whose Noise
handshake must prove the requester's peer id, to the requester's observed IP
only (`autonat_rules.dial_back_addrs`), rate-limited (`DialBackLimiter`).
"""

from __future__ import annotations

import logging
import random
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import multiaddr
import trio
from google.protobuf.message import DecodeError as ProtobufDecodeError
from libp2p import new_host
from libp2p.abc import IHost
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.host.autonat.pb.autonat_pb2 import Message
from libp2p.network.config import ConnectionConfig, RetryConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport

from p2pinfer.bounded import keep_latest
from p2pinfer.errors import P2PInferError
from p2pinfer.net.autonat_rules import (
    AutoNatConfig,
    DialBackLimiter,
    Reachability,
    Verdicts,
    dial_back_addrs,
    observed_ip,
    voter,
)
from p2pinfer.net.compat.auto_connect import quiet as quiet_auto_connector
from p2pinfer.net.compat.inbound_shares import InboundShares
from p2pinfer.net.compat.listeners import close_host
from p2pinfer.net.reachability import ReachabilityWatch
from p2pinfer.net.relay_rules import is_circuit_addr
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol.framing import encode_frame

if TYPE_CHECKING:
    from p2pinfer.net.config import NetConfig

log = logging.getLogger(__name__)

NEW_PEER_ROUND_GAP_S = 5.0
"""While the status is unknown, a connected peer never asked brings the next round early,
but no sooner than this after the last (a node meeting peers in a stream asks them in
batches; once every peer was asked, rounds are 30 s apart again)."""
NEW_PEER_POLL_S = 1.0
MAX_ASKED_KEPT = 256  # peers remembered as asked (the oldest forgotten first)


class AutoNatHost(Protocol):
    """What AutoNat uses of its `NetHost` (net/nethost.py, which builds the AutoNat)."""

    @property
    def config(self) -> NetConfig: ...

    @property
    def peer_id(self) -> str: ...

    def addrs(self) -> list[str]: ...

    def peers(self) -> list[str]: ...

    async def open_stream(self, peer_id: str, protocol: str, *, first: bytes | None = None,
                          timeout_s: float | None = None) -> NetStream: ...


AUTONAT_PROTOCOL_ID = "/p2pinfer/autonat/1.0.0"
MAX_AUTONAT_MESSAGE = 4096
"""A request with 16 addresses is well under 1 KiB; the spec's messages are small."""
MAX_REQUEST_ADDRS = 32
SERVE_READ_TIMEOUT_S = 10.0
MAX_DIALLED_BACK_KEPT = 1024
PATCHED = {"libp2p.network.swarm:Swarm.unblock_peer": "5f8ccdf32983315a"}
"""py-libp2p functions this module overrides or relies on, with their 0.8.1 source digest
(`net.compat._canary`; checked by tests/unit/net/compat/test_in_place.py)."""


@asynccontextmanager
async def dialer_host() -> AsyncIterator[IHost]:
    """A running libp2p host with a throwaway key that only dials out (Noise, Yamux)."""
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_x25519_key_pair().private_key)
    host = quiet_auto_connector(new_host(  # it dials what it is asked to, nothing else
        key_pair=key_pair, sec_opt={NOISE_PROTOCOL_ID: noise}, muxer_preference="YAMUX",
        connection_config=ConnectionConfig(max_connections_per_peer=1)))
    # One attempt per dial-back: retries would stretch a failed one to seconds, and
    # the requester asks again in its next round anyway.
    # Any: `retry_config` is Swarm's, not on libp2p's INetworkService interface.
    network: Any = host.get_network()
    network.retry_config = RetryConfig(max_retries=0)
    try:
        async with host.run(listen_addrs=[]):
            yield host
    finally:
        await close_host(host)  # shielded, bounded; and sockets a cancelled close left


def _response(status: int, text: str = "", addr: bytes | None = None) -> bytes:
    message = Message()
    message.type = Message.DIAL_RESPONSE
    message.dialResponse.status = status  # type: ignore[assignment]
    if text:
        message.dialResponse.statusText = text
    if addr is not None:
        message.dialResponse.addr = addr
    return bytes(message.SerializeToString())


class AutoNat:
    """A node's AutoNAT client (its `status`) and server (`serve`, when it has a dialer)."""

    def __init__(self, net: AutoNatHost, dialer: IHost | None, config: AutoNatConfig,
                 rng: random.Random | None = None, arrivals: InboundShares | None = None
                 ) -> None:
        self._net = net
        self._dialer = dialer
        self._arrivals = arrivals  # our inbound TCP connections: dial-backs seen (attack 77)
        self.config = config
        self.verdicts = Verdicts(config.confirmations)
        #: The status as of the last round's end; what the relay and DHT modes follow.
        self.watch = ReachabilityWatch()
        self.limiter = DialBackLimiter(per_peer=config.per_peer_per_min,
                                       total=config.global_per_min)
        self._dials = trio.CapacityLimiter(config.max_concurrent_dials)
        self._rng = rng or random.Random()
        self.rounds = 0
        self._asked: OrderedDict[str, None] = OrderedDict()  # peers asked, latest last
        #: Requesters we dialled back lately: did the dial-back reach them (bounded).
        self.dialled_back: OrderedDict[str, bool] = OrderedDict()

    @property
    def status(self) -> Reachability:
        """public, private or unknown (docs/network.md, "Reachability"), as the verdicts
        stood when the last round ended (`check_once`)."""
        return self.watch.status

    # -- server ------------------------------------------------------------------

    async def serve(self, stream: NetStream) -> None:
        """Answer one DIAL request: dial the requester back (bounded), say how it went."""
        raw = await stream.read_frame(max_size=MAX_AUTONAT_MESSAGE,
                                      timeout_s=SERVE_READ_TIMEOUT_S)
        transport = stream.transport_addrs()
        if transport is None or any("/p2p-circuit" in a for a in transport):
            # Over a relay the "observed IP" is the relay's: the spec forbids serving it,
            # and a connection that cannot say what it runs over is treated the same.
            answer = _response(Message.E_DIAL_REFUSED, "not over a relayed connection")
        else:
            answer = await self._answer(raw, stream.remote_peer_id, stream.remote_host)
        await stream.write_frame(answer, max_size=MAX_AUTONAT_MESSAGE)

    async def _answer(self, raw: bytes, requester: str, remote_host: str | None) -> bytes:
        request = Message()
        try:
            request.ParseFromString(raw)
        except ProtobufDecodeError:
            return _response(Message.E_BAD_REQUEST, "not an AutoNAT message")
        if request.type != Message.DIAL or not request.HasField("dial"):
            return _response(Message.E_BAD_REQUEST, "expected a DIAL request")
        try:
            claimed = ID(request.dial.peer.id).to_base58()
        except Exception:
            claimed = ""
        if claimed != requester:
            return _response(Message.E_BAD_REQUEST, "the peer id is not the requester's")
        if len(request.dial.peer.addrs) > MAX_REQUEST_ADDRS:
            return _response(Message.E_BAD_REQUEST, "too many addresses")
        ip = observed_ip(remote_host or "")
        if ip is None:
            return _response(Message.E_DIAL_REFUSED, "no observed IP address")
        targets = dial_back_addrs([bytes(a) for a in request.dial.peer.addrs], ip,
                                  limit=self.config.max_dial_addrs)
        if not targets:
            return _response(Message.E_DIAL_REFUSED, "no TCP address to dial back")
        if self._dialer is None:
            return _response(Message.E_DIAL_REFUSED, "this node does not dial back")
        refused = self.limiter.admit(requester, self._net.config.clock_ms())
        if refused is not None:
            return _response(Message.E_DIAL_REFUSED, refused)
        try:
            self._dials.acquire_nowait()
        except trio.WouldBlock:
            return _response(Message.E_DIAL_REFUSED, "busy; try again later")
        try:
            for target in targets:
                if await self._dial_back(requester, target):
                    self._remember(requester, True)
                    return _response(Message.OK, addr=multiaddr.Multiaddr(target).to_bytes())
        finally:
            self._dials.release()
        self._remember(requester, False)
        return _response(Message.E_DIAL_ERROR, "dial-back failed")

    async def _dial_back(self, requester: str, target: str) -> bool:
        # Any: `unblock_peer` is Swarm's, not on libp2p's INetworkService interface.
        dialer: Any = self._dialer
        pid = ID.from_base58(requester)
        dialer.get_peerstore().clear_addrs(pid)  # dial this address, no other
        # py-libp2p refuses for a minute to dial a peer whose dial failed: a requester
        # that fixed its port forwarding must get a real dial on its next request.
        dialer.get_network().unblock_peer(pid)
        ok = False
        with trio.move_on_after(self.config.dial_timeout_s):
            try:
                await dialer.connect(PeerInfo(pid, [multiaddr.Multiaddr(target)]))
                ok = True
            except Exception as exc:
                log.debug("dial-back failed peer=%s addr=%s error=%r", requester, target, exc)
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            try:
                await dialer.disconnect(pid)
            except Exception as exc:  # nothing to close after a failed dial
                log.debug("dial-back disconnect failed peer=%s error=%r", requester, exc)
        log.info("dial-back peer=%s addr=%s reached=%s", requester, target, ok)
        return ok

    def _remember(self, requester: str, reached: bool) -> None:
        keep_latest(self.dialled_back, requester, reached, MAX_DIALLED_BACK_KEPT)

    def peer_status(self, peer_id: str, host: IHost) -> Reachability:
        """Whether `peer_id` can be dialled, as this node saw it: public if a dial-back
        reached it or we hold a connection we dialled; private if our dial-back failed
        (and we did not dial it since); else unknown."""
        reached = self.dialled_back.get(peer_id)
        if reached:
            return "public"
        try:
            conns = host.get_network().get_connections(ID.from_base58(peer_id))
        except Exception:  # not a peer id we know how to parse or hold
            conns = []
        if any(getattr(getattr(c, "direction", None), "name", "") == "OUTBOUND"
               for c in conns):
            return "public"
        return "private" if reached is False else "unknown"

    # -- client ------------------------------------------------------------------

    async def ask(self, server: str) -> bool | None:
        """Ask `server` to dial us back: True (it reached us), False (it tried and
        could not), None (no verdict: refused, unsupported, bad answer, unreachable)."""
        return (await self._ask(server))[0]

    async def _verified_ask(self, server: str) -> tuple[bool | None, str | None, bool]:
        """`_ask`, and whether an OK's dial-back was seen arriving from the server's
        address while we asked (`InboundShares.reached_from`)."""
        since = self._arrivals.clock() if self._arrivals is not None else 0.0
        verdict, host = await self._ask(server)
        seen = bool(verdict and host and self._arrivals is not None
                    and self._arrivals.reached_from(host, since))
        return verdict, host, seen

    async def _ask(self, server: str) -> tuple[bool | None, str | None]:
        """`ask`'s verdict, and the address our connection to `server` runs to."""
        request = Message()
        request.type = Message.DIAL
        request.dial.peer.id = ID.from_base58(self._net.peer_id).to_bytes()
        for addr in self._own_addrs():
            request.dial.peer.addrs.append(addr)
        timeout = self.config.request_timeout_s
        try:
            stream = await self._net.open_stream(
                server, AUTONAT_PROTOCOL_ID,
                first=encode_frame(request.SerializeToString()), timeout_s=timeout)
            host = stream.remote_host
            try:
                raw = await stream.read_frame(max_size=MAX_AUTONAT_MESSAGE, timeout_s=timeout)
            finally:
                await stream.reset()
        except P2PInferError as exc:
            log.debug("autonat request failed server=%s error=%s", server, exc)
            return None, None
        response = Message()
        try:
            response.ParseFromString(raw)
        except ProtobufDecodeError:
            return None, host
        if response.type != Message.DIAL_RESPONSE:
            return None, host
        status = response.dialResponse.status
        if status in (Message.OK, Message.E_DIAL_ERROR):
            return status == Message.OK, host
        log.debug("autonat no verdict server=%s status=%s text=%s", server, status,
                  response.dialResponse.statusText)
        return None, host

    def _own_addrs(self) -> list[bytes]:
        out = []
        for text in self._net.addrs():
            if is_circuit_addr(text):  # reached through a relay: nothing to dial back
                continue
            addr = multiaddr.Multiaddr(text)
            if addr.get_peer_id() is not None:
                addr = addr.decapsulate_code(421)  # /p2p/<our id>: the id goes separately
            out.append(addr.to_bytes())
        return out[:MAX_REQUEST_ADDRS]

    async def check_once(self) -> Reachability:
        """One round: ask up to `servers_per_round` connected peers at once."""
        peers = self._net.peers()
        self._rng.shuffle(peers)
        peers.sort(key=lambda peer: peer in self._asked)  # those never asked first
        asked = peers[: self.config.servers_per_round]
        for peer in asked:
            keep_latest(self._asked, peer, None, MAX_ASKED_KEPT)

        async def ask_one(server: str) -> None:
            verdict, host, seen = await self._verified_ask(server)
            if verdict is not None:  # one vote per address group (attack 45)
                self.verdicts.record(voter(server, host), verdict, verified=seen)

        async with trio.open_nursery() as nursery:
            for server in asked:
                nursery.start_soon(ask_one, server)
        self.rounds += 1
        self.watch.set(self.verdicts.status)
        return self.watch.status

    async def run(self) -> None:
        """Check now (after `first_delay_s`) and again every interval, until cancelled."""
        await trio.sleep(self.config.first_delay_s)
        previous: Reachability = "unknown"
        while True:
            status = await self.check_once()
            if status != previous:
                yes, no = self.verdicts.counts()
                log.info("reachability=%s reached_by=%d not_reached_by=%d", status, yes, no)
                previous = status
            if status == "unknown":
                await self._until_new_peers(self.config.unknown_interval_s)
            else:
                await trio.sleep(self.config.interval_s)

    async def _until_new_peers(self, limit_s: float) -> None:
        """Wait `limit_s`, or less once a peer never asked is connected (at least
        NEW_PEER_ROUND_GAP_S after the last round): a node still unknown asks a peer it
        just met at once (the one a DHT walk found, the second of a two-node network)
        rather than up to 30 s later."""
        with trio.move_on_after(limit_s):
            await trio.sleep(NEW_PEER_ROUND_GAP_S)
            while all(peer in self._asked for peer in self._net.peers()):
                await trio.sleep(NEW_PEER_POLL_S)
