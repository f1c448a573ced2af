"""Issue 14, item 3: made-up CheckReports must not jam the engines or grow the ledgers.

The attacker (tests/support/attack_reports.py) gossips `fail` reports whose signed
evidence asks for max_tokens 1,000,000 at temperature 10, each report 0.5 MB, plus as
many within the receivers' limits, from a fresh host dialled into node 0. Every node
serves the model, so every node would re-run them. Required: honest jobs through
node 0's gateway all succeed during the attack and after it, every node refuses the
over-limits ones without running them, and no ledger grows by a report's size.
"""

from __future__ import annotations

import re
import time
from functools import partial

import pytest
import trio

from tests.support import attack_reports
from tests.support.attack_net import AttackNet, honest_load
from tests.support.backends import needs_engine

pytestmark = [pytest.mark.network, pytest.mark.engine, needs_engine]

#: After the last report, how long the honest load keeps going while the nodes judge
#: what they heard (a within-limits re-run waits up to a minute for an idle engine).
SETTLE_S = 30


def _notes(log: str, what: str) -> int:
    return len(re.findall(rf"check report reporter=\S+ provider=\S+ {re.escape(what)}", log))


def test_engine_jam_by_made_up_reports_fails(attack_net: AttackNet) -> None:
    nodes = range(len(attack_net.nodes))
    before = [attack_reports.slash_bytes(attack_net.home(i)) for i in nodes]
    logs_before = [len(attack_net.log(i)) for i in nodes]
    with honest_load(attack_net.gateway()) as load:
        sent = trio.run(partial(attack_reports.run_bounded, attack_net, reports=6,
                                timeout_s=120))
        time.sleep(SETTLE_S)
    grown = [attack_reports.slash_bytes(attack_net.home(i)) - before[i] for i in nodes]
    logs = [attack_net.log(i)[logs_before[i]:] for i in nodes]
    assert attack_net.alive()
    assert sent["reports_sent"] == 12 and sent["report_bytes"] > 262_144
    # The honest network kept serving all along.
    assert load.jobs >= 3 and load.failures == [], load.failures
    for i in nodes:
        # Every node heard the jam reports and refused them unrun: over its limits, or
        # (attack 50, checked first) about a provider no one ever heard of...
        refused = _notes(logs[i], "not re-checked: over my limits") + _notes(
            logs[i], "not re-checked: provider not in the catalog")
        assert refused >= 3, logs[i][-3000:]
        assert _notes(logs[i], "re-checked: fraud confirmed") == 0, logs[i][-3000:]
        # ...and slash entries (if any) grew its ledger by far less than a report.
        assert grown[i] < sent["report_bytes"] // 10, grown
