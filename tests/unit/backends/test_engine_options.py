"""`--engine-option KEY=VALUE`: the embedded engine's settings, typed, and refused elsewhere."""

from __future__ import annotations

import pytest

from p2pinfer.backends.factory import make_backend, parse_engine_option
from p2pinfer.errors import UsageError


def test_engine_options_are_typed() -> None:
    assert parse_engine_option("flash_attn=true") == ("flash_attn", True)
    assert parse_engine_option("n_threads = 2") == ("n_threads", 2)
    assert parse_engine_option("rope_freq_scale=0.5") == ("rope_freq_scale", 0.5)


@pytest.mark.parametrize("bad", ["flash_attn", "no_such_key=1", "type_k=q8_0", "=1"])
def test_a_bad_engine_option_names_the_accepted_keys(bad: str) -> None:
    with pytest.raises(UsageError, match="engine-option"):
        parse_engine_option(bad)


def test_engine_options_apply_to_the_embedded_engine_only() -> None:
    with pytest.raises(UsageError, match="embedded engine only"):
        make_backend("ollama=http://127.0.0.1:1", engine_options=[("n_threads", 2)])
