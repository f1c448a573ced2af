"""One contract for every backend: the embedded engine directly, and Ollama's native and
OpenAI-compatible APIs over HTTP in front of it (`engine serve`'s app)."""

from __future__ import annotations

import pytest
import trio

from p2pinfer.backends.base import (
    Backend,
    ChatMessage,
    Completion,
    SamplingParams,
    StreamEvent,
    TokenDelta,
)
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.errors import ModelNotFound
from tests.support.backends import FRANCE, needs_engine
from tests.support.waiting import await_until

pytestmark = [pytest.mark.engine, needs_engine]

GREEDY = SamplingParams(max_tokens=8, temperature=0.0, seed=42)
QUESTION = [ChatMessage("user", FRANCE)]


async def drain(stream: object) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    with trio.fail_after(120):
        async with stream as iterator:  # type: ignore[attr-defined]
            async for event in iterator:
                events.append(event)
    return events


def check_shape(events: list[StreamEvent]) -> tuple[str, Completion]:
    """Deltas, then exactly one Completion, last."""
    *deltas, last = events
    assert isinstance(last, Completion)
    assert deltas and all(isinstance(d, TokenDelta) and d.text for d in deltas)
    return "".join(d.text for d in deltas if isinstance(d, TokenDelta)), last


async def test_lists_the_model(backend: Backend) -> None:
    models = {m.name: m for m in await backend.list_models()}
    assert SMOLLM2 in models
    if backend.name != "openai":  # /v1/models carries no digest
        info = models[SMOLLM2]
        assert len(info.digest) == 64 and int(info.digest, 16) >= 0
        assert (info.family, info.quantization, info.parameter_size) == ("llama", "Q4_1", "134.52M")
        assert info.context_length == 8192


async def test_chat_streams_tokens_then_one_completion(backend: Backend) -> None:
    text, done = check_shape(await drain(backend.chat(SMOLLM2, QUESTION, GREEDY)))
    assert "Paris" in text
    assert done.finish_reason in ("stop", "length")


async def test_generate_streams_a_raw_completion_cut_at_max_tokens(backend: Backend) -> None:
    params = SamplingParams(max_tokens=6, temperature=0.0, seed=1)
    text, done = check_shape(await drain(backend.generate(SMOLLM2, "Once upon a time", params)))
    assert done.finish_reason == "length"
    assert done.usage.completion_tokens == 6
    assert len(text) > 6


async def test_usage_counts_match_the_engine_itself(
    backend: Backend, engine: EmbeddedBackend
) -> None:
    _, own = check_shape(await drain(engine.chat(SMOLLM2, QUESTION, GREEDY)))
    _, reported = check_shape(await drain(backend.chat(SMOLLM2, QUESTION, GREEDY)))
    # "The capital of France is Paris." is 7 tokens after a 42-token prompt.
    assert own.usage.prompt_tokens == 42
    assert reported.usage == own.usage
    assert reported.finish_reason == own.finish_reason == "stop"


async def test_an_unknown_model_is_model_not_found(backend: Backend) -> None:
    with pytest.raises(ModelNotFound, match="model 'no-such-model:7b' not found"):
        await drain(backend.chat("no-such-model:7b", QUESTION, GREEDY))
    with pytest.raises(ModelNotFound):
        await drain(backend.generate("no-such-model:7b", "hi", GREEDY))


async def test_leaving_the_stream_stops_generation_within_one_token(
    backend: Backend, engine: EmbeddedBackend
) -> None:
    params = SamplingParams(max_tokens=300, temperature=0.0, seed=3)
    seen = 0
    with trio.fail_after(120):
        async with backend.generate(SMOLLM2, "Write a very long story:", params) as events:
            async for event in events:
                seen += isinstance(event, TokenDelta)
                if seen == 3:
                    break
            at_cancel = engine.tokens_generated
        await await_until(lambda: engine.running == 0, timeout_s=10)
    after = engine.tokens_generated - at_cancel
    assert after <= 1, f"{after} tokens generated after the stream was left"
    assert engine.tokens_generated < 100  # far from the 300 it was asked for
