"""The advert catalog and the adverts topic's admission rules, on an injected clock."""

from __future__ import annotations

import trio
import trio.testing

from p2pinfer.identity import NodeIdentity
from p2pinfer.market.pricing import price_for
from p2pinfer.net.advert_gate import (
    ADVERT_BURST_BYTES,
    ADVERT_SIGNER_BURST,
    ADVERTS_PER_SIGNER_PER_S,
    AdvertGate,
)
from p2pinfer.net.advert_limits import SUPPLY_UNPROVEN_CAP, VERIFIED_CACHE_BYTES, NewSignerLimit
from p2pinfer.net.adverts import Catalog, VerifiedAdvert, verify_advert
from p2pinfer.protocol import Advert, AdvertHardware, ModelOffer, sign
from tests.support.clocks import FakeClock

LOCAL_ID, ALICE_ID, BOB_ID = (NodeIdentity.generate() for _ in range(3))
LOCAL, ALICE, BOB = LOCAL_ID.peer_id, ALICE_ID.peer_id, BOB_ID.peer_id
PEERS = {LOCAL: LOCAL_ID, ALICE: ALICE_ID, BOB: BOB_ID}
T0 = 1_700_000_000_000


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
        hardware=AdvertHardware("cpu", 4, 8192, ()),
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
    clock = FakeClock(T0)
    cat = catalog(clock)
    assert cat.admit(advert(ALICE, 1, models=(("a", 300), ("b", 5)))) is None
    assert cat.admit(advert(BOB, 1, models=(("a", 200),))) is None
    assert [e.peer_id for e in cat.providers("a")] == [BOB, ALICE]
    assert [e.price_per_1k for e in cat.providers("a")] == [200, 300]
    assert cat.models() == ["a", "b"]


def test_seq_not_newer_than_last_is_stale() -> None:
    cat = catalog(FakeClock(T0))
    assert cat.admit(advert(ALICE, 5)) is None
    assert cat.admit(advert(ALICE, 5, models=(("other", 1),))) == "seq"
    assert cat.admit(advert(ALICE, 4)) == "seq"
    assert cat.admit(advert(ALICE, 6, models=(("new", 1),))) is None
    assert cat.models() == ["new"]  # the newer advert replaced the older one


def test_the_advert_already_held_is_accepted_again_unchanged() -> None:
    # Fetched over info first, then relayed on gossip: still valid, still relayed.
    cat = catalog(FakeClock(T0))
    first = advert(ALICE, 7)
    assert cat.admit(first) is None
    assert cat.admit(advert(ALICE, 7)) is None  # identical bytes (signatures are deterministic)
    assert cat.admit(advert(ALICE, 7, models=(("changed", 1),))) == "seq"
    assert cat.advert_of(ALICE) == first


def test_expired_future_and_overlong_adverts_are_refused() -> None:
    clock = FakeClock(T0)
    cat = catalog(clock)
    assert cat.admit(advert(ALICE, 1, issued_at=T0 - 60_000, ttl_ms=60_000)) == "expired"
    assert cat.admit(advert(ALICE, 2, issued_at=T0 + 5_000)) == "future"
    assert cat.admit(advert(ALICE, 3, ttl_ms=cat.max_ttl_ms + 1)) == "ttl"
    assert cat.peer_ids() == []


def test_provider_that_stops_advertising_leaves_after_its_ttl() -> None:
    clock = FakeClock(T0)
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
    clock = FakeClock(T0)
    cat = catalog(clock)
    cat.admit(advert(ALICE, 1, issued_at=T0 + 900, ttl_ms=10_000))
    assert cat.providers("smollm2")[0].expires_at_ms == T0 + 10_000


def test_own_advert_updates_seq_but_is_not_listed() -> None:
    cat = catalog(FakeClock(T0))
    assert cat.admit(advert(LOCAL, 1)) is None
    assert cat.peer_ids() == []
    assert cat.staleness(advert(LOCAL, 1)) == "seq"


def test_seq_memory_outlives_the_entry() -> None:
    clock = FakeClock(T0)
    cat = catalog(clock)
    cat.admit(advert(ALICE, 9, ttl_ms=10_000))
    clock.now += 20_000
    cat.expire()
    replay = advert(ALICE, 9, issued_at=clock.now, ttl_ms=10_000)
    assert cat.admit(replay) == "seq"


async def test_wait_for_wakes_on_admission() -> None:
    cat = catalog(FakeClock(T0))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(cat.wait_for, lambda c: ALICE in c.peer_ids())
            await trio.testing.wait_all_tasks_blocked()
            cat.admit(advert(ALICE, 1))


def test_gate_drops_oversized_invalid_forged_and_stale() -> None:
    cat = catalog(FakeClock(T0))
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
    cat = catalog(FakeClock(T0))
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
    cat = catalog(FakeClock(T0))
    gate = AdvertGate(cat)
    raw = signed_advert(ALICE, 1)
    assert gate.check(ALICE, raw) is not None
    assert gate.check(BOB, raw) is None  # Bob relays Alice's advert as his own
    broken = raw[:-1] + bytes([raw[-1] ^ 1])
    assert gate.check(ALICE, broken) is None
    assert gate.check(ALICE, broken) is None  # a bad signature is checked each time, never kept
    assert dict(gate.drops) == {"forged": 1, "invalid": 2}


