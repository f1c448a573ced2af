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
