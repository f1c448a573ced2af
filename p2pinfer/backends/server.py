"""An Ollama-compatible HTTP server in front of any `Backend` (`p2pinfer engine serve`).

`create_app(backend)` serves Ollama's native API (`/`, `/api/version`,
`/api/tags`, `/api/show`, `/api/ps`, `/api/generate`, `/api/chat`, `/api/embed`,
`/api/embeddings`) and its OpenAI-compatible API (`/v1/models`, `/v1/chat/completions`,
`/v1/completions`, `/v1/embeddings`)
with Starlette; `serve()` runs it with hypercorn on trio. Response shapes live in
`ollama_wire`/`openai_wire`, the streaming machinery in `http_stream`, the
hypercorn set-up (each response head written with its first body) in `asgi_server`;
`api_routes()` gives the same routes to a host app of its own (the network
gateway mounts them over the network backend, adding per-job reply headers).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

import trio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from p2pinfer.backends import embed_wire, ollama_replies, ollama_wire, openai_wire
from p2pinfer.backends.base import (
    Backend,
    ChatMessage,
    Completion,
    Embedder,
    Embeddings,
    EventStream,
    ModelInfo,
    StreamEvent,
)
from p2pinfer.backends.choices import ChoicesResponse, choice_params
from p2pinfer.backends.http_stream import (
    BackendStreamResponse,
    OpenStream,
    ReplyHeaders,
    error_status,
)
from p2pinfer.backends.models import find_model
from p2pinfer.backends.wire import (
    ApiError,
    Clock,
    FinalFields,
    dumps,
    parse_json_body,
    utc_now,
)
from p2pinfer.errors import ModelNotFound, P2PInferError

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

Handler = Callable[[Request], Awaitable[Response]]
_FOREVER = timedelta(days=365 * 100)
_DEFAULT_KEEP_ALIVE = timedelta(minutes=5)


@dataclass
class _ServerState:
    backend: Backend
    clock: Clock
    reply_headers: ReplyHeaders | None = None
    reply_fields: FinalFields | None = None
    # /api/ps: models used recently, with when they expire (keep_alive).
    loaded: dict[str, tuple[ModelInfo, datetime]] = field(default_factory=dict)

    async def find(self, requested: str) -> ModelInfo:
        """The served model a request names; ApiError(404) if none."""
        try:
            return await find_model(self.backend, requested)
        except ModelNotFound:
            raise ApiError(404, f"model '{requested}' not found") from None

    def touch(self, info: ModelInfo, keep_alive: timedelta | None) -> None:
        if keep_alive is not None and keep_alive <= timedelta(0):
            self.loaded.pop(info.name, None)
            return
        self.loaded[info.name] = (info, self.clock() + (keep_alive or _FOREVER))


def _ollama_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except P2PInferError as exc:
            return JSONResponse({"error": str(exc)}, status_code=error_status(exc))

    return wrapped


def _openai_errors(handler: Handler) -> Handler:
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            body = openai_wire.error_body(exc.status, exc.message, exc.param)
            return Response(body, status_code=exc.status, media_type="application/json")
        except P2PInferError as exc:
            status = error_status(exc)
            body = openai_wire.error_body(status, str(exc))
            return Response(body, status_code=status, media_type="application/json")

    return wrapped


def _ollama_stream(
    state: _ServerState,
    info: ModelInfo,
    open_stream: OpenStream,
    encoder: ollama_replies.GenerateEncoder | ollama_replies.ChatEncoder,
    stream: bool,
    keep_alive: timedelta | None,
) -> Response:
    def on_done(_: Completion) -> None:
        state.touch(info, keep_alive)

    encoder.final_fields = state.reply_fields
    return BackendStreamResponse(
        open_stream,
        encoder,
        stream=stream,
        error_body=lambda _status, message: ollama_replies.error_body(message),
        midstream_error=lambda message: ollama_replies.error_body(message) + b"\n",
        not_found_message=f"model '{encoder.model}' not found",
        on_done=on_done,
        reply_headers=state.reply_headers,
    )


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
    state = _ServerState(backend, clock, reply_headers=reply_headers, reply_fields=reply_fields)

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(request: Request) -> Response:
        return JSONResponse({"version": ollama_wire.OLLAMA_VERSION})

    @_ollama_errors
    async def tags(request: Request) -> Response:
        models = await backend.list_models()
        return JSONResponse({"models": [ollama_replies.tags_entry(m) for m in models]})

    @_ollama_errors
    async def show(request: Request) -> Response:
        body = parse_json_body(await request.body())
        info = await state.find(ollama_wire.require_model(body, "ShowRequest"))
        describe = getattr(backend, "model_metadata", None)
        metadata = dict(await describe(info.name)) if describe is not None else {}
        return JSONResponse(ollama_replies.show_reply(info, metadata))

    @_ollama_errors
    async def ps(request: Request) -> Response:
        now = clock()
        for name, (_, expires) in list(state.loaded.items()):
            if expires <= now:
                del state.loaded[name]
        entries = [ollama_replies.ps_entry(info, exp) for info, exp in state.loaded.values()]
        return JSONResponse({"models": entries})

    @_ollama_errors
    async def generate(request: Request) -> Response:
        req = ollama_wire.parse_generate(parse_json_body(await request.body()))
        info = await state.find(req.model)
        encoder = ollama_replies.GenerateEncoder(req.model, clock)
        if not req.prompt:
            return _load_reply(state, info, req.keep_alive, encoder.load_reply)
        if req.raw or not info.chat_template:
            # Raw, or a base model whose template is just the prompt.
            def open_stream() -> EventStream:
                return backend.generate(info.name, req.prompt, req.params)
        else:
            # Ollama renders a non-raw prompt as a chat: [system], user.
            messages = [ChatMessage("system", req.system)] if req.system else []
            messages.append(ChatMessage("user", req.prompt))

            def open_stream() -> EventStream:
                return backend.chat(info.name, messages, req.params)

        return _ollama_stream(state, info, open_stream, encoder, req.stream, req.keep_alive)

    @_ollama_errors
    async def chat(request: Request) -> Response:
        req = ollama_wire.parse_chat(parse_json_body(await request.body()))
        info = await state.find(req.model)
        encoder = ollama_replies.ChatEncoder(req.model, clock)
        encoder.use_tools(req.params.tools)
        if not req.messages:
            return _load_reply(state, info, req.keep_alive, encoder.load_reply)

        def open_stream() -> EventStream:
            return backend.chat(info.name, req.messages, req.params)

        return _ollama_stream(state, info, open_stream, encoder, req.stream, req.keep_alive)

    @_openai_errors
    async def v1_models(request: Request) -> Response:
        models = await backend.list_models()
        data = [openai_wire.model_object(m) for m in models]
        return JSONResponse({"object": "list", "data": data})

    @_openai_errors
    async def v1_model(request: Request) -> Response:
        info = await state.find(request.path_params["model"])
        return JSONResponse(openai_wire.model_object(info))

    @_openai_errors
    async def v1_chat(request: Request) -> Response:
        req = openai_wire.parse_chat_completion(parse_json_body(await request.body()))
        info = await state.find(req.model)
        encoder = openai_wire.ChatCompletionEncoder(req.model, req.include_usage, clock)
        encoder.use_tools(req.params.tools, req.params.tool_choice, req.parallel_tool_calls)
        if req.n > 1:
            return _openai_choices(state, info, [
                partial(backend.chat, info.name, req.messages, params)
                for params in choice_params(req.params, req.n)], encoder, req.stream)
        return _openai_stream(
            state, info, lambda: backend.chat(info.name, req.messages, req.params), encoder,
            req.stream,
        )  # fmt: skip

    @_openai_errors
    async def v1_completions(request: Request) -> Response:
        req = openai_wire.parse_completion(parse_json_body(await request.body()))
        info = await state.find(req.model)
        encoder = openai_wire.TextCompletionEncoder(req.model, req.include_usage, clock)
        if req.n > 1:
            return _openai_choices(state, info, [
                partial(backend.generate, info.name, req.prompt, params)
                for params in choice_params(req.params, req.n)], encoder, req.stream)
        return _openai_stream(
            state, info, lambda: backend.generate(info.name, req.prompt, req.params), encoder,
            req.stream,
        )  # fmt: skip

    async def embeddings(request: embed_wire.EmbedRequest) -> tuple[Embeddings, dict[str, str]]:
        # The vectors and the reply headers for them (a gateway's job headers).
        info = await state.find(request.model)
        if not isinstance(backend, Embedder) or not info.embedding_length:
            raise ApiError(400, f'"{request.model}" does not support embeddings')
        result = await backend.embed(info.name, request.inputs)
        state.touch(info, _DEFAULT_KEEP_ALIVE)
        headers = state.reply_headers(_no_events(), None) if state.reply_headers else ()
        return result, dict(headers)

    def _json(headers: dict[str, str], payload: dict[str, object]) -> Response:
        return Response(dumps(payload), headers=headers, media_type="application/json")

    @_openai_errors
    async def v1_embeddings(request: Request) -> Response:
        req = embed_wire.parse_openai(parse_json_body(await request.body()))
        result, headers = await embeddings(req)
        return _json(headers, embed_wire.openai_reply(req.model, req, result))

    @_ollama_errors
    async def embed(request: Request) -> Response:
        legacy = request.url.path == "/api/embeddings"
        body = parse_json_body(await request.body())
        req = (embed_wire.parse_ollama_legacy if legacy else embed_wire.parse_ollama)(body)
        if legacy and req.inputs == ("",):
            return JSONResponse({"embedding": []})  # as Ollama: nothing to embed
        started = time.perf_counter_ns()
        result, headers = await embeddings(req)
        return _json(headers, embed_wire.ollama_reply(req.model, req, result,
                                                      time.perf_counter_ns() - started))

    routes = [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version, methods=["GET", "HEAD"]),
        Route("/api/tags", tags, methods=["GET", "HEAD"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/v1/models", v1_models, methods=["GET"]),
        Route("/v1/models/{model:path}", v1_model, methods=["GET"]),
        Route("/v1/chat/completions", v1_chat, methods=["POST"]),
        Route("/v1/completions", v1_completions, methods=["POST"]),
        Route("/v1/embeddings", v1_embeddings, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embed, methods=["POST"]),
    ]
    return routes


async def _no_events() -> AsyncIterator[StreamEvent]:
    return
    yield  # an async generator that yields nothing


def _load_reply(
    state: _ServerState,
    info: ModelInfo,
    keep_alive: timedelta | None,
    reply: Callable[[str], bytes],
) -> Response:
    # An empty prompt (or no messages) loads the model; with keep_alive 0 it unloads.
    unload = keep_alive is not None and keep_alive <= timedelta(0)
    state.touch(info, keep_alive)
    body = reply("unload" if unload else "load")
    return Response(body, media_type="application/json; charset=utf-8")


def _openai_stream(
    state: _ServerState,
    info: ModelInfo,
    open_stream: OpenStream,
    encoder: openai_wire.ChatCompletionEncoder | openai_wire.TextCompletionEncoder,
    stream: bool,
) -> Response:
    encoder.final_fields = state.reply_fields
    return BackendStreamResponse(
        open_stream,
        encoder,
        stream=stream,
        error_body=openai_wire.error_body,
        # Ollama ends a failed SSE stream without a finish chunk or [DONE].
        midstream_error=lambda _message: b"",
        not_found_message=f"model '{encoder.model}' not found",
        on_done=lambda _done: state.touch(info, _DEFAULT_KEEP_ALIVE),
        reply_headers=state.reply_headers,
    )


def _openai_choices(
    state: _ServerState,
    info: ModelInfo,
    open_streams: list[OpenStream],
    encoder: openai_wire.ChatCompletionEncoder | openai_wire.TextCompletionEncoder,
    stream: bool,
) -> Response:
    return ChoicesResponse(
        open_streams, [encoder.for_choice(i) for i in range(len(open_streams))],
        stream=stream, error_body=openai_wire.error_body,
        not_found_message=f"model '{encoder.model}' not found",
        on_done=lambda _done: state.touch(info, _DEFAULT_KEEP_ALIVE),
        reply_headers=state.reply_headers,
    )


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

    from p2pinfer.backends.asgi_server import serve_asgi

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
