"""Greedy decoding gives the same text on every path as llama-cpp-python called directly."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from p2pinfer.backends.base import Backend, ChatMessage, SamplingParams, TokenDelta
from p2pinfer.backends.models import SMOLLM2
from tests.integration.backends.conftest import MAX_TOKENS, RAW, SEED, STORY
from tests.support.backends import FRANCE, needs_engine

pytestmark = [pytest.mark.engine, needs_engine]


async def text_of(stream: Any) -> str:
    text = ""
    with trio.fail_after(120):
        async with stream as events:
            async for event in events:
                if isinstance(event, TokenDelta):
                    text += event.text
    return text


async def test_chat_and_raw_completion_match_llama_cpp(
    backend: Backend, greedy_reference: dict[str, str]
) -> None:
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, seed=SEED)
    for prompt in (STORY, FRANCE, STORY):  # repeated: no state leaks between requests
        got = await text_of(backend.chat(SMOLLM2, [ChatMessage("user", prompt)], params))
        assert got == greedy_reference[prompt]
    assert await text_of(backend.generate(SMOLLM2, RAW, params)) == greedy_reference[RAW]
    assert len(greedy_reference[STORY]) > 40  # a real answer, not an empty one
