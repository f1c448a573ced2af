"""Moving a relayed connection to a direct one (DCUtR, `/libp2p/dcutr`), with the bounds
py-libp2p 0.8.1's `libp2p.relay.circuit_v2.dcutr` lacks.

After a consumer reaches a provider through a relay, `upgrade` asks py-libp2p's DCUtR to
get a direct connection: a plain dial first, then the DCUtR exchange, in which both sides
dial the addresses the other names at the same moment (a provider behind NAT dialling
out to a reachable consumer is what usually works). If a direct connection verifies,
the relayed one is closed and the job's stream opens on the direct one; if not, the job
runs over the relay.

Two ways to use it: `maybe_upgrade` before a stream opens (`ask --dcutr`, `node
--dcutr`: this job may go direct, but a punch that fails delays it by up to 6 s), or
`start_behind` once a stream runs over a relay (a node's gateway jobs, by default): the
try runs in the background and delays nothing; the running stream stays on the relayed
connection (a job moves itself onto the direct one, jobs/job_move.py), which closes
once no stream but gossip's uses it, and the peer's next streams take the direct one
(libp2p's connection choice prefers a direct connection).

py-libp2p's service also drives hole punches by itself every 2 s for every relayed
connection and closes the relay leg 60 s after an upgrade, whatever runs on it; and its
responder dials whatever addresses a peer names, on any connection. Here: no driving
(only `upgrade`, before a stream is opened), the responder answers only over a relayed
connection, each peer may start `SESSIONS_PER_MIN` sessions a minute and all peers
together `SESSIONS_IN_ALL_PER_MIN` (peer ids are free), except peers that proved
themselves (`value`: a paid receipt, a good job), which only their own count holds
(attack 42: fresh keys used up the budget). A punch dials
only what the session's CONNECT names (py-libp2p adds every address its peerstore holds
for the peer: identify's, the peer's own word, up to 64), at most `MAX_PEER_ADDRS`, plain
TCP, and a non-global address only in a scope the relay is in
(`relay_rules.punch_targets`): else any peer reaching a node behind NAT through its relay
could make it connect into its own LAN or to its loopback services, and read from the
session's timing which of them answered (attack 35).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.peer.id import ID
from libp2p.rcmgr import Direction
from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol, _local_tcp_listen_addrs
from multiaddr import Multiaddr

from p2pinfer.bounded import PerMinute, keep_latest
from p2pinfer.net.relay_rules import is_circuit_addr, punch_targets

log = logging.getLogger(__name__)

MAX_PEER_ADDRS = 4  # of the addresses a peer names in its CONNECT, dialled
SESSIONS_PER_MIN = 3  # DCUtR sessions a peer may start with us per minute
SESSIONS_IN_ALL_PER_MIN = 20  # ... all unproven peers together (a session dials 4 x 3 times)
MAX_PROVEN = 4096  # peers remembered as proven (a paid receipt, a good job): the latest
UPGRADE_TIMEOUT_S = 6.0
MIN_TRY_S = 3.0  # an upgrade is not tried with less time than this
STREAM_RESERVE_S = 1.0  # of a stream's deadline, kept for opening it after an upgrade try
RETRY_AFTER_S = 60.0  # a full upgrade try that failed is not repeated sooner for the peer
IDLE_POLL_S = 0.5  # how often a relayed connection kept for its streams is looked at
PUNCH_ROUNDS, PUNCH_ROUND_S, PUNCH_GAP_S = 3, 5.0, 2.0  # py-libp2p's: dial rounds, each
#: Streams that do not keep a relayed connection open once a direct one exists: gossip's
#: long-lived stream to the peer (libp2p opens another on the direct connection).
GOSSIP_PROTOCOLS = ("/meshsub/", "/floodsub/")

PATCHED = {
    "libp2p.relay.circuit_v2.dcutr:DCUtRProtocol._auto_drive_loop": "da5e9e25994ba7ba",
    "libp2p.relay.circuit_v2.dcutr:DCUtRProtocol._try_unilateral_upgrade": "093ad0e04435dd57",
    "libp2p.relay.circuit_v2.dcutr:DCUtRProtocol._schedule_relay_close": "77e45deb1be40a8f",
    "libp2p.relay.circuit_v2.dcutr:DCUtRProtocol._decode_observed_addrs": "996054edc139904b",
    "libp2p.relay.circuit_v2.dcutr:DCUtRProtocol._handle_dcutr_stream": "765b03b9a2de6379",
    "libp2p.relay.circuit_v2.dcutr:DCUtRProtocol._perform_hole_punch": "d978c5517fb21282",
    "libp2p.relay.circuit_v2.dcutr:DCUtRProtocol._dial_peer": "cca8ed9949f865dc",
    "libp2p.relay.circuit_v2.dcutr:DCUtRProtocol._verify_direct_connection":
        "27fcf95158cf24dc",
    "libp2p.relay.circuit_v2.dcutr:_local_tcp_listen_addrs": "336d9600db8fa8dd",
}
"""py-libp2p functions this module overrides or relies on, with their 0.8.1 source digest
(`net.compat._canary`; checked by tests/unit/net/compat/test_in_place.py)."""


def relayed_connections(host: IHost, pid: ID) -> list[INetConn]:
    """`host`'s connections to `pid` that run through a relay."""
    out = []
    for conn in host.get_network().get_connections(pid):
        try:
            addrs = [str(a) for a in conn.get_transport_addresses()]
        except Exception:  # a connection that cannot tell is left alone
            continue
        if addrs and all(is_circuit_addr(a) for a in addrs):
            out.append(conn)
    return out


