"""Structured output (issue 17): Ollama's `format` and OpenAI's `response_format` into
`output_format`, carried signed on the wire and bounded against hostile schemas (whose
grammar would grow with their counts and nesting), and back out to each engine's API."""

from __future__ import annotations

import json
import os
from typing import Literal

import jsonschema
import msgpack
import pydantic
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.api.ollama_wire import parse_chat, parse_generate
from p2pinfer.api.openai_wire import parse_chat_completion
from p2pinfer.backends.base import SamplingParams
from p2pinfer.backends.job_params import sampling_params
from p2pinfer.backends.openai_compat import _body
from p2pinfer.backends.output_format import from_ollama, from_openai, to_ollama, to_openai
from p2pinfer.backends.wire import ApiError
from p2pinfer.errors import ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.network_backend import job_params
from p2pinfer.protocol import JobParams, JobRequest, decode, sign
from p2pinfer.protocol.codec import _signing_payload
from p2pinfer.protocol.output_format import (
    JSON_ANY,
    MAX_REPEAT,
    MAX_SCHEMA_DEPTH,
    answer_problem,
    check_output_format,
    schema_text,
)
from p2pinfer.protocol.schema import to_wire

CONSUMER, PROVIDER = NodeIdentity.generate(), NodeIdentity.generate()
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
MESSAGES = [{"role": "user", "content": "hi"}]


def nested(depth: int) -> str:
    return '{"items":' * (depth - 1) + "{}" + "}" * (depth - 1)


HOSTILE = {
    "deep": nested(MAX_SCHEMA_DEPTH + 1),
    "very deep (a recursion bomb)": "[" * 10_000 + "]" * 10_000,
    "huge minItems": json.dumps({"type": "array", "items": {}, "minItems": 10**9}),
    "huge maxLength": json.dumps({"type": "string", "maxLength": MAX_REPEAT + 1}),
    "pattern repetition": json.dumps({"type": "string", "pattern": "^a{100000}$"}),
    "pattern too long": json.dumps({"type": "string", "pattern": "^" + "a" * 300 + "$"}),
    "remote $ref": json.dumps({"$ref": "https://example.com/schema.json"}),
    "many subschemas": json.dumps({"anyOf": [{"type": "string"}] * 2_000}),
    "NaN": '{"type": "number", "minimum": NaN}',
    "not JSON": "{type: object}",
    "not an object": "[1, 2]",
    "a string": '"json"',
}


def test_json_and_a_bounded_schema_pass() -> None:
    check_output_format("json")
    check_output_format(schema_text(SCHEMA))
    check_output_format(nested(MAX_SCHEMA_DEPTH))
    check_output_format(json.dumps({"type": "array", "items": {}, "maxItems": MAX_REPEAT}))
    check_output_format(json.dumps({"$defs": {"a": {"type": "string"}}, "$ref": "#/$defs/a"}))


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_output_format_is_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        check_output_format(text)


def signed_with(output_format: object) -> bytes:
    body = to_wire(JobRequest(job_id=os.urandom(16), provider=PROVIDER.peer_id, model="m",
                              kind="generate", max_price_per_1k=10, issued_at=1, expires_at=2,
                              prompt="hi"))
    body["params"] = dict(sorted({**body["params"], "output_format": output_format}.items()))
    sig = CONSUMER.sign(_signing_payload(JobRequest.TYPE, body, CONSUMER.public_key))
    return msgpack.packb({"body": body, "from": CONSUMER.public_key, "sig": sig,  # type: ignore[no-any-return]
                          "t": JobRequest.TYPE, "v": 1}, use_bin_type=True)


@pytest.mark.parametrize("value", [*HOSTILE.values(), "", "x" * 20_000, 7, {"type": "object"}])
def test_a_peers_hostile_output_format_is_refused_on_decode(value: object) -> None:
    with pytest.raises(ValidationError):
        decode(signed_with(value))


