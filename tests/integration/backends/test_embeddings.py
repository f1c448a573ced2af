"""Embeddings with every backend kind: the embedded engine's embedding instance, and the
same engine behind `engine serve`'s `/api/embed` and `/v1/embeddings` (Ollama and
OpenAI-compatible backends)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from p2pinfer.backends.embedded import EmbeddedBackend
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
