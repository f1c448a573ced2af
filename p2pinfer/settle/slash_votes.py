"""`SlashVotes`: the validators' slash votes a node holds, until a set reaches the Stake
contract's threshold (docs/settlement.md, "Slashing").

A vote names (provider account, amount, evidence); the contract takes the signatures
of one such triple. Votes come from anyone on gossip, so each is checked before it is
kept: the message's Ed25519 signature (codec), the validator account bound to the
message's signer, the EIP-191 signature recovering to that account over the slash
digest of this node's Stake contract and chain, and the validator not being the
provider. A validator whose stake on chain is known to be under the contract's
`validator_min_stake` is ignored; one not read yet is kept and counts once its stake
is read and enough. One vote per validator and triple (the first). Bounded: at most
MAX_OPEN_SLASHES triples, MAX_SIGNERS_PER_SLASH votes each (the contract's limit),
MAX_OPEN_PER_VALIDATOR triples per validator; when full, the oldest triple with no
eligible vote goes first (else the oldest), and a triple expires VOTE_TTL_MS after it
was first seen.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from p2pinfer.protocol import Signed, SlashVote
from p2pinfer.settle.account import check_binding
from p2pinfer.settle.stakes import StakeBook, normalize
from p2pinfer.settle.vouchers import recover_signer, slash_digest

#: Open (provider, amount, evidence) triples held at once.
MAX_OPEN_SLASHES = 512
#: Votes kept per triple: the contract takes at most 16 signatures.
MAX_SIGNERS_PER_SLASH = 16
#: Triples one validator may have votes in at once (an honest one votes on few frauds).
MAX_OPEN_PER_VALIDATOR = 8
#: A triple that has not reached the threshold is dropped this long after first seen.
VOTE_TTL_MS = 3_600_000


@dataclass(frozen=True)
class SlashParams:
    """What a slash digest and its count depend on: read from the Stake contract (or
    configured) once at start."""

    stake_contract: str
    chain_id: int
    threshold: int  # `slash_threshold()`: distinct validator signatures the contract needs
    validator_min_stake: int  # `validator_min_stake()`: what a counted validator holds


SlashKey = tuple[str, int, bytes]  # (provider account, amount, evidence)


@dataclass
class OpenSlash:
    """Votes held for one triple, oldest first."""

    provider_peer: str
    first_seen_ms: int
    votes: dict[str, bytes] = field(default_factory=dict)  # validator account -> signature
    submitted: bool = False


class SlashVotes:
    """The bounded, checked store of slash votes (module doc)."""

    def __init__(self, params: SlashParams, stakes: StakeBook) -> None:
        self.params, self.stakes = params, stakes
        self._open: OrderedDict[SlashKey, OpenSlash] = OrderedDict()
        self._per_validator: dict[str, int] = {}

    def digest(self, provider: str, amount: int, evidence: bytes) -> bytes:
        """The digest validators sign for this triple on this node's chain."""
        p = self.params
        return slash_digest(p.stake_contract, p.chain_id, provider, amount, evidence)

    def add(self, signed: Signed[SlashVote], now_ms: int) -> str:
        """Keep a received vote; "" if kept, else why not."""
        vote = signed.msg
        provider, validator = normalize(vote.provider_payee), normalize(vote.validator)
        if provider is None or validator is None:
            return "not a chain address"  # unreachable: the codec checks 20 bytes
        if validator == provider:
            return "a provider cannot vote on its own slash"
        if not check_binding(validator, signed.signer_peer_id, vote.validator_binding):
            return "validator account not bound to the signer"
        digest = self.digest(provider, vote.amount, vote.evidence)
        if recover_signer(digest, vote.signature) != validator:
            return "signature is not the validator's over this slash"
        stake = self.stakes.stake(validator)
        if stake is not None and stake < self.params.validator_min_stake:
            return "validator stake under the contract's minimum"
        key = (provider, vote.amount, vote.evidence)
        held = self._open.get(key)
        if held is not None and validator in held.votes:
            return "validator already voted on this slash"
        if held is not None and len(held.votes) >= MAX_SIGNERS_PER_SLASH:
            return "enough votes held for this slash"
        if self._per_validator.get(validator, 0) >= MAX_OPEN_PER_VALIDATOR:
            return "validator has too many open slash votes"
        if held is None:
            self._make_room()
            held = self._open[key] = OpenSlash(vote.provider, now_ms)
        held.votes[validator] = vote.signature
        self._per_validator[validator] = self._per_validator.get(validator, 0) + 1
        return ""

    def eligible(self, key: SlashKey) -> list[bytes]:
        """The signatures of `key`'s validators whose chain stake is read and enough."""
        held = self._open.get(key)
        if held is None:
            return []
        least = self.params.validator_min_stake
        return [sig for validator, sig in held.votes.items()
                if (self.stakes.stake(validator) or 0) >= least]

    def ready(self) -> list[tuple[SlashKey, OpenSlash, list[bytes]]]:
        """Triples not yet submitted that hold the threshold of eligible signatures."""
        out = []
        for key, held in self._open.items():
            if held.submitted:
                continue
            sigs = self.eligible(key)
            if len(sigs) >= self.params.threshold:
                out.append((key, held, sigs[:MAX_SIGNERS_PER_SLASH]))
        return out

    def close(self, key: SlashKey) -> None:
        """Forget `key` (slashed, by this node or another)."""
        held = self._open.pop(key, None)
        if held is None:
            return
        for validator in held.votes:
            left = self._per_validator.get(validator, 0) - 1
            if left > 0:
                self._per_validator[validator] = left
            else:
                self._per_validator.pop(validator, None)

    def expire(self, now_ms: int) -> int:
        """Drop triples first seen over VOTE_TTL_MS ago; how many."""
        old = [k for k, h in self._open.items() if now_ms - h.first_seen_ms > VOTE_TTL_MS]
        for key in old:
            self.close(key)
        return len(old)

    def _make_room(self) -> None:
        if len(self._open) < MAX_OPEN_SLASHES:
            return
        victim = next((k for k in self._open if not self.eligible(k)), None)
        self.close(victim if victim is not None else next(iter(self._open)))

    def __len__(self) -> int:
        return len(self._open)

    @property
    def votes_held(self) -> int:
        return sum(len(h.votes) for h in self._open.values())

    def get(self, key: SlashKey) -> OpenSlash | None:
        return self._open.get(key)
