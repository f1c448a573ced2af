"""Refusals that outlive a restart.

A provider refuses a consumer key that took an answer and left it unpaid
(`ConsumerGate.release`), and with settlement the payer account behind it
(`ChannelBook.release`, attack 72), for ten minutes. Those refusals lived in memory
alone, so a restarted provider (an update, a crash, a reboot) pardoned them all, and
took a refused key that had paid before back as a payer from its ledger
(`ConsumerGate.remember_payers`). Here each refusal is written to the node's
reputation table (`ReputationBook.refuse`) as it is made, off the trio thread, and
the ones not yet over are put back into the gate and the channel book before the
restarted provider serves its first job.

Subjects: `key:<hex of the consumer's public key>` and `account:<checksummed payer>`.
Times on disk are unix ms; the channel book's clock (trio's) is turned into them.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

import trio
from trio_typing import TaskStatus

from p2pinfer.errors import StoreError
from p2pinfer.jobs.admission import KEY_MEMORY, UNPAID_WHY, ConsumerGate
from p2pinfer.settle.channels import ChannelBook
from p2pinfer.verify.reputation_store import ReputationBook

log = logging.getLogger(__name__)

KEY = "key:"
ACCOUNT = "account:"


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


class RefusalJournal:
    """Refusals noted on the trio thread as they are made and written to `book` in a
    worker thread moments later (a few at a time; at most KEY_MEMORY wait)."""

    def __init__(self, book: ReputationBook, *, clock_ms: Callable[[], int] = _wall_ms
                 ) -> None:
        self.book = book
        self._clock_ms = clock_ms
        self._pending: deque[tuple[str, int, str]] = deque(maxlen=KEY_MEMORY)
        self._wake = trio.Event()
        self.written = 0  # refusals journaled since start (for logs and tests)

    def note_key(self, key: bytes, until_ms: int) -> None:
        """The gate refused `key` until `until_ms` (unix ms, the job server's clock)."""
        self._note((KEY + key.hex(), until_ms, UNPAID_WHY))

    def note_account(self, account: str, for_s: float, why: str) -> None:
        """The channel book refused payer `account` for `for_s` from now, saying `why`."""
        self._note((ACCOUNT + account, self._clock_ms() + round(for_s * 1000), why))

    def _note(self, row: tuple[str, int, str]) -> None:
        self._pending.append(row)
        self._wake.set()

    async def restore(self, gate: ConsumerGate, channels: ChannelBook | None) -> int:
        """Put the journaled refusals not yet over back into `gate` and `channels`; how
        many. Call before the first job is served, and before `attach`."""
        rows = await self.book.run(self.book.refusals)
        now = self._clock_ms()
        for subject, until_ms, why in rows:
            if subject.startswith(KEY):
                try:
                    gate.ban(bytes.fromhex(subject[len(KEY):]), until_ms)
                except ValueError:
                    log.warning("journaled refusal unreadable subject=%s", subject)
            elif subject.startswith(ACCOUNT) and channels is not None:
                channels.ban(subject[len(ACCOUNT):], why, (until_ms - now) / 1000)
        return len(rows)

    def attach(self, gate: ConsumerGate, channels: ChannelBook | None) -> None:
        """From now on, journal every refusal `gate` and `channels` make."""
        gate.on_ban = self.note_key
        if channels is not None:
            channels.on_ban = self.note_account

    async def run(self) -> None:
        """Write noted refusals as they come, until cancelled (then the last ones)."""
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await self._flush()
        finally:
            with trio.CancelScope(shield=True):
                await self._flush()

    async def _flush(self) -> None:
        rows = list(self._pending)
        self._pending.clear()
        if not rows:
            return
        try:
            await self.book.run(self.book.refuse, rows)
        except StoreError as exc:  # kept in memory all the same; only a restart forgets
            log.error("refusals not journaled count=%d error=%s", len(rows), exc)
            return
        self.written += len(rows)


async def keep_refusals(book: ReputationBook, gate: ConsumerGate, channels: ChannelBook | None,
                        *, task_status: TaskStatus[RefusalJournal] = trio.TASK_STATUS_IGNORED
                        ) -> None:
    """A node's provider side: restore the refusals journaled before a restart into `gate`
    and `channels`, then journal each new one, until cancelled. Start it (`nursery.start`)
    before the job server takes streams."""
    journal = RefusalJournal(book)
    restored = await journal.restore(gate, channels)
    if restored:
        log.info("refusals restored count=%d", restored)
    journal.attach(gate, channels)
    task_status.started(journal)
    await journal.run()