def test_an_output_format_travels_signed_to_the_engine() -> None:
    received = decode(signed_with(schema_text(SCHEMA))).msg
    assert isinstance(received, JobRequest)
    assert json.loads(sampling_params(received).output_format or "") == SCHEMA
    assert received.params.reshaped
    assert "output_format" not in to_wire(JobParams())


def test_ollama_format_json_or_schema() -> None:
    assert parse_chat({"model": "m", "messages": MESSAGES, "format": "json"}
                      ).params.output_format == "json"
    chat = parse_chat({"model": "m", "messages": MESSAGES, "format": SCHEMA})
    assert json.loads(chat.params.output_format or "") == SCHEMA
    generate = parse_generate({"model": "m", "prompt": "hi", "format": SCHEMA})
    assert generate.params.output_format == chat.params.output_format
    assert parse_chat({"model": "m", "messages": MESSAGES, "format": ""}
                      ).params.output_format is None
    for bad in ("yaml", 3, ["json"], {"type": "array", "items": {}, "minItems": 10**6}):
        with pytest.raises(ApiError) as refused:
            parse_chat({"model": "m", "messages": MESSAGES, "format": bad})
        assert refused.value.status == 400


def test_openai_response_format_shapes() -> None:
    def parsed(response_format: object) -> str | None:
        return parse_chat_completion({"model": "m", "messages": MESSAGES,
                                      "response_format": response_format}).params.output_format

    assert parsed(None) is None and parsed({"type": "text"}) is None
    assert parsed({"type": "json_object"}) == "json"
    schema = {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}}
    assert json.loads(parsed(schema) or "") == SCHEMA
    assert json.loads(parsed({"type": "json_object", "schema": SCHEMA}) or "") == SCHEMA
    for bad in ("json", {"type": "xml"}, {"type": "json_schema"},
                {"type": "json_schema", "json_schema": {"schema": "x"}}):
        with pytest.raises(ApiError) as refused:
            parsed(bad)
        assert refused.value.status == 400


def test_engines_behind_http_get_the_format_in_their_own_words() -> None:
    text = schema_text(SCHEMA)
    assert to_ollama("json") == "json" and to_ollama(text) == SCHEMA
    assert to_openai("json") == {"type": "json_object"}
    assert to_openai(text)["json_schema"]["schema"] == SCHEMA
    params = sampling_params_for(text)
    assert _body(params, extensions=False)["response_format"]["type"] == "json_schema"
    assert "response_format" not in _body(sampling_params_for(None), extensions=False)


def sampling_params_for(output_format: str | None) -> SamplingParams:
    return SamplingParams(output_format=output_format)


def test_the_gateway_carries_the_format_on_the_wire() -> None:
    assert job_params(sampling_params_for("json")).output_format == "json"
    assert job_params(sampling_params_for(None)).output_format is None
    sign(JobRequest(job_id=os.urandom(16), provider=PROVIDER.peer_id, model="m",
                    kind="generate", max_price_per_1k=10, issued_at=1, expires_at=2,
                    prompt="hi", params=job_params(sampling_params_for("json"))), CONSUMER)


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["type", "json_schema", "schema", "items", "minItems", "$ref",
                         "pattern", "properties", "x"]), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(value=_json)
def test_any_json_as_a_format_is_taken_or_a_400(value: object) -> None:
    for parse in (from_ollama, from_openai):
        try:
            parsed = parse(value)
        except ApiError as exc:
            assert exc.status == 400
            continue
        if parsed is not None:
            check_output_format(parsed)


# -- judging a whole structured answer (attack 38) -------------------------------------

CITY = {"type": "object", "properties": {"city": {"type": "string"},
                                         "pop": {"type": "integer"},
                                         "tags": {"type": "array", "items": {"enum": ["a", "b"]},
                                                  "maxItems": 2}},
        "required": ["city"], "additionalProperties": False}


