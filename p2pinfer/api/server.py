"""An Ollama-compatible HTTP server in front of any `Backend` (`p2pinfer engine serve`).

`create_app(backend)` serves Ollama's native API (`/`, `/api/version`,
`/api/tags`, `/api/show`, `/api/ps`, `/api/generate`, `/api/chat`, `/api/embed`,
`/api/embeddings`) and its OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`,
`/v1/completions`, `/v1/embeddings`)
with Starlette; `serve()` runs it with hypercorn on trio. The routes are in
`ollama_routes`/`openai_routes` (over the `ServerState` of `api_state`), response
shapes in `ollama_wire`/`ollama_replies`/`openai_wire`, the streaming machinery in
`http_stream`, the hypercorn set-up (each response head written with its first body)
in `asgi_server`;
`api_routes()` gives the same routes to a host app of its own (the network
gateway mounts them over the network backend, adding per-job reply headers).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import trio
from starlette.applications import Starlette
from starlette.routing import Route

from p2pinfer.api.api_state import ServerState
from p2pinfer.api.http_stream import ReplyHeaders
from p2pinfer.api.ollama_routes import ollama_routes
from p2pinfer.api.openai_routes import openai_routes
from p2pinfer.backends.base import Backend
from p2pinfer.backends.wire import Clock, FinalFields, utc_now

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)


def create_app(backend: Backend, *, clock: Clock = utc_now) -> Starlette:
    """The Ollama + OpenAI-compatible API over `backend`."""
    return Starlette(routes=api_routes(backend, clock=clock))


def api_routes(
    backend: Backend,
    *,
    clock: Clock = utc_now,
    reply_headers: ReplyHeaders | None = None,
    reply_fields: FinalFields | None = None,
) -> list[Route]:
    """The API's routes over `backend`; `reply_headers` adds headers to successful replies,
    `reply_fields` fields to a reply's last object (read once generation ended).

    `GET /` (the "Ollama is running" probe) comes first, so a host app that serves
    something else at `/` puts its own route before these.
    """
    state = ServerState(backend, clock, reply_headers=reply_headers, reply_fields=reply_fields)
    return [*ollama_routes(state), *openai_routes(state)]



async def serve(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 11434,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    task_status: TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` with hypercorn on trio; `task_status.started` gets the bound URLs.

    Each response head leaves with its first body bytes (see `asgi_server`).
    """
    from hypercorn.config import Config

    from p2pinfer.http.asgi_server import serve_asgi

    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = 2.0
    sockets = config.create_sockets().insecure_sockets
    try:
        for sock in sockets:
            sock.listen(config.backlog)
        await serve_asgi(
            app, config, sockets, shutdown_trigger=shutdown_trigger, task_status=task_status
        )
    finally:
        for sock in sockets:
            sock.close()


__all__: Sequence[str] = ["api_routes", "create_app", "serve"]
