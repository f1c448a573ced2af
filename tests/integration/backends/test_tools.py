"""Tool calling with every backend kind: the embedded engine constrained to a call, and
the tools handed on as Ollama's `tools` (a forced call by its schema as `format`) and
OpenAI's `tools`/`tool_choice` to the same engine behind `engine serve`'s HTTP API, whose
calls (Ollama's `message.tool_calls`, OpenAI's streamed `delta.tool_calls`) come back as
the answer text the network carries; earlier calls and tool results are carried too."""

from __future__ import annotations

import pytest
import trio

from p2pinfer.backends.base import Backend, ChatMessage, SamplingParams, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.protocol.tools import calls_problem, parse_tool_calls, tools_text
from tests.support.backends import needs_engine

pytestmark = [pytest.mark.engine, needs_engine]

WEATHER = {"name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
ADD = {"name": "add", "parameters": {"type": "object", "properties": {
    "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}
TOOLS = tools_text([WEATHER, ADD])
ASK = ChatMessage("user", "What is the weather in Paris?")
FOLLOW_UP = [ASK, ChatMessage("assistant", "", tool_calls=(
    '[{"name":"get_weather","arguments":{"city":"Paris"}}]')),
    ChatMessage("tool", "18 C and sunny", tool_name="get_weather")]


async def answer(backend: Backend, messages: list[ChatMessage], choice: str | None) -> str:
    params = SamplingParams(max_tokens=60, temperature=0.0, seed=1, top_p=1.0, tools=TOOLS,
                            tool_choice=choice)
    with trio.fail_after(120):
        async with backend.chat(SMOLLM2, messages, params) as events:
            return "".join([e.text async for e in events if isinstance(e, TokenDelta)])


async def test_every_backend_answers_a_forced_call(backend: Backend) -> None:
    text = await answer(backend, [ASK], "function:get_weather")
    assert parse_tool_calls(text, {"get_weather", "add"}) == [("get_weather", {"city": "Paris"})]
    assert calls_problem(text, TOOLS, "function:get_weather") is None  # a consumer pays it


async def test_every_backend_answers_a_required_call(backend: Backend) -> None:
    text = await answer(backend, [ChatMessage("user", "What is 2 plus 3?")], "required")
    calls = parse_tool_calls(text, {"get_weather", "add"})
    assert calls is not None and len(calls) == 1 and calls_problem(text, TOOLS, "required") is None
    # SmolLM2 picks the right tool here (measured: {"a": 2, "b": 3})
    assert calls[0][0] == "add" and set(calls[0][1]) == {"a", "b"}


async def test_every_backend_carries_earlier_calls_and_results(
    backend: Backend, engine: EmbeddedBackend,
) -> None:
    got = await answer(backend, FOLLOW_UP, "none")
    assert got and got == await answer(engine, FOLLOW_UP, "none")
