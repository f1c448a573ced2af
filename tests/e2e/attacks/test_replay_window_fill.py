"""Attack "replay window fill" on the shared testnet: one process floods provider 1 with
requests it refuses anyway (an unknown model, a price below its own) under 64 throwaway
keys. None of them takes room in its replay window, honest jobs keep succeeding, and a
replayed request is still refused."""

from __future__ import annotations

import re

import httpx
import pytest
import trio

from tests.support import attack_replay_window
from tests.support.attack_net import AttackNet, honest_load
from tests.support.backends import needs_engine

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]

UNKNOWN, UNDERPRICED = 1_500, 500


def replay_ids(gateway: str) -> int | None:
    """Provider's p2pinfer_replay_window_ids gauge (refreshed every 5 s), None if absent."""
    text = httpx.get(f"{gateway}/metrics", timeout=10).text
    match = re.search(r"^p2pinfer_replay_window_ids (\S+)$", text, re.MULTILINE)
    return int(float(match.group(1))) if match else None


def test_replay_window_fill_by_refused_requests_takes_no_room_and_honest_jobs_succeed(
    attack_net: AttackNet,
) -> None:
    # The gauge refreshes every 5 s: read it after a refresh that follows whatever the
    # shared testnet's previous test sent (read at once, jobs of that test admitted in the
    # gauge's last 5 s counted as this test's: 14 for 5 honest jobs in one CI run).
    trio.run(trio.sleep, 6)
    before = replay_ids(attack_net.gateway(1))
    with honest_load(attack_net.gateway()) as load:
        report = trio.run(lambda: attack_replay_window.run(
            attack_net, unknown=UNKNOWN, underpriced=UNDERPRICED, keys=64, target=1))
    print("replay window fill:", report, "honest jobs:", load.jobs)
    assert report["answers"] == {"unknown_model": UNKNOWN, "price_too_low": UNDERPRICED}, report
    assert (report["replay_first"], report["replay_again"]) == ("accepted", "replayed"), report
    assert load.jobs >= 3 and load.failures == []
    trio.run(trio.sleep, 6)  # one refresh of the gauge
    after = replay_ids(attack_net.gateway(1))
    # Only the honest jobs and the one real request took room, not the 2,000 refused ones
    # (+ a few slack: another node's job to provider 1 meanwhile).
    assert before is not None and after is not None, "no p2pinfer_replay_window_ids gauge"
    assert after - before <= load.jobs + 1 + 5, (before, after, load.jobs)
    assert attack_net.alive()
