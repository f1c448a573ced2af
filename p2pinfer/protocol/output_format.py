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

from p2pinfer import json_depth
from p2pinfer.errors import ValidationError

JSON_ANY = "json"
"""The output format meaning "a JSON object, any shape"."""
MAX_FORMAT_CHARS = 16_384
MAX_SCHEMA_DEPTH = 24
MAX_SCHEMA_NODES = 1_024  # maps and lists in the schema, all together
MAX_REPEAT = 256  # minItems/maxItems/minLength/maxLength/...; a pattern's {n,m}
MAX_PATTERN_CHARS = 256
MAX_ANSWER_DEPTH = 128  # a structured answer nested deeper is not judged (`answer_problem`)

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
    # Nesting first (json_depth): json.loads recurses, and a hostile text could nest
    # thousands deep.
    try:
        return json_depth.loads(text, limit=MAX_SCHEMA_DEPTH, parse_constant=_refuse_constant)
    except json_depth.TooDeepError:
        raise ValidationError(f"{what}: nested deeper than {MAX_SCHEMA_DEPTH}") from None
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


def answer_problem(text: str, output_format: str) -> str | None:
    """What is wrong with `text`, a whole answer that ended by itself, as an answer in
    `output_format`; None when nothing is. An engine that follows the format with a
    grammar (llama.cpp, Ollama, constrained servers) cannot end an answer any other way
    than as JSON of that shape, so this is a check a consumer may make before paying.

    Judged: the text is JSON (an object, for "json"); for a schema, recursively through
    `properties` and `items`: `type`, `const`, `enum`, `required` (keys the schema also
    describes), `additionalProperties: false`, `minItems` / `maxItems`. Not judged (taken
    as followed): `$ref`, `anyOf` / `oneOf` / `allOf` / `not`, string lengths and
    patterns, number ranges, formats, and JSON nested over `MAX_ANSWER_DEPTH` (not
    parsed at all)."""
    try:
        value = json_depth.loads(text, limit=MAX_ANSWER_DEPTH, parse_constant=_refuse_constant)
    except json_depth.TooDeepError:
        return None
    except (ValueError, RecursionError):
        return "not JSON"
    if output_format == JSON_ANY:
        return None if isinstance(value, dict) else "not a JSON object"
    try:
        schema = json.loads(output_format)
    except (ValueError, RecursionError):  # checked on decode; cannot judge otherwise
        return None
    return _mismatch(value, schema, "$")


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "object": (dict,), "array": (list,), "null": (type(None),),
    "number": (int, float), "integer": (int,), "boolean": (bool,),
}  # fmt: skip
_NOT_JUDGED = ("$ref", "anyOf", "oneOf", "allOf", "not", "if")


def _is_type(value: Any, name: str) -> bool:
    kinds = _JSON_TYPES.get(name)
    if kinds is None:
        return True  # a type name this check does not know: not held against the answer
    if isinstance(value, bool) and name != "boolean":
        return False  # JSON true is no number
    return isinstance(value, kinds)


def _mismatch(value: Any, schema: Any, path: str) -> str | None:
    if not isinstance(schema, dict) or any(key in schema for key in _NOT_JUDGED):
        return None
    if "const" in schema and value != schema["const"]:
        return f"{path} is not the schema's const"
    enum = schema.get("enum")
    if isinstance(enum, list) and value not in enum:
        return f"{path} is none of the schema's enum"
    kind = schema.get("type")
    names = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else []
    if names and not any(_is_type(value, n) for n in names if isinstance(n, str)):
        return f"{path} is not of type {'/'.join(str(n) for n in names)}"
    if isinstance(value, dict):
        return _object_mismatch(value, schema, path)
    if isinstance(value, list):
        low, high = schema.get("minItems"), schema.get("maxItems")
        if (isinstance(low, int) and len(value) < low) or \
                (isinstance(high, int) and len(value) > high):
            return f"{path} has {len(value)} items, outside the schema's bounds"
        items = schema.get("items")
        for index, item in enumerate(value):
            problem = _mismatch(item, items, f"{path}[{index}]")
            if problem is not None:
                return problem
    return None


def _object_mismatch(value: dict[str, Any], schema: dict[str, Any], path: str) -> str | None:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    for key in required if isinstance(required, list) else ():
        if key in properties and key not in value:
            return f"{path} lacks the required {key!r}"
    if schema.get("additionalProperties") is False:
        extra = sorted(value.keys() - properties.keys())
        if extra:
            return f"{path} has {extra[0]!r}, which the schema does not allow"
    for key, sub in properties.items():
        if key in value:
            problem = _mismatch(value[key], sub, f"{path}.{key}")
            if problem is not None:
                return problem
    return None
