"""The vocabulary of wire protocol version 1: bounded scalar types, literals and the
base of every top-level message (`protocol/messages.py` builds the messages of them).

Money is integer micro-credits, time integer milliseconds since the Unix epoch,
hashes raw 32-byte SHA-256 digests, peers libp2p PeerID strings (`12D3KooW...`).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal, get_args

from p2pinfer.errors import ValidationError
from p2pinfer.identity import public_key_from_peer_id
from p2pinfer.protocol.schema import Printable, Range, Size

PROTOCOL_VERSION = 1

U32 = 2**32 - 1
U63 = 2**63 - 1

Millis = Annotated[int, Range(0, U63)]
"""A time (ms since the Unix epoch) or a duration in ms."""
MicroCredits = Annotated[int, Range(0, U63)]
Count = Annotated[int, Range(0, U32)]
JobId = Annotated[bytes, Size(16, 16)]
Sha256 = Annotated[bytes, Size(32, 32)]
PeerIdText = Annotated[str, Size(1, 64), Printable()]
#: Names and labels are shown in logs, tables and terminals: no control characters.
ModelName = Annotated[str, Size(1, 128), Printable()]
Label = Annotated[str, Size(0, 128), Printable()]
LongText = Annotated[str, Size(0, 262_144)]
ChainAddress = Annotated[bytes, Size(20, 20)]
"""An EVM account on the wire: its 20 raw bytes (shown checksummed "0x..." off the wire)."""
ChainSignature = Annotated[bytes, Size(65, 65)]
"""A secp256k1 EIP-191 signature, r || s || v."""

Role = Literal["system", "user", "assistant", "tool"]
JobKind = Literal["chat", "generate", "embed"]
FinishReason = Literal["stop", "length", "cancelled", "error"]
Verdict = Literal["pass", "fail", "inconclusive"]
RejectCode = Literal[
    "bad_signature",
    "expired",
    "replayed",
    "wrong_provider",
    "unknown_model",
    "over_limits",
    "price_too_low",
    "busy",
    "insufficient_stake",
    "insufficient_credit",
    "internal_error",
    "bad_request",
]
REJECT_CODES: tuple[str, ...] = get_args(RejectCode)

NO_JOB_ID = bytes(16)
"""The job id of a JobReject answering a request that could not be read."""


def charge_for(price_per_1k: int, tokens: int) -> int:
    """What `tokens` (prompt + completion) cost at `price_per_1k` in micro-credits,
    ceil(price × tokens / 1000): the most a JobResult may charge. ValueError if either
    is negative."""
    if price_per_1k < 0 or tokens < 0:
        raise ValueError("price and tokens are >= 0")
    return -(-price_per_1k * tokens // 1000)


class WireMessage:
    """Base of the top-level message types; `TYPE` is the envelope's `t`."""

    TYPE: ClassVar[str]

    @classmethod
    def domain(cls) -> bytes:
        """The signature domain string of this type, `p2pinfer/v1/<type>`."""
        return f"p2pinfer/v{PROTOCOL_VERSION}/{cls.TYPE}".encode()


def check_peer_id(field: str, peer_id: str) -> None:
    try:
        public_key_from_peer_id(peer_id)
    except ValueError as exc:
        raise ValidationError(f"{field}: not an Ed25519 PeerID: {peer_id[:64]!r}") from exc