# -- Sybil adverts (issue 14): bounds on what fresh keys may cost --------------------


def sybil(seq: int = 1, *, issued_at: int = T0, ttl_ms: int = 60_000,
          models: tuple[tuple[str, int], ...] = (("smollm2", 0),)) -> VerifiedAdvert:
    """A validly signed advert from a key nobody has seen before."""
    identity = NodeIdentity.generate()
    offers = tuple(ModelOffer(n, "", "135M", "Q8_0", 2048, 0, 20_000, p) for n, p in models)
    msg = Advert(models=offers, hardware=AdvertHardware("cpu", 4, 8192, ()), engine="x",
                 stake=0, capacity=1, listen_addrs=("/ip4/127.0.0.1/tcp/1",), seq=seq,
                 issued_at=issued_at, ttl_ms=ttl_ms)
    return verify_advert(sign(msg, identity).raw)


def test_an_advert_living_longer_than_ten_minutes_is_refused() -> None:
    cat = catalog(FakeClock(T0))
    assert cat.max_ttl_ms == 10 * 60_000
    assert cat.admit(sybil(ttl_ms=6 * 3_600_000)) == "ttl"  # what every node took before
    assert cat.admit(sybil(ttl_ms=10 * 60_000)) is None


def test_unproven_signers_beyond_the_cap_evict_the_least_recently_heard() -> None:
    clock = FakeClock(T0)
    cat = Catalog(local_peer_id=LOCAL, clock_ms=clock, max_unproven=3)
    cat.admit(advert(ALICE, 1))
    cat.vouch(ALICE)  # proven: outside the cap
    first, second, third = sybil(), sybil(), sybil()
    for a in (first, second, third):
        assert cat.admit(a) is None
    clock.now += 1_000
    assert cat.admit(advert(BOB, 1, issued_at=clock.now)) is None  # evicts `first`
    assert cat.admit(sybil(2, issued_at=clock.now)) is None  # evicts `second`
    assert cat.unproven_count() == 3 and cat.evicted == 2
    assert ALICE in cat.peer_ids() and BOB in cat.peer_ids()
    assert first.signer not in cat.peer_ids() and second.signer not in cat.peer_ids()
    # Bob re-advertises: heard most recently, he outlives the Sybil that came after him.
    assert cat.admit(advert(BOB, 2, issued_at=clock.now)) is None
    assert cat.admit(sybil(3, issued_at=clock.now)) is None
    assert BOB in cat.peer_ids() and third.signer not in cat.peer_ids()
    # An evicted signer's seq is still remembered: its old advert cannot come back.
    assert cat.admit(first) == "seq"


def test_unproven_adverts_are_bounded_in_bytes_too() -> None:
    many = tuple((f"model-{i:02d}-with-a-long-name", 0) for i in range(40))
    big = sybil(models=many)
    cat = Catalog(local_peer_id=LOCAL, clock_ms=FakeClock(T0),
                  max_unproven_bytes=3 * len(big.raw))
    for _ in range(10):
        assert cat.admit(sybil(models=many)) is None
    assert cat.unproven_count() == 3


def test_a_vouched_provider_is_never_evicted() -> None:
    cat = Catalog(local_peer_id=LOCAL, clock_ms=FakeClock(T0), max_unproven=2)
    cat.admit(advert(ALICE, 1))
    cat.vouch(ALICE)
    for _ in range(20):
        cat.admit(sybil())
    assert ALICE in cat.peer_ids() and cat.is_proven(ALICE)
    assert len(cat.peer_ids()) == 3


def test_the_model_index_follows_replacement_and_expiry() -> None:
    clock = FakeClock(T0)
    cat = catalog(clock)
    cat.admit(advert(ALICE, 1, ttl_ms=10_000, models=(("a", 1), ("b", 1))))
    cat.admit(advert(BOB, 1, ttl_ms=20_000, models=(("b", 2),)))
    assert cat.models() == ["a", "b"]
    cat.admit(advert(ALICE, 2, ttl_ms=10_000, models=(("c", 1),)))
    assert cat.models() == ["b", "c"] and cat.providers("a") == []
    assert [e.peer_id for e in cat.providers("b")] == [BOB]
    clock.now += 10_000
    assert cat.models() == ["b"]  # Alice's advert lapsed, before the sweep too
    assert cat.expire() == [ALICE]
    assert cat.providers("c") == [] and cat.models() == ["b"]


