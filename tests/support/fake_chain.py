"""`FakeChainForTests`: an in-memory ChainPort for unit tests of the node's settlement.

It keeps channels, balances and the supply the way Channels.vy does (voucher check,
"nothing to redeem", "over deposit", the split with burn taking the residue), so
the node side can be tested without a chain; the integration tests use a real one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from p2pinfer.errors import ChainRevertedError
from p2pinfer.settle.ports import ChannelState, TxOutcome, VoucherClaim
from p2pinfer.settle.vouchers import recover_signer, voucher_digest

CHANNELS = "0x" + "c0" * 20
TREASURY = "0x" + "7e" * 20
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

    def as_account(self, address: str) -> FakeChainForTests:
        other = FakeChainForTests(address, self.chain_id, self.channels_address, self.gas,
                                  self.split_bps)
        other.state, other.balances = self.state, self.balances
        return other

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
        return 0

    def stake_at(self, account: str, block: int) -> int:
        return 0

    def total_stake_at(self, block: int) -> int:
        return 0

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
        raise ChainRevertedError("the fake chain does not slash")

    def gas_price(self) -> int:
        return self.gas
