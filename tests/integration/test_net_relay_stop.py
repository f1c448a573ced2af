"""Attack 36: connections brought in over STOP streams by a peer that is not our relay
(p2pinfer/net/relay.py).

Circuit Relay v2's STOP protocol is how a relay hands a node a connection: the node
answers OK and runs Noise and Yamux over the stream, and the result is a connection
like any other. py-libp2p answers STOP from any connected peer. So one TCP connection,
which the inbound shares count once (16 per address, 2 new a second, the last 50 slots
kept for proven peers: attacks 20, 31, 32), carried any number of further connections,
one per stream, each costing the node a Noise handshake, identify and the greetings of
every protocol, each under a fresh key of the attacker's. Real hosts on 127.0.0.1.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import multiaddr
import pytest
import trio
from libp2p.connection_types import ConnectionType
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import PeerId, StopMessage
from libp2p.relay.circuit_v2.protocol import STOP_PROTOCOL_ID
from libp2p.relay.circuit_v2.protocol_buffer import StatusCode
from libp2p.relay.circuit_v2.utils import read_delimited_msg, write_delimited_msg

from p2pinfer.net.nethost import NetHost
from tests.integration.test_net_relay_limits import (
    ECHO,
    echo,
    limits,
    relay_addr,
    start,
    through,
)

pytestmark = pytest.mark.network


async def bring_in(carrier: NetHost, node: NetHost, forged: NetHost) -> bool:
    """Over a STOP stream `carrier` opens to `node`, hand `node` a connection from
    `forged` (its key runs the Noise handshake). Whether `node` took it."""
    node_id = ID.from_base58(node.peer_id)
    try:
        stream = await carrier._host.new_stream(node_id, [STOP_PROTOCOL_ID])
        await write_delimited_msg(stream, StopMessage(
            type=StopMessage.CONNECT, peer=PeerId(id=ID.from_base58(forged.peer_id).to_bytes())))
        with trio.fail_after(5):
            answer = await read_delimited_msg(stream, StopMessage)
    except Exception:  # refused by a reset
        return False
    if answer.status != StatusCode.OK:
        return False
    raw = RawConnection(stream=stream, initiator=True, connection_type=ConnectionType.RELAYED,
                        addresses=[multiaddr.Multiaddr(f"/p2p/{carrier.peer_id}/p2p-circuit")])
    with trio.fail_after(10):
        await forged._host.upgrade_outbound_connection(raw, node_id)
    return True


async def test_a_peer_that_is_not_our_relay_brings_in_no_connection() -> None:
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            node = await start(stack)  # holds no relay slot anywhere
            carrier = await start(stack)
            await carrier.connect(node.addrs()[0])
            forged = [await start(stack) for _ in range(3)]  # fresh keys, never dialled
            taken = [await bring_in(carrier, node, f) for f in forged]
            assert taken == [False, False, False]
            await trio.sleep(0.5)
            assert not {f.peer_id for f in forged} & set(node.peers())
            assert node.relay_hop.refusals["stop-not-our-relay"] == 3


async def test_our_relay_brings_in_its_circuits_and_no_more_than_the_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from p2pinfer.net import relay as relay_module
    monkeypatch.setattr(relay_module, "MAX_INBOUND_RELAYED", 2)
    with trio.fail_after(60):
        async with AsyncExitStack() as stack:
            relay = await start(stack, limits())
            node = await start(stack)
            node.set_stream_handler(ECHO, echo)
            assert await node.relay_client.reserve(relay_addr(relay))
            callers = [await start(stack) for _ in range(3)]
            for caller in callers[:2]:  # circuits through the relay, as the spec has them
                await caller.relay_client.dial(node.peer_id, [through(relay, node)])
                stream = await caller.open_stream(node.peer_id, ECHO, first=b"\x02hi")
                assert await stream.read_frame(timeout_s=10) == b"hi"
            # The relay (here: a hostile one we reserved at) hands in one more at once.
            assert not await bring_in(relay, node, callers[2])
            assert node.relay_hop.refusals["stop-inbound-relayed"] == 1
