"""`p2pinfer testnet up --chain`: the local chain runs as one more testnet process, every
node's derived account and the testnet consumer's are funded, the providers (all but
`--unstaked` ones) have stake locked, every node and the consumer have a channel to
every provider, the nodes are pointed at the chain, and `testnet down` stops the chain
too. Jobs asked with `ask --testnet` are paid by vouchers and redeemed on chain; staked
validators slash a cheating provider's stake on chain; governance weighs locked stake.

One testnet for the whole module (5 fake-stream nodes): nodes 0-2 are validators
(each locks the contract's validator minimum and spot-checks every 2 s), node 3
garbles every answer (`--fault garbage`, 100 credits staked), node 4 locks nothing.
Every node accepts 10-second votes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest

from p2pinfer import identity
from p2pinfer.cli.node_gateway import gateway_request, running_gateway_url
from p2pinfer.settle import wallet
from p2pinfer.settle.account import account_of
from p2pinfer.settle.chain import ChainClient
from p2pinfer.settle.vouchers import recover_signer, slash_digest
from p2pinfer.testnet import processes as testnet
from p2pinfer.testnet.chain import (
    CHANNEL_DEPOSIT,
    CONSUMER_CREDITS,
    CONSUMER_HOME,
    PROVIDER_STAKE,
    VALIDATOR_STAKE,
    node_accepts_chain_flags,
)
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.network]
ROOT = Path(__file__).resolve().parents[2]
VALIDATORS = (0, 1, 2)
CHEATER = 3
UNSTAKED = 4
VOTING_S = 60  # five `gov vote` processes must fit in it on a loaded machine
T = TypeVar("T")


def p2pinfer(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "p2pinfer", *args], capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    directory = tmp_path_factory.mktemp("chain-testnet")
    validators = [arg for i in VALIDATORS for arg in ("--validator", str(i))]
    up = p2pinfer("testnet", "up", "--nodes", "5", "--dir", str(directory), "--backend",
                  "fake-stream=200", "--no-benchmark", "--chain", "--unstaked", str(UNSTAKED),
                  *validators, "--check-interval", "2", "--fault", f"{CHEATER}:garbage",
                  "--gov-min-voting-s", "10", "--timeout", "90")
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


def at_one_block(client: ChainClient, read: Callable[[], T]) -> tuple[T, int]:
    """`read()` and the block it saw: validators' check jobs are redeemed all the time,
    so a balance is only comparable with the events up to the block it was read at."""
    while True:
        block = client.block_number()
        value = read()
        if client.block_number() == block:
            return value, block


def test_every_account_is_funded_staked_and_has_channels(net: Path) -> None:
    spec = testnet.chain_of(net)
    assert spec is not None and testnet.pid_alive(spec.pid)
    nodes = testnet.status(net)
    providers = {account_of(identity.load(Path(n.home))).address for n in nodes}
    for home, index in [(Path(n.home), n.index) for n in nodes] + [(net / CONSUMER_HOME, -1)]:
        client = client_of(net, home)
        held, block = at_one_block(client, client.balances)
        # Free credits: the grant's, plus the provider's share of what it redeemed so far
        # (validators' check jobs are paid from the start).
        earned = sum(e.provider_share for e in client.redemptions(client.address)
                     if e.block <= block)
        assert held.credits == CONSUMER_CREDITS + earned, home
        if index in VALIDATORS:
            assert held.locked_stake == VALIDATOR_STAKE, home
        elif index == CHEATER:  # its validators may have slashed it already, even all
            assert 0 <= held.locked_stake <= PROVIDER_STAKE, home
        else:
            assert held.locked_stake == 0, home
        assert {c.provider: c.state.deposit for c in held.channels} == {
            p: CHANNEL_DEPOSIT for p in providers if p != held.address}, home
    for node in nodes:
        cmdline = Path(f"/proc/{node.pid}/cmdline").read_bytes().split(b"\0")
        assert (b"--chain-rpc" in cmdline) == node_accepts_chain_flags()
        assert (b"--redeem-max-interval" in cmdline) == node_accepts_chain_flags()


def test_a_job_is_paid_by_voucher_and_redeemed_with_the_split(net: Path) -> None:
    consumer = client_of(net, net / CONSUMER_HOME)
    homes = {n.peer_id: Path(n.home) for n in testnet.status(net)}
    accounts = {peer: client_of(net, home).address for peer, home in homes.items()}
    (before, supply_before), start = at_one_block(consumer, lambda: (
        {peer: consumer.credits_of(a) for peer, a in accounts.items()},
        consumer.total_supply()))
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
    (after, supply_after), end = at_one_block(consumer, lambda: (
        consumer.credits_of(provider.address), consumer.total_supply()))
    paid = [e for e in provider.redemptions(provider.address, start + 1) if e.block <= end]
    events = [e for e in paid if e.consumer == consumer.address]
    assert sum(e.amount for e in events) == voucher["cumulative"]
    # (provider, pool, burn, treasury) basis points; burned: the rest, residue included
    bps = [int(provider.channels.functions.split_bps(i).call()) for i in range(4)]
    for e in paid:
        assert e.provider_share == e.amount * bps[0] // 10_000
        assert e.pool_share == e.amount * bps[1] // 10_000
        assert e.treasury_share == e.amount * bps[3] // 10_000
        assert e.burned == e.amount - e.provider_share - e.pool_share - e.treasury_share
    # The provider's balance rose by its share of every redemption in the window (the
    # consumer's and the validators' check jobs), and nothing else.
    assert after - before[answer["provider"]] == sum(e.provider_share for e in paid)
    # The supply fell by every burn in the window: redemptions' burn shares and slashes.
    burned = sum(int(e["args"]["burned"]) for e in consumer.channels.events.Redeemed()
                 .get_logs(from_block=start + 1, to_block=end))
    slashed = sum(int(e["args"]["amount"]) for e in consumer.stake.events.Slashed()
                  .get_logs(from_block=start + 1, to_block=end))
    assert burned >= sum(e.burned for e in events) > 0
    assert supply_before - supply_after == burned + slashed


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


def test_two_of_three_validators_slash_the_cheater_on_chain(net: Path) -> None:
    """Node 3 garbles its answers: a validator's check fails, the others re-run the
    reported request, confirm the fraud and gossip slash votes; once two staked
    validators signed, `Stake.slash` burns half of the cheater's stake."""
    nodes = {n.index: Path(n.home) for n in testnet.status(net)}
    cheater = client_of(net, nodes[CHEATER])
    validators = {client_of(net, nodes[i]).address for i in VALIDATORS}
    wait_until(lambda: cheater.stake_of(cheater.address) < PROVIDER_STAKE, 240,
               "a slash of the cheater's stake on chain")
    (stake, events), _ = at_one_block(cheater, lambda: (
        cheater.stake_of(cheater.address), cheater.stake.events.Slashed().get_logs(
            argument_filters={"provider": cheater.address}, from_block=0)))
    assert events
    asked = []  # what each slash's signers signed for, in event order
    for event in events:
        tx = cheater.w3.eth.get_transaction(event["transactionHash"])
        _, args = cheater.stake.decode_function_input(tx["input"])
        asked.append(args["amount"])
        digest = slash_digest(cheater.stake.address, cheater.chain_id, cheater.address,
                              args["amount"], args["evidence"])
        signers = {recover_signer(digest, bytes(sig)) for sig in args["sigs"]}
        # Counted signers are distinct staked validators; the contract needs two.
        assert len(signers & validators) >= 2, (signers, validators)
        # A slash takes what its signers asked, or what is left: validators that confirm
        # two frauds before either slash lands both sign half of the same stake.
        assert 0 <= event["args"]["amount"] <= args["amount"]
    # The first slash takes half (SLASH_FRACTION_BP), in whole credits.
    assert events[0]["args"]["amount"] == asked[0] == PROVIDER_STAKE // 2
    # Every unit the cheater lost went in a Slashed event, and nothing else took any.
    assert stake == PROVIDER_STAKE - sum(int(e["args"]["amount"]) for e in events)
    # Honest nodes kept their stake: nobody slashed them.
    for i in (*VALIDATORS, UNSTAKED):
        held = client_of(net, nodes[i])
        assert held.stake_of(held.address) == (VALIDATOR_STAKE if i in VALIDATORS else 0)


