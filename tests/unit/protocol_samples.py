"""Fixed protocol messages and hand-built envelopes for the codec tests: one realistic,
valid sample of each message type (the golden records sign these too) and envelopes
put together the way docs/protocol.md describes them, signed or not.
"""

from __future__ import annotations

from typing import Any

import msgpack

from p2pinfer.protocol import (
    Advert,
    AdvertHardware,
    ChargeProof,
    CheckReport,
    Chunk,
    Gpu,
    JobAccept,
    JobCancel,
    JobParams,
    JobReject,
    JobRequest,
    JobResult,
    Metric,
    ModelOffer,
    Receipt,
    SlashVote,
    WireMessage,
    output_hash,
    sign,
)
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER, STRATEGIES

TYPES = sorted(STRATEGIES)


def pack(obj: Any) -> bytes:
    """`obj` as msgpack, bytes as bin."""
    return msgpack.packb(obj, use_bin_type=True)


def envelope(t: str, body: Any, public_key: bytes, sig: bytes, v: Any = 1) -> bytes:
    """An envelope built by hand, the way docs/protocol.md describes it."""
    return pack({"body": body, "from": public_key, "sig": sig, "t": t, "v": v})


def documented_payload(domain_type: str, t: str, body: Any, public_key: bytes) -> bytes:
    """What a signer signs, built by hand: the domain of `domain_type`, NUL, the unsigned
    envelope."""
    unsigned = {"body": body, "from": public_key, "t": t, "v": 1}
    return f"p2pinfer/v1/{domain_type}".encode() + b"\x00" + pack(unsigned)


def sample(type_name: str) -> WireMessage:
    """One fixed, realistic, valid message of each type."""
    return SAMPLES[type_name]


def sample_request() -> JobRequest:
    """The job request that the job_request sample and the check report's evidence carry."""
    return JobRequest(
        job_id=bytes(range(16)),
        provider=PROVIDER.peer_id,
        model="smollm2:135m",
        kind="generate",
        prompt="Why is the sky blue?",
        params=JobParams(max_tokens=64, temperature=0.0, seed=42, stop=("\n\n",)),
        max_price_per_1k=200,
        issued_at=NOW_MS,
        expires_at=NOW_MS + 60_000,
        digest="ab" * 32,
    )


# Over 60 lines by design: one sample of each message type, side by side.
def _samples() -> dict[str, WireMessage]:
    """One valid message of each type, by type name."""
    request = sign(sample_request(), CONSUMER)
    result = JobResult(
        job_id=request.msg.job_id,
        request_hash=request.hash,
        output_hash=output_hash("Rayleigh scattering."),
        digest="ab" * 32,
        prompt_tokens=9,
        completion_tokens=4,
        prompt_ms=12,
        generation_ms=80,
        total_ms=95,
        finish_reason="stop",
        charged=3,
        finished_at=NOW_MS + 95,
    )
    advert = Advert(
        models=(ModelOffer("smollm2:135m", "ab" * 32, "135M", "Q8_0", 8192, 950_000, 48_500, 200),),
        hardware=AdvertHardware("AMD EPYC 7B13", 2, 7_900, (Gpu("NVIDIA H100", 81_559),)),
        engine="llama.cpp",
        stake=5_000_000,
        capacity=2,
        listen_addrs=("/ip4/192.0.2.7/tcp/4001",),
        seq=NOW_MS,
        issued_at=NOW_MS,
        ttl_ms=600_000,
    )
    return {
        "advert": advert,
        "job_request": request.msg,
        "job_accept": JobAccept(request.msg.job_id, 180, request.hash),
        "job_cancel": JobCancel(request.msg.job_id),
        "job_reject": JobReject(request.msg.job_id, "busy", "2 jobs running", 1_500),
        "chunk": Chunk(request.msg.job_id, 3, " scattering."),
        "job_result": result,
        "receipt": Receipt(request.msg.job_id, sign(result, PROVIDER).hash, 3, PROVIDER.peer_id),
        "check_report": CheckReport(
            request=request.raw,
            result=sign(result, PROVIDER).raw,
            provider_output="Rayleigh scattering.",
            reference_output_hash=output_hash("Rayleigh scattering of light."),
            reference_digest="ab" * 32,
            metrics=(Metric("prefix_agreement_permille", 650), Metric("logprob_delta_milli", -35)),
            verdict="pass",
            issued_at=NOW_MS,
        ),
        "charge_proof": ChargeProof(
            request=request.raw,
            result=sign(result, PROVIDER).raw,
            provider_output="Rayleigh scattering.",
            issued_at=NOW_MS,
            accept=sign(JobAccept(request.msg.job_id, 180, request.hash), PROVIDER).raw,
        ),
        "slash_vote": SlashVote(
            provider=PROVIDER.peer_id,
            provider_payee=bytes.fromhex("ab" * 20),
            amount=5_000_000_000,
            evidence=output_hash("a check report"),
            validator=bytes.fromhex("cd" * 20),
            validator_binding=bytes(range(65)),
            signature=bytes(range(1, 66)),
            issued_at=NOW_MS,
        ),
    }


SAMPLES = _samples()


def resigned(t: str, body: Any, v: Any = 1) -> bytes:
    """An envelope with a valid signature over whatever it carries (even a bad body)."""
    unsigned = {"body": body, "from": CONSUMER.public_key, "t": t, "v": v}
    payload = f"p2pinfer/v1/{t}".encode() + b"\x00" + pack(unsigned)
    return envelope(t, body, CONSUMER.public_key, CONSUMER.sign(payload), v)
