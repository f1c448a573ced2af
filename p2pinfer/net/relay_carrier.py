"""Whether a relay ended a relayed connection, not the peer on its other side (attack 69,
`jobs/served_job.py`): this node's own connection to the relay (the carrier) closed with
it, or the circuit reached the duration the relay granted us.

py-libp2p 0.8.1 builds a relayed connection as Yamux over Noise over a RawConnection
over a circuit stream (STOP on the provider's side, HOP on the dialler's), itself a
stream of this node's connection to the relay; nothing exposes that last connection, so
this follows the objects down. The names are pinned by
`tests/integration/test_jobs_relayed.py` (a relay that dies is seen, one that lives is
not, one that cuts at its duration is); a chain that does not match says "not ended",
as before this existed. The circuit's end is noted on its STOP stream when the relay
brings it (`RelayHop`: the duration of our slot there, from the relay's own word).

An ending that is not the relay's doing by those signs, but closed the relayed
connection itself (not only the job's stream), is a circuit the relay may have cut on
its own (a byte budget, a relay that serves checks and cuts jobs) or a consumer gone
whole: `relay_cuts.JobCuts` weighs those per relay (attack 70)."""

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


def note_cut(stop_stream: Any, duration_s: float) -> None:
    """Note on the STOP stream a relay brings us that the relay cuts it after
    `duration_s` (0: no duration said, nothing noted)."""
    if duration_s > 0:
        setattr(stop_stream, CUT_AT_ATTR, trio.current_time() + duration_s)


@dataclass(frozen=True)
class RelayedEnd:
    """How a job's relayed connection ended, as its provider can tell."""

    relay: str  # the relay's PeerID
    by_relay: bool  # its carrier closed, or the circuit reached its granted duration
    connection_gone: bool  # the relayed connection closed, not only the job's stream


async def relayed_end(muxed_conn: Any, wait_s: float) -> RelayedEnd | None:
    """How the relay carried the end of a job on the relayed connection `muxed_conn`:
    `by_relay` when the circuit reached the duration the relay granted (within
    `CUT_SLACK_S`) or its carrier is closing or starts to within `wait_s` (a relay
    shutting down resets its circuits' streams before it closes its connections);
    `connection_gone` when the relayed connection is closing by then. None at once for
    a connection no relay carries."""
    circuit = circuit_of(muxed_conn)
    shutting = getattr(getattr(circuit, "muxed_conn", None), "event_shutting_down", None)
    relay = relay_of(muxed_conn)
    if not isinstance(shutting, trio.Event) or relay is None:
        return None
    cut_at = getattr(circuit, CUT_AT_ATTR, None)
    by_relay = isinstance(cut_at, float) and trio.current_time() >= cut_at - CUT_SLACK_S
    if not by_relay:
        with trio.move_on_after(wait_s):
            await shutting.wait()
        by_relay = shutting.is_set()
    own = getattr(muxed_conn, "event_shutting_down", None)
    gone = isinstance(own, trio.Event) and own.is_set()
    return RelayedEnd(relay, by_relay, gone)
