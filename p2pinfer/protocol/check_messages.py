"""Spot-check messages of wire protocol version 1: a validator's CheckReport (with its
evidence), a consumer's ChargeProof against a provider that overcharged it, and a
SlashVote on the Stake contract (see `protocol/messages.py` for the conventions;
`verify/reports.py`, `verify/charge_proofs.py` and `settle/` use them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from p2pinfer.errors import ValidationError
from p2pinfer.protocol.schema import OMIT_NONE, Range, Size
from p2pinfer.protocol.wire_types import (
    U63,
    ChainAddress,
    ChainSignature,
    Label,
    LongText,
    MicroCredits,
    Millis,
    PeerIdText,
    Sha256,
    Verdict,
    WireMessage,
    check_peer_id,
)

SignedResult = Annotated[bytes, Size(1, 4_096)]
"""A signed JobResult's encoding, as evidence."""
SignedAccept = Annotated[bytes, Size(1, 1_024)]
"""A signed JobAccept's encoding, as evidence (its payee fields included)."""


@dataclass(frozen=True)
class Metric:
    """A named integer measurement, e.g. ("prefix_agreement_permille", 934)."""

    name: Annotated[str, Size(1, 64)]
    value: Annotated[int, Range(-(2**63), U63)]


@dataclass(frozen=True)
class CheckReport(WireMessage):
    """A validator's verdict on a provider's signed result, with the evidence:
    the signed request and result (encoded), the output the provider streamed,
    the hash of the validator's own output and the comparison's metrics."""

    TYPE: ClassVar[str] = "check_report"

    request: Annotated[bytes, Size(1, 393_216)]
    result: SignedResult
    provider_output: LongText
    reference_output_hash: Sha256
    reference_digest: Label
    metrics: Annotated[tuple[Metric, ...], Size(0, 32)]
    verdict: Verdict
    issued_at: Millis


@dataclass(frozen=True)
class ChargeProof(WireMessage):
    """A consumer's proof that a provider overcharged it: the consumer's signed request,
    and the provider's signed accept of it, its signed result of it (with the output the
    provider streamed), or both. Anyone can check it (`verify/charge_proofs.py`): the
    accept is over the request's agreed price, or the result claims more than the
    request and the output allow at the accepted price (the agreed one with no accept),
    under the provider's own signature."""

    TYPE: ClassVar[str] = "charge_proof"

    request: Annotated[bytes, Size(1, 393_216)]
    provider_output: LongText  # empty with no result
    issued_at: Millis
    result: Annotated[SignedResult | None, OMIT_NONE] = None
    accept: Annotated[SignedAccept | None, OMIT_NONE] = None

    def __post_init__(self) -> None:
        if self.result is None and self.accept is None:
            raise ValidationError("ChargeProof: an accept, a result or both")
        if self.result is None and self.provider_output:
            raise ValidationError("ChargeProof: an output goes with a result")


@dataclass(frozen=True)
class SlashVote(WireMessage):
    """A validator's vote to slash `provider_payee` by `amount` for `evidence` (sha256 of a
    CheckReport's signed bytes) on the Stake contract: `signature` is its chain account
    `validator`'s EIP-191 signature of the slash digest, `validator_binding` binds that
    account to this message's signer (docs/settlement.md, "Slashing")."""

    TYPE: ClassVar[str] = "slash_vote"

    provider: PeerIdText
    provider_payee: ChainAddress
    amount: MicroCredits
    evidence: Sha256
    validator: ChainAddress
    validator_binding: ChainSignature
    signature: ChainSignature
    issued_at: Millis

    def __post_init__(self) -> None:
        check_peer_id("SlashVote.provider", self.provider)
