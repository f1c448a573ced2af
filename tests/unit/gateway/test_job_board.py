"""The job board: streams through a tracked backend become live, then done or failed jobs."""

from __future__ import annotations

import pytest
import trio

from p2pinfer.backends.base import ChatMessage, SamplingParams, TokenDelta
from p2pinfer.errors import EngineResponseError
from p2pinfer.gateway.view import JobMeta
from p2pinfer.node.job_board import JobBoard
from tests.support.gateway import DONE, MODEL, FakeNetworkBackend

HI = [ChatMessage("user", "hi")]


def _board(now: list[int]) -> JobBoard:
    return JobBoard(clock_ms=lambda: now[0], recent_limit=3)


async def test_a_stream_is_live_then_done_with_its_speed_and_metadata() -> None:
    now = [1_000]
    board = _board(now)
    meta = JobMeta("12D3KooWprov", "ab" * 16)
    backend = board.track(FakeNetworkBackend(), role="consumer", meta=lambda: lambda: meta)
    async with backend.chat(MODEL, HI, SamplingParams()) as events:
        (live,) = board.snapshot().live
        assert (live.state, live.role, live.model, live.job_id) == (
            "running", "consumer", MODEL, "ab" * 16)
        first = await events.__anext__()
        assert first == TokenDelta("Hel")
        now[0] += 500
        await events.__anext__()
        assert board.snapshot().live[0].tokens_per_s == 2.0  # 1 token after the first in 0.5 s
        meta = JobMeta("12D3KooWprov", "ab" * 16, charged=77)
        assert await events.__anext__() == DONE
    snapshot = board.snapshot()
    assert snapshot.live == ()
    (done,) = snapshot.recent
    assert (done.state, done.completion_tokens, done.prompt_tokens, done.charged) == (
        "done", 2, 5, 77)
    assert (done.started_at_ms, done.finished_at_ms, done.provider) == (1_000, 1_500,
                                                                       "12D3KooWprov")


async def test_an_engine_error_fails_the_job_with_its_message() -> None:
    board = _board([0])
    fake = FakeNetworkBackend([TokenDelta("x"), EngineResponseError("provider vanished")])
    backend = board.track(fake, role="consumer")
    with pytest.raises(EngineResponseError):
        async with backend.generate(MODEL, "hi", SamplingParams()) as events:
            async for _ in events:
                pass
    (failed,) = board.snapshot().recent
    assert (failed.state, failed.error, failed.completion_tokens) == (
        "failed", "provider vanished", 1)


async def test_a_cancelled_stream_is_a_failed_job_and_recent_jobs_are_bounded() -> None:
    board = _board([0])
    backend = board.track(FakeNetworkBackend(), role="provider", provider="12D3KooWme")
    with trio.CancelScope() as scope:
        async with backend.chat(MODEL, HI, SamplingParams()) as events:
            await events.__anext__()
            scope.cancel()
            await trio.sleep(1)
    (cancelled,) = board.snapshot().recent
    assert (cancelled.state, cancelled.error, cancelled.provider) == (
        "failed", "cancelled", "12D3KooWme")
    for _ in range(4):
        async with backend.chat(MODEL, HI, SamplingParams()) as events:
            async for _ in events:
                pass
    assert [j.state for j in board.snapshot().recent] == ["done"] * 3


async def test_each_job_of_one_request_shows_its_own_charge_not_the_running_total() -> None:
    # OpenAI's `n`: one request, one metadata, jobs one after another; the metadata's
    # charge adds up theirs (the reply's X-P2PInfer-Charged), each board job its own.
    board = _board([0])
    meta = JobMeta("12D3KooWprov", "ab" * 16)
    backend = board.track(FakeNetworkBackend(), role="consumer", meta=lambda: lambda: meta)
    for total in (16, 30):
        async with backend.chat(MODEL, HI, SamplingParams()) as events:
            async for _ in events:
                pass
            meta = JobMeta("12D3KooWprov", "ab" * 16, charged=total)
    assert [j.charged for j in board.snapshot().recent] == [14, 16]
