"""Rules a signed message must meet beyond its shape: time windows, the provider it
is bound to, a provider's size limits, and replayed job ids.

All times are integer ms since the Unix epoch and `now_ms` is always passed in.
Peers' clocks differ, so every window is widened by `skew_ms` on both ends.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from p2pinfer.errors import (
    ExpiredError,
    OverLimitsError,
    ReplayError,
    ReplayWindowFull,
    ValidationError,
    WrongProviderError,
)
from p2pinfer.protocol.check_messages import CheckReport
from p2pinfer.protocol.messages import Advert, JobRequest

CLOCK_SKEW_MS = 30_000
"""How far apart two honest peers' clocks may be."""
MAX_REQUEST_LIFETIME_MS = 10 * 60_000
"""A JobRequest may not be valid for longer than this."""
MAX_REQUEST_AGE_MS = 60_000
"""A JobRequest must reach its provider within this of `issued_at` (plus skew): a consumer
signs it just before it dials, so an honest one arrives in seconds. This, not the
lifetime, bounds how long a provider remembers a job id (about 90 s)."""
REPLAY_CAPACITY = 100_000
"""Live job ids a provider remembers at most (~20 MB); far above what it can admit in 90 s."""
REPLAY_PER_PEER = 4_096
"""Live job ids one peer may hold: ~45 admitted jobs/s to one provider for 90 s, far more
than one provider serves, so only a flood meets it."""
MAX_ADVERT_TTL_MS = 10 * 60_000
"""The longest an advert may live: providers republish (every 30 s, TTL 2 min by default),
so an advert from a key that stopped (a dead provider, or a Sybil's) goes within minutes."""
MAX_REPORT_AGE_MS = 24 * 3_600_000


def check_window(
    what: str,
    issued_at: int,
    expires_at: int,
    now_ms: int,
    *,
    max_lifetime_ms: int,
    skew_ms: int = CLOCK_SKEW_MS,
) -> None:
    """Require `issued_at <= now + skew`, `now <= expires_at + skew`, and a lifetime
    (`expires_at - issued_at`) of at most `max_lifetime_ms`."""
    if issued_at > now_ms + skew_ms:
        raise ExpiredError(f"{what} is not valid yet: issued {issued_at - now_ms} ms in the future")
    if now_ms > expires_at + skew_ms:
        raise ExpiredError(f"{what} expired {now_ms - expires_at} ms ago")
    if expires_at - issued_at > max_lifetime_ms:
        raise OverLimitsError(
            f"{what} is valid for {expires_at - issued_at} ms, more than {max_lifetime_ms}"
        )


@dataclass(frozen=True)
class RequestLimits:
    """A provider's policy on the size of the jobs it takes (tighter than the wire caps)."""

    max_prompt_chars: int = 200_000  # all message contents (or the prompt) together
    max_messages: int = 256
    max_stop: int = 8
    max_stop_chars: int = 64
    max_tokens: int = 8_192
    max_lifetime_ms: int = MAX_REQUEST_LIFETIME_MS
    max_age_ms: int = MAX_REQUEST_AGE_MS  # issued_at to arrival (see MAX_REQUEST_AGE_MS)


def check_request(
    request: JobRequest,
    *,
    provider_peer_id: str,
    now_ms: int,
    limits: RequestLimits = RequestLimits(),
    skew_ms: int = CLOCK_SKEW_MS,
) -> None:
    """Everything a provider checks on a verified request before deciding on it, except
    replay: bound to `provider_peer_id`, inside its time window, at most `max_age_ms` old
    (plus skew) on arrival, within `limits`."""
    if request.provider != provider_peer_id:
        raise WrongProviderError(f"the request is for provider {request.provider}, not this one")
    check_window(
        "the job request",
        request.issued_at,
        request.expires_at,
        now_ms,
        max_lifetime_ms=limits.max_lifetime_ms,
        skew_ms=skew_ms,
    )
    age_ms = now_ms - request.issued_at
    if age_ms > limits.max_age_ms + skew_ms:
        raise ExpiredError(
            f"the job request was issued {age_ms} ms ago; this provider takes requests at most "
            f"{limits.max_age_ms} ms old"
        )
    if len(request.messages) > limits.max_messages:
        raise OverLimitsError(
            f"{len(request.messages)} messages; this provider takes at most {limits.max_messages}"
        )
    chars = sum(len(m.content) for m in request.messages) + len(request.prompt or "") + sum(
        len(text) for text in request.inputs or ())
    if chars > limits.max_prompt_chars:
        raise OverLimitsError(
            f"the input is {chars} characters; this provider takes at most "
            f"{limits.max_prompt_chars}"
        )
    params = request.params
    if params.max_tokens > limits.max_tokens:
        raise OverLimitsError(
            f"max_tokens {params.max_tokens} is over this provider's limit of {limits.max_tokens}"
        )
    if len(params.stop) > limits.max_stop:
        raise OverLimitsError(f"{len(params.stop)} stop strings; at most {limits.max_stop}")
    if any(len(s) > limits.max_stop_chars for s in params.stop):
        raise OverLimitsError(f"a stop string is longer than {limits.max_stop_chars} characters")


