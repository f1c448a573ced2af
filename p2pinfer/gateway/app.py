"""The gateway app: the Ollama + OpenAI APIs over the network, admin, metrics, dashboard.

`create_gateway_app(view, config)` is a Starlette app with `BrowserGuard` (Origin
allow-list, Host check) then `GatewayGuard` (keys, rate limit, body limit, errors as
JSON) as its middleware:
the API routes are `api.server.api_routes` over the node's network
backend, so shapes, errors and streaming are the engine server's; each
successful job reply names its provider, job id, price and (when sent after the last
token) its charge in `X-P2PInfer-*` headers, read from `NodeView.track_job()`; its
last object (the final NDJSON line or SSE chunk) carries them all, charge included,
under `"p2pinfer"`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextvars import ContextVar
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from p2pinfer.addresses import is_loopback
from p2pinfer.api.server import api_routes
from p2pinfer.backends.base import Completion, StreamEvent
from p2pinfer.backends.wire import Clock, utc_now
from p2pinfer.gateway.admin import GatewayMetrics, admin_routes
from p2pinfer.gateway.browser import BrowserGuard
from p2pinfer.gateway.compat import IGNORED_HEADER, ParameterCheck, not_found
from p2pinfer.gateway.config import GatewayConfig
from p2pinfer.gateway.dashboard import dashboard_response
from p2pinfer.gateway.security import GatewayGuard, send_error
from p2pinfer.gateway.view import JobMeta, NodeView
from p2pinfer.http.conn_gate import KnownClients

PROVIDER_HEADER = "X-P2PInfer-Provider"
JOB_ID_HEADER = "X-P2PInfer-Job-Id"
CHARGED_HEADER = "X-P2PInfer-Charged"  # micro-credits
FAILOVERS_HEADER = "X-P2PInfer-Failovers"  # only when another provider failed first
PRICE_HEADER = "X-P2PInfer-Price-Per-1k"  # micro-credits per 1k tokens the provider accepted
PATH_HEADER = "X-P2PInfer-Path"  # direct | relayed | moved: how the provider was reached
#: The field of a reply's last object (NDJSON line, SSE chunk, whole reply) with the job's
#: provider, id, price and charge: a streamed reply's headers leave before the charge.
REPLY_FIELD = "p2pinfer"
#: What a page from an allowed origin may read of a reply.
EXPOSED_HEADERS = (PROVIDER_HEADER, JOB_ID_HEADER, CHARGED_HEADER, FAILOVERS_HEADER,
                   PRICE_HEADER, PATH_HEADER, IGNORED_HEADER)

#: The paths whose requests run a job through the network.
JOB_PATHS = frozenset({"/api/chat", "/api/generate", "/v1/chat/completions", "/v1/completions",
                       "/v1/embeddings", "/api/embed", "/api/embeddings"})

# The reader of the current request's job metadata (set per request, in its own task).
_request_job: ContextVar[Callable[[], JobMeta | None] | None] = ContextVar(
    "p2pinfer_gateway_request_job", default=None
)


class JobTracking:
    """ASGI middleware: asks the view to follow the job of each job request (see track_job)."""

    def __init__(self, app: ASGIApp, view: NodeView) -> None:
        self.app, self.view = app, view

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in JOB_PATHS:
            await self.app(scope, receive, send)
            return
        token = _request_job.set(self.view.track_job())
        try:
            await self.app(scope, receive, send)
        finally:
            _request_job.reset(token)


def create_gateway_app(
    view: NodeView, config: GatewayConfig, *, clock: Clock = utc_now,
    known: KnownClients | None = None,
) -> Starlette:
    """The gateway over `view`, guarded as `config` says (keys, rate limit, body limit);
    the address of each request with a valid API key goes into `known`."""

    def job_headers(
        events: AsyncIterator[StreamEvent], done: Completion | None
    ) -> Sequence[tuple[str, str]]:
        reader = _request_job.get()
        meta = reader() if reader is not None else None
        if meta is None:
            return ()
        headers = [(PROVIDER_HEADER, meta.provider), (JOB_ID_HEADER, meta.job_id)]
        if meta.price_per_1k is not None:
            headers.append((PRICE_HEADER, str(meta.price_per_1k)))
        if meta.charged is not None:
            headers.append((CHARGED_HEADER, str(meta.charged)))
        if meta.failovers:
            headers.append((FAILOVERS_HEADER, str(meta.failovers)))
        if meta.path is not None:
            headers.append((PATH_HEADER, meta.path))
        return headers

    def job_fields() -> dict[str, Any]:
        reader = _request_job.get()
        meta = reader() if reader is not None else None
        if meta is None:
            return {}
        return {REPLY_FIELD: {"provider": meta.provider, "job_id": meta.job_id,
                              "price_per_1k": meta.price_per_1k, "charged": meta.charged,
                              "path": meta.path}}

    async def root(request: Request) -> Response:
        return dashboard_response(request, config)

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/favicon.ico", favicon, methods=["GET"]),
        *admin_routes(view),
        *api_routes(view.backend, clock=clock, reply_headers=job_headers,
                    reply_fields=job_fields),
    ]
    metrics = GatewayMetrics.of(view.metrics.registry)
    return Starlette(routes=routes, middleware=[
        Middleware(BrowserGuard, origins=config.origins, check_host=is_loopback(config.host),
                   refuse=send_error, expose_headers=EXPOSED_HEADERS,
                   on_response=metrics.observe),
        Middleware(GatewayGuard, config=config, on_response=metrics.observe,
                   on_key=known.add if known is not None else None),
        Middleware(ParameterCheck),
        Middleware(JobTracking, view=view),
    ], exception_handlers={404: not_found, 405: not_found})  # fmt: skip
