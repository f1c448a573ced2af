"""The embedding endpoints' shapes: OpenAI's `/v1/embeddings`, Ollama's `/api/embed` and
its older `/api/embeddings`. Pure: request bodies in, reply objects out.

Vectors arrive L2-normalised (`Embeddings`); `dimensions` keeps the first N values and
normalises again, as Ollama does. OpenAI's `encoding_format: "base64"` (what the
`openai` package asks for by default) is the base64 of the float32 values, little-endian.
"""

from __future__ import annotations

import base64
import math
import struct
from dataclasses import dataclass
from typing import Any

from p2pinfer.backends.base import Embeddings
from p2pinfer.backends.wire import ApiError

MAX_INPUTS = 2_048
"""Texts one request may embed (OpenAI's own limit)."""


@dataclass(frozen=True)
class EmbedRequest:
    model: str
    inputs: tuple[str, ...]
    dimensions: int | None = None
    base64: bool = False  # OpenAI's encoding_format
    single: bool = False  # /api/embeddings: one `prompt`, one `embedding`


def _model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model is required")
    return model


def _inputs(value: object) -> tuple[str, ...]:
    if value == "" or (isinstance(value, list) and "" in value):
        raise ApiError(400, "input: an empty string cannot be embedded")
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        if len(value) > MAX_INPUTS:
            raise ApiError(400, f"input: {len(value)} texts, at most {MAX_INPUTS}")
        return tuple(value)
    if isinstance(value, list) and not value:
        raise ApiError(400, "input: an empty list")
    raise ApiError(400, "invalid input type: expected a string or an array of strings")


def _dimensions(body: dict[str, Any]) -> int | None:
    value = body.get("dimensions")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, "dimensions: expected a positive integer")
    return value


def parse_openai(body: dict[str, Any]) -> EmbedRequest:
    """A `/v1/embeddings` body."""
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format: expected 'float' or 'base64'")
    return EmbedRequest(_model(body), _inputs(body.get("input")), _dimensions(body),
                        base64=encoding == "base64")


def parse_ollama(body: dict[str, Any]) -> EmbedRequest:
    """An `/api/embed` body (`truncate` is always on: inputs are cut to the context)."""
    return EmbedRequest(_model(body), _inputs(body.get("input")), _dimensions(body))


def parse_ollama_legacy(body: dict[str, Any]) -> EmbedRequest:
    """An `/api/embeddings` body: one `prompt`."""
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise ApiError(400, "invalid prompt: expected a string")
    return EmbedRequest(_model(body), (prompt,), single=True)


def shaped(embeddings: Embeddings, dimensions: int | None) -> list[list[float]]:
    """The vectors, cut to `dimensions` and normalised again when it is set."""
    vectors = [list(v) for v in embeddings.vectors]
    if dimensions is None:
        return vectors
    if vectors and dimensions > len(vectors[0]):
        raise ApiError(400, f"dimensions {dimensions} is over the model's {len(vectors[0])}")
    cut = [v[:dimensions] for v in vectors]
    return [[x / norm for x in v] if (norm := math.sqrt(sum(x * x for x in v))) else v
            for v in cut]


def openai_reply(model: str, request: EmbedRequest, embeddings: Embeddings) -> dict[str, Any]:
    """The `/v1/embeddings` reply object."""
    data = []
    for index, vector in enumerate(shaped(embeddings, request.dimensions)):
        value: list[float] | str = vector
        if request.base64:
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "embedding": value, "index": index})
    tokens = embeddings.prompt_tokens
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def ollama_reply(model: str, request: EmbedRequest, embeddings: Embeddings,
                 total_ns: int) -> dict[str, Any]:
    """The `/api/embed` reply object (or `/api/embeddings`' for a `single` request)."""
    vectors = shaped(embeddings, request.dimensions)
    if request.single:
        return {"embedding": vectors[0] if vectors else []}
    reply: dict[str, Any] = {"model": model, "embeddings": vectors}
    if total_ns:
        reply["total_duration"] = total_ns
    if embeddings.prompt_tokens:
        reply["prompt_eval_count"] = embeddings.prompt_tokens
    return reply
