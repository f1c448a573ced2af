"""What the API server's routes share (`api/server.py` builds them): the served
backend, the models used recently (for `/api/ps`), the host's reply hooks, and the
embeddings both APIs serve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from p2pinfer.api import embed_wire
from p2pinfer.api.http_stream import ReplyHeaders
from p2pinfer.backends.base import Backend, Embedder, Embeddings, ModelInfo, StreamEvent
from p2pinfer.backends.models import find_model
from p2pinfer.backends.wire import ApiError, Clock, FinalFields
from p2pinfer.errors import ModelNotFound

FOREVER = timedelta(days=365 * 100)
DEFAULT_KEEP_ALIVE = timedelta(minutes=5)


@dataclass
class ServerState:
    backend: Backend
    clock: Clock
    reply_headers: ReplyHeaders | None = None
    reply_fields: FinalFields | None = None
    # /api/ps: models used recently, with when they expire (keep_alive).
    loaded: dict[str, tuple[ModelInfo, datetime]] = field(default_factory=dict)

    async def find(self, requested: str) -> ModelInfo:
        """The served model a request names; ApiError(404) if none."""
        try:
            return await find_model(self.backend, requested)
        except ModelNotFound:
            raise ApiError(404, f"model '{requested}' not found") from None

    def touch(self, info: ModelInfo, keep_alive: timedelta | None) -> None:
        if keep_alive is not None and keep_alive <= timedelta(0):
            self.loaded.pop(info.name, None)
            return
        self.loaded[info.name] = (info, self.clock() + (keep_alive or FOREVER))

    async def embeddings(
        self, request: embed_wire.EmbedRequest
    ) -> tuple[Embeddings, dict[str, str]]:
        """The vectors and the reply headers for them (a gateway's job headers)."""
        info = await self.find(request.model)
        backend = self.backend
        if not isinstance(backend, Embedder) or not info.embedding_length:
            raise ApiError(400, f'"{request.model}" does not support embeddings')
        result = await backend.embed(info.name, request.inputs)
        self.touch(info, DEFAULT_KEEP_ALIVE)
        headers = self.reply_headers(_no_events(), None) if self.reply_headers else ()
        return result, dict(headers)


async def _no_events() -> AsyncIterator[StreamEvent]:
    return
    yield  # an async generator that yields nothing