def check_advert(advert: Advert, now_ms: int, *, skew_ms: int = CLOCK_SKEW_MS) -> None:
    """Require an advert to be current: issued, not expired, TTL at most MAX_ADVERT_TTL_MS."""
    check_window(
        "the advert",
        advert.issued_at,
        advert.expires_at,
        now_ms,
        max_lifetime_ms=MAX_ADVERT_TTL_MS,
        skew_ms=skew_ms,
    )


def check_report_age(report: CheckReport, now_ms: int, *, skew_ms: int = CLOCK_SKEW_MS) -> None:
    """Require a check report to be issued, and at most MAX_REPORT_AGE_MS old."""
    check_window(
        "the check report",
        report.issued_at,
        report.issued_at + MAX_REPORT_AGE_MS,
        now_ms,
        max_lifetime_ms=MAX_REPORT_AGE_MS,
        skew_ms=skew_ms,
    )


class ReplayWindow:
    """The job ids a provider has admitted and that could still be admitted again.

    An id is kept until the request could no longer pass `check_request` (its
    `expires_at`, or `issued_at + max_age_ms`, plus `skew_ms`: the provider passes
    the earlier of the two as `expires_at_ms`), so memory is bounded by the rate of
    admitted requests x about 90 s. Only requests the provider would serve are
    admitted (signature, window, limits, known model, price and a free slot checked
    first), so a flood of requests it refuses anyway takes no room.

    Room is shared fairly: each id is counted against the peers that sent it (the
    signer's key and the connection's peer, deduplicated), and a peer may hold at
    most `per_peer` live ids, and at most a quarter of the free room (at least one),
    so one peer, or a few, cannot take the last of it. At `capacity` live ids, or at
    a peer's share, the window refuses new ids (ReplayWindowFull, reject code
    "busy") rather than forget one early and let it be replayed.
    """

    def __init__(
        self,
        capacity: int = REPLAY_CAPACITY,
        *,
        per_peer: int = REPLAY_PER_PEER,
        skew_ms: int = CLOCK_SKEW_MS,
    ) -> None:
        if capacity < 1 or per_peer < 1:
            raise ValueError("capacity and per_peer must be >= 1")
        self._capacity = capacity
        self._per_peer = per_peer
        self._skew_ms = skew_ms
        self._forget_at: dict[bytes, tuple[int, tuple[str, ...]]] = {}
        self._heap: list[tuple[int, bytes]] = []
        self._held: dict[str, int] = {}  # live ids per peer (peers with none are dropped)

    def __len__(self) -> int:
        return len(self._forget_at)

    def held_by(self, peer: str) -> int:
        """Live ids counted against `peer`."""
        return self._held.get(peer, 0)

    def check_unused(self, job_id: bytes, now_ms: int) -> None:
        """ReplayError if `job_id` is remembered; records nothing (a peek before the checks
        that come between it and `check_and_remember`)."""
        self._prune(now_ms)
        if job_id in self._forget_at:
            raise ReplayError(f"job id {job_id.hex()} was already used")

    def check_and_remember(
        self, job_id: bytes, expires_at_ms: int, now_ms: int, *, peers: Sequence[str] = ()
    ) -> None:
        """Remember `job_id` (sent by `peers`) until `expires_at_ms + skew_ms`; ReplayError
        if it is already remembered, ReplayWindowFull if the window or a peer's share is full."""
        if len(job_id) != 16:
            raise ValidationError("a job id is 16 bytes")
        self._prune(now_ms)
        if job_id in self._forget_at:
            raise ReplayError(f"job id {job_id.hex()} was already used")
        if len(self._forget_at) >= self._capacity:
            raise ReplayWindowFull("too many recent jobs to track; try again later")
        owners = tuple(dict.fromkeys(peers))
        share = min(self._per_peer, max(1, (self._capacity - len(self._forget_at)) // 4))
        for peer in owners:
            if self._held.get(peer, 0) >= share:
                raise ReplayWindowFull(
                    f"this peer has {share} recent jobs here, its share of the replay window; "
                    "try again later")
        forget_at = expires_at_ms + self._skew_ms
        self._forget_at[job_id] = (forget_at, owners)
        for peer in owners:
            self._held[peer] = self._held.get(peer, 0) + 1
        heapq.heappush(self._heap, (forget_at, job_id))

    def _prune(self, now_ms: int) -> None:
        while self._heap and self._heap[0][0] < now_ms:
            _, job_id = heapq.heappop(self._heap)
            _, owners = self._forget_at.pop(job_id)
            for peer in owners:
                left = self._held[peer] - 1
                if left:
                    self._held[peer] = left
                else:
                    del self._held[peer]
