"""A testnet in Docker containers: `docker/compose.yaml` wrapped under one project name.

Containers give each node its own network stack, so a node can be killed or cut
off for real. The testnet is one compose project: a bootstrap node, `nodes - 3`
providers (the scaled `provider` service), a validator and a consumer whose
gateway is published on the host's 127.0.0.1 only, behind an API key (the
gateway wants one off loopback; `docker_up` makes one unless given); with `chain`, a
chain container too (testnet_docker_chain). Everything it makes carries the label
`com.docker.compose.project=<project>`, which is how `docker_status` finds it and
`docker_down` removes all of it (containers, networks, volumes).

Building needs a source checkout (the Dockerfile, the compose file and the
scripts that make a base image and a wheelhouse); status and down do not.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2pinfer.errors import TestnetError, UsageError

if TYPE_CHECKING:
    from p2pinfer.testnet_docker_chain import DockerChain

REPO_ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yaml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
DEFAULT_PROJECT = "p2pinfer"
DEFAULT_IMAGE = "p2pinfer:latest"
DEFAULT_GATEWAY_PORT = 11436
GATEWAY_CONTAINER_PORT = 11434
#: bootstrap, validator and consumer; every other node is a provider.
FIXED_NODES = 3
#: The compose variable that carries the consumer gateway's API key.
API_KEY_VAR = "P2PINFER_CONSUMER_API_KEY"
PROJECT_LABEL = "com.docker.compose.project"
SERVICE_LABEL = "com.docker.compose.service"
NUMBER_LABEL = "com.docker.compose.container-number"
_PROJECT_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


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


@dataclass(frozen=True)
class DockerTestnet:
    """A running docker testnet: its project, image and the consumer's gateway on the host
    with the API key it wants (`Authorization: Bearer KEY`)."""

    project: str
    image: str
    gateway_url: str | None
    api_key: str = field(repr=False)
    containers: tuple[ContainerStatus, ...]
    chain: DockerChain | None = None  # `--chain`: the chain container


@dataclass(frozen=True)
class ImageBuild:
    """What `ensure_image` did: the base it built on and how long each step took."""

    image: str
    base_image: str
    base_s: float
    wheels_s: float
    build_s: float
    size_bytes: int


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


def engine_available(timeout_s: float = 20.0) -> str | None:
    """None when a Docker engine answers; else one line saying why not."""
    if shutil.which("docker") is None:
        return "the docker command is not installed"
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return f"the Docker engine did not answer within {timeout_s:.0f} s"
    if proc.returncode != 0 or not proc.stdout.strip():
        lines = proc.stderr.strip().splitlines()
        return f"no Docker engine: {lines[-1] if lines else 'docker info failed'}"
    return None


def compose_command() -> list[str]:
    """`docker compose` (v2) if present, else `docker-compose` (v1); TestnetError if neither."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        try:
            proc = subprocess.run(
                [*cmd, "version"], capture_output=True, text=True, timeout=30,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            continue
        if proc.returncode == 0:
            return cmd
    raise TestnetError("neither `docker compose` nor `docker-compose` is installed")


def _need_checkout() -> None:
    for path in (COMPOSE_FILE, DOCKERFILE, REPO_ROOT / "scripts" / "docker-base"):
        if not path.exists():
            raise TestnetError(
                f"{path} is missing: the docker testnet runs from a source checkout of p2pinfer"
            )


def image_size(image: str) -> int | None:
    """The image's size in bytes, or None if the engine does not have it."""
    proc = _run(["docker", "image", "inspect", "--format", "{{.Size}}", image],
                timeout_s=30, what="docker image inspect", check=False)
    return int(proc.stdout.strip()) if proc.returncode == 0 else None


def ensure_image(image: str = DEFAULT_IMAGE, *, timeout_s: float = 1800.0) -> ImageBuild:
    """Build `image` from docker/Dockerfile (cached layers make a rebuild quick).

    The base is python:3.12-slim where it can be had, else a local Debian base
    (scripts/docker-base); the wheelhouse (scripts/docker-wheels) spares the build
    a compile of llama.cpp.
    """
    _need_checkout()
    scripts = REPO_ROOT / "scripts"
    t0 = time.monotonic()
    base = _run(["bash", str(scripts / "docker-base")], timeout_s=timeout_s,
                what="making the base image").stdout.strip().splitlines()[-1]
    t1 = time.monotonic()
    _run(["bash", str(scripts / "docker-wheels"), base], timeout_s=timeout_s,
         what="collecting the wheelhouse")
    t2 = time.monotonic()
    _run(["docker", "build", "-q", "-f", str(DOCKERFILE), "--build-arg", f"BASE_IMAGE={base}",
          "-t", image, str(REPO_ROOT)], timeout_s=timeout_s, what=f"building {image}")
    t3 = time.monotonic()
    return ImageBuild(image=image, base_image=base, base_s=t1 - t0, wheels_s=t2 - t1,
                      build_s=t3 - t2, size_bytes=image_size(image) or 0)


def _compose_env(image: str, gateway_port: int, extra: dict[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"P2PINFER_IMAGE": image, "P2PINFER_GATEWAY_PORT": str(gateway_port)})
    env.update(extra or {})
    return env


# Over 60 lines by design: the checks, then compose up with its one clean-up on failure.
def docker_up(
    nodes: int,
    *,
    project: str = DEFAULT_PROJECT,
    image: str = DEFAULT_IMAGE,
    gateway_port: int = DEFAULT_GATEWAY_PORT,
    build: bool = True,
    env: dict[str, str] | None = None,
    start_timeout_s: float = 300.0,
    chain: bool = False,
) -> DockerTestnet:
    """Start a testnet of `nodes` containers (at least 4) and wait until every node is healthy.

    `gateway_port` 0 lets Docker pick the consumer's host port. `env` sets the
    compose variables (P2PINFER_MODELS, P2PINFER_NODE_ARGS, ...); the gateway's API key
    is `env[API_KEY_VAR]`, else $P2PINFER_API_KEY, else a fresh random one. With `chain`,
    a chain container starts first (testnet_docker_chain). On failure the project is
    removed again and TestnetError carries the failing node's last log line.
    """
    if nodes < FIXED_NODES + 1:
        raise UsageError(f"--nodes must be at least {FIXED_NODES + 1} "
                         "(bootstrap, a provider, a validator, a consumer)")
    check_project(project)
    _need_checkout()
    if (why := engine_available()) is not None:
        raise TestnetError(why)
    if docker_status(project):
        raise TestnetError(f"a docker testnet {project!r} already exists; "
                           "`testnet down --docker` first")
    if build:
        ensure_image(image)
    elif image_size(image) is None:
        raise TestnetError(f"no image {image}: build it first (drop --no-build)")
    compose = [*compose_command(), "-p", project, "-f", str(COMPOSE_FILE)]
    env = dict(env or {})
    api_key = env.get(API_KEY_VAR) or os.environ.get("P2PINFER_API_KEY") \
        or secrets.token_urlsafe(24)
    env[API_KEY_VAR] = api_key
    if chain:
        from p2pinfer.testnet_docker_chain import RPC_IN_NETWORK, RPC_VAR, start_chain

        env[RPC_VAR] = RPC_IN_NETWORK
    cenv = _compose_env(image, gateway_port, env)
    scale = ["--no-build", "--scale", f"provider={nodes - FIXED_NODES}"]
    chained = None
    try:
        if chain:  # nodes created, not started: the chain funds the keys in their volumes
            _run([*compose, "up", "--no-start", *scale], timeout_s=start_timeout_s,
                 what="docker compose up --no-start", env=cenv)
            chained = start_chain(project, image, docker_status(project, peer_ids=False),
                                  timeout_s=start_timeout_s)
        _run([*compose, "up", "-d", *scale], timeout_s=start_timeout_s,
             what="docker compose up", env=cenv)
        containers = wait_healthy(project, nodes, timeout_s=start_timeout_s)
    except BaseException:
        docker_down(project)
        raise
    consumer = [c for c in containers if c.service == "consumer" and c.gateway_url]
    return DockerTestnet(project=project, image=image,
                         gateway_url=consumer[0].gateway_url if consumer else None,
                         api_key=api_key, containers=containers, chain=chained)


def wait_healthy(project: str, nodes: int, *, timeout_s: float) -> tuple[ContainerStatus, ...]:
    """Wait (bounded) until the project's `nodes` containers are running and healthy."""
    deadline = time.monotonic() + timeout_s
    while True:
        containers = docker_status(project, peer_ids=False)
        dead = [c for c in containers if c.state not in ("created", "running")]
        if dead:
            raise TestnetError(f"node {dead[0].name} stopped during start-up: "
                               f"{last_log_line(dead[0].name)}")
        if len(containers) >= nodes and all(c.health in (None, "healthy") for c in containers):
            return docker_status(project)
        if time.monotonic() > deadline:
            waiting = [c.name for c in containers if c.health not in (None, "healthy")]
            raise TestnetError(
                f"docker testnet not healthy within {timeout_s:.0f} s; waiting for "
                f"{', '.join(waiting) or 'containers to appear'}"
            )
        time.sleep(1.0)


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
    from p2pinfer.testnet_docker_chain import rpc_url
    node: dict[str, Any] = {}
    if peer_ids and state.get("Running") and labels.get(SERVICE_LABEL) != "chain":
        node = read_node_json(name)
    addrs = node.get("listen_addrs")
    return ContainerStatus(
        name=name,
        service=str(labels.get(SERVICE_LABEL, "")),
        number=int(labels.get(NUMBER_LABEL, "0") or 0),
        state=str(state.get("Status", "")),
        health=str(health["Status"]) if health else None,
        ip=ip,
        peer_id=str(node["peer_id"]) if node.get("peer_id") else None,
        listen_addrs=tuple(str(a) for a in addrs) if isinstance(addrs, list) else (),
        gateway_url=gateway_url,
        api_key=api_key,
        rpc_url=rpc_url(c["NetworkSettings"].get("Ports") or {}),
    )


def read_node_json(container: str) -> dict[str, Any]:
    """The node's own status file (<home>/node.json) in a running container; {} if absent."""
    proc = _run(["docker", "exec", container, "cat", "/data/node.json"], timeout_s=30,
                what="reading node.json", check=False)
    try:
        raw = json.loads(proc.stdout) if proc.returncode == 0 else {}
    except ValueError:
        return {}
    return raw if isinstance(raw, dict) else {}


def docker_down(project: str = DEFAULT_PROJECT, *, timeout_s: float = 180.0) -> int:
    """Remove every container, network and volume of the project; return how many containers.

    Uses `compose down -v` where the compose file is at hand, then removes by label
    whatever is left (also what was made outside compose under the project's label).
    """
    check_project(project)
    containers = _project_ids("container", project)
    if COMPOSE_FILE.exists():
        try:
            compose = compose_command()
        except TestnetError:
            compose = []
        if compose:
            _run([*compose, "-p", project, "-f", str(COMPOSE_FILE), "down", "-v",
                  "--remove-orphans", "-t", "10"], timeout_s=timeout_s,
                 what="docker compose down", env=_compose_env(DEFAULT_IMAGE, 0, None),
                 check=False)
    left = _project_ids("container", project)
    if left:
        _run(["docker", "rm", "-f", "-v", *left], timeout_s=timeout_s, what="removing containers")
    for kind in ("network", "volume"):
        ids = _project_ids(kind, project)
        if ids:
            _run(["docker", kind, "rm", *ids], timeout_s=timeout_s, what=f"removing {kind}s")
    return len(containers)
