"""The local chain's `eth_getLogs` against the chain's length: the server's log index
(p2pinfer.settle.devchain_logs) and eth-tester's own answer, which it replaced.

Run from the repository root:  python bench/devchain.py [--blocks 100,200,400,800,1600,3200]
    [--eth-tester-up-to 800]
Writes bench/results/devchain.json; a couple of minutes (eth-tester's side is quadratic:
it is measured only up to --eth-tester-up-to blocks).

Each step mines one credit transfer per block (through `DevChain.dispatch`, as a served
chain gets them, so the index keeps up as it would) to the next length, then times one
`eth_getLogs` from block 0 for the transfers (every log on the chain but the
deployment's), first through the server's index, then through eth-tester.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eth_account import Account
from web3 import Web3

from bench._common import machine, results_path, utc_now, write_result
from p2pinfer.settle.chain_serve import deploy_and_fund
from p2pinfer.settle.devchain import DevChain

TRANSFER = "0x" + Web3.keccak(text="Transfer(address,address,uint256)").hex().removeprefix("0x")


def _signed_transfer(chain: DevChain, sender: Any, nonce: int, to: str) -> str:
    tx = chain.credit().functions.transfer(to, 1).build_transaction({
        "from": sender.address, "nonce": nonce, "gas": 100_000, "maxFeePerGas": 3 * 10**9,
        "maxPriorityFeePerGas": 10**9, "chainId": chain.w3.eth.chain_id})
    return "0x" + bytes(sender.sign_transaction(tx).raw_transaction).hex()


def _timed(call: Any) -> tuple[float, int]:
    start = time.perf_counter()
    answer = call()
    return round(time.perf_counter() - start, 4), len(answer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", default="100,200,400,800,1600,3200")
    parser.add_argument("--eth-tester-up-to", type=int, default=800)
    parser.add_argument("--out", type=Path, default=results_path("devchain.json"))
    args = parser.parse_args()
    chain = DevChain()
    deploy_and_fund(chain, "seed", [])
    sender = Account.create()
    chain.fund(sender.address, 10**6)
    receiver = Account.create().address
    spec = {"fromBlock": "0x0", "address": chain.credit_address, "topics": [TRANSFER]}
    rows: list[dict[str, Any]] = []
    sent = 0
    for blocks in sorted(int(b) for b in args.blocks.split(",")):
        while int(chain.dispatch("eth_blockNumber", []), 16) < blocks:
            chain.dispatch("eth_sendRawTransaction",
                           [_signed_transfer(chain, sender, sent, receiver)])
            sent += 1
        index_s, logs = _timed(lambda: chain.dispatch("eth_getLogs", [spec]))
        row: dict[str, Any] = {"blocks": blocks, "logs": logs, "index_s": index_s}
        if blocks <= args.eth_tester_up_to:
            row["eth_tester_s"], eth_logs = _timed(
                lambda: chain._request("eth_getLogs", [spec])["result"])
            assert eth_logs == logs, (eth_logs, logs)
        rows.append(row)
        print(row, flush=True)
    write_result(args.out, {
        "bench": "devchain eth_getLogs from block 0", "date": utc_now(),
        "machine": machine(), "rows": rows,
        "note": "one eth_getLogs from block 0 for every credit transfer; the server "
                "answers one request at a time, so this is also how long every other "
                "client waits behind it"})


if __name__ == "__main__":
    main()
