"""bench/verify.py's detection runs: a fresh testnet per fault, every node's reputation
table polled (SQLite, read-only) until the cheater is excluded; and an honest-only
testnet for false positives. `table` and `peer_id` read a running testnet's nodes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from p2pinfer.testnet import processes as testnet
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.reputation_store import ReputationBook, reputation_path


def table(home: Path) -> dict[str, Any]:
    """The node at `home`'s reputation table, read-only, by peer id ({} while absent or
    being written)."""
    path = reputation_path(home)
    if not path.exists():
        return {}
    try:
        with ReputationBook.open(path, create=False) as book:
            return {p.peer_id: p for p in book.peers()}
    except Exception:  # a table being written: read again next poll
        return {}


def peer_id(home: Path) -> str:
    """The peer id of the running node at `home`."""
    status = testnet.read_node_status(home)
    assert status is not None
    return status.peer_id


# Over 60 lines by design: one faulty testnet's start, checks, detection wait and stop.
def run_fault(
    work: Path,
    fault: str,
    models: list[str],
    honest: int,
    interval: float,
    deadline_s: float,
    settle_s: float,
) -> dict[str, Any]:
    """A testnet with one node running `fault`: check jobs until the validator and every
    honest node exclude it (or `deadline_s`; `settle_s` more for the honest nodes)."""
    cheat, val = honest, honest + 1
    state = testnet.up(
        work,
        honest + 2,
        models=models,
        faults={cheat: fault},
        gateway=False,
        options=testnet.NodeOptions(benchmark=False, advert_interval_s=2.0),
        node_args={val: ["--validator", "--check-interval", f"{interval:g}"]},
        start_timeout_s=300,
    )
    homes = [Path(n.home) for n in state.nodes]
    try:
        cheater = peer_id(homes[cheat])
        honest_ids = {peer_id(h) for h in homes[:honest]}
        started = time.monotonic()
        validator_at: int | None = None
        excluded_by: dict[str, int] = {}
        while time.monotonic() - started < deadline_s:
            vt = table(homes[val])
            rec = vt.get(cheater)
            if rec is not None and validator_at is None and rec.breaker.state is BreakerState.OPEN:
                validator_at = rec.checks_passed + rec.checks_failed
                settle_until = time.monotonic() + settle_s
            for i in range(honest):
                r = table(homes[i]).get(cheater)
                if (
                    r is not None
                    and r.breaker.state is BreakerState.OPEN
                    and str(i) not in excluded_by
                ):
                    jobs = vt.get(cheater)
                    excluded_by[str(i)] = (jobs.checks_passed + jobs.checks_failed) if jobs else -1
            if validator_at is not None and (
                len(excluded_by) == honest or time.monotonic() > settle_until
            ):
                break
            time.sleep(1.0)
        vt = table(homes[val])
        honest_checks = [vt[p] for p in honest_ids if p in vt]
        c = vt.get(cheater)
        return {
            "fault": fault,
            "validator_excluded_after_checks": validator_at,
            "honest_nodes_excluded_after_checks": excluded_by,
            "honest_nodes_excluding": f"{len(excluded_by)}/{honest}",
            "cheater_checks": {"passed": c.checks_passed, "failed": c.checks_failed} if c else None,
            "honest_checks_passed": sum(r.checks_passed for r in honest_checks),
            "honest_checks_failed": sum(r.checks_failed for r in honest_checks),
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        testnet.down(work)


def run_false_positives(
    work: Path, models: list[str], honest: int, interval: float, target: int, deadline_s: float
) -> dict[str, Any]:
    """Honest providers and a validator only: check until `target` checks or the deadline."""
    val = honest
    state = testnet.up(
        work,
        honest + 1,
        models=models,
        gateway=False,
        options=testnet.NodeOptions(benchmark=False, advert_interval_s=2.0),
        node_args={val: ["--validator", "--check-interval", f"{interval:g}"]},
        start_timeout_s=300,
    )
    homes = [Path(n.home) for n in state.nodes]
    try:
        ids = {peer_id(h) for h in homes[:honest]}
        started = time.monotonic()
        done = failed = 0
        while time.monotonic() - started < deadline_s:
            vt = table(homes[val])
            recs = [vt[p] for p in ids if p in vt]
            done = sum(r.checks_passed + r.checks_failed for r in recs)
            failed = sum(r.checks_failed for r in recs)
            if done >= target:
                break
            time.sleep(2.0)
        return {
            "honest_checks": done,
            "failed": failed,
            "seconds": round(time.monotonic() - started, 1),
        }
    finally:
        testnet.down(work)
