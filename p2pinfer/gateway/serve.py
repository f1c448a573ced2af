"""Serving the gateway: hypercorn on trio, inside the node's nursery.

Each response head leaves with its first body bytes (see `http.asgi_server`).

`run_gateway` binds, reports where through `task_status`, and serves until its
caller's cancel scope ends (the node shutting down), so it needs no shutdown
call of its own: `await nursery.start(run_gateway, view, config)`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import trio

from p2pinfer.errors import UsageError
from p2pinfer.gateway.app import create_gateway_app
from p2pinfer.gateway.config import GatewayConfig
from p2pinfer.gateway.view import NodeView

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatewayBinding:
    """Where the gateway listens (the real port when the config asked for port 0)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


async def run_gateway(
    view: NodeView,
    config: GatewayConfig,
    *,
    task_status: TaskStatus[GatewayBinding] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the gateway for `view` until cancelled; `task_status.started(GatewayBinding)`.

    Raises UsageError (one line) if the address cannot be bound.
    """
    from hypercorn.config import Config

    from p2pinfer.http.asgi_server import serve_asgi
    from p2pinfer.http.conn_gate import ConnectionLimits, KnownClients

    known = KnownClients()  # addresses that presented an API key: the last connections' own
    app: Any = create_gateway_app(view, config, known=known)
    hyper = Config()
    hyper.bind = [config.bind]
    hyper.accesslog = None
    hyper.errorlog = logging.getLogger("hypercorn.error")
    hyper.graceful_timeout = 2.0
    try:
        # Our own sockets, closed when we leave: cancellation alone would leave the
        # listening socket to the garbage collector and the port taken.
        sockets = hyper.create_sockets()
        for sock in sockets.insecure_sockets:
            sock.listen(hyper.backlog)
    except OSError as exc:
        raise UsageError(f"cannot serve the gateway on {config.bind}: {exc.strerror}") from None

    class _Started:
        # hypercorn reports its bound URLs; turn them into a GatewayBinding.
        def started(self, binds: list[str] | None = None) -> None:
            parts = urlsplit((binds or [f"http://{config.bind}"])[0])
            binding = GatewayBinding(parts.hostname or config.host, parts.port or config.port)
            log.info("gateway listening url=%s", binding.url)
            task_status.started(binding)

    try:
        limits = ConnectionLimits(config.max_connections, config.max_connections_per_ip,
                                  known=known)
        await serve_asgi(app, hyper, sockets.insecure_sockets, limits=limits,
                         task_status=_Started())
    finally:
        for sock in (*sockets.secure_sockets, *sockets.insecure_sockets):
            sock.close()
