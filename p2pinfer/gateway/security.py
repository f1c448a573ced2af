"""The gateway's guard: API keys, per-key rate limits, body size limits, no tracebacks.

`GatewayGuard` is plain ASGI middleware around the whole app (Starlette's
BaseHTTPMiddleware would buffer streamed replies). In order, for every HTTP
request except the public ones (the dashboard page shell and the favicon):

1. with API keys configured, `Authorization: Bearer KEY` must match one of them or
   the node's operator key (constant-time compare), else 401; admin writes (a POST
   under `/admin/`) need such a key even without API keys (403 with how to set one
   when the gateway has no key at all). An address (an IPv4 address, an IPv6 /56)
   that sent FAILED_KEYS_PER_MIN wrong keys in the last minute gets 429 with its key
   not compared at all, so the gateway is no oracle for guessing keys (attack 75);
2. the key (or, without keys, the client address) takes a token from its
   bucket, else 429 with `Retry-After` in whole seconds;
3. the body is read up to the limit before the app sees it, else 413
   (a `Content-Length` over the limit is refused before reading anything);
4. an exception the app lets out becomes a 500 with a JSON error body, logged once.

Error bodies follow the API the path belongs to: OpenAI's shape under `/v1/`,
`{"error": "..."}` (Ollama's) everywhere else.
"""

from __future__ import annotations

import hmac
import logging
import math
import time
from collections.abc import Callable, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from p2pinfer.addresses import IPV6_GROUP_PREFIX, address_group
from p2pinfer.api import ollama_replies
from p2pinfer.backends.wire import dumps
from p2pinfer.bounded import PerMinute, RateLimiter
from p2pinfer.gateway.config import GatewayConfig
from p2pinfer.http.asgi_body import BodyTooLarge, read_body

log = logging.getLogger(__name__)

#: Wrong API keys an address may send a minute; then its requests are refused unread.
FAILED_KEYS_PER_MIN = 10
#: Addresses whose failures are remembered (the least recently failing go first).
FAILED_KEY_ADDRESSES = 4096

#: Served to anyone: the dashboard's static page (it asks for the key itself) and the icon.
PUBLIC_PATHS = frozenset({"/", "/favicon.ico"})
NO_ADMIN_KEY_MESSAGE = (
    "admin and governance POSTs need an API key, even on loopback, and this gateway has "
    "none: start the node with P2PINFER_API_KEY=KEY (or --api-key KEY) and send "
    "`Authorization: Bearer KEY`; `p2pinfer gov` sends the node's operator key from "
    "<home>/gateway-operator.key"
)


def is_admin_write(scope: Scope) -> bool:
    """A request that changes the node's state in its owner's name (always needs a key)."""
    return str(scope["path"]).startswith("/admin/") and scope["method"] not in ("GET", "HEAD")


def error_body(path: str, status: int, message: str) -> bytes:
    """An error body in the shape of the API `path` belongs to."""
    if path.startswith("/v1/"):
        kind = {
            400: "invalid_request_error",
            401: "invalid_request_error",
            403: "invalid_request_error",
            404: "not_found_error",
            413: "invalid_request_error",
            429: "rate_limit_error",
        }.get(status, "api_error")
        code = {401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status)
        error = {"message": message, "type": kind, "param": None, "code": code}
        return dumps({"error": error})
    return ollama_replies.error_body(message)


async def send_error(
    send: Send, path: str, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer with `status` and an error body shaped for `path`."""
    body = error_body(path, status, message)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    })  # fmt: skip
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = bytes(value).strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
            return None
    return None


def _retry_after(wait_s: float) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(max(1, math.ceil(wait_s))).encode())]


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class GatewayGuard:
    """ASGI middleware enforcing `config`'s keys, rate limit and body limit (see module doc)."""

    def __init__(
        self,
        app: ASGIApp,
        config: GatewayConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_response: Callable[[str, int], None] | None = None,
        on_key: Callable[[str], None] | None = None,
    ) -> None:
        self.app, self.config = app, config
        # Told the client address of each request whose API key matched (KnownClients).
        self._on_key = on_key or (lambda _host: None)
        self._keys = tuple(key.encode() for key in config.api_keys)
        operator = (config.operator_key.encode(),) if config.operator_key else ()
        self._accepted = (*self._keys, *operator)
        self._limiter = RateLimiter(config.rate_per_s, config.burst, clock)
        self._failed: PerMinute[str] = PerMinute(max_keys=FAILED_KEY_ADDRESSES, clock=clock)
        # Told (path, status) of every reply, refusals included (the gateway counts them).
        self._on_response = on_response or (lambda _path, _status: None)

    def _key_of(self, presented: bytes | None) -> bytes | None:
        """The configured key `presented` (the request's bearer token) is, or None."""
        if presented is None:
            return None
        matched = None
        for key in self._accepted:  # compare with every key: timing says nothing about which
            if hmac.compare_digest(key, presented):
                matched = key
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        send = self._observed(path, send)
        if path in PUBLIC_PATHS and scope["method"] in ("GET", "HEAD"):
            await self._run(scope, receive, send)
            return
        host = str(client[0]) if (client := scope.get("client")) else ""
        if self._keys or is_admin_write(scope):
            if not self._accepted:
                await send_error(send, path, 403, NO_ADMIN_KEY_MESSAGE)
                return
            group = address_group(host, IPV6_GROUP_PREFIX) or host
            if wait_s := self._failed.wait_s(group, FAILED_KEYS_PER_MIN):
                await send_error(send, path, 429, "too many wrong API keys from this "
                                 "address; retry later", _retry_after(wait_s))
                return
            presented = _bearer(scope)
            key = self._key_of(presented)
            if key is None:
                if presented is not None:  # a guess; a request without a key guesses nothing
                    self._failed.admit(group, FAILED_KEYS_PER_MIN, None)
                await send_error(send, path, 401, "missing or invalid API key",
                                 [(b"www-authenticate", b'Bearer realm="p2pinfer"')])  # fmt: skip
                return
            bucket = "key:" + key.hex()
            if host:
                self._on_key(host)
        else:
            bucket = "addr:" + host
        wait_s = self._limiter.acquire(bucket)
        if wait_s > 0:
            await send_error(send, path, 429, "rate limit exceeded, retry later",
                             _retry_after(wait_s))
            return
        limit = self.config.max_body_bytes
        length = _content_length(scope)
        if length is not None and length > limit:
            await send_error(send, path, 413, f"request body over the {limit}-byte limit")
            return
        try:
            body = await read_body(receive, limit)
        except BodyTooLarge:
            await send_error(send, path, 413, f"request body over the {limit}-byte limit")
            return
        if body is None:
            return  # the client went away while sending
        await self._run(scope, _replay(body, receive), send)

    def _observed(self, path: str, send: Send) -> Send:
        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                self._on_response(path, int(message["status"]))
            await send(message)

        return observed

    async def _run(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("gateway request failed path=%s", scope["path"])
            if not started:
                await send_error(send, scope["path"], 500, "internal error in the gateway")


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then the real messages
    (so a streamed reply still sees the client's disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
