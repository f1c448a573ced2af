"""The docker testnet's argument checks and its compose file, without a Docker engine."""

from __future__ import annotations

import re

import pytest

from p2pinfer import errors
from p2pinfer.errors import UsageError
from p2pinfer.testnet import docker as testnet_docker


@pytest.mark.parametrize("name", ["p2pinfer", "p2pt1a2b", "my_net-2"])
def test_compose_project_names_compose_accepts_pass(name: str) -> None:
    assert testnet_docker.check_project(name) == name


@pytest.mark.parametrize("name", ["", "P2P", "-x", "a b", "a/b", "x" * 64])
def test_a_project_name_compose_would_rewrite_is_refused(name: str) -> None:
    with pytest.raises(UsageError, match="bad docker project name"):
        testnet_docker.check_project(name)


@pytest.mark.parametrize("nodes", [0, 1, 3])
def test_fewer_than_four_nodes_is_a_usage_error_before_docker_is_asked(
    nodes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_docker(*args: object, **kwargs: object) -> None:
        raise AssertionError("docker must not be called")

    monkeypatch.setattr(testnet_docker.subprocess, "run", no_docker)
    with pytest.raises(UsageError, match="at least 4"):
        testnet_docker.docker_up(nodes)


def test_without_compose_the_error_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(testnet_docker.shutil, "which", lambda name: None)
    with pytest.raises(errors.TestnetError, match="docker-compose"):
        testnet_docker.compose_command()


def test_without_the_docker_command_the_engine_check_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(testnet_docker.shutil, "which", lambda name: None)
    assert testnet_docker.engine_available() == "the docker command is not installed"


def test_only_the_consumer_publishes_a_port_and_only_on_loopback() -> None:
    text = testnet_docker.COMPOSE_FILE.read_text()
    published = re.findall(r'^\s*-\s*"([^"]*:11434)"\s*$', text, flags=re.MULTILINE)
    assert published == ["127.0.0.1:${P2PINFER_GATEWAY_PORT:-11436}:11434"]
    assert text.count("ports:") == 1
    consumer = text[text.index("  consumer:"):]
    assert "ports:" in consumer


def test_the_chain_container_url_on_the_host_comes_from_its_published_port() -> None:
    from p2pinfer.testnet.docker_chain import rpc_url

    assert rpc_url({"8545/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}]}) \
        == "http://127.0.0.1:49153"
    assert rpc_url({"11434/tcp": [{"HostIp": "127.0.0.1", "HostPort": "11436"}]}) is None
    assert rpc_url({"8545/tcp": None}) is None


def test_the_nodes_reach_the_chain_only_when_the_testnet_has_one() -> None:
    # Empty by default: the node then has no chain (an empty variable is no flag).
    text = testnet_docker.COMPOSE_FILE.read_text()
    assert "P2PINFER_CHAIN_RPC: ${P2PINFER_CHAIN_RPC:-}" in text
    entrypoint = (testnet_docker.REPO_ROOT / "docker" / "entrypoint.sh").read_text()
    assert 'if [ -n "$CHAIN_RPC" ]; then' in entrypoint
