"""web3's failures become the project's chain errors (exit codes 14-17), one line each,
naming the RPC URL or what is missing."""

from __future__ import annotations

import pytest
import requests
from web3.exceptions import ContractLogicError, TimeExhausted, Web3RPCError

from p2pinfer.errors import (
    ChainError,
    ChainFundsError,
    ChainRevertedError,
    ChainUnreachableError,
)
from p2pinfer.settle.transact import chain_errors

RPC = "http://127.0.0.1:1"


def _raise(exc: BaseException) -> tuple[type[ChainError], str]:
    with pytest.raises(ChainError) as info, chain_errors(RPC, "depositing 1.000000 credits"):
        raise exc
    return type(info.value), str(info.value)


def test_connection_refused_is_unreachable_with_the_url() -> None:
    kind, text = _raise(requests.exceptions.ConnectionError("refused"))
    assert kind is ChainUnreachableError and RPC in text
    assert ChainUnreachableError.exit_code == 15


def test_timeout_is_unreachable() -> None:
    kind, _ = _raise(requests.exceptions.ReadTimeout("slow"))
    assert kind is ChainUnreachableError


def test_a_revert_carries_the_contracts_reason() -> None:
    kind, text = _raise(ContractLogicError("execution reverted: reclaim not due"))
    assert kind is ChainRevertedError and ChainRevertedError.exit_code == 17
    assert text == "depositing 1.000000 credits reverted: reclaim not due"


def test_a_revert_without_reason_says_so() -> None:
    _, text = _raise(ContractLogicError("execution reverted"))
    assert text.endswith("reverted: no reason given")


def test_insufficient_ether_is_a_funds_error() -> None:
    kind, text = _raise(Web3RPCError("insufficient funds for gas * price + value"))
    assert kind is ChainFundsError and ChainFundsError.exit_code == 16
    assert "ether for gas" in text


def test_other_failures_are_chain_errors() -> None:
    assert _raise(TimeExhausted("no receipt"))[0] is ChainError
    assert _raise(Web3RPCError("nonce too low"))[0] is ChainError


def test_chain_errors_pass_through_unchanged() -> None:
    original = ChainFundsError("needs 5 credits")
    with pytest.raises(ChainFundsError) as info, chain_errors(RPC, "x"):
        raise original
    assert info.value is original
