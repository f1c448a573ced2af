"""The embedded engine on its own: the tiny generated model, queueing, limits."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import trio

from p2pinfer.backends.base import ChatMessage, Completion, SamplingParams, TokenDelta
from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import SMOLLM2, ModelSource
from p2pinfer.errors import EngineResponseError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.generation import Outbox, run_generation
from p2pinfer.protocol.messages import ChatTurn, JobParams, JobRequest
from p2pinfer.verify.compare import DEFAULT_THRESHOLDS, Verdict, likelihood_verdict
from tests.support.backends import ENGINE_READY, FRANCE, needs_engine, smollm2_source

pytestmark = [
    pytest.mark.engine,
    pytest.mark.skipif(not ENGINE_READY, reason="needs llama-cpp-python"),
]

GREEDY = SamplingParams(max_tokens=40, temperature=0.0, seed=7)


def tiny_engine(tiny_model: Path, **options: object) -> EmbeddedBackend:
    return EmbeddedBackend([ModelSource("tiny:latest", tiny_model)], **options)  # type: ignore[arg-type]


async def run(
    engine: EmbeddedBackend, prompt: str, params: SamplingParams = GREEDY
) -> tuple[str, Completion]:
    text, done = "", None
    with trio.fail_after(30):
        async with engine.generate("tiny", prompt, params) as events:
            async for event in events:
                if isinstance(event, TokenDelta):
                    text += event.text
                else:
                    done = event
    assert done is not None
    return text, done


async def test_the_tiny_model_is_deterministic_across_engines(tiny_model: Path) -> None:
    first, second = tiny_engine(tiny_model), tiny_engine(tiny_model)
    a, done = await run(first, "Hello")
    b, _ = await run(second, "Hello")
    again, _ = await run(first, "Hello")  # after other work on the same engine
    assert a == b == again and done.usage.completion_tokens > 0
    info = (await first.list_models())[0]
    assert (info.name, info.family, info.quantization) == ("tiny:latest", "llama", "F32")


async def test_a_prompt_longer_than_the_context_fails_at_open_and_the_engine_goes_on(
    tiny_model: Path,
) -> None:
    engine = tiny_engine(tiny_model, n_ctx=64)
    with pytest.raises(EngineResponseError, match="tiny:latest"):
        async with engine.generate("tiny", "x" * 500, GREEDY):
            pass
    _, done = await run(engine, "Hi", SamplingParams(max_tokens=5, temperature=0.0))
    assert done.usage.completion_tokens <= 5


async def test_concurrent_requests_queue_and_all_complete(tiny_model: Path) -> None:
    engine = tiny_engine(tiny_model)
    results: list[str] = []

    async def one() -> None:
        results.append((await run(engine, "Hello"))[0])

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(one)
    assert len(results) == 4 and len(set(results)) == 1
    assert engine.running == 0


async def test_errors_in_the_callers_block_come_out_unwrapped(tiny_model: Path) -> None:
    engine = tiny_engine(tiny_model)

    class Mine(Exception):
        pass

    with pytest.raises(Mine):
        async with engine.generate("tiny", "Hello", GREEDY) as events:
            async for _ in events:
                raise Mine()
    assert engine.running == 0


async def test_chat_uses_the_model_template_and_reports_timings(tiny_model: Path) -> None:
    engine = tiny_engine(tiny_model)
    with trio.fail_after(30):
        async with engine.chat("tiny", [ChatMessage("user", "hi")], GREEDY) as events:
            done = [e async for e in events][-1]
    assert isinstance(done, Completion)
    # The ChatML wrapping makes the prompt much longer than "hi".
    assert done.usage.prompt_tokens > 20
    assert done.timings.total_ns >= done.timings.prompt_eval_ns + done.timings.eval_ns > 0
    assert done.timings.load_ns > 0  # this request loaded the model



async def test_the_engine_holds_the_second_token_until_the_first_is_taken(
    model_cache: Path,
) -> None:
    # While the caller passes the first token on (the HTTP server writes it), the
    # worker thread leaves it the CPU instead of evaluating the next token.
    # (SmolLM2: the tiny model's bytes are no UTF-8, so its text comes out late.)
    engine = EmbeddedBackend([smollm2_source()], cache_dir=model_cache, first_token_wait_s=60.0)
    params = SamplingParams(max_tokens=8, temperature=0.0, seed=7)
    with trio.fail_after(60):
        async with engine.generate("smollm2:135m", "Once upon a time", params) as events:
            first = await events.__anext__()
            sampled = engine.tokens_generated
            await trio.sleep(0.2)  # room for a free-running engine to go on (it must not)
            held = engine.tokens_generated
            rest = [event async for event in events]
    await engine.aclose()
    assert isinstance(first, TokenDelta) and held == sampled == 1
    done = rest[-1]
    assert isinstance(done, Completion) and done.usage.completion_tokens == 8
@needs_engine
async def test_a_provider_holds_the_second_token_until_the_first_is_on_the_wire(
    model_cache: Path,
) -> None:
    # The job server's generation hands the first token to its writer and waits until
    # the writer has sent it (`Outbox.first_sent`); the engine's worker waits meanwhile,
    # so the Chunk's encryption and write do not share the CPU with the next token.
    engine = EmbeddedBackend([smollm2_source()], cache_dir=model_cache, first_token_wait_s=60.0)
    [info] = await engine.list_models()
    request = JobRequest(
        job_id=bytes(16), provider=NodeIdentity.generate().peer_id, model=info.name, kind="chat",
        messages=(ChatTurn("user", "Once upon a time"),), max_price_per_1k=500,
        issued_at=0, expires_at=1, params=JobParams(max_tokens=8, temperature=0.0, seed=7))
    outbox = Outbox()
    held: list[int] = []

    async def writer() -> None:  # as JobServer._write_loop, slow to send the first chunk
        await outbox.take()
        await trio.sleep(0.2)  # room for a free-running engine to go on (it must not)
        held.append(engine.tokens_generated)
        outbox.first_sent.set()
        while (await outbox.take())[1]:
            pass

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            done = await run_generation(engine, request, info, outbox, first_sent_wait_s=60.0)
    await engine.aclose()
    assert held == [1]
    assert done.completion_tokens == 8 and outbox.tokens == 8


@needs_engine
async def test_scoring_finds_the_engines_own_greedy_answer_and_rejects_noise(
    engine: EmbeddedBackend,
) -> None:
    turns = [ChatMessage("user", FRANCE)]
    params = SamplingParams(max_tokens=24, temperature=0.0, top_k=1, seed=7)
    with trio.fail_after(120):
        async with engine.chat(SMOLLM2, turns, params) as events:
            answer = "".join([e.text async for e in events if isinstance(e, TokenDelta)])
        own = await engine.score_chat(SMOLLM2, turns, answer)
        noise = await engine.score_chat(SMOLLM2, turns, "qwertyuiop asdfghjkl zxcvbnm " * 2)
        raw = await engine.score_generate(SMOLLM2, FRANCE, answer)
        # Scoring leaves no state behind: the same request gives the same answer.
        async with engine.chat(SMOLLM2, turns, params) as events:
            again = "".join([e.text async for e in events if isinstance(e, TokenDelta)])
    assert own is not None and noise is not None and raw is not None
    assert own.tokens > 0 and own.prompt_tokens > raw.prompt_tokens  # the chat template
    margin = DEFAULT_THRESHOLDS.greedy_gap_milli
    assert all(gap <= margin for gap in own.gaps_milli)  # its own greedy choices, to drift
    assert own.end_logprob_milli > DEFAULT_THRESHOLDS.end_logprob_milli  # it stopped there
    judge = partial(likelihood_verdict, thresholds=DEFAULT_THRESHOLDS, greedy=True)
    assert judge(own, claimed_stop=True) is Verdict.CONSISTENT
    assert judge(noise, claimed_stop=False) is Verdict.INCONSISTENT
    assert sum(noise.logprobs_milli) / noise.tokens < sum(own.logprobs_milli) / own.tokens
    assert again == answer


async def test_a_text_that_lost_bytes_is_not_scored(tiny_model: Path) -> None:
    engine = tiny_engine(tiny_model)
    with trio.fail_after(30):
        # U+FFFD: the engine could not decode some bytes, so the tokens are not in the text.
        assert await engine.score_generate("tiny", "Hello", "ab\ufffdcd") is None
        text, _ = await run(engine, "Hello")  # and the engine goes on
    assert text == (await run(tiny_engine(tiny_model), "Hello"))[0]
