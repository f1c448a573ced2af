"""Ollama's native API routes (`/`, `/api/*`) over a `ServerState`; `api/server.py`
puts them together with the OpenAI-compatible ones (`openai_routes.py`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from p2pinfer.api import embed_wire, ollama_replies, ollama_wire
from p2pinfer.api.api_state import ServerState
from p2pinfer.api.http_stream import (
    CLIENT_LEFT,
    BackendStreamResponse,
    OpenStream,
    error_status,
    unless_client_left,
)
from p2pinfer.backends.base import ChatMessage, Completion, EventStream, ModelInfo
from p2pinfer.backends.wire import ApiError, dumps, parse_json_body
from p2pinfer.errors import P2PInferError

Handler = Callable[[Request], Awaitable[Response]]


def ollama_errors(handler: Handler) -> Handler:
    """`handler` answering errors as Ollama does: `{"error": "..."}` with a status."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except ApiError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)
        except P2PInferError as exc:
            return JSONResponse({"error": str(exc)}, status_code=error_status(exc))

    return wrapped


def ollama_routes(state: ServerState) -> list[Route]:
    """`GET /` (the "Ollama is running" probe) and the `/api/*` routes."""
    return [*_model_routes(state), *_generation_routes(state)]


def _model_routes(state: ServerState) -> list[Route]:
    """The probe, the version and what models there are (tags, show, ps)."""
    backend, clock = state.backend, state.clock

    async def root(request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def version(request: Request) -> Response:
        return JSONResponse({"version": ollama_wire.OLLAMA_VERSION})

    @ollama_errors
    async def tags(request: Request) -> Response:
        models = await backend.list_models()
        return JSONResponse({"models": [ollama_replies.tags_entry(m) for m in models]})

    @ollama_errors
    async def show(request: Request) -> Response:
        body = parse_json_body(await request.body())
        info = await state.find(ollama_wire.require_model(body, "ShowRequest"))
        describe = getattr(backend, "model_metadata", None)
        metadata = dict(await describe(info.name)) if describe is not None else {}
        return JSONResponse(ollama_replies.show_reply(info, metadata))

    @ollama_errors
    async def ps(request: Request) -> Response:
        now = clock()
        for name, (_, expires) in list(state.loaded.items()):
            if expires <= now:
                del state.loaded[name]
        entries = [ollama_replies.ps_entry(info, exp) for info, exp in state.loaded.values()]
        return JSONResponse({"models": entries})

    return [
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version, methods=["GET", "HEAD"]),
        Route("/api/tags", tags, methods=["GET", "HEAD"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/ps", ps, methods=["GET"]),
    ]


def _generation_routes(state: ServerState) -> list[Route]:
    """Generate, chat and embed."""
    backend, clock = state.backend, state.clock

    @ollama_errors
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

    @ollama_errors
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

    @ollama_errors
    async def embed(request: Request) -> Response:
        legacy = request.url.path == "/api/embeddings"
        body = parse_json_body(await request.body())
        req = (embed_wire.parse_ollama_legacy if legacy else embed_wire.parse_ollama)(body)
        if legacy and req.inputs == ("",):
            return JSONResponse({"embedding": []})  # as Ollama: nothing to embed
        started = time.perf_counter_ns()
        got = await unless_client_left(request.receive, partial(state.embeddings, req))
        if got is None:
            return Response(status_code=CLIENT_LEFT)
        result, headers = got
        reply = embed_wire.ollama_reply(req.model, req, result, time.perf_counter_ns() - started)
        return Response(dumps(reply), headers=headers, media_type="application/json")

    return [
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
        Route("/api/embeddings", embed, methods=["POST"]),
    ]


def _ollama_stream(
    state: ServerState,
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


def _load_reply(
    state: ServerState,
    info: ModelInfo,
    keep_alive: timedelta | None,
    reply: Callable[[str], bytes],
) -> Response:
    # An empty prompt (or no messages) loads the model; with keep_alive 0 it unloads.
    unload = keep_alive is not None and keep_alive <= timedelta(0)
    state.touch(info, keep_alive)
    body = reply("unload" if unload else "load")
    return Response(body, media_type="application/json; charset=utf-8")
