"""A node's relay service under hostile peers (p2pinfer/net/relay.py): every bound it
keeps, shown on real hosts on 127.0.0.1 with the limits turned down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.dcutr import PROTOCOL_ID as DCUTR_PROTOCOL_ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId as CircuitPeerId
from libp2p.relay.circuit_v2.pb.dcutr_pb2 import HolePunch
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from p2pinfer.errors import NetworkError, PeerUnreachableError, StreamClosedError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.autonat_rules import AutoNatConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay import RESERVE_BURST
from p2pinfer.net.relay_rules import RelayClientConfig, RelayServiceConfig, circuit_addr
from p2pinfer.net.streams import NetStream
from tests.integration.net_helpers import config
from tests.support.waiting import await_until

pytestmark = pytest.mark.network

ECHO = "/p2pinfer-test/echo/1.0.0"
MANUAL = AutoNatConfig(confirmations=1, first_delay_s=3600.0)
NO_AUTO = RelayClientConfig(auto=False)


async def echo(stream: NetStream) -> None:
    while True:
        try:
            frame = await stream.read_frame(timeout_s=30)
        except StreamClosedError:
            return
        await stream.write_frame(frame)


@asynccontextmanager
async def node(stack: AsyncExitStack, relay: RelayServiceConfig | None = None,
               ) -> AsyncIterator[NetHost]:
    cfg = config(autonat=MANUAL, relay_client=NO_AUTO,
                 relay=relay or RelayServiceConfig(mode="off"))
    yield await stack.enter_async_context(run_host(cfg))


async def start(stack: AsyncExitStack, relay: RelayServiceConfig | None = None) -> NetHost:
    return await stack.enter_async_context(node(stack, relay))


def relay_addr(relay: NetHost) -> str:
    return relay.addrs()[0]


def through(relay: NetHost, target: NetHost) -> str:
    return circuit_addr(relay.addrs()[0], relay.peer_id, target.peer_id)


def limits(**kw: int) -> RelayServiceConfig:
    return replace(RelayServiceConfig(mode="on"), **kw)


async def test_a_reserve_naming_made_up_peer_ids_takes_one_slot_for_the_asker_only() -> None:
    # py-libp2p took the RESERVE's optional peer field at its word: one connection could
    # fill every slot under made-up ids for an hour.
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(max_reservations=3))
            hostile = await start(stack)
            await hostile.connect(relay_addr(relay))
            stream = await hostile._host.new_stream(ID.from_base58(relay.peer_id),
                                                    [HOP_PROTOCOL_ID])
            for _ in range(RESERVE_BURST):  # (more from one peer: attack 63's rate)
                fake = ID.from_base58(NodeIdentity.generate().peer_id).to_bytes()
                await write_delimited_msg(stream, HopMessage(
                    type=HopMessage.RESERVE, peer=CircuitPeerId(id=fake)))
                answer = await read_delimited_msg(stream, HopMessage)
                assert answer.status == StatusCode.OK
            assert relay.relay_hop.reservations() == [hostile.peer_id]

            honest = [await start(stack) for _ in range(2)]
            for peer in honest:
                assert await peer.relay_client.reserve(relay_addr(relay))
            assert len(relay.relay_hop.reservations()) == 3


async def test_slots_are_bounded_and_freed_when_their_holders_leave() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(max_reservations=2))
            async with AsyncExitStack() as hostile_stack:
                hostile = [await start(hostile_stack) for _ in range(3)]
                assert await hostile[0].relay_client.reserve(relay_addr(relay))
                assert await hostile[1].relay_client.reserve(relay_addr(relay))
                assert not await hostile[2].relay_client.reserve(relay_addr(relay))
                assert relay.relay_hop.refusals["reservations"] == 1
            # The holders left: their slots go with their connections, not after the TTL.
            honest = await start(stack)
            with trio.fail_after(10):
                while not await honest.relay_client.reserve(relay_addr(relay)):
                    await trio.sleep(0.2)
            assert relay.relay_hop.reservations() == [honest.peer_id]


async def test_one_ip_holds_at_most_its_share_of_the_slots() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(max_reservations=8, max_reservations_per_ip=2))
            peers = [await start(stack) for _ in range(3)]  # all from 127.0.0.1
            results = [await p.relay_client.reserve(relay_addr(relay)) for p in peers]
            assert results == [True, True, False]
            assert relay.relay_hop.refusals["reservations-per-ip"] == 1
            # A refresh by a holder is not a new slot.
            assert await peers[0].relay_client.reserve(relay_addr(relay))


async def test_one_source_peer_opens_at_most_its_share_of_circuits() -> None:
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(max_circuits_per_peer=1))
            targets = [await start(stack) for _ in range(2)]
            for t in targets:
                t.set_stream_handler(ECHO, echo)
                assert await t.relay_client.reserve(relay_addr(relay))
            caller = await start(stack)
            await caller.relay_client.dial(targets[0].peer_id, [through(relay, targets[0])])
            with pytest.raises(PeerUnreachableError):
                await caller.relay_client.dial(targets[1].peer_id, [through(relay, targets[1])])
            assert relay.relay_hop.refusals["circuits-per-peer"] == 1
            assert targets[1].peer_id not in caller.peers()
            # The first circuit still works.
            stream = await caller.open_stream(targets[0].peer_id, ECHO, first=b"\x02hi")
            assert await stream.read_frame(timeout_s=10) == b"hi"
            await stream.close()


async def test_an_idle_circuit_is_cut_at_its_duration_limit() -> None:
    # py-libp2p checked the duration only when data arrived: a silent circuit held its
    # slot forever.
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(circuit_duration_s=2))
            target = await start(stack)
            # Named by the operator (configured): a relay picked by itself with circuits
            # this short would not be used (`too_limited`).
            assert await target.relay_client.reserve(relay_addr(relay), configured=True)
            caller = await start(stack)
            await caller.relay_client.dial(target.peer_id, [through(relay, target)])
            assert target.peer_id in caller.peers()
            assert relay.relay_hop.circuits == 1
            with trio.fail_after(10):
                while target.peer_id in caller.peers() or relay.relay_hop.circuits:
                    await trio.sleep(0.2)
            assert relay.relay_hop.refusals["duration"] >= 1


async def test_a_circuit_past_its_byte_budget_is_cut() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits(circuit_bytes=64 * 1024))
            target = await start(stack)
            target.set_stream_handler(ECHO, echo)
            assert await target.relay_client.reserve(relay_addr(relay), configured=True)
            caller = await start(stack)
            await caller.relay_client.dial(target.peer_id, [through(relay, target)])
            stream = await caller.open_stream(target.peer_id, ECHO, first=b"\x02hi")
            assert await stream.read_frame(timeout_s=10) == b"hi"
            with pytest.raises(NetworkError):
                for _ in range(20):  # 160 KiB each way: past 64 KiB
                    await stream.write_frame(b"x" * 8192)
                    await stream.read_frame(timeout_s=5)
            with trio.fail_after(10):
                while target.peer_id in caller.peers():
                    await trio.sleep(0.2)


async def test_a_node_relays_by_default_only_once_autonat_says_public() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            quick = AutoNatConfig(confirmations=1, first_delay_s=0.5, unknown_interval_s=1.0)
            auto = await stack.enter_async_context(run_host(config(autonat=quick)))
            off = await stack.enter_async_context(run_host(config(
                autonat=quick, relay=RelayServiceConfig(mode="off"))))
            client = await start(stack)
            assert not await client.relay_client.reserve(relay_addr(auto))  # unknown yet
            await off.connect(relay_addr(auto))
            await auto.connect(relay_addr(off))
            with trio.fail_after(20):  # each dials the other back: both public
                while auto.reachability != "public" or off.reachability != "public":
                    await trio.sleep(0.2)
                while not auto.relay_hop.serving:
                    await trio.sleep(0.2)
            assert await client.relay_client.reserve(relay_addr(auto))
            assert not off.relay_hop.serving
            assert not await client.relay_client.reserve(relay_addr(off))


async def test_the_relay_service_starts_and_stops_as_the_verdict_changes() -> None:
    """HOP is served from the moment AutoNAT finds the node public, and refused from the
    moment it finds it private (the service read the verdict once a second)."""
    async with AsyncExitStack() as stack:
        no_rounds = AutoNatConfig(first_delay_s=600)  # only the test sets the verdict
        relay = await stack.enter_async_context(run_host(config(autonat=no_rounds)))
        await trio.sleep(0.1)
        assert not relay.relay_hop.serving
        relay.autonat.watch.set("public")
        await await_until(lambda: relay.relay_hop.serving, timeout_s=0.3)
        relay.autonat.watch.set("private")
        await await_until(lambda: not relay.relay_hop.serving, timeout_s=0.3)


async def count_accepts(listeners: list[trio.SocketListener], accepted: list[int], *,
                        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    """Append the listener's port to `accepted` for each connection it accepts."""
    port = listeners[0].socket.getsockname()[1]
    task_status.started()
    while True:
        stream = await listeners[0].accept()
        accepted.append(port)
        await stream.aclose()


