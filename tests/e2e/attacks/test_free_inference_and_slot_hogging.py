"""Free inference and slot hogging (issue 14, attack 6) on real node processes: fresh keys
that never pay get at most their free allowance, and honest jobs keep their slots."""

from __future__ import annotations

import httpx
import pytest
import trio

from p2pinfer.jobs.admission import FREE_JOBS_PER_KEY, FREE_JOBS_PER_MINUTE
from tests.support.attack_money import run_freeloader
from tests.support.attack_net import AttackNet, honest_job, honest_load
from tests.support.backends import needs_engine

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]

KEYS, PER_KEY = 20, 5  # a new key a second for 20 s, 5 parallel jobs per provider each


def test_free_inference_and_slot_hogging_by_unpaying_keys_fail(attack_net: AttackNet) -> None:
    with honest_load(attack_net.gateway()) as load:
        result = trio.run(lambda: run_freeloader(attack_net, keys=KEYS, per_key=PER_KEY))
    print("freeloader:", result, "honest jobs:", load.jobs, "failures:", load.failures)
    # Each key got at most its free allowance at each provider, never 5 of 5.
    assert result["most_served_per_key_and_provider"] <= FREE_JOBS_PER_KEY, result
    minutes = -(-result["seconds"] // 60)
    assert result["served"] <= 2 * FREE_JOBS_PER_MINUTE * minutes
    # Honest jobs kept their slots all along (a paying job preempts a free one).
    assert load.jobs >= 3 and load.failures == [], load.failures
    with httpx.Client() as client:
        honest_job(attack_net.gateway(), client)
