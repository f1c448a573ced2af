"""The job move request and answer (jobs/job_move.py): what a peer may send, exactly."""

from __future__ import annotations

import pytest

from p2pinfer.errors import ProtocolError
from p2pinfer.jobs.job_move import (
    REFUSALS,
    move_answer,
    move_request,
    parse_answer,
    parse_request,
)
from p2pinfer.protocol import canonical
from p2pinfer.protocol.framing import FrameDecoder

JOB_ID = bytes(range(16))


def body(frame: bytes) -> bytes:
    (out,) = FrameDecoder().feed(frame)
    return out


def test_a_request_and_its_answers_round_trip() -> None:
    assert parse_request(body(move_request(JOB_ID))) == JOB_ID
    assert parse_answer(body(move_answer(None))) is None
    for code in REFUSALS:
        assert parse_answer(body(move_answer(code))) == code


@pytest.mark.parametrize("value", [
    {"t": "job_move", "v": 1, "job_id": JOB_ID[:15]},  # not a job id
    {"t": "job_move", "v": 1, "job_id": JOB_ID.hex()},
    {"t": "job_move", "v": 2, "job_id": JOB_ID},  # unknown version
    {"t": "job_move", "v": True, "job_id": JOB_ID},
    {"t": "job_move", "v": 1, "job_id": JOB_ID, "peer": "someone else"},  # extra field
    {"t": "job_move_ok"},
    [1, 2, 3],
    "job_move",
])
def test_anything_but_a_move_request_is_refused(value: object) -> None:
    with pytest.raises(ProtocolError):
        parse_request(canonical.encode(value))


@pytest.mark.parametrize("raw", [b"", b"\xc1", b"\x81\xa1t\xa8job_move\x00"])
def test_bytes_that_are_no_msgpack_value_are_refused(raw: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_request(raw)
    with pytest.raises(ProtocolError):
        parse_answer(raw)


@pytest.mark.parametrize("value", [
    {"t": "job_move_refused", "code": "because"},  # not a code we send
    {"t": "job_move_refused"},
    {"t": "job_move_ok", "extra": 1},
    {"t": "job_move", "v": 1, "job_id": JOB_ID},
])
def test_an_answer_must_be_accepted_or_a_known_refusal(value: object) -> None:
    with pytest.raises(ProtocolError):
        parse_answer(canonical.encode(value))
