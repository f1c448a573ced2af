"""Spot-checks over real libp2p hosts with the tiny GGUF model on the embedded engine:
a validator catches a `garbage` provider (its breaker opens), and a forged report or
a true-looking one from a peer with no reputation cannot open an honest provider's
breaker at the receiver."""

from __future__ import annotations

import random
from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.net.compat.multistream_listener import ECHO_WITH_ANSWER
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import JOB_PROTOCOL_ID, ChatTurn, JobParams
from p2pinfer.testing.faults import parse_fault
from p2pinfer.testing.tiny_model import write_tiny_model
from p2pinfer.validator.checker import Verifier
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.compare import compare_outputs
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.reports import build_report
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    start_consumer,
    start_provider,
    wait_for_providers,
)

pytestmark = pytest.mark.network

MODEL = "tiny:latest"


def engine(tmp: Path) -> EmbeddedBackend:
    path = tmp / "tiny.gguf"
    if not path.exists():
        write_tiny_model(path, seed=0)
    return EmbeddedBackend([ModelSource(MODEL, path)])


async def test_validator_catches_a_garbage_provider_and_its_breaker_opens(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            cheat = await start_provider(stack, nursery, engine(tmp_path), tmp_path,
                                         config=JobServerConfig(fault=parse_fault("garbage")))
            net, client, ledger = await start_consumer(stack, tmp_path, (cheat.net.addrs()[0],))
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            own = engine(tmp_path)
            verifier = Verifier(net, client.identity, client, backend=own,
                                models=frozenset({MODEL}), reputation=book, ledger=ledger,
                                config=VerifyConfig(check_max_tokens=64))
            nursery.start_soon(verifier.run)
            await wait_for_providers(net, MODEL, 1)
            verdicts = []
            for _ in range(10):
                result = await verifier.check_provider(cheat.net.peer_id, MODEL)
                assert result is not None
                verdicts.append(result.comparison.verdict.value)
                if book.get(cheat.net.peer_id).breaker.state is BreakerState.OPEN:
                    break
            # Each check job came from a host of its own: a fresh key signed the request and
            # owned the connection, never the validator's identity (nor its host).
            records = cheat.server.records
            consumers = {r.consumer for r in records}
            assert all(r.connection == r.consumer for r in records)
            assert not consumers & {client.identity.peer_id, net.peer_id}
            assert len(consumers) == len(verdicts)
            rec = book.get(cheat.net.peer_id)
            allowed = book.allow(cheat.net.peer_id)
            nursery.cancel_scope.cancel()
    # A check whose texts are too short to judge is INCONCLUSIVE and counts for nobody
    # (the tiny model sometimes stops after a byte or two); every other one must fail.
    assert set(verdicts) <= {"inconsistent", "inconclusive"}
    assert rec.breaker.state is BreakerState.OPEN
    assert rec.checks_failed == verdicts.count("inconsistent") > 0
    assert not allowed


async def test_forged_and_unreputed_reports_cannot_open_an_honest_breaker(
    tmp_path: Path,
) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            honest = await start_provider(stack, nursery, engine(tmp_path), tmp_path)
            net, client, ledger = await start_consumer(stack, tmp_path, (honest.net.addrs()[0],))
            await wait_for_providers(net, MODEL, 1)
            params = JobParams(max_tokens=24, temperature=0.0, top_k=1, seed=7)
            outcomes = [await client.run(MODEL, [ChatTurn("user", p)], params)
                        for p in ("Why is the sky blue?", "Name three planets.")]
            # A receiver without the model: it must rely on the reports alone.
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            receiver = Verifier(net, client.identity, client, backend=None, models=frozenset(),
                                reputation=book, ledger=ledger)
            liar = NodeIdentity.generate()  # no reputation with the receiver
            bogus = "lorem " * 20
            said = []
            for outcome in outcomes:
                lie = compare_outputs(bogus, outcome.text)
                # True-looking: real signed evidence, honest output, a "fail" verdict.
                report = build_report(liar, request=outcome.request, result=outcome.result,
                                      provider_output=outcome.text, reference_output=bogus,
                                      reference_digest="", comparison=lie,
                                      now_ms=client.clock_ms())
                assert report.msg.verdict == "fail"
                said.append(await receiver.receive_report(report.raw))
                # Forged: the "provider output" swapped for garbage (hash no longer matches).
                forged = build_report(liar, request=outcome.request, result=outcome.result,
                                      provider_output=bogus, reference_output=bogus,
                                      reference_digest="", comparison=lie,
                                      now_ms=client.clock_ms())
                said.append(await receiver.receive_report(forged.raw))
                for _ in range(5):  # repeating it changes nothing
                    said.append(await receiver.receive_report(report.raw))
            # A receiver with the model re-runs the job: the report is found false.
            own = engine(tmp_path)
            checker_book = stack.enter_context(ReputationBook.open(tmp_path / "rep2.sqlite3"))
            checker = Verifier(net, client.identity, client, backend=own,
                               models=frozenset({MODEL}), reputation=checker_book, ledger=ledger)
            rechecked = await checker.receive_report(report.raw)
            rec = book.get(honest.net.peer_id)
            checked_honest = checker_book.get(honest.net.peer_id)
            checked_liar = checker_book.get(liar.peer_id)
            nursery.cancel_scope.cancel()
    assert "ignored: reporter untrusted" in said and "ignored: forged or stale" in said
    assert not any(s.startswith("counted") for s in said)
    assert rec.breaker.state is BreakerState.CLOSED and rec.checks_failed == 0
    assert rechecked == "re-checked: report was false"
    assert checked_honest.checks_failed == 0 and checked_liar.checks_failed == 1


async def test_stalling_fakes_cannot_hold_a_validators_checks(tmp_path: Path) -> None:
    """Attack 78: a validator ran its check jobs one after another, on targets drawn from
    every provider in its catalog (new ones, on probation, more often). A fresh provider
    that accepts a check and never sends a token held the loop for the whole first-chunk
    wait (120 s) each time it was drawn: three such fakes beside one honest provider and
    the honest one was checked once at most. Now checks run up to
    MAX_CHECKS_IN_FLIGHT at once, a check host gives a provider the shorter first-token
    wait of one it was never served by (attack 76; a late accept is not a failed check),
    and a provider whose breaker is open here is not drawn."""
    quick = ClientConfig(unproven_first_chunk_timeout_s=1.0)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            honest = await start_provider(stack, nursery, FakeBackend(), tmp_path)
            for _ in range(3):  # accept, then never a token
                await start_provider(stack, nursery, FakeBackend(pause_after=0), tmp_path,
                                     bootstrap=(honest.net.addrs()[0],))
            net, client, _ = await start_consumer(stack, tmp_path, (honest.net.addrs()[0],),
                                                  config=quick)
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            verifier = Verifier(net, client.identity, client, backend=FakeBackend(),
                                models=frozenset({FAKE_MODEL}), reputation=book, ledger=None,
                                config=VerifyConfig(validator=True, check_interval_s=0.2,
                                                    check_max_tokens=8),
                                rng=random.Random(3))
            await wait_for_providers(net, FAKE_MODEL, 4)
            nursery.start_soon(verifier.run)
            # Three checks of the honest one took 2-10 s on a quiet 2-core VM; a fixed 10 s
            # window failed now and then, so the wait ends at the third or after 40 s.
            with trio.move_on_after(40):
                while len(honest.server.records) < 3:
                    await trio.sleep(0.05)
            checked = len(honest.server.records)
            nursery.cancel_scope.cancel()
    assert checked >= 3, checked  # at most 1 on the old code: the loop sat on a staller


async def test_a_check_the_provider_never_accepts_is_no_failed_job(tmp_path: Path) -> None:
    # A check host has proven nobody, so attack 76's waits apply; a late accept may be an
    # honest queue (with settlement a check is a paying job), so it fails no check.
    async def silent(stream: NetStream) -> None:
        await stream.read_frame(timeout_s=10)
        await trio.sleep(30)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            provider = await start_provider(stack, nursery, FakeBackend(), tmp_path)
            provider.net.set_stream_handler(JOB_PROTOCOL_ID, silent)
            # The echo goes out at once, as for a job waiting in a queue (the job server
            # sends it with its first answer).
            getattr(provider.net._host.get_mux(), ECHO_WITH_ANSWER).discard(JOB_PROTOCOL_ID)
            net, client, _ = await start_consumer(
                stack, tmp_path, (provider.net.addrs()[0],),
                config=ClientConfig(unproven_accept_timeout_s=1.0))
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            verifier = Verifier(net, client.identity, client, backend=FakeBackend(),
                                models=frozenset({FAKE_MODEL}), reputation=book, ledger=None)
            await wait_for_providers(net, FAKE_MODEL, 1)
            started = trio.current_time()
            result = await verifier.check_provider(provider.net.peer_id, FAKE_MODEL)
            took = trio.current_time() - started
            failed = book.get(provider.net.peer_id).jobs_failed
            nursery.cancel_scope.cancel()
    assert result is None and took < 10, took  # 60 s: the accept's wait before attack 76
    assert failed == 0
