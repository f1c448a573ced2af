"""Ollama's native API shapes (`/api/*`): the replies. Streaming encoders for
`/api/generate` and `/api/chat`, error bodies, and the model listings of `/api/tags`,
`/api/ps` and `/api/show` (requests are parsed in `ollama_wire.py`).

Pure functions and small classes: no HTTP, no engine. Field names, `omitempty`
behaviour and nanosecond durations follow Ollama's `api/types.go`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from p2pinfer.backends import tools
from p2pinfer.backends.base import Completion, ModelInfo, TokenDelta, TokenLogprob
from p2pinfer.backends.gguf_meta import MetadataValue
from p2pinfer.backends.logprob_wire import token_entries
from p2pinfer.backends.wire import Clock, FinalFields, dumps, rfc3339, utc_now


def _metrics(done: Completion) -> dict[str, int]:
    # Ollama's Metrics fields are `omitempty`: absent when zero.
    values = {
        "total_duration": done.timings.total_ns,
        "load_duration": done.timings.load_ns,
        "prompt_eval_count": done.usage.prompt_tokens,
        "prompt_eval_duration": done.timings.prompt_eval_ns,
        "eval_count": done.usage.completion_tokens,
        "eval_duration": done.timings.eval_ns,
    }
    return {key: value for key, value in values.items() if value}


def done_reason(done: Completion) -> str:
    """Ollama's `done_reason` for a finished stream."""
    return "length" if done.finish_reason == "length" else "stop"


class GenerateEncoder:
    """Encodes one `/api/generate` reply (NDJSON lines, or one object when not streaming)."""

    media_type = "application/x-ndjson"
    #: Extra fields for the final object (a host's, e.g. the network gateway's charge).
    final_fields: FinalFields | None = None

    def __init__(self, model: str, clock: Clock = utc_now) -> None:
        self.model, self._clock = model, clock

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": rfc3339(self._clock())}

    def delta(self, event: TokenDelta) -> bytes:
        line = {**self._head(), "response": event.text, "done": False}
        return dumps(_with_logprobs(line, event.logprobs)) + b"\n"

    def final(self, done: Completion, text: str = "",
              logprobs: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
        return _with_logprobs({
            **self._head(),
            "response": text,
            "done": True,
            "done_reason": done_reason(done),
            **_metrics(done),
            **(self.final_fields() if self.final_fields is not None else {}),
        }, logprobs)

    def finish(self, done: Completion) -> bytes:
        return dumps(self.final(done)) + b"\n"

    def whole(self, text: str, done: Completion,
              logprobs: Sequence[TokenLogprob] = ()) -> bytes:
        return dumps(self.final(done, text, logprobs))

    def load_reply(self, reason: str) -> bytes:
        return dumps({**self._head(), "response": "", "done": True, "done_reason": reason})


class ChatEncoder:
    """Encodes one `/api/chat` reply (NDJSON lines, or one object when not streaming)."""

    media_type = "application/x-ndjson"
    #: Extra fields for the final object (a host's, e.g. the network gateway's charge).
    final_fields: FinalFields | None = None

    def __init__(self, model: str, clock: Clock = utc_now) -> None:
        self.model, self._clock = model, clock
        self.reader: tools.ToolReader | None = None
        self._held: list[TokenLogprob] = []  # of text the reader holds back

    def use_tools(self, tools_text: str | None) -> None:
        """Answer the request's tools: read tool calls out of the answer."""
        self.reader = tools.ToolReader.of(tools_text, None)

    def _head(self) -> dict[str, Any]:
        return {"model": self.model, "created_at": rfc3339(self._clock())}

    def _line(self, message: dict[str, Any], logprobs: Sequence[TokenLogprob]) -> bytes:
        line = {**self._head(), "message": {"role": "assistant", **message}, "done": False}
        return dumps(_with_logprobs(line, logprobs)) + b"\n"

    def delta(self, event: TokenDelta) -> bytes:
        if self.reader is None:
            return self._line({"content": event.text}, event.logprobs)
        self._held.extend(event.logprobs)
        text = self.reader.feed(event.text)
        if not text:
            return b""
        logprobs, self._held = self._held, []
        return self._line({"content": text}, logprobs)

    def final(self, done: Completion, text: str = "",
              logprobs: Sequence[TokenLogprob] = ()) -> dict[str, Any]:
        prose, calls = self.reader.split(text) if self.reader is not None else (text, [])
        message: dict[str, Any] = {"role": "assistant", "content": prose}
        if calls:
            message["tool_calls"] = tools.ollama_calls(calls)
        return _with_logprobs({
            **self._head(),
            "message": message,
            "done_reason": done_reason(done),
            "done": True,
            **_metrics(done),
            **(self.final_fields() if self.final_fields is not None else {}),
        }, logprobs)

    def finish(self, done: Completion) -> bytes:
        head = b""
        if self.reader is not None:
            held, calls = self.reader.finish()
            if calls:
                head = self._line({"content": "", "tool_calls": tools.ollama_calls(calls)}, ())
            elif held:
                head = self._line({"content": held}, self._held)
        return head + dumps(self.final(done)) + b"\n"

    def whole(self, text: str, done: Completion,
              logprobs: Sequence[TokenLogprob] = ()) -> bytes:
        return dumps(self.final(done, text, logprobs))

    def load_reply(self, reason: str) -> bytes:
        message = {"role": "assistant", "content": ""}
        return dumps(
            {**self._head(), "message": message, "done_reason": reason, "done": True}
        )


def _with_logprobs(line: dict[str, Any], logprobs: Sequence[TokenLogprob]) -> dict[str, Any]:
    # Ollama's `logprobs` is omitempty.
    return {**line, "logprobs": token_entries(logprobs)} if logprobs else line


def error_body(message: str) -> bytes:
    """Ollama's error object, also the last line of a stream that failed midway."""
    return dumps({"error": message})


def model_details(info: ModelInfo) -> dict[str, Any]:
    """The `details` object of /api/tags, /api/show and /api/ps."""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": info.family,
        "families": [info.family] if info.family else None,
        "parameter_size": info.parameter_size,
        "quantization_level": info.quantization,
    }


