"""bench/settlement.py's sections 1 and 2: gas per job at steady state and redemption cost
as a share of revenue, on py-evm through eth-tester (contracts from deploy_all, seed
preset). The method is described in bench/settlement.py's docstring.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, replace
from typing import Any

from p2pinfer.market.pricing import DEFAULT_PRICING, billable_tokens, price_for
from p2pinfer.protocol import charge_for
from p2pinfer.settle.channels import Channel
from p2pinfer.settle.ports import ChannelState
from p2pinfer.settle.redeemer import RedeemPolicy, choose_batch
from p2pinfer.settle.vouchers import sign_digest, voucher_digest

GWEI = 10**9
WEI_PER_ETH = 10**18
UNITS_PER_CREDIT = 10**6
TX_GAS = 8_000_000  # explicit limit: skips eth-tester's estimate (it re-runs the call)


def wei_per_unit(credits_per_eth: float) -> int:
    """What one token unit (micro-credit) is worth in wei at `credits_per_eth`."""
    return round(WEI_PER_ETH / (credits_per_eth * UNITS_PER_CREDIT))


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


# Over 60 lines by design: one simulated timeline, job by job, on one chain snapshot.
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


# Over 60 lines by design: every scenario's loop and its table in one place.
def gas_section(args: argparse.Namespace) -> dict[str, Any]:
    """Sections 1 and 2: every consumers x gas price x credit price scenario, simulated."""
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
