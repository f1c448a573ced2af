"""Spot-check messages of wire protocol version 1: a validator's CheckReport (with its
evidence), a consumer's ChargeProof against a provider that overcharged it, and a
SlashVote on the Stake contract (see `protocol/messages.py` for the conventions;
`verify/reports.py`, `verify/charge_proofs.py` and `settle/` use them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from p2pinfer.protocol.schema import Range, Size
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
    result: Annotated[bytes, Size(1, 4_096)]
    provider_output: LongText
    reference_output_hash: Sha256
    reference_digest: Label
    metrics: Annotated[tuple[Metric, ...], Size(0, 32)]
    verdict: Verdict
    issued_at: Millis


@dataclass(frozen=True)
class ChargeProof(WireMessage):
    """A consumer's proof that a provider overcharged it: the consumer's signed request,
    the provider's signed result of it and the output the provider streamed. Anyone can
    check it (`verify/charge_proofs.py`): the result claims more than the request and the
    output allow at the request's own price, under the provider's signature."""

    TYPE: ClassVar[str] = "charge_proof"

    request: Annotated[bytes, Size(1, 393_216)]
    result: Annotated[bytes, Size(1, 4_096)]
    provider_output: LongText
    issued_at: Millis


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
