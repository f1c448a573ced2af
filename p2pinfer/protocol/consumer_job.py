"""The consumer's side of the job protocol, sans-IO (see jobs.py for the exchange)."""

from __future__ import annotations

import enum
import hashlib

from p2pinfer.errors import (
    ExpiredError,
    OverchargeError,
    ProtocolError,
    SignatureError,
    StateError,
    ValidationError,
)
from p2pinfer.identity import public_key_from_peer_id
from p2pinfer.protocol.charges import (
    COMPLETION_ALLOWANCE,
    accept_problem,
    charge_problem,
)
from p2pinfer.protocol.codec import Signed, decode, sign
from p2pinfer.protocol.events import (
    Accepted,
    ChunkReceived,
    ConsumerEvent,
    Failure,
    Rejected,
    ResultReceived,
)
from p2pinfer.protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from p2pinfer.protocol.messages import (
    MAX_CHUNK_CHARS,
    Chunk,
    JobAccept,
    JobCancel,
    JobReject,
    JobRequest,
    JobResult,
    Receipt,
)
from p2pinfer.protocol.output_format import answer_problem
from p2pinfer.protocol.records import Signer
from p2pinfer.protocol.tools import calls_problem, must_call
from p2pinfer.protocol.validation import (
    CLOCK_SKEW_MS,
)
from p2pinfer.protocol.wire_types import NO_JOB_ID


class ConsumerState(enum.Enum):
    SEND_REQUEST = "send_request"
    AWAIT_ANSWER = "await_answer"
    STREAMING = "streaming"
    RESULT_RECEIVED = "result_received"  # checked; receipt() next
    DONE = "done"  # receipt sent
    CLOSED = "closed"  # the provider rejected the job
    ERROR = "error"  # the provider broke the protocol or went away


