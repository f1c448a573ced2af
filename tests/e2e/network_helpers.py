"""Running `p2pinfer` commands and node processes against a local testnet, with bounds."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from p2pinfer.backends.base import ChatMessage, SamplingParams, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.market.ledger import Ledger, ledger_path
from p2pinfer.testnet import processes as testnet
from tests.support.backends import REPO_ROOT, smollm2_source
from tests.support.waiting import wait_until

MODEL = "smollm2:135m"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def p2pinfer(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would; fail the test if it outlives `timeout`."""
    return subprocess.run(
        [sys.executable, "-m", "p2pinfer", *args],
        capture_output=True, text=True, env=ENV, cwd=REPO_ROOT, timeout=timeout, check=False,
    )  # fmt: skip


def ask_json(*args: str, timeout: float = 180) -> dict[str, Any]:
    """`p2pinfer ask ... --json`, which must succeed; its one JSON object."""
    run = p2pinfer("ask", *args, "--json", timeout=timeout)
    assert run.returncode == 0, run.stderr
    answer: dict[str, Any] = json.loads(run.stdout)
    return answer


class StreamingAsk:
    """`p2pinfer ask --stream` in the background; `output` grows as the answer arrives."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "p2pinfer", "ask", *args, "--stream"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, cwd=REPO_ROOT,
        )  # fmt: skip
        self.output = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        while chunk := self.proc.stdout.read1(4096):
            self.output += chunk

    def wait_for_text(self, chars: int, timeout_s: float = 120) -> None:
        wait_until(lambda: len(self.output.strip()) >= chars or self.proc.poll() is not None,
                   timeout_s, "the streamed answer")
        assert len(self.output.strip()) >= chars, self.proc.stderr.read().decode()  # type: ignore[union-attr]

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@dataclass(frozen=True)
class Net:
    """A running testnet: its directory and each node's reported status."""

    dir: Path
    nodes: list[testnet.TestnetNode]

    def peer(self, index: int) -> str:
        peer_id = self.nodes[index].peer_id
        assert peer_id is not None
        return peer_id

    def log(self, index: int) -> str:
        return (Path(self.nodes[index].home) / "node.log").read_text(errors="replace")


@contextmanager
def running_testnet(directory: Path, nodes: int, **kwargs: Any) -> Iterator[Net]:
    """A testnet of SmolLM2 nodes (no benchmark) for the block; always stopped after."""
    options = testnet.NodeOptions(benchmark=False)
    try:
        testnet.up(directory, nodes, models=[MODEL], options=options, **kwargs)
        yield Net(directory, testnet.status(directory))
    finally:
        testnet.down(directory)


@contextmanager
def relay_node(home: Path, bootstrap: str | None) -> Iterator[str]:
    """A node that serves nothing (`--backend none`), joined through `bootstrap` if given;
    yields its address."""
    cmd = [sys.executable, "-m", "p2pinfer", "node", "--home", str(home), "--backend", "none",
           "--listen", "/ip4/127.0.0.1/tcp/0", "--no-gateway"]
    if bootstrap:
        cmd += ["--bootstrap", bootstrap]
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "node.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=ENV,
                                cwd=REPO_ROOT)
    try:
        def listening() -> bool:
            status = testnet.read_node_status(home)
            return status is not None and status.pid == proc.pid
        wait_until(listening, 120, f"the relay node in {home}")
        status = testnet.read_node_status(home)
        assert status is not None
        yield status.listen_addrs[0]
    finally:
        proc.terminate()
        proc.wait(15)


def charged_jobs(home: Path) -> list[str]:
    """Job ids (hex) charged in the ledger of the node or consumer at `home`."""
    with Ledger.open(ledger_path(home)) as ledger:
        return [e.body.fields()["job"].hex() for e in ledger.entries() if e.kind == "charge"]


def charge_entry(home: Path, job_id: str) -> dict[str, Any]:
    """The fields of the charge for `job_id` in the ledger at `home`."""
    with Ledger.open(ledger_path(home)) as ledger:
        for entry in ledger.entries():
            fields = entry.body.fields()
            if entry.kind == "charge" and fields["job"].hex() == job_id:
                return fields
    raise AssertionError(f"no charge for job {job_id} in {home}")


def greedy_direct(prompt: str, max_tokens: int, seed: int) -> str:
    """The embedded engine's own greedy answer, in this process, without the network."""

    async def run() -> str:
        engine = EmbeddedBackend([smollm2_source()])
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, seed=seed)
        try:
            async with engine.chat(MODEL, [ChatMessage("user", prompt)], params) as events:
                return "".join([e.text async for e in events if isinstance(e, TokenDelta)])
        finally:
            await engine.aclose()

    return trio.run(run)


CANCELLED = re.compile(
    r"job cancelled job=(?P<job>[0-9a-f]+) model=\S+ completion_tokens=(?P<tokens>\d+) "
    r"max_tokens=(?P<max>\d+)"
)
