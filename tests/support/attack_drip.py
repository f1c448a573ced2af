"""A provider that drips its answers, on the shared attack testnet (attack 33).

It joins under a fresh key at price 1 per 1k tokens (node 0's gateway, ranking by
price, tries it as soon as it explores), answers its first `proving` jobs at once with
a short answer and a correct charge (so the gateway pays it and ranks it with the
proven providers, first by price), and from then on accepts every job and sends one
chunk every `gap_s` seconds (under the consumer's 60 s chunk timeout), never a
result. Returned: the jobs it held and for how long (accept to the consumer's reset),
and the receipts it got. `bench/attacks.py` runs it with the gateway's pace floor on,
and (`--pace-floor 0`) off.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import trio

from p2pinfer.errors import P2PInferError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.streams import NetStream
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    Chunk,
    JobAccept,
    JobRequest,
    JobResult,
    Receipt,
    Signed,
    charge_for,
    decode,
    decode_as,
    encode_frame,
    output_hash,
    sign,
)
from tests.support.attack_money import liar_advert, now_ms
from tests.support.attack_net import AttackNet

ANSWER = "Hello there."
DRIP = "Hi "


@dataclass
class Dripper:
    """What the dripping provider did."""

    proving: int  # jobs answered at once first
    gap_s: float
    identity: NodeIdentity = field(default_factory=NodeIdentity.generate)
    proved: int = 0
    held_s: list[float] = field(default_factory=list)  # each dripped job: accept to reset
    chunks: list[int] = field(default_factory=list)  # chunks each dripped job got out
    receipts: list[int] = field(default_factory=list)


async def answer_at_once(dripper: Dripper, stream: NetStream, signed_request: Any) -> None:
    """An honest-looking short answer with a correct charge, and its receipt."""
    req: JobRequest = signed_request.msg
    price = req.quoted_price_per_1k or 1
    me = dripper.identity
    result = JobResult(
        job_id=req.job_id, request_hash=signed_request.hash, output_hash=output_hash(ANSWER),
        digest="", prompt_tokens=12, completion_tokens=3, prompt_ms=1, generation_ms=1,
        total_ms=2, finish_reason="stop", charged=charge_for(price, 15), finished_at=now_ms())
    accept = JobAccept(req.job_id, price, signed_request.hash)
    await stream.write(b"".join(encode_frame(sign(m, me).raw) for m in (
        accept, Chunk(req.job_id, 0, ANSWER), result)), timeout_s=10)
    dripper.proved += 1
    answer = decode(await stream.read_frame(timeout_s=10))
    if isinstance(answer.msg, Receipt):
        dripper.receipts.append(answer.msg.amount)


async def drip(dripper: Dripper, stream: NetStream, signed_request: Signed[JobRequest]
               ) -> None:
    """Accept, then a chunk every gap_s (no more than the job's tokens allow) until the
    consumer leaves; never a result."""
    me, req = dripper.identity, signed_request.msg
    started, sent = trio.current_time(), 0
    accept = JobAccept(req.job_id, req.quoted_price_per_1k or 1, signed_request.hash)
    await stream.write(encode_frame(sign(accept, me).raw), timeout_s=10)
    try:
        while True:
            if sent < req.params.max_tokens:
                await stream.write(encode_frame(sign(Chunk(req.job_id, sent, DRIP), me).raw),
                                   timeout_s=10)
                sent += 1
            with trio.move_on_after(dripper.gap_s):
                if not await stream.read_some(timeout_s=None):
                    return  # the consumer reset the stream: it left
    except P2PInferError:
        return
    finally:
        dripper.held_s.append(round(trio.current_time() - started, 1))
        dripper.chunks.append(sent)


async def run(net: AttackNet, *, seconds: float = 120.0, proving: int = 2,
              gap_s: float = 15.0) -> dict[str, Any]:
    """The dripper serves node 0's gateway traffic for `seconds`; what it did."""
    dripper = Dripper(proving=proving, gap_s=gap_s)

    async def handler(stream: NetStream) -> None:
        try:
            signed = decode_as(await stream.read_frame(timeout_s=10), JobRequest)
            if dripper.proved < dripper.proving:
                await answer_at_once(dripper, stream, signed)
            else:
                await drip(dripper, stream, signed)
        except P2PInferError:
            return

    async with run_host(NetConfig(dripper.identity, bootstrap=(net.bootstrap,))) as host:
        host.set_stream_handler(JOB_PROTOCOL_ID, handler)
        host.start_advertising(lambda: liar_advert(price_per_1k=1), interval_s=5.0)
        await trio.sleep(seconds)
    return {"dripper": dripper.identity.peer_id,
            "gap_s": gap_s, "proved": dripper.proved, "receipts": dripper.receipts,
            "dripped_jobs": len(dripper.held_s), "held_s": dripper.held_s,
            "chunks_sent": dripper.chunks}
