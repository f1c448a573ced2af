"""Structured output and log probabilities with every backend kind: the embedded engine's
grammar and token log probabilities, and the
format handed on as Ollama's `format` and OpenAI's `response_format` to the same engine
behind `engine serve`'s HTTP API."""

from __future__ import annotations

import json
from typing import Literal

import pydantic
import pytest
import trio

from p2pinfer.backends.base import Backend, ChatMessage, Completion, SamplingParams, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.errors import BadRequestError
from p2pinfer.protocol.output_format import answer_problem, schema_text
from tests.support.backends import needs_engine

pytestmark = [pytest.mark.engine, needs_engine]

ASK = [ChatMessage("user", "Give the name and age of a fictional person as JSON.")]
SCHEMA = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 30},
                                           "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}


async def answer(backend: Backend, output_format: str | None, *, raw: bool = False,
                 ask: list[ChatMessage] = ASK) -> str:
    params = SamplingParams(max_tokens=64, temperature=0.0, seed=5, output_format=output_format)
    stream = (backend.generate(SMOLLM2, "A person as JSON:", params) if raw
              else backend.chat(SMOLLM2, ask, params))
    with trio.fail_after(120):
        async with stream as events:
            return "".join([e.text async for e in events if isinstance(e, TokenDelta)])


async def test_every_backend_follows_the_schema(backend: Backend) -> None:
    for raw in (False, True):
        value = json.loads(await answer(backend, schema_text(SCHEMA), raw=raw))
        assert sorted(value) == ["age", "name"]
        assert isinstance(value["name"], str) and type(value["age"]) is int


class Pet(pydantic.BaseModel):
    kind: Literal["cat", "dog"]
    name: str = pydantic.Field(min_length=2, max_length=8)


class Owner(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    nickname: str | None = None
    pets: list[Pet] = pydantic.Field(max_length=2)


async def test_the_engines_answers_pass_the_consumers_judge(engine: EmbeddedBackend) -> None:
    # A consumer refuses to pay for a structured answer `answer_problem` finds wrong, so
    # nothing the engine's grammar lets through may be found wrong: sampled answers to a
    # schema as Pydantic writes one ($ref, anyOf with null, lengths, enum).
    output_format = schema_text(Owner.model_json_schema())
    ask = [ChatMessage("user", "An owner and their pets as JSON.")]
    judged = 0
    for seed in range(6):
        params = SamplingParams(max_tokens=96, temperature=1.2, seed=seed,
                                output_format=output_format)
        with trio.fail_after(120):
            async with engine.chat(SMOLLM2, ask, params) as events:
                got = [e async for e in events]
        done = next(e for e in got if isinstance(e, Completion))
        if done.finish_reason != "stop":
            continue  # cut at max_tokens: not judged by a consumer either
        text = "".join(e.text for e in got if isinstance(e, TokenDelta))
        assert answer_problem(text, output_format) is None, text
        Owner.model_validate_json(text)  # and it is what Pydantic takes
        judged += 1
    assert judged >= 3


async def test_every_backend_answers_an_object_for_json(backend: Backend) -> None:
    # Any object: the model chooses how much to write, so ask for something short.
    ask = [ChatMessage("user", "Describe Paris as JSON with its city, country and population.")]
    assert isinstance(json.loads(await answer(backend, "json", ask=ask)), dict)


async def test_a_schema_llama_cpp_cannot_follow_is_a_bad_request(
    engine: EmbeddedBackend,
) -> None:
    with pytest.raises(BadRequestError, match="unsupported JSON schema"):
        await answer(engine, schema_text({"type": "no-such-type"}))


async def test_every_backend_gives_the_engines_log_probabilities(
    backend: Backend, engine: EmbeddedBackend,
) -> None:
    params = SamplingParams(max_tokens=6, temperature=0.0, seed=5, top_logprobs=2)

    async def logprobs(source: Backend) -> list[tuple[str, float, tuple[str, ...]]]:
        async with source.chat(SMOLLM2, ASK, params) as events:
            return [(p.token, p.logprob, tuple(t for t, _ in p.top))
                    async for e in events if isinstance(e, TokenDelta) for p in e.logprobs]

    got, direct = await logprobs(backend), await logprobs(engine)
    assert len(got) == 6 and [(t, r) for t, _, r in got] == [(t, r) for t, _, r in direct]
    assert all(abs(a[1] - b[1]) < 1e-5 for a, b in zip(got, direct, strict=True))
