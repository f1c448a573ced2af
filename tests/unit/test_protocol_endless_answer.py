"""Attack 33 (found 12-06), in memory: a provider keeps a job open without end.

An honest provider sends a Chunk only for tokens it generated (text, or the log
probabilities of tokens that left no text), so a chat or generate job has at most
max_tokens + COMPLETION_ALLOWANCE text chunks, and an embed job's text comes as one
piece cut into full MAX_CHUNK_CHARS chunks. Before this, the consumer took any number
of chunks: empty ones (a keep-alive that holds the job forever, 59 s apart) or a
million one-character ones for max_tokens=4 (each a signature to verify)."""

from __future__ import annotations

from p2pinfer.protocol import Chunk, ChunkReceived, ConsumerState, Failure
from p2pinfer.protocol.charges import COMPLETION_ALLOWANCE
from p2pinfer.protocol.messages import MAX_CHUNK_CHARS, JobParams, TokenLogprobs
from tests.unit.protocol_job_helpers import frame, started
from tests.unit.protocol_strategies import NOW_MS


def test_an_empty_chunk_fails_the_job() -> None:
    consumer, _ = started()
    events = consumer.receive_data(frame(Chunk(consumer.job_id, 0, "")), NOW_MS)
    [failure] = events
    assert isinstance(failure, Failure) and "empty chunk" in str(failure.error)
    assert consumer.state is ConsumerState.ERROR


def test_an_empty_chunk_with_log_probabilities_is_taken() -> None:
    consumer, _ = started(params=JobParams(max_tokens=4, top_logprobs=1))
    probs = (TokenLogprobs("", -500_000, ()),)
    [event] = consumer.receive_data(frame(Chunk(consumer.job_id, 0, "", probs)), NOW_MS)
    assert isinstance(event, ChunkReceived) and event.logprobs == probs


def test_more_text_chunks_than_the_job_has_tokens_fail_it() -> None:
    consumer, _ = started(params=JobParams(max_tokens=4))
    allowed = 4 + COMPLETION_ALLOWANCE
    data = b"".join(frame(Chunk(consumer.job_id, seq, "a")) for seq in range(allowed + 1))
    events = consumer.receive_data(data, NOW_MS)
    assert all(isinstance(e, ChunkReceived) for e in events[:allowed])
    assert isinstance(events[allowed], Failure)
    assert f"more than the {allowed} chunks" in str(events[allowed].error)


def test_an_embed_answer_in_short_pieces_fails_the_job() -> None:
    consumer, _ = started(kind="embed", messages=(), inputs=("a", "b"))
    full = "A" * MAX_CHUNK_CHARS
    data = frame(Chunk(consumer.job_id, 0, full)) + frame(Chunk(consumer.job_id, 1, "AAAA"))
    events = consumer.receive_data(data, NOW_MS)
    assert [type(e) for e in events] == [ChunkReceived, ChunkReceived]
    events = consumer.receive_data(frame(Chunk(consumer.job_id, 2, "A")), NOW_MS)
    [failure] = events
    assert isinstance(failure, Failure) and "after a short one" in str(failure.error)
