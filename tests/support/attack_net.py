"""One running SmolLM2 testnet shared by every attack test and by bench/attacks.py.

Node 0 is the bootstrap and the honest consumer whose gateway the honest load
goes through; nodes 1 and 2 are honest providers (every node serves SmolLM2).
The attacker is the test process itself: it starts its own libp2p hosts under
fresh keys and talks to the nodes over loopback, as any peer could.

`HonestLoad` sends small greedy jobs through a gateway from a background thread
for as long as its block runs, so a test can assert that the honest network
kept serving while it was attacked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from p2pinfer.testnet import processes as testnet

MODEL = "smollm2:135m"


@dataclass(frozen=True)
class AttackNet:
    """The shared testnet: its directory and each node's status at start-up."""

    dir: Path
    nodes: list[testnet.TestnetNode]

    @property
    def bootstrap(self) -> str:
        """Node 0's multiaddr with /p2p/: where an attacker host dials in."""
        return self.nodes[0].listen_addrs[0]

    def gateway(self, index: int = 0) -> str:
        url = self.nodes[index].gateway_url
        assert url, f"node {index} has no gateway"
        return url

    def peer(self, index: int) -> str:
        peer_id = self.nodes[index].peer_id
        assert peer_id, f"node {index} has no peer id"
        return peer_id

    def home(self, index: int) -> Path:
        return Path(self.nodes[index].home)

    def log(self, index: int) -> str:
        return (self.home(index) / "node.log").read_text(errors="replace")

    def alive(self) -> bool:
        return all(n.alive for n in testnet.status(self.dir))


def honest_job(gateway: str, client: httpx.Client, prompt: str = "Say hello.") -> None:
    """One small greedy job through `gateway`; raises on anything but a 200 with text."""
    reply = client.post(f"{gateway}/api/generate", json={
        "model": MODEL, "prompt": prompt, "stream": False,
        "options": {"num_predict": 8, "temperature": 0.0, "seed": 1}}, timeout=120)
    reply.raise_for_status()
    body = reply.json()
    if not body.get("response"):
        raise AssertionError(f"empty answer: {body}")


def wait_until_serving(net: AttackNet, timeout_s: float = 120.0) -> None:
    """Until node 0 has heard both other providers and one job through it succeeds."""
    deadline = time.monotonic() + timeout_s
    with httpx.Client() as client:
        while True:
            try:
                entries = client.get(f"{net.gateway()}/admin/catalog", timeout=5).json()["entries"]
                if len({e["provider"] for e in entries}) >= 2:
                    honest_job(net.gateway(), client)
                    return
            except (httpx.HTTPError, AssertionError, KeyError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"the attack testnet was not serving after {timeout_s:g} s")
            time.sleep(0.5)


@contextmanager
def attack_testnet(directory: Path, nodes: int = 3, *,
                   min_tokens_per_s: float | None = None) -> Iterator[AttackNet]:
    """Start the attack testnet (no benchmark; the nodes' pace floor `min_tokens_per_s`,
    None: the default), wait until it serves; always stopped after."""
    options = testnet.NodeOptions(benchmark=False, min_tokens_per_s=min_tokens_per_s)
    try:
        testnet.up(directory, nodes, models=[MODEL], options=options)
        net = AttackNet(directory, testnet.status(directory))
        wait_until_serving(net)
        yield net
    finally:
        testnet.down(directory)


@dataclass
class LoadResult:
    """What the honest load saw: one entry per job, None for success or the error text."""

    outcomes: list[str | None] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)  # each successful job's duration

    @property
    def jobs(self) -> int:
        return len(self.outcomes)

    @property
    def failures(self) -> list[str]:
        return [o for o in self.outcomes if o is not None]

    @property
    def success_rate(self) -> float:
        return 1.0 if not self.outcomes else 1 - len(self.failures) / len(self.outcomes)


@contextmanager
def honest_load(gateway: str, pause_s: float = 0.2, min_jobs: int = 3) -> Iterator[LoadResult]:
    """Honest jobs through `gateway` one after another while the block runs.

    On leaving the block the load goes on until at least `min_jobs` ran, so a short
    attack still has honest jobs measured against it."""
    result = LoadResult()
    stop = threading.Event()

    def loop() -> None:
        with httpx.Client() as client:
            while not stop.is_set() or result.jobs < min_jobs:
                started = time.monotonic()
                try:
                    honest_job(gateway, client)
                    result.seconds.append(time.monotonic() - started)
                    result.outcomes.append(None)
                except Exception as exc:  # every failure is a data point
                    result.outcomes.append(f"{type(exc).__name__}: {exc}")
                time.sleep(pause_s)

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    try:
        yield result
    finally:
        stop.set()
        worker.join(timeout=600)
