"""Busy back-off on real hosts: a consumer with more jobs at once than a provider admits
per key (a gateway serving several users under one key) waits out `busy` and gets every
job served, instead of failing them; a provider that stays busy costs a job at most
`ClientConfig.busy_wait_s`."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.errors import AllProvidersFailedError
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.jobs.job_types import ClientConfig, JobOutcome
from p2pinfer.protocol import JobParams
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    start_consumer,
    start_provider,
    wait_for_providers,
)

pytestmark = pytest.mark.network
JOBS = 6  # the provider admits 2 of one key's jobs at once (admission.MIN_JOBS_PER_KEY)


async def test_more_jobs_than_the_provider_admits_per_key_wait_and_all_succeed(
    tmp_path: Path,
) -> None:
    engine = FakeBackend(pause_after=1)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path,
                                            config=JobServerConfig(max_concurrency=1, queue=4))
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            outcomes: list[JobOutcome] = []

            async def one(i: int) -> None:
                outcomes.append(await client.run(FAKE_MODEL, f"job {i}", JobParams(max_tokens=3)))

            async with trio.open_nursery() as jobs:
                for i in range(JOBS):
                    jobs.start_soon(one, i)
                await engine.paused.wait()  # one job holds the slot, one queues, four: busy
                with trio.fail_after(10):
                    while sum(r.outcome == "rejected:busy" for r in provider.server.records) < 4:
                        await trio.sleep(0.05)
                engine.resume.set()
            assert len(outcomes) == JOBS and all(o.text == "t0 t1 t2 " for o in outcomes)
            busy = [f for o in outcomes for f in o.failovers]
            assert busy and {f.code for f in busy} == {"busy"}  # they waited, then ran
            nursery.cancel_scope.cancel()


async def test_a_provider_that_stays_busy_costs_a_job_at_most_the_busy_budget(
    tmp_path: Path,
) -> None:
    engine = FakeBackend()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path,
                                            config=JobServerConfig(max_concurrency=1, queue=4))
            net, client, _ = await start_consumer(
                stack, tmp_path, (provider.net.addrs()[0],),
                config=ClientConfig(busy_wait_s=1.5))
            await wait_for_providers(net, FAKE_MODEL, 1)
            await client.run(FAKE_MODEL, "pay once", JobParams(max_tokens=2))  # now a payer
            engine.pause_after = 1  # never resumed: this key's admitted jobs stay in flight
            for i in range(2):  # this key's two admitted jobs: one runs, one queues
                nursery.start_soon(client.run, FAKE_MODEL, f"hold {i}", JobParams(max_tokens=3))
            await engine.paused.wait()
            started = trio.current_time()
            with pytest.raises(AllProvidersFailedError, match="busy"):
                await client.run(FAKE_MODEL, "third", JobParams(max_tokens=3))
            waited = trio.current_time() - started
            # Waited out the budget (pauses jittered to 0.75-1.25x, the last one clipped
            # to what was left), then failed as before the back-off existed.
            assert 1.0 <= waited < 10
            rejected = sum(r.outcome == "rejected:busy" for r in provider.server.records)
            assert 3 <= rejected <= 1.5 / 0.25 * 1.25 + 2  # one per round, rounds bounded
            nursery.cancel_scope.cancel()
