"""Settlement, measured (issue 15): gas per job at steady state, redemption cost as a
share of revenue, and time to first token with settlement on vs off.

Run from the repository root:  python bench/settlement.py [--jobs 200] [--block 10]
    [--gaps-ms 0,50] [--redeem-every-s 5] [--consumers 1,10,64] [--gas-gwei 1,30,0.01]
    [--credits-per-eth 1e6,1e4,1e3] [--sim-hours 48] [--provider-jobs-per-s 0.5]
    [--skip-gas] [--skip-ttft]
Writes bench/results/settlement.json and prints a summary; a few minutes in all.

1. Gas (py-evm through eth-tester, contracts from deploy_all, seed split): C consumers
   each hold a channel to one provider; jobs arrive at the provider at a steady rate
   (round robin over the consumers) in simulated time, each adding one job's charge to
   its consumer's cumulative voucher; every `check_every_s` the redeemer's own policy
   function (`choose_batch`, RedeemPolicy defaults, wei_per_unit from the credit price)
   decides whether to redeem, and a redemption is a real `redeem_many` transaction of
   vouchers signed with settle.vouchers. Gas per redemption, jobs per redemption and gas
   per job are taken over the steady-state redemptions (no channel redeemed for the
   first time in them; a first redemption writes fresh storage and costs more: shown
   apart). Deposits (approve + deposit, as ChainClient.deposit sends them) are
   amortised over an assumed number of jobs per deposit.
2. Share of revenue: job size and price as documented in the result (the seed's base
   rate, p2pinfer.market.pricing); no price oracle exists, so the credit price is a
   parameter (credits per ETH) and a few values are shown; gas prices 1 and 30 gwei
   (L1-like) and 0.01 gwei (an ASSUMED L2-like price, not measured).
3. TTFT on vs off: two pairs of real libp2p hosts on 127.0.0.1 in this process with the
   fake-stream backend (no model: the protocol's own overhead), one pair paying
   through channels on a `p2pinfer chain serve` process (the node's wiring:
   settle.wiring.Settlement on both sides, background tasks running, the redeemer
   redeeming every --redeem-every-s), one pair paying by ledger receipts; blocks of
   jobs alternate on/off in ABBA order so machine load drifts hit both alike. Every
   chain call is counted (method, which task made it, when) to show none falls on a
   job's path once warm.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, percentile, results_path, utc_now, write_result
from p2pinfer.errors import P2PInferError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.pricing import DEFAULT_PRICING, billable_tokens, charge_for, price_for
from p2pinfer.protocol import JobParams
from p2pinfer.settle.account import account_of, bind_signature, check_binding
from p2pinfer.settle.chain import ChainClient
from p2pinfer.settle.channels import Channel
from p2pinfer.settle.ports import ChannelState
from p2pinfer.settle.redeemer import RedeemPolicy, choose_batch
from p2pinfer.settle.vouchers import recover_signer, sign_digest, voucher_digest
from p2pinfer.settle.wiring import Settlement
from p2pinfer.testnet import chain as testnet_chain
from tests.integration.job_helpers import (
    FakeBackend,
    start_consumer,
    start_provider,
    wait_for_providers,
)

RESULTS = results_path("settlement.json")
GWEI = 10**9
WEI_PER_ETH = 10**18
UNITS_PER_CREDIT = 10**6
TX_GAS = 8_000_000  # explicit limit: skips eth-tester's estimate (it re-runs the call)


def stats(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50": round(percentile(values, 0.5), 3),
            "p90": round(percentile(values, 0.9), 3), "p99": round(percentile(values, 0.99), 3),
            "mean": round(statistics.fmean(values), 3) if values else float("nan")}


def wei_per_unit(credits_per_eth: float) -> int:
    """What one token unit (micro-credit) is worth in wei at `credits_per_eth`."""
    return round(WEI_PER_ETH / (credits_per_eth * UNITS_PER_CREDIT))


# -- 1 and 2: gas on py-evm ------------------------------------------------------------


@dataclass
class GasChain:
    """A py-evm chain with the contracts, a provider, and consumers holding channels."""

    tester: Any
    w3: Any
    chain_id: int
    channels: Any
    provider: str
    consumers: list[str]
    keys: dict[str, bytes]
    deposit_units: int
    deposit_gas: dict[str, int]

    def tx(self, sender: str, call: Any) -> Any:
        receipt = self.w3.eth.wait_for_transaction_receipt(
            call.transact({"from": sender, "gas": TX_GAS}))
        if receipt["status"] != 1:
            raise RuntimeError(f"transaction failed: {call}")
        return receipt

    def voucher(self, consumer: str, cumulative: int) -> bytes:
        digest = voucher_digest(self.channels.address, self.chain_id, consumer, self.provider,
                                cumulative)
        return sign_digest(self.keys[consumer], digest)


def gas_chain(consumers: int, deposit_units: int) -> GasChain:
    """Deploys (seed preset) and opens `consumers` channels of `deposit_units` each, the
    way ChainClient.deposit does (an exact approve, then deposit); measures a top-up."""
    from eth_tester import EthereumTester, PyEVMBackend
    from web3 import EthereumTesterProvider, Web3

    from p2pinfer.settle.artifacts import load_artifacts
    from p2pinfer.settle.deploy import deploy_all

    tester = EthereumTester(PyEVMBackend())
    w3 = Web3(EthereumTesterProvider(tester))
    deployer = w3.eth.accounts[0]
    deployment = deploy_all(w3, deployer, preset="seed", treasury=w3.eth.accounts[9])
    artifacts = load_artifacts()
    credit = w3.eth.contract(address=deployment.credit, abi=list(artifacts["Credit"].abi))
    channels = w3.eth.contract(address=deployment.channels,
                               abi=list(artifacts["Channels"].abi))
    keys: dict[str, bytes] = {}
    for i in range(consumers + 1):
        key = (1000 + i).to_bytes(32, "big")
        address = Web3.to_checksum_address(tester.add_account("0x" + key.hex()))
        w3.eth.send_transaction({"from": deployer, "to": address, "value": 10**20})
        keys[address] = key
    provider, *consumer_list = list(keys)
    chain = GasChain(tester, w3, deployment.chain_id, channels, provider, consumer_list, keys,
                     deposit_units, {})
    approve, deposit = credit.functions.approve, channels.functions.deposit
    for i, consumer in enumerate(consumer_list):
        chain.tx(deployer, credit.functions.transfer(consumer, 2 * deposit_units))
        a = chain.tx(consumer, approve(channels.address, deposit_units))["gasUsed"]
        d = chain.tx(consumer, deposit(provider, deposit_units))["gasUsed"]
        if i == 0:
            chain.deposit_gas.update({"approve_exact": a, "deposit_new_channel": d})
    # A top-up of an existing channel (its allowance was spent: approve writes it again).
    top = consumer_list[0]
    a = chain.tx(top, approve(channels.address, deposit_units))["gasUsed"]
    d = chain.tx(top, deposit(provider, deposit_units))["gasUsed"]
    chain.deposit_gas.update({"approve_again": a, "deposit_existing_channel": d})
    return chain


def simulate(chain: GasChain, *, gas_price_wei: int, credits_per_eth: float, hours: float,
             jobs_per_s: float, charge: int, policy: RedeemPolicy) -> dict[str, Any]:
    """Steady jobs for `hours` of simulated time, redeemed when `choose_batch` says so."""
    policy = replace(policy, wei_per_unit=wei_per_unit(credits_per_eth))
    snapshot = chain.tester.take_snapshot()
    try:
        consumers = chain.consumers
        deposit = {c: chain.deposit_units * (2 if c == consumers[0] else 1)
                   for c in consumers}
        held = dict.fromkeys(consumers, 0)
        redeemed = dict.fromkeys(consumers, 0)
        rows: list[dict[str, Any]] = []
        t = last = carry = 0.0
        jobs = 0
        sign_s = 0.0
        while t < hours * 3600:
            t += policy.check_every_s
            carry += jobs_per_s * policy.check_every_s
            arrived, carry = int(carry), carry - int(carry)
            for _ in range(arrived):
                held[consumers[jobs % len(consumers)]] += charge
                jobs += 1
            # The held signature is signed when redeemed (only the newest one counts on
            # chain); the policy looks only at amounts. A placeholder stands in until then.
            book = [Channel(c, ChannelState(deposit[c], redeemed[c], 0), held=held[c],
                            signature=b"\x01") for c in consumers]
            batch = choose_batch(book, policy, gas_price=gas_price_wei, now_unix=t,
                                 idle_s=t - last)
            if not batch:
                continue
            reason = "interval" if t - last >= policy.max_interval_s else "value"
            started = time.perf_counter()
            sigs = [chain.voucher(c.consumer, c.held) for c in batch]
            sign_s += time.perf_counter() - started
            call = chain.channels.functions.redeem_many(
                [c.consumer for c in batch], [c.held for c in batch], sigs)
            gas = int(chain.tx(chain.provider, call)["gasUsed"])
            amount = sum(c.held - redeemed[c.consumer] for c in batch)
            first = any(redeemed[c.consumer] == 0 for c in batch)
            for c in batch:
                redeemed[c.consumer] = c.held
            rows.append({"t_h": round(t / 3600, 3), "claims": len(batch),
                         "jobs": amount // charge, "amount_units": amount, "gas": gas,
                         "first": first, "reason": reason})
            last = t
    finally:
        chain.tester.revert_to_snapshot(snapshot)
    steady = [r for r in rows if not r["first"]]
    out: dict[str, Any] = {
        "consumers": len(chain.consumers), "gas_price_gwei": gas_price_wei / GWEI,
        "credits_per_eth": credits_per_eth, "wei_per_unit": policy.wei_per_unit,
        "jobs_simulated": jobs, "redemptions": len(rows),
        "steady_redemptions": len(steady),
        "triggers": {k: sum(r["reason"] == k for r in rows) for k in ("value", "interval")},
        "first_redemption": rows[0] if rows else None,
        "voucher_sign_ms_each": round(sign_s * 1000 / max(1, sum(r["claims"] for r in rows)),
                                      3),
    }
    if steady:
        gas = sum(r["gas"] for r in steady)
        jobs_redeemed = sum(r["jobs"] for r in steady)
        amount = sum(r["amount_units"] for r in steady)
        cost_wei = gas * gas_price_wei
        revenue_wei = amount * policy.wei_per_unit
        out.update({
            "gas_per_redemption": round(gas / len(steady)),
            "claims_per_redemption": round(sum(r["claims"] for r in steady) / len(steady), 1),
            "gas_per_claim_at_this_batch": round(
                gas / sum(r["claims"] for r in steady)),
            "jobs_per_redemption": round(jobs_redeemed / len(steady), 1),
            "hours_between_redemptions": round(
                (steady[-1]["t_h"] - rows[0]["t_h"]) / len(steady), 2),
            "gas_per_job": round(gas / jobs_redeemed, 2),
            "redemption_cost_share_of_revenue": cost_wei / revenue_wei,
            "redemption_cost_share_of_provider_share": cost_wei / (
                revenue_wei * policy.provider_share_bps / 10_000),
            # The share scales with the credit price's inverse: the price at which this
            # schedule's redemptions would cost 1% of the revenue.
            "credits_per_eth_for_a_1pct_share_same_schedule": credits_per_eth * 0.01 / (
                cost_wei / revenue_wei),
        })
    return out


def gas_section(args: argparse.Namespace) -> dict[str, Any]:
    prompt, completion = args.job_tokens
    price = price_for(DEFAULT_PRICING.target_utilisation_pm, DEFAULT_PRICING.supply_reference)
    charge = charge_for(price, billable_tokens(prompt, completion))
    policy = RedeemPolicy()
    horizon_jobs = int(args.sim_hours * 3600 * args.provider_jobs_per_s) + 1
    result: dict[str, Any] = {
        "job": {
            "prompt_tokens": prompt, "completion_tokens": completion,
            "price_per_1k_units": price, "charge_units": charge,
            "price_source": "market.pricing.price_for at target utilisation with one "
                            "provider (demand and supply multipliers 1) = PricingParams."
                            "base_rate_per_1k, the seed's base_inference_rate 0.001 "
                            "credit per 1k tokens; charge_for(price, prompt + completion)",
        },
        "assumptions": {
            "provider_jobs_per_s": args.provider_jobs_per_s,
            "simulated_hours": args.sim_hours,
            "jobs_spread": "round robin over the consumers",
            "policy": {k: getattr(policy, k) for k in (
                "gas_multiple", "max_interval_s", "check_every_s", "max_batch",
                "provider_share_bps", "gas_per_tx", "gas_per_claim")},
            "wei_per_unit": "set from credits_per_eth (10^18 / (credits_per_eth x 10^6)); "
                            "RedeemPolicy's default 10^6 wei per unit is 10^6 credits/ETH",
            "jobs_per_deposit": args.jobs_per_deposit,
            "gas_price_0.01_gwei": "ASSUMED L2-like execution price in ETH terms "
                                   "(Arbitrum One's L2 base fee is typically ~0.01 gwei; "
                                   "Polygon PoS gas is paid in POL, tens of gwei of POL, "
                                   "of the same order once converted), plus an L1 data fee "
                                   "not modelled here: not measured",
        },
        "scenarios": [],
    }
    for count in args.consumers:
        started = time.perf_counter()
        chain = gas_chain(count, horizon_jobs * charge // count + 10 * charge)
        setup_s = time.perf_counter() - started
        deposit_gas = chain.deposit_gas
        per_deposit = deposit_gas["approve_again"] + deposit_gas["deposit_existing_channel"]
        opening = deposit_gas["approve_exact"] + deposit_gas["deposit_new_channel"]
        for gwei in args.gas_gwei:
            for cpe in args.credits_per_eth:
                row = simulate(chain, gas_price_wei=round(gwei * GWEI), credits_per_eth=cpe,
                               hours=args.sim_hours, jobs_per_s=args.provider_jobs_per_s,
                               charge=charge, policy=policy)
                row["deposits"] = {}
                for jobs_per in args.jobs_per_deposit:
                    deposit_per_job = per_deposit / jobs_per
                    row["deposits"][f"one per {jobs_per} jobs"] = {
                        "top_up_gas_per_job": round(deposit_per_job, 2),
                        "channel_open_gas_per_job": round(opening / jobs_per, 2),
                        "top_up_cost_share_of_revenue": (
                            deposit_per_job * gwei * GWEI / (charge * wei_per_unit(cpe)))}
                result["scenarios"].append(row)
                print(json.dumps({k: row.get(k) for k in (
                    "consumers", "gas_price_gwei", "credits_per_eth", "redemptions",
                    "triggers", "gas_per_redemption", "jobs_per_redemption", "gas_per_job",
                    "redemption_cost_share_of_revenue")}), flush=True)
        result.setdefault("deposit_gas", deposit_gas)
        result.setdefault("setup_s", {})[str(count)] = round(setup_s, 1)
    return result


# -- 3: TTFT on vs off --------------------------------------------------------------------

#: Which task a chain call came from: set at the top of each background task and of the
#: bench's job loop; trio copies it into child tasks and into to_thread's worker call.
ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("origin", default="untagged")


@dataclass(frozen=True)
class Call:
    method: str
    origin: str
    start: float
    end: float


class CountingChain:
    """A ChainClient whose every method call is recorded (perf_counter times)."""

    def __init__(self, inner: ChainClient, calls: list[Call]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def counted(*args: Any, **kwargs: Any) -> Any:
            origin, start = ORIGIN.get(), time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                self._calls.append(Call(name, origin, start, time.perf_counter()))

        return counted


def time_methods(obj: Any, names: tuple[str, ...], table: dict[str, list[float]]) -> None:
    """Replace `obj`'s methods `names` (sync or async) with ones that record their wall time
    in ms in `table` (the instance attribute is what the node's code looks up)."""
    for name in names:
        fn = getattr(obj, name)
        key = f"{type(obj).__name__}.{name}"
        table[key] = []

        def wrap(fn: Any = fn, key: str = key) -> Any:
            if inspect.iscoroutinefunction(fn):
                async def timed_async(*args: Any, **kwargs: Any) -> Any:
                    start = time.perf_counter()
                    try:
                        return await fn(*args, **kwargs)
                    finally:
                        table[key].append((time.perf_counter() - start) * 1000)
                return timed_async

            def timed(*args: Any, **kwargs: Any) -> Any:
                start = time.perf_counter()
                try:
                    return fn(*args, **kwargs)
                finally:
                    table[key].append((time.perf_counter() - start) * 1000)
            return timed

        setattr(obj, name, wrap())


def crypto_costs(reps: int = 300) -> dict[str, float]:
    """Median ms of the secp256k1 work a paid job adds (coincurve under eth_keys)."""
    identity = NodeIdentity.generate()
    account = account_of(identity)
    binding = bind_signature(account, identity.peer_id)
    digest = voucher_digest(account.address, 1, account.address, account.address, 10**6)
    voucher = sign_digest(account.private_key, digest)
    ops: dict[str, Callable[[], object]] = {
        "bind_signature (consumer, each request)": lambda: bind_signature(
            account, identity.peer_id),
        "check_binding (provider: payer; consumer: payee)": lambda: check_binding(
            account.address, identity.peer_id, binding),
        "voucher_digest + sign_digest (consumer, after the result)": lambda: sign_digest(
            account.private_key, voucher_digest(account.address, 1, account.address,
                                                account.address, 10**6)),
        "voucher_digest + recover_signer (provider, on the receipt)": lambda: recover_signer(
            voucher_digest(account.address, 1, account.address, account.address, 10**6),
            voucher),
    }
    out = {}
    for name, op in ops.items():
        samples = []
        for _ in range(reps):
            start = time.perf_counter()
            op()
            samples.append((time.perf_counter() - start) * 1000)
        out[name] = round(statistics.median(samples), 3)
    return out


@dataclass
class JobTime:
    side: str
    gap_ms: float
    start: float
    first: float
    end: float


async def tagged(tag: str, fn: Callable[..., Any], task_status: Any = trio.TASK_STATUS_IGNORED
                 ) -> None:
    ORIGIN.set(tag)
    await fn(task_status=task_status)


async def one_job(client: Any, params: JobParams, side: str, gap_ms: float) -> JobTime:
    start = time.perf_counter()
    first = 0.0
    async with client.job("fake:1b", "hello", params) as job:
        async for _ in job:
            first = first or time.perf_counter()
    assert job.outcome is not None and job.outcome.charged > 0
    return JobTime(side, gap_ms, start, first, time.perf_counter())


@dataclass
class Run:
    """What the TTFT section records while it runs."""

    times: list[JobTime]
    failures: list[dict[str, Any]]
    calls: list[Call]
    steps: dict[str, list[float]]
    phases: dict[str, tuple[float, float]]  # "warm-up", "gap N ms" -> (start, end)
    redemptions: list[Any]


async def ab_rounds(clients: dict[str, Any], params: JobParams, args: argparse.Namespace,
                    gap_ms: float, run: Run) -> None:
    """`args.jobs` jobs each side in blocks of `args.block`, ABBA, `gap_ms` between jobs; a
    failed job (e.g. `busy`) is recorded and tried again after a pause."""
    blocks = -(-args.jobs // args.block)
    for b in range(blocks):
        for side in (("on", "off") if b % 2 == 0 else ("off", "on")):
            done = 0
            while done < min(args.block, args.jobs - b * args.block):
                await trio.sleep(gap_ms / 1000)
                try:
                    run.times.append(await one_job(clients[side], params, side, gap_ms))
                    done += 1
                except P2PInferError as exc:
                    run.failures.append({"side": side, "gap_ms": gap_ms, "error": str(exc)})
                    if len(run.failures) > args.jobs:
                        raise
                    await trio.sleep(0.2)


async def ttft_section(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    chain_dir = work / "chain"
    chain_dir.mkdir()
    ids = {k: NodeIdentity.generate() for k in ("p_on", "c_on", "p_off", "c_off")}
    fund = [(account_of(ids[k]).address, 100 * UNITS_PER_CREDIT) for k in ("p_on", "c_on")]
    log = (chain_dir / "chain.log").open("w")
    proc = subprocess.Popen(testnet_chain.chain_command(chain_dir, fund), stdout=log,
                            stderr=subprocess.STDOUT)
    run = Run([], [], [], {}, {}, [])
    params = JobParams(max_tokens=args.max_tokens, temperature=0.0, seed=1)
    config = JobServerConfig(price_per_1k=DEFAULT_PRICING.base_rate_per_1k)
    # gas_multiple 0 (as on testnets): redeem whatever is held every interval, so that
    # redemptions do run beside the measured jobs (the policy otherwise waits until a
    # redemption pays its gas, which these tiny jobs never do within the run).
    policy = RedeemPolicy(max_interval_s=args.redeem_every_s, gas_multiple=0,
                          check_every_s=min(5.0, args.redeem_every_s / 2))
    try:
        data = await trio.to_thread.run_sync(
            testnet_chain.wait_for_deployment, chain_dir, proc.pid, 60.0,
            lambda _pid: proc.poll() is None)
        rpc, contract = str(data["rpc"]), str(data["channels"])

        def connect(key: str) -> Any:
            return CountingChain(ChainClient.connect(rpc, contract, account_of(ids[key])),
                                 run.calls)

        ORIGIN.set("setup")
        p_chain = await trio.to_thread.run_sync(connect, "p_on")
        c_chain = await trio.to_thread.run_sync(connect, "c_on")
        await trio.to_thread.run_sync(c_chain.deposit, p_chain.address, 50 * UNITS_PER_CREDIT)
        for sub in ("on", "off", "c_on", "c_off"):
            (work / sub).mkdir()
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            # The node's wiring (settle.wiring.Settlement) on both paying hosts; the
            # provider's book journals to a ledger of its own, as in
            # tests/integration/test_chain_settlement.py.
            p_ledger = stack.enter_context(Ledger.open(work / "p_settle.sqlite3", ids["p_on"]))
            p_settle = Settlement.build(p_chain, ids["p_on"], p_ledger, policy)
            await nursery.start(tagged, "provider background", p_settle.run)
            ORIGIN.set("provider host (job handler)")  # its tasks copy this context
            on_provider = await start_provider(stack, nursery, FakeBackend(), work / "on",
                                               identity=ids["p_on"], channels=p_settle.channels,
                                               config=config)
            off_provider = await start_provider(stack, nursery, FakeBackend(), work / "off",
                                                identity=ids["p_off"], config=config)
            ORIGIN.set("setup")
            c_settle: list[Settlement] = []

            def payer(ledger: Ledger) -> Any:
                c_settle.append(Settlement.build(c_chain, ids["c_on"], ledger))
                return c_settle[0].payer

            on_net, on_client, _ = await start_consumer(
                stack, work / "c_on", (on_provider.net.addrs()[0],), identity=ids["c_on"],
                payer=payer)
            await nursery.start(tagged, "consumer background", c_settle[0].run)
            off_net, off_client, _ = await start_consumer(
                stack, work / "c_off", (off_provider.net.addrs()[0],), identity=ids["c_off"])
            with trio.fail_after(60):
                await wait_for_providers(on_net, "fake:1b", 1)
                await wait_for_providers(off_net, "fake:1b", 1)
            clients = {"on": on_client, "off": off_client}
            ORIGIN.set("consumer job")
            started = time.perf_counter()
            for _ in range(args.warmup):
                for side in ("on", "off"):
                    await one_job(clients[side], params, side, 0)
            run.phases["warm-up"] = (started, time.perf_counter())
            # Warm: time the settlement steps of the measured jobs.
            time_methods(c_settle[0].payer, ("bind", "accept_payee", "sign_voucher"),
                         run.steps)
            time_methods(p_settle.channels, ("payer_of", "admit", "take_voucher", "journal"),
                         run.steps)
            for gap in args.gaps_ms:
                started = time.perf_counter()
                await ab_rounds(clients, params, args, gap, run)
                run.phases[f"gap {gap:g} ms"] = (started, time.perf_counter())
            run.redemptions = list(p_settle.redeemer.redemptions)
            nursery.cancel_scope.cancel()
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
    return ttft_result(args, run)


def ab_summary(measured: list[JobTime], block: int) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def ttft(t: JobTime) -> float:
        return (t.first - t.start) * 1000

    def total(t: JobTime) -> float:
        return (t.end - t.start) * 1000

    for label, key in (("ttft_ms", ttft), ("job_total_ms", total)):
        on = [key(t) for t in measured if t.side == "on"]
        off = [key(t) for t in measured if t.side == "off"]
        row: dict[str, Any] = {"on": stats(on), "off": stats(off),
                               "added_p50": round(percentile(on, 0.5) - percentile(off, 0.5), 3),
                               "added_p90": round(percentile(on, 0.9) - percentile(off, 0.9), 3)}
        # Adjacent blocks paired (ABBA): the median of (on block median - off block median).
        pairs = []
        for b in range(0, len(measured), 2 * block):
            chunk = measured[b:b + 2 * block]
            a = [key(t) for t in chunk if t.side == "on"]
            z = [key(t) for t in chunk if t.side == "off"]
            if a and z:
                pairs.append(statistics.median(a) - statistics.median(z))
        row["added_median_of_block_pairs"] = round(statistics.median(pairs), 3)
        out[label] = row
    return out


def ttft_result(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    out: dict[str, Any] = {
        "jobs_each_side_per_pass": args.jobs, "block": args.block,
        "warmup_jobs_each_side": args.warmup,
        "order": "blocks of jobs alternate on/off in ABBA order; one pass per gap",
        "gap": "pause before each job: 0 = back to back (the previous job's receipt "
               "handling, voucher journal included, overlaps the next job in this one "
               "process); a gap lets it finish first",
        "backend": "fake stream (tests.integration.job_helpers.FakeBackend), max_tokens "
                   f"{args.max_tokens}: protocol overhead only, no model",
        "hosts": "4 real libp2p hosts on 127.0.0.1 in this process (on: provider + consumer "
                 "paying through channels, settle.wiring.Settlement on both; off: provider + "
                 "consumer paying by ledger receipts); the chain is a `p2pinfer chain serve` "
                 "process on loopback; price = the seed base rate",
        "redeemer": f"RedeemPolicy(max_interval_s={args.redeem_every_s}, check_every_s="
                    f"{min(5.0, args.redeem_every_s / 2)}): redemptions run during the "
                    "measured jobs (production redeems every 6 h at most)",
        "passes": {f"gap {gap:g} ms": ab_summary([t for t in run.times if t.gap_ms == gap],
                                                 args.block)
                   for gap in args.gaps_ms},
        "failed_attempts": run.failures,
        "goal": "< 2 ms added to TTFT; no chain call on the job's path",
    }

    def count(cs: list[Call]) -> dict[str, int]:
        table: dict[str, int] = {}
        for c in cs:
            table[f"{c.origin}: {c.method}"] = table.get(f"{c.origin}: {c.method}", 0) + 1
        return dict(sorted(table.items()))

    warm_end = run.phases["warm-up"][1]
    done = max(end for _, end in run.phases.values())
    during = [c for c in run.calls if c.end >= warm_end and c.start <= done]
    on_jobs = [t for t in run.times if t.side == "on"]

    def inside(c: Call) -> bool:
        return any(c.start < t.end and c.end > t.start for t in on_jobs)

    job_tasks = ("consumer job", "provider host (job handler)")
    out["chain_calls"] = {
        "all": count(run.calls),
        "before_measuring": count([c for c in run.calls if c.start < warm_end]),
        "measured_phase": count(during),
        "measured_phase_from_job_tasks": count([c for c in during if c.origin in job_tasks]),
        "measured_phase_overlapping_a_paid_job_in_time": count(
            [c for c in during if inside(c)]),
        "measured_phase_s": round(done - warm_end, 1),
        "note": "'origin: method'; origin = the task that made the call (a contextvar, "
                "copied into child tasks and worker threads). Background calls (channel "
                "refreshes every 15 s / 30 s, the redeemer's gas price and redeem_many) run "
                "in worker threads; one that overlaps a job in time did not make it wait",
        # A redemption never holds a job up, but its CPU (web3 in this process, the chain
        # process on the same cores) slows whatever runs beside it, paid or not.
        "ttft_ms_of_jobs_overlapping_a_redeem_many": {
            side: stats([(t.first - t.start) * 1000 for t in run.times if t.side == side
                         and any(c.method == "redeem_many" and c.start < t.end
                                 and c.end > t.start for c in run.calls)])
            for side in ("on", "off")},
        "redemptions_during_measurement": [
            {"gas": r.gas_used, "consumers": len(r.claims), "amount_units": r.amount}
            for r in run.redemptions],
    }
    out["settlement_steps_ms"] = {
        "note": "wall time of each settlement step of the measured paid jobs; on the TTFT "
                "path: PayerBook.bind, ChannelBook.payer_of, ChannelBook.admit, "
                "PayerBook.accept_payee; after the last token: PayerBook.sign_voucher (signs "
                "and journals before the receipt goes), ChannelBook.take_voucher and .journal "
                "(provider, after the receipt)",
        **{k: {"median": round(statistics.median(v), 3), "p90": round(percentile(v, 0.9), 3),
               "n": len(v)} for k, v in run.steps.items() if v}}
    out["secp256k1_ms_median_alone"] = crypto_costs()
    return out


async def main(args: argparse.Namespace) -> dict[str, Any]:
    load_before = os.getloadavg()
    result: dict[str, Any] = {}
    if not args.skip_gas:
        result["gas"] = gas_section(args)
    if not args.skip_ttft:
        with tempfile.TemporaryDirectory(prefix="p2pinfer-bench-") as tmp:
            result["ttft"] = await ttft_section(args, Path(tmp))
        print(json.dumps(result["ttft"]["passes"], indent=1), flush=True)
        print(json.dumps(result["ttft"]["chain_calls"], indent=1), flush=True)
    result["machine"] = machine(
        load_avg_before=load_before,
        note="shared 2-core VM; other engineers' tests ran at the same time (see load "
             "averages): timings are noisy, the on/off interleaving keeps the comparison fair")
    result["date"] = utc_now()
    return result


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",")]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200, help="measured jobs each side")
    parser.add_argument("--block", type=int, default=10, help="jobs per on/off block")
    parser.add_argument("--warmup", type=int, default=5, help="jobs each side before")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--gaps-ms", type=floats, default=[0.0, 50.0],
                        help="one A/B pass per pause between jobs")
    parser.add_argument("--redeem-every-s", type=float, default=5.0,
                        help="the TTFT run's redeemer max_interval_s")
    parser.add_argument("--consumers", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 10, 64])
    parser.add_argument("--gas-gwei", type=floats, default=[1.0, 30.0, 0.01])
    parser.add_argument("--credits-per-eth", type=floats, default=[1e6, 1e4, 1e3])
    parser.add_argument("--job-tokens", type=lambda s: tuple(int(x) for x in s.split(",")),
                        default=(200, 200), help="prompt,completion tokens of a typical job")
    parser.add_argument("--sim-hours", type=float, default=48.0)
    parser.add_argument("--provider-jobs-per-s", type=float, default=0.5)
    parser.add_argument("--jobs-per-deposit", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1000, 10000], help="amortise a deposit over these")
    parser.add_argument("--skip-gas", action="store_true")
    parser.add_argument("--skip-ttft", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    arguments = parser.parse_args()
    outcome = trio.run(main, arguments)
    write_result(arguments.out, outcome)
    print(f"wrote {arguments.out}")
