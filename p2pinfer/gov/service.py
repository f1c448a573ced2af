"""`GovService`: a node's governance over its host: gossip, sync stream, store, tally.

- Gossip topic `p2pinfer/gov/1`: each message is one signed proposal or vote;
  the validator (`_door`) drops what does not decode, is not signed by its author,
  is dated more than `skew_ms` in the future, is a proposal with too short a
  voting period or whose deadline passed before this node first saw it, is a vote
  on a proposal already closed here, or that a store bound refuses (per author,
  authors without verified stake, total). What it keeps is stored with the time
  this node first saw it, and only what it keeps is relayed.
- Stream `/p2pinfer/gov/1.0.0`: the asker sends nothing; the server sends
  its stored messages (at most MAX_SYNC_FRAMES), one frame each, and closes, to askers
  and within the bytes its `SyncDoor` allows (gov/sync_door.py); the
  asker puts each through the same door, reads at most MAX_SYNC_FRAMES frames for
  SYNC_TIMEOUT_S, and drops a stream that sends MAX_SYNC_REFUSED refused messages.
  A node syncs with each peer once when it connects and with one peer in turn every
  `sync_interval_s`, so one that joined late (or missed a publication) catches up
  on the proposals still open.
- Weight: only stake this node verified counts (`_verified`: the stake entries in
  its own ledger, net of its slashes): its own `--stake`, and declarations its
  operator accepted (`accept_stake`). A number in an advert or a vote is a claim.
  With settlement on (`chain`), the stake locked on chain at each proposal's snapshot
  block instead (`settle.chain_weight`); proposals without a fitting snapshot are refused.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING

import trio

from p2pinfer.errors import (
    DuplicateEntryError,
    NetworkError,
    ProtocolError,
    SignatureError,
    UsageError,
)
from p2pinfer.gov.messages import (
    MAX_MESSAGE,
    GovMessage,
    Proposal,
    Vote,
    decode_message,
    sign_proposal,
    sign_vote,
    verify_message,
)
from p2pinfer.gov.retention import expired
from p2pinfer.gov.status import (
    GovStatus,
    ParameterInEffect,
    ProposalDraft,
    ProposalStatus,
)
from p2pinfer.gov.store import GovStore, wall_ms
from p2pinfer.gov.sync_door import SyncDoor, serve_sync
from p2pinfer.gov.sync_plan import SyncPlan
from p2pinfer.gov.tally import TallyRules, VerifiedStake, in_effect, refusal, tally_all
from p2pinfer.identity import NodeIdentity, peer_id_from_public_key
from p2pinfer.market.stake import StakeDeclaration, sign_stake, verify_stake

if TYPE_CHECKING:
    from p2pinfer.gov.ports import ChainStake
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
#: The most frames one sync stream sends or is read for: a peer cannot push more than
#: this per sync (a store holds far fewer proposals and votes that still matter).
MAX_SYNC_FRAMES = 2_000
#: How long one sync may take, either way (a slow or stalling peer is cut off).
SYNC_TIMEOUT_S = 20.0
#: A sync stream is dropped after this many refused messages (junk, closed, over a bound).
MAX_SYNC_REFUSED = 200
#: How often stored messages are checked for expiry (gov.retention).
EXPIRE_EVERY_S = 60.0
#: Messages the validator checked, kept for the handler so it does not verify them again.
MAX_ADMITTED = 1_000
#: Ids of refused proposals remembered (oldest forgotten first), to drop their votes.
MAX_REFUSED_REMEMBERED = 10_000


class GovService:
    """One node's governance (see module doc). `start` needs the host's nursery alive."""

    def __init__(
        self, identity: NodeIdentity, net: NetHost, store: GovStore, *, stake: int = 0,
        ledger: Ledger | None = None, rules: TallyRules = TallyRules(),
        sync_interval_s: float = 10.0, skew_ms: int = DEFAULT_SKEW_MS,
        clock_ms: Callable[[], int] = wall_ms, chain: ChainStake | None = None,
    ) -> None:
        self._chain = chain
        self._identity, self._net, self._store, self._ledger = identity, net, store, ledger
        self._rules, self._interval, self._skew, self._clock = rules, sync_interval_s, skew_ms, \
            clock_ms
        self._db = trio.CapacityLimiter(1)
        self._plan = SyncPlan()
        self._stake: StakeDeclaration | None = (
            sign_stake(identity, stake, clock_ms()) if stake > 0 else None)
        self._verified = VerifiedStake()
        self._admitted: dict[bytes, GovMessage] = {}  # checked by the validator, to deliver
        self._refused: dict[bytes, None] = {}  # proposals refused here: their votes go too
        self.sync_door = SyncDoor()  # who may download the store, and how much

    async def start(self, nursery: trio.Nursery) -> None:
        """Record this node's own stake, join the topic, serve the sync stream, keep syncing."""
        await trio.to_thread.run_sync(self._record_own_stake, limiter=self._db)
        self._net.set_stream_handler(GOV_PROTOCOL, self._serve_sync)
        if self._chain is not None:
            await self._chain_refresh()  # the head, before any proposal comes to the door
        await self._net.subscribe(GOV_TOPIC, validator=self._admit, handler=self._deliver)
        nursery.start_soon(self._sync_loop)

    # -- verified stake ------------------------------------------------------------------

    def _record_own_stake(self) -> None:
        """The node's own `--stake` is the one declaration it verifies without being told:
        it is its operator's. Recorded in its ledger when it changes."""
        if self._ledger is not None:
            held = self._ledger.stake_of(self._identity.public_key)
            amount = self._stake.amount if self._stake is not None else 0
            if held.declared != amount and (self._stake is not None or held.issued_at is not None):
                self._ledger.record_stake(self._stake or sign_stake(self._identity, 0,
                                                                    self._clock()))
        self._refresh_verified()

    def _refresh_verified(self) -> None:
        if self._ledger is None:
            return
        self._verified = VerifiedStake({key: status.effective
                                        for key, status in self._ledger.stakes().items()})

    def _weight(self, key: bytes) -> int:
        if self._chain is not None:  # the store's share for stakers: seen staked on chain
            return int(self._chain.staked(key, self._identity.public_key))
        return self._verified.weight(key, self._rules.max_stake_per_key)

    async def _chain_refresh(self) -> None:
        assert self._chain is not None
        stored = [s.message for s in self._store.stored()]
        await self._chain.refresh([m for m in stored if isinstance(m, Proposal)],
                                  [m for m in stored if isinstance(m, Vote)])

    async def accept_stake(self, declaration: bytes) -> int:
        """Record another key's signed stake declaration in this node's ledger, on its
        operator's word (until stake is locked on a chain, the only way other keys' stake
        counts here); the weight it now has. ValidationError/SignatureError if it does not
        verify; UsageError without a ledger."""
        decl = StakeDeclaration.decode(declaration)
        verify_stake(decl)
        if self._ledger is None:
            raise UsageError("this node keeps no ledger to record stake in")
        await trio.to_thread.run_sync(self._record_stake, decl, limiter=self._db)
        return self._weight(decl.provider)

    def _record_stake(self, decl: StakeDeclaration) -> None:
        assert self._ledger is not None
        with contextlib.suppress(DuplicateEntryError):  # recorded before
            self._ledger.record_stake(decl)
        self._refresh_verified()

    # -- receiving -----------------------------------------------------------------------

    def _checked(self, data: bytes) -> GovMessage | None:
        try:
            message = decode_message(data)
            verify_message(message)
        except (ProtocolError, SignatureError) as exc:
            log.info("governance message dropped reason=%s", exc)
            return None
        return message

    def _door(self, message: GovMessage, now: int) -> str:
        """Why a verified message first seen `now` is not kept ("" if it is)."""
        if message.issued_at > now + self._skew:
            return "dated in the future"
        if isinstance(message, Proposal):
            if self._chain is not None and self._chain.refusal(message):
                return self._chain.refusal(message)  # not remembered: the head moves on
            reason = refusal(message, now, self._rules)
            if reason:
                if len(self._refused) >= MAX_REFUSED_REMEMBERED:
                    self._refused.pop(next(iter(self._refused)))
                self._refused[message.id] = None
                return reason
        elif message.proposal_id in self._refused:
            return "a vote on a proposal refused here"
        else:
            proposal = self._store.proposal(message.proposal_id)
            if proposal is not None and max(now, message.issued_at) > proposal.voting_deadline:
                return "voting closed before this node saw the vote"
        return self._store.refusal(message, self._weight(message.author) > 0)

    def _admit(self, message: GossipMessage) -> bool:
        if self._store.knows_raw(message.data):
            return False  # stored already: neither again nor relayed again
        checked = self._checked(message.data)
        if checked is None:
            return False
        reason = self._door(checked, self._clock())
        if reason:
            log.debug("governance message not kept id=%s reason=%s", checked.id.hex()[:16],
                      reason)
            return False
        if len(self._admitted) >= MAX_ADMITTED:
            self._admitted.clear()  # the handler lags far behind: it re-checks instead
        self._admitted[message.data] = checked
        return True

    async def _deliver(self, message: GossipMessage) -> None:
        checked = self._admitted.pop(message.data, None) or self._checked(message.data)
        if checked is not None:
            await self._add(checked)

    async def _add(self, message: GovMessage) -> bool:
        now = self._clock()
        if self._door(message, now):
            return False
        return await trio.to_thread.run_sync(self._store.add, message, now,
                                             self._weight(message.author) > 0,
                                             limiter=self._db)

    async def _serve_sync(self, stream: NetStream) -> None:
        rows = partial(trio.to_thread.run_sync, self._store.sync_messages, MAX_SYNC_FRAMES,
                       limiter=self._db)
        await serve_sync(stream, self.sync_door, rows)

    async def sync_with(self, peer_id: str) -> int:
        """Fetch `peer_id`'s messages; how many were new here. NetworkError if it fails.

        Bounded whatever the peer sends: at most MAX_SYNC_FRAMES frames and SYNC_TIMEOUT_S
        seconds, and the stream is dropped once MAX_SYNC_REFUSED of its messages are
        refused (bad, closed, or over a bound); bytes already stored are skipped unread."""
        stream = await self._net.open_stream(peer_id, GOV_PROTOCOL)
        new = refused = 0
        try:
            with trio.move_on_after(SYNC_TIMEOUT_S):
                for _ in range(MAX_SYNC_FRAMES):
                    try:
                        raw = await stream.read_frame(max_size=MAX_MESSAGE)
                    except (NetworkError, ProtocolError):  # the end, or a peer gone or rogue
                        break
                    if self._store.knows_raw(raw):
                        continue
                    checked = self._checked(raw)
                    if checked is not None and await self._add(checked):
                        new += 1
                        continue
                    refused += 1
                    if refused >= MAX_SYNC_REFUSED:
                        log.info("governance sync stopped peer=%s refused=%d", peer_id,
                                 refused)
                        break
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
        next_expiry = trio.current_time() + EXPIRE_EVERY_S
        while True:
            peers = self._plan.new_peers(self._net.peers())
            if trio.current_time() >= next_turn:
                next_turn = trio.current_time() + self._interval
                turn = self._plan.next_in_turn()
                if turn is not None and turn not in peers:
                    peers.append(turn)
            await self._sync_peers(peers)
            if trio.current_time() >= next_expiry:
                next_expiry = trio.current_time() + EXPIRE_EVERY_S
                await self.expire()
            await trio.sleep(min(self._interval, NEW_PEER_CHECK_S))

    async def expire(self) -> int:
        """Delete what no longer matters (see `expired`); how many messages went."""
        now = self._clock()
        return await trio.to_thread.run_sync(self._expire_sync, now, limiter=self._db)

    def _expire_sync(self, now: int) -> int:
        gone = self._store.delete(expired(self._store.stored(), now, self._verified,
                                          self._rules))
        if gone:
            log.info("governance messages expired count=%d", gone)
        return gone

    # -- acting --------------------------------------------------------------------------

    async def _publish(self, message: GovMessage) -> None:
        reason = self._door(message, self._clock())
        if reason:
            raise UsageError(f"not published: {reason}")
        await self._net.publish(GOV_TOPIC, message.encode())  # our validator runs first
        await self._add(message)

    async def propose(self, draft: ProposalDraft) -> ProposalStatus:
        if self._chain is not None:
            await self._chain_refresh()  # the snapshot is the latest block this node saw
        proposal = sign_proposal(self._identity, draft.parameter, draft.value,
                                 voting_deadline=draft.voting_deadline,
                                 effective_at=draft.effective_at, issued_at=self._clock(),
                                 snapshot_block=self._chain.head if self._chain else None)
        await self._publish(proposal)
        return await self._status_of(proposal.id)

    async def vote(self, proposal_id: bytes, yes: bool) -> ProposalStatus:
        if self._stake is None and self._chain is None:
            raise UsageError("this node declares no stake (start it with --stake): "
                             "a vote without stake is ignored")
        found = self._store.proposal(proposal_id)
        if found is None:
            raise UsageError(f"unknown proposal {proposal_id.hex()}")
        now = self._clock()
        if now > found.voting_deadline:
            raise UsageError(f"voting on {proposal_id.hex()[:16]} closed: a late vote is ignored")
        own = self._chain.own if self._chain is not None else None
        vote = sign_vote(self._identity, proposal_id, yes, issued_at=now,
                         stake=self._stake or sign_stake(self._identity, 0, now),
                         account=own.wire if own else None, binding=own.binding if own else None)
        await self._publish(vote)
        return await self._status_of(proposal_id)

    # -- reading -------------------------------------------------------------------------

    async def _status_of(self, proposal_id: bytes) -> ProposalStatus:
        for row in (await self.status()).proposals:
            if row.id == proposal_id.hex():
                return row
        raise UsageError(f"unknown proposal {proposal_id.hex()}")

    async def status(self) -> GovStatus:
        if self._chain is not None:
            await self._chain_refresh()  # reads only what the tallies miss (cached)
        now = self._clock()
        return await trio.to_thread.run_sync(self._status_sync, now, limiter=self._db)

    def _status_sync(self, now: int) -> GovStatus:
        self._refresh_verified()  # an operator may have recorded stake, or a slash come in
        stored = self._store.stored()
        proposals = [s.message for s in stored if isinstance(s.message, Proposal)]
        votes = [s.message for s in stored if isinstance(s.message, Vote)]
        first_seen = {s.message.id: s.first_seen for s in stored}
        weights = self._chain.stake_for if self._chain is not None else self._verified
        results = tally_all(proposals, votes, now, weights, self._rules, first_seen)
        effect = in_effect(results, now)
        rows = sorted(
            (ProposalStatus(
                id=p.id.hex(), proposer=peer_id_from_public_key(p.proposer),
                parameter=p.parameter, value=p.value, voting_deadline=p.voting_deadline,
                effective_at=p.effective_at, outcome=t.outcome,
                in_effect=effect.get(p.parameter, (None, b""))[1] == p.id,
                yes_stake=t.yes_stake, no_stake=t.no_stake, voters=t.voters,
                double_votes=t.double_votes, no_stake_votes=t.no_stake_votes,
                late_votes=t.late_votes, quorum=t.quorum, refused=t.refused)
             for p, t in results),
            key=lambda r: (r.voting_deadline, r.id))  # fmt: skip
        cap = self._rules.max_stake_per_key
        chain = self._chain
        return GovStatus(
            now_ms=now, stake=min(chain.own_stake, cap) if chain else self._weight(
                self._identity.public_key),
            quorum_stake=self._rules.quorum_stake, threshold_bp=self._rules.threshold_bp,
            proposals=tuple(rows),
            in_effect=tuple(ParameterInEffect(name, value, pid.hex())
                            for name, (value, pid) in sorted(effect.items())),
            known_stake=chain.total_now if chain else self._verified.total(cap),
            quorum_bp=self._rules.quorum_bp,
            min_voting_ms=self._rules.min_voting_ms, max_stake_per_key=cap,
            stake_declaration=self._stake.encode().hex() if self._stake else "",
            messages=len(stored), most_by_one_author=self._store.most_by_one_author(),
        )
