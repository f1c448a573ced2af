"""Browser safety, as Ollama does it: an Origin allow-list (CORS) and, on a loopback
bind, a Host check against DNS rebinding.

A web page the user opens can make the browser send requests to the gateway on
127.0.0.1: a "simple" `text/plain` POST needs no preflight, so without a check any
site could run jobs on the node's credits. Browsers always send `Origin` on such
requests; native clients (curl, the `openai`/`ollama` packages) send none. So:

- a request whose `Origin` is neither on the allow-list nor the gateway's own origin
  (same `Host`) is refused with 403, on every route, before anything else runs;
- a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an
  allowed origin is answered here with 204 and the CORS headers; replies to allowed
  origins carry `Access-Control-Allow-Origin` and expose the `X-P2PInfer-*` headers;
- when the gateway listens on loopback, the `Host` must name this machine (Ollama's
  `allowedHost`): a page on `evil.example` whose DNS now points at 127.0.0.1 sends
  `Host: evil.example` and is refused, though its requests look same-origin.

The allow-list is Ollama's default (`http(s)://localhost`, `127.0.0.1`, `0.0.0.0`
with any port; `app://`, `file://`, `tauri://`) plus `P2PINFER_ORIGINS`.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

ORIGINS_ENV = "P2PINFER_ORIGINS"

DEFAULT_ORIGINS: tuple[str, ...] = (
    *(f"{scheme}://{host}{port}" for host in ("localhost", "127.0.0.1", "0.0.0.0")
      for scheme in ("http", "https") for port in ("", ":*")),
    "app://*",
    "file://*",
    "tauri://*",
)  # fmt: skip

#: Request headers a page may send (the OpenAI SDK adds `x-stainless-*` ones too).
ALLOWED_HEADERS = ("authorization", "content-type", "user-agent", "accept", "x-requested-with")
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
PREFLIGHT_MAX_AGE_S = "600"

_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def parse_origins(env: Mapping[str, str]) -> tuple[str, ...]:
    """The allowed origins: `P2PINFER_ORIGINS` (comma-separated, `*` wildcards) and the
    defaults, which the variable adds to rather than replaces (as `OLLAMA_ORIGINS`)."""
    text = env.get(ORIGINS_ENV, "").strip().strip("\"'")
    extra = tuple(o.strip() for o in text.split(",") if o.strip())
    return (*extra, *DEFAULT_ORIGINS)


def _matches(origin: str, pattern: str) -> bool:
    """`pattern` with at most one `*` (any run of characters) against `origin`."""
    if pattern == "*":
        return True
    head, star, tail = pattern.partition("*")
    if not star:
        return origin == pattern
    return len(origin) >= len(head) + len(tail) and origin.startswith(head) and (
        origin.endswith(tail))


def origin_allowed(origin: str, patterns: Iterable[str]) -> bool:
    """Whether a browser's `Origin` is on the allow-list (case-insensitive, as URLs' scheme
    and host are)."""
    origin = origin.lower()
    return any(_matches(origin, pattern.lower()) for pattern in patterns)


def _split_host(host: str) -> str:
    """The host part of a `Host` header (`name`, `name:port`, `[v6]:port`), lowercase."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def host_allowed(host_header: str, hostname: str | None = None) -> bool:
    """Ollama's `allowedHost`: the `Host` a request to a loopback bind may name: none,
    `localhost`, this machine's name, `*.localhost`, `*.local`, `*.internal`, or an IP
    that is loopback, private or unspecified."""
    host = _split_host(host_header)
    if host in ("", "localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return ip.is_loopback or ip.is_private or ip.is_unspecified
    own = (hostname if hostname is not None else socket.gethostname()).lower()
    return host == own or host.endswith(_LOCAL_SUFFIXES)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


def _same_origin(origin: str, host: str | None) -> bool:
    # A page the gateway served itself (the dashboard) fetches with its own origin.
    if not host:
        return False
    return origin.lower() in (f"http://{host.lower()}", f"https://{host.lower()}")


#: Writes an error reply: (send, path, status, message).
Refuse = Callable[[Send, str, int, str], Awaitable[None]]


class BrowserGuard:
    """ASGI middleware: Origin allow-list, preflights, CORS reply headers and, when
    `check_host`, the Host check (see module doc). `refuse(send, path, status, message)`
    writes an error in the API's shape; `on_response(path, status)` counts replies."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        origins: Sequence[str],
        check_host: bool,
        refuse: Refuse,
        expose_headers: Sequence[str] = (),
        on_response: Callable[[str, int], None] | None = None,
        hostname: str | None = None,
    ) -> None:
        self.app, self.origins, self.check_host = app, tuple(origins), check_host
        self._refuse = refuse
        self._expose = ", ".join(expose_headers).encode()
        self._on_response = on_response or (lambda _path, _status: None)
        self._hostname = hostname

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        host = _header(scope, b"host")
        if self.check_host and not host_allowed(host or "", self._hostname):
            self._on_response(path, 403)
            await self._refuse(send, path, 403, f"host {host!r} is not allowed: this gateway "
                               "listens on loopback and answers only names of this machine")
            return
        origin = _header(scope, b"origin")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if not (_same_origin(origin, host) or origin_allowed(origin, self.origins)):
            self._on_response(path, 403)
            await self._refuse(send, path, 403, f"origin {origin!r} is not allowed: add it to "
                               "P2PINFER_ORIGINS on the node to let its pages call the gateway")
            return
        if scope["method"] == "OPTIONS" and _header(scope, b"access-control-request-method"):
            self._on_response(path, 204)
            await self._preflight(scope, send, origin)
            return
        await self.app(scope, receive, self._with_cors(send, origin))

    def _cors_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        headers = [(b"access-control-allow-origin", origin.encode("latin-1")),
                   (b"vary", b"Origin")]  # fmt: skip
        if self._expose:
            headers.append((b"access-control-expose-headers", self._expose))
        return headers

    async def _preflight(self, scope: Scope, send: Send, origin: str) -> None:
        requested = (_header(scope, b"access-control-request-headers") or "").lower()
        names = [h.strip() for h in requested.split(",") if h.strip()]
        allowed = [h for h in names if h in ALLOWED_HEADERS or h.startswith("x-stainless-")]
        headers = [
            *self._cors_headers(origin),
            (b"access-control-allow-methods", ALLOWED_METHODS.encode()),
            (b"access-control-allow-headers", ", ".join(allowed or ALLOWED_HEADERS).encode()),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE_S.encode()),
            (b"content-length", b"0"),
        ]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _with_cors(self, send: Send, origin: str) -> Send:
        extra = self._cors_headers(origin)

        async def cors_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return cors_send
