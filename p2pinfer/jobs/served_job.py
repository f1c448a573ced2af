"""One job a provider serves, and how it ends.

`ServedJob` is the state a job's serving task and its stream watcher share;
`JobEndings` (mixed into `JobServer`, which owns the state it uses) settles how a
job ended: the charge recorded in the ledger once the consumer's receipt (and,
with settlement, its voucher) checks out, the job's metrics and record, or the
reject sent to the consumer.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import trio

from p2pinfer.errors import DuplicateEntryError, LedgerError
from p2pinfer.jobs.admission import ConsumerGate, Ticket
from p2pinfer.jobs.job_types import JobRecord, JobServerConfig
from p2pinfer.market.ledger import ChargeInput, Ledger
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import (
    CancelAsked,
    PeerClosed,
    ProtocolViolation,
    ProviderJob,
    ProviderState,
    ReceiptReceived,
)
from p2pinfer.protocol.codec import Signer
from p2pinfer.protocol.messages import JobRequest
from p2pinfer.protocol.wire_types import RejectCode
from p2pinfer.settle.channels import ChannelBook, Hold, settle_receipt

log = logging.getLogger(__name__)


class ServedJob:
    """One job's shared state between the serving task and its stream watcher."""

    def __init__(self, machine: ProviderJob, stream: NetStream) -> None:
        self.machine = machine
        self.stream = stream
        self.receipt = trio.Event()
        self.peer_gone = False
        self.violation: ProtocolViolation | None = None
        self.work = trio.CancelScope()
        self.generation = trio.CancelScope()  # cancelled to stop the engine alone
        self.tokens_sent = 0
        self.refused = False
        self.ticket: Ticket | None = None  # the consumer key's admission
        self.preempted = False  # a free job cancelled to give its slot to a paying one
        self.hold: Hold | None = None  # settlement: its reservation on the payer's channel
        self.unpaid = False  # settlement: its receipt's voucher did not check out
        #: The relay between us ended the job, not the consumer (`JobEndings._count_leaving`).
        self.relay_lost = False

    @property
    def left_unpaid(self) -> bool:
        """The consumer left a job we accepted (or broke the protocol) without a result to
        pay and without asking to stop: as a result it did not pay for, whether output
        went out (attack 66) or the engine was still reading the prompt (attack 67)."""
        return (self.machine.price_per_1k is not None and self.machine.result is None
                and not self.preempted and not self.machine.cancel_asked
                and (self.peer_gone or self.violation is not None) and not self.relay_lost)

    async def streaming(self) -> bool:
        """Whether the job may still send output. When the watcher ended it (the consumer
        left or broke the protocol) the work scope is cancelled: this checkpoint raises."""
        if self.machine.state is ProviderState.STREAMING:
            return True
        await trio.lowlevel.checkpoint()
        return False

    async def watch(self, clock_ms: Callable[[], int]) -> None:
        """Read what the consumer sends while the job runs: its receipt, or its going away."""
        ended = (ProviderState.DONE, ProviderState.CLOSED, ProviderState.ERROR)
        while self.machine.state not in ended:
            data = await self.stream.read_some(timeout_s=None)
            if self.machine.state in ended:
                return
            events = self.machine.receive_eof() if not data else self.machine.receive_data(
                data, clock_ms())
            for ev in events:
                if isinstance(ev, ReceiptReceived):
                    self.receipt.set()
                elif isinstance(ev, CancelAsked):  # stop; the output so far is paid for
                    self.generation.cancel()
                elif isinstance(ev, PeerClosed):
                    self.peer_gone = True
                    self.work.cancel()
                elif isinstance(ev, ProtocolViolation):
                    self.violation = ev
                    self.work.cancel()


#: How long a job whose relayed connection dropped waits for our connection to that relay
#: to close too, before it takes the consumer as gone on its own (attack 69).
RELAY_GONE_WAIT_S = 1.0


