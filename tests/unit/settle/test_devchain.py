"""The local chain's JSON-RPC methods: wire encoding, geth-shaped errors, time travel,
and a real web3 HTTP client sending a signed transaction through the server."""

from __future__ import annotations

import socket
from typing import Any

import pytest
import trio
from eth_abi import abi
from eth_account import Account
from eth_tester.exceptions import TransactionFailed
from hypercorn.config import Config
from web3 import Web3
from web3.providers.rpc import HTTPProvider

from p2pinfer.http.asgi_server import serve_asgi
from p2pinfer.settle.devchain import DevChain, revert_error, to_wire
from p2pinfer.settle.jsonrpc import METHOD_NOT_FOUND, RpcError, asgi_app


@pytest.fixture(scope="module")
def chain() -> DevChain:
    return DevChain()


def _signed_transfer(chain: DevChain, key: bytes, to: str, value: int, nonce: int) -> str:
    tx = {"to": to, "value": value, "gas": 21000, "maxFeePerGas": 3 * 10**9,
          "maxPriorityFeePerGas": 10**9, "nonce": nonce,
          "chainId": int(chain.dispatch("eth_chainId", []), 16)}
    return "0x" + bytes(Account.sign_transaction(tx, key).raw_transaction).hex()


def test_quantities_are_hex_and_data_is_hex() -> None:
    assert to_wire({"a": 10, "b": b"\x01\x02", "c": [True, None, "0x5"], "d": 0.5}) == {
        "a": "0xa", "b": "0x0102", "c": [True, None, "0x5"], "d": 0.5}


def test_reads_answer_in_wire_format(chain: DevChain) -> None:
    assert chain.dispatch("eth_chainId", []).startswith("0x")
    assert chain.dispatch("net_version", []) == str(int(chain.dispatch("eth_chainId", []), 16))
    assert chain.dispatch("eth_getBalance", [chain.faucet, "latest"]).startswith("0x")
    block = chain.dispatch("eth_getBlockByNumber", ["latest", False])
    assert block["number"].startswith("0x") and "parentHash" in block
    assert chain.dispatch("web3_clientVersion", []).startswith("EthereumTester")
    fees = chain.dispatch("eth_feeHistory", ["0x1", "latest", [10]])
    assert "baseFeePerGas" in fees


def test_a_signed_transfer_is_mined_with_a_receipt(chain: DevChain) -> None:
    me = Account.create()
    chain.fund(me.address, 0) if chain.credit_address else chain.w3.eth.send_transaction(
        {"from": chain.faucet, "to": me.address, "value": 10**18})
    raw = _signed_transfer(chain, bytes(me.key), chain.faucet, 5, 0)
    tx_hash = chain.dispatch("eth_sendRawTransaction", [raw])
    receipt = chain.dispatch("eth_getTransactionReceipt", [tx_hash])
    assert receipt["status"] == "0x1" and receipt["gasUsed"] == hex(21000)
    assert chain.dispatch("eth_getTransactionCount", [me.address, "latest"]) == "0x1"


def test_a_transaction_signed_for_another_chain_is_refused(chain: DevChain) -> None:
    me = Account.create()
    for tx in ({"maxFeePerGas": 3 * 10**9, "maxPriorityFeePerGas": 10**9}, {"gasPrice": 10**9}):
        signed = Account.sign_transaction({**tx, "to": chain.faucet, "value": 1, "gas": 21000,
                                           "nonce": 0, "chainId": 5}, me.key)
        with pytest.raises(RpcError, match="invalid chain id for signer: have 5"):
            chain.dispatch("eth_sendRawTransaction",
                           ["0x" + bytes(signed.raw_transaction).hex()])


def test_too_little_ether_is_geths_insufficient_funds(chain: DevChain) -> None:
    poor = Account.create()
    with pytest.raises(RpcError) as info:
        chain.dispatch("eth_sendRawTransaction",
                       [_signed_transfer(chain, bytes(poor.key), chain.faucet, 1, 0)])
    assert info.value.code == -32000 and "insufficient funds" in info.value.message


def test_a_revert_is_code_3_with_the_reason_in_message_and_data() -> None:
    error = revert_error(TransactionFailed("execution reverted: reclaim not due"))
    assert error.code == 3 and error.message == "execution reverted: reclaim not due"
    assert abi.decode(["string"], bytes.fromhex(error.data[10:]))[0] == "reclaim not due"


def test_unknown_methods_and_bad_params(chain: DevChain) -> None:
    with pytest.raises(RpcError) as info:
        chain.dispatch("eth_mining_pool", [])
    assert info.value.code == METHOD_NOT_FOUND
    with pytest.raises(RpcError) as info:
        chain.dispatch("evm_increaseTime", ["soon"])
    assert info.value.code == -32602


def test_increase_time_moves_the_next_block(chain: DevChain) -> None:
    before = int(chain.dispatch("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    chain.dispatch("evm_increaseTime", [3600])
    chain.dispatch("evm_mine", [])
    after = int(chain.dispatch("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)
    assert after - before >= 3600


async def test_a_web3_http_client_talks_to_the_server() -> None:
    chain = DevChain()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    me = Account.create()
    chain.w3.eth.send_transaction({"from": chain.faucet, "to": me.address, "value": 10**18})

    def client_side() -> dict[str, Any]:
        w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": 5}))
        tx = {"to": chain.faucet, "value": 7, "gas": 21000, "nonce": 0,
              "maxFeePerGas": w3.eth.gas_price * 3, "maxPriorityFeePerGas":
              w3.eth.max_priority_fee, "chainId": w3.eth.chain_id}
        signed = Account.sign_transaction(tx, me.key)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=10, poll_latency=0.05)
        return {"status": receipt["status"], "block": w3.eth.block_number,
                "logs": w3.eth.get_logs({"fromBlock": 0, "toBlock": "latest"})}

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            config = Config()
            config.accesslog = None
            await nursery.start(serve_asgi, asgi_app(chain.dispatch), config, [sock])
            out = await trio.to_thread.run_sync(client_side)
            nursery.cancel_scope.cancel()
    sock.close()
    assert out["status"] == 1 and out["block"] >= 2 and out["logs"] == []
