"""Start-up ledger verification with and without a checkpoint (market/checkpoint.py).

Builds a ledger of N charges (realistic bodies: result and receipt blobs, five postings
each), then times `verify_from_checkpoint` as a node runs it at start:
- no checkpoint: the full walk (what every start would cost without one);
- checkpoint at the head, nothing new: the prefix checks alone;
- checkpoint, then `--new` more charges: the prefix checks plus a walk of the new ones.
Writes bench/results/ledger_startup.json.

    python bench/ledger_startup.py [--entries 100000] [--new 1000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, results_path, write_result
from p2pinfer.identity import NodeIdentity
from p2pinfer.market.checkpoint import checkpoint_path, verify_from_checkpoint
from p2pinfer.market.ledger import ChargeInput, Ledger, ledger_path
from p2pinfer.market.split import SEED

RESULTS = results_path("ledger_startup.json")


def charge(led: Ledger, me: NodeIdentity, provider: NodeIdentity, job: int) -> None:
    led.record_charge(
        ChargeInput(job.to_bytes(16, "big"), "smollm2:135m", provider.public_key,
                    me.public_key, 300, 450, b"r" * 200, b"c" * 150),
        SEED, quality_pm=980,
    )


def timed_start(home: Path, me: NodeIdentity) -> dict[str, float | int]:
    with Ledger.open(ledger_path(home), me) as led:
        done = verify_from_checkpoint(led, me, checkpoint_path(home))
    return {"checkpoint_seq": done.checkpoint_seq, "entries_walked": done.verified,
            "head_seq": done.head_seq, "seconds": round(done.seconds, 3)}


def run(entries: int, new: int, home: Path) -> dict[str, object]:
    me, provider = NodeIdentity.generate(), NodeIdentity.generate()
    start = time.perf_counter()
    with Ledger.open(ledger_path(home), me) as led:
        led._conn.execute("PRAGMA synchronous=OFF")  # building only: no fsync per append
        led.record_faucet(me.public_key, 10**15)
        for job in range(entries - 1):
            charge(led, me, provider, job)
    build_s = time.perf_counter() - start
    full = timed_start(home, me)  # no checkpoint yet: walks everything, writes one
    unchanged = timed_start(home, me)
    with Ledger.open(ledger_path(home), me) as led:
        for job in range(entries, entries + new):
            charge(led, me, provider, job)
    grown = timed_start(home, me)
    return {
        "entries": entries, "new_entries": new, "build_s": round(build_s, 1),
        "start_without_checkpoint": full, "start_with_checkpoint": unchanged,
        "start_with_checkpoint_and_new_entries": grown,
        "ledger_bytes": ledger_path(home).stat().st_size,
        "machine": machine(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--new", type=int, default=1_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.entries, args.new, Path(tmp))
    write_result(RESULTS, result)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
