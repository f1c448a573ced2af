"""A node's Circuit Relay v2 service: py-libp2p 0.8.1's HOP/STOP protocol, with the bounds
it lacks.

Every node runs one `RelayHop`: its STOP side (accepting connections a relay brings
in) always, its HOP side (being a relay for others) when `RelayServiceConfig.mode`
says so (`follow_reachability`). What py-libp2p enforces, and what is added here:

- py-libp2p: a total of reservations; per reserved peer a number of circuits; per
  circuit a byte budget (both directions), checked as data flows; a duration checked
  only when data arrives (an idle circuit lived forever); no HOP over a relayed
  connection.
- fixed (`net/compat/relay_v2.py`, py-libp2p defects): a RESERVE is for the peer on
  the connection only, not the one its optional `peer` field names; slots of peers no
  longer connected are freed (py-libp2p kept them until their TTL, an hour by
  default); the duration cut also for an idle circuit.
- added: STOP (a relay handing this node a connection) only from a relay this node
  holds a slot at, and at most `MAX_INBOUND_RELAYED` inbound relayed connections at
  once (py-libp2p answered STOP from any connected peer: one TCP connection carried
  any number of connections, each a Noise handshake under a fresh key, past every
  inbound limit; attack 36);
- added: circuits to one peer shared fairly among source address groups when full
  (the same rule as slots: a newcomer's group holding two fewer than the largest cuts
  that group's oldest circuit; attack 37);
- added: slots per source address (an IPv6 /56 counting as one), shared fairly when
  full (`relay_rules.slot_decision`: a group holding two fewer than the largest takes
  that group's oldest slot, attack 34); circuits in all and per source peer.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import trio
from libp2p.abc import IHost, INetStream
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.resources import RelayLimits

from p2pinfer.bounded import RateLimiter
from p2pinfer.net.autonat_rules import observed_ip
from p2pinfer.net.compat.relay_v2 import BoundedCircuitV2, reset_quietly
from p2pinfer.net.reachability import ReachabilityWatch
from p2pinfer.net.relay_carrier import note_limits
from p2pinfer.net.relay_rules import (
    RelayServiceConfig,
    is_circuit_addr,
    slot_decision,
    slot_group,
)

log = logging.getLogger(__name__)

#: Inbound relayed connections (open, or in their handshake) a node takes at once, from
#: all its relays together: it holds slots at 2 relays, ours grant a node 8 circuits each.
MAX_INBOUND_RELAYED = 32


def remote_ip(stream: INetStream) -> str | None:
    """The IP a raw py-libp2p stream's connection comes from; None if it cannot tell."""
    try:
        address = stream.get_remote_address()
    except Exception:
        return None
    return observed_ip(str(address[0])) if address else None


class Circuit:
    """A circuit this relay carries: its HOP stream, its source's address group (an
    IPv4 address, an IPv6 /56), and how to cut it."""

    __slots__ = ("done", "group", "scope", "stream")

    def __init__(self, stream: INetStream, group: str) -> None:
        self.stream = stream
        self.group = group
        self.scope = trio.CancelScope()
        self.done = trio.Event()


def circuit_target(msg: HopMessage) -> ID | None:
    """The peer a CONNECT asks for; None if it names none that parses."""
    try:
        return ID(msg.peer.id) if msg.HasField("peer") and msg.peer.id else None
    except Exception:
        return None


#: RESERVE requests (new or refresh) one peer may send at once, then one per
#: RESERVE_EVERY_S, or an eighth of the slot's TTL when that is shorter (attack 63: each
#: refresh signs a voucher; clients refresh every 120 s, slots live 600 s).
RESERVE_BURST = 4
RESERVE_EVERY_S = 10.0
MAX_RESERVERS = 4096  # peers whose RESERVE rate is remembered


