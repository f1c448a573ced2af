"""Slashing on chain: validators that confirmed fraud gossip signed `SlashVote`s; a node
submits `Stake.slash` only once it holds the contract's threshold of distinct, staked
validators' signatures over the same (provider, amount, evidence). Attacks first."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import Ledger
from p2pinfer.protocol import SLASH_TOPIC, SlashVote, decode_as, sign
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.slash_votes import (
    MAX_OPEN_PER_VALIDATOR,
    MAX_OPEN_SLASHES,
    SlashParams,
)
from p2pinfer.settle.slasher import Slasher, slash_amount
from p2pinfer.settle.stakes import StakeBook
from p2pinfer.settle.vouchers import sign_digest, slash_digest
from p2pinfer.verify.report_receiver import ReportReceiver
from tests.support.fake_chain import FakeChainForTests

ANY_ACCOUNT = "0x" + "01" * 20  # whose view of the chain: these tests send no transaction

T0 = 1_700_000_000_000
CREDIT = 1_000_000
PROVIDER_STAKE = 20_000 * CREDIT
VALIDATOR_STAKE = 5_000 * CREDIT
REPORT = b"the signed bytes of a check report"


class Net:
    """Chain, validators and a provider; `published` collects what nodes gossiped."""

    def __init__(self, validators: int = 3, threshold: int = 2) -> None:
        self.chain = FakeChainForTests(ANY_ACCOUNT, slash_threshold=threshold,
                                       validator_min_stake=VALIDATOR_STAKE)
        self.params = SlashParams(self.chain.stake_address, self.chain.chain_id, threshold,
                                  VALIDATOR_STAKE)
        self.provider = NodeIdentity.generate()
        self.payee = account_of(self.provider)
        self.binding = bind_signature(self.payee, self.provider.peer_id)
        self.chain.stake(self.payee.address, PROVIDER_STAKE)
        self.validators = [NodeIdentity.generate() for _ in range(validators)]
        for v in self.validators:
            self.chain.stake(account_of(v).address, VALIDATOR_STAKE)
        self.published: list[bytes] = []

    def node(self, identity: NodeIdentity | None = None, ledger: Ledger | None = None) -> Slasher:
        async def publish(topic: str, raw: bytes) -> None:
            assert topic == SLASH_TOPIC
            self.published.append(raw)

        return Slasher(identity or NodeIdentity.generate(), self.chain, StakeBook(self.chain),
                       self.params, publish=publish, ledger=ledger, clock_ms=lambda: T0)

    async def votes_of(self, validators: list[NodeIdentity]) -> list[bytes]:
        start = len(self.published)
        for v in validators:
            done = await self.node(v).on_fraud(
                self.provider.peer_id, address_bytes(self.payee.address), self.binding, REPORT)
            assert done.startswith("voted"), done
        return self.published[start:]


async def collect(node: Slasher, votes: list[bytes]) -> list[str]:
    reasons = [await node.receive(raw) for raw in votes]
    while await node.stakes.refresh():  # the validators' stakes are read in the background
        pass
    await node.submit_ready()
    return reasons


async def test_one_signature_short_of_the_threshold_is_never_submitted() -> None:
    net = Net(threshold=3)
    node = net.node()
    assert await collect(node, await net.votes_of(net.validators[:2])) == ["", ""]
    for _ in range(3):
        await node.submit_ready()
    assert net.chain.slash_calls == []
    assert net.chain.stakes[net.payee.address] == PROVIDER_STAKE


async def test_votes_of_unstaked_keys_are_ignored() -> None:
    net = Net(threshold=2)
    sybils = [NodeIdentity.generate() for _ in range(5)]  # bound accounts, nothing locked
    node = net.node()
    await collect(node, await net.votes_of(sybils))
    assert net.chain.slash_calls == []
    # Once their (zero) stake is known, more of their votes are refused at the door.
    assert (await collect(node, await net.votes_of(sybils[:1])))[0] == (
        "validator stake under the contract's minimum")


async def test_a_duplicate_signer_counts_once() -> None:
    net = Net(threshold=2)
    node = net.node()
    first = (await net.votes_of(net.validators[:1]))[0]
    again = (await net.votes_of(net.validators[:1]))[0]  # the same validator signs again
    assert await collect(node, [first, first, again]) == [
        "", "validator already voted on this slash", "validator already voted on this slash"]
    assert net.chain.slash_calls == []


async def test_threshold_votes_submit_exactly_one_slash_and_journal_it(tmp_path: Path) -> None:
    net = Net(threshold=2)
    me = NodeIdentity.generate()
    with Ledger.open(tmp_path / "ledger.sqlite", me) as ledger:
        node = net.node(me, ledger)
        votes = await net.votes_of(net.validators)
        await collect(node, votes)
        await node.submit_ready()
        assert len(net.chain.slash_calls) == 1
        amount = slash_amount(PROVIDER_STAKE)
        assert amount == PROVIDER_STAKE // 2
        assert net.chain.stakes[net.payee.address] == PROVIDER_STAKE - amount
        assert ledger.stake_of(net.provider.public_key).slashed == amount
    evidence = hashlib.sha256(REPORT).digest()
    assert net.chain.slash_calls[0][:3] == (net.payee.address, amount, evidence)
    assert node.journal[-1].result.startswith("slashed tx=")


async def test_a_competitor_that_slashed_first_is_fine() -> None:
    net = Net(threshold=2)
    votes = await net.votes_of(net.validators[:2])
    first, second = net.node(), net.node()
    await collect(first, votes)
    await collect(second, votes)
    assert len(net.chain.slash_calls) == 2  # both tried; the chain took one
    assert net.chain.stakes[net.payee.address] == PROVIDER_STAKE - slash_amount(PROVIDER_STAKE)
    assert second.journal[-1].result == "already slashed"
    assert len(second.votes) == 0


async def test_a_vote_bound_to_another_peer_or_for_another_amount_is_refused() -> None:
    net = Net()
    raw = (await net.votes_of(net.validators[:1]))[0]
    node = net.node()
    thief = NodeIdentity.generate()
    vote = decode_as(raw, SlashVote).msg
    assert await node.receive(sign(vote, thief).raw) == (
        "validator account not bound to the signer")
    inflated = replace(vote, amount=vote.amount * 2)  # the signature is over the half
    assert await node.receive(sign(inflated, net.validators[0]).raw) == (
        "signature is not the validator's over this slash")
    assert (await node.receive(b"\x93junk")).startswith("undecodable")
    assert len(node.votes) == 0


async def test_a_flood_of_votes_for_made_up_evidence_stays_bounded() -> None:
    net = Net()
    node = net.node()
    floods = [NodeIdentity.generate() for _ in range(66)]
    kept = 0
    for n, key in enumerate(floods):
        account = account_of(key)
        binding = bind_signature(account, key.peer_id)
        for i in range(MAX_OPEN_PER_VALIDATOR + 2):
            evidence = hashlib.sha256(b"made up %d %d" % (n, i)).digest()
            digest = slash_digest(net.params.stake_contract, net.params.chain_id,
                                  net.payee.address, CREDIT, evidence)
            vote = SlashVote(net.provider.peer_id, address_bytes(net.payee.address), CREDIT,
                             evidence, address_bytes(account.address), binding,
                             sign_digest(account.private_key, digest), T0)
            kept += await node.receive(sign(vote, key).raw) == ""
    assert kept == 66 * MAX_OPEN_PER_VALIDATOR  # the per-validator cap refused the rest
    assert len(node.votes) <= MAX_OPEN_SLASHES
    assert node.votes.votes_held <= MAX_OPEN_SLASHES
    # An honest slash still gets through the flood.
    await collect(node, await net.votes_of(net.validators[:2]))
    assert len(net.chain.slash_calls) == 1


async def test_a_validator_that_confirms_fraud_votes_instead_of_a_ledger_only_slash() -> None:
    net = Net()
    validator = net.node(net.validators[0])
    advert = SimpleNamespace(advert=SimpleNamespace(payee=address_bytes(net.payee.address),
                                                    payee_binding=net.binding))
    checker = SimpleNamespace(
        slasher=validator, ledger=None,
        net=SimpleNamespace(catalog=SimpleNamespace(advert_of=lambda peer: advert)))
    await ReportReceiver._slash(checker, net.provider.peer_id, REPORT,  # type: ignore[arg-type]
                                bytes(32))
    [raw] = net.published
    vote = decode_as(raw, SlashVote).msg
    assert (vote.provider_payee, vote.amount, vote.evidence) == (
        address_bytes(net.payee.address), slash_amount(PROVIDER_STAKE),
        hashlib.sha256(REPORT).digest())
