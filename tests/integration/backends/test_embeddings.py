"""Embeddings with every backend kind: the embedded engine's embedding instance, and the
same engine behind `engine serve`'s `/api/embed` and `/v1/embeddings` (Ollama and
OpenAI-compatible backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.llama_embed import decode_batches
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.backends.ollama import OllamaBackend
from p2pinfer.backends.openai_compat import OpenAICompatBackend
from p2pinfer.errors import BadRequestError, ModelNotFound
from tests.support.backends import engine_server, needs_engine, smollm2_source

pytestmark = [pytest.mark.engine, needs_engine]

TEXTS = ["A red apple.", "Quantum field theory.", "A green apple."]


@pytest.fixture
async def embedder(model_cache: Path) -> AsyncIterator[EmbeddedBackend]:
    backend = EmbeddedBackend([smollm2_source()], cache_dir=model_cache, embedding=True)
    yield backend
    await backend.aclose()


def cosine(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))  # both L2-normalised


async def test_the_embedded_engine_embeds_normalised_and_meaningful_vectors(
    embedder: EmbeddedBackend,
) -> None:
    [info] = await embedder.list_models()
    assert info.embedding_length == 576
    result = await embedder.embed(SMOLLM2, TEXTS)
    assert len(result.vectors) == 3 and result.prompt_tokens > 0
    assert all(abs(cosine(v, v) - 1) < 1e-4 for v in result.vectors)
    apples = cosine(result.vectors[0], result.vectors[2])
    assert apples > cosine(result.vectors[0], result.vectors[1])


async def test_an_engine_without_embedding_refuses(model_cache: Path) -> None:
    plain = EmbeddedBackend([smollm2_source()], cache_dir=model_cache)
    assert (await plain.list_models())[0].embedding_length == 0
    with pytest.raises(ModelNotFound):
        await plain.embed(SMOLLM2, TEXTS)


async def test_ollama_and_openai_backends_embed_through_engine_serve(
    embedder: EmbeddedBackend,
) -> None:
    direct = (await embedder.embed(SMOLLM2, TEXTS)).vectors
    async with engine_server(embedder) as url:
        ollama, openai = OllamaBackend(url), OpenAICompatBackend(url)
        try:
            [info] = await ollama.list_models()
            assert info.embedding_length == 576  # from /api/show's capabilities
            for backend in (ollama, openai):
                got = await backend.embed(SMOLLM2, TEXTS)
                assert got.prompt_tokens > 0
                assert all(cosine(a, b) > 0.9999 for a, b in zip(got.vectors, direct,
                                                                 strict=True))
        finally:
            await ollama.aclose()
            await openai.aclose()


async def test_empty_and_overlong_inputs(model_cache: Path) -> None:
    small = EmbeddedBackend([smollm2_source()], cache_dir=model_cache, embedding=True, n_ctx=128)
    try:
        with pytest.raises(BadRequestError):
            await small.embed(SMOLLM2, ["fine", ""])  # llama.cpp cannot decode no tokens
        long = await small.embed(SMOLLM2, ["word " * 2_000])  # cut to the context
        assert long.prompt_tokens == 128
        after = await small.embed(SMOLLM2, TEXTS)  # and the engine still works
        assert len(after.vectors) == 3
    finally:
        await small.aclose()


async def test_embedding_batch_by_batch_decodes_what_one_call_would(model_cache: Path) -> None:
    """The inputs go to llama.cpp a batch at a time (to stop between batches: attack 82),
    grouped as llama-cpp-python groups them: the vectors are those of one call."""
    small = EmbeddedBackend([smollm2_source()], cache_dir=model_cache, embedding=True, n_ctx=128)
    inputs = ["word " * 100, *TEXTS, "token " * 60, "A blue pear.", "x " * 300, "Fine."]
    try:
        got = await small.embed(SMOLLM2, inputs)
        llama = small._embedders[SMOLLM2]._load()
        assert len(list(decode_batches(llama, inputs))) >= 4
        whole, tokens = llama.embed(inputs, normalize=True, truncate=True, return_count=True)
        assert got.vectors == tuple(tuple(v) for v in whole) and got.prompt_tokens == tokens
    finally:
        await small.aclose()


async def test_a_cancelled_embedding_lets_the_engine_go_after_one_batch(
    model_cache: Path,
) -> None:
    """Attack 82: a job's inputs are up to 128 texts of up to a context each (minutes of
    the engine on a CPU); cancelled (a free job pre-empted, its consumer gone), the
    engine stops after the batch it is decoding and the next job runs. On the code
    before, one llama.cpp call embedded them all and the cancel waited for it."""
    engine = EmbeddedBackend([smollm2_source()], cache_dir=model_cache, embedding=True,
                             n_ctx=512)
    inputs = [f"{i} " + "7 1 3 " * 90 for i in range(60)]  # ~500 tokens: a batch each
    try:
        await engine.embed(SMOLLM2, ["load the embedding instance"])
        started = trio.current_time()
        with trio.move_on_after(1):
            await engine.embed(SMOLLM2, inputs)
            raise AssertionError("60 batches embedded in a second")
        # One batch of ~500 tokens takes ~2 s here; all 60, minutes.
        assert trio.current_time() - started < 30
        with trio.fail_after(30):
            assert len((await engine.embed(SMOLLM2, TEXTS)).vectors) == 3
    finally:
        await engine.aclose()


async def test_a_client_that_hangs_up_stops_its_embedding(model_cache: Path) -> None:
    """Ollama aborts an embedding whose client closed the connection; `engine serve` (and
    the gateway, on the same routes) ran it to the end, ahead of the next request. Now
    the route is cancelled with its client, and the engine stops after one batch."""
    engine = EmbeddedBackend([smollm2_source()], cache_dir=model_cache, embedding=True,
                             n_ctx=512)
    inputs = [f"{i} " + "7 1 3 " * 90 for i in range(60)]  # ~1 s a text here; a batch each
    try:
        async with engine_server(engine) as url, httpx.AsyncClient(base_url=url) as http:
            for path, body in (("/api/embed", {"model": SMOLLM2, "input": inputs}),
                               ("/v1/embeddings", {"model": SMOLLM2, "input": inputs})):
                with pytest.raises(httpx.ReadTimeout):  # the client gives up and hangs up
                    await http.post(path, json=body, timeout=2)
                with trio.fail_after(30):  # one batch, not the other ~58
                    reply = await http.post("/api/embed", json={"model": SMOLLM2,
                                                                 "input": TEXTS}, timeout=30)
                assert len(reply.json()["embeddings"]) == 3
    finally:
        await engine.aclose()
