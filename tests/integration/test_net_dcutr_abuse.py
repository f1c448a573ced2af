"""Attack 35: DCUtR makes a node dial what an attacker names (p2pinfer/net/dcutr.py).

Anyone can reach a provider behind NAT through its relay and start a DCUtR session.
py-libp2p's hole punch then dials, three rounds of 5 s, every address the session's
CONNECT names (we keep 4) *and every address its peerstore holds for the peer*:
identify's, which the peer says of itself (up to 64 kept). So one session made the
provider connect to dozens of addresses of the attacker's choosing, third parties
included, again 3 times a minute for each fresh key, and the session's timing tells
the attacker which of them answered: a port scan of the provider's own network (its
LAN, its loopback services) from outside. Real hosts on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AsyncExitStack

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import PROTOCOL_ID as DCUTR_PROTOCOL_ID
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_rules import RelayClientConfig, RelayServiceConfig
from tests.integration.net_helpers import config
from tests.integration.test_net_relay_limits import (
    MANUAL,
    count_accepts,
    limits,
    relay_addr,
    start,
    through,
)

pytestmark = pytest.mark.network


def tcp(listeners: list[trio.SocketListener]) -> str:
    host, port = listeners[0].socket.getsockname()[:2]
    return f"/ip4/{host}/tcp/{port}"


async def session(hostile: NetHost, target: NetHost, named: list[str]) -> None:
    """One DCUtR session from `hostile` over its relayed connection: CONNECT naming
    `named`, then SYNC (the target dials on SYNC)."""
    stream = await hostile._host.new_stream(ID.from_base58(target.peer_id),
                                            [DCUTR_PROTOCOL_ID])
    message = HolePunch(type=HolePunch.CONNECT)
    for addr in named:
        message.ObsAddrs.append(multiaddr.Multiaddr(addr).to_bytes())
    await write_delimited_msg(stream, message)
    await read_delimited_msg(stream, HolePunch)
    await write_delimited_msg(stream, HolePunch(type=HolePunch.SYNC))


async def reserved_target(stack: AsyncExitStack, nursery: trio.Nursery,
                          ) -> tuple[list[trio.SocketListener], list[int], NetHost, NetHost]:
    """A listener on 127.0.0.3 counting what connects to it (`accepted`), a relay, and a
    target holding a slot there: (listener, accepted, relay, target)."""
    listener = await trio.open_tcp_listeners(0, host="127.0.0.3")
    accepted: list[int] = []
    await nursery.start(count_accepts, listener, accepted)
    relay = await start(stack, limits())
    target = await start(stack)
    assert await target.relay_client.reserve(relay_addr(relay))
    return listener, accepted, relay, target


@pytest.fixture
def dialled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every address a node's DCUtR hole punch dials (py-libp2p's `_dial_peer`, spied)."""
    from libp2p.relay.circuit_v2.dcutr import DCUtRProtocol
    seen: list[str] = []
    original = DCUtRProtocol._dial_peer

    async def spy(self: DCUtRProtocol, peer_id: ID, addr: multiaddr.Multiaddr,
                  *args: object, **kwargs: object) -> None:
        seen.append(str(addr))
        await original(self, peer_id, addr, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(DCUtRProtocol, "_dial_peer", spy)
    yield seen


async def test_a_session_dials_only_what_it_names_not_the_peers_identify_addresses() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            planted = [await trio.open_tcp_listeners(0, host="127.0.0.3") for _ in range(6)]
            named = [await trio.open_tcp_listeners(0, host="127.0.0.4") for _ in range(2)]
            accepted: list[int] = []
            for listener in planted + named:
                await nursery.start(count_accepts, listener, accepted)
            relay = await start(stack, limits())
            target = await start(stack)
            assert await target.relay_client.reserve(relay_addr(relay))
            # The attacker's identify names six third-party addresses as its own.
            hostile = await stack.enter_async_context(run_host(config(
                autonat=MANUAL, relay_client=RelayClientConfig(auto=False),
                relay=RelayServiceConfig(mode="off"),
                announce_addrs=tuple(tcp(p) for p in planted))))
            await hostile.relay_client.dial(target.peer_id, [through(relay, target)])
            await session(hostile, target, [tcp(n) for n in named])
            await trio.sleep(3.0)
            ports = {n[0].socket.getsockname()[1] for n in named}
            assert accepted and set(accepted) <= ports
            nursery.cancel_scope.cancel()


async def test_a_session_naming_lan_addresses_dials_none_of_them(
        dialled: list[str]) -> None:
    # The relay here is on loopback (a testnet): loopback addresses may be punched, a
    # private LAN address may not; with a relay on the internet neither may.
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            listener, accepted, relay, target = await reserved_target(stack, nursery)
            hostile = await start(stack)
            await hostile.relay_client.dial(target.peer_id, [through(relay, target)])
            lan = ["/ip4/192.168.1.1/tcp/80", "/ip4/10.0.0.1/tcp/22",
                   "/ip6/fe80::1/tcp/22", "/dns4/printer.local/tcp/631"]
            await session(hostile, target, [tcp(listener), *lan])
            await trio.sleep(2.0)
            assert accepted  # the loopback address, on a loopback testnet, was dialled
            assert not any(a.startswith(tuple(x.rsplit("/tcp", 1)[0] for x in lan))
                           for a in dialled)
            nursery.cancel_scope.cancel()


async def test_fresh_keys_start_no_more_sessions_than_the_node_wide_budget(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Each key may start 3 sessions a minute, and keys are free: without a budget for
    # all peers together, what bounded the dials was only the relay's circuits.
    from p2pinfer.net import dcutr
    monkeypatch.setattr(dcutr, "SESSIONS_IN_ALL_PER_MIN", 2, raising=False)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            listener, _, relay, target = await reserved_target(stack, nursery)
            answered = 0
            for _ in range(3):  # three fresh keys, one session each
                hostile = await start(stack)
                await hostile.relay_client.dial(target.peer_id, [through(relay, target)])
                try:
                    with trio.fail_after(5):
                        await session(hostile, target, [tcp(listener)])
                    answered += 1
                except Exception:  # the session was reset: refused
                    pass
            assert answered == 2 and target.dcutr.refused == 1
            nursery.cancel_scope.cancel()


async def test_fresh_keys_using_up_the_budget_leave_proven_consumers_their_punches(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # Attack 42: seven free keys (three sessions a minute each) used the node's budget of
    # 20, and every consumer's punch after them was refused: their jobs stayed on the
    # relay. A peer that proved itself (its receipt paid a job: the job server calls
    # `value_peer`) is held only to its own three a minute.
    from p2pinfer.net import dcutr
    monkeypatch.setattr(dcutr, "SESSIONS_IN_ALL_PER_MIN", 2, raising=False)

    async def answered(peer: NetHost, target: NetHost, named: list[str]) -> bool:
        try:
            with trio.fail_after(5):
                await session(peer, target, named)
        except Exception:  # reset: refused
            return False
        return True

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            listener, _, relay, target = await reserved_target(stack, nursery)
            consumer = await start(stack)
            target.value_peer(consumer.peer_id)
            hostile = [await start(stack) for _ in range(3)]
            for peer in [*hostile, consumer]:
                await peer.relay_client.dial(target.peer_id, [through(relay, target)])
            got = [await answered(peer, target, [tcp(listener)]) for peer in hostile[:2]]
            assert got == [True, True]  # the budget is used up
            assert not await answered(hostile[2], target, [tcp(listener)])
            assert await answered(consumer, target, [tcp(listener)])
            assert target.dcutr.refused == 1
            nursery.cancel_scope.cancel()
