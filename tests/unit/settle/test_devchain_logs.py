"""The local chain's `eth_getLogs` and lookups by hash: answered from an index, not by
eth-tester's rescans.

eth-tester looked each log's receipt up by hash, walking back from the head: a query
from block 0 cost the square of the chain's length (60 s at 800 blocks), and the
server answers one request at a time, so one query stalled a testnet's redemptions
and clients past their read timeouts (CI: `test_testnet_chain.py`'s slash test,
2026-12-07). The answers must stay what eth-tester answered, filter for filter."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from eth_account import Account
from web3 import Web3

from p2pinfer.settle.artifacts import load_artifacts
from p2pinfer.settle.chain_serve import deploy_and_fund
from p2pinfer.settle.devchain import DevChain, to_wire
from p2pinfer.settle.devchain_logs import MAX_ALTERNATIVES
from p2pinfer.settle.jsonrpc import INVALID_PARAMS, RpcError

TRANSFER = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")
APPROVAL = "0x" + Web3.keccak(text="Approval(address,address,uint256)").hex().removeprefix("0x")


def _topic(address: str) -> str:
    return "0x" + bytes.fromhex(address[2:]).rjust(32, b"\0").hex()


@pytest.fixture(scope="module")
def chain() -> Iterator[DevChain]:
    """Contracts deployed; then transfers, approvals and channel deposits (two logs in
    one transaction), blocks of three transactions, empty blocks."""
    chain = DevChain()
    data = deploy_and_fund(chain, "seed", [])
    people = [Web3.to_checksum_address(a) for a in chain.tester.get_accounts()[1:4]]
    for who in people:  # eth-tester's own accounts: unlocked, holding ether
        chain.fund(who, 10**6)
    credit = chain.credit()
    channels = chain.w3.eth.contract(address=data["channels"],
                                     abi=load_artifacts()["Channels"].abi)
    chain.set_block_time(1)  # several senders' transactions to one block, mined by hand
    for round_ in range(4):
        for i, who in enumerate(people):
            credit.functions.transfer(people[i - 1], round_ + 1).transact({"from": who})
        chain.mine(1)
        for who in people:
            credit.functions.approve(data["channels"], 10).transact({"from": who})
        chain.mine(1)
        for i, who in enumerate(people):
            channels.functions.deposit(people[i - 1], 10).transact({"from": who})
        chain.mine(2)
    chain.set_block_time(0)
    yield chain


@contextmanager
def _block_reads(chain: DevChain) -> Iterator[list[int]]:
    """The blocks py-evm is asked for while in the block (numbers, in order)."""
    evm = chain.tester.backend.chain
    read_block = evm.get_canonical_block_by_number
    reads: list[int] = []

    def counted(number: int) -> Any:
        reads.append(number)
        return read_block(number)

    evm.get_canonical_block_by_number = counted
    try:
        yield reads
    finally:
        del evm.get_canonical_block_by_number


def _eth_testers(chain: DevChain, spec: dict[str, Any]) -> Any:
    """What eth-tester itself answers (the server's old path)."""
    return to_wire(chain._request("eth_getLogs", [spec])["result"])


def test_the_answers_are_eth_testers_filter_for_filter(chain: DevChain) -> None:
    head = int(chain.dispatch("eth_blockNumber", []), 16)
    someone = chain.dispatch("eth_getLogs", [{"fromBlock": "0x0", "topics": [TRANSFER]}])[-1]
    receiver = someone["topics"][2]
    specs: list[dict[str, Any]] = [
        {"fromBlock": "0x0"},
        {"fromBlock": hex(head - 5), "toBlock": hex(head - 2)},
        {"fromBlock": hex(head - 5)},
        {},
        {"fromBlock": "0x0", "address": someone["address"]},
        {"fromBlock": "0x0", "address": someone["address"].lower()},
        {"fromBlock": "0x0", "address": [someone["address"], chain.faucet]},
        {"fromBlock": "0x0", "topics": [TRANSFER]},
        {"fromBlock": "0x0", "topics": [[TRANSFER, APPROVAL]]},
        {"fromBlock": "0x0", "topics": [None, _topic(chain.faucet)]},
        {"fromBlock": "0x0", "topics": [TRANSFER, None, receiver]},
        {"fromBlock": "0x0", "topics": [TRANSFER, None, receiver.upper().replace("0X", "0x")]},
        {"fromBlock": "0x0", "topics": [None, None, None, TRANSFER]},
        {"fromBlock": hex(head + 5)},
        {"fromBlock": hex(head), "toBlock": hex(head - 1)},
    ]
    for spec in specs:
        ours = chain.dispatch("eth_getLogs", [spec])
        assert ours == _eth_testers(chain, spec), spec
    everything = chain.dispatch("eth_getLogs", [{"fromBlock": "0x0"}])
    # eth-tester answers nothing from "earliest"; geth reads it as block 0.
    assert chain.dispatch("eth_getLogs", [{"fromBlock": "earliest", "toBlock": "latest"}]) \
        == everything
    assert len(everything) > 30
    # Several logs in one transaction, several transactions in one block.
    assert any(e["logIndex"] != "0x0" for e in everything)
    assert any(e["transactionIndex"] != "0x0" for e in everything)


def test_a_query_reads_each_block_once_not_the_chain_per_log(chain: DevChain) -> None:
    """The attack: one `eth_getLogs` from block 0 on a long chain. eth-tester read
    ~blocks^2/2 blocks for it (each receipt looked up by walking back from the head)."""
    me = Account.create().address
    credit = chain.credit()
    chain.dispatch("eth_blockNumber", [])
    for _ in range(60):  # mined outside the server: indexed at the next request
        credit.functions.transfer(me, 1).transact({"from": chain.faucet})
    with _block_reads(chain) as reads:
        logs = chain.dispatch("eth_getLogs", [{"fromBlock": "0x0", "topics": [None, None,
                                                                                 _topic(me)]}])
        assert len(logs) == 60
        assert len(reads) <= 60, len(reads)
        again = chain.dispatch("eth_getLogs", [{"fromBlock": "0x0"}])
        assert len(reads) <= 60 and len(again) > 60, len(reads)  # nothing read twice


def test_reverted_blocks_leave_the_index(chain: DevChain) -> None:
    me, other = Account.create().address, Account.create().address
    credit = chain.credit()
    snapshot = chain.dispatch("evm_snapshot", [])
    credit.functions.transfer(me, 7).transact({"from": chain.faucet})
    gone = chain.dispatch("eth_getLogs", [{"topics": [None, None, _topic(me)]}])
    assert len(gone) == 1
    chain.dispatch("evm_revert", [snapshot])
    credit.functions.transfer(other, 8).transact({"from": chain.faucet})  # same number
    latest = chain.dispatch("eth_getLogs", [{}])
    assert [e["topics"][2] for e in latest] == [_topic(other)]
    assert latest[0]["blockNumber"] == gone[0]["blockNumber"]
    assert chain.dispatch("eth_getLogs", [{"topics": [None, None, _topic(me)]}]) == []
    with pytest.raises(RpcError) as info:
        chain.dispatch("eth_getLogs", [{"blockHash": gone[0]["blockHash"]}])
    assert info.value.code == -32000 and "unknown block" in info.value.message
    by_hash = chain.dispatch("eth_getLogs", [{"blockHash": latest[0]["blockHash"]}])
    assert by_hash == latest


@pytest.mark.parametrize(("spec", "words"), [
    ({"fromBlock": "yesterday"}, "fromBlock must be a block number"),
    ({"toBlock": -1}, "toBlock must be a block number"),
    ({"address": "0x12"}, "address must be 0x and 40 hex digits"),
    ({"topics": ["0x01"]}, "topics[0] must be 0x and 64 hex digits"),
    ({"topics": "0x" + "00" * 32}, "topics must be a list"),
    ({"topics": [None] * 5}, "more than 4 topic positions"),
    ({"address": ["0x" + "11" * 20] * (MAX_ALTERNATIVES + 1)}, "more than 1000"),
    ({"blockHash": "0x" + "00" * 32, "fromBlock": "0x1"}, "cannot specify both"),
    ({"blockHash": "0x00"}, "blockHash must be"),
    ({"fromBlock": "0x0", "limit": 5}, "unknown filter fields: limit"),
])
def test_a_bad_filter_is_invalid_params_saying_why(chain: DevChain, spec: dict[str, Any],
                                                   words: str) -> None:
    with pytest.raises(RpcError) as info:
        chain.dispatch("eth_getLogs", [spec])
    assert info.value.code == INVALID_PARAMS and words in info.value.message


def test_no_filter_object_is_invalid_params(chain: DevChain) -> None:
    for params in ([], ["latest"], [{}, {}]):
        with pytest.raises(RpcError) as info:
            chain.dispatch("eth_getLogs", params)
        assert info.value.code == INVALID_PARAMS


def test_an_unknown_transaction_is_null_without_a_walk_over_the_chain(chain: DevChain) -> None:
    """eth-tester answered a receipt or a transaction nobody mined by reading every
    block back to genesis (0.27 s at 1,600 blocks), holding up every other request: a
    client polling for a dropped transaction, or anyone at the RPC port, stalled the
    chain. Mined and waiting transactions are still found."""
    credit = chain.credit()
    me = Account.create().address
    mined = "0x" + bytes(credit.functions.transfer(me, 1).transact(
        {"from": chain.faucet})).hex()
    chain.dispatch("eth_blockNumber", [])
    with _block_reads(chain) as reads:
        for method in ("eth_getTransactionReceipt", "eth_getTransactionByHash"):
            assert chain.dispatch(method, ["0x" + "ab" * 32]) is None
        assert reads == []
    receipt = chain.dispatch("eth_getTransactionReceipt", [mined])
    assert receipt["status"] == "0x1" and receipt["transactionHash"] == mined
    assert chain.dispatch("eth_getTransactionByHash", [mined.upper().replace("0X", "0x")])
    chain.set_block_time(1)
    try:
        waiting = "0x" + bytes(credit.functions.transfer(me, 1).transact(
            {"from": chain.faucet})).hex()
        for method in ("eth_getTransactionReceipt", "eth_getTransactionByHash"):
            assert chain.dispatch(method, [waiting]) == chain._passthrough(method, [waiting])
        assert chain.dispatch("eth_getTransactionByHash", [waiting]) is not None
    finally:
        chain.mine(1)
        chain.set_block_time(0)
    assert chain.dispatch("eth_getTransactionReceipt", [waiting])["status"] == "0x1"
    with pytest.raises(RpcError):
        chain.dispatch("eth_getTransactionReceipt", ["0x12"])
