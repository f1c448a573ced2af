"""A consumer dialling a provider through one of its relays (RelayClient.dial), on real
hosts on 127.0.0.1: the relay it picks is the one it dials, whatever else its peerstore
holds, and a relay whose circuits are too small for a job is passed over for another."""

from __future__ import annotations

from contextlib import AsyncExitStack

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID

from p2pinfer.errors import PeerUnreachableError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.relay_rules import MIN_JOB_CIRCUIT_BYTES, path_of
from tests.integration.net_helpers import hold_silently
from tests.integration.test_net_relay_limits import (
    ECHO,
    echo,
    limits,
    relay_addr,
    start,
    through,
)

pytestmark = pytest.mark.network

SMALL = 128 * 1024  # what a go-libp2p relay grants by default


async def test_a_planted_circuit_address_through_a_mute_relay_does_not_stall_the_dial() -> None:
    # Any peer can put addresses into a node's peerstore: py-libp2p's DHT stores the
    # addresses a FIND_NODE answer gives for each peer it names, as they came.
    # py-libp2p's circuit transport tried every circuit address the peerstore held for
    # the target before the relay it was asked to use: one planted through a relay that
    # accepts TCP and never answers made the provider unreachable (each relayed try
    # timed out on it first).
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            mute_listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await nursery.start(hold_silently, mute_listeners)
            mute_id = NodeIdentity.generate().peer_id
            mute_tcp = f"/ip4/127.0.0.1/tcp/{mute_listeners[0].socket.getsockname()[1]}"
            mute = f"{mute_tcp}/p2p/{mute_id}"
            relay = await start(stack, limits())
            target = await start(stack)
            target.set_stream_handler(ECHO, echo)
            assert await target.relay_client.reserve(relay_addr(relay))
            caller = await start(stack)
            # A FIND_NODE answer naming the mute relay and the target, as py-libp2p's DHT
            # stores it: each peer's addresses as they came.
            store = caller._host.get_peerstore()
            store.add_addrs(ID.from_base58(mute_id), [multiaddr.Multiaddr(mute_tcp)], 3600)
            store.add_addrs(ID.from_base58(target.peer_id), [
                multiaddr.Multiaddr(f"{mute}/p2p-circuit/p2p/{target.peer_id}")], 3600)
            started = trio.current_time()
            used = await caller.relay_client.dial(target.peer_id, [through(relay, target)])
            assert trio.current_time() - started < 5.0  # the dial timeout is 10 s
            assert used == through(relay, target)
            stream = await caller.open_stream(target.peer_id, ECHO, first=b"\x02hi")
            assert await stream.read_frame(timeout_s=5) == b"hi"
            assert path_of(stream.transport_addrs()) == "relayed"
            await stream.close()
            nursery.cancel_scope.cancel()


async def test_a_relay_granting_circuits_too_small_for_a_job_is_passed_over() -> None:
    # The provider named both relays (its operator's choice); the consumer reads each
    # relay's CONNECT answer and keeps the circuit whose limits can carry a job.
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            small = await start(stack, limits(circuit_bytes=SMALL))
            roomy = await start(stack, limits())
            target = await start(stack)
            target.set_stream_handler(ECHO, echo)
            assert await target.relay_client.reserve(relay_addr(small), configured=True)
            assert await target.relay_client.reserve(relay_addr(roomy), configured=True)
            caller = await start(stack)
            used = await caller.relay_client.dial(
                target.peer_id, [through(small, target), through(roomy, target)])
            assert used == through(roomy, target)
            assert caller.relay_client.limited[small.peer_id] == (SMALL, 900)
            with trio.fail_after(10):  # the circuit through the small relay was closed
                while small.relay_hop.circuits:
                    await trio.sleep(0.1)
            assert roomy.relay_hop.circuits == 1
            # A job's worth of data goes through (the small relay would cut it at 128 KiB).
            stream = await caller.open_stream(target.peer_id, ECHO, first=b"\x02hi")
            assert await stream.read_frame(timeout_s=5) == b"hi"
            for _ in range(MIN_JOB_CIRCUIT_BYTES // 8192 // 2):
                await stream.write_frame(b"x" * 8192)
                assert len(await stream.read_frame(timeout_s=5)) == 8192
            await stream.close()


async def test_a_provider_behind_only_a_limited_relay_is_still_reached() -> None:
    # Better a circuit that may be cut (a long job then fails over) than no provider.
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            small = await start(stack, limits(circuit_bytes=SMALL))
            target = await start(stack)
            target.set_stream_handler(ECHO, echo)
            assert await target.relay_client.reserve(relay_addr(small), configured=True)
            caller = await start(stack)
            used = await caller.relay_client.dial(target.peer_id, [through(small, target)])
            assert used == through(small, target)
            assert caller.relay_client.limited[small.peer_id] == (SMALL, 900)
            stream = await caller.open_stream(target.peer_id, ECHO, first=b"\x02hi")
            assert await stream.read_frame(timeout_s=5) == b"hi"
            await stream.close()


async def test_a_limited_relay_passed_over_is_taken_when_the_others_fail() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            small = await start(stack, limits(circuit_bytes=SMALL))
            refusing = await start(stack, limits())  # the target holds no slot there
            target = await start(stack)
            target.set_stream_handler(ECHO, echo)
            assert await target.relay_client.reserve(relay_addr(small), configured=True)
            caller = await start(stack)
            used = await caller.relay_client.dial(
                target.peer_id, [through(small, target), through(refusing, target)])
            assert used == through(small, target)
            stream = await caller.open_stream(target.peer_id, ECHO, first=b"\x02hi")
            assert await stream.read_frame(timeout_s=5) == b"hi"
            assert path_of(stream.transport_addrs()) == "relayed"
            await stream.close()


async def test_a_relay_that_refuses_the_circuit_is_a_clear_failure() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits())
            target = await start(stack)  # holds no slot there
            caller = await start(stack)
            with pytest.raises(PeerUnreachableError, match="NO_RESERVATION"):
                await caller.relay_client.dial(target.peer_id, [through(relay, target)])
            assert target.peer_id not in caller.peers()
