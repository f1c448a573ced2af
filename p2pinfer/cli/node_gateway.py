"""Reach the running node of a home directory through its gateway (for `kpis` and `gov`).

A running node writes `<home>/node.json` with its pid and `gateway_url`; a stale
file (the pid is gone) or a node without a gateway means "no running node".
The key sent is $P2PINFER_API_KEY when set, else the node's operator key from its
home (`gateway.operator_key`), which admin and governance POSTs need.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from p2pinfer.errors import NetworkError
from p2pinfer.gateway.operator_key import read_operator_key
from p2pinfer.node.status import NodeStatus


def running_gateway_url(home: Path) -> str | None:
    """The gateway URL of the node running in `home`, or None if there is none."""
    status = NodeStatus.read(home)
    if status is None or not status.gateway_url:
        return None
    pid, url = status.pid, status.gateway_url
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass  # alive, someone else's
    return str(url)


def _headers(home: Path | None) -> dict[str, str]:
    key = os.environ.get("P2PINFER_API_KEY") or (
        read_operator_key(home) if home is not None else None)
    return {"authorization": f"Bearer {key}"} if key else {}


def gateway_request(url: str, method: str, path: str, *, content: bytes | None = None,
                    home: Path | None = None, timeout_s: float = 10.0) -> Any:
    """JSON reply of `method path` on the gateway at `url` (as the operator of the node in
    `home`, when given); NetworkError with the reason."""
    try:
        reply = httpx.request(method, url.rstrip("/") + path, content=content,
                              headers=_headers(home), timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise NetworkError(f"node gateway {url} unreachable: {exc}") from exc
    try:
        body = reply.json()
    except ValueError:
        body = {"error": reply.text[:200]}
    if reply.status_code >= 400:
        message = body.get("error") if isinstance(body, dict) else None
        if isinstance(message, dict):
            message = message.get("message")
        raise NetworkError(f"node gateway {path}: HTTP {reply.status_code}: {message or body}")
    return body
