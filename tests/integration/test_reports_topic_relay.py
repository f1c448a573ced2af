"""Attacks 48 and 49 on real hosts: junk on the reports topic is dropped at the first
honest node, not relayed through the network, and one peer cannot push more than its
share of bytes through a node however genuine its messages look.

The reports topic had no GossipSub validator, so every node relayed whatever a peer
published there to its whole mesh before its own handler looked: bytes that are no
message, reports whose evidence is forged, reports a day old, charge proofs that prove
nothing. One key's junk (up to 1 MiB a message, 200 a second, GossipSub's cap per
peer) crossed every hop of the network, and every node spent its decode, its
signature checks and one of its 32 judging slots on each. Now each node checks what
it would deliver first (`ReportReceiver.admit`): what does not check out is neither
delivered nor relayed; genuine reports and proofs are.

Attack 49: a report's evidence is only signatures, and keys are free, so an attacker
makes genuine-looking reports offline (a request signed by one of its keys, a result by
another: tests/support/attack_reports.py's jam reports) of up to 1 MiB each, and
GossipSub let each peer forward 200 a second per topic: every node relayed 200 MiB a
second of them to each of its mesh peers. Now each forwarding peer has a byte budget on
the topic (`REPORT_BYTES_PER_S`, `REPORT_BURST_BYTES`); past it its messages are
dropped unrelayed (not marked seen, so a copy from an honest peer still gets through).

A-B-C on three loopback addresses (A and C refuse each other's), so everything
between A and C passes B. A runs modified code: no validator of its own.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
import trio

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.adverts import verify_advert
from p2pinfer.net.gossip import GossipMessage
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.protocol import (
    REPORTS_TOPIC,
    ChargeProof,
    ChatTurn,
    JobParams,
    JobRequest,
    JobResult,
    Signed,
    output_hash,
    sign,
)
from p2pinfer.verify.charge_proofs import build_charge_proof
from p2pinfer.verify.compare import compare_outputs
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.engine_gate import EngineGate
from p2pinfer.verify.report_receiver import (
    REPORT_BURST_BYTES,
    REPORT_BYTES_PER_S,
    ReportReceiver,
)
from p2pinfer.verify.reports import build_report
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.net_helpers import config, make_advert, now_ms
from tests.unit.protocol_job_helpers import run_honestly

pytestmark = pytest.mark.network

PROVIDER = NodeIdentity.generate()
TEXT = "Blue, mostly."


def honest_job(lie: bool = False) -> tuple[Signed[JobRequest], Signed[JobResult]]:
    """A signed request and its provider's signed result (`lie`: 2^32-1 prompt tokens)."""
    request = JobRequest(
        job_id=os.urandom(16), provider=PROVIDER.peer_id, model="smollm2:135m", kind="chat",
        messages=(ChatTurn("user", "Name a colour."),), params=JobParams(max_tokens=16),
        max_price_per_1k=100, issued_at=now_ms(), expires_at=now_ms() + 60_000)
    consumer, result = run_honestly(request, 100, TEXT, prompt_tokens=12, completion_tokens=4,
                                    consumer=NodeIdentity.generate(), provider=PROVIDER,
                                    now_ms=now_ms())
    if lie:
        result = sign(dataclasses.replace(result.msg, prompt_tokens=2**32 - 1), PROVIDER)
    return consumer.request, result


def report(signer: NodeIdentity, issued_at: int | None = None,
           result: Signed[JobResult] | None = None) -> bytes:
    request, honest = honest_job()
    bogus = "lorem ipsum " * 8
    return build_report(signer, request=request.raw, result=(result or honest).raw,
                        provider_output=TEXT, reference_output=bogus, reference_digest="",
                        comparison=compare_outputs(bogus, TEXT),
                        now_ms=issued_at or now_ms()).raw


def receiver(net: NetHost, book: ReputationBook) -> ReportReceiver:
    return ReportReceiver(
        net, backend=None, models=frozenset(), book=book, ledger=None, config=VerifyConfig(),
        clock_ms=now_ms, gate=EngineGate(), db=trio.CapacityLimiter(1),
        engine=trio.CapacityLimiter(1))


