"""A local testnet: N real `p2pinfer node` processes on 127.0.0.1.

Node 0 is the bootstrap; the others join through it. Each node has its own
home `DIR/node<i>` (key, ledger, logs), so every per-node command works on it
with `--home DIR/node<i>`. A node writes `<home>/node.json` once it listens;
the testnet waits on that file (with a bound), never on a fixed sleep.
`DIR/testnet.json` records what was started, so `status` and `down` work
from another process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from p2pinfer.errors import TestnetError, UsageError
from p2pinfer.node.status import NODE_STATUS_FILE, NodeStatus
from p2pinfer.testnet import chain as testnet_chain
from p2pinfer.testnet.chain import ChainSpec

STATE_FILE = "testnet.json"
BENCH_CACHE_FILE = "bench-cache.json"
TESTNET_FAUCET = 10_000_000  # micro-credits granted to every testnet home once


@dataclass(frozen=True)
class NodeOptions:
    """Settings every node of a testnet runs with."""

    faucet: int = TESTNET_FAUCET
    advert_interval_s: float = 5.0  # a small network converges quickly
    benchmark: bool = True
    check_interval_s: float | None = None  # validators' `--check-interval` (None: default)
    gov_min_voting_s: int | None = None  # every node's `--gov-min-voting-s` (None: default)
    engine_options: tuple[str, ...] = ()  # every node's `--engine-option KEY=VALUE`s
    min_tokens_per_s: float | None = None  # every node's `--min-tokens-per-s` (None: default)


@dataclass
class NodeSpec:
    index: int
    home: str
    pid: int
    fault: str | None = None


@dataclass
class TestnetState:
    dir: str
    nodes: list[NodeSpec] = field(default_factory=list)
    chain: ChainSpec | None = None  # `up --chain`: the local chain process

    def save(self) -> None:
        path = Path(self.dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        os.replace(tmp, path)

    @classmethod
    def load(cls, directory: Path) -> TestnetState:
        path = directory / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise TestnetError(f"no testnet in {directory} (no {STATE_FILE})") from exc
        except (OSError, ValueError) as exc:
            raise TestnetError(f"cannot read {path}: {exc}") from exc
        chain = ChainSpec(**raw["chain"]) if raw.get("chain") else None
        return cls(dir=raw["dir"], nodes=[NodeSpec(**n) for n in raw["nodes"]], chain=chain)


@dataclass(frozen=True)
class TestnetNode:
    """A testnet's node: what it reports about itself in `<home>/node.json`, plus liveness."""

    index: int
    home: str
    pid: int
    alive: bool
    peer_id: str | None
    listen_addrs: list[str]
    gateway_url: str | None
    models: list[str]
    fault: str | None


def parse_faults(specs: list[str], nodes: int) -> dict[int, str]:
    """`PEER_INDEX:KIND` strings to {index: kind}; UsageError on a bad one."""
    faults: dict[int, str] = {}
    for spec in specs:
        idx_text, sep, kind = spec.partition(":")
        if not sep or not kind or not idx_text.isdigit():
            raise UsageError(
                f"bad --fault {spec!r}: expected PEER_INDEX:KIND, e.g. 1:crash-after=3"
            )
        idx = int(idx_text)
        if idx >= nodes:
            raise UsageError(f"bad --fault {spec!r}: the testnet has nodes 0..{nodes - 1}")
        faults[idx] = kind
    return faults


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by us) is not alive.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def read_node_status(home: Path) -> NodeStatus | None:
    """The status `<home>/node.json` holds, None while there is none (or it is malformed)."""
    return NodeStatus.read(home)


