"""What the gateway shows and asks of governance: snapshots and the `GovernanceView` protocol."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from p2pinfer.gov.messages import ParameterValue


@dataclass(frozen=True)
class ProposalStatus:
    """One proposal and this node's tally of it (stakes in micro-credits, times in ms)."""

    id: str  # hex
    proposer: str  # peer id
    parameter: str
    value: ParameterValue
    voting_deadline: int
    effective_at: int
    outcome: str  # open, passed, rejected, refused (can never pass here: see `refused`)
    in_effect: bool
    yes_stake: int
    no_stake: int
    voters: int
    double_votes: int
    no_stake_votes: int
    late_votes: int
    quorum: int = 0  # the stake that had to vote (a share of the stake verified here)
    refused: str = ""  # why it can never pass here ("" unless outcome is refused)


@dataclass(frozen=True)
class ParameterInEffect:
    parameter: str
    value: ParameterValue
    proposal: str  # hex id of the proposal that set it


@dataclass(frozen=True)
class GovStatus:
    now_ms: int
    stake: int  # what this node's own votes weigh here (its recorded stake, capped)
    quorum_stake: int  # the least stake a quorum needs
    threshold_bp: int
    proposals: tuple[ProposalStatus, ...]  # by voting deadline, then id
    in_effect: tuple[ParameterInEffect, ...]  # by parameter name
    known_stake: int = 0  # all the stake this node verified, each key capped
    quorum_bp: int = 0  # share of known_stake that must vote
    min_voting_ms: int = 0
    max_stake_per_key: int = 0
    stake_declaration: str = ""  # hex: this node's signed stake, for others to accept
    messages: int = 0  # governance messages stored
    most_by_one_author: int = 0  # the most any one author has stored


@dataclass(frozen=True)
class ProposalDraft:
    parameter: str
    value: ParameterValue
    voting_deadline: int
    effective_at: int


class GovernanceView(Protocol):
    """A node's governance, for the gateway's `/admin/gov*` endpoints."""

    async def status(self) -> GovStatus: ...

    async def propose(self, draft: ProposalDraft) -> ProposalStatus:
        """Sign `draft` with this node's key, store and publish it; ValidationError if bad."""
        ...

    async def vote(self, proposal_id: bytes, yes: bool) -> ProposalStatus:
        """Sign this node's vote (backed by its stake), store and publish it; UsageError
        without stake or for an unknown proposal."""
        ...

    async def accept_stake(self, declaration: bytes) -> int:
        """Record another key's signed stake declaration (bytes) on the operator's word;
        the weight that key's votes now have here. ProtocolError if it does not verify."""
        ...

    async def sync(self) -> int:
        """Fetch missed messages from every connected peer now; how many were new."""
        ...
