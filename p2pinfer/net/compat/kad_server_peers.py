"""KadDHT: every peer that sends a Kademlia query joins the routing table, server or not.

**Defect (py-libp2p 0.8.1).** `libp2p/kad_dht/kad_dht.py`, `KadDHT._do_handle_stream`
adds each peer that opens a Kademlia stream to the routing table with
`add_peer(peer, skip_server_mode_check=True)` ("Peer initiated a KAD stream, so they
MUST support KAD server mode"). Client-mode peers query too: the spec's client mode is
for peers that cannot be dialled, and a node behind a NAT is one. Such a peer enters
the routing table of every node it asks, their FIND_NODE answers hand its addresses
out, and DHT walks that meet it dial it directly and wait for the dial to fail
(py-libp2p tries 3 times). Nor can a KadDHT turn to client mode and keep its routing
table: `KadDHT.switch_mode` empties it (`RoutingTable.cleanup_routing_table`), and a
client needs it for its own lookups. go-libp2p-kad-dht admits a peer only when
identify says it serves the DHT protocol (`validRTPeer`) and keeps its table when the
mode changes.

**What we do.** `ServerPeersKadDHT` (what `kad_protocol.build_dht` builds):

- a peer that queries us joins the routing table only if identify lists our DHT
  protocol for it: at once when the peerstore knows its protocols, else when identify
  has told us, waited for in the background (up to IDENTIFY_WAIT_S, at most
  MAX_PENDING peers at a time);
- `set_server(False)` is client mode with the routing table kept: the handler goes
  and identify is pushed to connected peers, so they see the protocol gone;
  `set_server(True)` undoes it. `follow_reachability` (net/dht.py) calls it as AutoNAT
  finds the node private or public;
- `prune_clients()` drops routing-table peers whose identified protocols no longer
  include ours (a peer that turned client after we admitted it).

**To drop it.** When upstream checks an inbound querier's protocols and can switch
mode keeping the table, build `KadDHT` itself; `test_defect_*` fails then.

**Upstream.** Not reported; no drafted patch.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from libp2p.identity.identify.identify import ID as IDENTIFY_ID
from libp2p.identity.identify_push.identify_push import push_identify_to_peers
from libp2p.kad_dht.common import PROTOCOL_ID as KAD_AS_SEEN
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
from libp2p.peer.id import ID

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.kad_dht.kad_dht:KadDHT._do_handle_stream": "5bbaed4d3cdf488c",
    "libp2p.kad_dht.kad_dht:KadDHT.add_peer": "6a2b045848b918ec",
    "libp2p.kad_dht.kad_dht:KadDHT.handle_stream": "e3870244e4519557",
    "libp2p.kad_dht.kad_dht:KadDHT.switch_mode": "374ab081aa8907e8",
    "libp2p.kad_dht.routing_table:RoutingTable.remove_peer": "bfe60e6a3a7aa2a9",
    "libp2p.identity.identify_push.identify_push:push_identify_to_peers": "c45330dc46dd6b1f",
}
"""libp2p source this module overrides or relies on, with its digest at 0.8.1 (`_canary`)."""

UPSTREAM = None
DRAFT = None

IDENTIFY_WAIT_S = 5.0
"""How long a querier whose protocols are not known yet is waited for."""
MAX_PENDING = 64
"""Queriers waited for at once; more are not admitted (they may query again later)."""
POLL_S = 0.1
PUSH_TIMEOUT_S = 10.0
IDENTIFY = str(IDENTIFY_ID)


class ServerPeersKadDHT(KadDHT):
    """KadDHT whose routing table holds only peers that serve the DHT (see module doc).
    Its host may be `kad_protocol.KadHostView`: the protocol it checks is the one that
    view reports as `/ipfs/kad/1.0.0`, i.e. ours."""

    def __init__(self, host: Any, mode: DHTMode = DHTMode.SERVER, **kwargs: Any) -> None:
        super().__init__(host, mode, **kwargs)
        self._pending: set[ID] = set()

    def serves_dht(self, peer_id: ID) -> bool | None:
        """Whether identify says `peer_id` serves our DHT; None while it has not told us
        (the peerstore may hold a protocol or two from streams before identify's list,
        which names identify itself)."""
        try:
            protocols = self.host.get_peerstore().get_protocols(peer_id)
        except Exception:  # a peer the peerstore does not hold
            return None
        if not protocols or IDENTIFY not in protocols:
            return None
        return str(KAD_AS_SEEN) in protocols

    async def add_peer(self, peer_id: ID, *, skip_server_mode_check: bool = False) -> bool:
        # Only `_do_handle_stream` skips the check (an inbound querier): check it anyway.
        if not skip_server_mode_check:
            return await super().add_peer(peer_id)
        served = self.serves_dht(peer_id)
        if served is None:
            self._admit_later(peer_id)
            return False
        return served and await super().add_peer(peer_id)

    def _admit_later(self, peer_id: ID) -> None:
        if peer_id in self._pending or len(self._pending) >= MAX_PENDING:
            return
        try:
            run_task = self.manager.run_task
        except Exception:  # not running as a service (a bare test object)
            return
        self._pending.add(peer_id)
        run_task(self._admit_when_identified, peer_id)

    async def _admit_when_identified(self, peer_id: ID) -> None:
        try:
            with trio.move_on_after(IDENTIFY_WAIT_S):
                while (served := self.serves_dht(peer_id)) is None:
                    await trio.sleep(POLL_S)
                if served:
                    await super().add_peer(peer_id)
        except Exception as exc:  # a task of the DHT's service: never take the DHT down
            log.info("routing table add failed peer=%s error=%r", peer_id, exc)
        finally:
            self._pending.discard(peer_id)

    @property
    def server(self) -> bool:
        """Whether this node serves the DHT (server mode) now."""
        return self.mode is DHTMode.SERVER

    async def set_server(self, server: bool) -> bool:
        """Serve the DHT protocol or stop (client mode), keeping the routing table; tell
        connected peers (identify push). Returns whether the mode changed."""
        if server == self.server:
            return False
        if server:
            self.host.set_stream_handler(KAD_AS_SEEN, self.handle_stream)
        else:
            self.host.remove_stream_handler(KAD_AS_SEEN)
        self.mode = DHTMode.SERVER if server else DHTMode.CLIENT
        log.info("dht mode=%s", "server" if server else "client")
        try:  # the host itself, not the renaming view (kad_protocol.KadHostView)
            with trio.move_on_after(PUSH_TIMEOUT_S):  # a mute peer must not hold the caller
                await push_identify_to_peers(getattr(self.host, "wrapped", self.host))
        except Exception as exc:  # best effort: peers also learn it on their next identify
            log.info("identify push after a dht mode change failed error=%r", exc)
        return True

    def prune_clients(self) -> list[ID]:
        """Remove routing-table peers that identify says do not serve the DHT; the removed."""
        table = self.routing_table
        gone = [p for p in table.get_peer_ids() if self.serves_dht(p) is False]
        for peer_id in gone:
            table.remove_peer(peer_id)
        return gone
