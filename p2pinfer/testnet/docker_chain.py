"""The local chain of a docker testnet (`p2pinfer testnet up --docker --chain`).

The chain runs in a container of its own (the node image, command `p2pinfer chain
serve --host 0.0.0.0 --port 8545 ...`), named `<project>-chain`, on the testnet's
private network under the alias `chain` and published on the host's 127.0.0.1
(through the `edge` network: an internal network cannot publish). It carries the
project's label, so `testnet status --docker` lists it and `testnet down --docker`
removes it with the rest. Its deployment file goes to the shared rendezvous volume
(`/rendezvous/chain.json`), where each node's entrypoint reads the Channels address.

Order, as the process testnet has it (testnet/chain.py): the node containers are
created but not started; each node's key is made in its own /data volume (a one-off
container of the same image, so the key has the node's owner) and its chain address
read; the chain starts funding those addresses; each provider locks stake with
`p2pinfer wallet stake` in a one-off container on its volume, and every node deposits
into a channel to every provider but itself (one one-off container per node); then the
nodes start, with P2PINFER_CHAIN_RPC=http://chain:8545.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from p2pinfer.errors import TestnetError
from p2pinfer.testnet import chain as testnet_chain
from p2pinfer.testnet.docker_status import (
    CHAIN_PORT,
    NUMBER_LABEL,
    PROJECT_LABEL,
    SERVICE_LABEL,
    ContainerStatus,
    _run,
    chain_rpc_url,
    docker_status,
    last_log_line,
)

SERVICE = "chain"
PORT = CHAIN_PORT
#: How the nodes reach the chain: its alias on the testnet's private network.
RPC_IN_NETWORK = f"http://{SERVICE}:{PORT}"
#: In the rendezvous volume, which every node mounts (read-only).
DEPLOYMENT = "/rendezvous/chain.json"
#: The compose variable (docker/compose.yaml) that turns a node's chain flags on.
RPC_VAR = "P2PINFER_CHAIN_RPC"
#: Node containers' home (the image's /data volume).
NODE_HOME = "/data"
_ADDRESS_SCRIPT = ("import pathlib, p2pinfer.testnet.chain as t; "
                   f"print(t.node_addresses([pathlib.Path({NODE_HOME!r})])[0])")
_ONE_OFF_S = 120.0


@dataclass(frozen=True)
class DockerChain:
    """The chain container of a docker testnet, and where to reach it from the host."""

    container: str
    rpc: str  # on the host: http://127.0.0.1:PORT
    channels: str
    chain_id: int
    deployment: dict[str, Any]


def container_name(project: str) -> str:
    return f"{project}-{SERVICE}"


def rpc_url(ports: dict[str, Any]) -> str | None:
    """The chain's URL on the host from a container's NetworkSettings.Ports; None if
    it publishes no chain port."""
    return chain_rpc_url(ports)


def _one_off(project: str, image: str, volumes_from: str, network: str,
             args: list[str], what: str) -> str:
    """Run `args` in a throw-away container of `image` on `volumes_from`'s volumes (as the
    image's user, so what it writes in /data is the node's); its stdout."""
    return _run(["docker", "run", "--rm", "--label", f"{PROJECT_LABEL}={project}",
                 "--volumes-from", volumes_from, "--network", network, image, *args],
                timeout_s=_ONE_OFF_S, what=what).stdout.strip()


def node_address(project: str, image: str, node: str) -> str:
    """The chain address of the node container `node` (created, not started), making its
    key in its volume first, with the helper the process testnet uses."""
    return _one_off(project, image, node, "none", ["python3", "-c", _ADDRESS_SCRIPT],
                    f"making the key of {node}").splitlines()[-1]


def lock_stake(project: str, image: str, node: str, channels: str) -> None:
    """`p2pinfer wallet stake` with the key in `node`'s volume, against the chain container."""
    from p2pinfer.settle.units import units_to_credits

    _one_off(project, image, node, f"{project}_p2p",
             ["p2pinfer", "wallet", "stake", units_to_credits(testnet_chain.PROVIDER_STAKE),
              "--chain-rpc", RPC_IN_NETWORK, "--chain-contract", channels, "--json"],
             f"locking the stake of {node}")


_DEPOSIT_SCRIPT = (
    "import pathlib, sys; from p2pinfer.settle import wallet; "
    "c = wallet.connect(wallet.resolve_target(sys.argv[1], sys.argv[2], None), "
    f"wallet.load_account(None, pathlib.Path({NODE_HOME!r}))); "
    "[c.deposit(a, int(sys.argv[3])) for a in sys.argv[4:]]")


