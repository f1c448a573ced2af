"""Hand-made job requests sent over a real stream: forged, replayed, bound elsewhere."""

from __future__ import annotations

import os
import time

import msgpack

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.nethost import NetHost
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    ChatTurn,
    JobParams,
    JobRequest,
    Message,
    Signed,
    decode,
    encode_frame,
    sign,
)


def signed_request(
    identity: NodeIdentity, provider: str, model: str, *, max_tokens: int = 4
) -> bytes:
    """A valid signed JobRequest for `provider`, as the bytes a consumer would send."""
    now = time.time_ns() // 1_000_000
    request = JobRequest(
        job_id=os.urandom(16), provider=provider, model=model, kind="chat",
        max_price_per_1k=1_000_000, issued_at=now, expires_at=now + 60_000,
        messages=(ChatTurn("user", "hello"),),
        params=JobParams(max_tokens=max_tokens, temperature=0.0),
    )
    return sign(request, identity).raw


def forged(raw: bytes) -> bytes:
    """`raw` with one bit of its signature flipped, otherwise byte for byte the same."""
    envelope = msgpack.unpackb(raw, raw=False)
    sig = bytearray(envelope["sig"])
    sig[0] ^= 0x01
    envelope["sig"] = bytes(sig)
    return bytes(msgpack.packb(envelope, use_bin_type=True))


async def first_answer(net: NetHost, provider: str, raw: bytes) -> Signed[Message]:
    """Send `raw` as a job request to `provider`; the provider's first message (accept or
    reject). The stream is reset after, so an accepted job is abandoned."""
    stream = await net.open_stream(provider, JOB_PROTOCOL_ID)
    try:
        await stream.write(encode_frame(raw))
        answer = decode(await stream.read_frame(timeout_s=30))
    finally:
        await stream.reset()
    return answer
