"""A process that records receipted jobs in a ledger the way the node does (one
charge per job id, the seed split); run by the crash test and SIGKILLed at random.

    python -m tests.integration.charge_writer LEDGER JOBS

Records job 0 .. JOBS-1 in order (a restarted writer replays them all: the ledger
must refuse what it already charged) and prints each job number once committed."""

from __future__ import annotations

import sys
from pathlib import Path

from p2pinfer.errors import DuplicateEntryError
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.split import preset_named
from tests.market_support import charge_input, fixed_identity

ME = fixed_identity(3)
PROVIDER = fixed_identity(4)


def main() -> None:
    path, jobs = Path(sys.argv[1]), int(sys.argv[2])
    preset = preset_named("seed")
    with Ledger.open(path, ME) as ledger:
        for job in range(jobs):
            try:
                ledger.record_charge(charge_input(job, PROVIDER, ME, 1_000 + job), preset)
            except DuplicateEntryError:
                continue
            print(job, flush=True)


if __name__ == "__main__":
    main()