class GuardedDCUtR(DCUtRProtocol):
    """py-libp2p's DCUtR, driven only by `upgrade`, answering only over relayed connections."""

    def __init__(self, host: IHost) -> None:
        super().__init__(host, read_timeout=5, write_timeout=5, dial_timeout=5)
        self.refused = 0  # sessions refused (not over a relay, or over the rate)
        self.upgrades = 0  # relayed connections moved to direct ones by `upgrade`
        self._sessions: PerMinute[ID] = PerMinute()
        #: Peers that proved themselves (`value`): not held to the budget of all peers.
        self._proven: OrderedDict[ID, None] = OrderedDict()
        self._tried: dict[ID, float] = {}  # peer -> when a full upgrade try failed
        self._behind: set[ID] = set()  # peers with a background try (or relay close) running
        self.skipped = 0  # addresses a peer named that a punch did not dial
        #: Transport addresses of the relays this node holds slots at (`RelayClient`):
        #: an inbound relayed connection does not name the relay it came through.
        self.own_relays: Callable[[], Sequence[str]] = tuple

    async def _auto_drive_loop(self) -> None:
        await trio.sleep_forever()  # upgrades happen when a stream needs one, not behind it

    async def _try_unilateral_upgrade(self, peer_id: ID) -> bool:
        return False  # `NetHost.open_stream` has just tried a direct dial, and failed

    def _schedule_relay_close(self, peer_id: ID) -> None:
        pass  # `upgrade` closes the relay leg before any stream uses the connection

    def _decode_observed_addrs(self, addr_bytes: list[bytes]) -> list[Multiaddr]:
        addrs = super()._decode_observed_addrs(list(addr_bytes))
        return [a for a in addrs if not is_circuit_addr(str(a))][:MAX_PEER_ADDRS]

    async def _perform_hole_punch(self, peer_id: ID, addrs: list[Multiaddr],
                                  as_responder: bool = False) -> bool:
        # py-libp2p's, on TCP, less what it adds: the peerstore's addresses of the peer,
        # a named address in any scope, QUIC's UDP spray (our nodes speak TCP only).
        named = [str(a) for a in addrs]
        targets = [Multiaddr(a) for a in punch_targets(named, self._relays_of(peer_id),
                                                       limit=MAX_PEER_ADDRS)]
        if len(targets) < len(named):
            self.skipped += len(named) - len(targets)
            log.info("dcutr punch skips %d of %d named addresses peer=%s",
                     len(named) - len(targets), len(named), peer_id)
        if not targets:
            return False
        source = next(((ip, port) for _family, ip, port in _local_tcp_listen_addrs(self.host)),
                      None)
        for round_ in range(PUNCH_ROUNDS):
            if round_:
                await trio.sleep(PUNCH_GAP_S)
            async with trio.open_nursery() as nursery:
                for addr in targets:
                    nursery.start_soon(self._dial_peer, peer_id, addr, source, as_responder)
                with trio.move_on_after(PUNCH_ROUND_S):
                    while not await self._verify_direct_connection(peer_id):
                        await trio.sleep(0.2)
                nursery.cancel_scope.cancel()
            if await self._verify_direct_connection(peer_id):
                return True
        return False

    def _relays_of(self, peer_id: ID) -> list[str]:
        """Transport addresses of the relays our connections to `peer_id` may run
        through: those an outbound circuit address names, and our own relays."""
        out = list(self.own_relays())
        for conn in relayed_connections(self.host, peer_id):
            for addr in conn.get_transport_addresses():
                base = str(addr).split("/p2p/")[0]
                if base:
                    out.append(base)
        return out

    async def _handle_dcutr_stream(self, stream: INetStream) -> None:
        peer = stream.muxed_conn.peer_id
        try:
            addrs = [str(a) for a in stream.muxed_conn.get_transport_addresses()]
        except Exception:
            addrs = []
        over_relay = bool(addrs) and all(is_circuit_addr(a) for a in addrs)
        if not over_relay or not self._admit(peer):
            self.refused += 1
            log.info("dcutr session refused peer=%s over_relay=%s", peer, over_relay)
            await stream.reset()
            return
        await super()._handle_dcutr_stream(stream)

    def value(self, peer: ID) -> None:
        """`peer` proved itself (a receipt paid for a job, a good job: `NetHost.value_peer`):
        its sessions no longer count towards, or wait on, the budget for all peers. Else
        seven fresh keys used the node's 20 sessions a minute and no consumer's punch
        got through, its jobs all kept on the relay (attack 42)."""
        keep_latest(self._proven, peer, None, MAX_PROVEN)

    def _admit(self, peer: ID) -> bool:
        return self._sessions.admit(peer, SESSIONS_PER_MIN, None if peer in self._proven
                                    else SESSIONS_IN_ALL_PER_MIN)

    async def maybe_upgrade(self, pid: ID, deadline: float) -> bool:
        """Before a stream that must open by trio time `deadline`: if every connection to
        `pid` runs through a relay, try `upgrade` within what the deadline leaves (less
        STREAM_RESERVE_S, at most UPGRADE_TIMEOUT_S), unless that is under MIN_TRY_S (an
        advert fetch has 5 s in all: the job's own stream, with 10 s, tries instead) or a
        try failed in the last RETRY_AFTER_S. So a consumer starts one session per peer."""
        if not self._relayed_only(pid):
            return False
        budget = min(UPGRADE_TIMEOUT_S, deadline - trio.current_time() - STREAM_RESERVE_S)
        if budget < MIN_TRY_S:
            return False
        if await self.upgrade(pid, timeout_s=budget):
            return True
        self._failed(pid)
        return False

    def start_behind(self, pid: ID, nursery: trio.Nursery) -> bool:
        """After a stream to `pid` opened over a relay: try `upgrade` in `nursery`, in the
        background, leaving busy relayed connections open until only gossip uses them
        (at most one try per peer at a time; not again within RETRY_AFTER_S of a failed
        one; only over a relayed connection we dialled: a provider whose consumer came
        through the relay to it does not start a second, colliding session). Whether a
        try started."""
        if pid in self._behind or not any(
                getattr(conn, "direction", None) == Direction.OUTBOUND
                for conn in self._relayed_only(pid)):
            return False  # the side that dialled the relay initiates, never both at once
        self._behind.add(pid)
        nursery.start_soon(self._upgrade_behind, pid)
        return True

    async def _upgrade_behind(self, pid: ID) -> None:
        try:
            if not await self.upgrade(pid, close_relayed=False):
                log.info("dcutr behind a relayed stream: no direct connection peer=%s", pid)
                self._failed(pid)
                return
            async with trio.open_nursery() as nursery:
                for conn in relayed_connections(self.host, pid):
                    nursery.start_soon(close_when_idle, conn)
        finally:
            self._behind.discard(pid)

    def _relayed_only(self, pid: ID) -> list[INetConn]:
        """The connections to `pid` if every one runs through a relay and no try failed
        lately (else none: nothing to try)."""
        if time.monotonic() - self._tried.get(pid, -RETRY_AFTER_S) < RETRY_AFTER_S:
            return []
        relayed = relayed_connections(self.host, pid)
        if len(relayed) < len(self.host.get_network().get_connections(pid)):
            return []
        return relayed

    def has_direct(self, peer_id: str) -> bool:
        """Whether we hold a connection to `peer_id` that does not run through a relay."""
        pid = ID.from_base58(peer_id)
        return len(relayed_connections(self.host, pid)) < len(
            self.host.get_network().get_connections(pid))

    def _failed(self, pid: ID) -> None:
        self._tried[pid] = time.monotonic()
        if len(self._tried) > 4096:  # bounded: forget the oldest tries
            for old in sorted(self._tried, key=self._tried.__getitem__)[:2048]:
                del self._tried[old]

    async def upgrade(self, pid: ID, *, timeout_s: float = UPGRADE_TIMEOUT_S,
                      close_relayed: bool = True) -> bool:
        """Try for a direct connection to `pid` (reached through a relay); on success close
        the relayed one(s) (unless `close_relayed` is off) and return True, else leave the
        relayed connection as it is."""
        direct = False
        with trio.move_on_after(timeout_s):
            try:
                direct = await self.initiate_hole_punch(pid)
            except Exception as exc:  # py-libp2p raises assorted errors on a failed punch
                log.info("dcutr upgrade failed peer=%s error=%r", pid, exc)
        # A punch can finish after the try stopped waiting for it, or by the other side's
        # dial (both dial at once): a direct connection now is what counts, and the
        # relayed one is closed either way (a job would otherwise run direct uncounted).
        if not await self._verify_direct_connection(pid):
            if direct:
                log.info("dcutr upgrade left no direct connection peer=%s", pid)
            return False
        for conn in relayed_connections(self.host, pid) if close_relayed else ():
            await close_quietly(conn)
        self.upgrades += 1
        log.info("connection to peer=%s moved off the relay", pid)
        return True


def holds_open(stream: INetStream) -> bool:
    """Whether `stream` keeps its relayed connection open: anything but gossip (a stream
    still negotiating its protocol counts)."""
    protocol = stream.get_protocol()
    return protocol is None or not str(protocol).startswith(GOSSIP_PROTOCOLS)


async def close_when_idle(conn: INetConn) -> None:
    """Close `conn` once none of its streams `holds_open` (the relay's own limits, bytes
    and duration per circuit, bound how long a job can keep it)."""
    while not conn.is_closed and any(holds_open(s) for s in conn.get_streams()):
        await trio.sleep(IDLE_POLL_S)
    if not conn.is_closed:
        await close_quietly(conn)


async def close_quietly(conn: INetConn) -> None:
    """Close a relayed connection, within 2 s; one already gone is no error."""
    with trio.move_on_after(2):
        try:
            await conn.close()
        except Exception as exc:  # already gone
            log.debug("closing relayed connection failed error=%r", exc)
