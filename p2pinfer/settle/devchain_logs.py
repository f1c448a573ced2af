"""The local chain's `eth_getLogs`, from an index kept as blocks are mined.

eth-tester answers `eth_getLogs` by reading every block in the range and, for each of
their transactions, looking the receipt up by hash, which walks back from the head
block by block: a query from block 0 costs the square of the chain's length (measured:
0.9 s at 100 blocks, 15 s at 400, 60 s at 800). The server answers one request at a
time, so one such query stalled every node's redemptions and every client past its
5-second read timeout once a testnet had run for some minutes, and anyone who can
reach the RPC port could stall it at will.

`LogIndex` reads each block's receipts once, straight from py-evm's block (no lookup by
hash), into the wire form `eth_getTransactionReceipt` gives its logs, which is what
eth-tester's own `eth_getLogs` returned (eth-tester's `serialize_log`: the log index
counts within the transaction); a query is a bisection to its block range and a filter
over the logs in it. It also keeps each mined transaction's hash (`mined`), so the
server answers a lookup of a hash in no block without eth-tester's walk to genesis.
Blocks that stop being canonical (`evm_revert`, then new blocks in their place) are
dropped from the index.

Filters follow geth's: `fromBlock`/`toBlock` (a quantity or a tag) or `blockHash`
(EIP-234), `address` (one or a list), `topics` (up to 4 positions, each null, a topic
or a list of them, a list matching any); a range past the head ends at the head, one
that starts after it ends is empty (as eth-tester answered).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from typing import Any

from web3 import Web3

MAX_TOPICS = 4
MAX_ALTERNATIVES = 1000  # addresses, or topics at one position (geth's limit)
TAGS = ("earliest", "latest", "pending", "safe", "finalized")
ADDRESS_DIGITS = 40
HASH_DIGITS = 64
HASH = re.compile(r"0x[0-9a-fA-F]{64}")
QUANTITY = re.compile(r"0x[0-9a-fA-F]{1,64}")


class UnknownBlock(LookupError):
    """A `blockHash` filter names no canonical block."""


@dataclass(frozen=True)
class LogQuery:
    """One `eth_getLogs` filter, checked: blocks `first`..`last` (or the block
    `block_hash`), lowercase addresses (None: any) and topic positions (None: any)."""

    first: int
    last: int
    block_hash: str | None = None
    addresses: frozenset[str] | None = None
    topics: tuple[frozenset[str] | None, ...] = ()

    def matches(self, entry: dict[str, Any]) -> bool:
        if self.addresses is not None and str(entry["address"]).lower() not in self.addresses:
            return False
        topics = entry["topics"]
        for position, wanted in enumerate(self.topics):
            if wanted is None:
                continue
            if position >= len(topics) or str(topics[position]).lower() not in wanted:
                return False
        return True


def _block(value: Any, head: int, what: str) -> int:
    if value is None or value in TAGS[1:]:
        return head
    if value == "earliest":
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and QUANTITY.fullmatch(value):
        return int(value, 16)
    raise ValueError(f"{what} must be a block number (hex) or one of {', '.join(TAGS)}: "
                     f"{value!r}")


def _one_or_many(value: Any, digits: int, what: str) -> frozenset[str] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    if not values:
        return None
    if len(values) > MAX_ALTERNATIVES:
        raise ValueError(f"more than {MAX_ALTERNATIVES} alternatives in {what}")
    for item in values:
        if not isinstance(item, str) or not re.fullmatch(f"0x[0-9a-fA-F]{{{digits}}}", item):
            raise ValueError(f"{what} must be 0x and {digits} hex digits, or a list of them: "
                             f"{item!r}")
    return frozenset(item.lower() for item in values)


def parse_query(params: list[Any], head: int) -> LogQuery:
    """The filter in `eth_getLogs`'s params, against a chain whose head is `head`;
    ValueError says what is wrong with it."""
    if len(params) != 1 or not isinstance(params[0], dict):
        raise ValueError("expected one filter object")
    spec: dict[str, Any] = params[0]
    unknown = set(spec) - {"fromBlock", "toBlock", "blockHash", "address", "topics"}
    if unknown:
        raise ValueError(f"unknown filter fields: {', '.join(sorted(unknown))}")
    topics = spec.get("topics")
    if topics is not None and not isinstance(topics, list):
        raise ValueError("topics must be a list")
    if topics is not None and len(topics) > MAX_TOPICS:
        raise ValueError(f"more than {MAX_TOPICS} topic positions")
    positions = tuple(_one_or_many(topic, HASH_DIGITS, f"topics[{i}]")
                      for i, topic in enumerate(topics or []))
    addresses = _one_or_many(spec.get("address"), ADDRESS_DIGITS, "address")
    block_hash = spec.get("blockHash")
    if block_hash is not None:
        if "fromBlock" in spec or "toBlock" in spec:
            raise ValueError("cannot specify both blockHash and fromBlock/toBlock")
        if not isinstance(block_hash, str) or not HASH.fullmatch(block_hash):
            raise ValueError(f"blockHash must be 0x and 64 hex digits: {block_hash!r}")
        return LogQuery(0, head, block_hash.lower(), addresses, positions)
    first = _block(spec.get("fromBlock"), head, "fromBlock")
    last = min(_block(spec.get("toBlock"), head, "toBlock"), head)
    return LogQuery(first, last, None, addresses, positions)


def block_logs(block: Any, receipts: Any) -> list[dict[str, Any]]:
    """A mined py-evm block's logs as eth-tester serves them over JSON-RPC."""
    out: list[dict[str, Any]] = []
    for index, (transaction, receipt) in enumerate(zip(block.transactions, receipts,
                                                       strict=True)):
        for log_index, entry in enumerate(receipt.logs):
            out.append({
                "type": "mined", "logIndex": hex(log_index), "transactionIndex": hex(index),
                "transactionHash": "0x" + bytes(transaction.hash).hex(),
                "blockHash": "0x" + bytes(block.hash).hex(), "blockNumber": hex(block.number),
                "address": Web3.to_checksum_address(bytes(entry.address)),
                "data": "0x" + bytes(entry.data).hex(),
                "topics": ["0x" + int(topic).to_bytes(32, "big").hex() for topic in entry.topics],
            })
    return out


