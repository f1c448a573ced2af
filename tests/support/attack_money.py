"""Money attacks on the shared attack testnet (issue 14, attacks 5 and 6).

Overcharge (`run_overcharge`): a lying provider joins under a fresh key, advertises
SmolLM2 at price 1 per 1k tokens (so node 0's gateway, ranking by price, sends it
its jobs) and answers every job with a made-up charge: as found, it accepts at the
consumer's maximum and claims 2^32-1 prompt tokens. A consumer in this process
(a real JobClient) also sends it one job per kind of lie. Returned: what the
liar served and whether any receipt came back, and what the consumer recorded.

Freeloading (`run_freeloader`): fresh keys open long jobs straight to the honest
providers, read the answers and never send a receipt: a new key every second, each
with `per_key` parallel jobs per provider. Returned: what the providers served.

Both are plain functions over an `AttackNet`, for the e2e tests and bench/attacks.py.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from p2pinfer.errors import P2PInferError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.market.entries import peer_account
from p2pinfer.market.ledger import Ledger
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    Advert,
    AdvertHardware,
    ChatTurn,
    Chunk,
    JobAccept,
    JobParams,
    JobRequest,
    JobResult,
    ModelOffer,
    Receipt,
    charge_for,
    decode,
    decode_as,
    encode_frame,
    output_hash,
    sign,
)
from p2pinfer.validator.checker import TargetedClient
from p2pinfer.verify.reputation_store import ReputationBook
from tests.support.attack_net import MODEL, AttackNet

U32 = 2**32 - 1
LIES = ("as-found", "huge-prompt", "huge-completion", "inflated-charge", "charge-on-error")
LIAR_TEXT = "Hello there, friend."


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- overcharge --------------------------------------------------------------------


@dataclass
class Liar:
    """What the lying provider did."""

    identity: NodeIdentity = field(default_factory=NodeIdentity.generate)
    default_lie: str = "as-found"  # told to a job whose prompt names none
    served: Counter[str] = field(default_factory=Counter)  # lie -> results sent
    claimed: list[int] = field(default_factory=list)  # charges it signed
    receipts: list[int] = field(default_factory=list)  # amounts receipted to it

    @property
    def peer_id(self) -> str:
        return self.identity.peer_id


def lie_for(request: JobRequest, default: str = "as-found") -> str:
    """The in-process consumer names the lie in its prompt; the gateway gets `default`."""
    text = request.prompt or " ".join(m.content for m in request.messages)
    return next((lie for lie in LIES if f"[{lie}]" in text), default)


def lying_result(request: JobRequest, request_hash: bytes, lie: str, price: int
                 ) -> JobResult:
    prompt, completion, reason = 12, min(4, request.params.max_tokens), "stop"
    if lie in ("as-found", "huge-prompt"):
        prompt = U32
    elif lie == "huge-completion":
        completion = request.params.max_tokens  # for a 5-word answer
    elif lie == "charge-on-error":
        reason = "error"
    charged = 10**12 if lie == "inflated-charge" else charge_for(price, prompt + completion)
    return JobResult(
        job_id=request.job_id, request_hash=request_hash, output_hash=output_hash(LIAR_TEXT),
        digest="", prompt_tokens=prompt, completion_tokens=completion, prompt_ms=1,
        generation_ms=1, total_ms=2, finish_reason=reason,  # type: ignore[arg-type]
        charged=charged, finished_at=now_ms())


async def serve_lies(liar: Liar, stream: NetStream) -> None:
    """One job, answered with a lie, and the receipt (if one comes) noted."""
    signed = decode_as(await stream.read_frame(timeout_s=10), JobRequest)
    req = signed.msg
    lie = lie_for(req, liar.default_lie)
    quote = getattr(req, "quoted_price_per_1k", None)
    price = req.max_price_per_1k if lie == "as-found" or quote is None else quote
    me = liar.identity
    result = lying_result(req, signed.hash, lie, price)
    frames = [encode_frame(sign(JobAccept(req.job_id, price, signed.hash), me).raw),
              encode_frame(sign(Chunk(req.job_id, 0, LIAR_TEXT), me).raw),
              encode_frame(sign(result, me).raw)]
    try:
        await stream.write(b"".join(frames), timeout_s=10)
        liar.served[lie] += 1
        liar.claimed.append(result.charged)
        answer = decode(await stream.read_frame(timeout_s=10))
    except P2PInferError:
        return  # refused: the consumer broke off
    if isinstance(answer.msg, Receipt):
        liar.receipts.append(answer.msg.amount)


def liar_advert(price_per_1k: int = 1) -> Advert:
    offer = ModelOffer(MODEL, "", "135M", "Q8_0", 2048, 0, 50_000, price_per_1k)
    return Advert(models=(offer,), hardware=AdvertHardware("liar", 2, 1024, ()),
                  engine="llama.cpp", stake=0, capacity=4, listen_addrs=(), seq=0,
                  issued_at=0, ttl_ms=30_000)  # short: it leaves the catalogs soon after


async def consumer_jobs(net: AttackNet, liar: Liar, workdir: Path) -> dict[str, Any]:
    """A consumer in this process sends the liar one job per lie (a fresh client each, so
    an open breaker does not skip the later ones); what it receipted and recorded."""
    identity = NodeIdentity.generate()
    out: dict[str, Any] = {"refused": [], "receipted": [], "convicted": None}
    with Ledger.open(workdir / "consumer-ledger.sqlite3", identity) as ledger, \
            ReputationBook.open(workdir / "consumer-reputation.sqlite3") as book:
        ledger.record_faucet(identity.public_key, 10_000_000, grant_id="attack")
        start = ledger.balance(peer_account(identity.public_key))
        async with run_host(NetConfig(identity, bootstrap=(net.bootstrap,))) as host:
            with trio.fail_after(60):
                await host.catalog.wait_for(lambda c: any(
                    e.peer_id == liar.peer_id for e in c.providers(MODEL)))
            for lie in LIES:
                # A consumer that agreed to show its refused jobs to the network.
                client = TargetedClient(host, identity, ledger=ledger,
                                        reputation=book if lie == "as-found" else None,
                                        config=ClientConfig(max_attempts=1,
                                                            gossip_charge_proofs=True))
                client.target = liar.peer_id
                try:
                    with trio.fail_after(60):
                        outcome = await client.run(MODEL, f"[{lie}] Say hello.",
                                                   JobParams(max_tokens=256, temperature=0.0))
                    out["receipted"].append((lie, outcome.charged))
                except P2PInferError as exc:
                    out["refused"].append((lie, str(exc)[:200]))
                out.setdefault("evidence", 0)
                out["evidence"] += len(getattr(client, "refused_charges", ()))
        rec = book.get(liar.peer_id)
        out["convicted"] = {"score_pm": rec.score_pm, "breaker": rec.breaker.state.value}
        out["spent"] = start - ledger.balance(peer_account(identity.public_key))
    return out


async def run_overcharge(net: AttackNet, workdir: Path, *, gateway_s: float = 20.0
                         ) -> dict[str, Any]:
    """The lying provider serves for `gateway_s` (node 0's gateway traffic finds it by its
    price), then a consumer here sends it one job per lie. What happened, as a dict."""
    liar = Liar()

    async def handler(stream: NetStream) -> None:
        await serve_lies(liar, stream)

    async with run_host(NetConfig(liar.identity, bootstrap=(net.bootstrap,))) as host:
        host.set_stream_handler(JOB_PROTOCOL_ID, handler)
        host.start_advertising(liar_advert, interval_s=5.0)
        await trio.sleep(gateway_s)
        consumer = await consumer_jobs(net, liar, workdir)
        await trio.sleep(1.0)  # receipts in flight
    return {"liar": liar.peer_id, "served": dict(liar.served), "claimed_max": max(
        liar.claimed, default=0), "receipts": list(liar.receipts), "consumer": consumer}


# -- freeloading --------------------------------------------------------------------


@dataclass
class FreeJob:
    provider: str
    key: str
    outcome: str = "?"  # served | rejected:<code> | failed:<why>
    chars: int = 0


def freeload_request(key: NodeIdentity, provider: str, max_tokens: int) -> bytes:
    now = now_ms()
    request = JobRequest(
        job_id=os.urandom(16), provider=provider, model=MODEL, kind="chat",
        max_price_per_1k=10_000, issued_at=now, expires_at=now + 5 * 60_000,
        messages=(ChatTurn("user", "Write a very long story about a lighthouse keeper."),),
        params=JobParams(max_tokens=max_tokens, temperature=0.8, seed=7),
    )
    return sign(request, key).raw


async def freeload_one(host: NetHost, key: NodeIdentity, provider: str, max_tokens: int,
                       job: FreeJob) -> None:
    """One job read to its result (or refusal); never a receipt; the stream reset."""
    try:
        stream = await host.open_stream(provider, JOB_PROTOCOL_ID)
    except P2PInferError as exc:
        job.outcome = f"failed:{type(exc).__name__}"
        return
    try:
        await stream.write(encode_frame(freeload_request(key, provider, max_tokens)))
        while True:
            msg = decode(await stream.read_frame(timeout_s=300)).msg
            if isinstance(msg, Chunk):
                job.chars += len(msg.text)
            elif isinstance(msg, JobResult):
                job.outcome = "served"
                return
            elif not isinstance(msg, JobAccept):
                job.outcome = f"rejected:{getattr(msg, 'code', msg.TYPE)}"
                return
    except P2PInferError as exc:
        job.outcome = f"failed:{type(exc).__name__}"
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(2):
            await stream.reset()


async def run_freeloader(net: AttackNet, *, keys: int = 20, per_key: int = 5,
                         interval_s: float = 1.0, max_tokens: int = 400,
                         providers: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """A new key every `interval_s`, `keys` in all (a Sybil rotating keys), each opening
    `per_key` parallel long jobs at each provider and never paying. Returns the jobs'
    outcomes."""
    jobs: list[FreeJob] = []
    started = time.monotonic()
    with trio.fail_after(keys * interval_s + 400):
        async with run_host(NetConfig(NodeIdentity.generate(),
                                      bootstrap=(net.bootstrap,))) as host:
            for index in providers:
                await host.connect(net.nodes[index].listen_addrs[0])
            async with trio.open_nursery() as nursery:
                for _ in range(keys):
                    key = NodeIdentity.generate()
                    for index in providers:
                        for _ in range(per_key):
                            job = FreeJob(net.peer(index), key.peer_id)
                            jobs.append(job)
                            nursery.start_soon(freeload_one, host, key, net.peer(index),
                                               max_tokens, job)
                    await trio.sleep(interval_s)
    served = Counter((j.provider, j.key) for j in jobs if j.outcome == "served")
    return {
        "keys": keys,
        "seconds": round(time.monotonic() - started, 1),
        "jobs": len(jobs),
        "outcomes": dict(Counter(j.outcome for j in jobs)),
        "served": sum(served.values()),
        "most_served_per_key_and_provider": max(served.values(), default=0),
        "chars_received": sum(j.chars for j in jobs),
    }
