"""`p2pinfer kpis` as a user runs it on a home without a running node (ledger only)."""

from __future__ import annotations

import json
from pathlib import Path

from p2pinfer.node.status import NodeStatus
from tests.e2e.test_ledger_cli import home, p2pinfer  # noqa: F401  (fixture)


def test_kpis_from_the_ledger_alone_say_so_and_count_the_charges(home: Path) -> None:  # noqa: F811
    # A node.json of a process that is gone must not be trusted as a running node.
    NodeStatus(pid=2**22 + 17, peer_id="12D3KooWgone", listen_addrs=(), models=(), fault=None,
               gateway_url="http://127.0.0.1:9", backend="none", home=str(home)).write(home)
    r = p2pinfer("kpis", "--home", str(home), "--json")
    assert r.returncode == 0, r.stderr
    kpis = json.loads(r.stdout)
    assert kpis["source"] == "ledger-only"
    assert (kpis["jobs"], kpis["revenue_ucr"], kpis["tokens"]) == (2, 12_345 + 999, 200)
    assert kpis["utilisation_pct"] is None and kpis["catalog_providers"] == 0
    assert kpis["providers_paid"] == 1


def test_kpis_table_names_the_missing_catalog(home: Path) -> None:  # noqa: F811
    r = p2pinfer("kpis", "--home", str(home))
    assert r.returncode == 0, r.stderr
    assert "ledger-only" in r.stdout and "utilisation unknown" in r.stdout
    assert "0.013344" in r.stdout  # revenue in credits


def test_kpis_without_a_ledger_is_one_line(tmp_path: Path) -> None:
    r = p2pinfer("kpis", "--home", str(tmp_path / "nothing"))
    assert r.returncode != 0 and "no ledger" in r.stderr and "Traceback" not in r.stderr
