"""Tool calling in each API's words (protocol/tools.py has the wire's rules).

Clients offer tools as OpenAI's `tools` (+ `tool_choice`, `parallel_tool_calls`) or
Ollama's `tools`; earlier calls come back as assistant messages' `tool_calls` and their
results as `tool` messages (OpenAI's `tool_call_id`, Ollama's `tool_name`). An answer is
text; `ToolReader` reads the calls out of it, holding back streamed text only while it
may still be a call, and the encoders answer with OpenAI's `tool_calls` (`id`, `type`,
`function.arguments` a JSON string) or Ollama's (`function.arguments` an object).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from p2pinfer import json_depth
from p2pinfer.backends.base import ChatMessage, Role
from p2pinfer.backends.wire import ApiError
from p2pinfer.errors import ValidationError
from p2pinfer.protocol.output_format import schema_text
from p2pinfer.protocol.tools import (
    CALL_OPENINGS,
    END_TAG,
    FORCED,
    MAX_CALLS,
    TAG,
    call_schema,
    check_tool_calls,
    check_tool_choice,
    check_tools,
    parse_tool_calls,
    tools_text,
)

Call = tuple[str, dict[str, Any]]
_EMPTY_CALLS = re.compile(r"<tool_call>\s*\[\s*\]\s*(?:</tool_call>)?")


def _bad(message: str, param: str = "tools") -> ApiError:
    return ApiError(400, message[:300], param)


def _tool(item: object) -> dict[str, Any]:
    kind, function = (item.get("type", "function"), item.get("function")) if isinstance(
        item, dict) else (None, None)
    if not isinstance(function, dict) or kind != "function":
        raise _bad('tools: each tool is {"type": "function", "function": {...}}')
    tool = {k: function[k] for k in ("name", "description", "parameters") if k in function}
    if tool.get("description") in (None, ""):
        tool.pop("description", None)
    return tool


def _checked_tools(raw: object) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(raw, list):
        raise _bad("invalid type for 'tools': expected an array")
    text = tools_text([_tool(item) for item in raw])
    try:
        return text, check_tools(text)
    except ValidationError as exc:
        raise _bad(str(exc)) from None


def from_openai(body: dict[str, Any]) -> tuple[str | None, str | None, bool]:
    """OpenAI's `tools`, `tool_choice` and `parallel_tool_calls` as the wire's tools text,
    tool choice and whether several calls may be answered."""
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise _bad("invalid type for 'parallel_tool_calls': expected a boolean",
                   "parallel_tool_calls")
    choice = _openai_choice(body.get("tool_choice"))
    if not body.get("tools"):
        if choice not in (None, "auto", "none"):
            raise _bad("tool_choice needs tools", "tool_choice")
        return None, None, parallel is not False
    text, tools = _checked_tools(body["tools"])
    try:
        check_tool_choice(choice or "auto", tools)
    except ValidationError as exc:
        raise _bad(str(exc), "tool_choice") from None
    return text, None if choice == "auto" else choice, parallel is not False


def _openai_choice(value: object) -> str | None:
    if value is None or value in ("auto", "none", "required"):
        return None if value is None else str(value)
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(name, str):
        raise _bad('tool_choice: "auto", "none", "required" or {"type": "function", '
                   '"function": {"name": ...}}', "tool_choice")
    return FORCED + name


def from_ollama(body: dict[str, Any]) -> str | None:
    """Ollama's `tools` as the wire's tools text (Ollama has no tool choice: auto)."""
    return _checked_tools(body["tools"])[0] if body.get("tools") else None


def openai_message(item: dict[str, Any], role: Role, content: str,
                   names_by_id: dict[str, str]) -> ChatMessage:
    """An OpenAI message with its tool calls (an assistant's) or tool_call_id (a tool's,
    named by the call it answers); `names_by_id` learns the calls' ids as it goes."""
    raw = item.get("tool_calls")
    if raw:
        if role != "assistant" or not isinstance(raw, list):
            raise _bad("messages: only an assistant message has tool_calls", "messages")
        calls = []
        for call in raw:
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict):
                raise _bad("messages[].tool_calls: each is {id, type, function}", "messages")
            arguments = function.get("arguments", "{}")
            try:
                arguments = (json_depth.loads(arguments) if isinstance(arguments, str)
                             else arguments)
            except ValueError:
                raise _bad("messages[].tool_calls: arguments are not JSON", "messages") from None
            calls.append({"name": function.get("name"), "arguments": arguments})
            if isinstance(call.get("id"), str):
                names_by_id[call["id"]] = str(function.get("name"))
        return ChatMessage(role, content, _turn_calls(calls))
    if role == "tool":
        call_id = item.get("tool_call_id")
        return ChatMessage(role, content, tool_name=names_by_id.get(str(call_id)))
    return ChatMessage(role, content)


