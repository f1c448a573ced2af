"""Engines that are down, slow or answer garbage give one clear error; the caller goes on."""

from __future__ import annotations

import json

import pytest
import trio

from p2pinfer.backends.base import Backend, ChatMessage, Completion, SamplingParams, TokenDelta
from p2pinfer.backends.ollama import OllamaBackend
from p2pinfer.backends.openai_compat import OpenAICompatBackend
from p2pinfer.errors import EngineResponseError, EngineUnavailable, ModelNotFound
from tests.support.fake_http import Reply, closed_port, fake_http_server

MESSAGES = [ChatMessage("user", "hi")]
PARAMS = SamplingParams(max_tokens=4, temperature=0.0)
NDJSON, SSE, JSON = "application/x-ndjson", "text/event-stream", "application/json"


def ndjson(*objects: object) -> list[bytes | None]:
    return [json.dumps(o).encode() + b"\n" for o in objects]


def sse(*objects: object) -> list[bytes | None]:
    return [b"data: " + (o if isinstance(o, bytes) else json.dumps(o).encode()) + b"\n\n"
            for o in objects]  # fmt: skip


GOOD_CHAT = ndjson(
    {"model": "m", "message": {"role": "assistant", "content": "Hel"}, "done": False},
    {"model": "m", "message": {"role": "assistant", "content": "lo"}, "done": False},
    {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True,
     "done_reason": "stop", "prompt_eval_count": 5, "eval_count": 2, "eval_duration": 900},
)  # fmt: skip
GOOD_SSE = sse(
    {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}]},
    {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    {"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}},
    b"[DONE]",
)


async def collect(backend: Backend, model: str = "m") -> tuple[str, Completion]:
    text, done = "", None
    async with backend.chat(model, MESSAGES, PARAMS) as events:
        async for event in events:
            if isinstance(event, TokenDelta):
                text += event.text
            else:
                done = event
    assert done is not None
    return text, done


@pytest.mark.parametrize("kind", ["ollama", "openai"])
async def test_an_engine_that_is_down_is_unavailable(kind: str) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    backend: Backend = OllamaBackend(url) if kind == "ollama" else OpenAICompatBackend(url)
    with pytest.raises(EngineUnavailable, match=r"cannot reach the engine at http://127\.0\.0\.1"):
        await backend.list_models()
    with pytest.raises(EngineUnavailable, match="cannot reach"):
        await collect(backend)
    await backend.aclose()


def stalled(_: bytes) -> Reply:
    return 200, NDJSON, [None]


def stalls_midstream(_: bytes) -> Reply:
    return 200, NDJSON, [*GOOD_CHAT[:1], None]


async def test_a_slow_engine_times_out_with_a_clear_error_and_the_caller_goes_on() -> None:
    routes = {"/api/tags": stalled, "/api/chat": stalls_midstream}
    async with fake_http_server(routes) as server:
        backend = OllamaBackend(server.url, timeout_s=0.3)
        with trio.fail_after(5), pytest.raises(EngineUnavailable, match=r"within 0\.3 s"):
            await backend.list_models()
        with trio.fail_after(5), pytest.raises(EngineUnavailable, match=r"within 0\.3 s"):
            await collect(backend)
        # The same backend still works once the engine answers.
        server.routes["/api/chat"] = lambda _: (200, NDJSON, GOOD_CHAT)
        assert (await collect(backend))[0] == "Hello"
        await backend.aclose()


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        ((200, NDJSON, [b"<html>oops</html>\n"]), EngineResponseError, "not JSON"),
        ((200, NDJSON, GOOD_CHAT[:2]), EngineResponseError, "without done:true"),
        ((200, NDJSON, [*GOOD_CHAT[:1], *ndjson({"error": "runner crashed"})]),
         EngineResponseError, "mid-stream: runner crashed"),
        ((200, NDJSON, ndjson([1, 2])), EngineResponseError, "not an object"),
        ((404, JSON, ndjson({"error": "model 'm' not found"})), ModelNotFound, "model 'm'"),
        ((500, "text/html", [b"<h1>Internal</h1>"]), EngineResponseError, "answered 500"),
        ((503, JSON, ndjson({"error": "server busy"})), EngineUnavailable, "busy"),
    ],
)  # fmt: skip
async def test_ollama_garbage_is_an_error_and_the_caller_goes_on(
    reply: Reply, error: type[Exception], message: str
) -> None:
    async with fake_http_server({"/api/chat": lambda _: reply}) as server:
        backend = OllamaBackend(server.url, timeout_s=5)
        with trio.fail_after(5), pytest.raises(error, match=message):
            await collect(backend)
        server.routes["/api/chat"] = lambda _: (200, NDJSON, GOOD_CHAT)
        text, done = await collect(backend)
        assert text == "Hello" and done.usage.completion_tokens == 2
        await backend.aclose()


