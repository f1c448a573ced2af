"""Issue 17's sampling parameters (min_p, repeat/presence/frequency penalties) from the
gateway's request to the wire, the provider's engine call and the checker: neutral values
stay off the wire, the rest are bounded against hostile peers."""

from __future__ import annotations

import dataclasses
import math
import os

import msgpack
import pytest

from p2pinfer.api.ollama_wire import parse_chat
from p2pinfer.api.openai_wire import parse_chat_completion
from p2pinfer.backends.base import SamplingParams
from p2pinfer.backends.job_params import sampling_params
from p2pinfer.errors import BadRequestError, DecodeError, ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_attempt import with_seed
from p2pinfer.jobs.network_backend import job_params, wire_job
from p2pinfer.protocol import JobParams, JobRequest, decode, sign
from p2pinfer.protocol.codec import _signing_payload
from p2pinfer.protocol.schema import to_wire

CONSUMER, PROVIDER = NodeIdentity.generate(), NodeIdentity.generate()
NEW = {"min_p", "repeat_penalty", "presence_penalty", "frequency_penalty"}


def request(params: JobParams) -> JobRequest:
    return JobRequest(job_id=os.urandom(16), provider=PROVIDER.peer_id, model="m",
                      kind="generate", max_price_per_1k=10, issued_at=1, expires_at=2,
                      prompt="hi", params=params)


def test_default_parameters_encode_as_before() -> None:
    assert not NEW & to_wire(JobParams()).keys()
    assert not NEW & to_wire(job_params(SamplingParams())).keys()


def test_set_parameters_travel_signed_and_reach_the_engine() -> None:
    params = job_params(SamplingParams(min_p=0.1, repeat_penalty=1.3, presence_penalty=-0.5,
                                       frequency_penalty=2))
    signed = sign(request(params), CONSUMER)
    received = decode(signed.raw).msg
    assert isinstance(received, JobRequest)
    engine = sampling_params(received)
    assert (engine.min_p, engine.repeat_penalty, engine.presence_penalty,
            engine.frequency_penalty) == (0.1, 1.3, -0.5, 2.0)
    neutral = sampling_params(request(JobParams()))
    assert (neutral.min_p, neutral.repeat_penalty, neutral.presence_penalty,
            neutral.frequency_penalty) == (0.0, 1.0, 0.0, 0.0)


def signed_with(field: str, value: object) -> bytes:
    """A request whose params map holds `field: value`, validly signed by hand."""
    body = to_wire(request(JobParams()))
    body["params"] = dict(sorted({**body["params"], field: value}.items()))
    sig = CONSUMER.sign(_signing_payload(JobRequest.TYPE, body, CONSUMER.public_key))
    return msgpack.packb({"body": body, "from": CONSUMER.public_key, "sig": sig,  # type: ignore[no-any-return]
                          "t": JobRequest.TYPE, "v": 1}, use_bin_type=True)


@pytest.mark.parametrize("field, value", [
    ("frequency_penalty", 2.5), ("presence_penalty", -3.0), ("repeat_penalty", 100.0),
    ("repeat_penalty", -1.0), ("min_p", 1.5), ("min_p", math.nan), ("min_p", math.inf),
    ("repeat_penalty", 1), ("min_p", "0.1"), ("frequency_penalty", True)])
def test_a_hostile_value_is_refused_on_decode(field: str, value: object) -> None:
    # A peer signs whatever it likes: the receiver's decoder is the defence.
    with pytest.raises(ValidationError):
        decode(signed_with(field, value))


def test_a_set_value_signed_by_hand_decodes() -> None:
    received = decode(signed_with("min_p", 0.25)).msg
    assert isinstance(received, JobRequest) and received.params.min_p == 0.25


def test_an_explicit_nil_is_not_a_second_encoding() -> None:
    with pytest.raises(DecodeError, match="non-canonical"):
        decode(signed_with("min_p", None))


def test_the_gateway_refuses_what_the_wire_cannot_carry() -> None:
    with pytest.raises(BadRequestError, match="frequency_penalty"):
        wire_job("hi", SamplingParams(frequency_penalty=2.5), 64)
    _, params = wire_job("hi", SamplingParams(repeat_penalty=1.2), 64)
    assert params.repeat_penalty == 1.2


def test_integers_from_a_caller_become_wire_floats() -> None:
    params = with_seed(JobParams(repeat_penalty=2, min_p=0), 7)  # type: ignore[arg-type]
    assert (type(params.repeat_penalty), type(params.min_p)) == (float, float)
    to_wire(params)


def test_clients_names_for_the_parameters() -> None:
    messages = [{"role": "user", "content": "hi"}]
    openai = parse_chat_completion({"model": "m", "messages": messages, "min_p": 0.2,
                                    "repeat_penalty": 1.1, "presence_penalty": 0.5,
                                    "frequency_penalty": 0.25}).params
    ollama = parse_chat({"model": "m", "messages": messages, "options": {
        "min_p": 0.2, "repeat_penalty": 1.1, "presence_penalty": 0.5,
        "frequency_penalty": 0.25}}).params
    for parsed in (openai, ollama):
        assert (parsed.min_p, parsed.repeat_penalty, parsed.presence_penalty,
                parsed.frequency_penalty) == (0.2, 1.1, 0.5, 0.25)


def test_penalised_requests_say_so() -> None:
    assert not JobParams().reshaped
    assert not JobParams(min_p=0.3, repeat_penalty=1.0).reshaped  # min_p keeps the top token
    assert JobParams(repeat_penalty=1.1).reshaped
    assert dataclasses.replace(JobParams(), frequency_penalty=-0.1).reshaped
