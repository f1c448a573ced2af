"""node.json as one typed record: what the node writes is what the CLI and testnets read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from p2pinfer.cli.node_gateway import running_gateway_url
from p2pinfer.node.status import NODE_STATUS_FILE, NodeStatus

STATUS = NodeStatus(pid=4242, peer_id="12D3KooWexample", listen_addrs=("/ip4/127.0.0.1/tcp/4001",),
                    gateway_url="http://127.0.0.1:11435", models=("smollm2:135m",), fault=None,
                    backend="embedded", home="/data")


def test_what_is_written_reads_back_the_same(tmp_path: Path) -> None:
    STATUS.write(tmp_path)
    assert NodeStatus.read(tmp_path) == STATUS
    raw = json.loads((tmp_path / NODE_STATUS_FILE).read_text())
    assert raw["listen_addrs"] == ["/ip4/127.0.0.1/tcp/4001"] and raw["pid"] == 4242
    assert not list(tmp_path.glob(".node.json.*"))  # the temporary file was renamed


@pytest.mark.parametrize("text", [
    "", "{", "[]", "null", json.dumps({"pid": 4242}),
    json.dumps({**STATUS.to_json(), "pid": "4242"}),
    json.dumps({**STATUS.to_json(), "pid": True}),
    json.dumps({**STATUS.to_json(), "pid": -1}),
    json.dumps({**STATUS.to_json(), "peer_id": ""}),
    json.dumps({**STATUS.to_json(), "listen_addrs": "/ip4/1.2.3.4/tcp/1"}),
    json.dumps({**STATUS.to_json(), "models": [1]}),
    json.dumps({**STATUS.to_json(), "gateway_url": 80}),
])
def test_a_malformed_file_reads_as_no_status(tmp_path: Path, text: str) -> None:
    (tmp_path / NODE_STATUS_FILE).write_text(text)
    assert NodeStatus.read(tmp_path) is None
    assert running_gateway_url(tmp_path) is None


def test_a_missing_file_reads_as_no_status(tmp_path: Path) -> None:
    assert NodeStatus.read(tmp_path) is None


def test_the_cli_finds_the_gateway_of_a_live_node_only(tmp_path: Path) -> None:
    import os
    NodeStatus(**{**STATUS.__dict__, "pid": os.getpid()}).write(tmp_path)
    assert running_gateway_url(tmp_path) == "http://127.0.0.1:11435"
    NodeStatus(**{**STATUS.__dict__, "pid": 2**22 + 17}).write(tmp_path)  # gone
    assert running_gateway_url(tmp_path) is None