def test_one_forwarder_introduces_a_bounded_number_of_new_signers() -> None:
    clock = FakeClock(T0)
    cat = catalog(clock)
    gate = AdvertGate(cat, new_signers=NewSignerLimit(burst=4, per_minute=2))
    fakes = [sybil() for _ in range(10)]
    admitted = [gate.check(f.signer, f.raw, "mallory") is not None for f in fakes]
    assert admitted == [True] * 4 + [False] * 6
    assert gate.drops["flood"] == 6
    # Another forwarder has its own budget; a peer's own advert costs none.
    assert gate.check(fakes[4].signer, fakes[4].raw, "carol") is not None
    own = sybil()
    assert gate.check(own.signer, own.raw, own.signer) is not None
    # Refreshes of signers already listed cost nothing either.
    refresh = advert(ALICE, 1)
    assert gate.check(ALICE, refresh.raw, ALICE) is not None
    assert gate.check(ALICE, signed_advert(ALICE, 2), "mallory") is not None
    # 30 s later one more new signer is allowed through mallory.
    clock.now += 30_000
    late = [sybil(issued_at=clock.now) for _ in range(2)]
    assert [gate.check(f.signer, f.raw, "mallory") is not None for f in late] == [True, False]


def test_a_stale_advert_from_a_new_signer_spends_no_budget() -> None:
    clock = FakeClock(T0)
    gate = AdvertGate(catalog(clock), new_signers=NewSignerLimit(burst=1, per_minute=1))
    expired = sybil(issued_at=T0 - 120_000)
    assert gate.check(expired.signer, expired.raw, "mallory") is None
    assert gate.drops["expired"] == 1
    fresh = sybil()
    assert gate.check(fresh.signer, fresh.raw, "mallory") is not None


def test_new_signer_limit_refills_and_forgets_idle_forwarders() -> None:
    limit = NewSignerLimit(burst=2, per_minute=60, max_forwarders=2)
    assert limit.take("a", T0) and limit.take("a", T0) and not limit.take("a", T0)
    assert limit.take("a", T0 + 1_000)  # one a second
    for f in ("b", "c", "d"):
        assert limit.take(f, T0 + 1_000)
    assert len(limit._buckets) <= 2


def test_the_verified_cache_is_bounded_in_bytes() -> None:
    many = tuple((f"model-{i:02d}-with-a-long-name", 0) for i in range(60))
    gate = AdvertGate(catalog(FakeClock(T0)))
    raws = [sybil(models=many).raw for _ in range(3)]
    size = len(raws[0])
    for _ in range(VERIFIED_CACHE_BYTES // size + 10):
        gate.verified(sybil(models=many).raw)
    assert gate._verified_bytes <= VERIFIED_CACHE_BYTES


def test_sybil_adverts_cannot_drive_an_honest_providers_price_down() -> None:
    """Price-0 adverts from 256 fresh keys count as at most SUPPLY_UNPROVEN_CAP competitors
    in a provider's supply factor; proven providers all count."""
    cat = catalog(FakeClock(T0))
    for _ in range(256):
        cat.admit(sybil())
    assert len(cat.providers("smollm2")) == 256
    assert cat.supply("smollm2") == SUPPLY_UNPROVEN_CAP
    honest = price_for(0, 1 + cat.supply("smollm2"))
    assert honest >= price_for(0, 1 + SUPPLY_UNPROVEN_CAP) > price_for(0, 257) * 30
    cat.admit(advert(ALICE, 1))
    cat.vouch(ALICE)
    assert cat.supply("smollm2") == SUPPLY_UNPROVEN_CAP + 1



def test_a_signer_is_held_to_its_rate_and_a_forwarder_to_its_byte_budget() -> None:
    """Attack 51: a known signer may publish a new seq as often as it likes, up to 64 KiB
    an advert, and GossipSub let a peer forward 200 messages a second."""
    clock = FakeClock(T0)
    cat = catalog(clock)
    gate = AdvertGate(cat)

    def check(signer: str, seq: int, forwarder: str, **kw: object) -> bool:
        return gate.check(signer, signed_advert(signer, seq, **kw), forwarder) is not None  # type: ignore[arg-type]

    # Alice re-advertising through her own connection: her burst, then 4 a second.
    assert sum(check(ALICE, seq, ALICE) for seq in range(1, 41)) == ADVERT_SIGNER_BURST
    assert gate.drops["signer rate"] == 40 - ADVERT_SIGNER_BURST
    clock.advance(1_000)
    assert sum(check(ALICE, seq, ALICE) for seq in range(41, 51)) == ADVERTS_PER_SIGNER_PER_S
    # Our own adverts are never held back.
    assert all(check(LOCAL, seq, LOCAL) for seq in range(1, 41))
    # One forwarder relaying big adverts of many known signers: 4 MiB, then 256 KiB/s.
    names = tuple((f"model-{i:02d}-" + "x" * 110, 100) for i in range(64))
    signers = [NodeIdentity.generate() for _ in range(320)]
    for ident in signers:
        PEERS[ident.peer_id] = ident
        cat.vouch(ident.peer_id)  # proven: not held by the new-signer limit
    size = len(signed_advert(signers[0].peer_id, 1, models=names))
    assert size > 14_000
    taken = sum(check(ident.peer_id, 1, BOB, models=names) for ident in signers)
    assert taken == ADVERT_BURST_BYTES // size
    assert gate.drops["forwarder budget"] == len(signers) - taken
