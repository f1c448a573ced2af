"""Signed governance messages: a parameter `Proposal` and a stake-backed `Vote`.

Signed bytes follow the wire convention: a per-type domain string
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

import hashlib
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any

from p2pinfer.errors import DecodeError, UsageError, ValidationError
from p2pinfer.identity import NodeIdentity, verify_signature
from p2pinfer.market import canonical
from p2pinfer.market.split import preset_named
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE, StakeDeclaration, verify_stake

PROPOSAL_DOMAIN = b"p2pinfer/v1/proposal"
VOTE_DOMAIN = b"p2pinfer/v1/vote"
VERSION = 1
_MAX_INT = 2**63 - 1
MAX_MESSAGE = 4096

ParameterValue = int | str


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


def _check_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_INT:
        raise ValidationError(f"{name} must be an integer >= 0")


def _check_key(name: str, value: Any, size: int) -> None:
    if not isinstance(value, bytes) or len(value) != size:
        raise ValidationError(f"{name} must be {size} bytes")


@dataclass(frozen=True)
class Proposal:
    """`proposer` proposes `parameter` := `value`; votes count until `voting_deadline`
    (inclusive, ms); if it passes it applies from `effective_at` (ms) on every node."""

    proposer: bytes
    parameter: str
    value: ParameterValue
    voting_deadline: int
    effective_at: int
    issued_at: int
    signature: bytes
    snapshot_block: int | None = None  # settlement on: votes weigh stake at this block

    def _fields(self) -> dict[str, Any]:
        fields = {"v": VERSION, "t": "proposal", "from": self.proposer,
                  "param": self.parameter, "value": self.value,
                  "deadline": self.voting_deadline, "effective_at": self.effective_at,
                  "issued_at": self.issued_at}  # fmt: skip
        if self.snapshot_block is not None:
            fields["snapshot"] = self.snapshot_block
        return fields

    def signing_bytes(self) -> bytes:
        return PROPOSAL_DOMAIN + canonical.encode(self._fields())

    def encode(self) -> bytes:
        return canonical.encode({**self._fields(), "sig": self.signature})

    @property
    def author(self) -> bytes:
        return self.proposer

    @cached_property
    def id(self) -> bytes:
        """sha256 of the signed bytes: what votes name (computed once: tallies ask often)."""
        return hashlib.sha256(self.signing_bytes()).digest()

    def validate(self) -> None:
        """ValidationError unless every field is well-formed (signature not checked)."""
        _check_key("proposer", self.proposer, 32)
        _check_key("signature", self.signature, 64)
        for name in ("voting_deadline", "effective_at", "issued_at"):
            _check_int(name, getattr(self, name))
        if self.snapshot_block is not None:
            _check_int("snapshot_block", self.snapshot_block)
        check_value(self.parameter, self.value)
        if not self.issued_at < self.voting_deadline <= self.effective_at:
            raise ValidationError("need issued_at < voting_deadline <= effective_at")


@dataclass(frozen=True)
class Vote:
    """`voter` votes `yes` (or no) on proposal `proposal_id`, backed by `stake` (its own
    signed declaration, issued no later than the vote)."""

    voter: bytes
    proposal_id: bytes
    yes: bool
    issued_at: int
    stake: StakeDeclaration
    signature: bytes
    account: bytes | None = None  # settlement on: the voter's chain account (20 bytes) ...
    binding: bytes | None = None  # ... and its EIP-191 binding to the voter's peer id

    def _fields(self) -> dict[str, Any]:
        fields = {"v": VERSION, "t": "vote", "from": self.voter, "proposal": self.proposal_id,
                  "yes": self.yes, "issued_at": self.issued_at,
                  "stake": self.stake.encode()}  # fmt: skip
        if self.account is not None:
            fields["account"], fields["binding"] = self.account, self.binding
        return fields

    def signing_bytes(self) -> bytes:
        return VOTE_DOMAIN + canonical.encode(self._fields())

    def encode(self) -> bytes:
        return canonical.encode({**self._fields(), "sig": self.signature})

    @property
    def author(self) -> bytes:
        return self.voter

    @cached_property
    def id(self) -> bytes:
        return hashlib.sha256(self.signing_bytes()).digest()

    def validate(self) -> None:
        """ValidationError unless well-formed and the stake is the voter's own, declared
        no later than the vote (signatures not checked)."""
        _check_key("voter", self.voter, 32)
        _check_key("proposal", self.proposal_id, 32)
        _check_key("signature", self.signature, 64)
        _check_int("issued_at", self.issued_at)
        if not isinstance(self.yes, bool):
            raise ValidationError("yes must be a boolean")
        if self.stake.provider != self.voter:
            raise ValidationError("a vote's stake declaration must be the voter's own")
        if self.stake.issued_at > self.issued_at:
            raise ValidationError("a vote's stake must be declared no later than the vote")
        if (self.account is None) != (self.binding is None):
            raise ValidationError("a vote's account and binding go together")
        if self.account is not None:
            _check_key("account", self.account, 20)
            _check_key("binding", self.binding, 65)


GovMessage = Proposal | Vote

_PROPOSAL_KEYS = {"v", "t", "from", "param", "value", "deadline", "effective_at", "issued_at",
                  "sig"}
_VOTE_KEYS = {"v", "t", "from", "proposal", "yes", "issued_at", "stake", "sig"}
_SNAPSHOT_KEYS = _PROPOSAL_KEYS | {"snapshot"}
_BOUND_VOTE_KEYS = _VOTE_KEYS | {"account", "binding"}


def decode_message(data: bytes) -> GovMessage:
    """Parse and validate (not verify) a proposal or vote; DecodeError/ValidationError."""
    if len(data) > MAX_MESSAGE:
        raise DecodeError(f"governance message over {MAX_MESSAGE} bytes")
    value = canonical.decode(data)
    if not isinstance(value, dict) or value.get("v") != VERSION:
        raise DecodeError("not a version 1 governance message")
    message: GovMessage
    keys = set(value)
    if value.get("t") == "proposal" and keys in (_PROPOSAL_KEYS, _SNAPSHOT_KEYS):
        if not isinstance(value["param"], str) or not isinstance(value["value"], int | str):
            raise ValidationError("proposal: param must be a string, value an int or string")
        message = Proposal(value["from"], value["param"], value["value"], value["deadline"],
                           value["effective_at"], value["issued_at"], value["sig"],
                           value.get("snapshot"))
    elif value.get("t") == "vote" and keys in (_VOTE_KEYS, _BOUND_VOTE_KEYS):
        if not isinstance(value["stake"], bytes):
            raise ValidationError("vote: stake must be an encoded stake declaration")
        message = Vote(value["from"], value["proposal"], value["yes"], value["issued_at"],
                       StakeDeclaration.decode(value["stake"]), value["sig"],
                       value.get("account"), value.get("binding"))
    else:
        raise DecodeError("not a proposal or vote")
    message.validate()
    return message


def verify_message(message: GovMessage) -> None:
    """SignatureError unless the message (and a vote's stake) is signed by its author."""
    if isinstance(message, Proposal):
        verify_signature(message.proposer, message.signing_bytes(), message.signature)
    else:
        verify_stake(message.stake)
        verify_signature(message.voter, message.signing_bytes(), message.signature)


def sign_proposal(identity: NodeIdentity, parameter: str, value: ParameterValue, *,
                  voting_deadline: int, effective_at: int, issued_at: int,
                  snapshot_block: int | None = None) -> Proposal:
    """`identity`'s signed proposal; ValidationError if a field is out of bounds."""
    draft = Proposal(identity.public_key, parameter, value, voting_deadline, effective_at,
                     issued_at, bytes(64), snapshot_block)
    draft.validate()
    return replace(draft, signature=identity.sign(draft.signing_bytes()))


def sign_vote(identity: NodeIdentity, proposal_id: bytes, yes: bool, *, stake: StakeDeclaration,
              issued_at: int, account: bytes | None = None, binding: bytes | None = None) -> Vote:
    """`identity`'s signed vote, backed by its own `stake` declaration (and, settlement
    on, by its chain `account` with the `binding` of that account to its peer id)."""
    draft = Vote(identity.public_key, proposal_id, yes, issued_at, stake, bytes(64), account,
                 binding)
    draft.validate()
    return replace(draft, signature=identity.sign(draft.signing_bytes()))
