"""Per-model admission for the job server: a concurrency limit and a bounded queue.

A job either runs at once (a free slot), waits in the model's queue (at most
`queue` waiting), or is refused as `busy` with a retry-after estimate. Pure
trio bookkeeping: no I/O, no clock other than trio's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from p2pinfer.errors import P2PInferError


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
