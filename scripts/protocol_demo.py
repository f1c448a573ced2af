"""Protocol demo: one job through the p2pinfer wire protocol, in memory.

Two identities (key files in a temp dir), a signed JobRequest, the provider's
checks, both job state machines through accept, streamed chunks, the signed
result and the consumer's receipt, plus a tampered and a replayed request
being refused. No network is used (`scripts/demo` runs the real one): the bytes
go from one state machine to the other in this process, and the answer text is
canned (no model runs here). Exit status 0 means every check held.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from p2pinfer import identity
from p2pinfer.errors import ProtocolError
from p2pinfer.protocol import (
    Accepted,
    ChatTurn,
    ChunkReceived,
    ConsumerJob,
    FrameDecoder,
    JobParams,
    JobRequest,
    ProviderJob,
    ReceiptReceived,
    ReplayWindow,
    RequestReceived,
    ResultReceived,
    decode_as,
    output_hash,
)

CANNED_ANSWER = ["The capital", " of France", " is Paris", "."]
PRICE_PER_1K = 200  # micro-credits


def say(text: str = "") -> None:
    print(text, flush=True)


def require(condition: bool, what: str) -> None:
    if not condition:
        say(f"FAILED: {what}")
        sys.exit(1)
    say(f"  ok  {what}")


# Over 60 lines by design: the demo's steps, printed in the order they happen.
def main() -> int:
    say("p2pinfer protocol demo: an IN-MEMORY round trip of one job.")
    say("No network here (scripts/demo runs one): no sockets, no peers, no model;")
    say("the two state machines below hand bytes to each other in this process.")
    say()
    now_ms = int(time.time() * 1000)
    with tempfile.TemporaryDirectory(prefix="p2pinfer-demo-") as tmp:
        consumer_home, provider_home = Path(tmp, "consumer"), Path(tmp, "provider")
        consumer = identity.create(consumer_home)
        provider = identity.create(provider_home)
        say("1. identities")
        for name, home, ident in (
            ("consumer", consumer_home, consumer),
            ("provider", provider_home, provider),
        ):
            mode = identity.key_path(home).stat().st_mode & 0o777
            say(f"  {name}: {ident.peer_id}  (key file mode {mode:04o})")
            require(mode == 0o600, f"{name} key file is private")

        say("2. the consumer signs a JobRequest bound to the provider")
        request = JobRequest(
            job_id=os.urandom(16),
            provider=provider.peer_id,
            model="smollm2:135m",
            kind="chat",
            messages=(ChatTurn("user", "What is the capital of France?"),),
            params=JobParams(max_tokens=16, temperature=0.0, seed=7),
            max_price_per_1k=250,
            issued_at=now_ms,
            expires_at=now_ms + 60_000,
        )
        job = ConsumerJob(consumer, request)
        request_frame = job.start()
        say(f"  job {request.job_id.hex()}: {len(job.request.raw)} bytes signed")

        say("3. the provider decodes and verifies it")
        [body] = FrameDecoder().feed(request_frame)
        verified = decode_as(body, JobRequest)
        require(verified.signer_peer_id == consumer.peer_id, "signature verifies as the consumer")
        # Same length, still well-formed msgpack: only the signature can tell.
        tampered = body.replace(b"France", b"Greece")
        try:
            decode_as(tampered, JobRequest)
            require(False, "a tampered copy is refused")
        except ProtocolError as exc:
            require(True, f"a tampered copy is refused ({type(exc).__name__}: {exc})")

        say("4. both state machines run the job")
        window = ReplayWindow()
        serving = ProviderJob(provider, window)
        [received] = serving.receive_data(request_frame, now_ms)
        require(isinstance(received, RequestReceived), "provider: request received and valid")
        serving.admit(now_ms)  # it would serve it: only now does the job id take replay room
        wire = serving.accept(PRICE_PER_1K)
        wire += b"".join(serving.chunk(piece) for piece in CANNED_ANSWER)
        wire += serving.finish(
            prompt_tokens=9,
            completion_tokens=len(CANNED_ANSWER),
            finish_reason="stop",
            now_ms=now_ms + 120,
            digest="canned-demo-output",
            total_ms=120,
        )
        say(f"  provider -> consumer: {len(wire)} bytes (accept, chunks, signed result)")
        events = job.receive_data(wire, now_ms + 120)
        require(isinstance(events[0], Accepted), f"consumer: accepted at {PRICE_PER_1K}/1k")
        text = "".join(e.text for e in events if isinstance(e, ChunkReceived))
        say(f"  streamed text (canned, no model runs in this demo): {text!r}")
        require(isinstance(events[-1], ResultReceived), "consumer: result hashes check out")
        assert job.result is not None
        require(job.result.msg.output_hash == output_hash(text), "output hash = sha256(text)")
        [paid] = serving.receive_data(job.receipt(), now_ms + 150)
        require(isinstance(paid, ReceiptReceived), "provider: consumer's receipt verifies")
        assert serving.receipt is not None
        say(
            f"  receipt: {serving.receipt.msg.amount} micro-credits for "
            f"{job.result.msg.prompt_tokens + job.result.msg.completion_tokens} tokens"
        )

        say("5. the same request sent again is refused")
        replayed = ProviderJob(provider, window)
        [again] = replayed.receive_data(request_frame, now_ms + 200)
        require(isinstance(again, RequestReceived), "provider: request valid, as before")
        try:  # the provider asks the replay window before it takes the job
            replayed.check_replay(now_ms + 200)
            require(False, "replayed job id rejected with code 'replayed'")
        except ProtocolError as exc:
            require(exc.reject_code == "replayed",
                    "replayed job id rejected with code 'replayed'")
    say()
    say("Done: an in-memory protocol round trip. Over the network (libp2p streams,")
    say("gossip adverts, DHT discovery, real engines) is the next step, not shown here.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
