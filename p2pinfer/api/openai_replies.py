"""OpenAI-compatible API shapes (`/v1/*`) as Ollama serves them: the replies.

Response encoding for chat and text completions (JSON objects, or SSE chunks ending
with `data: [DONE]`), several choices (`n`), tool calls and log probabilities, and the
model object of `/v1/models`. Requests are parsed in `openai_wire.py`. Pure: no HTTP,
no engine.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from typing import Any

from p2pinfer.backends import tools
from p2pinfer.backends.base import Completion, ModelInfo, TokenDelta, TokenLogprob
from p2pinfer.backends.logprob_wire import legacy, token_entries
from p2pinfer.backends.wire import Clock, FinalFields, dumps, utc_now

DONE_EVENT = b"data: [DONE]\n\n"
_ids = itertools.count(1)


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
        prose, calls = self.reader.split(text) if self.reader is not None else (text, [])
        message: dict[str, Any] = {"role": "assistant", "content": prose}
        if calls:
            message = {"role": "assistant", "content": prose or None,
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
