"""Settlement on, the stake an advert declares is a claim: what a consumer's `min_stake`
counts is the stake locked on chain by the account bound to the provider's peer id
(`settle.StakeBook`). Settlement off, the declared number, as before."""

from __future__ import annotations

import time
from functools import partial

import pytest
import trio

from p2pinfer.errors import ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.net.adverts import Catalog, verify_advert
from p2pinfer.net.info import FetchedAdvert
from p2pinfer.protocol import Advert, AdvertHardware, ModelOffer, decode_as, sign
from p2pinfer.settle.account import account_of, bind_signature
from p2pinfer.settle.addresses import address_bytes
from p2pinfer.settle.stakes import StakeBook
from tests.support.fake_chain import FakeChainForTests

ANY_ACCOUNT = "0x" + "01" * 20  # whose view of the chain: these tests send no transaction

T0 = 1_700_000_000_000
MODEL = "fake:latest"
HUGE = 2**62
MIN = 10_000_000_000  # 10,000 credits


def advert(identity: NodeIdentity, stake: int, *, bound: bool = True,
           other: NodeIdentity | None = None) -> Advert:
    offer = ModelOffer(MODEL, "", "0", "none", 2048, 0, 30_000, 1000)
    account = account_of(other or identity)
    return Advert(models=(offer,), hardware=AdvertHardware("cpu", 4, 8192, ()),
                  engine="fake", stake=stake, capacity=1, listen_addrs=(), seq=1,
                  issued_at=T0, ttl_ms=60_000,
                  payee=address_bytes(account.address) if bound else None,
                  payee_binding=bind_signature(account, (other or identity).peer_id)
                  if bound else None)


class FakeNet:
    """A host whose catalog holds the given adverts and whose peers all answer at once."""

    def __init__(self, adverts: list[tuple[NodeIdentity, Advert]]) -> None:
        self.peer_id = NodeIdentity.generate().peer_id
        self.started_at = float("-inf")  # long up: its catalog has heard everyone
        self.catalog = Catalog(local_peer_id=self.peer_id, clock_ms=lambda: T0)
        self.adverts = {i.peer_id: verify_advert(sign(a, i).raw) for i, a in adverts}
        for adv in self.adverts.values():
            assert self.catalog.admit(adv) is None

    def peers(self) -> list[str]:
        return []

    async def fetch_advert(self, peer_id: str, *, timeout_s: float = 5.0) -> FetchedAdvert:
        return FetchedAdvert(self.adverts[peer_id], 10.0)


async def ranked_with(book: StakeBook | None, net: FakeNet, min_stake: int) -> list[str]:
    client = JobClient(net, NodeIdentity.generate(), stakes=book,  # type: ignore[arg-type]
                       config=ClientConfig(min_stake=min_stake))
    return [c.peer_id for c in await client.candidates(MODEL)]


async def test_a_huge_declared_stake_with_nothing_locked_is_skipped() -> None:
    liar, staker = NodeIdentity.generate(), NodeIdentity.generate()
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(account_of(staker).address, MIN)
    net = FakeNet([(liar, advert(liar, HUGE)), (staker, advert(staker, 0))])
    book = StakeBook(chain)
    assert await ranked_with(book, net, MIN) == [staker.peer_id]
    assert await ranked_with(book, net, MIN) == [staker.peer_id]
    assert chain.stake_reads == 2  # one read per bound account, then the cache


async def test_a_fresh_consumer_reads_unread_stakes_before_filtering() -> None:
    """A short-lived `ask --min-stake` session filters before its background reader has
    run: an unread stake must be read then, not counted as 0 (CI: "no provider serves")."""
    staker = NodeIdentity.generate()
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(account_of(staker).address, MIN)
    net = FakeNet([(staker, advert(staker, 0))])  # declares nothing: the chain decides
    book = StakeBook(chain)
    assert book.stake_of_peer(staker.peer_id, None, None) == 0 and len(book) == 0
    assert await ranked_with(book, net, MIN) == [staker.peer_id]
    assert chain.stake_reads == 1


async def test_unread_stakes_are_read_within_the_discovery_timeout() -> None:
    class SlowChain(FakeChainForTests):
        def stake_of(self, address: str) -> int:
            time.sleep(0.5)
            return super().stake_of(address)

    staker = NodeIdentity.generate()
    chain = SlowChain(ANY_ACCOUNT)
    chain.stake(account_of(staker).address, MIN)
    net = FakeNet([(staker, advert(staker, MIN))])
    client = JobClient(net, NodeIdentity.generate(), stakes=StakeBook(chain),  # type: ignore[arg-type]
                       config=ClientConfig(min_stake=MIN, discovery_timeout_s=0.1))
    assert await client.candidates(MODEL) == []  # the read did not land in time: skipped


