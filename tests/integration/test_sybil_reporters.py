"""Issue 14, item 4: Sybil reporters cannot open an honest provider's breaker.

Four Sybil providers serve a consumer-only node well (so its reputation table holds a
good track record for each), then each reports an honest provider's correct answer as
a failure. The consumer cannot re-run the job (it has no engine): before the fix each
report counted with the Sybil's score halved, and four of them opened the honest
provider's breaker at that consumer.

In-process real hosts (libp2p, job server, SQLite reputation table) rather than the
shared e2e testnet: the premise is the consumer's history with the Sybils, which needs
a consumer-only node whose reputation table the test can read and whose jobs go to
chosen providers; the testnet's nodes all serve the model (so they would re-run the
report rather than weigh it), and the attack itself is one gossip message per Sybil,
which `Verifier.receive_report` takes exactly as the topic handler would.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.jobs.job_types import JobOutcome
from p2pinfer.protocol import ChatTurn, JobParams
from p2pinfer.testing.faults import parse_fault
from p2pinfer.testing.tiny_model import write_tiny_model
from p2pinfer.validator.checker import TargetedClient, Verifier
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.compare import compare_outputs
from p2pinfer.verify.reports import build_report
from p2pinfer.verify.reputation import Outcome
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
SYBILS = 4
JOBS_EACH = 5  # well past any "track record" a reporter could be asked for


def engine(tmp: Path) -> EmbeddedBackend:
    path = tmp / "tiny.gguf"
    if not path.exists():
        write_tiny_model(path, seed=0)
    return EmbeddedBackend([ModelSource(MODEL, path)])


async def test_sybil_reporters_cannot_open_an_honest_breaker(tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            honest = await start_provider(stack, nursery, engine(tmp_path), tmp_path)
            boot = (honest.net.addrs()[0],)
            sybils = [await start_provider(stack, nursery, FakeBackend(), tmp_path,
                                           bootstrap=boot) for _ in range(SYBILS)]
            net, plain, ledger = await start_consumer(stack, tmp_path, boot)
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            client = TargetedClient(net, plain.identity, ledger=ledger, reputation=book)
            await wait_for_providers(net, FAKE_MODEL, SYBILS)
            await wait_for_providers(net, MODEL, 1)
            # The Sybils earn a spotless record at the consumer by serving it.
            for sybil in sybils:
                client.target = sybil.net.peer_id
                for i in range(JOBS_EACH):
                    await client.run(FAKE_MODEL, f"job {i}", JobParams(max_tokens=8))
            client.target = honest.net.peer_id
            params = JobParams(max_tokens=24, temperature=0.0, top_k=1, seed=7)
            outcome = await client.run(MODEL, [ChatTurn("user", "Why is the sky blue?")], params)
            # The consumer-only receiver: no engine, so it cannot re-run anything.
            receiver = Verifier(net, plain.identity, client, backend=None, models=frozenset(),
                                reputation=book, ledger=ledger)
            bogus = "lorem " * 20
            said = []
            for sybil in sybils:
                report = build_report(
                    sybil.net.config.identity, request=outcome.request, result=outcome.result,
                    provider_output=outcome.text, reference_output=bogus, reference_digest="",
                    comparison=compare_outputs(bogus, outcome.text), now_ms=client.clock_ms())
                assert report.msg.verdict == "fail"
                said.append(await receiver.receive_report(report.raw))
            sybil_records = [book.get(s.net.peer_id) for s in sybils]
            rec = book.get(honest.net.peer_id)
            allowed = book.allow(honest.net.peer_id)
            nursery.cancel_scope.cancel()
    # The premise: every Sybil has the track record the old rule asked of a reporter.
    assert all(r.jobs_ok == JOBS_EACH and r.score_pm >= 950 for r in sybil_records)
    # Serving jobs earns no weight as a reporter: nothing was counted.
    assert said == ["ignored: reporter untrusted"] * SYBILS
    assert rec.breaker.state is BreakerState.CLOSED and allowed
    assert rec.checks_failed == 0 and rec.score_pm >= 950


async def test_one_fraud_proof_earns_its_reporter_one_confirmation(tmp_path: Path) -> None:
    """Earned weight cannot be farmed by re-signing one real proof (or handing it to
    other Sybils): a receiver re-runs a proof once and credits its first reporter once."""
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            cheat = await start_provider(stack, nursery, engine(tmp_path), tmp_path,
                                         config=JobServerConfig(fault=parse_fault("garbage")))
            net, plain, ledger = await start_consumer(stack, tmp_path, (cheat.net.addrs()[0],))
            await wait_for_providers(net, MODEL, 1)
            book = stack.enter_context(ReputationBook.open(tmp_path / "rep.sqlite3"))
            # It had served this node well before it cheated: convicting it earns weight
            # (a stranger's fraud earns none: attack 81).
            book.record(cheat.net.peer_id, Outcome.JOB_SUCCEEDED)
            receiver = Verifier(net, plain.identity, plain, backend=engine(tmp_path),
                                models=frozenset({MODEL}), reputation=book, ledger=ledger)
            reporter, other = NodeIdentity.generate(), NodeIdentity.generate()
            params = JobParams(max_tokens=64, temperature=0.0, top_k=1, seed=7)

            def report(signer: NodeIdentity, outcome: JobOutcome) -> bytes:
                bogus = "lorem ipsum " * 20
                return build_report(
                    signer, request=outcome.request, result=outcome.result,
                    provider_output=outcome.text, reference_output=bogus, reference_digest="",
                    comparison=compare_outputs(bogus, outcome.text),
                    now_ms=plain.clock_ms()).raw

            first = ""
            for prompt in ("Why is the sky blue?", "Name three planets.", "Tell a story."):
                outcome = await plain.run(MODEL, [ChatTurn("user", prompt)], params)
                first = await receiver.receive_report(report(reporter, outcome))
                if first == "re-checked: fraud confirmed":
                    break
            assert first == "re-checked: fraud confirmed"  # garbage, once long enough
            await trio.sleep(0.01)  # a later issued_at: another message, the same proof
            again = [await receiver.receive_report(report(signer, outcome))
                     for signer in (reporter, reporter, other)]
            confirmed = [book.reporter(r.peer_id).confirmed for r in (reporter, other)]
            nursery.cancel_scope.cancel()
    assert again == ["ignored: already judged"] * 3
    assert confirmed == [1, 0]
