"""Charge proofs (attacks 47 and 64): an overcharge one consumer refused is proven to
every node, and no proof can be made against an honest provider.

The attack: a provider answers with a result that claims more than the request and
the output allow, or accepts the job over the price the request agreed, or charges
over the price it accepted at. Each consumer it tries refuses to pay and convicts it,
but only for itself: every other consumer still ranks it first by its price and spends
an attempt (and the job's time) on it. The defence: the refused accept or result, the
request and the output go out as a ChargeProof that any node checks on its own
(`open_charge_proof`); an accept names the request it takes (attack 64: before, it
named only the job id, so an accept over the quote or a charge over the accepted price
proved nothing to others). The defence's own attacks: framing an honest provider (a
re-signed request, a changed output, an accept or a result under another key or of
another request, an honest one passed off), replaying a proof, and a flood from one key.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2pinfer.errors import OverchargeError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import (
    MAX_REPORT_AGE_MS,
    ChargeProof,
    ConsumerJob,
    Failure,
    JobAccept,
    JobRequest,
    JobResult,
    Signed,
    decode_as,
    sign,
)
from p2pinfer.protocol.charges import COMPLETION_ALLOWANCE
from p2pinfer.verify.charge_proofs import (
    PROOFS_PER_REPORTER,
    ProofJudge,
    build_charge_proof,
    open_charge_proof,
    overcharge_in,
)
from tests.unit.protocol_job_helpers import run_honestly
from tests.unit.protocol_strategies import CONSUMER, NOW_MS, PROVIDER
from tests.unit.test_overcharge import (
    PROMPT_BOUND,
    accepted,
    deliver,
    frame,
    lying_result,
    request,
)

THIRD = NodeIdentity.generate()  # a node that heard the proof


def known(peer: str) -> bool:
    """The provider is in the judging node's catalog."""
    return peer == PROVIDER.peer_id
LIES = [
    ("Blue", {"prompt_tokens": PROMPT_BOUND + 1}, "prompt tokens"),
    ("Blue", {"prompt_tokens": 2**32 - 1}, "prompt tokens"),
    ("Blue", {"completion_tokens": 4 + COMPLETION_ALLOWANCE + 1}, "completion tokens"),
    ("Blue", {"completion_tokens": 65}, "max_tokens"),
    ("Blue", {"finish_reason": "error"}, "'error'"),
    ("Blue", {"charged": 10**12}, "charged"),
]


def refused(text: str, **changes: object) -> tuple[ConsumerJob, Signed[JobResult]]:
    """A consumer that refused the provider's lying result (accepted at price 1)."""
    consumer = accepted()
    events = deliver(consumer, text, lying_result(consumer, text, **changes))
    assert isinstance(events[-1], Failure) and isinstance(events[-1].error, OverchargeError)
    assert consumer.refused_result is not None
    return consumer, consumer.refused_result


def proof_of(text: str, **changes: object) -> Signed[ChargeProof]:
    consumer, result = refused(text, **changes)
    proof = build_charge_proof(CONSUMER, consumer.request, NOW_MS, accept=consumer.accept,
                               result=result, output=text)
    assert proof is not None
    return proof


@pytest.mark.parametrize(("text", "changes", "message"), LIES)
def test_every_node_can_check_a_refused_overcharge(
    text: str, changes: dict[str, object], message: str
) -> None:
    proof = proof_of(text, **changes)
    # On the wire and back, as gossip carries it; checked by a node that saw nothing.
    opened = open_charge_proof(decode_as(proof.raw, ChargeProof), NOW_MS + 1_000)
    assert opened.problem is not None and message in opened.problem
    assert opened.provider == PROVIDER.peer_id and opened.reporter == CONSUMER.peer_id
    what, convicted = ProofJudge(THIRD.peer_id, known).judge(proof, NOW_MS + 1_000)
    assert convicted is not None and what.startswith("proven overcharge")


def test_an_accept_over_the_quote_is_proven_to_every_node() -> None:
    # The lie as found: price 1 advertised and quoted, accepted at the max 10,000. The
    # consumer refuses before anything streams; the accept names the request it takes.
    consumer = ConsumerJob(CONSUMER, request())
    consumer.start()
    [event] = consumer.receive_data(frame(JobAccept(consumer.job_id, 10_000,
                                                    consumer.request.hash)), NOW_MS)
    assert isinstance(event, Failure) and isinstance(event.error, OverchargeError)
    assert consumer.refused_accept is not None
    proof = build_charge_proof(CONSUMER, consumer.request, NOW_MS,
                               accept=consumer.refused_accept)
    assert proof is not None and proof.msg.result is None
    opened = open_charge_proof(decode_as(proof.raw, ChargeProof), NOW_MS + 1_000)
    assert opened.problem == ("accepted at 10000 per 1k, over the max 1 the request allows "
                              "(its quote, within max_price_per_1k)")
    what, convicted = ProofJudge(THIRD.peer_id, known).judge(proof, NOW_MS + 1_000)
    assert convicted is not None and what.startswith("proven overcharge: accepted at 10000")


