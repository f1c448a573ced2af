"""Circuit Relay v2 in py-libp2p 0.8.1 between three hosts on loopback (docs/network.md,
"Reachability: status"): with a reservation at a relay, a node is reachable through it
and our stream protocols run over the relayed connection; without one it is not; and
AutoNAT refuses to judge a requester that reaches it only through a relay.

Here py-libp2p's relay pieces are driven by hand (the findings behind docs/network.md,
"Reachability: relays"); nodes' own relay service and client are tested in
test_net_relay_limits.py, test_net_relay_reserve.py and test_jobs_relayed.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.relay.circuit_v2.config import RelayConfig
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol import CircuitV2Protocol
from libp2p.relay.circuit_v2.transport import CircuitV2Transport
from libp2p.tools.anyio_service import background_trio_service

from p2pinfer.errors import StreamClosedError
from p2pinfer.net.autonat_rules import AutoNatConfig
from p2pinfer.net.host import build_libp2p_host, run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network

ECHO = "/p2pinfer-test/echo/1.0.0"
MANUAL = AutoNatConfig(confirmations=1, first_delay_s=3600.0)


async def echo(stream: NetStream) -> None:
    while True:
        try:
            frame = await stream.read_frame(timeout_s=10)
        except StreamClosedError:
            return
        await stream.write_frame(frame)


@asynccontextmanager
async def relay_host() -> AsyncIterator[Any]:
    """A bare py-libp2p host (our Noise-only setup) serving the relay's HOP protocol."""
    host = build_libp2p_host(config())
    hop = CircuitV2Protocol(host, allow_hop=True)
    async with (
        host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]),
        background_trio_service(hop),
    ):
        yield host
        await host.close()


async def relay_client(stack: AsyncExitStack, net: NetHost) -> CircuitV2Transport:
    """`net` speaking circuit relay v2 as a client (reserve, dial) and a STOP endpoint."""
    protocol = CircuitV2Protocol(net._host, allow_hop=False)
    await stack.enter_async_context(background_trio_service(protocol))
    return CircuitV2Transport(net._host, protocol, RelayConfig())


async def reserve(net: NetHost, transport: CircuitV2Transport, relay: Any,
                  nursery: trio.Nursery) -> bool:
    await net.connect(str(relay.get_addrs()[0]))
    stream = await net._host.new_stream(relay.get_id(), [HOP_PROTOCOL_ID])
    return bool(await transport.reserve(stream, relay.get_id(), nursery))


def circuit_addr(relay: Any, target: NetHost) -> Any:
    return multiaddr.Multiaddr(f"{relay.get_addrs()[0]}/p2p-circuit/p2p/{target.peer_id}")


async def test_a_node_with_a_reservation_is_reached_through_the_relay() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay = await stack.enter_async_context(relay_host())
            target = await stack.enter_async_context(run_host(config(autonat=MANUAL)))
            caller = await stack.enter_async_context(run_host(config(autonat=MANUAL)))
            target.set_stream_handler(ECHO, echo)
            assert await reserve(target, await relay_client(stack, target), relay, nursery)

            dialer = await relay_client(stack, caller)
            await caller._host.connect(info_from_p2p_addr(relay.get_addrs()[0]))
            await dialer.dial(circuit_addr(relay, target))
            [conn] = caller._host.get_network().get_connections(ID.from_base58(target.peer_id))
            assert any("p2p-circuit" in str(a) for a in conn.get_transport_addresses())

            # Our pipelined stream opening runs over the relayed connection as is.
            stream = await caller.open_stream(target.peer_id, ECHO, first=b"\x05hello")
            assert stream.transport_addrs() is not None
            assert any("p2p-circuit" in a for a in stream.transport_addrs() or [])
            assert await stream.read_frame(timeout_s=10) == b"hello"
            await stream.close()

            # AutoNAT: a requester seen only through a relay gets no dial-back.
            assert await caller.autonat.ask(target.peer_id) is None
            nursery.cancel_scope.cancel()


async def test_without_a_reservation_the_relay_refuses_to_connect() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await stack.enter_async_context(relay_host())
            target = await stack.enter_async_context(run_host(config(autonat=MANUAL)))
            caller = await stack.enter_async_context(run_host(config(autonat=MANUAL)))
            await relay_client(stack, target)
            await target.connect(str(relay.get_addrs()[0]))  # connected, never reserved
            dialer = await relay_client(stack, caller)
            await caller._host.connect(info_from_p2p_addr(relay.get_addrs()[0]))
            with pytest.raises(ConnectionError):
                await dialer.dial(circuit_addr(relay, target))
            assert target.peer_id not in caller.peers()
