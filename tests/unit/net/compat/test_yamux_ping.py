"""Attack 60: Yamux PINGs in bulk. py-libp2p 0.8.1's Yamux answers every PING frame a
peer sends with a PING ACK, written at once from its read loop: 12 bytes in, a Noise
message out, ~0.1 ms of the node's event loop, with no bound. 10,000 of them (120 KB) took
~1.8 CPU-s here; a 1 Mbit/s uplink keeps a node's loop busy. Real p2pinfer hosts on
127.0.0.1; the attacker writes raw Yamux frames on its connection."""

from __future__ import annotations

import struct
from typing import Any

import pytest
import trio
from libp2p.peer.id import ID

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat import yamux_ping
from p2pinfer.net.compat.yamux_ping import PONG_BURST, PONG_RATE_PER_S
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.ping import ping
from tests.support.waiting import await_until
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

pytestmark = pytest.mark.network

PONG = (0, 2, 2)  # version 0, PING, flag ACK


def connection(a: NetHost, b: NetHost) -> Any:
    conns = a._host.get_network().connections.get(ID.from_base58(b.peer_id))
    return conns[0] if isinstance(conns, list) else conns


async def test_yamux_pings_in_bulk_are_answered_at_a_rate_then_the_connection_closed() -> None:
    pings = 10_000
    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as attacker, \
                run_host(NetConfig(NodeIdentity.generate())) as honest:
            addr = next(a for a in target.addrs() if "/tcp/" in a)
            await attacker.connect(addr)
            await honest.connect(addr)
            secured = connection(target, attacker).muxed_conn.secured_conn
            pongs = 0
            write = secured.write

            async def counted(data: bytes) -> None:
                nonlocal pongs
                if len(data) == 12 and struct.unpack_from("!BBH", data) == PONG:
                    pongs += 1
                await write(data)

            secured.write = counted
            frames = b"".join(struct.pack("!BBHII", 0, 2, 1, 0, n) for n in range(pings))
            started = trio.current_time()
            sender = connection(attacker, target).muxed_conn.secured_conn
            try:
                for at in range(0, len(frames), 12_000):
                    await sender.write(frames[at:at + 12_000])
            except Exception:  # the target closed the connection: nothing more goes
                pass
            await await_until(lambda: attacker.peer_id not in target.peers(), timeout_s=30)
            elapsed = trio.current_time() - started
            with trio.fail_after(5):
                await ping(honest, target.peer_id)  # another connection: answered
    # All 10,000 answered on the old code, and the connection stayed open.
    assert pongs <= PONG_BURST + PONG_RATE_PER_S * elapsed + 1, (pongs, elapsed)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(yamux_ping)
