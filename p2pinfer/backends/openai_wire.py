"""OpenAI-compatible API shapes (`/v1/*`) as Ollama serves them.

Request parsing (OpenAI fields mapped to sampling parameters with Ollama's
`/v1` defaults: temperature 1.0, top_p 1.0) and response encoding (JSON
objects, SSE chunks ending with `data: [DONE]`). Pure: no HTTP, no engine.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from p2pinfer.backends import output_format, tools
from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    ModelInfo,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
)
from p2pinfer.backends.logprob_wire import legacy, token_entries
from p2pinfer.backends.ollama_wire import OLLAMA_DEFAULTS
from p2pinfer.backends.wire import ApiError, Clock, FinalFields, dumps, utc_now

#: Ollama's defaults behind /v1: its own options, but temperature and top_p 1.0.
OPENAI_DEFAULTS = replace(OLLAMA_DEFAULTS, temperature=1.0, top_p=1.0)

DONE_EVENT = b"data: [DONE]\n\n"
_ids = itertools.count(1)


def error_body(status: int, message: str, param: str | None = None) -> bytes:
    """OpenAI's error object; the type follows the status as Ollama sets it, the code as
    OpenAI's (a 404 here is always an unknown model: `model_not_found`)."""
    kind = {400: "invalid_request_error", 404: "not_found_error"}.get(status, "api_error")
    code = "model_not_found" if status == 404 else None
    return dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ApiError(400, f"invalid type for '{name}': expected a number", name)
    return float(value)


def _integer(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"invalid type for '{name}': expected an integer", name)
    return value


