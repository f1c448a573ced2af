"""The local chain of a process testnet (`p2pinfer testnet up --chain`).

`p2pinfer chain serve` runs as one more process in `DIR/chain/` (log `chain.log`,
deployment `deployment.json`), stopped by `testnet down` like the nodes. Every
node's chain account (derived from its key, created here before the node starts)
and the testnet consumer's (`DIR/consumer`, the home of `ask --testnet DIR`) is
funded at chain start; each provider then locks stake (a validator the contract's
validator minimum, so that its slash votes count) and every node and the consumer
deposit CHANNEL_DEPOSIT into a channel to every other provider, through the
wallet's own code path, so that jobs are paid from the first one. The grants are
sized so that every account holds CONSUMER_CREDITS free afterwards. The nodes get
`--chain-rpc` / `--chain-contract` and redeem at least every REDEEM_MAX_INTERVAL_S
(`--redeem-max-interval`) so that redemptions show within seconds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from p2pinfer import identity
from p2pinfer.errors import TestnetError
from p2pinfer.market.stake import DEFAULT_MINIMUM_STAKE

CHAIN_DIR = "chain"
CONSUMER_HOME = "consumer"  # the home of `ask --testnet DIR`, inside DIR
DEPLOYMENT_FILE = "deployment.json"
CONSUMER_CREDITS = 1_000 * 10**6  # units every node gets to deposit into channels
PROVIDER_STAKE = 100 * 10**6  # units every provider locks as stake
#: What a validator (`testnet up --validator I`) locks instead: the Stake contract's
#: default `validator_min_stake`, so its slash votes count.
VALIDATOR_STAKE = DEFAULT_MINIMUM_STAKE
CHANNEL_DEPOSIT = 100 * 10**6  # units each node and the consumer deposit per provider
REDEEM_MAX_INTERVAL_S = 20.0  # testnet nodes redeem what they hold at least this often


@dataclass
class ChainSpec:
    """The chain process of a testnet, as `testnet.json` records it."""

    pid: int
    dir: str
    rpc: str
    channels: str

    @property
    def deployment_file(self) -> Path:
        return Path(self.dir) / DEPLOYMENT_FILE


def node_accepts_chain_flags() -> bool:
    """Whether this `p2pinfer node` takes --chain-rpc / --chain-contract: the testnet
    starts this same package's node, whose CLI has them (testnet sits below cli, so it
    does not import the command to look; tests/unit/test_testnet_chain.py does)."""
    return True


def node_addresses(homes: list[Path]) -> list[str]:
    """Each home's chain address, creating the node key first where there is none."""
    from p2pinfer.settle.account import account_of

    return [account_of(identity.load_or_create(home)).address for home in homes]


def grant(*, stake: int, channels: int) -> int:
    """What one account is funded with: CONSUMER_CREDITS free once it has locked `stake`
    and deposited CHANNEL_DEPOSIT into `channels` channels."""
    return CONSUMER_CREDITS + stake + CHANNEL_DEPOSIT * channels


def fund_args(fund: list[tuple[str, int]]) -> list[str]:
    """`--fund ADDRESS=CREDITS` flags of `p2pinfer chain serve` for `fund` (address, units)."""
    from p2pinfer.settle.units import units_to_credits

    args: list[str] = []
    for address, units in fund:
        args += ["--fund", f"{address}={units_to_credits(units)}"]
    return args


def chain_command(directory: Path, fund: list[tuple[str, int]]) -> list[str]:
    """`p2pinfer chain serve` on a free loopback port, funding `fund` (address, units)."""
    return [sys.executable, "-m", "p2pinfer", "chain", "serve", "--host", "127.0.0.1",
            "--port", "0", "--deployment", str(directory / DEPLOYMENT_FILE), *fund_args(fund)]


def wait_for_deployment(directory: Path, pid: int, timeout_s: float,
                        alive: Callable[[int], bool]) -> dict[str, object]:
    """The deployment file once the chain wrote it; TestnetError if it dies or is late."""
    from p2pinfer.settle.wallet import read_deployment

    path = directory / DEPLOYMENT_FILE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists():
            return read_deployment(path)
        if not alive(pid):
            raise TestnetError(f"the chain exited during start-up; see {directory}/chain.log")
        time.sleep(0.05)
    raise TestnetError(f"the chain did not start within {timeout_s:.0f} s; "
                       f"see {directory}/chain.log")


def grants(homes: list[Path], stakes: dict[Path, int], providers: list[Path]) -> list[int]:
    """What each home is funded with: CONSUMER_CREDITS free once it has locked its stake
    (`stakes`, units; none if absent) and deposited into a channel to every provider
    other than itself."""
    return [grant(stake=stakes.get(home, 0), channels=sum(1 for p in providers if p != home))
            for home in homes]


def open_channels(spec: ChainSpec, payers: list[Path], providers: list[Path],
                  units: int) -> None:
    """Each payer home deposits `units` into a channel to every provider home but itself,
    as `p2pinfer wallet deposit` does."""
    from p2pinfer.settle import wallet

    target = wallet.resolve_target(None, None, spec.deployment_file)
    addresses = dict(zip(providers, node_addresses(providers), strict=True))
    for home in payers:
        client = wallet.connect(target, wallet.load_account(None, home))
        for provider, address in addresses.items():
            if provider != home:
                client.deposit(address, units)


def lock_stake(spec: ChainSpec, stakes: dict[Path, int]) -> None:
    """Each home's account locks its `stakes` units, as `p2pinfer wallet stake` does."""
    from p2pinfer.settle import wallet

    target = wallet.resolve_target(None, None, spec.deployment_file)
    for home, units in stakes.items():
        wallet.connect(target, wallet.load_account(None, home)).lock(units)


def chain_node_args(spec: ChainSpec) -> list[str]:
    """The flags that point a node at the testnet's chain (none if the node lacks them)."""
    if not node_accepts_chain_flags():
        return []
    return ["--chain-rpc", spec.rpc, "--chain-contract", spec.channels,
            "--redeem-max-interval", f"{REDEEM_MAX_INTERVAL_S:g}",
            "--redeem-gas-multiple", "0"]  # a testnet's ether is free: redeem regardless
