"""The jobs a node is running and has just run, for its dashboard and `/admin/jobs`.

`JobBoard.track(backend, role=...)` wraps a Backend so that every stream it
opens is a job on the board: running while it streams (tokens so far, tokens/s
since the first token), then done or failed, kept among the recent ones. A
consumer node tracks its network backend (the job's provider, id and charge
come from `jobs.network_backend.current_job_meta`); a provider tracks the
engine its job server runs, and learns job ids from the server's records.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import trio

from p2pinfer.backends.base import (
    Backend,
    EventStream,
    StreamEvent,
    TokenDelta,
    WrappedBackend,
)
from p2pinfer.gateway.view import JobMeta, JobRole, JobsSnapshot, JobState, JobView

MetaReader = Callable[[], JobMeta | None]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass
class BoardJob:
    """One job on the board (mutable while it runs)."""

    key: int
    role: JobRole
    model: str
    started_ms: int
    provider: str = ""
    job_id: str = ""
    state: JobState = "running"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    first_token_ms: int | None = None
    finished_ms: int | None = None
    charged: int = 0
    error: str = ""
    # One request's jobs (OpenAI's `n`) share one metadata, whose charge adds up theirs:
    # this job's is what was added after it opened.
    paid_before: int = 0

    def view(self, now_ms: int) -> JobView:
        end = self.finished_ms if self.finished_ms is not None else now_ms
        tokens_per_s = 0.0
        if self.first_token_ms is not None and end > self.first_token_ms:
            # Tokens after the first, over the time since it: the generation speed.
            tokens_per_s = max(self.completion_tokens - 1, 0) * 1000 / (end - self.first_token_ms)
        return JobView(
            job_id=self.job_id, role=self.role, model=self.model, provider=self.provider,
            state=self.state, prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens, tokens_per_s=round(tokens_per_s, 2),
            charged=self.charged, started_at_ms=self.started_ms, finished_at_ms=self.finished_ms,
            error=self.error,
        )  # fmt: skip


class JobBoard:
    """Live jobs, and the last `recent_limit` finished ones (newest first)."""

    def __init__(self, *, clock_ms: Callable[[], int] = wall_ms, recent_limit: int = 100) -> None:
        self._clock = clock_ms
        self._keys = itertools.count(1)
        self.live: dict[int, BoardJob] = {}
        self.recent: deque[BoardJob] = deque(maxlen=recent_limit)

    def snapshot(self) -> JobsSnapshot:
        now = self._clock()
        live = sorted(self.live.values(), key=lambda j: j.started_ms, reverse=True)
        return JobsSnapshot(tuple(j.view(now) for j in live),
                            tuple(j.view(now) for j in self.recent))  # fmt: skip

    def track(
        self, backend: Backend, *, role: JobRole, provider: str = "",
        meta: Callable[[], MetaReader] | None = None,
    ) -> Backend:
        """`backend`, with each stream it opens shown on this board as a `role` job.

        `meta`, called when a stream opens (in the caller's task), returns a reader
        of the job's metadata (provider, job id, charge) for that stream.
        """  # fmt: skip
        return TrackedBackend(backend, self, role, provider, meta)

    def _open(self, role: JobRole, model: str, provider: str) -> BoardJob:
        job = BoardJob(next(self._keys), role, model, self._clock(), provider=provider)
        self.live[job.key] = job
        return job

    def _token(self, job: BoardJob) -> None:
        if job.first_token_ms is None:
            job.first_token_ms = self._clock()
        job.completion_tokens += 1

    def _close(self, job: BoardJob, state: JobState, error: str = "") -> None:
        job.state, job.error, job.finished_ms = state, error, self._clock()
        self.live.pop(job.key, None)
        self.recent.appendleft(job)


class TrackedBackend(WrappedBackend):
    """A Backend that puts every stream on a JobBoard (see JobBoard.track)."""

    def __init__(
        self, inner: Backend, board: JobBoard, role: JobRole, provider: str,
        meta: Callable[[], MetaReader] | None,
    ) -> None:  # fmt: skip
        super().__init__(inner)
        self._board, self._role = board, role
        self._provider, self._meta = provider, meta

    @asynccontextmanager
    async def _wrap(
        self, model: str, open_stream: Callable[[], EventStream]
    ) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        reader = self._meta() if self._meta is not None else None
        board = self._board
        job = board._open(self._role, model, self._provider)
        job.paid_before = _charged(reader)
        try:
            async with open_stream() as events:
                _update(job, reader)
                yield _Counted(events, job, board, reader)
        except BaseException as exc:
            _update(job, reader)
            if job.state == "done":  # finished; only the clean-up after it was interrupted
                board._close(job, "done")
            else:
                cancelled = isinstance(exc, trio.Cancelled | GeneratorExit)
                board._close(job, "failed", "cancelled" if cancelled else str(exc) or repr(exc))
            raise
        _update(job, reader)
        done = job.state == "done"
        board._close(job, "done" if done else "failed", "" if done else "left before the end")


def _charged(reader: MetaReader | None) -> int:
    meta = reader() if reader is not None else None
    return (meta.charged or 0) if meta is not None else 0


def _update(job: BoardJob, reader: MetaReader | None) -> None:
    meta = reader() if reader is not None else None
    if meta is not None:
        job.provider, job.job_id = meta.provider or job.provider, meta.job_id or job.job_id
        if meta.charged is not None:
            job.charged = meta.charged - job.paid_before


class _Counted:
    """The backend's events, counted onto the board as they pass."""

    def __init__(self, events: AsyncIterator[StreamEvent], job: BoardJob, board: JobBoard,
                 reader: MetaReader | None) -> None:  # fmt: skip
        self._events, self._job, self._board, self._reader = events, job, board, reader

    def __aiter__(self) -> _Counted:
        return self

    async def __anext__(self) -> StreamEvent:
        event = await self._events.__anext__()
        job = self._job
        if isinstance(event, TokenDelta):
            self._board._token(job)
            if job.completion_tokens == 1:
                _update(job, self._reader)  # the provider is known by the first token
        else:
            job.prompt_tokens = event.usage.prompt_tokens
            job.completion_tokens = event.usage.completion_tokens or job.completion_tokens
            job.state = "done" if event.finish_reason in ("stop", "length") else "failed"
            _update(job, self._reader)
        return event
