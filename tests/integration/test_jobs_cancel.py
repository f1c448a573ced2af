"""A consumer that stops a job it no longer wants (attacks 66 to 68): it sends a signed
JobCancel, the provider stops its engine and answers with a `cancelled` result charging
the tokens it sent and the prompt's estimate, and the consumer pays it; the key stays a
payer there. Real libp2p hosts and SQLite ledgers, fake engines."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.jobs.client import JobClient
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import JobParams
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    Provider,
    charges,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.support.waiting import await_until

pytestmark = pytest.mark.network


async def test_a_consumer_that_leaves_mid_answer_stops_generation_and_pays_what_came(
    tmp_path: Path,
) -> None:
    """Leaving a job's context early (a gateway's HTTP client hanging up does the same)
    asks the provider to stop with a JobCancel (attack 66): the engine stops, the
    provider's `cancelled` result charges the 3 tokens it sent (and the prompt's
    estimate), the consumer pays it, both ledgers hold the charge, and the key stays a
    payer there: its next job is served."""
    endless = FakeBackend(tokens=[f"w{i} " for i in range(10_000)], pause_after=3)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, endless, tmp_path)
            net, client, ledger = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            async with client.job(FAKE_MODEL, "go on", JobParams(max_tokens=5_000)) as job:
                await job.next_delta()
                await endless.paused.wait()
            await endless.exited.wait()  # the engine's context was left: generation stopped
            with trio.fail_after(5):
                while not provider.server.records:
                    await trio.sleep(0.01)
            record = provider.server.records[-1]
            assert (record.outcome, record.completion_tokens) == ("cancelled", 3)
            assert endless.emitted == 3
            assert record.charged > 0
            assert charges(ledger) == charges(provider.ledger) == [bytes.fromhex(record.job_id)]
            endless.pause_after = None
            again = await client.run(FAKE_MODEL, "again", JobParams(max_tokens=2))
            assert again.text == "w0 w1 " and not again.failovers
            nursery.cancel_scope.cancel()


async def test_a_consumer_that_leaves_before_the_first_token_pays_the_prompt(
    tmp_path: Path,
) -> None:
    """Leaving while the engine still reads the prompt (attack 67): the consumer waits for
    the accept on its way, cancels, and pays the `cancelled` result, which charges the
    prompt's estimate and no completion token; the key stays a payer there."""
    reading = FakeBackend(pause_after=0)  # never a token: a long prompt being read
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, reading, tmp_path)
            net, client, ledger = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            async with client.job(FAKE_MODEL, "read this", JobParams(max_tokens=50)) as job, \
                    trio.open_nursery() as waiting:
                waiting.start_soon(job.next_delta)
                await reading.paused.wait()  # accepted, the engine started
                await await_until(lambda: job.price_per_1k is not None)  # the accept read
                waiting.cancel_scope.cancel()  # the client hangs up
            await _prompt_paid_and_still_a_payer(provider, reading, client, ledger)
            nursery.cancel_scope.cancel()


async def test_a_consumer_that_leaves_while_the_accept_is_on_its_way_stops_and_pays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client hanging up in the round trip between the provider's accept and its
    arrival (attack 68): the request went out with the stream's opening, the provider
    accepted and its engine started, and the consumer was cancelled while it waited for
    the protocol's echo (which comes with the accept). It must not reset the stream (an
    accepted job left without a word is one left unpaid, attack 67: the key would be
    refused there 10 minutes); it reads the accept, cancels and pays the prompt's
    estimate, and its next job is served."""
    reading = FakeBackend(pause_after=0)  # never a token: a long prompt being read
    arrived = trio.Event()  # the accept on its way reaches the consumer
    read_answer = NetStream.prefetch

    async def late(self: NetStream, at_most: int, *, timeout_s: float = 30.0) -> None:
        await arrived.wait()
        await read_answer(self, at_most, timeout_s=timeout_s)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, reading, tmp_path)
            net, client, ledger = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            monkeypatch.setattr(NetStream, "prefetch", late)  # the consumer's answer reads
            async with client.job(FAKE_MODEL, "read this", JobParams(max_tokens=50)) as job, \
                    trio.open_nursery() as waiting:
                waiting.start_soon(job.next_delta)
                await reading.paused.wait()  # the provider accepted, its engine started
                assert job.price_per_1k is None  # the accept not read yet
                waiting.cancel_scope.cancel()  # the client hangs up
                nursery.start_soon(_set_soon, arrived)
            monkeypatch.undo()
            await _prompt_paid_and_still_a_payer(provider, reading, client, ledger)
            nursery.cancel_scope.cancel()


async def _prompt_paid_and_still_a_payer(provider: Provider, reading: FakeBackend,
                                         client: JobClient, ledger: Ledger) -> None:
    """The provider's one record is a `cancelled` job charging the prompt's estimate and no
    completion token, both ledgers hold its charge, and the key's next job is served."""
    await await_until(lambda: bool(provider.server.records))
    [record] = provider.server.records
    assert (record.outcome, record.completion_tokens) == ("cancelled", 0)
    assert record.charged > 0  # the prompt's estimate
    assert charges(ledger) == charges(provider.ledger) == [bytes.fromhex(record.job_id)]
    reading.pause_after = None
    again = await client.run(FAKE_MODEL, "again", JobParams(max_tokens=2))
    assert again.provider == provider.net.peer_id and not again.failovers


async def _set_soon(event: trio.Event) -> None:
    await trio.sleep(0.2)
    event.set()
