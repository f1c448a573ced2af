"""Tool calling with engines behind HTTP APIs (Ollama's, OpenAI-compatible servers).

A provider fronting such an engine forwards the request's tools (and OpenAI's tool
choice), and earlier calls and tool results in each API's message shape; the engine
answers calls as `message.tool_calls` (Ollama: whole, arguments an object) or as
streamed `delta.tool_calls` (OpenAI: by index, arguments a JSON string in pieces). Both
become the answer's text, the calls' JSON (`protocol.tools.calls_text`), which is what
the network carries. An engine's calls are checked as a peer's would be: a malformed
one is an engine error, not an answer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from p2pinfer import json_depth
from p2pinfer.backends.base import ChatMessage
from p2pinfer.errors import EngineResponseError
from p2pinfer.protocol.tools import FORCED, MAX_CALLS, MAX_CALLS_CHARS, NAME, calls_text


def api_tools(tools: str) -> list[dict[str, Any]]:
    """The tools as both APIs take them: `{"type": "function", "function": {...}}`."""
    return [{"type": "function", "function": tool} for tool in json.loads(tools)]


def openai_tool_choice(choice: str) -> str | dict[str, Any]:
    """OpenAI's `tool_choice` for the wire's."""
    if choice.startswith(FORCED):
        return {"type": "function", "function": {"name": choice[len(FORCED):]}}
    return choice


def _calls(message: ChatMessage) -> list[dict[str, Any]]:
    return list(json_depth.loads(message.tool_calls)) if message.tool_calls else []


def ollama_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Ollama's `messages`, with assistants' `tool_calls` and tools' `tool_name`."""
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [{"function": c} for c in _calls(m)]
        if m.tool_name:
            item["tool_name"] = m.tool_name
        out.append(item)
    return out


def openai_messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """OpenAI's `messages`: each call gets an id, and a tool message the id of the
    latest call to its function not yet answered."""
    out: list[dict[str, Any]] = []
    open_calls: list[tuple[str, str]] = []  # (id, function name)
    for turn, m in enumerate(messages):
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.tool_calls:
            calls = []
            for i, call in enumerate(_calls(m)):
                call_id = f"call_{turn}_{i}"
                open_calls.append((call_id, call["name"]))
                calls.append({"id": call_id, "type": "function", "function": {
                    "name": call["name"], "arguments": json.dumps(call["arguments"])}})
            item["tool_calls"] = calls
        if m.role == "tool":
            match = next((c for c in reversed(open_calls) if c[1] == m.tool_name),
                         open_calls[-1] if open_calls else None)
            if match is not None:
                open_calls.remove(match)
                item["tool_call_id"] = match[0]
        out.append(item)
    return out


def _checked(calls: list[tuple[str, dict[str, Any]]], engine: str) -> str:
    text = calls_text(calls)
    if not 1 <= len(calls) <= MAX_CALLS or len(text) > MAX_CALLS_CHARS:
        raise EngineResponseError(f"the engine at {engine} sent too many or too long tool calls")
    return text


def _call(name: object, arguments: object, engine: str) -> tuple[str, dict[str, Any]]:
    if isinstance(arguments, str):
        try:
            arguments = json_depth.loads(arguments) if arguments.strip() else {}
        except ValueError:
            arguments = None
    if not isinstance(name, str) or not NAME.fullmatch(name) or not isinstance(arguments, dict):
        raise EngineResponseError(f"the engine at {engine} sent a malformed tool call")
    return name, arguments


def ollama_calls_text(raw: object, engine: str) -> str:
    """The answer text of an Ollama message's `tool_calls` ("" when it has none)."""
    if not raw:
        return ""
    if not isinstance(raw, list):
        raise EngineResponseError(f"the engine at {engine} sent malformed tool calls")
    calls = []
    for item in raw:
        function = item.get("function") if isinstance(item, dict) else None
        if not isinstance(function, dict):
            raise EngineResponseError(f"the engine at {engine} sent a malformed tool call")
        calls.append(_call(function.get("name"), function.get("arguments"), engine))
    return _checked(calls, engine)


class StreamedCalls:
    """OpenAI's streamed `delta.tool_calls`, put together by index."""

    def __init__(self, engine: str) -> None:
        self._engine = engine
        self._parts: dict[int, list[str]] = {}  # index: [name, arguments so far]
        self._size = 0

    def feed(self, raw: object) -> None:
        """One delta's `tool_calls` (None or absent: nothing)."""
        if raw is None:
            return
        if not isinstance(raw, list):
            raise EngineResponseError(f"the engine at {self._engine} sent malformed tool calls")
        for item in raw:
            function = item.get("function") if isinstance(item, dict) else None
            index = item.get("index", 0) if isinstance(item, dict) else None
            if not isinstance(index, int) or not isinstance(function, dict) or not (
                    0 <= index < MAX_CALLS):
                raise EngineResponseError(f"the engine at {self._engine} sent a malformed "
                                          "tool call")
            parts = self._parts.setdefault(index, ["", ""])
            for slot, key in ((0, "name"), (1, "arguments")):
                piece = function.get(key)
                if isinstance(piece, str):
                    parts[slot] += piece
                    self._size += len(piece)
            if self._size > MAX_CALLS_CHARS:
                raise EngineResponseError(f"the engine at {self._engine} sent too long tool "
                                          "calls")

    def take(self) -> str:
        """The calls' answer text, once ("" when there were none)."""
        parts, self._parts = self._parts, {}
        if not parts:
            return ""
        calls = [_call(name, arguments, self._engine)
                 for _, (name, arguments) in sorted(parts.items())]
        return _checked(calls, self._engine)