async def dcutr_connect(stream: Any, addr: str) -> None:
    message = HolePunch(type=HolePunch.CONNECT)
    message.ObsAddrs.append(multiaddr.Multiaddr(addr).to_bytes())
    await write_delimited_msg(stream, message)


async def test_dcutr_over_a_direct_connection_is_refused_and_dials_no_one() -> None:
    # py-libp2p's responder dials whatever addresses any connected peer names.
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.3")
            accepted: list[int] = []
            await nursery.start(count_accepts, listeners, accepted)
            victim = f"/ip4/127.0.0.3/tcp/{listeners[0].socket.getsockname()[1]}"
            node_ = await start(stack)
            hostile = await start(stack)
            await hostile.connect(node_.addrs()[0])
            answered = True
            try:
                # The node may reset the stream before our CONNECT is even written, or
                # (on a loaded machine) before the protocol negotiation is through.
                stream = await hostile._host.new_stream(ID.from_base58(node_.peer_id),
                                                        [DCUTR_PROTOCOL_ID])
                await dcutr_connect(stream, victim)
                with trio.fail_after(5):
                    await read_delimited_msg(stream, HolePunch)
                    await write_delimited_msg(stream, HolePunch(type=HolePunch.SYNC))
            except Exception:  # the stream was reset before any answer
                answered = False
            assert not answered
            await trio.sleep(1.0)
            assert accepted == [] and node_.dcutr.refused == 1
            nursery.cancel_scope.cancel()


