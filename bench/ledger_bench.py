"""Ledger throughput on a real file: appends per second (each one durable: WAL +
synchronous=FULL), `verify` speed, and what a credit check's balance read costs once
the consumer has paid for every one of those jobs (the running balance, beside the
SUM over the account's postings that schema version 1 ran per check). Writes
bench/results/ledger.json.

    python bench/ledger_bench.py [--entries N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, results_path, write_result
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.entries import peer_account
from p2pinfer.market.ledger import ChargeInput, Ledger
from p2pinfer.market.split import SEED
from p2pinfer.market.verify_chain import MISMATCHED_BALANCES

RESULTS = results_path("ledger.json")


def _mean_us(read: Callable[[], object], rounds: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(rounds):
        read()
    return round((time.perf_counter() - start) * 1e6 / rounds, 1)


def run(entries: int, directory: Path) -> dict[str, object]:
    me, provider = NodeIdentity.generate(), NodeIdentity.generate()
    path = directory / "ledger.sqlite3"
    with Ledger.open(path, me) as led:
        led.record_faucet(me.public_key, 10**12)
        start = time.perf_counter()
        for job in range(entries):
            led.record_charge(
                ChargeInput(job.to_bytes(16, "big"), "smollm2:135m", provider.public_key,
                            me.public_key, 300, 450, b"r" * 200, b"c" * 150),
                SEED, quality_pm=980,
            )
        append_s = time.perf_counter() - start
        start = time.perf_counter()
        report = led.verify(expected_signer=me.public_key)
        verify_s = time.perf_counter() - start
        assert report.ok and report.verified == entries + 1
        account = peer_account(me.public_key)
        reads = {
            "balance_read_us": lambda: led.balance(account),
            "balance_by_sum_us": lambda: led.read(
                "SELECT COALESCE(SUM(amount), 0) FROM postings WHERE account = ?", (account,)),
        }
        timed = {name: _mean_us(read) for name, read in reads.items()}
        with led.read_snapshot() as conn:
            start = time.perf_counter()
            assert conn.execute(MISMATCHED_BALANCES).fetchone() is None
            check_s = time.perf_counter() - start
    return {
        "entries": entries + 1,
        "appends_per_s": round(entries / append_s, 1),
        "append_ms_mean": round(append_s * 1000 / entries, 3),
        "verify_s": round(verify_s, 3),
        "verify_entries_per_s": round((entries + 1) / verify_s, 1),
        **timed,
        "running_balance_check_s": round(check_s, 3),
        "file_bytes": path.stat().st_size + (path.with_name(path.name + "-wal").stat().st_size
                                             if path.with_name(path.name + "-wal").exists()
                                             else 0),
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=2000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the ledger file")
    args = parser.parse_args()
    if args.dir is None:
        with tempfile.TemporaryDirectory() as tmp:
            result = run(args.entries, Path(tmp))
    else:
        result = run(args.entries, args.dir)
    write_result(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