class JobEndings:
    """How a served job ends; the state is set up by `JobServer.__init__`."""

    config: JobServerConfig
    channels: ChannelBook | None
    records: deque[JobRecord]
    _identity: Signer
    _ledger: Ledger | None
    _ledger_limiter: trio.CapacityLimiter
    _metrics: NodeMetrics
    gate: ConsumerGate
    #: Told how each accepted relayed job ended: (the relay's PeerID, the consumer's
    #: connection PeerID when the relayed connection went under the job, None when a
    #: result went out): `RelayChecker.job_ended` (attack 70).
    relayed_hooks: list[Callable[[str, str | None], None]]

    async def _count_leaving(self, job: ServedJob, ticket: Ticket) -> None:
        """A result sent, or an accepted job left unpaid (attacks 66, 67), counts against
        the key until its receipt. A job the relay between us ended does not (our own
        connection to that relay closed with it, or the circuit reached the duration or
        the byte budget the relay granted: the consumer did not leave; attacks 69, 71),
        and a free job is the key's again. A relayed job that ended either way is told to
        `relayed_hooks`."""
        end = None
        if job.peer_gone and job.violation is None and job.machine.result is None:
            end = await job.stream.relayed_end(RELAY_GONE_WAIT_S)
            job.relay_lost = end is not None and end.by_relay
        if job.machine.result is not None or job.left_unpaid:
            self.gate.result_sent(ticket)
        elif job.relay_lost and not job.preempted:
            self.gate.refund(ticket)
        if job.machine.result is not None:
            self._tell_relayed(job.stream.relay, None)
        elif end is not None and end.connection_gone and job.left_unpaid:
            self._tell_relayed(end.relay, job.stream.remote_peer_id)

    def _tell_relayed(self, relay: str | None, cut_under: str | None) -> None:
        if relay is not None:
            for hook in self.relayed_hooks:
                hook(relay, cut_under)

    async def _conclude(self, job: ServedJob, request: JobRequest) -> None:
        machine = job.machine
        if job.refused:
            return
        result = machine.result
        tokens = result.msg.completion_tokens if result is not None else job.tokens_sent
        if machine.state is ProviderState.DONE and result is not None and not job.unpaid:
            await self._record_charge(job, request)
            stopped = result.msg.finish_reason == "cancelled"  # asked to stop, and paid
            self._finish(job, request, "cancelled" if stopped else "completed", tokens,
                         result.msg.charged)
        elif job.violation is not None:
            log.info("job aborted job=%s code=%s reason=%s", request.job_id.hex(),
                     job.violation.code, job.violation.error)
            if result is None:
                await self._reject(job, job.violation.code,  # type: ignore[arg-type]
                                   str(job.violation.error))
            self._finish(job, request, "failed", tokens, 0)
        elif result is not None:
            log.warning("job unpaid: no receipt or a bad voucher job=%s model=%s",
                        request.job_id.hex(), request.model)
            self._finish(job, request, "unpaid", tokens, 0)
        elif job.preempted:
            self._finish(job, request, "preempted", job.tokens_sent, 0)
        elif job.peer_gone or job.work.cancelled_caught:
            log.info("job cancelled job=%s model=%s completion_tokens=%d max_tokens=%d "
                     "reason=%s", request.job_id.hex(), request.model, job.tokens_sent,
                     request.params.max_tokens,
                     "relay-gone" if job.relay_lost else "consumer-closed")
            self._finish(job, request, "cancelled", job.tokens_sent, 0)
        elif machine.state is ProviderState.CLOSED:
            self._finish(job, request, "failed", tokens, 0)

    async def _voucher_paid(self, job: ServedJob) -> bool:
        """With settlement, whether the receipt's voucher checks out (settle.channels)."""
        receipt, result = job.machine.receipt, job.machine.result
        if self.channels is None or job.hold is None:
            return True
        assert receipt is not None and result is not None
        job.unpaid = not await settle_receipt(
            self.channels, job.hold, receipt.msg.job_id, result.msg.charged,
            receipt.msg.cumulative, receipt.msg.voucher)
        return not job.unpaid

    async def _record_charge(self, job: ServedJob, request: JobRequest) -> None:
        machine = job.machine
        assert machine.result is not None and machine.receipt is not None
        assert machine.request is not None
        result = machine.result.msg
        if self._ledger is None:
            return
        charge = ChargeInput(
            job_id=request.job_id,
            model=request.model,
            provider=self._identity.public_key,
            consumer=machine.request.signer,
            tokens=result.prompt_tokens + result.completion_tokens,
            amount=result.charged,
            result=machine.result.raw,
            receipt=machine.receipt.raw,
        )
        ledger = self._ledger
        try:
            await trio.to_thread.run_sync(
                lambda: ledger.record_charge(charge, self.config.preset),
                limiter=self._ledger_limiter,
            )
        except DuplicateEntryError:
            log.warning("charge already recorded job=%s", request.job_id.hex())
        except LedgerError as exc:
            log.error("charge not recorded job=%s error=%s", request.job_id.hex(), exc)

    def _finish(
        self, job: ServedJob, request: JobRequest, outcome: str, tokens: int, charged: int
    ) -> None:
        m = self._metrics
        m.jobs.labels("provider", outcome.split(":")[0]).inc()
        result = job.machine.result
        if result is not None:
            m.tokens.labels("provider", "prompt").inc(result.msg.prompt_tokens)
        m.tokens.labels("provider", "completion").inc(tokens)
        if charged:
            m.charged.labels("provider").inc(charged)
        if outcome == "completed":
            log.info("job done job=%s model=%s completion_tokens=%d charged=%d",
                     request.job_id.hex(), request.model, tokens, charged)
        signer = job.machine.request.signer_peer_id if job.machine.request else ""
        self.records.append(JobRecord(request.job_id.hex(), request.model, signer, outcome,
                                      tokens, request.params.max_tokens, charged,
                                      str(job.stream.remote_peer_id),
                                      job.stream.path))

    async def _refuse(
        self, job: ServedJob, request: JobRequest, code: RejectCode, message: str,
        retry_after_ms: int | None = None,
    ) -> None:
        log.info("job refused job=%s code=%s reason=%s", request.job_id.hex(), code, message)
        job.refused = True
        await self._reject(job, code, message, retry_after_ms)
        self._finish(job, request, f"rejected:{code}", 0, 0)

    async def _reject(
        self, job: ServedJob, code: RejectCode, message: str, retry_after_ms: int | None = None
    ) -> None:
        try:
            data = job.machine.reject(code, message, retry_after_ms)
        except Exception as exc:  # already rejected, or a state that allows no reject
            log.debug("no reject sent code=%s error=%r", code, exc)
            return
        with trio.move_on_after(self.config.write_timeout_s):
            try:
                await job.stream.write(data)
            except Exception as exc:
                log.debug("reject not delivered code=%s error=%r", code, exc)
