"""Time windows, provider binding, policy limits and the replay window."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from p2pinfer.errors import (
    ExpiredError,
    OverLimitsError,
    ReplayError,
    ReplayWindowFull,
    WrongProviderError,
)
from p2pinfer.protocol import (
    CLOCK_SKEW_MS,
    MAX_ADVERT_TTL_MS,
    Advert,
    ChatTurn,
    JobParams,
    JobRequest,
    ReplayWindow,
    RequestLimits,
    check_advert,
    check_request,
)
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER, adverts


def request(**changes: object) -> JobRequest:
    base = JobRequest(
        job_id=b"j" * 16,
        provider=PROVIDER.peer_id,
        model="smollm2:135m",
        kind="chat",
        messages=(ChatTurn("user", "hi"),),
        max_price_per_1k=100,
        issued_at=NOW_MS,
        expires_at=NOW_MS + 60_000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def check(req: JobRequest, now_ms: int = NOW_MS, limits: RequestLimits = RequestLimits()) -> None:
    check_request(req, provider_peer_id=PROVIDER.peer_id, now_ms=now_ms, limits=limits)


def test_a_fresh_request_passes() -> None:
    check(request())


def test_an_expired_request_is_rejected() -> None:
    req = request()
    check(req, now_ms=req.expires_at + CLOCK_SKEW_MS)  # still inside the skew allowance
    with pytest.raises(ExpiredError, match="expired"):
        check(req, now_ms=req.expires_at + CLOCK_SKEW_MS + 1)


def test_a_far_future_request_is_rejected() -> None:
    req = request(issued_at=NOW_MS + CLOCK_SKEW_MS, expires_at=NOW_MS + CLOCK_SKEW_MS + 60_000)
    check(req)  # a clock up to the skew ahead is fine
    later = request(issued_at=NOW_MS + 3_600_000, expires_at=NOW_MS + 3_660_000)
    with pytest.raises(ExpiredError, match="not valid yet"):
        check(later)


def test_a_request_valid_for_too_long_is_rejected() -> None:
    with pytest.raises(OverLimitsError, match="valid for"):
        check(request(expires_at=NOW_MS + 11 * 60_000))


def test_a_request_for_another_provider_is_rejected() -> None:
    with pytest.raises(WrongProviderError):
        check(request(provider=CONSUMER.peer_id))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"messages": (ChatTurn("user", "x" * 11),)}, "11 characters"),
        ({"messages": (ChatTurn("user", "a"),) * 4}, "4 messages"),
        ({"params": JobParams(max_tokens=65)}, "max_tokens 65"),
        ({"params": JobParams(max_tokens=8, stop=("a", "b", "c"))}, "3 stop strings"),
        ({"params": JobParams(max_tokens=8, stop=("long stop",))}, "stop string is longer"),
    ],
)
def test_requests_over_the_providers_limits_are_rejected(
    changes: dict[str, object], message: str
) -> None:
    limits = RequestLimits(
        max_prompt_chars=10, max_messages=3, max_stop=2, max_stop_chars=4, max_tokens=64
    )
    with pytest.raises(OverLimitsError, match=message):
        check(request(**changes), limits=limits)


def test_the_prompt_of_a_generate_job_counts_too() -> None:
    req = request(kind="generate", messages=(), prompt="y" * 11)
    with pytest.raises(OverLimitsError):
        check(req, limits=RequestLimits(max_prompt_chars=10))


@given(adverts)
def test_adverts_are_current_only_inside_their_ttl(advert: Advert) -> None:
    ad = dataclasses.replace(advert, issued_at=NOW_MS, ttl_ms=600_000)
    check_advert(ad, NOW_MS + 600_000)
    with pytest.raises(ExpiredError):
        check_advert(ad, NOW_MS + 600_000 + CLOCK_SKEW_MS + 1)
    with pytest.raises(ExpiredError):
        check_advert(ad, NOW_MS - CLOCK_SKEW_MS - 1)
    with pytest.raises(OverLimitsError):
        check_advert(dataclasses.replace(ad, ttl_ms=MAX_ADVERT_TTL_MS + 1), NOW_MS)


# --- replay window -----------------------------------------------------------------


def test_a_replayed_job_id_is_rejected() -> None:
    window = ReplayWindow()
    window.check_and_remember(b"a" * 16, NOW_MS + 60_000, NOW_MS)
    with pytest.raises(ReplayError):
        window.check_and_remember(b"a" * 16, NOW_MS + 60_000, NOW_MS + 59_000)
    window.check_and_remember(b"b" * 16, NOW_MS + 60_000, NOW_MS)


def test_an_id_is_kept_as_long_as_its_request_could_be_accepted() -> None:
    window = ReplayWindow()
    expires = NOW_MS + 60_000
    window.check_and_remember(b"a" * 16, expires, NOW_MS)
    with pytest.raises(ReplayError):
        window.check_and_remember(b"a" * 16, expires, expires + CLOCK_SKEW_MS)
    # Past expires_at + skew the request itself fails its time check, so the id can go.
    window.check_and_remember(b"z" * 16, expires + 120_000, expires + CLOCK_SKEW_MS + 1)
    assert len(window) == 1


def test_a_full_window_refuses_instead_of_forgetting_live_ids() -> None:
    window = ReplayWindow(capacity=2)
    window.check_and_remember(b"a" * 16, NOW_MS + 1_000, NOW_MS)
    window.check_and_remember(b"b" * 16, NOW_MS + 5_000, NOW_MS)
    with pytest.raises(ReplayWindowFull):
        window.check_and_remember(b"c" * 16, NOW_MS + 5_000, NOW_MS)
    with pytest.raises(ReplayError):
        window.check_and_remember(b"a" * 16, NOW_MS + 1_000, NOW_MS)
    # Once "a" is past its expiry (+ skew) there is room again.
    window.check_and_remember(b"c" * 16, NOW_MS + 5_000, NOW_MS + 1_000 + CLOCK_SKEW_MS + 1)


def ids(n: int, start: int = 0) -> list[bytes]:
    return [i.to_bytes(16, "big") for i in range(start, start + n)]


def test_replay_window_fill_by_one_peer_stops_at_its_share() -> None:
    window = ReplayWindow(capacity=1_000, per_peer=10)
    for job_id in ids(10):
        window.check_and_remember(job_id, NOW_MS + 60_000, NOW_MS, peers=("flooder",))
    with pytest.raises(ReplayWindowFull, match="share"):
        window.check_and_remember(ids(1, 10)[0], NOW_MS + 60_000, NOW_MS, peers=("flooder",))
    window.check_and_remember(ids(1, 11)[0], NOW_MS + 60_000, NOW_MS, peers=("honest",))
    assert window.held_by("flooder") == 10 and window.held_by("honest") == 1
    # Its ids expire, its share comes back; the counts never leak.
    later = NOW_MS + 60_000 + CLOCK_SKEW_MS + 1
    window.check_and_remember(ids(1, 12)[0], later + 60_000, later, peers=("flooder",))
    assert window.held_by("flooder") == 1 and window.held_by("honest") == 0 and len(window) == 1


def test_replay_window_fill_by_a_few_peers_leaves_room_for_others() -> None:
    # Each peer may take at most a quarter of the free room, so k flooders take at most
    # 1 - (3/4)^k of it, and a newcomer still finds room while they hold theirs.
    window = ReplayWindow(capacity=1_000, per_peer=1_000)
    next_id = 0
    for flooder in ("a", "b", "c", "d"):
        while True:
            try:
                window.check_and_remember(ids(1, next_id)[0], NOW_MS + 60_000, NOW_MS,
                                          peers=(flooder,))
            except ReplayWindowFull:
                break
            next_id += 1
    assert window.held_by("a") <= 250
    assert len(window) <= 1_000 - int(1_000 * 0.75**4) + 4
    window.check_and_remember(ids(1, next_id)[0], NOW_MS + 60_000, NOW_MS, peers=("honest",))


def test_replay_window_fill_by_sybil_signers_on_one_connection_stops_at_the_connection() -> None:
    window = ReplayWindow(capacity=1_000, per_peer=10)
    for n, job_id in enumerate(ids(10)):
        window.check_and_remember(job_id, NOW_MS + 60_000, NOW_MS, peers=(f"key{n}", "conn"))
    with pytest.raises(ReplayWindowFull):
        window.check_and_remember(ids(1, 10)[0], NOW_MS + 60_000, NOW_MS, peers=("new", "conn"))


def test_an_id_counts_once_when_the_signer_is_the_connections_peer() -> None:
    window = ReplayWindow()
    window.check_and_remember(b"a" * 16, NOW_MS + 60_000, NOW_MS, peers=("p", "p"))
    assert window.held_by("p") == 1


def test_a_request_older_than_max_age_on_arrival_is_refused_as_expired() -> None:
    req = request(issued_at=NOW_MS, expires_at=NOW_MS + 300_000)
    limits = RequestLimits()
    check_request(req, provider_peer_id=PROVIDER.peer_id,
                  now_ms=NOW_MS + limits.max_age_ms + CLOCK_SKEW_MS, limits=limits)
    with pytest.raises(ExpiredError, match="issued"):
        check_request(req, provider_peer_id=PROVIDER.peer_id,
                      now_ms=NOW_MS + limits.max_age_ms + CLOCK_SKEW_MS + 1, limits=limits)


class ReplayWindowModel(RuleBasedStateMachine):
    """The window against a plain dict of everything ever remembered."""

    @initialize(capacity=st.integers(1, 8))
    def setup(self, capacity: int) -> None:
        self.capacity = capacity
        self.window = ReplayWindow(capacity=capacity)
        self.now = NOW_MS
        self.seen: dict[bytes, int] = {}  # id -> last moment a replay must be refused

    def live(self) -> int:
        return sum(1 for until in self.seen.values() if until >= self.now)

    @rule(advance=st.integers(0, 50_000))
    def tick(self, advance: int) -> None:
        self.now += advance

    @rule(job=st.integers(0, 12), lifetime=st.integers(1, 60_000))
    def remember(self, job: int, lifetime: int) -> None:
        job_id = job.to_bytes(16, "big")
        expires = self.now + lifetime
        replay = self.seen.get(job_id, -1) >= self.now
        try:
            self.window.check_and_remember(job_id, expires, self.now)
        except ReplayError:
            assert replay
            return
        except ReplayWindowFull:
            assert not replay and self.live() >= self.capacity
            return
        assert not replay
        self.seen[job_id] = expires + CLOCK_SKEW_MS

    @invariant()
    def bounded(self) -> None:
        assert len(self.window) <= self.capacity


TestReplayWindowModel = ReplayWindowModel.TestCase
