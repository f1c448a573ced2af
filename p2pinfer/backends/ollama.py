"""A backend over Ollama's native API (`/api/tags`, `/api/show`, `/api/chat`, `/api/generate`).

Streams NDJSON; every line is checked for `error` (Ollama's mid-stream failure)
and a stream that ends without `done: true` is an error, as Ollama issue #10015
advises. `generate()` sends `raw: true`, so it is a raw completion as the
Backend contract says.
"""

from __future__ import annotations

import ipaddress
import os
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from typing import Any

import httpx

from p2pinfer.backends.base import (
    ChatMessage,
    Completion,
    Embeddings,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    Timings,
    TokenDelta,
    Usage,
)
from p2pinfer.backends.gguf_meta import MetadataValue
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
from p2pinfer.backends.logprob_wire import parse_entries
from p2pinfer.backends.output_format import to_ollama
from p2pinfer.backends.tool_forward import api_tools, ollama_calls_text, ollama_messages
from p2pinfer.backends.tools import grammar_format
from p2pinfer.errors import EngineResponseError, UsageError

DEFAULT_OLLAMA_URL = "http://127.0.0.1:11434"


def parse_ollama_host(host: str | None) -> str:
    """The base URL for `OLLAMA_HOST`-style text, exactly as Ollama's clients read it.

    `host`, `host:port` or `scheme://host[:port][/path]`; no port means 11434,
    except `http://x` (80) and `https://x` (443); empty means 127.0.0.1:11434.
    """
    host, port = (host or "").strip(), 11434
    scheme, _, hostport = host.partition("://")
    if not hostport:
        scheme, hostport = "http", host
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    split = urllib.parse.urlsplit(f"{scheme}://{hostport}")
    hostname = split.hostname or "127.0.0.1"
    try:
        port = split.port or port
    except ValueError:
        raise UsageError(f"invalid Ollama address {host!r}: bad port") from None
    try:
        if isinstance(ipaddress.ip_address(hostname), ipaddress.IPv6Address):
            hostname = f"[{hostname}]"
    except ValueError:
        pass
    path = split.path.strip("/")
    return f"{scheme}://{hostname}:{port}/{path}" if path else f"{scheme}://{hostname}:{port}"


def _options(params: SamplingParams) -> dict[str, Any]:
    options: dict[str, Any] = {
        "num_predict": params.max_tokens if params.max_tokens > 0 else -1,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "top_k": params.top_k,
        "min_p": params.min_p,
        "repeat_penalty": params.repeat_penalty,
        "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty,
    }
    if params.seed is not None:
        options["seed"] = params.seed
    if params.stop:
        options["stop"] = list(params.stop)
    return options


def _int(value: object) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _completion(line: dict[str, Any]) -> Completion:
    return Completion(
        finish_reason="length" if line.get("done_reason") == "length" else "stop",
        usage=Usage(_int(line.get("prompt_eval_count")), _int(line.get("eval_count"))),
        timings=Timings(
            total_ns=_int(line.get("total_duration")),
            load_ns=_int(line.get("load_duration")),
            prompt_eval_ns=_int(line.get("prompt_eval_duration")),
            eval_ns=_int(line.get("eval_duration")),
        ),
    )


class _NDJSONEvents:
    """Backend events from an Ollama NDJSON reply."""

    def __init__(self, response: httpx.Response, key: str, engine: str, timeout_s: float) -> None:
        self._lines = response.aiter_lines()
        self._key, self._engine, self._timeout_s = key, engine, timeout_s
        self._pending: list[StreamEvent] = []
        self._done = False

    def __aiter__(self) -> _NDJSONEvents:
        return self

    def _text(self, line: dict[str, Any]) -> str:
        if self._key == "message":
            message = line.get("message")
            text = message.get("content", "") if isinstance(message, dict) else None
            if isinstance(message, dict) and message.get("tool_calls") and isinstance(text, str):
                # The network carries calls as their JSON text (backends/tool_forward.py).
                text += ollama_calls_text(message["tool_calls"], self._engine)
        else:
            text = line.get("response", "")
        if not isinstance(text, str):
            raise EngineResponseError(f"the engine at {self._engine} sent a malformed chunk")
        return text

    async def __anext__(self) -> StreamEvent:
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            try:
                raw = await self._lines.__anext__()
            except StopAsyncIteration:
                self._done = True
                raise EngineResponseError(
                    f"the engine at {self._engine} ended the stream without done:true"
                ) from None
            except httpx.HTTPError as exc:
                self._done = True
                raise translate(exc, self._engine, self._timeout_s) from None
            if not raw.strip():
                continue
            line = parse_object(raw, self._engine)
            if "error" in line:
                self._done = True
                raise EngineResponseError(f"the engine failed mid-stream: {line['error']}")
            text = self._text(line)
            if text:
                self._pending.append(TokenDelta(text, parse_entries(line.get("logprobs"))))
            if line.get("done") is True:
                self._pending.append(_completion(line))
        event = self._pending.pop(0)
        if isinstance(event, Completion):
            self._done = True
        return event


