"""`p2pinfer chain serve` as a real process on 127.0.0.1, and the wallet CLI against it:
deposit, withdraw (start, refused before due, executed after), stake, unstake, redeem,
with the documented exit codes for an unreachable chain (15), too few credits (16) and
a revert (17). Time on the chain moves with `evm_increaseTime`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_utils.crypto import keccak
from typer.testing import CliRunner

from p2pinfer import identity
from p2pinfer.cli.main import _register_all, app
from p2pinfer.errors import P2PInferError
from p2pinfer.settle.account import account_of
from p2pinfer.settle.vouchers import sign_digest, voucher_digest
from tests.support.processes import stop_process

ROOT = Path(__file__).resolve().parents[2]
DAY_S = 24 * 3600
START_TIMEOUT_S = 90.0
_register_all()


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A running `p2pinfer chain serve`; its deployment file's content plus "file"."""
    directory = tmp_path_factory.mktemp("chain")
    deployment = directory / "deployment.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(directory / "chain.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "p2pinfer", "chain", "serve", "--port", "0",
             "--deployment", str(deployment)],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not deployment.exists():
            assert proc.poll() is None, (directory / "chain.log").read_text()
            assert time.monotonic() < deadline, "the chain did not start in time"
            time.sleep(0.1)
        yield {**json.loads(deployment.read_text()), "file": str(deployment)}
    finally:
        stop_process(proc, grace_s=10)


def rpc(chain: dict[str, Any], method: str, *params: Any) -> Any:
    reply = httpx.post(chain["rpc"], json={"jsonrpc": "2.0", "id": 1, "method": method,
                                           "params": list(params)}, timeout=30).json()
    assert "error" not in reply, reply
    return reply["result"]


def funded_home(chain: dict[str, Any], tmp_path: Path, name: str, credits: str) -> Path:
    home = tmp_path / name
    address = account_of(identity.create(home)).address
    rpc(chain, "p2pinfer_fund", address, credits)
    return home


def wallet(chain: dict[str, Any], home: Path, *args: str) -> tuple[int, Any, str]:
    """(exit code, parsed --json output or None, error line) of `p2pinfer wallet ARGS`."""
    argv = ["wallet", *args, "--deployment", chain["file"], "--home", str(home), "--json"]
    result = CliRunner().invoke(app, argv, env={"COLUMNS": "200"})
    exc = result.exception
    if isinstance(exc, P2PInferError):
        return exc.exit_code, None, str(exc)
    if exc is not None and not isinstance(exc, SystemExit):
        raise exc
    return result.exit_code, json.loads(result.stdout) if result.stdout else None, ""


def show(chain: dict[str, Any], home: Path) -> dict[str, Any]:
    code, out, err = wallet(chain, home)
    assert code == 0, err
    return dict(out)


PROVIDER = "0x000000000000000000000000000000000000dEaD"


def test_deposit_then_withdraw_after_the_reclaim_timeout(chain: dict[str, Any],
                                                         tmp_path: Path) -> None:
    home = funded_home(chain, tmp_path, "consumer", "100")
    code, out, _ = wallet(chain, home, "deposit", PROVIDER, "1.5")
    assert code == 0 and out["action"] == "deposit" and out["units"] == 1_500_000
    held = show(chain, home)
    assert held["credits"]["units"] == 98_500_000
    assert held["channels"][0]["provider"] == PROVIDER
    assert held["channels"][0]["deposit"]["units"] == 1_500_000

    assert wallet(chain, home, "withdraw", PROVIDER)[1]["action"] == "start_reclaim"
    code, _, err = wallet(chain, home, "withdraw", PROVIDER)
    assert code == 17 and "reclaim not due" in err
    rpc(chain, "evm_increaseTime", DAY_S + 1)
    assert wallet(chain, home, "withdraw", PROVIDER)[1]["action"] == "reclaim"
    held = show(chain, home)
    assert held["credits"]["units"] == 100_000_000
    assert held["channels"][0]["unredeemed"]["units"] == 0


def test_stake_unstake_and_collect_after_unbonding(chain: dict[str, Any],
                                                   tmp_path: Path) -> None:
    home = funded_home(chain, tmp_path, "provider", "50")
    assert wallet(chain, home, "stake", "10")[0] == 0
    assert wallet(chain, home, "unstake", "4")[1]["action"] == "begin_unbond"
    held = show(chain, home)
    assert (held["credits"]["units"], held["locked_stake"]["units"],
            held["unbonding"]["units"]) == (40_000_000, 6_000_000, 4_000_000)
    assert held["release_at"] > 0
    code, _, err = wallet(chain, home, "unstake", "--withdraw")
    assert code == 17 and "still unbonding" in err
    rpc(chain, "evm_increaseTime", 7 * DAY_S + 1)
    assert wallet(chain, home, "unstake", "--withdraw")[0] == 0
    held = show(chain, home)
    assert (held["credits"]["units"], held["unbonding"]["units"]) == (44_000_000, 0)


