"""Whether a relay ended a relayed connection, not the peer on its other side (attacks
69 and 71, `jobs/served_job.py`): this node's own connection to the relay (the carrier)
closed with it, or the circuit reached the duration or the byte budget the relay
granted us.

py-libp2p 0.8.1 builds a relayed connection as Yamux over Noise over a RawConnection
over a circuit stream (STOP on the provider's side, HOP on the dialler's), itself a
stream of this node's connection to the relay; nothing exposes that last connection, so
this follows the objects down. The names are pinned by
`tests/integration/test_jobs_relayed.py` (a relay that dies is seen, one that lives is
not, one that cuts at its duration or its byte budget is); a chain that does not match
says "not ended", as before this existed. The circuit's limits are noted on its STOP
stream when the relay brings it, and the bytes through it counted from then on
(`RelayHop`: the limits of our slot there, from the relay's own word).

An ending that is not the relay's doing by those signs, but closed the relayed
connection itself (not only the job's stream), is a circuit the relay cut on its own
(a relay that serves checks and cuts jobs) or a consumer gone whole:
`relay_cuts.JobCuts` weighs those per relay (attack 70)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio

#: From a relayed connection's muxer down to its circuit stream, one attribute a step:
#: Yamux -> SecureSession -> NoiseTransportReadWriter -> NoisePacketReadWriter ->
#: RawConnection -> the circuit stream (whose `muxed_conn` is our connection to the relay).
CIRCUIT_PATH = ("secured_conn", "conn", "read_writer", "read_write_closer", "stream")
#: On a STOP stream: the limits its relay granted the circuit (`CircuitLimits`).
LIMITS_ATTR = "p2pinfer_limits"
#: How early a circuit's end may come against the time noted (the relay's clock starts
#: a round trip before ours).
CUT_SLACK_S = 2.0
#: How far short of its budget a circuit's end may come against our count: the relay
#: refuses a read (up to 64 KiB) that would pass it, one each way, with data in flight.
BUDGET_SLACK = 256 * 1024


def circuit_of(muxed_conn: Any) -> Any | None:
    """The stream under the raw connection of `muxed_conn`: for a relayed connection its
    circuit stream, whose `muxed_conn` is the carrier (a direct connection's is a TCP
    stream, with none); None where the chain of objects is not py-libp2p 0.8.1's."""
    node = muxed_conn
    for name in CIRCUIT_PATH:
        node = getattr(node, name, None)
        if node is None:
            return None
    return node


def _relay_id(circuit: Any) -> str | None:
    relay = getattr(getattr(circuit, "muxed_conn", None), "peer_id", None)
    return None if relay is None else str(relay)


def relay_of(muxed_conn: Any) -> str | None:
    """The PeerID of the relay carrying `muxed_conn`; None for a direct connection."""
    return _relay_id(circuit_of(muxed_conn))


class CircuitLimits:
    """What a relay granted one circuit to us: its end (trio time; None: no duration
    said) and its byte budget (0: none said), with the bytes through it so far, counted
    by the STOP stream's `read` and `write` once the budget is noted."""

    def __init__(self, stream: Any, circuit_bytes: int, circuit_s: int) -> None:
        self.cut_at = trio.current_time() + circuit_s if circuit_s > 0 else None
        self.budget, self.count = circuit_bytes, 0
        if circuit_bytes > 0:
            read, write = stream.read, stream.write

            async def counted_read(n: int | None = None) -> bytes:
                data: bytes = await read(n)
                self.count += len(data)
                return data

            async def counted_write(data: bytes) -> None:
                await write(data)
                self.count += len(data)

            stream.read, stream.write = counted_read, counted_write

    def reached(self) -> bool:
        """Whether the circuit reached the duration or the byte budget (within slack)."""
        if self.cut_at is not None and trio.current_time() >= self.cut_at - CUT_SLACK_S:
            return True
        return self.budget > 0 and self.count >= self.budget - BUDGET_SLACK


def note_limits(stop_stream: Any, circuit_bytes: int, circuit_s: int) -> None:
    """Note on the STOP stream a relay brings us that the relay cuts it after
    `circuit_s` or once it carried `circuit_bytes` (0: none said), counting the bytes
    through it from now on."""
    if circuit_bytes > 0 or circuit_s > 0:
        setattr(stop_stream, LIMITS_ATTR, CircuitLimits(stop_stream, circuit_bytes, circuit_s))


@dataclass(frozen=True)
class RelayedEnd:
    """How a job's relayed connection ended, as its provider can tell."""

    relay: str  # the relay's PeerID
    by_relay: bool  # its carrier closed, or the circuit reached a limit it was granted
    connection_gone: bool  # the relayed connection closed, not only the job's stream


async def relayed_end(muxed_conn: Any, wait_s: float) -> RelayedEnd | None:
    """How the relay carried the end of a job on the relayed connection `muxed_conn`:
    `by_relay` when the circuit reached the duration the relay granted (within
    `CUT_SLACK_S`) or its byte budget (within `BUDGET_SLACK`), or its carrier is
    closing or starts to within `wait_s` (a relay shutting down resets its circuits'
    streams before it closes its connections); `connection_gone` when the relayed
    connection is closing by then. None at once for a connection no relay carries."""
    circuit = circuit_of(muxed_conn)
    shutting = getattr(getattr(circuit, "muxed_conn", None), "event_shutting_down", None)
    relay = _relay_id(circuit)
    if not isinstance(shutting, trio.Event) or relay is None:
        return None
    limits = getattr(circuit, LIMITS_ATTR, None)
    by_relay = isinstance(limits, CircuitLimits) and limits.reached()
    if not by_relay:
        with trio.move_on_after(wait_s):
            await shutting.wait()
        by_relay = shutting.is_set()
    own = getattr(muxed_conn, "event_shutting_down", None)
    gone = isinstance(own, trio.Event) and own.is_set()
    return RelayedEnd(relay, by_relay, gone)
