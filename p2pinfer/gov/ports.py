"""What governance needs of chain stake (`ChainStake`), as a port: settle/chain_weight.py's
`ChainWeights` is the one implementation. Governance sits below settlement, so it names
the methods it calls here instead of importing the class."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from p2pinfer.gov.messages import Proposal, Vote
from p2pinfer.gov.tally import VerifiedStake


class OwnChainAccount(Protocol):
    """This node's chain account as its votes carry it."""

    @property
    def wire(self) -> bytes: ...

    @property
    def binding(self) -> bytes: ...


class ChainStake(Protocol):
    """Chain stake for governance: snapshot checks, weights and the background reader."""

    head: int | None
    own_stake: int
    total_now: int

    @property
    def own(self) -> OwnChainAccount: ...

    def refusal(self, proposal: Proposal) -> str: ...

    def stake_for(self, proposal: Proposal, votes: Sequence[Vote]) -> VerifiedStake: ...

    def staked(self, key: bytes, own_key: bytes) -> bool: ...

    async def refresh(self, proposals: Sequence[Proposal], votes: Sequence[Vote]) -> int: ...
