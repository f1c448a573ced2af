"""A provider's refusals outlive a restart (jobs/refusals.py): keys and payer accounts
that left a job unpaid are journaled in the reputation table (real SQLite) and put back
into a fresh gate and channel book (FakeChainForTests for the chain)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.admission import ConsumerGate, Refused
from p2pinfer.jobs.refusals import RefusalJournal, keep_refusals
from p2pinfer.settle.account import account_of
from p2pinfer.settle.channels import PAYER_BAN_S, ChannelBook, ChannelRefused
from p2pinfer.verify.reputation_store import ReputationBook
from tests.support.fake_chain import FakeChainForTests
from tests.support.waiting import await_until


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def _take_unpaid(gate: ConsumerGate, key: bytes) -> None:
    ticket = gate.admit(key, _wall_ms(), idle=True)
    gate.result_sent(ticket)
    gate.release(ticket, _wall_ms())  # no receipt came


async def test_keys_and_payer_accounts_refused_stay_refused_after_a_restart(
        tmp_path: Path) -> None:
    key = NodeIdentity.generate().public_key
    provider, payer, cheat = (account_of(NodeIdentity.generate()).address for _ in range(3))
    chain = FakeChainForTests(provider)
    chain.deposit(payer, provider, 1_000_000)
    chain.deposit(cheat, provider, 1_000_000)
    with ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        async with trio.open_nursery() as nursery:
            gate, channels = ConsumerGate(), ChannelBook(chain, None)
            journal = await nursery.start(keep_refusals, book, gate, channels)
            _take_unpaid(gate, key)
            channels.release(await channels.admit(payer, 500), unpaid=True)
            channels.ban(cheat, "sent a bad voucher")
            await await_until(lambda: journal.written == 3)
            nursery.cancel_scope.cancel()
        # A restart: a fresh gate and book, in memory nothing.
        async with trio.open_nursery() as nursery:
            gate, channels = ConsumerGate(), ChannelBook(chain, None)
            await nursery.start(keep_refusals, book, gate, channels)
            with pytest.raises(Refused, match=r"sent no receipt; refused for 59\d s more"):
                gate.admit(key, _wall_ms(), idle=True)
            with pytest.raises(ChannelRefused,
                               match=r"left a job unpaid here; refused for 59\d s more"):
                await channels.admit(payer, 1)
            with pytest.raises(ChannelRefused, match="sent a bad voucher here"):
                await channels.admit(cheat, 1)
            other = account_of(NodeIdentity.generate()).address  # no one else is refused
            chain.deposit(other, provider, 1_000_000)
            channels.release(await channels.admit(other, 1))
            gate.release(gate.admit(NodeIdentity.generate().public_key, _wall_ms(), idle=True),
                         _wall_ms())
            nursery.cancel_scope.cancel()


async def test_refusals_over_are_neither_restored_nor_kept(tmp_path: Path) -> None:
    now = [1_000_000]
    key = NodeIdentity.generate().public_key
    with ReputationBook.open(tmp_path / "rep.sqlite3", clock=lambda: now[0]) as book:
        book.refuse([("key:" + key.hex(), now[0] + 600_000, "took a result and sent no receipt"),
                     ("account:0xabc", now[0] + 1_000, "left a job unpaid")])
        book.refuse([("key:" + key.hex(), now[0] + 5_000, "shorter")])  # the later end stands
        assert book.refusals()[-1][1] == now[0] + 600_000
        now[0] += 2_000
        assert [s for s, _, _ in book.refusals()] == ["key:" + key.hex()]
        now[0] += 600_000
        gate = ConsumerGate()
        assert await RefusalJournal(book, clock_ms=lambda: now[0]).restore(gate, None) == 0
        gate.admit(key, now[0], idle=True)
        book.refuse([])  # any write drops what is over
        assert book.read("SELECT COUNT(*) FROM refusals") == [(0,)]


async def test_an_unreadable_journaled_key_is_skipped(tmp_path: Path) -> None:
    with ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        book.refuse([("key:not-hex", _wall_ms() + 60_000, "?")])
        gate = ConsumerGate()
        assert await RefusalJournal(book).restore(gate, None) == 1
        gate.admit(NodeIdentity.generate().public_key, _wall_ms(), idle=True)


def test_the_account_ban_lasts_as_long_as_the_key_ban() -> None:
    assert ConsumerGate().ban_ms == PAYER_BAN_S * 1000