class ConsumerJob:
    """The consumer's side of one job: signs `request` as `identity`, then checks every
    provider message: signed by `request.provider`, this job's id, an accept naming this
    request at a price within the quote (and the max), chunks numbered without gaps,
    result hashes matching the request and the chunks, token counts and charge within
    the bounds of protocol/charges.py.

    An accept over the quote or a result that overcharges fails the job with an
    OverchargeError; the signed message is kept in `refused_accept` / `refused_result`
    (with `request`, evidence against the provider)."""

    def __init__(
        self,
        identity: Signer,
        request: JobRequest,
        *,
        skew_ms: int = CLOCK_SKEW_MS,
        max_frame: int = DEFAULT_MAX_FRAME,
        max_output_chars: int = 4_000_000,
    ) -> None:
        self._identity = identity
        self.request: Signed[JobRequest] = sign(request, identity)
        self._provider_key = public_key_from_peer_id(request.provider)
        self._skew_ms = skew_ms
        self._max_frame = max_frame
        self.cancel_sent = False  # we asked the provider to stop (`cancel`)
        self._max_output_chars = max_output_chars
        self._frames = FrameDecoder(max_frame)
        self._next_seq = 0
        self._output = hashlib.sha256()
        self.output_chars = 0
        self.output_bytes = 0
        self.logprobs_received = 0
        self.text_chunks = 0  # chunks with text (a chat or generate job)
        self._short_piece = False  # an embed job: a chunk shorter than MAX_CHUNK_CHARS came
        # A structured answer's text, kept to judge it whole (`answer_problem`, or
        # `calls_problem` when the model must call a tool); not where a stop sequence may
        # end it short of the format, nor where a tool call may stand in for it.
        params = request.params
        constrained = must_call(params.tool_choice) if params.tools is not None else \
            params.output_format is not None
        self._structured: list[str] | None = (
            [] if constrained and not params.stop and request.kind != "embed" else None)
        self.state = ConsumerState.SEND_REQUEST
        self.price_per_1k: int | None = None
        self.result: Signed[JobResult] | None = None
        self.refused_result: Signed[JobResult] | None = None
        self.refused_accept: Signed[JobAccept] | None = None
        self.accept: Signed[JobAccept] | None = None  # the provider's (payee: settlement)
        self.receipt_message: Signed[Receipt] | None = None

    @property
    def job_id(self) -> bytes:
        return self.request.msg.job_id

    def start(self) -> bytes:
        """The framed, signed JobRequest to write first."""
        if self.state is not ConsumerState.SEND_REQUEST:
            raise StateError("the request was already sent")
        self.state = ConsumerState.AWAIT_ANSWER
        return encode_frame(self.request.raw, self._max_frame)

    def receive_data(self, data: bytes, now_ms: int) -> list[ConsumerEvent]:
        """Feed bytes read from the stream; return what they mean, in order."""
        if self.state not in (
            ConsumerState.AWAIT_ANSWER,
            ConsumerState.STREAMING,
            ConsumerState.RESULT_RECEIVED,
        ):
            raise StateError(f"cannot receive data in state {self.state.value}")
        events: list[ConsumerEvent] = []
        try:
            for frame in self._frames.feed(data):
                event = self._on_frame(frame, now_ms)
                events.append(event)
                if isinstance(event, Rejected):
                    break  # a reject ends the job; whatever follows it is moot
        except ProtocolError as exc:
            self.state = ConsumerState.ERROR
            events.append(Failure(exc))
        return events

    def receive_eof(self) -> list[ConsumerEvent]:
        """The provider closed its side; before the result that is a failure."""
        if self.state in (ConsumerState.AWAIT_ANSWER, ConsumerState.STREAMING):
            self.state = ConsumerState.ERROR
            return [Failure(StateError("the provider closed the stream before the result"))]
        return []

    @property
    def checked_charge(self) -> int:
        """The charge of the checked result: the most a receipt (and a voucher) may pay."""
        if self.state is not ConsumerState.RESULT_RECEIVED or self.result is None:
            raise StateError(f"no result to receipt in state {self.state.value}")
        return self.result.msg.charged

    def cancel(self) -> bytes:
        """The framed, signed JobCancel asking the provider to stop (attack 66): its next
        frames are the rest of the output it sent and a `cancelled` result, checked and
        paid as any result. Only while the answer streams, once."""
        if self.state is not ConsumerState.STREAMING or self.cancel_sent:
            raise StateError(f"cannot cancel a job that is {self.state.value}")
        self.cancel_sent = True
        return encode_frame(sign(JobCancel(self.job_id), self._identity).raw, self._max_frame)

    def receipt(self, *, previous: int | None = None, cumulative: int | None = None,
                voucher: bytes | None = None) -> bytes:
        """The framed, signed Receipt for the checked result (kept in `receipt_message`).
        With settlement, `voucher` signs `cumulative`, which must be `previous` (all owed
        this provider before) + the checked charge: never more."""
        charged = self.checked_charge
        assert self.result is not None
        if voucher is not None and (previous is None or cumulative != previous + charged):
            raise OverchargeError(f"a voucher for cumulative {cumulative} is not the previous "
                                  f"{previous} + the checked charge {charged}")
        signed = sign(
            Receipt(
                job_id=self.job_id,
                result_hash=self.result.hash,
                amount=charged,
                provider=self.request.msg.provider,
                cumulative=cumulative if voucher is not None else None,
                voucher=voucher,
            ),
            self._identity,
        )
        self.receipt_message = signed
        self.state = ConsumerState.DONE
        return encode_frame(signed.raw, self._max_frame)

    def _on_frame(self, frame: bytes, now_ms: int) -> ConsumerEvent:
        signed = decode(frame)
        if signed.signer != self._provider_key:
            raise SignatureError(
                f"a message signed by {signed.signer_peer_id}, not by the provider "
                f"{self.request.msg.provider}"
            )
        msg = signed.msg
        streaming = self.state is ConsumerState.STREAMING
        if isinstance(msg, JobReject) and (streaming or self.state is ConsumerState.AWAIT_ANSWER):
            if msg.job_id not in (self.job_id, NO_JOB_ID):
                raise ValidationError("a reject for another job")
            self.state = ConsumerState.CLOSED
            return Rejected(signed.expect(JobReject))
        if isinstance(msg, JobAccept) and self.state is ConsumerState.AWAIT_ANSWER:
            return self._on_accept(signed.expect(JobAccept), now_ms)
        if isinstance(msg, Chunk) and streaming:
            return self._on_chunk(msg)
        if isinstance(msg, JobResult) and streaming:
            return self._on_result(signed.expect(JobResult))
        raise StateError(f"unexpected {msg.TYPE} while the job is {self.state.value}")

    def _on_accept(self, accept: Signed[JobAccept], now_ms: int) -> ConsumerEvent:
        req = self.request.msg
        if accept.msg.job_id != req.job_id or accept.msg.request_hash != self.request.hash:
            raise ValidationError("an accept of another request")
        problem = accept_problem(req, accept.msg.price_per_1k)
        if problem is not None:
            self.refused_accept = accept
            raise OverchargeError(problem)
        if now_ms > req.expires_at + self._skew_ms:
            raise ExpiredError("the provider accepted the job after the request expired")
        self.price_per_1k = accept.msg.price_per_1k
        self.accept = accept
        self.state = ConsumerState.STREAMING
        return Accepted(accept)

    def _on_chunk(self, chunk: Chunk) -> ConsumerEvent:
        if chunk.job_id != self.job_id:
            raise ValidationError("a chunk of another job")
        if chunk.seq != self._next_seq:
            raise ValidationError(f"chunk {chunk.seq} arrived, expected {self._next_seq}")
        self._check_pieces(chunk)
        self.output_chars += len(chunk.text)
        if self.output_chars > self._max_output_chars:
            raise ValidationError(f"the output is over {self._max_output_chars} characters")
        self._check_logprobs(chunk)
        self._next_seq += 1
        if self._structured is not None:
            self._structured.append(chunk.text)
        data = chunk.text.encode("utf-8", "surrogatepass")
        self.output_bytes += len(data)
        self._output.update(data)
        return ChunkReceived(chunk.seq, chunk.text, chunk.logprobs or ())

    def _check_pieces(self, chunk: Chunk) -> None:
        # A chunk holds generated tokens: no empty keep-alives, no more text chunks than
        # the job may generate tokens, an embedding in full-size pieces (one text, cut).
        if not chunk.text:
            if chunk.logprobs is None:
                raise ValidationError("an empty chunk (no text, no log probabilities)")
            return
        req = self.request.msg
        if req.kind == "embed":
            if self._short_piece:
                raise ValidationError("an embedding chunk after a short one")
            self._short_piece = len(chunk.text) < MAX_CHUNK_CHARS
            return
        self.text_chunks += 1
        allowed = req.params.max_tokens + COMPLETION_ALLOWANCE
        if self.text_chunks > allowed:
            raise ValidationError(f"more than the {allowed} chunks max_tokens allows")

    def _check_logprobs(self, chunk: Chunk) -> None:
        # Only when asked, with at most the rivals asked, and no more entries than tokens
        # the job may generate: empty-text chunks must not grow memory without end.
        if chunk.logprobs is None:
            return
        top = self.request.msg.params.top_logprobs
        if top is None:
            raise ValidationError("log probabilities that were not asked for")
        if any(len(entry.top) > top for entry in chunk.logprobs):
            raise ValidationError(f"more than the {top} log probability rivals asked for")
        self.logprobs_received += len(chunk.logprobs)
        if self.logprobs_received > self.request.msg.params.max_tokens + COMPLETION_ALLOWANCE:
            raise ValidationError("more token log probabilities than tokens")

    def _on_result(self, result: Signed[JobResult]) -> ConsumerEvent:
        req, res = self.request.msg, result.msg
        assert self.price_per_1k is not None
        if res.job_id != req.job_id or res.request_hash != self.request.hash:
            raise ValidationError("the result answers another request")
        if res.output_hash != self._output.digest():
            raise ValidationError("the result's output hash does not match the chunks received")
        if req.digest is not None and res.digest != req.digest:
            raise ValidationError(f"ran model build {res.digest!r}, not the requested one")
        if self._structured is not None and res.finish_reason == "stop":
            text, params = "".join(self._structured), req.params
            if params.tools is not None:
                problem = calls_problem(text, params.tools, params.tool_choice)
            else:
                assert params.output_format is not None  # `_structured` is kept for one
                problem = answer_problem(text, params.output_format)
            if problem is not None:
                raise ValidationError(f"a structured answer that breaks its format: {problem}")
        try:
            self._check_charge(res)
        except OverchargeError:
            self.refused_result = result
            raise
        self.result = result
        self.state = ConsumerState.RESULT_RECEIVED
        return ResultReceived(result)

    def _check_charge(self, res: JobResult) -> None:
        """Refuse a charge the consumer cannot bound itself (protocol/charges.py)."""
        assert self.price_per_1k is not None
        problem = charge_problem(self.request.msg, res, self.price_per_1k, self.output_bytes)
        if problem is not None:
            raise OverchargeError(problem)
