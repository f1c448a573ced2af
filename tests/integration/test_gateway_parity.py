"""What real OpenAI/Ollama clients send, carried through the network: the gateway, a job
over real libp2p hosts, a provider running SmolLM2 in the embedded engine, and back."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import httpx
import ollama
import openai
import pytest
import trio

from p2pinfer.api.openai_wire import OPENAI_DEFAULTS
from p2pinfer.backends.base import ChatMessage, SamplingParams, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.errors import NoProvidersError
from p2pinfer.protocol import ChatTurn, JobParams, JobRequest, JobResult, decode_as
from p2pinfer.protocol.embedding import encode_vectors
from p2pinfer.protocol.output_format import schema_text
from p2pinfer.verify.compare import DEFAULT_THRESHOLDS, Verdict
from p2pinfer.verify.judge import judge_answer
from tests.integration.gateway_net import smollm2_gateway
from tests.integration.job_helpers import charges
from tests.support.backends import ENGINE_READY
from tests.support.waiting import await_until

pytestmark = [
    pytest.mark.network,
    pytest.mark.engine,
    pytest.mark.skipif(not ENGINE_READY, reason="needs llama-cpp-python and SmolLM2"),
]

REPEAT = "List the word cat, over and over, twenty times."
GREEDY = SamplingParams(max_tokens=32, temperature=0.0, seed=3)


async def direct(engine: EmbeddedBackend, params: SamplingParams, prompt: str = REPEAT) -> str:
    async with engine.chat(SMOLLM2, [ChatMessage("user", prompt)], params) as events:
        return "".join([e.text async for e in events if isinstance(e, TokenDelta)])


async def test_penalties_and_min_p_reach_the_engine_and_the_checker(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with smollm2_gateway(tmp_path) as gw:
            plain = await direct(gw.engine, GREEDY)
            penalised_params = SamplingParams(
                max_tokens=32, temperature=0.0, seed=3, repeat_penalty=1.6,
                frequency_penalty=1.5, presence_penalty=1.0, min_p=0.05)
            penalised = await direct(gw.engine, penalised_params)
            assert penalised != plain  # the prompt is one the penalties change

            async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
                ollama = await http.post("/api/chat", json={
                    "model": SMOLLM2, "stream": False,
                    "messages": [{"role": "user", "content": REPEAT}],
                    "options": {"temperature": 0, "seed": 3, "num_predict": 32,
                                "repeat_penalty": 1.6, "frequency_penalty": 1.5,
                                "presence_penalty": 1.0, "min_p": 0.05}})
                assert ollama.status_code == 200, ollama.text
                assert ollama.json()["message"]["content"] == penalised

                openai = await http.post("/v1/chat/completions", json={
                    "model": SMOLLM2, "temperature": 0, "seed": 3, "max_tokens": 32,
                    "frequency_penalty": 1.5, "presence_penalty": 1.0,
                    "repeat_penalty": 1.6, "min_p": 0.05,
                    "messages": [{"role": "user", "content": REPEAT}]})
                assert openai.status_code == 200, openai.text
                assert openai.json()["choices"][0]["message"]["content"] == penalised

                too_much = await http.post("/v1/chat/completions", json={
                    "model": SMOLLM2, "frequency_penalty": 2.5,
                    "messages": [{"role": "user", "content": REPEAT}]})
                assert too_much.status_code == 400
                assert "frequency_penalty" in too_much.json()["error"]["message"]

            # A spot-check re-runs the signed request with its penalties, and passes it.
            outcome = await gw.client.run(SMOLLM2, [ChatTurn("user", REPEAT)], JobParams(
                max_tokens=32, temperature=0.0, seed=3, repeat_penalty=1.6,
                frequency_penalty=1.5, presence_penalty=1.0, min_p=0.05))
            assert outcome.text == penalised
            request = decode_as(outcome.request, JobRequest).msg
            result = decode_as(outcome.result, JobResult).msg
            reference, comparison = await judge_answer(
                gw.engine, request, result, outcome.text, DEFAULT_THRESHOLDS)
            assert reference == penalised
            assert comparison.verdict is Verdict.IDENTICAL


PARIS = "Describe Paris as JSON with its city, country and population."
CITY_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 40},
                   "country": {"type": "string", "maxLength": 40},
                   "population_millions": {"type": "integer"}},
    "required": ["city", "country", "population_millions"],
    "additionalProperties": False,
}


def matches_city_schema(text: str) -> bool:
    value = json.loads(text)
    return (isinstance(value, dict) and sorted(value) == sorted(CITY_SCHEMA["properties"])
            and isinstance(value["city"], str) and isinstance(value["country"], str)
            and type(value["population_millions"]) is int)


async def test_structured_output_through_the_network_parses_and_is_checked(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with smollm2_gateway(tmp_path) as gw:
            free = await direct(gw.engine, SamplingParams(max_tokens=60, temperature=0.0, seed=1),
                                PARIS)
            with pytest.raises(json.JSONDecodeError):
                json.loads(free)  # unconstrained, SmolLM2 answers in prose

            async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
                ollama = await http.post("/api/chat", json={
                    "model": SMOLLM2, "stream": False, "format": CITY_SCHEMA,
                    "messages": [{"role": "user", "content": PARIS}],
                    "options": {"temperature": 0, "seed": 1, "num_predict": 60}})
                assert ollama.status_code == 200, ollama.text
                assert matches_city_schema(ollama.json()["message"]["content"])

                any_json = await http.post("/api/generate", json={
                    "model": SMOLLM2, "stream": False, "format": "json", "prompt": PARIS,
                    "options": {"temperature": 0, "seed": 1, "num_predict": 60}})
                assert isinstance(json.loads(any_json.json()["response"]), dict)

                hostile = await http.post("/api/chat", json={
                    "model": SMOLLM2, "messages": [{"role": "user", "content": PARIS}],
                    "format": {"type": "array", "items": {}, "minItems": 10**9}})
                assert hostile.status_code == 400
                unsupported = await http.post("/api/chat", json={
                    "model": SMOLLM2, "messages": [{"role": "user", "content": PARIS}],
                    "format": {"type": "no-such-type"}})
                assert unsupported.status_code == 400, unsupported.text

            def openai_schema() -> str:
                client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused",
                                       max_retries=0, timeout=60)
                reply = client.chat.completions.create(
                    model=SMOLLM2, temperature=0, seed=1, max_tokens=60,
                    messages=[{"role": "user", "content": PARIS}],
                    response_format={"type": "json_schema", "json_schema": {
                        "name": "city", "schema": CITY_SCHEMA}})
                return reply.choices[0].message.content or ""

            assert matches_city_schema(await trio.to_thread.run_sync(openai_schema))

            # A spot-check re-runs the request under the same constraint, and passes it.
            outcome = await gw.client.run(SMOLLM2, [ChatTurn("user", PARIS)], JobParams(
                max_tokens=60, temperature=0.0, seed=1, output_format=schema_text(CITY_SCHEMA)))
            assert matches_city_schema(outcome.text)
            request = decode_as(outcome.request, JobRequest).msg
            result = decode_as(outcome.result, JobResult).msg
            reference, comparison = await judge_answer(
                gw.engine, request, result, outcome.text, DEFAULT_THRESHOLDS)
            assert matches_city_schema(reference) and reference == outcome.text
            assert comparison.verdict is Verdict.IDENTICAL


TEXTS = ["The cat sat on the mat.", "Stock markets fell sharply today."]


def close_to(a: list[float], b: tuple[float, ...]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-5 for x, y in zip(a, b, strict=True))


async def test_embeddings_through_the_network_for_openai_and_ollama_clients(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with smollm2_gateway(tmp_path, embedding=True) as gw:
            direct_vectors = (await gw.engine.embed(SMOLLM2, TEXTS)).vectors
            assert len(direct_vectors[0]) == 576  # SmolLM2-135M's hidden size

            def openai_client() -> tuple[list[list[float]], int, list[float]]:
                client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused",
                                       max_retries=0, timeout=60)
                batch = client.embeddings.create(model=SMOLLM2, input=TEXTS)  # base64
                floats = client.embeddings.create(model=SMOLLM2, input=TEXTS[0],
                                                  encoding_format="float")
                return ([d.embedding for d in batch.data], batch.usage.prompt_tokens,
                        floats.data[0].embedding)

            vectors, tokens, single = await trio.to_thread.run_sync(openai_client)
            assert all(close_to(v, d) for v, d in zip(vectors, direct_vectors, strict=True))
            assert close_to(single, direct_vectors[0]) and tokens > 0

            def ollama_client() -> tuple[list[float], list[float]]:
                client = ollama.Client(host=gw.url)
                new = client.embed(model=SMOLLM2, input=TEXTS)
                old = client.embeddings(model=SMOLLM2, prompt=TEXTS[1])
                return list(new.embeddings[0]), list(old.embedding)

            new, old = await trio.to_thread.run_sync(ollama_client)
            assert close_to(new, direct_vectors[0]) and close_to(old, direct_vectors[1])

            async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
                reply = await http.post("/api/embed", json={"model": SMOLLM2, "input": TEXTS})
                assert reply.headers["x-p2pinfer-provider"] == gw.provider.net.peer_id
                assert int(reply.headers["x-p2pinfer-charged"]) > 0
                assert reply.json()["prompt_eval_count"] > 0

            # A spot-check re-embeds the inputs and passes the honest vectors; another
            # text's vectors under the same signed result fail.
            outcome = await gw.client.embed(SMOLLM2, TEXTS)
            request = decode_as(outcome.request, JobRequest).msg
            result = decode_as(outcome.result, JobResult).msg
            assert (request.kind, result.completion_tokens) == ("embed", 0)
            _, honest = await judge_answer(gw.engine, request, result, outcome.text,
                                           DEFAULT_THRESHOLDS)
            assert honest.verdict.passed
            swapped = encode_vectors(tuple(reversed(direct_vectors)))
            _, cheat = await judge_answer(gw.engine, request, result, swapped,
                                          DEFAULT_THRESHOLDS)
            assert cheat.verdict is Verdict.INCONSISTENT


async def test_a_client_hanging_up_on_a_network_embedding_pays_and_stays_welcome(
    tmp_path: Path,
) -> None:
    """The embedding route is cancelled with its client: the node stops the embed job
    with a JobCancel and pays the provider's `cancelled` result, which comes at once
    (the engine finishes the batch it is decoding meanwhile, up to seconds on a CPU,
    longer than the node waits for it), so the node's key is not refused as one that
    left a job unpaid (attack 67) and its next embedding is served."""
    long = [f"{i} " + "7 1 3 " * 90 for i in range(60)]  # ~300 tokens each: minutes
    with trio.fail_after(150):
        async with smollm2_gateway(tmp_path, embedding=True) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=90) as http:
            assert (await http.post("/v1/embeddings", json={"model": SMOLLM2,
                                                            "input": ["warm"]})).is_success
            paid = len(charges(gw.ledger))
            with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up
                await http.post("/v1/embeddings", json={"model": SMOLLM2, "input": long},
                                timeout=3)
            await await_until(lambda: len(charges(gw.ledger)) == paid + 1, 20)
            reply = await http.post("/v1/embeddings", json={"model": SMOLLM2,
                                                            "input": TEXTS})
            assert reply.status_code == 200 and len(reply.json()["data"]) == len(TEXTS)
            outcomes = [r.outcome for r in gw.provider.server.records]
    assert "cancelled" in outcomes and "unpaid" not in outcomes


async def test_a_provider_that_does_not_embed_is_not_asked_to(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with smollm2_gateway(tmp_path) as gw, httpx.AsyncClient(
                base_url=gw.url, timeout=60) as http:
            reply = await http.post("/v1/embeddings", json={"model": SMOLLM2, "input": "hi"})
            assert reply.status_code == 400
            assert "does not support embeddings" in reply.json()["error"]["message"]
            with pytest.raises(NoProvidersError):
                await gw.client.embed(SMOLLM2, ["hi"])
            assert gw.provider.server.tokens_generated == 0


async def test_n_choices_are_jobs_of_their_own_each_charged(tmp_path: Path) -> None:
    # What the gateway makes of the OpenAI body below (its defaults: top_p 1, top_k 40).
    sampled = replace(OPENAI_DEFAULTS, max_tokens=16, temperature=1.0, seed=11)
    with trio.fail_after(120):
        async with smollm2_gateway(tmp_path) as gw:
            first = await direct(gw.engine, sampled, PARIS)
            second = await direct(gw.engine, replace(sampled, seed=12), PARIS)
            assert first != second  # sampled: another seed, another answer

            async with httpx.AsyncClient(base_url=gw.url, timeout=60) as http:
                reply = await http.post("/v1/chat/completions", json={
                    "model": SMOLLM2, "n": 2, "seed": 11, "temperature": 1.0, "max_tokens": 16,
                    "messages": [{"role": "user", "content": PARIS}]})
            assert reply.status_code == 200, reply.text
            contents = [c["message"]["content"] for c in reply.json()["choices"]]
            assert contents == [first, second]
            jobs = [e for e in gw.ledger.entries() if e.kind == "charge"]
            assert len(jobs) == 2
            assert int(reply.headers["x-p2pinfer-charged"]) == sum(
                e.body.amount for e in jobs) > 0  # type: ignore[attr-defined]
            # The whole reply names the charge of both jobs, as a one-choice reply does.
            assert reply.json()["p2pinfer"]["charged"] == int(reply.headers["x-p2pinfer-charged"])

            def openai_stream() -> dict[int, str]:
                client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused",
                                       max_retries=0, timeout=60)
                texts: dict[int, str] = {}
                for chunk in client.chat.completions.create(
                        model=SMOLLM2, n=2, seed=11, temperature=1.0, max_tokens=16,
                        stream=True, messages=[{"role": "user", "content": PARIS}]):
                    for choice in chunk.choices:
                        texts[choice.index] = texts.get(choice.index, "") + (
                            choice.delta.content or "")
                return texts

            assert await trio.to_thread.run_sync(openai_stream) == {0: first, 1: second}


async def test_log_probabilities_through_the_network(tmp_path: Path) -> None:
    greedy = SamplingParams(max_tokens=8, temperature=0.0, seed=1, top_logprobs=2)
    with trio.fail_after(120):
        async with smollm2_gateway(tmp_path) as gw:
            async with gw.engine.chat(SMOLLM2, [ChatMessage("user", PARIS)], greedy) as events:
                local = [p async for e in events if isinstance(e, TokenDelta)
                         for p in e.logprobs]
            assert len(local) == 8

            def openai_chat() -> tuple[str, list[tuple[str, float, list[str]]]]:
                client = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused",
                                       max_retries=0, timeout=60)
                reply = client.chat.completions.create(
                    model=SMOLLM2, temperature=0, seed=1, max_tokens=8, logprobs=True,
                    top_logprobs=2, messages=[{"role": "user", "content": PARIS}])
                choice = reply.choices[0]
                assert choice.logprobs is not None and choice.logprobs.content is not None
                return choice.message.content or "", [
                    (t.token, t.logprob, [r.token for r in t.top_logprobs])
                    for t in choice.logprobs.content]

            text, remote = await trio.to_thread.run_sync(openai_chat)
            assert "".join(token for token, _, _ in remote) == text
            for (token, logprob, rivals), mine in zip(remote, local, strict=True):
                assert token == mine.token and abs(logprob - mine.logprob) < 1e-5
                assert rivals == [t for t, _ in mine.top] and rivals[0] == token  # greedy

            def ollama_chat() -> int:
                client = ollama.Client(host=gw.url)
                reply = client.chat(model=SMOLLM2, messages=[{"role": "user", "content": PARIS}],
                                    options={"temperature": 0, "num_predict": 8, "seed": 1},
                                    logprobs=True, top_logprobs=1)
                return len(reply.logprobs or [])

            assert await trio.to_thread.run_sync(ollama_chat) == 8
