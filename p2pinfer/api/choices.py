"""OpenAI's `n`: several choices for one request, each from a backend stream of its own.

Through the network each choice is a job (and a charge) of its own. The choices run one
after another; streamed, each one's chunks carry its `index`, then its finish chunk, and
the reply ends once (usage, `[DONE]`). With a `seed`, choice i samples with seed + i, so
the choices differ yet the reply repeats. Errors are answered as `BackendStreamResponse`
answers them: with their status before the first byte, by ending the stream after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Protocol

from starlette.types import Send

from p2pinfer.api.http_stream import (
    EventsResponse,
    OpenStream,
    ReplyHeaders,
    error_status,
)
from p2pinfer.backends.base import (
    Completion,
    SamplingParams,
    TokenDelta,
    TokenLogprob,
    restarted_mid_stream,
)
from p2pinfer.errors import EngineResponseError, P2PInferError


class ChoiceEncoder(Protocol):
    """What openai_wire's encoders give for one choice of a reply."""

    media_type: str

    def delta(self, event: TokenDelta) -> bytes: ...

    def finish_choice(self, done: Completion) -> bytes: ...

    def choice(self, text: str, done: Completion,
               logprobs: Sequence[TokenLogprob] = ()) -> dict[str, Any]: ...

    def finish_all(self, dones: list[Completion]) -> bytes: ...

    def whole_choices(self, choices: list[dict[str, Any]], dones: list[Completion]) -> bytes: ...


def choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    """Each choice's parameters: seed + i when a seed is set."""
    if params.seed is None:
        return [params] * n
    return [replace(params, seed=(params.seed + i) % 2**32) for i in range(n)]


class ChoicesResponse(EventsResponse):
    """Streams (or collects) the choices of one reply, shaped by their encoders."""

    def __init__(
        self,
        open_streams: Sequence[OpenStream],
        encoders: Sequence[ChoiceEncoder],
        *,
        stream: bool,
        error_body: Callable[[int, str], bytes],
        not_found_message: str,
        on_done: Callable[[Completion], None],
        reply_headers: ReplyHeaders | None = None,
    ) -> None:
        super().__init__(reply_headers)
        self._opens, self._encoders = list(open_streams), list(encoders)
        self._stream = stream
        self._error_body, self._not_found = error_body, not_found_message
        self._on_done = on_done

    async def _body(self, send: Send, body: bytes, more: bool = True) -> None:
        if self._stream and not self._started:
            await self._start(send, 200, self._encoders[0].media_type)
        await send({"type": "http.response.body", "body": body, "more_body": more})

    async def _choice(self, send: Send, open_stream: OpenStream,
                      encoder: ChoiceEncoder) -> tuple[str, Completion, list[TokenLogprob]]:
        parts: list[str] = []
        logprobs: list[TokenLogprob] = []
        async with open_stream() as events:
            self._events = events
            async for event in events:
                if isinstance(event, TokenDelta):
                    if self._stream:
                        if event.restart:
                            raise restarted_mid_stream()  # what was sent stays sent
                        await self._body(send, encoder.delta(event))
                    else:
                        if event.restart:  # a failover's answer replaces the first
                            parts.clear()
                            logprobs.clear()
                        parts.append(event.text)
                        logprobs.extend(event.logprobs)
                    continue
                self._on_done(event)
                if self._stream:
                    await self._body(send, encoder.finish_choice(event))
                return "".join(parts), event, logprobs
        raise EngineResponseError("the engine's stream ended without a final event")

    async def _respond(self, send: Send) -> None:
        texts: list[str] = []
        dones: list[Completion] = []
        logprobs: list[list[TokenLogprob]] = []
        try:
            for open_stream, encoder in zip(self._opens, self._encoders, strict=True):
                text, done, probs = await self._choice(send, open_stream, encoder)
                texts.append(text)
                dones.append(done)
                logprobs.append(probs)
            first = self._encoders[0]
            if self._stream:
                await self._body(send, first.finish_all(dones), more=False)
                return
            choices = [e.choice(t, d, p) for e, t, d, p in zip(self._encoders, texts, dones,
                                                               logprobs, strict=True)]
            await self._start(send, 200, "application/json; charset=utf-8", dones[-1])
            await self._body(send, first.whole_choices(choices, dones), more=False)
        except P2PInferError as exc:
            status = error_status(exc)
            if self._started:  # as Ollama's /v1: the stream just ends
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return
            await self._start(send, status, "application/json; charset=utf-8")
            message = self._not_found if status == 404 else str(exc)
            await send({"type": "http.response.body", "body": self._error_body(status, message),
                        "more_body": False})

