"""Protocol benchmark: sign+verify rate on one core and the encoded size of typical messages.

Run from the repository root:  python bench/protocol.py [--seconds 2]
Prints a summary and writes bench/results/protocol.json (date, machine, numbers).
Budget from the design: a JobRequest with a 200-word prompt encodes under 2 KB.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, results_path, utc_now, write_result
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    Advert,
    AdvertHardware,
    ChatTurn,
    Chunk,
    FrameDecoder,
    Gpu,
    JobAccept,
    JobParams,
    JobRequest,
    JobResult,
    ModelOffer,
    Receipt,
    WireMessage,
    charge_for,
    decode,
    encode_frame,
    output_hash,
    sign,
)

RESULTS = results_path("protocol.json")
REQUEST_BUDGET_BYTES = 2048
NOW_MS = 1_750_000_000_000

_SENTENCES = (
    "Our team maintains a small web service that stores customer orders in a relational "
    "database and sends a confirmation email after each purchase. Last week the service "
    "started to time out during the evening peak, and the logs show slow queries on the "
    "orders table together with a growing queue of unsent emails. We added an index on the "
    "customer id column, but the latency improved only a little. The application runs on "
    "two virtual machines behind a load balancer, each with four cores and eight gigabytes "
    "of memory, and the database lives on a managed instance with default settings. Please "
    "explain the most likely causes of the slowdown, in order of probability, and describe "
    "how we could confirm each one with the tools we already have. Then suggest three "
    "changes we could make this week without a large rewrite, and say what risk each change "
    "carries. Keep the answer practical and short, use plain language, and assume the reader "
    "knows basic SQL but has never tuned a database server before. Mention which metrics we "
    "should watch after every change so that we can tell whether it helped or made things "
    "worse, and how long we should wait before judging the result."
)


def prompt_of(words: int) -> str:
    pool = _SENTENCES.split()
    return " ".join(pool[i % len(pool)] for i in range(words))


def typical_request(provider: NodeIdentity) -> JobRequest:
    return JobRequest(
        job_id=os.urandom(16),
        provider=provider.peer_id,
        model="smollm2:135m-instruct-q8_0",
        kind="chat",
        messages=(
            ChatTurn("system", "You are a helpful assistant."),
            ChatTurn("user", prompt_of(200)),
        ),
        params=JobParams(max_tokens=512, temperature=0.7, top_p=0.9, top_k=40, seed=1234),
        max_price_per_1k=250,
        issued_at=NOW_MS,
        expires_at=NOW_MS + 60_000,
        digest="5f" * 32,
    )


def typical_result(request_hash: bytes) -> JobResult:
    return JobResult(
        job_id=os.urandom(16),
        request_hash=request_hash,
        output_hash=output_hash("x" * 2000),
        digest="5f" * 32,
        prompt_tokens=268,
        completion_tokens=512,
        prompt_ms=310,
        generation_ms=9_850,
        total_ms=10_240,
        finish_reason="length",
        charged=charge_for(200, 780),
        finished_at=NOW_MS + 10_240,
    )


def typical_advert() -> Advert:
    offer = ModelOffer("smollm2:135m", "5f" * 32, "135M", "Q8_0", 8192, 950_000, 48_500, 200)
    return Advert(
        models=(
            offer,
            ModelOffer("qwen2.5:7b", "a1" * 32, "7.6B", "Q4_K_M", 32768, 2_100_000, 41_000, 900),
            ModelOffer("llama3.2:3b", "b2" * 32, "3.2B", "Q4_K_M", 131072, 3_000_000, 88_000, 500),
        ),
        hardware=AdvertHardware("AMD Ryzen 9 7950X", 16, 64_000, (Gpu("RTX 4090", 24_564),)),
        engine="ollama",
        stake=10_000_000,
        capacity=4,
        listen_addrs=("/ip4/203.0.113.5/tcp/4001", "/ip4/203.0.113.5/udp/4001/quic-v1"),
        seq=NOW_MS,
        issued_at=NOW_MS,
        ttl_ms=600_000,
    )


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of `fn`, measured for about `seconds`."""
    fn()
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        calls += 50
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measurement")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})  # one core

    consumer, provider = NodeIdentity.generate(), NodeIdentity.generate()
    request = typical_request(provider)
    signed_request = sign(request, consumer)
    signed_result = sign(typical_result(signed_request.hash), provider)
    chunk = sign(Chunk(os.urandom(16), 17, " the database"), provider)
    samples: dict[str, WireMessage] = {
        "job_request_200_words": request,
        "job_result": signed_result.msg,
        "job_accept": JobAccept(os.urandom(16), 200, signed_request.hash),
        "chunk_one_token": chunk.msg,
        "receipt": Receipt(os.urandom(16), signed_result.hash, 156, provider.peer_id),
        "advert_3_models": typical_advert(),
    }
    sizes = {name: len(sign(msg, provider).raw) for name, msg in samples.items()}

    stream = b"".join(encode_frame(chunk.raw) for _ in range(1000))
    rates = {
        "sign_plus_verify_job_request_per_s": rate(
            lambda: decode(sign(request, consumer).raw), args.seconds
        ),
        "sign_job_request_per_s": rate(lambda: sign(request, consumer), args.seconds),
        "verify_job_request_per_s": rate(lambda: decode(signed_request.raw), args.seconds),
        "sign_plus_verify_chunk_per_s": rate(
            lambda: decode(sign(chunk.msg, provider).raw), args.seconds
        ),
        "raw_ed25519_sign_per_s": rate(lambda: consumer.sign(signed_request.raw), args.seconds),
        "frames_decoded_per_s": 1000 * rate(lambda: FrameDecoder().feed(stream), args.seconds / 2),
    }
    report = {
        "date": utc_now(),
        "machine": machine(),
        "pinned_to_one_core": hasattr(os, "sched_setaffinity"),
        "encoded_bytes": sizes,
        "job_request_budget_bytes": REQUEST_BUDGET_BYTES,
        "job_request_within_budget": sizes["job_request_200_words"] < REQUEST_BUDGET_BYTES,
        "rates": {k: round(v, 1) for k, v in rates.items()},
        "notes": "verify = decode: msgpack parse, field checks, canonical re-encode, Ed25519 "
        "verify. The machine may be shared with other work; rates are a lower bound.",
    }
    write_result(args.out, report)

    print(f"machine: {report['machine']['cpu']} ({report['machine']['python']})")
    print("encoded sizes (bytes):")
    for name, size in sizes.items():
        print(f"  {name:<24} {size:>6}")
    verdict = "OK" if report["job_request_within_budget"] else "OVER BUDGET"
    print(f"  job request budget {REQUEST_BUDGET_BYTES} B: {verdict}")
    print("rates (one core):")
    for name, value in rates.items():
        print(f"  {name:<36} {value:>12,.0f}")
    print(f"wrote {args.out}")
    return 0 if report["job_request_within_budget"] else 1


if __name__ == "__main__":
    sys.exit(main())
