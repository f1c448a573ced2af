"""Attack "replay window fill": flood one provider with job requests it refuses anyway
(an unknown model, a price below its own) under many throwaway keys, so that each takes
a slot of its replay window, until honest requests are refused "busy".

`flood` sends the requests from a host the caller runs; `run` is the whole attack
against the shared attack testnet (tests/support/attack_net.py), for the e2e test and
bench/attacks.py: its own host under a fresh key, dialling the bootstrap node, flooding
provider 1, then checking that a replayed request is still refused.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import trio

from p2pinfer.errors import P2PInferError
from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat.inbound_streams import STREAM_RATE_PER_S
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    ChatTurn,
    JobAccept,
    JobParams,
    JobReject,
    JobRequest,
    decode,
    encode_frame,
    sign,
)

if TYPE_CHECKING:
    from tests.support.attack_net import AttackNet


def request_bytes(
    identity: NodeIdentity, provider: str, model: str, *, max_price_per_1k: int = 1_000_000,
    max_tokens: int = 1, lifetime_ms: int = 10 * 60_000,
) -> bytes:
    """A signed JobRequest as a consumer would send it, valid for `lifetime_ms` (the most a
    provider takes, so that an id it remembers stays there as long as it can)."""
    now = time.time_ns() // 1_000_000
    return sign(JobRequest(
        job_id=os.urandom(16), provider=provider, model=model, kind="chat",
        max_price_per_1k=max_price_per_1k, issued_at=now, expires_at=now + lifetime_ms,
        messages=(ChatTurn("user", "hi"),),
        params=JobParams(max_tokens=max_tokens, temperature=0.0, seed=1),
    ), identity).raw


async def answer_code(host: NetHost, provider: str, raw: bytes, timeout_s: float = 30) -> str:
    """Send `raw` on a new job stream; the reject code, "accepted", or "error: ..."; the
    stream is reset after the first answer (an accepted job is abandoned at once)."""
    try:
        stream = await host.open_stream(provider, JOB_PROTOCOL_ID, first=encode_frame(raw))
    except P2PInferError as exc:
        return f"error: {type(exc).__name__}"
    try:
        msg = decode(await stream.read_frame(timeout_s=timeout_s)).msg
    except P2PInferError as exc:
        return f"error: {type(exc).__name__}"
    finally:
        await stream.reset()
    if isinstance(msg, JobReject):
        return msg.code
    return "accepted" if isinstance(msg, JobAccept) else f"error: {type(msg).__name__}"


#: The flood's pace: under the streams a provider lets one connection open a second.
FLOOD_PER_S = 0.8 * STREAM_RATE_PER_S


async def flood(
    host: NetHost, provider: str, *, model: str, unknown: int, underpriced: int,
    keys: int = 64, parallel: int = 8,
) -> Counter[str]:
    """`unknown` requests for a model nobody serves and `underpriced` ones for `model` at
    max price 0, signed round-robin by `keys` fresh keys, `parallel` at a time, at most
    FLOOD_PER_S a second (a connection may open no more streams: attack 54; faster, the
    provider resets them before reading, which is not what this attack is about); the
    count of each answer."""
    signers = [NodeIdentity.generate() for _ in range(max(1, keys))]
    jobs = [("no-such:model", 1_000_000)] * unknown + [(model, 0)] * underpriced
    answers: Counter[str] = Counter()
    started = trio.current_time()

    async def worker(offset: int) -> None:
        for n in range(offset, len(jobs), parallel):
            await trio.sleep_until(started + n / FLOOD_PER_S)
            name, price = jobs[n]
            raw = request_bytes(signers[n % len(signers)], provider, name,
                                max_price_per_1k=price)
            answers[await answer_code(host, provider, raw)] += 1

    async with trio.open_nursery() as nursery:
        for offset in range(parallel):
            nursery.start_soon(worker, offset)
    return answers


async def replay_is_refused(host: NetHost, provider: str, model: str) -> tuple[str, str]:
    """One real (1-token) request, then the very same bytes again: the two answers. A new
    key's job runs only on an idle slot, and the honest load keeps the provider's slot
    busy much of the time: a `busy` answer records nothing, so the same bytes are sent
    again until a slot is idle (within 20 s, well inside the request's validity)."""
    raw = request_bytes(NodeIdentity.generate(), provider, model)
    first = await answer_code(host, provider, raw)
    with trio.move_on_after(20):
        while first == "busy":
            await trio.sleep(0.2)
            first = await answer_code(host, provider, raw)
    return first, await answer_code(host, provider, raw)


async def run(net: AttackNet, *, unknown: int = 1_500, underpriced: int = 500,
              keys: int = 64, parallel: int = 8, target: int = 1) -> dict[str, Any]:
    """The attack on node `target` of the shared testnet; what was sent and answered."""
    from tests.support.attack_net import MODEL

    provider = net.peer(target)
    async with run_host(NetConfig(NodeIdentity.generate(), bootstrap=(net.bootstrap,))) as host:
        await host.connect(net.nodes[target].listen_addrs[0])
        started = time.monotonic()
        answers = await flood(host, provider, model=MODEL, unknown=unknown,
                              underpriced=underpriced, keys=keys, parallel=parallel)
        seconds = time.monotonic() - started
        first, again = await replay_is_refused(host, provider, MODEL)
    return {
        "attack": "replay_window_fill", "target": provider, "sent": unknown + underpriced,
        "keys": keys, "seconds": round(seconds, 1),
        "requests_per_s": round((unknown + underpriced) / max(seconds, 1e-9), 1),
        "answers": dict(answers), "replay_first": first, "replay_again": again,
    }
