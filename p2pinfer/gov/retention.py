"""What a node stops keeping: a pure function of the stored messages, now and the tally.

A store bounded only by a count would fill for good (a flood of 10,000 messages once
froze governance); so a proposal, and every vote naming it, goes once it can no longer
change anything here:
- a refused proposal (voting period too short, first seen after its deadline): at once;
- a closed proposal RETAIN_CLOSED_MS after its deadline, unless it passed and is in
  effect or still waiting for its `effective_at` (the tally is recomputed from the votes,
  so those stay while the result matters);
- a vote naming no stored proposal, ORPHAN_MS after this node first saw it.
"""

from __future__ import annotations

from collections.abc import Iterable

from p2pinfer.gov.messages import Proposal, Vote
from p2pinfer.gov.store import StoredMessage
from p2pinfer.gov.tally import TallyRules, VerifiedStake, in_effect, tally_all

#: How long a closed proposal (not in effect) and its votes stay, to be shown and synced.
RETAIN_CLOSED_MS = 3_600_000
#: How long a vote waits for its proposal (gossip and sync deliver one in seconds).
ORPHAN_MS = 600_000


def expired(stored: Iterable[StoredMessage], now_ms: int, stake: VerifiedStake,
            rules: TallyRules) -> list[bytes]:
    """Ids of the stored messages that may go now (see the module doc)."""
    stored = list(stored)
    proposals = [s.message for s in stored if isinstance(s.message, Proposal)]
    votes = [s for s in stored if isinstance(s.message, Vote)]
    first_seen = {s.message.id: s.first_seen for s in stored}
    results = tally_all(proposals, [v.message for v in votes if isinstance(v.message, Vote)],
                        now_ms, stake, rules, first_seen)
    current = {pid for _, pid in in_effect(results, now_ms).values()}
    gone: set[bytes] = set()
    for proposal, result in results:
        if result.outcome == "refused":
            gone.add(proposal.id)
        elif now_ms > proposal.voting_deadline + RETAIN_CLOSED_MS:
            matters = result.passed and (proposal.effective_at > now_ms
                                         or proposal.id in current)
            if not matters:
                gone.add(proposal.id)
    held = {p.id for p in proposals} - gone
    ids = list(gone)
    for s in votes:
        vote = s.message
        assert isinstance(vote, Vote)
        orphan = vote.proposal_id not in held and now_ms - s.first_seen > ORPHAN_MS
        if vote.proposal_id in gone or orphan:
            ids.append(vote.id)
    return ids
