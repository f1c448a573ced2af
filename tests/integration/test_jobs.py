"""Jobs over real libp2p hosts in one process: the job server, the consumer client,
failover, admission, cancellation and charging (fakes only where a fault must be exact)."""

from __future__ import annotations

import dataclasses
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.base import ChatMessage, SamplingParams, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.errors import InsufficientCreditError, NoProvidersError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.market.entries import peer_account
from p2pinfer.protocol import (
    ChatTurn,
    JobAccept,
    JobParams,
    JobReject,
    JobResult,
    Receipt,
    decode_as,
)
from p2pinfer.testing.tiny_model import TINY_MODEL_NAME, write_tiny_model
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.job_helpers import (
    CREDIT,
    FAKE_MODEL,
    FakeBackend,
    charges,
    cheap_and_dear,
    queued_behind_a_running_job,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.support.raw_jobs import first_answer, forged, signed_request

pytestmark = pytest.mark.network

GREEDY = JobParams(max_tokens=40, temperature=0.0, seed=7)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def tiny_engine(path: Path) -> EmbeddedBackend:
    return EmbeddedBackend([ModelSource(TINY_MODEL_NAME, path)])


async def test_a_job_returns_the_engines_own_text_and_is_charged_once_on_each_side(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = tiny_engine(tiny_model)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path)
            net, client, ledger = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, TINY_MODEL_NAME, 1)

            prompt = [ChatTurn("user", "Say something.")]
            async with client.job("tiny", prompt, GREEDY) as job:
                streamed = [delta.text async for delta in job]
            outcome = job.outcome
            assert outcome is not None

            params = SamplingParams(max_tokens=40, temperature=0.0, seed=7)
            async with engine.chat(TINY_MODEL_NAME, [ChatMessage("user", "Say something.")],
                                   params) as events:
                direct = "".join([e.text async for e in events if isinstance(e, TokenDelta)])
            assert outcome.text == "".join(streamed) == direct
            assert outcome.provider == provider.net.peer_id
            assert outcome.completion_tokens == 40 and outcome.failovers == ()
            assert outcome.path == "direct"
            assert outcome.charged > 0
            # Tokens produced while a write was in flight travelled together.
            assert 1 <= outcome.chunks <= outcome.completion_tokens

            # The signed result and our receipt are real, and name each other.
            result = decode_as(outcome.result, JobResult)
            receipt = decode_as(outcome.receipt, Receipt)
            assert result.signer_peer_id == provider.net.peer_id
            assert receipt.msg.result_hash == result.hash and receipt.msg.amount == outcome.charged

            job_id = bytes.fromhex(outcome.job_id)
            assert charges(ledger) == [job_id]
            consumer_account = peer_account(client.identity.public_key)
            assert ledger.balance(consumer_account) == CREDIT - outcome.charged
            with trio.fail_after(5):
                while charges(provider.ledger) != [job_id]:
                    await trio.sleep(0.01)
            assert provider.server.records[-1].outcome == "completed"
            nursery.cancel_scope.cancel()


async def test_the_first_token_leaves_before_the_engine_makes_the_second(tmp_path: Path) -> None:
    backend = FakeBackend(pause_after=1)  # holds token 2 until the consumer saw token 1
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, backend, tmp_path)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            async with client.job(FAKE_MODEL, "go", JobParams(max_tokens=5)) as job:
                first = await job.next_delta()
                assert first is not None and first.text == "t0 "
                backend.resume.set()
                rest = [d.text async for d in job]
            assert "".join([first.text, *rest]) == "t0 t1 t2 t3 t4 "
            nursery.cancel_scope.cancel()