@pytest.mark.parametrize(("text", "problem"), [
    ('{"city": "Paris"}', None),
    (' {"city": "Paris", "pop": 2100000, "tags": ["a", "b"]}\n', None),
    ("Sure! Paris.", "not JSON"),
    ('{"city": "Paris"', "not JSON"),
    ('{"town": "Paris"}', "lacks the required 'city'"),
    ('{"city": "Paris", "mayor": "x"}', "'mayor', which the schema does not allow"),
    ('{"city": 7}', "$.city is not of type string"),
    ('{"city": "P", "pop": 2.5}', "$.pop is not of type integer"),
    ('{"city": "P", "pop": true}', "$.pop is not of type integer"),
    ('{"city": "P", "tags": ["c"]}', "$.tags[0] is none of the schema's enum"),
    ('{"city": "P", "tags": ["a", "a", "b"]}', "$.tags has 3 items"),
    ('["Paris"]', "$ is not of type object"),
    ('{"city": "P", "pop": NaN}', "not JSON"),
])
def test_a_structured_answer_is_judged_against_its_schema(text: str, problem: str | None) -> None:
    found = answer_problem(text, schema_text(CITY))
    assert found == problem if problem is None else (found is not None and problem in found)


def test_json_mode_wants_an_object_and_what_is_not_judged_passes() -> None:
    assert answer_problem('{"any": [1, {"x": null}]}', JSON_ANY) is None
    assert answer_problem("[1, 2]", JSON_ANY) == "not a JSON object"
    # llama.cpp's converter takes a pattern before the lengths, and ignores number ranges
    # and allOf's own keywords: an honest llama.cpp answer may break those, so they pass.
    lengths = {"type": "string", "minLength": 5, "pattern": "^x"}
    assert answer_problem('"ab"', schema_text(lengths)) is None
    assert answer_problem("7", schema_text({"type": "integer", "maximum": 3})) is None
    assert answer_problem('"x"', schema_text({"allOf": [{"type": "integer"}]})) is None
    deep = "[" * 100_000 + "]" * 100_000
    assert answer_problem(deep, schema_text({"type": "array"})) is None  # too deep to tell


# A schema as Pydantic writes one (LangChain's `with_structured_output`): nested models as
# `$ref`s into `$defs`, optional fields as `anyOf` with null, lengths from Field().
class Pet(pydantic.BaseModel):
    kind: Literal["cat", "dog"]
    name: str = pydantic.Field(min_length=2, max_length=8)


class Owner(pydantic.BaseModel):
    name: str
    nickname: str | None = None
    pets: list[Pet] = pydantic.Field(max_length=2)
    address: dict[str, int] = {}


OWNER = Owner.model_json_schema()


@pytest.mark.parametrize(("text", "problem"), [
    ('{"name": "Ann", "pets": [{"kind": "cat", "name": "Tom"}]}', None),
    ('{"name": "Ann", "nickname": null, "pets": [], "address": {"zip": 1}}', None),
    ('{"name": "Ann", "nickname": "A", "pets": [{"kind": "dog", "name": "Rex"}]}', None),
    ('{"name": "Ann", "pets": [{"kind": "cow", "name": "Tom"}]}',
     "$.pets[0].kind is none of the schema's enum"),
    ('{"name": "Ann", "pets": [{"kind": "cat"}]}', "$.pets[0] lacks the required 'name'"),
    ('{"name": "Ann", "pets": [{"kind": "cat", "name": "T"}]}',
     "$.pets[0].name is 1 characters, under the schema's minLength 2"),
    ('{"name": "Ann", "pets": [{"kind": "cat", "name": "Tommy Lee Jones"}]}',
     "over the schema's maxLength 8"),
    ('{"name": "Ann", "nickname": 5, "pets": []}', "$.nickname fits none of the schema's 2"),
    ('{"name": "Ann", "pets": [], "address": {"zip": "x"}}', "$.address.zip is not of type"),
    ('{"name": "Ann", "pets": [{"kind": "cat", "name": "Tom"}, {"kind": "cat", "name": "Tim"}, '
     '{"kind": "cat", "name": "Tam"}]}', "$.pets has 3 items"),
])
def test_refs_unions_and_lengths_are_judged(text: str, problem: str | None) -> None:
    found = answer_problem(text, schema_text(OWNER))
    assert found == problem if problem is None else (found is not None and problem in found)


