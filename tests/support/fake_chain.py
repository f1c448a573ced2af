"""`FakeChainForTests`: an in-memory ChainPort for unit tests of the node's settlement.

It keeps channels, balances and the supply the way Channels.vy does (voucher check,
"nothing to redeem", "over deposit", the split with burn taking the residue), and
stake the way Stake.vy does (locked stake with per-block checkpoints for `stake_at` /
`total_stake_at`; `slash` checking M-of-N EIP-191 signatures of distinct validators
holding `validator_min_stake` over the slash digest, one slash per evidence, burning
min(amount, stake)), so the node side can be tested without a chain; the integration
tests use a real one.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from p2pinfer.errors import ChainRevertedError
from p2pinfer.settle.ports import ChannelState, TxOutcome, VoucherClaim
from p2pinfer.settle.vouchers import recover_signer, slash_digest, voucher_digest

CHANNELS = "0x" + "c0" * 20
TREASURY = "0x" + "7e" * 20
STAKE = "0x" + "5a" * 20
SEED_SPLIT = (6000, 1500, 1500, 1000)  # provider, pool, burn, treasury


@dataclass
class FakeChainForTests:
    """One account's view (`address`) of a fake chain; `as_account` shares the state."""

    address: str
    chain_id: int = 31337
    channels_address: str = CHANNELS
    gas: int = 1_000_000_000  # wei per gas
    split_bps: tuple[int, int, int, int] = SEED_SPLIT
    state: dict[tuple[str, str], ChannelState] = field(default_factory=dict)
    balances: dict[str, int] = field(default_factory=dict)
    total_supply: int = 10**15
    pool: int = 0
    block: int = 1
    reads: int = 0
    redeem_calls: list[list[VoucherClaim]] = field(default_factory=list)
    fail_next_redeems: int = 0
    # Stake.vy: the contract's address and parameters (what `settle.node_stakes` reads),
    # locked stake now and its checkpoints [(block, locked at the end of it)].
    stake_address: str = STAKE
    slash_threshold: int = 2
    validator_min_stake: int = 1_000_000
    stakes: dict[str, int] = field(default_factory=dict)
    checkpoints: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    used_evidence: set[bytes] = field(default_factory=set)
    slash_calls: list[tuple[str, int, bytes, int]] = field(default_factory=list)
    stake_reads: int = 0
    # Nodes call from worker threads; a chain applies one transaction at a time.
    lock: threading.Lock = field(default_factory=threading.Lock)

    def as_account(self, address: str) -> FakeChainForTests:
        other = FakeChainForTests(address, self.chain_id, self.channels_address, self.gas,
                                  self.split_bps)
        other.state, other.balances = self.state, self.balances
        other.stakes, other.checkpoints, other.used_evidence = (
            self.stakes, self.checkpoints, self.used_evidence)
        return other

    def stake(self, account: str, amount: int) -> int:
        """`account` locks `amount` more, in a new block; returns that block."""
        return self._set_stake(account, self.stakes.get(account, 0) + amount)

    def _set_stake(self, account: str, amount: int) -> int:
        self.block += 1
        self.stakes[account] = amount
        self.checkpoints.setdefault(account, []).append((self.block, amount))
        return self.block

    def deposit(self, consumer: str, provider: str, amount: int) -> None:
        key = (consumer.lower(), provider.lower())
        s = self.state.get(key, ChannelState(0, 0, 0))
        self.state[key] = ChannelState(s.deposit + amount, s.redeemed, 0)

    def start_reclaim(self, consumer: str, provider: str, at: int) -> None:
        key = (consumer.lower(), provider.lower())
        s = self.state[key]
        self.state[key] = ChannelState(s.deposit, s.redeemed, at)

    # -- ChainPort --

    def block_number(self) -> int:
        return self.block

    def channel(self, consumer: str, provider: str) -> ChannelState:
        self.reads += 1
        return self.state.get((consumer.lower(), provider.lower()), ChannelState(0, 0, 0))

    def stake_of(self, account: str) -> int:
        self.stake_reads += 1
        return self.stakes.get(account, 0)

    def stake_at(self, account: str, block: int) -> int:
        self.stake_reads += 1
        held = 0
        for at, amount in self.checkpoints.get(account, []):
            if at > block:
                break
            held = amount
        return held

    def total_stake_at(self, block: int) -> int:
        return sum(self.stake_at(account, block) for account in self.checkpoints)

    def redeem_many(self, claims: list[VoucherClaim]) -> TxOutcome:
        self.redeem_calls.append(list(claims))
        if self.fail_next_redeems:
            self.fail_next_redeems -= 1
            raise ChainRevertedError("the fake chain refused this redeem_many")
        if not 1 <= len(claims) <= 64:
            raise ChainRevertedError("claims must be 1..64")
        for claim in claims:
            key = (claim.consumer.lower(), self.address.lower())
            s = self.state.get(key, ChannelState(0, 0, 0))
            digest = voucher_digest(self.channels_address, self.chain_id, claim.consumer,
                                    self.address, claim.cumulative)
            signer = recover_signer(digest, claim.signature)
            if signer is None or signer.lower() != claim.consumer.lower():
                raise ChainRevertedError("bad voucher")
            if claim.cumulative <= s.redeemed:
                raise ChainRevertedError("nothing to redeem")
            if claim.cumulative > s.deposit:
                raise ChainRevertedError("over deposit")
            delta = claim.cumulative - s.redeemed
            p, q, _, t = (delta * bps // 10_000 for bps in self.split_bps)
            burn = delta - p - q - t
            self.balances[self.address] = self.balances.get(self.address, 0) + p
            self.balances[TREASURY] = self.balances.get(TREASURY, 0) + t
            self.pool += q
            self.total_supply -= burn
            self.state[key] = ChannelState(s.deposit, claim.cumulative, s.reclaim_at)
        self.block += 1
        return TxOutcome("0x" + f"{self.block:064x}", self.block, 60_000 + 45_000 * len(claims))

    def slash(self, provider: str, amount: int, evidence: bytes,
              signatures: list[bytes]) -> TxOutcome:
        with self.lock:
            return self._slash(provider, amount, evidence, signatures)

    def _slash(self, provider: str, amount: int, evidence: bytes,
               signatures: list[bytes]) -> TxOutcome:
        self.slash_calls.append((provider, amount, evidence, len(signatures)))
        if evidence in self.used_evidence:
            raise ChainRevertedError("execution reverted: evidence already used")
        digest = slash_digest(self.stake_address, self.chain_id, provider, amount, evidence)
        signers = set()
        for sig in signatures:  # like the contract: a signature breaking a rule is not counted
            who = recover_signer(digest, sig)
            if (who is None or who == provider or who in signers
                    or self.stakes.get(who, 0) < self.validator_min_stake):
                continue
            signers.add(who)
        if len(signers) < self.slash_threshold:
            raise ChainRevertedError("execution reverted: not enough validator signatures")
        self.used_evidence.add(evidence)
        taken = min(amount, self.stakes.get(provider, 0))
        self._set_stake(provider, self.stakes.get(provider, 0) - taken)
        self.total_supply -= taken
        return TxOutcome("0x" + f"{self.block:064x}", self.block, 100_000)

    def gas_price(self) -> int:
        return self.gas
