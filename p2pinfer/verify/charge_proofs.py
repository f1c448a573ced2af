"""Charge proofs: a consumer that refused an overcharge shows every node, and each node
convicts the provider on its own check, believing no one (attack 47).

A provider's JobResult is signed and names the hash of the consumer's signed request.
With the output the provider streamed (it must hash to the result's `output_hash`),
anyone can recompute what the request allows: the token bounds of protocol/charges.py
and the charge at the request's own agreed price (its quote, within its maximum). An
honest provider clamps its claims to those bounds at a price no higher (`ProviderJob.
finish`), so no proof can be made against it; a result over them is the provider's own
signed lie. A proof therefore needs no reporter weight and no re-run: a receiver that
checks it convicts the provider (score 0, breaker open), whoever sent it, once per
result, and slashes it (`ReportReceiver`). But anyone can make a valid proof offline
about a key of its own, so only providers in the receiver's catalog are convicted, each
at most once an hour, and without a chain only the stake the receiver's ledger credits
is slashed: a flood of such proofs grows no table (`ProofJudge`).

Who sends them: a validator's check jobs always (the network's own prompts); a
consumer's own jobs only with `ClientConfig.gossip_charge_proofs`, since the proof shows
the job's request and answer to every node.

Not provable, so never sent (the consumer still refuses them and keeps the evidence):
an accept over the quote (a JobAccept does not name the request, so a consumer could
pair it with another request under the same job id), a charge over the accepted price
but within the request's agreed one, and an output over one message's `LongText`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from p2pinfer.bounded import keep_latest
from p2pinfer.errors import ProtocolError, ValidationError
from p2pinfer.protocol import MAX_REPORT_AGE_MS, ChargeProof, JobRequest, JobResult
from p2pinfer.protocol.charges import agreed_price, charge_problem, utf8_len
from p2pinfer.protocol.codec import Evidence, Signed, Signer, open_evidence, sign
from p2pinfer.protocol.validation import CLOCK_SKEW_MS, check_window
from p2pinfer.verify.reports import ReporterRate

#: Results proven, remembered so that one proof convicts (and slashes) once.
PROVEN_RESULTS = 10_000
#: A provider convicted by a proof is not convicted again by the next within this long:
#: proofs cost nothing to make about one's own provider key, and each conviction is a
#: write to the reputation table.
RECONVICT_AFTER_MS = 3_600_000
#: Proofs opened per reporter per minute: an honest consumer meets an overcharge now
#: and then; a flood from one key stops here (fresh keys are bounded by gossip's rate).
PROOFS_PER_REPORTER = 6
MAX_PROOF_OUTPUT_CHARS = 262_144  # ChargeProof.provider_output's bound


def overcharge_in(request: JobRequest, result: JobResult, output: str) -> str | None:
    """What `result` claims beyond what `request` and the `output` streamed allow at the
    request's agreed price; None when nothing (every honest result)."""
    return charge_problem(request, result, agreed_price(request), utf8_len(output))


def build_charge_proof(
    signer: Signer, request: Signed[JobRequest], result: Signed[JobResult], output: str,
    now_ms: int,
) -> Signed[ChargeProof] | None:
    """The proof to gossip of a result the consumer refused, or None where others could
    not check it (within the request's agreed price; an output too long for a proof)."""
    if overcharge_in(request.msg, result.msg, output) is None:
        return None
    if len(output) > MAX_PROOF_OUTPUT_CHARS:
        return None
    try:
        return sign(ChargeProof(request.raw, result.raw, output, now_ms), signer)
    except ValidationError:  # over a message's size with its request
        return None


@dataclass(frozen=True)
class OpenedProof:
    """A charge proof whose signatures and evidence check out."""

    proof: Signed[ChargeProof]
    evidence: Evidence
    problem: str | None  # what the result overclaims; None: nothing (a false proof)

    @property
    def reporter(self) -> str:
        return self.proof.signer_peer_id

    @property
    def provider(self) -> str:
        return self.evidence.provider


def open_charge_proof(proof: Signed[ChargeProof], now_ms: int) -> OpenedProof:
    """Check a decoded proof's age (24 h, as reports) and evidence, and what it proves;
    ProtocolError if anything is forged or stale."""
    check_window("the charge proof", proof.msg.issued_at, proof.msg.issued_at + MAX_REPORT_AGE_MS,
                 now_ms, max_lifetime_ms=MAX_REPORT_AGE_MS, skew_ms=CLOCK_SKEW_MS)
    evidence = open_evidence(proof.msg)
    problem = overcharge_in(evidence.request.msg, evidence.result.msg, proof.msg.provider_output)
    return OpenedProof(proof, evidence, problem)


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
        key = opened.evidence.result.hash
        if key in self._proven:
            return "ignored: already proven", None
        keep_latest(self._proven, key, None, PROVEN_RESULTS)
        last = self._convicted.get(provider)
        if last is not None and now_ms - last < RECONVICT_AFTER_MS:
            return "ignored: provider convicted within the hour", None
        keep_latest(self._convicted, provider, now_ms, PROVEN_RESULTS)
        return f"proven overcharge: {opened.problem}", opened
