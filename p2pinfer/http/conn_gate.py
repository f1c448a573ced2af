"""How many connections an HTTP server holds: in all, and per client address.

hypercorn accepts every connection it is offered and keeps each until the client is
done with it (an idle one for its 5 s keep-alive, a request in progress for as long as
the client takes). Each is a file descriptor of the node's process, the same table its
libp2p sockets and SQLite files come from: a client opening connections faster than
they time out (one host, no key needed: nothing is read before the limit applies)
fills it, and then the node can neither accept a peer nor dial one. `ConnectionGate`
answers a connection over its limits at once with a 503 and closes it, before hypercorn
sees it: at most `total` connections in all, and at most `per_ip` from one client
address (an IPv6 client by its /64, which one subscriber usually holds whole). Loopback
clients are the node's own user and are held to the total only, unless
`exempt_loopback` is off. A flood from many addresses still fills the total; with
`known` clients (the gateway's: addresses that presented a valid API key), the last
eighth of it is kept for them, so those who use the server get in while it lasts.
"""

from __future__ import annotations

import json
import logging
import resource
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

import trio

from p2pinfer.addresses import address_group, is_loopback
from p2pinfer.bounded import Held, keep_latest

log = logging.getLogger(__name__)

MAX_TOTAL = 1024
MIN_TOTAL = 64
DEFAULT_PER_IP = 64
REFUSE_WRITE_S = 1.0
KNOWN_CLIENTS = 4096


def default_total() -> int:
    """A quarter of the process's file descriptors, within 64..1024: the rest stay for the
    node's peers, its dials and its files."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_TOTAL
    return max(MIN_TOTAL, min(MAX_TOTAL, soft // 4))


class KnownClients:
    """Client addresses (by `client_key`) that have proved themselves to the server (the
    gateway: presented a valid API key), the `limit` most recent."""

    def __init__(self, limit: int = KNOWN_CLIENTS) -> None:
        self.limit = limit
        self._keys: OrderedDict[str, None] = OrderedDict()

    def add(self, host: str) -> None:
        keep_latest(self._keys, client_key(host), None, self.limit)

    def __contains__(self, host: object) -> bool:
        return isinstance(host, str) and client_key(host) in self._keys


@dataclass(frozen=True)
class ConnectionLimits:
    """`total` None: `default_total()` when the server starts. With `known`, the last
    eighth of the total is kept for known clients (and loopback ones, when exempt)."""

    total: int | None = None
    per_ip: int = DEFAULT_PER_IP
    exempt_loopback: bool = True
    known: KnownClients | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.total is not None and self.total < 1) or self.per_ip < 1:
            raise ValueError("connection limits must be at least 1")


def client_key(host: str) -> str:
    """What a per-address limit counts by: the IPv4 address, an IPv6 address's /64 (what
    is not an IP address, as it is)."""
    return address_group(host, 64) or host


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"retry-after: 1\r\nconnection: close\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


Handler = Callable[[trio.SocketStream], Awaitable[object]]


class ConnectionGate:
    """Counts the connections a server holds; `wrap` a `serve_listeners` handler with it."""

    def __init__(self, limits: ConnectionLimits = ConnectionLimits()) -> None:
        self.total = limits.total if limits.total is not None else default_total()
        self.per_ip = limits.per_ip
        self.exempt_loopback = limits.exempt_loopback
        self.known = limits.known
        self.reserve = self.total // 8 if self.known is not None else 0
        self.refused = 0
        self._held: Held[str] = Held()  # connections open, in all and per client key

    @property
    def open(self) -> int:
        """Connections open now."""
        return self._held.total

    def refusal_reason(self, host: str | None) -> str | None:
        """Why a new connection from `host` is refused now, or None to take it."""
        if self.open >= self.total:
            return f"too many connections to this server ({self.total}); retry shortly"
        if host is None or (self.exempt_loopback and is_loopback(host)):
            return None
        if self._held.of(client_key(host)) >= self.per_ip:
            return f"too many connections from your address ({self.per_ip}); retry shortly"
        if self.open >= self.total - self.reserve and host not in (self.known or ()):
            return (f"the server is busy: its last {self.reserve} connections are kept for "
                    "clients that presented an API key before; retry shortly")
        return None

    def wrap(self, handler: Handler) -> Handler:
        async def gated(stream: trio.SocketStream) -> None:
            host = _peer_host(stream)
            reason = self.refusal_reason(host)
            if reason is not None:
                await self._refuse(stream, host, reason)
                return
            with self._held.holding(client_key(host) if host is not None else None):
                await handler(stream)

        return gated

    async def _refuse(self, stream: trio.SocketStream, host: str | None, reason: str) -> None:
        self.refused += 1
        if self.refused == 1 or self.refused % 1000 == 0:
            log.warning("connection refused client=%s reason=%s refused_so_far=%d",
                        host, reason, self.refused)
        with trio.move_on_after(REFUSE_WRITE_S), suppress(trio.BrokenResourceError,
                                                          trio.ClosedResourceError):
            await stream.send_all(_refusal(reason))  # a fresh socket's buffer takes it at once
        await trio.aclose_forcefully(stream)


def _peer_host(stream: trio.SocketStream) -> str | None:
    try:
        name = stream.socket.getpeername()
    except OSError:
        return None
    return str(name[0]) if isinstance(name, tuple) else None


def raise_fd_limit(cap: int = 1 << 20) -> tuple[int, int]:
    """Raise this process's soft limit on open files to its hard limit (at most `cap`), as
    Go programs do at start: Linux's default soft limit (1024) is what a flood of
    connections runs into first. Returns the (soft, hard) limits now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = cap if hard == resource.RLIM_INFINITY else min(hard, cap)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-files limit from %d: %s", soft, exc)
    return soft, hard


__all__ = ["ConnectionGate", "ConnectionLimits", "KnownClients", "client_key",
           "default_total", "raise_fd_limit"]
