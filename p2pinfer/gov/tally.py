"""The tally: a pure function of one proposal, the votes seen, when this node first saw
each, and the stake this node has verified.

Rules (docs/governance.md):
- a proposal whose voting period (deadline - issued_at) is under `min_voting_ms`, or
  that this node first saw after its deadline, is refused: it never passes;
- a vote counts only if it names the proposal, is signed (checked before it is
  stored), was issued at or before the voting deadline, and this node first saw it
  by the deadline (so a vote backdated after the fact is late whatever it says);
- a voter counts once: of its votes on one proposal, the first by
  (issued_at, vote id) counts and any other is a double vote, ignored;
- its weight is the stake *this node* verified for it (`VerifiedStake`: stake records
  in its own ledger, net of its slashes), capped at `max_stake_per_key`; the stake
  declaration inside a vote is a claim and weighs nothing; weight 0 is ignored;
- the proposal passes when the stake that voted reaches the quorum (`quorum_bp` of all
  the stake this node verified, and never less than `quorum_stake`) and the yes stake
  is over `threshold_bp` of it.
Each rule depends on the set of messages, their first-seen times and the verified
stake, never on the order the messages arrived in.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from p2pinfer.gov.messages import ParameterValue, Proposal, Vote
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, MAX_VOTE_STAKE

Outcome = Literal["open", "passed", "rejected", "refused"]

#: Shortest voting period a proposal may have (deadline - issued_at): an hour, so the
#: stakers have time to see a proposal and vote against it. Testnets lower it per node
#: (`p2pinfer node --gov-min-voting-s`).
MIN_VOTING_MS = 3_600_000


@dataclass(frozen=True)
class TallyRules:
    """Quorum: `quorum_bp` of the verified stake this node knows, at least `quorum_stake`
    micro-credits, must vote; threshold: the yes share, basis points, that must be exceeded
    (5000: a strict majority of the stake that voted)."""

    quorum_stake: int = DEFAULT_MINIMUM_STAKE
    threshold_bp: int = 5000
    #: Half of the known stake must vote: a proposal few stakers noticed does not pass.
    quorum_bp: int = 5000
    max_stake_per_key: int = MAX_VOTE_STAKE
    min_voting_ms: int = MIN_VOTING_MS


@dataclass(frozen=True)
class VerifiedStake:
    """The stake this node verified, by voter key (net of its slashes, before the cap)."""

    by_key: Mapping[bytes, int] = field(default_factory=dict)
    #: Settlement on: `total_stake_at(snapshot)` on chain, what a quorum is a share of.
    known_total: int | None = None

    def weight(self, key: bytes, cap: int) -> int:
        return max(0, min(self.by_key.get(key, 0), cap))

    def total(self, cap: int) -> int:
        """All the stake this node knows of, each key capped (or, settlement on, all the
        stake locked at the snapshot): what a quorum is a share of."""
        if self.known_total is not None:
            return self.known_total
        return sum(self.weight(key, cap) for key in self.by_key)


NO_VERIFIED_STAKE = VerifiedStake()


@dataclass(frozen=True)
class Tally:
    proposal_id: bytes
    yes_stake: int
    no_stake: int
    voters: int
    double_votes: int
    no_stake_votes: int  # votes by keys with no stake verified here (a self-declared claim)
    late_votes: int  # issued or first seen after the deadline
    outcome: Outcome
    quorum: int = 0  # the stake that had to vote
    refused: str = ""  # why the proposal can never pass here ("" unless refused)

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


def refusal(proposal: Proposal, first_seen: int | None, rules: TallyRules) -> str:
    """Why `proposal` may not pass on this node ("" if it may): too short a voting period,
    or first seen (at `first_seen` ms) after its deadline."""
    if proposal.voting_deadline - proposal.issued_at < rules.min_voting_ms:
        return f"voting period under {rules.min_voting_ms // 1000} s"
    if first_seen is not None and first_seen > proposal.voting_deadline:
        return "first seen after its voting deadline"
    return ""


def tally(
    proposal: Proposal, votes: Iterable[Vote], now_ms: int,
    stake: VerifiedStake = NO_VERIFIED_STAKE, rules: TallyRules = TallyRules(),
    first_seen: Mapping[bytes, int] | None = None,
) -> Tally:
    """Tally `votes` on `proposal` (others are skipped); `outcome` is "open" until `now_ms`
    passes the voting deadline. `first_seen` maps message ids to when this node first saw
    them (ms; a missing id counts as seen when issued)."""
    pid = proposal.id
    seen_at = first_seen or {}
    first: dict[bytes, Vote] = {}
    seen: set[bytes] = set()
    late = 0
    for vote in votes:
        if vote.proposal_id != pid or vote.id in seen:
            continue  # another proposal's, or the same vote received twice
        seen.add(vote.id)
        if max(vote.issued_at, seen_at.get(vote.id, 0)) > proposal.voting_deadline:
            late += 1
            continue
        held = first.get(vote.voter)
        if held is None or (vote.issued_at, vote.id) < (held.issued_at, held.id):
            first[vote.voter] = vote
    double = len(seen) - late - len(first)
    cap = rules.max_stake_per_key
    yes = no = counted = no_stake = 0
    for voter, vote in first.items():
        weight = stake.weight(voter, cap)
        if weight == 0:
            no_stake += 1
            continue
        counted += 1
        if vote.yes:
            yes += weight
        else:
            no += weight
    quorum = max(rules.quorum_stake, stake.total(cap) * rules.quorum_bp // 10_000)
    refused = refusal(proposal, seen_at.get(pid), rules)
    outcome: Outcome
    if refused:
        outcome = "refused"
    elif now_ms <= proposal.voting_deadline:
        outcome = "open"
    elif yes + no >= quorum and yes * 10_000 > rules.threshold_bp * (yes + no):
        outcome = "passed"
    else:
        outcome = "rejected"
    return Tally(pid, yes, no, counted, double, no_stake, late, outcome, quorum, refused)


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


StakeOf = Callable[[Proposal, Sequence[Vote]], VerifiedStake]
"""Settlement on: the stake that weighs one proposal's votes (`settle.chain_weight`)."""


def tally_all(
    proposals: Iterable[Proposal], votes: Iterable[Vote], now_ms: int,
    stake: VerifiedStake | StakeOf = NO_VERIFIED_STAKE, rules: TallyRules = TallyRules(),
    first_seen: Mapping[bytes, int] | None = None,
) -> list[tuple[Proposal, Tally]]:
    """`tally` of each proposal, its votes picked out in one pass over `votes`; `stake` is
    one VerifiedStake for all, or a function giving each proposal its own."""
    by_proposal: dict[bytes, list[Vote]] = {}
    for vote in votes:
        by_proposal.setdefault(vote.proposal_id, []).append(vote)
    out = []
    for p in proposals:
        mine = by_proposal.get(p.id, [])
        weights = stake if isinstance(stake, VerifiedStake) else stake(p, mine)
        out.append((p, tally(p, mine, now_ms, weights, rules, first_seen)))
    return out
