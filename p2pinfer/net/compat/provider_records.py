"""Kademlia provider records: any peer can make a node hold hundreds of MB for 48 h.

**Defect (py-libp2p 0.8.1).** `libp2p/kad_dht/provider_store.py`,
`ProviderStore.add_provider`, stores a provider's record with every address the
ADD_PROVIDER message carried, and keeps any number of keys, each record for 48 hours.
`KadDHT` checks that the provider is the sender and allows 10 such messages per peer
per 10 s, but a message may be 4 MiB: one fresh key sending ten, each naming itself
with 380,000 addresses, made a node hold ~430 MB more within 4 s (measured on this VM),
for 48 h, and a GET_PROVIDERS for those keys answered with all of them. Ten more every
10 s, or more keys, and the node runs out of memory.

**What we do.** `install()` wraps `ProviderStore.add_provider`: a record keeps at most
`MAX_ADDRS` (16) distinct addresses of at most `MAX_ADDR_BYTES` (128) each (a node
announces a handful; a relayed one, with its relay's peer id, is ~80 bytes), and the
store at most `MAX_RECORDS` (20,000) records: past that, the oldest tenth (by when each
was last provided) is dropped at once. Our nodes re-provide their models every 10
minutes, so a record an attacker's flood pushed out is back within that. And a DHT
message is read up to `MAX_DHT_MESSAGE` (256 KiB; libp2p: 4 MiB) in the four modules
that read them, so one cannot make a node parse 380,000 addresses (~0.3 s of its event
loop) to keep 16: ours are a few KiB (20 providers or peers of 16 addresses each with
their signed records stay under ~60 KiB).

**To drop it.** When py-libp2p bounds a provider record's addresses and the store's
size, delete this module; the guard test (tests/unit/net/compat/test_provider_records.py)
checks the defect and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from libp2p.kad_dht.provider_store import ProviderStore
from libp2p.peer.peerinfo import PeerInfo

from p2pinfer.bounded import first_distinct
from p2pinfer.net.compat import _canary

log = logging.getLogger(__name__)

PATCHED = {
    "libp2p.kad_dht.provider_store:ProviderStore.add_provider": "989cf22708d6789f",
    # The readers of DHT messages whose module constant MAX_DHT_MESSAGE_SIZE we lower:
    "libp2p.kad_dht.kad_dht:KadDHT._do_handle_stream": "5bbaed4d3cdf488c",
    "libp2p.kad_dht.peer_routing:PeerRouting._query_peer_for_closest": "037085e23023acfc",
    "libp2p.kad_dht.provider_store:ProviderStore._get_providers_from_peer_with_closers":
        "082ac365ec4e6156",
    "libp2p.kad_dht.value_store:ValueStore._store_at_peer": "ef89514cabd10413",
    "libp2p.kad_dht.value_store:ValueStore._get_from_peer": "10c3d7055222b057",
}
ORIGINAL = ProviderStore.add_provider
ORIGINALS = {"libp2p.kad_dht.provider_store:ProviderStore.add_provider": ORIGINAL}
_canary.remember(ORIGINALS)
UPSTREAM = None

MAX_ADDRS = 16
MAX_ADDR_BYTES = 128
MAX_RECORDS = 20_000
MAX_DHT_MESSAGE = 256 * 1024
MESSAGE_READERS = ("libp2p.kad_dht.kad_dht", "libp2p.kad_dht.peer_routing",
                   "libp2p.kad_dht.provider_store", "libp2p.kad_dht.value_store")
_COUNT_ATTR = "p2pinfer_records"


def _fits(addr: Any) -> bool:
    try:
        return len(addr.to_bytes()) <= MAX_ADDR_BYTES
    except Exception:  # an address that cannot encode is dropped
        return False


def bounded_addrs(addrs: Any) -> list[Any]:
    """The first MAX_ADDRS distinct addresses (a Multiaddr is equal by its bytes) of at
    most MAX_ADDR_BYTES each."""
    return first_distinct((addr for addr in addrs if _fits(addr)), MAX_ADDRS)


def record_count(store: ProviderStore) -> int:
    return sum(len(records) for records in store.providers.values())


def drop_oldest(store: ProviderStore, count: int) -> int:
    """Drop the `count` records provided longest ago; how many were dropped."""
    if count <= 0:
        return 0
    ages = sorted((record.timestamp, key, peer)
                  for key, records in store.providers.items()
                  for peer, record in records.items())
    for _, key, peer in ages[:count]:
        records = store.providers[key]
        del records[peer]
        if not records:
            del store.providers[key]
    return min(count, len(ages))


def add_provider(self: ProviderStore, key: bytes, provider: PeerInfo) -> None:
    if not provider or not provider.peer_id:
        ORIGINAL(self, key, provider)  # libp2p ignores it
        return
    addrs = bounded_addrs(provider.addrs)
    if not addrs:
        return
    if len(addrs) < len(provider.addrs):
        provider = PeerInfo(provider.peer_id, addrs)
    new = str(provider.peer_id) not in self.providers.get(key, {})
    if new:
        count = getattr(self, _COUNT_ATTR, None)
        if count is None or count >= MAX_RECORDS:
            count = record_count(self)  # libp2p's own expiry may have dropped some
        if count >= MAX_RECORDS:
            dropped = drop_oldest(self, count - MAX_RECORDS + MAX_RECORDS // 10)
            log.warning("provider store full (%d records): the %d oldest dropped",
                        count, dropped)
            count -= dropped
        setattr(self, _COUNT_ATTR, count + 1)
    ORIGINAL(self, key, provider)


def install() -> None:
    """Wrap `ProviderStore.add_provider` and bound DHT messages (idempotent)."""
    ProviderStore.add_provider = add_provider  # type: ignore[method-assign]
    for name in MESSAGE_READERS:
        module: Any = importlib.import_module(name)
        module.MAX_DHT_MESSAGE_SIZE = MAX_DHT_MESSAGE


__all__ = ["MAX_ADDRS", "MAX_DHT_MESSAGE", "MAX_RECORDS", "bounded_addrs", "drop_oldest", "install",
           "record_count"]
