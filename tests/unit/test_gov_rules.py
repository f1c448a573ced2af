"""The tally rules that stop a governance takeover by a key with no real stake: only
stake the counting node verified counts, capped per key; quorum is a share of all the
stake it verified; a short voting period, or a proposal or vote first seen after the
deadline (backdating), never passes."""

from __future__ import annotations

import pytest

from p2pinfer.errors import ValidationError
from p2pinfer.gov.messages import (
    Proposal,
    Vote,
    check_value,
    decode_message,
    sign_proposal,
    sign_vote,
)
from p2pinfer.gov.tally import TallyRules, VerifiedStake, tally
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, MAX_VOTE_STAKE, sign_stake
from tests.market_support import fixed_identity

HOUR = 3_600_000
ISSUED, DEADLINE = 1_000, 1_000 + 2 * HOUR
AFTER = DEADLINE + 1
ATTACKER, HONEST = fixed_identity(40), [fixed_identity(41 + i) for i in range(3)]
RULES = TallyRules()  # the defaults every node runs with


def proposal(issued_at: int = ISSUED, deadline: int = DEADLINE) -> Proposal:
    return sign_proposal(ATTACKER, "base_rate", 5_000, voting_deadline=deadline,
                         effective_at=deadline, issued_at=issued_at)


def vote(p: Proposal, who: int | None, yes: bool = True, claimed: int = 2**62,
         at: int = ISSUED + 1) -> Vote:
    key = ATTACKER if who is None else HONEST[who]
    return sign_vote(key, p.id, yes, stake=sign_stake(key, claimed, 0), issued_at=at)


def stake_of(*amounts: int) -> VerifiedStake:
    return VerifiedStake({HONEST[i].public_key: a for i, a in enumerate(amounts)})


def test_self_declared_stake_in_a_vote_counts_for_nothing() -> None:
    p = proposal()
    t = tally(p, [vote(p, None)], AFTER, stake_of(DEFAULT_MINIMUM_STAKE), RULES)
    assert (t.yes_stake, t.voters, t.no_stake_votes, t.outcome) == (0, 0, 1, "rejected")


def test_a_vote_weighs_the_stake_the_counting_node_verified_not_its_claim() -> None:
    p = proposal()
    t = tally(p, [vote(p, 0, claimed=1)], AFTER, stake_of(3 * DEFAULT_MINIMUM_STAKE), RULES)
    assert (t.yes_stake, t.outcome) == (3 * DEFAULT_MINIMUM_STAKE, "passed")


def test_no_key_weighs_more_than_the_cap() -> None:
    p = proposal()
    whale = stake_of(2**62, DEFAULT_MINIMUM_STAKE)
    t = tally(p, [vote(p, 0), vote(p, 1, yes=False)], AFTER, whale, RULES)
    assert t.yes_stake == MAX_VOTE_STAKE and t.no_stake == DEFAULT_MINIMUM_STAKE


def test_quorum_is_a_share_of_all_the_stake_the_node_verified() -> None:
    p = proposal()
    known = stake_of(DEFAULT_MINIMUM_STAKE, DEFAULT_MINIMUM_STAKE, 2 * DEFAULT_MINIMUM_STAKE)
    alone = tally(p, [vote(p, 0)], AFTER, known, RULES)  # 1 of 4 parts voted: under half
    assert (alone.quorum, alone.outcome) == (2 * DEFAULT_MINIMUM_STAKE, "rejected")
    enough = tally(p, [vote(p, 0), vote(p, 1)], AFTER, known, RULES)
    assert enough.outcome == "passed"


def test_with_no_verified_stake_nothing_can_pass() -> None:
    p = proposal()
    t = tally(p, [vote(p, None)], AFTER, VerifiedStake(), RULES)
    assert t.quorum == RULES.quorum_stake > 0 and t.outcome == "rejected"


def test_a_voting_period_under_the_minimum_is_refused() -> None:
    short = proposal(deadline=ISSUED + RULES.min_voting_ms - 1)
    t = tally(short, [vote(short, 0)], AFTER + 2 * HOUR, stake_of(DEFAULT_MINIMUM_STAKE), RULES)
    assert t.outcome == "refused" and "voting period" in t.refused
    exact = proposal(deadline=ISSUED + RULES.min_voting_ms)
    assert tally(exact, [], ISSUED, rules=RULES).outcome == "open"


def test_a_proposal_first_seen_after_its_deadline_never_passes() -> None:
    p = proposal()
    votes = [vote(p, 0)]
    seen = {p.id: DEADLINE + 5, votes[0].id: DEADLINE + 5}
    t = tally(p, votes, AFTER + 10, stake_of(DEFAULT_MINIMUM_STAKE), RULES, seen)
    assert t.outcome == "refused" and "first seen" in t.refused


def test_a_vote_first_seen_after_the_deadline_is_late_whatever_it_claims() -> None:
    p = proposal()
    backdated = vote(p, 0, at=ISSUED + 1)  # claims to be early
    seen = {p.id: ISSUED, backdated.id: DEADLINE + 1}
    t = tally(p, [backdated], AFTER, stake_of(DEFAULT_MINIMUM_STAKE), RULES, seen)
    assert (t.late_votes, t.yes_stake, t.outcome) == (1, 0, "rejected")
    on_time = {p.id: ISSUED, backdated.id: DEADLINE}
    assert tally(p, [backdated], AFTER, stake_of(DEFAULT_MINIMUM_STAKE), RULES,
                 on_time).outcome == "passed"


@pytest.mark.parametrize(("parameter", "value"), [
    ("base_rate", 99), ("base_rate", 10_001), ("min_stake", DEFAULT_MINIMUM_STAKE + 1),
    ("min_stake", 2**62), ("check_rate_pm", 201), ("split_preset", "render"),
    ("split_preset", 5), ("base_rate", "1000"),
])
def test_values_outside_the_bounds_are_refused(parameter: str, value: int | str) -> None:
    with pytest.raises(ValidationError):
        check_value(parameter, value)
    with pytest.raises(ValidationError):
        sign_proposal(ATTACKER, parameter, value, voting_deadline=DEADLINE,
                      effective_at=DEADLINE, issued_at=ISSUED)
    # Nor does one signed by hand get past decoding.
    draft = Proposal(ATTACKER.public_key, parameter, value, DEADLINE, DEADLINE, ISSUED, bytes(64))
    forged = Proposal(ATTACKER.public_key, parameter, value, DEADLINE, DEADLINE, ISSUED,
                      ATTACKER.sign(draft.signing_bytes()))
    with pytest.raises(ValidationError):
        decode_message(forged.encode())


@pytest.mark.parametrize(("parameter", "value"), [
    ("base_rate", 100), ("base_rate", 10_000), ("min_stake", 0),
    ("min_stake", DEFAULT_MINIMUM_STAKE), ("check_rate_pm", 0), ("check_rate_pm", 200),
    ("split_preset", "seed"), ("split_preset", "bme"),
])
def test_values_at_the_bounds_are_accepted(parameter: str, value: int | str) -> None:
    check_value(parameter, value)
