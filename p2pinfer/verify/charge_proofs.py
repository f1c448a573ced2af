"""Charge proofs: a consumer that refused an overcharge shows every node, and each node
convicts the provider on its own check, believing no one (attacks 47 and 64).

A provider's JobAccept and JobResult are signed and name the hash of the consumer's
signed request. From the request alone anyone can tell the price the provider may
accept at (its quote, within its maximum); with the accept, the price it did accept
at; with the result and the output the provider streamed (it must hash to the
result's `output_hash`), the token bounds of protocol/charges.py and the charge at the
accepted price (the agreed one when the proof holds no accept). An honest provider
accepts at most the agreed price and clamps its claims to those bounds at the price it
accepted (`ProviderJob.finish`), so no proof can be made against it; an accept over the
agreed price, or a result over the bounds, is the provider's own signed lie. A proof
therefore needs no reporter weight and no re-run: a receiver that checks it convicts
the provider (score 0, breaker open), whoever sent it, once per job, and slashes it
(`ReportReceiver`). But anyone can make a valid proof offline about a key of its own,
so only providers in the receiver's catalog are convicted, each at most once an hour,
and without a chain only the stake the receiver's ledger credits is slashed: a flood
of such proofs grows no table (`ProofJudge`).

Who sends them: a validator's check jobs always (the network's own prompts); a
consumer's own jobs only with `ClientConfig.gossip_charge_proofs`, since the proof shows
the job's request and answer to every node.

Not provable, so never sent (the consumer still refuses them and keeps the evidence):
an output over one message's `LongText`, and a request too large to fit a proof.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from p2pinfer.bounded import keep_latest
from p2pinfer.errors import ProtocolError, ValidationError
from p2pinfer.protocol import MAX_REPORT_AGE_MS, ChargeProof, JobAccept, JobRequest, JobResult
from p2pinfer.protocol.charges import accept_problem, agreed_price, charge_problem, utf8_len
from p2pinfer.protocol.codec import (
    Signed,
    Signer,
    decode_as,
    open_accept,
    open_result,
    sign,
)
from p2pinfer.protocol.validation import CLOCK_SKEW_MS, check_window
from p2pinfer.verify.reports import ReporterRate

#: Jobs proven (their requests' hashes), remembered so that one job convicts (and
#: slashes) once, whichever of its accept and result the proofs hold.
PROVEN_JOBS = 10_000
#: A provider convicted by a proof is not convicted again by the next within this long:
#: proofs cost nothing to make about one's own provider key, and each conviction is a
#: write to the reputation table.
RECONVICT_AFTER_MS = 3_600_000
#: Proofs opened per reporter per minute: an honest consumer meets an overcharge now
#: and then; a flood from one key stops here (fresh keys are bounded by gossip's rate).
PROOFS_PER_REPORTER = 6
MAX_PROOF_OUTPUT_CHARS = 262_144  # ChargeProof.provider_output's bound


def overcharge_in(request: JobRequest, result: JobResult, output: str,
                  accept: JobAccept | None = None) -> str | None:
    """What `accept` and `result` claim beyond what `request` and the `output` streamed
    allow, at the accepted price (the agreed one with no accept); None when nothing
    (every honest accept and result)."""
    price = accept.price_per_1k if accept is not None else agreed_price(request)
    problem = accept_problem(request, price) if accept is not None else None
    return problem or charge_problem(request, result, price, utf8_len(output))


def build_charge_proof(
    signer: Signer, request: Signed[JobRequest], now_ms: int, *,
    accept: Signed[JobAccept] | None = None, result: Signed[JobResult] | None = None,
    output: str = "",
) -> Signed[ChargeProof] | None:
    """The proof to gossip of an accept or a result the consumer refused, or None where
    others could not check it (nothing over the bounds; an output too long for a
    proof). `output` is what the provider streamed before its `result`."""
    if result is None:
        if accept is None or accept_problem(request.msg, accept.msg.price_per_1k) is None:
            return None
    elif overcharge_in(request.msg, result.msg, output,
                       accept.msg if accept is not None else None) is None:
        return None
    if len(output) > MAX_PROOF_OUTPUT_CHARS:
        return None
    try:
        return sign(ChargeProof(request.raw, output if result is not None else "", now_ms,
                                result=result.raw if result is not None else None,
                                accept=accept.raw if accept is not None else None), signer)
    except ValidationError:  # over a message's size with its request
        return None


@dataclass(frozen=True)
class OpenedProof:
    """A charge proof whose signatures and evidence check out."""

    proof: Signed[ChargeProof]
    request: Signed[JobRequest]
    accept: Signed[JobAccept] | None
    result: Signed[JobResult] | None
    problem: str | None  # what the provider overclaims; None: nothing (a false proof)

    @property
    def reporter(self) -> str:
        return self.proof.signer_peer_id

    @property
    def provider(self) -> str:
        """The provider the request named, which signed the accept and the result."""
        return self.request.msg.provider

    @property
    def job(self) -> bytes:
        """The job the proof is about (the request's hash): one conviction, one slash."""
        return self.request.hash


def open_charge_proof(proof: Signed[ChargeProof], now_ms: int) -> OpenedProof:
    """Check a decoded proof's age (24 h, as reports) and evidence, and what it proves;
    ProtocolError if anything is forged or stale."""
    check_window("the charge proof", proof.msg.issued_at, proof.msg.issued_at + MAX_REPORT_AGE_MS,
                 now_ms, max_lifetime_ms=MAX_REPORT_AGE_MS, skew_ms=CLOCK_SKEW_MS)
    msg = proof.msg
    request = decode_as(msg.request, JobRequest)
    accept = open_accept(request, msg.accept) if msg.accept is not None else None
    result = open_result(request, msg.result, msg.provider_output).result if (
        msg.result is not None) else None
    if result is not None:
        problem = overcharge_in(request.msg, result.msg, msg.provider_output,
                                accept.msg if accept is not None else None)
    else:
        assert accept is not None  # a ChargeProof holds one or both
        problem = accept_problem(request.msg, accept.msg.price_per_1k)
    return OpenedProof(proof, request, accept, result, problem)


class ProofJudge:
    """Which gossiped charge proofs convict: only providers this node knows (`known`: in
    its catalog; anyone can make a proof offline about a key of its own that no one will
    ever send a job), each reporter's rate, each result once, each provider once an hour."""

    def __init__(self, me: str, known: Callable[[str], bool]) -> None:
        self.me, self.known = me, known
        self.rate = ReporterRate(count=PROOFS_PER_REPORTER)
        self._proven: OrderedDict[bytes, None] = OrderedDict()
        self._convicted: OrderedDict[str, int] = OrderedDict()  # provider -> when

    def judge(self, proof: Signed[ChargeProof] | OpenedProof, now_ms: int
              ) -> tuple[str, OpenedProof | None]:
        """What to note of `proof` (opened already, or opened here), and the opened proof
        when its provider is convicted."""
        # Our own proofs too (a check job's, signed by its key or ours): gossip brings
        # them back, and a check client keeps no reputation of its own to convict in.
        if isinstance(proof, OpenedProof):
            opened = proof
        else:
            try:
                opened = open_charge_proof(proof, now_ms)
            except ProtocolError as exc:
                return f"ignored: forged or stale proof ({exc})", None
        reporter, provider = opened.reporter, opened.provider
        if provider in (self.me, reporter):
            return "ignored: a proof about this node or by the provider", None
        if opened.problem is None:
            return "ignored: proves no overcharge", None
        if not self.known(provider):
            return "ignored: a provider not in the catalog", None
        if not self.rate.admit(reporter, now_ms):
            return "ignored: reporter over its rate", None
        key = opened.job
        if key in self._proven:
            return "ignored: already proven", None
        keep_latest(self._proven, key, None, PROVEN_JOBS)
        last = self._convicted.get(provider)
        if last is not None and now_ms - last < RECONVICT_AFTER_MS:
            return "ignored: provider convicted within the hour", None
        keep_latest(self._convicted, provider, now_ms, PROVEN_JOBS)
        return f"proven overcharge: {opened.problem}", opened
