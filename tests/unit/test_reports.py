"""What a report receiver will re-run, how often, for how long, and what an unconfirmed
report weighs (verify/reports.py, the reporters table). How re-runs share the engine with
paid jobs (verify/engine_gate.py): test_reports_engine_gate.py."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from p2pinfer.errors import ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import Ledger
from p2pinfer.protocol import ChatTurn, JobParams, JobRequest, RequestLimits
from p2pinfer.verify import breaker as B
from p2pinfer.verify import reports
from p2pinfer.verify.reports import (
    MAX_REPORT_WEIGHT_PM,
    RecheckBudget,
    ReporterRate,
    earns_weight,
    recheck_refusal,
    reporter_weight_pm,
)
from p2pinfer.verify.reputation import Outcome, PeerReputation, ReporterRecord
from p2pinfer.verify.reputation_store import ReputationBook

NOW = 1_700_000_000_000
PROVIDER = NodeIdentity.generate().peer_id


def request(*, prompt: str = "Hello", messages: int = 0, **params: object) -> JobRequest:
    turns = tuple(ChatTurn("user", prompt) for _ in range(messages))
    return JobRequest(job_id=os.urandom(16), provider=PROVIDER, model="m", kind=(
        "chat" if messages else "generate"), max_price_per_1k=1, issued_at=NOW,
        expires_at=NOW + 60_000, messages=turns, prompt=None if messages else prompt,
        params=JobParams(**params))  # type: ignore[arg-type]


# -- limits -------------------------------------------------------------------


def test_a_request_within_the_job_servers_limits_may_be_rerun() -> None:
    assert recheck_refusal(request(max_tokens=64, temperature=0.0), RequestLimits()) is None
    assert recheck_refusal(request(max_tokens=8_192, temperature=2.0), RequestLimits()) is None


@pytest.mark.parametrize(("req", "why"), [
    (request(max_tokens=1_000_000), "max_tokens"),
    (request(max_tokens=8_193), "max_tokens"),
    (request(prompt="x" * 200_001), "characters"),
    (request(messages=257), "messages"),
    (request(stop=tuple("abcdefghi")), "stop strings"),
    (request(temperature=10.0), "temperature"),
    (request(temperature=2.5), "temperature"),
])
def test_a_request_over_the_job_servers_limits_is_not_rerun(req: JobRequest, why: str) -> None:
    refusal = recheck_refusal(req, RequestLimits())
    assert refusal is not None and why in refusal


def test_an_output_longer_than_max_tokens_could_give_is_not_scored_or_rerun() -> None:
    req = request(max_tokens=64)
    assert recheck_refusal(req, RequestLimits(), "word " * 300) is None
    refusal = recheck_refusal(req, RequestLimits(), "x" * 262_144)
    assert refusal is not None and "longer than max_tokens" in refusal


def test_a_rerun_evaluates_a_short_prompt_only() -> None:
    # llama.cpp evaluates a prompt in one go: a paid job pre-empting the re-run waits.
    assert recheck_refusal(request(prompt="x" * 1_000), RequestLimits()) is None
    refusal = recheck_refusal(request(prompt="x" * 1_001), RequestLimits())
    assert refusal is not None and "for a re-run" in refusal
    assert recheck_refusal(request(prompt="x" * 600, messages=2), RequestLimits()) is not None


def test_the_receivers_own_limits_apply() -> None:
    tight = RequestLimits(max_tokens=64)
    assert recheck_refusal(request(max_tokens=65), tight) is not None
    assert recheck_refusal(request(max_tokens=64), tight) is None


def test_an_old_report_is_judged_by_the_requests_own_time_window() -> None:
    # A report comes after the job: its request has long expired, which is no refusal.
    assert recheck_refusal(request(max_tokens=64), RequestLimits()) is None


# -- rate per reporter ----------------------------------------------------------


def test_a_reporter_gets_a_few_reruns_per_window_and_more_in_the_next() -> None:
    rate = ReporterRate(count=2, window_ms=60_000)
    assert rate.admit("a", NOW) and rate.admit("a", NOW + 1)
    assert not rate.admit("a", NOW + 2)
    assert rate.admit("b", NOW + 2)  # another reporter has its own
    assert rate.admit("a", NOW + 60_000)


def test_fresh_reporter_keys_cannot_grow_the_rate_table_past_its_capacity() -> None:
    rate = ReporterRate(count=1, window_ms=60_000, capacity=3)
    assert all(rate.admit(f"k{i}", NOW) for i in range(3))
    assert not rate.admit("k3", NOW + 1)  # full, nothing expired: the new key waits
    assert rate.admit("k4", NOW + 60_001)  # the old windows expired and were forgotten
    assert len(rate._used) == 1


# -- budget ---------------------------------------------------------------------


def test_the_rerun_budget_bounds_engine_time_per_minute() -> None:
    budget = RecheckBudget(per_min_ms=10_000, burst_ms=20_000, now_ms=NOW)
    assert budget.available(NOW)
    budget.charge(45_000, NOW)  # one long re-run overdraws it...
    assert not budget.available(NOW)
    assert not budget.available(NOW + 60_000)  # ...-25 s + 10 s refilled
    assert not budget.available(NOW + 151_000)  # paid off at 10 s a minute, but only 0.2 s
    assert budget.available(NOW + 157_000)  # over 1 s in the bucket: worth a run
    assert budget.level_ms(NOW + 10**9) == 20_000  # never more than the burst


def test_half_the_burst_is_kept_for_reporters_proven_here() -> None:
    # Attack 73: unproven reporters stop at half the burst; the proven go on to the floor.
    budget = RecheckBudget(per_min_ms=10_000, burst_ms=20_000, now_ms=NOW)
    budget.charge(8_900, NOW)  # 11.1 s left
    assert budget.available(NOW, proven=False)
    budget.charge(200, NOW)  # 10.9 s: under the 10 s kept + a run's 1 s
    assert not budget.available(NOW, proven=False)
    assert budget.available(NOW, proven=True)
    budget.charge(9_950, NOW)
    assert not budget.available(NOW, proven=True)
    assert budget.available(NOW + 60_000, proven=True)  # +10 s: 10.95 s
    assert not budget.available(NOW + 60_000, proven=False)
    assert budget.available(NOW + 61_000, proven=False)  # the rate refills both


def test_one_reporter_takes_a_quarter_of_the_budget_at_most() -> None:
    # Attack 80: a reporter proven here could spend all the engine time kept for the
    # proven; its own share (a quarter of the burst and of the rate) bounds it.
    budget = RecheckBudget(per_min_ms=10_000, burst_ms=20_000, now_ms=NOW)
    assert budget.share_ms("farmed", NOW) == 5_000
    budget.charge(3_000, NOW, "farmed")
    assert budget.share_ms("farmed", NOW) == 2_000  # still positive: may start one more
    budget.charge(6_000, NOW, "farmed")  # one long run overdraws its share
    assert budget.share_ms("farmed", NOW) == -4_000
    assert budget.share_ms("honest", NOW) == 5_000 and budget.available(NOW)
    assert budget.share_ms("farmed", NOW + 96_000) == 0  # 2.5 s a minute pays it back
    assert budget.share_ms("farmed", NOW + 97_000) > 0
    assert budget.share_ms("farmed", NOW + 3_600_000) == 5_000  # a full share, no more
    # Over an hour one reporter gets its share's rate, whatever it sends.
    budget, spent, t = RecheckBudget(per_min_ms=10_000, burst_ms=20_000, now_ms=NOW), 0, NOW
    while t < NOW + 3_600_000:
        if budget.share_ms("farmed", t) > 0 and budget.available(t):
            budget.charge(1_000, t, "farmed")
            spent += 1_000
        t += 100
    assert spent <= 5_000 + 60 * 2_500 + 1_000


def test_reporter_shares_are_tracked_for_a_bounded_number_of_reporters(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports, "RECHECK_REPORTERS_TRACKED", 3)
    budget = RecheckBudget(per_min_ms=0, burst_ms=20_000, now_ms=NOW)
    for name in ("a", "b", "c", "d"):
        budget.charge(1_000, NOW, name)
    assert budget.share_ms("a", NOW) == 5_000  # the oldest forgotten: a full share again
    assert budget.share_ms("d", NOW) == 4_000


def test_a_conviction_earns_weight_only_where_the_provider_had_something_to_lose() -> None:
    # Attack 81: a stranger's fraud may be the reporter's own, committed to farm weight.
    stranger = PeerReputation("p", 950_000, NOW, NOW)
    assert not earns_weight(stranger)
    assert earns_weight(replace(stranger, jobs_ok=1))  # it had served this node well
    assert earns_weight(replace(stranger, checks_passed=1))  # or passed its checks
    assert earns_weight(stranger, credited_stake=1)  # or this ledger credits its stake
    assert not earns_weight(replace(stranger, jobs_failed=3, checks_failed=2))


def test_the_budget_over_an_hour_is_the_rate() -> None:
    budget = RecheckBudget(per_min_ms=10_000, burst_ms=20_000, now_ms=NOW)
    spent, t = 0, NOW
    while t < NOW + 3_600_000:
        if budget.available(t):
            budget.charge(5_000, t)
            spent += 5_000
        t += 1_000
    assert spent <= 20_000 + 60 * 10_000 + 5_000


# -- weight of an unconfirmed report ----------------------------------------------


def test_an_unproven_reporter_weighs_nothing_however_well_it_served() -> None:
    served_well = PeerReputation("s", 999_000, NOW, NOW, jobs_ok=500, checks_passed=50)
    assert reporter_weight_pm(ReporterRecord("s"), served_well) == 0


def test_weight_is_earned_by_confirmed_reports_and_capped() -> None:
    assert reporter_weight_pm(ReporterRecord("r", confirmed=1)) == 100
    assert reporter_weight_pm(ReporterRecord("r", confirmed=3)) == 300
    assert reporter_weight_pm(ReporterRecord("r", confirmed=50)) == MAX_REPORT_WEIGHT_PM


def test_a_false_report_costs_more_than_a_confirmed_one_earns() -> None:
    assert reporter_weight_pm(ReporterRecord("r", confirmed=3, false_reports=1)) == 0
    assert reporter_weight_pm(ReporterRecord("r", confirmed=5, false_reports=1)) == 200


def test_a_reporter_whose_breaker_is_open_weighs_nothing() -> None:
    tripped = PeerReputation("r", 500_000, NOW, NOW, breaker=B.Breaker(B.BreakerState.OPEN))
    assert reporter_weight_pm(ReporterRecord("r", confirmed=9), tripped) == 0


def test_unproven_sybils_together_cannot_open_a_breaker() -> None:
    # Any number of reporters with nothing confirmed here: each weighs 0, so the sum is 0.
    weights = [reporter_weight_pm(ReporterRecord(f"s{i}"),
                                  PeerReputation(f"s{i}", 1_000_000, NOW, NOW, jobs_ok=100))
               for i in range(1_000)]
    assert sum(weights) == 0


def test_the_reporters_table_counts_rechecked_reports(tmp_path: Path) -> None:
    with ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        assert book.reporter("r") == ReporterRecord("r")
        book.record_report_check("r", confirmed=True)
        book.record_report_check("r", confirmed=True)
        assert book.record_report_check("r", confirmed=False) == ReporterRecord("r", 2, 1)
    with ReputationBook.open(tmp_path / "rep.sqlite3") as book:  # it is on disk
        assert book.reporter("r") == ReporterRecord("r", 2, 1)


@pytest.mark.parametrize("version", [1, 2])
def test_an_older_reputation_file_gains_the_tables_it_lacks(tmp_path: Path, version: int
                                                            ) -> None:
    import sqlite3

    path = tmp_path / "rep.sqlite3"
    with ReputationBook.open(path) as book:
        book.record("x", Outcome.JOB_SUCCEEDED)
    conn = sqlite3.connect(path, isolation_level=None)
    for table in ("reporters", "refusals")[version - 1:]:  # 1 -> 2 reporters, 2 -> 3 refusals
        conn.execute(f"DROP TABLE {table}")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()
    with ReputationBook.open(path) as book:
        assert book.get("x").jobs_ok == 1
        assert book.record_report_check("r", confirmed=True).confirmed == 1
        book.refuse([("key:00", 2**62, "why")])
        assert book.refusals() == [("key:00", 2**62, "why")]


# -- slash entries ----------------------------------------------------------------


def test_a_slash_entry_names_its_proof_by_hash_and_refuses_the_proof(tmp_path: Path) -> None:
    me, prov = NodeIdentity.generate(), NodeIdentity.generate()
    with Ledger.open(tmp_path / "ledger.sqlite3", me) as ledger:
        entry = ledger.record_slash(prov.public_key, 0, reason="r", evidence=b"\x01" * 32)
        assert len(entry.body.fields()["evidence"]) == 32
        with pytest.raises(ValidationError, match="hash"):
            ledger.record_slash(prov.public_key, 0, reason="r", evidence=b"\x02" * 521_000)
