"""docs/network.md lists every GossipSub topic and stream protocol a node uses: exactly the
ids written in the code, and every protocol a running host serves."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import trio

from p2pinfer.net.host import run_host
from p2pinfer.net.relay_rules import RelayServiceConfig
from tests.integration.net_helpers import config

ROOT = Path(__file__).resolve().parents[2]
PROTOCOL_ID = re.compile(r"/p2pinfer/[a-z0-9_-]+/\d+\.\d+\.\d+")
TOPIC = re.compile(r"p2pinfer/[a-z0-9_-]+/\d+")
SECTION = "## Wire identifiers"


def documented_ids() -> list[str]:
    """The first-column ids of the table under SECTION in docs/network.md, in order."""
    text = (ROOT / "docs" / "network.md").read_text()
    section = text[text.index(SECTION):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE)


def ids_in_code() -> set[str]:
    """Every string literal in p2pinfer/ that is a protocol id or a topic name."""
    found: set[str] = set()
    for path in (ROOT / "p2pinfer").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and (PROTOCOL_ID.fullmatch(node.value) or TOPIC.fullmatch(node.value))):
                found.add(node.value)
    return found


def test_the_documented_list_has_no_duplicates_and_no_receipts_topic() -> None:
    ids = documented_ids()
    assert len(ids) == len(set(ids))
    assert "p2pinfer/receipts/1" not in ids and "p2pinfer/receipts/1" not in ids_in_code()


@pytest.mark.network
async def test_the_documented_list_is_exactly_what_the_code_defines_and_a_host_serves() -> None:
    with trio.fail_after(30):
        # A relay serves every protocol a node can (HOP only while relaying).
        async with run_host(config(relay=RelayServiceConfig(mode="on"))) as net:
            served = {str(p) for p in net._host.get_mux().get_protocols() if p is not None}
    code = ids_in_code()
    assert {"/p2pinfer/job/1.0.0", "p2pinfer/adverts/1"} <= code  # the scan finds them
    assert set(documented_ids()) == code | served
