"""Docker's view of a testnet: containers, their status and node.json, `_run`.

Below testnet/docker.py (compose up/down) and testnet/docker_chain.py (the chain
container), which both read it.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from p2pinfer.errors import TestnetError, UsageError
from p2pinfer.node.status import NodeStatus

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PROJECT = "p2pinfer"
GATEWAY_CONTAINER_PORT = 11434
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
#: The chain container's JSON-RPC port (testnet/docker_chain.py).
CHAIN_PORT = 8545


def chain_rpc_url(ports: dict[str, Any]) -> str | None:
    """The chain's URL on the host from a container's NetworkSettings.Ports; None if
    it publishes no chain port."""
    for binding in ports.get(f"{CHAIN_PORT}/tcp") or []:
        return f"http://{binding['HostIp'] or '127.0.0.1'}:{binding['HostPort']}"
    return None


@dataclass(frozen=True)
class ContainerStatus:
    """One node container as Docker and the node itself (its node.json) report it."""

    name: str
    service: str
    number: int
    state: str  # Docker's: running, exited, ...
    health: str | None  # starting, healthy, unhealthy; None without a healthcheck
    ip: str | None  # on the testnet's private network; None while disconnected
    peer_id: str | None
    listen_addrs: tuple[str, ...]
    gateway_url: str | None  # on the host; only the consumer's is published
    api_key: str | None = field(default=None, repr=False)  # the published gateway's
    rpc_url: str | None = None  # the chain container's JSON-RPC on the host


def check_project(project: str) -> str:
    """The project name, or UsageError if compose would not accept it as is."""
    if not _PROJECT_RE.match(project):
        raise UsageError(
            f"bad docker project name {project!r}: lowercase letters, digits, '-' and '_'"
        )
    return project


def _run(
    cmd: Sequence[str],
    *,
    timeout_s: float,
    what: str,
    env: dict[str, str] | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(
            list(cmd), capture_output=True, text=True, timeout=timeout_s, env=env,
            cwd=REPO_ROOT, stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise TestnetError(f"{what}: {cmd[0]} is not installed") from exc
    except subprocess.TimeoutExpired as exc:
        raise TestnetError(f"{what}: no answer within {timeout_s:.0f} s") from exc
    if check and proc.returncode != 0:
        tail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[-3:]
        raise TestnetError(f"{what} failed: {' / '.join(tail) or f'exit {proc.returncode}'}")
    return proc


def last_log_line(container: str) -> str:
    """The container's last non-empty log line (stdout or stderr), for error messages."""
    proc = _run(["docker", "logs", "--tail", "20", container], timeout_s=30,
                what="docker logs", check=False)
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _project_ids(kind: str, project: str) -> list[str]:
    filt = f"label={PROJECT_LABEL}={project}"
    cmd = {
        "container": ["docker", "ps", "-a", "-q", "--filter", filt],
        "network": ["docker", "network", "ls", "-q", "--filter", filt],
        "volume": ["docker", "volume", "ls", "-q", "--filter", filt],
    }[kind]
    return _run(cmd, timeout_s=60, what=f"listing {kind}s").stdout.split()


def docker_status(project: str = DEFAULT_PROJECT, *, peer_ids: bool = True) -> tuple[
    ContainerStatus, ...
]:
    """The project's containers, ordered by service and replica number (empty if none).

    With `peer_ids`, each running node's node.json is read for its PeerID and addresses.
    """
    check_project(project)
    ids = _project_ids("container", project)
    if not ids:
        return ()
    raw = json.loads(_run(["docker", "inspect", *ids], timeout_s=60,
                          what="docker inspect").stdout)
    out = [_container_status(c, project, peer_ids) for c in raw]
    order = {"bootstrap": 0, "provider": 1, "validator": 2, "consumer": 3, "chain": 4}
    return tuple(sorted(out, key=lambda c: (order.get(c.service, 9), c.number)))


def _container_status(c: dict[str, Any], project: str, peer_ids: bool) -> ContainerStatus:
    labels = c["Config"].get("Labels") or {}
    name = str(c["Name"]).lstrip("/")
    state = c["State"]
    health = state.get("Health")
    ip = None
    for net_name, net in (c["NetworkSettings"].get("Networks") or {}).items():
        if net_name == f"{project}_p2p" and net.get("IPAddress"):
            ip = str(net["IPAddress"])
    gateway_url = None
    for binding in (c["NetworkSettings"].get("Ports") or {}).get(
        f"{GATEWAY_CONTAINER_PORT}/tcp"
    ) or []:
        gateway_url = f"http://{binding['HostIp'] or '127.0.0.1'}:{binding['HostPort']}"
    api_key = None
    for var in c["Config"].get("Env") or []:
        name_, _, value = str(var).partition("=")
        if name_ == "P2PINFER_API_KEY" and value and gateway_url:
            api_key = value.split(",")[0].strip()
    node = None
    if peer_ids and state.get("Running") and labels.get(SERVICE_LABEL) != "chain":
        node = read_node_json(name)
    return ContainerStatus(
        name=name,
        service=str(labels.get(SERVICE_LABEL, "")),
        number=int(labels.get(NUMBER_LABEL, "0") or 0),
        state=str(state.get("Status", "")),
        health=str(health["Status"]) if health else None,
        ip=ip,
        peer_id=node.peer_id if node else None,
        listen_addrs=node.listen_addrs if node else (),
        gateway_url=gateway_url,
        api_key=api_key,
        rpc_url=chain_rpc_url(c["NetworkSettings"].get("Ports") or {}),
    )


def read_node_json(container: str) -> NodeStatus | None:
    """The node's own status file (<home>/node.json) in a running container; None if absent."""
    proc = _run(["docker", "exec", container, "cat", "/data/node.json"], timeout_s=30,
                what="reading node.json", check=False)
    return NodeStatus.parse(proc.stdout) if proc.returncode == 0 else None
