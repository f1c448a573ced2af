"""`StakeBook`: the stake accounts hold on the chain, as this node last read it.

With settlement on, the `stake` number in an advert is a claim; what a consumer's
`min_stake` filter and the slash-vote collector read is `stake_of(account)` on the
Stake contract, for the account the peer bound to its peer id (an EIP-191 binding,
`settle.account.check_binding`). A binding that does not check out counts as stake 0.

Reads never block and never touch the chain: a miss answers 0 (or None) and queues
the account; `run` fetches queued and expired accounts in the background through
`trio.to_thread` (the `ChainPort` is blocking). Adverts come from anyone, so every
table is bounded: `max_accounts` cached stakes and checked bindings (least recently
used evicted) and `max_pending` queued look-ups (more are dropped and asked again on
the next read); an account is re-read only while something keeps asking for it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

import trio

from p2pinfer.errors import ChainError, ValidationError
from p2pinfer.settle.account import check_binding
from p2pinfer.settle.addresses import checksum_address
from p2pinfer.settle.ports import ChainPort

log = logging.getLogger(__name__)

#: How long a stake read from the chain is used before it is read again.
STAKE_TTL_S = 60.0
#: Accounts (and peer bindings) whose stake is cached: adverts come from Sybils too.
MAX_ACCOUNTS = 4096
#: Accounts waiting for a chain read; past this a read is dropped and asked again later.
MAX_PENDING = 256
#: Chain reads one background pass makes at most.
READS_PER_PASS = 64


PeerClaim = tuple[str, bytes | None, bytes | None]
"""(peer id, payee, binding) as an advert states them."""


@dataclass(frozen=True)
class StakeView:
    """One peer's stake as the admin views show it: what it declared, what the chain holds."""

    declared: int
    on_chain: int  # 0 until read, or when its binding does not check out
    payee: str | None
    binding_ok: bool
    read: bool  # the chain was read for this account


def normalize(address: bytes) -> str | None:
    """The checksummed text of a 20-byte wire address; None if it is not one."""
    try:
        return checksum_address(address)
    except ValidationError:
        return None


