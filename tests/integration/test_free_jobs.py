"""Free inference and slot hogging (issue 14, attack 6) on real hosts: a key that never
paid gets one job, only on an idle slot, gives it up to a paying job, and is refused
after taking a result without a receipt."""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.net.compat.inbound_shares import SHARES_ATTR
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    ChatTurn,
    Chunk,
    JobAccept,
    JobParams,
    JobReject,
    JobResult,
    decode,
    encode_frame,
)
from p2pinfer.validator.checker import Verifier
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.support.backends import needs_engine, smollm2_source
from tests.support.raw_jobs import first_answer, read_then_leave, signed_request
from tests.support.waiting import await_until

pytestmark = pytest.mark.network


async def test_a_free_job_gives_its_slot_to_a_paying_job(tmp_path: Path) -> None:
    engine = FakeBackend(tokens=[f"w{i} " for i in range(1_000)], pause_after=2)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path,
                                            config=JobServerConfig(max_concurrency=1, queue=4))
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            engine.pause_after = None
            await client.run(FAKE_MODEL, "pay once", JobParams(max_tokens=2))  # now a payer
            engine.pause_after = 2
            pid, freeloader = provider.net.peer_id, NodeIdentity.generate()
            stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
            await stream.write(encode_frame(signed_request(freeloader, pid, FAKE_MODEL,
                                                           max_tokens=900)))
            assert isinstance(decode(await stream.read_frame(timeout_s=5)).msg, JobAccept)
            await engine.paused.wait()  # the free job holds the only slot
            # A second key without a receipt finds no idle slot: busy.
            other = await first_answer(net, pid, signed_request(NodeIdentity.generate(), pid,
                                                                FAKE_MODEL))
            assert other.expect(JobReject).msg.code == "busy"
            engine.pause_after = None
            paying = await client.run(FAKE_MODEL, "paying", JobParams(max_tokens=3))
            assert paying.text == "w0 w1 w2 " and not paying.failovers
            frames = []
            while True:  # the free job ended busy, mid-stream, without a result
                msg = decode(await stream.read_frame(timeout_s=5)).msg
                frames.append(msg)
                if not isinstance(msg, Chunk):
                    break
            assert isinstance(frames[-1], JobReject) and frames[-1].code == "busy"
            await stream.reset()
            assert "preempted" in [r.outcome for r in provider.server.records]
            nursery.cancel_scope.cancel()


@pytest.mark.engine
@needs_engine
async def test_a_free_embed_job_gives_the_engine_to_a_paying_job_within_one_batch(
        tmp_path: Path) -> None:
    """Attack 82 on real hosts and the real engine: a fresh key's one free job, an embed
    job of 100 long texts, held the engine for all of them (one llama.cpp call; minutes
    on a CPU, ~28 minutes at the request limits on a 2-core VM), and pre-empting it
    waited for that call, so a paying job waited too. Now the engine stops after the
    batch it is decoding: the paying job is served and the free one ends `busy`."""
    engine = EmbeddedBackend([smollm2_source()], embedding=True, n_ctx=512)
    texts = tuple(f"{i} " + "7 1 3 " * 90 for i in range(100))  # a ~1 s batch each here
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            stack.push_async_callback(engine.aclose)
            provider = await start_provider(stack, nursery, engine, tmp_path,
                                            config=JobServerConfig(max_concurrency=1, queue=4))
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, SMOLLM2, 1)
            await client.run(SMOLLM2, "pay once", JobParams(max_tokens=2))  # now a payer
            pid = provider.net.peer_id
            stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
            await stream.write(encode_frame(signed_request(
                NodeIdentity.generate(), pid, SMOLLM2, inputs=texts)))
            assert isinstance(decode(await stream.read_frame(timeout_s=10)).msg, JobAccept)
            await trio.sleep(2)  # the embedding instance loaded and decoding
            with trio.fail_after(45):  # one batch, not the other ~95
                paying = await client.run(SMOLLM2, "Say hi.", JobParams(max_tokens=3))
            assert paying.completion_tokens > 0 and not paying.failovers
            answer = decode(await stream.read_frame(timeout_s=10)).msg
            assert isinstance(answer, JobReject) and answer.code == "busy"
            await stream.reset()
            assert "preempted" in [r.outcome for r in provider.server.records]
            nursery.cancel_scope.cancel()


async def test_a_key_that_took_a_result_unpaid_is_refused_after(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                            config=JobServerConfig(receipt_timeout_s=0.5))
            net, _, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            pid, freeloader = provider.net.peer_id, NodeIdentity.generate()
            stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
            await stream.write(encode_frame(signed_request(freeloader, pid, FAKE_MODEL)))
            while not isinstance(decode(await stream.read_frame(timeout_s=5)).msg, JobResult):
                pass
            await stream.close()  # no receipt
            with trio.fail_after(5):
                while not provider.server.records:
                    await trio.sleep(0.01)
            assert provider.server.records[-1].outcome == "unpaid"
            again = await first_answer(net, pid, signed_request(freeloader, pid, FAKE_MODEL))
            reject = again.expect(JobReject).msg
            assert reject.code == "insufficient_credit" and "no receipt" in reject.message
            nursery.cancel_scope.cancel()