async def test_a_provider_dying_mid_answer_is_failed_over_and_the_job_charged_once(
    tmp_path: Path,
) -> None:
    crashing = FakeBackend(pause_after=3)
    healthy = FakeBackend()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            two = await cheap_and_dear(stack, nursery, tmp_path, cheap=crashing, dear=healthy,
                                       via_cheap=True)
            cheap, dear, client, ledger = two.cheap, two.dear, two.client, two.ledger

            async def crash_when_paused() -> None:
                await crashing.paused.wait()
                cheap.scope.cancel()  # the whole host goes, as a killed process would

            nursery.start_soon(crash_when_paused)
            outcome = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=8))
            assert outcome.text == "".join(f"t{i} " for i in range(8))
            assert outcome.provider == dear.net.peer_id
            assert [f.provider for f in outcome.failovers] == [cheap.net.peer_id]
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            assert charges(cheap.ledger) == []
            nursery.cancel_scope.cancel()


async def test_a_provider_dripping_its_answer_is_left_under_the_pace_floor_and_not_paid(
    tmp_path: Path,
) -> None:
    """Attack 33: the cheapest provider, proven by a job it served, then answers at a
    crawl (here 2 tokens a second; a token every 59 s passes the chunk timeout). Without
    the floor the job waits it out; with it (4 a second after a 1 s grace) the job goes
    to the next provider, the dripper is blamed, gets nothing, and ranks last for a while
    (the next job does not try it first)."""
    dripping = FakeBackend(tokens=[f"d{i} " for i in range(10)], delay_s=0.5)
    floor = ClientConfig(min_tokens_per_s=4.0, pace_grace_s=1.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            two = await cheap_and_dear(stack, nursery, tmp_path, cheap=dripping,
                                       config=dataclasses.replace(floor, min_tokens_per_s=0))
            client, ledger = two.client, two.ledger
            waited = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=10))
            assert (waited.provider, waited.failovers) == (two.cheap.net.peer_id, ())
            assert waited.text == "".join(f"d{i} " for i in range(10))  # all 4.5 s of it

            client.config, served = floor, dripping.emitted
            outcome = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=10))
            assert outcome.provider == two.dear.net.peer_id
            assert outcome.text == "".join(f"t{i} " for i in range(10))
            [slow] = outcome.failovers
            assert slow.provider == two.cheap.net.peer_id and "too slow" in slow.reason
            assert slow.code == "too_slow"
            assert dripping.emitted - served < 10  # left before its answer ended
            assert charges(ledger) == [bytes.fromhex(j) for j in (waited.job_id, outcome.job_id)]
            assert charges(two.cheap.ledger) == [bytes.fromhex(waited.job_id)]
            # Still the cheapest and proven, but tried last for a while: not tried first.
            after = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=10))
            assert (after.provider, after.failovers) == (two.dear.net.peer_id, ())
            nursery.cancel_scope.cancel()


