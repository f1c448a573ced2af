"""The provider's view of its payment channels (docs/settlement.md, "Node side").

`ChannelBook` answers, without a chain call on a job's path, whether a payer's
channel to this provider covers a job, checks the voucher a Receipt carries, and
journals it. Chain state is cached: the first sight of a payer does one read
(`trio.to_thread`, short timeout); `run_refresh` re-reads the channels in use in
the background; the redeemer updates `redeemed` after each redemption.

Accept rule, for a payer P and a job whose largest possible charge is M (the
charges.py bound at the quoted price):

    deposit(P) - max(held(P), redeemed(P)) - reserved(P) >= M

where held is the newest voucher's cumulative this provider holds, redeemed what
the chain paid out already, reserved the bounds of P's admitted jobs not yet
receipted; and no reclaim is pending on the channel. A Receipt's voucher is good
when it recovers to P, its cumulative is at most the deposit, and the newest
voucher held (this one or a higher one) covers all P owes with this job:
max(held, cumulative) >= billed + charge, where billed = max(held, redeemed) at
first sight plus the charges of every job paid since. In sequence that is exactly
cumulative == previous + charge; it also pays two jobs whose receipts overtook
each other (the later-numbered voucher covers the earlier job), while a voucher
short of what is owed, for anyone's account but P's, or over the deposit, leaves
the job unpaid.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from p2pinfer.bounded import PerMinute, keep_latest
from p2pinfer.errors import DuplicateEntryError, LedgerError, P2PInferError
from p2pinfer.market.channel_entries import RedemptionBody, VoucherBody, channel_subject
from p2pinfer.market.ledger import Ledger
from p2pinfer.settle.account import check_binding
from p2pinfer.settle.addresses import address_bytes, checksum_address
from p2pinfer.settle.ports import ChainPort, ChannelState
from p2pinfer.settle.vouchers import recover_signer, voucher_digest

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

#: The first read of a payer's channel waits at most this long (then the job is refused
#: `busy`; the read finishes in the background and the next request finds it cached).
FIRST_READ_TIMEOUT_S = 3.0
#: Channels used within this long are re-read every REFRESH_S.
ACTIVE_S = 600.0
REFRESH_S = 15.0
#: A payer the cache finds uncovered has its channel re-read at most this often (on its
#: refused request's path: a covered payer's job never waits for the chain).
RECHECK_S = 2.0
#: A payer whose voucher did not check out, or with a job left unpaid, is refused this
#: long (as the gate refuses its key: jobs/admission.DEFAULT_BAN_MS).
PAYER_BAN_S = 600.0
#: Channels cached; beyond it, idle ones holding nothing unredeemed are forgotten (fresh
#: accounts cost nothing, so their number must not grow memory without bound).
MAX_CHANNELS = 50_000
#: First reads in flight at once; more new payers are refused `busy` (each costs an RPC).
MAX_FIRST_READS = 32
#: Chain reads requests may cause a minute (a new payer's first read, an uncovered one's
#: re-read), per asker (`NetStream.asker`) and in all: accounts are free, and each was an
#: RPC call (attack 74). A covered payer's job reads nothing on its path.
CHAIN_READS_PER_ASKER = 12
CHAIN_READS_PER_MIN = 300


class ChannelRefused(P2PInferError):
    """The payer may not start a job now: reject with `code`."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_ms = retry_after_ms


class BadVoucher(P2PInferError):
    """A Receipt's voucher did not check out: the job is unpaid."""


def deposit_hint(provider: str) -> str:
    """The error a consumer without a (big enough) channel sees, naming the command."""
    return (f"no funded channel to {provider}: run `p2pinfer wallet deposit {provider} "
            "CREDITS`")


@dataclass
class Channel:
    """One payer's channel to this provider, as this node knows it."""

    consumer: str
    state: ChannelState
    held: int = 0  # newest checked voucher's cumulative
    billed: int = 0  # what the payer owes us, this job's receipts included (<= held)
    signature: bytes = b""  # ... and its signature
    reserved: int = 0  # bounds of admitted jobs awaiting their receipt
    used_at: float = 0.0  # clock time of the last job
    read_at: float = 0.0  # clock time `state` was read from the chain

    @property
    def owed(self) -> int:
        """What the chain has not paid of what this node holds vouchers for."""
        return max(0, self.held - self.state.redeemed)

    @property
    def base(self) -> int:
        """The cumulative the next voucher builds on."""
        return max(self.held, self.state.redeemed)


