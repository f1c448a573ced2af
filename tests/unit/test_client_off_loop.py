"""The consumer client reads its ledger and reputation book (real SQLite files) in the
stores' worker threads, never on the trio loop: with the store's strict check on, a
read on the loop raises instead of blocking every other task on disk."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pinfer.errors import InsufficientCreditError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.market.ledger import Ledger
from p2pinfer.protocol import JobParams
from p2pinfer.store import strict_threads
from p2pinfer.validator.checker import Verifier
from p2pinfer.verify.reputation import Outcome
from p2pinfer.verify.reputation_store import ReputationBook
from tests.unit.test_client_ranking import MODEL, FakeNet


@pytest.fixture
def book(tmp_path: Path) -> Iterator[ReputationBook]:
    with ReputationBook.open(tmp_path / "reputation.sqlite3") as opened:
        yield opened


async def test_candidates_carry_the_books_scores_and_breakers_read_off_the_loop(
    book: ReputationBook
) -> None:
    good, cheat, convicted = (NodeIdentity.generate() for _ in range(3))
    expected = book.record(cheat.peer_id, Outcome.CHECK_FAILED)
    book.convict(convicted.peer_id)  # its breaker opens
    net = FakeNet({good: 20.0, cheat: 20.0, convicted: 20.0})
    # Built before the check is on: JobClient() still reads the book once, at startup.
    client = JobClient(net, NodeIdentity.generate(), reputation=book)  # type: ignore[arg-type]
    with strict_threads():
        found = {c.peer_id: c for c in await client.candidates(MODEL)}
    assert {p: c.score_pm for p, c in found.items()} == {
        good.peer_id: book.params.initial_score_pm, cheat.peer_id: expected.score_pm,
        convicted.peer_id: 0}
    assert expected.score_pm < book.params.initial_score_pm
    # Read in the same go: a job skips asking the breaker again only where it was closed.
    assert {p: c.breaker_closed for p, c in found.items()} == {
        good.peer_id: True, cheat.peer_id: True, convicted.peer_id: False}


async def test_the_credit_check_reads_the_ledger_off_the_loop(tmp_path: Path) -> None:
    me = NodeIdentity.generate()
    net = FakeNet({NodeIdentity.generate(): 20.0})
    with Ledger.open(tmp_path / "ledger.sqlite3", me) as ledger:
        client = JobClient(net, me, ledger=ledger,  # type: ignore[arg-type]
                           config=ClientConfig(require_credit=True, max_price_per_1k=1_000))
        with strict_threads(), pytest.raises(InsufficientCreditError, match="holds 0 micro"):
            async with client.job(MODEL, "hello", JobParams(max_tokens=64)):
                pass


async def test_a_validator_picks_check_targets_by_rate_read_off_the_loop(
    book: ReputationBook
) -> None:
    net = FakeNet({NodeIdentity.generate(): 20.0 for _ in range(3)})
    client = JobClient(net, NodeIdentity.generate())  # type: ignore[arg-type]
    verifier = Verifier(net, client.identity, client, backend=None,  # type: ignore[arg-type]
                        models=frozenset({MODEL}), reputation=book, ledger=None,
                        rng=random.Random(3))
    with strict_threads():
        picks = {await verifier.pick_target() for _ in range(30)}
    assert picks and picks <= {(peer, MODEL) for peer in net.adverts}
