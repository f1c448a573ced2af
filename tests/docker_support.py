"""Shared helpers of the docker integration tests (tests/integration/test_docker_*.py).

Every test works under its own compose project name; whatever it makes
(containers, networks, volumes) carries that project's label, so
`testnet_docker.docker_down(project)` in a finalizer removes all of it, also
when the test fails. Every docker call is bounded in time.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from p2pinfer.testnet import docker as testnet_docker
from p2pinfer.testnet.docker import PROJECT_LABEL, ImageBuild

#: The tests build their own tag, so they never replace a user's p2pinfer:latest.
TEST_IMAGE = os.environ.get("P2PINFER_TEST_IMAGE", "p2pinfer:test")
BUILD_TIMEOUT_S = 1800.0
DOCKER_TIMEOUT_S = 120.0

_built: list[ImageBuild] = []


def require_docker() -> None:
    """Skip the calling test, with the reason, where no Docker engine runs."""
    why = testnet_docker.engine_available()
    if why is not None:
        pytest.skip(f"docker tests need a running Docker engine: {why}")


def node_image() -> ImageBuild:
    """Build the node image once per test session (Docker's layer cache makes it cheap after)."""
    require_docker()
    if not _built:
        if os.geteuid() != 0 and testnet_docker.image_size("localbase:bookworm") is None \
                and testnet_docker.image_size("python:3.12-slim") is None:
            pytest.skip("no base image: python:3.12-slim cannot be had and building "
                        "localbase:bookworm (scripts/docker-base) needs root")
        _built.append(testnet_docker.ensure_image(TEST_IMAGE, timeout_s=BUILD_TIMEOUT_S))
    return _built[0]


def docker(*args: str, timeout_s: float = DOCKER_TIMEOUT_S,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS...`; on failure (with `check`) fail the test with docker's stderr."""
    proc = subprocess.run(["docker", *args], capture_output=True, text=True,
                          timeout=timeout_s, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


@contextmanager
def docker_project() -> Iterator[str]:
    """A fresh compose project name; everything under its label is removed afterwards,
    and the removal is checked."""
    project = f"p2pt{secrets.token_hex(4)}"
    try:
        yield project
    finally:
        testnet_docker.docker_down(project)
        left = [kind for kind, cmd in (
            ("containers", ["ps", "-a", "-q"]), ("networks", ["network", "ls", "-q"]),
            ("volumes", ["volume", "ls", "-q"]),
        ) if docker(*cmd, "--filter", f"label={PROJECT_LABEL}={project}").stdout.strip()]
        assert not left, f"docker_down left {', '.join(left)} of {project}"


def label(project: str) -> list[str]:
    """`--label` arguments that put a container or volume under the project."""
    return ["--label", f"{PROJECT_LABEL}={project}"]
