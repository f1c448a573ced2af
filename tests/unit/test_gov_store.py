"""The governance store is bounded (per author, authors without verified stake, total),
remembers when it first saw each message across restarts, and forgets what expired."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from p2pinfer.gov import store as store_module
from p2pinfer.gov.messages import Proposal, Vote, sign_proposal, sign_vote
from p2pinfer.gov.retention import ORPHAN_MS, RETAIN_CLOSED_MS, expired
from p2pinfer.gov.store import MAX_PER_AUTHOR, MAX_UNSTAKED, GovStore
from p2pinfer.gov.tally import TallyRules, VerifiedStake
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, sign_stake
from tests.market_support import fixed_identity

HOUR = 3_600_000
NOW = 10 * HOUR
AUTHOR = fixed_identity(60)
RULES = TallyRules()


def proposal(key: NodeIdentity = AUTHOR, n: int = 0, deadline: int = NOW + 2 * HOUR,
             value: int = 50, issued_at: int = NOW - HOUR) -> Proposal:
    return sign_proposal(key, "check_rate_pm", value, voting_deadline=deadline + n,
                         effective_at=deadline + n, issued_at=issued_at)


def vote(p: Proposal, key: NodeIdentity, yes: bool = True) -> Vote:
    return sign_vote(key, p.id, yes, stake=sign_stake(key, 1, 0), issued_at=NOW)


def test_one_author_stores_at_most_its_cap(tmp_path: Path) -> None:
    store = GovStore(tmp_path / "gov.sqlite")
    added = [store.add(proposal(n=i), NOW, staked=False) for i in range(MAX_PER_AUTHOR + 10)]
    assert sum(added) == MAX_PER_AUTHOR and store.most_by_one_author() == MAX_PER_AUTHOR
    assert "author" in store.refusal(proposal(n=999), staked=True)


def test_authors_without_verified_stake_share_one_bounded_pool(tmp_path: Path) -> None:
    store = GovStore(tmp_path / "gov.sqlite")
    keys = [NodeIdentity.generate() for _ in range(MAX_UNSTAKED // MAX_PER_AUTHOR + 2)]
    for key in keys:
        for i in range(MAX_PER_AUTHOR):
            store.add(proposal(key, i), NOW, staked=False)
    assert store.count() == MAX_UNSTAKED
    # The flood fills only its own share: a staked author still gets in.
    assert store.add(proposal(fixed_identity(61)), NOW, staked=True)
    assert not store.add(proposal(fixed_identity(62)), NOW, staked=False)


def test_the_whole_store_is_bounded(tmp_path: Path, monkeypatch: object) -> None:
    import pytest

    patch = pytest.MonkeyPatch()
    patch.setattr(store_module, "MAX_MESSAGES", 5)
    try:
        store = GovStore(tmp_path / "gov.sqlite")
        keys = [NodeIdentity.generate() for _ in range(7)]
        assert [store.add(proposal(k), NOW, staked=True) for k in keys].count(True) == 5
    finally:
        patch.undo()


def test_first_seen_and_stake_survive_a_restart_and_known_bytes_are_recognised(
    tmp_path: Path
) -> None:
    path = tmp_path / "gov.sqlite"
    p = proposal()
    store = GovStore(path)
    assert store.add(p, NOW + 7, staked=True) and not store.add(p, NOW + 9, staked=True)
    store.close()
    again = GovStore(path, clock_ms=lambda: NOW + 1_000)
    [held] = again.stored()
    assert (held.message, held.first_seen, held.staked) == (p, NOW + 7, True)
    assert again.knows_raw(p.encode()) and not again.knows_raw(proposal(n=1).encode())


def test_a_store_from_before_first_seen_times_counts_its_rows_as_first_seen_now(
    tmp_path: Path
) -> None:
    path = tmp_path / "gov.sqlite"
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE gov_messages (id BLOB PRIMARY KEY, kind TEXT NOT NULL,"
                 " proposal BLOB NOT NULL, raw BLOB NOT NULL)")
    # An old-style takeover: closed before this node saw it (the old store kept no time).
    backdated = proposal(deadline=NOW - HOUR, issued_at=NOW - 3 * HOUR)
    conn.execute("INSERT INTO gov_messages VALUES (?,?,?,?)",
                 (backdated.id, "proposal", backdated.id, backdated.encode()))
    # One the old bounds accepted and today's refuse: dropped on open.
    draft = Proposal(AUTHOR.public_key, "min_stake", 2**62, NOW, NOW, NOW - HOUR, bytes(64))
    huge = Proposal(AUTHOR.public_key, "min_stake", 2**62, NOW, NOW, NOW - HOUR,
                    AUTHOR.sign(draft.signing_bytes()))
    conn.execute("INSERT INTO gov_messages VALUES (?,?,?,?)",
                 (huge.id, "proposal", huge.id, huge.encode()))
    conn.commit()
    conn.close()
    store = GovStore(path, clock_ms=lambda: NOW)
    [held] = store.stored()
    assert held.message == backdated and held.first_seen == NOW  # after its deadline
    assert expired(store.stored(), NOW, VerifiedStake(), RULES) == [backdated.id]


def test_closed_proposals_and_their_votes_expire_unless_in_effect(tmp_path: Path) -> None:
    staker = fixed_identity(63)
    stake = VerifiedStake({staker.public_key: DEFAULT_MINIMUM_STAKE})
    store = GovStore(tmp_path / "gov.sqlite")
    passed, rejected = proposal(value=10), proposal(value=20)
    store.add(passed, NOW, staked=False)
    store.add(rejected, NOW, staked=False)
    store.add(vote(passed, staker), NOW, staked=True)
    store.add(vote(rejected, staker, yes=False), NOW, staked=True)
    stray = vote(proposal(value=30), staker)
    store.add(stray, NOW, staked=True)
    assert expired(store.stored(), NOW + ORPHAN_MS, stake, RULES) == []
    # Closed, but kept a while to be shown; the vote on a proposal never seen goes.
    closed = passed.voting_deadline + 1
    assert expired(store.stored(), closed, stake, RULES) == [stray.id]
    later = passed.voting_deadline + RETAIN_CLOSED_MS + 1
    gone = expired(store.stored(), later, stake, RULES)
    assert sorted(gone) == sorted([rejected.id, vote(rejected, staker, yes=False).id,
                                   stray.id])
    assert store.delete(gone) == 3 and store.count() == 2  # the one in effect stays


def test_a_store_made_before_schema_versions_keeps_its_rows_and_gains_a_version(
    tmp_path: Path
) -> None:
    # Exactly what the unversioned store (before issue 18) left on disk: the table made
    # with four columns, first-seen and stake added by ALTER, user_version 0.
    path = tmp_path / "gov.sqlite"
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS gov_messages (id BLOB PRIMARY KEY,"
                 " kind TEXT NOT NULL, proposal BLOB NOT NULL, raw BLOB NOT NULL)")
    conn.execute("ALTER TABLE gov_messages ADD COLUMN first_seen INTEGER NOT NULL DEFAULT 0")
    conn.execute("ALTER TABLE gov_messages ADD COLUMN staked INTEGER NOT NULL DEFAULT 0")
    p = proposal()
    v = vote(p, fixed_identity(64))
    for message, kind, first_seen, staked in ((p, "proposal", NOW + 1, 1), (v, "vote", NOW + 2, 0)):
        conn.execute("INSERT INTO gov_messages (id, kind, proposal, raw, first_seen, staked)"
                     " VALUES (?,?,?,?,?,?)",
                     (message.id, kind, p.id, message.encode(), first_seen, staked))
    conn.close()
    store = GovStore(path, clock_ms=lambda: NOW + 1_000)
    kept = {s.message.id: (s.first_seen, s.staked) for s in store.stored()}
    assert kept == {p.id: (NOW + 1, True), v.id: (NOW + 2, False)}
    assert store.add(proposal(n=1), NOW + 3, staked=False)
    store.close()
    check = sqlite3.connect(str(path))
    assert check.execute("PRAGMA user_version").fetchone()[0] == store_module.SCHEMA_VERSION == 1
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()
    again = GovStore(path)
    assert again.count() == 3
    assert again._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    again.close()


def test_a_store_from_a_newer_p2pinfer_is_refused(tmp_path: Path) -> None:
    import pytest

    from p2pinfer.errors import GovStoreError

    path = tmp_path / "gov.sqlite"
    GovStore(path).close()
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA user_version = 9")
    conn.close()
    with pytest.raises(GovStoreError, match="schema version 9"):
        GovStore(path)
