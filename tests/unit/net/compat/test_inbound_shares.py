"""Attack: one address holds every inbound connection slot of a node.

py-libp2p 0.8.1 admits 250 inbound connections at once, counting those still in their
handshake (held ~10 s), with no limit per remote address. Real p2pinfer hosts on
127.0.0.1 (the target counts loopback peers, as it would public ones); the attacker's
idle TCP connections come from 127.0.0.2 and send nothing, the honest peer dials from
127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest
import trio
from libp2p.network.swarm import Swarm
from libp2p.peer.id import ID

from p2pinfer.bounded import RateLimiter, TokenBucket
from p2pinfer.errors import PeerUnreachableError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net import compat
from p2pinfer.net.compat import inbound_shares
from p2pinfer.net.compat.inbound_shares import (
    SHARES_ATTR,
    InboundShares,
    address_key,
    socket_key,
)
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from tests.support.waiting import await_until
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

ATTACKER = "127.0.0.2"
FLOOD = 260  # libp2p's inbound slots: 300 - 50


def tcp_port(net: NetHost) -> int:
    addr = next(a for a in net.addrs() if "/tcp/" in a)
    return int(addr.split("/tcp/")[1].split("/")[0])


async def connect_from(source: str, net: NetHost, socks: list[trio.socket.SocketType]
                       ) -> trio.socket.SocketType:
    """A TCP connection from `source` to `net` (kept in `socks`, which the caller closes)."""
    sock = trio.socket.socket()
    socks.append(sock)
    await sock.bind((source, 0))
    await sock.connect(("127.0.0.1", tcp_port(net)))
    return sock


@asynccontextmanager
async def flooded(net: NetHost, sources: tuple[str, ...] = (ATTACKER,), each: int = FLOOD
                  ) -> AsyncIterator[list[trio.socket.SocketType]]:
    """`each` idle TCP connections to `net` from every address in `sources`, open while
    the block runs."""
    socks: list[trio.socket.SocketType] = []
    try:
        for source in sources:
            for _ in range(each):
                await connect_from(source, net, socks)
        await trio.sleep(0.3)  # the target's accept loop has taken them all
        yield socks
    finally:
        for sock in socks:
            sock.close()


async def closed_by_peer(socks: list[trio.socket.SocketType]) -> int:
    """How many of `socks` the other side has closed (EOF or reset within 0.5 s)."""
    closed = 0

    async def one(sock: trio.socket.SocketType) -> None:
        nonlocal closed
        with trio.move_on_after(0.5):
            try:
                if await sock.recv(1) == b"":
                    closed += 1
            except OSError:
                closed += 1

    async with trio.open_nursery() as nursery:
        for sock in socks:
            nursery.start_soon(one, sock)
    return closed


def target_config() -> NetConfig:
    return NetConfig(NodeIdentity.generate(), limit_loopback_inbound=True)


async def test_defect_one_address_holds_every_inbound_slot() -> None:
    """The defect (fails once py-libp2p limits inbound connections per address)."""
    with trio.fail_after(60):
        async with run_host(target_config()) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as honest:
            setattr(target._host.get_network(), SHARES_ATTR, None)  # libp2p's own path
            addr = next(a for a in target.addrs() if "/tcp/" in a)
            async with flooded(target):
                with pytest.raises(PeerUnreachableError):
                    await honest.connect(addr)


async def test_one_address_holds_its_share_and_honest_peers_get_in() -> None:
    with trio.fail_after(60):
        async with run_host(target_config()) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as honest:
            shares = getattr(target._host.get_network(), SHARES_ATTR)
            addr = next(a for a in target.addrs() if "/tcp/" in a)
            async with flooded(target) as socks:
                assert shares.held[ATTACKER] == inbound_shares.DEFAULT_PER_ADDRESS == 16
                assert shares.refused == FLOOD - 16
                assert await closed_by_peer(socks) == FLOOD - 16
                assert await honest.connect(addr) == target.peer_id
            with trio.fail_after(15):  # libp2p lets each go at its handshake timeout
                while ATTACKER in shares.held:
                    await trio.sleep(0.2)


async def test_loopback_peers_are_not_counted_by_default() -> None:
    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target:
            shares = getattr(target._host.get_network(), SHARES_ATTR)
            async with flooded(target) as socks:
                assert shares.refused == 0 and not shares.held
                assert await closed_by_peer(socks[:20]) == 0


def test_addresses_count_by_ipv4_address_and_ipv6_56() -> None:
    assert address_key("203.0.113.7") == "203.0.113.7"
    assert address_key("2001:db8:0:aa::1") == address_key("2001:db8:0:ff:1::9")
    assert address_key("2001:db8:0:aa::1") != address_key("2001:db8:0:100::1")
    assert address_key("::ffff:203.0.113.7") == "203.0.113.7"
    assert address_key("fe80::1%eth0") == address_key("fe80::2")
    assert address_key("not-an-ip") is None


def counting_loopback() -> NetConfig:
    return NetConfig(NodeIdentity.generate(), listen_addrs=("/ip4/127.0.0.1/tcp/0",),
                     limit_loopback_inbound=True)


def unlimited_rates(shares: InboundShares) -> None:
    shares.rates = RateLimiter(1e6, 1_000_000)
    shares.total_rate = TokenBucket(1e6, 1e6, 1e6, time.monotonic())


async def connect_and_leave(target: NetHost, times: int) -> None:
    """`times` peers in turn, each connecting to `target` and then shutting down."""
    for _ in range(times):
        async with run_host(NetConfig(NodeIdentity.generate())) as peer:
            assert await peer.connect(next(a for a in target.addrs() if "/tcp/" in a))


async def test_defect_a_closed_inbound_connection_keeps_its_slot(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # libp2p's handler waits for the whole swarm to stop after an upgrade: every inbound
    # connection that ever succeeded keeps one of the 250 slots until the node stops
    compat.install()  # first, so that run_host leaves libp2p's own handler in place
    monkeypatch.setattr(Swarm, "_handle_inbound_connection", inbound_shares.ORIGINAL)
    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target:
            swarm = target._host.get_network()
            await connect_and_leave(target, 3)
            await trio.sleep(0.3)
            assert not swarm.get_connections()
            assert swarm._inbound_limiter.borrowed_tokens == 3


async def test_a_closed_connection_gives_back_its_slot_and_its_share() -> None:
    # 20 connections from one address one after another: with the slot and the share
    # kept, the 17th was refused (and after 250 from anywhere, every one)
    with trio.fail_after(90):
        async with run_host(counting_loopback()) as target:
            swarm = target._host.get_network()
            shares = getattr(swarm, SHARES_ATTR)
            unlimited_rates(shares)  # the rate limits are another test's
            await connect_and_leave(target, 20)
            await await_until(lambda: not shares.held)
            await await_until(lambda: swarm._inbound_limiter.borrowed_tokens == 0)
            assert shares.refused == 0
            # A connection that stays holds its share until we close it ourselves.
            async with run_host(NetConfig(NodeIdentity.generate())) as peer:
                await peer.connect(next(a for a in target.addrs() if "/tcp/" in a))
                await await_until(lambda: shares.held["127.0.0.1"] == 1)
                await target._host.disconnect(ID.from_base58(peer.peer_id))
                await await_until(lambda: not shares.held)
                assert swarm._inbound_limiter.borrowed_tokens == 0


async def test_a_flood_from_many_addresses_leaves_proven_peers_their_reserve() -> None:
    # Per-address shares make a flood cost addresses, not stop it: three addresses of 16
    # idle connections fill a node of 24 inbound slots (libp2p's 250, scaled down). With
    # the reserve, a flood from new addresses gets all but 5, and a peer that proved
    # itself earlier still gets in; a new address is closed at once.
    with trio.fail_after(90):
        async with run_host(counting_loopback()) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as proven:
            swarm = target._host.get_network()
            swarm._inbound_limiter.total_tokens = 24
            shares = getattr(swarm, SHARES_ATTR)
            shares.reserve = 0
            unlimited_rates(shares)  # two floods within a second: not this test's limit
            addr = next(a for a in target.addrs() if "/tcp/" in a)
            await proven.connect(addr)
            target.value_peer(proven.peer_id)  # e.g. it paid for a job
            assert list(shares.valued) == ["127.0.0.1"]
            await proven._host.disconnect(ID.from_base58(target.peer_id))
            await await_until(lambda: not shares.held)

            for reserve, proven_gets_in in ((0, False), (5, True)):
                shares.reserve = reserve
                async with flooded(target, ("127.0.0.2", "127.0.0.3"), 16):
                    assert sum(shares.held.values()) == 24 - reserve
                    if proven_gets_in:
                        assert await proven.connect(addr) == target.peer_id
                        async with flooded(target, ("127.0.0.4",), 3) as newcomer:
                            assert await closed_by_peer(newcomer) == 3
                    else:
                        with pytest.raises(PeerUnreachableError):
                            await proven.connect(addr)
                await await_until(lambda: not shares.held.get("127.0.0.2"), timeout_s=15)


async def admitted(net: NetHost, source: str, attempts: int) -> int:
    """Of `attempts` TCP connections opened from `source` one after another, each closed
    again, how many `net` took (greeted rather than closed at once)."""
    taken = 0
    socks: list[trio.socket.SocketType] = []
    try:
        for _ in range(attempts):
            sock = await connect_from(source, net, socks)
            # libp2p's listener greets with its multistream header; b"" or a reset:
            # closed at once
            with trio.move_on_after(2.0), suppress(OSError):
                taken += bool(await sock.recv(1))
            sock.close()
    finally:
        for sock in socks:
            sock.close()
    return taken


async def test_an_address_opening_connections_fast_is_held_to_its_rate() -> None:
    # Each inbound connection costs the node ~10 ms of CPU (handshake, identify, the
    # greeting protocols) and a native attacker microseconds: stock libp2p took every
    # one, so one address connecting and hanging up in a loop held the event loop.
    now = [1000.0]  # the limits' clock, moved by hand: the counts below are exact
    with trio.fail_after(60):
        async with run_host(counting_loopback()) as target:
            shares = getattr(target._host.get_network(), SHARES_ATTR)
            shares.clock = lambda: now[0]
            shares.rates = RateLimiter(2.0, 16, shares.clock, max_keys=64)
            assert await admitted(target, ATTACKER, 40) == 16  # the burst
            now[0] += 1.0
            assert await admitted(target, ATTACKER, 10) == 2  # then 2 a second
            # Another address has its own rate; new addresses together are held to
            # theirs (here 1 a second after 2), proven ones are not.
            shares.total_rate = TokenBucket(1.0, 2.0, 2.0, now[0])
            assert await admitted(target, "127.0.0.3", 6) == 2
            shares.value(FakeSocket("127.0.0.4", 1))
            assert await admitted(target, "127.0.0.4", 6) == 6


class FakeSocket:  # a TCP socket's peer address, all `socket_key` reads of it
    def __init__(self, *peer: object) -> None:
        self.peer = peer

    def getpeername(self) -> tuple[object, ...]:
        return self.peer


def test_ipv6_and_ipv4_mapped_loopback_peers_are_loopback_too() -> None:
    # ::1's /56 is ::/56, whose first address is not loopback: the rule must look at the
    # peer's own address (a local testnet on ::1 met the 16-connection limit)
    for host in ("::1", "::ffff:127.0.0.1", "127.0.0.9"):
        assert socket_key(FakeSocket(host, 4001, 0, 0), limit_loopback=False) is None
        assert socket_key(FakeSocket(host, 4001, 0, 0), limit_loopback=True) is not None
    assert socket_key(FakeSocket("2001:db8::1", 4001, 0, 0), False) == "2001:db8::/56"
    assert socket_key(FakeSocket("::2", 4001, 0, 0), False) == "::/56"


def test_a_relayed_connection_is_not_counted_under_its_relay_s_address() -> None:
    class RelayedCircuit:  # what a circuit through a relay is to the swarm: not TCP
        def get_remote_address(self) -> tuple[str, int]:
            return ("203.0.113.7", 4001)

    assert InboundShares(limit_loopback=True).key_of(RelayedCircuit()) is None
    with pytest.raises(ValueError):
        InboundShares(0)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(inbound_shares)


def test_arrivals_say_whether_a_connection_came_from_an_address_since_a_time() -> None:
    now = [10.0]
    shares = InboundShares(clock=lambda: now[0])
    shares.arrivals["198.51.100.7"] = 10.0
    shares.arrivals["127.0.0.1"] = 12.0
    assert shares.reached_from("198.51.100.7", 10.0)
    assert not shares.reached_from("198.51.100.7", 10.5)  # came before we asked
    assert not shares.reached_from("203.0.113.9", 0.0)
    assert shares.reached_from("::ffff:198.51.100.7", 9.0)  # the same address
    assert shares.reached_from("127.0.0.5", 11.0)  # any loopback: dialers use 127.0.0.1
    assert not shares.reached_from("not an ip", 0.0)