async def test_an_unproven_provider_that_never_starts_holds_a_job_seconds_not_minutes(
    tmp_path: Path,
) -> None:
    """Attack 76: a fresh provider priced lowest accepts a job and never sends a token
    (or never accepts). An unproven provider is tried first by every job of a new
    consumer, and by one job in 8 of every other (exploration), and the job waited out
    the first-chunk timeout (120 s) or the accept timeout (60 s) before it failed over:
    fresh keys are free, so fakes added minutes to jobs at will. Now a provider this
    consumer has not been served by yet gets `unproven_accept_timeout_s` (10 s) and
    `unproven_first_chunk_timeout_s` (30 s; 1 s here), is then left as too slow (blamed,
    ranked last for 5 minutes) and the job goes on to the next provider."""
    stalled = FakeBackend(pause_after=0)  # accepts, never a token
    quick = ClientConfig(unproven_first_chunk_timeout_s=1.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            two = await cheap_and_dear(stack, nursery, tmp_path, cheap=stalled, config=quick)
            started = trio.current_time()
            outcome = await two.client.run(FAKE_MODEL, "go", JobParams(max_tokens=4))
            took = trio.current_time() - started
            again = await two.client.run(FAKE_MODEL, "go", JobParams(max_tokens=4))
            nursery.cancel_scope.cancel()
    assert outcome.provider == two.dear.net.peer_id and took < 20, took  # 120 s before
    [left] = outcome.failovers
    assert left.provider == two.cheap.net.peer_id and left.code == "too_slow", left
    assert "no first token" in left.reason
    assert (again.provider, again.failovers) == (two.dear.net.peer_id, ())  # ranked last


async def test_a_provider_measured_slow_ranks_behind_a_faster_dearer_one(tmp_path: Path) -> None:
    """The cheap provider answers at 4 tokens a second, above the pace floor: once both
    have served a job (the second explores the other one), the pace this consumer
    measured ranks the dear one (3x the price, far faster) first."""
    slow = FakeBackend(tokens=[f"s{i} " for i in range(10)], delay_s=0.25)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            first = await start_provider(stack, nursery, slow, tmp_path,
                                         config=JobServerConfig(price_per_1k=100))
            second = await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                          config=JobServerConfig(price_per_1k=300),
                                          bootstrap=(first.net.addrs()[0],))
            net, client, _ = await start_consumer(stack, tmp_path, (first.net.addrs()[0],),
                                                  config=ClientConfig(explore_every=2))
            await wait_for_providers(net, FAKE_MODEL, 2)
            served = [(await client.run(FAKE_MODEL, "go", JobParams(max_tokens=10))).provider
                      for _ in range(3)]
            cheap, dear = first.net.peer_id, second.net.peer_id
            assert set(served[:2]) == {cheap, dear}  # one ranked first, one explored
            assert served[2] == dear
            ranked = await client.candidates(FAKE_MODEL)
            assert [c.peer_id for c in ranked] == [dear, cheap]
            assert ranked[1].price_per_1k < ranked[0].price_per_1k and ranked[1].proven
            assert ranked[1].observed_tps is not None and 2 < ranked[1].observed_tps < 6
            nursery.cancel_scope.cancel()


async def test_a_provider_that_cannot_be_dialled_is_not_tried_first_by_the_next_jobs(
    tmp_path: Path,
) -> None:
    # Killed providers stay in catalogs until their adverts expire; at 50 nodes under
    # churn every later job tried the dead cheap one first (40 failovers, 14 kills).
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            two = await cheap_and_dear(stack, nursery, tmp_path)
            cheap, dear, net, client = two.cheap, two.dear, two.net, two.client
            first = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=2))
            assert first.provider == cheap.net.peer_id and first.failovers == ()
            cheap.scope.cancel()  # the whole host goes, as a killed process would
            with trio.fail_after(10):
                while cheap.net.peer_id in net.peers():
                    await trio.sleep(0.05)
            second = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=2))
            assert second.provider == dear.net.peer_id
            assert [f.provider for f in second.failovers] == [cheap.net.peer_id]
            assert cheap.net.peer_id in {e.peer_id for e in net.catalog.providers(FAKE_MODEL)}
            for _ in range(3):
                later = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=2))
                assert later.provider == dear.net.peer_id and later.failovers == ()
            nursery.cancel_scope.cancel()


async def test_a_provider_whose_breaker_is_open_gets_no_job_until_its_cooldown_ends(
    tmp_path: Path,
) -> None:
    # The breaker is read with the scores when providers are ranked; only a closed one
    # lets a job through without asking again, so an open one is still asked and refuses
    # (the job goes on to the next provider, which is no failover: nothing was sent).
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            two = await cheap_and_dear(stack, nursery, tmp_path)
            caught, other, client = two.cheap, two.dear, two.client
            now = [1_000_000]
            book = stack.enter_context(ReputationBook.open(tmp_path / "reputation.sqlite3",
                                                           clock=lambda: now[0]))
            client.reputation = book
            assert (await client.run(FAKE_MODEL, "go", JobParams(max_tokens=2))).provider \
                == caught.net.peer_id  # the cheaper one, while nothing is known against it
            for _ in range(20):  # failures until its breaker opens; cheap, it still ranks first
                rec = book.record(caught.net.peer_id, Outcome.JOB_FAILED)
                if rec.breaker.state is BreakerState.OPEN:
                    break
            assert rec.breaker.state is BreakerState.OPEN
            assert client.order_for_job(await client.candidates(FAKE_MODEL))[0].peer_id \
                == caught.net.peer_id
            cooldown = rec.breaker.cooldown_ms
            for _ in range(3):
                out = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=2))
                assert out.provider == other.net.peer_id and out.failovers == ()
            assert caught.backend.entered == 1  # type: ignore[attr-defined]
            now[0] += cooldown  # cooled down: one probe job goes to it again
            out = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=2))
            assert out.provider == caught.net.peer_id
            nursery.cancel_scope.cancel()