@pytest.mark.parametrize(
    ("reply", "error", "message"),
    [
        ((200, SSE, sse(b"{not json")), EngineResponseError, "not JSON"),
        ((200, SSE, GOOD_SSE[:1]), EngineResponseError, "before finishing"),
        ((200, SSE, [*GOOD_SSE[:1], *sse(b"[DONE]")]), EngineResponseError, "without a finish"),
        ((200, SSE, sse({"error": {"message": "boom"}})), EngineResponseError, "mid-stream: boom"),
        ((200, SSE, sse({"object": "x"})), EngineResponseError, "without choices"),
        ((404, JSON, ndjson({"error": {"message": "model 'm' not found",
                                       "type": "not_found_error"}})), ModelNotFound, "model 'm'"),
    ],
)  # fmt: skip
async def test_openai_garbage_is_an_error_and_the_caller_goes_on(
    reply: Reply, error: type[Exception], message: str
) -> None:
    async with fake_http_server({"/v1/chat/completions": lambda _: reply}) as server:
        backend = OpenAICompatBackend(server.url, timeout_s=5)
        with trio.fail_after(5), pytest.raises(error, match=message):
            await collect(backend)
        server.routes["/v1/chat/completions"] = lambda _: (200, SSE, GOOD_SSE)
        text, done = await collect(backend)
        assert text == "Hello" and done.usage == done.usage.__class__(5, 1)
        await backend.aclose()


async def test_requests_carry_the_sampling_parameters() -> None:
    seen: dict[str, object] = {}

    def chat(body: bytes) -> Reply:
        seen.update(json.loads(body))
        return 200, NDJSON, GOOD_CHAT

    async with fake_http_server({"/api/chat": chat}) as server:
        backend = OllamaBackend(server.url)
        params = SamplingParams(max_tokens=7, temperature=0.0, seed=9, stop=("x",))
        async with backend.chat("m", MESSAGES, params) as events:
            async for _ in events:
                pass
        await backend.aclose()
    options = seen["options"]
    assert isinstance(options, dict)
    assert (options["num_predict"], options["temperature"], options["seed"], options["stop"]) == (
        7, 0.0, 9, ["x"])  # fmt: skip
    assert seen["stream"] is True and seen["messages"] == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    "vectors",
    [
        [[0.5, "0.5"]], [[0.5, True]], [[0.5, None]], [[]], ["0.5"], [[0.5], [0.5, 0.5]],
        [[0.5, float("nan")]], [[float("inf"), float("-inf")]], [[1e308, 1e308, 0.0, "x"]],
        [[0.5, 10**400]], [[0.5]] * 2,
    ],
)  # fmt: skip
async def test_a_malformed_embedding_from_the_engine_is_refused(vectors: list[object]) -> None:
    # Fake engine (unit test of the reply check). Each case is wrong for one reason: a
    # string, a boolean, null, empty, not a list, ragged, nan, infinities, a huge integer,
    # two vectors for one input. json.dumps writes NaN/Infinity, which Python's parser reads.
    body = json.dumps({"embeddings": vectors}).encode()
    good = json.dumps({"embeddings": [[1e308, 1e308, -0.25, 3]]}).encode()
    async with fake_http_server({"/api/embed": lambda _: (200, JSON, [body])}) as server:
        backend = OllamaBackend(server.url, timeout_s=5)
        with trio.fail_after(5), pytest.raises(EngineResponseError, match="vector"):
            await backend.embed("m", ["one input"])
        # Finite values whose sum overflows, and integers, are numbers all the same.
        server.routes["/api/embed"] = lambda _: (200, JSON, [good])
        got = await backend.embed("m", ["one input"])
        assert got.vectors == ((1e308, 1e308, -0.25, 3.0),)
        assert all(type(x) is float for x in got.vectors[0])
        await backend.aclose()
