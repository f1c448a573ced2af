"""How the engine server (and the gateway) write replies: each head with its first body bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from p2pinfer.api.server import create_app, serve
from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TokenDelta,
    Usage,
)


class FakePausingBackend:
    """Streams one token, then waits for `go` before the rest (a slow second token)."""

    name = "fake"

    def __init__(self) -> None:
        self.go = trio.Event()

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("fake:latest", "ab" * 32)]

    def chat(self, model: str, messages: Sequence[ChatMessage], params: SamplingParams) -> Any:
        return self._stream()

    def generate(self, model: str, prompt: str, params: SamplingParams) -> Any:
        return self._stream()

    @asynccontextmanager
    async def _stream(self) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        yield self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        yield TokenDelta("Once")
        await self.go.wait()
        yield TokenDelta(" upon")
        yield Completion("length", Usage(4, 2))

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def served(backend: FakePausingBackend) -> AsyncIterator[str]:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, shutdown_trigger=stop.wait), create_app(backend), "127.0.0.1", 0
        )
        yield binds[0]
        stop.set()


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every chunk of bytes written to a TCP stream in this process (server and client)."""
    sent: list[bytes] = []
    real = trio.SocketStream.send_all

    async def recording(self: trio.SocketStream, data: bytes | bytearray | memoryview) -> None:
        sent.append(bytes(data))
        await real(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", recording)
    return sent


@pytest.mark.parametrize(
    ("path", "body", "first_line"),
    [
        ("/api/generate", {"model": "fake", "prompt": "x", "raw": True}, b'"response":"Once"'),
        ("/v1/completions", {"model": "fake", "prompt": "x", "stream": True}, b'"text":"Once"'),
    ],
)
async def test_the_first_token_leaves_in_the_same_write_as_the_reply_head(
    writes: list[bytes], path: str, body: dict[str, Any], first_line: bytes
) -> None:
    # One write, so the client wakes once for its first token, not for the head first.
    backend = FakePausingBackend()
    async with served(backend) as url, httpx.AsyncClient(base_url=url, timeout=5) as client:
        with trio.fail_after(5):
            async with client.stream("POST", path, json=body) as reply:
                lines = reply.aiter_lines()
                assert "Once" in await lines.__anext__()
                heads = [w for w in writes if w.startswith(b"HTTP/1.1 ")]
                backend.go.set()
                rest = [line async for line in lines]
    assert any("upon" in line for line in rest)
    assert len(heads) == 1 and heads[0].startswith(b"HTTP/1.1 200")
    head, _, rest = heads[0].partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower() and first_line in rest


async def test_100_continue_is_not_held_back() -> None:
    # The client waits for it before sending the body: holding it would hang both.
    async with served(FakePausingBackend()) as url:
        port = int(url.rsplit(":", 1)[1])
        body = b'{"model":"fake"}'
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    b"POST /api/show HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\n"
                    b"content-type: application/json\r\ncontent-length: %d\r\n\r\n" % len(body)
                )
                received = b""
                while b"\r\n\r\n" not in received:
                    received += await stream.receive_some()
                assert received.startswith(b"HTTP/1.1 100 ")
                await stream.send_all(body)
                while b'"details"' not in received:
                    received += await stream.receive_some()
    assert b"HTTP/1.1 200 " in received


async def test_replies_without_a_body_are_complete() -> None:
    async with served(FakePausingBackend()) as url, httpx.AsyncClient(base_url=url) as client:
        with trio.fail_after(5):
            head = await client.head("/")
            missing = await client.post("/api/chat", json={"model": "nope", "messages": []})
    assert head.status_code == 200 and head.content == b""
    assert missing.status_code == 404 and missing.json() == {"error": "model 'nope' not found"}
