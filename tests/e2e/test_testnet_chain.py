"""`p2pinfer testnet up --chain`: the local chain runs as one more testnet process, every
node's derived account and the testnet consumer's are funded, the providers (all but
`--unstaked` ones) have stake locked, every node and the consumer have a channel to
every provider, the nodes are pointed at the chain, and `testnet down` stops the chain
too. Jobs asked with `ask --testnet` are paid by vouchers and redeemed on chain.

One testnet for the whole module (3 fake-stream nodes, node 2 unstaked)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2pinfer import identity, testnet
from p2pinfer.settle import wallet
from p2pinfer.settle.account import account_of
from p2pinfer.settle.chain import ChainClient
from p2pinfer.testnet_chain import (
    CHANNEL_DEPOSIT,
    CONSUMER_CREDITS,
    CONSUMER_HOME,
    PROVIDER_STAKE,
    node_accepts_chain_flags,
)

pytestmark = [pytest.mark.network]
ROOT = Path(__file__).resolve().parents[2]
UNSTAKED = 2


def p2pinfer(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "p2pinfer", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("chain-testnet")
    up = p2pinfer("testnet", "up", "--nodes", "3", "--dir", str(directory), "--backend",
                  "fake-stream=200", "--no-gateway", "--no-benchmark", "--chain",
                  "--unstaked", str(UNSTAKED), "--timeout", "90")
    spec = testnet.chain_of(directory) if (directory / "testnet.json").exists() else None
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert "chain rpc=http://127.0.0.1:" in up.stdout
        yield directory
    finally:
        down = p2pinfer("testnet", "down", "--dir", str(directory), timeout=60)
    assert "and the chain" in down.stdout, down.stdout + down.stderr
    assert spec is not None and not testnet.pid_alive(spec.pid)


def client_of(directory: Path, home: Path) -> ChainClient:
    spec = testnet.chain_of(directory)
    assert spec is not None
    return wallet.connect(wallet.resolve_target(None, None, spec.deployment_file),
                          wallet.load_account(None, home))


def ask(directory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return p2pinfer("ask", "hello", "--model", "fake", "--testnet", str(directory), "--json",
                    "--max-tokens", "40", "--timeout", "60", *extra, timeout=90)


def test_every_account_is_funded_staked_and_has_channels(net: Path) -> None:
    spec = testnet.chain_of(net)
    assert spec is not None and testnet.pid_alive(spec.pid)
    nodes = testnet.status(net)
    providers = {account_of(identity.load(Path(n.home))).address for n in nodes}
    for home, index in [(Path(n.home), n.index) for n in nodes] + [(net / CONSUMER_HOME, -1)]:
        held = client_of(net, home).balances()
        staked = PROVIDER_STAKE if index not in (-1, UNSTAKED) else 0
        assert (held.credits, held.locked_stake) == (CONSUMER_CREDITS, staked), home
        assert {c.provider: c.state.deposit for c in held.channels} == {
            p: CHANNEL_DEPOSIT for p in providers if p != held.address}, home
    for node in nodes:
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
        assert (b"--chain-rpc" in cmdline) == node_accepts_chain_flags()
        assert (b"--redeem-max-interval" in cmdline) == node_accepts_chain_flags()


def test_a_job_is_paid_by_voucher_and_redeemed_with_the_split(net: Path) -> None:
    consumer = client_of(net, net / CONSUMER_HOME)
    homes = {n.peer_id: Path(n.home) for n in testnet.status(net)}
    before = {peer: consumer.credits_of(client_of(net, home).address)
              for peer, home in homes.items()}
    supply_before = consumer.total_supply()
    start = consumer.block_number()
    run = ask(net)
    assert run.returncode == 0, run.stdout + run.stderr
    answer = json.loads(run.stdout)
    voucher = answer["voucher"]
    assert voucher["signer"] == consumer.address and voucher["amount"] == answer["charged"] > 0
    provider = client_of(net, homes[answer["provider"]])
    # The provider redeems within --redeem-max-interval (20 s) plus one check (10 s).
    deadline = time.monotonic() + 60
    while provider.channel(consumer.address, provider.address).redeemed < voucher["cumulative"]:
        assert time.monotonic() < deadline, "not redeemed within 60 s"
        time.sleep(1)
    events = [e for e in provider.redemptions(provider.address, start + 1)
              if e.consumer == consumer.address]
    assert sum(e.amount for e in events) == voucher["cumulative"]
    # (provider, pool, burn, treasury) basis points; burned: the rest, residue included
    bps = [int(provider.channels.functions.split_bps(i).call()) for i in range(4)]
    for e in events:
        assert e.provider_share == e.amount * bps[0] // 10_000
        assert e.pool_share == e.amount * bps[1] // 10_000
        assert e.treasury_share == e.amount * bps[3] // 10_000
        assert e.burned == e.amount - e.provider_share - e.pool_share - e.treasury_share
    assert provider.credits_of(provider.address) - before[answer["provider"]] == sum(
        e.provider_share for e in events)
    assert supply_before - consumer.total_supply() == sum(e.burned for e in events)


def test_a_consumer_without_a_channel_is_refused(net: Path, tmp_path: Path) -> None:
    home = tmp_path / "fresh"
    address = account_of(identity.load_or_create(home)).address
    consumer = client_of(net, net / CONSUMER_HOME)
    consumer.w3.provider.make_request("p2pinfer_fund", [address, "50"])  # type: ignore[arg-type]
    assert consumer.credits_of(address) == 50 * 10**6
    run = ask(net, "--home", str(home), "--discovery-timeout", "10")
    assert run.returncode != 0, run.stdout
    assert "no funded channel" in run.stderr and "wallet deposit" in run.stderr, run.stderr


def test_min_stake_skips_the_unstaked_provider(net: Path) -> None:
    unstaked = next(n.peer_id for n in testnet.status(net) if n.index == UNSTAKED)
    for _ in range(3):
        run = ask(net, "--min-stake", str(PROVIDER_STAKE))
        assert run.returncode == 0, run.stdout + run.stderr
        assert json.loads(run.stdout)["provider"] != unstaked