def gov(net: Path, index: int, *args: str) -> subprocess.CompletedProcess[str]:
    home = next(n.home for n in testnet.status(net) if n.index == index)
    return p2pinfer("gov", *args, "--home", home, timeout=60)


def proposals(net: Path, index: int) -> dict[str, dict[str, object]]:
    """Node `index`'s tally of every proposal it has seen, by id, as `gov status --json`
    prints it."""
    run = gov(net, index, "status", "--json")
    assert run.returncode == 0, run.stderr
    return {p["id"]: p for p in json.loads(run.stdout)["proposals"]}


def polled(net: Path, index: int) -> dict[str, dict[str, object]]:
    """`proposals`, asked of node `index`'s gateway in-process: to poll four nodes with a
    `gov status` process each took seconds a round on a loaded 2-core CI machine."""
    home = Path(next(n.home for n in testnet.status(net) if n.index == index))
    url = running_gateway_url(home)
    assert url is not None, home
    return {p["id"]: p for p in gateway_request(url, "GET", "/admin/gov", home=home)["proposals"]}


def test_governance_weighs_locked_stake_and_no_stake_passes_nothing(net: Path) -> None:
    """With settlement on a vote weighs the stake its key's account locked at the
    proposal's snapshot block: each validator's VALIDATOR_STAKE, the unstaked node's 0.
    A proposal only the unstaked node supports does not pass; the validators' does."""
    unstaked = gov(net, UNSTAKED, "propose", "base_rate", "100", "--voting-s", str(VOTING_S))
    assert unstaked.returncode == 0, unstaked.stderr  # anyone may propose...
    theirs = unstaked.stdout.strip()
    ours_run = gov(net, 0, "propose", "base_rate", "450", "--voting-s", str(VOTING_S))
    assert ours_run.returncode == 0, ours_run.stderr
    ours = ours_run.stdout.strip()
    wait_until(lambda: all({theirs, ours} <= polled(net, i).keys()
                           for i in (0, 1, 2, UNSTAKED)), 60, "both proposals on every voter")
    votes = ((UNSTAKED, theirs, "yes"), (UNSTAKED, ours, "no"), (0, ours, "yes"),
             (1, ours, "yes"), (2, ours, "no"))
    with ThreadPoolExecutor(len(votes)) as pool:  # at once: the vote closes in VOTING_S
        runs = list(pool.map(lambda v: gov(net, v[0], "vote", v[1], v[2]), votes))
    for run in runs:
        assert run.returncode == 0, run.stderr
    deadline = int(str(proposals(net, 0)[ours]["voting_deadline"]))
    wait_until(lambda: time.time() * 1000 > deadline + 1000, VOTING_S + 30,
               "the voting deadline")

    def settled(index: int) -> bool:
        rows = polled(net, index)
        return all(rows[p]["outcome"] != "open" for p in (theirs, ours))

    wait_until(lambda: all(settled(i) for i in (0, 1, 2)), 60, "both tallies closed")
    for index in (0, 1, 2):  # ...but every counting node weighs the votes the same
        rows = proposals(net, index)
        mine = rows[theirs]
        assert (mine["outcome"], mine["yes_stake"], mine["no_stake_votes"]) == (
            "rejected", 0, 1), mine
        row = rows[ours]  # the unstaked node's "no" weighs nothing
        assert (row["outcome"], row["yes_stake"], row["no_stake"], row["voters"],
                row["no_stake_votes"]) == ("passed", 2 * VALIDATOR_STAKE, VALIDATOR_STAKE, 3,
                                           1), row
