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

import os
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from p2pinfer.errors import TestnetError, UsageError
from p2pinfer.testnet.docker_status import (
    DEFAULT_PROJECT as DEFAULT_PROJECT,
)
from p2pinfer.testnet.docker_status import (
    GATEWAY_CONTAINER_PORT as GATEWAY_CONTAINER_PORT,
)
from p2pinfer.testnet.docker_status import (
    NUMBER_LABEL as NUMBER_LABEL,
)
from p2pinfer.testnet.docker_status import (
    PROJECT_LABEL as PROJECT_LABEL,
)
from p2pinfer.testnet.docker_status import (
    REPO_ROOT as REPO_ROOT,
)
from p2pinfer.testnet.docker_status import (
    SERVICE_LABEL as SERVICE_LABEL,
)
from p2pinfer.testnet.docker_status import (
    ContainerStatus as ContainerStatus,
)
from p2pinfer.testnet.docker_status import (
    _project_ids,
    _run,
)
from p2pinfer.testnet.docker_status import (
    check_project as check_project,
)
from p2pinfer.testnet.docker_status import (
    docker_status as docker_status,
)
from p2pinfer.testnet.docker_status import (
    last_log_line as last_log_line,
)
from p2pinfer.testnet.docker_status import (
    read_node_json as read_node_json,
)

if TYPE_CHECKING:
    from p2pinfer.testnet.docker_chain import DockerChain

COMPOSE_FILE = REPO_ROOT / "docker" / "compose.yaml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
DEFAULT_IMAGE = "p2pinfer:latest"
DEFAULT_GATEWAY_PORT = 11436
#: bootstrap, validator and consumer; every other node is a provider.
FIXED_NODES = 3
#: The compose variable that carries the consumer gateway's API key.
API_KEY_VAR = "P2PINFER_CONSUMER_API_KEY"


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
        from p2pinfer.testnet.docker_chain import RPC_IN_NETWORK, RPC_VAR, start_chain

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
