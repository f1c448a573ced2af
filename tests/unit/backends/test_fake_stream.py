"""The fake-stream backend used by the scale and churn testnets: rate, length, cancel, names."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from p2pinfer.backends.base import ChatMessage, Completion, SamplingParams, TokenDelta
from p2pinfer.backends.factory import make_backend
from p2pinfer.errors import ModelNotFound, UsageError
from p2pinfer.testing.fake_stream import FakeStreamBackend


async def test_streams_max_tokens_at_the_set_rate(autojump_clock: trio.testing.MockClock
                                                  ) -> None:
    backend = FakeStreamBackend(20.0, ["fake"])
    started = trio.current_time()
    deltas = []
    async with backend.chat("fake:latest", [ChatMessage("user", "hi")],
                            SamplingParams(max_tokens=10)) as events:
        async for event in events:
            if isinstance(event, TokenDelta):
                deltas.append(event.text)
            else:
                assert isinstance(event, Completion)
                assert event.usage.completion_tokens == 10
    assert len(deltas) == 10
    assert trio.current_time() - started == pytest.approx(0.5, abs=0.01)


async def test_leaving_the_context_stops_generation(autojump_clock: trio.testing.MockClock
                                                    ) -> None:
    backend = FakeStreamBackend(10.0)
    seen = 0
    async with backend.generate("fake:latest", "x", SamplingParams(max_tokens=1000)) as events:
        async for _ in events:
            seen += 1
            if seen == 3:
                break
    assert seen == 3
    assert trio.current_time() < 1.0


async def test_unknown_model_is_refused_on_entering() -> None:
    backend = FakeStreamBackend(10.0, ["fake:latest"])
    with pytest.raises(ModelNotFound):
        async with backend.chat("smollm2:135m", [], SamplingParams()):
            pass


def test_factory_builds_it_and_refuses_a_bad_rate() -> None:
    backend = make_backend("fake-stream=30", models=["fake:latest"])
    assert isinstance(backend, FakeStreamBackend) and backend.tokens_per_s == 30.0
    for bad in ("fake-stream=0", "fake-stream=abc", "fake-stream=-5"):
        with pytest.raises(UsageError):
            make_backend(bad)
