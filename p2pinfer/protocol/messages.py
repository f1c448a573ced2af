"""The messages of wire protocol version 1, as frozen dataclasses.

Each field's annotation is its wire type and structural bounds (see schema.py);
those bounds are hard caps that protect memory. A provider's policy limits
(prompt length, max_tokens, ...) are tighter and live in validation.py.
Money is integer micro-credits, time integer milliseconds since the Unix epoch,
hashes raw 32-byte SHA-256 digests, peers libp2p PeerID strings (`12D3KooW...`).
Floats appear only in sampling parameters.

`__post_init__` checks the rules that tie fields together, so an inconsistent
message can neither be built locally nor decoded from the wire.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, ClassVar

from p2pinfer.errors import ValidationError
from p2pinfer.protocol.check_messages import ChargeProof, CheckReport, SlashVote
from p2pinfer.protocol.embedding import MAX_EMBED_INPUTS, MAX_EMBEDDING_LENGTH
from p2pinfer.protocol.output_format import MAX_FORMAT_CHARS, check_output_format
from p2pinfer.protocol.schema import OMIT_NONE, Printable, Range, Size
from p2pinfer.protocol.tools import (
    MAX_CALLS_CHARS,
    MAX_TOOLS_CHARS,
    check_tool_calls,
    check_tool_choice,
    check_tools,
)
from p2pinfer.protocol.wire_types import (
    U32,
    U63,
    ChainAddress,
    ChainSignature,
    Count,
    FinishReason,
    JobId,
    JobKind,
    Label,
    LongText,
    MicroCredits,
    Millis,
    ModelName,
    PeerIdText,
    RejectCode,
    Role,
    Sha256,
    WireMessage,
    check_peer_id,
)

# --- Advert ----------------------------------------------------------------


@dataclass(frozen=True)
class ModelOffer:
    """One model a provider serves, what it measured, and its price."""

    name: ModelName
    digest: Label  # the engine's digest of the model file, usually 64 lowercase hex
    parameter_size: Annotated[str, Size(0, 32), Printable()]  # e.g. "135M", "7.6B"
    quantization: Annotated[str, Size(0, 32), Printable()]  # e.g. "Q4_K_M"
    context_length: Count  # tokens
    prompt_tps_milli: Count  # measured prompt processing, tokens/s x 1000
    generation_tps_milli: Count  # measured generation, tokens/s x 1000
    price_per_1k: MicroCredits  # per 1000 tokens (prompt + completion)
    # Ollama's model metadata, for /api/tags and /api/show through the network. Omitted
    # when nil, so adverts of providers that do not send them still decode (as None).
    family: Annotated[Annotated[str, Size(1, 64), Printable()] | None, OMIT_NONE] = None
    size_bytes: Annotated[Annotated[int, Range(0, U63)] | None, OMIT_NONE] = None  # file
    modified_at: Annotated[Millis | None, OMIT_NONE] = None  # the model file's mtime
    # Set when the provider embeds text with this model (kind "embed" jobs): the vector's
    # length. Absent on the wire otherwise, so adverts without it read as before.
    embedding_length: Annotated[int | None, Range(1, MAX_EMBEDDING_LENGTH), OMIT_NONE] = None


@dataclass(frozen=True)
class Gpu:
    name: Label
    vram_mb: Count


@dataclass(frozen=True)
class AdvertHardware:
    cpu: Label
    cpu_cores: Annotated[int, Range(0, 65_535)]
    ram_mb: Count
    gpus: Annotated[tuple[Gpu, ...], Size(0, 16)]


@dataclass(frozen=True)
class Advert(WireMessage):
    """A provider's signed offer. A higher `seq` from the same signer replaces a lower one;
    it is void after `issued_at + ttl_ms`."""

    TYPE: ClassVar[str] = "advert"

    models: Annotated[tuple[ModelOffer, ...], Size(0, 64)]
    hardware: AdvertHardware
    engine: Label  # backend kind, e.g. "ollama", "llama.cpp"
    stake: MicroCredits
    capacity: Annotated[int, Range(0, 65_535)]  # concurrent jobs it takes
    listen_addrs: Annotated[tuple[Annotated[str, Size(1, 256), Printable()], ...], Size(0, 16)]
    seq: Millis
    issued_at: Millis
    ttl_ms: Millis
    # With settlement on: the chain account consumers pay and whose locked stake backs
    # `stake` (which is then only a claim), and its EIP-191 binding to the signer's peer
    # id (docs/settlement.md). Both or neither; absent on the wire when None.
    payee: Annotated[ChainAddress | None, OMIT_NONE] = None
    payee_binding: Annotated[ChainSignature | None, OMIT_NONE] = None

    def __post_init__(self) -> None:
        names = [m.name for m in self.models]
        if len(names) != len(set(names)):
            raise ValidationError("Advert.models: a model name appears twice")
        if (self.payee is None) != (self.payee_binding is None):
            raise ValidationError("Advert: payee and payee_binding go together")

    @property
    def expires_at(self) -> int:
        return self.issued_at + self.ttl_ms


# --- Job request -------------------------------------------------------------


@dataclass(frozen=True)
class ChatTurn:
    role: Role
    content: LongText
    # Tool calling (protocol/tools.py), omitted when nil: an assistant turn's calls as
    # JSON text, and a tool turn's function name.
    tool_calls: Annotated[str | None, Size(2, MAX_CALLS_CHARS), OMIT_NONE] = None
    tool_name: Annotated[str | None, Size(1, 64), OMIT_NONE] = None

    def __post_init__(self) -> None:
        if self.tool_calls is not None:
            if self.role != "assistant":
                raise ValidationError("ChatTurn: only an assistant turn carries tool_calls")
            check_tool_calls(self.tool_calls)


@dataclass(frozen=True)
class JobParams:
    """Sampling parameters. `seed` None lets the engine choose; `top_k` 0 disables it."""

    max_tokens: Annotated[int, Range(1, 1_000_000)] = 256
    temperature: Annotated[float, Range(0.0, 10.0)] = 0.8
    top_p: Annotated[float, Range(0.0, 1.0)] = 0.9
    top_k: Annotated[int, Range(0, 1_000_000)] = 40
    seed: Annotated[int, Range(0, U32)] | None = None
    stop: Annotated[tuple[Annotated[str, Size(1, 256)], ...], Size(0, 16)] = ()
    # Added for issue 17, each *omitted when nil* (nil: the engine's neutral value, so a
    # request without them encodes as before). An older provider refuses a request that
    # sets one (unknown field) rather than silently ignoring it.
    min_p: Annotated[float | None, Range(0.0, 1.0), OMIT_NONE] = None  # neutral 0
    repeat_penalty: Annotated[float | None, Range(0.0, 4.0), OMIT_NONE] = None  # neutral 1
    presence_penalty: Annotated[float | None, Range(-2.0, 2.0), OMIT_NONE] = None  # neutral 0
    frequency_penalty: Annotated[float | None, Range(-2.0, 2.0), OMIT_NONE] = None  # neutral 0
    # Structured output: "json" or a JSON schema's text (protocol/output_format.py).
    output_format: Annotated[str | None, Size(1, MAX_FORMAT_CHARS), OMIT_NONE] = None
    # Log probabilities asked for: each token's, with this many likeliest rivals (0..20).
    top_logprobs: Annotated[int | None, Range(0, 20), OMIT_NONE] = None
    # Tool calling (protocol/tools.py): the tools' JSON text, and the choice among them
    # ("auto" when nil; "none", "required" or "function:NAME").
    tools: Annotated[str | None, Size(2, MAX_TOOLS_CHARS), OMIT_NONE] = None
    tool_choice: Annotated[str | None, Size(1, 80), OMIT_NONE] = None

    def __post_init__(self) -> None:
        if self.output_format is not None:
            check_output_format(self.output_format)
        if self.tools is not None:
            tools = check_tools(self.tools)
            if self.tool_choice is not None:
                check_tool_choice(self.tool_choice, tools)
        elif self.tool_choice is not None:
            raise ValidationError("JobParams: tool_choice without tools")

    @property
    def reshaped(self) -> bool:
        """Whether a penalty, an output format or tools reshape what the sampler picks
        from (tools also the prompt), so the raw model's likelihood of an answer no
        longer says what it would pick."""
        return self.output_format is not None or self.tools is not None or any(
            v not in (None, neutral) for v, neutral in (
                (self.repeat_penalty, 1.0), (self.presence_penalty, 0.0),
                (self.frequency_penalty, 0.0)))


@dataclass(frozen=True)
class JobRequest(WireMessage):
    """A consumer's signed order for one completion by one provider.

    `kind` "chat" carries `messages` (prompt None); "generate" carries `prompt`
    (messages empty); "embed" carries `inputs`, the texts to embed (neither messages
    nor prompt; the answer is their vectors, protocol/embedding.py). The provider must
    not start the job after `expires_at`.
    """

    TYPE: ClassVar[str] = "job_request"

    job_id: JobId
    provider: PeerIdText
    model: ModelName
    kind: JobKind
    max_price_per_1k: MicroCredits
    issued_at: Millis
    expires_at: Millis
    messages: Annotated[tuple[ChatTurn, ...], Size(0, 1024)] = ()
    prompt: LongText | None = None
    params: JobParams = JobParams()
    digest: Label | None = None  # when set, only this exact model build will do
    # The price per 1k the consumer read in the provider's advert and chose it for; the
    # provider accepts at most this (None: no advert was read; max_price_per_1k bounds it).
    quoted_price_per_1k: MicroCredits | None = None
    # Settlement (docs/settlement.md): the consumer's chain account that pays through a
    # channel, and that account's binding signature over the signer's PeerID. Absent on
    # the wire when None (older peers, or no chain).
    payer: Annotated[ChainAddress | None, OMIT_NONE] = None
    payer_binding: Annotated[ChainSignature | None, OMIT_NONE] = None
    inputs: Annotated[tuple[LongText, ...] | None, Size(1, MAX_EMBED_INPUTS), OMIT_NONE] = None

    def __post_init__(self) -> None:
        check_peer_id("JobRequest.provider", self.provider)
        if (self.kind == "embed") != (self.inputs is not None):
            raise ValidationError("JobRequest: an embed job, and only one, has inputs")
        if self.kind == "embed" and (self.messages or self.prompt is not None):
            raise ValidationError("JobRequest: an embed job has no messages and no prompt")
        if (self.payer is None) != (self.payer_binding is None):
            raise ValidationError("JobRequest: payer and payer_binding go together")
        if self.quoted_price_per_1k is not None and (
                self.quoted_price_per_1k > self.max_price_per_1k):
            raise ValidationError("JobRequest: quoted_price_per_1k is over max_price_per_1k")
        if self.kind == "chat" and (not self.messages or self.prompt is not None):
            raise ValidationError("JobRequest: a chat job has messages and no prompt")
        if self.kind == "generate" and (self.messages or self.prompt is None):
            raise ValidationError("JobRequest: a generate job has a prompt and no messages")
        if self.expires_at <= self.issued_at:
            raise ValidationError("JobRequest: expires_at must be after issued_at")


# --- Provider's answers ------------------------------------------------------


@dataclass(frozen=True)
class JobAccept(WireMessage):
    """The provider takes the job at `price_per_1k` (at most the request's quote and max).
    `request_hash` names the signed request it takes (as a JobResult does), so an accept
    over the quote is the provider's own signed evidence against it (a ChargeProof)."""

    TYPE: ClassVar[str] = "job_accept"

    job_id: JobId
    price_per_1k: MicroCredits
    request_hash: Sha256  # sha256 of the signed request's encoding
    # Settlement: the provider's chain account the consumer's vouchers pay, and its
    # binding signature over the provider's PeerID (set when the request has a payer).
    payee: Annotated[ChainAddress | None, OMIT_NONE] = None
    payee_binding: Annotated[ChainSignature | None, OMIT_NONE] = None

    def __post_init__(self) -> None:
        if (self.payee is None) != (self.payee_binding is None):
            raise ValidationError("JobAccept: payee and payee_binding go together")


@dataclass(frozen=True)
class JobCancel(WireMessage):
    """The consumer asks the provider to stop the job it accepted (attack 66): the
    provider stops its engine and answers with the output so far and a `cancelled`
    JobResult, which charges for the tokens it sent and the prompt, and the consumer
    pays it as any result. A consumer that leaves an accepted job without one has left
    it unpaid (attacks 66, 67)."""

    TYPE: ClassVar[str] = "job_cancel"

    job_id: JobId


@dataclass(frozen=True)
class JobReject(WireMessage):
    """The provider refuses (or abandons) the job. `job_id` is all zeros when the
    request could not be read. `retry_after_ms` is set only with code "busy"."""

    TYPE: ClassVar[str] = "job_reject"

    job_id: JobId
    code: RejectCode
    message: Annotated[str, Size(0, 1024), Printable()]  # shown in logs and on stderr
    retry_after_ms: Millis | None = None

    def __post_init__(self) -> None:
        if self.retry_after_ms is not None and self.code != "busy":
            raise ValidationError("JobReject: retry_after_ms goes only with code 'busy'")


LogprobMicro = Annotated[int, Range(-(10**12), 0)]
"""A log probability in millionths of a nat (integers on the wire, not floats)."""
TokenText = Annotated[str, Size(0, 64)]


@dataclass(frozen=True)
class LogprobRival:
    token: TokenText
    logprob_micro: LogprobMicro


@dataclass(frozen=True)
class TokenLogprobs:
    """A generated token's log probability and its likeliest rivals, best first."""

    token: TokenText
    logprob_micro: LogprobMicro
    top: Annotated[tuple[LogprobRival, ...], Size(0, 20)] = ()


MAX_CHUNK_LOGPROBS = 64
MAX_CHUNK_CHARS = 65_536
"""A Chunk's text at most; a provider cuts longer text into chunks this long."""


@dataclass(frozen=True)
class Chunk(WireMessage):
    """A piece of the output; `seq` counts from 0 without gaps. With `top_logprobs`
    asked, `logprobs` are those of the tokens it holds (the provider's claim: no check
    covers them; a chunk may carry them with empty text)."""

    TYPE: ClassVar[str] = "chunk"

    job_id: JobId
    seq: Count
    text: Annotated[str, Size(0, MAX_CHUNK_CHARS)]
    logprobs: Annotated[tuple[TokenLogprobs, ...] | None, Size(1, MAX_CHUNK_LOGPROBS),
                        OMIT_NONE] = None


@dataclass(frozen=True)
class JobResult(WireMessage):
    """The provider's signed claim of what it computed. With the signed request it is
    transferable evidence. `charged` = ceil(price x (prompt + completion tokens) / 1000)."""

    TYPE: ClassVar[str] = "job_result"

    job_id: JobId
    request_hash: Sha256  # sha256 of the signed request's encoding
    output_hash: Sha256  # sha256 of the UTF-8 of all chunk texts, in order
    digest: Label  # the model build that ran
    prompt_tokens: Count
    completion_tokens: Count
    prompt_ms: Millis
    generation_ms: Millis
    total_ms: Millis
    finish_reason: FinishReason
    charged: MicroCredits
    finished_at: Millis


@dataclass(frozen=True)
class Receipt(WireMessage):
    """The consumer's countersignature of a result: it owes `amount` to `provider`.
    With settlement, also the consumer's voucher: `cumulative` is all it ever owed the
    provider's account on the channel contract, `voucher` its EIP-191 signature over
    the Channels voucher digest (docs/settlement.md)."""

    TYPE: ClassVar[str] = "receipt"

    job_id: JobId
    result_hash: Sha256  # sha256 of the signed result's encoding
    amount: MicroCredits
    provider: PeerIdText
    cumulative: Annotated[MicroCredits | None, OMIT_NONE] = None
    voucher: Annotated[ChainSignature | None, OMIT_NONE] = None

    def __post_init__(self) -> None:
        check_peer_id("Receipt.provider", self.provider)
        if (self.cumulative is None) != (self.voucher is None):
            raise ValidationError("Receipt: cumulative and voucher go together")
        if self.cumulative is not None and self.cumulative < self.amount:
            raise ValidationError("Receipt: cumulative is less than this job's amount")


MESSAGE_TYPES: dict[str, type[WireMessage]] = {
    cls.TYPE: cls
    for cls in (Advert, JobRequest, JobAccept, JobCancel, JobReject, Chunk, JobResult, Receipt,
                CheckReport, ChargeProof, SlashVote)
}

Message = (Advert | JobRequest | JobAccept | JobCancel | JobReject | Chunk | JobResult
           | Receipt | CheckReport | ChargeProof | SlashVote)
