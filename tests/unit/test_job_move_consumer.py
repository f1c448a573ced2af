"""The consumer's side of a job move (`maybe_move`), with FAKE hosts and streams: when it
asks, and that no refusal or failure ever touches the job."""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import trio

from p2pinfer.errors import PeerUnreachableError
from p2pinfer.jobs.job_move import LOOK_EVERY_S, MoveDesk, maybe_move, move_answer
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.relay_rules import path_of

PEER = "12D3KooWProvider"


class FakeMoveStream:
    """A move stream that answers `answer` (framed) and records a reset."""

    def __init__(self, answer: bytes, addrs: list[str]) -> None:
        self.answer, self.addrs, self.was_reset = answer, addrs, False

    @property
    def path(self) -> str:
        return path_of(self.addrs)

    async def read_frame(self, **_: Any) -> bytes:
        return self.answer[1:]  # the body: one-byte length prefix off

    async def reset(self) -> None:
        self.was_reset = True


class FakeNet:
    """What `maybe_move` uses of a NetHost: relay_only, dcutr.has_direct, open_stream."""

    def __init__(self, *, direct: bool, stream: FakeMoveStream | None = None,
                 relay_only: frozenset[str] = frozenset()) -> None:
        self.relay_only = relay_only
        self.dcutr = SimpleNamespace(has_direct=lambda peer: direct)
        self.stream = stream
        self.opened = 0

    async def open_stream(self, peer: str, protocol: str, **_: Any) -> FakeMoveStream:
        self.opened += 1
        if self.stream is None:
            raise PeerUnreachableError("no way there")
        return self.stream


class FakeJobStream:
    def __init__(self) -> None:
        self.spliced_onto: object = None

    @property
    def path(self) -> str:  # as NetStream.path
        return "moved" if self.spliced_onto is not None else "relayed"

    async def splice(self, new: object) -> None:
        self.spliced_onto = new


def moves_counted(metrics: NodeMetrics) -> dict[str, float]:
    """The consumer's `p2pinfer_job_moves` samples, by outcome."""
    return {s.labels["outcome"]: s.value for m in metrics.registry.collect()
            if m.name == "p2pinfer_job_moves" for s in m.samples
            if s.name.endswith("_total") and s.labels["role"] == "consumer"}


def fake_attempt() -> Any:
    return SimpleNamespace(candidate=SimpleNamespace(peer_id=PEER), move_after=0.0,
                           path="relayed", machine=SimpleNamespace(job_id=bytes(16)),
                           stream=FakeJobStream())


async def test_without_a_direct_connection_it_looks_again_only_after_a_while() -> None:
    net, attempt, metrics = FakeNet(direct=False), fake_attempt(), NodeMetrics()
    await maybe_move(net, attempt, metrics)  # type: ignore[arg-type]
    assert net.opened == 0 and attempt.move_after >= trio.current_time() + LOOK_EVERY_S / 2
    assert attempt.move_after != math.inf and moves_counted(metrics) == {}


async def test_a_check_job_never_moves_even_with_a_direct_connection() -> None:
    net, attempt = FakeNet(direct=True, relay_only=frozenset({PEER})), fake_attempt()
    await maybe_move(net, attempt, NodeMetrics())  # type: ignore[arg-type]
    assert net.opened == 0 and attempt.move_after == math.inf and attempt.path == "relayed"


async def test_an_accepted_move_splices_the_job_onto_the_direct_stream() -> None:
    stream = FakeMoveStream(move_answer(None), ["/ip4/10.0.0.2/tcp/4001"])
    net, attempt, metrics = FakeNet(direct=True, stream=stream), fake_attempt(), NodeMetrics()
    await maybe_move(net, attempt, metrics)  # type: ignore[arg-type]
    assert attempt.stream.spliced_onto is stream and attempt.path == "moved"
    assert moves_counted(metrics) == {"moved": 1}


async def test_a_refused_or_relayed_or_failed_move_leaves_the_job_and_is_not_retried() -> None:
    direct, relayed = ["/ip4/10.0.0.2/tcp/4001"], ["/ip4/1.2.3.4/tcp/1/p2p/R/p2p-circuit"]
    metrics = NodeMetrics()
    for stream in (FakeMoveStream(move_answer("busy"), direct),
                   FakeMoveStream(move_answer(None), relayed), None):
        net, attempt = FakeNet(direct=True, stream=stream), fake_attempt()
        await maybe_move(net, attempt, metrics)  # type: ignore[arg-type]
        assert attempt.stream.spliced_onto is None and attempt.path == "relayed"
        assert attempt.move_after == math.inf and net.opened == 1
        assert stream is None or stream.was_reset
    assert moves_counted(metrics) == {"refused": 1, "failed": 2}


def test_a_second_job_with_the_same_id_does_not_take_the_first_ones_place() -> None:
    # A peer sending the same job id twice (the second is refused as a replay) must not
    # unregister the first job, nor end the wait of a move stream it moved onto.
    desk = MoveDesk(NodeMetrics())
    first, second = SimpleNamespace(stream=SimpleNamespace(remote_peer_id=PEER)), \
        SimpleNamespace(stream=SimpleNamespace(remote_peer_id=PEER))
    with desk.movable(first, bytes(16)):  # type: ignore[arg-type]
        with desk.movable(second, bytes(16)):  # type: ignore[arg-type]
            pass
        entry = desk._jobs[(PEER, bytes(16))]
        assert entry[0] is first and not entry[1].is_set()
    assert desk._jobs == {}
