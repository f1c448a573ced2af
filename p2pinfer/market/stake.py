"""Stake declarations: a provider's signed claim of how much it stakes, and slashing.

There is no chain: a stake is what its provider declares and signs, and every
observer keeps its own view of it. An observer that holds proof of fraud
records a slash in its own ledger, which lowers the stake it credits to that
provider from then on (`StakeStatus.effective`). Consumers skip providers
whose effective stake is below their configured minimum.

A declaration is a claim: it counts for governance (`verified_weight`) only
once it is recorded in the observer's own ledger, which happens for the
node's own `--stake` and for a declaration its operator accepts (`p2pinfer gov
stake accept`); one carried in an advert or a vote counts for nothing.

Signed bytes follow the record convention (protocol/records.py): the domain string
`p2pinfer/v1/stake` followed by the canonical msgpack map of every field but `sig`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from p2pinfer.errors import SignatureError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.pricing import MICRO_PER_CREDIT
from p2pinfer.protocol.records import SignedRecord, sign_record, verify_record
from p2pinfer.protocol.schema import Range, Size, Wire

STAKE_DOMAIN = b"p2pinfer/v1/stake"
STAKE_TYPE = "stake"
VERSION = 1
#: The founding document's minimum stake: 10,000 tokens (credits), in micro-credits.
DEFAULT_MINIMUM_STAKE = 10_000 * MICRO_PER_CREDIT
#: Share of the effective stake a proven fraud slashes, in basis points (all of it).
DEFAULT_SLASH_BP = 10_000
_MAX_AMOUNT = 2**63 - 1
#: The most stake one key can weigh in a vote or in the total a quorum is measured
#: against: 10x the minimum stake, so one key recorded by mistake (or a huge declaration
#: accepted by an operator) cannot outweigh ten honest minimum stakers.
MAX_VOTE_STAKE = 10 * DEFAULT_MINIMUM_STAKE
#: No encoded declaration is larger (it is about 150 bytes).
MAX_DECLARATION = 1024

PublicKey = Annotated[bytes, Size(32, 32)]
Amount = Annotated[int, Range(0, _MAX_AMOUNT)]


@dataclass(frozen=True)
class StakeDeclaration(SignedRecord):
    """`provider` (32-byte Ed25519 key) declares `amount` micro-credits at `issued_at` (ms).

    A signed record (protocol/records.py): `{"v": 1, "t": "stake", "from", "amount",
    "issued_at", "sig"}`."""

    DOMAIN: ClassVar[bytes] = STAKE_DOMAIN
    HEADER: ClassVar[dict[str, str | int]] = {"t": STAKE_TYPE, "v": VERSION}
    SIGNER: ClassVar[str] = "provider"
    MAX_BYTES: ClassVar[int] = MAX_DECLARATION

    provider: Annotated[PublicKey, Wire(key="from")]
    amount: Amount
    issued_at: Amount
    signature: Annotated[bytes, Size(64, 64), Wire(key="sig")]



def sign_stake(identity: NodeIdentity, amount: int, issued_at: int) -> StakeDeclaration:
    """`identity`'s signed declaration that it stakes `amount` micro-credits as of `issued_at`."""
    return sign_record(StakeDeclaration(identity.public_key, amount, issued_at, bytes(64)),
                       identity)


def verify_stake(decl: StakeDeclaration) -> None:
    """ValidationError/SignatureError unless `decl` is well-formed and signed by its provider."""
    verify_record(decl)


@dataclass(frozen=True)
class StakeStatus:
    """An observer's view of one provider's stake, in micro-credits."""

    #: Amount of the newest declaration recorded (0 if none).
    declared: int
    #: Sum of every slash this observer recorded against the provider.
    slashed: int
    #: `issued_at` of the newest declaration (None if none).
    issued_at: int | None

    @property
    def effective(self) -> int:
        """What the observer credits: declared minus slashed, never below 0."""
        return max(self.declared - self.slashed, 0)


NO_STAKE = StakeStatus(0, 0, None)


def meets_minimum(
    decl: StakeDeclaration | StakeStatus | None, minimum: int, *, slashed: int = 0
) -> bool:
    """Whether a provider may be used by a consumer requiring `minimum` micro-credits.

    A declaration must carry a valid signature; `slashed` (what this observer
    slashed before) is subtracted. A StakeStatus from the ledger is already net.
    A minimum of 0 admits providers that declared nothing.
    """
    if minimum <= 0:
        return True
    if decl is None:
        return False
    if isinstance(decl, StakeStatus):
        return decl.effective - slashed >= minimum
    try:
        verify_stake(decl)
    except (ValidationError, SignatureError):
        return False
    return decl.amount - slashed >= minimum


def slash_amount(status: StakeStatus, fraction_bp: int = DEFAULT_SLASH_BP) -> int:
    """How much a proven fraud slashes: `fraction_bp`/10000 of the effective stake (floored)."""
    if not 0 <= fraction_bp <= 10_000:
        raise ValueError("slash fraction must be 0..10000 basis points")
    return status.effective * fraction_bp // 10_000


def verified_weight(status: StakeStatus, cap: int = MAX_VOTE_STAKE) -> int:
    """What a key's stake weighs in governance: the observer's recorded, net-of-slashes
    stake (`status`, from its own ledger), never above `cap`."""
    return max(0, min(status.effective, cap))
