"""`p2pinfer engine serve` (a subprocess, as users run it) driven by the official
`ollama` and `openai` Python packages, which must not notice it is not Ollama. It runs
with `--embedding`, so the model also embeds, as every model does in Ollama."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from tests.integration.backends.conftest import MAX_TOKENS, RAW, SEED, STORY
from tests.support.backends import FRANCE, engine_serve_process, needs_engine

pytestmark = [pytest.mark.engine, needs_engine]

OPTIONS = {"temperature": 0, "seed": SEED, "num_predict": MAX_TOKENS}


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home: Path = tmp_path_factory.mktemp("home")
    with engine_serve_process(home, "smollm2:135m", flags=("--embedding",)) as base_url:
        yield base_url


@pytest.fixture
def client(url: str) -> ollama.Client:
    return ollama.Client(host=url, timeout=120)


@pytest.fixture
def oai(url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", timeout=120, max_retries=0)


def test_server_answers_like_ollama_at_the_root_and_version(url: str) -> None:
    assert httpx.get(url).text == "Ollama is running"
    assert httpx.head(url).status_code == 200
    assert httpx.get(f"{url}/api/version").json()["version"]


def test_ollama_client_lists_and_shows_the_model(client: ollama.Client) -> None:
    (model,) = client.list().models
    assert model.model == "smollm2:135m" and model.size and model.size > 90_000_000
    assert model.digest is not None and len(model.digest) == 64
    assert model.details is not None and model.details.quantization_level == "Q4_1"
    shown = client.show("smollm2")
    assert shown.modelinfo is not None and shown.modelinfo["llama.context_length"] == 8192
    assert shown.details is not None and shown.details.parameter_size == "134.52M"


def test_ollama_client_chat_streaming_and_not(
    client: ollama.Client, greedy_reference: dict[str, str]
) -> None:
    messages = [{"role": "user", "content": STORY}]
    whole = client.chat(model="smollm2", messages=messages, options=OPTIONS)
    assert whole.message.content == greedy_reference[STORY]
    assert whole.done and whole.done_reason == "length" and whole.eval_count == MAX_TOKENS
    assert whole.eval_duration and whole.prompt_eval_duration and whole.total_duration
    chunks = list(client.chat(model="smollm2", messages=messages, options=OPTIONS, stream=True))
    assert "".join(c.message.content or "" for c in chunks) == greedy_reference[STORY]
    assert [c.done for c in chunks] == [False] * (len(chunks) - 1) + [True]
    assert chunks[-1].prompt_eval_count == whole.prompt_eval_count


def test_ollama_client_generate_streaming_and_not(
    client: ollama.Client, greedy_reference: dict[str, str]
) -> None:
    whole = client.generate(model="smollm2:135m", prompt=RAW, raw=True, options=OPTIONS)
    assert whole.response == greedy_reference[RAW]
    chunks = list(client.generate(model="smollm2", prompt=RAW, raw=True, options=OPTIONS,
                                  stream=True))  # fmt: skip
    assert "".join(c.response for c in chunks) == greedy_reference[RAW]
    # Not raw: the prompt is sent through the chat template, as Ollama does.
    templated = client.generate(model="smollm2", prompt=FRANCE, options=OPTIONS)
    assert templated.response == greedy_reference[FRANCE]
    assert "smollm2:135m" in [m.model for m in client.ps().models]


def test_ollama_client_sees_404_for_an_unknown_model(client: ollama.Client) -> None:
    for call in (
        lambda: client.chat(model="llama9", messages=[{"role": "user", "content": "hi"}]),
        lambda: client.generate(model="llama9", prompt="hi"),
        lambda: list(client.generate(model="llama9", prompt="hi", stream=True)),
        lambda: client.show("llama9"),
    ):
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 404
        assert caught.value.error == "model 'llama9' not found"


def test_openai_client_models_and_chat_streaming_and_not(
    oai: openai.OpenAI, greedy_reference: dict[str, str]
) -> None:
    assert [m.id for m in oai.models.list().data] == ["smollm2:135m"]
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": STORY}
    ]
    reply = oai.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, seed=SEED, max_tokens=MAX_TOKENS
    )
    assert reply.choices[0].message.content == greedy_reference[STORY]
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == MAX_TOKENS
    stream = oai.chat.completions.create(
        model="smollm2", messages=messages, temperature=0, seed=SEED, max_tokens=MAX_TOKENS,
        stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == greedy_reference[STORY]
    assert chunks[-1].usage is not None and chunks[-1].usage == reply.usage


def test_openai_client_raw_completion(
    oai: openai.OpenAI, greedy_reference: dict[str, str]
) -> None:
    reply = oai.completions.create(
        model="smollm2", prompt=RAW, temperature=0, seed=SEED, max_tokens=MAX_TOKENS
    )
    assert reply.choices[0].text == greedy_reference[RAW]
    stream = oai.completions.create(
        model="smollm2", prompt=RAW, temperature=0, seed=SEED, max_tokens=MAX_TOKENS, stream=True
    )
    assert "".join(c.choices[0].text for c in stream) == greedy_reference[RAW]


def test_openai_client_sees_not_found_for_an_unknown_model(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        oai.chat.completions.create(model="llama9", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 404
    with pytest.raises(openai.NotFoundError):
        oai.completions.create(model="llama9", prompt="x", stream=True)
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("llama9")


def test_with_embedding_both_clients_embed_and_show_says_so(
    client: ollama.Client, oai: openai.OpenAI
) -> None:
    texts = ["The cat sat on the mat.", "Paris is the capital of France."]
    shown = client.show("smollm2")
    assert shown.capabilities is not None and "embedding" in shown.capabilities
    assert shown.modelinfo is not None and shown.modelinfo["llama.embedding_length"] == 576
    ours = client.embed(model="smollm2", input=texts).embeddings
    theirs = [d.embedding for d in oai.embeddings.create(model="smollm2", input=texts).data]
    assert [len(v) for v in ours] == [576, 576]
    assert all(abs(math.hypot(*v) - 1) < 1e-4 for v in ours)  # L2-normalised, as Ollama's
    assert all(abs(a - b) < 1e-5 for u, w in zip(ours, theirs, strict=True)
               for a, b in zip(u, w, strict=True))
    assert sum(a * b for a, b in zip(*ours, strict=True)) < 0.99  # two texts, two vectors
