"""Structured output (issue 17): Ollama's `format` and OpenAI's `response_format` into
`output_format`, carried signed on the wire and bounded against hostile schemas (whose
grammar would grow with their counts and nesting), and back out to each engine's API."""

from __future__ import annotations

import json
import os

import msgpack
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
    loose = {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert answer_problem("[]", schema_text(loose)) is None  # anyOf: not judged here
    lengths = {"type": "string", "minLength": 5, "pattern": "^x"}
    assert answer_problem('"ab"', schema_text(lengths)) is None
    deep = "[" * 100_000 + "]" * 100_000
    assert answer_problem(deep, schema_text({"type": "array"})) is None  # too deep to tell
