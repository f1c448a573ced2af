"""Signed governance messages: a parameter `Proposal` and a stake-backed `Vote`.

Both are signed records (protocol/records.py): a per-type domain string
(`p2pinfer/v1/proposal`, `p2pinfer/v1/vote`) then the canonical msgpack map of
every field but `sig`. A message's id is the sha256 of its signed bytes, so it
names the content, not one signature. A vote carries its voter's signed
`StakeDeclaration` (market.stake), but that is only a claim: the weight a
tallying node gives a vote is the stake its own ledger records for the voter
(`gov.tally`), never the number in the vote.

With settlement on (docs/settlement.md) a proposal also names `snapshot_block`, the
chain block whose stake weighs its votes, and a vote carries the voter's chain
`account` and its EIP-191 `binding` to the voter's peer id (`settle.chain_weight`). These
keys are left out of the signed map when unset, so older messages keep their bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, cast

from p2pinfer.errors import UsageError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.split import preset_named
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, StakeDeclaration, verify_stake
from p2pinfer.protocol.canonical import MAX_INT, MIN_INT
from p2pinfer.protocol.records import SignedRecord, decode_one_of, sign_record, verify_record
from p2pinfer.protocol.schema import OMIT_NONE, Range, Size, Wire

PROPOSAL_DOMAIN = b"p2pinfer/v1/proposal"
VOTE_DOMAIN = b"p2pinfer/v1/vote"
VERSION = 1
MAX_MESSAGE = 4096

ParameterValue = int | str
_Millis = Annotated[int, Range(0, MAX_INT)]
_PublicKey = Annotated[bytes, Size(32, 32)]
_Signature = Annotated[bytes, Size(64, 64), Wire(key="sig")]


def _int_range(low: int, high: int) -> Any:
    def check(value: ParameterValue) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ValidationError(f"must be an integer in {low}..{high}")

    return check


#: Split presets a proposal may choose: those that pay providers a share of every charge.
#: ("render" pays providers nothing from charges, only from an emission the live network
#: does not have, so as a live parameter it would stop paying every provider.)
GOVERNABLE_PRESETS = ("bme", "seed")


def _preset(value: ParameterValue) -> None:
    if not isinstance(value, str) or value not in GOVERNABLE_PRESETS:
        raise ValidationError(f"must be one of {', '.join(GOVERNABLE_PRESETS)}")
    preset_named(value)


#: The parameters a proposal may change, each with the check of a new value: a passed
#: proposal outside these bounds is refused at the door and never applied. Bounds and why
#: are in docs/governance.md ("Parameter bounds").
PARAMETERS: dict[str, Any] = {
    # micro-credits per 1k tokens: 1/10x..10x the default (1,000), so one vote can neither
    # make serving free nor price every consumer out.
    "base_rate": _int_range(100, 10_000),
    "split_preset": _preset,  # GOVERNABLE_PRESETS
    # per mille of the node's own jobs it re-runs: up to 20%, so governance cannot make
    # every consumer double the load on its own engine.
    "check_rate_pm": _int_range(0, 200),
    # micro-credits a consumer requires of a provider: at most the founding document's
    # minimum stake, so a vote cannot set a bar no provider meets and halt every job.
    "min_stake": _int_range(0, DEFAULT_MINIMUM_STAKE),
}


def check_value(parameter: str, value: Any) -> None:
    """ValidationError unless `parameter` is governable and `value` within its bounds."""
    check = PARAMETERS.get(parameter)
    if check is None:
        raise ValidationError(
            f"unknown parameter {parameter!r}; known: {', '.join(sorted(PARAMETERS))}")
    if not isinstance(value, int | str):
        raise ValidationError(f"{parameter}: value must be an integer or a string")
    try:
        check(value)
    except (ValidationError, UsageError) as exc:  # UsageError: preset_named's
        raise ValidationError(f"{parameter}: {exc}") from exc


@dataclass(frozen=True)
class Proposal(SignedRecord):
    """`proposer` proposes `parameter` := `value`; votes count until `voting_deadline`
    (inclusive, ms); if it passes it applies from `effective_at` (ms) on every node.

    A signed record (protocol/records.py): `{"v": 1, "t": "proposal", "from", "param",
    "value", "deadline", "effective_at", "issued_at", ["snapshot",] "sig"}`."""

    DOMAIN: ClassVar[bytes] = PROPOSAL_DOMAIN
    HEADER: ClassVar[dict[str, str | int]] = {"t": "proposal", "v": VERSION}
    SIGNER: ClassVar[str] = "proposer"
    MAX_BYTES: ClassVar[int] = MAX_MESSAGE

    proposer: Annotated[_PublicKey, Wire(key="from")]
    parameter: Annotated[str, Size(0, MAX_MESSAGE), Wire(key="param")]
    # Any int or str decodes; check_value (in validate) bounds it per parameter.
    value: Annotated[int, Range(MIN_INT, MAX_INT)] | Annotated[str, Size(0, MAX_MESSAGE)]
    voting_deadline: Annotated[_Millis, Wire(key="deadline")]
    effective_at: _Millis
    issued_at: _Millis
    signature: _Signature
    # settlement on: votes weigh stake at this block
    snapshot_block: Annotated[int | None, Range(0, MAX_INT),
                              Wire(key="snapshot", omit_none=True)] = None

    def validate(self) -> None:
        """ValidationError unless the value is within its parameter's bounds and the times
        are in order (each field's own bounds are the schema's; signature not checked)."""
        check_value(self.parameter, self.value)
        if not self.issued_at < self.voting_deadline <= self.effective_at:
            raise ValidationError("need issued_at < voting_deadline <= effective_at")


@dataclass(frozen=True)
class Vote(SignedRecord):
    """`voter` votes `yes` (or no) on proposal `proposal_id`, backed by `stake` (its own
    signed declaration, issued no later than the vote).

    A signed record: `{"v": 1, "t": "vote", "from", "proposal", "yes", "issued_at",
    "stake" (the declaration's own bytes), ["account", "binding",] "sig"}`."""

    DOMAIN: ClassVar[bytes] = VOTE_DOMAIN
    HEADER: ClassVar[dict[str, str | int]] = {"t": "vote", "v": VERSION}
    SIGNER: ClassVar[str] = "voter"
    MAX_BYTES: ClassVar[int] = MAX_MESSAGE

    voter: Annotated[_PublicKey, Wire(key="from")]
    proposal_id: Annotated[bytes, Size(32, 32), Wire(key="proposal")]
    yes: bool
    issued_at: _Millis
    stake: Annotated[StakeDeclaration, Wire(encoded=Size(0, MAX_MESSAGE))]
    signature: _Signature
    # settlement on: the voter's chain account (20 bytes) and its EIP-191 binding to the
    # voter's peer id
    account: Annotated[bytes | None, Size(20, 20), OMIT_NONE] = None
    binding: Annotated[bytes | None, Size(65, 65), OMIT_NONE] = None

    def validate(self) -> None:
        """ValidationError unless the stake is the voter's own, declared no later than the
        vote, and account and binding come together (signatures not checked)."""
        if self.stake.provider != self.voter:
            raise ValidationError("a vote's stake declaration must be the voter's own")
        if self.stake.issued_at > self.issued_at:
            raise ValidationError("a vote's stake must be declared no later than the vote")
        if (self.account is None) != (self.binding is None):
            raise ValidationError("a vote's account and binding go together")


GovMessage = Proposal | Vote


def decode_message(data: bytes) -> GovMessage:
    """Parse and validate (not verify) a proposal or vote; DecodeError/ValidationError."""
    return cast(GovMessage, decode_one_of((Proposal, Vote), data))  # one of the two asked for


def verify_message(message: GovMessage) -> None:
    """SignatureError unless the message (and a vote's stake) is signed by its author."""
    if isinstance(message, Vote):
        verify_stake(message.stake)
    verify_record(message)


def sign_proposal(identity: NodeIdentity, parameter: str, value: ParameterValue, *,
                  voting_deadline: int, effective_at: int, issued_at: int,
                  snapshot_block: int | None = None) -> Proposal:
    """`identity`'s signed proposal; ValidationError if a field is out of bounds."""
    return sign_record(Proposal(identity.public_key, parameter, value, voting_deadline,
                                effective_at, issued_at, bytes(64), snapshot_block), identity)


def sign_vote(identity: NodeIdentity, proposal_id: bytes, yes: bool, *, stake: StakeDeclaration,
              issued_at: int, account: bytes | None = None, binding: bytes | None = None) -> Vote:
    """`identity`'s signed vote, backed by its own `stake` declaration (and, settlement
    on, by its chain `account` with the `binding` of that account to its peer id)."""
    return sign_record(Vote(identity.public_key, proposal_id, yes, issued_at, stake, bytes(64),
                            account, binding), identity)
