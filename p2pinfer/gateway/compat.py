"""What the gateway offers of the OpenAI and Ollama APIs, and what it refuses, in ONE place.

Two tables:

- `REFUSED_ENDPOINTS`: endpoints of either API that the network gateway does not
  offer (model management, images, audio...). A request to one gets a
  404 in that API's error shape saying so, instead of a bare "Not Found".
- `PARAMETERS`: per job endpoint, the request parameters the network's job
  request does not carry. A request that sets one to anything but a value that asks
  for nothing (`neutral`: `n: 1`, `presence_penalty: 0`, `functions: []`...) gets a 400
  naming it (OpenAI: `param` and `code: "unsupported_parameter"`), checked before
  any provider is asked: never silently dropped. `IGNORED` parameters change nothing
  a provider computes (hardware knobs of the provider's own machine, an end-user id);
  a reply names the ones it ignored in `X-P2PInfer-Ignored`.

When the network learns to carry one (a new `JobParams` field, a new job kind), its
line here goes, and docs/gateway.md's compatibility table follows (a test walks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from p2pinfer import json_depth
from p2pinfer.backends.wire import dumps

IGNORED_HEADER = "X-P2PInfer-Ignored"

_MODELS = "models come from the network's providers (GET /api/tags or /v1/models lists them)"
_NOT_A_JOB = "the network's jobs are text generation (chat or completion) and embeddings only"


@dataclass(frozen=True)
class RefusedEndpoint:
    """An endpoint of the OpenAI (`/v1/...`) or Ollama (`/api/...`) API not offered here."""

    method: str
    path: str  # exact, or a prefix when it ends with "*"
    reason: str

    def matches(self, path: str) -> bool:
        if self.path.endswith("*"):
            return path.startswith(self.path[:-1])
        return path == self.path


REFUSED_ENDPOINTS: tuple[RefusedEndpoint, ...] = (
    RefusedEndpoint("POST", "/api/pull", _MODELS),
    RefusedEndpoint("POST", "/api/push", _MODELS),
    RefusedEndpoint("POST", "/api/create", _MODELS),
    RefusedEndpoint("DELETE", "/api/delete", _MODELS),
    RefusedEndpoint("POST", "/api/copy", _MODELS),
    RefusedEndpoint("POST", "/api/blobs/*", _MODELS),
    RefusedEndpoint("POST", "/v1/responses*", _NOT_A_JOB + " (use /v1/chat/completions)"),
    RefusedEndpoint("POST", "/v1/messages", _NOT_A_JOB + " (use /v1/chat/completions)"),
    RefusedEndpoint("POST", "/v1/images/*", _NOT_A_JOB),
    RefusedEndpoint("POST", "/v1/audio/*", _NOT_A_JOB),
    RefusedEndpoint("POST", "/v1/moderations", _NOT_A_JOB),
    RefusedEndpoint("POST", "/v1/files*", "the network stores no files"),
    RefusedEndpoint("POST", "/v1/uploads*", "the network stores no files"),
    RefusedEndpoint("POST", "/v1/batches*", "the network runs no batches"),
    RefusedEndpoint("POST", "/v1/fine_tuning/*", "the network trains no models"),
    RefusedEndpoint("POST", "/v1/assistants*", "the network keeps no assistants or threads"),
    RefusedEndpoint("POST", "/v1/threads*", "the network keeps no assistants or threads"),
    RefusedEndpoint("POST", "/v1/vector_stores*", "the network stores no files"),
    RefusedEndpoint("POST", "/v1/realtime*", _NOT_A_JOB),
)


@dataclass(frozen=True)
class Parameter:
    """A request parameter the network does not carry: `name` is a body field,
    `options.X` (Ollama's options) or `messages[].X` (a field of any message)."""

    name: str
    neutral: tuple[Any, ...] = (None, False, 0, "", [], {})
    reason: str = "the network's job request does not carry it"


_NONE = (None,)
_FALSE = (None, False)
_ZERO = (None, 0)
_ONE = (None, 1)
_TOOLS = "legacy function calling is not carried by the network (use tools and tool_choice)"
_IMAGES = "images are not carried by the network's job request"
_PENALTY = "this sampler is not carried by the network's job request (temperature, top_p, " \
           "top_k, min_p, seed, stop, a token limit and the repeat/presence/frequency " \
           "penalties are)"

_OLLAMA_OPTIONS = (
    Parameter("options.num_ctx", _NONE, "the provider serves the context length it advertises "
              "(/api/show: model_info)"),
    Parameter("options.typical_p", _ONE, _PENALTY),
    Parameter("options.repeat_last_n", (None, 64), _PENALTY),
    Parameter("options.penalize_newline", _NONE, _PENALTY),
    Parameter("options.tfs_z", _ONE, _PENALTY),
    Parameter("options.mirostat", _ZERO, _PENALTY),
    Parameter("options.mirostat_tau", (None, 5), _PENALTY),
    Parameter("options.mirostat_eta", (None, 0.1), _PENALTY),
    Parameter("options.num_keep", _NONE),
)
_OLLAMA_COMMON = (
    Parameter("think", _FALSE, "thinking is not carried by the network's job request"),
    *_OLLAMA_OPTIONS,
)
_OPENAI_COMMON = (
    Parameter("logit_bias", (None, {})),
)

#: Per job endpoint, the parameters refused unless neutral.
PARAMETERS: dict[str, tuple[Parameter, ...]] = {
    "/api/generate": (
        *_OLLAMA_COMMON,
        Parameter("suffix", (None, ""), "fill-in-the-middle is not carried by the network"),
        Parameter("template", (None, ""), "the provider applies the model's own template"),
        Parameter("context", (None, []), "a context of token ids is not carried by the network"),
        Parameter("images", (None, []), _IMAGES),
    ),
    "/api/chat": (
        *_OLLAMA_COMMON,
        Parameter("messages[].images", (None, []), _IMAGES),
        Parameter("messages[].thinking", (None, ""), "thinking is not carried by the network"),
    ),
    "/v1/chat/completions": (
        *_OPENAI_COMMON,
        Parameter("store", _FALSE, "the network stores no completions"),
        Parameter("functions", (None, []), _TOOLS),
        Parameter("function_call", (None, "none"), _TOOLS),
        Parameter("audio", _NONE, "audio is not carried by the network"),
        Parameter("modalities", (None, ["text"]), "the network's jobs answer text only"),
        Parameter("prediction", _NONE, "predicted outputs are not carried by the network"),
        Parameter("reasoning_effort", _NONE, "reasoning is not carried by the network"),
        Parameter("web_search_options", _NONE, "the network does no web search"),
        Parameter("messages[].function_call", _NONE, _TOOLS),
        Parameter("messages[].name", (None, ""), "message names are not carried by the network"),
    ),
    "/api/embed": (
        Parameter("truncate", (None, True), "inputs are always cut to the model's context "
                  "(`truncate: false`, an error instead, is not carried)"),
    ),
    "/v1/completions": (
        *_OPENAI_COMMON,
        Parameter("echo", _FALSE, "echoing the prompt is not carried by the network"),
        Parameter("best_of", _ONE, "the network runs one choice a job"),
        Parameter("suffix", (None, ""), "fill-in-the-middle is not carried by the network"),
    ),
}

#: Accepted and ignored: they tune the provider's own machine, or identify an end user;
#: what the provider computes is the same. A reply names those it ignored.
IGNORED: dict[str, tuple[str, ...]] = {
    path: tuple(f"options.{o}" for o in (
        "num_batch", "num_gpu", "main_gpu", "num_thread", "numa", "use_mmap", "use_mlock",
        "low_vram", "f16_kv", "vocab_only", "logits_all"))
    for path in ("/api/generate", "/api/chat")
}  # fmt: skip
IGNORED.update({"/v1/chat/completions": ("user", "metadata"), "/v1/completions": ("user",)})


def _same(value: Any, neutral: Any) -> bool:
    # bool is an int in Python: True must not pass as 1, nor False as 0.
    if isinstance(value, bool) or isinstance(neutral, bool):
        return type(value) is type(neutral) and value == neutral
    return bool(value == neutral)


def _is_neutral(value: Any, neutral: tuple[Any, ...]) -> bool:
    return value is None or any(_same(value, n) for n in neutral)


def _values(body: dict[str, Any], name: str) -> list[Any]:
    """The values a body gives parameter `name` (several for a `messages[].X`)."""
    if name.startswith("options."):
        options = body.get("options")
        key = name.removeprefix("options.")
        return [options[key]] if isinstance(options, dict) and key in options else []
    if name.startswith("messages[]."):
        messages = body.get("messages")
        key = name.removeprefix("messages[].")
        if not isinstance(messages, list):
            return []
        return [m[key] for m in messages if isinstance(m, dict) and key in m]
    return [body[name]] if name in body else []


def refused_parameter(path: str, body: dict[str, Any]) -> Parameter | None:
    """The first parameter of `body` that `path` refuses (set to a non-neutral value)."""
    for parameter in PARAMETERS.get(path, ()):
        if any(not _is_neutral(v, parameter.neutral) for v in _values(body, parameter.name)):
            return parameter
    return None


def ignored_parameters(path: str, body: dict[str, Any]) -> list[str]:
    """The parameters of `body` that `path` accepts and ignores."""
    return [name for name in IGNORED.get(path, ()) if _values(body, name)]


def refused_endpoint(path: str) -> RefusedEndpoint | None:
    """The table's entry for an endpoint not offered here, if `path` is one."""
    return next((e for e in REFUSED_ENDPOINTS if e.matches(path)), None)


def parameter_error(path: str, parameter: Parameter) -> bytes:
    """The 400 body for a refused parameter, in the shape of `path`'s API."""
    message = (f"parameter '{parameter.name}' is not supported by the p2pinfer network "
               f"gateway: {parameter.reason}")
    if path.startswith("/v1/"):
        return dumps({"error": {"message": message, "type": "invalid_request_error",
                                "param": parameter.name, "code": "unsupported_parameter"}})
    return dumps({"error": message})


def not_found_body(method: str, path: str) -> tuple[int, bytes]:
    """The 404 for a path no route serves: the API's shape, naming an endpoint not offered."""
    entry = refused_endpoint(path)
    if entry is not None:
        message = (f"the p2pinfer network gateway does not offer {entry.method} {entry.path}: "
                   f"{entry.reason}")
        code: str | None = "unsupported_endpoint"
    elif path.startswith("/v1/"):
        message, code = f"Invalid URL ({method} {path})", None
    else:
        message, code = "404 page not found", None
    if path.startswith("/v1/"):
        return 404, dumps({"error": {"message": message, "type": "invalid_request_error",
                                     "param": None, "code": code}})
    return 404, dumps({"error": message})


async def not_found(request: Request, exc: Exception) -> Response:
    """Starlette handler for 404 and 405: JSON in the path's API shape (see not_found_body)."""
    path, method = request.url.path, request.method
    status = getattr(exc, "status_code", 404)
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 405:
        message = f"method {method} not allowed on {path}"
        body = dumps({"error": {"message": message, "type": "invalid_request_error",
                                "param": None, "code": None}}) if path.startswith("/v1/") \
            else dumps({"error": message})
    else:
        status, body = not_found_body(method, path)
    return Response(body, status_code=status, headers=headers,
                    media_type="application/json; charset=utf-8")


class ParameterCheck:
    """ASGI middleware for the job endpoints: 400 for a parameter the network does not
    carry (before the app, so before any provider is asked); names ignored ones in a
    reply header. Bodies that are not a JSON object pass to the app, which refuses them."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or scope["method"] != "POST" or path not in PARAMETERS:
            await self.app(scope, receive, send)
            return
        first = await receive()
        body = first.get("body", b"") if first["type"] == "http.request" else b""
        try:
            parsed = json_depth.loads(body) if not first.get("more_body") else None
        except ValueError:
            parsed = None
        if isinstance(parsed, dict):
            refused = refused_parameter(path, parsed)
            if refused is not None:
                payload = parameter_error(path, refused)
                await send({"type": "http.response.start", "status": 400, "headers": [
                    (b"content-type", b"application/json; charset=utf-8"),
                    (b"content-length", str(len(payload)).encode())]})
                await send({"type": "http.response.body", "body": payload, "more_body": False})
                return
            ignored = ignored_parameters(path, parsed)
            if ignored:
                send = _with_header(send, IGNORED_HEADER, ", ".join(ignored))
        await self.app(scope, _replay_first(first, receive), send)


def _with_header(send: Send, name: str, value: str) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            header = (name.lower().encode(), value.encode("latin-1"))
            message = {**message, "headers": [*message.get("headers", ()), header]}
        await send(message)

    return sending


def _replay_first(first: Message, receive: Receive) -> Receive:
    pending = [first]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay
