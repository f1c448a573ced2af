"""Governance with settlement on: a vote weighs the stake its bound chain account held
at the proposal's snapshot block (capped per key), the quorum is a share of all stake
locked at that block, and a proposal's snapshot must be neither ahead of the head this
node sees nor over MAX_SNAPSHOT_AGE_BLOCKS behind it. Attacks first."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from p2pinfer.gov.messages import Proposal, Vote, decode_message, sign_proposal, sign_vote
from p2pinfer.gov.service import GovService
from p2pinfer.gov.status import ProposalDraft
from p2pinfer.gov.store import GovStore
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, MAX_VOTE_STAKE, sign_stake
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.chain_weight import MAX_SNAPSHOT_AGE_BLOCKS, ChainWeights, OwnAccount
from tests.market_support import fixed_identity
from tests.support.clocks import FakeClock
from tests.support.fake_chain import FakeChainForTests
from tests.unit.test_gov_service import FakeNet

ANY_ACCOUNT = "0x" + "01" * 20  # whose view of the chain: these tests send no transaction

HOUR = 3_600_000
NOW = 100 * HOUR
ME, ALICE, BOB, ATTACKER = (fixed_identity(n) for n in (80, 81, 82, 83))


def gov(tmp_path: Path, chain: FakeChainForTests, frames: Iterator[bytes] = iter(()),
        clock: FakeClock | None = None) -> tuple[GovService, FakeNet, FakeClock]:
    clock = clock or FakeClock(NOW)
    net = FakeNet(frames)
    weights = ChainWeights(chain, OwnAccount.of(ME))
    service = GovService(ME, net, GovStore(tmp_path / "gov.sqlite", clock_ms=clock),  # type: ignore[arg-type]
                         clock_ms=clock, chain=weights)
    return service, net, clock


def proposal(key: NodeIdentity, snapshot: int | None, value: int = 100) -> Proposal:
    return sign_proposal(key, "check_rate_pm", value, voting_deadline=NOW + 2 * HOUR,
                         effective_at=NOW + 2 * HOUR, issued_at=NOW - 1_000,
                         snapshot_block=snapshot)


def vote(key: NodeIdentity, p: Proposal, *, yes: bool = True, claim: int = 0,
         account_of: NodeIdentity | None = None) -> Vote:
    own = OwnAccount.of(account_of or key)
    return sign_vote(key, p.id, yes, stake=sign_stake(key, claim, 0), issued_at=NOW,
                     account=own.wire, binding=own.binding)


async def sync(service: GovService, net: FakeNet, *messages: Proposal | Vote) -> int:
    net.frames = iter([m.encode() for m in messages])
    await service._chain_refresh()
    return await service.sync_with("peer")


async def closed(service: GovService, clock: FakeClock) -> list[tuple[str, int, int]]:
    await service.status()  # reads what the tallies miss
    clock.now = NOW + 3 * HOUR
    return [(r.outcome, r.yes_stake, r.quorum) for r in (await service.status()).proposals]


async def test_a_key_with_no_locked_stake_cannot_pass_anything(tmp_path: Path) -> None:
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(OwnAccount.of(ALICE).address, 2 * DEFAULT_MINIMUM_STAKE)  # someone staked
    service, net, clock = gov(tmp_path, chain)
    p = proposal(ATTACKER, chain.block)
    assert await sync(service, net, p, vote(ATTACKER, p, claim=2**62)) == 2
    assert await closed(service, clock) == [("rejected", 0, DEFAULT_MINIMUM_STAKE)]


async def test_weights_are_the_stake_locked_at_the_snapshot(tmp_path: Path) -> None:
    chain = FakeChainForTests(ANY_ACCOUNT)
    alice, bob = OwnAccount.of(ALICE).address, OwnAccount.of(BOB).address
    chain.stake(alice, 3 * DEFAULT_MINIMUM_STAKE)
    chain.stake(bob, DEFAULT_MINIMUM_STAKE)
    snapshot = chain.block
    chain.stake(bob, 50 * DEFAULT_MINIMUM_STAKE)  # locked after the snapshot: never counts
    service, net, clock = gov(tmp_path, chain)
    p = proposal(BOB, snapshot)
    assert await sync(service, net, p, vote(ALICE, p), vote(BOB, p, yes=False)) == 3
    # yes 3 units against no 1: passes; quorum is half of the 4 locked at the snapshot.
    assert await closed(service, clock) == [("passed", 3 * DEFAULT_MINIMUM_STAKE,
                                             2 * DEFAULT_MINIMUM_STAKE)]
    [row] = (await service.status()).proposals
    assert row.no_stake == DEFAULT_MINIMUM_STAKE


async def test_a_whale_weighs_at_most_the_per_key_cap(tmp_path: Path) -> None:
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(OwnAccount.of(ALICE).address, 1000 * DEFAULT_MINIMUM_STAKE)
    service, net, clock = gov(tmp_path, chain)
    p = proposal(ALICE, chain.block)
    await sync(service, net, p, vote(ALICE, p))
    [(outcome, yes, _)] = await closed(service, clock)
    assert yes == MAX_VOTE_STAKE and outcome == "rejected"  # capped under the quorum


async def test_one_account_bound_to_many_keys_counts_once(tmp_path: Path) -> None:
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(OwnAccount.of(ALICE).address, 2 * DEFAULT_MINIMUM_STAKE)
    service, net, clock = gov(tmp_path, chain)
    p = proposal(ALICE, chain.block)
    sybil = NodeIdentity.generate()
    # Alice's account binds itself to a second key too: still one account's stake.
    alice = OwnAccount.of(ALICE)
    second = sign_vote(sybil, p.id, True, stake=sign_stake(sybil, 0, 0), issued_at=NOW + 1,
                       account=alice.wire,
                       binding=bind_signature(account_of(ALICE), sybil.peer_id))
    await sync(service, net, p, vote(ALICE, p), second)
    [(_, yes, _)] = await closed(service, clock)
    assert yes == 2 * DEFAULT_MINIMUM_STAKE


async def test_a_vote_naming_an_account_bound_to_another_peer_weighs_nothing(
        tmp_path: Path) -> None:
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(OwnAccount.of(ALICE).address, 2 * DEFAULT_MINIMUM_STAKE)
    service, net, clock = gov(tmp_path, chain)
    p = proposal(ALICE, chain.block)
    stolen = vote(ATTACKER, p, account_of=ALICE)  # Alice's account and binding, copied
    await sync(service, net, p, stolen)
    assert await closed(service, clock) == [("rejected", 0, DEFAULT_MINIMUM_STAKE)]


async def test_a_snapshot_ahead_of_the_head_too_old_or_missing_is_refused(
        tmp_path: Path) -> None:
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.block += MAX_SNAPSHOT_AGE_BLOCKS + 10
    service, net, _ = gov(tmp_path, chain)
    ahead, old = proposal(ATTACKER, chain.block + 1), proposal(ATTACKER, 5, 101)
    missing = proposal(ATTACKER, None, 102)
    assert await sync(service, net, ahead, old, missing) == 0
    chain.block += 1  # the head caught up: the same proposal is kept on the next sync
    assert await sync(service, net, ahead) == 1


async def test_this_node_proposes_at_its_head_and_votes_with_its_bound_account(
        tmp_path: Path) -> None:
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(OwnAccount.of(ME).address, 2 * DEFAULT_MINIMUM_STAKE)
    service, net, clock = gov(tmp_path, chain)
    await service._chain_refresh()
    row = await service.propose(ProposalDraft("check_rate_pm", 10, NOW + 2 * HOUR,
                                              NOW + 2 * HOUR))
    await service.vote(bytes.fromhex(row.id), True)  # no --stake: the chain's counts
    sent = [decode_message(raw) for raw in net.published]
    assert isinstance(sent[0], Proposal) and sent[0].snapshot_block == chain.block
    assert isinstance(sent[1], Vote) and sent[1].account == OwnAccount.of(ME).wire
    assert await closed(service, clock) == [("passed", 2 * DEFAULT_MINIMUM_STAKE,
                                             DEFAULT_MINIMUM_STAKE)]


def test_messages_without_the_chain_fields_keep_their_bytes() -> None:
    p = proposal(ALICE, None)
    v = sign_vote(ALICE, p.id, True, stake=sign_stake(ALICE, 1, 0), issued_at=NOW)
    for message in (p, v):
        assert b"snapshot" not in message.encode() and b"account" not in message.encode()
        assert decode_message(message.encode()).encode() == message.encode()
    bound = vote(ALICE, proposal(ALICE, 7))
    assert decode_message(bound.encode()) == bound
