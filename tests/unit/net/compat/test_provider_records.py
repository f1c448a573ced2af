"""Attack: Kademlia provider records as a memory bomb.

py-libp2p 0.8.1 keeps a provider record with every address its ADD_PROVIDER carried
(messages up to 4 MiB), any number of records, each for 48 h: one fresh key's ten
3.8 MB messages made a node hold ~430 MB more. Real p2pinfer hosts on 127.0.0.1; the
attacker writes ADD_PROVIDER messages naming itself, as the DHT's rules allow.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace

import pytest
import trio
import varint
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.kad_dht.provider_store import ProviderStore
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import provider_records
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID
from p2pinfer.net.compat.provider_records import MAX_ADDRS, bounded_addrs, record_count
from p2pinfer.net.config import NetConfig
from p2pinfer.net.dht import model_key_bytes
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.support.waiting import await_until
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network


def addrs(count: int) -> list[Multiaddr]:
    return [Multiaddr(f"/ip4/10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}/tcp/"
                      f"{1 + i % 60000}") for i in range(count)]


def key(n: int) -> bytes:
    return hashlib.sha256(f"key {n}".encode()).digest()


def store_for() -> ProviderStore:
    return ProviderStore(SimpleNamespace(get_id=lambda: ID.from_base58(
        "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")))


async def add_provider(attacker: NetHost, target: NetHost, n: int, count: int) -> bool:
    """One ADD_PROVIDER for key(n) naming `attacker` with `count` addresses; whether the
    target answered (it echoes the request) rather than resetting the stream."""
    msg = Message()
    msg.type = Message.MessageType.ADD_PROVIDER
    msg.key = key(n)
    provider = msg.providerPeers.add()
    provider.id = ID.from_base58(attacker.peer_id).to_bytes()
    provider.addrs.extend(a.to_bytes() for a in addrs(count))
    raw = msg.SerializeToString()
    stream = await attacker._host.new_stream(ID.from_base58(target.peer_id), [DHT_PROTOCOL_ID])
    try:
        await stream.write(varint.encode(len(raw)) + raw)
        with trio.fail_after(10):
            return bool(await stream.read(1))
    except Exception:  # reset: the target refused the message
        return False
    finally:
        await stream.reset()


@asynccontextmanager
async def target_and_peer() -> AsyncIterator[tuple[NetHost, NetHost]]:
    """Two of our hosts, the second connected to the first (the DHT node under attack)."""
    async with run_host(NetConfig(NodeIdentity.generate())) as target, \
            run_host(NetConfig(NodeIdentity.generate())) as peer:
        await peer.connect(next(a for a in target.addrs() if "/tcp/" in a))
        yield target, peer


def test_defect_a_provider_record_keeps_every_address() -> None:
    store = store_for()
    peer = ID.from_base58("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")
    provider_records.ORIGINAL(store, key(0), PeerInfo(peer, addrs(5000)))
    [record] = store.providers[key(0)].values()
    assert len(record.provider_info.addrs) == 5000


async def test_an_add_provider_flood_keeps_16_addresses_a_record() -> None:
    with trio.fail_after(60):
        async with target_and_peer() as (target, attacker):
            store = target._dht.provider_store
            for n in range(5):
                assert await add_provider(attacker, target, n, 10_000)  # ~100 KB each
            await await_until(lambda: all(key(n) in store.providers for n in range(5)))
            for n in range(5):
                [record] = store.providers[key(n)].values()
                assert record.provider_info.addrs == addrs(MAX_ADDRS)
            # A message over 256 KiB is not read at all (libp2p's own limit: 4 MiB).
            assert not await add_provider(attacker, target, 99, 40_000)
            assert key(99) not in store.providers


def test_a_full_store_drops_its_oldest_tenth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provider_records, "MAX_RECORDS", 100)
    store = store_for()
    clock = iter(range(1_000_000, 2_000_000))
    monkeypatch.setattr("libp2p.kad_dht.provider_store.time.time", lambda: next(clock))
    peer = ID.from_base58("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")
    for n in range(150):
        store.add_provider(key(n), PeerInfo(peer, addrs(1)))
        assert record_count(store) <= 100
    assert key(149) in store.providers and key(0) not in store.providers
    # Providing a key again refreshes its record and takes no new place.
    store.add_provider(key(149), PeerInfo(peer, addrs(2)))
    assert record_count(store) <= 100 and key(149) in store.providers


def peers(count: int) -> list[ID]:
    return [ID.from_pubkey(create_new_key_pair().public_key) for _ in range(count)]


def store_seeing(ips: dict[ID, str]) -> ProviderStore:
    """A ProviderStore whose host's connection to each peer comes from `ips[peer]`."""
    def connections(peer: ID) -> list[object]:
        remote = (ips[peer], 4001)
        return [SimpleNamespace(muxed_conn=SimpleNamespace(get_remote_address=lambda: remote))]

    local = ID.from_base58("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN")
    return ProviderStore(SimpleNamespace(
        get_id=lambda: local,
        get_network=lambda: SimpleNamespace(get_connections=connections)))