def test_a_provider_redeems_a_consumers_voucher(chain: dict[str, Any], tmp_path: Path) -> None:
    consumer = funded_home(chain, tmp_path, "c", "10")
    provider = funded_home(chain, tmp_path, "p", "0")
    c_acct = account_of(identity.load(consumer))
    p_addr = account_of(identity.load(provider)).address
    assert wallet(chain, consumer, "deposit", p_addr, "2")[0] == 0
    digest = voucher_digest(chain["channels"], chain["chain_id"], c_acct.address, p_addr,
                            1_000_000)
    sig = sign_digest(c_acct.private_key, digest).hex()
    code, out, err = wallet(chain, provider, "redeem", "--consumer", c_acct.address,
                            "--cumulative", "1000000", "--sig", sig)
    assert code == 0 and out["action"] == "redeem", err
    assert show(chain, provider)["credits"]["units"] > 0  # the provider's share of 1 credit
    code, _, err = wallet(chain, provider, "redeem", "--consumer", c_acct.address,
                          "--cumulative", "1000000", "--sig", sig)
    assert code == 17 and "nothing to redeem" in err


def test_depositing_more_than_held_exits_16(chain: dict[str, Any], tmp_path: Path) -> None:
    home = funded_home(chain, tmp_path, "poor", "1")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "p2pinfer", "wallet", "deposit", PROVIDER, "5",
         "--deployment", chain["file"], "--home", str(home)],
        capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert proc.returncode == 16, proc.stderr
    assert proc.stderr.startswith("error: ") and "short by 4.000000" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_an_unreachable_chain_exits_15(chain: dict[str, Any], tmp_path: Path) -> None:
    home = tmp_path / "h"
    identity.create(home)
    code, _, err = wallet(chain, home, "--chain-rpc", "http://127.0.0.1:9")
    assert code == 15 and "http://127.0.0.1:9" in err


def test_a_deployment_on_another_chain_exits_15(chain: dict[str, Any], tmp_path: Path) -> None:
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**chain, "chain_id": 1}))
    home = tmp_path / "h"
    identity.create(home)
    code, _, err = wallet({**chain, "file": str(other)}, home)
    assert code == 15 and "not the deployment's chain 1" in err


def test_a_bad_amount_is_a_usage_error(chain: dict[str, Any], tmp_path: Path) -> None:
    home = tmp_path / "h"
    identity.create(home)
    assert wallet(chain, home, "deposit", PROVIDER, "0.0000001")[0] == 2
    assert wallet(chain, home, "deposit", "12D3KooWNotAnAddress", "1")[0] == 2


def test_chain_deploy_puts_a_working_set_of_contracts_on_a_chain_from_a_node_account(
        chain: dict[str, Any], tmp_path: Path) -> None:
    # How an operator starts a real network: deploy from the node's own account, then
    # point nodes at the new Channels contract. Here on the test chain, second set.
    home = funded_home(chain, tmp_path, "deployer", "1")
    out_file = tmp_path / "mine.json"
    result = CliRunner().invoke(app, [
        "chain", "deploy", "--rpc", chain["rpc"], "--home", str(home), "--deployment",
        str(out_file), "--preset", "bme", "--json"], env={"COLUMNS": "200"})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    mine = json.loads(result.stdout)
    assert mine["channels"] != chain["channels"] and mine["chain_id"] == chain["chain_id"]
    assert json.loads(out_file.read_text())["channels"] == mine["channels"]
    for name in ("credit", "stake", "channels"):
        assert len(rpc(chain, "eth_getCode", mine[name], "latest")) > 2
    # The new contracts are the BME split, and the deployer holds the initial supply.
    split = [rpc(chain, "eth_call", {"to": mine["channels"], "data": "0x" + (
        keccak(text="split_bps(uint256)")[:4] + i.to_bytes(32, "big")).hex()}, "latest")
        for i in range(4)]
    assert [int(x, 16) for x in split] == [2500, 1000, 5000, 1500]
    deployer = account_of(identity.load(home)).address
    code, out, err = wallet({**chain, "file": str(out_file)}, home)
    assert code == 0, err
    assert out["address"] == deployer and out["credits"]["units"] == 100_000_000 * 10**6


def test_chain_deploy_with_no_ether_for_gas_exits_16(chain: dict[str, Any],
                                                      tmp_path: Path) -> None:
    home = tmp_path / "poor"
    identity.create(home)
    result = CliRunner().invoke(app, [
        "chain", "deploy", "--rpc", chain["rpc"], "--home", str(home), "--deployment",
        str(tmp_path / "x.json")], env={"COLUMNS": "200"})
    assert isinstance(result.exception, P2PInferError) and result.exception.exit_code == 16
