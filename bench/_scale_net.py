"""bench/scale.py's testnet: node 0 a `--backend none` bootstrap, the rest joining through
it (a few on the embedded engine with the tiny model, the others on the FAKE engine), each
node's command line kept so that the churn phase can kill and restart it in place.
"""

from __future__ import annotations

import time
from pathlib import Path

from p2pinfer.node.status import NodeStatus
from p2pinfer.testnet import processes as testnet

FAKE = "fake:latest"


class Net:
    """The testnet: each node's command line kept, so churn can restart it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.state = testnet.TestnetState(dir=str(directory))
        self.commands: dict[int, list[str]] = {}
        self.kinds: dict[int, str] = {}

    def spawn(self, index: int) -> int:
        """Start node `index` from its kept command line (again, after a kill); its pid."""
        home = self.directory / f"node{index}"
        pid = testnet._spawn(self.commands[index], home)
        spec = testnet.NodeSpec(index=index, home=str(home), pid=pid)
        self.state.nodes = [n for n in self.state.nodes if n.index != index] + [spec]
        self.state.save()
        return pid

    def wait(self, index: int, timeout_s: float = 300) -> NodeStatus:
        """Node `index`'s status once it is up."""
        spec = next(n for n in self.state.nodes if n.index == index)
        return testnet._wait_for_status(Path(spec.home), spec.pid, timeout_s)

    def pid(self, index: int) -> int:
        """Node `index`'s current process id."""
        return next(n.pid for n in self.state.nodes if n.index == index)


def build(directory: Path, tiny: Path, nodes: int, real: int, rate: float,
          interval_s: float) -> tuple[Net, str, float]:
    """Start the testnet, `batch` joiners at a time; (net, bootstrap address, seconds)."""
    net = Net(directory)
    opts = testnet.NodeOptions(benchmark=False, advert_interval_s=interval_s)
    started = time.perf_counter()

    def command(i: int, backend: str, models: list[str], bootstrap: str | None) -> list[str]:
        extra = ["--log-level", "DEBUG", "--max-concurrency", "2", "--queue", "4"]
        return testnet._node_command(directory / f"node{i}", bootstrap, backend, models, None,
                                     False, opts, extra)

    net.commands[0] = command(0, "none", [], None)
    net.kinds[0] = "bootstrap"
    net.spawn(0)
    bootstrap = net.wait(0).listen_addrs[0]
    for i in range(1, nodes):
        if i <= real:
            net.commands[i] = command(i, "embedded", [f"tiny:latest={tiny}"], bootstrap)
            net.kinds[i] = "tiny"
        else:
            net.commands[i] = command(i, f"fake-stream={rate:g}", [FAKE], bootstrap)
            net.kinds[i] = "fake"
    batch = 6  # start-up is CPU-bound (imports); more at once only queues on 2 cores
    for first in range(1, nodes, batch):
        group = range(first, min(nodes, first + batch))
        for i in group:
            net.spawn(i)
        for i in group:
            net.wait(i)
    return net, bootstrap, time.perf_counter() - started
