"""Sending a contract call as a locally signed transaction, and turning web3's failures
into the project's chain errors (docs/cli.md: exit codes 14-17).

The node's key never leaves the process: the transaction is built here (nonce,
chain id, gas estimate with a margin, EIP-1559 fees from the node), signed with
eth_account and sent raw, so any JSON-RPC endpoint works, unlocked accounts or not.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any, cast

from eth_account import Account
from web3 import Web3
from web3.contract.contract import ContractFunction
from web3.exceptions import (
    ContractLogicError,
    ProviderConnectionError,
    TimeExhausted,
    Web3Exception,
    Web3RPCError,
)
from web3.types import TxParams, Wei

from p2pinfer.errors import (
    ChainError,
    ChainFundsError,
    ChainRevertedError,
    ChainUnreachableError,
)
from p2pinfer.settle.account import ChainAccount
from p2pinfer.settle.ports import TxOutcome
from p2pinfer.settle.units import wei_to_ether

GAS_MARGIN_PCT = 20  # estimates are exact on py-evm; real chains drift between blocks


def revert_reason(exc: ContractLogicError) -> str:
    """The contract's reason string out of web3's revert error."""
    text = str(exc.message if exc.message else exc)
    return text.removeprefix("execution reverted: ").removeprefix("execution reverted") \
        or "no reason given"


@contextlib.contextmanager
def chain_errors(rpc: str, action: str) -> Iterator[None]:
    """Map what web3 raises during `action` to ChainUnreachableError (no answer),
    ChainFundsError (too little ether), ChainRevertedError (the contract's reason)
    or ChainError; never a web3 traceback."""
    try:
        yield
    except ChainError:
        raise
    except ContractLogicError as exc:
        raise ChainRevertedError(f"{action} reverted: {revert_reason(exc)}") from None
    except (OSError, ProviderConnectionError) as exc:  # requests' errors are OSErrors
        raise ChainUnreachableError(
            f"cannot reach the chain at {rpc}: {type(exc).__name__}") from None
    except TimeExhausted as exc:
        raise ChainError(f"{action}: {exc}") from None
    except Web3RPCError as exc:
        message = str(exc.message if exc.message else exc)
        if "insufficient funds" in message:
            raise ChainFundsError(f"{action}: too little ether for gas: {message}") from None
        raise ChainError(f"{action} failed: {message}") from None
    except (Web3Exception, ValueError) as exc:
        raise ChainError(f"{action} failed: {exc}") from None


class Transactor:
    """Builds, signs, sends and waits for transactions from one account."""

    def __init__(self, w3: Web3, account: ChainAccount, chain_id: int, rpc: str,
                 receipt_timeout_s: float) -> None:
        self.w3 = w3
        self.account = account
        self.chain_id = chain_id
        self.rpc = rpc
        self.receipt_timeout_s = receipt_timeout_s
        # From reading the next nonce to the chain holding the transaction: two sends
        # from this account in two threads (the redeemer's, the slasher's) would read
        # the same nonce, and the second would be refused.
        self._nonce_lock = threading.Lock()

    def fees(self) -> tuple[int, int]:
        """(maxFeePerGas, maxPriorityFeePerGas) in wei: twice the latest base fee plus
        the node's suggested tip, so the fee survives a few rising blocks."""
        tip = int(self.w3.eth.max_priority_fee)
        base = int(self.w3.eth.get_block("latest").get("baseFeePerGas", 0) or 0)
        return 2 * base + tip, tip

    def send(self, call: ContractFunction, action: str) -> TxOutcome:
        """Send `call` and wait for it to be mined; ChainRevertedError with the reason
        when it reverts (at estimation or in the block)."""
        sender = self.account.address
        with chain_errors(self.rpc, action):
            max_fee, tip = self.fees()
            params: TxParams = {"from": Web3.to_checksum_address(sender),
                                "chainId": self.chain_id, "maxFeePerGas": Wei(max_fee),
                                "maxPriorityFeePerGas": Wei(tip)}
            gas = int(call.estimate_gas(params)) * (100 + GAS_MARGIN_PCT) // 100
            self._check_ether(gas * max_fee, action)
            with self._nonce_lock:
                nonce = self.w3.eth.get_transaction_count(Web3.to_checksum_address(sender),
                                                          "pending")
                tx = call.build_transaction({**params, "gas": gas, "nonce": nonce})
                signed = Account.sign_transaction(cast(dict[str, Any], tx),
                                                  self.account.private_key)
                tx_hash = self.w3.eth.send_raw_transaction(signed.raw_transaction)
            receipt = self.w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout_s, poll_latency=0.05)
            if receipt["status"] != 1:
                self._raise_revert(call, action, int(receipt["blockNumber"]))
            return TxOutcome(tx_hash="0x" + bytes(tx_hash).hex(),
                             block=int(receipt["blockNumber"]),
                             gas_used=int(receipt["gasUsed"]))

    def _check_ether(self, cost_wei: int, action: str) -> None:
        balance = int(self.w3.eth.get_balance(Web3.to_checksum_address(self.account.address)))
        if balance < cost_wei:
            raise ChainFundsError(
                f"{action} needs up to {wei_to_ether(cost_wei)} ether for gas; "
                f"{self.account.address} holds {wei_to_ether(balance)}")

    def _raise_revert(self, call: ContractFunction, action: str, block: int) -> None:
        # The receipt has no reason: re-run the call on the state it ran on.
        try:
            call.call({"from": Web3.to_checksum_address(self.account.address)},
                      block_identifier=max(block - 1, 0))
        except ContractLogicError as exc:
            raise ChainRevertedError(f"{action} reverted: {revert_reason(exc)}") from None
        raise ChainRevertedError(f"{action} reverted in block {block} (no reason given)")
