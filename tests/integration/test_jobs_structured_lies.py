"""Attack 38: a provider answers a structured request with whatever it likes.

A job may ask for JSON (`output_format` "json": Ollama's `format: "json"`, OpenAI's
`json_object`) or for JSON following a schema. An honest engine follows it with a
grammar, so an answer that ended by itself ("stop", no stop sequence cut it) is JSON of
that shape. The consumer took any text and paid for it: the cheapest provider could
skip the grammar (or the model) and answer prose, and only a later spot-check might
notice. Real libp2p hosts and ledgers; the providers' engines are fakes that say what
the test gives them (`FakeBackend`).
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

from p2pinfer.protocol import JobParams
from p2pinfer.protocol.output_format import schema_text
from p2pinfer.protocol.tools import tools_text
from tests.integration.job_helpers import FAKE_MODEL, FakeBackend, charges, cheap_and_dear

CITY = {"type": "object", "properties": {"city": {"type": "string"},
                                         "country": {"type": "string"}},
        "required": ["city", "country"], "additionalProperties": False}


HONEST = ['{"city": ', '"Paris", ', '"country": ', '"France"}']


async def lied_to(tmp_path: Path, lie: list[str], params: JobParams,
                  honest_tokens: list[str] = HONEST) -> None:
    honest = FakeBackend(tokens=honest_tokens)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            two = await cheap_and_dear(stack, nursery, tmp_path, cheap=FakeBackend(lie),
                                       dear=honest)
            outcome = await two.client.run(FAKE_MODEL, "Paris as JSON", params)
            assert outcome.provider == two.dear.net.peer_id
            assert outcome.text == "".join(honest_tokens)
            [liar] = outcome.failovers
            assert liar.provider == two.cheap.net.peer_id
            assert "structured" in liar.reason
            assert charges(two.cheap.ledger) == []
            assert charges(two.ledger) == [bytes.fromhex(outcome.job_id)]
            nursery.cancel_scope.cancel()


async def test_prose_for_a_json_request_is_not_paid(tmp_path: Path) -> None:
    await lied_to(tmp_path, ["Sure! ", "Paris ", "is ", "in ", "France."],
                  JobParams(max_tokens=20, output_format="json"))


async def test_json_of_another_shape_for_a_schema_is_not_paid(tmp_path: Path) -> None:
    await lied_to(tmp_path, ['{"town": ', '"Paris"}'],
                  JobParams(max_tokens=20, output_format=schema_text(CITY)))


# A schema as Pydantic writes one (LangChain's `with_structured_output`): the nested
# model behind a `$ref`, the optional field an `anyOf` with null, a length from Field().
OWNER = {
    "$defs": {"Pet": {"properties": {"kind": {"enum": ["cat", "dog"], "type": "string"},
                                     "name": {"maxLength": 8, "type": "string"}},
                      "required": ["kind", "name"], "type": "object"}},
    "properties": {"name": {"type": "string"},
                   "nickname": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                   "pets": {"items": {"$ref": "#/$defs/Pet"}, "type": "array"}},
    "required": ["name", "pets"], "type": "object"}
OWNER_HONEST = ['{"name": "Ann", ', '"nickname": null, ', '"pets": [{"kind": "cat", ',
                '"name": "Tom"}]}']


async def test_a_lie_inside_a_ref_or_a_union_is_not_paid(tmp_path: Path) -> None:
    # Every nested model sits behind a `$ref` and every optional field in an `anyOf`:
    # the judge used to take both as followed, so these lies were paid.
    params = JobParams(max_tokens=30, output_format=schema_text(OWNER))
    for lie in (['{"name": "Ann", "pets": [{"kind": "cow", "name": "Tom"}]}'],
                ['{"name": "Ann", "nickname": 7, "pets": []}'],
                ['{"name": "Ann", "pets": [{"kind": "cat", "name": "Tom the cat"}]}']):
        await lied_to(tmp_path / str(len(lie[0])), lie, params, OWNER_HONEST)


WEATHER = tools_text([
    {"name": "get_weather", "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}}, "required": ["city"]}},
    {"name": "send_email", "parameters": {"type": "object", "properties": {
        "to": {"type": "string"}}, "required": ["to"]}},
])
CALL_HONEST = ['{"name": "get_weather", ', '"arguments": {"city": "Paris"}}']


async def test_prose_or_another_tool_when_a_call_was_forced_is_not_paid(
        tmp_path: Path) -> None:
    # Attack 44: a request whose tool choice makes the model call a tool (LangChain's
    # `with_structured_output(method="function_calling")` forces one) was paid for
    # whatever came back: prose, or a call of another offered tool.
    forced = JobParams(max_tokens=30, tools=WEATHER, tool_choice="function:get_weather")
    await lied_to(tmp_path / "prose", ["It ", "is ", "sunny."], forced, CALL_HONEST)
    await lied_to(tmp_path / "other", ['{"name": "send_email", "arguments": {"to": "x"}}'],
                  forced, CALL_HONEST)
    required = JobParams(max_tokens=30, tools=WEATHER, tool_choice="required")
    await lied_to(tmp_path / "required", ["No ", "call."], required, CALL_HONEST)