def _node_command(
    home: Path,
    bootstrap: str | None,
    backend: str,
    models: list[str],
    fault: str | None,
    gateway: bool,
    options: NodeOptions,
    extra: list[str],
    validator: bool = False,
) -> list[str]:
    cmd = [sys.executable, "-m", "p2pinfer", "node", "--home", str(home)]
    cmd += ["--listen", "/ip4/127.0.0.1/tcp/0", "--backend", backend]
    for m in models:
        cmd += ["--models", m]
    if bootstrap:
        cmd += ["--bootstrap", bootstrap]
    if fault:
        cmd += ["--fault", fault]
    cmd += ["--gateway", "127.0.0.1:0"] if gateway else ["--no-gateway"]
    # Testnet homes get credit to spend, and share one benchmark cache (one machine).
    cmd += ["--faucet", str(options.faucet)]
    cmd += ["--advert-interval", f"{options.advert_interval_s:g}"]
    if options.benchmark:
        cmd += ["--bench-cache", str(home.parent / BENCH_CACHE_FILE)]
    else:
        cmd += ["--no-benchmark"]
    if validator:
        cmd += ["--validator"]
        if options.check_interval_s is not None:
            cmd += ["--check-interval", f"{options.check_interval_s:g}"]
    if options.gov_min_voting_s is not None:
        cmd += ["--gov-min-voting-s", str(options.gov_min_voting_s)]
    for option in options.engine_options:
        cmd += ["--engine-option", option]
    if options.min_tokens_per_s is not None:
        cmd += ["--min-tokens-per-s", f"{options.min_tokens_per_s:g}"]
    return cmd + extra


def _wait_for_status(home: Path, pid: int, timeout_s: float) -> NodeStatus:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = read_node_status(home)
        if status is not None and status.pid == pid and status.listen_addrs:
            return status
        if not pid_alive(pid):
            raise TestnetError(f"node in {home} exited during start-up; see {home / 'node.log'}")
        time.sleep(0.05)
    raise TestnetError(f"node in {home} did not start within {timeout_s:.0f} s")


def _spawn(cmd: list[str], home: Path, log_name: str = "node.log") -> int:
    home.mkdir(parents=True, exist_ok=True)
    (home / NODE_STATUS_FILE).unlink(missing_ok=True)
    log = open(home / log_name, "ab")  # noqa: SIM115 - handed to the child
    env = dict(os.environ)
    # The child imports this same p2pinfer, even when it is not installed.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        start_new_session=True, env=env,
    )
    log.close()
    return proc.pid


def _check_up_args(nodes: int, backend: str, chain: bool, unstaked: frozenset[int],
                   validators: frozenset[int]) -> None:
    """UsageError for a testnet `up` that cannot work, before anything starts."""
    if nodes < 1:
        raise UsageError("--nodes must be at least 1")
    for flag, indexes in (("--unstaked", unstaked), ("--validator", validators)):
        if any(not 0 <= i < nodes for i in indexes):
            raise UsageError(f"{flag} takes node indexes 0..{nodes - 1}")
    if validators & unstaked and chain:
        raise UsageError("a --validator locks stake: it cannot be --unstaked too")
    if validators and backend == "none":
        raise UsageError("a --validator re-runs answers on its engine: not with --backend none")


def up(
    directory: Path,
    nodes: int,
    backend: str = "embedded",
    models: list[str] | None = None,
    faults: dict[int, str] | None = None,
    gateway: bool = True,
    start_timeout_s: float = 120.0,
    options: NodeOptions = NodeOptions(),
    node_args: dict[int, list[str]] | None = None,
    chain: bool = False,
    unstaked: frozenset[int] = frozenset(),
    validators: frozenset[int] = frozenset(),
) -> TestnetState:
    """Start `nodes` node processes in `directory` and wait until each listens.
    `node_args` adds flags to some nodes' command lines (by index); `validators` run
    with `--validator` (spot-checks and reports). With `chain`, a local chain starts
    first (see testnet_chain): every node's account and the consumer's are funded,
    providers (all but the `unstaked` indexes) lock stake, validators the contract's
    validator minimum, channels open."""
    _check_up_args(nodes, backend, chain, unstaked, validators)
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / STATE_FILE).exists():
        state = TestnetState.load(directory)
        chain_pids = [state.chain.pid] if state.chain else []
        if any(pid_alive(p) for p in [n.pid for n in state.nodes] + chain_pids):
            raise TestnetError(f"a testnet is already running in {directory}; `testnet down` first")
    faults = faults or {}
    models = models or []
    state = TestnetState(dir=str(directory))
    try:
        homes = [directory / f"node{i}" for i in range(nodes)]
        chain_args: list[str] = []
        if chain:
            providers = [] if backend == "none" else homes
            stakes = {h: testnet_chain.VALIDATOR_STAKE if i in validators
                      else testnet_chain.PROVIDER_STAKE
                      for i, h in enumerate(providers) if i not in unstaked}
            chain_args = _start_chain(state, homes, providers, stakes, start_timeout_s)
        bootstrap: str | None = None
        for i in range(nodes):
            home = homes[i]
            fault = faults.get(i)
            extra = chain_args + (node_args or {}).get(i, [])
            cmd = _node_command(home, bootstrap, backend, models, fault, gateway, options, extra,
                                validator=i in validators)
            pid = _spawn(cmd, home)
            state.nodes.append(NodeSpec(index=i, home=str(home), pid=pid, fault=fault))
            state.save()
            status = _wait_for_status(home, pid, start_timeout_s)
            if bootstrap is None:
                bootstrap = status.listen_addrs[0]
    except BaseException:
        down(directory)
        raise
    return state


