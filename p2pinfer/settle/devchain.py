"""`p2pinfer chain serve`: a local EVM chain for testnets (docs/settlement.md).

An HTTP JSON-RPC 2.0 front over eth-tester's py-evm backend (pure Python, from
PyPI: nothing is downloaded at run time). At start it deploys the contracts from
the faucet account (eth-tester's first, pre-funded, unlocked account), funds the
accounts it is told to, and writes the deployment file; then it serves until
cancelled. py-evm's state is touched from the trio thread only: each request runs
to completion on the event loop (a dev chain has no other work to overlap).

Requests go through web3's eth-tester middleware (wire names and hex quantities in,
eth-tester's keys out); `to_wire` turns results back into JSON-RPC's hex encoding.
Besides the `eth_*` set, it answers `evm_increaseTime`, `evm_mine`, `evm_snapshot`,
`evm_revert` (tests travel in time) and `p2pinfer_fund(address, credits)`, a faucet
that exists on this dev chain only.
"""

from __future__ import annotations

import logging
from typing import Any, cast

import rlp
from eth_abi import abi
from eth_account.typed_transactions.typed_transaction import TypedTransaction
from eth_tester import EthereumTester
from eth_tester.exceptions import TransactionFailed
from eth_tester.exceptions import ValidationError as TesterValidationError
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.providers.eth_tester import EthereumTesterProvider
from web3.types import RPCEndpoint, Wei

from p2pinfer.settle.devchain_logs import HASH, LogIndex, UnknownBlock, parse_query
from p2pinfer.settle.jsonrpc import INTERNAL_ERROR, INVALID_PARAMS, METHOD_NOT_FOUND, RpcError
from p2pinfer.settle.units import credits_to_units

log = logging.getLogger(__name__)

FUND_ETHER_WEI = 10 * 10**18  # gas money for one funded account: thousands of transactions
REVERTED = 3  # geth's code for "execution reverted", with the revert data in `data`
SERVER_ERROR = -32000
ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string)

# Served by eth-tester through web3's middleware, unchanged.
PASSTHROUGH = frozenset({
    "eth_chainId", "eth_blockNumber", "eth_getBalance",
    "eth_getTransactionCount", "eth_gasPrice", "eth_maxPriorityFeePerGas", "eth_feeHistory",
    "eth_estimateGas", "eth_call", "eth_sendRawTransaction", "eth_sendTransaction",
    "eth_getTransactionReceipt", "eth_getTransactionByHash", "eth_getBlockByNumber",
    "eth_getBlockByHash", "eth_getCode", "eth_getStorageAt", "eth_accounts",
    "eth_syncing", "net_listening", "web3_clientVersion", "evm_snapshot", "evm_revert",
})


# Looked up by eth-tester walking back from the head; answered null at once when the
# hash is in no block and not waiting (`DevChain._unknown_transaction`).
BY_HASH = frozenset({"eth_getTransactionReceipt", "eth_getTransactionByHash"})


def to_wire(value: Any) -> Any:
    """eth-tester's Python values as JSON-RPC: integers as hex quantities, bytes as
    hex data; strings, booleans, floats and None unchanged."""
    if isinstance(value, bool) or value is None or isinstance(value, str | float):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return str(value)


