"""One job as the consumer runs it: attempts on providers, one after another.

`NetJob` is created by `JobClient.job(...)`. Iterating it drives the protocol
(pull-based: nothing runs in the background): each attempt is a fresh signed
request (new job id) on a new stream to the next provider; a reject, a broken
message, a closed stream or a timeout ends the attempt unpaid and the next
provider gets the whole job again. The first checked result is receipted and
charged, once. Only providers that answered use up one of `max_attempts`;
ones skipped (breaker open) or not reached (dial failed) are bounded apart, by
`max_unanswered` and the time spent dialling them (`unanswered_budget_s`), so
fake providers cannot use up a job's attempts.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

import trio

from p2pinfer.errors import (
    AllProvidersFailedError,
    InsufficientCreditError,
    NetworkError,
    NoProvidersError,
    OverchargeError,
    P2PInferError,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_attempt import (
    NEUTRAL_CODES,
    Attempt,
    AttemptFailed,
    BusyBackoff,
    send_receipt,
    take_payee,
)
from p2pinfer.jobs.job_move import maybe_move
from p2pinfer.jobs.job_stop import STOP_WAIT_S, stop_and_pay
from p2pinfer.jobs.job_types import Candidate, FailedAttempt, JobOutcome, TextDelta
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    Accepted,
    ChatTurn,
    ChunkReceived,
    ConsumerJob,
    ConsumerState,
    Failure,
    JobParams,
    JobRequest,
    Rejected,
    ResultReceived,
)
from p2pinfer.protocol.messages import TokenLogprobs

if TYPE_CHECKING:
    from p2pinfer.jobs.runner import JobRunner

log = logging.getLogger(__name__)

class NetJob:
    """Iterate for `TextDelta`s; afterwards `outcome` holds the receipted result."""

    def __init__(
        self,
        client: JobRunner,
        model: str,
        messages: Sequence[ChatTurn],
        prompt: str | None,
        params: JobParams,
        *,
        inputs: tuple[str, ...] | None = None,
    ) -> None:
        self._client = client
        self.model = model
        self._messages = tuple(messages)
        self._prompt = prompt
        self._inputs = inputs  # an embed job: only providers that embed will do
        self.params = params
        self.outcome: JobOutcome | None = None
        self.failovers: list[FailedAttempt] = []
        self._pending: deque[TextDelta] = deque()
        self._delivered = ""
        self._candidates: deque[Candidate] | None = None
        self._tried: set[str] = set()
        self._answered = 0  # providers that opened the job stream: the attempt budget
        self._unanswered = 0  # skipped (breaker open) or not reached
        self._unanswered_s = 0.0  # time spent dialling providers that were not reached
        self._dht_consulted = False
        self._attempt: Attempt | None = None
        self._opening: Attempt | None = None  # its stream opening (`_open`), request sent
        # While every provider tried in a round says "busy", wait and try them again.
        self._busy = BusyBackoff()
        #: The price per 1k tokens the serving provider accepted the job at (its JobAccept).
        self.price_per_1k: int | None = None
        self._started = trio.current_time()
        self._first_delta: float | None = None

    @property
    def provider(self) -> str | None:
        """The provider of the attempt in progress (or of the outcome)."""
        if self.outcome is not None:
            return self.outcome.provider
        return self._attempt.candidate.peer_id if self._attempt is not None else None

    @property
    def path(self) -> str | None:
        """`direct`, `relayed` or `moved` (off the relay mid-job): the connection of the
        attempt in progress (or of the outcome)."""
        if self.outcome is not None:
            return self.outcome.path
        return self._attempt.path if self._attempt is not None else None

    @property
    def job_id(self) -> str | None:
        """The job id (hex) of the attempt in progress (or of the outcome)."""
        if self.outcome is not None:
            return self.outcome.job_id
        return self._attempt.machine.job_id.hex() if self._attempt is not None else None

    def __aiter__(self) -> NetJob:
        return self

    async def __anext__(self) -> TextDelta:
        delta = await self.next_delta()
        if delta is None:
            raise StopAsyncIteration
        return delta

    async def next_delta(self) -> TextDelta | None:
        """The next piece of the answer; None once the job is complete. Raises
        NoProvidersError, AllProvidersFailedError or InsufficientCreditError."""
        while not self._pending:
            if self.outcome is not None:
                return None
            await self._step()
        if self._first_delta is None:
            self._first_delta = trio.current_time()
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Abandon the attempt in progress: ask its provider to stop and pay for what it
        sent (jobs/job_stop.py), or, where that cannot be settled, reset the stream."""
        attempt, self._attempt = self._attempt, None
        opening, self._opening = self._opening, None  # its request out, the answer not read
        attempt = attempt or opening
        if attempt is None:
            return
        with trio.CancelScope(shield=True):
            paid = False
            with trio.move_on_after(STOP_WAIT_S):
                paid = await stop_and_pay(self._client, self.model, attempt,
                                          negotiated=opening is None)
            if not paid:
                with trio.move_on_after(2):
                    await attempt.stream.reset()

    # -- attempts ------------------------------------------------------------------

    async def _step(self) -> None:
        if self._attempt is None:
            self._attempt = await self._start_next()
            return
        attempt = self._attempt
        try:
            await self._read(attempt)
        except AttemptFailed as failure:
            await self._fail(attempt, failure)
        except NetworkError as exc:
            await self._fail(attempt, AttemptFailed(str(exc)))

    async def _start_next(self) -> Attempt:
        client = self._client
        while True:
            candidate = await self._next_candidate()
            if candidate is None:
                if await self._busy.wait(self._client.config.busy_wait_s, self.model):
                    self._tried.clear()  # a new round over every provider
                    self._candidates, self._answered, self._dht_consulted = None, 0, False
                    continue
                raise self._exhausted()
            self._tried.add(candidate.peer_id)
            # A breaker read closed when the providers were ranked lets the job through
            # (asking again changes nothing in that state; it is one thread hop less).
            if not candidate.breaker_closed and not await client.allow(candidate.peer_id):
                log.info("provider skipped: circuit open peer=%s", candidate.peer_id)
                self._unanswered += 1
                continue
            dialled = trio.current_time()
            try:
                attempt = await self._open(candidate)
            except AttemptFailed as failure:
                self._answered += 1
                self._record_failure(candidate, b"", failure)
                await client.observe(candidate.peer_id, ok=False, blame=failure.blame)
            except NetworkError as exc:  # no stream: the provider is unreachable for now
                self._unanswered += 1
                self._unanswered_s += trio.current_time() - dialled
                self._record_failure(candidate, b"", AttemptFailed(str(exc)))
                client.mark_unreachable(candidate.peer_id)
                await client.observe(candidate.peer_id, ok=False, blame=True)
            else:
                self._answered += 1
                return attempt

    async def find_candidates(self) -> None:
        """Rank the providers this job tries (once: beside the credit check, else at first)."""
        if self._candidates is not None:
            return
        client = self._client
        found = await client.candidates(self.model)
        self._dht_consulted = client.config.dht_only or any(
            c.found_via == "dht" for c in found)
        self._candidates = deque(client.order_for_job(found))

    async def _next_candidate(self) -> Candidate | None:
        client = self._client
        cfg = client.config
        if (self._answered >= cfg.max_attempts or self._unanswered >= cfg.max_unanswered
                or self._unanswered_s >= cfg.unanswered_budget_s):
            return None
        if self._candidates is None:
            await self.find_candidates()
            assert self._candidates is not None
        while True:
            while self._candidates:
                candidate = self._candidates.popleft()
                if self._inputs is not None and not candidate.embeds:
                    continue
                if candidate.peer_id not in self._tried:
                    return candidate
            if self._dht_consulted:
                return None
            self._dht_consulted = True  # the catalog is used up: ask the DHT for others
            more = await client.candidates(self.model, dht=True, exclude=self._tried)
            self._candidates.extend(more)

    def _exhausted(self) -> P2PInferError:
        if not self._tried:
            return NoProvidersError(f"no provider serves {self.model!r} on the network")
        if self._client.payer and {f.code for f in self.failovers} == {"insufficient_credit"}:
            return InsufficientCreditError(  # no channel covers it: say which, and how
                self.failovers[-1].reason.removeprefix("rejected: insufficient_credit: "))
        summary = "; ".join(f"{f.provider[-8:]}: {f.reason}" for f in self.failovers[-4:])
        return AllProvidersFailedError(
            f"all {len(self._tried)} providers of {self.model!r} failed ({summary})"
        )

    async def _open(self, candidate: Candidate) -> Attempt:
        """A new attempt on `candidate`: the signed request goes out in the same write as
        the protocol proposal (pipelined negotiation), so its answer is one round trip away."""
        client = self._client
        now = client.clock_ms()
        request = JobRequest(
            job_id=os.urandom(16),  # every attempt a new job: a retry is never a replay
            provider=candidate.peer_id,
            model=self.model,
            kind="embed" if self._inputs is not None else (
                "chat" if self._prompt is None else "generate"),
            max_price_per_1k=client.config.max_price_per_1k,
            issued_at=now,
            expires_at=now + client.config.request_ttl_ms,
            messages=self._messages,
            prompt=self._prompt,
            inputs=self._inputs,
            params=self.params,
            # The advert's price we chose it for: the provider may not accept above it.
            quoted_price_per_1k=min(candidate.price_per_1k, client.config.max_price_per_1k),
        )
        signer = NodeIdentity.generate() if client.config.throwaway_key else client.identity
        request = client.payer.bind(request, signer.peer_id) if client.payer else request
        machine = ConsumerJob(signer, request)  # with settlement, payer bound to the signer

        def sent(stream: NetStream) -> None:  # out: a cancel from here on is `aclose`'s
            self._opening = Attempt(candidate, stream, machine, caught_up=not self._delivered)
        try:
            stream = await client.net.open_stream(candidate.peer_id, JOB_PROTOCOL_ID,
                                                  first=machine.start(), on_sent=sent)
        except Exception:
            self._opening = None  # reset by open_stream (a cancel leaves it to `aclose`)
            raise
        self._opening = None
        if stream.remote_peer_id != candidate.peer_id:
            await stream.reset()
            raise AttemptFailed(f"the stream reached {stream.remote_peer_id}, not the provider")
        return Attempt(candidate, stream, machine, caught_up=not self._delivered)

    async def _read(self, attempt: Attempt) -> None:
        if attempt.accepted and attempt.move_after <= trio.current_time():
            await maybe_move(self._client.net, attempt, self._client.metrics)  # once direct
        data = await attempt.read(self._client.config)  # bounded in time; pace floor
        machine = attempt.machine
        events = machine.receive_data(data, self._client.clock_ms()) if data else (
            machine.receive_eof())
        for event in events:
            if isinstance(event, Accepted):
                attempt.accepted = True
                self.price_per_1k = event.price_per_1k
                await take_payee(self._client, attempt, event.accept)  # settlement
            elif isinstance(event, ChunkReceived):
                attempt.took(event)
                self._deliver(attempt, event.logprobs)
            elif isinstance(event, ResultReceived):
                await self._complete(attempt)
                return
            elif isinstance(event, Rejected):
                raise AttemptFailed(f"rejected: {event.code}: {event.message}", event.code,
                                    blame=event.code not in NEUTRAL_CODES,
                                    retry_after_ms=event.retry_after_ms)
            elif isinstance(event, Failure):
                if isinstance(event.error, OverchargeError):
                    await self._client.refuse_charge(attempt.candidate, machine, event.error,
                                                     attempt.text)
                    raise AttemptFailed(f"overcharged: {event.error}")
                raise AttemptFailed(f"broke the protocol: {event.error}")
        if not data and machine.state is not ConsumerState.RESULT_RECEIVED:
            raise AttemptFailed("closed the stream before the result")

    def _deliver(self, attempt: Attempt, logprobs: tuple[TokenLogprobs, ...] = ()) -> None:
        """Pass on the attempt's new text (and the chunk's `logprobs`; `Attempt.beyond`)."""
        delta = attempt.beyond(self._delivered, logprobs)
        if delta is not None:
            self._pending.append(delta)
            self._delivered = attempt.text

    async def _complete(self, attempt: Attempt) -> None:
        client = self._client
        machine = attempt.machine
        if not attempt.caught_up or attempt.text != self._delivered:
            # A shorter answer than the one already shown: it replaces it.
            self._pending.append(TextDelta(attempt.text, restart=True))
            self._delivered = attempt.text
        delivered = await send_receipt(client, attempt)
        self._attempt = None
        assert machine.result is not None and machine.receipt_message is not None
        result = machine.result.msg
        charged = await client.record_charge(self.model, attempt.candidate, machine,
                                             delivered=delivered)
        now = trio.current_time()
        first = self._first_delta if self._first_delta is not None else now
        self.outcome = JobOutcome(
            model=self.model,
            provider=attempt.candidate.peer_id,
            job_id=machine.job_id.hex(),
            text=attempt.text,
            prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens,
            finish_reason=result.finish_reason,
            digest=result.digest,
            price_per_1k=machine.price_per_1k or 0,
            charged=charged,
            result=machine.result.raw,
            receipt=machine.receipt_message.raw,
            receipt_delivered=delivered,
            failovers=tuple(self.failovers),
            found_via=attempt.candidate.found_via,
            ttft_ms=(first - self._started) * 1000,
            total_ms=(now - self._started) * 1000,
            chunks=attempt.chunks,
            request=machine.request.raw,
            path=attempt.path,
        )
        for hook in client.outcome_hooks:
            hook(self.outcome)  # e.g. a consumer's spot-check sampler (must not block)
        await client.observe(attempt.candidate.peer_id, ok=True, blame=True)
        client.observe_pace(attempt.candidate.peer_id, self.model,  # to rank the next jobs
                            result.completion_tokens - 1, attempt.streamed_s)
        client.metrics.jobs.labels("consumer", "completed").inc()
        client.metrics.tokens.labels("consumer", "completion").inc(result.completion_tokens)
        client.metrics.tokens.labels("consumer", "prompt").inc(result.prompt_tokens)
        client.metrics.job_seconds.labels("consumer").observe(now - self._started)
        client.metrics.ttft_seconds.labels("consumer").observe(first - self._started)

    async def _fail(self, attempt: Attempt, failure: AttemptFailed) -> None:
        self._attempt = None
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await attempt.stream.reset()
        self._record_failure(attempt.candidate, attempt.machine.job_id, failure)
        if failure.code in ("too_slow", "slow_to_accept"):  # tried last for a while
            self._client.mark_too_slow(attempt.candidate.peer_id)
        await self._client.observe(attempt.candidate.peer_id, ok=False, blame=failure.blame)

    def _record_failure(self, candidate: Candidate, job_id: bytes, failure: AttemptFailed) -> None:
        log.info("provider failed, trying the next peer=%s job=%s reason=%s",
                 candidate.peer_id, job_id.hex(), failure.reason)
        self.failovers.append(
            FailedAttempt(candidate.peer_id, job_id.hex(), failure.reason, failure.code)
        )
        self._client.metrics.failovers.inc()
        self._busy.record(failure)

