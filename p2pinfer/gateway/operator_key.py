"""The operator key: what `p2pinfer gov ...` shows the node's gateway to act as its owner.

Admin and governance POSTs (`/admin/gov/propose`, `vote`, `stake`, `sync`) make the
node sign and publish, or accept stake, in its owner's name, so they need a key
even on loopback (a page or a local process of another user must not). The node
writes a random key to `<home>/gateway-operator.key` (mode 0600, kept across
restarts) and the gateway accepts it besides the configured API keys; the CLI,
run by the same user, reads it from the same home. `P2PINFER_API_KEY`, when set,
is sent instead.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

OPERATOR_KEY_FILE = "gateway-operator.key"


def operator_key_path(home: Path) -> Path:
    """Where the node of `home` keeps its operator key."""
    return home / OPERATOR_KEY_FILE


def read_operator_key(home: Path) -> str | None:
    """The operator key of `home`'s node, or None if it has none (or it is unreadable)."""
    try:
        key = operator_key_path(home).read_text().strip()
    except OSError:
        return None
    return key or None


def load_or_create_operator_key(home: Path) -> str:
    """The operator key of `home`, created (random, mode 0600) the first time."""
    found = read_operator_key(home)
    if found is not None:
        return found
    home.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    path = operator_key_path(home)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    try:
        os.link(tmp, path)  # fails if another process created it first: use theirs
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return read_operator_key(home) or key
