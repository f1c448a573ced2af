"""Embed jobs on the wire (issue 17): the request kind, the vectors' text and its decoding
against a hostile provider, the advert field, what may be charged, the HTTP shapes and the
checker's comparison."""

from __future__ import annotations

import base64
import math
import os
import struct

import pytest

from p2pinfer.api.embed_wire import (
    EmbedRequest,
    ollama_reply,
    openai_reply,
    parse_ollama,
    parse_ollama_legacy,
    parse_openai,
)
from p2pinfer.backends.base import Embeddings
from p2pinfer.backends.wire import ApiError
from p2pinfer.errors import ValidationError
from p2pinfer.identity import NodeIdentity
from p2pinfer.protocol import Advert, AdvertHardware, JobRequest, ModelOffer, decode, sign
from p2pinfer.protocol.charges import completion_token_bound, max_charge, prompt_token_bound
from p2pinfer.protocol.embedding import MAX_EMBED_INPUTS, decode_vectors, encode_vectors
from p2pinfer.protocol.schema import from_wire, to_wire
from p2pinfer.verify.compare import Verdict, compare_embeddings

CONSUMER, PROVIDER = NodeIdentity.generate(), NodeIdentity.generate()
VECTORS = [[0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]


def embed_request(**changes: object) -> JobRequest:
    fields: dict[str, object] = dict(
        job_id=os.urandom(16), provider=PROVIDER.peer_id, model="m", kind="embed",
        max_price_per_1k=1000, issued_at=1, expires_at=2, inputs=("héllo", "world"))
    fields.update(changes)
    return JobRequest(**fields)  # type: ignore[arg-type]


def test_vectors_round_trip_through_their_text() -> None:
    text = encode_vectors(VECTORS)
    assert text.count("\n") == 2 and text.endswith("\n")
    assert [[round(x, 6) for x in v] for v in decode_vectors(text, 2)] == VECTORS


def b64(*values: float) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


@pytest.mark.parametrize("text", [
    "",  # no vectors
    b64(1.0) + "\n",  # one vector, two inputs
    b64(1.0) + "\n" + b64(1.0) + "\n" + b64(1.0) + "\n",  # three
    b64(1.0) + "\n" + b64(1.0),  # not newline-ended
    b64(1.0) + "\n" + "!!!!\n",  # not base64
    b64(1.0) + "\n" + base64.b64encode(b"abc").decode() + "\n",  # not whole floats
    b64(1.0) + "\n" + b64(math.nan) + "\n",  # not finite
    b64(1.0, 2.0) + "\n" + b64(1.0) + "\n",  # different lengths
    b64(1.0) + "\n" + "A" * 200_000 + "\n",  # a vector too long to decode
    "\n\n",  # empty vectors
])
def test_a_hostile_providers_output_is_refused(text: str) -> None:
    with pytest.raises(ValidationError):
        decode_vectors(text, 2)


def test_an_embed_request_travels_signed() -> None:
    request = decode(sign(embed_request(), CONSUMER).raw).msg
    assert isinstance(request, JobRequest) and request.inputs == ("héllo", "world")
    assert "inputs" not in to_wire(embed_request(kind="generate", inputs=None, prompt="hi"))


@pytest.mark.parametrize("changes", [
    {"inputs": None}, {"kind": "chat"}, {"prompt": "x"},
    {"inputs": ("x",) * (MAX_EMBED_INPUTS + 1)}, {"inputs": ()},
])
def test_a_malformed_embed_request_is_refused(changes: dict[str, object]) -> None:
    body = to_wire(embed_request())
    if "inputs" in changes and changes["inputs"] is None:
        del body["inputs"]
    for key, value in changes.items():
        if value is not None:
            body[key] = list(value) if isinstance(value, tuple) else value
    with pytest.raises(ValidationError):
        from_wire(JobRequest, body)


def test_an_embed_job_charges_input_tokens_only() -> None:
    request = embed_request()
    assert prompt_token_bound(request) == len("héllo".encode()) + 5 + 256 + 2 * 16
    assert completion_token_bound(request, 10_000) == 0
    assert max_charge(request) == -(-1000 * prompt_token_bound(request) // 1000)


def offer(**changes: object) -> ModelOffer:
    fields: dict[str, object] = dict(name="m", digest="", parameter_size="", quantization="",
                                     context_length=1, prompt_tps_milli=0,
                                     generation_tps_milli=0, price_per_1k=1)
    fields.update(changes)
    return ModelOffer(**fields)  # type: ignore[arg-type]


def test_an_advert_says_which_models_embed_and_older_adverts_read_as_before() -> None:
    assert "embedding_length" not in to_wire(offer())
    advert = Advert(models=(offer(), offer(name="e", embedding_length=576)),
                    hardware=AdvertHardware("c", 1, 1, ()), engine="x", stake=0, capacity=1,
                    listen_addrs=(), seq=0, issued_at=1, ttl_ms=1)
    received = decode(sign(advert, PROVIDER).raw).msg
    assert isinstance(received, Advert)
    assert [m.embedding_length for m in received.models] == [None, 576]
    for bad in (0, 20_000, 1.5):
        with pytest.raises(ValidationError):
            from_wire(ModelOffer, {**to_wire(offer()), "embedding_length": bad})


def test_openai_and_ollama_request_shapes() -> None:
    assert parse_openai({"model": "m", "input": "a"}).inputs == ("a",)
    assert parse_openai({"model": "m", "input": ["a", "b"], "encoding_format": "base64"}).base64
    assert parse_ollama({"model": "m", "input": ["a"], "dimensions": 2}).dimensions == 2
    assert parse_ollama_legacy({"model": "m", "prompt": "p"}) == EmbedRequest(
        "m", ("p",), single=True)
    for body in ({"model": "m"}, {"model": "m", "input": []}, {"model": "m", "input": [[1, 2]]},
                 {"model": "m", "input": ["a"] * 2049}, {"input": "a"},
                 {"model": "m", "input": "a", "dimensions": 0},
                 {"model": "m", "input": ""}, {"model": "m", "input": ["a", ""]},
                 {"model": "m", "input": "a", "encoding_format": "hex"}):
        with pytest.raises(ApiError) as refused:
            parse_openai(body)
        assert refused.value.status == 400


def test_reply_shapes_base64_and_dimensions() -> None:
    result = Embeddings(((0.6, 0.8, 0.0), (0.0, 0.0, 1.0)), prompt_tokens=4)
    reply = openai_reply("m", EmbedRequest("m", ("a", "b"), base64=True), result)
    raw = base64.b64decode(reply["data"][1]["embedding"])
    assert struct.unpack("<3f", raw) == (0.0, 0.0, 1.0)
    assert reply["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    cut = ollama_reply("m", EmbedRequest("m", ("a", "b"), dimensions=1), result, 5)
    assert cut["embeddings"][0] == [1.0] and cut["prompt_eval_count"] == 4
    assert ollama_reply("m", EmbedRequest("m", ("a",), single=True), result, 0) == {
        "embedding": [0.6, 0.8, 0.0]}
    with pytest.raises(ApiError):
        ollama_reply("m", EmbedRequest("m", ("a",), dimensions=4), result, 0)


def test_the_checker_compares_vectors_by_cosine() -> None:
    reference = encode_vectors(VECTORS)
    drifted = encode_vectors([[0.601, 0.799, 0.001], [0.0, 0.001, 1.0]])
    other = encode_vectors([[0.8, 0.0, 0.6], [1.0, 0.0, 0.0]])
    assert compare_embeddings(reference, reference, 2).verdict is Verdict.IDENTICAL
    assert compare_embeddings(reference, drifted, 2).verdict is Verdict.CONSISTENT
    assert compare_embeddings(reference, other, 2).verdict is Verdict.INCONSISTENT
    assert compare_embeddings(reference, "garbage", 2).verdict is Verdict.INCONSISTENT
    shorter = encode_vectors([[0.6, 0.8], [0.0, 1.0]])
    assert compare_embeddings(reference, shorter, 2).verdict is Verdict.INCONSISTENT
