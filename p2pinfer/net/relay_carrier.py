"""Whether a relayed connection's carrier, this node's own connection to the relay, is
gone: the relay went away, not the peer (attack 69, `jobs/served_job.py`).

py-libp2p 0.8.1 builds a relayed connection as Yamux over Noise over a RawConnection
over a circuit stream (STOP on the provider's side, HOP on the dialler's), itself a
stream of this node's connection to the relay; nothing exposes that last connection, so
this follows the objects down. The names are pinned by
`tests/integration/test_jobs_relayed.py` (a relay that dies is seen, one that lives is
not); a chain that does not match says "not gone", as before this existed."""

from __future__ import annotations

from typing import Any

import trio

#: From a relayed connection's muxer down to the circuit stream's, one attribute a step:
#: Yamux -> SecureSession -> NoiseTransportReadWriter -> NoisePacketReadWriter ->
#: RawConnection -> the circuit stream -> our connection to the relay (its muxer).
CARRIER_PATH = ("secured_conn", "conn", "read_writer", "read_write_closer", "stream",
                "muxed_conn")


def carrier_of(muxed_conn: Any) -> Any | None:
    """The muxer of the connection that carries the relayed connection `muxed_conn`, or
    None where the chain of objects is not py-libp2p 0.8.1's (a direct connection)."""
    node = muxed_conn
    for name in CARRIER_PATH:
        node = getattr(node, name, None)
        if node is None:
            return None
    return node


async def carrier_closes(muxed_conn: Any, wait_s: float) -> bool:
    """Whether the carrier of the relayed connection `muxed_conn` is closing, or starts to
    within `wait_s` (a relay shutting down resets its circuits' streams before it closes
    its connections); False at once for a connection no relay carries."""
    carrier = carrier_of(muxed_conn)
    shutting = getattr(carrier, "event_shutting_down", None)
    if not isinstance(shutting, trio.Event):
        return False
    with trio.move_on_after(wait_s):
        await shutting.wait()
    return shutting.is_set()