def ollama_message(item: dict[str, Any], role: Role, content: str) -> ChatMessage:
    """An Ollama message with its tool calls (an assistant's) or tool_name (a tool's)."""
    raw = item.get("tool_calls")
    if raw:
        if role != "assistant" or not isinstance(raw, list):
            raise ApiError(400, "only an assistant message has tool_calls")
        functions = [c.get("function") if isinstance(c, dict) else None for c in raw]
        calls = [{"name": f.get("name"), "arguments": f.get("arguments", {})}
                 if isinstance(f, dict) else {} for f in functions]  # {}: refused below
        return ChatMessage(role, content, _turn_calls(calls))
    name = item.get("tool_name")
    if name is not None and not isinstance(name, str):
        raise ApiError(400, "json: cannot unmarshal into Go struct field Message.tool_name "
                       "of type string")
    return ChatMessage(role, content, tool_name=name or None)


def _turn_calls(calls: list[dict[str, Any]]) -> str:
    text = json.dumps(calls, ensure_ascii=False, separators=(",", ":"))
    try:
        check_tool_calls(text)
    except ValidationError as exc:
        raise _bad(str(exc), "messages") from None
    return text


def openai_calls(calls: Sequence[Call], stream: bool = False) -> list[dict[str, Any]]:
    """OpenAI's `tool_calls` (streamed, each with its `index`)."""
    return [{**({"index": i} if stream else {}), "id": f"call_{secrets.token_hex(12)}",
             "type": "function", "function": {"name": name, "arguments": json.dumps(
                 arguments, ensure_ascii=False)}} for i, (name, arguments) in enumerate(calls)]


def ollama_calls(calls: Sequence[Call]) -> list[dict[str, Any]]:
    """Ollama's `tool_calls`."""
    return [{"function": {"index": i, "name": name, "arguments": arguments}}
            for i, (name, arguments) in enumerate(calls)]


def grammar_format(tools: str | None, choice: str | None) -> str | None:
    """The output format (a JSON schema's text) an answer must follow when the tool
    choice makes the model call a tool; None when it may answer text."""
    if tools is None:
        return None
    schema = call_schema(json.loads(tools), choice)
    return None if schema is None else schema_text(schema)


#: How the tools are offered to a model whose chat template renders none: in the shape
#: SmolLM2-Instruct's function-calling data used (and Ollama's template for it): the
#: tools in `<tools>` tags, calls answered as a list in `<tool_call>` tags.
_OFFER = (
    "You are an expert in composing function calls. You are given a question and a set "
    "of functions. Based on the question, make one or more function calls that achieve "
    "its purpose. If none of the functions fits, say so and do not answer. If the "
    "question lacks an argument a function requires, say so too.\n"
    "You have access to the following tools:\n<tools>{tools}</tools>\n"
    "Answer strictly in the following format, with no other text, each argument of the "
    "right type. If no function call is needed, make the list of calls empty: '[]'.\n"
    "<tool_call>[\n"
    '{{"name": "func_name1", "arguments": {{"argument1": "value1", "argument2": "value2"}}}},'
    "\n... (more calls as needed)\n]</tool_call>")


def tools_prompt(tools: str, choice: str | None) -> str:
    """A system message offering the tools to a model whose chat template does not."""
    forced = f"\nYou must call {choice[len(FORCED):]}." if choice and choice.startswith(
        FORCED) else "\nYou must call one of them." if choice == "required" else ""
    offered = json.dumps([{"type": "function", "function": t} for t in json.loads(tools)],
                         ensure_ascii=False)
    return _OFFER.format(tools=offered) + forced


