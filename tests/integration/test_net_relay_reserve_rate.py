"""Attack 63: reservation refreshes in a loop. A peer holding a slot at a relay may send
RESERVE again to refresh it, and py-libp2p refreshes it each time: a new expiry and a
freshly signed voucher, the relay's addresses built again, an answer written, with no
bound on how often, on as many HOP streams as the peer opens (each pipelining its
requests). 1,000 refreshes cost ~1 CPU-s here; 256 streams of them, ~2,500 a second.
Honest clients refresh every 2 minutes. Real hosts on loopback."""

from __future__ import annotations

import contextlib

import pytest
import trio
from libp2p.peer.id import ID
from libp2p.relay.circuit_v2.pb.circuit_pb2 import HopMessage
from libp2p.relay.circuit_v2.protocol import PROTOCOL_ID as HOP_PROTOCOL_ID
from libp2p.utils.varint import encode_uvarint

from p2pinfer.net.host import run_host
from p2pinfer.net.relay import RESERVE_BURST, RESERVE_EVERY_S
from tests.integration.net_helpers import config
from tests.integration.relay_helpers import relay_config

pytestmark = pytest.mark.network

RESERVE = HopMessage(type=HopMessage.RESERVE).SerializeToString()


async def test_a_peer_refreshing_its_slot_in_a_loop_is_held_to_a_rate() -> None:
    with trio.fail_after(60):
        async with run_host(relay_config()) as relay, run_host(config()) as squatter, \
                run_host(config(ip="127.0.0.3")) as honest:
            manager = relay.relay_hop.resource_manager
            refreshed = 0
            refresh = manager.refresh_reservation

            def counted(peer: ID) -> int:
                nonlocal refreshed
                refreshed += 1
                return refresh(peer)

            manager.refresh_reservation = counted
            await squatter.connect(relay.addrs()[0])
            relay_id = ID.from_base58(relay.peer_id)
            started = trio.current_time()

            async def pipeline() -> None:
                stream = await squatter._host.new_stream(relay_id, [HOP_PROTOCOL_ID])
                await stream.write((encode_uvarint(len(RESERVE)) + RESERVE) * 10)
                with trio.move_on_after(3), contextlib.suppress(Exception):
                    while await stream.read(65536):  # until the relay ends the stream
                        pass

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(pipeline)
            elapsed = trio.current_time() - started
            # Another peer still gets its slot.
            await honest.connect(relay.addrs()[0])
            stream = await honest._host.new_stream(relay_id, [HOP_PROTOCOL_ID])
            await stream.write(encode_uvarint(len(RESERVE)) + RESERVE)
            with trio.fail_after(10):
                while not manager.has_reservation(ID.from_base58(honest.peer_id)):
                    await trio.sleep(0.05)
    # 199 refreshes (a voucher signed each) on the old code.
    assert refreshed <= RESERVE_BURST + elapsed / RESERVE_EVERY_S, (refreshed, elapsed)
    assert relay.relay_hop.refusals["reserve-rate"] > 0
