"""Being reached through relays, and reaching others through theirs (Circuit Relay v2).

A node behind NAT (`RelayClientConfig`: relays named by the operator, or, while
AutoNAT says private, connected peers that serve the relay protocol) holds a slot
at up to `max_relays` relays, refreshes it before it expires, and drops it when the
relay goes. While it holds slots, its addresses (`NetHost.addrs()`: adverts,
identify, DHT provider records) include one `/p2p-circuit` address per relay.

A consumer whose direct dial to a provider fails dials one of the provider's
circuit addresses (`dial`): the relayed connection carries Noise end to end, so the
relay sees only ciphertext, and every stream protocol runs over it unchanged.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.connection_types import ConnectionType
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig, RelayRole
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg
from libp2p.utils.varint import decode_varint_with_size
from multiaddr import Multiaddr

from p2pinfer.addresses import local_ip_towards
from p2pinfer.bounded import keep_latest
from p2pinfer.errors import PeerUnreachableError
from p2pinfer.net.compat.dial_addrs import connect_info
from p2pinfer.net.compat.relay_v2 import reset_quietly
from p2pinfer.net.config import parse_peer_addr, parse_peer_id
from p2pinfer.net.reachability import ReachabilityWatch
from p2pinfer.net.relay import RelayHop
from p2pinfer.net.relay_rules import (
    CIRCUIT,
    RelayClientConfig,
    circuit_addr,
    is_circuit_addr,
    too_limited,
    worth_a_direct_try,
)

log = logging.getLogger(__name__)

MAX_CIRCUIT_ADDRS_TRIED = 4  # of a provider's circuit addresses, per dial
MAX_LIMITED_REMEMBERED = 256  # relays known too limited (the oldest forgotten first)


@dataclass
class Slot:
    """A reservation this node holds at a relay."""

    relay_id: str
    relay_addr: str  # the relay's transport address we reserved through
    expires: float  # unix seconds, as the relay said
    configured: bool  # named by the operator (kept trying) or picked automatically
    circuit_bytes: int = 0  # the relay's limits for a circuit to us (0: none said)
    circuit_s: int = 0
    refreshed: float = 0.0  # unix seconds of the last reservation the relay granted


class RelayClient:
    """Reservations at relays and relayed dials for one host."""

    def __init__(self, host: IHost, hop: RelayHop, config: RelayClientConfig) -> None:
        self._host = host
        self.config = config
        # STOP only: dialling through a relay must not take a slot there (py-libp2p's
        # default client role reserves before every CONNECT).
        self._transport = CircuitV2Transport(host, hop, RelayConfig(roles=RelayRole.STOP))
        self.slots: dict[str, Slot] = {}
        #: Relays not used because their circuits are too small for jobs (`too_limited`):
        #: relay id -> (bytes, seconds) they granted. Not picked automatically again (the
        #: last MAX_LIMITED_REMEMBERED of them).
        self.limited: OrderedDict[str, tuple[int, int]] = OrderedDict()
        #: Peer ids to reserve at before any other relay: the node's bootstrap peers.
        self.preferred: Callable[[], set[str]] = set
        #: Relays not picked automatically (failed their checks: `RelayChecker`).
        self.shunned: Callable[[str], bool] = lambda relay_id: False
        self._changed = trio.Event()
        self._direct_addrs = host.get_addrs
        # Adverts, identify and DHT records all read get_addrs; replaced on this instance.
        host.get_addrs = self._addrs_with_circuits  # type: ignore[method-assign]

    def _addrs_with_circuits(self) -> list[Multiaddr]:
        own = self._host.get_id().to_base58()
        circuits = [multiaddr.Multiaddr(circuit_addr(s.relay_addr, s.relay_id, own))
                    for s in self.slots.values()]
        return list(self._direct_addrs()) + circuits

    async def slots_changed(self) -> None:
        """Return when a slot is next taken or dropped (so adverts can be republished)."""
        await self._changed.wait()

    def _note_change(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def circuit_addrs(self) -> list[str]:
        """This node's addresses through the relays it holds a slot at."""
        return [str(a) for a in self._addrs_with_circuits() if is_circuit_addr(str(a))]

    # -- reserving -------------------------------------------------------------------

    async def reserve(self, relay_addr: str, *, configured: bool = False) -> bool:
        """Take (or refresh) a slot at the relay at `relay_addr` (`/.../p2p/<relay>`). A
        relay picked automatically whose circuits are too small for jobs (`too_limited`:
        a go-libp2p relay's defaults) is not used; one the operator named is, with a
        warning."""
        info = parse_peer_addr(relay_addr)
        relay_id = info.peer_id.to_base58()
        limits = (0, 0)
        try:
            with trio.fail_after(self.config.dial_timeout_s):
                await connect_info(self._host, info)
                stream = Recorded(await self._host.new_stream(info.peer_id, [HOP_PROTOCOL_ID]))
                try:
                    ok = await self._transport._make_reservation(
                        stream, info.peer_id)  # type: ignore[arg-type]  # reads, writes only
                finally:
                    await stream.close()
            limits = answer_limits(bytes(stream.read_bytes))
        except Exception as exc:  # unreachable, no HOP, timed out: no slot
            log.info("relay reservation failed relay=%s error=%r", relay_id, exc)
            ok = False
        if ok and too_limited(*limits):
            if not configured:
                log.info("relay not used: circuits too small for jobs relay=%s bytes=%d "
                         "seconds=%d", relay_id, *limits)
                self.remember_limited(relay_id, limits)
                self._transport._reservations.pop(info.peer_id, None)
                ok = False
            else:
                log.warning("relay named by --reserve-relay cuts circuits at %d bytes or %d s:"
                            " longer jobs through it fail relay=%s", *limits, relay_id)
        if not ok:
            if self.slots.pop(relay_id, None) is not None:
                log.info("relay slot dropped relay=%s", relay_id)
                self._note_change()
            return False
        expires = float(self._transport._reservations.get(info.peer_id, 0))
        transport = relay_addr.split("/p2p/")[0]
        new = relay_id not in self.slots
        self.slots[relay_id] = Slot(relay_id, transport, expires, configured, *limits,
                                    refreshed=time.time())
        if new:
            self._note_change()
        log.info("relay slot held relay=%s expires_in=%.0fs", relay_id, expires - time.time())
        return True

    def drop(self, relay_id: str) -> None:
        """Give up the slot at `relay_id` (its circuit address leaves our addresses)."""
        self._transport._reservations.pop(ID.from_base58(relay_id), None)
        if self.slots.pop(relay_id, None) is not None:
            self._note_change()

    def holds_slot_at(self, relay: ID) -> bool:
        """Whether this node holds (or is just taking) a slot at the relay `relay`: only
        such a relay may bring it connections (`RelayHop`'s STOP)."""
        return relay.to_base58() in self.slots or relay in self._transport._reservations

    def circuit_limits_at(self, relay: ID) -> tuple[int, int]:
        """The circuit limits (bytes, seconds) the relay `relay` granted in our slot there
        (0: none said, or no slot)."""
        slot = self.slots.get(relay.to_base58())
        return (slot.circuit_bytes, slot.circuit_s) if slot is not None else (0, 0)

    def remember_limited(self, relay_id: str, limits: tuple[int, int]) -> None:
        """Note a relay too limited for jobs; a swarm of them is remembered only so far."""
        keep_latest(self.limited, relay_id, limits, MAX_LIMITED_REMEMBERED)

    async def run(self, watch: ReachabilityWatch) -> None:
        """Hold slots as the config says until cancelled: refresh, replace, drop; every
        `check_interval_s`, and at once when AutoNAT's verdict changes (a node that just
        learnt it is private reserves now, not up to 5 s later)."""
        while True:
            seen = watch.status
            await self.upkeep(seen)
            with trio.move_on_after(self.config.check_interval_s):
                await watch.changed_from(seen)

    async def upkeep(self, reachability: str) -> None:
        """One round: drop slots at relays gone, refresh those near expiry or not refreshed
        for `refresh_every_s` (a slot given away is dropped then), take new ones."""
        connected = {p.to_base58() for p in self._host.get_connected_peers()}
        now = time.time()
        for slot in list(self.slots.values()):
            gone = slot.relay_id not in connected
            if gone or slot.expires - now < self.config.refresh_margin_s or \
                    now - slot.refreshed >= self.config.refresh_every_s:
                await self.reserve(f"{slot.relay_addr}/p2p/{slot.relay_id}",
                                   configured=slot.configured)
        for addr in self.config.reserve:
            relay_id = parse_peer_addr(addr).peer_id.to_base58()
            if relay_id not in self.slots and len(self.slots) < self.config.max_relays:
                await self.reserve(addr, configured=True)
        if self.config.auto and reachability == "private":
            for addr in self._relay_candidates(connected):
                if len(self.slots) >= self.config.max_relays:
                    break
                await self.reserve(addr)

    def _relay_candidates(self, connected: set[str]) -> list[str]:
        """Connected peers whose identify says they serve HOP, with a direct address: the
        node's bootstrap peers first (the operator's word), the others in random order.
        Not by address: relays from low addresses (any Sybils a DHT walk meets) took
        every slot, and one that takes slots and refuses circuits left the node
        unreachable (attack 40)."""
        store = self._host.get_peerstore()
        out = []
        for peer in self._host.get_connected_peers():
            pid = peer.to_base58()
            if pid in self.slots or pid in self.limited or self.shunned(pid):
                continue
            try:
                if not store.supports_protocols(peer, [HOP_PROTOCOL_ID]):
                    continue
                addrs = [str(a) for a in store.addrs(peer) if not is_circuit_addr(str(a))]
            except Exception:  # forgotten by the peerstore meanwhile
                continue
            if addrs:
                out.append(f"{addrs[0]}/p2p/{pid}")
        random.shuffle(out)
        first = self.preferred()
        return sorted(out, key=lambda addr: addr.rsplit("/p2p/", 1)[1] not in first)

    # -- dialling ----------------------------------------------------------------------

    def circuit_addrs_of(self, peer_id: str, advertised: Sequence[str]) -> list[str]:
        """`peer_id`'s circuit addresses: those in `advertised` (its signed advert), then
        those the peerstore learnt (DHT records, identify), each ending in its id."""
        try:
            stored = [str(a) for a in self._host.get_peerstore().addrs(parse_peer_id(peer_id))]
        except Exception:  # nothing stored for it
            stored = []
        suffix = f"/p2p/{peer_id}"
        known = list(advertised) + [a if a.endswith(suffix) else a + suffix for a in stored]
        return list(dict.fromkeys(a for a in known if is_circuit_addr(a)))

    def direct_worth_trying(self, peer_id: str, advertised: Sequence[str]) -> bool:
        """Whether to try `peer_id` directly before its relays (`worth_a_direct_try`, over
        its signed advert's addresses, else what the peerstore learnt)."""
        addrs = list(advertised)
        if not addrs:
            try:
                addrs = [str(a) for a in
                         self._host.get_peerstore().addrs(parse_peer_id(peer_id))]
            except Exception:  # nothing stored for it
                return False
        return worth_a_direct_try(addrs, local_ip_towards)

    async def dial(self, peer_id: str, addrs: Sequence[str]) -> str:
        """Connect to `peer_id` through one of its circuit addresses in `addrs` (others are
        ignored), in order; return the address that worked. A relay whose CONNECT answer
        says its circuits end too soon for a job (`too_limited`: a go-libp2p relay's
        defaults) is passed over while another may work, and used when none does.
        PeerUnreachableError if none did."""
        pid = parse_peer_id(peer_id)
        tried: list[str] = []
        passed_over: list[str] = []
        candidates = [a for a in addrs if is_circuit_addr(a)][:MAX_CIRCUIT_ADDRS_TRIED]
        for i, text in enumerate(candidates):  # the last one is taken whatever its limits
            last = i == len(candidates) - 1
            outcome = await self._try_circuit(pid, text, tried, limited_ok=last)
            if outcome == "connected":
                return text
            if outcome == "limited":
                passed_over.append(text)
        for text in passed_over:  # the last one failed: one passed over is better than none
            if await self._try_circuit(pid, text, tried, limited_ok=True) == "connected":
                return text
        raise PeerUnreachableError(
            f"no relay reached {peer_id}" + (f" ({'; '.join(tried)})" if tried else
                                              " (it advertises no circuit address)"))

    async def _try_circuit(self, pid: ID, text: str, tried: list[str], *,
                           limited_ok: bool) -> str:
        """One relayed dial: "connected", "limited" (the relay's circuits are too small
        and not `limited_ok`: nothing kept) or "failed" (why, appended to `tried`)."""
        try:
            with trio.fail_after(self.config.dial_timeout_s):
                stream, relay_id, limits = await self._hop_connect(pid, text)
                if too_limited(*limits):
                    self.remember_limited(relay_id, limits)
                    if not limited_ok:
                        log.info("relay passed over: circuits too small for jobs relay=%s "
                                 "bytes=%d seconds=%d", relay_id, *limits)
                        await reset_quietly(stream)
                        return "limited"
                    log.warning("only a relay that cuts circuits at %d bytes or %d s reaches"
                                " peer=%s: a long job through it fails over", *limits, pid)
                conn = await self._upgrade(stream, text, pid)
            if conn.muxed_conn.peer_id != pid:  # Noise proved someone else
                await conn.close()
                raise PeerUnreachableError(f"{text} reached {conn.muxed_conn.peer_id}")
        except Exception as exc:
            log.info("relayed dial failed peer=%s addr=%s error=%r", pid, text, exc)
            tried.append(f"{text}: {exc}")
            return "failed"
        log.info("connected through relay peer=%s addr=%s", pid, text)
        return "connected"

    async def _hop_connect(self, pid: ID, text: str) -> tuple[INetStream, str, tuple[int, int]]:
        """Ask the relay in circuit address `text` for a circuit to `pid`: the HOP stream
        that carries it, the relay's id and the limits its answer grants (0: none).

        Not py-libp2p's `CircuitV2Transport.dial`: it tries every circuit address its
        peerstore holds for the target before the relay it is given (any peer can plant
        one there through a DHT answer: a relay that never answers then stalled each
        relayed dial), and it drops the limits in the relay's answer."""
        relay_part = text.split(CIRCUIT)[0]
        relay = info_from_p2p_addr(multiaddr.Multiaddr(relay_part))
        await connect_info(self._host, relay)
        stream = await self._host.new_stream(relay.peer_id, [HOP_PROTOCOL_ID])
        try:
            await write_delimited_msg(stream, HopMessage(
                type=HopMessage.CONNECT, peer=CircuitPeerId(id=pid.to_bytes())))
            answer = await read_delimited_msg(stream, HopMessage)
            status = answer.status if answer.HasField("status") else StatusCode.UNUSED
            if answer.type != HopMessage.STATUS or status != StatusCode.OK:
                raise PeerUnreachableError(f"the relay refused the circuit: {status_name(status)}")
        except BaseException:
            await reset_quietly(stream)
            raise
        limits = ((int(answer.limit.data), int(answer.limit.duration))
                  if answer.HasField("limit") else (0, 0))
        return stream, relay.peer_id.to_base58(), limits

    async def _upgrade(self, stream: INetStream, text: str, pid: ID) -> INetConn:
        """Noise and yamux over the circuit `stream` (py-libp2p's swarm keeps the result)."""
        raw = RawConnection(stream=stream, initiator=True,
                            connection_type=ConnectionType.RELAYED,
                            addresses=[multiaddr.Multiaddr(text)])
        try:
            return await self._host.upgrade_outbound_connection(raw, pid)
        except BaseException:
            await reset_quietly(stream)
            raise


