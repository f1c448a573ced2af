"""The tally: a pure function of one proposal, the votes seen, and this node's slashes.

Rules (docs/governance.md):
- a vote counts only if it names the proposal, is signed (checked before it is
  stored), and was issued at or before the voting deadline;
- a voter counts once: of its votes on one proposal, the first by
  (issued_at, vote id) counts and any other is a double vote, ignored;
- its weight is its declared stake (carried in the vote) minus what this node
  slashed from it; a vote of weight 0 is ignored (no stake);
- the proposal passes when the stake that voted reaches `quorum_stake` and the
  yes stake is over `threshold_bp` of it. Each rule depends on the set of
  messages only, never on the order they arrived in, so every node that saw the
  same messages (and agrees on slashes) tallies the same result.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from p2pinfer.gov.messages import ParameterValue, Proposal, Vote
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE

Outcome = Literal["open", "passed", "rejected"]


@dataclass(frozen=True)
class TallyRules:
    """Quorum: stake (micro-credits) that must vote; threshold: yes share, basis points,
    that must be exceeded (5000: a strict majority of the stake that voted)."""

    quorum_stake: int = DEFAULT_MINIMUM_STAKE
    threshold_bp: int = 5000


@dataclass(frozen=True)
class Tally:
    proposal_id: bytes
    yes_stake: int
    no_stake: int
    voters: int
    double_votes: int
    no_stake_votes: int
    late_votes: int
    outcome: Outcome

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


def tally(
    proposal: Proposal, votes: Iterable[Vote], now_ms: int,
    slashed_of: Callable[[bytes], int] = lambda voter: 0, rules: TallyRules = TallyRules(),
) -> Tally:
    """Tally `votes` on `proposal` (others are skipped); `outcome` is "open" until `now_ms`
    passes the voting deadline. `slashed_of(voter)` is what this node slashed from it."""
    pid = proposal.id
    first: dict[bytes, Vote] = {}
    seen: set[bytes] = set()
    late = 0
    for vote in votes:
        if vote.proposal_id != pid or vote.id in seen:
            continue  # another proposal's, or the same vote received twice
        seen.add(vote.id)
        if vote.issued_at > proposal.voting_deadline:
            late += 1
            continue
        held = first.get(vote.voter)
        if held is None or (vote.issued_at, vote.id) < (held.issued_at, held.id):
            first[vote.voter] = vote
    double = len(seen) - late - len(first)
    yes = no = counted = no_stake = 0
    for voter, vote in first.items():
        weight = max(vote.stake.amount - slashed_of(voter), 0)
        if weight == 0:
            no_stake += 1
            continue
        counted += 1
        if vote.yes:
            yes += weight
        else:
            no += weight
    outcome: Outcome
    if now_ms <= proposal.voting_deadline:
        outcome = "open"
    elif yes + no >= rules.quorum_stake and yes * 10_000 > rules.threshold_bp * (yes + no):
        outcome = "passed"
    else:
        outcome = "rejected"
    return Tally(pid, yes, no, counted, double, no_stake, late, outcome)


def in_effect(
    tallies: Iterable[tuple[Proposal, Tally]], now_ms: int,
) -> dict[str, tuple[ParameterValue, bytes]]:
    """Each parameter's value from passed proposals whose `effective_at` has come: the one
    with the latest (effective_at, id) wins. Maps parameter -> (value, proposal id)."""
    best: dict[str, tuple[tuple[int, bytes], ParameterValue]] = {}
    for proposal, result in tallies:
        if not result.passed or proposal.effective_at > now_ms:
            continue
        key = (proposal.effective_at, proposal.id)
        held = best.get(proposal.parameter)
        if held is None or key > held[0]:
            best[proposal.parameter] = (key, proposal.value)
    return {name: (value, key[1]) for name, (key, value) in best.items()}