async def test_a_restarted_provider_still_refuses_a_key_that_left_a_job_unpaid(
        tmp_path: Path) -> None:
    """A key that had paid once took an answer and left it unpaid: refused, in memory
    alone. The provider restarted (same key, same files) and took the key back as a
    payer from its ledger's receipts, so one receipt bought an unpaid answer after every
    restart. Now the refusal is journaled in the reputation table and put back."""
    identity = NodeIdentity.generate()
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            config = JobServerConfig(receipt_timeout_s=0.5)
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                            config=config, identity=identity, refusals=book)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            await client.run(FAKE_MODEL, "pay once", JobParams(max_tokens=2))  # a payer now
            pid, key = provider.net.peer_id, client.identity
            stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
            await stream.write(encode_frame(signed_request(key, pid, FAKE_MODEL)))
            while not isinstance(decode(await stream.read_frame(timeout_s=5)).msg, JobResult):
                pass
            await stream.close()  # no receipt
            await await_until(lambda: bool(provider.server.records)
                              and provider.server.records[-1].outcome == "unpaid", 5)
            with trio.fail_after(5):  # journaled off the event loop, right after the refusal
                while [s for s, _, _ in await book.run(book.refusals)] != [
                        f"key:{key.public_key.hex()}"]:
                    await trio.sleep(0.01)
            provider.scope.cancel()  # it crashes, and comes back on another port
            again = await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                         config=config, identity=identity, refusals=book)
            await await_until(lambda: pid not in net.peers(), 10)  # the crash is seen
            await net.connect(again.net.addrs()[0])
            answer = await first_answer(net, pid, signed_request(key, pid, FAKE_MODEL))
            reject = answer.expect(JobReject).msg
            assert reject.code == "insufficient_credit" and "no receipt" in reject.message
            nursery.cancel_scope.cancel()


async def test_a_spot_check_refused_busy_is_not_held_against_the_provider(
    tmp_path: Path,
) -> None:
    engine = FakeBackend(pause_after=1)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            verifier = Verifier(net, client.identity, client, backend=None,
                                models=frozenset(), reputation=book, ledger=None)
            await wait_for_providers(net, FAKE_MODEL, 1)
            pid = provider.net.peer_id
            async with client.job(FAKE_MODEL, "hold the slot", JobParams(max_tokens=5)) as job:
                await job.next_delta()
                await engine.paused.wait()
                # The check comes from a fresh key: no idle slot, so busy; not a failure.
                assert await verifier.check_provider(pid, FAKE_MODEL) is None
                engine.resume.set()
            assert book.get(pid).jobs_failed == 0
            assert provider.server.records[0].outcome == "rejected:busy"
            nursery.cancel_scope.cancel()


async def test_a_paid_job_lets_each_side_s_address_into_the_other_s_reserved_slots(
        tmp_path: Path) -> None:
    # The last inbound slots go to proven peers (net/compat/inbound_shares.py): the
    # provider learns its consumer's address from the receipt that paid, the consumer
    # its provider's from the good job. Loopback counted here, as a public address is.
    counted = {"limit_loopback_inbound": True}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                            net_options=counted)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],),
                                                  net_options=counted)
            await wait_for_providers(net, FAKE_MODEL, 1)
            provider_shares = getattr(provider.net._host.get_network(), SHARES_ATTR)
            consumer_shares = getattr(net._host.get_network(), SHARES_ATTR)
            assert not provider_shares.valued and not consumer_shares.valued
            async with client.job(FAKE_MODEL, [ChatTurn("user", "hi")], JobParams(8)) as job:
                [_ async for _ in job]
            await await_until(lambda: "127.0.0.1" in provider_shares.valued)
            assert "127.0.0.1" in consumer_shares.valued
            nursery.cancel_scope.cancel()


