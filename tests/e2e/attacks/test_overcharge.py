"""Overcharge (issue 14, attack 5) on real node processes: a provider advertising price 1
that answers with made-up charges gets no receipt from anyone, honest jobs keep working,
and (attack 47) the consumer's charge proofs shut it out at every node."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import trio

from tests.support.attack_money import LIES, run_overcharge
from tests.support.attack_net import AttackNet, honest_job, honest_load
from tests.support.backends import needs_engine

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]


def test_overcharge_by_a_lying_provider_is_never_receipted(
    attack_net: AttackNet, tmp_path: Path
) -> None:
    with honest_load(attack_net.gateway()) as load:
        result = trio.run(run_overcharge, attack_net, tmp_path)
    print("overcharge:", result, "honest jobs:", load.jobs, "failures:", load.failures)
    consumer = result["consumer"]
    # The consumer here sent the liar one job per kind of lie: each was refused before
    # anything was signed, the evidence kept, and the liar convicted.
    assert [lie for lie, _ in consumer["refused"]] == list(LIES), consumer
    assert consumer["receipted"] == [] and consumer["spent"] == 0
    assert consumer["evidence"] == len(LIES)
    assert consumer["convicted"] == {"score_pm": 0, "breaker": "open"}
    # Nobody, node 0's gateway included, sent the liar a receipt.
    assert result["receipts"] == [], result
    assert result["claimed_max"] >= 2**32 // 1000  # it did lie
    # The honest load through node 0 never failed, and still works after.
    assert load.jobs >= 3 and load.failures == [], load.failures
    with httpx.Client() as client:
        honest_job(attack_net.gateway(), client)
    # Attacks 47 and 64: the consumer gossiped its refusals as proofs (the accept over the
    # quote too); every node checked one itself and shut the liar out.
    proven = f"provider={result['liar']} proven overcharge"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(
            proven in attack_net.log(i) for i in range(len(attack_net.nodes))):
        time.sleep(0.5)
    with httpx.Client() as client:
        for i in range(len(attack_net.nodes)):
            assert proven in attack_net.log(i), f"node {i} convicted no one"
            peers = client.get(f"{attack_net.gateway(i)}/admin/reputation").json()["peers"]
            [liar] = [p for p in peers if p["peer_id"] == result["liar"]]
            assert liar["breaker"] == "open" and liar["score_pm"] == 0, (i, liar)
