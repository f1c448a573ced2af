"""The advert catalog and the adverts topic's admission rules, on an injected clock."""

from __future__ import annotations

import trio
import trio.testing

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.adverts import AdvertGate, Catalog, VerifiedAdvert, verify_advert
from p2pinfer.protocol import Advert, HardwareProfile, ModelOffer, sign

LOCAL_ID, ALICE_ID, BOB_ID = (NodeIdentity.generate() for _ in range(3))
LOCAL, ALICE, BOB = LOCAL_ID.peer_id, ALICE_ID.peer_id, BOB_ID.peer_id
PEERS = {LOCAL: LOCAL_ID, ALICE: ALICE_ID, BOB: BOB_ID}
T0 = 1_700_000_000_000


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def signed_advert(
    signer: str,
    seq: int,
    *,
    issued_at: int = T0,
    ttl_ms: int = 60_000,
    models: tuple[tuple[str, int], ...] = (("smollm2", 100),),
) -> bytes:
    offers = tuple(ModelOffer(n, "", "135M", "Q8_0", 2048, 0, 20_000, p) for n, p in models)
    msg = Advert(
        models=offers,
        hardware=HardwareProfile("cpu", 4, 8192, ()),
        engine="llama.cpp",
        stake=0,
        capacity=1,
        listen_addrs=("/ip4/127.0.0.1/tcp/4001",),
        seq=seq,
        issued_at=issued_at,
        ttl_ms=ttl_ms,
    )
    return sign(msg, PEERS[signer]).raw


def advert(
    signer: str,
    seq: int,
    *,
    issued_at: int = T0,
    ttl_ms: int = 60_000,
    models: tuple[tuple[str, int], ...] = (("smollm2", 100),),
) -> VerifiedAdvert:
    raw = signed_advert(signer, seq, issued_at=issued_at, ttl_ms=ttl_ms, models=models)
    return verify_advert(raw)


def catalog(clock: FakeClock) -> Catalog:
    return Catalog(local_peer_id=LOCAL, clock_ms=clock, max_clock_skew_ms=1_000)


def test_fresh_advert_lists_provider_per_model_cheapest_first() -> None:
    clock = FakeClock()
    cat = catalog(clock)
    assert cat.admit(advert(ALICE, 1, models=(("a", 300), ("b", 5)))) is None
    assert cat.admit(advert(BOB, 1, models=(("a", 200),))) is None
    assert [e.peer_id for e in cat.providers("a")] == [BOB, ALICE]
    assert [e.price_per_1k for e in cat.providers("a")] == [200, 300]
    assert cat.models() == ["a", "b"]


def test_seq_not_newer_than_last_is_stale() -> None:
    cat = catalog(FakeClock())
    assert cat.admit(advert(ALICE, 5)) is None
    assert cat.admit(advert(ALICE, 5, models=(("other", 1),))) == "seq"
    assert cat.admit(advert(ALICE, 4)) == "seq"
    assert cat.admit(advert(ALICE, 6, models=(("new", 1),))) is None
    assert cat.models() == ["new"]  # the newer advert replaced the older one


def test_the_advert_already_held_is_accepted_again_unchanged() -> None:
    # Fetched over info first, then relayed on gossip: still valid, still relayed.
    cat = catalog(FakeClock())
    first = advert(ALICE, 7)
    assert cat.admit(first) is None
    assert cat.admit(advert(ALICE, 7)) is None  # identical bytes (signatures are deterministic)
    assert cat.admit(advert(ALICE, 7, models=(("changed", 1),))) == "seq"
    assert cat.advert_of(ALICE) == first


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
    assert cat.staleness(advert(LOCAL, 1)) == "seq"


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


def test_gate_drops_oversized_invalid_forged_and_stale() -> None:
    cat = catalog(FakeClock())
    raw = signed_advert(ALICE, 1)
    gate = AdvertGate(cat, max_advert_bytes=len(raw))
    assert gate.check(BOB, raw) is None  # Bob publishes Alice's advert as his own
    assert gate.check(ALICE, signed_advert(ALICE, 2, models=(("longer-name", 1),))) is None
    assert gate.check(ALICE, raw[:-1] + bytes([raw[-1] ^ 1])) is None  # broken signature
    assert gate.check(ALICE, b"garbage") is None
    accepted = gate.check(ALICE, raw)
    assert accepted is not None and accepted.signer == ALICE and accepted.raw == raw
    same_seq = signed_advert(ALICE, 1, models=(("other", 1),))
    assert gate.check(ALICE, same_seq) is None
    assert dict(gate.drops) == {"forged": 1, "oversized": 1, "invalid": 2, "seq": 1}
    assert cat.peer_ids() == [ALICE]


class CountingVerifier:
    """`verify_advert`, counting its calls (the real check, not a fake)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, raw: bytes) -> VerifiedAdvert:
        self.calls += 1
        return verify_advert(raw)


def test_an_advert_met_again_is_decoded_and_verified_once() -> None:
    cat = catalog(FakeClock())
    verifier = CountingVerifier()
    gate = AdvertGate(cat, verifier)
    raw = signed_advert(ALICE, 1)
    first = gate.verified(raw)  # fetched over the info protocol
    assert gate.check(ALICE, raw) is not None  # then relayed on gossip
    assert gate.check(ALICE, raw) is not None  # and delivered again
    assert gate.verified(raw) is first
    assert verifier.calls == 1
    assert gate.check(ALICE, signed_advert(ALICE, 2)) is not None
    assert verifier.calls == 2


def test_bytes_verified_before_are_still_refused_from_the_wrong_publisher() -> None:
    cat = catalog(FakeClock())
    gate = AdvertGate(cat)
    raw = signed_advert(ALICE, 1)
    assert gate.check(ALICE, raw) is not None
    assert gate.check(BOB, raw) is None  # Bob relays Alice's advert as his own
    broken = raw[:-1] + bytes([raw[-1] ^ 1])
    assert gate.check(ALICE, broken) is None
    assert gate.check(ALICE, broken) is None  # a bad signature is checked each time, never kept
    assert dict(gate.drops) == {"forged": 1, "invalid": 2}
