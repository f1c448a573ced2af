"""Building and driving the job state machines for the protocol job tests: requests,
signed frames, a consumer and provider with a job under way, an honest provider's result.
"""

from __future__ import annotations

import dataclasses
import os
import random

from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    Accepted,
    ChatTurn,
    ConsumerJob,
    FinishReason,
    JobParams,
    JobRequest,
    JobResult,
    ProviderJob,
    ReplayWindow,
    RequestReceived,
    ResultReceived,
    Signed,
    WireMessage,
    charge_for,
    encode_frame,
    output_hash,
    sign,
)
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER

DIGEST = "cd" * 32


def new_request(**changes: object) -> JobRequest:
    """A fresh chat request to PROVIDER (a new random job id), with `changes`."""
    base = JobRequest(
        job_id=os.urandom(16),
        provider=PROVIDER.peer_id,
        model="smollm2:135m",
        kind="chat",
        messages=(ChatTurn("system", "Be brief."), ChatTurn("user", "Name a colour.")),
        params=JobParams(max_tokens=32, temperature=0.0, seed=1),
        max_price_per_1k=500,
        issued_at=NOW_MS,
        expires_at=NOW_MS + 60_000,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def frame(msg: WireMessage, signer: NodeIdentity = PROVIDER) -> bytes:
    """`msg` signed by `signer` and framed, as it goes over a stream."""
    return encode_frame(sign(msg, signer).raw)


def started(**changes: object) -> tuple[ConsumerJob, ProviderJob]:
    """A consumer and a provider with the request delivered and accepted at 400."""
    consumer = ConsumerJob(CONSUMER, new_request(**changes))
    provider = ProviderJob(PROVIDER, ReplayWindow())
    [event] = provider.receive_data(consumer.start(), NOW_MS)
    assert isinstance(event, RequestReceived)
    provider.admit(NOW_MS)
    [accepted] = consumer.receive_data(provider.accept(400), NOW_MS)
    assert isinstance(accepted, Accepted) and accepted.price_per_1k == 400
    return consumer, provider


def finished_job() -> tuple[ConsumerJob, ProviderJob]:
    """A started job whose provider streamed "Blue" and finished; the consumer holds the
    result and owes the receipt."""
    consumer, provider = started()
    events = consumer.receive_data(
        provider.chunk("Blue")
        + provider.finish(prompt_tokens=20, completion_tokens=1, finish_reason="stop", now_ms=1),
        NOW_MS,
    )
    assert isinstance(events[-1], ResultReceived)
    return consumer, provider


def run_honestly(
    request: JobRequest, price: int, text: str, *, prompt_tokens: int, completion_tokens: int,
    finish_reason: FinishReason = "stop", consumer: NodeIdentity = CONSUMER,
    provider: NodeIdentity = PROVIDER, now_ms: int = NOW_MS,
) -> tuple[ConsumerJob, Signed[JobResult]]:
    """`request` run to its end by an honest provider: admitted, accepted at `price`,
    `text` streamed (no chunk when empty) and finished with the engine's counts (which
    `ProviderJob.finish` clamps); the consumer and the result it checked and took."""
    job = ConsumerJob(consumer, request)
    server = ProviderJob(provider, ReplayWindow())
    server.receive_data(job.start(), now_ms)
    server.admit(now_ms)
    wire = server.accept(price) + (server.chunk(text) if text else b"")
    wire += server.finish(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                          finish_reason=finish_reason, now_ms=now_ms)
    [*_, done] = job.receive_data(wire, now_ms)
    assert isinstance(done, ResultReceived)
    return job, done.result


def result_for(consumer: ConsumerJob, text: str, **changes: object) -> JobResult:
    """What an honest provider would sign after streaming `text` at 400 per 1k."""
    base = JobResult(
        job_id=consumer.job_id,
        request_hash=consumer.request.hash,
        output_hash=output_hash(text),
        digest=DIGEST,
        prompt_tokens=20,
        completion_tokens=3,
        prompt_ms=5,
        generation_ms=30,
        total_ms=40,
        finish_reason="stop",
        charged=charge_for(400, 23),
        finished_at=NOW_MS + 40,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def split(data: bytes, rng: random.Random) -> list[bytes]:
    """`data` cut at up to 6 random places, as a stream may deliver it."""
    cuts = sorted(rng.sample(range(1, len(data)), k=min(len(data) - 1, rng.randint(0, 6))))
    return [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
