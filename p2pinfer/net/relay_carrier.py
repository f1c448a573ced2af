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
#: On a STOP stream: the trio time its relay cuts the circuit (its granted duration).
CUT_AT_ATTR = "p2pinfer_cut_at"
#: How early a circuit's end may come against the time noted (the relay's clock starts
#: a round trip before ours).
CUT_SLACK_S = 2.0
#: On a STOP stream: the bytes its relay lets the circuit carry (its granted budget, both
#: ways), and a counter of the bytes it carried so far (`BytesThrough`).
BUDGET_ATTR = "p2pinfer_budget"
COUNT_ATTR = "p2pinfer_bytes"
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


def relay_of(muxed_conn: Any) -> str | None:
    """The PeerID of the relay carrying `muxed_conn`; None for a direct connection."""
    relay = getattr(getattr(circuit_of(muxed_conn), "muxed_conn", None), "peer_id", None)
    return None if relay is None else str(relay)


class BytesThrough:
    """The bytes read and written on one stream, counted by its `read` and `write`."""

    def __init__(self, stream: Any) -> None:
        self.count = 0
        read, write = stream.read, stream.write

        async def counted_read(n: int | None = None) -> bytes:
            data: bytes = await read(n)
            self.count += len(data)
            return data

        async def counted_write(data: bytes) -> None:
            await write(data)
            self.count += len(data)

        stream.read, stream.write = counted_read, counted_write


def note_limits(stop_stream: Any, circuit_bytes: int, circuit_s: int) -> None:
    """Note on the STOP stream a relay brings us that the relay cuts it after
    `circuit_s` or once it carried `circuit_bytes` (0: none said, nothing noted), and
    count the bytes through it from now on."""
    if circuit_s > 0:
        setattr(stop_stream, CUT_AT_ATTR, trio.current_time() + circuit_s)
    if circuit_bytes > 0:
        setattr(stop_stream, BUDGET_ATTR, circuit_bytes)
        setattr(stop_stream, COUNT_ATTR, BytesThrough(stop_stream))


def _at_a_limit(circuit: Any) -> bool:
    """Whether the circuit reached the duration or the byte budget its relay granted."""
    cut_at = getattr(circuit, CUT_AT_ATTR, None)
    if isinstance(cut_at, float) and trio.current_time() >= cut_at - CUT_SLACK_S:
        return True
    budget, through = getattr(circuit, BUDGET_ATTR, None), getattr(circuit, COUNT_ATTR, None)
    return isinstance(budget, int) and isinstance(through, BytesThrough) and \
        through.count >= budget - BUDGET_SLACK


@dataclass(frozen=True)
class RelayedEnd:
    """How a job's relayed connection ended, as its provider can tell."""

    relay: str  # the relay's PeerID
    by_relay: bool  # its carrier closed, or the circuit reached its granted duration
    connection_gone: bool  # the relayed connection closed, not only the job's stream


async def relayed_end(muxed_conn: Any, wait_s: float) -> RelayedEnd | None:
    """How the relay carried the end of a job on the relayed connection `muxed_conn`:
    `by_relay` when the circuit reached the duration the relay granted (within
    `CUT_SLACK_S`) or its byte budget (within `BUDGET_SLACK`), or its carrier is
    closing or starts to within `wait_s` (a relay shutting down resets its circuits'
    streams before it closes its connections);
    `connection_gone` when the relayed connection is closing by then. None at once for
    a connection no relay carries."""
    circuit = circuit_of(muxed_conn)
    shutting = getattr(getattr(circuit, "muxed_conn", None), "event_shutting_down", None)
    relay = relay_of(muxed_conn)
    if not isinstance(shutting, trio.Event) or relay is None:
        return None
    by_relay = _at_a_limit(circuit)
    if not by_relay:
        with trio.move_on_after(wait_s):
            await shutting.wait()
        by_relay = shutting.is_set()
    own = getattr(muxed_conn, "event_shutting_down", None)
    gone = isinstance(own, trio.Event) and own.is_set()
    return RelayedEnd(relay, by_relay, gone)
