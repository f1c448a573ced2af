"""How the consumer ranks providers: equal ones by the RTT it measured over the info
protocol; proven ones (a job completed with them) before unproven ones, whatever those
claim to charge, with one job in `explore_every` trying one unproven provider first."""

from __future__ import annotations

import random

import pytest
import trio

from p2pinfer.errors import PeerUnreachableError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_types import Candidate, ClientConfig
from p2pinfer.net.adverts import Catalog, verify_advert
from p2pinfer.net.info import FetchedAdvert
from p2pinfer.protocol import Advert, AdvertHardware, ModelOffer, sign

T0 = 1_700_000_000_000
MODEL = "fake:latest"


def advert_of(identity: NodeIdentity, price: int) -> bytes:
    offer = ModelOffer(MODEL, "", "0", "none", 2048, 0, 30_000, price)
    msg = Advert(models=(offer,), hardware=AdvertHardware("cpu", 4, 8192, ()),
                 engine="fake-stream", stake=0, capacity=1,
                 listen_addrs=("/ip4/127.0.0.1/tcp/4001",), seq=1, issued_at=T0,
                 ttl_ms=60_000)
    return sign(msg, identity).raw


class FakeNet:
    """A host whose catalog holds given adverts and whose info protocol answers with
    given round-trip times (what a slow link would measure); peers without an RTT
    (`dead`) cannot be dialled."""

    def __init__(self, rtts: dict[NodeIdentity, float], price: int = 1000, *,
                 dead: tuple[NodeIdentity, ...] = (), dead_price: int = 0) -> None:
        self.peer_id = NodeIdentity.generate().peer_id
        self.started_at = float("-inf")  # long up: its catalog has heard everyone
        self.catalog = Catalog(local_peer_id=self.peer_id, clock_ms=lambda: T0)
        self.adverts = {i.peer_id: verify_advert(advert_of(i, price)) for i in rtts}
        self.adverts |= {i.peer_id: verify_advert(advert_of(i, dead_price)) for i in dead}
        self.rtts = {i.peer_id: ms for i, ms in rtts.items()}
        self.connected: list[str] = []
        self.probed: list[str] = []
        self.valued: list[str] = []  # proven by a good job: let in when slots are short
        for adv in self.adverts.values():
            assert self.catalog.admit(adv) is None

    def peers(self) -> list[str]:
        return self.connected

    def value_peer(self, peer_id: str) -> None:
        self.valued.append(peer_id)

    async def fetch_advert(self, peer_id: str, *, timeout_s: float = 5.0) -> FetchedAdvert:
        self.probed.append(peer_id)
        if peer_id not in self.rtts:
            raise PeerUnreachableError(f"cannot dial {peer_id}")
        return FetchedAdvert(self.adverts[peer_id], self.rtts[peer_id])


@pytest.mark.parametrize("seed", range(5))
async def test_nearer_of_equal_providers_ranks_first(seed: int) -> None:
    near, far, farther = (NodeIdentity.generate() for _ in range(3))
    net = FakeNet({far: 80.0, near: 20.0, farther: 200.0})
    client = JobClient(net, NodeIdentity.generate(), rng=random.Random(seed))  # type: ignore[arg-type]
    ranked = await client.candidates(MODEL)
    assert [c.peer_id for c in ranked] == [near.peer_id, far.peer_id, farther.peer_id]
    assert [c.rtt_ms for c in ranked] == [20.0, 80.0, 200.0]
    assert sorted(net.probed) == sorted(net.rtts)  # every one measured, once


async def test_rtt_is_measured_once_then_reused() -> None:
    near, far = NodeIdentity.generate(), NodeIdentity.generate()
    net = FakeNet({near: 5.0, far: 150.0})
    client = JobClient(net, NodeIdentity.generate())  # type: ignore[arg-type]
    await client.candidates(MODEL)
    await client.candidates(MODEL)
    assert len(net.probed) == 2
    assert client.rtt_ms(far.peer_id) == 150.0


def client_for(net: FakeNet, **config: int) -> JobClient:
    return JobClient(net, NodeIdentity.generate(), config=ClientConfig(**config),  # type: ignore[arg-type]
                     rng=random.Random(1))


def ids(ranked: list[Candidate]) -> list[str]:
    return [c.peer_id for c in ranked]


async def test_unproven_price_zero_providers_rank_after_a_proven_one() -> None:
    good = NodeIdentity.generate()
    fakes = tuple(NodeIdentity.generate() for _ in range(8))
    net = FakeNet({good: 30.0}, price=1000, dead=fakes, dead_price=0)
    client = client_for(net)
    await client.observe(good.peer_id, ok=True, blame=True)  # a job completed: proven
    assert net.valued == [good.peer_id]
    ranked = await client.candidates(MODEL)
    assert ranked[0].peer_id == good.peer_id and ranked[0].proven
    assert not any(c.proven for c in ranked[1:]) and len(ranked) == 9
    # Only one unproven provider is probed (dialled) while a proven one exists.
    assert len([p for p in net.probed if p != good.peer_id]) == 1


async def test_one_job_in_explore_every_tries_one_unproven_provider_first() -> None:
    good = NodeIdentity.generate()
    newcomers = [NodeIdentity.generate() for _ in range(3)]
    net = FakeNet({good: 30.0, **{n: 30.0 for n in newcomers}}, price=1000)
    client = client_for(net, explore_every=8)
    net.catalog.vouch(good.peer_id)
    firsts = []
    for _ in range(40):
        order = client.order_for_job(await client.candidates(MODEL))
        firsts.append(order[0].proven)
        # Never more than one unproven provider before a proven one.
        assert order[0].proven or order[1].proven
    assert firsts.count(False) == 5  # 40 jobs / 8


