"""Structured output on the wire: `JobParams.output_format`, checked against hostile input.

A request may constrain the answer to JSON: the text `"json"` (any JSON object, Ollama's
`format: "json"`, OpenAI's `json_object`) or a JSON schema as JSON text (Ollama's schema
`format`, OpenAI's `json_schema`). An engine turns a schema into a grammar, whose size
grows with the schema's repetition counts and nesting, so a schema is bounded here before
any engine sees it: characters, nesting depth, number of subschemas, repetition counts,
pattern length, and `$ref`s only inside the schema (never fetched).
"""

from __future__ import annotations

import json
import re
from typing import Any

from p2pinfer.errors import ValidationError

JSON_ANY = "json"
"""The output format meaning "a JSON object, any shape"."""
MAX_FORMAT_CHARS = 16_384
MAX_SCHEMA_DEPTH = 24
MAX_SCHEMA_NODES = 1_024  # maps and lists in the schema, all together
MAX_REPEAT = 256  # minItems/maxItems/minLength/maxLength/...; a pattern's {n,m}
MAX_PATTERN_CHARS = 256

_COUNTS = frozenset({"minItems", "maxItems", "minLength", "maxLength", "minProperties",
                     "maxProperties", "minContains", "maxContains"})
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


def check_output_format(text: str) -> None:
    """ValidationError unless `text` is `"json"` or a bounded JSON schema object."""
    if text == JSON_ANY:
        return
    if len(text) > MAX_FORMAT_CHARS:
        raise ValidationError(f"output_format: {len(text)} characters, over {MAX_FORMAT_CHARS}")
    schema = parse_bounded(text)
    if not isinstance(schema, dict):
        raise ValidationError('output_format: neither "json" nor a JSON schema object')
    check_schema(schema)


def schema_text(schema: dict[str, Any]) -> str:
    """The output format for a schema object: compact JSON text with sorted keys."""
    return json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse_bounded(text: str, what: str = "output_format") -> Any:
    """JSON text parsed, ValidationError if it nests deeper than MAX_SCHEMA_DEPTH."""
    # Nesting first: json.loads recurses, and a hostile text could nest thousands deep.
    depth = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_SCHEMA_DEPTH:
                raise ValidationError(f"{what}: nested deeper than {MAX_SCHEMA_DEPTH}")
        elif char in "]}":
            depth -= 1
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:  # JSONDecodeError, or a NaN/Infinity refused below
        raise ValidationError(f"{what}: not JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_schema(schema: dict[str, Any] | list[Any]) -> None:
    """ValidationError when a parsed schema is over the bounds a grammar may grow from."""
    nodes = 0
    stack: list[Any] = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            _check_keywords(node)
            stack.extend(node.values())
        else:
            continue
        nodes += 1
        if nodes > MAX_SCHEMA_NODES:
            raise ValidationError(f"output_format: more than {MAX_SCHEMA_NODES} subschemas")


def _check_keywords(node: dict[str, Any]) -> None:
    for key in _COUNTS & node.keys():
        value = node[key]
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_REPEAT:
            raise ValidationError(f"output_format: {key} {value} is over {MAX_REPEAT}")
    ref = node.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        raise ValidationError("output_format: a $ref must point inside the schema (#/...)")
    pattern = node.get("pattern")
    if isinstance(pattern, str):
        if len(pattern) > MAX_PATTERN_CHARS:
            raise ValidationError(f"output_format: a pattern over {MAX_PATTERN_CHARS} characters")
        for low, high in _QUANTIFIER.findall(pattern):
            if max(int(low or 0), int(high or 0)) > MAX_REPEAT:
                raise ValidationError(f"output_format: a pattern repeats over {MAX_REPEAT} times")
