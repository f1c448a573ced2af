"""Serving an ASGI app with hypercorn on trio, each response head written with its first body.

hypercorn writes a response's status line and headers as soon as the app sends
`http.response.start`, and the first body chunk in a write of its own: for a
streamed reply that is two writes, so the client may wake up twice before it
holds the first token. `serve_asgi` runs hypercorn's own connection handler
(`HeadWithBodyTCPServer`) with one change: a final (2xx-5xx) response head waits
for the connection's next bytes and leaves with them in one write. Every reply
here sends its first body bytes right after the head (a streamed reply starts
once its first token is known), so a head never waits longer than that; a 1xx
head (`100 Continue`) goes out at once, since the client waits for it.

The rest is hypercorn's `worker_serve` for plain TCP sockets: the lifespan
protocol, a `shutdown_trigger`, and `graceful_timeout` for open connections; and
each connection passes a `ConnectionGate` first (`http/conn_gate.py`: how many
connections the server holds, in all and per client address).
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio
from hypercorn.config import Config
from hypercorn.events import Event, RawData
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.statsd import StatsdLogger
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState, LifespanState
from hypercorn.utils import ShutdownError, raise_shutdown, repr_socket_addr, wrap_app

from p2pinfer.http.conn_gate import ConnectionGate, ConnectionLimits

if TYPE_CHECKING:
    from trio_typing import TaskStatus


def is_final_response_head(data: bytes) -> bool:
    """Whether `data` is an HTTP/1.1 response head with a final (not 1xx) status."""
    return (
        data.startswith(b"HTTP/1.1 ")
        and not data.startswith(b"HTTP/1.1 1")
        and data.endswith(b"\r\n\r\n")
    )


class HeadWithBodyTCPServer(TCPServer):
    """hypercorn's HTTP/1.1 connection handler, holding a final response head for the body."""

    _held = b""

    async def protocol_send(self, event: Event) -> None:
        held = self._held
        if isinstance(event, RawData):
            if held:
                self._held = b""
                event = RawData(held + event.data, event.address)
            elif is_final_response_head(event.data):
                self._held = event.data
                return
        elif held:  # closing (or idle) with a head never followed by a body: send it now
            self._held = b""
            await super().protocol_send(RawData(held))
        await super().protocol_send(event)

    async def _read_data(self) -> None:
        await super()._read_data()
        # The client left (or its socket failed). hypercorn then waits for the keep-alive
        # timer of an idle connection, up to 5 s, before it closes the socket: a client
        # that connects and hangs up at once held a descriptor here for 5 s. A request
        # still being answered is not idle and has no timer to stop.
        await self.idle_task.stop()


async def serve_asgi(
    app: Any,
    config: Config,
    sockets: Sequence[socket.socket],
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    limits: ConnectionLimits = ConnectionLimits(),
    task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on the listening `sockets` until cancelled or `shutdown_trigger` returns.

    `task_status.started` gets the URLs served (`http://host:port`). The caller owns
    the sockets (and closes them). A connection over `limits` is answered 503 and closed.
    """
    config.set_statsd_logger_class(StatsdLogger)
    wrapped = wrap_app(app, config.wsgi_max_body_size, "asgi")
    lifespan_state: LifespanState = {}
    lifespan = Lifespan(wrapped, config, lifespan_state)
    context = WorkerContext(None)
    async with trio.open_nursery() as lifespan_nursery:
        await lifespan_nursery.start(lifespan.handle_lifespan)
        await lifespan.wait_for_startup()
        async with trio.open_nursery() as server_nursery:
            listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
            binds = [f"http://{repr_socket_addr(s.family, s.getsockname())}" for s in sockets]
            handler = ConnectionGate(limits).wrap(partial(
                HeadWithBodyTCPServer, wrapped, config, context,
                ConnectionState(lifespan_state.copy()),
            ))  # fmt: skip
            task_status.started(binds)
            try:
                async with trio.open_nursery() as nursery:
                    if shutdown_trigger is not None:
                        nursery.start_soon(raise_shutdown, shutdown_trigger)
                    nursery.start_soon(raise_shutdown, context.terminate.wait)
                    nursery.start_soon(
                        partial(trio.serve_listeners, handler, listeners,
                                handler_nursery=server_nursery)
                    )  # fmt: skip
                    await trio.sleep_forever()
            except BaseExceptionGroup as error:
                _, others = error.split((ShutdownError, KeyboardInterrupt))
                if others is not None:
                    raise others from None
            finally:
                await context.terminated.set()
                server_nursery.cancel_scope.deadline = trio.current_time() + config.graceful_timeout
        await lifespan.wait_for_shutdown()
        lifespan_nursery.cancel_scope.cancel()


__all__ = ["HeadWithBodyTCPServer", "is_final_response_head", "serve_asgi"]