def open_channels(project: str, image: str, node: str, channels: str,
                  providers: list[str]) -> None:
    """`node` deposits CHANNEL_DEPOSIT into a channel to each of `providers` (addresses),
    as `p2pinfer wallet deposit` does, in one one-off container (web3 imported once)."""
    if providers:
        _one_off(project, image, node, f"{project}_p2p",
                 ["python3", "-c", _DEPOSIT_SCRIPT, RPC_IN_NETWORK, channels,
                  str(testnet_chain.CHANNEL_DEPOSIT), *providers],
                 f"opening the channels of {node}")


def start_chain(project: str, image: str, nodes: tuple[ContainerStatus, ...], *,
                host_port: int = 0, timeout_s: float = 300.0) -> DockerChain:
    """Fund every node container's account on a new chain container and lock the
    providers' stake; the nodes are created (their volumes exist) and not yet started."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        addresses = list(pool.map(lambda c: node_address(project, image, c.name), nodes))
    is_provider = [c.service == "provider" for c in nodes]
    provider_addresses = [a for a, p in zip(addresses, is_provider, strict=True) if p]
    fund = [(a, testnet_chain.grant(stake=testnet_chain.PROVIDER_STAKE * p,
                                    channels=len(provider_addresses) - p))
            for a, p in zip(addresses, is_provider, strict=True)]
    name = container_name(project)
    _run(["docker", "create", "--name", name, "--init",
          "--label", f"{PROJECT_LABEL}={project}", "--label", f"{SERVICE_LABEL}={SERVICE}",
          "--label", f"{NUMBER_LABEL}=1",
          "--network", f"{project}_edge", "-p", f"127.0.0.1:{host_port or ''}:{PORT}",
          "-v", f"{project}_rendezvous:/rendezvous",
          "--health-cmd", f"test -s {DEPLOYMENT}", "--health-interval", "2s",
          "--health-start-period", f"{timeout_s:.0f}s",
          image, "p2pinfer", "chain", "serve", "--host", "0.0.0.0", "--port", str(PORT),
          "--deployment", DEPLOYMENT, *testnet_chain.fund_args(fund)],
         timeout_s=60, what="creating the chain container")
    _run(["docker", "network", "connect", "--alias", SERVICE, f"{project}_p2p", name],
         timeout_s=60, what="connecting the chain to the testnet network")
    _run(["docker", "start", name], timeout_s=60, what="starting the chain container")
    deployment = wait_for_deployment(name, timeout_s)
    channels = str(deployment["channels"])
    providers = [c.name for c in nodes if c.service == "provider"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda p: lock_stake(project, image, p, channels), providers))
        # Every node pays every provider but itself through a channel, as on the process
        # testnet: with settlement on, a provider serves nobody without one.
        list(pool.map(lambda c_a: open_channels(project, image, c_a[0].name, channels, [
            p for p in provider_addresses if p != c_a[1]]), zip(nodes, addresses, strict=True)))
    [chain] = [c for c in docker_status(project, peer_ids=False) if c.name == name]
    return DockerChain(container=name, rpc=chain.rpc_url or "", channels=channels,
                       chain_id=int(deployment["chain_id"]), deployment=deployment)


def wait_for_deployment(container: str, timeout_s: float) -> dict[str, Any]:
    """The chain container's deployment file once it is written (the chain answers then);
    TestnetError with its last log line if it stops, or when `timeout_s` has passed."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc = _run(["docker", "exec", container, "cat", DEPLOYMENT], timeout_s=30,
                    what="reading the chain's deployment", check=False)
        if proc.returncode == 0:
            try:
                data = json.loads(proc.stdout)
            except ValueError:
                data = None
            if isinstance(data, dict) and isinstance(data.get("channels"), str):
                return data
        state = _run(["docker", "inspect", "--format", "{{.State.Running}}", container],
                     timeout_s=30, what="docker inspect", check=False).stdout.strip()
        if state != "true":
            raise TestnetError(f"the chain container {container} stopped during start-up: "
                               f"{last_log_line(container)}")
        if time.monotonic() > deadline:
            raise TestnetError(f"the chain container {container} wrote no deployment within "
                               f"{timeout_s:.0f} s: {last_log_line(container)}")
        time.sleep(0.5)
