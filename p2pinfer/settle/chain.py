"""`ChainClient`: the node's and the wallet's view of the settlement contracts over any
EVM JSON-RPC endpoint (web3's HTTPProvider), implementing `ports.ChainPort`.

Every method blocks (a round trip, or a transaction and its receipt): node code
calls them through `trio.to_thread.run_sync`. Only the Channels address is needed:
the token and the stake manager are read from it. Failures are the project's chain
errors (see `transact.chain_errors`), each naming the RPC URL or the missing amount.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import requests
from eth_typing import ChecksumAddress
from web3 import Web3
from web3.contract import Contract
from web3.exceptions import TransactionNotFound
from web3.providers.rpc import HTTPProvider
from web3.providers.rpc.utils import REQUEST_RETRY_ALLOWLIST, ExceptionRetryConfiguration

from p2pinfer.errors import ChainFundsError, ChainUnreachableError, UsageError
from p2pinfer.settle.account import ChainAccount
from p2pinfer.settle.artifacts import load_artifacts
from p2pinfer.settle.ports import ChainPort, ChannelState, TxOutcome, VoucherClaim
from p2pinfer.settle.transact import Transactor, chain_errors
from p2pinfer.settle.units import units_to_credits

DEFAULT_TIMEOUT_S = 5.0
DEFAULT_RECEIPT_TIMEOUT_S = 60.0

READ_RETRY = ExceptionRetryConfiguration(
    errors=(requests.exceptions.ConnectionError,), retries=3, backoff_factor=0.1,
    method_allowlist=[method for method in REQUEST_RETRY_ALLOWLIST
                      if method not in ("eth_sendRawTransaction", "eth_sign",
                                        "eth_signTypedData")])
"""A read whose connection fails is tried up to 3 times in all (0.1 s, then 0.2 s
apart); a transaction is sent once, whatever happens to its connection."""


def rpc_provider(rpc: str, timeout_s: float, session: requests.Session) -> HTTPProvider:
    """web3's provider for `rpc` over `session`. An RPC server closes idle keep-alive
    connections (hypercorn, the local chain's, after 5 s; geth after 120 s), and one
    closed just as a request goes out fails that request with no answer: reads are
    tried again on a new connection (`READ_RETRY`). A read that timed out is not
    (a slow chain would only be waited on three times over); a connect that timed out
    is (requests makes it a connection error too): an endpoint that cannot be reached
    at all fails after 3 x `timeout_s`."""
    return HTTPProvider(rpc, request_kwargs={"timeout": timeout_s}, session=session,
                        exception_retry_configuration=READ_RETRY)


def checksum(address: str, what: str = "address") -> ChecksumAddress:
    """`address` checksummed; UsageError when it is not a 20-byte hex address."""
    if not isinstance(address, str) or not Web3.is_address(address):
        raise UsageError(f"not a chain {what}: {address!r} (expected 0x and 40 hex digits)")
    return Web3.to_checksum_address(address)


@dataclass(frozen=True)
class ChannelView:
    """A channel this account funds, toward `provider`."""

    provider: str
    state: ChannelState


@dataclass(frozen=True)
class Balances:
    """What one account holds on the chain (token amounts in units, ether in wei)."""

    address: str
    ether_wei: int
    credits: int
    locked_stake: int
    unbonding: int
    release_at: int  # unix seconds the unbonding lot is free; 0: none
    channels: tuple[ChannelView, ...]


@dataclass(frozen=True)
class Redemption:
    """One `Redeemed` event: a voucher's new amount and its split (units)."""

    block: int
    consumer: str
    amount: int
    provider_share: int
    pool_share: int
    burned: int
    treasury_share: int


class ChainClient:
    """The settlement contracts as seen by one account."""

    def __init__(self, w3: Web3, rpc: str, account: ChainAccount, chain_id: int,
                 channels: Contract, token: Contract, stake: Contract,
                 receipt_timeout_s: float = DEFAULT_RECEIPT_TIMEOUT_S,
                 session: requests.Session | None = None) -> None:
        self.w3 = w3
        self._session = session  # the HTTP session `connect` made (closed by `close`)
        self.rpc = rpc
        self.account = account
        self._chain_id = chain_id
        self.channels = channels
        self.token = token
        self.stake = stake
        self._tx = Transactor(w3, account, chain_id, rpc, receipt_timeout_s)

    @classmethod
    def connect(cls, rpc: str, channels_address: str, account: ChainAccount, *,
                expected_chain_id: int | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                receipt_timeout_s: float = DEFAULT_RECEIPT_TIMEOUT_S) -> ChainClient:
        """Reach `rpc`, check it is the expected chain and that a Channels contract is at
        `channels_address`, and read the token and stake addresses from it."""
        channels_at = checksum(channels_address, "contract address")
        # Our own session, so `close` can close it (web3 caches the ones it makes and
        # never closes them: each client left an open socket to be warned about).
        session = requests.Session()
        try:
            return cls._connect(session, rpc, channels_at, account, expected_chain_id,
                                timeout_s, receipt_timeout_s)
        except BaseException:
            session.close()
            raise

    @classmethod
    def _connect(cls, session: requests.Session, rpc: str, channels_at: ChecksumAddress,
                 account: ChainAccount, expected_chain_id: int | None, timeout_s: float,
                 receipt_timeout_s: float) -> ChainClient:
        w3 = Web3(rpc_provider(rpc, timeout_s, session))
        artifacts = load_artifacts()
        with chain_errors(rpc, "connecting"):
            chain_id = int(w3.eth.chain_id)
            if expected_chain_id is not None and chain_id != expected_chain_id:
                raise ChainUnreachableError(
                    f"{rpc} is chain {chain_id}, not the deployment's chain "
                    f"{expected_chain_id}")
            if not bytes(w3.eth.get_code(channels_at)):
                raise ChainUnreachableError(
                    f"no contract at {channels_at} on {rpc} (chain {chain_id}): "
                    "wrong --chain-contract, or another chain")
            channels = w3.eth.contract(address=channels_at, abi=artifacts["Channels"].abi)
            token_at = Web3.to_checksum_address(channels.functions.token().call())
            stake_at = Web3.to_checksum_address(channels.functions.stake().call())
        token = w3.eth.contract(address=token_at, abi=artifacts["Credit"].abi)
        stake = w3.eth.contract(address=stake_at, abi=artifacts["Stake"].abi)
        return cls(w3, rpc, account, chain_id, channels, token, stake, receipt_timeout_s,
                   session)

    def close(self) -> None:
        """Close the HTTP connections to the RPC endpoint (the client is unusable after)."""
        if self._session is not None:
            self._session.close()

    def __enter__(self) -> ChainClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- ChainPort ---

    @property
    def address(self) -> str:
        return self.account.address

    @property
    def chain_id(self) -> int:
        return self._chain_id

    @property
    def channels_address(self) -> str:
        return str(self.channels.address)

    def _read(self, action: str, call: Any) -> Any:
        with chain_errors(self.rpc, action):
            return call.call()

    def block_number(self) -> int:
        with chain_errors(self.rpc, "reading the block number"):
            return int(self.w3.eth.block_number)

    def gas_price(self) -> int:
        with chain_errors(self.rpc, "reading the gas price"):
            return int(self.w3.eth.gas_price)

    def channel(self, consumer: str, provider: str) -> ChannelState:
        deposit, redeemed, reclaim_at = self._read("reading a channel", (
            self.channels.functions.channel(checksum(consumer), checksum(provider))))
        return ChannelState(int(deposit), int(redeemed), int(reclaim_at))

    def transaction_succeeded(self, tx_hash: str) -> bool | None:
        """Whether a mined transaction succeeded (None: the chain does not know it)."""
        with chain_errors(self.rpc, "reading a transaction receipt"):
            try:
                receipt = self.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            except TransactionNotFound:
                return None
        return int(receipt["status"]) == 1

    def stake_of(self, account: str) -> int:
        return int(self._read("reading a stake",
                              self.stake.functions.stake_of(checksum(account))))

    def stake_at(self, account: str, block: int) -> int:
        return int(self._read("reading a stake",
                              self.stake.functions.stake_at(checksum(account), block)))

    def total_stake_at(self, block: int) -> int:
        return int(self._read("reading the total stake",
                              self.stake.functions.total_stake_at(block)))

    def redeem_many(self, claims: list[VoucherClaim]) -> TxOutcome:
        call = self.channels.functions.redeem_many(
            [checksum(c.consumer) for c in claims], [c.cumulative for c in claims],
            [c.signature for c in claims])
        return self._tx.send(call, f"redeeming {len(claims)} voucher(s)")

    def slash(self, provider: str, amount: int, evidence: bytes,
              signatures: list[bytes]) -> TxOutcome:
        call = self.stake.functions.slash(checksum(provider), amount, evidence, signatures)
        return self._tx.send(call, "slashing")

    # --- the wallet ---

    def credits_of(self, account: str) -> int:
        return int(self._read("reading a balance",
                              self.token.functions.balanceOf(checksum(account))))

    def chain_time(self) -> int:
        """The latest block's timestamp (unix seconds): the contracts' clock."""
        with chain_errors(self.rpc, "reading the latest block"):
            return int(self.w3.eth.get_block("latest")["timestamp"])

    def funded_providers(self) -> list[str]:
        """Every provider this account ever deposited to (its `Deposited` events)."""
        with chain_errors(self.rpc, "reading deposits"):
            events = self.channels.events.Deposited().get_logs(
                argument_filters={"consumer": self.account.address}, from_block=0)
            seen = dict.fromkeys(str(e["args"]["provider"]) for e in events)
        return list(seen)

    def total_supply(self) -> int:
        """The credit token's totalSupply (redemptions burn a share of each, slashes all)."""
        return int(self._read("reading the total supply", self.token.functions.totalSupply()))

    def redemptions(self, provider: str, from_block: int = 0) -> list[Redemption]:
        """The `Redeemed` events paying `provider` since `from_block`, oldest first."""
        with chain_errors(self.rpc, "reading redemptions"):
            events = self.channels.events.Redeemed().get_logs(
                argument_filters={"provider": checksum(provider)}, from_block=from_block)
        return [Redemption(
            block=int(e["blockNumber"]), consumer=str(e["args"]["consumer"]),
            amount=int(e["args"]["amount"]), provider_share=int(e["args"]["provider_share"]),
            pool_share=int(e["args"]["pool_share"]), burned=int(e["args"]["burned"]),
            treasury_share=int(e["args"]["treasury_share"])) for e in events]

    def balances(self) -> Balances:
        """Ether, credits, locked and unbonding stake, and the channels this account funds."""
        me = checksum(self.account.address)
        with chain_errors(self.rpc, "reading balances"):
            ether = int(self.w3.eth.get_balance(me))
            unbonding = int(self.stake.functions.unbonding(me).call())
            release_at = int(self.stake.functions.release_at(me).call())
        channels = tuple(ChannelView(p, self.channel(me, p)) for p in self.funded_providers())
        return Balances(address=me, ether_wei=ether, credits=self.credits_of(me),
                        locked_stake=self.stake_of(me), unbonding=unbonding,
                        release_at=release_at if unbonding else 0, channels=channels)

    def _ensure_credits(self, units: int, action: str) -> None:
        held = self.credits_of(self.account.address)
        if held < units:
            raise ChainFundsError(
                f"{action} needs {units_to_credits(units)} credits; {self.account.address} "
                f"holds {units_to_credits(held)} (short by {units_to_credits(units - held)})")

    def _approve(self, spender: Contract, units: int, action: str) -> None:
        me = checksum(self.account.address)
        allowed = int(self._read("reading an allowance",
                                 self.token.functions.allowance(me, spender.address)))
        if allowed < units:
            self._tx.send(self.token.functions.approve(spender.address, units),
                          f"approving {action}")

    def deposit(self, provider: str, units: int) -> TxOutcome:
        """Approve and deposit `units` into the channel toward `provider`."""
        action = f"depositing {units_to_credits(units)} credits"
        self._ensure_credits(units, action)
        self._approve(self.channels, units, action)
        return self._tx.send(self.channels.functions.deposit(checksum(provider), units), action)

    def start_reclaim(self, provider: str) -> TxOutcome:
        return self._tx.send(self.channels.functions.start_reclaim(checksum(provider)),
                             "starting the reclaim")

    def reclaim(self, provider: str) -> TxOutcome:
        return self._tx.send(self.channels.functions.reclaim(checksum(provider)), "reclaiming")

    def redeem(self, consumer: str, cumulative: int, sig: bytes) -> TxOutcome:
        call = self.channels.functions.redeem(checksum(consumer), cumulative, sig)
        return self._tx.send(call, "redeeming a voucher")

    def lock(self, units: int) -> TxOutcome:
        """Approve and lock `units` as stake."""
        action = f"staking {units_to_credits(units)} credits"
        self._ensure_credits(units, action)
        self._approve(self.stake, units, action)
        return self._tx.send(self.stake.functions.lock(units), action)

    def begin_unbond(self, units: int) -> TxOutcome:
        return self._tx.send(self.stake.functions.begin_unbond(units),
                             f"unbonding {units_to_credits(units)} credits")

    def withdraw_stake(self) -> TxOutcome:
        return self._tx.send(self.stake.functions.withdraw(), "withdrawing unbonded stake")


def as_port(client: ChainClient) -> ChainPort:
    """`client` as the node's `ChainPort` (and mypy's proof that it is one)."""
    return client