def _quantity(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return int(value, 16) if value.startswith("0x") else int(value)
    raise ValueError(f"not a quantity: {value!r}")


def raw_chain_id(raw_hex: str) -> int | None:
    """The chain id a signed raw transaction is bound to; None for a pre-EIP-155 one."""
    raw = bytes.fromhex(raw_hex.removeprefix("0x"))
    if raw and raw[0] <= 0x7F:  # typed (EIP-2718): the chain id is a field
        return int(TypedTransaction.from_bytes(HexBytes(raw)).as_dict()["chainId"])
    v = int.from_bytes(rlp.decode(raw)[6], "big")  # legacy: v = 35 + 2 * chain id (+1)
    return (v - 35) // 2 if v >= 35 else None


def revert_error(exc: TransactionFailed) -> RpcError:
    """geth's shape for a revert: code 3, the reason in the message, Error(reason) in data."""
    text = str(exc.args[0]) if exc.args else "execution reverted"
    reason = text.removeprefix("execution reverted: ").removeprefix("execution reverted")
    data = "0x" + (ERROR_SELECTOR + abi.encode(["string"], [reason])).hex()
    return RpcError(REVERTED, f"execution reverted: {reason}" if reason else text, data)


def server_error(exc: Exception) -> RpcError:
    """A refusal of the chain (-32000), worded as geth does where clients look for words:
    too little ether is "insufficient funds"."""
    text = str(exc)
    if "enough balance" in text or "cannot afford" in text:
        return RpcError(SERVER_ERROR, f"insufficient funds for gas * price + value: {text}")
    return RpcError(SERVER_ERROR, f"{type(exc).__name__}: {text}")


class DevChain:
    """One in-memory chain: eth-tester's py-evm backend, its faucet, and the JSON-RPC
    method table. Not thread-safe: use it from one thread."""

    def __init__(self) -> None:
        self.tester = EthereumTester()
        self.provider = EthereumTesterProvider(self.tester)
        # A full Web3 for our own deployment and funding; a bare one (no middleware of
        # its own) to pass JSON-RPC requests through eth-tester's formatting.
        self.w3 = Web3(self.provider)
        bare = Web3(self.provider, middleware=[])
        self._request = self.provider.request_func(bare, bare.middleware_onion)
        self.faucet: ChecksumAddress = Web3.to_checksum_address(self.tester.get_accounts()[0])
        self.credit_address: ChecksumAddress | None = None
        self._credit_abi: list[dict[str, Any]] = []
        self.time_offset_s = 0
        self.logs = LogIndex(self.tester.backend.chain)

    def use_credit(self, address: str, abi_: list[dict[str, Any]]) -> None:
        """The credit token the faucet hands out (after deployment)."""
        self.credit_address = Web3.to_checksum_address(address)
        self._credit_abi = abi_

    def credit(self) -> Contract:
        """The credit token's contract, for transactions from the chain's own accounts."""
        if self.credit_address is None:
            raise RuntimeError("the contracts are not deployed yet")
        return self.w3.eth.contract(address=self.credit_address, abi=self._credit_abi)

    def set_block_time(self, seconds: float) -> None:
        """0: mine a block per transaction; more: leave transactions pending for `mine`."""
        if seconds > 0:
            self.tester.disable_auto_mine_transactions()
        else:
            self.tester.enable_auto_mine_transactions()

    def mine(self, blocks: int = 1) -> None:
        self.tester.mine_blocks(blocks)

    def increase_time(self, seconds: int) -> int:
        """Move the next block's timestamp `seconds` ahead; the total moved so far."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        pending = self.tester.get_block_by_number("pending")["timestamp"]
        self.tester.time_travel(pending + seconds)
        self.time_offset_s += seconds
        return self.time_offset_s

    def fund(self, address: str, units: int) -> dict[str, Any]:
        """Send `units` credit units from the faucet, and ether for gas when the account
        holds less than a tenth of the grant."""
        if not Web3.is_address(address):
            raise ValueError(f"not an address: {address!r}")
        who = Web3.to_checksum_address(address)
        if self.credit_address is None:
            raise RuntimeError("the contracts are not deployed yet")
        out: dict[str, Any] = {"address": who, "credits_units": units, "ether_wei": 0}
        # Funding mines at once even with a block time (taking waiting transactions along):
        # eth-tester checks a waiting transaction against the last block's state, where
        # the faucet's second one would have a nonce too far ahead.
        auto_mine = self.tester.auto_mine_transactions
        self.tester.enable_auto_mine_transactions()
        try:
            self._fund(who, units, out)
        finally:
            if not auto_mine:
                self.tester.disable_auto_mine_transactions()
        return out

    def _fund(self, who: ChecksumAddress, units: int, out: dict[str, Any]) -> None:
        if self.w3.eth.get_balance(who) < FUND_ETHER_WEI // 10:
            self.w3.eth.send_transaction(
                {"from": self.faucet, "to": who, "value": Wei(FUND_ETHER_WEI)})
            out["ether_wei"] = FUND_ETHER_WEI
        if units:
            tx_hash = self.credit().functions.transfer(who, units).transact({"from": self.faucet})
            out["tx"] = "0x" + bytes(tx_hash).hex()

    def dispatch(self, method: str, params: list[Any]) -> Any:
        """Answer one JSON-RPC call; RpcError with the JSON-RPC error object otherwise."""
        try:
            # Blocks mined since the last request (by it, by the block timer, by `fund`).
            head = self.logs.catch_up()
            if method == "eth_getLogs":
                return self.logs.query(parse_query(params, head))
            if method in BY_HASH and self._unknown_transaction(method, params):
                return None
            if method == "net_version":  # eth-tester says "1"; geth says the chain's id
                return str(int(self.tester.backend.chain.chain_id))
            if method == "eth_sendRawTransaction":
                self._check_chain_id(str(params[0]))
            if method in PASSTHROUGH:
                return self._passthrough(method, params)
            if method == "evm_mine":
                self.mine(_quantity(params[0]) if params else 1)
                return "0x0"
            if method == "evm_increaseTime":
                return self.increase_time(_quantity(params[0]))
            if method == "p2pinfer_fund":
                address, credits = params
                return self.fund(address, credits_to_units(credits))
        except RpcError:
            raise
        except TransactionFailed as exc:
            raise revert_error(exc) from None
        except UnknownBlock as exc:  # geth: -32000 "unknown block"
            raise RpcError(SERVER_ERROR, str(exc)) from None
        except TesterValidationError as exc:
            raise server_error(exc) from None
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            if "afford" in str(exc) or "enough balance" in str(exc):
                raise server_error(exc) from None
            raise RpcError(INVALID_PARAMS, f"invalid params for {method}: {exc}") from None
        except Exception as exc:  # eth-tester's and py-evm's other refusals
            raise server_error(exc) from None
        raise RpcError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")

    def _unknown_transaction(self, method: str, params: list[Any]) -> bool:
        """In no mined block (the index holds them all) and, for the transaction itself,
        not waiting to be mined (with a block time): eth-tester would walk back over
        every block of the chain to answer null."""
        if len(params) != 1 or not isinstance(params[0], str) or not HASH.fullmatch(params[0]):
            return False  # eth-tester's own answer to a malformed request
        wanted = params[0].lower()
        if self.logs.mined(wanted):
            return False
        if method == "eth_getTransactionReceipt":
            return True  # a waiting transaction has no receipt either
        # eth-tester keeps waiting transactions apart, each with its 0x-hash.
        waiting = getattr(self.tester, "_pending_transactions", [])
        return all(str(t.get("hash", "")).lower() != wanted for t in waiting)

    def _check_chain_id(self, raw_hex: str) -> None:
        # eth-tester itself accepts a transaction signed for any chain.
        chain_id = raw_chain_id(raw_hex)
        ours = int(self.tester.backend.chain.chain_id)
        if chain_id is not None and chain_id != ours:
            raise RpcError(SERVER_ERROR, f"invalid chain id for signer: have {chain_id} "
                           f"want {ours}")

    def _passthrough(self, method: str, params: list[Any]) -> Any:
        response = cast(dict[str, Any], self._request(RPCEndpoint(method), params))
        if "error" in response:
            error = response["error"]
            raise RpcError(int(error.get("code", INTERNAL_ERROR)), str(error.get("message")))
        return to_wire(response.get("result"))