async def test_a_provider_busy_beyond_its_queue_says_busy_and_the_job_goes_elsewhere(
    tmp_path: Path,
) -> None:
    stuck = FakeBackend(pause_after=1)
    spare = FakeBackend()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            full = await start_provider(stack, nursery, stuck, tmp_path, config=JobServerConfig(
                price_per_1k=100, max_concurrency=1, queue=0))
            other = await start_provider(stack, nursery, spare, tmp_path,
                                         config=JobServerConfig(price_per_1k=900),
                                         bootstrap=(full.net.addrs()[0],))
            net, client, _ = await start_consumer(stack, tmp_path, (full.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 2)

            async with client.job(FAKE_MODEL, "first", JobParams(max_tokens=4)) as holding:
                await holding.next_delta()  # the cheap provider's only slot is taken
                assert holding.provider == full.net.peer_id
                second = await client.run(FAKE_MODEL, "second", JobParams(max_tokens=4))
                assert second.provider == other.net.peer_id
                [busy] = second.failovers
                assert (busy.provider, busy.code) == (full.net.peer_id, "busy")
                stuck.resume.set()
                assert "".join([d.text async for d in holding]) == "t1 t2 t3 "
            nursery.cancel_scope.cancel()


async def test_a_queued_job_waits_for_the_slot_instead_of_being_refused(tmp_path: Path) -> None:
    stuck = FakeBackend(pause_after=1)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, stuck, tmp_path,
                                            config=JobServerConfig(max_concurrency=1, queue=1))
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            await queued_behind_a_running_job(nursery, provider, client, stuck)
            nursery.cancel_scope.cancel()


async def test_a_job_the_consumer_cannot_pay_for_is_not_sent(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],),
                                                  credit=0)
            await wait_for_providers(net, FAKE_MODEL, 1)
            with pytest.raises(InsufficientCreditError):
                await client.run(FAKE_MODEL, "go", JobParams(max_tokens=4))
            assert provider.server.records == type(provider.server.records)(maxlen=500)
            nursery.cancel_scope.cancel()


async def test_a_model_nobody_serves_has_no_providers(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path)
            net, client, _ = await start_consumer(
                stack, tmp_path, (provider.net.addrs()[0],),
                config=ClientConfig(discovery_timeout_s=1.0))
            await wait_for_providers(net, FAKE_MODEL, 1)
            with pytest.raises(NoProvidersError):
                await client.run("nobody:serves", "go", JobParams(max_tokens=4))
            nursery.cancel_scope.cancel()


async def test_forged_replayed_and_misbound_requests_are_rejected_with_their_codes(
    tmp_path: Path,
) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path)
            net, _, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            pid, consumer = provider.net.peer_id, NodeIdentity.generate()

            bad = await first_answer(net, pid, forged(signed_request(consumer, pid, FAKE_MODEL)))
            assert bad.expect(JobReject).msg.code == "bad_signature"

            raw = signed_request(consumer, pid, FAKE_MODEL)
            assert isinstance((await first_answer(net, pid, raw)).msg, JobAccept)
            again = await first_answer(net, pid, raw)
            assert again.expect(JobReject).msg.code == "replayed"

            elsewhere = signed_request(consumer, NodeIdentity.generate().peer_id, FAKE_MODEL)
            misbound = await first_answer(net, pid, elsewhere)
            assert misbound.expect(JobReject).msg.code == "wrong_provider"

            unknown = await first_answer(net, pid, signed_request(consumer, pid, "other:1b"))
            assert unknown.expect(JobReject).msg.code == "unknown_model"
            nursery.cancel_scope.cancel()