@dataclass
class Hold:
    """One admitted job's reservation on a channel, until `ChannelBook.release`."""

    channel: Channel
    amount: int
    released: bool = False


async def journal_settlement(ledger: Ledger | None, body: VoucherBody | RedemptionBody,
                             limiter: trio.CapacityLimiter, what: str) -> None:
    """Write a settlement entry to the ledger off the loop (none without a ledger); a
    duplicate or a ledger failure is logged, never raised: the chain holds the money and
    the journal is its record. `what` names it in the log ("voucher cumulative=5")."""
    if ledger is None:
        return
    kind, _, detail = what.partition(" ")
    try:
        await trio.to_thread.run_sync(ledger.record_settlement, body, limiter=limiter)
    except DuplicateEntryError:
        log.warning("%s already journaled %s", kind, detail)
    except LedgerError as exc:
        log.error("%s not journaled %s error=%s", kind, detail, exc)


class ChannelBook:
    """Channels paying this provider (`chain.address`), cached; see the module doc."""

    def __init__(
        self,
        chain: ChainPort,
        ledger: Ledger | None = None,
        *,
        binding: bytes = b"",
        limiter: trio.CapacityLimiter | None = None,
        first_read_timeout_s: float = FIRST_READ_TIMEOUT_S,
        clock_s: Callable[[], float] = trio.current_time,
    ) -> None:
        self.chain = chain
        self.ledger = ledger
        self.address = chain.address
        self.binding = binding  # this account's signature over our PeerID (JobAccept.payee)
        self._provider_raw = address_bytes(chain.address)
        self._channels_raw = address_bytes(chain.channels_address)
        self._limiter = limiter or trio.CapacityLimiter(1)
        self._first_read_timeout_s = first_read_timeout_s
        self._clock = clock_s
        self.channels: dict[str, Channel] = {}  # by checksummed consumer address
        self._reading: dict[str, trio.Event] = {}
        self._banned: OrderedDict[str, tuple[float, str]] = OrderedDict()  # until, why
        self._reads = PerMinute[str](max_keys=4096, clock=clock_s)  # by asker
        self.on_ban: Callable[[str, float, str], None] | None = None  # jobs/refusals.py
        self._nursery: trio.Nursery | None = None

    def accept_fields(self) -> dict[str, bytes]:
        """The payee fields of our JobAccept."""
        return {"payee": self._provider_raw, "payee_binding": self.binding}

    # -- the payer -----------------------------------------------------------------

    def payer_of(self, payer: bytes | None, binding: bytes | None, peer_id: str) -> str:
        """The checksummed payer of a request signed by `peer_id`; ChannelRefused when the
        request names none or its binding is not that account's signature over `peer_id`."""
        if payer is None or binding is None:
            raise ChannelRefused("insufficient_credit",
                                 "this provider is paid through payment channels: the request "
                                 "needs a payer account and its binding (a newer p2pinfer)")
        address = checksum_address(payer)
        if not check_binding(address, peer_id, binding):
            raise ChannelRefused("insufficient_credit",
                                 f"the payer binding is not {address}'s signature over the "
                                 "request's signer")
        return address

    async def channel(self, consumer: str, *, stale_s: float | None = None,
                      asker: str | None = None) -> Channel:
        """The cached channel of `consumer`; on first sight (or, with `stale_s`, when the
        cached state is older) one chain read, waited for at most first_read_timeout_s
        (a first sight then refuses `busy`; a re-read keeps the cached state), and counted
        against `asker`'s budget (over it: `busy`, or a re-read keeps the cached state)."""
        known = self.channels.get(consumer)
        if known is not None and (stale_s is None or self._clock() - known.read_at < stale_s):
            return known
        reading = self._reading.get(consumer)
        if reading is None:
            if len(self._reading) >= MAX_FIRST_READS:
                raise ChannelRefused("busy", "too many new payers at once", 1_000)
            if asker is not None and not self._reads.admit(
                    asker, CHAIN_READS_PER_ASKER, CHAIN_READS_PER_MIN):
                if known is not None:
                    return known
                raise ChannelRefused("busy", "too many chain reads for new payers this "
                                     "minute (from your address, or in all)", 60_000)
            reading = self._reading[consumer] = trio.Event()
            if self._nursery is None:  # not running (tests): read inline
                await self._read(consumer, reading)
            else:
                self._nursery.start_soon(self._read, consumer, reading)
        with trio.move_on_after(self._first_read_timeout_s):
            await reading.wait()
        known = self.channels.get(consumer)
        if known is None:
            raise ChannelRefused("busy", "the chain has not given the channel yet", 1_000)
        return known

    async def _read(self, consumer: str, done: trio.Event) -> None:
        # In the book's own nursery (`run`), so that a slow chain read outlives the job that
        # waited for it and fills the cache for the next request.
        try:
            state, held = await trio.to_thread.run_sync(
                self._read_channel, consumer, limiter=self._limiter)
        except Exception as exc:  # a chain or ledger failure: the next request retries
            log.warning("channel read failed consumer=%s error=%s", consumer, exc)
        else:
            known = self.channels.get(consumer)
            if known is not None:  # a re-read: only the chain's part changes
                known.state, known.read_at = state, self._clock()
                return
            channel = Channel(consumer, state, read_at=self._clock())
            if held is not None:
                channel.held, channel.signature = held
            channel.billed = channel.base
            self.channels[consumer] = channel
            if len(self.channels) > MAX_CHANNELS:
                self._forget_idle()
        finally:
            self._reading.pop(consumer, None)
            done.set()

    def _forget_idle(self) -> None:
        idle = sorted((c for c in self.channels.values() if not c.owed and not c.reserved),
                      key=lambda c: c.used_at)
        for channel in idle[:len(self.channels) - MAX_CHANNELS // 2]:
            del self.channels[channel.consumer]

    def _read_channel(self, consumer: str) -> tuple[ChannelState, tuple[int, bytes] | None]:
        """(chain state, newest held voucher in the ledger) — blocking."""
        state = self.chain.channel(consumer, self.address)
        held: tuple[int, bytes] | None = None
        if self.ledger is not None:
            subject = channel_subject(self._channels_raw, address_bytes(consumer),
                                      self._provider_raw)
            for entry in self.ledger.settlement_entries(subject):
                body = entry.body
                if isinstance(body, VoucherBody) and body.role == "held" and (
                        held is None or body.cumulative > held[0]):
                    held = (body.cumulative, body.signature)
        return state, held

    # -- admission -----------------------------------------------------------------

    async def admit(self, consumer: str, max_charge: int, asker: str | None = None) -> Hold:
        """Reserve `max_charge` on `consumer`'s channel (the accept rule), or ChannelRefused."""
        until, why = self._banned.get(consumer, (0.0, ""))
        if until:
            if self._clock() < until:
                raise ChannelRefused("insufficient_credit",
                                     f"{consumer} {why} here; refused for "
                                     f"{int(until - self._clock())} s more")
            del self._banned[consumer]
        channel = await self.channel(consumer, asker=asker)
        if channel.state.reclaim_at or (
                channel.state.deposit - channel.base - channel.reserved < max_charge):
            # Uncovered by the cache: a deposit (or a cancelled reclaim) may have landed
            # since. A refused request may wait for one re-read, RECHECK_S apart at most.
            channel = await self.channel(consumer, stale_s=RECHECK_S, asker=asker)
        state = channel.state
        if state.reclaim_at:
            raise ChannelRefused("insufficient_credit",
                                 f"{consumer} is reclaiming its channel to {self.address}; "
                                 + deposit_hint(self.address))
        free = state.deposit - channel.base - channel.reserved
        if free < max_charge:
            raise ChannelRefused(
                "insufficient_credit",
                f"{deposit_hint(self.address)} (the channel from {consumer} has {max(free, 0)} "
                f"free, the job may charge up to {max_charge})")
        channel.reserved += max_charge
        channel.used_at = self._clock()
        return Hold(channel, max_charge)

    def release(self, hold: Hold, *, unpaid: bool = False) -> None:
        """The job is over (receipted or not): its reservation goes (idempotent). A job left
        `unpaid` refuses its payer as the gate refuses its key: any number of free keys
        bind to one account, so refusing the key alone left the deposit free (attack 72)."""
        if not hold.released:
            hold.released = True
            hold.channel.reserved -= hold.amount
        if unpaid and self._banned.get(hold.channel.consumer, (0.0, ""))[0] <= self._clock():
            self.ban(hold.channel.consumer, "left a job unpaid")

    # -- vouchers ------------------------------------------------------------------

    def take_voucher(self, hold: Hold, job_id: bytes, charged: int, cumulative: int | None,
                     signature: bytes | None) -> VoucherBody:
        """Check a Receipt's voucher against the channel and hold it (in memory at once;
        `journal` the returned body). BadVoucher if it does not check out."""
        channel = hold.channel
        if cumulative is None or signature is None:
            raise BadVoucher("the receipt carries no voucher")
        digest = voucher_digest(self.chain.channels_address, self.chain.chain_id,
                                channel.consumer, self.address, cumulative)
        signer = recover_signer(digest, signature)
        if signer is None or signer.lower() != channel.consumer.lower():
            raise BadVoucher(f"the voucher is not signed by the payer {channel.consumer}")
        if cumulative > channel.state.deposit:
            raise BadVoucher(f"the voucher's cumulative {cumulative} is over the channel's "
                             f"deposit {channel.state.deposit}")
        owed = max(channel.billed, channel.state.redeemed) + charged
        if max(channel.held, cumulative) < owed:
            raise BadVoucher(f"the voucher's cumulative {cumulative} does not cover the {owed} "
                             f"owed ({owed - charged} before, {charged} for this job)")
        channel.billed = owed
        if cumulative > channel.held:
            channel.held, channel.signature = cumulative, signature
        return VoucherBody("held", self._channels_raw, address_bytes(channel.consumer),
                           self._provider_raw, job_id, charged, cumulative, signature)

    def ban(self, consumer: str, why: str, for_s: float = PAYER_BAN_S) -> None:
        """Refuse `consumer`'s jobs for `for_s`, saying `why` (it did, here); `on_ban` is told."""
        keep_latest(self._banned, consumer, (self._clock() + for_s, why), MAX_CHANNELS)
        if self.on_ban is not None:
            self.on_ban(consumer, for_s, why)

    async def journal(self, body: VoucherBody) -> None:
        """Write a held voucher to the ledger off the loop (a failure is logged; it stays held)."""
        await journal_settlement(self.ledger, body, self._limiter,
                                 f"voucher cumulative={body.cumulative}")

    # -- chain state ---------------------------------------------------------------

    def redeemed(self, consumer: str, cumulative: int) -> None:
        """The chain paid out up to `cumulative` on `consumer`'s channel."""
        channel = self.channels.get(consumer)
        if channel is not None and cumulative > channel.state.redeemed:
            s = channel.state
            channel.state = ChannelState(s.deposit, cumulative, s.reclaim_at)

    async def refresh(self) -> None:
        """Re-read the channels used within ACTIVE_S (or holding unredeemed vouchers)."""
        now = self._clock()
        for channel in list(self.channels.values()):
            if now - channel.used_at > ACTIVE_S and channel.owed == 0:
                continue
            try:
                state = await trio.to_thread.run_sync(
                    self.chain.channel, channel.consumer, self.address, limiter=self._limiter)
            except Exception as exc:
                log.warning("channel refresh failed consumer=%s error=%s", channel.consumer,
                            exc)
                return  # the chain is down: try all again next round
            channel.state, channel.read_at = state, self._clock()

    async def run(self, every_s: float = REFRESH_S,
                  task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Hold the book's first reads and refresh the channels in use every `every_s`,
        until cancelled (a task in the node's nursery)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                while True:
                    await trio.sleep(every_s)
                    await self.refresh()
            finally:
                self._nursery = None


async def settle_receipt(book: ChannelBook, hold: Hold, job_id: bytes, charged: int,
                         cumulative: int | None, voucher: bytes | None) -> bool:
    """Check and journal a Receipt's voucher; False (the job is unpaid, its payer refused
    for PAYER_BAN_S) when it does not check out."""
    try:
        body = book.take_voucher(hold, job_id, charged, cumulative, voucher)
    except BadVoucher as exc:
        log.warning("bad voucher: job unpaid job=%s payer=%s reason=%s", job_id.hex(),
                    hold.channel.consumer, exc)
        book.ban(hold.channel.consumer, "sent a bad voucher")
        return False
    finally:
        book.release(hold)
    await book.journal(body)
    return True