class LogIndex:
    """Every log of a py-evm chain's canonical blocks, in chain order; `catch_up`
    before each query."""

    def __init__(self, chain: Any) -> None:
        self._chain = chain
        self._hashes: list[bytes] = []  # block number -> hash, for blocks indexed
        self._numbers: dict[str, int] = {}  # 0x-hash -> block number
        self._logs: list[dict[str, Any]] = []
        self._log_blocks: list[int] = []  # each log's block number (sorted)
        self._transactions: dict[str, int] = {}  # 0x-hash -> block number
        self._block_transactions: list[list[str]] = []  # block number -> its 0x-hashes

    @property
    def indexed_to(self) -> int:
        """The last block indexed; -1 before any."""
        return len(self._hashes) - 1

    def catch_up(self) -> int:
        """Index the blocks mined since the last call; the head block's number."""
        head = int(self._chain.get_canonical_head().block_number)
        kept = min(self.indexed_to, head)
        while kept >= 0 and self._hashes[kept] != self._chain.get_canonical_block_hash(kept):
            kept -= 1
        self._forget_after(kept)
        for number in range(kept + 1, head + 1):
            block = self._chain.get_canonical_block_by_number(number)
            for entry in block_logs(block, block.get_receipts(self._chain.chaindb)):
                self._logs.append(entry)
                self._log_blocks.append(number)
            self._hashes.append(bytes(block.hash))
            self._numbers["0x" + bytes(block.hash).hex()] = number
            mined = ["0x" + bytes(t.hash).hex() for t in block.transactions]
            self._block_transactions.append(mined)
            self._transactions.update(dict.fromkeys(mined, number))
        return head

    def mined(self, transaction_hash: str) -> bool:
        """Whether a canonical block indexed holds the transaction (0x and 64 hex digits)."""
        return transaction_hash.lower() in self._transactions

    def _forget_after(self, number: int) -> None:
        for dropped in self._hashes[number + 1:]:
            self._numbers.pop("0x" + dropped.hex(), None)
        del self._hashes[number + 1:]
        for hashes in self._block_transactions[number + 1:]:
            for transaction_hash in hashes:
                self._transactions.pop(transaction_hash, None)
        del self._block_transactions[number + 1:]
        cut = bisect_right(self._log_blocks, number)
        del self._logs[cut:]
        del self._log_blocks[cut:]

    def query(self, query: LogQuery) -> list[dict[str, Any]]:
        """The logs `query` matches, oldest first (copies: callers may change them)."""
        first, last = query.first, query.last
        if query.block_hash is not None:
            number = self._numbers.get(query.block_hash)
            if number is None:
                raise UnknownBlock(f"unknown block {query.block_hash}")
            first = last = number
        if first > last:
            return []
        start = bisect_left(self._log_blocks, first)
        end = bisect_right(self._log_blocks, last)
        return [{**entry, "topics": list(entry["topics"])}
                for entry in self._logs[start:end] if query.matches(entry)]
