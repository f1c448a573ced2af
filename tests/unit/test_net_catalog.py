"""The advert catalog and the adverts topic's admission rules, on an injected clock."""

from __future__ import annotations

from collections.abc import Callable

import trio
import trio.testing

from p2pinfer.errors import SignatureError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.adverts import AdvertGate, Catalog, Offer, VerifiedAdvert

LOCAL = NodeIdentity.generate().peer_id
ALICE = NodeIdentity.generate().peer_id
BOB = NodeIdentity.generate().peer_id
T0 = 1_700_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def advert(
    signer: str,
    seq: int,
    *,
    issued_at: int = T0,
    ttl_ms: int = 60_000,
    models: tuple[tuple[str, int], ...] = (("smollm2", 100),),
) -> VerifiedAdvert:
    return VerifiedAdvert(
        signer=signer,
        seq=seq,
        issued_at_ms=issued_at,
        expires_at_ms=issued_at + ttl_ms,
        offers=tuple(Offer(name, price, 20.0) for name, price in models),
        addrs=("/ip4/127.0.0.1/tcp/4001",),
        hardware="cpu",
        raw=b"",
        message=None,
    )


def catalog(clock: FakeClock) -> Catalog:
    return Catalog(local_peer_id=LOCAL, clock_ms=clock, max_clock_skew_ms=1_000)


def test_fresh_advert_lists_provider_per_model_cheapest_first() -> None:
    clock = FakeClock()
    cat = catalog(clock)
    assert cat.admit(advert(ALICE, 1, models=(("a", 300), ("b", 5)))) is None
    assert cat.admit(advert(BOB, 1, models=(("a", 200),))) is None
    assert [e.peer_id for e in cat.providers("a")] == [BOB, ALICE]
    assert [e.price_per_1k_micro for e in cat.providers("a")] == [200, 300]
    assert cat.models() == ["a", "b"]


def test_seq_not_newer_than_last_is_stale() -> None:
    cat = catalog(FakeClock())
    assert cat.admit(advert(ALICE, 5)) is None
    assert cat.admit(advert(ALICE, 5)) == "seq"
    assert cat.admit(advert(ALICE, 4)) == "seq"
    assert cat.admit(advert(ALICE, 6, models=(("new", 1),))) is None
    assert cat.models() == ["new"]  # the newer advert replaced the older one


def test_expired_future_and_overlong_adverts_are_refused() -> None:
    clock = FakeClock()
    cat = catalog(clock)
    assert cat.admit(advert(ALICE, 1, issued_at=T0 - 60_000, ttl_ms=60_000)) == "expired"
    assert cat.admit(advert(ALICE, 2, issued_at=T0 + 5_000)) == "future"
    assert cat.admit(advert(ALICE, 3, ttl_ms=cat.max_ttl_ms + 1)) == "ttl"
    assert cat.peer_ids() == []


def test_provider_that_stops_advertising_leaves_after_its_ttl() -> None:
    clock = FakeClock()
    cat = catalog(clock)
    cat.admit(advert(ALICE, 1, ttl_ms=10_000))
    cat.admit(advert(BOB, 1, ttl_ms=10_000))
    clock.now += 6_000
    cat.admit(advert(BOB, 2, issued_at=clock.now, ttl_ms=10_000))  # Bob re-advertises
    clock.now += 4_000  # Alice's advert is exactly 10 s old now
    assert cat.providers("smollm2")[0].peer_id == BOB
    assert cat.advert_of(ALICE) is None
    assert cat.expire() == [ALICE]
    assert cat.peer_ids() == [BOB]


def test_advert_from_fast_clock_lives_at_most_its_ttl_from_receipt() -> None:
    clock = FakeClock()
    cat = catalog(clock)
    cat.admit(advert(ALICE, 1, issued_at=T0 + 900, ttl_ms=10_000))
    assert cat.providers("smollm2")[0].expires_at_ms == T0 + 10_000


def test_own_advert_updates_seq_but_is_not_listed() -> None:
    cat = catalog(FakeClock())
    assert cat.admit(advert(LOCAL, 1)) is None
    assert cat.peer_ids() == []
    assert cat.admit(advert(LOCAL, 1)) == "seq"


def test_seq_memory_outlives_the_entry() -> None:
    clock = FakeClock()
    cat = catalog(clock)
    cat.admit(advert(ALICE, 9, ttl_ms=10_000))
    clock.now += 20_000
    cat.expire()
    replay = advert(ALICE, 9, issued_at=clock.now, ttl_ms=10_000)
    assert cat.admit(replay) == "seq"


async def test_wait_for_wakes_on_admission() -> None:
    cat = catalog(FakeClock())
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cat.wait_for, lambda c: ALICE in c.peer_ids())
            await trio.testing.wait_all_tasks_blocked()
            cat.admit(advert(ALICE, 1))


def fake_verifier(adverts: dict[bytes, VerifiedAdvert]) -> Callable[[bytes], VerifiedAdvert]:
    def verify(raw: bytes) -> VerifiedAdvert:
        if raw not in adverts:
            raise SignatureError("signature does not verify")
        return adverts[raw]

    return verify


def test_gate_drops_oversized_invalid_forged_and_stale() -> None:
    cat = catalog(FakeClock())
    good = advert(ALICE, 1)
    gate = AdvertGate(cat, fake_verifier({b"alice-1": good}), max_advert_bytes=16)
    assert gate.check(BOB, b"alice-1") is None  # Bob relays Alice's advert as his own
    assert gate.check(ALICE, b"x" * 17) is None
    assert gate.check(ALICE, b"garbage") is None
    assert gate.check(ALICE, b"alice-1") == good
    assert gate.check(ALICE, b"alice-1") is None
    assert dict(gate.drops) == {"forged": 1, "oversized": 1, "invalid": 1, "seq": 1}
    assert cat.peer_ids() == [ALICE]
