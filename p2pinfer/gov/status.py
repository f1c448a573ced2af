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
    outcome: str  # open, passed, rejected
    in_effect: bool
    yes_stake: int
    no_stake: int
    voters: int
    double_votes: int
    no_stake_votes: int
    late_votes: int


@dataclass(frozen=True)
class ParameterInEffect:
    parameter: str
    value: ParameterValue
    proposal: str  # hex id of the proposal that set it


@dataclass(frozen=True)
class GovStatus:
    now_ms: int
    stake: int  # this node's declared stake, what its votes weigh before slashes
    quorum_stake: int
    threshold_bp: int
    proposals: tuple[ProposalStatus, ...]  # by voting deadline, then id
    in_effect: tuple[ParameterInEffect, ...]  # by parameter name


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

    async def sync(self) -> int:
        """Fetch missed messages from every connected peer now; how many were new."""
        ...
