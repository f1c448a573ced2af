"""What a gateway reply's job fields say while its events stream (NetworkBackend's
`_Events`, with a FAKE job): the charge only once the Completion is produced, even for a
job already complete when its first piece was read (a streamed reply's headers are built
at that piece: they must never carry a charge one time and not the next)."""

from __future__ import annotations

from types import SimpleNamespace

from p2pinfer.backends.base import Completion, TokenDelta
from p2pinfer.jobs.job_types import TextDelta
from p2pinfer.jobs.network_backend import NetworkJobSlot, _Events


class FakeDoneJob:
    """A job whose whole answer (two pieces) and outcome arrived in one read."""

    provider, job_id, failovers, price_per_1k, path = "12D3KooWP", "ab" * 16, (), 200, "direct"

    def __init__(self) -> None:
        self.outcome = SimpleNamespace(charged=42, finish_reason="stop", prompt_tokens=3,
                                       completion_tokens=2, total_ms=5.0)
        self._rest = [TextDelta("lo"), None]

    async def next_delta(self) -> TextDelta | None:
        return self._rest.pop(0)


async def test_the_charge_is_there_only_with_the_completion() -> None:
    meta = NetworkJobSlot()
    events = _Events(FakeDoneJob(), TextDelta("Hel"), meta)  # type: ignore[arg-type]
    assert meta.job_id == "ab" * 16 and meta.price_per_1k == 200 and meta.charged is None
    assert isinstance(await anext(events), TokenDelta) and meta.charged is None
    assert isinstance(await anext(events), TokenDelta) and meta.charged is None
    assert isinstance(await anext(events), Completion) and meta.charged == 42
