"""Attack "replay window fill" against a real provider host (fake engine, small window):
requests it refuses anyway take no room, one peer takes at most its share, honest jobs
keep being served, and a replay is still refused."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.protocol import JobParams, ReplayWindow
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.support.attack_replay_window import answer_code, flood, request_bytes

CAPACITY = 64  # small, so that the flood would fill it many times over


async def test_replay_window_fill_by_refused_requests_leaves_honest_jobs_served(
    tmp_path: Path,
) -> None:
    window = ReplayWindow(capacity=CAPACITY)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(
                stack, nursery, FakeBackend(), tmp_path, replay=window,
                config=JobServerConfig(max_concurrency=4, queue=8, price_per_1k=100,
                                      free_jobs_per_minute=10_000))  # the gate is not under test
            pid = provider.net.peer_id
            attacker = await stack.enter_async_context(
                run_host(NetConfig(NodeIdentity.generate())))
            await attacker.connect(provider.net.addrs()[0])

            answers = await flood(attacker, pid, model=FAKE_MODEL, unknown=3 * CAPACITY,
                                  underpriced=CAPACITY, keys=16, parallel=4)
            assert answers == {"unknown_model": 3 * CAPACITY, "price_too_low": CAPACITY}
            assert len(window) == 0  # refused requests took no room

            # Requests it would serve, from one connection under many keys: admitted only
            # up to that connection's share, then "busy"; the window keeps room for others.
            codes = [await answer_code(attacker, pid, request_bytes(
                NodeIdentity.generate(), pid, FAKE_MODEL)) for _ in range(CAPACITY)]
            held = window.held_by(attacker.peer_id)
            assert codes.count("accepted") == held and 0 < held <= CAPACITY // 4
            assert set(codes) == {"accepted", "busy"}
            assert len(window) < CAPACITY

            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            for _ in range(3):
                outcome = await client.run(FAKE_MODEL, "hello", JobParams(max_tokens=4))
                assert outcome.provider == pid and outcome.text

            raw = request_bytes(NodeIdentity.generate(), pid, FAKE_MODEL)
            assert await answer_code(net, pid, raw) == "accepted"
            assert await answer_code(attacker, pid, raw) == "replayed"
            nursery.cancel_scope.cancel()
