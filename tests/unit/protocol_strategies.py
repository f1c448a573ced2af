"""Hypothesis strategies for valid protocol messages (shared by the protocol tests)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    REJECT_CODES,
    Advert,
    AdvertHardware,
    ChargeProof,
    ChatTurn,
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

# Fixed keys keep examples reproducible; signing is deterministic in Ed25519.
CONSUMER = NodeIdentity.from_seed(bytes(range(32)))
PROVIDER = NodeIdentity.from_seed(bytes(range(1, 33)))
NOW_MS = 1_750_000_000_000

U63 = 2**63 - 1
U32 = 2**32 - 1

millis = st.integers(0, U63)
credits = st.integers(0, U63)
counts = st.integers(0, U32)
job_ids = st.binary(min_size=16, max_size=16)
sha256s = st.binary(min_size=32, max_size=32)
peer_ids = st.sampled_from([CONSUMER.peer_id, PROVIDER.peer_id])


addresses = st.binary(min_size=20, max_size=20)


def text(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    return st.text(min_size=min_size, max_size=max_size)


#: What a `Printable` field may hold: no control (Cc) or format (Cf: the bidirectional
#: overrides schema.CONTROLS names are among them) character.
PRINTABLE = st.characters(exclude_categories=("Cc", "Cf", "Cs"))


def label(min_size: int = 0, max_size: int = 40) -> st.SearchStrategy[str]:
    """Text a `Printable` field takes (schema.CONTROLS finds nothing in it)."""
    return st.text(PRINTABLE, min_size=min_size, max_size=max_size)


model_offers = st.builds(
    ModelOffer,
    name=label(1),
    digest=label(0, 64),
    parameter_size=label(0, 8),
    quantization=label(0, 8),
    context_length=counts,
    prompt_tps_milli=counts,
    generation_tps_milli=counts,
    price_per_1k=credits,
    embedding_length=st.none() | st.integers(1, 16_384),
)

adverts = st.builds(
    Advert,
    models=st.lists(model_offers, max_size=4, unique_by=lambda m: m.name).map(tuple),
    hardware=st.builds(
        AdvertHardware,
        cpu=label(),
        cpu_cores=st.integers(0, 65_535),
        ram_mb=counts,
        gpus=st.lists(st.builds(Gpu, name=label(), vram_mb=counts), max_size=3).map(tuple),
    ),
    engine=label(),
    stake=credits,
    capacity=st.integers(0, 65_535),
    listen_addrs=st.lists(label(1, 60), max_size=3).map(tuple),
    seq=millis,
    issued_at=millis,
    ttl_ms=millis,
).flatmap(lambda ad: st.one_of(
    st.just(ad),
    st.builds(lambda payee, binding: replace(ad, payee=payee, payee_binding=binding),
              addresses, st.binary(min_size=65, max_size=65))))

job_params = st.builds(
    JobParams,
    max_tokens=st.integers(1, 1_000_000),
    temperature=st.floats(0.0, 10.0, allow_nan=False),
    top_p=st.floats(0.0, 1.0, allow_nan=False),
    top_k=st.integers(0, 1_000_000),
    seed=st.none() | st.integers(0, U32),
    stop=st.lists(text(1, 10), max_size=4).map(tuple),
    min_p=st.none() | st.floats(0.0, 1.0, allow_nan=False),
    repeat_penalty=st.none() | st.floats(0.0, 4.0, allow_nan=False),
    presence_penalty=st.none() | st.floats(-2.0, 2.0, allow_nan=False),
    frequency_penalty=st.none() | st.floats(-2.0, 2.0, allow_nan=False),
    output_format=st.none() | st.sampled_from(
        ["json", '{"type":"object","properties":{"a":{"type":"string","maxLength":9}}}']),
).flatmap(lambda params: st.one_of(st.just(params), st.builds(
    lambda choice: replace(params, tools=_TOOLS, tool_choice=choice),
    st.sampled_from([None, "none", "required", "function:f"]))))

_TOOLS = '[{"name":"f","parameters":{"type":"object"}},{"description":"d","name":"g.h"}]'
_CALLS = '[{"arguments":{"a":[1,"x"]},"name":"f"}]'

chat_turns = st.one_of(
    st.builds(ChatTurn, role=st.sampled_from(["system", "user", "assistant", "tool"]),
              content=text()),
    st.builds(ChatTurn, role=st.just("assistant"), content=text(), tool_calls=st.just(_CALLS)),
    st.builds(ChatTurn, role=st.just("tool"), content=text(),
              tool_name=st.sampled_from(["f", "g.h"])),
)


@st.composite
def job_requests(draw: st.DrawFn) -> JobRequest:
    issued_at = draw(st.integers(0, U63 - 1))
    kind = draw(st.sampled_from(["chat", "generate", "embed"]))
    chat, embed = kind == "chat", kind == "embed"
    max_price = draw(credits)
    return JobRequest(
        job_id=draw(job_ids),
        provider=draw(peer_ids),
        model=draw(label(1)),
        kind=kind,
        max_price_per_1k=max_price,
        issued_at=issued_at,
        expires_at=draw(st.integers(issued_at + 1, U63)),
        messages=tuple(draw(st.lists(chat_turns, min_size=1, max_size=4))) if chat else (),
        prompt=None if chat or embed else draw(text()),
        inputs=tuple(draw(st.lists(text(), min_size=1, max_size=3))) if embed else None,
        params=draw(job_params),
        digest=draw(st.none() | label(0, 64)),
        quoted_price_per_1k=draw(st.none() | st.integers(0, max_price)),
    )


job_accepts = st.builds(JobAccept, job_id=job_ids, price_per_1k=credits, request_hash=sha256s)


@st.composite
def job_rejects(draw: st.DrawFn) -> JobReject:
    code = draw(st.sampled_from(REJECT_CODES))
    retry = draw(st.none() | millis) if code == "busy" else None
    return JobReject(job_id=draw(job_ids), code=code, message=draw(label()),
                     retry_after_ms=retry)


chunks = st.builds(Chunk, job_id=job_ids, seq=counts, text=text())

job_results = st.builds(
    JobResult,
    job_id=job_ids,
    request_hash=sha256s,
    output_hash=sha256s,
    digest=label(0, 64),
    prompt_tokens=counts,
    completion_tokens=counts,
    prompt_ms=millis,
    generation_ms=millis,
    total_ms=millis,
    finish_reason=st.sampled_from(["stop", "length", "cancelled", "error"]),
    charged=credits,
    finished_at=millis,
)

receipts = st.builds(
    Receipt, job_id=job_ids, result_hash=sha256s, amount=credits, provider=peer_ids
)


@st.composite
def check_reports(draw: st.DrawFn) -> CheckReport:
    request = sign(draw(job_requests()), CONSUMER)
    output = draw(text())
    result = draw(job_results)
    return CheckReport(
        request=request.raw,
        result=sign(result, PROVIDER).raw,
        provider_output=output,
        reference_output_hash=output_hash(draw(text())),
        reference_digest=draw(label(0, 64)),
        metrics=tuple(
            draw(
                st.lists(
                    st.builds(Metric, name=text(1, 20), value=st.integers(-(2**63), U63)),
                    max_size=4,
                )
            )
        ),
        verdict=draw(st.sampled_from(["pass", "fail", "inconclusive"])),
        issued_at=draw(millis),
    )


@st.composite
def charge_proofs(draw: st.DrawFn) -> ChargeProof:
    accept = draw(st.none() | job_accepts.map(lambda a: sign(a, PROVIDER).raw))
    result = draw(st.none() | job_results.map(lambda r: sign(r, PROVIDER).raw)
                  if accept is not None else job_results.map(lambda r: sign(r, PROVIDER).raw))
    return ChargeProof(
        request=sign(draw(job_requests()), CONSUMER).raw,
        result=result,
        provider_output=draw(text()) if result is not None else "",
        issued_at=draw(millis),
        accept=accept,
    )


slash_votes = st.builds(
    SlashVote,
    provider=st.just(PROVIDER.peer_id),
    provider_payee=addresses,
    amount=credits,
    evidence=st.binary(min_size=32, max_size=32),
    validator=addresses,
    validator_binding=st.binary(min_size=65, max_size=65),
    signature=st.binary(min_size=65, max_size=65),
    issued_at=millis,
)


STRATEGIES: dict[str, st.SearchStrategy[WireMessage]] = {
    "advert": adverts,
    "job_request": job_requests(),
    "job_accept": job_accepts,
    "job_cancel": st.builds(JobCancel, job_id=job_ids),
    "job_reject": job_rejects(),
    "chunk": chunks,
    "job_result": job_results,
    "receipt": receipts,
    "check_report": check_reports(),
    "charge_proof": charge_proofs(),
    "slash_vote": slash_votes,
}

any_message: st.SearchStrategy[WireMessage] = st.one_of(*STRATEGIES.values())
