"""bench/settlement.py's section 3 helpers: what records the TTFT run (chain calls by the
task that made them, settlement steps' wall time, each job's times) and what turns the
records into the result (on/off summaries, chain calls on or off a job's path, the
secp256k1 costs alone).
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import inspect
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench._common import percentile
from p2pinfer.identity import NodeIdentity
from p2pinfer.settle.account import account_of, bind_signature, check_binding
from p2pinfer.settle.chain import ChainClient
from p2pinfer.settle.vouchers import recover_signer, sign_digest, voucher_digest


def stats(values: list[float]) -> dict[str, float]:
    """n, p50, p90, p99 and mean of `values`, rounded to 3 places."""
    return {"n": len(values), "p50": round(percentile(values, 0.5), 3),
            "p90": round(percentile(values, 0.9), 3), "p99": round(percentile(values, 0.99), 3),
            "mean": round(statistics.fmean(values), 3) if values else float("nan")}


#: Which task a chain call came from: set at the top of each background task and of the
#: bench's job loop; trio copies it into child tasks and into to_thread's worker call.
ORIGIN: contextvars.ContextVar[str] = contextvars.ContextVar("origin", default="untagged")


@dataclass(frozen=True)
class Call:
    """One chain client call: its method, the task it came from, its perf_counter times."""
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
    """One measured job: its side (on/off), the gap before it, and its perf_counter times."""
    side: str
    gap_ms: float
    start: float
    first: float
    end: float


@dataclass
class Run:
    """What the TTFT section records while it runs."""

    times: list[JobTime]
    failures: list[dict[str, Any]]
    calls: list[Call]
    steps: dict[str, list[float]]
    phases: dict[str, tuple[float, float]]  # "warm-up", "gap N ms" -> (start, end)
    redemptions: list[Any]


def ab_summary(measured: list[JobTime], block: int) -> dict[str, Any]:
    """TTFT and total time, on vs off, of the jobs of one pass (`block` jobs a block)."""
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


# Over 60 lines by design: one result dictionary, field by field, as the JSON file holds it.
def ttft_result(args: argparse.Namespace, run: Run) -> dict[str, Any]:
    """The TTFT section's result: the passes, chain calls by task and time, step costs."""
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
