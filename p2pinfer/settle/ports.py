"""What the node needs from the chain, as an interface (docs/settlement.md).

`settle.chain.ChainClient` implements `ChainPort` over web3 (any EVM JSON-RPC);
unit tests use fakes named as such. Every method is blocking (a JSON-RPC round
trip, or a transaction and its receipt): node code calls them through
`trio.to_thread.run_sync`, never on the trio loop, and never on a job's path
(`settle.channels` and `settle.stakes` keep cached views refreshed in the
background).

Addresses are checksummed hex strings ("0x..."); amounts are integer token units
(one unit = one ledger micro-credit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ChannelState:
    """One consumer → provider channel as the chain holds it."""

    deposit: int  # all the consumer ever deposited, less what a reclaim refunded
    redeemed: int  # all the provider ever redeemed
    reclaim_at: int  # unix seconds when the consumer may reclaim; 0: no reclaim pending

    @property
    def unredeemed(self) -> int:
        """What the channel still holds."""
        return self.deposit - self.redeemed


@dataclass(frozen=True)
class VoucherClaim:
    """A voucher a provider holds and redeems: the consumer owes `cumulative` in all."""

    consumer: str
    cumulative: int
    signature: bytes  # 65 bytes r || s || v, the consumer's EIP-191 signature


@dataclass(frozen=True)
class TxOutcome:
    """A mined transaction."""

    tx_hash: str
    block: int
    gas_used: int


class ChainPort(Protocol):
    """The chain operations the node uses; `ChainClient` is the real one."""

    @property
    def address(self) -> str:
        """This node's chain account."""
        ...

    @property
    def chain_id(self) -> int: ...

    @property
    def channels_address(self) -> str: ...

    def block_number(self) -> int: ...

    def channel(self, consumer: str, provider: str) -> ChannelState: ...

    def stake_of(self, account: str) -> int: ...

    def stake_at(self, account: str, block: int) -> int: ...

    def total_stake_at(self, block: int) -> int: ...

    def redeem_many(self, claims: list[VoucherClaim]) -> TxOutcome:
        """Redeem vouchers of several consumers to this account (the provider) in one
        transaction."""
        ...

    def slash(self, provider: str, amount: int, evidence: bytes,
              signatures: list[bytes]) -> TxOutcome: ...

    def gas_price(self) -> int:
        """Wei per gas the node would pay now."""
        ...