async def test_exploration_skips_a_provider_that_could_not_be_reached() -> None:
    good, dead = NodeIdentity.generate(), NodeIdentity.generate()
    net = FakeNet({good: 30.0}, price=1000, dead=(dead,), dead_price=0)
    client = client_for(net, explore_every=1)
    net.catalog.vouch(good.peer_id)
    ranked = await client.candidates(MODEL)  # probes the dead one: it is marked unreachable
    assert ids(ranked) == [good.peer_id, dead.peer_id]
    assert ids(client.order_for_job(ranked)) == [good.peer_id, dead.peer_id]


async def test_exploration_skips_a_provider_left_as_too_slow() -> None:
    # Attack 76: a staller left as too slow is not explored again while it ranks last.
    good, staller = NodeIdentity.generate(), NodeIdentity.generate()
    net = FakeNet({good: 30.0, staller: 30.0}, price=1000)
    client = client_for(net, explore_every=1)
    net.catalog.vouch(good.peer_id)
    assert not client.order_for_job(await client.candidates(MODEL))[0].proven  # explores
    client.mark_too_slow(staller.peer_id)
    assert ids(client.order_for_job(await client.candidates(MODEL))) == [
        good.peer_id, staller.peer_id]


async def test_a_provider_that_could_not_be_reached_ranks_last_even_at_price_zero() -> None:
    near, dead = NodeIdentity.generate(), NodeIdentity.generate()
    net = FakeNet({near: 30.0}, price=1000, dead=(dead,), dead_price=0)
    client = client_for(net)
    assert ids(await client.candidates(MODEL)) == [near.peer_id, dead.peer_id]


async def test_with_nothing_proven_a_connected_provider_ranks_before_a_key_only_heard_of() -> None:
    # A fresh consumer (nothing proven yet): a peer it holds a connection with is reachable;
    # a key it has only heard an advert of, even at price 0, comes after it.
    known, heard = NodeIdentity.generate(), NodeIdentity.generate()
    net = FakeNet({known: 30.0}, price=1000, dead=(heard,), dead_price=0)
    net.rtts[heard.peer_id] = 30.0  # it answers probes too: only the connection differs
    net.connected = [known.peer_id]
    ranked = await client_for(net).candidates(MODEL)
    assert not any(c.proven for c in ranked)
    assert ids(ranked) == [known.peer_id, heard.peer_id]


async def test_a_completed_job_proves_the_provider() -> None:
    good = NodeIdentity.generate()
    net = FakeNet({good: 30.0})
    client = client_for(net)
    assert not net.catalog.is_proven(good.peer_id)
    await client.observe(good.peer_id, ok=False, blame=True)
    assert not net.catalog.is_proven(good.peer_id)
    await client.observe(good.peer_id, ok=True, blame=True)
    assert net.catalog.is_proven(good.peer_id)


class YoungNet(FakeNet):
    """A host just started: gossip has brought the advert of `heard` only, while the DHT
    (and its peers) know every provider."""

    def __init__(self, rtts: dict[NodeIdentity, float], heard: NodeIdentity,
                 prices: dict[NodeIdentity, int]) -> None:
        super().__init__(rtts)
        self.started_at = trio.current_time()
        self.adverts = {i.peer_id: verify_advert(advert_of(i, prices[i])) for i in rtts}
        self.catalog = Catalog(local_peer_id=self.peer_id, clock_ms=lambda: T0)
        assert self.catalog.admit(self.adverts[heard.peer_id]) is None
        self.lookups = 0

    async def lookup_providers(self, model: str, *, timeout_s: float) -> list[FetchedAdvert]:
        self.lookups += 1
        fetched = [FetchedAdvert(self.adverts[p], ms) for p, ms in self.rtts.items()]
        for f in fetched:  # as NetHost.fetch_advert does
            self.catalog.admit(f.advert)
        return fetched

    async def refresh_routing_table(self) -> None:
        pass


async def test_a_young_host_asks_the_dht_too_and_takes_the_cheaper_provider() -> None:
    # A fresh `ask` whose gossip had brought only the dear provider's advert took it
    # (4 asks in 10 on the docker NAT testnet, 9x the price of the one behind NAT).
    dear, cheap = NodeIdentity.generate(), NodeIdentity.generate()
    prices = {dear: 900, cheap: 100}
    net = YoungNet({dear: 5.0, cheap: 10.0}, dear, prices)
    client = JobClient(net, NodeIdentity.generate())  # type: ignore[arg-type]
    ranked = await client.candidates(MODEL)
    assert [c.peer_id for c in ranked] == [cheap.peer_id, dear.peer_id]
    assert net.lookups == 1
    assert {c.peer_id: c.found_via for c in ranked}[dear.peer_id] == "catalog"

    # The lookup put what it fetched in the catalog: the next job asks the DHT no more.
    assert [c.peer_id for c in await client.candidates(MODEL)] == [cheap.peer_id, dear.peer_id]
    assert net.lookups == 1

    # Once the catalog has had time to hear every advert, it alone decides.
    old = YoungNet({dear: 5.0, cheap: 10.0}, dear, prices)
    old.started_at = trio.current_time() - client.config.catalog_warmup_s
    elder = JobClient(old, NodeIdentity.generate())  # type: ignore[arg-type]
    assert [c.peer_id for c in await elder.candidates(MODEL)] == [dear.peer_id]
    assert old.lookups == 0
