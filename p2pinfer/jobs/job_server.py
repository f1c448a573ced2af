"""The provider's job server: `/p2pinfer/job/1.0.0` streams in, signed answers out.

One stream carries one job (docs/node.md has the whole flow). The protocol
checks (signature, time window, binding to this provider, limits) are
`ProviderJob`'s; this module adds the provider's decisions (known model, price,
capacity), then admits the request into the node-wide replay window (per-peer
shares, see protocol.validation.ReplayWindow), runs the backend, and moves bytes:

- the request is refused with a reject code, or waits for one of the model's
  slots (bounded queue; beyond it `busy` with retry_after_ms), then accepted (the
  engine starts while the Accept is being written);
- tokens go out as Chunks while the backend produces them: the first at once,
  and while a write is in flight the next tokens gather into one Chunk, so a
  slow link never holds generation back and an idle one never holds a token;
- the consumer closing or resetting the stream cancels the job: the backend's
  context is left, which stops generation;
- the signed JobResult ends the stream; the consumer's Receipt is recorded as
  a charge in this node's ledger (at most once per job: the ledger refuses a
  second charge for the same job id).
"""

from __future__ import annotations

import logging
import os
import random
from collections import deque
from collections.abc import Callable

import trio

from p2pinfer.backends.base import Backend, ModelInfo
from p2pinfer.errors import (
    BackendError,
    BadRequestError,
    ModelNotFound,
    NetworkError,
    ProtocolError,
)
from p2pinfer.jobs.admission import MIN_JOBS_PER_KEY, Busy, ConsumerGate, ModelSlots, Refused
from p2pinfer.jobs.generation import Outbox, collapsing_nursery, run_generation, stopped
from p2pinfer.jobs.job_move import MOVE_PROTOCOL_ID, MoveDesk
from p2pinfer.jobs.job_types import JobRecord, JobServerConfig
from p2pinfer.jobs.logprobs import batches as logprob_batches
from p2pinfer.jobs.served_job import JobEndings, ServedJob
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.pricing import price_for
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.adverts import Catalog
from p2pinfer.net.config import wall_clock_ms
from p2pinfer.net.streams import NetStream, StreamRegistry
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    ProtocolViolation,
    ProviderJob,
    ProviderState,
    ReplayWindow,
    RequestReceived,
)
from p2pinfer.protocol.charges import agreed_price, max_charge
from p2pinfer.protocol.codec import Signer
from p2pinfer.protocol.messages import MAX_CHUNK_CHARS, JobRequest
from p2pinfer.protocol.validation import CLOCK_SKEW_MS
from p2pinfer.protocol.wire_types import RejectCode
from p2pinfer.settle.channels import ChannelBook, ChannelRefused

log = logging.getLogger(__name__)

__all__ = ["JobRecord", "JobServer", "JobServerConfig"]

#: How long a price we put in an advert is honoured as a consumer's quote (a consumer
#: chose us at that price; adverts are republished every 30 s and live minutes).
QUOTE_MEMORY_MS = 10 * 60_000 + CLOCK_SKEW_MS
MAX_QUOTES = 64  # remembered advertised prices per model (bounded memory)
#: A preempted free job stops generating at once and gets this long to send what is
#: pending and its reject before its stream is cut (a consumer reading slowly).
PREEMPT_GRACE_S = 2.0


