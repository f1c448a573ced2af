"""The governance tally: a pure function of the set of messages and the stake the
counting node verified (order, duplicates, double votes, votes without verified stake or
after the deadline)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from p2pinfer.errors import DecodeError, SignatureError, ValidationError
from p2pinfer.gov.messages import (
    Proposal,
    Vote,
    decode_message,
    sign_proposal,
    sign_vote,
    verify_message,
)
from p2pinfer.gov.tally import TallyRules, VerifiedStake, in_effect, tally
from p2pinfer.market.stake import sign_stake
from tests.market_support import fixed_identity

DEADLINE = 10_000
AFTER = DEADLINE + 1
# quorum_bp=0: these tests are about counting; test_gov_rules covers the quorum share.
RULES = TallyRules(quorum_stake=100, threshold_bp=5000, quorum_bp=0, min_voting_ms=1_000)
PROPOSER = fixed_identity(1)
VOTERS = [fixed_identity(10 + i) for i in range(6)]


def proposal(value: int = 300, effective_at: int = 20_000, issued_at: int = 1_000) -> Proposal:
    return sign_proposal(PROPOSER, "base_rate", value, voting_deadline=DEADLINE,
                         effective_at=effective_at, issued_at=issued_at)


def vote(p: Proposal, voter: int, yes: bool, at: int, stake: int = 100) -> Vote:
    """A vote whose own declaration claims `stake` (the tally ignores the claim)."""
    who = VOTERS[voter]
    return sign_vote(who, p.id, yes, stake=sign_stake(who, stake, 0), issued_at=at)


def verified(**stakes: int) -> VerifiedStake:
    """The stake the counting node verified, by voter index: verified(v0=300)."""
    return VerifiedStake({VOTERS[int(k[1:])].public_key: v for k, v in stakes.items()})


P = proposal()
# What the counting node's ledger records for each voter (voter 3 has nothing recorded).
STAKES = verified(v0=300, v1=200, v2=50, v4=10_000, v5=10_000)
# Every kind of message in one pool: honest votes, a double vote, a vote with no stake,
# a late vote, and a vote on another proposal.
OTHER = proposal(value=999)
POOL = [
    vote(P, 0, True, 2_000, 300), vote(P, 1, False, 2_100, 200), vote(P, 2, True, 2_200, 50),
    vote(P, 2, False, 2_300, 50),  # voter 2's second vote: ignored
    vote(P, 3, False, 2_400, 10**18),  # no stake verified: its claim weighs nothing
    vote(P, 4, False, AFTER, 10_000),  # after the deadline
    vote(OTHER, 5, False, 2_500, 10_000),
]


def test_the_pool_tallies_as_the_rules_say() -> None:
    t = tally(P, POOL, AFTER, STAKES, RULES)
    assert (t.yes_stake, t.no_stake, t.voters) == (350, 200, 3)
    assert (t.double_votes, t.no_stake_votes, t.late_votes, t.outcome) == (1, 1, 1, "passed")


@settings(max_examples=60, deadline=None)
@given(st.permutations(POOL + POOL[:3]))  # any order, some messages received twice
def test_tally_is_independent_of_order_and_duplicates(messages: list[Vote]) -> None:
    assert tally(P, messages, AFTER, STAKES, RULES) == tally(P, POOL, AFTER, STAKES, RULES)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, DEADLINE)), min_size=2, max_size=5),
       st.randoms(use_true_random=False))
def test_a_double_voter_counts_once_with_its_earliest_vote(
    ballots: list[tuple[bool, int]], rnd: object
) -> None:
    votes = [vote(P, 0, yes, at, 500) for yes, at in ballots]
    first = min(votes, key=lambda v: (v.issued_at, v.id))
    shuffled = list(votes)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    t = tally(P, shuffled, AFTER, verified(v0=500), RULES)
    distinct = len({v.id for v in votes})
    assert t.voters == 1 and t.double_votes == distinct - 1
    assert (t.yes_stake, t.no_stake) == ((500, 0) if first.yes else (0, 500))


def test_slashed_stake_weighs_less_and_fully_slashed_counts_as_no_stake() -> None:
    # The ledger's effective stake is net of its slashes: v0 lost all 300, v1 50 of 200.
    t = tally(P, POOL, AFTER, verified(v0=0, v1=150, v2=50), RULES)
    assert (t.yes_stake, t.no_stake, t.no_stake_votes) == (50, 150, 2)
    assert t.outcome == "rejected"  # 50 yes of 200 voting


def test_open_until_the_deadline_and_quorum_is_needed() -> None:
    assert tally(P, POOL, DEADLINE, STAKES, RULES).outcome == "open"
    t = tally(P, POOL, AFTER, STAKES, TallyRules(quorum_stake=10**9, min_voting_ms=1_000))
    assert t.outcome == "rejected"


def test_a_tie_does_not_pass() -> None:
    t = tally(P, [vote(P, 0, True, 2_000, 100), vote(P, 1, False, 2_000, 100)], AFTER,
              verified(v0=100, v1=100), RULES)
    assert t.outcome == "rejected"


def test_a_passed_proposal_takes_effect_at_its_time_and_the_latest_wins() -> None:
    early, late = proposal(400, effective_at=15_000), proposal(500, effective_at=30_000)
    yes = [vote(p, 0, True, 2_000, 1_000) for p in (early, late)]
    results = [(p, tally(p, yes, AFTER, verified(v0=1_000), RULES)) for p in (early, late)]
    assert in_effect(results, 14_999) == {}
    assert in_effect(results, 15_000) == {"base_rate": (400, early.id)}
    assert in_effect(list(reversed(results)), 30_000) == {"base_rate": (500, late.id)}


def test_messages_round_trip_and_signatures_bind_type_and_author() -> None:
    v = POOL[0]
    assert decode_message(P.encode()) == P and decode_message(v.encode()) == v
    verify_message(decode_message(v.encode()))
    forged = Vote(v.voter, v.proposal_id, not v.yes, v.issued_at, v.stake, v.signature)
    with pytest.raises(SignatureError):
        verify_message(forged)
    # A proposal's signature is not a vote's: the domain strings differ.
    with pytest.raises(SignatureError):
        verify_message(Proposal(P.proposer, P.parameter, P.value, P.voting_deadline,
                                P.effective_at, P.issued_at, v.signature))


def test_bad_proposals_and_borrowed_stake_are_refused() -> None:
    with pytest.raises(ValidationError, match="unknown parameter"):
        sign_proposal(PROPOSER, "inflation", 5, voting_deadline=2, effective_at=3, issued_at=1)
    with pytest.raises(ValidationError, match="split_preset"):
        sign_proposal(PROPOSER, "split_preset", "nope", voting_deadline=2, effective_at=3,
                      issued_at=1)
    with pytest.raises(ValidationError, match="voting_deadline"):
        sign_proposal(PROPOSER, "check_rate_pm", 50, voting_deadline=5, effective_at=4,
                      issued_at=1)
    with pytest.raises(ValidationError, match="voter's own"):
        sign_vote(VOTERS[0], P.id, True, stake=sign_stake(VOTERS[1], 100, 0), issued_at=5)
    with pytest.raises(DecodeError):
        decode_message(b"\x80")
