"""The node's HTTP gateway: Ollama's and OpenAI's APIs into the network.

`run_gateway` serves `backends.server.create_app(backend)` (for a node, a
`NetworkBackend`) with hypercorn in the node's nursery, plus `/metrics`. Every
job response carries `X-P2PInfer-Provider` and `X-P2PInfer-Job-Id` (and
`X-P2PInfer-Charged` once known: non-streaming responses) naming who served it.
The gateway part extends this module (admin JSON, dashboard, API keys).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from p2pinfer.backends.base import Backend
from p2pinfer.backends.server import create_app
from p2pinfer.errors import UsageError
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.network_backend import JobMeta, current_job_meta

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

DEFAULT_GATEWAY = "127.0.0.1:11435"


def parse_host_port(text: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 as `[::1]:PORT`); UsageError otherwise. Port 0: any free port."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(
            f"bad gateway address {text!r}: expected HOST:PORT, e.g. {DEFAULT_GATEWAY}"
        )
    return host, int(port)


class JobHeaders:
    """ASGI middleware: puts a fresh JobMeta in `current_job_meta` for each request and
    adds what the NetworkBackend wrote there as response headers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        meta = JobMeta()
        token = current_job_meta.set(meta)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and meta.job_id is not None:
                headers = list(message.get("headers", []))
                headers.append((b"x-p2pinfer-provider", (meta.provider or "").encode()))
                headers.append((b"x-p2pinfer-job-id", meta.job_id.encode()))
                if meta.charged is not None:
                    headers.append((b"x-p2pinfer-charged", str(meta.charged).encode()))
                if meta.failovers:
                    headers.append((b"x-p2pinfer-failovers", str(meta.failovers).encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            current_job_meta.reset(token)


class MetricsRoute:
    """ASGI middleware: `GET /metrics` answers with the node's Prometheus registry."""

    def __init__(self, app: ASGIApp, metrics: NodeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/metrics":
            body = self.metrics.render()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/plain; version=0.0.4; charset=utf-8")]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def gateway_app(backend: Backend, metrics: NodeMetrics | None = None) -> ASGIApp:
    """The gateway's ASGI app over `backend`."""
    app: ASGIApp = JobHeaders(create_app(backend))
    if metrics is not None:
        app = MetricsRoute(app, metrics)
    return app


async def run_gateway(
    backend: Backend,
    host: str,
    port: int,
    *,
    metrics: NodeMetrics | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the gateway until cancelled (or `shutdown_trigger` returns); `task_status`
    gets its base URL, e.g. `http://127.0.0.1:11435`, with the real port when 0 was asked."""
    from hypercorn.config import Config
    from hypercorn.trio import serve as hypercorn_serve

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0

    class _Status:
        def started(self, binds: list[str] | None = None) -> None:
            url = (binds or [f"http://{host}:{port}"])[0]
            log.info("gateway listening url=%s", url)
            task_status.started(url)

    app: Any = gateway_app(backend, metrics)
    await hypercorn_serve(app, config, shutdown_trigger=shutdown_trigger,
                          task_status=_Status(), mode="asgi")
