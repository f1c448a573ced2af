from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pinfer.backends.base import Backend
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.ollama import OllamaBackend
from p2pinfer.backends.openai_compat import OpenAICompatBackend
from p2pinfer.testing.tiny_model import write_tiny_model
from tests.support.backends import FRANCE, engine_server, smollm2_source

# Greedy decoding settings shared by the tests that compare paths with llama-cpp-python.
MAX_TOKENS, SEED = 24, 42
STORY = "Write a short poem about the sea."
RAW = "The three primary colours are"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One digest cache for the session, so SmolLM2 is hashed once."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture
async def engine(model_cache: Path) -> AsyncIterator[EmbeddedBackend]:
    """The embedded engine with SmolLM2 (loaded on first use)."""
    backend = EmbeddedBackend([smollm2_source()], cache_dir=model_cache)
    yield backend
    await backend.aclose()


@pytest.fixture
async def engine_url(engine: EmbeddedBackend) -> AsyncIterator[str]:
    """`engine` behind the real Ollama-compatible server (hypercorn) on a free port."""
    async with engine_server(engine) as url:
        yield url


@pytest.fixture(params=["embedded", "ollama", "openai"])
async def backend(
    request: pytest.FixtureRequest, engine: EmbeddedBackend, engine_url: str
) -> AsyncIterator[Backend]:
    """Each backend kind, all ending in the same embedded engine."""
    if request.param == "embedded":
        yield engine
        return
    client: Backend = (
        OllamaBackend(engine_url) if request.param == "ollama" else OpenAICompatBackend(engine_url)
    )
    yield client
    await client.aclose()


def direct_llama() -> Any:
    from llama_cpp import Llama

    return Llama(model_path=str(smollm2_source().path), n_ctx=2048, seed=SEED, verbose=False)


@pytest.fixture(scope="session")
def greedy_reference() -> Iterator[dict[str, str]]:
    """Texts from llama-cpp-python itself, each from a fresh KV cache."""
    llm = direct_llama()
    sampling = {"temperature": 0.0, "seed": SEED, "max_tokens": MAX_TOKENS}
    texts = {}
    for prompt in (FRANCE, STORY):
        llm.reset()
        reply = llm.create_chat_completion(
            messages=[{"role": "user", "content": prompt}], **sampling
        )
        texts[prompt] = reply["choices"][0]["message"]["content"]
    llm.reset()
    texts[RAW] = llm.create_completion(prompt=RAW, **sampling)["choices"][0]["text"]
    llm.close()
    yield texts
