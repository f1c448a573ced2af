"""GovService's door and sync stream: backdated or closed messages are dropped, a sync
peer cannot push unbounded messages, and only stake recorded in this node's own ledger
(its own --stake, declarations its operator accepted) weighs anything."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2pinfer.errors import FrameTooLarge, StreamClosedError, UsageError
from p2pinfer.gov.messages import MAX_MESSAGE, Proposal, sign_proposal, sign_vote
from p2pinfer.gov.service import MAX_SYNC_FRAMES, MAX_SYNC_REFUSED, GovService
from p2pinfer.gov.status import ProposalDraft
from p2pinfer.gov.store import MAX_PER_AUTHOR, GovStore
from p2pinfer.gov.tally import MIN_VOTING_MS
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, MAX_VOTE_STAKE, sign_stake
from tests.market_support import fixed_identity
from tests.support.clocks import FakeClock

HOUR = 3_600_000
NOW = 100 * HOUR
ME, OTHER, ATTACKER = fixed_identity(70), fixed_identity(71), fixed_identity(72)


class FakeStream:
    """A sync stream from a peer that sends `frames` (possibly without end)."""

    def __init__(self, frames: Iterator[bytes]) -> None:
        self._frames = frames
        self.read = 0

    async def read_frame(self, *, max_size: int = 2**20, timeout_s: float = 30) -> bytes:
        raw = next(self._frames, None)
        if raw is None:
            raise StreamClosedError("end of the list")
        self.read += 1
        if len(raw) > max_size:
            raise FrameTooLarge(f"{len(raw)} bytes")
        return raw

    async def close(self) -> None:
        pass


class FakeNet:
    """Only what GovService asks of the host; every stream opened reads `frames`."""

    def __init__(self, frames: Iterator[bytes] = iter(())) -> None:
        self.frames = frames
        self.streams: list[FakeStream] = []
        self.published: list[bytes] = []

    async def open_stream(self, peer_id: str, protocol: str) -> FakeStream:
        self.streams.append(FakeStream(self.frames))
        return self.streams[-1]

    async def publish(self, topic: str, data: bytes) -> None:
        self.published.append(data)

    def peers(self) -> list[str]:
        return ["peer"]


def service(tmp_path: Path, net: FakeNet, *, stake: int = 0, ledger: Ledger | None = None,
            clock: FakeClock | None = None) -> GovService:
    clock = clock or FakeClock(NOW)
    store = GovStore(tmp_path / "gov.sqlite", clock_ms=clock)
    return GovService(ME, net, store, stake=stake, ledger=ledger,  # type: ignore[arg-type]
                      clock_ms=clock)


def open_proposal(key: NodeIdentity, n: int = 0) -> Proposal:
    return sign_proposal(key, "check_rate_pm", n % 200, voting_deadline=NOW + 2 * HOUR + n,
                         effective_at=NOW + 2 * HOUR + n, issued_at=NOW - 1_000)


def backdated_takeover() -> list[Any]:
    """A proposal that closed before anyone saw it, with a 2^62 self-declared yes vote."""
    p = sign_proposal(ATTACKER, "base_rate", 5_000, voting_deadline=NOW - 60_000,
                      effective_at=NOW - 60_000, issued_at=NOW - 3 * HOUR)
    return [p, sign_vote(ATTACKER, p.id, True, stake=sign_stake(ATTACKER, 2**62, 0),
                         issued_at=NOW - 2 * HOUR)]


async def test_a_backdated_closed_proposal_and_its_vote_are_dropped(tmp_path: Path) -> None:
    net = FakeNet(m.encode() for m in backdated_takeover())
    gov = service(tmp_path, net)
    assert await gov.sync_with("peer") == 0
    status = await gov.status()
    assert status.proposals == () and status.in_effect == () and status.messages == 0


async def test_a_vote_first_seen_after_its_proposal_closed_is_dropped(tmp_path: Path) -> None:
    p = sign_proposal(OTHER, "check_rate_pm", 50, voting_deadline=NOW + 10,
                      effective_at=NOW + 10, issued_at=NOW - 2 * HOUR)
    late_vote = sign_vote(OTHER, p.id, True, stake=sign_stake(OTHER, 1, 0), issued_at=NOW)
    net, clock = FakeNet(iter([p.encode()])), FakeClock(NOW)
    gov = service(tmp_path, net, clock=clock)
    assert await gov.sync_with("peer") == 1
    clock.now = NOW + 11  # the vote (dated before the deadline) arrives after it
    net.frames = iter([late_vote.encode()])
    assert await gov.sync_with("peer") == 0
    assert [row.voters for row in (await gov.status()).proposals] == [0]


async def test_one_sync_peer_cannot_push_unbounded_junk(tmp_path: Path) -> None:
    net = FakeNet(itertools.repeat(b"\x81\xa1v\x01"))  # decodes to nothing valid, forever
    gov = service(tmp_path, net)
    assert await gov.sync_with("peer") == 0
    assert net.streams[0].read == MAX_SYNC_REFUSED


async def test_one_sync_peer_cannot_push_unbounded_valid_messages(tmp_path: Path) -> None:
    net = FakeNet(open_proposal(ATTACKER, n).encode() for n in itertools.count())
    gov = service(tmp_path, net)
    assert await gov.sync_with("peer") == MAX_PER_AUTHOR
    assert net.streams[0].read == MAX_PER_AUTHOR + MAX_SYNC_REFUSED
    assert (await gov.status()).most_by_one_author == MAX_PER_AUTHOR


async def test_a_sync_stops_at_an_oversized_frame_and_after_max_frames(tmp_path: Path) -> None:
    known = open_proposal(OTHER)
    net = FakeNet(itertools.chain([known.encode()], itertools.repeat(known.encode())))
    gov = service(tmp_path, net)
    assert await gov.sync_with("peer") == 1  # then the same bytes again and again
    assert net.streams[0].read == MAX_SYNC_FRAMES
    net.frames = iter([os.urandom(MAX_MESSAGE + 1), open_proposal(OTHER, 1).encode()])
    assert await gov.sync_with("peer") == 0


async def test_own_stake_counts_and_accepted_stake_counts_capped(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3", ME) as ledger:
        gov = service(tmp_path, FakeNet(), stake=2 * DEFAULT_MINIMUM_STAKE, ledger=ledger)
        gov._record_own_stake()
        status = await gov.status()
        assert status.stake == status.known_stake == 2 * DEFAULT_MINIMUM_STAKE
        assert status.stake_declaration  # for other operators to accept
        whale = sign_stake(OTHER, 2**62, NOW)
        assert await gov.accept_stake(whale.encode()) == MAX_VOTE_STAKE
        assert (await gov.status()).known_stake == 2 * DEFAULT_MINIMUM_STAKE + MAX_VOTE_STAKE
        gov._record_own_stake()  # a restart with the same --stake records nothing new
        assert len(ledger.stakes()) == 2


async def test_a_vote_backed_only_by_its_own_declaration_weighs_nothing(tmp_path: Path) -> None:
    p = open_proposal(OTHER)
    claim = sign_vote(ATTACKER, p.id, True, stake=sign_stake(ATTACKER, 2**62, 0),
                      issued_at=NOW)
    with Ledger.open(tmp_path / "ledger.sqlite3", ME) as ledger:
        gov = service(tmp_path, FakeNet(iter([p.encode(), claim.encode()])), ledger=ledger)
        assert await gov.sync_with("peer") == 2
        [row] = (await gov.status()).proposals
        assert (row.yes_stake, row.voters, row.no_stake_votes) == (0, 0, 1)


async def test_proposing_under_the_minimum_voting_period_is_refused(tmp_path: Path) -> None:
    net = FakeNet()
    gov = service(tmp_path, net)
    short = ProposalDraft("check_rate_pm", 50, NOW + MIN_VOTING_MS - 1, NOW + MIN_VOTING_MS)
    with pytest.raises(UsageError, match="voting period"):
        await gov.propose(short)
    assert net.published == []
    ok = ProposalDraft("check_rate_pm", 50, NOW + MIN_VOTING_MS, NOW + MIN_VOTING_MS)
    assert (await gov.propose(ok)).outcome == "open" and len(net.published) == 1


def test_the_ledger_reads_every_verified_stake_at_once_as_stake_of_does(tmp_path: Path) -> None:
    with Ledger.open(tmp_path / "ledger.sqlite3", ME) as ledger:
        ledger.record_stake(sign_stake(OTHER, 30_000, 2_000))
        ledger.record_stake(sign_stake(OTHER, 50_000, 1_000))  # older: not the current one
        ledger.record_slash(OTHER.public_key, 5_000, reason="fraud", evidence=b"proof")
        ledger.record_slash(ATTACKER.public_key, 1, reason="fraud", evidence=b"proof-2")
        everyone = ledger.stakes()
        assert set(everyone) == {OTHER.public_key, ATTACKER.public_key}
        for key, status in everyone.items():
            assert status == ledger.stake_of(key)
        assert everyone[OTHER.public_key].effective == 25_000


async def test_expiry_frees_an_authors_room_once_its_proposals_closed(tmp_path: Path) -> None:
    from p2pinfer.gov.retention import RETAIN_CLOSED_MS

    flood = [open_proposal(ATTACKER, n) for n in range(MAX_PER_AUTHOR)]
    net, clock = FakeNet(m.encode() for m in flood), FakeClock(NOW)
    gov = service(tmp_path, net, clock=clock)
    assert await gov.sync_with("peer") == MAX_PER_AUTHOR
    net.frames = iter([open_proposal(ATTACKER, MAX_PER_AUTHOR).encode()])
    assert await gov.sync_with("peer") == 0  # at its cap
    assert await gov.expire() == 0  # still open: kept
    clock.now = max(p.voting_deadline for p in flood) + RETAIN_CLOSED_MS + 1
    assert await gov.expire() == MAX_PER_AUTHOR
    assert (await gov.status()).messages == 0
