"""A provider whose engine fails, on real hosts: the engine starts while the Accept is
being written (job_server._generate), so a failure can come before, during or after that
write. Whichever, the consumer gets the Accept whole, then a Reject saying the engine
failed; nobody is charged; the provider serves the next job as if nothing happened."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.base import SamplingParams, StreamEvent
from p2pinfer.errors import AllProvidersFailedError, EngineUnavailable
from p2pinfer.protocol import JobParams
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    charges,
    start_consumer,
    start_provider,
    wait_for_providers,
)

pytestmark = pytest.mark.network


class FailingEngineFake(FakeBackend):
    """A fake engine that fails after `fail_after` tokens (0: at once) while `failing`."""

    def __init__(self, fail_after: int) -> None:
        super().__init__()
        self.fail_after = fail_after
        self.failing = True

    @asynccontextmanager
    async def _stream(self, params: SamplingParams) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        if not self.failing:
            async with super()._stream(params) as events:
                yield events
            return
        self.entered += 1
        yield self._failing_events(params)

    async def _failing_events(self, params: SamplingParams) -> AsyncGenerator[StreamEvent, None]:
        async for event in super()._events(params):
            if self.emitted > self.fail_after:
                break
            yield event
        raise EngineUnavailable("the GPU fell off the bus")


@pytest.mark.parametrize("fail_after", [0, 2])
async def test_an_engine_failure_is_rejected_after_a_whole_accept_and_never_charged(
    tmp_path: Path, fail_after: int
) -> None:
    engine = FailingEngineFake(fail_after)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path)
            net, client, ledger = await start_consumer(stack, tmp_path,
                                                       (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            with pytest.raises(AllProvidersFailedError, match="the engine failed"):
                await client.run(FAKE_MODEL, "hello", JobParams(max_tokens=5))
            assert engine.entered >= 1
            assert [r.outcome for r in provider.server.records] == ["failed"]
            assert charges(ledger) == [] and charges(provider.ledger) == []
            engine.failing = False  # the same provider, the same connection: served
            outcome = await client.run(FAKE_MODEL, "hello", JobParams(max_tokens=3))
            assert outcome.text == "t0 t1 t2 "
            assert len(charges(ledger)) == 1
            nursery.cancel_scope.cancel()
