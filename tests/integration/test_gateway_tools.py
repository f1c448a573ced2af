"""Tool calling through the network with the official `openai` and `ollama` clients: the
gateway, a job over real libp2p hosts, a provider running SmolLM2 in the embedded engine,
and back; the spot-checker re-runs such a job with its tools and passes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest
import trio

from p2pinfer.backends.base import ChatMessage, Completion, SamplingParams, TokenDelta
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.protocol import ChatTurn, JobParams, JobRequest, JobResult, decode_as
from p2pinfer.protocol.charges import prompt_token_bound
from p2pinfer.protocol.tools import call_schema, tools_text
from p2pinfer.verify.compare import DEFAULT_THRESHOLDS, Verdict
from p2pinfer.verify.judge import judge_answer
from tests.integration.gateway_net import GatewayNet, smollm2_gateway
from tests.support.backends import ENGINE_READY

pytestmark = [
    pytest.mark.network,
    pytest.mark.engine,
    pytest.mark.skipif(not ENGINE_READY, reason="needs llama-cpp-python and SmolLM2"),
]

WEATHER = {"name": "get_weather", "description": "Get the current weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
TOOLS: list[Any] = [{"type": "function", "function": WEATHER}]
ASK = "What is the weather in Paris?"
FORCE = {"type": "function", "function": {"name": "get_weather"}}


def _openai_round(gw: GatewayNet) -> tuple[Any, list[Any], Any]:
    client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0,
                           timeout=60)
    asked: Any = [{"role": "user", "content": ASK}]
    forced = client.chat.completions.create(
        model=SMOLLM2, temperature=0, seed=1, max_tokens=60, messages=asked, tools=TOOLS,
        tool_choice=FORCE)  # type: ignore[arg-type]
    chunks = list(client.chat.completions.create(
        model=SMOLLM2, temperature=0, seed=1, max_tokens=60, messages=asked, tools=TOOLS,
        tool_choice="required", stream=True))
    call = forced.choices[0].message
    follow_up = client.chat.completions.create(
        model=SMOLLM2, temperature=0, seed=1, max_tokens=30, tools=TOOLS, tool_choice="none",
        messages=[*asked, call.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.tool_calls[0].id,  # type: ignore[index]
                   "content": "18 C and sunny"}])
    return forced, chunks, follow_up


async def test_tool_calls_through_the_network_for_openai_and_ollama_clients(
    tmp_path: Path,
) -> None:
    with trio.fail_after(240):
        async with smollm2_gateway(tmp_path) as gw:
            forced, chunks, follow_up = await trio.to_thread.run_sync(_openai_round, gw)
            choice = forced.choices[0]
            assert choice.finish_reason == "tool_calls" and choice.message.content is None
            (call,) = choice.message.tool_calls
            assert call.type == "function" and call.function.name == "get_weather"
            assert json.loads(call.function.arguments) == {"city": "Paris"}

            deltas = [c.choices[0].delta for c in chunks if c.choices]
            streamed = [t for d in deltas for t in d.tool_calls or ()]
            assert [t.index for t in streamed] == [0] and streamed[0].id.startswith("call_")
            assert streamed[0].function.name == "get_weather"
            assert isinstance(json.loads(streamed[0].function.arguments)["city"], str)
            assert chunks[-1].choices[0].finish_reason == "tool_calls"

            # The follow-up's tool turns reach the engine as they would in process.
            made = '[{"name":"get_weather","arguments":{"city":"Paris"}}]'
            turns = [ChatMessage("user", ASK), ChatMessage("assistant", "", tool_calls=made),
                     ChatMessage("tool", "18 C and sunny", tool_name="get_weather")]
            params = SamplingParams(max_tokens=30, temperature=0.0, seed=1, top_p=1.0,
                                    tools=tools_text([WEATHER]), tool_choice="none")
            async with gw.engine.chat(SMOLLM2, turns, params) as events:
                direct = "".join([e.text async for e in events if isinstance(e, TokenDelta)])
            assert follow_up.choices[0].finish_reason == "stop"
            assert follow_up.choices[0].message.content == direct != ""

            await _ollama_round(gw)
            await _spot_check(gw)


async def _ollama_round(gw: GatewayNet) -> None:
    # Ollama's API has no tool_choice: SmolLM2 asked in "auto" answers prose (it writes no
    # calls of its own: docs/gateway.md), and a format that is the call's schema forces one.
    local = ollama.Client(host=gw.url, timeout=60)
    options = {"temperature": 0, "seed": 1, "num_predict": 60}
    call_format = call_schema([WEATHER], "required")
    messages: Any = [{"role": "user", "content": ASK}]

    def chat(**extra: Any) -> Any:
        return local.chat(model=SMOLLM2, messages=messages, tools=TOOLS, options=options,
                          **extra)

    auto = await trio.to_thread.run_sync(chat)
    assert auto.message.content and not auto.message.tool_calls
    forced = await trio.to_thread.run_sync(lambda: chat(format=call_format))
    (call,) = forced.message.tool_calls
    assert call.function.name == "get_weather" and call.function.arguments == {"city": "Paris"}
    streamed = await trio.to_thread.run_sync(lambda: list(chat(format=call_format, stream=True)))
    calls = [c for part in streamed for c in part.message.tool_calls or ()]
    assert [c.function.arguments for c in calls] == [{"city": "Paris"}]
    assert streamed[-1].done

    messages.extend([forced.message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_name": "get_weather", "content": "18 C and sunny"}])
    follow_up = await trio.to_thread.run_sync(chat)
    assert follow_up.message.content


async def _spot_check(gw: GatewayNet) -> None:
    # A spot-check re-runs the signed request with its tools and passes the answer.
    outcome = await gw.client.run(SMOLLM2, [ChatTurn("user", ASK)], JobParams(
        max_tokens=60, temperature=0.0, seed=1, tools=tools_text([WEATHER]),
        tool_choice="function:get_weather"))
    assert json.loads(outcome.text) == {"name": "get_weather", "arguments": {"city": "Paris"}}
    request = decode_as(outcome.request, JobRequest).msg
    result = decode_as(outcome.result, JobResult).msg
    reference, comparison = await judge_answer(
        gw.engine, request, result, outcome.text, DEFAULT_THRESHOLDS)
    assert reference == outcome.text and comparison.verdict is Verdict.IDENTICAL
    # The tools shown to the model are paid for: the provider's claim is the engine's own
    # count, under the consumer's bound (which counts the tools: tests/unit/test_tools.py).
    params = SamplingParams(max_tokens=60, temperature=0.0, seed=1,
                            tools=request.params.tools, tool_choice=request.params.tool_choice)
    async with gw.engine.chat(SMOLLM2, [ChatMessage("user", ASK)], params) as events:
        (done,) = [e async for e in events if isinstance(e, Completion)]
    assert result.prompt_tokens == done.usage.prompt_tokens <= prompt_token_bound(request)