def _stop(body: dict[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        return tuple(stop)
    raise ApiError(400, "invalid type for 'stop': expected a string or an array of strings",
                   "stop")


def _params(body: dict[str, Any]) -> SamplingParams:
    params = OPENAI_DEFAULTS
    max_tokens = _integer(body, "max_completion_tokens") or _integer(body, "max_tokens")
    if max_tokens is not None:
        params = replace(params, max_tokens=max_tokens)
    floats: dict[str, Any] = {}
    # min_p and repeat_penalty are llama.cpp's (and vLLM's) extensions to OpenAI's body.
    for name in ("temperature", "top_p", "presence_penalty", "frequency_penalty", "min_p",
                 "repeat_penalty"):
        value = _number(body, name)
        if value is not None:
            floats[name] = value
    params = replace(params, **floats)
    seed = _integer(body, "seed")
    if seed is not None:
        params = replace(params, seed=seed)
    params = replace(params, stop=_stop(body))
    return replace(params, output_format=output_format.from_openai(body.get("response_format")))


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required", "model")
    return model


MAX_CHOICES = 8
"""The most choices (`n`) one request may ask for: each is a job of its own."""


def _choices(body: dict[str, Any]) -> int:
    n = _integer(body, "n")
    if n is None:
        return 1
    if not 1 <= n <= MAX_CHOICES:
        raise ApiError(400, f"n: {n} is not between 1 and {MAX_CHOICES}")
    return n


def _stream_flags(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "invalid type for 'stream': expected a boolean", "stream")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
    return stream, include_usage


def _content(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ApiError(400, "invalid message content: only text parts are supported",
                               "messages")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise ApiError(400, "invalid message content type", "messages")


@dataclass(frozen=True)
class ChatCompletionRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    params: SamplingParams
    stream: bool
    include_usage: bool
    n: int = 1  # choices, each from a job (a sample) of its own
    parallel_tool_calls: bool = True  # False: an answer's first tool call only


MAX_TOP_LOGPROBS = 20


def _chat_logprobs(body: dict[str, Any]) -> int | None:
    # Chat: `logprobs: true` turns them on, `top_logprobs` (0..20) adds rivals.
    on = body.get("logprobs")
    if on is not None and not isinstance(on, bool):
        raise ApiError(400, "invalid type for 'logprobs': expected a boolean")
    top = _integer(body, "top_logprobs")
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise ApiError(400, f"top_logprobs: {top} is not between 0 and {MAX_TOP_LOGPROBS}")
    if top is not None and not on:
        raise ApiError(400, "top_logprobs needs logprobs: true")
    return (top or 0) if on else None


def _completion_logprobs(body: dict[str, Any]) -> int | None:
    # Completions: `logprobs` is the number of rivals (0..5), null for none.
    top = _integer(body, "logprobs")
    if top is not None and not 0 <= top <= 5:
        raise ApiError(400, f"logprobs: {top} is not between 0 and 5")
    return top


def parse_chat_completion(body: dict[str, Any]) -> ChatCompletionRequest:
    """A `/v1/chat/completions` body."""
    model = _model(body)
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise ApiError(400, "[] is too short - 'messages'", "messages")
    messages = []
    names_by_id: dict[str, str] = {}  # tool call ids, to name the tool messages answering
    for item in raw:
        role = item.get("role") if isinstance(item, dict) else None
        if role == "developer":
            role = "system"
        if role not in ("system", "user", "assistant", "tool"):
            raise ApiError(400, f"invalid role: {role!r}", "messages")
        messages.append(tools.openai_message(item, role, _content(item.get("content")),
                                             names_by_id))
    stream, include_usage = _stream_flags(body)
    tools_text, tool_choice, parallel = tools.from_openai(body)
    params = replace(_params(body), top_logprobs=_chat_logprobs(body), tools=tools_text,
                     tool_choice=tool_choice)
    return ChatCompletionRequest(model, tuple(messages), params, stream, include_usage,
                                 _choices(body), parallel)


@dataclass(frozen=True)
class CompletionRequest:
    model: str
    prompt: str
    params: SamplingParams
    stream: bool
    include_usage: bool
    n: int = 1


def parse_completion(body: dict[str, Any]) -> CompletionRequest:
    """A `/v1/completions` body (the prompt must be one string)."""
    model = _model(body)
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise ApiError(400, "invalid type for 'prompt': only a string is supported", "prompt")
    if body.get("suffix"):
        raise ApiError(400, "suffix is not supported by this engine", "suffix")
    if body.get("tools"):
        raise ApiError(400, "tools are for /v1/chat/completions", "tools")
    stream, include_usage = _stream_flags(body)
    params = replace(_params(body), top_logprobs=_completion_logprobs(body))
    return CompletionRequest(model, prompt, params, stream, include_usage, _choices(body))


def _usage(*dones: Completion) -> dict[str, int]:
    # Several choices: every job read the prompt and was charged for it, so both add up.
    prompt = sum(d.usage.prompt_tokens for d in dones)
    completion = sum(d.usage.completion_tokens for d in dones)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}  # fmt: skip


def finish_reason(done: Completion) -> str:
    return "length" if done.finish_reason == "length" else "stop"


class _Encoder:
    media_type = "text/event-stream"
    object_name = ""
    id_prefix = ""
    #: Extra fields for the last chunk(s) and the whole reply (a host's, e.g. the charge).
    final_fields: FinalFields | None = None

    def __init__(self, model: str, include_usage: bool = False, clock: Clock = utc_now) -> None:
        self.model, self.include_usage = model, include_usage
        self.id = f"{self.id_prefix}{next(_ids)}"
        self.created = int(clock().timestamp())
        self.index = 0  # the choice this encoder's deltas belong to (see `for_choice`)

    def for_choice(self, index: int) -> Any:
        """An encoder of the same reply (id, created) for choice `index`."""
        other = copy.copy(self)
        other.index = index
        return other

    def _head(self, object_name: str) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created,
                "model": self.model, "system_fingerprint": "fp_ollama"}  # fmt: skip

    def _final_head(self, object_name: str) -> dict[str, Any]:
        extra = self.final_fields() if self.final_fields is not None else {}
        return {**self._head(object_name), **extra}

    @staticmethod
    def event(payload: dict[str, Any]) -> bytes:
        return b"data: " + dumps(payload) + b"\n\n"

    def _usage_event(self, *dones: Completion) -> bytes:
        if not self.include_usage:
            return b""
        return self.event({**self._final_head(self.object_name), "choices": [],
                           "usage": _usage(*dones)})

    def finish_choice(self, done: Completion) -> bytes:
        """The last event of this encoder's choice."""
        raise NotImplementedError

    def choice(self, text: str, done: Completion,
               logprobs: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
        """This encoder's choice in a whole (not streamed) reply."""
        raise NotImplementedError

    def finish(self, done: Completion) -> bytes:
        return self.finish_choice(done) + self._usage_event(done) + DONE_EVENT

    def finish_all(self, dones: list[Completion]) -> bytes:
        """What ends a streamed reply of several choices, after each one's finish_choice."""
        return self._usage_event(*dones) + DONE_EVENT

    def whole(self, text: str, done: Completion,
              logprobs: Sequence[TokenLogprob] = ()) -> bytes:
        return self.whole_choices([self.choice(text, done, logprobs)], [done])

    def whole_choices(self, choices: list[dict[str, Any]], dones: list[Completion]) -> bytes:
        """A whole reply with several choices (each from its encoder's `choice`)."""
        return dumps({**self._final_head(self.whole_object), "choices": choices,
                      "usage": _usage(*dones)})

    whole_object = ""


class ChatCompletionEncoder(_Encoder):
    """Encodes one `/v1/chat/completions` reply."""

    object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl-"

    def __init__(self, model: str, include_usage: bool = False, clock: Clock = utc_now) -> None:
        super().__init__(model, include_usage, clock)
        self._sent_role = False
        self._tools: tuple[str | None, str | None, bool] = (None, None, True)
        self.reader: tools.ToolReader | None = None
        self._held: list[TokenLogprob] = []  # of text the reader holds back

    whole_object = "chat.completion"

    def use_tools(self, tools_text: str | None, choice: str | None, parallel: bool) -> None:
        """Answer the request's tools: read tool calls out of the answer."""
        self._tools = (tools_text, choice, parallel)
        self.reader = tools.ToolReader.of(*self._tools)

    def for_choice(self, index: int) -> Any:
        other = super().for_choice(index)
        other.use_tools(*self._tools)
        return other

    def _delta(self, delta: dict[str, Any], logprobs: Sequence[TokenLogprob] = ()) -> bytes:
        if not self._sent_role:
            delta = {"role": "assistant", **delta}
            self._sent_role = True
        choice = {"index": self.index, "delta": delta, "finish_reason": None}
        if logprobs:
            choice["logprobs"] = {"content": token_entries(logprobs)}
        return self.event({**self._head(self.object_name), "choices": [choice]})

    def delta(self, event: TokenDelta) -> bytes:
        if self.reader is None:
            return self._delta({"content": event.text}, event.logprobs)
        self._held.extend(event.logprobs)
        text = self.reader.feed(event.text)
        if not text:
            return b""
        logprobs, self._held = self._held, []
        return self._delta({"content": text}, logprobs)

    def finish_choice(self, done: Completion) -> bytes:
        reason, head = finish_reason(done), b""
        if self.reader is not None:
            held, calls = self.reader.finish()
            if calls:
                reason = "tool_calls"
                head = self._delta({"content": None,
                                    "tool_calls": tools.openai_calls(calls, stream=True)})
            elif held:
                head = self._delta({"content": held}, self._held)
        delta: dict[str, str] = {} if self._sent_role else {"role": "assistant", "content": ""}
        choice = {"index": self.index, "delta": delta, "finish_reason": reason}
        return head + self.event({**self._final_head(self.object_name), "choices": [choice]})

    def choice(self, text: str, done: Completion,
               logprobs: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
        calls = self.reader.calls(text) if self.reader is not None else []
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message = {"role": "assistant", "content": None,
                       "tool_calls": tools.openai_calls(calls)}
        choice = {"index": self.index, "message": message,
                  "finish_reason": "tool_calls" if calls else finish_reason(done)}
        if logprobs:
            choice["logprobs"] = {"content": token_entries(logprobs)}
        return choice


class TextCompletionEncoder(_Encoder):
    """Encodes one `/v1/completions` reply."""

    object_name = "text_completion"
    id_prefix = "cmpl-"

    whole_object = "text_completion"
    _offset = 0  # characters streamed so far: where the next token's text_offset starts

    def delta(self, event: TokenDelta) -> bytes:
        logprobs = legacy(event.logprobs, self._offset) if event.logprobs else None
        self._offset += len(event.text)
        choice = {"text": event.text, "index": self.index, "logprobs": logprobs,
                  "finish_reason": None}
        return self.event({**self._head(self.object_name), "choices": [choice]})

    def finish_choice(self, done: Completion) -> bytes:
        choice = {"text": "", "index": self.index, "logprobs": None,
                  "finish_reason": finish_reason(done)}
        return self.event({**self._final_head(self.object_name), "choices": [choice]})

    def choice(self, text: str, done: Completion,
               logprobs: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
        return {"text": text, "index": self.index,
                "logprobs": legacy(logprobs, 0) if logprobs else None,
                "finish_reason": finish_reason(done)}


def model_object(info: ModelInfo) -> dict[str, Any]:
    """One entry of `/v1/models`."""
    created = info.modified_at_ms // 1000 if info.modified_at_ms else 0
    return {"id": info.name, "object": "model", "created": created, "owned_by": "library"}
