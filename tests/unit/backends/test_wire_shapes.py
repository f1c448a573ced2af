from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from p2pinfer.api import ollama_replies, ollama_wire, openai_replies, openai_wire
from p2pinfer.backends.base import Completion, SamplingParams, Timings, TokenDelta, Usage
from p2pinfer.backends.wire import ApiError, parse_json_body, rfc3339

NOW = datetime(2026, 1, 2, 3, 4, 5, 120000, tzinfo=UTC)
DONE = Completion("length", Usage(26, 3), Timings(5_000, 1_000, 2_000, 3_000))


def clock() -> datetime:
    return NOW


def test_request_bodies_fail_like_ollama() -> None:
    for body, message in [
        (b"", "missing request body"),
        (b"  \n", "missing request body"),
        (b"x{", "invalid character 'x' looking for beginning of value"),
        (b'{"model": ', "unexpected EOF"),
    ]:
        with pytest.raises(ApiError) as caught:
            parse_json_body(body)
        assert (caught.value.status, caught.value.message) == (400, message)
    with pytest.raises(ApiError, match="cannot unmarshal array"):
        parse_json_body(b"[1]")


def test_timestamps_are_rfc3339_with_trimmed_fraction() -> None:
    assert rfc3339(NOW) == "2026-01-02T03:04:05.12Z"
    assert rfc3339(NOW.replace(microsecond=0)) == "2026-01-02T03:04:05Z"


def test_options_default_like_ollama_and_ignore_unknown_keys() -> None:
    params = ollama_wire.parse_options({"mystery": 3, "num_ctx": 4096})
    assert params == ollama_wire.OLLAMA_DEFAULTS
    assert params.temperature == 0.8 and params.top_k == 40 and params.top_p == 0.9
    assert params.seed is None and params.max_tokens == -1
    params = ollama_wire.parse_options(
        {"temperature": 0, "seed": 42, "num_predict": 16.0, "stop": ["\n"], "top_k": 1}
    )
    assert (params.temperature, params.seed, params.max_tokens, params.stop, params.top_k) == (
        0.0, 42, 16, ("\n",), 1,
    )  # fmt: skip
    assert ollama_wire.parse_options({"seed": -1}).seed is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"temperature": "hot"}, 'option "temperature" must be of type float32'),
        ({"num_predict": "5"}, 'option "num_predict" must be of type integer'),
        ({"seed": True}, 'option "seed" must be of type integer'),
        ({"use_mmap": 1}, 'option "use_mmap" must be of type boolean'),
        ({"stop": "x"}, 'option "stop" must be of type array'),
        ({"stop": [1]}, 'option "stop" must be of an array of strings'),
    ],
)
def test_options_of_the_wrong_type_are_a_400(options: dict[str, object], message: str) -> None:
    with pytest.raises(ApiError) as caught:
        ollama_wire.parse_options(options)
    assert (caught.value.status, caught.value.message) == (400, message)


def test_keep_alive_accepts_seconds_and_go_durations() -> None:
    assert ollama_wire.parse_keep_alive(None) == timedelta(minutes=5)
    assert ollama_wire.parse_keep_alive(30) == timedelta(seconds=30)
    assert ollama_wire.parse_keep_alive("1h30m") == timedelta(minutes=90)
    assert ollama_wire.parse_keep_alive("0") == timedelta(0)
    assert ollama_wire.parse_keep_alive(-1) is None
    assert ollama_wire.parse_keep_alive("-5m") is None
    with pytest.raises(ApiError, match='invalid duration "soon"'):
        ollama_wire.parse_keep_alive("soon")


def test_generate_requests_are_validated_before_the_model_is_looked_up() -> None:
    req = ollama_wire.parse_generate({"model": "m", "prompt": "hi"})
    assert req.stream is True and req.raw is False and req.params == ollama_wire.OLLAMA_DEFAULTS
    with pytest.raises(ApiError, match="raw mode does not support template, system, or context"):
        ollama_wire.parse_generate({"model": "m", "prompt": "hi", "raw": True, "system": "s"})
    with pytest.raises(ApiError, match="model is required"):
        ollama_wire.parse_generate({"prompt": "hi"})
    with pytest.raises(ApiError, match='"m" does not support thinking'):
        ollama_wire.parse_generate({"model": "m", "prompt": "hi", "think": True})
    with pytest.raises(ApiError, match=r"GenerateRequest\.prompt of type string"):
        ollama_wire.parse_generate({"model": "m", "prompt": 5})
    with pytest.raises(ApiError, match=r"GenerateRequest\.stream of type bool"):
        ollama_wire.parse_generate({"model": "m", "stream": "yes"})