def test_what_the_converter_takes_first_is_what_is_judged() -> None:
    # A list of types: llama.cpp's grammar is a union of the bare types, so the object's
    # properties are not held to (the old check refused such honest answers).
    either = {"type": ["object", "null"], "properties": {"a": {"type": "string"}},
              "required": ["a"]}
    assert answer_problem("{}", schema_text(either)) is None
    assert answer_problem("[]", schema_text(either)) == "$ is not of type object/null"
    # Counts without `items`: the grammar is any array.
    assert answer_problem("[1]", schema_text({"type": "array", "minItems": 2})) is None
    # A tuple: each item against its own schema.
    pair = {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}]}
    assert answer_problem('["a", 1]', schema_text(pair)) is None
    assert answer_problem('["a", "b"]', schema_text(pair)) == "$[1] is not of type integer"
    # Astral characters escaped are two grammar characters each.
    assert answer_problem('"\\ud83d\\ude00"', schema_text({"type": "string", "minLength": 2})) \
        is None
    assert answer_problem("true", schema_text({"const": 1})) == "$ is not the schema's const"
    assert answer_problem("1.0", schema_text({"enum": [1]})) is None


def test_hostile_schemas_cannot_make_judging_run_on() -> None:
    twice = {"anyOf": [{"$ref": "#/$defs/x"}, {"$ref": "#/$defs/x"}]}
    looping = {"$defs": {"x": twice}, "$ref": "#/$defs/x"}  # 2^16 paths, then the hop bound
    assert answer_problem("1", schema_text(looping)) is None
    cycle = {"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
             "$ref": "#/$defs/a"}
    assert answer_problem("1", schema_text(cycle)) is None
    wide = {"type": "array", "items": {"anyOf": [{"type": "string"}] * 30 + [{"type": "integer"}]}}
    assert answer_problem(json.dumps(list(range(5_000))), schema_text(wide)) is None  # too many
    missing = {"$ref": "#/$defs/none"}
    assert answer_problem("1", schema_text(missing)) is None


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.5, 1.0])
    | st.text("ab\U0001f600", max_size=3),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "c"]), inner, max_size=3),
    max_leaves=8,
)
TYPES = st.sampled_from(["string", "integer", "number", "boolean", "null", "object", "array"])
SCHEMAS = st.recursive(
    st.builds(dict, type=TYPES) | st.fixed_dictionaries({"enum": st.lists(JSON_VALUES, max_size=3)})
    | st.fixed_dictionaries({"const": JSON_VALUES})
    | st.fixed_dictionaries({"type": st.just("string")}, optional={
        "minLength": st.integers(0, 3), "maxLength": st.integers(0, 3)})
    | st.fixed_dictionaries({"type": st.lists(TYPES, min_size=1, max_size=3)}),
    lambda inner: st.fixed_dictionaries({"anyOf": st.lists(inner, min_size=1, max_size=3)})
    | st.fixed_dictionaries(
        {"type": st.just("object"), "properties": st.dictionaries(
            st.sampled_from(["a", "b"]), inner, max_size=2)},
        optional={"required": st.lists(st.sampled_from(["a", "b", "c"]), max_size=2),
                  "additionalProperties": st.booleans() | inner})
    | st.fixed_dictionaries({"type": st.just("array"), "items": inner},
                            optional={"minItems": st.integers(0, 2),
                                      "maxItems": st.integers(0, 3)}),
    max_leaves=6,
)
ROOTS = SCHEMAS | SCHEMAS.map(lambda inner: {"$defs": {"x": inner}, "$ref": "#/$defs/x"})


@settings(max_examples=600, deadline=None)
@given(ROOTS, JSON_VALUES)
def test_an_answer_the_schema_allows_is_never_refused(schema: dict[str, object],
                                                     value: object) -> None:
    # The judge must only refuse what the schema itself forbids (an engine that follows
    # more of it than llama.cpp does must never be refused): checked against the
    # reference validator.
    if jsonschema.Draft202012Validator(schema).is_valid(value):
        assert answer_problem(json.dumps(value), schema_text(schema)) is None