def _start_chain(state: TestnetState, homes: list[Path], providers: list[Path],
                 stakes: dict[Path, int], timeout_s: float) -> list[str]:
    """Start the chain process funding every home's account and the consumer's, lock
    `stakes` (units per home), open the channels; the flags that point the nodes at the
    chain."""
    chain_dir = Path(state.dir) / testnet_chain.CHAIN_DIR
    (chain_dir / testnet_chain.DEPLOYMENT_FILE).unlink(missing_ok=True)
    payers = [*homes, Path(state.dir) / testnet_chain.CONSUMER_HOME]
    fund = list(zip(testnet_chain.node_addresses(payers),
                    testnet_chain.grants(payers, stakes, providers), strict=True))
    pid = _spawn(testnet_chain.chain_command(chain_dir, fund), chain_dir, "chain.log")
    state.chain = ChainSpec(pid=pid, dir=str(chain_dir), rpc="", channels="")
    state.save()
    data = testnet_chain.wait_for_deployment(chain_dir, pid, timeout_s, pid_alive)
    state.chain = ChainSpec(pid=pid, dir=str(chain_dir), rpc=str(data["rpc"]),
                            channels=str(data["channels"]))
    state.save()
    testnet_chain.lock_stake(state.chain, stakes)
    testnet_chain.open_channels(state.chain, payers, providers, testnet_chain.CHANNEL_DEPOSIT)
    return testnet_chain.chain_node_args(state.chain)


def chain_of(directory: Path) -> ChainSpec | None:
    """The testnet's chain process, if it was started with one."""
    return TestnetState.load(directory).chain


def status(directory: Path) -> list[TestnetNode]:
    """Each node of the testnet in `directory`, with what it reports and whether it runs."""
    state = TestnetState.load(directory)
    out: list[TestnetNode] = []
    for n in state.nodes:
        info = read_node_status(Path(n.home))
        current = info is not None and info.pid == n.pid
        out.append(
            TestnetNode(
                index=n.index,
                home=n.home,
                pid=n.pid,
                alive=pid_alive(n.pid),
                peer_id=info.peer_id if info else None,
                listen_addrs=list(info.listen_addrs) if info and current else [],
                gateway_url=info.gateway_url if info else None,
                models=list(info.models) if info else [],
                fault=n.fault,
            )
        )
    return out


def bootstrap_addr(directory: Path) -> str:
    """The multiaddr (with /p2p/) of the testnet's first live node."""
    for node in status(directory):
        if node.alive and node.listen_addrs:
            return node.listen_addrs[0]
    raise TestnetError(f"no live node in the testnet at {directory}")


def down(directory: Path, grace_s: float = 10.0) -> int:
    """Stop every node of the testnet (SIGTERM, then SIGKILL after `grace_s`); return how many."""
    try:
        state = TestnetState.load(directory)
    except TestnetError:
        return 0
    live = [n.pid for n in state.nodes if pid_alive(n.pid)]
    _stop(live, grace_s)
    # The chain last: nodes may settle on it while they shut down.
    if state.chain is not None and pid_alive(state.chain.pid):
        _stop([state.chain.pid], grace_s)
    (Path(state.dir) / STATE_FILE).unlink(missing_ok=True)
    return len(live)


def _stop(pids: list[int], grace_s: float) -> None:
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
