"""A fake HTTP/1.1 server on a real socket, for engines that are slow or answer garbage."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

#: A reply: status, content type, and body pieces sent one after another;
#: `None` as a piece means "stall here forever".
Reply = tuple[int, str, list[bytes | None]]


@dataclass
class FakeHTTPServer:
    """Answers each request with `routes[path](body)`; counts requests."""

    routes: dict[str, Callable[[bytes], Reply]]
    port: int = 0
    requests: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value.strip())
            while len(body) < length:
                body += await stream.receive_some(65536)
            self.requests += 1
            handler = self.routes.get(path)
            status, content_type, pieces = (
                handler(body) if handler else (404, "text/plain", [b"404 page not found"])
            )
            await stream.send_all(
                f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                "transfer-encoding: chunked\r\nconnection: close\r\n\r\n".encode()
            )
            for piece in pieces:
                if piece is None:
                    await trio.sleep_forever()
                await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
            await stream.send_all(b"0\r\n\r\n")


@asynccontextmanager
async def fake_http_server(
    routes: dict[str, Callable[[bytes], Reply]],
) -> AsyncIterator[FakeHTTPServer]:
    server = FakeHTTPServer(routes)
    async with trio.open_nursery() as nursery:
        serve_tcp = partial(trio.serve_tcp, host="127.0.0.1")
        listeners = await nursery.start(serve_tcp, server._handle, 0)
        server.port = listeners[0].socket.getsockname()[1]
        yield server
        nursery.cancel_scope.cancel()


def closed_port() -> int:
    """A local port nobody listens on (bound, then released)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