class StakeBook:
    """Cached `stake_of` per account and checked bindings per peer (module doc)."""

    def __init__(
        self, chain: ChainPort, *, ttl_s: float = STAKE_TTL_S, max_accounts: int = MAX_ACCOUNTS,
        max_pending: int = MAX_PENDING, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.chain = chain
        self._ttl, self._max, self._max_pending, self._clock = ttl_s, max_accounts, \
            max_pending, clock
        self._stakes: OrderedDict[str, tuple[int, float]] = OrderedDict()  # -> (stake, read at)
        self._bindings: OrderedDict[tuple[str, str, bytes], bool] = OrderedDict()
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._chain_lock = trio.CapacityLimiter(1)
        self._wake = trio.Event()
        self.reads = 0  # chain reads made (for tests and metrics)

    # -- reading (never blocks) ----------------------------------------------------------

    def bound_account(self, peer_id: str, payee: bytes | None,
                      binding: bytes | None) -> str | None:
        """`payee` (20 wire bytes), checksummed, if `binding` binds it to `peer_id`."""
        if payee is None or binding is None:
            return None
        address = normalize(payee)
        if address is None:
            return None
        key = (peer_id, address, bytes(binding))
        ok = self._bindings.get(key)
        if ok is None:
            ok = check_binding(address, peer_id, bytes(binding))
            self._bindings[key] = ok
            while len(self._bindings) > self._max:
                self._bindings.popitem(last=False)
        else:
            self._bindings.move_to_end(key)
        return address if ok else None

    def stake(self, address: str) -> int | None:
        """The account's locked stake as last read (None: never read); queues a read when
        unknown or older than the TTL."""
        held = self._stakes.get(address)
        if held is None or self._clock() - held[1] >= self._ttl:
            self.want(address)
        if held is None:
            return None
        self._stakes.move_to_end(address)
        return held[0]

    def stake_of_peer(self, peer_id: str, payee: bytes | None, binding: bytes | None) -> int:
        """What `peer_id`'s stake counts as: its bound account's stake on chain; 0 when the
        binding is missing or wrong, or the chain was not read yet."""
        address = self.bound_account(peer_id, payee, binding)
        if address is None:
            return 0
        return self.stake(address) or 0

    def view(self, peer_id: str, declared: int, payee: bytes | None,
             binding: bytes | None) -> StakeView:
        """Declared vs on chain, for `peers` and `/admin` (queues a read like `stake`)."""
        address = self.bound_account(peer_id, payee, binding)
        held = self.stake(address) if address is not None else None
        shown = normalize(payee) if payee is not None else None
        return StakeView(declared, held or 0, shown, address is not None, held is not None)

    def want(self, address: str) -> None:
        """Queue a chain read of `address` (dropped when the queue is full)."""
        if address in self._pending:
            return
        if len(self._pending) >= self._max_pending:
            return
        self._pending[address] = None
        self._wake.set()

    def put(self, address: str, stake: int) -> None:
        """Record a stake read from the chain now."""
        self._stakes[address] = (stake, self._clock())
        self._stakes.move_to_end(address)
        while len(self._stakes) > self._max:
            self._stakes.popitem(last=False)

    async def read_unread(self, claims: Iterable[PeerClaim], timeout_s: float) -> None:
        """Read now, for at most `timeout_s`, the bound accounts of `claims` whose stake was
        never read (a consumer's `min_stake` filter asks this before it drops anyone:
        a short-lived session has not run its background reader yet). Bounded by
        READS_PER_PASS accounts; a failed or timed-out read leaves the stake unknown (0)."""
        unread: list[str] = []
        for peer_id, payee, binding in claims:
            address = self.bound_account(peer_id, payee, binding)
            if address is not None and address not in self._stakes and address not in unread:
                unread.append(address)
        with trio.move_on_after(timeout_s):
            for address in unread[:READS_PER_PASS]:
                # Abandoned at the timeout: the consumer must not wait on a slow RPC (the
                # thread finishes on its own; its answer is dropped).
                if await self._read(address, abandon_on_cancel=True):
                    self._pending.pop(address, None)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def __len__(self) -> int:
        return len(self._stakes)

    # -- the background reader -----------------------------------------------------------

    async def refresh(self, limit: int = READS_PER_PASS) -> int:
        """Read up to `limit` queued accounts from the chain; how many were read."""
        done = 0
        while self._pending and done < limit:
            address, _ = self._pending.popitem(last=False)
            done += await self._read(address)
        return done

    async def _read(self, address: str, *, abandon_on_cancel: bool = False) -> bool:
        """Read `address`'s stake from the chain (in a worker thread) and record it; False
        when the chain call failed (logged; the stake stays as it was)."""
        try:
            # The ignore: trio_typing's stale stubs predate `abandon_on_cancel` (trio 0.23).
            amount = await trio.to_thread.run_sync(  # type: ignore[call-arg]
                partial(self.chain.stake_of, address), limiter=self._chain_lock,
                abandon_on_cancel=abandon_on_cancel)
        except ChainError as exc:
            log.warning("stake not read account=%s error=%s", address, exc)
            return False
        self.reads += 1
        self.put(address, int(amount))
        return True

    async def run(self, *, interval_s: float = 1.0,
                  watch: Callable[[], Iterable[PeerClaim]] | None = None) -> None:
        """Read queued accounts until cancelled (at most one pass per `interval_s`). With
        `watch` (the catalog's providers), their accounts are queued every pass too, so a
        provider's stake is known before a job asks for it."""
        while True:
            with trio.move_on_after(interval_s if watch is not None else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()
            for peer_id, payee, binding in watch() if watch is not None else ():
                self.stake_of_peer(peer_id, payee, binding)
            await self.refresh()
            if self._pending:
                self._wake.set()
            await trio.sleep(interval_s)