async def test_a_paying_key_that_leaves_before_each_result_is_refused_after(
    tmp_path: Path,
) -> None:
    """Attack 66: a consumer pays only for a result, so a key that paid one receipt (a
    payer from then on) could read each answer and reset the stream before its result:
    nothing owed, nothing held against it. On the code before, 6 of 6 long answers were
    read this way for one 2-token receipt. Now output taken without a result or a
    cancel counts as a result unpaid: the key is refused after its first such job, as
    one that took a result and sent no receipt."""
    engine = FakeBackend(tokens=[f"w{i} " for i in range(1_000)], pause_after=40)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            await client.run(FAKE_MODEL, "pay once", JobParams(max_tokens=2))  # a payer now
            pid, taken, refused = provider.net.peer_id, [], []
            for _ in range(6):
                first = await read_then_leave(net, pid, signed_request(  # leave, unpaid
                    client.identity, pid, FAKE_MODEL, max_tokens=900), chars=40 * 3)
                if not isinstance(first, JobAccept):
                    refused.append(first)
                    continue
                taken.append(first)
                await await_until(lambda: len(provider.server.records) == 1 + len(taken))
            nursery.cancel_scope.cancel()
    assert len(taken) == 1, taken  # 6 on the old code
    assert [(r.code, "no receipt" in r.message) for r in refused] == [  # type: ignore[attr-defined]
        ("insufficient_credit", True)] * 5
    outcomes = [r.outcome for r in provider.server.records]
    assert outcomes == ["completed", "cancelled"] + ["rejected:insufficient_credit"] * 5


async def test_a_key_that_leaves_each_job_once_accepted_is_refused_after(
    tmp_path: Path,
) -> None:
    """Attack 67: an accepted job sets the engine reading its prompt (seconds for a long
    one on a CPU) before any token goes out, and a consumer that left then owed nothing
    and was held to nothing (attack 66 counted only output taken): a paying key could
    keep a provider's engine reading prompts for nothing, its jobs in flight at a time.
    On the code before, 6 of 6 jobs were accepted and left so. Now leaving an accepted
    job without a cancel is a result unpaid whatever came out, and a cancel pays the
    prompt's estimate."""
    engine = FakeBackend(pause_after=0)  # never a token: as a long prompt being read
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, engine, tmp_path)
            net, client, _ = await start_consumer(stack, tmp_path, (provider.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            engine.pause_after = None
            await client.run(FAKE_MODEL, "pay once", JobParams(max_tokens=2))  # a payer now
            engine.pause_after = 0
            pid, answers = provider.net.peer_id, []
            for _ in range(6):
                answer = await first_answer(net, pid, signed_request(
                    client.identity, pid, FAKE_MODEL, max_tokens=900))  # then reset
                answers.append(answer.msg)
                if isinstance(answer.msg, JobAccept):
                    await await_until(lambda: len(provider.server.records) == 1 + len(
                        [a for a in answers if isinstance(a, JobAccept)]))
            nursery.cancel_scope.cancel()
    accepted = [a for a in answers if isinstance(a, JobAccept)]
    assert len(accepted) == 1, (len(accepted), answers)  # 6 on the old code
    assert [getattr(a, "code", None) for a in answers[1:]] == ["insufficient_credit"] * 5


async def test_a_paying_key_is_still_a_payer_after_its_provider_restarts(
    tmp_path: Path,
) -> None:
    """A provider that restarts (a crash, an upgrade) forgot which keys had paid it:
    its paying consumers were new keys again, served one job at a time and only on an
    idle slot until they paid once more. The payers come back from its ledger."""
    engine = FakeBackend(tokens=[f"w{i} " for i in range(1_000)], pause_after=2)
    identity = NodeIdentity.generate()
    config = JobServerConfig(max_concurrency=1, queue=4)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            first = await start_provider(stack, nursery, engine, tmp_path, config=config,
                                         identity=identity)
            net, client, _ = await start_consumer(stack, tmp_path, (first.net.addrs()[0],))
            await wait_for_providers(net, FAKE_MODEL, 1)
            engine.pause_after = None
            await client.run(FAKE_MODEL, "pay once", JobParams(max_tokens=2))
            payer = client.identity.public_key
            assert first.server.gate.is_payer(payer)
            first.scope.cancel()  # the provider's process goes; its ledger file stays
            await await_until(lambda: first.net.peer_id not in net.peers(), timeout_s=10)
            again = await start_provider(stack, nursery, engine, tmp_path, config=config,
                                         identity=identity)
            assert again.ledger.path == first.ledger.path
            assert again.server.gate.is_payer(payer)
            # So its job runs beside a free job that holds the only slot (queued, not busy).
            engine.pause_after = 2
            pid, freeloader = again.net.peer_id, NodeIdentity.generate()
            await await_until(lambda: pid not in net.peers(), 10)  # the crash is seen
            await net.connect(again.net.addrs()[0])
            stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
            await stream.write(encode_frame(signed_request(freeloader, pid, FAKE_MODEL,
                                                           max_tokens=900)))
            assert isinstance(decode(await stream.read_frame(timeout_s=5)).msg, JobAccept)
            await engine.paused.wait()
            engine.pause_after = None
            answer = await first_answer(net, pid, signed_request(client.identity, pid,
                                                                 FAKE_MODEL, max_tokens=2))
            assert isinstance(answer.msg, JobAccept)  # a new key: busy (no idle slot)
            nursery.cancel_scope.cancel()
