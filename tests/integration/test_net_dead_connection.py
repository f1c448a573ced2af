"""A connection that went dead without TCP noticing (a partition that drops packets):
the stream open that times out on it drops it, so the next attempt dials afresh
instead of waiting on the dead connection again."""

from __future__ import annotations

import pytest
import trio

from p2pinfer.errors import PeerTimeoutError
from p2pinfer.net.host import run_host
from p2pinfer.net.info import INFO_PROTOCOL
from p2pinfer.net.nethost import NetHost
from tests.integration.net_helpers import config

pytestmark = pytest.mark.network


class FreezableRelay:
    """A TCP relay to a host on 127.0.0.1. `freeze()` stops carrying bytes on the
    connections open now, without closing them: what a partition looks like to TCP
    until its keepalives give up. Connections made later are carried normally."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._frozen: list[trio.Event] = []

    async def serve(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def freeze(self) -> None:
        for event in self._frozen:
            event.set()

    async def _handle(self, client: trio.SocketStream) -> None:
        frozen = trio.Event()
        self._frozen.append(frozen)
        upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        async with client, upstream, trio.open_nursery() as nursery:
            nursery.start_soon(self._pipe, client, upstream, frozen, nursery.cancel_scope)
            nursery.start_soon(self._pipe, upstream, client, frozen, nursery.cancel_scope)

    @staticmethod
    async def _pipe(src: trio.SocketStream, dst: trio.SocketStream, frozen: trio.Event,
                    scope: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                if frozen.is_set():
                    continue  # swallowed: the partition
                await dst.send_all(data)
        except trio.BrokenResourceError:
            pass
        if not frozen.is_set():
            scope.cancel()


def port_of(net: NetHost) -> int:
    return int(net.addrs()[0].split("/tcp/")[1].split("/")[0])


async def test_a_stream_open_that_times_out_drops_the_dead_connection_and_redials() -> None:
    with trio.fail_after(60):
        async with run_host(config()) as server, trio.open_nursery() as nursery:
            relay = FreezableRelay(port_of(server))
            await nursery.start(relay.serve)
            via_relay = f"/ip4/127.0.0.1/tcp/{relay.port}/p2p/{server.peer_id}"
            async with run_host(config()) as client:
                await client.connect(via_relay)
                stream = await client.open_stream(server.peer_id, INFO_PROTOCOL, timeout_s=10)
                await stream.reset()
                relay.freeze()
                with pytest.raises(PeerTimeoutError):
                    await client.open_stream(server.peer_id, INFO_PROTOCOL, timeout_s=1.0)
                # The dead connection is gone, and the next open dials a new one (to any
                # address the peer is known by: identify taught the client its own).
                assert server.peer_id not in client.peers()
                stream = await client.open_stream(server.peer_id, INFO_PROTOCOL, timeout_s=10)
                await stream.reset()
            nursery.cancel_scope.cancel()
