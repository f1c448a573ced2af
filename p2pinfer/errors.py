"""One exception hierarchy for the whole project, rooted in `P2PInferError`.

Every error carries an `exit_code`; the CLI prints `error: <message>` on one
line and exits with it. The codes are documented in docs/cli.md and must not
change meaning once released.
"""

from __future__ import annotations


class P2PInferError(Exception):
    """Root of every error p2pinfer raises on purpose."""

    exit_code = 1


class UsageError(P2PInferError):
    """The user gave a bad argument or config value."""

    exit_code = 2


class KeyFileError(P2PInferError):
    """The node key file is missing, unreadable, malformed or too permissive."""

    exit_code = 3


class ProtocolError(P2PInferError):
    """A message or frame broke the wire protocol. Subclasses say how."""

    exit_code = 4
    #: Reject code sent to the peer when this error ends a job (see protocol.messages).
    reject_code = "bad_request"


class DecodeError(ProtocolError):
    """Bytes that are not a well-formed message of a known type."""


class FrameTooLarge(ProtocolError):
    """A frame header announced more bytes than the limit allows."""

    reject_code = "over_limits"


class SignatureError(ProtocolError):
    """A missing, malformed or wrong signature."""

    reject_code = "bad_signature"


class ValidationError(ProtocolError):
    """A field with the wrong type, size or value."""


class ExpiredError(ValidationError):
    """A message outside its validity window (expired or from the future)."""

    reject_code = "expired"


class ReplayError(ValidationError):
    """A job id that was already seen inside the replay window."""

    reject_code = "replayed"


class WrongProviderError(ValidationError):
    """A job request bound to another provider."""

    reject_code = "wrong_provider"


class OverLimitsError(ValidationError):
    """A message within the wire caps but over a provider's policy limits or lifetime."""

    reject_code = "over_limits"


class OverchargeError(ValidationError):
    """A provider's signed result charges more than the consumer can check it owes: the
    signed request and result are evidence against the provider."""


class ReplayWindowFull(ProtocolError):
    """The replay window holds its maximum of live job ids; new jobs must wait."""

    reject_code = "busy"


class StateError(ProtocolError):
    """A message that is not allowed in the job's current state."""


class BackendError(P2PInferError):
    """The inference engine failed: down, slow, or answering garbage."""

    exit_code = 5


class EngineUnavailable(BackendError):
    """The engine cannot be reached or timed out."""


class ModelNotFound(BackendError):
    """The engine does not serve the requested model."""


class EngineResponseError(BackendError):
    """The engine answered, but not with something we can use."""


class BadRequestError(BackendError):
    """The request is one the engine or network cannot take: over a wire cap (a stop
    string, a message's length) or text that is not valid Unicode. HTTP answers 400."""


class NetworkError(P2PInferError):
    """A libp2p-level failure: dial, stream, or peer misbehaviour."""

    exit_code = 6


class PeerUnreachableError(NetworkError):
    """A peer could not be dialled: no known address, refused, or the handshake failed."""


class ProtocolNotSupportedError(NetworkError):
    """The peer was reached but refused the stream protocol we asked for: it answered
    `na`, or reset the stream instead of accepting the proposal. Not a PeerUnreachableError:
    the connection is fine, only this protocol is not spoken there."""


class StreamClosedError(NetworkError):
    """The peer closed or reset a stream before the expected frame arrived."""


class PeerTimeoutError(NetworkError):
    """A peer did not answer within the allowed time."""


class NoProvidersError(NetworkError):
    """Nobody on the network serves the requested model."""

    exit_code = 7


class AllProvidersFailedError(NetworkError):
    """Every candidate provider failed or rejected the job."""

    exit_code = 8


class JobTimeoutError(NetworkError):
    """The job did not complete within its deadline."""

    exit_code = 9


class JobRejectedError(NetworkError):
    """A provider refused the job with a reject code."""

    def __init__(self, code: str, message: str, retry_after_ms: int | None = None) -> None:
        super().__init__(f"provider rejected the job: {code}: {message}")
        self.code = code
        self.retry_after_ms = retry_after_ms


class StoreError(P2PInferError):
    """A node's SQLite file (ledger, reputation table, governance store) could not be
    read or written (p2pinfer/store.py)."""

    exit_code = 10


class LedgerError(StoreError):
    """The ledger could not be read or written."""

    exit_code = 10


class LedgerIntegrityError(LedgerError):
    """The ledger's hash chain or a signature in it does not verify."""

    exit_code = 11


class DuplicateEntryError(LedgerError):
    """The ledger already holds this entry (e.g. a second charge for the same job)."""


class ReputationStoreError(LedgerError):
    """The reputation table (node state next to the ledger) could not be read or written."""


class GovStoreError(StoreError):
    """The governance store (`<home>/gov.sqlite`) could not be read or written."""


class InsufficientCreditError(LedgerError):
    """The consumer cannot pay for the job."""

    exit_code = 12


class TestnetError(P2PInferError):
    """The local testnet could not be started, found, or stopped."""

    exit_code = 13


class ChainError(P2PInferError):
    """Settlement on the EVM chain failed (docs/settlement.md). Subclasses say how."""

    exit_code = 14


class ChainUnreachableError(ChainError):
    """The chain's JSON-RPC endpoint (`--chain-rpc`) did not answer, or is another chain."""

    exit_code = 15


class ChainFundsError(ChainError):
    """The account holds too little: tokens for a deposit or stake, or ether for gas."""

    exit_code = 16


class ChainRevertedError(ChainError):
    """The chain refused a transaction (the contract reverted; the reason is in the message)."""

    exit_code = 17


EXIT_CODES: dict[str, int] = {
    cls.__name__: cls.exit_code
    for cls in (
        P2PInferError,
        UsageError,
        KeyFileError,
        ProtocolError,
        BackendError,
        NetworkError,
        NoProvidersError,
        AllProvidersFailedError,
        JobTimeoutError,
        StoreError,
        LedgerError,
        LedgerIntegrityError,
        InsufficientCreditError,
        TestnetError,
        ChainError,
        ChainUnreachableError,
        ChainFundsError,
        ChainRevertedError,
    )
}
