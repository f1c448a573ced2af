"""Token log probabilities (issue 17): asked in each API's words, carried in Chunks as
integers, bounded against a hostile provider, and shaped back for each client."""

from __future__ import annotations

import json

import pytest

from p2pinfer.api.ollama_replies import ChatEncoder
from p2pinfer.api.ollama_wire import parse_chat, parse_generate
from p2pinfer.api.openai_replies import ChatCompletionEncoder, TextCompletionEncoder
from p2pinfer.api.openai_wire import parse_chat_completion, parse_completion
from p2pinfer.backends.base import Completion, TokenDelta, TokenLogprob, Usage
from p2pinfer.backends.logprob_wire import legacy, parse_entries, parse_legacy, token_entries
from p2pinfer.backends.wire import ApiError
from p2pinfer.errors import ValidationError
from p2pinfer.jobs.logprobs import batches, from_wire, to_wire
from p2pinfer.protocol import Chunk, ChunkReceived, Failure, JobParams
from p2pinfer.protocol.messages import LogprobRival, TokenLogprobs
from p2pinfer.protocol.schema import from_wire as decode_fields
from p2pinfer.protocol.schema import to_wire as encode_fields
from tests.unit.protocol_job_helpers import frame, started
from tests.unit.protocol_strategies import NOW_MS

ITEM = TokenLogprob(" Paris", -0.25, ((" Paris", -0.25), (" the", -2.5)))
MESSAGES = [{"role": "user", "content": "hi"}]


def test_the_wire_carries_millionths_of_a_nat() -> None:
    wire = to_wire(ITEM, top=1)
    assert wire == TokenLogprobs(" Paris", -250_000, (LogprobRival(" Paris", -250_000),))
    assert from_wire([wire]) == (TokenLogprob(" Paris", -0.25, ((" Paris", -0.25),)),)
    odd = to_wire(TokenLogprob("x" * 100, -1e300, ()), top=5)
    assert (len(odd.token), odd.logprob_micro) == (64, -(10**12))
    assert [len(b) for b in batches([wire] * 130)] == [64, 64, 2]


@pytest.mark.parametrize("bad", [
    {"logprobs": [encode_fields(to_wire(ITEM, 1))] * 65},  # over one chunk's 64
    {"logprobs": [{"token": "a", "logprob_micro": 5, "top": []}]},  # a probability over 1
    {"logprobs": [{"token": "a" * 65, "logprob_micro": -1, "top": []}]},
    {"logprobs": [{"token": "a", "logprob_micro": -1, "top": [
        {"token": "b", "logprob_micro": -1}] * 21}]},
    {"logprobs": []},  # an explicit empty list is not canonical: absent instead
])
def test_a_hostile_chunk_is_refused_on_decode(bad: dict[str, object]) -> None:
    body = {**encode_fields(Chunk(bytes(16), 0, "x")), **bad}
    with pytest.raises(ValidationError):
        decode_fields(Chunk, body)


def test_a_consumer_refuses_log_probabilities_beyond_what_it_asked() -> None:
    entry = to_wire(ITEM, top=2)
    # Not asked for at all.
    consumer, _ = started()
    [event] = consumer.receive_data(frame(Chunk(consumer.job_id, 0, "a", (entry,))), NOW_MS)
    assert isinstance(event, Failure) and "not asked" in str(event.error)
    # More rivals than asked.
    consumer, _ = started(params=JobParams(max_tokens=32, top_logprobs=1))
    [event] = consumer.receive_data(frame(Chunk(consumer.job_id, 0, "a", (entry,))), NOW_MS)
    assert isinstance(event, Failure) and "rivals" in str(event.error)
    # Empty-text chunks flooding entries: at most max_tokens + the allowance.
    consumer, _ = started(params=JobParams(max_tokens=100, top_logprobs=2))
    flood = b"".join(frame(Chunk(consumer.job_id, seq, "", (entry,) * 64)) for seq in range(3))
    events = consumer.receive_data(flood, NOW_MS)
    assert isinstance(events[0], ChunkReceived) and len(events[0].logprobs) == 64
    assert isinstance(events[1], Failure) and "more token log probabilities" in str(
        events[1].error)  # 128 > 100 + 16


def test_clients_ask_in_their_own_words() -> None:
    assert parse_chat_completion({"model": "m", "messages": MESSAGES}).params.top_logprobs is None
    on = parse_chat_completion({"model": "m", "messages": MESSAGES, "logprobs": True,
                                "top_logprobs": 3})
    assert on.params.top_logprobs == 3
    assert parse_completion({"model": "m", "prompt": "p", "logprobs": 2}).params.top_logprobs == 2
    assert parse_chat({"model": "m", "messages": MESSAGES, "logprobs": True}
                      ).params.top_logprobs == 0
    assert parse_generate({"model": "m", "prompt": "p", "logprobs": True, "top_logprobs": 4}
                          ).params.top_logprobs == 4
    for bad in ({"top_logprobs": 2}, {"logprobs": True, "top_logprobs": 21},
                {"logprobs": "yes"}):
        with pytest.raises(ApiError):
            parse_chat_completion({"model": "m", "messages": MESSAGES, **bad})
    with pytest.raises(ApiError):
        parse_completion({"model": "m", "prompt": "p", "logprobs": 6})
    with pytest.raises(ApiError):
        parse_chat({"model": "m", "messages": MESSAGES, "logprobs": True, "top_logprobs": 30})


def test_replies_in_each_shape() -> None:
    delta = TokenDelta(" Paris", (ITEM,))
    done = Completion("stop", Usage(1, 1))
    chunk = json.loads(ChatCompletionEncoder("m").delta(delta)[6:])
    assert chunk["choices"][0]["logprobs"]["content"][0]["top_logprobs"][1] == {
        "token": " the", "logprob": -2.5, "bytes": list(b" the")}
    plain = json.loads(ChatCompletionEncoder("m").delta(TokenDelta("x"))[6:])
    assert "logprobs" not in plain["choices"][0]
    line = json.loads(ChatEncoder("m").delta(delta))
    assert line["logprobs"][0]["token"] == " Paris"
    assert "logprobs" not in json.loads(ChatEncoder("m").delta(TokenDelta("x")))
    whole = json.loads(TextCompletionEncoder("m").whole(" Paris.", done,
                                                        [ITEM, TokenLogprob(".", -0.5)]))
    assert whole["choices"][0]["logprobs"] == {
        "tokens": [" Paris", "."], "token_logprobs": [-0.25, -0.5],
        "top_logprobs": [{" Paris": -0.25, " the": -2.5}, {}], "text_offset": [0, 6]}


def test_an_engines_log_probabilities_are_read_leniently() -> None:
    assert parse_entries(token_entries([ITEM])) == (ITEM,)
    assert parse_legacy(legacy([ITEM], 0)) == (ITEM,)
    for junk in (None, "x", [{"token": 1}], [{"token": "a", "logprob": 3}], [[]]):
        assert parse_entries(junk) == ()
    assert parse_legacy({"tokens": ["a"], "token_logprobs": []}) == ()
