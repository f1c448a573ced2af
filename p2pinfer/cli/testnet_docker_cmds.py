"""The `--docker` side of `p2pinfer testnet up | status | down` (see testnet_cmds.py).

Output only; the work is in `p2pinfer.testnet.docker`.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from p2pinfer.errors import TestnetError
from p2pinfer.testnet import docker as testnet_docker
from p2pinfer.testnet.docker_chain import DEPLOYMENT

DockerOption = Annotated[bool, typer.Option(
    "--docker", help="Nodes in Docker containers (docker/compose.yaml) instead of processes.")]
ProjectOption = Annotated[str, typer.Option(
    "--project", help="With --docker: the compose project that holds the testnet.")]
GatewayPortOption = Annotated[int, typer.Option(
    "--gateway-port", min=0, max=65535,
    help="With --docker: host port (on 127.0.0.1) of the consumer's gateway; 0: any.")]
ImageOption = Annotated[str, typer.Option(
    "--image", help="With --docker: the node image (built from docker/Dockerfile with --build).")]
ShowKeyOption = Annotated[bool, typer.Option(
    "--api-key", help="With --docker: print only the consumer gateway's API key.")]
BuildOption = Annotated[bool, typer.Option(
    "--build/--no-build", help="With --docker: build the node image first (cached).")]

#: How long `up --docker` waits for every container to be healthy, unless --timeout says.
DOCKER_START_TIMEOUT_S = 600.0


def print_status(project: str, as_json: bool, api_key_only: bool = False) -> None:
    """Each container of the project: service, state, health, PeerID, gateway; or only
    the API key of the published gateway (TestnetError if there is none)."""
    nodes = testnet_docker.docker_status(project)
    if api_key_only:
        keys = [n.api_key for n in nodes if n.api_key]
        if not keys:
            raise TestnetError(f"no running docker testnet {project!r} with a gateway")
        print(keys[0])
        return
    if as_json:
        print(json.dumps([asdict(n) for n in nodes], indent=2))
        return
    if not nodes:
        print(f"no docker testnet {project!r}")
        return
    table = Table("container", "service", "state", "health", "peer", "gateway / chain rpc")
    for n in nodes:
        table.add_row(n.name, n.service, n.state, n.health or "-", n.peer_id or "-",
                      n.gateway_url or n.rpc_url or "-")
    Console(width=200).print(table)


def up(nodes: int, project: str, image: str, gateway_port: int, build: bool,
       timeout_s: float | None, chain: bool = False) -> None:
    """Start the docker testnet, print its containers and how to ask it."""
    net = testnet_docker.docker_up(
        nodes, project=project, image=image, gateway_port=gateway_port, build=build,
        start_timeout_s=timeout_s or DOCKER_START_TIMEOUT_S, chain=chain)
    print_status(project, as_json=False)
    if net.chain is not None:
        print(f"chain rpc={net.chain.rpc} channels={net.chain.channels} (container "
              f"{net.chain.container}; every node funded, providers' stake locked; a node's "
              "account: `docker exec CONTAINER p2pinfer wallet --deployment "
              f"{DEPLOYMENT}`)")
    if net.gateway_url:
        print(f"gateway {net.gateway_url} (API key: `p2pinfer testnet status --docker "
              f"--project {project} --api-key`); ask:")
        print(f"curl -s {net.gateway_url}/api/generate -H 'Authorization: Bearer "
              f"{net.api_key}' -d '{{\"model\": \"smollm2:135m\", \"prompt\": "
              "\"Why is the sky blue?\", \"stream\": false}'")


def down(project: str) -> None:
    """Remove every container, network and volume of the docker testnet."""
    removed = testnet_docker.docker_down(project)
    print(f"removed {removed} container(s) of docker testnet {project!r}, "
          "with their networks and volumes")
