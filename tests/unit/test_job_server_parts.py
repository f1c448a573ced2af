"""Pure parts of the job server and client: admission, faults, the outbox, ranking."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import trio
import trio.testing

from p2pinfer.backends.base import SamplingParams
from p2pinfer.errors import UsageError
from p2pinfer.gateway.config import parse_bind
from p2pinfer.jobs.admission import Busy, ModelSlots
from p2pinfer.jobs.candidates import MAX_PACES, PACE_MIN_TOKENS, PACE_WEIGHT, CandidateSearch
from p2pinfer.jobs.generation import Outbox
from p2pinfer.jobs.job_types import Candidate
from p2pinfer.jobs.network_backend import job_params
from p2pinfer.testing.faults import Fault, parse_fault


def test_faults_parse_from_their_flag_text() -> None:
    assert parse_fault("crash-after=3") == Fault("crash-after", count=3)
    assert parse_fault("slow=250") == Fault("slow", count=250)
    assert parse_fault("substitute-model=tiny:latest") == Fault("substitute-model",
                                                                  model="tiny:latest")
    assert parse_fault("truncate") == Fault("truncate")
    assert str(parse_fault("garbage")) == "garbage"
    assert parse_fault("inflate") == Fault("inflate")
    for bad in ("crash-after=0", "crash-after", "slow=fast", "explode", "truncate=2"):
        with pytest.raises(UsageError):
            parse_fault(bad)


async def test_slots_run_then_queue_then_refuse_busy_with_a_retry_hint() -> None:
    slots = ModelSlots(concurrency=1, queue=1)
    release, queued_ran = trio.Event(), trio.Event()

    async def hold() -> None:
        async with slots.slot():
            await release.wait()

    async def queued() -> None:
        async with slots.slot():
            queued_ran.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.testing.wait_all_tasks_blocked()
        assert (slots.active, slots.utilisation_pm) == (1, 1000)
        nursery.start_soon(queued)
        await trio.testing.wait_all_tasks_blocked()
        assert slots.waiting == 1
        with pytest.raises(Busy) as refused:
            slots.check()
        assert refused.value.retry_after_ms >= 100
        release.set()
        await queued_ran.wait()
    assert (slots.active, slots.waiting, slots.utilisation_pm) == (0, 0, 0)


async def test_the_outbox_hands_over_everything_pending_at_once() -> None:
    box = Outbox()
    box.put("a")
    assert await box.take() == ("a", 1)  # one token waiting: it goes alone, at once
    for text in ("b", "c", "d"):
        box.put(text)
    assert await box.take() == ("bcd", 3)  # produced during a write: one Chunk
    box.close()
    assert await box.take() == ("", 0)


def test_ranking_prefers_cheap_reputable_near_providers() -> None:
    def candidate(price: int, rtt: float | None, score: int) -> Candidate:
        return Candidate("p", "m", price, rtt, score, 0, 0.0, "catalog")

    assert candidate(500, 1.0, 950).rank_key() < candidate(900, 1.0, 950).rank_key()
    assert candidate(500, 1.0, 950).rank_key() < candidate(500, 1.0, 700).rank_key()
    assert candidate(500, 5.0, 950).rank_key() < candidate(500, 300.0, 950).rank_key()


def test_ranking_weighs_the_pace_measured_here_not_the_claimed_one() -> None:
    def candidate(price: int, claimed: float, measured: float | None) -> Candidate:
        return Candidate("p", "m", price, 10.0, 950, 0, claimed, "catalog",
                         observed_tps=measured)

    # Measured at 2 tokens a second, 3x cheaper does not make up for it; 10x does.
    assert candidate(300, 1.0, 100.0).rank_key() < candidate(100, 1000.0, 2.0).rank_key()
    assert candidate(1000, 1.0, 100.0).rank_key() > candidate(100, 1000.0, 2.0).rank_key()
    # A claim changes nothing; among the fast, price still decides.
    assert candidate(100, 1.0, None).rank_key() == candidate(100, 1e6, None).rank_key()
    assert candidate(100, 1.0, 80.0).rank_key() < candidate(120, 1.0, 200.0).rank_key()


def test_a_pace_comes_from_answers_long_enough_and_moves_with_the_recent_ones() -> None:
    search = CandidateSearch()
    search._pace = OrderedDict()
    search.observe_pace("p", "m", PACE_MIN_TOKENS - 1, 0.01)  # too short to say
    assert search._pace == {}
    search.observe_pace("p", "m", 100, 1.0)
    search.observe_pace("p", "m", 10, 1.0)
    assert search._pace[("p", "m")] == pytest.approx(100 + PACE_WEIGHT * (10 - 100))
    for n in range(MAX_PACES + 5):
        search.observe_pace(f"q{n}", "m", 10, 1.0)
    assert len(search._pace) == MAX_PACES and ("p", "m") not in search._pace


def test_backend_parameters_map_into_the_wires_bounds() -> None:
    params = job_params(SamplingParams(max_tokens=-1, temperature=20.0, top_p=2.0, top_k=-5,
                                       seed=2**40 + 7, stop=("", "x")))
    assert params.max_tokens == 1024 and params.temperature == 10.0 and params.top_p == 1.0
    assert params.top_k == 0 and params.seed == 7 and params.stop == ("x",)


def test_gateway_addresses_parse_or_are_refused() -> None:
    assert parse_bind("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_bind("[::1]:8080") == ("::1", 8080)
    assert parse_bind(":80") == ("127.0.0.1", 80)  # no host: loopback
    for bad in ("localhost", "host:99999", "host:port"):
        with pytest.raises(UsageError):
            parse_bind(bad)
