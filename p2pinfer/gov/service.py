"""`GovService`: a node's governance over its host: gossip, sync stream, store, tally.

- Gossip topic `p2pinfer/gov/1`: each message is one signed proposal or vote;
  the validator drops what does not decode, is not signed by its author, or is
  dated more than `skew_ms` in the future. Delivered messages are stored.
- Stream `/p2pinfer/gov/1.0.0`: the asker sends nothing; the server sends
  every stored message, one frame each, and closes. A node syncs with every
  connected peer shortly after it starts and every `sync_interval_s` after, so
  one that joined late (or missed a publication) ends up with the same set of
  messages, hence the same tally.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import trio

from p2pinfer.errors import NetworkError, ProtocolError, SignatureError, UsageError
from p2pinfer.gov.messages import (
    GovMessage,
    Proposal,
    decode_message,
    sign_proposal,
    sign_vote,
    verify_message,
)
from p2pinfer.gov.status import (
    GovStatus,
    ParameterInEffect,
    ProposalDraft,
    ProposalStatus,
)
from p2pinfer.gov.store import MAX_MESSAGES, GovStore
from p2pinfer.gov.tally import Tally, TallyRules, in_effect, tally
from p2pinfer.identity import NodeIdentity, peer_id_from_public_key
from p2pinfer.market.stake import StakeDeclaration, sign_stake

if TYPE_CHECKING:
    from p2pinfer.market.ledger import Ledger
    from p2pinfer.net.gossip import GossipMessage
    from p2pinfer.net.nethost import NetHost
    from p2pinfer.net.streams import NetStream

log = logging.getLogger(__name__)

GOV_TOPIC = "p2pinfer/gov/1"
GOV_PROTOCOL = "/p2pinfer/gov/1.0.0"
#: How far in the future a message may be dated (clock skew between nodes).
DEFAULT_SKEW_MS = 60_000
#: How often the sync loop looks for newly connected peers.
NEW_PEER_CHECK_S = 2.0


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SyncPlan:
    """Which connected peers to sync with: each new connection once, then one peer in turn.

    A peer that disconnects is forgotten, so it is synced again when it reconnects.
    """

    def __init__(self) -> None:
        self._synced: list[str] = []  # connected peers synced since they connected, in turn order
        self._turn = 0

    def new_peers(self, connected: Sequence[str]) -> list[str]:
        """The peers in `connected` not synced since they connected (now counted as synced)."""
        live = set(connected)
        self._synced = [p for p in self._synced if p in live]
        known = set(self._synced)
        fresh = [p for p in dict.fromkeys(connected) if p not in known]
        self._synced += fresh
        return fresh

    def next_in_turn(self) -> str | None:
        """The next connected, already synced peer in round-robin order; None if there is none."""
        if not self._synced:
            return None
        self._turn %= len(self._synced)
        peer = self._synced[self._turn]
        self._turn += 1
        return peer


class GovService:
    """One node's governance (see module doc). `start` needs the host's nursery alive."""

    def __init__(
        self, identity: NodeIdentity, net: NetHost, store: GovStore, *, stake: int = 0,
        ledger: Ledger | None = None, rules: TallyRules = TallyRules(),
        sync_interval_s: float = 10.0, skew_ms: int = DEFAULT_SKEW_MS,
        clock_ms: Callable[[], int] = _wall_ms,
    ) -> None:
        self._identity, self._net, self._store, self._ledger = identity, net, store, ledger
        self._rules, self._interval, self._skew, self._clock = rules, sync_interval_s, skew_ms, \
            clock_ms
        self._db = trio.CapacityLimiter(1)
        self._plan = SyncPlan()
        self._stake: StakeDeclaration | None = (
            sign_stake(identity, stake, clock_ms()) if stake > 0 else None)

    async def start(self, nursery: trio.Nursery) -> None:
        """Join the topic, serve the sync stream, and keep syncing with peers."""
        self._net.set_stream_handler(GOV_PROTOCOL, self._serve_sync)
        await self._net.subscribe(GOV_TOPIC, validator=self._admit, handler=self._deliver)
        nursery.start_soon(self._sync_loop)

    # -- receiving -----------------------------------------------------------------------

    def _checked(self, data: bytes) -> GovMessage | None:
        try:
            message = decode_message(data)
            verify_message(message)
        except (ProtocolError, SignatureError) as exc:
            log.info("governance message dropped reason=%s", exc)
            return None
        return message

    def _admit(self, message: GossipMessage) -> bool:
        checked = self._checked(message.data)
        return checked is not None and checked.issued_at <= self._clock() + self._skew

    async def _deliver(self, message: GossipMessage) -> None:
        checked = self._checked(message.data)
        if checked is not None:
            await self._add(checked)

    async def _add(self, message: GovMessage) -> bool:
        return await trio.to_thread.run_sync(self._store.add, message, limiter=self._db)

    async def _serve_sync(self, stream: NetStream) -> None:
        for raw in await trio.to_thread.run_sync(self._store.raw_messages, limiter=self._db):
            await stream.write_frame(raw)

    async def sync_with(self, peer_id: str) -> int:
        """Fetch `peer_id`'s messages; how many were new here. NetworkError if it fails."""
        stream = await self._net.open_stream(peer_id, GOV_PROTOCOL)
        new = 0
        try:
            for _ in range(MAX_MESSAGES):
                try:
                    raw = await stream.read_frame()
                except NetworkError:  # the end of the list (or the peer went away)
                    break
                checked = self._checked(raw)
                if checked is not None and await self._add(checked):
                    new += 1
        finally:
            await stream.close()
        return new

    async def sync(self) -> int:
        """Sync with every connected peer now; how many messages were new here."""
        return await self._sync_peers(self._net.peers())

    async def _sync_peers(self, peers: Sequence[str]) -> int:
        new = 0
        for peer in peers:
            try:
                new += await self.sync_with(peer)
            except NetworkError as exc:  # not every peer speaks governance (yet)
                log.debug("governance sync skipped peer=%s reason=%s", peer, exc)
        if new:
            log.info("governance sync new_messages=%d", new)
        return new

    async def _sync_loop(self) -> None:
        await trio.sleep(min(self._interval, NEW_PEER_CHECK_S))  # let bootstrap connections form
        next_turn = trio.current_time() + self._interval
        while True:
            peers = self._plan.new_peers(self._net.peers())
            if trio.current_time() >= next_turn:
                next_turn = trio.current_time() + self._interval
                turn = self._plan.next_in_turn()
                if turn is not None and turn not in peers:
                    peers.append(turn)
            await self._sync_peers(peers)
            await trio.sleep(min(self._interval, NEW_PEER_CHECK_S))

    # -- acting --------------------------------------------------------------------------

    async def _publish(self, message: GovMessage) -> None:
        await self._add(message)
        await self._net.publish(GOV_TOPIC, message.encode())

    async def propose(self, draft: ProposalDraft) -> ProposalStatus:
        proposal = sign_proposal(self._identity, draft.parameter, draft.value,
                                 voting_deadline=draft.voting_deadline,
                                 effective_at=draft.effective_at, issued_at=self._clock())
        await self._publish(proposal)
        return await self._status_of(proposal.id)

    async def vote(self, proposal_id: bytes, yes: bool) -> ProposalStatus:
        if self._stake is None:
            raise UsageError("this node declares no stake (start it with --stake): "
                             "a vote without stake is ignored")
        proposals = await trio.to_thread.run_sync(self._store.proposals, limiter=self._db)
        found = [p for p in proposals if p.id == proposal_id]
        if not found:
            raise UsageError(f"unknown proposal {proposal_id.hex()}")
        now = self._clock()
        if now > found[0].voting_deadline:
            raise UsageError(f"voting on {proposal_id.hex()[:16]} closed: a late vote is ignored")
        vote = sign_vote(self._identity, proposal_id, yes, stake=self._stake, issued_at=now)
        await self._publish(vote)
        return await self._status_of(proposal_id)

    # -- reading -------------------------------------------------------------------------

    async def _status_of(self, proposal_id: bytes) -> ProposalStatus:
        for row in (await self.status()).proposals:
            if row.id == proposal_id.hex():
                return row
        raise UsageError(f"unknown proposal {proposal_id.hex()}")

    async def status(self) -> GovStatus:
        now = self._clock()
        return await trio.to_thread.run_sync(self._status_sync, now, limiter=self._db)

    def _slashed(self, voter: bytes) -> int:
        return 0 if self._ledger is None else self._ledger.stake_of(voter).slashed

    def _status_sync(self, now: int) -> GovStatus:
        proposals = self._store.proposals()
        votes = self._store.votes()
        results: list[tuple[Proposal, Tally]] = [
            (p, tally(p, votes, now, self._slashed, self._rules)) for p in proposals]
        effect = in_effect(results, now)
        rows = sorted(
            (ProposalStatus(
                id=p.id.hex(), proposer=peer_id_from_public_key(p.proposer),
                parameter=p.parameter, value=p.value, voting_deadline=p.voting_deadline,
                effective_at=p.effective_at, outcome=t.outcome,
                in_effect=effect.get(p.parameter, (None, b""))[1] == p.id,
                yes_stake=t.yes_stake, no_stake=t.no_stake, voters=t.voters,
                double_votes=t.double_votes, no_stake_votes=t.no_stake_votes,
                late_votes=t.late_votes)
             for p, t in results),
            key=lambda r: (r.voting_deadline, r.id))  # fmt: skip
        return GovStatus(
            now_ms=now, stake=self._stake.amount if self._stake else 0,
            quorum_stake=self._rules.quorum_stake, threshold_bp=self._rules.threshold_bp,
            proposals=tuple(rows),
            in_effect=tuple(ParameterInEffect(name, value, pid.hex())
                            for name, (value, pid) in sorted(effect.items())),
        )
