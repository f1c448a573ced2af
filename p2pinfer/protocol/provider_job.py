"""The provider's side of the job protocol, sans-IO (see jobs.py for the exchange)."""

from __future__ import annotations

import enum
import hashlib

from p2pinfer.errors import (
    ProtocolError,
    SignatureError,
    StateError,
    ValidationError,
    WrongProviderError,
)
from p2pinfer.identity import peer_id_from_public_key
from p2pinfer.protocol.charges import (
    UNCHARGED_FINISH_REASONS,
    agreed_price,
    completion_token_bound,
    prompt_token_bound,
)
from p2pinfer.protocol.codec import Signed, decode, decode_as, sign
from p2pinfer.protocol.events import (
    CancelAsked,
    PeerClosed,
    ProtocolViolation,
    ProviderEvent,
    ReceiptReceived,
    RequestReceived,
)
from p2pinfer.protocol.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame
from p2pinfer.protocol.messages import (
    Chunk,
    JobAccept,
    JobCancel,
    JobReject,
    JobRequest,
    JobResult,
    Receipt,
    TokenLogprobs,
)
from p2pinfer.protocol.records import Signer
from p2pinfer.protocol.validation import (
    CLOCK_SKEW_MS,
    ReplayWindow,
    RequestLimits,
    check_request,
)
from p2pinfer.protocol.wire_types import (
    NO_JOB_ID,
    FinishReason,
    RejectCode,
    WireMessage,
    charge_for,
)


class ProviderState(enum.Enum):
    AWAIT_REQUEST = "await_request"
    DECIDING = "deciding"  # a valid request is in; accept() or reject()
    STREAMING = "streaming"  # accepted; chunk() ... finish()
    AWAIT_RECEIPT = "await_receipt"
    DONE = "done"  # receipt received
    CLOSED = "closed"  # we rejected the job
    ERROR = "error"  # the consumer broke the protocol or went away


