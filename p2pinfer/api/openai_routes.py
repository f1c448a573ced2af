"""The OpenAI-compatible API routes (`/v1/*`) over a `ServerState`; `api/server.py`
puts them together with Ollama's native ones (`ollama_routes.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from functools import partial

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from p2pinfer.api import embed_wire, openai_replies, openai_wire
from p2pinfer.api.api_state import DEFAULT_KEEP_ALIVE, ServerState
from p2pinfer.api.choices import ChoicesResponse, choice_params
from p2pinfer.api.http_stream import (
    CLIENT_LEFT,
    BackendStreamResponse,
    OpenStream,
    error_status,
    unless_client_left,
)
from p2pinfer.api.ollama_routes import Handler
from p2pinfer.backends.base import ModelInfo, SamplingParams, StreamEvent
from p2pinfer.backends.wire import ApiError, dumps, parse_json_body
from p2pinfer.errors import P2PInferError


def openai_errors(handler: Handler) -> Handler:
    """`handler` answering errors as OpenAI does (`openai_wire.error_body`)."""

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


def openai_routes(state: ServerState) -> list[Route]:
    """The `/v1/*` routes: models, chat and text completions, embeddings."""
    backend, clock = state.backend, state.clock

    @openai_errors
    async def v1_models(request: Request) -> Response:
        models = await backend.list_models()
        data = [openai_replies.model_object(m) for m in models]
        return JSONResponse({"object": "list", "data": data})

    @openai_errors
    async def v1_model(request: Request) -> Response:
        info = await state.find(request.path_params["model"])
        return JSONResponse(openai_replies.model_object(info))

    @openai_errors
    async def v1_chat(request: Request) -> Response:
        req = openai_wire.parse_chat_completion(parse_json_body(await request.body()))
        info = await state.find(req.model)
        encoder = openai_replies.ChatCompletionEncoder(req.model, req.include_usage, clock)
        encoder.use_tools(req.params.tools, req.params.tool_choice, req.parallel_tool_calls)
        return _openai_reply(state, info, partial(backend.chat, info.name, req.messages),
                             req.params, req.n, encoder, req.stream)

    @openai_errors
    async def v1_completions(request: Request) -> Response:
        req = openai_wire.parse_completion(parse_json_body(await request.body()))
        info = await state.find(req.model)
        encoder = openai_replies.TextCompletionEncoder(req.model, req.include_usage, clock)
        return _openai_reply(state, info, partial(backend.generate, info.name, req.prompt),
                             req.params, req.n, encoder, req.stream)

    @openai_errors
    async def v1_embeddings(request: Request) -> Response:
        req = embed_wire.parse_openai(parse_json_body(await request.body()))
        got = await unless_client_left(request.receive, partial(state.embeddings, req))
        if got is None:
            return Response(status_code=CLIENT_LEFT)
        result, headers = got
        reply = embed_wire.openai_reply(req.model, req, result)
        return Response(dumps(reply), headers=headers, media_type="application/json")

    return [
        Route("/v1/models", v1_models, methods=["GET"]),
        Route("/v1/models/{model:path}", v1_model, methods=["GET"]),
        Route("/v1/chat/completions", v1_chat, methods=["POST"]),
        Route("/v1/completions", v1_completions, methods=["POST"]),
        Route("/v1/embeddings", v1_embeddings, methods=["POST"]),
    ]


def _openai_reply(
    state: ServerState,
    info: ModelInfo,
    open_with: Callable[[SamplingParams], AbstractAsyncContextManager[
        AsyncIterator[StreamEvent]]],
    params: SamplingParams,
    n: int,
    encoder: openai_replies.ChatCompletionEncoder | openai_replies.TextCompletionEncoder,
    stream: bool,
) -> Response:
    """A chat or text completion's reply: one stream, or `n` choices (a job each)."""
    encoder.final_fields = state.reply_fields
    if n > 1:
        return _openai_choices(state, info, [partial(open_with, p)
                                             for p in choice_params(params, n)], encoder, stream)
    return _openai_stream(state, info, partial(open_with, params), encoder, stream)


def _openai_stream(
    state: ServerState,
    info: ModelInfo,
    open_stream: OpenStream,
    encoder: openai_replies.ChatCompletionEncoder | openai_replies.TextCompletionEncoder,
    stream: bool,
) -> Response:
    return BackendStreamResponse(
        open_stream,
        encoder,
        stream=stream,
        error_body=openai_wire.error_body,
        # Ollama ends a failed SSE stream without a finish chunk or [DONE].
        midstream_error=lambda _message: b"",
        not_found_message=f"model '{encoder.model}' not found",
        on_done=lambda _done: state.touch(info, DEFAULT_KEEP_ALIVE),
        reply_headers=state.reply_headers,
    )


def _openai_choices(
    state: ServerState,
    info: ModelInfo,
    open_streams: list[OpenStream],
    encoder: openai_replies.ChatCompletionEncoder | openai_replies.TextCompletionEncoder,
    stream: bool,
) -> Response:
    return ChoicesResponse(
        open_streams, [encoder.for_choice(i) for i in range(len(open_streams))],
        stream=stream, error_body=openai_wire.error_body,
        not_found_message=f"model '{encoder.model}' not found",
        on_done=lambda _done: state.touch(info, DEFAULT_KEEP_ALIVE),
        reply_headers=state.reply_headers,
    )
