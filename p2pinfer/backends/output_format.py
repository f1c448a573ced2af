"""Structured output (`SamplingParams.output_format`) in each API's words, and as a grammar.

The output format is `"json"` (any JSON object) or a JSON schema's text, bounded by
`p2pinfer.protocol.output_format`. Clients ask for it as Ollama's `format` (`"json"` or
a schema object) or OpenAI's `response_format` (`{"type": "json_object"}` or
`{"type": "json_schema", "json_schema": {"schema": {...}}}`); engines behind HTTP APIs
get it back in those words, and the embedded engine as a llama.cpp grammar.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

from p2pinfer.backends.wire import ApiError
from p2pinfer.errors import BadRequestError, ValidationError
from p2pinfer.protocol.output_format import (
    JSON_ANY,
    MAX_FORMAT_CHARS,
    check_output_format,
    schema_text,
)


def _checked(text: str) -> str:
    try:
        check_output_format(text)
    except ValidationError as exc:
        raise ApiError(400, str(exc)) from None
    return text


def from_ollama(value: object) -> str | None:
    """Ollama's `format`: absent or "" is none, "json", or a JSON schema object."""
    if value is None or value == "":
        return None
    if value == JSON_ANY:
        return JSON_ANY
    if isinstance(value, dict):
        return _checked(schema_text(value))
    raise ApiError(400, 'invalid format: expected "json" or a JSON schema')


def from_openai(value: object) -> str | None:
    """OpenAI's `response_format`: text (none), json_object (with llama.cpp's optional
    `schema`) or json_schema."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if not isinstance(value, dict) or kind == "text":
        if kind == "text":
            return None
        raise ApiError(400, "invalid type for 'response_format': expected an object")
    if kind == "json_object":
        schema = value.get("schema")
        return _checked(schema_text(schema)) if isinstance(schema, dict) else JSON_ANY
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ApiError(400, "response_format.json_schema.schema: expected an object")
        return _checked(schema_text(schema))
    raise ApiError(400, f"invalid response_format type: {str(kind)[:40]!r}")


def to_ollama(output_format: str) -> str | dict[str, Any]:
    """The `format` an Ollama server takes."""
    return JSON_ANY if output_format == JSON_ANY else dict(json.loads(output_format))


def to_openai(output_format: str) -> dict[str, Any]:
    """The `response_format` an OpenAI-compatible server takes."""
    if output_format == JSON_ANY:
        return {"type": "json_object"}
    return {"type": "json_schema",
            "json_schema": {"name": "output", "schema": json.loads(output_format)}}


GRAMMAR_CACHE_SIZE = 64
"""Grammars kept converted (each from a format of at most MAX_FORMAT_CHARS, checked
before any conversion): a client that sends the same schema again, as clients do,
pays the conversion once, on the consumer's check and on the provider's engine."""
GRAMMAR_CACHE_MAX_CHARS = 256 * 1024  # a grammar longer than this is not kept


def grammar_text(output_format: str) -> str:
    """llama.cpp's GBNF grammar for an output format; BadRequestError for a schema the
    converter does not take. Needs llama-cpp-python (the converter is its Python code)."""
    with _LOCK:  # engine threads and the event loop (check_grammar) share the cache
        kept = _GRAMMARS.get(output_format)
        if kept is not None:
            _GRAMMARS.move_to_end(output_format)
            return kept
    grammar = _convert(output_format)
    if len(output_format) <= MAX_FORMAT_CHARS and len(grammar) <= GRAMMAR_CACHE_MAX_CHARS:
        with _LOCK:
            _GRAMMARS[output_format] = grammar
            while len(_GRAMMARS) > GRAMMAR_CACHE_SIZE:
                _GRAMMARS.popitem(last=False)
    return grammar


_GRAMMARS: OrderedDict[str, str] = OrderedDict()  # least recently used first
_LOCK = threading.Lock()


def _convert(output_format: str) -> str:
    from llama_cpp import llama_grammar

    if output_format == JSON_ANY:
        return str(llama_grammar.JSON_GBNF)  # its root is an object, as Ollama's "json"
    try:
        return str(llama_grammar.json_schema_to_gbnf(output_format))
    except RecursionError:
        raise BadRequestError("output_format: the schema nests too deeply") from None
    except Exception as exc:  # the converter asserts and raises what it meets
        raise BadRequestError(f"output_format: unsupported JSON schema: {exc}"[:300]) from None


def check_grammar(output_format: str | None) -> None:
    """BadRequestError when llama.cpp cannot turn `output_format` into a grammar (checked
    only where llama-cpp-python is installed; a provider checks again)."""
    import importlib.util

    if output_format is None or output_format == JSON_ANY:
        return
    if importlib.util.find_spec("llama_cpp") is None:
        return
    grammar_text(output_format)
