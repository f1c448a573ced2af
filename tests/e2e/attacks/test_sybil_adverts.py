"""Sybil adverts (issue 14, item 2): one connection injects adverts from many fresh keys at
price 0 with dead addresses. Before the defence every gateway job then failed (503): the
fakes ranked first, used up every failover attempt, and stayed listed for hours; 2,000 of
them grew a node by tens of MB and made /api/tags take seconds.

Run against the shared attack testnet (tests/e2e/attacks/conftest.py); the attacker is
this process (tests/support/attack_adverts.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial

import httpx
import pytest
import trio

from p2pinfer.net.adverts import MAX_UNPROVEN_PROVIDERS
from tests.support import attack_adverts
from tests.support.attack_net import AttackNet, honest_load
from tests.support.backends import needs_engine

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]

#: Honest jobs that must run after the fakes are in node 0's catalog (at least one of
#: them is an exploration job, one in eight, that may try a fake first).
JOBS_AFTER = 12


def catalog_providers(net: AttackNet) -> set[str]:
    """Every provider node 0's catalog lists now."""
    entries = httpx.get(f"{net.gateway()}/admin/catalog", timeout=30).json()["entries"]
    return {e["provider"] for e in entries}


def tags_seconds(net: AttackNet) -> float:
    """How long node 0's /api/tags takes."""
    started = time.monotonic()
    httpx.get(f"{net.gateway()}/api/tags", timeout=60).raise_for_status()
    return time.monotonic() - started


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def wait_for_jobs(load_jobs: Callable[[], int], at_least: int, timeout_s: float = 240.0) -> None:
    deadline = time.monotonic() + timeout_s
    while load_jobs() < at_least:
        assert time.monotonic() < deadline, f"only {load_jobs()} honest jobs in {timeout_s:g} s"
        time.sleep(0.2)


def test_sybil_adverts_at_price_zero_with_dead_addresses_fail_no_honest_job(
    attack_net: AttackNet,
) -> None:
    net = attack_net
    with honest_load(net.gateway()) as load:
        attack = trio.run(partial(attack_adverts.run, net, count=8))
        # The premise: node 0 lists all 8 fakes (each validly signed, fresh, cheapest).
        deadline = time.monotonic() + 20
        while not set(attack.fake_peers) <= catalog_providers(net):
            assert time.monotonic() < deadline, "the Sybil adverts never reached node 0"
            time.sleep(0.2)
        wait_for_jobs(lambda: load.jobs, load.jobs + JOBS_AFTER)
    assert load.failures == [], f"{len(load.failures)}/{load.jobs} honest jobs failed: " \
        f"{load.failures[:3]}"
    assert load.jobs >= JOBS_AFTER
    assert net.alive()


def test_two_thousand_sybil_adverts_stay_bounded_and_api_tags_stays_fast(
    attack_net: AttackNet,
) -> None:
    net = attack_net
    pid = net.nodes[0].pid
    tags_before, rss_before = tags_seconds(net), rss_mb(pid)
    with honest_load(net.gateway()) as load:
        attack = trio.run(partial(attack_adverts.run, net, count=2000, extra_models=4,
                                   timeout_s=300))
        time.sleep(2)  # the last relayed adverts are admitted
        fakes_listed = len(set(attack.fake_peers) & catalog_providers(net))
        tags_after, rss_after = tags_seconds(net), rss_mb(pid)
        wait_for_jobs(lambda: load.jobs, load.jobs + 3)
    print(f"sybil-2000: {attack.as_dict()} fakes listed by node 0: {fakes_listed}; "
          f"/api/tags {tags_before * 1000:.0f} -> {tags_after * 1000:.0f} ms; "
          f"node 0 RSS {rss_before:.0f} -> {rss_after:.0f} MB; honest jobs {load.jobs}, "
          f"failures {len(load.failures)}")
    assert load.failures == [], f"{len(load.failures)}/{load.jobs} honest jobs failed: " \
        f"{load.failures[:3]}"
    assert fakes_listed <= MAX_UNPROVEN_PROVIDERS
    assert tags_after < 0.5
    assert rss_after - rss_before < 30
    assert net.alive()
