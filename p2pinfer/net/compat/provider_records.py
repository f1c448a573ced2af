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

**A key crowded by one address.** libp2p keeps 20 providers a key (Kademlia's k) and
ignores a 21st, so 20 fresh keys providing a model's key from one machine, again
before their records expire, kept every new honest provider out of the node's
records for that model. Each record here notes the address its provider sent it
from (the connection's IPv4 address or IPv6 /56, `address_group`; ours: "self"),
and a newcomer whose address holds fewer of the key's records than the address
holding the most takes the place of that address's oldest record. So 20 keys on one
address cost an honest provider nothing; keeping one out takes 20 addresses.

**To drop it.** When py-libp2p bounds a provider record's addresses and the store's
size, delete this module; the guard test (tests/unit/net/compat/test_provider_records.py)
checks the defect and the canary.

**Upstream.** Not reported.
"""

from __future__ import annotations

import importlib
import logging
from collections import Counter
from typing import Any, cast

from libp2p.kad_dht.common import BUCKET_SIZE
from libp2p.kad_dht.provider_store import ProviderStore
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from p2pinfer.addresses import IPV6_GROUP_PREFIX, address_group
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
GROUP_ATTR = "p2pinfer_group"
UNKNOWN_GROUP = "unknown"  # no connection to read an address from (a store used alone)
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


def group_of(store: ProviderStore, peer: ID) -> str:
    """The address a provider record of `peer` counts under: "self" for ours, else the
    IPv4 address or IPv6 /56 of our connection to it (libp2p takes a record only from
    the provider itself, so it is connected), else UNKNOWN_GROUP."""
    if peer == store.local_peer_id:
        return "self"
    try:
        conns = store.host.get_network().get_connections(peer)
    except Exception:  # a store without a swarm
        return UNKNOWN_GROUP
    for conn in conns:
        try:
            remote = cast(Any, conn.muxed_conn).get_remote_address()
        except Exception:
            continue
        group = address_group(str(remote[0]), IPV6_GROUP_PREFIX) if remote else None
        if group is not None:
            return group
    return UNKNOWN_GROUP


def make_room(store: ProviderStore, key: bytes, group: str) -> bool:
    """For a new provider of `key` from `group`, when the key holds k records: drop the
    oldest record of the group holding the most, if `group` would then still hold no more
    than it (so two groups never take places back and forth). Whether there is room."""
    records = store.providers.get(key, {})
    if len(records) < BUCKET_SIZE:
        return True
    held = Counter(getattr(record, GROUP_ATTR, UNKNOWN_GROUP) for record in records.values())
    crowded, most = held.most_common(1)[0]
    if held[group] + 1 > most - 1:
        return False  # libp2p's rule: the 21st is ignored
    oldest = min((record.timestamp, peer) for peer, record in records.items()
                 if getattr(record, GROUP_ATTR, UNKNOWN_GROUP) == crowded)[1]
    del records[oldest]
    count = getattr(store, _COUNT_ATTR, None)
    if count is not None:
        setattr(store, _COUNT_ATTR, count - 1)
    return True


def add_provider(self: ProviderStore, key: bytes, provider: PeerInfo) -> None:
    if not provider or not provider.peer_id:
        ORIGINAL(self, key, provider)  # libp2p ignores it
        return
    addrs = bounded_addrs(provider.addrs)
    if not addrs:
        return
    if len(addrs) < len(provider.addrs):
        provider = PeerInfo(provider.peer_id, addrs)
    peer = str(provider.peer_id)
    group = group_of(self, provider.peer_id)
    new = peer not in self.providers.get(key, {})
    if new and not make_room(self, key, group):
        return
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
    record = self.providers.get(key, {}).get(peer)
    if record is not None:
        setattr(record, GROUP_ATTR, group)


def install() -> None:
    """Wrap `ProviderStore.add_provider` and bound DHT messages (idempotent)."""
    ProviderStore.add_provider = add_provider  # type: ignore[method-assign]
    for name in MESSAGE_READERS:
        module: Any = importlib.import_module(name)
        module.MAX_DHT_MESSAGE_SIZE = MAX_DHT_MESSAGE


__all__ = ["MAX_ADDRS", "MAX_DHT_MESSAGE", "MAX_RECORDS", "bounded_addrs", "drop_oldest", "install",
           "record_count"]
