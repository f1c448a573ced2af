"""`p2pinfer testnet up | status | down`: N real node processes on 127.0.0.1, or with
`--docker` N node containers (see testnet_docker_cmds.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from p2pinfer.backends.factory import BACKEND_HELP
from p2pinfer.cli import testnet_docker_cmds as docker_cmds
from p2pinfer.cli.testnet_docker_cmds import (
    BuildOption,
    DockerOption,
    GatewayPortOption,
    ImageOption,
    ProjectOption,
    ShowKeyOption,
)
from p2pinfer.errors import TestnetError, UsageError
from p2pinfer.testing.faults import FAULT_HELP, parse_fault
from p2pinfer.testnet import processes as testnet
from p2pinfer.testnet.docker import DEFAULT_GATEWAY_PORT, DEFAULT_IMAGE, DEFAULT_PROJECT

testnet_app = typer.Typer(help="A local testnet of node processes.", no_args_is_help=True)

DirOption = Annotated[Path, typer.Option("--dir", help="The testnet's directory.")]


def _print_status(directory: Path, as_json: bool) -> None:
    nodes = testnet.status(directory)
    if as_json:
        print(json.dumps([asdict(n) for n in nodes], indent=2))
        return
    table = Table("#", "peer", "listen", "gateway", "models", "alive", "fault")
    for n in nodes:
        table.add_row(str(n.index), n.peer_id or "-", n.listen_addrs[0] if n.listen_addrs else "-",
                      n.gateway_url or "-", ", ".join(n.models) or "-",
                      "yes" if n.alive else "NO", n.fault or "")
    Console(width=200).print(table)
    spec = testnet.chain_of(directory)
    if spec is not None:
        alive = "alive" if testnet.pid_alive(spec.pid) else "NOT RUNNING"
        print(f"chain rpc={spec.rpc} channels={spec.channels} ({alive}); "
              f"deployment {spec.deployment_file}")


# Over 60 lines for its flags: typer reads one annotated parameter per option (the body
# is under 25 lines).
@testnet_app.command("up")
def up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, help="How many nodes.")] = 3,
    directory: DirOption = Path("testnet"),
    models: Annotated[list[str] | None, typer.Option(
        "--models", help="Model every node serves (repeatable; default: all installed).")] = None,
    backend: Annotated[str, typer.Option(
        "--backend", help=f"{BACKEND_HELP} | none.")] = "embedded",
    fault: Annotated[list[str] | None, typer.Option(
        "--fault", help=f"PEER_INDEX:KIND, KIND = {FAULT_HELP} (repeatable).")] = None,
    gateway: Annotated[bool, typer.Option(
        "--gateway/--no-gateway", help="Give every node an HTTP gateway.")] = True,
    benchmark: Annotated[bool, typer.Option(
        "--benchmark/--no-benchmark", help="Measure models once (shared cache).")] = True,
    timeout: Annotated[float | None, typer.Option(
        "--timeout", help="Seconds to wait for each node to start (default 120; with "
        "--docker, for every container to be healthy, default 600).")] = None,
    docker: DockerOption = False,
    project: ProjectOption = DEFAULT_PROJECT,
    image: ImageOption = DEFAULT_IMAGE,
    gateway_port: GatewayPortOption = DEFAULT_GATEWAY_PORT,
    build: BuildOption = True,
    chain: Annotated[bool, typer.Option(
        "--chain/--no-chain", help="Also run a local chain (`p2pinfer chain serve`; with "
        "--docker in its own container), fund every node's chain account and the "
        "consumer's, lock the providers' stake and open a channel from each to every "
        "provider.")] = False,
    unstaked: Annotated[list[int] | None, typer.Option(
        "--unstaked", help="With --chain: PEER_INDEX of a provider that locks no stake "
        "(repeatable).")] = None,
    validator: Annotated[list[int] | None, typer.Option(
        "--validator", help="PEER_INDEX of a node that spot-checks the others and "
        "publishes reports (repeatable); with --chain it locks the validator minimum "
        "stake, so its slash votes count.")] = None,
    check_interval: Annotated[float | None, typer.Option(
        "--check-interval", min=0.1, help="Validators: mean seconds between check jobs "
        "(default: the node's).")] = None,
    engine_option: Annotated[list[str] | None, typer.Option(
        "--engine-option", help="Embedded engine setting KEY=VALUE for every node "
        "(repeatable), e.g. embedding=true to serve embeddings.")] = None,
    gov_min_voting_s: Annotated[int | None, typer.Option(
        "--gov-min-voting-s", min=1, help="Every node accepts votes this short (seconds; "
        "default: the node's hour), for trying governance on a testnet.")] = None,
) -> None:
    """Start the testnet: node 0 first, the others joining through it."""
    if docker and (unstaked or validator or check_interval or gov_min_voting_s
                   or engine_option):
        raise UsageError("--unstaked, --validator, --check-interval, --engine-option and "
                         "--gov-min-voting-s run with the process testnet only, not --docker")
    if unstaked and not chain:
        raise UsageError("--unstaked needs --chain (stake is locked on the chain)")
    if docker:
        docker_cmds.up(nodes, project, image, gateway_port, build, timeout, chain)
        return
    faults = testnet.parse_faults(fault or [], nodes)
    for kind in faults.values():
        parse_fault(kind)
    testnet.up(directory, nodes, backend=backend, models=models or [], faults=faults,
               gateway=gateway, start_timeout_s=timeout or 120.0,
               options=testnet.NodeOptions(benchmark=benchmark,
                                           check_interval_s=check_interval,
                                           gov_min_voting_s=gov_min_voting_s,
                                           engine_options=tuple(engine_option or ())),
               chain=chain, unstaked=frozenset(unstaked or ()),
               validators=frozenset(validator or ()))
    _print_status(directory, as_json=False)


@testnet_app.command("status")
def status(
    directory: DirOption = Path("testnet"),
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    docker: DockerOption = False,
    project: ProjectOption = DEFAULT_PROJECT,
    api_key: ShowKeyOption = False,
    gateway_url: Annotated[bool, typer.Option(
        "--gateway-url", help="Print only the gateway URL of the first live node that has "
        "one (for scripts: `curl \"$(p2pinfer testnet status --gateway-url)/api/tags\"`).")
    ] = False,
) -> None:
    """Each node: index, PeerID, listen address, gateway URL, models, alive."""
    if docker:
        if gateway_url:
            raise UsageError("--gateway-url is for the process testnet; the docker testnet's "
                             "gateway is http://127.0.0.1:--gateway-port (default 11436)")
        docker_cmds.print_status(project, as_json, api_key_only=api_key)
        return
    if gateway_url:
        url = next((n.gateway_url for n in testnet.status(directory)
                    if n.alive and n.gateway_url), None)
        if url is None:
            raise TestnetError(f"no live node with a gateway in {directory}")
        print(url)
        return
    _print_status(directory, as_json)


@testnet_app.command("down")
def down(
    directory: DirOption = Path("testnet"),
    docker: DockerOption = False,
    project: ProjectOption = DEFAULT_PROJECT,
) -> None:
    """Stop every node (SIGTERM, then SIGKILL after 10 s); with --docker, remove every
    container, network and volume of the docker testnet."""
    if docker:
        docker_cmds.down(project)
        return
    had_chain = (directory / testnet.STATE_FILE).exists() and testnet.chain_of(directory)
    stopped = testnet.down(directory)
    print(f"stopped {stopped} node(s)" + (" and the chain" if had_chain else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(testnet_app, name="testnet")