def status_name(code: int) -> str:
    """A relay's status code as the spec names it (`NO_RESERVATION`), else the number."""
    try:
        return StatusCode(code).name
    except ValueError:
        return str(code)


class Recorded:
    """A stream that keeps the bytes read from it: py-libp2p's reservation reads the
    relay's answer and drops its limits; they are parsed from these (`answer_limits`)."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self.read_bytes = bytearray()

    async def read(self, n: int | None = None) -> bytes:
        data = await self._stream.read(n)
        self.read_bytes += data
        return data

    async def write(self, data: bytes) -> None:
        await self._stream.write(data)

    async def close(self) -> None:
        await self._stream.close()


def answer_limits(raw: bytes) -> tuple[int, int]:
    """(bytes, seconds) a relay's reservation answer (a varint-delimited HopMessage) grants
    each circuit; 0 for a limit it does not set, (0, 0) for an answer that does not parse."""
    try:
        length, at = decode_varint_with_size(raw)
    except ValueError:
        return (0, 0)
    body = raw[at:at + length]
    message = HopMessage()
    try:
        message.ParseFromString(body)
    except Exception:  # the answer py-libp2p accepted, but not a HopMessage we can read
        return (0, 0)
    if len(body) != length or not message.HasField("limit"):
        return (0, 0)
    return (int(message.limit.data), int(message.limit.duration))
