"""The job protocol's two state machines, sans-IO (h11-style).

One job runs on one stream. Bytes read from the stream go into
`receive_data(data, now_ms)`, which returns events; the methods that act
(`accept`, `chunk`, `finish`, `receipt`, ...) return framed bytes to write.
Neither machine does I/O, keeps a clock or spawns anything; a method called
in the wrong state raises StateError.

    consumer                                  provider
    start()       -- JobRequest -->           RequestReceived
    Accepted      <-- JobAccept --            accept(price)     (or reject(): Rejected)
    ChunkReceived <-- Chunk (seq 0, 1, ...) --  chunk(text)
    ResultReceived <-- JobResult --           finish(...)
    receipt()     -- Receipt -->              ReceiptReceived
"""

from __future__ import annotations

from p2pinfer.protocol.consumer_job import ConsumerJob, ConsumerState
from p2pinfer.protocol.provider_job import ProviderJob, ProviderState
from p2pinfer.protocol.wire_types import NO_JOB_ID, charge_for

__all__ = [
    "NO_JOB_ID",
    "ConsumerJob",
    "ConsumerState",
    "ProviderJob",
    "ProviderState",
    "charge_for",
]
