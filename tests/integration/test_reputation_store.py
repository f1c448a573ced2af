"""The reputation table on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook
from tests.support.clocks import FakeClock


def test_scores_and_breaker_state_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "reputation.sqlite3"
    clock = FakeClock(1_000)
    with ReputationBook.open(path, clock=clock) as book:
        assert book.get("good").score_pm == 950 and book.peers() == ()
        for _ in range(3):
            book.record("good", Outcome.JOB_SUCCEEDED)
        book.record_latency("good", 1_000, 800)
        book.record("bad", Outcome.CHECK_FAILED)
        book.record("bad", Outcome.CHECK_FAILED)
        assert not book.allow("bad")
    clock.now += 60_000
    with ReputationBook.open(path, clock=clock) as book:
        good, bad = book.peers()
        assert good.peer_id == "good" and good.jobs_ok == 3 and good.score_pm > 950
        assert bad.breaker.state is BreakerState.OPEN and bad.checks_failed == 2
        assert book.check_weight_pm("bad") == 0  # excluded here: no checks drawn
        assert book.allow("bad")  # cooldown over: one probe, recorded on disk
    with ReputationBook.open(path, clock=clock) as book:
        assert book.get("bad").breaker.state is BreakerState.HALF_OPEN
        assert not book.allow("bad")
        book.record("bad", Outcome.JOB_SUCCEEDED)
        assert book.get("bad").breaker.state is BreakerState.CLOSED
        assert book.check_weight_pm("good") == 200  # new peers are on probation
