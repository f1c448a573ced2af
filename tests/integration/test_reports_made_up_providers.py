"""Attack 50: `fail` reports about made-up providers spend the re-run budget and grow the
tables of every node that serves the model.

A report's evidence is only signatures, so an attacker makes one offline about a
provider key of its own that never advertised and never served anyone, its "output"
garbage, within every limit of the receivers (attack 3's within-limits reports). A
receiver that serves the model used to re-run each on its engine, within the engine
budget all reporters share (10 s a minute), so fresh reporter keys (6 re-runs a minute
each) could spend that budget on nothing, and a genuine report about a real cheater
waited; each re-run "confirmed fraud" and wrote a reputation row and a slash entry for
the made-up key. Now a report is re-run (or counted) only about a provider in the
receiver's catalog, a provider already excluded at the receiver (breaker open) is not
re-run again, and a slash without a chain takes the stake the receiver's ledger credits
(none: no entry).

A real host with a report receiver serving the real embedded engine (a tiny generated
model), real SQLite reputation table and ledger; the reports are handed to it as the
topic's handler would.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.stake import sign_stake
from p2pinfer.net.adverts import verify_advert
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.testing.tiny_model import write_tiny_model
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.engine_gate import EngineGate
from p2pinfer.verify.report_receiver import ReportReceiver
from p2pinfer.verify.reports import RecheckBudget, ReporterRate
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.net_helpers import make_advert, now_ms
from tests.support.attack_reports import ReportShape, made_up_report

pytestmark = pytest.mark.network

MODEL = "tiny:latest"
STAKE = 3_000_000  # what the receiver's ledger credits the known provider with


#: Within every limit of a receiver (and a tiny model's context): greedy, 8 tokens.
SMALL = ReportShape(max_tokens=8, temperature=0.0, output_chars=16, prompt="The sky is")


def made_up(provider: NodeIdentity, reporter: NodeIdentity | None = None) -> bytes:
    """A within-limits `fail` report about `provider`, whose output is garbage, made
    offline by one person holding every key in it (tests/support/attack_reports.py)."""
    return made_up_report(SMALL, now_ms(), MODEL, provider, reporter).raw


def receiver(net: NetHost, engine: EmbeddedBackend, book: ReputationBook,
             ledger: Ledger | None) -> ReportReceiver:
    return ReportReceiver(
        net, backend=engine, models=frozenset({MODEL}), book=book, ledger=ledger,
        config=VerifyConfig(), clock_ms=now_ms, gate=EngineGate(),
        db=trio.CapacityLimiter(1), engine=trio.CapacityLimiter(1))


async def test_reports_about_made_up_providers_spend_no_engine_and_grow_no_table(
    tmp_path: Path,
) -> None:
    path = tmp_path / "tiny.gguf"
    write_tiny_model(path, seed=0)
    engine = EmbeddedBackend([ModelSource(MODEL, path)])
    identity, known = NodeIdentity.generate(), NodeIdentity.generate()
    said: Counter[str] = Counter()
    with trio.fail_after(120), \
            Ledger.open(tmp_path / "ledger.sqlite3", identity) as ledger, \
            ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        ledger.record_stake(sign_stake(known, STAKE, now_ms()))
        async with run_host(NetConfig(identity)) as net:
            node = receiver(net, engine, book, ledger)
            net.catalog.admit(verify_advert(make_advert(known, 1, models=((MODEL, 100),))))
            budget = node.budget.level_ms(now_ms())
            for _ in range(8):  # eight reporters, eight providers no one ever heard of
                said[await node.receive_report(made_up(NodeIdentity.generate()))] += 1
            budget_after_made_up = node.budget.level_ms(now_ms())
            # Reports about a provider the node knows are still re-run, until it is
            # excluded here (two confirmed frauds open its breaker).
            reporter = NodeIdentity.generate()
            confirmed = [await node.receive_report(made_up(known, reporter)) for _ in range(3)]
        rows = [rec.peer_id for rec in book.peers()]
        # Its stake is credited here, so convicting it earned the reporter a confirmation
        # (attack 81); the first slash took all of it, so the second earned nothing.
        earned = book.reporter(reporter.peer_id).confirmed
        slashes = [e.body for e in ledger.entries() if e.kind == "slash"]
        await engine.aclose()
    assert said == {"not re-checked: provider not in the catalog": 8}, said
    assert budget_after_made_up >= budget  # no engine time went to them
    assert confirmed == ["re-checked: fraud confirmed"] * 2 + [
        "not re-checked: provider already excluded"]
    assert earned == 1
    # One reputation row for the provider (reporters of re-run reports are kept in the
    # reporters table); its first slash takes the stake this ledger credits it with,
    # and the second finds none left.
    assert rows == [known.peer_id]
    assert [(s.provider, s.amount) for s in slashes] == [  # type: ignore[attr-defined]
        (known.public_key, STAKE)]


async def test_a_flood_from_unproven_reporters_leaves_engine_time_for_proven_ones(
    tmp_path: Path,
) -> None:
    """Attack 73: the re-run budget is shared by every reporter, so fresh reporter keys
    with `fail` reports about providers in the catalog (the attacker's own, advertised
    at AdvertGate's pace, or real ones it got a signed answer from) spent it, and a
    report from a reporter whose reports this node had confirmed before (an honest
    validator) was then dropped unjudged ("re-run budget spent"). Now half of the
    budget's burst is kept for reporters with weight here: unproven ones start a
    re-run only while more than that is left."""
    path = tmp_path / "tiny.gguf"
    write_tiny_model(path, seed=0)
    engine = EmbeddedBackend([ModelSource(MODEL, path)])
    proven = NodeIdentity.generate()
    said: Counter[str] = Counter()
    with trio.fail_after(240), ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        for _ in range(2):  # two of its reports were re-run and confirmed here before
            book.record_report_check(proven.peer_id, confirmed=True)
        async with run_host(NetConfig(NodeIdentity.generate())) as net:
            node = receiver(net, engine, book, None)
            node.budget = RecheckBudget(per_min_ms=0, burst_ms=2_400, now_ms=now_ms())

            def in_catalog() -> NodeIdentity:
                provider = NodeIdentity.generate()
                net.catalog.admit(verify_advert(make_advert(provider, 1,
                                                            models=((MODEL, 100),))))
                return provider

            spent = "not re-checked: re-run budget spent"
            while not said[spent] and sum(said.values()) < 400:  # fresh reporter keys
                said[await node.receive_report(made_up(in_catalog()))] += 1
            genuine = await node.receive_report(made_up(in_catalog(), proven))
        await engine.aclose()
    assert said[spent] == 1 and said["re-checked: fraud confirmed"] >= 1, said
    assert genuine == "re-checked: fraud confirmed"  # the budget spent, on the old code


async def test_one_proven_reporter_cannot_spend_the_engine_time_kept_for_the_proven(
    tmp_path: Path,
) -> None:
    """Attack 80: weight is earned by reports this node re-ran and confirmed, and fraud a
    reporter's own Sybil provider commits on purpose confirms too, so a reporter can
    become proven here cheaply. Its reports then drew on the half of the budget kept
    for the proven (attack 73), 6 re-runs a minute, each up to the re-run limits (a long
    one takes seconds on SmolLM2), and another proven reporter's genuine report was
    dropped unjudged. Now each reporter's re-runs take at most a quarter of the budget.
    The tiny model's ~6 ms re-runs stand in for long ones: the rate of 6 a minute per
    reporter is lifted here, so that engine time is the only bound left."""
    path = tmp_path / "tiny.gguf"
    write_tiny_model(path, seed=0)
    engine = EmbeddedBackend([ModelSource(MODEL, path)])
    farmed, honest = NodeIdentity.generate(), NodeIdentity.generate()
    said: Counter[str] = Counter()
    with trio.fail_after(240), ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        for reporter in (farmed, honest):  # two confirmed reports each, earlier
            for _ in range(2):
                book.record_report_check(reporter.peer_id, confirmed=True)
        async with run_host(NetConfig(NodeIdentity.generate())) as net:
            node = receiver(net, engine, book, None)
            node.budget = RecheckBudget(per_min_ms=0, burst_ms=2_400, now_ms=now_ms())
            node.reporter_rate = ReporterRate(count=100_000)

            def in_catalog() -> NodeIdentity:  # the attacker's own cheating providers
                provider = NodeIdentity.generate()
                net.catalog.admit(verify_advert(make_advert(provider, 1,
                                                            models=((MODEL, 100),))))
                return provider

            confirmed = "re-checked: fraud confirmed"
            while sum(said.values()) < 1_000:
                what = await node.receive_report(made_up(in_catalog(), farmed))
                said[what] += 1
                if what != confirmed:
                    break
            genuine = await node.receive_report(made_up(in_catalog(), honest))
        await engine.aclose()
    assert genuine == confirmed, (genuine, said)  # "re-run budget spent" on the old code
    assert said[confirmed] >= 5, said  # the farmed reporter's confirmed reports ran
    assert said["not re-checked: reporter's share of the re-run budget spent"] == 1, said


async def test_fraud_by_a_stranger_earns_its_reporter_no_weight(tmp_path: Path) -> None:
    """Attack 81: a report this node re-ran and confirmed earned its reporter weight, and
    fraud is free to commit on purpose: a reporter's own fresh providers (advertised at
    AdvertGate's pace) cheat on its requests, it reports them, and two confirmations
    later its unconfirmed reports about models this node does not serve (so cannot
    re-run) count against honest providers. Now a confirmation earns weight only when
    the convicted provider had something to lose here: it had served this node well or
    passed its checks, or this node's ledger credits its stake."""
    path = tmp_path / "tiny.gguf"
    write_tiny_model(path, seed=0)
    engine = EmbeddedBackend([ModelSource(MODEL, path)])
    other = "other:latest"  # a model this node does not serve
    farmer, vouched = NodeIdentity.generate(), NodeIdentity.generate()
    honest, known = NodeIdentity.generate(), NodeIdentity.generate()
    with trio.fail_after(120), ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        book.record(known.peer_id, Outcome.JOB_SUCCEEDED)  # it served this node well
        async with run_host(NetConfig(NodeIdentity.generate())) as net:
            node = receiver(net, engine, book, None)
            for provider, model in ((honest, other), (known, MODEL)):
                net.catalog.admit(verify_advert(make_advert(provider, 1,
                                                            models=((model, 100),))))
            own = []
            for _ in range(2):  # the farmer's own providers, cheating on purpose
                own.append(NodeIdentity.generate())
                net.catalog.admit(verify_advert(make_advert(own[-1], 1,
                                                            models=((MODEL, 100),))))
            farming = [await node.receive_report(made_up(p, farmer)) for p in own]
            smear = made_up_report(SMALL, now_ms(), other, honest, farmer).raw
            smeared = await node.receive_report(smear)
            earned = await node.receive_report(made_up(known, vouched))
            vouch = made_up_report(SMALL, now_ms(), other, honest, vouched).raw
            counted = await node.receive_report(vouch)
        honest_record = book.get(honest.peer_id)
        await engine.aclose()
    assert farming == ["re-checked: fraud confirmed"] * 2  # the frauds are still judged
    assert smeared == "ignored: reporter untrusted"  # "counted: weight 200" on the old code
    # A reporter that convicted a provider this node had trusted earns weight as before.
    assert earned == "re-checked: fraud confirmed" and counted == "counted: weight 100"
    assert honest_record.checks_failed == 1  # the vouched reporter's report alone
