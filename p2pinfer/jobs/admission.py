"""Admission for the job server: per model, a concurrency limit and a bounded queue;
per consumer key, who may start a job at all (`ConsumerGate`).

A job either runs at once (a free slot), waits in the model's queue (at most
`queue` waiting), or is refused as `busy` with a retry-after estimate. Pure
bookkeeping: no I/O, no clock other than trio's (ConsumerGate takes times in ms).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import trio

from p2pinfer.bounded import keep_latest
from p2pinfer.errors import P2PInferError

if TYPE_CHECKING:
    from p2pinfer.market.ledger_reads import LedgerReads


class Busy(P2PInferError):
    """The model's slots and queue are full; `retry_after_ms` says when to try again."""

    def __init__(self, message: str, retry_after_ms: int) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms


class ModelSlots:
    """`concurrency` jobs of one model at a time, and at most `queue` waiting for a slot."""

    def __init__(self, concurrency: int, queue: int, *, typical_job_ms: int = 2_000) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be >= 1 and queue >= 0")
        self.concurrency = concurrency
        self.queue = queue
        self._limiter = trio.CapacityLimiter(concurrency)
        self.waiting = 0
        # Exponentially weighted job duration, for the retry-after estimate.
        self._job_ms = float(typical_job_ms)

    @property
    def active(self) -> int:
        """Jobs holding a slot now."""
        return int(self._limiter.borrowed_tokens)

    @property
    def utilisation_pm(self) -> int:
        """Share of the slots in use, per mille (queued jobs count as full load)."""
        if self.waiting:
            return 1000
        return min(1000, self.active * 1000 // self.concurrency)

    def retry_after_ms(self) -> int:
        """About when a slot frees up for a job that would join the queue now."""
        ahead = self.active + self.waiting - self.concurrency + 1
        return max(100, int(self._job_ms * max(1, ahead) / self.concurrency))

    def check(self) -> None:
        """Raise Busy unless a job could run or queue now (call right before `slot()`)."""
        if self.active >= self.concurrency and self.waiting >= self.queue:
            raise Busy(
                f"{self.active} jobs running and {self.waiting} queued (limit "
                f"{self.concurrency} + {self.queue})",
                self.retry_after_ms(),
            )

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one slot for the block, waiting in the queue first if needed. Raises Busy
        when the queue is full; cancel the caller to stop waiting."""
        self.check()
        self.waiting += 1
        try:
            await self._limiter.acquire()
        finally:
            self.waiting -= 1
        started = trio.current_time()
        try:
            yield
        finally:
            self._limiter.release()
            took_ms = (trio.current_time() - started) * 1000
            self._job_ms = 0.8 * self._job_ms + 0.2 * took_ms


# -- per consumer key ----------------------------------------------------------------

#: Jobs one paying key may have in flight here at once (queued or running; as many more
#: may await their receipt), when the model's own concurrency is lower: a gateway runs
#: several users' jobs under one key, and more than this per provider only queues behind
#: itself.
MIN_JOBS_PER_KEY = 2
#: Jobs a key that never sent this provider a receipt gets served: its free allowance.
#: A fresh consumer needs one job to pay its first receipt; a freeloader gets one job.
FREE_JOBS_PER_KEY = 1
#: Free jobs (from keys without a receipt here) this provider starts per minute, all
#: keys together: a fresh key costs nothing, so this, not the per-key allowance,
#: bounds what a Sybil rotating keys gets. Free jobs also run only on an idle slot and
#: are preempted by a paying job (job_server.py), so they never delay a paying one.
FREE_JOBS_PER_MINUTE = 20
FREE_WINDOW_MS = 60_000
#: How long a key that took a result and sent no receipt (within the job server's
#: receipt_timeout_s) is refused.
DEFAULT_BAN_MS = 10 * 60_000
#: Keys remembered as payers / as having used their free job / as banned (LRU each):
#: bounded memory; a key forgotten early only gets one more free job, still under
#: FREE_JOBS_PER_MINUTE.
KEY_MEMORY = 50_000
#: Why a key is refused (`ConsumerGate.admit`'s wording, and the journal's: jobs/refusals.py).
UNPAID_WHY = "took a result and sent no receipt"
#: Charges a restarted provider reads back from its ledger: their keys are payers again.
RESTART_PAYERS = 2_000  # ~0.1 s to read back on this 2-core VM


class Refused(P2PInferError):
    """The consumer's key may not start a job now: reject with `code`."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_ms = retry_after_ms


class Ticket:
    """One admitted job of one consumer key, until `ConsumerGate.release`."""

    __slots__ = ("awaiting", "free", "key", "paid", "result_sent")

    def __init__(self, key: bytes, free: bool) -> None:
        self.key = key
        self.free = free  # the key had never paid here: an idle-slot, preemptible job
        self.result_sent = False
        self.awaiting = False  # counted as awaiting its receipt, no longer as computing
        self.paid = False

    @property
    def unpaid(self) -> bool:
        """A result went out (or an answer was taken, attacks 66-67) and no receipt came."""
        return self.result_sent and not self.paid


def _decrement(table: dict[bytes, int], key: bytes) -> None:
    left = table.get(key, 0) - 1
    if left > 0:
        table[key] = left
    else:
        table.pop(key, None)


class ConsumerGate:
    """Who may start a job at this provider, per consumer key (the request's signer).

    Before settlement a receipt is the only payment a provider sees, so:
    - a key that took a result and sent no receipt is refused for DEFAULT_BAN_MS;
    - a key that never sent a receipt here gets FREE_JOBS_PER_KEY job (how a new
      consumer starts), only while a slot is idle, and within FREE_JOBS_PER_MINUTE
      for all such keys together;
    - a paying key has at most `per_key` jobs in flight and `per_key` awaiting receipts.
    With settlement, a key whose payment channel covers the job (`covered`) is served
    as a paying key from its first job; a bad voucher bans it like a missing receipt,
    and either bans the channel's payer account too (`ChannelBook.release`: attack 72).
    Pure bookkeeping: times are passed in (ms).
    """

    def __init__(
        self,
        per_key: int = MIN_JOBS_PER_KEY,
        *,
        free_per_minute: int = FREE_JOBS_PER_MINUTE,
        ban_ms: int = DEFAULT_BAN_MS,
    ) -> None:
        self.per_key = max(1, per_key)
        self.free_per_minute = free_per_minute
        self.ban_ms = ban_ms
        self._inflight: dict[bytes, int] = {}  # key -> jobs admitted, result not sent
        self._awaiting: dict[bytes, int] = {}  # key -> paying jobs awaiting their receipt
        self._payers: OrderedDict[bytes, int] = OrderedDict()  # key -> last receipt ms
        self._free_used: OrderedDict[bytes, int] = OrderedDict()  # key -> free jobs had
        self._banned: OrderedDict[bytes, int] = OrderedDict()  # key -> refused until ms
        self._free_starts: deque[int] = deque()  # ms each free job started, last minute
        self.free_jobs = 0  # free jobs admitted since start (for logs and tests)
        # Told (key, until ms) of each refusal `ban` makes: jobs/refusals.py journals it.
        self.on_ban: Callable[[bytes, int], None] | None = None

    def is_payer(self, key: bytes) -> bool:
        """Whether `key` has sent this provider a receipt (and is still remembered)."""
        return key in self._payers

    def inflight(self, key: bytes) -> int:
        return self._inflight.get(key, 0)

    def admit(self, key: bytes, now_ms: int, *, idle: bool, covered: bool = False) -> Ticket:
        """A ticket for a job of `key`, or Refused. `idle`: a slot of the model is free now
        and nobody waits (a free job needs one). `covered`: a payment channel holds the
        job's charge (settlement), so the key is served as a payer, not a free job."""
        until = self._banned.get(key)
        if until is not None:
            if now_ms < until:
                raise Refused("insufficient_credit",
                              f"this key {UNPAID_WHY}; refused for {(until - now_ms) // 1000} s "
                              "more")
            del self._banned[key]
        held = self._inflight.get(key, 0)
        if key in self._payers or covered:
            if held >= self.per_key:
                raise Refused("busy", f"this key has {held} jobs in flight here (limit "
                              f"{self.per_key})", 1_000)
            if self._awaiting.get(key, 0) >= self.per_key:
                raise Refused("busy", f"this key owes {self.per_key} receipts here; send "
                              "them first", 1_000)
            ticket = Ticket(key, free=False)
        else:
            if held:
                raise Refused("busy", "a key that has sent no receipt here runs one job at a "
                              "time until it pays one", 1_000)
            if self._free_used.get(key, 0) >= FREE_JOBS_PER_KEY:
                raise Refused("insufficient_credit",
                              "a key that has sent no receipt here gets "
                              f"{FREE_JOBS_PER_KEY} job; pay a receipt first")
            if not idle:
                raise Refused("busy", "jobs from a key without a receipt here run only on an "
                              "idle slot", 1_000)
            while self._free_starts and self._free_starts[0] <= now_ms - FREE_WINDOW_MS:
                self._free_starts.popleft()
            if len(self._free_starts) >= self.free_per_minute:
                wait = self._free_starts[0] + FREE_WINDOW_MS - now_ms
                raise Refused("busy", f"{self.free_per_minute} jobs a minute from keys "
                              "without a receipt here, all taken", max(100, wait))
            self._free_starts.append(now_ms)
            keep_latest(self._free_used, key, self._free_used.get(key, 0) + 1, KEY_MEMORY)
            self.free_jobs += 1
            ticket = Ticket(key, free=True)
        self._inflight[key] = held + 1
        return ticket

    def result_sent(self, ticket: Ticket) -> None:
        """The job's result went out; it is unpaid until its receipt. A paying key's job
        then holds no slot, so it stops counting against `per_key` jobs in flight (a
        gateway's next job must not find its own receipt in the way) and counts against
        `per_key` receipts awaited instead; a free key's job keeps counting, so that key
        runs nothing else until it pays."""
        ticket.result_sent = True
        if ticket.free or ticket.awaiting:
            return
        ticket.awaiting = True
        _decrement(self._inflight, ticket.key)
        self._awaiting[ticket.key] = self._awaiting.get(ticket.key, 0) + 1

    def paid(self, ticket: Ticket, now_ms: int) -> None:
        """The job's receipt arrived: its key is a payer from now on."""
        ticket.paid = True
        keep_latest(self._payers, ticket.key, now_ms, KEY_MEMORY)
        self._free_used.pop(ticket.key, None)

    def remember_payers(self, ledger: LedgerReads, provider: bytes) -> None:
        """Take the keys whose receipts `provider`'s ledger holds (its last RESTART_PAYERS
        charges) as payers: what the provider knew before it restarted."""
        for key, at_ms in ledger.recent_payers(provider, RESTART_PAYERS):
            keep_latest(self._payers, key, at_ms, KEY_MEMORY)

    def refund(self, ticket: Ticket) -> None:
        """A free job ended before its result through no fault of its key (preempted, or
        the engine failed): the key keeps its free job (the start still counts in the
        minute's FREE_JOBS_PER_MINUTE)."""
        if ticket.free and not ticket.result_sent:
            used = self._free_used.get(ticket.key, 0)
            if used > 1:
                self._free_used[ticket.key] = used - 1
            else:
                self._free_used.pop(ticket.key, None)

    def ban(self, key: bytes, until_ms: int) -> None:
        """Refuse `key` until `until_ms`; it is no payer here meanwhile, nor after.
        `on_ban` is told."""
        keep_latest(self._banned, key, until_ms, KEY_MEMORY)
        self._payers.pop(key, None)
        if self.on_ban is not None:
            self.on_ban(key, until_ms)

    def release(self, ticket: Ticket, now_ms: int) -> None:
        """The job is over (call once). A result that was never paid bans the key."""
        _decrement(self._awaiting if ticket.awaiting else self._inflight, ticket.key)
        if ticket.unpaid:
            self.ban(ticket.key, now_ms + self.ban_ms)
