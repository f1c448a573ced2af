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

    Judged: the text is JSON (an object, for "json"); for a schema, what both the schema
    says and llama.cpp's converter (the least strict engine a provider may run) makes
    its grammar hold to. The converter takes, of each subschema, the first of these that
    it has, and judging does the same: a local `$ref` (its target), `anyOf` / `oneOf`
    (one alternative fits), a list of types (one fits), `const`, `enum`, an object's
    `properties` (through `required` keys the schema describes, each property,
    `additionalProperties` false or a schema), an array's `items` (with `minItems` /
    `maxItems`; tuples item by item), a string's `minLength` / `maxLength` (when no
    pattern or format comes first), else the type alone. Not judged (taken as followed):
    `allOf`, patterns, formats, number ranges (the converter ignores them), JSON nested
    over `MAX_ANSWER_DEPTH` (not parsed at all) and answers whose judging would take
    over `MAX_JUDGE_STEPS` steps."""
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
    try:
        return _Judge(schema).mismatch(value, schema, "$")
    except _TooMuch:
        return None


MAX_JUDGE_STEPS = 20_000
"""Schema-value pairs one answer's judging may visit: `anyOf` inside `anyOf` multiplies
them, and an answer that would take more is taken as following its schema."""
MAX_REF_HOPS = 16  # `$ref`s followed in a row without going into the answer

_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,), "object": (dict,), "array": (list,), "null": (type(None),),
    "number": (int, float), "integer": (int,), "boolean": (bool,),
}  # fmt: skip


class _TooMuch(Exception):
    """Judging went over MAX_JUDGE_STEPS."""


def _is_type(value: Any, name: str) -> bool:
    kinds = _JSON_TYPES.get(name)
    if kinds is None:
        return True  # a type name this check does not know: not held against the answer
    if isinstance(value, bool) and name != "boolean":
        return False  # JSON true is no number
    if name == "integer" and isinstance(value, float):
        return value.is_integer()  # JSON Schema: 1.0 is an integer
    return isinstance(value, kinds)


class _Judge:
    """One answer judged against one schema (`answer_problem`)."""

    def __init__(self, root: Any) -> None:
        self.root = root
        self.steps = 0

    def mismatch(self, value: Any, schema: Any, path: str, hops: int = 0) -> str | None:
        self.steps += 1
        if self.steps > MAX_JUDGE_STEPS:
            raise _TooMuch
        if not isinstance(schema, dict):
            return None
        kind = schema.get("type")
        if "$ref" in schema:
            target = self._resolve(schema["$ref"])
            return None if target is None or hops >= MAX_REF_HOPS else \
                self.mismatch(value, target, path, hops + 1)
        if "oneOf" in schema or "anyOf" in schema:
            return self._union(value, schema.get("oneOf") or schema.get("anyOf"), path, hops)
        if isinstance(kind, list):
            names = [name for name in kind if isinstance(name, str)]
            return None if not names or any(_is_type(value, name) for name in names) else \
                f"{path} is not of type {'/'.join(names)}"
        if "const" in schema:
            return None if _same(value, schema["const"]) else f"{path} is not the schema's const"
        if "enum" in schema:
            enum = schema["enum"]
            return None if not isinstance(enum, list) or any(_same(value, v) for v in enum) \
                else f"{path} is none of the schema's enum"
        if kind in (None, "object") and ("properties" in schema or schema.get(
                "additionalProperties", True) is not True):
            return _wrong_type(value, kind, path) or \
                (self._object(value, schema, path) if isinstance(value, dict) else None)
        if kind in (None, "object") and "allOf" in schema:
            return None
        if kind in (None, "array") and ("items" in schema or "prefixItems" in schema):
            return _wrong_type(value, kind, path) or \
                (self._array(value, schema, path) if isinstance(value, list) else None)
        if kind == "string" and not {"pattern", "format"} & schema.keys():
            return _wrong_type(value, kind, path) or _length_mismatch(value, schema, path)
        return _wrong_type(value, kind, path)

    def _resolve(self, ref: Any) -> Any:
        """The subschema a local `$ref` ("#/$defs/Name") points at; None when it is no
        such reference (the bounds on decode allow only "#/..." ones)."""
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None
        node = self.root
        for part in ref[1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
        return node

    def _union(self, value: Any, options: Any, path: str, hops: int) -> str | None:
        if not isinstance(options, list) or not options:
            return None
        problems = [self.mismatch(value, option, path, hops) for option in options]
        if any(problem is None for problem in problems):
            return None
        return f"{path} fits none of the schema's {len(options)} alternatives ({problems[0]})"

    def _object(self, value: dict[str, Any], schema: dict[str, Any], path: str) -> str | None:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        for key in required if isinstance(required, list) else ():
            if isinstance(key, str) and key in properties and key not in value:
                return f"{path} lacks the required {key!r}"
        extra_schema = schema.get("additionalProperties")
        for key, item in value.items():
            sub = properties.get(key, extra_schema)
            if sub is False:
                return f"{path} has {key!r}, which the schema does not allow"
            problem = self.mismatch(item, sub, f"{path}.{key}")
            if problem is not None:
                return problem
        return None

    def _array(self, value: list[Any], schema: dict[str, Any], path: str) -> str | None:
        low, high = schema.get("minItems"), schema.get("maxItems")
        if isinstance(schema.get("items"), list | None):  # a tuple: counts not in the grammar
            low = high = None
        if (isinstance(low, int) and len(value) < low) or \
                (isinstance(high, int) and len(value) > high):
            return f"{path} has {len(value)} items, outside the schema's bounds"
        items = schema.get("items") or schema.get("prefixItems")
        for index, item in enumerate(value):
            sub = items if not isinstance(items, list) else \
                items[index] if index < len(items) else None
            problem = self.mismatch(item, sub, f"{path}[{index}]")
            if problem is not None:
                return problem
        return None


def _wrong_type(value: Any, kind: Any, path: str) -> str | None:
    if isinstance(kind, str) and not _is_type(value, kind):
        return f"{path} is not of type {kind}"
    return None


def _same(value: Any, expected: Any) -> bool:
    """JSON equality: true is not 1, 1.0 is 1."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return type(value) is type(expected) and value == expected
    if isinstance(value, list) and isinstance(expected, list):
        return len(value) == len(expected) and all(map(_same, value, expected))
    if isinstance(value, dict) and isinstance(expected, dict):
        return value.keys() == expected.keys() and all(_same(v, expected[k])
                                                       for k, v in value.items())
    return bool(value == expected)


def _length_mismatch(value: Any, schema: dict[str, Any], path: str) -> str | None:
    # A grammar counts characters as written: an escaped character outside the BMP is two
    # (a surrogate pair), one once decoded. So the decoded length is held against
    # maxLength and the UTF-16 length (astral characters two) against minLength.
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(high, int) and len(value) > high:
        return f"{path} is {len(value)} characters, over the schema's maxLength {high}"
    if isinstance(low, int) and len(value) < low:
        units = len(value.encode("utf-16-le", "surrogatepass")) // 2
        if units < low:
            return f"{path} is {len(value)} characters, under the schema's minLength {low}"
    return None
