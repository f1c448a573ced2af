"""The answer of an embed job: one vector per input, as text in the job's Chunks.

Each vector is the base64 of its float32 values, little-endian, then a newline, in input
order; the job's output (all Chunk texts joined) is those lines, so its output hash names
the vectors exactly and a consumer reads them back however the Chunks split the text.
An embed job generates nothing: its result claims 0 completion tokens, and its charge
is for the input tokens (charges.py bounds them by the inputs' bytes).
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
from collections.abc import Sequence

from p2pinfer.errors import ValidationError

MAX_EMBED_INPUTS = 128
"""Texts one embed job may carry (a gateway splits a longer list into several jobs)."""
MAX_EMBEDDING_LENGTH = 16_384
"""The longest vector an advert may announce and a consumer reads back."""


def encode_vectors(vectors: Sequence[Sequence[float]]) -> str:
    """The output text of an embed job answering with `vectors`."""
    return "".join(
        base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode("ascii") + "\n"
        for v in vectors)


def decode_vectors(text: str, count: int) -> list[list[float]]:
    """The `count` vectors in an embed job's output; ValidationError unless it is exactly
    that many lines of one length each (1..MAX_EMBEDDING_LENGTH), all finite."""
    lines = text.split("\n")
    if lines[-1] != "" or len(lines) - 1 != count:
        raise ValidationError(f"embedding output: expected {count} newline-ended vectors")
    vectors: list[list[float]] = []
    for line in lines[:-1]:
        if len(line) > (MAX_EMBEDDING_LENGTH * 4 + 2) // 3 * 4:
            raise ValidationError(f"embedding output: a vector over {MAX_EMBEDDING_LENGTH}")
        try:
            raw = base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("embedding output: a vector is not base64") from None
        if not raw or len(raw) % 4:
            raise ValidationError("embedding output: a vector is not whole float32 values")
        vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        if not all(math.isfinite(x) for x in vector):
            raise ValidationError("embedding output: a value is not finite")
        if vectors and len(vector) != len(vectors[0]):
            raise ValidationError("embedding output: vectors of different lengths")
        vectors.append(vector)
    return vectors
