"""One attempt of a consumer's job on one provider (`NetJob`, `jobs/net_job.py`, runs
them one after another): its state, how it fails, which rejects are nobody's fault, and
the two settlement steps every way an attempt ends paid shares (a finished job,
`NetJob._complete`; a stopped one, `jobs/job_stop.py`): the payee an accept names and
the receipt for the result.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import trio

from p2pinfer.errors import InsufficientCreditError, NetworkError, PeerTimeoutError
from p2pinfer.jobs.job_types import Candidate, ClientConfig, TextDelta
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import ChunkReceived, ConsumerJob, JobAccept, JobParams, Signed
from p2pinfer.protocol.messages import TokenLogprobs
from p2pinfer.settle.payer import paid_receipt

if TYPE_CHECKING:
    from p2pinfer.jobs.runner import JobRunner

log = logging.getLogger(__name__)

#: A read past the pace floor's due time still takes what already arrived (this long).
PACE_LAST_WAIT_S = 0.05

#: Bounds of one busy back-off pause (BusyBackoff.wait), before jitter.
BUSY_PAUSE_MIN_S = 0.25
BUSY_PAUSE_MAX_S = 2.0

# Rejects that say nothing bad about the provider: it is full, dearer than we pay,
# or does not serve the model; or the fault is ours (clock, replay, binding).
NEUTRAL_CODES = frozenset({"busy", "price_too_low", "unknown_model", "insufficient_credit",
                           "insufficient_stake", "expired", "replayed", "wrong_provider",
                           "over_limits"})


@dataclass
class Attempt:
    """One provider's try at a job: its stream, protocol machine and what it sent."""

    candidate: Candidate
    stream: NetStream
    machine: ConsumerJob
    text: str = ""
    caught_up: bool = False  # all its text beyond what was delivered has been delivered
    accepted: bool = False
    chunks: int = 0
    payee: str | None = None  # settlement: the provider's chain account (its JobAccept)
    # Token log probabilities received (bounded by ConsumerJob: max_tokens + allowance).
    logprobs: list[TokenLogprobs] = field(default_factory=list)
    #: `direct`, `relayed` when its stream runs through a relay, `moved` once moved off
    #: it (jobs/job_move.py); set here, not asked at every token as the gateway shows it.
    path: str = field(init=False)
    #: trio time the attempt next looks for a direct connection to move onto (relayed only).
    move_after: float = field(init=False)
    first_chunk_at: float | None = None  # trio time
    streamed_s: float = 0.0  # from the first chunk to the last

    def __post_init__(self) -> None:
        self.path = self.stream.path
        self.move_after = 0.0 if self.path == "relayed" else math.inf

    def took(self, chunk: ChunkReceived) -> None:
        """Count `chunk` into the answer."""
        now = trio.current_time()
        if self.first_chunk_at is None:
            self.first_chunk_at = now
        self.streamed_s = now - self.first_chunk_at
        self.chunks += 1
        self.text += chunk.text
        self.logprobs.extend(chunk.logprobs)

    def beyond(self, done: str, logprobs: tuple[TokenLogprobs, ...] = ()) -> TextDelta | None:
        """What to pass on of its text (and the last chunk's `logprobs`) when `done` was
        delivered already: after a failover, only what goes beyond it, or everything
        again, flagged `restart`, with all its log probabilities, if this answer differs;
        None while there is nothing new."""
        full = self.text
        if self.caught_up:
            new = full[len(done):]
            return TextDelta(new, logprobs=logprobs) if new or logprobs else None
        n = min(len(full), len(done))
        if full[:n] != done[:n]:
            delta = TextDelta(full, restart=True, logprobs=tuple(self.logprobs))
        elif len(full) > len(done):
            delta = TextDelta(full[len(done):], logprobs=logprobs)
        else:
            return None  # still repeating what was delivered
        self.caught_up = True
        return delta

    @property
    def progress(self) -> int:
        """Tokens the answer holds at least: its chunks (a provider sends one per token,
        or per group of tokens), or one per four characters if that is more."""
        return max(self.chunks, len(self.text) // 4)

    async def read(self, cfg: ClientConfig) -> bytes:
        """The provider's next bytes, waiting at most what the job's stage allows (accept,
        first chunk, next chunk) and, after the first chunk, only until the answer falls
        under `cfg.min_tokens_per_s` on average (after `cfg.pace_grace_s`): AttemptFailed
        then, blamed. Bytes already here count, however long the reader itself took."""
        if self.chunks == 0 and not self.candidate.proven:
            return await self._read_unproven_start(cfg)
        timeout = (cfg.accept_timeout_s if not self.accepted else
                   cfg.first_chunk_timeout_s if self.chunks == 0 else cfg.chunk_timeout_s)
        if self.first_chunk_at is None or cfg.min_tokens_per_s <= 0:
            return await self.stream.read_some(timeout_s=timeout)
        due = self.first_chunk_at + cfg.pace_grace_s + self.progress / cfg.min_tokens_per_s
        left = due - trio.current_time()
        if left >= timeout:
            return await self.stream.read_some(timeout_s=timeout)
        try:
            return await self.stream.read_some(timeout_s=max(left, PACE_LAST_WAIT_S))
        except PeerTimeoutError as exc:
            spent = trio.current_time() - self.first_chunk_at
            raise AttemptFailed(
                f"too slow: {self.progress} tokens in {spent:.1f} s after the first, under "
                f"{cfg.min_tokens_per_s:g} a second", "too_slow") from exc

    async def _read_unproven_start(self, cfg: ClientConfig) -> bytes:
        """`read` before the first chunk of a provider this node was never served by: its
        accept and its first token each within the shorter `unproven_*` waits (attack
        76), else AttemptFailed `too_slow`, ranked last for a while. A first token late is
        blamed (the job had a slot); an accept late (`slow_to_accept`) is not: an honest
        provider queues a paying key's job (with settlement, a new consumer's too)."""
        stage, timeout = (("accept", min(cfg.accept_timeout_s, cfg.unproven_accept_timeout_s))
                          if not self.accepted else ("first token", min(
                              cfg.first_chunk_timeout_s, cfg.unproven_first_chunk_timeout_s)))
        try:
            return await self.stream.read_some(timeout_s=timeout)
        except PeerTimeoutError as exc:
            raise AttemptFailed(f"too slow to start: no {stage} in {timeout:g} s from a "
                                "provider not proven here",
                                "too_slow" if self.accepted else "slow_to_accept",
                                blame=self.accepted) from exc


class AttemptFailed(Exception):
    """An attempt ended without a result; `blame` counts it against the provider."""

    def __init__(self, reason: str, code: str | None = None, *, blame: bool = True,
                 retry_after_ms: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code
        self.blame = blame
        self.retry_after_ms = retry_after_ms  # with code "busy": when to try again



async def take_payee(client: JobRunner, attempt: Attempt, accept: Signed[JobAccept]) -> None:
    """Settlement: the provider's account its `accept` names, once its binding and our
    channel to it check out (`PayerBook.accept_payee`); AttemptFailed
    (`insufficient_credit`, nobody's fault) when no channel covers the job."""
    if client.payer is None:
        return
    try:
        attempt.payee = await client.payer.accept_payee(
            accept, attempt.candidate.peer_id, attempt.machine.request.msg)
    except InsufficientCreditError as exc:
        raise AttemptFailed(str(exc), "insufficient_credit", blame=False) from exc


async def send_receipt(client: JobRunner, attempt: Attempt) -> bool:
    """Write the receipt (with settlement, its voucher) for the attempt's checked result
    and close our side; whether the provider got it (a transport failure is logged: the
    provider then charges nothing, nor may we)."""
    machine = attempt.machine
    receipt = await paid_receipt(client.payer, machine, attempt.payee)
    delivered = True
    try:
        await attempt.stream.write(receipt, timeout_s=client.config.chunk_timeout_s)
    except NetworkError as exc:
        delivered = False
        log.warning("receipt not delivered job=%s provider=%s error=%s",
                    machine.job_id.hex(), attempt.candidate.peer_id, exc)
    await attempt.stream.close()
    return delivered


class BusyBackoff:
    """One job's wait for busy providers. Every provider tried since the round began
    answered "busy" (its slots, or this key's share of them, are taken): `wait` sleeps
    the shortest retry-after they gave, bounded to [BUSY_PAUSE_MIN_S, BUSY_PAUSE_MAX_S]
    with jitter, and the job starts a new round over all providers. A gateway that runs
    more users' jobs at once than the providers admit per key then queues them here
    instead of failing them (bench/gateway.py: 4 of 96 one-token jobs at concurrency 16
    without this). No wait, and the job fails as before, when a round saw another
    failure or the budget (`ClientConfig.busy_wait_s`) is spent: a provider that says
    "busy" forever costs a consumer at most that."""

    def __init__(self) -> None:
        self._all_busy = True
        self._retry_ms: int | None = None
        self.waited_s = 0.0

    def record(self, failure: AttemptFailed) -> None:
        """Count one failed attempt of this round."""
        if failure.code != "busy":
            self._all_busy = False
            return
        wait = failure.retry_after_ms if failure.retry_after_ms is not None else 1_000
        self._retry_ms = wait if self._retry_ms is None else min(self._retry_ms, wait)

    async def wait(self, budget_s: float, model: str) -> bool:
        """Wait before a new round when this one was all busy; False: fail the job."""
        left = budget_s - self.waited_s
        if not self._all_busy or self._retry_ms is None or left <= 0:
            return False
        pause = min(left, max(BUSY_PAUSE_MIN_S, min(BUSY_PAUSE_MAX_S, self._retry_ms / 1000)))
        pause *= 0.75 + 0.5 * random.random()  # jobs told the same retry-after spread out
        log.info("every provider busy, trying again model=%s in_s=%.2f", model, pause)
        await trio.sleep(pause)
        self.waited_s += pause
        self._all_busy, self._retry_ms = True, None
        return True


def with_seed(params: JobParams, seed: int) -> JobParams:
    """`params` with `seed` if it had none (every attempt of a job then samples alike, so
    a failover usually continues the same answer), and floats where the wire wants them."""
    return replace(
        params,
        seed=seed if params.seed is None else params.seed,
        temperature=float(params.temperature),
        top_p=float(params.top_p),
        min_p=_float(params.min_p),
        repeat_penalty=_float(params.repeat_penalty),
        presence_penalty=_float(params.presence_penalty),
        frequency_penalty=_float(params.frequency_penalty),
    )


def _float(value: float | None) -> float | None:
    return None if value is None else float(value)
