"""JSON-RPC 2.0 over HTTP POST: the envelope (single and batch requests, error objects)
as bytes in, bytes out, and a minimal ASGI app around it for hypercorn.

The method table is someone else's (`settle.devchain`): a `Dispatch` gets a method
name and positional params and returns a JSON-ready result or raises `RpcError`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from p2pinfer import json_depth
from p2pinfer.http.asgi_body import BodyTooLarge, read_body

MAX_BODY_BYTES = 1 << 20  # one request or batch; a transaction is a few KiB
MAX_BATCH = 100

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

Dispatch = Callable[[str, list[Any]], Any]
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RpcError(Exception):
    """A JSON-RPC error object: `code`, `message`, optional `data`."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def _error_reply(request_id: Any, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.to_json()}


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, str | int) and not isinstance(value, bool))


def handle_one(request: Any, dispatch: Dispatch) -> dict[str, Any] | None:
    """The reply to one request object, or None for a notification (no "id")."""
    if not isinstance(request, dict):
        return _error_reply(None, RpcError(INVALID_REQUEST, "invalid request"))
    request_id = request.get("id")
    method, params = request.get("method"), request.get("params", [])
    if (request.get("jsonrpc") != "2.0" or not isinstance(method, str)
            or not _valid_id(request_id)):
        return _error_reply(request_id if _valid_id(request_id) else None,
                            RpcError(INVALID_REQUEST, "invalid request"))
    try:
        if not isinstance(params, list):
            raise RpcError(INVALID_PARAMS, "params must be an array (by position)")
        result = dispatch(method, params)
    except RpcError as exc:
        reply: dict[str, Any] | None = _error_reply(request_id, exc)
    else:
        reply = {"jsonrpc": "2.0", "id": request_id, "result": result}
    return reply if "id" in request else None


def handle_body(body: bytes, dispatch: Dispatch) -> bytes | None:
    """The HTTP response body for a request body; None when every request was a
    notification (answer 204)."""
    try:
        parsed = json_depth.loads(body)
    except (ValueError, UnicodeDecodeError):  # TooDeepError too
        return json.dumps(_error_reply(None, RpcError(PARSE_ERROR, "parse error"))).encode()
    if isinstance(parsed, list):
        if not parsed or len(parsed) > MAX_BATCH:
            error = RpcError(INVALID_REQUEST, f"a batch holds 1 to {MAX_BATCH} requests")
            return json.dumps(_error_reply(None, error)).encode()
        replies = [r for r in (handle_one(req, dispatch) for req in parsed) if r is not None]
        return json.dumps(replies).encode() if replies else None
    reply = handle_one(parsed, dispatch)
    return json.dumps(reply).encode() if reply is not None else None


async def _respond(send: Send, status: int, body: bytes,
                   extra_headers: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status,
                "headers": headers + (extra_headers or [])})
    await send({"type": "http.response.body", "body": body})


def asgi_app(dispatch: Dispatch, max_body: int = MAX_BODY_BYTES) -> Callable[
        [Scope, Receive, Send], Awaitable[None]]:
    """An ASGI app answering JSON-RPC at POST on any path; `dispatch` runs on the
    server's own thread (the event loop), one request at a time."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["type"] != "http":
            return
        if scope["method"] != "POST":
            await _respond(send, 405, b'{"error":"POST a JSON-RPC request"}',
                           [(b"allow", b"POST")])
            return
        try:
            body = await read_body(receive, max_body)
        except BodyTooLarge:
            error = RpcError(INVALID_REQUEST, f"request body over {max_body} bytes")
            await _respond(send, 413, json.dumps(_error_reply(None, error)).encode())
            return
        if body is None:
            return  # the client went away while sending
        reply = handle_body(body, dispatch)
        if reply is None:
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
            return
        await _respond(send, 200, reply)

    return app
