"""The consumer ranks equal providers by the RTT it measured over the info protocol."""

from __future__ import annotations

import random

import pytest

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.adverts import Catalog, verify_advert
from p2pinfer.net.client import JobClient
from p2pinfer.net.info import FetchedAdvert
from p2pinfer.protocol import Advert, HardwareProfile, ModelOffer, sign

T0 = 1_700_000_000_000
MODEL = "fake:latest"


def advert_of(identity: NodeIdentity, price: int) -> bytes:
    offer = ModelOffer(MODEL, "", "0", "none", 2048, 0, 30_000, price)
    msg = Advert(models=(offer,), hardware=HardwareProfile("cpu", 4, 8192, ()),
                 engine="fake-stream", stake=0, capacity=1,
                 listen_addrs=("/ip4/127.0.0.1/tcp/4001",), seq=1, issued_at=T0,
                 ttl_ms=60_000)
    return sign(msg, identity).raw


class FakeNet:
    """A host whose catalog holds given adverts and whose info protocol answers with
    given round-trip times (what a slow link would measure)."""

    def __init__(self, rtts: dict[NodeIdentity, float], price: int = 1000) -> None:
        self.peer_id = NodeIdentity.generate().peer_id
        self.catalog = Catalog(local_peer_id=self.peer_id, clock_ms=lambda: T0)
        self.adverts = {i.peer_id: verify_advert(advert_of(i, price)) for i in rtts}
        self.rtts = {i.peer_id: ms for i, ms in rtts.items()}
        self.probed: list[str] = []
        for adv in self.adverts.values():
            assert self.catalog.admit(adv) is None

    async def fetch_advert(self, peer_id: str, *, timeout_s: float = 5.0) -> FetchedAdvert:
        self.probed.append(peer_id)
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