@asynccontextmanager
async def line(tmp: Path) -> AsyncIterator[tuple[NetHost, ReportReceiver, ReportReceiver]]:
    """Mallory (no validator) - B - C, B and C each with its report receiver."""
    async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
        b = await stack.enter_async_context(run_host(config(ip="127.0.0.2")))
        a = await stack.enter_async_context(run_host(config(ip="127.0.0.1",
                                                             deny_ips=("127.0.0.3",))))
        c = await stack.enter_async_context(run_host(config(ip="127.0.0.3",
                                                             deny_ips=("127.0.0.1",))))
        receivers = []
        for net, name in ((b, "b"), (c, "c")):
            net.catalog.admit(verify_advert(make_advert(PROVIDER, 1)))  # a provider it knows
            book = stack.enter_context(ReputationBook.open(tmp / f"{name}.sqlite3"))
            receivers.append(receiver(net, book))
            await receivers[-1].start(nursery)
        await a.subscribe(REPORTS_TOPIC)
        await a.connect(b.addrs()[0])
        await c.connect(b.addrs()[0])
        await b.wait_for_mesh(a.peer_id, REPORTS_TOPIC)
        await b.wait_for_mesh(c.peer_id, REPORTS_TOPIC)
        await a.wait_for_mesh(b.peer_id, REPORTS_TOPIC)
        yield a, receivers[0], receivers[1]
        nursery.cancel_scope.cancel()


async def test_junk_on_the_reports_topic_is_dropped_at_the_first_node(tmp_path: Path) -> None:
    with trio.fail_after(60):
        async with line(tmp_path) as (mallory, b, c):
            me = mallory.config.identity
            request, lying = honest_job(lie=True)
            honest_request, honest = honest_job()
            junk = {
                "not a message": b"\x93\x01\x02\x03" * 1000,
                "a day-old report": report(me, issued_at=now_ms() - 25 * 3_600_000),
                "forged evidence": report(me, result=sign(honest.msg, NodeIdentity.generate())),
                "a proof of nothing": sign(ChargeProof(  # an honest result
                    honest_request.raw, TEXT, now_ms(), result=honest.raw), me).raw,
            }
            for raw in junk.values():
                await mallory.publish(REPORTS_TOPIC, raw)
            genuine = [report(me),
                       build_charge_proof(me, request, now_ms(), result=lying, output=TEXT)]
            assert genuine[1] is not None
            await mallory.publish(REPORTS_TOPIC, genuine[0])  # type: ignore[arg-type]
            await mallory.publish(REPORTS_TOPIC, genuine[1].raw)
            while len(c.report_log) < 2:  # the genuine ones cross B
                await trio.sleep(0.05)
            await trio.sleep(1.0)  # anything B relayed after them has arrived too
    said_c = [what for _, _, what in c.report_log]
    said_b = [what for _, _, what in b.report_log]
    # C heard the genuine report (from an unproven reporter: weighed 0) and the proof,
    # and nothing else: B delivered and relayed none of the junk.
    assert len(said_c) == 2 and "ignored: reporter untrusted" in said_c, said_c
    assert any(what.startswith("proven overcharge") for what in said_c), said_c
    assert sorted(said_b) == sorted(said_c)
    assert sum(b.dropped.values()) == len(junk), b.dropped


def big_report(signer: NodeIdentity) -> bytes:
    """A genuine-looking `fail` report of ~0.8 MB, made offline from two free keys."""
    consumer, provider = NodeIdentity.generate(), NodeIdentity.generate()
    output = "é" * 262_000
    request = sign(JobRequest(
        job_id=os.urandom(16), provider=provider.peer_id, model="smollm2:135m", kind="generate",
        prompt="x" * 260_000, params=JobParams(max_tokens=16), max_price_per_1k=100,
        issued_at=now_ms(), expires_at=now_ms() + 60_000), consumer)
    result = sign(JobResult(
        job_id=request.msg.job_id, request_hash=request.hash, output_hash=output_hash(output),
        digest="", prompt_tokens=1, completion_tokens=1, prompt_ms=1, generation_ms=1,
        total_ms=2, finish_reason="stop", charged=1, finished_at=now_ms()), provider)
    return build_report(signer, request=request.raw, result=result.raw,
                        provider_output=output, reference_output="no", reference_digest="",
                        comparison=compare_outputs("no", output), now_ms=now_ms()).raw