async def test_dcutr_over_a_relay_dials_at_most_four_of_the_named_addresses() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            listeners = [await trio.open_tcp_listeners(0, host="127.0.0.3") for _ in range(8)]
            accepted: list[int] = []
            for listener in listeners:
                await nursery.start(count_accepts, listener, accepted)
            relay = await start(stack, limits())
            target = await start(stack)
            assert await target.relay_client.reserve(relay_addr(relay))
            hostile = await start(stack)
            await hostile.relay_client.dial(target.peer_id, [through(relay, target)])
            stream = await hostile._host.new_stream(ID.from_base58(target.peer_id),
                                                    [DCUTR_PROTOCOL_ID])
            message = HolePunch(type=HolePunch.CONNECT)
            for listener in listeners:
                port = listener[0].socket.getsockname()[1]
                message.ObsAddrs.append(multiaddr.Multiaddr(f"/ip4/127.0.0.3/tcp/{port}").to_bytes())
            await write_delimited_msg(stream, message)
            await read_delimited_msg(stream, HolePunch)
            await write_delimited_msg(stream, HolePunch(type=HolePunch.SYNC))
            await trio.sleep(3.0)
            assert 1 <= len(set(accepted)) <= 4  # each dialled up to 3 times (py-libp2p's rounds)
            nursery.cancel_scope.cancel()
