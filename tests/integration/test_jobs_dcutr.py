"""DCUtR for relayed jobs (real hosts on loopback, the real embedded engine, real ledgers):
the job's connection moves off the relay before the job (`--dcutr`), behind it for the
next jobs (`dcutr_behind`), and a running job moves onto the direct connection mid-answer
(jobs/job_move.py).

Shown only as far as loopback allows: DCUtR's exchange gives away the provider's real
listen address, which is dialable here, so these prove the connection and the job move
off the relay, not that a hole can be punched through a NAT (tests/integration/
test_docker_nat.py does that, with real NAT routers)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from libp2p.peer.id import ID

from p2pinfer.jobs.job_move import MOVE_PROTOCOL_ID, move_request, parse_answer
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.dcutr import relayed_connections
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_rules import RelayClientConfig
from p2pinfer.protocol import ChatTurn
from p2pinfer.testing.faults import Fault
from p2pinfer.testing.tiny_model import write_tiny_model
from tests.integration.job_helpers import charges
from tests.integration.net_helpers import config
from tests.integration.relay_helpers import (
    CONSUMER,
    GREEDY,
    MANUAL,
    advertised_circuit,
    circuits_end,
    provider_charged,
    relayed_setup,
)

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


async def test_with_dcutr_on_the_job_runs_on_a_direct_connection_and_the_relay_leg_closes(
    tiny_model: Path, tmp_path: Path
) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, ledger = await relayed_setup(
                stack, nursery, tiny_model, tmp_path,
                CONSUMER | {"relay_client": RelayClientConfig(dcutr=True)})
            # The consumer cannot dial the provider: only the relay gets it there.
            assert provider.net.peer_id not in net.peers()

            async with client.job("tiny", [ChatTurn("user", "Say something.")], GREEDY) as job:
                streamed = "".join([delta.text async for delta in job])
            outcome = job.outcome
            assert outcome is not None and outcome.text == streamed
            assert outcome.path == "direct"  # the job ran on the DCUtR connection
            assert net.dcutr.upgrades == 1
            await circuits_end(relay)  # the relayed connection was closed
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            await provider_charged(provider, [bytes.fromhex(outcome.job_id)])
            nursery.cancel_scope.cancel()


async def test_dcutr_behind_a_relayed_job_keeps_it_on_the_relay_and_moves_the_next_one(
    tiny_model: Path, tmp_path: Path
) -> None:
    # A node's gateway default (`dcutr_behind`): the first job starts over the relay at
    # once, the punch runs beside it and must not cut it; the next job runs direct. (The
    # first job's answer is all sent by the time the punch is through: nothing to move.)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, ledger = await relayed_setup(
                stack, nursery, tiny_model, tmp_path,
                CONSUMER | {"relay_client": RelayClientConfig(dcutr_behind=True)})
            assert provider.net.peer_id not in net.peers()

            async with client.job("tiny", [ChatTurn("user", "Say something.")], GREEDY) as job:
                deltas = aiter(job)
                streamed = (await anext(deltas)).text
                with trio.fail_after(20):  # the punch finishes while the job is open ...
                    while net.dcutr.upgrades < 1:
                        await trio.sleep(0.05)
                await trio.sleep(1.5)  # ... and its relayed connection is not closed under it
                assert relay.relay_hop.circuits
                streamed += "".join([delta.text async for delta in deltas])
            first = job.outcome
            assert first is not None and first.text == streamed and first.path == "relayed"
            await circuits_end(relay)  # closed once the job left it
            async with client.job("tiny", [ChatTurn("user", "Say more.")], GREEDY) as job:
                "".join([delta.text async for delta in job])
            second = job.outcome
            assert second is not None and second.path == "direct"
            assert net.dcutr.upgrades == 1
            jobs = [bytes.fromhex(first.job_id), bytes.fromhex(second.job_id)]
            assert charges(ledger) == jobs  # both receipted, the relayed one too
            await provider_charged(provider, jobs)
            nursery.cancel_scope.cancel()


async def test_a_relayed_job_moves_onto_the_direct_connection_mid_answer(
    tiny_model: Path, tmp_path: Path
) -> None:
    # The punch succeeds while the provider is still answering (paced at 80 ms a token):
    # the rest of the answer, the result and the receipt go over the direct connection,
    # and the relayed one closes before the answer ends. Another peer that knows the job
    # id cannot move it (to it the job does not exist), nor can the job move twice.
    paced = JobServerConfig(fault=Fault("slow", count=80))
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, ledger = await relayed_setup(
                stack, nursery, tiny_model, tmp_path,
                CONSUMER | {"relay_client": RelayClientConfig(dcutr_behind=True)}, paced)
            peer = provider.net.peer_id
            provider_id = ID.from_base58(peer)
            other = await stack.enter_async_context(run_host(config(
                ip="127.0.0.3", autonat=MANUAL, bootstrap=(relay.addrs()[0],))))
            await advertised_circuit(other, peer)
            streamed, relay_gone_mid_answer, answers = "", False, []
            params = replace(GREEDY, max_tokens=40)
            async with client.job("tiny", [ChatTurn("user", "Say something.")], params) as job:
                async for delta in job:
                    streamed += delta.text
                    if job.path == "moved" and not answers:
                        job_id = bytes.fromhex(job.job_id or "")
                        answers = [await ask_to_move(other, peer, job_id),
                                   await ask_to_move(net, peer, job_id)]
                    relay_gone_mid_answer |= job.path == "moved" and not relayed_connections(
                        net.dcutr.host, provider_id)
            outcome = job.outcome
            assert outcome is not None and outcome.path == "moved"
            assert outcome.text == streamed and outcome.completion_tokens == 40
            assert answers == ["unknown_job", "moved"]
            assert relay_gone_mid_answer  # the answer's end came without the relayed leg
            # Operators see it in /metrics: one move each side, and the two refusals.
            provider_counts = sample_values(provider.metrics)
            assert provider_counts["job_moves", "provider", "moved"] == 1
            assert provider_counts["job_moves", "provider", "refused"] == 2
            assert provider_counts["job_move_refusals", "unknown_job"] == 1
            assert provider_counts["job_move_refusals", "moved"] == 1
            assert sample_values(client.metrics)["job_moves", "consumer", "moved"] == 1
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]  # one charge each side
            await provider_charged(provider, [bytes.fromhex(outcome.job_id)])
            with trio.fail_after(5):  # its record follows the charge
                while not provider.server.records:
                    await trio.sleep(0.05)
            assert [(r.outcome, r.path) for r in provider.server.records] == [
                ("completed", "moved")]
            nursery.cancel_scope.cancel()


async def ask_to_move(net: NetHost, provider: str, job_id: bytes) -> str | None:
    """What `provider` answers `net` asking to move `job_id` onto a new stream."""
    stream = await net.open_stream(provider, MOVE_PROTOCOL_ID, first=move_request(job_id))
    try:
        return parse_answer(await stream.read_frame())
    finally:
        await stream.reset()


def sample_values(metrics: NodeMetrics) -> dict[tuple[str, ...], float]:
    """The move counters of `metrics`: (name without prefix, label values...) -> value."""
    return {(m.name.removeprefix("p2pinfer_"), *s.labels.values()): s.value
            for m in metrics.registry.collect() if m.name.startswith("p2pinfer_job_move")
            for s in m.samples if s.name.endswith("_total")}