def test_a_charge_over_the_accepted_price_within_the_quote_is_proven_with_the_accept() -> None:
    # Accepted at 1 against a quote of 300, charged at 300: within what the request
    # alone allows, so only the accept (its price, naming this request) proves it.
    consumer = accepted(price=1, quoted_price_per_1k=300)
    text = "Blue"
    result = lying_result(consumer, text, charged=300 * 22 // 1000 + 1)
    events = deliver(consumer, text, result)
    assert isinstance(events[-1], Failure) and isinstance(events[-1].error, OverchargeError)
    assert consumer.refused_result is not None and consumer.accept is not None
    refused = consumer.refused_result
    assert build_charge_proof(CONSUMER, consumer.request, NOW_MS, result=refused,
                              output=text) is None  # the request alone: nothing to see
    proof = build_charge_proof(CONSUMER, consumer.request, NOW_MS, accept=consumer.accept,
                               result=refused, output=text)
    assert proof is not None
    opened = open_charge_proof(decode_as(proof.raw, ChargeProof), NOW_MS)
    assert opened.problem is not None and "charged 7" in opened.problem
    assert ProofJudge(THIRD.peer_id, known).judge(proof, NOW_MS)[1] is not None


def test_an_accept_of_another_request_fails_the_job() -> None:
    # An accept must name the request it takes: the same job id with another hash is
    # a lie the consumer cannot use as evidence, so the job fails (and fails over).
    consumer = ConsumerJob(CONSUMER, request())
    consumer.start()
    [event] = consumer.receive_data(frame(JobAccept(consumer.job_id, 1, bytes(32))), NOW_MS)
    assert isinstance(event, Failure) and "another request" in str(event.error)
    assert consumer.accept is None and consumer.refused_accept is None


@given(
    quote=st.integers(1, 10_000), price_cut=st.integers(0, 10_000),
    prompt=st.integers(0, 10**7), completion=st.integers(0, 64),  # max_tokens 64
    text=st.text(max_size=40), reason=st.sampled_from(["stop", "length", "error", "cancelled"]),
)
def test_no_proof_can_be_made_against_an_honest_provider(
    quote: int, price_cut: int, prompt: int, completion: int, text: str, reason: str
) -> None:
    """Whatever its engine counted and whatever price it accepted at (within the quote),
    an honest provider's result proves nothing, with the output it streamed."""
    req = request(quoted_price_per_1k=quote)
    consumer, result = run_honestly(req, max(0, quote - price_cut), text, prompt_tokens=prompt,
                                    completion_tokens=completion,
                                    finish_reason=reason)  # type: ignore[arg-type]
    assert consumer.accept is not None
    assert overcharge_in(req, result.msg, text, consumer.accept.msg) is None
    assert build_charge_proof(CONSUMER, consumer.request, NOW_MS, accept=consumer.accept,
                              result=result, output=text) is None
    assert build_charge_proof(CONSUMER, consumer.request, NOW_MS, accept=consumer.accept) is None


def _signed_proof(request_raw: bytes, result_raw: bytes | None, output: str,
                  by: NodeIdentity = CONSUMER, at: int = NOW_MS, accept: bytes | None = None
                  ) -> Signed[ChargeProof]:
    return sign(ChargeProof(request_raw, output, at, result=result_raw, accept=accept), by)


def test_framing_an_honest_provider_fails() -> None:
    judge = ProofJudge(THIRD.peer_id, known)
    # An honest result (charged at the quote 300) ...
    consumer, honest = run_honestly(request(quoted_price_per_1k=300), 300, "Blue, I think.",
                                    prompt_tokens=30, completion_tokens=5)
    # ... passed off as an overcharge proves nothing and convicts no one.
    what, convicted = judge.judge(_signed_proof(consumer.request.raw, honest.raw,
                                                "Blue, I think."), NOW_MS)
    assert (what, convicted) == ("ignored: proves no overcharge", None)
    # A request re-signed with a quote of 1 (the result's charge would then be over it).
    cheaper: JobRequest = dataclasses.replace(consumer.request.msg, quoted_price_per_1k=1)
    what, convicted = judge.judge(_signed_proof(sign(cheaper, CONSUMER).raw, honest.raw,
                                                "Blue, I think."), NOW_MS)
    assert convicted is None and "does not answer this request" in what
    # A shorter output (fewer completion tokens allowed): the result's hash names the real one.
    what, convicted = judge.judge(_signed_proof(consumer.request.raw, honest.raw, "B"), NOW_MS)
    assert convicted is None and "output does not match" in what
    # A lying result signed by another key, in the provider's name.
    forged = sign(dataclasses.replace(honest.msg, prompt_tokens=2**32 - 1),
                  NodeIdentity.generate())
    what, convicted = judge.judge(_signed_proof(consumer.request.raw, forged.raw,
                                                "Blue, I think."), NOW_MS)
    assert convicted is None and "not signed by the requested provider" in what
    # An honest accept (at the quote) with the honest result, or alone.
    assert consumer.accept is not None
    what, convicted = judge.judge(_signed_proof(consumer.request.raw, honest.raw,
                                                "Blue, I think.", accept=consumer.accept.raw),
                                  NOW_MS)
    assert (what, convicted) == ("ignored: proves no overcharge", None)
    what, convicted = judge.judge(_signed_proof(consumer.request.raw, None, "",
                                                accept=consumer.accept.raw), NOW_MS)
    assert (what, convicted) == ("ignored: proves no overcharge", None)
    # The honest accept paired with the re-signed cheaper request of the same job id
    # (the pairing an accept that named only the job id allowed): it takes another one.
    what, convicted = judge.judge(_signed_proof(sign(cheaper, CONSUMER).raw, None, "",
                                                accept=consumer.accept.raw), NOW_MS)
    assert convicted is None and "the accept does not take this request" in what
    # An accept over the quote signed by another key, in the provider's name.
    dear = sign(dataclasses.replace(consumer.accept.msg, price_per_1k=10_000),
                NodeIdentity.generate())
    what, convicted = judge.judge(_signed_proof(consumer.request.raw, None, "",
                                                accept=dear.raw), NOW_MS)
    assert convicted is None and "accept is not signed by the requested provider" in what


def test_a_proof_convicts_once_and_stale_or_future_ones_not_at_all() -> None:
    proof = proof_of("Blue", prompt_tokens=2**32 - 1)
    judge = ProofJudge(THIRD.peer_id, known)
    assert judge.judge(proof, NOW_MS)[1] is not None
    # The same proof again, or re-signed by another key: already proven.
    assert judge.judge(proof, NOW_MS)[0] == "ignored: already proven"
    again = _signed_proof(proof.msg.request, proof.msg.result, proof.msg.provider_output,
                          by=NodeIdentity.generate())
    assert judge.judge(again, NOW_MS)[0] == "ignored: already proven"
    # The same job's lie proven again without its accept: one job, one conviction.
    bare = _signed_proof(proof.msg.request, proof.msg.result, proof.msg.provider_output)
    assert judge.judge(bare, NOW_MS)[0] == "ignored: already proven"
    fresh = ProofJudge(THIRD.peer_id, known)
    assert "forged or stale" in fresh.judge(proof, NOW_MS + MAX_REPORT_AGE_MS + 60_000)[0]
    future = _signed_proof(proof.msg.request, proof.msg.result, proof.msg.provider_output,
                           at=NOW_MS + 3_600_000)
    assert "forged or stale" in fresh.judge(future, NOW_MS)[0]
    # Not about ourselves; our own proof back from gossip convicts here too.
    assert ProofJudge(PROVIDER.peer_id, known).judge(proof, NOW_MS)[1] is None
    assert ProofJudge(CONSUMER.peer_id, known).judge(proof, NOW_MS)[1] is not None


def test_one_key_flooding_proofs_is_held_to_its_rate() -> None:
    judge = ProofJudge(THIRD.peer_id, known)
    said = [judge.judge(proof_of("Blue", prompt_tokens=2**32 - i), NOW_MS)[0]
            for i in range(1, PROOFS_PER_REPORTER + 3)]
    # The first convicts; the next are new results of a provider convicted this hour.
    assert said[0].startswith("proven")
    assert said[1:PROOFS_PER_REPORTER] == [
        "ignored: provider convicted within the hour"] * (PROOFS_PER_REPORTER - 1)
    assert said[PROOFS_PER_REPORTER:] == ["ignored: reporter over its rate"] * 2
    # A minute on, it may send again; an hour on, the provider is convicted again.
    assert judge.judge(proof_of("Blue", prompt_tokens=PROMPT_BOUND + 5),
                       NOW_MS + 60_000)[0] == "ignored: provider convicted within the hour"
    assert judge.judge(proof_of("Blue", prompt_tokens=PROMPT_BOUND + 6),
                       NOW_MS + 3_600_000)[0].startswith("proven")


def test_a_proof_about_a_provider_not_in_the_catalog_convicts_no_one() -> None:
    """A proof costs nothing to make about a key of one's own that never advertised:
    such proofs must not fill the reputation table or the rate table."""
    judge = ProofJudge(THIRD.peer_id, lambda peer: False)
    for i in range(3 * PROOFS_PER_REPORTER):
        assert judge.judge(proof_of("Blue", prompt_tokens=2**32 - 1 - i), NOW_MS) == (
            "ignored: a provider not in the catalog", None)
    assert judge.rate.admit(CONSUMER.peer_id, NOW_MS)  # its rate was never spent


def test_an_output_too_long_for_a_proof_is_not_gossiped() -> None:
    consumer, result = refused("Blue", prompt_tokens=2**32 - 1)
    assert build_charge_proof(CONSUMER, consumer.request, NOW_MS, accept=consumer.accept,
                              result=result, output="x" * 262_145) is None
