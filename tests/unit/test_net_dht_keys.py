"""A model's DHT key is the sha256 of `p2pinfer/model/<name>`, whatever the name."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from libp2p.kad_dht.kad_dht import _encode_key

from p2pinfer.net.dht import model_key, model_key_bytes


@given(st.text(min_size=1, max_size=64))
def test_libp2p_stores_the_record_under_the_sha256_multihash(name: str) -> None:
    digest = hashlib.sha256(f"p2pinfer/model/{name}".encode()).digest()
    assert _encode_key(model_key(name)) == b"\x12\x20" + digest == model_key_bytes(name)


def test_distinct_models_have_distinct_keys() -> None:
    assert model_key("llama3:8b") != model_key("llama3:70b")
