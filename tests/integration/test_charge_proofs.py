"""Attack 47 on real hosts: a provider's overcharge, refused by one consumer or caught
by a validator's check job, keeps it from every node that hears the proof.

A lying provider (tests/support/attack_money.py's, under a fresh key) advertises the
model at price 1, so every consumer ranks it first, and answers with a result that
claims 2^32-1 prompt tokens; whoever it serves refuses to pay. Before charge proofs
only that one convicted it: consumer B, on another node, still sent it its next job.
Now the refusal goes out on the reports topic as a proof (from a validator's check job
always; from a consumer's own job only if it agreed, since the proof shows the job's
prompt and answer to every node), B's report receiver checks it (B has no engine: no
re-run needed) and convicts the liar, and the honest provider's receiver slashes it in
its ledger; B's job goes to the honest provider and the liar never sees it.

Real libp2p hosts and GossipSub, the real embedded engine (a tiny generated model) on
the honest provider, SQLite ledgers and reputation tables.
"""

from __future__ import annotations

import os
from collections import Counter
from contextlib import AsyncExitStack
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.errors import P2PInferError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.market.ledger import Ledger
from p2pinfer.market.stake import sign_stake
from p2pinfer.net.adverts import verify_advert
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    REPORTS_TOPIC,
    Advert,
    AdvertHardware,
    JobParams,
    JobRequest,
    JobResult,
    ModelOffer,
    output_hash,
    sign,
)
from p2pinfer.testing.tiny_model import write_tiny_model
from p2pinfer.validator.checker import TargetedClient, Verifier
from p2pinfer.verify.breaker import BreakerState
from p2pinfer.verify.charge_proofs import build_charge_proof
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.engine_gate import EngineGate
from p2pinfer.verify.report_receiver import ReportReceiver
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.job_helpers import (
    Provider,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.integration.net_helpers import make_advert, now_ms
from tests.support.attack_money import Liar, serve_lies

pytestmark = pytest.mark.network

MODEL = "tiny:latest"
RECEIVER = VerifyConfig(validator=False)  # every node runs one; none spot-checks here
LIAR_STAKE = 5_000_000


def liar_advert() -> Advert:
    offer = ModelOffer(MODEL, "", "1M", "F32", 512, 0, 50_000, 1)
    return Advert(models=(offer,), hardware=AdvertHardware("liar", 2, 1024, ()),
                  engine="llama.cpp", stake=0, capacity=4, listen_addrs=(), seq=0,
                  issued_at=0, ttl_ms=30_000)


@dataclass
class Network:
    """The honest provider (a validator too), the liar, and consumers A and B, each node
    with its report receiver."""

    honest: Provider
    validator: Verifier
    liar: Liar
    net_a: NetHost
    book_a: ReputationBook
    client_b: JobClient
    book_b: ReputationBook


async def receiver(nursery: trio.Nursery, net: NetHost, client: JobClient,
                   book: ReputationBook, **kwargs: object) -> Verifier:
    verifier = Verifier(net, net.config.identity, client, reputation=book, config=RECEIVER,
                        **kwargs)  # type: ignore[arg-type]
    nursery.start_soon(verifier.run)
    return verifier


async def network(nursery: trio.Nursery, stack: AsyncExitStack, tmp: Path) -> Network:
    path = tmp / "tiny.gguf"
    write_tiny_model(path, seed=0)
    engine = EmbeddedBackend([ModelSource(MODEL, path)])
    honest = await start_provider(stack, nursery, engine, tmp,
                                  config=JobServerConfig(price_per_1k=900))
    boot = (honest.net.addrs()[0],)
    liar = Liar(default_lie="huge-prompt")
    liar_net = await stack.enter_async_context(run_host(NetConfig(liar.identity, bootstrap=boot)))

    async def lie(stream: NetStream) -> None:
        await serve_lies(liar, stream)

    liar_net.set_stream_handler(JOB_PROTOCOL_ID, lie)
    liar_net.start_advertising(liar_advert, interval_s=1.0)
    (tmp / "a").mkdir(), (tmp / "b").mkdir()
    net_a, plain_a, _ = await start_consumer(stack, tmp / "a", boot)
    net_b, plain_b, ledger_b = await start_consumer(stack, tmp / "b", boot)
    book_a = stack.enter_context(ReputationBook.open(tmp / "a" / "rep.sqlite3"))
    book_b = stack.enter_context(ReputationBook.open(tmp / "b" / "rep.sqlite3"))
    client_b = JobClient(net_b, plain_b.identity, ledger=ledger_b, reputation=book_b)
    # Every node judges what it hears on the reports topic (as node/run.py starts it).
    await receiver(nursery, net_a, plain_a, book_a, backend=None, models=frozenset(),
                   ledger=None)
    await receiver(nursery, net_b, client_b, book_b, backend=None, models=frozenset(),
                   ledger=ledger_b)
    book_h = stack.enter_context(ReputationBook.open(tmp / "rep-h.sqlite3"))
    validator = await receiver(
        nursery, honest.net, JobClient(honest.net, honest.net.config.identity), book_h,
        backend=engine, models=frozenset({MODEL}), ledger=honest.ledger)
    # The honest node's operator accepted the liar's stake declaration: a slash takes it.
    honest.ledger.record_stake(sign_stake(liar.identity, LIAR_STAKE, now_ms()))
    for net in (net_a, net_b, honest.net):
        await wait_for_providers(net, MODEL, 2 if net is not honest.net else 1)
    while not net_a.topic_peers(REPORTS_TOPIC):  # someone to gossip the proof to
        await trio.sleep(0.1)
    return Network(honest, validator, liar, net_a, book_a, client_b, book_b)


def a_client(net: Network, *, agreed: bool, book: ReputationBook | None) -> TargetedClient:
    """A client on A's node for one job to the liar (`agreed`: to show its refused jobs
    to the network; else the default)."""
    config = ClientConfig(max_attempts=1, require_credit=False)
    if agreed:
        config = replace(config, gossip_charge_proofs=True)
    client = TargetedClient(net.net_a, net.net_a.config.identity, reputation=book,
                            config=config)
    client.target = net.liar.peer_id
    return client


async def convicted(book: ReputationBook, peer: str, within_s: float) -> bool:
    with trio.move_on_after(within_s):
        while book.get(peer).breaker.state is not BreakerState.OPEN:
            await trio.sleep(0.2)
    return book.get(peer).breaker.state is BreakerState.OPEN


async def b_job_and_slashes(net: Network) -> tuple[str, int, list[object]]:
    """B's next job (its provider, jobs the liar served meanwhile) and the slash entries
    the honest provider's ledger holds once its receiver had time to check the proof."""
    served = sum(net.liar.served.values())
    outcome = await net.client_b.run(MODEL, "Say hello.", JobParams(max_tokens=8))
    with trio.move_on_after(10):
        while not [e for e in net.honest.ledger.entries() if e.kind == "slash"]:
            await trio.sleep(0.2)
    slashes = [e.body for e in net.honest.ledger.entries() if e.kind == "slash"]
    return outcome.provider, sum(net.liar.served.values()) - served, slashes


async def test_an_overcharge_refused_by_one_consumer_keeps_the_liar_from_the_others(
    tmp_path: Path,
) -> None:
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            net = await network(nursery, stack, tmp_path)
            liar = net.liar
            # By default A's refusal stays with A: its prompt and answer are its own.
            with pytest.raises(P2PInferError, match="overcharged"):
                await a_client(net, agreed=False, book=net.book_a).run(
                    MODEL, "Say hello.", JobParams(max_tokens=8))
            assert net.book_a.get(liar.peer_id).breaker.state is BreakerState.OPEN
            kept_private = not await convicted(net.book_b, liar.peer_id, within_s=3)
            # Another client there (no book: it has not met the liar), which agreed
            # to show its refused jobs, refuses the next lie: gossiped.
            with pytest.raises(P2PInferError, match="overcharged"):
                await a_client(net, agreed=True, book=None).run(
                    MODEL, "Say hello.", JobParams(max_tokens=8))
            heard_b = await convicted(net.book_b, liar.peer_id, within_s=20)
            score_b = net.book_b.get(liar.peer_id).score_pm
            provider, served_meanwhile, slashes = await b_job_and_slashes(net)
            nursery.cancel_scope.cancel()
    assert kept_private
    # B convicted the liar without ever dealing with it, its job went to the honest
    # provider though the liar still advertises price 1, and the liar never saw it.
    assert heard_b and score_b == 0
    assert provider == net.honest.net.peer_id and served_meanwhile == 0
    # The honest provider's receiver checked the proof too, and slashed the liar.
    assert [(s.provider, s.amount, s.reason) for s in slashes] == [  # type: ignore[attr-defined]
        (liar.identity.public_key, LIAR_STAKE, "overcharge, proven by a charge proof")]


async def test_an_accept_over_the_quote_refused_by_one_consumer_is_proven_to_the_others(
    tmp_path: Path,
) -> None:
    """Attack 64: the lie as first found, an accept at the consumer's max over the quote,
    is refused before anything streams. An accept that named only the job id proved
    nothing to others, so B went on ranking the liar first; now it names the request."""
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            net = await network(nursery, stack, tmp_path)
            liar = net.liar
            with pytest.raises(P2PInferError, match="overcharged"):
                await a_client(net, agreed=True, book=None).run(
                    MODEL, "[as-found] Say hello.", JobParams(max_tokens=8))
            assert liar.served["as-found"] == 1
            heard_b = await convicted(net.book_b, liar.peer_id, within_s=20)
            provider, served_meanwhile, slashes = await b_job_and_slashes(net)
            nursery.cancel_scope.cancel()
    assert heard_b
    assert provider == net.honest.net.peer_id and served_meanwhile == 0
    assert [(s.provider, s.amount, s.reason) for s in slashes] == [  # type: ignore[attr-defined]
        (liar.identity.public_key, LIAR_STAKE, "overcharge, proven by a charge proof")]


async def test_an_overcharge_caught_by_a_check_job_keeps_the_liar_from_everyone(
    tmp_path: Path,
) -> None:
    with trio.fail_after(150):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            net = await network(nursery, stack, tmp_path)
            liar = net.liar
            # The validator's check job, from a host and key of its own, meets the lie.
            assert await net.validator.check_provider(liar.peer_id, MODEL) is None
            assert liar.served["huge-prompt"] == 1
            heard_b = await convicted(net.book_b, liar.peer_id, within_s=20)
            heard_v = await convicted(net.validator.book, liar.peer_id, within_s=5)
            provider, served_meanwhile, slashes = await b_job_and_slashes(net)
            nursery.cancel_scope.cancel()
    assert heard_b and heard_v  # the check client keeps no book: its own receiver convicts
    assert provider == net.honest.net.peer_id and served_meanwhile == 0
    assert len(slashes) == 1


def offline_proof(provider: NodeIdentity) -> bytes:
    """A valid proof that `provider` overcharged, made by one person holding three free
    keys (consumer, provider, reporter) with no job ever run."""
    consumer = NodeIdentity.generate()
    request = sign(JobRequest(
        job_id=os.urandom(16), provider=provider.peer_id, model=MODEL, kind="generate",
        prompt="hi", params=JobParams(max_tokens=8), max_price_per_1k=100,
        issued_at=now_ms(), expires_at=now_ms() + 60_000), consumer)
    result = sign(JobResult(
        job_id=request.msg.job_id, request_hash=request.hash, output_hash=output_hash("hi"),
        digest="", prompt_tokens=2**32 - 1, completion_tokens=1, prompt_ms=1, generation_ms=1,
        total_ms=2, finish_reason="stop", charged=10**9, finished_at=now_ms()), provider)
    proof = build_charge_proof(consumer, request, now_ms(), result=result, output="hi")
    assert proof is not None
    return proof.raw


async def test_proofs_made_offline_grow_no_table(tmp_path: Path) -> None:
    """The attack on the defence: proofs cost nothing to make about keys of one's own, so
    a flood of them (a fresh provider key each, or one advertised key's many results)
    must not add a reputation row or a ledger entry per proof at every node."""
    identity, known = NodeIdentity.generate(), NodeIdentity.generate()
    said: Counter[str] = Counter()
    with trio.fail_after(60), \
            Ledger.open(tmp_path / "ledger.sqlite3", identity) as ledger, \
            ReputationBook.open(tmp_path / "rep.sqlite3") as book:
        async with run_host(NetConfig(identity)) as net:
            node = ReportReceiver(
                net, backend=None, models=frozenset(), book=book, ledger=ledger,
                config=RECEIVER, clock_ms=now_ms, gate=EngineGate(),
                db=trio.CapacityLimiter(1), engine=trio.CapacityLimiter(1))
            net.catalog.admit(verify_advert(make_advert(known, 1)))  # the one it knows
            for _ in range(100):
                said[await node.receive_report(offline_proof(NodeIdentity.generate()))] += 1
            for _ in range(30):
                said[(await node.receive_report(offline_proof(known)))[:30]] += 1
        rows = [rec.peer_id for rec in book.peers()]
        entries = ledger.entries()
    assert said == {"ignored: a provider not in the catalog": 100,
                    "proven overcharge: claims 4294": 1,
                    "ignored: provider convicted wi": 29}, said
    assert rows == [known.peer_id]  # one row, the advertised provider's
    assert [e.kind for e in entries if e.kind == "slash"] == []  # no stake here to take
