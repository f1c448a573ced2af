"""The consumer's side of its payment channels (docs/settlement.md, "Node side").

`PayerBook` signs the vouchers a Receipt carries. Per provider account it keeps
the cumulative owed, journaled in the ledger (a "signed" voucher entry) BEFORE
the voucher leaves the node, so a restart never signs a lower cumulative than
one already sent (which the provider would refuse) nor reuses one. At first use
after a start, the cumulative is max(newest journaled, redeemed on chain).
Channel states are cached (one chain read at first sight of a provider, then
`run` refreshes them in the background) for the consumer's own credit check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import trio

from p2pinfer.errors import InsufficientCreditError
from p2pinfer.market.channel_entries import VoucherBody, channel_subject
from p2pinfer.market.ledger import Ledger
from p2pinfer.protocol import ConsumerJob
from p2pinfer.protocol.charges import max_charge
from p2pinfer.protocol.codec import Signed
from p2pinfer.protocol.messages import JobAccept, JobRequest
from p2pinfer.settle.account import ChainAccount, bind_signature, check_binding
from p2pinfer.settle.addresses import address_bytes, checksum_address
from p2pinfer.settle.channels import deposit_hint
from p2pinfer.settle.ports import ChainPort, ChannelState
from p2pinfer.settle.vouchers import sign_digest, voucher_digest

if TYPE_CHECKING:
    from trio_typing import TaskStatus

log = logging.getLogger(__name__)

REFRESH_S = 30.0
#: How long a cached channel state is trusted for the consumer's own credit check before
#: it is re-read on the job's path (the provider checks anyway).
STALE_S = 120.0


@dataclass(frozen=True)
class Voucher:
    """What a Receipt carries: the new cumulative (previous + this job's checked charge)
    and the consumer's signature over the voucher digest."""

    previous: int
    cumulative: int
    signature: bytes


class PayerBook:
    """Vouchers and channels of this consumer (`account`); see the module doc."""

    def __init__(
        self,
        chain: ChainPort,
        account: ChainAccount,
        ledger: Ledger | None,
        *,
        limiter: trio.CapacityLimiter | None = None,
        clock_s: Callable[[], float] = trio.current_time,
    ) -> None:
        self.chain = chain
        self.account = account
        self.ledger = ledger
        self._channels_raw = address_bytes(chain.channels_address)
        self._payer_raw = address_bytes(account.address)
        self._limiter = limiter or trio.CapacityLimiter(1)
        self._clock = clock_s
        self._cumulative: dict[str, int] = {}  # provider address -> all owed, journaled
        self._states: dict[str, tuple[ChannelState, float]] = {}
        self._locks: dict[str, trio.Lock] = {}

    # -- the request and the accept ------------------------------------------------

    def request_fields(self, signer_peer_id: str) -> tuple[bytes, bytes]:
        """(payer, payer_binding) for a JobRequest signed by `signer_peer_id`."""
        return self._payer_raw, bind_signature(self.account, signer_peer_id)

    def bind(self, request: JobRequest, signer_peer_id: str) -> JobRequest:
        """`request` with this payer and its binding over `signer_peer_id` (its signer)."""
        payer, binding = self.request_fields(signer_peer_id)
        return replace(request, payer=payer, payer_binding=binding)

    @staticmethod
    def payee_of(payee: bytes | None, binding: bytes | None, provider_peer_id: str) -> str:
        """The provider's checksummed account from its JobAccept; InsufficientCreditError
        naming the fault when it sent none or its binding is not over its PeerID."""
        if payee is None or binding is None:
            raise InsufficientCreditError("the provider accepted without a payee account: "
                                          "it does not take channel payments")
        address = checksum_address(payee)
        if not check_binding(address, provider_peer_id, binding):
            raise InsufficientCreditError(f"the provider's payee binding is not {address}'s "
                                          "signature over its PeerID")
        return address

    async def accept_payee(self, accept: Signed[JobAccept], provider_peer_id: str,
                           request: JobRequest) -> str:
        """The provider's account from its JobAccept, once its binding checks out and our
        channel to it covers the job's largest charge at the accepted price;
        InsufficientCreditError otherwise."""
        msg = accept.msg
        address = self.payee_of(msg.payee, msg.payee_binding, provider_peer_id)
        await self.check_cover(address, max_charge(request, msg.price_per_1k))
        return address

    # -- cumulative (journaled) ----------------------------------------------------

    async def cumulative(self, provider: str) -> int:
        """All this consumer owes `provider` so far (loaded at first use: max of the
        journal and what the chain redeemed)."""
        known = self._cumulative.get(provider)
        if known is not None:
            return known
        journaled = await trio.to_thread.run_sync(self._journaled, provider,
                                                  limiter=self._limiter)
        state = await self.channel(provider, fresh=True)
        value = max(journaled, state.redeemed, self._cumulative.get(provider, 0))
        self._cumulative[provider] = value
        return value

    def _journaled(self, provider: str) -> int:
        if self.ledger is None:
            return 0
        subject = channel_subject(self._channels_raw, self._payer_raw, address_bytes(provider))
        newest = 0
        for entry in self.ledger.settlement_entries(subject):
            body = entry.body
            if isinstance(body, VoucherBody) and body.role == "signed":
                newest = max(newest, body.cumulative)
        return newest

    async def sign_voucher(self, provider: str, job_id: bytes, charged: int) -> Voucher:
        """The voucher for a job whose checked charge is `charged`: cumulative = previous +
        charged, journaled before it is returned (LedgerError: not journaled, do not send)."""
        lock = self._locks.setdefault(provider, trio.Lock())
        async with lock:  # one provider's vouchers are numbered one after the other
            previous = await self.cumulative(provider)
            cumulative = previous + charged
            digest = voucher_digest(self.chain.channels_address, self.chain.chain_id,
                                    self.account.address, provider, cumulative)
            signature = sign_digest(self.account.private_key, digest)
            if self.ledger is not None:
                body = VoucherBody("signed", self._channels_raw, self._payer_raw,
                                   address_bytes(provider), job_id, charged, cumulative,
                                   signature)
                ledger = self.ledger
                await trio.to_thread.run_sync(ledger.record_settlement, body,
                                              limiter=self._limiter)
            self._cumulative[provider] = cumulative
            return Voucher(previous, cumulative, signature)

    # -- channels ------------------------------------------------------------------

    async def channel(self, provider: str, *, fresh: bool = False) -> ChannelState:
        """`provider`'s channel from this consumer: cached, re-read when older than STALE_S
        (or with `fresh`)."""
        cached = self._states.get(provider)
        if cached is not None and not fresh and self._clock() - cached[1] < STALE_S:
            return cached[0]
        state = await trio.to_thread.run_sync(self.chain.channel, self.account.address,
                                              provider, limiter=self._limiter)
        self._states[provider] = (state, self._clock())
        return state

    async def check_cover(self, provider: str, max_charge: int) -> None:
        """InsufficientCreditError (naming the deposit command) unless the channel to
        `provider` holds `max_charge` beyond what this consumer already owes it."""
        owed = await self.cumulative(provider)
        state = await self.channel(provider)
        free = state.deposit - max(owed, state.redeemed)
        if state.reclaim_at or free < max_charge:  # a deposit since the cache? read again
            state = await self.channel(provider, fresh=True)
            free = state.deposit - max(owed, state.redeemed)
        if state.reclaim_at or free < max_charge:
            raise InsufficientCreditError(
                f"{deposit_hint(provider)} (it holds {max(free, 0)} micro-credits beyond what "
                f"you owe; the job may charge up to {max_charge})")

    async def refresh(self) -> None:
        """Re-read every channel this consumer has used (off the job path)."""
        for provider in list(self._states):
            try:
                await self.channel(provider, fresh=True)
            except Exception as exc:
                log.warning("channel refresh failed provider=%s error=%s", provider, exc)
                return

    async def run(self, every_s: float = REFRESH_S,
                  task_status: TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh the channels in use every `every_s`, until cancelled."""
        task_status.started()
        while True:
            await trio.sleep(every_s)
            await self.refresh()




async def paid_receipt(payer: PayerBook | None, machine: ConsumerJob, payee: str | None) -> bytes:
    """The framed Receipt for `machine`'s checked result; with settlement (a payer and the
    provider's account), carrying the voucher for the checked charge, journaled first."""
    if payer is None or payee is None:
        return machine.receipt()
    voucher = await payer.sign_voucher(payee, machine.job_id, machine.checked_charge)
    return machine.receipt(previous=voucher.previous, cumulative=voucher.cumulative,
                           voucher=voucher.signature)
