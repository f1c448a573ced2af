"""Tool calling (issue 17): OpenAI's tools/tool_choice/parallel_tool_calls and Ollama's
tools into `JobParams.tools`/`tool_choice`, earlier calls and their results into turns,
carried signed on the wire and bounded against hostile input, and an answer's calls
back out in each API's shape, streamed or whole."""

from __future__ import annotations

import json
import os

import msgpack
import pytest

from p2pinfer.api.ollama_replies import ChatEncoder, show_reply
from p2pinfer.api.ollama_wire import parse_chat
from p2pinfer.api.openai_replies import ChatCompletionEncoder
from p2pinfer.api.openai_wire import parse_chat_completion
from p2pinfer.backends.base import ChatMessage, Completion, ModelInfo, TokenDelta
from p2pinfer.backends.job_params import sampling_params
from p2pinfer.backends.tool_forward import (
    StreamedCalls,
    ollama_calls_text,
    ollama_messages,
    openai_messages,
)
from p2pinfer.backends.tools import ToolReader, grammar_format, prompt_messages
from p2pinfer.backends.wire import ApiError
from p2pinfer.errors import EngineResponseError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.network_backend import wire_job
from p2pinfer.protocol import ChatTurn, JobParams, JobRequest, decode
from p2pinfer.protocol.charges import prompt_token_bound
from p2pinfer.protocol.codec import _signing_payload
from p2pinfer.protocol.output_format import MAX_SCHEMA_DEPTH
from p2pinfer.protocol.schema import to_wire
from p2pinfer.protocol.tools import (
    MAX_TOOLS,
    calls_problem,
    check_tool_choice,
    check_tools,
    parse_tool_calls,
    tools_text,
)

CONSUMER, PROVIDER = NodeIdentity.generate(), NodeIdentity.generate()
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}
ADD = {"name": "add", "parameters": {"type": "object", "properties": {
    "a": {"type": "integer"}, "b": {"type": "integer"}}}}
OPENAI_TOOLS = [{"type": "function", "function": f} for f in (WEATHER, ADD)]
TOOLS = tools_text([WEATHER, ADD])
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]
CALL = '{"name":"get_weather","arguments":{"city":"Paris"}}'
DONE = Completion("stop")


def nested(depth: int) -> dict[str, object]:
    schema: dict[str, object] = {}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"x": schema}}
    return schema


HOSTILE_TOOLS = {
    "too many": [{"name": f"f{i}"} for i in range(MAX_TOOLS + 1)],
    "none": [],
    "bad name": [{"name": "rm -rf /"}],
    "long name": [{"name": "f" * 65}],
    "same name twice": [{"name": "f"}, {"name": "f"}],
    "unknown key": [{"name": "f", "code": "print(1)"}],
    "long description": [{"name": "f", "description": "x" * 3_000}],
    "parameters not an object": [{"name": "f", "parameters": [1]}],
    "a $ref": [{"name": "f", "parameters": {"$ref": "#/x"}}],
    "deep parameters": [{"name": "f", "parameters": nested(MAX_SCHEMA_DEPTH)}],
    "huge maxItems": [{"name": "f", "parameters": {"type": "array", "maxItems": 10**9}}],
    "many subschemas": [{"name": "f", "parameters": {"anyOf": [{"type": "string"}] * 2_000}}],
    "not a list": {"name": "f"},
}


def signed_with(**params: object) -> bytes:
    body = to_wire(JobRequest(job_id=os.urandom(16), provider=PROVIDER.peer_id, model="m",
                              kind="chat", max_price_per_1k=10, issued_at=1, expires_at=2,
                              messages=(ChatTurn("user", "hi"),)))
    body["params"] = dict(sorted({**body["params"], **params}.items()))
    sig = CONSUMER.sign(_signing_payload(JobRequest.TYPE, body, CONSUMER.public_key))
    return msgpack.packb({"body": body, "from": CONSUMER.public_key, "sig": sig,  # type: ignore[no-any-return]
                          "t": JobRequest.TYPE, "v": 1}, use_bin_type=True)


