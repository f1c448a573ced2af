"""A ledger writer run as a separate process by the integration tests.

    python -m tests.integration.ledger_writer MODE PATH SEED_HEX [TAG COUNT]

crash: commit 3 grants, then die (os._exit) inside the 4th write's transaction,
       after its entry row and before its postings and COMMIT.
loop:  append COUNT grants (0: forever), printing each committed seq.
one:   print "start", append one grant, print "done <monotonic ns>".
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from p2pinfer.identity import NodeIdentity
from p2pinfer.market import ledger as ledger_module
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.split import SEED
from tests.market_support import charge_input, fixed_identity


def main() -> None:
    mode, path, seed_hex = sys.argv[1:4]
    me = NodeIdentity.from_seed(bytes.fromhex(seed_hex))
    led = Ledger.open(Path(path), me)
    if mode == "crash":
        for i in range(3):
            led.record_faucet(me.public_key, 1_000, grant_id=f"pre-{i}")
        print("committed 3", flush=True)

        def die(*args: object) -> None:
            os._exit(42)

        ledger_module._write_postings = die  # type: ignore[assignment]
        led.record_charge(charge_input(1, fixed_identity(9), me, 500), SEED)
        print("not reached", flush=True)
    elif mode == "loop":
        tag, count = sys.argv[4], int(sys.argv[5])
        i = 0
        while count == 0 or i < count:
            entry = led.record_faucet(me.public_key, 1, grant_id=f"{tag}-{i}")
            print(entry.seq, flush=True)
            i += 1
    elif mode == "one":
        print("start", flush=True)
        led.record_faucet(me.public_key, 1, grant_id="one")
        print(f"done {time.monotonic_ns()}", flush=True)
    led.close()


if __name__ == "__main__":
    main()