def _call_turn(content: str, tool_calls: str) -> str:
    calls = [{"name": c["name"], "arguments": c["arguments"]} for c in json.loads(tool_calls)]
    listed = ",\n".join(json.dumps(c, ensure_ascii=False) for c in calls)
    return (content + "\n" if content else "") + f"{TAG}[\n{listed}\n]{END_TAG}"


def prompt_messages(messages: Sequence[ChatMessage], tools: str | None,
                    choice: str | None) -> list[dict[str, str]]:
    """Messages for a chat template that knows no tools, as SmolLM2 was trained on them:
    the tools in the system message (unless the choice is "none"), calls as `<tool_call>`
    text, tool results as the user's `<tool_response>`."""
    payload = []
    for m in messages:
        if m.tool_calls is not None:
            payload.append({"role": m.role, "content": _call_turn(m.content, m.tool_calls)})
        elif m.role == "tool":
            payload.append({"role": "user",
                            "content": f"<tool_response>\n{m.content}\n</tool_response>"})
        else:
            payload.append({"role": m.role, "content": m.content})
    if tools is not None and choice != "none":
        offer = tools_prompt(tools, choice)
        if payload and payload[0]["role"] == "system":
            payload[0] = {"role": "system", "content": offer + "\n\n" + payload[0]["content"]}
        else:
            payload.insert(0, {"role": "system", "content": offer})
    return payload


def _tag_start(text: str) -> int:
    """Where `text` may start a `<tool_call>` tag: the tag's index, the index of a tail
    that begins one, or len(text)."""
    found = text.find(TAG)
    if found >= 0:
        return found
    for cut in range(max(0, len(text) - len(TAG) + 1), len(text)):
        if TAG.startswith(text[cut:]):
            return cut
    return len(text)


@dataclass
class ToolReader:
    """Reads one answer's tool calls: streamed text passes through unless it may still
    be a call (it starts like one, or from a `<tool_call>` tag on), which is held until
    the answer ends."""

    names: set[str]
    parallel: bool = True
    held: list[str] = field(default_factory=list)
    passing: bool = False  # the answer did not start like a call: only a tag may follow

    @classmethod
    def of(cls, tools: str | None, choice: str | None, parallel: bool = True
           ) -> ToolReader | None:
        """A reader for a request's tools; None when no answer can call one."""
        if tools is None or choice == "none":
            return None
        return cls({t["name"] for t in json.loads(tools)}, parallel)

    def feed(self, text: str) -> str:
        """What of the answer may be sent now."""
        self.held.append(text)
        so_far = "".join(self.held)
        if not self.passing:
            start = so_far.lstrip()
            if not start or any(o.startswith(start) or start.startswith(o)
                                for o in CALL_OPENINGS):
                return ""
            self.passing = True
        if so_far.startswith(TAG):
            return ""  # a call under way: held to the end
        cut = _tag_start(so_far)
        self.held[:] = [so_far[cut:]] if cut < len(so_far) else []
        return so_far[:cut]

    def finish(self) -> tuple[str, list[Call]]:
        """The held text not yet sent, and the calls it makes (none unless all of it,
        or all of it from a `<tool_call>` tag on, is calls)."""
        text = "".join(self.held)
        self.held.clear()
        prose, calls = self.split(text)
        return ("", calls) if calls else (prose, [])

    def split(self, text: str) -> tuple[str, list[Call]]:
        """An answer's prose and the calls it makes (the first only, unless parallel):
        calls are the whole answer, or the answer from a `<tool_call>` tag on (the
        prose before it stays prose). An empty list of calls (`<tool_call>[]`, SmolLM2's
        "no call needed") is neither prose nor a call."""
        at = max(text.find(TAG), 0)
        prose, rest = text[:at].rstrip(), text[at:]
        if _EMPTY_CALLS.fullmatch(rest.strip()):
            return prose, []
        calls = parse_tool_calls(rest, self.names)
        if not calls:
            return text, []
        return prose, calls[:1 if not self.parallel else MAX_CALLS]