def test_chat_requests_read_messages_and_old_clients_name_field() -> None:
    req = ollama_wire.parse_chat(
        {"name": "m", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    )
    assert req.model == "m" and req.stream is False
    assert [(m.role, m.content) for m in req.messages] == [("user", "hi")]
    with pytest.raises(ApiError, match="invalid message role"):
        ollama_wire.parse_chat({"model": "m", "messages": [{"role": "robot", "content": "x"}]})


def test_native_stream_lines_and_final_statistics_in_nanoseconds() -> None:
    encoder = ollama_replies.ChatEncoder("smollm2", clock)
    line = json.loads(encoder.delta(TokenDelta("Hi")))
    assert line == {"model": "smollm2", "created_at": "2026-01-02T03:04:05.12Z",
                    "message": {"role": "assistant", "content": "Hi"}, "done": False}  # fmt: skip
    final = json.loads(encoder.finish(DONE))
    assert final["done"] is True and final["done_reason"] == "length"
    assert final["message"] == {"role": "assistant", "content": ""}
    assert (final["total_duration"], final["load_duration"], final["prompt_eval_count"],
            final["prompt_eval_duration"], final["eval_count"], final["eval_duration"]) == (
        5_000, 1_000, 26, 2_000, 3, 3_000)  # fmt: skip
    generate = ollama_replies.GenerateEncoder("m", clock)
    assert json.loads(generate.whole("Hello", DONE))["response"] == "Hello"
    # Zero statistics are omitted (Go's omitempty), as in a load reply.
    bare = json.loads(generate.finish(Completion("stop")))
    assert "eval_count" not in bare and "total_duration" not in bare
    assert json.loads(generate.load_reply("unload")) == {
        "model": "m", "created_at": "2026-01-02T03:04:05.12Z", "response": "",
        "done": True, "done_reason": "unload"}  # fmt: skip


def test_openai_requests_use_ollamas_v1_defaults() -> None:
    req = openai_wire.parse_chat_completion(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]}
    )
    assert req.params.temperature == 1.0 and req.params.top_p == 1.0
    assert req.stream is False and req.include_usage is False
    assert req.messages[0].content == "a"
    req = openai_wire.parse_chat_completion({
        "model": "m", "messages": [{"role": "user", "content": "a"}], "max_tokens": 5,
        "stop": "x", "seed": 3, "temperature": 0, "stream": True,
        "stream_options": {"include_usage": True}})  # fmt: skip
    assert req.params == SamplingParams(
        max_tokens=5, temperature=0.0, top_p=1.0, top_k=40, seed=3, stop=("x",), min_p=0.0
    )
    assert req.stream and req.include_usage
    with pytest.raises(ApiError, match=r"\[\] is too short - 'messages'"):
        openai_wire.parse_chat_completion({"model": "m", "messages": []})
    with pytest.raises(ApiError, match="expected a number"):
        openai_wire.parse_chat_completion(
            {"model": "m", "messages": [{"role": "user", "content": "a"}], "temperature": "0"}
        )


def _events(payload: bytes) -> list[object]:
    chunks = [c for c in payload.split(b"\n\n") if c]
    assert all(c.startswith(b"data: ") for c in chunks)
    return [c[6:].decode() if c == b"data: [DONE]" else json.loads(c[6:]) for c in chunks]


def test_sse_chat_chunks_end_with_finish_usage_and_done() -> None:
    encoder = openai_replies.ChatCompletionEncoder("m", include_usage=True, clock=clock)
    first, second = _events(encoder.delta(TokenDelta("a"))), _events(encoder.delta(TokenDelta("b")))
    assert first[0]["choices"][0]["delta"] == {"role": "assistant", "content": "a"}  # type: ignore[index]
    assert second[0]["choices"][0]["delta"] == {"content": "b"}  # type: ignore[index]
    assert first[0]["object"] == "chat.completion.chunk"  # type: ignore[index]
    finish, usage, done = _events(encoder.finish(DONE))
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "length"}]  # type: ignore[index]
    assert usage["choices"] == [] and usage["usage"] == {  # type: ignore[index]
        "prompt_tokens": 26, "completion_tokens": 3, "total_tokens": 29}  # fmt: skip
    assert done == "[DONE]"
    without_usage = openai_replies.ChatCompletionEncoder("m", clock=clock)
    assert len(_events(without_usage.finish(DONE))) == 2


def test_openai_errors_carry_the_type_sdks_map_to_exceptions() -> None:
    body = json.loads(openai_wire.error_body(404, "model 'x' not found"))
    assert body == {"error": {"message": "model 'x' not found", "type": "not_found_error",
                              "param": None, "code": "model_not_found"}}  # fmt: skip
    types = [json.loads(openai_wire.error_body(s, "x"))["error"]["type"] for s in (400, 500)]
    assert types == ["invalid_request_error", "api_error"]
