"""Finding a relayed connection's carrier (`net.relay_carrier`) on stand-in objects of
py-libp2p 0.8.1's shape; the real chain is pinned by tests/integration/test_jobs_relayed.py
(a relay that dies mid-answer, and one that lives while the consumer leaves)."""

from __future__ import annotations

from types import SimpleNamespace

import trio

from p2pinfer.net.relay_carrier import (
    BUDGET_SLACK,
    RelayedEnd,
    circuit_of,
    note_limits,
    relayed_end,
)


def relayed(carrier: object) -> SimpleNamespace:
    """A relayed connection's muxer as py-libp2p builds it, over `carrier`'s circuit stream."""
    circuit = SimpleNamespace(muxed_conn=carrier)
    raw = SimpleNamespace(stream=circuit)
    noise = SimpleNamespace(read_writer=SimpleNamespace(read_write_closer=raw))
    return SimpleNamespace(secured_conn=SimpleNamespace(conn=noise),
                           event_shutting_down=trio.Event())


def carrier_to(relay: str = "R") -> SimpleNamespace:
    """This node's connection to the relay `relay`."""
    return SimpleNamespace(event_shutting_down=trio.Event(), peer_id=relay)


async def relay_ended(conn: object, wait_s: float) -> bool:
    end = await relayed_end(conn, wait_s)
    return end is not None and end.by_relay


def direct() -> SimpleNamespace:
    """A direct connection's muxer: its raw connection's stream is a TCP stream."""
    tcp = SimpleNamespace(stream=SimpleNamespace(socket=object()))
    noise = SimpleNamespace(read_writer=SimpleNamespace(read_write_closer=tcp))
    return SimpleNamespace(secured_conn=SimpleNamespace(conn=noise))


async def test_a_relayed_connection_is_lost_with_its_carrier_and_a_direct_one_never() -> None:
    carrier = carrier_to()
    assert circuit_of(relayed(carrier)).muxed_conn is carrier
    assert not hasattr(circuit_of(direct()), "muxed_conn") and circuit_of(None) is None
    with trio.fail_after(2):
        assert not await relay_ended(relayed(carrier), 0.05)  # the relay is still there
        assert not await relay_ended(direct(), 10)  # at once: no relay to wait for

        async def relay_goes() -> None:
            await trio.sleep(0.05)
            carrier.event_shutting_down.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay_goes)
            assert await relay_ended(relayed(carrier), 1.0)  # it closed within the wait


async def test_a_circuit_at_the_end_its_relay_granted_was_ended_by_the_relay() -> None:
    carrier = carrier_to()
    conn = relayed(carrier)
    circuit = conn.secured_conn.conn.read_writer.read_write_closer.stream
    note_limits(circuit, 0, 0)  # no limit said: nothing noted
    assert not await relay_ended(conn, 0)
    note_limits(circuit, 0, 3)  # 3 s left: a consumer leaving now left on its own
    assert not await relay_ended(conn, 0)
    note_limits(circuit, 0, 1)  # within the slack of the relay's cut
    assert await relay_ended(conn, 0)


async def test_a_relayed_connection_closed_under_the_job_while_the_relay_lives() -> None:
    conn = relayed(carrier_to("R"))
    assert await relayed_end(conn, 0) == RelayedEnd("R", by_relay=False, connection_gone=False)
    conn.event_shutting_down.set()  # the circuit went (a cut, or the consumer gone whole)
    assert await relayed_end(conn, 0) == RelayedEnd("R", by_relay=False, connection_gone=True)
    assert await relayed_end(direct(), 0) is None


class StopStream:
    """A STOP stream's read and write, as py-libp2p's NetStream has them."""

    def __init__(self) -> None:
        self.written = 0

    async def read(self, n: int | None = None) -> bytes:
        return b"r" * (n or 1000)

    async def write(self, data: bytes) -> None:
        self.written += len(data)


async def test_a_circuit_at_the_byte_budget_its_relay_granted_was_ended_by_the_relay() -> None:
    conn = relayed(carrier_to())
    raw = conn.secured_conn.conn.read_writer.read_write_closer
    raw.stream = circuit = StopStream()
    circuit.muxed_conn = carrier_to()  # type: ignore[attr-defined]
    budget = 1024 * 1024
    note_limits(circuit, budget, 0)
    await circuit.write(b"w" * (budget // 2))  # counted both ways, and still written
    assert circuit.written == budget // 2
    assert len(await circuit.read(budget // 8)) == budget // 8
    assert budget - budget // 2 - budget // 8 > BUDGET_SLACK
    assert not await relay_ended(conn, 0)  # more than the slack left: the consumer's
    await circuit.read(budget // 2 - budget // 8 - BUDGET_SLACK)
    assert await relay_ended(conn, 0)  # within the slack of the relay's cut
