"""Circuit Relay v2 (HOP): three defects of py-libp2p 0.8.1's relay service.

**Defects (py-libp2p 0.8.1).** `libp2p/relay/circuit_v2/protocol.py`,
`CircuitV2Protocol`:

- `_handle_reserve` reserves a slot for the peer named in the RESERVE message's
  optional `peer` field when there is one, not for the peer on the connection: one
  connection could reserve every slot under made-up peer ids.
- a slot (`RelayResourceManager._reservations`, `resources.py`) lives until its TTL
  (an hour by default), also after its peer disconnected; the spec ties a slot to
  its connection.
- `_relay_data` checks a circuit's `deadline` only after a read returns: an idle
  circuit holds its slot forever.
- `_relay_data`, when either direction of a circuit ends, closes the streams that
  `_active_relays` holds under the circuit's peer id (`_handle_connect` files each
  circuit there under its destination and its source): the latest circuit to or from
  that peer, not necessarily its own. So the end of one consumer's circuit to a
  provider behind NAT cut another consumer's live circuit to it (a validator's checks
  through one relay, one right after the other, failed 4 runs in 5 on a slow VM:
  tests/integration/test_jobs_relayed.py).

**What we do.** `BoundedCircuitV2` is `CircuitV2Protocol` with the four fixed:
`_handle_reserve` drops the `peer` field (so py-libp2p falls back to the connection's
peer), `prune_reservations()` frees the slots of peers gone or expired (`RelayHop`
calls it before each decision and when listing), and `_relay_data` runs under a
cancel scope that ends at the deadline, resets both streams and calls
`on_duration_cut`; it hands py-libp2p's loop a key of the circuit's own
(`CircuitKey`, filed with this circuit's streams), so the loop's cleanup closes this
circuit and no other, and drops the circuit's entries under the peer ids after.
`net/relay.py`'s `RelayHop` adds our own bounds (per IP, per source) on top.

**To drop it.** Per defect, when upstream uses the connection's peer, frees slots on
disconnect, cuts idle circuits at their deadline, or cleans up a circuit by its own
streams, delete that override (the guard test's `test_defect_*` for it starts failing
first).

**Upstream.** No issue found. Drafted patches: docs/upstream/relay-v2-bounds.diff (the
first three), docs/upstream/relay-v2-circuit-cleanup.diff (the fourth).
"""

from __future__ import annotations

import logging
import time

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.relay.circuit_v2.protocol:CircuitV2Protocol._handle_reserve": "d794e2be5efb276f",
    "libp2p.relay.circuit_v2.protocol:CircuitV2Protocol._relay_data": "2edf345c0da2cad0",
    "libp2p.relay.circuit_v2.resources:RelayResourceManager.reserve": "9c6bf9889d033117",
    "libp2p.relay.circuit_v2.protocol:CircuitV2Protocol._handle_connect": "4ad19b34934a7dfc",
}
UPSTREAM = None
DRAFT = "docs/upstream/relay-v2-bounds.diff"


class BoundedCircuitV2(CircuitV2Protocol):
    """py-libp2p's CircuitV2Protocol with the four defects above fixed."""

    async def _handle_reserve(self, stream: INetStream, msg: HopMessage) -> None:
        # A slot is for the peer whose connection asks, never for a peer id it names.
        msg.ClearField("peer")
        await super()._handle_reserve(stream, msg)

    def prune_reservations(self) -> list[ID]:
        """Free the slots of peers no longer connected or expired; the peers freed."""
        held = self.resource_manager._reservations
        connected = set(self.host.get_connected_peers())
        now = time.time()
        gone = [p for p, r in held.items() if p not in connected or now > r.expires_at]
        for peer in gone:
            del held[peer]
        return gone

    def on_duration_cut(self, peer_id: ID) -> None:
        """Called when a circuit is cut at its duration limit (for subclasses to count)."""
        log.info("relay circuit cut at its duration limit peer=%s", peer_id)

    async def _relay_data(self, src_stream: INetStream, dst_stream: INetStream, peer_id: ID,
                          deadline: float | None = None,
                          circuit_data_limit: list[int] | None = None) -> None:
        # py-libp2p checks `deadline` only after a read returns: an idle circuit would
        # hold its slot forever. Here the deadline cuts a waiting read too.
        left = float("inf") if deadline is None else max(0.0, deadline - time.monotonic())
        # Its cleanup closes what `_active_relays` holds under the key it is given: this
        # circuit's own key, not the peer's (the latest circuit of that peer). The key
        # stands in for the peer id only there and in logs: with a circuit-wide data
        # budget (always, when the limits set one) the reservation is not read.
        key = CircuitKey(peer_id)
        self._active_relays[key] = (src_stream, dst_stream)  # type: ignore[index]
        try:
            with trio.move_on_after(left) as scope:
                await super()._relay_data(src_stream, dst_stream, key,  # type: ignore[arg-type]
                                          deadline, circuit_data_limit)
        finally:
            self._active_relays.pop(key, None)  # type: ignore[call-overload]
            for held in list(self._active_relays):  # its entries under the peer ids
                if self._active_relays[held][0] in (src_stream, dst_stream):
                    del self._active_relays[held]
        if scope.cancelled_caught:
            self.on_duration_cut(peer_id)
            await reset_quietly(src_stream)
            await reset_quietly(dst_stream)


class CircuitKey:
    """One circuit's key in `_active_relays`: equal only to itself, shown as its peer."""

    __slots__ = ("peer_id",)

    def __init__(self, peer_id: ID) -> None:
        self.peer_id = peer_id

    def __str__(self) -> str:
        return str(self.peer_id)

    __repr__ = __str__


async def reset_quietly(stream: INetStream) -> None:
    """Reset `stream`, bounded and shielded; a stream already gone is fine."""
    with trio.CancelScope(shield=True), trio.move_on_after(2):
        try:
            await stream.reset()
        except Exception as exc:  # already gone
            log.debug("relay stream reset failed error=%r", exc)