class JobServer(JobEndings):
    """Serves jobs for the models in `models` (name -> what the backend reported)."""

    def __init__(
        self,
        identity: Signer,
        backend: Backend,
        models: dict[str, ModelInfo],
        *,
        config: JobServerConfig = JobServerConfig(),
        catalog: Catalog | None = None,
        ledger: Ledger | None = None,
        metrics: NodeMetrics | None = None,
        replay: ReplayWindow | None = None,
        clock_ms: Callable[[], int] = wall_clock_ms,
        rng: random.Random | None = None,
        channels: ChannelBook | None = None,
    ) -> None:
        self._identity = identity
        self.channels = channels  # settlement on: jobs are paid through payment channels
        self._backend = backend
        self.models = dict(models)
        self.config = config
        self._catalog = catalog
        self._ledger = ledger
        self._metrics = metrics or NodeMetrics()
        self._replay = replay if replay is not None else ReplayWindow()  # empty is falsy
        self._clock = clock_ms
        self._rng = rng or random.Random()
        self._slots = {
            name: ModelSlots(config.max_concurrency, config.queue) for name in self.models
        }
        self._ledger_limiter = trio.CapacityLimiter(1)
        self.gate = ConsumerGate(max(MIN_JOBS_PER_KEY, config.max_concurrency),
                                 free_per_minute=config.free_jobs_per_minute)
        if ledger is not None:  # the keys that paid us before a restart pay still
            self.gate.remember_payers(ledger, identity.public_key)
        self._free_running: dict[str, list[ServedJob]] = {name: [] for name in self.models}
        self._quotes: dict[str, deque[tuple[int, int]]] = {
            name: deque(maxlen=MAX_QUOTES) for name in self.models}
        self.records: deque[JobRecord] = deque(maxlen=500)
        self.tokens_generated = 0
        self.moves = MoveDesk(self._metrics)  # jobs moved off a relay mid-answer (jobs/job_move.py)
        # Called with the PeerID of each consumer whose receipt paid a job (NetHost.value_peer).
        self.paid_hooks: list[Callable[[str], None]] = []
        self.relayed_hooks: list[Callable[[str, str | None], None]] = []
        if config.fault is not None:
            log.warning("FAULT INJECTION ON: this provider misbehaves on purpose fault=%s",
                        config.fault)

    def install(self, register: StreamRegistry) -> None:
        """Register `serve` as the job protocol's handler (`NetHost.set_stream_handler`),
        and the move desk's for moving a job onto a direct connection. A request sent
        with the protocol proposal gets the echo with its Accept or Reject: `serve`
        answers at once, or `flush`es before it waits (a queue slot, a payment channel)."""
        register(JOB_PROTOCOL_ID, self.serve, echo_with_answer=True)
        register(MOVE_PROTOCOL_ID, self.moves.serve)

    # -- prices and load ---------------------------------------------------------

    def price(self, model: str) -> int:
        """This provider's price per 1k tokens for `model` now (micro-credits)."""
        if self.config.price_per_1k is not None:
            return self.config.price_per_1k
        others = self._catalog.supply(model) if self._catalog is not None else 0
        slots = self._slots.get(model)
        utilisation = slots.utilisation_pm if slots is not None else 0
        return price_for(utilisation, 1 + others, self.config.pricing)

    def advertised_price(self, model: str) -> int:
        """The price to put in an advert now; remembered, so a consumer who chose us at it
        is served at it (see `quote_floor`)."""
        price = self.price(model)
        quotes = self._quotes.get(model)
        if quotes is not None:
            quotes.append((self._clock(), price))
        return price

    def quote_floor(self, model: str) -> int:
        """The lowest price a request may quote: our price now, or a lower one we
        advertised within QUOTE_MEMORY_MS."""
        floor = self.price(model)
        oldest = self._clock() - QUOTE_MEMORY_MS
        for at, price in self._quotes.get(model, ()):
            if at >= oldest:
                floor = min(floor, price)
        return floor

    @property
    def replay_ids(self) -> int:
        """Job ids the replay window holds now."""
        return len(self._replay)

    def active_jobs(self, model: str | None = None) -> int:
        """Jobs holding a slot now (for one model, or all)."""
        slots = [self._slots[model]] if model is not None else list(self._slots.values())
        return sum(s.active for s in slots)

    # -- one stream --------------------------------------------------------------

    async def serve(self, stream: NetStream) -> None:
        """Serve the job on `stream` to its end; the caller closes the stream after."""
        machine = ProviderJob(self._identity, self._replay, limits=self.config.limits)
        job = ServedJob(machine, stream)
        event = await self._read_request(job)
        if event is None:
            return
        if isinstance(event, ProtocolViolation):
            log.info("job refused code=%s peer=%s reason=%s", event.code,
                     stream.remote_peer_id, event.error)
            await self._reject(job, event.code, str(event.error))  # type: ignore[arg-type]
            return
        request = event.request.msg
        started = trio.current_time()
        with self.moves.movable(job, request.job_id):
            async with collapsing_nursery() as nursery:
                nursery.start_soon(job.watch, self._clock)
                try:
                    await self._run(job, request, started)
                finally:
                    nursery.cancel_scope.cancel()

    async def _read_request(self, job: ServedJob) -> RequestReceived | ProtocolViolation | None:
        with trio.move_on_after(self.config.request_timeout_s):
            while job.machine.state is ProviderState.AWAIT_REQUEST:
                data = await job.stream.read_some(timeout_s=None)
                events = job.machine.receive_eof() if not data else job.machine.receive_data(
                    data, self._clock())
                if events:
                    first = events[0]
                    # Anything else (PeerClosed): the consumer left before asking.
                    return first if isinstance(first, RequestReceived | ProtocolViolation) else None
        return None

    async def _run(self, job: ServedJob, request: JobRequest, started: float) -> None:
        machine = job.machine
        info = self._served(request)
        if info is None:
            await self._refuse(job, request, "unknown_model",
                               f"this provider does not serve {request.model!r}"
                               + (f" with digest {request.digest}" if request.digest else ""))
            return
        floor, quote = self.quote_floor(info.name), agreed_price(request)
        if quote < floor:
            await self._refuse(job, request, "price_too_low",
                               f"the price of {info.name} is {floor} per 1k tokens; "
                               f"the request allows {quote}")
            return
        slots = self._slots[info.name]
        try:
            slots.check()
        except Busy as exc:
            await self._refuse(job, request, "busy", str(exc), exc.retry_after_ms)
            return
        assert machine.request is not None
        try:
            if self.channels is not None:  # a payer whose channel covers the job, or none
                payer = self.channels.payer_of(request.payer, request.payer_binding,
                                               machine.request.signer_peer_id)
                await self._flush(job)  # the echo, before a wait on the chain
                job.hold = await self.channels.admit(payer, max_charge(request),
                                                     job.stream.asker)
            idle = slots.active < slots.concurrency and slots.waiting == 0
            machine.check_replay(self._clock())
            job.ticket = self.gate.admit(machine.request.signer, self._clock(), idle=idle,
                                         covered=job.hold is not None)
        except ProtocolError as exc:
            await self._refuse(job, request, exc.reject_code, str(exc))  # type: ignore[arg-type]
        except (Refused, ChannelRefused) as exc:
            await self._refuse(job, request, exc.code, str(exc),  # type: ignore[arg-type]
                               exc.retry_after_ms)
        else:
            try:
                await self._serve_admitted(job, request, info, started, slots)
            finally:
                self.gate.release(job.ticket, self._clock())
        if job.hold is not None and self.channels is not None:  # unpaid: its payer refused
            self.channels.release(job.hold, unpaid=job.ticket is not None and job.ticket.unpaid)

    async def _serve_admitted(
        self, job: ServedJob, request: JobRequest, info: ModelInfo, started: float,
        slots: ModelSlots,
    ) -> None:
        machine, ticket = job.machine, job.ticket
        assert ticket is not None
        try:  # last of the cheap checks: only a request it would serve takes replay room
            machine.admit(self._clock(), peer=str(job.stream.remote_peer_id))
        except ProtocolError as exc:
            self.gate.refund(ticket)
            await self._refuse(job, request, exc.reject_code, str(exc))  # type: ignore[arg-type]
            return
        free_running = self._free_running[info.name]
        if not ticket.free and slots.active >= slots.concurrency and free_running:
            self._preempt(free_running.pop(0), request)
        with job.work:
            try:
                if slots.active >= slots.concurrency:
                    await self._flush(job)  # the echo, before the wait for a slot
                async with slots.slot():
                    if self._clock() > request.expires_at:
                        await self._refuse(job, request, "expired",
                                           "the request expired in the queue")
                        return
                    if ticket.free:
                        free_running.append(job)
                    try:
                        price = min(self.price(info.name), agreed_price(request))
                        accept = machine.accept(price, **(
                            self.channels.accept_fields() if self.channels else {}))
                        await self._generate(job, request, info, started, accept)
                    finally:
                        if job in free_running:
                            free_running.remove(job)
            except NetworkError as exc:  # the consumer reset the stream or stopped reading
                log.info("job stream lost job=%s error=%s", request.job_id.hex(), exc)
                job.peer_gone = True
        if job.preempted and machine.result is None:
            self.gate.refund(ticket)
            await self._reject(job, "busy", "preempted by a paying job; try another provider",
                               slots.retry_after_ms())
        await self._count_leaving(job, ticket)  # unpaid until its receipt, if at all
        if machine.state is ProviderState.AWAIT_RECEIPT:
            with trio.move_on_after(self.config.receipt_timeout_s):
                await job.receipt.wait()
        if machine.state is ProviderState.DONE and await self._voucher_paid(job):
            self.gate.paid(ticket, self._clock())
            for hook in self.paid_hooks:
                hook(str(job.stream.remote_peer_id))
        await self._conclude(job, request)

    def _preempt(self, victim: ServedJob, request: JobRequest) -> None:
        """Give a free job's slot to the paying `request`: the free job ends `busy`."""
        log.info("free job preempted job=%s for job=%s", victim.machine.job_id.hex(),
                 request.job_id.hex())
        victim.preempted = True
        victim.generation.cancel()
        victim.work.deadline = min(victim.work.deadline, trio.current_time() + PREEMPT_GRACE_S)

    def _served(self, request: JobRequest) -> ModelInfo | None:
        info = self.models.get(request.model)
        if info is None or (request.digest is not None and request.digest != info.digest):
            return None
        return info

    async def _generate(self, job: ServedJob, request: JobRequest, info: ModelInfo,
                        started: float, accept: bytes) -> None:
        """Run the engine, streaming its output after `accept` (written as it starts)."""
        outbox = Outbox()
        fault = self.config.fault
        try:
            async with collapsing_nursery() as nursery:
                nursery.start_soon(self._write_loop, job, outbox, started, accept)
                with job.generation:
                    done = await run_generation(
                        self._backend, request, info, outbox, fault=fault, rng=self._rng
                    )
        except BackendError as exc:
            code: RejectCode = "unknown_model" if isinstance(exc, ModelNotFound) else (
                "bad_request" if isinstance(exc, BadRequestError) else "internal_error")
            log.warning("job failed job=%s model=%s error=%s", request.job_id.hex(),
                        info.name, exc)
            if code != "bad_request" and job.ticket is not None:
                self.gate.refund(job.ticket)  # our failure: a free key keeps its free job
            await self._reject(job, code, f"the engine failed: {exc}")
            return
        self.tokens_generated += outbox.tokens
        if job.generation.cancelled_caught and job.machine.cancel_asked:
            done = stopped(request, outbox.tokens)  # what was sent: paid for (attack 66)
        elif job.generation.cancelled_caught:
            return
        if not await job.streaming():
            return
        raw = job.machine.finish(
            prompt_tokens=done.prompt_tokens,
            completion_tokens=min(done.completion_tokens, request.params.max_tokens),
            finish_reason=done.finish_reason,
            now_ms=self._clock(),
            digest=info.digest,
            prompt_ms=done.prompt_ms,
            generation_ms=done.generation_ms,
            total_ms=int((trio.current_time() - started) * 1000),
        )
        await self._write(job, raw)

    async def _write_loop(self, job: ServedJob, outbox: Outbox, started: float,
                          accept: bytes) -> None:
        """Send `accept`, then all output pending as one Chunk, again and again until the
        generation is done (coalescing only while a write is in flight)."""
        crash_after = self.config.fault.count if (
            self.config.fault is not None and self.config.fault.kind == "crash-after") else 0
        with trio.CancelScope(shield=True):  # an engine failing at once: whole, then Reject
            await self._write(job, accept)  # (bounded by write_timeout_s)
        while True:
            text, tokens = await outbox.take()
            probs = logprob_batches(outbox.take_logprobs())
            if tokens == 0 and not text:
                return  # closed and drained
            if not await job.streaming():
                return
            for start in range(0, len(text), MAX_CHUNK_CHARS):
                first = probs.pop(0) if probs else None
                await self._write(job, job.machine.chunk(text[start:start + MAX_CHUNK_CHARS],
                                                         first))
            for rest in probs:  # more log probabilities than one chunk carries
                await self._write(job, job.machine.chunk("", rest))
            if job.tokens_sent == 0:
                self._metrics.ttft_seconds.labels("provider").observe(
                    trio.current_time() - started)
            job.tokens_sent += tokens
            outbox.first_sent.set()
            if crash_after and job.tokens_sent >= crash_after:
                log.critical("FAULT crash-after=%d: exiting now, mid-job", crash_after)
                logging.shutdown()
                os._exit(17)

    async def _write(self, job: ServedJob, data: bytes) -> None:
        await job.stream.write(data, timeout_s=self.config.write_timeout_s)

    async def _flush(self, job: ServedJob) -> None:
        """The protocol echo, if it still waits for our first write (`install`)."""
        await job.stream.flush(timeout_s=self.config.write_timeout_s)
