"""Addresses another peer planted in our peerstore (py-libp2p's DHT stores every address a
FIND_NODE answer gives, for whichever peers it names) must not keep us from dialling a
peer at the address it gave itself, on real hosts on 127.0.0.1."""

from __future__ import annotations

from contextlib import AsyncExitStack

import multiaddr
import pytest
import trio
from libp2p.peer.id import ID

from tests.integration.net_helpers import hold_silently
from tests.integration.test_net_relay_limits import ECHO, echo, start

pytestmark = pytest.mark.network


async def test_a_planted_mute_address_does_not_keep_a_peer_from_being_dialled() -> None:
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            await nursery.start(hold_silently, listeners)
            mute = multiaddr.Multiaddr(
                f"/ip4/127.0.0.1/tcp/{listeners[0].socket.getsockname()[1]}")
            target = await start(stack)
            target.set_stream_handler(ECHO, echo)
            caller = await start(stack)
            caller._host.get_peerstore().add_addrs(ID.from_base58(target.peer_id), [mute], 3600)
            caller.add_peer_addrs(target.peer_id, tuple(target.addrs()))  # its own word
            stream = await caller.open_stream(target.peer_id, ECHO, first=b"\x02hi",
                                              timeout_s=8)
            assert await stream.read_frame(timeout_s=5) == b"hi"
            await stream.close()
            nursery.cancel_scope.cancel()
