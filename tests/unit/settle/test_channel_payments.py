"""Jobs paid through channels, node side: attacks on the provider's channel book first,
then the consumer's vouchers (FakeChainForTests for the chain, real SQLite ledgers)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from p2pinfer.addresses import asker_group
from p2pinfer.errors import InsufficientCreditError, OverchargeError
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import Ledger
from p2pinfer.protocol.messages import Receipt
from p2pinfer.settle import channels
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.channels import (
    PAYER_BAN_S,
    ChannelBook,
    ChannelRefused,
    settle_receipt,
)
from p2pinfer.settle.payer import PayerBook
from p2pinfer.settle.vouchers import sign_digest, voucher_digest
from tests.support.fake_chain import FakeChainForTests

CREDITS = 1_000_000


class Parties:
    """A provider and a consumer node, their accounts, one fake chain, real ledgers."""

    def __init__(self, tmp: Path) -> None:
        self.provider_id, self.consumer_id = NodeIdentity.generate(), NodeIdentity.generate()
        self.provider_acct = account_of(self.provider_id)
        self.consumer_acct = account_of(self.consumer_id)
        self.chain = FakeChainForTests(self.provider_acct.address)
        self.consumer_chain = self.chain.as_account(self.consumer_acct.address)
        self.provider_ledger = Ledger.open(tmp / "provider.sqlite3", self.provider_id)
        self.consumer_ledger = Ledger.open(tmp / "consumer.sqlite3", self.consumer_id)
        self.book = ChannelBook(self.chain, self.provider_ledger,
                                binding=bind_signature(self.provider_acct,
                                                       self.provider_id.peer_id))
        self.payer = PayerBook(self.consumer_chain, self.consumer_acct, self.consumer_ledger)

    def fund(self, credits: int = 1) -> None:
        self.chain.deposit(self.consumer_acct.address, self.provider_acct.address,
                           credits * CREDITS)

    def voucher(self, cumulative: int, signer: bytes | None = None) -> bytes:
        digest = voucher_digest(self.chain.channels_address, self.chain.chain_id,
                                self.consumer_acct.address, self.provider_acct.address,
                                cumulative)
        return sign_digest(signer or self.consumer_acct.private_key, digest)


@pytest.fixture
def parties(tmp_path: Path) -> Parties:
    return Parties(tmp_path)


# -- the payer's binding -------------------------------------------------------------------


def test_request_without_payer_binding_is_refused(parties: Parties) -> None:
    with pytest.raises(ChannelRefused, match="needs a payer account") as refused:
        parties.book.payer_of(None, None, parties.consumer_id.peer_id)
    assert refused.value.code == "insufficient_credit"


def test_binding_signed_by_another_key_is_refused(parties: Parties) -> None:
    mallory = account_of(NodeIdentity.generate())
    # Mallory's own binding, presented as the victim's account: the signature is not theirs.
    forged = bind_signature(mallory, parties.consumer_id.peer_id)
    with pytest.raises(ChannelRefused, match="binding"):
        parties.book.payer_of(address_bytes(parties.consumer_acct.address), forged,
                              parties.consumer_id.peer_id)
    # The victim's real binding, replayed from another peer's key: bound to another PeerID.
    real = bind_signature(parties.consumer_acct, parties.consumer_id.peer_id)
    with pytest.raises(ChannelRefused, match="binding"):
        parties.book.payer_of(address_bytes(parties.consumer_acct.address), real,
                              NodeIdentity.generate().peer_id)
    assert parties.book.payer_of(address_bytes(parties.consumer_acct.address), real,
                                 parties.consumer_id.peer_id) == parties.consumer_acct.address


# -- the accept rule -----------------------------------------------------------------------


async def test_uncovered_channel_is_refused_with_the_deposit_command(parties: Parties) -> None:
    with pytest.raises(ChannelRefused) as refused:
        await parties.book.admit(parties.consumer_acct.address, 1)
    message = str(refused.value)
    assert refused.value.code == "insufficient_credit"
    assert (f"no funded channel to {parties.provider_acct.address}: run `p2pinfer wallet "
            f"deposit {parties.provider_acct.address} CREDITS`") in message


async def test_admission_reserves_so_concurrent_jobs_cannot_overdraw(parties: Parties) -> None:
    parties.chain.deposit(parties.consumer_acct.address, parties.provider_acct.address, 1000)
    first = await parties.book.admit(parties.consumer_acct.address, 600)
    with pytest.raises(ChannelRefused, match="400 free"):
        await parties.book.admit(parties.consumer_acct.address, 600)
    parties.book.release(first)
    await parties.book.admit(parties.consumer_acct.address, 600)
    assert parties.chain.reads == 1  # one read at first sight; then the cache


async def test_held_vouchers_count_against_the_deposit(parties: Parties) -> None:
    parties.chain.deposit(parties.consumer_acct.address, parties.provider_acct.address, 1000)
    hold = await parties.book.admit(parties.consumer_acct.address, 900)
    assert await settle_receipt(parties.book, hold, os.urandom(16), 900, 900,
                                parties.voucher(900))
    with pytest.raises(ChannelRefused, match="100 free"):
        await parties.book.admit(parties.consumer_acct.address, 101)


async def test_a_pending_reclaim_refuses_new_jobs(parties: Parties) -> None:
    parties.fund()
    parties.chain.start_reclaim(parties.consumer_acct.address, parties.provider_acct.address,
                                at=2_000_000_000)
    with pytest.raises(ChannelRefused, match="reclaiming"):
        await parties.book.admit(parties.consumer_acct.address, 1)


# -- vouchers on the receipt ---------------------------------------------------------------


@pytest.mark.parametrize("case", ["wrong signer", "lower cumulative", "above deposit",
                                  "charge mismatch", "no voucher"])
async def test_bad_voucher_leaves_the_job_unpaid_and_refuses_the_payer(
        parties: Parties, case: str) -> None:
    parties.chain.deposit(parties.consumer_acct.address, parties.provider_acct.address, 1000)
    book, payer = parties.book, parties.consumer_acct.address
    hold = await book.admit(payer, 500)
    assert await settle_receipt(book, hold, os.urandom(16), 300, 300, parties.voucher(300))
    hold = await book.admit(payer, 500)
    cumulative, charged, signer = 500, 200, None
    if case == "wrong signer":
        signer = account_of(NodeIdentity.generate()).private_key
    elif case == "lower cumulative":
        cumulative = 200  # the job's charge alone: the 300 already held would be paid twice
        charged = 200
    elif case == "above deposit":
        cumulative, charged = 1300, 1000
    elif case == "charge mismatch":
        charged = 250  # the result charged 250; the voucher adds only 200
    sig = None if case == "no voucher" else parties.voucher(cumulative, signer)
    assert not await settle_receipt(book, hold, os.urandom(16), charged, cumulative, sig)
    assert book.channels[payer].held == 300  # nothing of the bad voucher is held
    assert book.channels[payer].reserved == 0
    with pytest.raises(ChannelRefused, match="bad voucher"):
        await book.admit(payer, 1)


async def test_a_job_left_unpaid_refuses_its_payer_account_for_ten_minutes(
        parties: Parties) -> None:
    # Attack 72: the key's ban alone let each new key bound to one account take an
    # answer unpaid; the account is refused as long as the key.
    now = [100.0]
    book = ChannelBook(parties.chain, None, clock_s=lambda: now[0])
    parties.fund()
    payer = parties.consumer_acct.address
    book.release(await book.admit(payer, 500))  # a job paid or stopped: nothing held
    book.release(await book.admit(payer, 500), unpaid=True)
    assert book.channels[payer].reserved == 0
    now[0] += PAYER_BAN_S - 1
    with pytest.raises(ChannelRefused, match="left a job unpaid here; refused for 1 s more"):
        await book.admit(payer, 1)
    now[0] += 1
    book.release(await book.admit(payer, 1))


async def test_an_unpaid_end_does_not_reword_a_bad_voucher_ban(parties: Parties) -> None:
    parties.fund()
    book, payer = parties.book, parties.consumer_acct.address
    hold = await book.admit(payer, 500)
    assert not await settle_receipt(book, hold, os.urandom(16), 300, 300, None)
    book.release(hold, unpaid=True)  # the job server's release after the bad voucher
    with pytest.raises(ChannelRefused, match="bad voucher"):
        await book.admit(payer, 1)


async def test_chain_reads_for_new_payers_are_budgeted_per_asker_and_in_all(
        parties: Parties, monkeypatch: pytest.MonkeyPatch) -> None:
    # Attack 74: each fresh account was a chain read. Per asker, then in all; a payer
    # already cached is no read, and an uncovered one over the budget keeps its state.
    monkeypatch.setattr(channels, "CHAIN_READS_PER_ASKER", 2)
    monkeypatch.setattr(channels, "CHAIN_READS_PER_MIN", 3)
    now = [100.0]
    book = ChannelBook(parties.chain, None, clock_s=lambda: now[0])
    fresh = [account_of(NodeIdentity.generate()).address for _ in range(5)]
    for account in fresh[:2]:
        with pytest.raises(ChannelRefused, match="no funded channel"):
            await book.admit(account, 10, asker="198.51.100.7")
    with pytest.raises(ChannelRefused, match="chain reads") as over:
        await book.admit(fresh[2], 10, asker="198.51.100.7")
    assert over.value.code == "busy"
    with pytest.raises(ChannelRefused, match="no funded channel"):
        await book.admit(fresh[2], 10, asker="203.0.113.9")  # another asker: its own
    with pytest.raises(ChannelRefused, match="chain reads"):
        await book.admit(fresh[3], 10, asker="192.0.2.1")  # 3 in all this minute
    reads = parties.chain.reads
    now[0] += 5  # stale: an uncovered payer would be re-read, but the budget is spent
    parties.chain.deposit(fresh[0], parties.provider_acct.address, 1000)
    with pytest.raises(ChannelRefused, match="no funded channel"):
        await book.admit(fresh[0], 10, asker="198.51.100.7")
    assert parties.chain.reads == reads
    now[0] += 60  # a minute on: the deposit is seen
    book.release(await book.admit(fresh[0], 10, asker="198.51.100.7"))
    assert parties.chain.reads == reads + 1


def test_askers_are_address_groups_but_peers_on_loopback_or_through_a_relay() -> None:
    assert asker_group("12D3peer", "198.51.100.7") == "198.51.100.7"
    assert asker_group("12D3peer", "2001:db8:0:1::5") == "2001:db8::/56"
    assert asker_group("12D3peer", "127.0.0.1") == "12D3peer"
    assert asker_group("12D3peer", "198.51.100.7", relayed=True) == "12D3peer"
    assert asker_group("12D3peer", None) == "12D3peer"


async def test_held_vouchers_are_journaled_and_survive_a_restart(
        parties: Parties, tmp_path: Path) -> None:
    parties.fund()
    hold = await parties.book.admit(parties.consumer_acct.address, 500)
    assert await settle_receipt(parties.book, hold, os.urandom(16), 400, 400,
                                parties.voucher(400))
    parties.provider_ledger.verify_or_raise()
    restarted = ChannelBook(parties.chain, parties.provider_ledger)
    channel = await restarted.channel(parties.consumer_acct.address)
    assert channel.held == 400 and channel.signature == parties.voucher(400)


# -- the consumer --------------------------------------------------------------------------


async def test_consumer_cumulative_survives_a_restart(parties: Parties, tmp_path: Path) -> None:
    parties.fund()
    provider = parties.provider_acct.address
    first = await parties.payer.sign_voucher(provider, os.urandom(16), 120)
    second = await parties.payer.sign_voucher(provider, os.urandom(16), 30)
    assert (first.previous, first.cumulative, second.cumulative) == (0, 120, 150)
    parties.consumer_ledger.close()
    reopened = Ledger.open(tmp_path / "consumer.sqlite3", parties.consumer_id)
    reopened.verify_or_raise()
    again = PayerBook(parties.consumer_chain, parties.consumer_acct, reopened)
    third = await again.sign_voucher(provider, os.urandom(16), 5)
    assert (third.previous, third.cumulative) == (150, 155)


async def test_consumer_starts_from_what_the_chain_redeemed_when_above_its_journal(
        parties: Parties) -> None:
    parties.fund()
    provider = parties.provider_acct.address
    key = (parties.consumer_acct.address.lower(), provider.lower())
    s = parties.chain.state[key]
    parties.chain.state[key] = type(s)(s.deposit, 700, 0)  # redeemed from a lost journal
    voucher = await parties.payer.sign_voucher(provider, os.urandom(16), 10)
    assert (voucher.previous, voucher.cumulative) == (700, 710)


async def test_consumer_refuses_an_uncovered_channel_with_the_deposit_command(
        parties: Parties) -> None:
    provider = parties.provider_acct.address
    with pytest.raises(InsufficientCreditError,
                       match=f"no funded channel to {provider}: run `p2pinfer wallet deposit "
                             f"{provider} CREDITS`"):
        await parties.payer.check_cover(provider, 1)
    parties.fund()
    await parties.payer.check_cover(provider, CREDITS)


def test_consumer_never_signs_a_voucher_above_the_checked_charge(parties: Parties) -> None:
    # A ConsumerJob with a checked result of charge C: a receipt whose voucher adds more
    # than C to the previous cumulative is refused before anything is signed.
    from tests.unit.test_overcharge import accepted, deliver, lying_result

    consumer = accepted()
    deliver(consumer, "Blue", lying_result(consumer, "Blue"))  # within every bound
    charged = consumer.checked_charge
    with pytest.raises(OverchargeError):
        consumer.receipt(previous=100, cumulative=100 + charged + 1, voucher=bytes(65))
    raw = consumer.receipt(previous=100, cumulative=100 + charged, voucher=bytes(65))
    assert raw and consumer.receipt_message is not None
    receipt = consumer.receipt_message.msg
    assert isinstance(receipt, Receipt) and receipt.cumulative == 100 + charged


async def test_first_sight_read_is_bounded_and_fills_the_cache_later(parties: Parties) -> None:
    parties.fund()
    release = trio.Event()
    slow_chain = parties.chain
    real_channel = slow_chain.channel

    def slow(consumer: str, provider: str) -> object:
        trio.from_thread.run(release.wait)
        return real_channel(consumer, provider)

    slow_chain.channel = slow  # type: ignore[method-assign,assignment]
    book = ChannelBook(slow_chain, None, first_read_timeout_s=0.2)
    async with trio.open_nursery() as nursery:
        await nursery.start(book.run)
        with pytest.raises(ChannelRefused) as refused:
            await book.admit(parties.consumer_acct.address, 1)
        assert refused.value.code == "busy"
        release.set()
        await trio.sleep(0.1)
        await book.admit(parties.consumer_acct.address, 1)  # cached now: no chain call
        nursery.cancel_scope.cancel()


async def test_fresh_payer_accounts_do_not_grow_the_cache_without_bound(
        parties: Parties, monkeypatch: pytest.MonkeyPatch) -> None:
    import p2pinfer.settle.channels as channels_module

    monkeypatch.setattr(channels_module, "MAX_CHANNELS", 4)
    parties.fund()
    hold = await parties.book.admit(parties.consumer_acct.address, 10)
    assert await settle_receipt(parties.book, hold, os.urandom(16), 10, 10, parties.voucher(10))
    for _ in range(10):  # Sybil payers with nothing deposited
        with pytest.raises(ChannelRefused):
            await parties.book.admit(account_of(NodeIdentity.generate()).address, 1)
    assert len(parties.book.channels) <= 4
    assert parties.book.channels[parties.consumer_acct.address].held == 10  # owed: kept


async def test_receipts_that_overtake_each_other_are_both_paid(parties: Parties) -> None:
    # Two jobs at once: the consumer numbers A (100) then B (100 + 50), but B's receipt
    # reaches the provider first. B's voucher covers both; A's lower one adds nothing.
    parties.fund()
    payer = parties.consumer_acct.address
    hold_a = await parties.book.admit(payer, 100)
    hold_b = await parties.book.admit(payer, 100)
    assert await settle_receipt(parties.book, hold_b, os.urandom(16), 50, 150,
                                parties.voucher(150))
    assert await settle_receipt(parties.book, hold_a, os.urandom(16), 100, 100,
                                parties.voucher(100))
    channel = parties.book.channels[payer]
    assert (channel.held, channel.billed) == (150, 150)
    assert channel.signature == parties.voucher(150)
    # A third job's voucher must now cover all three.
    hold_c = await parties.book.admit(payer, 100)
    assert not await settle_receipt(parties.book, hold_c, os.urandom(16), 10, 150,
                                    parties.voucher(150))


def test_a_covered_key_is_served_as_a_payer_from_its_first_job() -> None:
    from p2pinfer.jobs.admission import ConsumerGate, Refused

    gate = ConsumerGate()
    key = NodeIdentity.generate().public_key
    ticket = gate.admit(key, 0, idle=False, covered=True)  # no idle slot needed
    assert not ticket.free
    gate.result_sent(ticket)
    gate.release(ticket, 1)  # result taken, not paid (a bad voucher): banned as today
    with pytest.raises(Refused, match="no receipt"):
        gate.admit(key, 2, idle=True, covered=True)


async def test_a_deposit_after_a_refusal_is_seen_on_the_next_try(parties: Parties) -> None:
    now = [100.0]
    book = ChannelBook(parties.chain, None, clock_s=lambda: now[0])
    payer = parties.consumer_acct.address
    with pytest.raises(ChannelRefused, match="no funded channel"):
        await book.admit(payer, 10)
    parties.fund()
    with pytest.raises(ChannelRefused):  # within RECHECK_S: the cache answers, no RPC
        await book.admit(payer, 10)
    assert parties.chain.reads == 1
    now[0] += 2.0
    await book.admit(payer, 10)  # re-read once on the refused path, then covered
    assert parties.chain.reads == 2
    await book.admit(payer, 10)  # covered: the cache alone
    assert parties.chain.reads == 2
