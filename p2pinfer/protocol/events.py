"""What the job state machines report after reading bytes from the peer (h11-style)."""

from __future__ import annotations

from dataclasses import dataclass

from p2pinfer.errors import ProtocolError
from p2pinfer.protocol.codec import Signed
from p2pinfer.protocol.messages import (
    JobAccept,
    JobReject,
    JobRequest,
    JobResult,
    Receipt,
    TokenLogprobs,
)

# --- provider side ----------------------------------------------------------


@dataclass(frozen=True)
class RequestReceived:
    """A request that passed signature, time window, binding, limits and replay checks.
    Decide on it: `ProviderJob.accept(price)` or `ProviderJob.reject(code, message)`."""

    request: Signed[JobRequest]


@dataclass(frozen=True)
class ReceiptReceived:
    """The consumer's valid receipt for our result: the job is paid and done."""

    receipt: Signed[Receipt]


@dataclass(frozen=True)
class ProtocolViolation:
    """The consumer sent something invalid or out of turn. If no result was sent yet,
    `ProviderJob.reject(violation.code, str(violation.error))` tells it why; then close."""

    error: ProtocolError

    @property
    def code(self) -> str:
        """The reject code that matches the error."""
        return self.error.reject_code


@dataclass(frozen=True)
class PeerClosed:
    """The consumer ended the stream before the job was done (cancelled or gone):
    stop generating; no receipt will come."""


@dataclass(frozen=True)
class CancelAsked:
    """The consumer asked to stop (a JobCancel): stop generating, then send the output so
    far and a `cancelled` result (`ProviderJob.finish`), which it will pay."""


ProviderEvent = (RequestReceived | ReceiptReceived | ProtocolViolation | PeerClosed
                 | CancelAsked)

# --- consumer side ----------------------------------------------------------


@dataclass(frozen=True)
class Accepted:
    """The provider took the job at `price_per_1k`."""

    accept: Signed[JobAccept]

    @property
    def price_per_1k(self) -> int:
        return self.accept.msg.price_per_1k


@dataclass(frozen=True)
class Rejected:
    """The provider refused the job, or abandoned it mid-stream. Nothing is owed."""

    reject: Signed[JobReject]

    @property
    def code(self) -> str:
        return self.reject.msg.code

    @property
    def message(self) -> str:
        return self.reject.msg.message

    @property
    def retry_after_ms(self) -> int | None:
        return self.reject.msg.retry_after_ms


@dataclass(frozen=True)
class ChunkReceived:
    """The next piece of output, in order."""

    seq: int
    text: str
    logprobs: tuple[TokenLogprobs, ...] = ()


@dataclass(frozen=True)
class ResultReceived:
    """A result whose hashes, tokens and charge check out. Send `ConsumerJob.receipt()`."""

    result: Signed[JobResult]


@dataclass(frozen=True)
class Failure:
    """The provider broke the protocol (bad signature, wrong hash, gap in chunks, ...)
    or closed the stream early. Nothing is owed; try the next provider."""

    error: ProtocolError


ConsumerEvent = Accepted | Rejected | ChunkReceived | ResultReceived | Failure