class ProviderJob:
    """The provider's side of one job. Checks the request's signature, time window,
    binding to this provider and `limits`; `admit` then checks replay (in the node-wide
    `replay` window) once the provider has decided it would serve the request."""

    def __init__(
        self,
        identity: Signer,
        replay: ReplayWindow,
        *,
        limits: RequestLimits = RequestLimits(),
        skew_ms: int = CLOCK_SKEW_MS,
        max_frame: int = DEFAULT_MAX_FRAME,
    ) -> None:
        self._identity = identity
        self.peer_id = peer_id_from_public_key(identity.public_key)
        self._replay = replay
        self._limits = limits
        self._skew_ms = skew_ms
        self._max_frame = max_frame
        self._frames = FrameDecoder(max_frame)
        self._job_id = NO_JOB_ID
        self._next_seq = 0
        self._output = hashlib.sha256()
        self._output_bytes = 0
        self._rejected = False
        self._admitted = False
        self.state = ProviderState.AWAIT_REQUEST
        self.request: Signed[JobRequest] | None = None
        self.price_per_1k: int | None = None
        self.result: Signed[JobResult] | None = None
        self.receipt: Signed[Receipt] | None = None
        self.cancel_asked = False  # the consumer sent its JobCancel

    @property
    def job_id(self) -> bytes:
        """The job's id once a signed request was read, else NO_JOB_ID."""
        return self._job_id

    # --- bytes in -----------------------------------------------------------

    def receive_data(self, data: bytes, now_ms: int) -> list[ProviderEvent]:
        """Feed bytes read from the stream; return what they mean, in order."""
        if self.state in (ProviderState.DONE, ProviderState.CLOSED, ProviderState.ERROR):
            raise StateError(f"the job is {self.state.value}; close the stream")
        try:
            frames = self._frames.feed(data)
        except ProtocolError as exc:
            return [self._violation(exc)]
        events: list[ProviderEvent] = []
        for frame in frames:
            try:
                events.append(self._on_frame(frame, now_ms))
            except ProtocolError as exc:
                events.append(self._violation(exc))
                break
        return events

    def receive_eof(self) -> list[ProviderEvent]:
        """The consumer closed its side. Before the receipt, that ends the job unpaid."""
        if self.state in (ProviderState.DONE, ProviderState.CLOSED, ProviderState.ERROR):
            return []
        self.state = ProviderState.ERROR
        return [PeerClosed()]

    def _on_frame(self, frame: bytes, now_ms: int) -> ProviderEvent:
        if self.state is ProviderState.AWAIT_REQUEST:
            return self._on_request(frame, now_ms)
        streaming = self.state is ProviderState.STREAMING
        if self.state is ProviderState.AWAIT_RECEIPT or streaming:
            signed = decode(frame)
            if isinstance(signed.msg, JobCancel) and not self.cancel_asked:
                return self._on_cancel(signed.expect(JobCancel))
            if not streaming:  # (a cancel that crossed our result: nothing to do)
                return self._on_receipt(signed.expect(Receipt))
        raise StateError(f"the consumer sent a message while the job is {self.state.value}")

    def _on_cancel(self, signed: Signed[JobCancel]) -> ProviderEvent:
        assert self.request is not None
        if signed.signer != self.request.signer:
            raise SignatureError("the cancel is not signed by the consumer of this job")
        if signed.msg.job_id != self._job_id:
            raise ValidationError("a cancel for another job")
        self.cancel_asked = True
        return CancelAsked()

    def _on_request(self, frame: bytes, now_ms: int) -> ProviderEvent:
        signed = decode_as(frame, JobRequest)
        req = signed.msg
        self._job_id = req.job_id  # signed by its sender: safe to echo in a reject
        check_request(
            req,
            provider_peer_id=self.peer_id,
            now_ms=now_ms,
            limits=self._limits,
            skew_ms=self._skew_ms,
        )
        # Its id goes into the replay window only on admit(): a request refused for any
        # other reason takes no room there and does not use up its id.
        self.request = signed
        self.state = ProviderState.DECIDING
        return RequestReceived(signed)

    def _on_receipt(self, signed: Signed[Receipt]) -> ProviderEvent:
        assert self.request is not None and self.result is not None
        rec = signed.msg
        if signed.signer != self.request.signer:
            raise SignatureError("the receipt is not signed by the consumer of this job")
        if rec.job_id != self._job_id or rec.result_hash != self.result.hash:
            raise ValidationError("the receipt is for another job or result")
        if rec.provider != self.peer_id:
            raise WrongProviderError("the receipt names another provider")
        if rec.amount != self.result.msg.charged:
            raise ValidationError(
                f"the receipt's amount {rec.amount} differs from the charge "
                f"{self.result.msg.charged}"
            )
        self.receipt = signed
        self.state = ProviderState.DONE
        return ReceiptReceived(signed)

    def _violation(self, error: ProtocolError) -> ProtocolViolation:
        if self.state is not ProviderState.DONE:
            self.state = ProviderState.ERROR
        return ProtocolViolation(error)

    # --- bytes out ----------------------------------------------------------

    def check_replay(self, now_ms: int) -> None:
        """ReplayError ("replayed") if the request's job id is in the replay window already;
        records nothing, so the provider can answer a replay as such before its other
        admission checks and still let only a request it serves take room (`admit`)."""
        req = self._require(ProviderState.DECIDING, "check_replay")
        self._replay.check_unused(req.job_id, now_ms)

    def admit(self, now_ms: int, *, peer: str = "") -> None:
        """Record the request's job id in the node-wide replay window, once the provider
        would take the job (known model, price, a free slot): ReplayError ("replayed") if
        the id was used, ReplayWindowFull ("busy") if the window, or the share of it held
        by the request's signer or by `peer` (the connection's PeerID), is full. Reject
        with the error's `reject_code` then. Required before `accept`."""
        req = self._require(ProviderState.DECIDING, "admit")
        if self._admitted:
            return
        assert self.request is not None
        forget_at = min(req.expires_at, req.issued_at + self._limits.max_age_ms)
        owners = (self.request.signer_peer_id, peer) if peer else (self.request.signer_peer_id,)
        self._replay.check_and_remember(req.job_id, forget_at, now_ms, peers=owners)
        self._admitted = True

    def accept(self, price_per_1k: int, *, payee: bytes | None = None,
               payee_binding: bytes | None = None) -> bytes:
        """Take the job at `price_per_1k` (at most the request's quote and max); the
        request must have been admitted (`admit`). With settlement, `payee` is this
        provider's chain account and `payee_binding` its signature over our PeerID."""
        req = self._require(ProviderState.DECIDING, "accept")
        if not self._admitted:
            raise StateError("admit the request (replay window) before accepting it")
        if price_per_1k > agreed_price(req):
            raise ValidationError(
                f"price {price_per_1k} is over the consumer's quote/max {agreed_price(req)}; "
                "reject with price_too_low instead"
            )
        out = self._send(JobAccept(self._job_id, price_per_1k, self._request_signed().hash,
                                   payee, payee_binding))
        self.price_per_1k = price_per_1k
        self.state = ProviderState.STREAMING
        return out

    def reject(self, code: RejectCode, message: str, retry_after_ms: int | None = None) -> bytes:
        """Refuse the job (or abandon it before the result); allowed once, and also after
        a ProtocolViolation to tell the consumer why. Nothing is charged."""
        can = self.state in (ProviderState.DECIDING, ProviderState.STREAMING) or (
            self.state is ProviderState.ERROR and self.result is None
        )
        if not can or self._rejected:
            raise StateError(f"cannot reject a job that is {self.state.value}")
        out = self._send(JobReject(self._job_id, code, message[:1024], retry_after_ms))
        self._rejected = True
        if self.state is not ProviderState.ERROR:
            self.state = ProviderState.CLOSED
        return out

    def chunk(self, text: str, logprobs: tuple[TokenLogprobs, ...] | None = None) -> bytes:
        """Send the next piece of output (at most 65,536 characters; with at most
        MAX_CHUNK_LOGPROBS token log probabilities)."""
        self._require(ProviderState.STREAMING, "send a chunk")
        out = self._send(Chunk(self._job_id, self._next_seq, text, logprobs or None))
        self._next_seq += 1
        data = text.encode("utf-8")
        self._output_bytes += len(data)
        self._output.update(data)
        return out

    def finish(
        self,
        *,
        prompt_tokens: int,
        completion_tokens: int,
        finish_reason: FinishReason,
        now_ms: int,
        digest: str = "",
        prompt_ms: int = 0,
        generation_ms: int = 0,
        total_ms: int = 0,
    ) -> bytes:
        """Send the signed JobResult for the chunks sent so far; the charge follows from
        the accepted price and the token counts (see `charge_for`). The counts are clamped
        to what the consumer can check (protocol/charges.py), so an honest result is never
        refused; an `error` result charges nothing."""
        req = self._require(ProviderState.STREAMING, "finish")
        assert self.price_per_1k is not None
        if completion_tokens > req.params.max_tokens:
            raise ValidationError(
                f"{completion_tokens} completion tokens, over the request's max_tokens "
                f"{req.params.max_tokens}"
            )
        prompt_tokens = min(prompt_tokens, prompt_token_bound(req))
        completion_tokens = min(completion_tokens,
                                completion_token_bound(req, self._output_bytes))
        billable = 0 if finish_reason in UNCHARGED_FINISH_REASONS else (
            prompt_tokens + completion_tokens)
        result = JobResult(
            job_id=self._job_id,
            request_hash=self._request_signed().hash,
            output_hash=self._output.digest(),
            digest=digest,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            prompt_ms=prompt_ms,
            generation_ms=generation_ms,
            total_ms=total_ms,
            finish_reason=finish_reason,
            charged=charge_for(self.price_per_1k, billable),
            finished_at=now_ms,
        )
        signed = sign(result, self._identity)
        out = encode_frame(signed.raw, self._max_frame)
        self.result = signed
        self.state = ProviderState.AWAIT_RECEIPT
        return out

    def _request_signed(self) -> Signed[JobRequest]:
        assert self.request is not None
        return self.request

    def _require(self, state: ProviderState, action: str) -> JobRequest:
        if self.state is not state:
            raise StateError(f"cannot {action} a job that is {self.state.value}")
        return self._request_signed().msg

    def _send(self, msg: WireMessage) -> bytes:
        return encode_frame(sign(msg, self._identity).raw, self._max_frame)