def test_defect_twenty_keys_keep_every_new_provider_of_a_key_out() -> None:
    sybils, (honest,) = peers(20), peers(1)
    store = store_for()
    for peer in sybils:
        provider_records.ORIGINAL(store, key(0), PeerInfo(peer, addrs(1)))
    provider_records.ORIGINAL(store, key(0), PeerInfo(honest, addrs(1)))
    assert str(honest) not in store.providers[key(0)]


def test_twenty_keys_from_one_address_do_not_keep_a_new_provider_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(1_000_000, 2_000_000))
    monkeypatch.setattr("libp2p.kad_dht.provider_store.time.time", lambda: next(clock))
    sybils, honest = peers(20), peers(3)
    ips = {peer: "203.0.113.9" for peer in sybils}
    ips.update({honest[0]: "198.51.100.7", honest[1]: "198.51.100.8",
                honest[2]: "2001:db8:0:1::5"})
    store = store_seeing(ips)
    for peer in sybils:
        store.add_provider(key(0), PeerInfo(peer, addrs(1)))
    for peer in honest:
        store.add_provider(key(0), PeerInfo(peer, addrs(1)))
    held = store.providers[key(0)]
    assert len(held) == 20 and all(str(peer) in held for peer in honest)
    assert str(sybils[0]) not in held  # the crowded address's oldest made room
    assert getattr(held[str(honest[2])], provider_records.GROUP_ATTR) == "2001:db8::/56"
    # The Sybils providing again take no place back: their address holds the most.
    for peer in sybils:
        store.add_provider(key(0), PeerInfo(peer, addrs(1)))
    assert all(str(peer) in store.providers[key(0)] for peer in honest)
    assert record_count(store) == 20


def test_a_key_held_by_twenty_addresses_keeps_libp2p_s_rule() -> None:
    # one record an address, k of them: a 21st provider is ignored, as libp2p does, and
    # two addresses never take places from each other in turn
    first = peers(20)
    ips = {peer: f"198.51.100.{n}" for n, peer in enumerate(first)}
    late = peers(2)
    ips.update({late[0]: "203.0.113.1", late[1]: "198.51.100.0"})
    store = store_seeing(ips)
    for peer in first:
        store.add_provider(key(0), PeerInfo(peer, addrs(1)))
    for peer in late:
        store.add_provider(key(0), PeerInfo(peer, addrs(1)))
    assert set(store.providers[key(0)]) == {str(peer) for peer in first}


async def test_a_record_counts_under_the_address_its_provider_sent_it_from() -> None:
    with trio.fail_after(60):
        async with target_and_peer() as (target, sender):
            store = target._dht.provider_store
            assert await add_provider(sender, target, 7, 1)
            await await_until(lambda: key(7) in store.providers)
            [record] = store.providers[key(7)].values()
            assert getattr(record, provider_records.GROUP_ATTR) == "127.0.0.1"
            await target.provide("smollm2:135m")
            own = store.providers[model_key_bytes("smollm2:135m")][target.peer_id]
            assert getattr(own, provider_records.GROUP_ATTR) == "self"


def test_addresses_are_deduplicated_and_bounded_in_size() -> None:
    long_addr = Multiaddr("/dns4/" + ".".join(["a" * 60] * 3) + ".example/tcp/1")
    kept = bounded_addrs([*addrs(3), *addrs(3), long_addr])
    assert kept == addrs(3)
    assert len(bounded_addrs(addrs(100))) == MAX_ADDRS


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(provider_records)
