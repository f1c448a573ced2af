"""`FakeChainForTests`: an in-memory `ChainPort` for unit tests, with the Stake
contract's rules the node side relies on (docs/settlement.md): locked stake with
per-block checkpoints (`stake_at`, `total_stake_at`), and `slash` checking M-of-N
EIP-191 signatures of distinct staked validators over the slash digest, one slash per
evidence, burning min(amount, stake). Every state change mines one block. The real
contracts are exercised in tests/integration/settle/.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from p2pinfer.errors import ChainRevertedError, ChainUnreachableError
from p2pinfer.settle.ports import ChannelState, TxOutcome, VoucherClaim
from p2pinfer.settle.vouchers import recover_signer, slash_digest

FAKE_STAKE_CONTRACT = "0x000000000000000000000000000000000000Fa4e"


@dataclass
class FakeChainForTests:
    """A ChainPort with the Stake contract's rules and nothing else worth a network."""

    address: str = "0x0000000000000000000000000000000000000001"
    chain_id: int = 1337
    channels_address: str = "0x000000000000000000000000000000000000C4a1"
    stake_address: str = FAKE_STAKE_CONTRACT
    slash_threshold: int = 2
    validator_min_stake: int = 1_000_000
    total_supply: int = 10**15
    head: int = 1
    locked: dict[str, int] = field(default_factory=dict)
    # address -> [(block, locked at the end of that block)], ascending
    checkpoints: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    used_evidence: set[bytes] = field(default_factory=set)
    slash_calls: list[tuple[str, int, bytes, int]] = field(default_factory=list)
    reads: int = 0
    down: bool = False  # every call raises ChainUnreachableError
    _tx: itertools.count[int] = field(default_factory=itertools.count)
    # Nodes call from worker threads; a chain applies one transaction at a time.
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what tests do to the chain -------------------------------------------------------

    def mine(self, blocks: int = 1) -> int:
        self.head += blocks
        return self.head

    def lock(self, account: str, amount: int) -> int:
        """`account` locks `amount` more, in a new block; returns that block."""
        return self._set(account, self.locked.get(account, 0) + amount)

    def _set(self, account: str, amount: int) -> int:
        block = self.mine()
        self.locked[account] = amount
        self.checkpoints.setdefault(account, []).append((block, amount))
        return block

    # -- ChainPort ------------------------------------------------------------------------

    def _call(self) -> None:
        if self.down:
            raise ChainUnreachableError("fake chain is down")
        self.reads += 1

    def block_number(self) -> int:
        self._call()
        return self.head

    def channel(self, consumer: str, provider: str) -> ChannelState:
        self._call()
        return ChannelState(0, 0, 0)

    def stake_of(self, account: str) -> int:
        self._call()
        return self.locked.get(account, 0)

    def stake_at(self, account: str, block: int) -> int:
        self._call()
        held = 0
        for at, amount in self.checkpoints.get(account, []):
            if at > block:
                break
            held = amount
        return held

    def total_stake_at(self, block: int) -> int:
        self._call()
        return sum(self.stake_at(a, block) for a in self.checkpoints)

    def redeem_many(self, claims: list[VoucherClaim]) -> TxOutcome:
        self._call()
        raise ChainRevertedError("the fake chain has no channels")

    def slash(self, provider: str, amount: int, evidence: bytes,
              signatures: list[bytes]) -> TxOutcome:
        with self._lock:
            return self._slash(provider, amount, evidence, signatures)

    def _slash(self, provider: str, amount: int, evidence: bytes,
               signatures: list[bytes]) -> TxOutcome:
        self._call()
        self.slash_calls.append((provider, amount, evidence, len(signatures)))
        if evidence in self.used_evidence:
            raise ChainRevertedError("execution reverted: evidence already used")
        digest = slash_digest(self.stake_address, self.chain_id, provider, amount, evidence)
        signers = set()
        for sig in signatures:
            who = recover_signer(digest, sig)
            if (who is None or who == provider or who in signers
                    or self.locked.get(who, 0) < self.validator_min_stake):
                raise ChainRevertedError("execution reverted: bad validator signature")
            signers.add(who)
        if len(signers) < self.slash_threshold:
            raise ChainRevertedError("execution reverted: not enough validator signatures")
        self.used_evidence.add(evidence)
        taken = min(amount, self.locked.get(provider, 0))
        self._set(provider, self.locked.get(provider, 0) - taken)
        self.total_supply -= taken
        return TxOutcome(f"0x{next(self._tx):064x}", self.head, 100_000)

    def gas_price(self) -> int:
        return 1
