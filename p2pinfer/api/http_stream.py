"""An ASGI response that runs one backend stream for one HTTP request.

It owns the stream's lifetime: the backend's context is entered and left in
this task (never across an async generator's `yield`), the HTTP status is sent
only once the first event or error is known (so an unknown model still gets its
404), and a client that disconnects cancels the stream, which stops generation.
A host may add headers to a successful reply from the open stream (the network
gateway names the provider, job id and charge this way).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from functools import partial
from typing import Protocol, TypeVar

import trio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from p2pinfer.backends.base import (
    Completion,
    StreamEvent,
    TokenDelta,
    TokenLogprob,
    restarted_mid_stream,
)
from p2pinfer.errors import (
    AllProvidersFailedError,
    BadRequestError,
    EngineResponseError,
    EngineUnavailable,
    InsufficientCreditError,
    JobTimeoutError,
    ModelNotFound,
    NoProvidersError,
    P2PInferError,
    PeerUnreachableError,
    ProtocolNotSupportedError,
)
from p2pinfer.tasks import beside

_T = TypeVar("_T")
#: The status of a reply to a client that left before it (never sent: nginx's 499).
CLIENT_LEFT = 499

OpenStream = Callable[[], AbstractAsyncContextManager[AsyncIterator[StreamEvent]]]

#: Headers for a successful reply, from the open event stream and, when the reply
#: is sent after generation ended (not streaming), its final event.
ReplyHeaders = Callable[[AsyncIterator[StreamEvent], Completion | None], Sequence[tuple[str, str]]]


class Encoder(Protocol):
    """Turns backend events into response bytes (see ollama_wire / openai_wire)."""

    media_type: str

    def delta(self, event: TokenDelta) -> bytes: ...

    def finish(self, done: Completion) -> bytes: ...

    def whole(self, text: str, done: Completion,
              logprobs: Sequence[TokenLogprob] = ()) -> bytes: ...


def error_status(exc: P2PInferError) -> int:
    """The HTTP status for a backend (or network backend) failure, as Ollama would answer."""
    if isinstance(exc, BadRequestError):
        return 400
    if isinstance(exc, ModelNotFound | NoProvidersError):
        return 404
    if isinstance(exc, InsufficientCreditError):
        return 402
    if isinstance(exc, JobTimeoutError):
        return 504
    if isinstance(exc, EngineUnavailable | AllProvidersFailedError | PeerUnreachableError
                  | ProtocolNotSupportedError):
        return 503
    return 500


class EventsResponse(Response):
    """A reply made from backend event streams (`_respond`, in a subclass): the stream is
    cancelled when the client goes away, and the reply's headers are taken from the open
    event stream (`reply_headers`) when it starts."""

    def __init__(self, reply_headers: ReplyHeaders | None) -> None:
        super().__init__()
        self._reply_headers = reply_headers
        self._events: AsyncIterator[StreamEvent] | None = None
        self._started = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_on_disconnect, receive, nursery.cancel_scope)
            await self._respond(send)
            nursery.cancel_scope.cancel()

    async def _respond(self, send: Send) -> None:
        raise NotImplementedError

    async def _start(
        self, send: Send, status: int, media_type: str, done: Completion | None = None
    ) -> None:
        self._started = True
        headers = [(b"content-type", media_type.encode())]
        if status == 200 and self._reply_headers is not None and self._events is not None:
            for name, value in self._reply_headers(self._events, done):
                headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
        await send({"type": "http.response.start", "status": status, "headers": headers})


class BackendStreamResponse(EventsResponse):
    """Streams (or collects) one backend reply, shaped by an `Encoder`."""

    def __init__(
        self,
        open_stream: OpenStream,
        encoder: Encoder,
        *,
        stream: bool,
        error_body: Callable[[int, str], bytes],
        midstream_error: Callable[[str], bytes],
        not_found_message: str,
        on_done: Callable[[Completion], None] | None = None,
        reply_headers: ReplyHeaders | None = None,
    ) -> None:
        super().__init__(reply_headers)
        self._open = open_stream
        self._encoder = encoder
        self._stream = stream
        self._error_body = error_body
        self._midstream_error = midstream_error
        self._not_found = not_found_message
        self._on_done = on_done
        self._logprobs: list[TokenLogprob] = []  # collected for a reply not streamed

    async def _respond(self, send: Send) -> None:
        text: list[str] = []
        try:
            async with self._open() as events:
                self._events = events
                async for event in events:
                    if isinstance(event, TokenDelta):
                        if event.restart and self._stream:
                            raise restarted_mid_stream()  # what was sent stays sent
                        if not self._stream:
                            if event.restart:  # a failover's answer replaces the first
                                text.clear()
                                self._logprobs.clear()
                            text.append(event.text)
                            self._logprobs.extend(event.logprobs)
                            continue
                        if not self._started:
                            await self._start(send, 200, self._encoder.media_type)
                        body = self._encoder.delta(event)
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                        continue
                    if self._on_done is not None:
                        self._on_done(event)
                    await self._send_last(send, event, "".join(text))
                    return
            raise EngineResponseError("the engine's stream ended without a final event")
        except P2PInferError as exc:
            status = error_status(exc)
            message = self._not_found if status == 404 else str(exc)
            if not self._started:
                await self._start(send, status, "application/json; charset=utf-8")
                body = self._error_body(status, message)
            else:
                body = self._midstream_error(message)
            await send({"type": "http.response.body", "body": body, "more_body": False})

    async def _send_last(self, send: Send, done: Completion, text: str) -> None:
        if self._stream:
            if not self._started:
                await self._start(send, 200, self._encoder.media_type, done)
            body = self._encoder.finish(done)
        else:
            await self._start(send, 200, "application/json; charset=utf-8", done)
            body = self._encoder.whole(text, done, self._logprobs)
        await send({"type": "http.response.body", "body": body, "more_body": False})


async def unless_client_left(receive: Receive, work: Callable[[], Awaitable[_T]]) -> _T | None:
    """`await work()` for a request whose body was read, cancelled when the client goes
    away first (None then), as a streamed reply is: a reply nobody waits for (a long
    embedding) stops the engine, or the network job, it was running (Ollama aborts an
    embedding so too). Call after reading the request's body."""
    return await beside(partial(_cancel_on_disconnect, receive), work)


async def _cancel_on_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    # The request body was read by the route already; the next message is the
    # disconnect (hypercorn sends it when the client goes away).
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            scope.cancel()
            return
