"""Tool calls written as SmolLM2 was trained to write them (`<tool_call>[...]</tool_call>`,
perhaps after some prose, perhaps cut off by the token limit), read back whole and
streamed, in both APIs' shapes; and converted grammars kept for schemas sent again."""

from __future__ import annotations

import json

import pytest

from p2pinfer.api.ollama_replies import ChatEncoder
from p2pinfer.api.openai_replies import ChatCompletionEncoder
from p2pinfer.backends import output_format
from p2pinfer.backends.base import Completion, TokenDelta
from p2pinfer.backends.tools import ToolReader
from p2pinfer.protocol.output_format import schema_text
from p2pinfer.protocol.tools import tools_text
from tests.support.backends import ENGINE_READY

WEATHER = {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}}}
TOOLS = tools_text([WEATHER])
TAGGED = '<tool_call>[\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n]</tool_call>'
PARIS = [("get_weather", {"city": "Paris"})]
DONE = Completion("stop")


def _reader() -> ToolReader:
    reader = ToolReader.of(TOOLS, None)
    assert reader is not None
    return reader


def _stream(reader: ToolReader, text: str, size: int = 3) -> tuple[str, str, list[object]]:
    sent = "".join(reader.feed(text[i:i + size]) for i in range(0, len(text), size))
    held, calls = reader.finish()
    return sent, held, list(calls)


@pytest.mark.parametrize("text", [TAGGED, TAGGED[:-len("</tool_call>")],
                                  f"<tool_call>{TAGGED[12:-13]}</tool_call>"])
def test_a_tagged_call_is_read_whole_and_streamed(text: str) -> None:
    assert _reader().split(text) == ("", PARIS)
    assert _stream(_reader(), text) == ("", "", PARIS)


def test_prose_before_a_tag_streams_and_the_call_after_it_is_held() -> None:
    text = "Let me check.\n" + TAGGED
    assert _reader().split(text) == ("Let me check.", PARIS)
    for size in (1, 2, 5, 64):  # the tag split anywhere between tokens
        sent, held, calls = _stream(_reader(), text, size)
        assert sent == "Let me check.\n" and held == "" and calls == PARIS, size


def test_no_call_is_prose_and_an_empty_call_list_is_nothing() -> None:
    assert _stream(_reader(), "It is sunny in <b>Paris</b>.") == (
        "It is sunny in <b>Paris</b>.", "", [])
    assert _stream(_reader(), "See <tool_call>not json") == ("See ", "<tool_call>not json", [])
    assert _reader().split("<tool_call>[]</tool_call>") == ("", [])
    assert _stream(_reader(), "<tool_call>[]</tool_call>") == ("", "", [])
    assert _reader().split('<tool_call>[{"name": "rm", "arguments": {}}]') == (
        '<tool_call>[{"name": "rm", "arguments": {}}]', [])


def test_both_apis_answer_prose_and_the_call_after_it() -> None:
    text = "Checking.\n" + TAGGED
    openai = ChatCompletionEncoder("m")
    openai.use_tools(TOOLS, None, True)
    message = json.loads(openai.whole(text, DONE))["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    assert message["message"]["content"] == "Checking."
    assert message["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    ollama = ChatEncoder("m")
    ollama.use_tools(TOOLS)
    reply = json.loads(ollama.whole(text, DONE))["message"]
    assert reply["content"] == "Checking."
    assert reply["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    streamed = ChatEncoder("m")
    streamed.use_tools(TOOLS)
    out = b"".join(streamed.delta(TokenDelta(text[i:i + 4])) for i in range(0, len(text), 4))
    lines = [json.loads(x) for x in (out + streamed.finish(DONE)).splitlines()]
    assert "".join(x["message"]["content"] for x in lines) == "Checking.\n"
    assert [c["function"]["name"] for x in lines for c in x["message"].get("tool_calls", [])
            ] == ["get_weather"]


@pytest.mark.skipif(not ENGINE_READY, reason="needs llama-cpp-python")
def test_grammars_are_kept_bounded_and_reused() -> None:
    output_format._GRAMMARS.clear()
    first = schema_text({"type": "object", "properties": {"a": {"type": "string"}}})
    grammar = output_format.grammar_text(first)
    assert output_format.grammar_text(first) is grammar  # converted once
    for i in range(output_format.GRAMMAR_CACHE_SIZE):
        output_format.grammar_text(schema_text({"type": "object", "properties": {
            f"k{i}": {"type": "integer"}}}))  # fmt: skip
    assert len(output_format._GRAMMARS) == output_format.GRAMMAR_CACHE_SIZE
    assert first not in output_format._GRAMMARS  # the least recently used went first
    assert output_format.grammar_text(first) == grammar
