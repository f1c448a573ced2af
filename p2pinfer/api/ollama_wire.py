"""Ollama's native API shapes (`/api/*`): request parsing (the replies are
`ollama_replies.py`).

Pure functions and small classes: no HTTP, no engine. Field names, defaults,
`omitempty` behaviour, nanosecond durations and error texts follow Ollama's
`api/types.go` and `server/routes.go` (see docs/backends.md for what differs).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from p2pinfer.backends import output_format, tools
from p2pinfer.backends.base import (
    ChatMessage,
    Role,
    SamplingParams,
)
from p2pinfer.backends.wire import (
    ApiError,
    field,
)

log = logging.getLogger(__name__)

#: The Ollama API version this server answers `/api/version` with.
OLLAMA_VERSION = "0.12.6"

#: Ollama's option defaults (api.DefaultOptions), in the backend's terms.
OLLAMA_DEFAULTS = SamplingParams(
    max_tokens=-1,  # num_predict -1: no limit
    temperature=0.8,
    top_p=0.9,
    top_k=40,
    seed=None,  # seed -1: random
    stop=(),
    min_p=0.0,
    repeat_penalty=1.0,
    presence_penalty=0.0,
    frequency_penalty=0.0,
)

_INT_OPTIONS = {
    "num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch",
    "num_gpu", "main_gpu", "num_thread", "mirostat",
}  # fmt: skip
_FLOAT_OPTIONS = {
    "temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
    "frequency_penalty", "tfs_z", "mirostat_tau", "mirostat_eta",
}  # fmt: skip
_BOOL_OPTIONS = {
    "penalize_newline", "numa", "use_mmap", "use_mlock", "low_vram", "f16_kv", "vocab_only",
    "logits_all",
}  # fmt: skip
_LIST_OPTIONS = {"stop"}


def parse_options(options: object, base: SamplingParams = OLLAMA_DEFAULTS) -> SamplingParams:
    """Apply an `options` object to `base` with Ollama's type checks; unknown keys are ignored."""
    if options is None:
        return base
    if not isinstance(options, dict):
        raise ApiError(400, "json: cannot unmarshal into Go struct field .options of type map")
    checked: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if key in _INT_OPTIONS:
            if not is_number:
                raise ApiError(400, f'option "{key}" must be of type integer')
            checked[key] = int(value)
        elif key in _FLOAT_OPTIONS:
            if not is_number:
                raise ApiError(400, f'option "{key}" must be of type float32')
            checked[key] = float(value)
        elif key in _BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise ApiError(400, f'option "{key}" must be of type boolean')
        elif key in _LIST_OPTIONS:
            if not isinstance(value, list):
                raise ApiError(400, f'option "{key}" must be of type array')
            if not all(isinstance(item, str) for item in value):
                raise ApiError(400, f'option "{key}" must be of an array of strings')
            checked[key] = tuple(value)
        else:
            log.warning("invalid option provided option=%s", key)
    params = base
    renames = {
        "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
        "repeat_penalty": "repeat_penalty", "presence_penalty": "presence_penalty",
        "frequency_penalty": "frequency_penalty", "stop": "stop",
    }  # fmt: skip
    for key, attr in renames.items():
        if key in checked:
            params = replace(params, **{attr: checked[key]})
    if "seed" in checked:
        params = replace(params, seed=checked["seed"] if checked["seed"] >= 0 else None)
    if "num_predict" in checked:
        params = replace(params, max_tokens=max(checked["num_predict"], -1))
    return params


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_keep_alive(value: object) -> timedelta | None:
    """Ollama's `keep_alive`: seconds or a Go duration string; None means forever (negative)."""
    if value is None:
        return timedelta(minutes=5)
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        sign = -1.0 if text.startswith("-") else 1.0
        text = text.lstrip("+-")
        if text.isdigit():
            seconds = sign * float(text)
        elif text and _DURATION_PART.sub("", text) == "" and text != "":
            seconds = sign * sum(
                float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text)
            )
        else:
            raise ApiError(400, f'time: invalid duration "{value}"')
    else:
        raise ApiError(400, "json: cannot unmarshal keep_alive: expected a number or a string")
    return None if seconds < 0 else timedelta(seconds=seconds)


def _check_common(body: dict[str, Any], where: str, model_name: str) -> None:
    think = body.get("think")
    if think not in (None, False):
        raise ApiError(400, f'"{model_name}" does not support thinking')


def _logprobs(body: dict[str, Any], where: str) -> int | None:
    """Ollama's `logprobs` (bool) and `top_logprobs` (0..20): None when off."""
    on = field(body, "logprobs", bool, where, False)
    top = field(body, "top_logprobs", int, where, 0)
    if not 0 <= top <= 20:
        raise ApiError(400, "top_logprobs must be between 0 and 20")
    return top if on else None


def require_model(body: dict[str, Any], where: str) -> str:
    """The request's `model` (old clients send `name`); ApiError(400) if missing."""
    model = field(body, "model", str, where) or field(body, "name", str, where)
    if not model:
        raise ApiError(400, "model is required")
    return str(model)


@dataclass(frozen=True)
class GenerateRequest:
    model: str
    prompt: str
    system: str
    raw: bool
    stream: bool
    params: SamplingParams
    keep_alive: timedelta | None


def parse_generate(body: dict[str, Any]) -> GenerateRequest:
    """A `/api/generate` body, validated as Ollama does (before the model is looked up)."""
    where = "GenerateRequest"
    model = require_model(body, where)
    prompt = field(body, "prompt", str, where, "")
    system = field(body, "system", str, where, "")
    raw = field(body, "raw", bool, where, False)
    if raw and (system or body.get("template") or body.get("context")):
        raise ApiError(400, "raw mode does not support template, system, or context")
    if body.get("images"):
        raise ApiError(400, f'"{model}" does not support images')
    _check_common(body, where, model)
    return GenerateRequest(
        model=model,
        prompt=prompt,
        system=system,
        raw=raw,
        stream=field(body, "stream", bool, where, True),
        params=replace(parse_options(body.get("options")),
                       output_format=output_format.from_ollama(body.get("format")),
                       top_logprobs=_logprobs(body, where)),
        keep_alive=parse_keep_alive(body.get("keep_alive")),
    )


@dataclass(frozen=True)
class ChatRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    stream: bool
    params: SamplingParams
    keep_alive: timedelta | None


_ROLES: tuple[Role, ...] = ("system", "user", "assistant", "tool")


def parse_chat(body: dict[str, Any]) -> ChatRequest:
    """A `/api/chat` body, validated as Ollama does (before the model is looked up)."""
    where = "ChatRequest"
    model = require_model(body, where)
    raw_messages = field(body, "messages", list, where, [])
    messages = []
    for item in raw_messages:
        if not isinstance(item, dict):
            raise ApiError(
                400, "json: cannot unmarshal into Go struct field .messages of type api.Message"
            )
        role = field(item, "role", str, "Message", "")
        content = field(item, "content", str, "Message", "")
        if item.get("images"):
            raise ApiError(400, f'"{model}" does not support images')
        if role not in _ROLES:
            raise ApiError(400, f"invalid message role: {role!r}")
        messages.append(tools.ollama_message(item, role, content))
    _check_common(body, where, model)
    return ChatRequest(
        model=model,
        messages=tuple(messages),
        stream=field(body, "stream", bool, where, True),
        params=replace(parse_options(body.get("options")),
                       output_format=output_format.from_ollama(body.get("format")),
                       top_logprobs=_logprobs(body, where), tools=tools.from_ollama(body)),
        keep_alive=parse_keep_alive(body.get("keep_alive")),
    )
