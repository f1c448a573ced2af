"""OpenAI's `n` on `engine serve`'s app (a fake engine that answers with its seed): the
choices' shapes, streamed and whole, their seeds, usage, and errors in a later choice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TokenDelta,
    Usage,
)
from p2pinfer.errors import EngineResponseError
from tests.unit.backends.test_server_api import CHAT, served


class FakeSeedBackend:
    """Answers "seed=S" in two deltas; with `fail_seed`, the stream of that seed fails
    after its first delta."""

    name = "fake"

    def __init__(self, fail_seed: int | None = None) -> None:
        self.fail_seed = fail_seed
        self.seeds: list[int | None] = []

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo("fake:latest", "ab" * 32)]

    def chat(self, model: str, messages: Sequence[ChatMessage], params: SamplingParams) -> Any:
        return self._stream(params)

    def generate(self, model: str, prompt: str, params: SamplingParams) -> Any:
        return self._stream(params)

    @asynccontextmanager
    async def _stream(self, params: SamplingParams) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        self.seeds.append(params.seed)

        async def events() -> AsyncIterator[StreamEvent]:
            yield TokenDelta("seed=")
            if params.seed is not None and params.seed == self.fail_seed:
                raise EngineResponseError("engine died")
            yield TokenDelta(str(params.seed))
            yield Completion("stop", Usage(3, 2))

        yield events()

    async def aclose(self) -> None:
        pass


async def test_n_choices_whole_each_with_its_own_seed() -> None:
    backend = FakeSeedBackend()
    async with served(backend) as client:  # type: ignore[arg-type]
        reply = await client.post("/v1/chat/completions", json={**CHAT, "n": 3, "seed": 7})
        text = await client.post("/v1/completions", json={
            "model": "fake", "prompt": "x", "n": 2, "seed": 2**32 - 1})
    body = reply.json()
    assert [(c["index"], c["message"]["content"]) for c in body["choices"]] == [
        (0, "seed=7"), (1, "seed=8"), (2, "seed=9")]
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 6, "total_tokens": 15}
    assert [c["text"] for c in text.json()["choices"]] == ["seed=4294967295", "seed=0"]
    assert backend.seeds == [7, 8, 9, 2**32 - 1, 0]


async def test_n_choices_streamed_carry_their_index_and_end_once() -> None:
    async with served(FakeSeedBackend()) as client:  # type: ignore[arg-type]
        reply = await client.post("/v1/chat/completions", json={
            **CHAT, "n": 2, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}})
    events = [line[6:] for line in reply.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    texts: dict[int, str] = {}
    finishes = []
    for chunk in chunks[:-1]:
        (choice,) = chunk["choices"]
        texts[choice["index"]] = texts.get(choice["index"], "") + (
            choice["delta"].get("content") or "")
        if choice["finish_reason"]:
            finishes.append(choice["index"])
    assert texts == {0: "seed=1", 1: "seed=2"} and finishes == [0, 1]
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 4


async def test_a_failing_later_choice_fails_the_reply() -> None:
    async with served(FakeSeedBackend(fail_seed=6)) as client:  # type: ignore[arg-type]
        whole = await client.post("/v1/chat/completions", json={**CHAT, "n": 2, "seed": 5})
        streamed = await client.post("/v1/chat/completions", json={
            **CHAT, "n": 2, "seed": 5, "stream": True})
    assert whole.status_code == 500 and "engine died" in whole.json()["error"]["message"]
    assert streamed.status_code == 200 and "[DONE]" not in streamed.text  # it just ends


async def test_n_out_of_range_is_a_400() -> None:
    async with served(FakeSeedBackend()) as client:  # type: ignore[arg-type]
        for n in (0, 9, "2", 1.5):
            reply = await client.post("/v1/chat/completions", json={**CHAT, "n": n})
            assert reply.status_code == 400, n
        assert (await client.post("/v1/chat/completions", json={**CHAT, "n": 1})
                ).json()["choices"][0]["message"]["content"] == "seed=None"