async def test_settlement_off_keeps_the_declared_stake() -> None:
    liar = NodeIdentity.generate()
    net = FakeNet([(liar, advert(liar, HUGE, bound=False))])
    assert await ranked_with(None, net, MIN) == [liar.peer_id]


async def test_an_account_bound_to_another_peer_counts_as_no_stake() -> None:
    thief, victim = NodeIdentity.generate(), NodeIdentity.generate()
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(account_of(victim).address, MIN)
    # The thief copies the victim's account and binding into its own advert.
    net = FakeNet([(thief, advert(thief, MIN, other=victim))])
    book = StakeBook(chain)
    await book.refresh()
    assert await ranked_with(book, net, MIN) == []
    assert book.pending == 0 and chain.stake_reads == 0  # a bad binding is never looked up


async def test_stake_is_read_again_after_its_ttl() -> None:
    now = [0.0]
    chain = FakeChainForTests(ANY_ACCOUNT)
    staker = NodeIdentity.generate()
    address = account_of(staker).address
    chain.stake(address, MIN)
    book = StakeBook(chain, ttl_s=60.0, clock=lambda: now[0])
    assert book.stake(address) is None
    await book.refresh()
    assert book.stake(address) == MIN
    chain.stakes[address] = 0  # unbonded
    now[0] = 61.0
    assert book.stake(address) == MIN  # the old value until the new read lands
    await book.refresh()
    assert book.stake(address) == 0


async def test_the_book_stays_bounded_under_a_flood_of_fresh_accounts() -> None:
    book = StakeBook(FakeChainForTests(ANY_ACCOUNT), max_accounts=50, max_pending=20)
    for n in range(500):
        book.stake(f"0x{n:040x}")
    assert book.pending == 20
    for n in range(500):
        book.put(f"0x{n:040x}", n)
    assert len(book) == 50


async def test_the_background_reader_answers_a_queued_account() -> None:
    chain = FakeChainForTests(ANY_ACCOUNT)
    address = account_of(NodeIdentity.generate()).address
    chain.stake(address, 7)
    book = StakeBook(chain)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(book.run)
        book.stake(address)
        with trio.fail_after(5):
            while book.stake(address) is None:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert book.stake(address) == 7


def test_an_old_advert_without_payee_still_decodes_to_the_same_bytes() -> None:
    ident = NodeIdentity.generate()
    raw = sign(advert(ident, 5, bound=False), ident).raw
    assert b"payee" not in raw
    again = decode_as(raw, Advert)
    assert again.raw == raw and again.msg.payee is None


def test_a_payee_advert_round_trips() -> None:
    ident = NodeIdentity.generate()
    raw = sign(advert(ident, 5), ident).raw
    assert decode_as(raw, Advert).msg.payee == address_bytes(account_of(ident).address)


def test_a_payee_without_its_binding_is_refused() -> None:
    ident = NodeIdentity.generate()
    with pytest.raises(ValidationError):
        Advert(models=(), hardware=AdvertHardware("cpu", 4, 8192, ()), engine="", stake=0,
               capacity=1, listen_addrs=(), seq=1, issued_at=T0, ttl_ms=60_000,
               payee=address_bytes(account_of(ident).address))


async def test_the_admin_view_shows_declared_and_on_chain_stake() -> None:
    liar, staker = NodeIdentity.generate(), NodeIdentity.generate()
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(account_of(staker).address, MIN)
    book = StakeBook(chain)
    adverts = ((liar, advert(liar, HUGE, other=staker)), (staker, advert(staker, 1)))
    for i, a in adverts:
        book.view(i.peer_id, a.stake, a.payee, a.payee_binding)  # queues the reads
    await book.refresh()
    views = [book.view(i.peer_id, a.stake, a.payee, a.payee_binding) for i, a in adverts]
    assert [(v.declared, v.on_chain, v.binding_ok) for v in views] == [
        (HUGE, 0, False), (1, MIN, True)]


async def test_the_reader_reads_catalog_providers_before_a_job_asks() -> None:
    staker = NodeIdentity.generate()
    chain = FakeChainForTests(ANY_ACCOUNT)
    chain.stake(account_of(staker).address, MIN)
    ad = advert(staker, 0)
    book = StakeBook(chain)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(partial(book.run, interval_s=0.01,
                                   watch=lambda: [(staker.peer_id, ad.payee, ad.payee_binding)]))
        with trio.fail_after(5):
            while len(book) == 0:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    net = FakeNet([(staker, ad)])
    assert await ranked_with(book, net, MIN) == [staker.peer_id]  # no miss on the first job