class OllamaBackend:
    """An Ollama server (or anything serving its API, such as `p2pinfer engine serve`)."""

    name = "ollama"

    def __init__(
        self,
        base_url: str | None = None,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        """`base_url` None: `$OLLAMA_HOST`, else http://127.0.0.1:11434."""
        self.base_url = parse_ollama_host(
            base_url if base_url is not None else os.environ.get("OLLAMA_HOST")
        )
        self._timeout_s = timeout_s
        self._client = make_client(
            self.base_url,
            timeout_s=timeout_s,
            connect_timeout_s=connect_timeout_s,
            transport=transport,
        )

    async def _show(self, model: str) -> dict[str, Any]:
        return await get_json(
            self._client, "/api/show", self.base_url, self._timeout_s, {"model": model}
        )

    async def list_models(self) -> list[ModelInfo]:
        """/api/tags, plus /api/show per model for its context length and template."""
        tags = await get_json(self._client, "/api/tags", self.base_url, self._timeout_s)
        models = tags.get("models")
        if not isinstance(models, list):
            raise EngineResponseError(f"the engine at {self.base_url} sent a malformed model list")
        infos = []
        for entry in models:
            if not isinstance(entry, dict):
                raise EngineResponseError(f"the engine at {self.base_url} sent a malformed model")
            infos.append(await self._info(entry))
        return infos

    async def _info(self, entry: dict[str, Any]) -> ModelInfo:
        name = str(entry.get("model") or entry.get("name") or "")
        details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
        assert isinstance(details, dict)
        show = await self._show(name)
        model_info = show.get("model_info") if isinstance(show.get("model_info"), dict) else {}
        assert isinstance(model_info, dict)
        context = next((v for k, v in model_info.items() if k.endswith(".context_length")), 0)
        template = str(show.get("template") or "").strip()
        capabilities = show.get("capabilities")
        embeds = isinstance(capabilities, list) and "embedding" in capabilities
        width = next((v for k, v in model_info.items() if k.endswith(".embedding_length")), 0)
        return ModelInfo(
            name=name,
            digest=str(entry.get("digest", "")).removeprefix("sha256:"),
            family=str(details.get("family", "")),
            parameter_size=str(details.get("parameter_size", "")),
            quantization=str(details.get("quantization_level", "")),
            context_length=_int(context),
            size_bytes=_int(entry.get("size")),
            chat_template=template not in ("", "{{ .Prompt }}"),
            modified_at_ms=_parse_time_ms(entry.get("modified_at")),
            embedding_length=_int(width) if embeds else 0,
        )

    async def embed(self, model: str, inputs: Sequence[str]) -> Embeddings:
        """`/api/embed`: one L2-normalised vector per input."""
        reply = await get_json(self._client, "/api/embed", self.base_url, self._timeout_s,
                               {"model": model, "input": list(inputs)})
        return Embeddings(embedding_vectors(reply.get("embeddings"), len(inputs), self.base_url),
                          _int(reply.get("prompt_eval_count")))

    async def model_metadata(self, model: str) -> dict[str, MetadataValue]:
        """The model's `model_info` from /api/show (scalar values only)."""
        show = await self._show(model)
        info = show.get("model_info")
        values: dict[str, MetadataValue] = {}
        if isinstance(info, dict):
            for key, value in info.items():
                if isinstance(value, str | int | float | bool):
                    values[str(key)] = value
        if show.get("template"):
            values["tokenizer.chat_template"] = str(show["template"])
        return values

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        body = {
            "model": model,
            "messages": ollama_messages(messages),
            "stream": True,
            "options": _options(params),
        }
        if params.output_format is not None:
            body["format"] = to_ollama(params.output_format)
        if params.tools is not None and params.tool_choice != "none":
            # Ollama has no tool choice: a forced or required call is asked by its schema.
            body["tools"] = api_tools(params.tools)
            forced = grammar_format(params.tools, params.tool_choice)
            if forced is not None:
                body["format"] = to_ollama(forced)
        if params.top_logprobs is not None:
            body.update(logprobs=True, top_logprobs=params.top_logprobs)
        return self._stream("/api/chat", body, "message")

    def generate(
        self, model: str, prompt: str, params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        body = {
            "model": model,
            "prompt": prompt,
            "raw": True,
            "stream": True,
            "options": _options(params),
        }
        if params.output_format is not None:
            body["format"] = to_ollama(params.output_format)
        if params.top_logprobs is not None:
            body.update(logprobs=True, top_logprobs=params.top_logprobs)
        return self._stream("/api/generate", body, "response")

    @asynccontextmanager
    async def _stream(
        self, path: str, body: dict[str, Any], key: str
    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        async with (
            translated(self.base_url, self._timeout_s),
            self._client.stream("POST", path, json=body) as response,
        ):
            if response.status_code != 200:
                await response.aread()
                raise status_error(response.status_code, response.content, self.base_url)
            yield _NDJSONEvents(response, key, self.base_url, self._timeout_s)

    async def aclose(self) -> None:
        await self._client.aclose()


def _parse_time_ms(value: object) -> int:
    if not isinstance(value, str) or not value:
        return 0
    try:
        # Go writes up to nanoseconds; Python reads up to microseconds.
        text = value.replace("Z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:
            digits = "".join(c for c in rest if c.isdigit())
            tz = rest[len(digits) :]
            text = f"{head}.{digits[:6].ljust(6, '0')}{tz}"
        return int(datetime.fromisoformat(text).timestamp() * 1000)
    except ValueError:
        return 0
