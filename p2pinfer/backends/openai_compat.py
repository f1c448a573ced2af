"""A backend over an OpenAI-compatible server (llama.cpp's server, vLLM, LM Studio, Ollama's /v1).

Chat goes through `/v1/chat/completions`, raw completion through
`/v1/completions`, both streamed as SSE with `stream_options.include_usage`.
A stream that ends without a finish reason is an error (Ollama ends a failed
SSE stream that way). The model list has no digests: `ModelInfo.digest` is "".
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import httpx

from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    Embeddings,
    FinishReason,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    Timings,
    TokenDelta,
    TokenLogprob,
    Usage,
)
from p2pinfer.backends.http_client import (
    DEFAULT_CONNECT_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    embedding_vectors,
    get_json,
    make_client,
    parse_object,
    status_error,
    translate,
    translated,
)
from p2pinfer.backends.logprob_wire import parse_entries, parse_legacy
from p2pinfer.backends.output_format import to_openai
from p2pinfer.backends.tool_forward import (
    StreamedCalls,
    api_tools,
    openai_messages,
    openai_tool_choice,
)
from p2pinfer.errors import EngineResponseError


def _body(params: SamplingParams, extensions: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": params.temperature,
        "top_p": params.top_p,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.max_tokens > 0:
        body["max_tokens"] = params.max_tokens
    if params.seed is not None:
        body["seed"] = params.seed
    if params.stop:
        body["stop"] = list(params.stop)
    if params.output_format is not None:
        body["response_format"] = to_openai(params.output_format)
    if params.tools is not None:
        body["tools"] = api_tools(params.tools)
        if params.tool_choice is not None:
            body["tool_choice"] = openai_tool_choice(params.tool_choice)
    if extensions:
        # Understood by llama.cpp's server and vLLM, ignored by Ollama.
        body.update(top_k=params.top_k, min_p=params.min_p, repeat_penalty=params.repeat_penalty)
    return body


def _count(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


class _SSEEvents:
    """Backend events from an OpenAI-style SSE reply."""

    def __init__(
        self, response: httpx.Response, chat: bool, engine: str, timeout_s: float, started: int
    ) -> None:
        self._lines = response.aiter_lines()
        self._chat, self._engine, self._timeout_s = chat, engine, timeout_s
        self._started_ns = started
        self._first_ns = 0
        self._deltas = 0
        self._finish: FinishReason | None = None
        self._usage: Usage | None = None
        self._timings: Timings | None = None
        self._done = False
        self._logprobs: tuple[TokenLogprob, ...] = ()  # the last chunk's
        self._calls = StreamedCalls(engine)  # answered as their JSON text, at the end

    def __aiter__(self) -> _SSEEvents:
        return self

    def _completion(self) -> Completion:
        self._done = True
        assert self._finish is not None
        end = time.perf_counter_ns()
        first = self._first_ns or end
        timings = self._timings or Timings(
            total_ns=end - self._started_ns,
            prompt_eval_ns=first - self._started_ns,
            eval_ns=end - first,
        )
        usage = self._usage or Usage(0, self._deltas)
        return Completion(finish_reason=self._finish, usage=usage, timings=timings)

    def _read_chunk(self, chunk: dict[str, Any]) -> str:
        if "error" in chunk:
            error = chunk["error"]
            message = error.get("message", error) if isinstance(error, dict) else error
            raise EngineResponseError(f"the engine failed mid-stream: {message}")
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
            self._usage = Usage(_count(prompt), _count(completion))
        timings = chunk.get("timings")  # llama.cpp's server reports its own, in ms
        if isinstance(timings, dict):
            prompt_ns = int(float(timings.get("prompt_ms", 0)) * 1e6)
            eval_ns = int(float(timings.get("predicted_ms", 0)) * 1e6)
            self._timings = Timings(
                total_ns=prompt_ns + eval_ns, prompt_eval_ns=prompt_ns, eval_ns=eval_ns
            )
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise EngineResponseError(f"the engine at {self._engine} sent a chunk without choices")
        text = ""
        for choice in choices[:1]:
            if not isinstance(choice, dict):
                raise EngineResponseError(f"the engine at {self._engine} sent a malformed choice")
            delta = choice.get("delta") if self._chat else choice
            key = "content" if self._chat else "text"
            piece = delta.get(key) if isinstance(delta, dict) else ""
            if piece is not None and not isinstance(piece, str):
                raise EngineResponseError(f"the engine at {self._engine} sent malformed text")
            text = piece or ""
            if self._chat and isinstance(delta, dict):
                self._calls.feed(delta.get("tool_calls"))
            probs = choice.get("logprobs")
            self._logprobs = (parse_entries(probs.get("content")) if isinstance(probs, dict)
                              else ()) if self._chat else parse_legacy(probs)
            reason = choice.get("finish_reason")
            if reason is not None:
                self._finish = "length" if reason == "length" else "stop"
        return text

    def _calls_delta(self) -> TokenDelta | None:
        text = self._calls.take()
        return TokenDelta(text) if text else None

    async def __anext__(self) -> StreamEvent:
        while not self._done:
            try:
                raw = await self._lines.__anext__()
            except StopAsyncIteration:
                if self._finish is not None:
                    return self._calls_delta() or self._completion()
                self._done = True
                raise EngineResponseError(
                    f"the engine at {self._engine} ended the stream before finishing"
                ) from None
            except httpx.HTTPError as exc:
                self._done = True
                raise translate(exc, self._engine, self._timeout_s) from None
            if not raw.startswith("data:"):
                continue  # blank separators, comments, `event:` lines
            data = raw[5:].strip()
            if data == "[DONE]":
                if self._finish is None:
                    self._done = True
                    raise EngineResponseError(
                        f"the engine at {self._engine} ended the stream without a finish reason"
                    )
                return self._calls_delta() or self._completion()
            text = self._read_chunk(parse_object(data, self._engine))
            if text:
                self._deltas += 1
                if not self._first_ns:
                    self._first_ns = time.perf_counter_ns()
                return TokenDelta(text, self._logprobs)
        raise StopAsyncIteration


class OpenAICompatBackend:
    """An OpenAI-compatible server at `base_url` (with or without the trailing `/v1`)."""

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        sampling_extensions: bool = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = base_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else f"{base}/v1"
        self._timeout_s = timeout_s
        self._extensions = sampling_extensions
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
        self._client = make_client(
            self.base_url + "/",
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            headers=headers,
            transport=transport,
        )

    async def list_models(self) -> list[ModelInfo]:
        """`/v1/models`: names only (no digest, size or context length)."""
        reply = await get_json(self._client, "models", self.base_url, self._timeout_s)
        data = reply.get("data")
        if not isinstance(data, list):
            raise EngineResponseError(f"the engine at {self.base_url} sent a malformed model list")
        infos = []
        for entry in data:
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
                raise EngineResponseError(f"the engine at {self.base_url} sent a malformed model")
            created = _count(entry.get("created"))
            infos.append(ModelInfo(name=entry["id"], digest="", modified_at_ms=created * 1000))
        return infos

    async def embed(self, model: str, inputs: Sequence[str]) -> Embeddings:
        """`/v1/embeddings` (floats), the vectors in input order."""
        reply = await get_json(self._client, "embeddings", self.base_url, self._timeout_s,
                               {"model": model, "input": list(inputs),
                                "encoding_format": "float"})
        data = reply.get("data")
        items = sorted((d for d in data if isinstance(d, dict)),
                       key=lambda d: _count(d.get("index"))) if isinstance(data, list) else None
        vectors = [d.get("embedding") for d in items] if items is not None else None
        usage = reply.get("usage") if isinstance(reply.get("usage"), dict) else {}
        assert isinstance(usage, dict)
        return Embeddings(embedding_vectors(vectors, len(inputs), self.base_url),
                          _count(usage.get("prompt_tokens")))

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        body = _body(params, self._extensions)
        body["model"] = model
        body["messages"] = openai_messages(messages)
        if params.top_logprobs is not None:
            body.update(logprobs=True, top_logprobs=params.top_logprobs)
        return self._stream("chat/completions", body, chat=True)

    def generate(
        self, model: str, prompt: str, params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        body = _body(params, self._extensions)
        body["model"] = model
        body["prompt"] = prompt
        if params.top_logprobs is not None:
            body["logprobs"] = min(params.top_logprobs, 5)  # the completions API's cap
        return self._stream("completions", body, chat=False)

    @asynccontextmanager
    async def _stream(
        self, path: str, body: dict[str, Any], *, chat: bool
    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        started = time.perf_counter_ns()
        async with (
            translated(self.base_url, self._timeout_s),
            self._client.stream("POST", path, json=body) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise status_error(response.status_code, response.content, self.base_url)
            yield _SSEEvents(response, chat, self.base_url, self._timeout_s, started)

    async def aclose(self) -> None:
        await self._client.aclose()