class RelayHop(BoundedCircuitV2):
    """py-libp2p's CircuitV2 relay (defects fixed) with our limits; HOP served only between
    `start_serving` and `stop_serving`. `refusals` counts refused requests by reason,
    circuits cut at their duration ("duration") and slots given to a group holding
    fewer ("evicted")."""

    def __init__(self, host: IHost, config: RelayServiceConfig) -> None:
        limits = RelayLimits(
            duration=config.circuit_duration_s,
            data=config.circuit_bytes,
            max_circuit_conns=config.max_circuits_per_target,
            max_reservations=config.max_reservations,
            reservation_ttl=config.reservation_ttl_s,
        )
        super().__init__(host, limits=limits, allow_hop=False)
        self.config = config
        self.refusals: Counter[str] = Counter()
        self.circuits = 0
        self._circuits_by_source: Counter[ID] = Counter()
        self._circuits_to: dict[ID, dict[Circuit, str]] = {}  # target -> its circuits
        self._slot_group: dict[ID, str] = {}  # holder -> address group, oldest first
        #: Whether this node holds a slot at the relay `peer` (set by `NetHost` from its
        #: relay client): STOP is taken from those relays only.
        self.our_relay: Callable[[ID], bool] = lambda peer: False
        #: Told of each relay that brings this node a connection (`RelayChecker.saw_stop`).
        self.on_stop: Callable[[ID], None] = lambda relay: None
        #: The circuit limits (bytes, seconds) the relay `peer` grants us in our slot
        #: there (0: none said).
        self.circuit_limits: Callable[[ID], tuple[int, int]] = lambda peer: (0, 0)
        self._stops_pending = 0
        # A client refreshes at most about twice a TTL: a relay set to a short TTL (tests,
        # `--relay-ttl`) lets refreshes come that much faster.
        every_s = min(RESERVE_EVERY_S, config.reservation_ttl_s / 8)
        self._reserve_rate = RateLimiter(1 / every_s, RESERVE_BURST, max_keys=MAX_RESERVERS)

    @property
    def serving(self) -> bool:
        """Whether this node is a relay for others right now."""
        return bool(self.allow_hop)

    def start_serving(self) -> None:
        """Answer HOP (reservations and connects) from now on."""
        if not self.allow_hop:
            self.allow_hop = True
            self.host.set_stream_handler(HOP_PROTOCOL_ID, self._handle_hop_stream)
            log.info("relay service on")

    def stop_serving(self) -> None:
        """Stop answering HOP; existing circuits run on until their limits."""
        if self.allow_hop:
            self.allow_hop = False
            self.host.remove_stream_handler(HOP_PROTOCOL_ID)
            self.resource_manager._reservations.clear()
            self._slot_group.clear()
            log.info("relay service off")

    def reservations(self) -> list[str]:
        """PeerIDs holding a live slot here."""
        self._prune()
        return sorted(p.to_base58() for p in self.resource_manager._reservations)

    # -- reservations ------------------------------------------------------------

    async def _handle_hop_stream(self, stream: INetStream) -> None:
        if not self.allow_hop:  # the handler was removed while this stream negotiated
            await stream.reset()
            return
        await super()._handle_hop_stream(stream)

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        peer = stream.muxed_conn.peer_id
        if self._reserve_rate.acquire(str(peer)) > 0.0:
            # Refused before anything is pruned, decided or signed, and the stream ends:
            # py-libp2p's loop would read the next RESERVE piped behind this one.
            self.refusals["reserve-rate"] += 1
            with trio.move_on_after(2):
                await self._send_status(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED,
                                        "reserve-rate")
            await reset_quietly(stream)
            return
        group = slot_group(remote_ip(stream))
        self._prune()
        slots = self.resource_manager._reservations
        held = {p: g for p, g in self._slot_group.items() if p in slots}
        held.update((p, "") for p in slots if p not in held)
        decision = slot_decision(held, peer, group, total=self.config.max_reservations,
                                 per_group=self.config.max_reservations_per_ip)
        if decision.refusal is not None:
            self.refusals[decision.refusal] += 1
            log.info("relay reservation refused peer=%s group=%s reason=%s",
                     peer, group, decision.refusal)
            await self._send_status(stream, StatusCode.RESERVATION_REFUSED
                                    if decision.refusal == "no-ip" else
                                    StatusCode.RESOURCE_LIMIT_EXCEEDED, decision.refusal)
            return
        if decision.evict is not None:
            # The holder keeps its circuits; it learns when its refresh is refused (every
            # `RelayClientConfig.refresh_every_s` at most).
            slots.pop(decision.evict, None)
            self._slot_group.pop(decision.evict, None)
            self.refusals["evicted"] += 1
            log.info("relay slot of peer=%s (group=%s) given to peer=%s (group=%s)",
                     decision.evict, held[decision.evict], peer, group)
        # Recorded first: py-libp2p answers, then sleeps, before returning.
        self._slot_group.setdefault(peer, group or "")
        try:
            await super()._handle_reserve(stream, msg)
        finally:
            if peer not in slots:
                self._slot_group.pop(peer, None)

    def _prune(self) -> None:
        """Free the slots of peers gone or expired (the spec: a slot lives with its connection)."""
        for peer in self.prune_reservations():
            self._slot_group.pop(peer, None)

    # -- connections a relay brings in (STOP) -------------------------------------------

    async def _handle_stop_stream(self, stream: INetStream) -> None:
        relay = stream.muxed_conn.peer_id
        refusal = None
        if not self.our_relay(relay):
            refusal = "stop-not-our-relay"
        elif self._inbound_relayed() + self._stops_pending >= MAX_INBOUND_RELAYED:
            refusal = "stop-inbound-relayed"
        if refusal is not None:
            self.refusals[refusal] += 1
            log.info("relayed connection refused relay=%s reason=%s", relay, refusal)
            with trio.move_on_after(2):
                await self._send_stop_status(stream, StatusCode.PERMISSION_DENIED
                                             if refusal == "stop-not-our-relay" else
                                             StatusCode.RESOURCE_LIMIT_EXCEEDED, refusal)
            await reset_quietly(stream)
            return
        self.on_stop(relay)
        note_limits(stream, *self.circuit_limits(relay))  # its cuts (attacks 69, 71)
        self._stops_pending += 1
        try:
            await super()._handle_stop_stream(stream)
        finally:
            self._stops_pending -= 1

    def _inbound_relayed(self) -> int:
        """Inbound connections this node holds that run through a relay."""
        count = 0
        for conn in self.host.get_network().get_connections():
            try:
                addrs = [str(a) for a in conn.get_transport_addresses()]
            except Exception:  # a connection that cannot tell is not one
                continue
            if getattr(conn, "direction", None) == Direction.INBOUND and addrs \
                    and all(is_circuit_addr(a) for a in addrs):
                count += 1
        return count

    # -- circuits ------------------------------------------------------------------

    async def _handle_connect(self, stream: INetStream, msg: HopMessage) -> None:
        source = stream.muxed_conn.peer_id
        circuit = Circuit(stream, slot_group(remote_ip(stream)) or "")
        target = circuit_target(msg)
        refusal = None
        if self.circuits >= self.config.max_circuits:
            refusal = "circuits"
        elif self._circuits_by_source[source] >= self.config.max_circuits_per_peer:
            refusal = "circuits-per-peer"
        elif target is not None and self.resource_manager.has_reservation(target):
            refusal = await self._make_room(target, circuit)
        if refusal is not None:
            self.refusals[refusal] += 1
            log.info("relay circuit refused source=%s reason=%s", source, refusal)
            await self._send_status(stream, StatusCode.RESOURCE_LIMIT_EXCEEDED, refusal)
            await reset_quietly(stream)
            return
        to_target = self._circuits_to.setdefault(target, {}) if target is not None else {}
        to_target[circuit] = circuit.group
        self.circuits += 1
        self._circuits_by_source[source] += 1
        try:
            with circuit.scope:
                await super()._handle_connect(stream, msg)
        finally:
            self.circuits -= 1
            self._circuits_by_source[source] -= 1
            if self._circuits_by_source[source] <= 0:
                del self._circuits_by_source[source]
            to_target.pop(circuit, None)
            if target is not None and not self._circuits_to.get(target, True):
                del self._circuits_to[target]
            circuit.done.set()

    async def _make_room(self, target: ID, circuit: Circuit) -> str | None:
        """None if a circuit to `target` may open now (after cutting another source
        group's oldest, when the target's circuits are full and that group holds two
        more than `circuit`'s: `slot_decision`), else why not."""
        held = self._circuits_to.get(target, {})
        if len(held) < self.config.max_circuits_per_target:
            return None
        decision = slot_decision(held, circuit, circuit.group,
                                 total=self.config.max_circuits_per_target,
                                 per_group=self.config.max_circuits_per_target)
        victim = decision.evict
        if victim is None:
            return "circuits-per-target"
        self.refusals["circuit-evicted"] += 1
        log.info("relay circuit to peer=%s of group=%s cut for group=%s",
                 target, victim.group, circuit.group)
        # The circuit's other stream (to the target) is in `_active_relays` beside it.
        others = {id(s): s for pair in list(self._active_relays.values())
                  if victim.stream in pair for s in pair
                  if s is not None and s is not victim.stream}
        victim.scope.cancel()
        for s in (victim.stream, *others.values()):
            await reset_quietly(s)
        with trio.move_on_after(2):  # until py-libp2p gave the target's count back
            await victim.done.wait()
        return None

    def on_duration_cut(self, peer_id: ID) -> None:
        self.refusals["duration"] += 1
        super().on_duration_cut(peer_id)


async def follow_reachability(hop: RelayHop, config: RelayServiceConfig,
                              watch: ReachabilityWatch) -> None:
    """Keep the HOP service on or off as `config.mode` says: auto follows AutoNAT (serve
    only while public: a relay behind NAT helps no one), from the moment its verdict
    changes."""
    if config.mode == "on":
        hop.start_serving()
    if config.mode != "auto":
        return
    while True:
        status = watch.status
        if status == "public":
            hop.start_serving()
        else:
            hop.stop_serving()
        await watch.changed_from(status)
