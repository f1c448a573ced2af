"""Tool calling on the wire: `JobParams.tools`/`tool_choice` and `ChatTurn.tool_calls`.

A request may offer the model functions to call. They travel as JSON text: a list of
`{"name", "description", "parameters"}` (`parameters` a JSON schema of the arguments,
bounded as an output format's schema is, since an engine may turn it into a grammar).
`tool_choice` says whether the model may call one ("auto", the default), must not
("none"), must call one ("required") or must call one named function ("function:NAME").

An answer that calls tools is, on the wire, ordinary text: the calls as JSON, an object
`{"name", "arguments"}` or a list of them (`calls_text`). So chunks, hashes, receipts
and spot-check re-runs need nothing new; the consumer's gateway reads the calls back out
of the text (`parse_tool_calls`) and answers in its API's shape. An assistant turn that
called tools carries its calls (`ChatTurn.tool_calls`, the same JSON), and a `tool` turn
the called function's name (`ChatTurn.tool_name`).
"""

from __future__ import annotations

import json
import re
from typing import Any

from p2pinfer import json_depth
from p2pinfer.errors import ValidationError
from p2pinfer.protocol.output_format import MAX_SCHEMA_DEPTH, check_schema, parse_bounded

MAX_TOOLS = 32
MAX_TOOLS_CHARS = 32_768  # the tools' JSON text, all together
MAX_CALLS = 16  # tool calls in one answer or one assistant turn
MAX_CALLS_CHARS = 65_536
MAX_DESCRIPTION_CHARS = 2_048
NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # OpenAI's rule for function names (and a dot)
CHOICES = ("auto", "none", "required")
FORCED = "function:"  # tool_choice prefix: this function must be called


def tools_text(tools: list[dict[str, Any]]) -> str:
    """The wire's text for a list of tools: compact JSON, sorted keys."""
    return json.dumps(tools, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def check_tools(text: str) -> list[dict[str, Any]]:
    """The tools in `text`; ValidationError unless it is a bounded list of 1..MAX_TOOLS
    tools with distinct valid names, short descriptions and bounded parameter schemas."""
    if len(text) > MAX_TOOLS_CHARS:
        raise ValidationError(f"tools: {len(text)} characters, over {MAX_TOOLS_CHARS}")
    tools = parse_bounded(text, "tools")
    if not isinstance(tools, list) or not 1 <= len(tools) <= MAX_TOOLS:
        raise ValidationError(f"tools: expected a list of 1 to {MAX_TOOLS} tools")
    names: set[str] = set()
    for tool in tools:
        if not isinstance(tool, dict) or not set(tool) <= {"name", "description", "parameters"}:
            raise ValidationError("tools: a tool is {name, description, parameters}")
        name = tool.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name) or name in names:
            raise ValidationError(f"tools: a missing, invalid or repeated name: {name!r:.80}")
        names.add(name)
        description = tool.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            raise ValidationError(f"tools: {name}'s description is not a string of at most "
                                  f"{MAX_DESCRIPTION_CHARS} characters")
        parameters = tool.get("parameters", {})
        if not isinstance(parameters, dict):
            raise ValidationError(f"tools: {name}'s parameters are not a JSON schema object")
        if "$ref" in json.dumps(parameters):
            # The tools' schemas are joined into one grammar: a $ref would point elsewhere.
            raise ValidationError(f"tools: {name}'s parameters use $ref")
    check_schema(tools)  # counts, patterns and subschemas over all the tools together
    return tools


def check_tool_choice(choice: str, tools: list[dict[str, Any]]) -> None:
    """ValidationError unless `choice` is auto/none/required or forces an offered tool."""
    if choice in CHOICES:
        return
    if not choice.startswith(FORCED) or choice[len(FORCED):] not in {t["name"] for t in tools}:
        raise ValidationError(f"tool_choice: {choice!r:.80} names no offered tool")


def check_tool_calls(text: str) -> list[dict[str, Any]]:
    """The calls in an assistant turn's `tool_calls`: a list of 1..MAX_CALLS
    `{"name", "arguments"}` with valid names and object arguments."""
    calls = parse_bounded(text, "tool_calls")
    if not isinstance(calls, list) or not 1 <= len(calls) <= MAX_CALLS:
        raise ValidationError(f"tool_calls: expected a list of 1 to {MAX_CALLS} calls")
    for call in calls:
        if (not isinstance(call, dict) or set(call) != {"name", "arguments"}
                or not isinstance(call["name"], str) or not NAME.fullmatch(call["name"])
                or not isinstance(call["arguments"], dict)):
            raise ValidationError("tool_calls: a call is {name, arguments (an object)}")
    return calls


