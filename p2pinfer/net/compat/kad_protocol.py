"""KadDHT: `protocol_prefix` is ignored, so the DHT always speaks `/ipfs/kad/1.0.0`.

**Defect (py-libp2p 0.8.1).** `libp2p/kad_dht/kad_dht.py`, `KadDHT.__init__` takes a
`protocol_prefix` and stores it, but the protocol id is the module constant
`libp2p.kad_dht.common.PROTOCOL_ID` (`/ipfs/kad/1.0.0`), imported by name into
`kad_dht.py`, `peer_routing.py`, `provider_store.py`, `value_store.py` and
`routing_table.py` (which also admits only peers that identified with it). That is the
public IPFS DHT's id: any IPFS node we met (mDNS on a LAN, a public address) would join
our routing tables, and we theirs, and our provider records would be stored on, and
looked up from, strangers. go-libp2p (`dht.ProtocolPrefix("/p2pinfer")`) and
rust-libp2p (`kad::Config::new(StreamProtocol)`) take an app-specific id for this; the
wire format is unchanged, so a go or rust node configured with `/p2pinfer/kad/1.0.0`
interoperates.

**What we do.** Rather than patch the five modules (process-wide), `build_dht` gives its
`KadDHT` a view of the host that renames the protocol on the way in and out: streams it
opens and the handler it installs use our id, and a peer's identified protocols report
our id as the one KadDHT looks for (and the IPFS one as absent), so its routing table
admits only peers that speak our DHT.

**To drop it.** When `KadDHT` derives its id from `protocol_prefix` everywhere, build
`KadDHT(host, DHTMode.SERVER, protocol_prefix="/p2pinfer")` and delete the views.

**Upstream.** No py-libp2p issue found (js-libp2p-kad-dht#206 and rust-libp2p#1118 added
the same option there). Drafted patch: docs/upstream/kad-dht-protocol-prefix.diff.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from libp2p.abc import IHost, INetStream, IPeerStore
from libp2p.custom_types import StreamHandlerFn, TProtocol
from libp2p.kad_dht.common import PROTOCOL_ID as IPFS_KAD_PROTOCOL_ID
from libp2p.kad_dht.kad_dht import DHTMode
from libp2p.peer.id import ID
from libp2p.records.validator import NamespacedValidator

from p2pinfer.net.compat.kad_requests import RationedKadDHT

PATCHED = {
    "libp2p.kad_dht.kad_dht:KadDHT.__init__": "1ff688dc5719e4cd",
    "libp2p.kad_dht.routing_table:RoutingTable.add_peer": "55e4c4eba224ef05",
}
UPSTREAM = None
DRAFT = "docs/upstream/kad-dht-protocol-prefix.diff"

DHT_PROTOCOL_ID = "/p2pinfer/kad/1.0.0"
"""Our Kademlia protocol id (go-libp2p's ProtocolPrefix("/p2pinfer") gives the same)."""


def build_dht(host: IHost, protocol: str = DHT_PROTOCOL_ID) -> RationedKadDHT:
    """A server-mode KadDHT on `host` that speaks Kademlia under `protocol` only, whose
    routing table holds DHT servers only (`kad_server_peers`) and which answers each
    peer's requests at its rate (`kad_requests`).

    It stores no values (PUT_VALUE): p2pinfer uses provider records only, and libp2p's
    defaults (`strict_validation=False`) store any non-namespaced key's value unchecked,
    up to 50,000 of them with no rate limit, each as large as a DHT message, and scan all
    of them on every put once full (docs/security.md, attack 27). A validator that knows
    no namespace, strictly applied, refuses every PUT_VALUE before anything is stored."""
    return RationedKadDHT(dht_host(host, protocol), DHTMode.SERVER,
                          validator=NamespacedValidator({}, strict_validation=True),
                          strict_validation=True)


def dht_host(host: IHost, protocol: str = DHT_PROTOCOL_ID) -> Any:
    """What to hand a KadDHT so that it speaks Kademlia as `protocol`: `host` itself for
    IPFS's id, else a `KadHostView` of it (Any: the view stands in for IHost by
    delegation, not by subclassing it)."""
    return host if protocol == IPFS_KAD_PROTOCOL_ID else KadHostView(host, protocol)


class KadHostView:
    """`host` as KadDHT sees it: `/ipfs/kad/1.0.0` means `protocol`; all else passes through."""

    def __init__(self, host: IHost, protocol: str) -> None:
        self._host = host
        self._protocol = TProtocol(protocol)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._host, name)

    @property
    def wrapped(self) -> IHost:
        """The host this view renames for."""
        return self._host

    def _rename(self, protocol: str) -> TProtocol:
        return self._protocol if protocol == IPFS_KAD_PROTOCOL_ID else TProtocol(protocol)

    def set_stream_handler(self, protocol_id: str, handler: StreamHandlerFn) -> None:
        self._host.set_stream_handler(self._rename(protocol_id), handler)

    def remove_stream_handler(self, protocol_id: str) -> None:
        self._host.remove_stream_handler(self._rename(protocol_id))

    async def new_stream(
        self, peer_id: ID, protocol_ids: Sequence[str], *args: Any, **kwargs: Any
    ) -> INetStream:
        renamed = [self._rename(p) for p in protocol_ids]
        return await self._host.new_stream(peer_id, renamed, *args, **kwargs)

    def get_peerstore(self) -> Any:  # Any: a delegating view of IPeerStore
        return _KadPeerstoreView(self._host.get_peerstore(), self._protocol)


class _KadPeerstoreView:
    """The peerstore, with identified protocols renamed as KadDHT expects (see module doc)."""

    def __init__(self, peerstore: IPeerStore, protocol: TProtocol) -> None:
        self._peerstore = peerstore
        self._protocol = protocol

    def __getattr__(self, name: str) -> Any:
        return getattr(self._peerstore, name)

    def get_protocols(self, peer_id: ID) -> list[str]:
        protocols = self._peerstore.get_protocols(peer_id) or []
        return [
            IPFS_KAD_PROTOCOL_ID if p == self._protocol else p
            for p in protocols
            if p != IPFS_KAD_PROTOCOL_ID
        ]