def _modified_at(info: ModelInfo) -> str:
    return rfc3339(datetime.fromtimestamp(info.modified_at_ms / 1000).astimezone())


def tags_entry(info: ModelInfo) -> dict[str, Any]:
    """One model of /api/tags."""
    return {
        "name": info.name,
        "model": info.name,
        "modified_at": _modified_at(info),
        "size": info.size_bytes,
        "digest": info.digest,
        "details": model_details(info),
    }


def ps_entry(info: ModelInfo, expires_at: datetime) -> dict[str, Any]:
    """One loaded model of /api/ps (everything runs on the CPU: size_vram 0)."""
    return {
        "name": info.name,
        "model": info.name,
        "size": info.size_bytes,
        "digest": info.digest,
        "details": model_details(info),
        "expires_at": rfc3339(expires_at),
        "size_vram": 0,
        "context_length": info.context_length,
    }


def show_reply(info: ModelInfo, metadata: dict[str, MetadataValue]) -> dict[str, Any]:
    """The /api/show object for a model, from its info and GGUF key/values."""
    metadata = dict(metadata)
    template = str(metadata.pop("tokenizer.chat_template", "")) or "{{ .Prompt }}"
    model_info: dict[str, MetadataValue] = dict(sorted(metadata.items()))
    if not model_info and info.family:
        # No GGUF keys (a model of the network): the ones its advert gives, under
        # Ollama's names (`<architecture>.context_length`).
        model_info = {"general.architecture": info.family}
        if info.context_length:
            model_info[f"{info.family}.context_length"] = info.context_length
        if info.embedding_length:  # Ollama names a model's vector length here too
            model_info[f"{info.family}.embedding_length"] = info.embedding_length
    return {
        "license": "",
        "modelfile": f"# Modelfile generated by p2pinfer\nFROM {info.name}\n",
        "parameters": "",
        "template": template,
        "details": model_details(info),
        "model_info": model_info,
        # Tools are offered to any chat model (backends/tools.py), as Ollama lists them.
        "capabilities": ["completion", *(["tools"] if info.chat_template else []),
                         *(["embedding"] if info.embedding_length else [])],
        "modified_at": _modified_at(info),
    }