@pytest.mark.parametrize("tools", HOSTILE_TOOLS.values(), ids=HOSTILE_TOOLS.keys())
def test_hostile_tools_are_refused_on_decode_and_by_the_gateway(tools: object) -> None:
    with pytest.raises(ValidationError):
        decode(signed_with(tools=json.dumps(tools)))
    openai_tools = ([{"type": "function", "function": t} for t in tools]
                    if isinstance(tools, list) else tools)
    # The gateway keeps a function's name, description and parameters (OpenAI's `strict`
    # and other keys are not the model's business), so only the wire meets other keys.
    if openai_tools and "code" not in json.dumps(tools):
        with pytest.raises(ApiError) as refused:
            parse_chat_completion({"model": "m", "messages": MESSAGES, "tools": openai_tools})
        assert refused.value.status == 400


@pytest.mark.parametrize("params", [
    {"tools": "[" * 10_000 + "]" * 10_000},  # a recursion bomb
    {"tools": "x" * 40_000},
    {"tools": TOOLS, "tool_choice": "function:rm"},  # forces a tool not offered
    {"tools": TOOLS, "tool_choice": "maybe"},
    {"tool_choice": "required"},  # no tools
    {"tools": 7},
], ids=["bomb", "oversize", "forces unknown", "bad choice", "choice alone", "not text"])
def test_a_peers_hostile_tool_fields_are_refused_on_decode(params: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        decode(signed_with(**params))


def test_tool_turns_are_checked_on_the_wire() -> None:
    ChatTurn("assistant", "", tool_calls=f"[{CALL}]")
    ChatTurn("tool", "18 C", tool_name="get_weather")
    for bad in ("[]", "{}", '[{"name":"f","arguments":"x"}]', '[{"name":"f"}]', "[[[[",
                '[{"name":"a b","arguments":{}}]'):
        with pytest.raises(ValidationError):
            ChatTurn("assistant", "", tool_calls=bad)
    with pytest.raises(ValidationError):
        ChatTurn("user", "", tool_calls=f"[{CALL}]")


def test_tools_travel_signed_to_the_engine_and_are_absent_when_unused() -> None:
    received = decode(signed_with(tools=TOOLS, tool_choice="required")).msg
    assert isinstance(received, JobRequest)
    params = sampling_params(received)
    assert (params.tools, params.tool_choice) == (TOOLS, "required")
    assert received.params.reshaped  # judged by a re-run, not the raw model's score
    wire = to_wire(JobParams())
    assert "tools" not in wire and "tool_choice" not in wire
    assert set(to_wire(ChatTurn("user", "hi"))) == {"role", "content"}
    check_tool_choice("function:add", check_tools(TOOLS))


def test_openai_request_tools_choice_and_tool_turns() -> None:
    body = {"model": "m", "tools": OPENAI_TOOLS, "parallel_tool_calls": False,
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "messages": [*MESSAGES, {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_9", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
                {"role": "tool", "tool_call_id": "call_9", "content": "18 C"}]}
    req = parse_chat_completion(body)
    assert json.loads(req.params.tools or "") == [WEATHER, ADD]
    assert req.params.tool_choice == "function:get_weather"
    assert not req.parallel_tool_calls
    assistant, tool = req.messages[1:]
    assert json.loads(assistant.tool_calls or "") == [
        {"name": "get_weather", "arguments": {"city": "Paris"}}]
    assert (tool.role, tool.tool_name, tool.content) == ("tool", "get_weather", "18 C")
    turns, _ = wire_job(req.messages, req.params, 64)
    assert isinstance(turns, list) and turns[2].tool_name == "get_weather"
    assert parse_chat_completion({**body, "tool_choice": "auto"}).params.tool_choice is None
    plain = parse_chat_completion({"model": "m", "messages": MESSAGES, "tool_choice": "none"})
    assert plain.params.tools is None


@pytest.mark.parametrize("extra", [
    {"tool_choice": "required"},  # without tools
    {"tools": OPENAI_TOOLS, "tool_choice": {"type": "function", "function": {"name": "rm"}}},
    {"tools": OPENAI_TOOLS, "tool_choice": 3},
    {"tools": [{"type": "code_interpreter"}]},
    {"tools": OPENAI_TOOLS, "parallel_tool_calls": "yes"},
    {"messages": [{"role": "user", "content": "hi", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
    {"messages": [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "1", "type": "function", "function": {"name": "f", "arguments": "{nope"}}]}]},
])
def test_openai_tool_mistakes_are_400(extra: dict[str, object]) -> None:
    with pytest.raises(ApiError) as refused:
        parse_chat_completion({"model": "m", "messages": MESSAGES, **extra})
    assert refused.value.status == 400


def test_ollama_request_tools_and_tool_turns() -> None:
    req = parse_chat({"model": "m", "tools": OPENAI_TOOLS, "messages": [
        *MESSAGES, {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "18 C"}]})
    assert req.params.tools == TOOLS and req.params.tool_choice is None
    assert json.loads(req.messages[1].tool_calls or "")[0]["arguments"] == {"city": "Paris"}
    assert req.messages[2].tool_name == "get_weather"
    with pytest.raises(ApiError):
        parse_chat({"model": "m", "messages": [{"role": "tool", "content": "", "tool_name": 3}]})


def test_an_openai_reply_carries_the_calls() -> None:
    encoder = ChatCompletionEncoder("m")
    encoder.use_tools(TOOLS, None, True)
    reply = json.loads(encoder.whole(CALL, DONE))
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_") and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}  # a JSON string
    text = json.loads(encoder.whole("It is sunny.", DONE))["choices"][0]
    assert text["message"] == {"role": "assistant", "content": "It is sunny."}
    assert text["finish_reason"] == "stop"


def events(body: bytes) -> list[dict[str, object]]:
    return [json.loads(line[6:]) for line in body.split(b"\n\n")
            if line.startswith(b"data: {")]


def test_an_openai_stream_holds_a_call_back_and_sends_it_with_its_index() -> None:
    encoder = ChatCompletionEncoder("m")
    encoder.use_tools(TOOLS, "required", True)
    pieces = [CALL[:1], CALL[1:20], CALL[20:]]
    held = [encoder.delta(TokenDelta(p)) for p in pieces]
    assert held == [b"", b"", b""]  # it may be a call: nothing sent yet
    chunks = events(encoder.finish(DONE))
    delta = chunks[0]["choices"][0]["delta"]  # type: ignore[index]
    assert delta["role"] == "assistant"
    (call,) = delta["tool_calls"]
    assert call["index"] == 0 and call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]


def test_a_plain_answer_streams_at_once_and_json_that_is_no_call_comes_at_the_end() -> None:
    encoder = ChatCompletionEncoder("m")
    encoder.use_tools(TOOLS, None, True)
    first = events(encoder.delta(TokenDelta(" Sunny")))
    assert first[0]["choices"][0]["delta"]["content"] == " Sunny"  # type: ignore[index]
    other = ChatCompletionEncoder("m")
    other.use_tools(TOOLS, None, True)
    assert other.delta(TokenDelta('{"a": 1}')) == b""
    chunks = events(other.finish(DONE))
    assert chunks[0]["choices"][0]["delta"]["content"] == '{"a": 1}'  # type: ignore[index]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]


def test_parallel_tool_calls_false_answers_the_first_call_only() -> None:
    two = f'[{CALL}, {{"name": "add", "arguments": {{"a": 1, "b": 2}}}}]'
    encoder = ChatCompletionEncoder("m")
    encoder.use_tools(TOOLS, None, False)
    assert len(json.loads(encoder.whole(two, DONE))["choices"][0]["message"]["tool_calls"]) == 1
    encoder.use_tools(TOOLS, None, True)
    assert len(json.loads(encoder.whole(two, DONE))["choices"][0]["message"]["tool_calls"]) == 2


def test_an_ollama_reply_carries_the_calls_whole_and_streamed() -> None:
    encoder = ChatEncoder("m")
    encoder.use_tools(TOOLS)
    message = json.loads(encoder.whole(CALL, DONE))["message"]
    assert message["content"] == ""
    assert message["tool_calls"] == [
        {"function": {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert encoder.delta(TokenDelta(CALL)) == b""
    lines = [json.loads(line) for line in encoder.finish(DONE).splitlines()]
    assert lines[0]["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert lines[0]["done"] is False and lines[-1]["done"] is True


def test_calls_are_read_as_models_write_them_and_nothing_else_is_a_call() -> None:
    names = {"get_weather", "add"}
    expected = [("get_weather", {"city": "Paris"})]
    for text in (CALL, f" [{CALL}] ", f"```json\n{CALL}\n```", f"<tool_call>{CALL}</tool_call>",
                 '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}',
                 '{"name": "get_weather", "parameters": {"city": "Paris"}}'):
        assert parse_tool_calls(text, names) == expected, text
    for text in ("Paris is sunny.", '{"name": "rm", "arguments": {}}', f"Sure: {CALL}",
                 '{"name": "add", "arguments": [1, 2]}', "[]", "{" * 5_000, f"[{CALL}, 3]"):
        assert parse_tool_calls(text, names) is None, text
    assert ToolReader.of(TOOLS, "none") is None  # "none": answers are never calls


def test_the_engine_is_shown_the_tools_and_earlier_calls() -> None:
    messages = [ChatMessage("system", "Be brief."), ChatMessage("user", "Paris?"),
                ChatMessage("assistant", "", tool_calls=f"[{CALL}]"),
                ChatMessage("tool", "18 C", tool_name="get_weather")]
    payload = prompt_messages(messages, TOOLS, "function:get_weather")
    system = payload[0]["content"]
    assert system.endswith("You must call get_weather.\n\nBe brief.")
    offered = system[system.index("<tools>") + 7:system.index("</tools>")]
    assert [t["function"] for t in json.loads(offered)] == [WEATHER, ADD]
    # As SmolLM2 was trained: calls as a list in <tool_call> tags, results from the user.
    assert payload[2]["content"].startswith("<tool_call>[\n")
    assert parse_tool_calls(payload[2]["content"], {"get_weather"}) == [
        ("get_weather", {"city": "Paris"})]
    assert payload[3] == {"role": "user", "content": "<tool_response>\n18 C\n</tool_response>"}
    assert prompt_messages(messages[1:2], TOOLS, "none") == [
        {"role": "user", "content": "Paris?"}]
    forced = json.loads(grammar_format(TOOLS, "function:add") or "")
    assert forced["properties"]["name"] == {"const": "add"}
    assert len(json.loads(grammar_format(TOOLS, "required") or "")["anyOf"]) == 2
    assert grammar_format(TOOLS, None) is None and grammar_format(None, "required") is None


def test_an_engines_calls_are_checked_and_put_together() -> None:
    streamed = StreamedCalls("engine")
    streamed.feed([{"index": 0, "id": "c", "function": {"name": "get_", "arguments": ""}}])
    streamed.feed([{"index": 0, "function": {"name": "weather", "arguments": '{"city":'}}])
    streamed.feed([{"index": 0, "function": {"arguments": ' "Paris"}'}}])
    streamed.feed(None)
    assert json.loads(streamed.take()) == json.loads(CALL)
    assert streamed.take() == ""  # once
    for bad in ("x", [{"index": 99, "function": {}}], [{"index": 0}],
                [{"index": 0, "function": {"arguments": "x" * 70_000}}]):
        with pytest.raises(EngineResponseError):
            StreamedCalls("engine").feed(bad)
    bad_args = StreamedCalls("engine")
    bad_args.feed([{"index": 0, "function": {"name": "f", "arguments": "[1]"}}])
    with pytest.raises(EngineResponseError):
        bad_args.take()
    assert json.loads(ollama_calls_text([{"function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}], "e")) == json.loads(CALL)
    assert ollama_calls_text(None, "e") == ""
    for bad in ([{"function": {"name": "a b", "arguments": {}}}], [{"function": "f"}], "f",
                [{"function": {"name": "f", "arguments": {}}}] * 17):
        with pytest.raises(EngineResponseError):
            ollama_calls_text(bad, "e")


def test_engines_are_shown_calls_with_ids_and_results_answering_them() -> None:
    turns = [ChatMessage("user", "Paris?"),
             ChatMessage("assistant", "", tool_calls=f"[{CALL}, {CALL}]"),
             ChatMessage("tool", "18 C", tool_name="get_weather"),
             ChatMessage("tool", "19 C", tool_name="get_weather")]
    sent = openai_messages(turns)
    ids = [c["id"] for c in sent[1]["tool_calls"]]
    assert len(set(ids)) == 2 and {sent[2]["tool_call_id"], sent[3]["tool_call_id"]} == set(ids)
    assert json.loads(sent[1]["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
    ollama_sent = ollama_messages(turns)
    assert ollama_sent[1]["tool_calls"][0] == {"function": json.loads(CALL)}
    assert ollama_sent[2]["tool_name"] == "get_weather"


def test_show_lists_tools_for_chat_models_only() -> None:
    chat = ModelInfo("m", "", family="llama")
    assert show_reply(chat, {})["capabilities"] == ["completion", "tools"]
    base = ModelInfo("b", "", chat_template=False, embedding_length=8)
    assert show_reply(base, {})["capabilities"] == ["completion", "embedding"]


def test_the_charge_bound_pays_for_the_tools_and_tool_turns_shown_to_the_model() -> None:
    def request(params: JobParams, *turns: ChatTurn) -> JobRequest:
        return JobRequest(job_id=os.urandom(16), provider=PROVIDER.peer_id, model="m",
                          kind="chat", max_price_per_1k=10, issued_at=1, expires_at=2,
                          messages=(ChatTurn("user", "hi"), *turns), params=params)

    plain = prompt_token_bound(request(JobParams()))
    with_tools = prompt_token_bound(request(JobParams(tools=TOOLS)))
    assert with_tools >= plain + len(TOOLS)
    turns = (ChatTurn("assistant", "", tool_calls=f"[{CALL}]"),
             ChatTurn("tool", "18 C", tool_name="get_weather"))
    assert prompt_token_bound(request(JobParams(), *turns)) >= (
        plain + len(CALL) + len("get_weather"))


def test_an_answer_that_had_to_call_a_tool_is_judged() -> None:
    # Attack 44: with tool_choice required or a named function, an engine's grammar (or
    # its server) makes the answer calls of offered tools only; arguments not judged.
    offered = tools_text([{"name": "get_weather"}, {"name": "add"}])
    call = '{"name": "get_weather", "arguments": {"city": "Paris"}}'
    two = '[{"name": "add", "arguments": {"a": 1}}, {"name": "get_weather", "arguments": {}}]'
    assert calls_problem(call, offered, "function:get_weather") is None
    assert calls_problem(f"<tool_call>{call}</tool_call>", offered, "required") is None
    assert calls_problem(two, offered, "required") is None
    assert calls_problem(two, offered, "function:add") == "a call of 'get_weather', not of 'add'"
    assert calls_problem("It is sunny.", offered, "required") == \
        "not (only) calls of the offered tools"
    assert calls_problem('{"name": "rm", "arguments": {}}', offered, "required") is not None
    for free in (None, "auto", "none"):  # the model may answer text
        assert calls_problem("It is sunny.", offered, free) is None
    deep = '{"name": "add", "arguments": {"a": ' + "[" * 40 + "]" * 40 + "}}"
    assert calls_problem(deep, offered, "required") is None  # past the bounds: not judged
