"""`<home>/node.json`: what a running node says of itself, as one typed record.

`node/run.py` writes it atomically once the node listens; the CLI (`cli/node_gateway.py`),
the process and docker testnets and tests read it. It imports nothing of p2pinfer, so the
testnet (a layer below the node) may read it: tests/unit/test_import_layers.py puts this
module in the base layer.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

NODE_STATUS_FILE = "node.json"


def _strs(raw: object, name: str) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        raise ValueError(f"node.json: {name} is not a list of strings")
    return tuple(raw)


def _opt_str(raw: object, name: str) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise ValueError(f"node.json: {name} is not a string")
    return raw


@dataclass(frozen=True)
class NodeStatus:
    """A running node: its process, PeerID, listen addresses, gateway and what it serves."""

    pid: int
    peer_id: str
    listen_addrs: tuple[str, ...]
    gateway_url: str | None
    models: tuple[str, ...]
    fault: str | None
    backend: str
    home: str

    def to_json(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["listen_addrs"], raw["models"] = list(self.listen_addrs), list(self.models)
        return raw

    @classmethod
    def from_json(cls, raw: object) -> NodeStatus:
        """The status a node.json holds; ValueError naming the first field that is wrong."""
        if not isinstance(raw, dict):
            raise ValueError("node.json is not a JSON object")
        pid, peer_id = raw.get("pid"), raw.get("peer_id")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            raise ValueError("node.json: pid is not a positive integer")
        if not isinstance(peer_id, str) or not peer_id:
            raise ValueError("node.json: peer_id is missing")
        return cls(
            pid=pid, peer_id=peer_id,
            listen_addrs=_strs(raw.get("listen_addrs"), "listen_addrs"),
            gateway_url=_opt_str(raw.get("gateway_url"), "gateway_url"),
            models=_strs(raw.get("models", []), "models"),
            fault=_opt_str(raw.get("fault"), "fault"),
            backend=_opt_str(raw.get("backend"), "backend") or "",
            home=_opt_str(raw.get("home"), "home") or "",
        )

    @classmethod
    def parse(cls, text: str) -> NodeStatus | None:
        """The status in `text`, or None when it is not a well-formed node.json."""
        try:
            return cls.from_json(json.loads(text))
        except ValueError:
            return None

    @classmethod
    def read(cls, home: Path) -> NodeStatus | None:
        """The status in `<home>/node.json`, or None when it is absent or malformed."""
        try:
            text = (home / NODE_STATUS_FILE).read_text()
        except OSError:
            return None
        return cls.parse(text)

    def write(self, home: Path) -> None:
        """Write `<home>/node.json` atomically (readers never see half a file)."""
        path = home / NODE_STATUS_FILE
        tmp = path.with_name(f".{NODE_STATUS_FILE}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        os.replace(tmp, path)
