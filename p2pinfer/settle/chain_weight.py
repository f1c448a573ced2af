"""Governance weight from the chain, with settlement on (docs/security/governance.md).

A proposal names `snapshot_block`, the latest block its proposer saw. A node keeps a
proposal only if that block is not ahead of the chain head it sees and not more than
MAX_SNAPSHOT_AGE_BLOCKS behind it, so nobody can pick a block where stake has not yet
moved (ahead) or a long-gone distribution (old). A vote weighs the stake its voter's
chain account held at the end of the snapshot block, `stake_at(account, snapshot)`,
capped per key as without a chain; the account comes in the vote with its EIP-191
binding to the voter's peer id (a vote without a binding that checks out weighs 0),
and an account backs only the first voter (by issued_at, id) that names it, so one
stake bound to many keys counts once. Stake locked after the snapshot never counts.
The quorum is a share of `total_stake_at(snapshot)`. Until a number is read, it counts
as 0 and the total as unknown (nothing passes).

Reads are cached (the stake at a past block does not change) in bounded tables and
made in the background (`refresh`, through `trio.to_thread`), never in a tally.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import trio

from p2pinfer.errors import ChainError
from p2pinfer.gov.messages import Proposal, Vote
from p2pinfer.gov.tally import VerifiedStake
from p2pinfer.identity import NodeIdentity, peer_id_from_public_key
from p2pinfer.settle.account import account_of, bind_signature, check_binding
from p2pinfer.settle.addresses import address_bytes, checksum_address
from p2pinfer.settle.ports import ChainPort

log = logging.getLogger(__name__)
K = TypeVar("K")
V = TypeVar("V")

#: A proposal's snapshot block may be at most this far behind the head a node sees.
MAX_SNAPSHOT_AGE_BLOCKS = 10_000
#: Cached reads and checked bindings (voters and proposals come from anyone).
MAX_CACHED = 20_000
#: Chain reads one refresh makes at most.
READS_PER_PASS = 256


@dataclass(frozen=True)
class OwnAccount:
    """This node's chain account and its binding, which its votes carry."""

    address: str
    binding: bytes

    @property
    def wire(self) -> bytes:
        """The address as messages carry it (20 bytes)."""
        return address_bytes(self.address)

    @classmethod
    def of(cls, identity: NodeIdentity) -> OwnAccount:
        account = account_of(identity)
        return cls(account.address, bind_signature(account, identity.peer_id))


class ChainWeights:
    """Chain stake for governance: snapshot checks, weights and the background reader."""

    def __init__(self, chain: ChainPort, own: OwnAccount, *,
                 max_age_blocks: int = MAX_SNAPSHOT_AGE_BLOCKS,
                 max_cached: int = MAX_CACHED) -> None:
        self.chain, self.own, self.max_age = chain, own, max_age_blocks
        self._max = max_cached
        self.head: int | None = None
        self.own_stake = 0  # this node's account, locked now
        self.total_now = 0  # all locked stake at the head
        self._at: OrderedDict[tuple[str, int], int] = OrderedDict()
        self._total: OrderedDict[int, int] = OrderedDict()
        self._bound: OrderedDict[tuple[bytes, str, bytes], bool] = OrderedDict()
        self._staked: OrderedDict[bytes, None] = OrderedDict()  # keys seen with weight > 0
        self._lock = trio.CapacityLimiter(1)

    # -- rules (pure, cached) ---------------------------------------------------------

    def refusal(self, proposal: Proposal) -> str:
        """Why `proposal` is not kept here ("" if it may be): its snapshot block."""
        snap = proposal.snapshot_block
        if snap is None:
            return "no snapshot block (this node weighs votes by stake on chain)"
        if self.head is None:
            return "chain head not read yet"
        if snap > self.head:
            return f"snapshot block {snap} is ahead of the chain head {self.head}"
        if snap < self.head - self.max_age:
            return f"snapshot block {snap} is over {self.max_age} blocks behind the head"
        return ""

    def account_of(self, vote: Vote) -> str | None:
        """The vote's chain account if its binding to the voter's peer id checks out."""
        if vote.account is None or vote.binding is None:
            return None
        account = checksum_address(vote.account)
        key = (vote.voter, account, vote.binding)
        ok = self._bound.get(key)
        if ok is None:
            ok = check_binding(account, peer_id_from_public_key(vote.voter), vote.binding)
            _put(self._bound, key, ok, self._max)
        return account if ok else None

    def stake_for(self, proposal: Proposal, votes: Sequence[Vote]) -> VerifiedStake:
        """The weights of `proposal`'s voters and the total a quorum is a share of."""
        snap = proposal.snapshot_block
        total = self._total.get(snap) if snap is not None else None
        if snap is None or total is None:
            return VerifiedStake()  # no snapshot, or not read yet: nothing weighs
        by_key: dict[bytes, int] = {}
        claimed: set[str] = set()
        for vote in sorted(votes, key=lambda v: (v.issued_at, v.id)):
            account = self.account_of(vote)
            if vote.voter in by_key or account is None or account.lower() in claimed:
                continue
            claimed.add(account.lower())
            by_key[vote.voter] = weight = self._at.get((account, snap), 0)
            if weight > 0:
                _put(self._staked, vote.voter, None, self._max)
        return VerifiedStake(by_key, known_total=total)

    def staked(self, key: bytes, own_key: bytes) -> bool:
        """Whether `key` has been seen with stake on chain (the store's staked share)."""
        return key in self._staked or (key == own_key and self.own_stake > 0)

    # -- the background reader ----------------------------------------------------------

    async def _read(self, fn: Callable[..., int], *args: object) -> int | None:
        try:
            value = await trio.to_thread.run_sync(fn, *args, limiter=self._lock)
        except ChainError as exc:
            log.warning("governance chain read failed error=%s", exc)
            return None
        return int(value)

    async def refresh(self, proposals: Sequence[Proposal], votes: Sequence[Vote]) -> int:
        """Read the head, this node's stake, and what the tallies of `proposals` miss (at
        most READS_PER_PASS); how many reads were made."""
        head = await self._read(self.chain.block_number)
        if head is not None:
            self.head = head
        own = await self._read(self.chain.stake_of, self.own.address)
        self.own_stake = own if own is not None else self.own_stake
        reads = 2
        snapshots = {p.id: p.snapshot_block for p in proposals
                     if p.snapshot_block is not None and p.snapshot_block <= (self.head or -1)}
        wanted: list[tuple[str, int] | int] = [s for s in set(snapshots.values())
                                               if s not in self._total]
        if self.head is not None and self.head not in self._total:
            wanted.append(self.head)
        for vote in votes:
            snap = snapshots.get(vote.proposal_id)
            account = self.account_of(vote) if snap is not None else None
            if account is not None and snap is not None and (account, snap) not in self._at:
                wanted.append((account, snap))
        for item in dict.fromkeys(wanted):
            if reads >= READS_PER_PASS:
                break
            reads += 1
            if isinstance(item, int):
                value = await self._read(self.chain.total_stake_at, item)
                if value is not None:
                    _put(self._total, item, value, self._max)
            else:
                value = await self._read(self.chain.stake_at, *item)
                if value is not None:
                    _put(self._at, item, value, self._max)
        if self.head is not None:
            self.total_now = self._total.get(self.head, self.total_now)
        return reads


def _put(table: OrderedDict[K, V], key: K, value: V, bound: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > bound:
        table.popitem(last=False)
