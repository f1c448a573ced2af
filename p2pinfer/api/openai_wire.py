"""OpenAI-compatible API shapes (`/v1/*`) as Ollama serves them.

Request parsing (OpenAI fields mapped to sampling parameters with Ollama's
`/v1` defaults: temperature 1.0, top_p 1.0) and error bodies; the response
encoders are `openai_replies.py`. Pure: no HTTP, no engine.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from p2pinfer.api.ollama_wire import OLLAMA_DEFAULTS
from p2pinfer.backends import output_format, tools
from p2pinfer.backends.base import (
    ChatMessage,
    SamplingParams,
)
from p2pinfer.backends.wire import ApiError, dumps

#: Ollama's defaults behind /v1: its own options, but temperature and top_p 1.0.
OPENAI_DEFAULTS = replace(OLLAMA_DEFAULTS, temperature=1.0, top_p=1.0)



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
