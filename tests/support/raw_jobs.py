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
    Chunk,
    JobAccept,
    JobParams,
    JobRequest,
    Message,
    Signed,
    decode,
    encode_frame,
    sign,
)


def signed_request(
    identity: NodeIdentity, provider: str, model: str, *, max_tokens: int = 4,
    max_price_per_1k: int = 1_000_000, payer: tuple[bytes, bytes] | None = None,
    inputs: tuple[str, ...] | None = None,
) -> bytes:
    """A valid signed JobRequest for `provider`, as the bytes a consumer would send;
    `payer`: (payer account, its binding over `identity`'s PeerID) for settlement;
    `inputs`: an embed job of these texts instead of a chat."""
    now = time.time_ns() // 1_000_000
    request = JobRequest(
        job_id=os.urandom(16), provider=provider, model=model,
        kind="chat" if inputs is None else "embed",
        max_price_per_1k=max_price_per_1k, issued_at=now, expires_at=now + 60_000,
        messages=(ChatTurn("user", "hello"),) if inputs is None else (), inputs=inputs,
        params=JobParams(max_tokens=max_tokens, temperature=0.0),
        payer=payer[0] if payer else None, payer_binding=payer[1] if payer else None,
    )
    return sign(request, identity).raw


async def read_then_leave(net: NetHost, provider: str, raw: bytes, chars: int) -> Message:
    """Send `raw` as a job request to `provider`; when accepted, read `chars` characters
    of the answer and reset the stream, as a consumer leaving before the result (what
    it paid for). The provider's first message (its accept, or its reject)."""
    stream = await net.open_stream(provider, JOB_PROTOCOL_ID)
    try:
        await stream.write(encode_frame(raw))
        first = decode(await stream.read_frame(timeout_s=5)).msg
        text = ""
        while isinstance(first, JobAccept) and len(text) < chars:
            text += decode(await stream.read_frame(timeout_s=5)).expect(Chunk).msg.text
    finally:
        await stream.reset()
    return first


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