async def test_one_peer_pushes_no_more_than_its_byte_budget_through_a_node(
    tmp_path: Path,
) -> None:
    flood = [big_report(NodeIdentity.generate()) for _ in range(12)]
    size = len(flood[0])
    assert all(len(raw) > 750_000 for raw in flood)
    with trio.fail_after(90):
        # D: another honest peer beside Mallory, on its own connection to B.
        async with line(tmp_path) as (mallory, b, c), \
                run_host(config(ip="127.0.0.4", deny_ips=("127.0.0.3",))) as d:
            await d.subscribe(REPORTS_TOPIC)
            await d.connect(b.net.addrs()[0])
            await b.net.wait_for_mesh(d.peer_id, REPORTS_TOPIC)
            started = trio.current_time()
            for raw in flood:
                await mallory.publish(REPORTS_TOPIC, raw)
            # Until B took or dropped each, and C heard each that B took.
            dropped = b.dropped
            while len(b.report_log) + dropped["over the forwarder's budget"] < len(flood) \
                    or len(c.report_log) < len(b.report_log):
                await trio.sleep(0.05)
            elapsed = trio.current_time() - started
            heard_from_flood = len(c.report_log)
            # D's report goes through B at once: Mallory spent only its own budget.
            await d.publish(REPORTS_TOPIC, report(d.config.identity))
            while len(c.report_log) == heard_from_flood:
                await trio.sleep(0.05)
    budget = (REPORT_BURST_BYTES + REPORT_BYTES_PER_S * elapsed) // size
    assert heard_from_flood <= budget < len(flood), (heard_from_flood, budget, elapsed)
    assert b.dropped["over the forwarder's budget"] >= len(flood) - budget
    assert c.report_log[-1][0] == d.peer_id


async def test_reports_waiting_for_the_engine_do_not_crowd_out_a_charge_proof(
    tmp_path: Path,
) -> None:
    """Reports and charge proofs were judged in one pool of 32 tasks, and a report to be
    re-run holds its task while it waits for the engine (one re-run at a time, up to
    60 s each): 32 within-limits reports (real evidence of a provider the node knows)
    made the node drop every charge proof that came behind them. Proofs need no engine:
    they have a pool of their own."""
    me = NodeIdentity.generate()
    request, lying = honest_job(lie=True)
    proof = build_charge_proof(me, request, now_ms(), result=lying, output=TEXT)
    assert proof is not None
    with trio.fail_after(30), ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        async with run_host(config()) as net, trio.open_nursery() as nursery:
            net.catalog.admit(verify_advert(make_advert(PROVIDER, 1)))
            node = ReportReceiver(
                net, backend=FakeBackendThatNeverRuns(), models=frozenset({"smollm2:135m"}),
                book=book, ledger=None, config=VerifyConfig(), clock_ms=now_ms,
                gate=EngineGate(), db=trio.CapacityLimiter(1), engine=trio.CapacityLimiter(1))
            await node.start(nursery)
            async with node._engine:  # a re-run is running: the next ones wait
                for _ in range(40):  # from 40 reporters: each within its own rate
                    raw = report(NodeIdentity.generate())
                    message = GossipMessage(REPORTS_TOPIC, raw, me.peer_id, net.peer_id)
                    assert node.admit(message)
                    await node._on_gossip(message)
                await trio.sleep(0.5)  # they reached the engine's door
                message = GossipMessage(REPORTS_TOPIC, proof.raw, me.peer_id, net.peer_id)
                assert node.admit(message)
                await node._on_gossip(message)
                with trio.move_on_after(5):
                    while not any(w.startswith("proven") for _, _, w in node.report_log):
                        await trio.sleep(0.05)
                said = [what for _, _, what in node.report_log]
                nursery.cancel_scope.cancel()
    assert any(what.startswith("proven overcharge") for what in said), said


class FakeBackendThatNeverRuns:
    """Stands in for an engine the test keeps busy: nothing may call it."""

    name = "fake"

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the engine was used: {name}")
