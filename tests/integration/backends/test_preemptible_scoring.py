"""Scoring work a paid job may pre-empt (a report receiver's re-run): it decodes in small
chunks, and a cancelled pass lets the engine go before its next chunk."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.base import SamplingParams, TokenDelta, preemptible_work
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.errors import EngineResponseError
from tests.support.backends import ENGINE_READY

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not ENGINE_READY, reason="needs llama-cpp-python"),
]

def tiny_engine(tiny_model: Path) -> EmbeddedBackend:
    return EmbeddedBackend([ModelSource("tiny:latest", tiny_model)])


async def long_answer(engine: EmbeddedBackend) -> str:
    """Text the tiny model's tokens give back exactly, a few hundred of them: its own
    greedy answer (about 23 bytes, one token each), repeated."""
    params = SamplingParams(max_tokens=64, temperature=0.0, seed=1)
    async with engine.generate("tiny", "Hello", params) as events:
        text = "".join([e.text async for e in events if isinstance(e, TokenDelta)])
    return text * (300 // max(len(text), 1) + 1)


async def test_preemptible_scoring_in_small_chunks_scores_like_one_pass(
    tiny_model: Path,
) -> None:
    engine = tiny_engine(tiny_model)
    with trio.fail_after(60):
        answer = await long_answer(engine)
        whole = await engine.score_generate("tiny", "Hello", answer)
        mark = preemptible_work.set(True)
        try:
            chunked = await engine.score_generate("tiny", "Hello", answer)
        finally:
            preemptible_work.reset(mark)
    assert whole is not None and chunked is not None
    assert whole.tokens == chunked.tokens > 64  # more than one chunk
    # Batch shapes move logits by float noise only.
    assert max(abs(a - b) for a, b in zip(whole.logprobs_milli, chunked.logprobs_milli,
                                          strict=True)) <= 5


async def test_a_stopped_scoring_pass_gives_no_score(tiny_model: Path) -> None:
    engine = tiny_engine(tiny_model)
    entry = engine._lookup("tiny")
    stop = threading.Event()
    stop.set()
    with trio.fail_after(60):
        answer = await long_answer(engine)
        assert await engine.score_generate("tiny", "Hello", answer) is not None
        score = await trio.to_thread.run_sync(
            engine._score_in_thread, entry, "generate", "Hello", answer, stop, 64)
    assert score is None


async def test_a_cancelled_scoring_pass_leaves_the_engine_usable(tiny_model: Path) -> None:
    engine = tiny_engine(tiny_model)
    with trio.fail_after(60):
        answer = await long_answer(engine)
        before = await engine.score_generate("tiny", "Hello", answer)
        mark = preemptible_work.set(True)
        try:
            with trio.move_on_after(0.001) as cancelled:
                await engine.score_generate("tiny", "Hello", answer)
        finally:
            preemptible_work.reset(mark)
        after = await engine.score_generate("tiny", "Hello", answer)
    assert cancelled.cancelled_caught and before is not None and before == after


async def test_a_scoring_error_comes_out_as_itself(tiny_model: Path) -> None:
    engine = tiny_engine(tiny_model)
    with trio.fail_after(60), pytest.raises(EngineResponseError, match="exceed the context"):
        await engine.score_generate("tiny", "Hello", (await long_answer(engine)) * 40)


async def test_a_scoring_error_during_a_cancellation_is_no_crash(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The engine fails (prompt and answer over the context) just as a paid job pre-empts
    # the re-run: the cancellation wins, and no group leaks out to crash the node.
    engine = tiny_engine(tiny_model)

    def failing(*args: object) -> None:
        time.sleep(0.2)
        raise EngineResponseError("tiny: prompt and answer exceed the context")

    monkeypatch.setattr(engine, "_score_in_thread", failing)
    with trio.fail_after(10):
        with trio.move_on_after(0.05) as cancelled:
            await engine.score_generate("tiny", "Hello", "text")
        with pytest.raises(EngineResponseError):
            await engine.score_generate("tiny", "Hello", "text")
    assert cancelled.cancelled_caught
