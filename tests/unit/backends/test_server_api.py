"""The Ollama-compatible server's statuses, error bodies and stream endings (with a fake engine)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import httpx
import pytest
import trio

from p2pinfer.api.server import create_app, serve
from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TokenDelta,
    Usage,
)
from p2pinfer.errors import BackendError, EngineResponseError, EngineUnavailable

DONE = Completion("stop", Usage(3, 2))
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


class FakeBackend:
    """Plays a script of events; records what it was asked; notes when a stream is closed."""

    name = "fake"

    def __init__(
        self,
        script: Sequence[StreamEvent | BackendError] = (TokenDelta("Hel"), TokenDelta("lo"), DONE),
        *,
        chat_template: bool = True,
        endless: bool = False,
    ) -> None:
        self.script, self.chat_template, self.endless = list(script), chat_template, endless
        self.calls: list[tuple[str, Any]] = []
        self.closed = 0

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("fake:latest", "ab" * 32, "llama", "1M", "F32", 128, 10,
                          self.chat_template, 1_700_000_000_000)]  # fmt: skip

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> Any:
        self.calls.append(("chat", (model, list(messages), params)))
        return self._stream()

    def generate(self, model: str, prompt: str, params: SamplingParams) -> Any:
        self.calls.append(("generate", (model, prompt, params)))
        return self._stream()

    @asynccontextmanager
    async def _stream(self) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        if isinstance(self.script[0], BackendError):
            raise self.script[0]
        try:
            yield self._events()
        finally:
            self.closed += 1

    async def _events(self) -> AsyncIterator[StreamEvent]:
        if self.endless:
            while True:
                await trio.sleep(0.01)
                yield TokenDelta("x")
        for item in self.script:
            if isinstance(item, BackendError):
                raise item
            yield item

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def served(backend: FakeBackend) -> AsyncIterator[httpx.AsyncClient]:
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            partial(serve, shutdown_trigger=stop.wait), create_app(backend), "127.0.0.1", 0
        )
        async with httpx.AsyncClient(base_url=binds[0], timeout=5) as client:
            yield client
        stop.set()


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line) for line in response.text.splitlines() if line]


async def test_root_version_and_bad_requests_answer_like_ollama() -> None:
    async with served(FakeBackend()) as client:
        root = await client.get("/")
        assert (root.status_code, root.text) == (200, "Ollama is running")
        assert (await client.head("/")).status_code == 200
        assert (await client.get("/api/version")).json() == {"version": "0.12.6"}
        missing = await client.post("/api/chat")
        assert (missing.status_code, missing.json()) == (400, {"error": "missing request body"})
        bad = await client.post("/api/generate", content=b"{oops")
        assert bad.status_code == 400 and "invalid character" in bad.json()["error"]
        option = await client.post("/api/chat", json={**CHAT, "options": {"top_k": "many"}})
        assert option.json() == {"error": 'option "top_k" must be of type integer'}


async def test_unknown_models_are_404_in_both_apis() -> None:
    async with served(FakeBackend()) as client:
        for path, body in [("/api/chat", {**CHAT, "model": "nope"}),
                           ("/api/generate", {"model": "nope", "prompt": "x"}),
                           ("/api/show", {"model": "nope"})]:  # fmt: skip
            reply = await client.post(path, json=body)
            assert (reply.status_code, reply.json()) == (404, {"error": "model 'nope' not found"})
        reply = await client.post("/v1/chat/completions", json={**CHAT, "model": "nope"})
        assert reply.status_code == 404
        error = reply.json()["error"]
        assert (error["message"], error["type"]) == ("model 'nope' not found", "not_found_error")
        assert (await client.get("/v1/models/nope")).status_code == 404


async def test_a_failure_before_the_first_token_gets_its_real_status() -> None:
    async with served(FakeBackend([EngineUnavailable("engine down")])) as client:
        reply = await client.post("/api/chat", json=CHAT)
        assert (reply.status_code, reply.json()) == (503, {"error": "engine down"})
        reply = await client.post("/v1/completions", json={"model": "fake", "prompt": "x"})
        assert reply.status_code == 503 and reply.json()["error"]["type"] == "api_error"


async def test_a_failure_mid_stream_is_an_error_line_without_done() -> None:
    backend = FakeBackend([TokenDelta("Hel"), EngineResponseError("runner crashed")])
    async with served(backend) as client:
        reply = await client.post("/api/chat", json=CHAT)
        assert reply.status_code == 200
        got = lines(reply)
        assert got[0]["message"]["content"] == "Hel"
        assert got[-1] == {"error": "runner crashed"}
        assert not any(line.get("done") for line in got)
        # Not streaming: nothing was sent yet, so the error gets a status.
        reply = await client.post("/api/chat", json={**CHAT, "stream": False})
        assert (reply.status_code, reply.json()) == (500, {"error": "runner crashed"})
        # SSE: the stream just ends, without a finish chunk or [DONE].
        reply = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert reply.status_code == 200 and "[DONE]" not in reply.text
        assert "finish_reason\":\"stop" not in reply.text
        assert backend.closed == 3


async def test_generate_applies_the_chat_template_unless_raw_or_a_base_model() -> None:
    backend = FakeBackend()
    async with served(backend) as client:
        body = {"model": "fake", "prompt": "hi", "system": "be brief", "stream": False}
        reply = await client.post("/api/generate", json=body)
        assert reply.json()["response"] == "Hello" and reply.json()["done"] is True
        kind, (_, messages, _) = backend.calls[-1]
        assert kind == "chat"
        assert [(m.role, m.content) for m in messages] == [("system", "be brief"), ("user", "hi")]
        await client.post("/api/generate", json={"model": "fake", "prompt": "hi", "raw": True})
        assert backend.calls[-1][0] == "generate"
    base = FakeBackend(chat_template=False)
    async with served(base) as client:
        await client.post("/api/generate", json={"model": "fake", "prompt": "hi"})
        assert base.calls[-1][0] == "generate"


async def test_empty_requests_load_and_keep_alive_zero_unloads() -> None:
    backend = FakeBackend()
    async with served(backend) as client:
        load = await client.post("/api/generate", json={"model": "fake"})
        assert load.json()["done_reason"] == "load"
        ps = (await client.get("/api/ps")).json()["models"]
        assert [m["name"] for m in ps] == ["fake:latest"] and ps[0]["size_vram"] == 0
        unload = await client.post("/api/chat", json={"model": "fake", "keep_alive": 0})
        assert unload.json()["done_reason"] == "unload"
        assert (await client.get("/api/ps")).json() == {"models": []}
        assert backend.calls == []  # neither needed the engine to generate


async def test_listing_endpoints_describe_the_models() -> None:
    async with served(FakeBackend()) as client:
        tag = (await client.get("/api/tags")).json()["models"][0]
        assert tag["name"] == tag["model"] == "fake:latest" and tag["digest"] == "ab" * 32
        assert tag["details"]["quantization_level"] == "F32"
        show = (await client.post("/api/show", json={"name": "fake"})).json()
        assert show["details"]["family"] == "llama"
        assert show["model_info"]["llama.context_length"] == 128
        models = (await client.get("/v1/models")).json()
        assert models["data"] == [{"id": "fake:latest", "object": "model",
                                   "created": 1_700_000_000, "owned_by": "library"}]  # fmt: skip


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
async def test_a_client_that_disconnects_stops_the_stream(path: str) -> None:
    backend = FakeBackend(endless=True)
    async with served(backend) as client:
        async with client.stream("POST", path, json={**CHAT, "stream": True}) as reply:
            async for _ in reply.aiter_lines():
                break
        with trio.fail_after(5):
            while backend.closed == 0:
                await trio.sleep(0.01)