def calls_text(calls: list[tuple[str, dict[str, Any]]]) -> str:
    """The text of an answer (or a turn) that calls these tools: one call an object,
    several a list, each `{"name", "arguments"}`."""
    objects = [{"name": name, "arguments": arguments} for name, arguments in calls]
    return json.dumps(objects[0] if len(objects) == 1 else objects, ensure_ascii=False,
                      separators=(",", ":"))


def call_schema(tools: list[dict[str, Any]], choice: str | None) -> dict[str, Any] | None:
    """The JSON schema an answer must follow when `choice` makes the model call a tool
    (required: any offered one; forced: that one); None when the model may answer text."""
    if not must_call(choice):
        return None
    forced = forced_name(choice)
    options = [{"type": "object", "properties": {
        "name": {"const": t["name"]}, "arguments": t.get("parameters") or {"type": "object"}},
        "required": ["name", "arguments"]} for t in tools if forced in (None, t["name"])]
    return options[0] if len(options) == 1 else {"anyOf": options}


_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)
TAG, END_TAG = "<tool_call>", "</tool_call>"  # how SmolLM2 (and Hermes' format) wrap calls
_TAGS = re.compile(r"^<tool_call>\s*(.*?)\s*(?:</tool_call>)?$", re.DOTALL)  # end: maybe cut
#: How an answer that may be a tool call starts (streaming holds such text back).
CALL_OPENINGS = ("{", "[", "```", TAG)


def parse_tool_calls(text: str, names: set[str]) -> list[tuple[str, dict[str, Any]]] | None:
    """The tool calls an answer's text makes, or None when it is not (only) tool calls:
    JSON `{"name", "arguments"}` or a list of such (also in a ```json fence or
    <tool_call> tags, as models write them, the closing tag perhaps cut off by the
    token limit) naming offered tools, arguments an object
    (or JSON text of one). At most MAX_CALLS; longer texts are not parsed."""
    text = text.strip()
    if len(text) > MAX_CALLS_CHARS:
        return None
    for pattern in (_FENCE, _TAGS):
        match = pattern.match(text)
        text = match.group(1) if match else text
    if not text.startswith(("{", "[")):
        return None
    try:
        value = parse_bounded(text, "answer")
    except ValidationError:
        return None
    items = value if isinstance(value, list) else [value]
    calls = [_call(item, names) for item in items]
    if not 1 <= len(calls) <= MAX_CALLS:
        return None
    return None if any(c is None for c in calls) else [c for c in calls if c is not None]


def _call(item: object, names: set[str]) -> tuple[str, dict[str, Any]] | None:
    if not isinstance(item, dict) or item.get("name") not in names:
        return None
    arguments = item.get("arguments", item.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json_depth.loads(arguments)
        except ValueError:  # TooDeepError too
            return None
    return (str(item["name"]), arguments) if isinstance(arguments, dict) else None


def must_call(choice: str | None) -> bool:
    """Whether `choice` makes the model call a tool ("required", or a named function)."""
    return choice is not None and (choice == "required" or choice.startswith(FORCED))


def forced_name(choice: str | None) -> str | None:
    """The function `choice` makes the model call ("function:NAME"), else None."""
    return choice[len(FORCED):] if choice is not None and choice.startswith(FORCED) else None


def calls_problem(text: str, tools: str, choice: str | None) -> str | None:
    """What is wrong with `text`, a whole answer that ended by itself, when the request's
    `choice` made the model call a tool; None when nothing is, or when the choice left
    it free to answer text. An engine follows such a choice with a grammar (llama.cpp,
    Ollama: `call_schema`) or its server's own forcing, so the answer is only calls,
    each of an offered tool, and of the named one when one is named (attack 44). The
    arguments are not judged: a server that forces the call need not force them. An
    answer nested deeper, or longer, than the calls' bounds is taken as following."""
    if not must_call(choice) or len(text) > MAX_CALLS_CHARS:
        return None
    try:
        offered = {str(t["name"]) for t in json.loads(tools)}
        if json_depth.nesting(text) > MAX_SCHEMA_DEPTH:
            return None
    except (ValueError, TypeError, KeyError):  # checked on decode; cannot judge otherwise
        return None
    calls = parse_tool_calls(text, offered)
    if calls is None:
        return "not (only) calls of the offered tools"
    forced = forced_name(choice)
    wrong = next((name for name, _ in calls if forced not in (None, name)), None)
    return None if wrong is None else f"a call of {wrong!r}, not of {forced!r}"
