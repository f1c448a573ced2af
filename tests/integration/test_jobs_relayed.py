"""A provider nobody can dial directly serves jobs through a relay (real hosts on
loopback, the real embedded engine, real ledgers).

NAT is simulated as relay_helpers.py says; DCUtR's tests are in test_jobs_dcutr.py."""

from __future__ import annotations

import random
import time
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path

import pytest
import trio
from multiaddr import Multiaddr

from p2pinfer.backends.embedded import EmbeddedBackend
from p2pinfer.backends.models import ModelSource
from p2pinfer.errors import StreamClosedError
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.job_server import JobServerConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.net.relay_rules import RelayServiceConfig, is_circuit_addr
from p2pinfer.protocol import (
    JOB_PROTOCOL_ID,
    ChatTurn,
    JobAccept,
    JobParams,
    JobReject,
    decode,
    encode_frame,
)
from p2pinfer.testing.tiny_model import TINY_MODEL_NAME, write_tiny_model
from p2pinfer.validator.checker import Verifier
from p2pinfer.verify.config import VerifyConfig
from p2pinfer.verify.reputation_store import ReputationBook
from tests.integration.job_helpers import (
    FAKE_MODEL,
    FakeBackend,
    charges,
    start_consumer,
    start_provider,
    wait_for_providers,
)
from tests.integration.relay_helpers import (
    CONSUMER,
    CONSUMER_LISTEN,
    GREEDY,
    MANUAL,
    advertised_circuit,
    behind_nat_options,
    relay_config,
    relayed_setup,
)
from tests.support.raw_jobs import signed_request
from tests.support.waiting import await_until

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


async def test_a_provider_behind_nat_serves_a_job_through_a_relay(
    tiny_model: Path, tmp_path: Path
) -> None:
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, ledger = await relayed_setup(
                stack, nursery, tiny_model, tmp_path, CONSUMER)
            advert = net.catalog.advert_of(provider.net.peer_id)
            assert advert is not None
            assert all(is_circuit_addr(a) or "/tcp/1/" in a for a in advert.advert.listen_addrs)

            async with client.job("tiny", [ChatTurn("user", "Say something.")], GREEDY) as job:
                streamed = "".join([delta.text async for delta in job])
            outcome = job.outcome
            assert outcome is not None
            assert outcome.path == "relayed"
            assert outcome.provider == provider.net.peer_id and outcome.failovers == ()
            assert outcome.text == streamed and outcome.completion_tokens == 24
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            with trio.fail_after(5):  # the provider records the job after its charge
                while (charges(provider.ledger) != [bytes.fromhex(outcome.job_id)]
                       or not provider.server.records):
                    await trio.sleep(0.05)
            assert provider.server.records[-1].outcome == "completed"
            # The provider's side of the job's connection is relayed too.
            assert relay.relay_hop.circuits == 1

            nursery.cancel_scope.cancel()


async def stoppable_relay(scope: trio.CancelScope, *,
                          task_status: trio.TaskStatus[NetHost] = trio.TASK_STATUS_IGNORED,
                          ) -> None:
    """A relay node in its own task; cancelling `scope` makes it vanish as a killed process
    would (listeners and connections closed)."""
    with scope:
        async with run_host(relay_config()) as relay:
            task_status.started(relay)
            await trio.sleep_forever()


async def test_the_relay_dying_mid_answer_fails_the_job_over_and_it_is_charged_once(
    tmp_path: Path,
) -> None:
    behind_nat = FakeBackend(pause_after=3)  # holds its 4th token until the relay is gone
    reachable = FakeBackend()
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay_scope = trio.CancelScope()
            relay = await nursery.start(stoppable_relay, relay_scope)
            relay_addr = relay.addrs()[0]
            cheap = await start_provider(
                stack, nursery, behind_nat, tmp_path, config=JobServerConfig(price_per_1k=100),
                bootstrap=(relay_addr,), net_options=behind_nat_options(relay_addr))
            dear = await start_provider(stack, nursery, reachable, tmp_path,
                                        config=JobServerConfig(price_per_1k=900),
                                        bootstrap=(relay_addr,))
            net, client, ledger = await start_consumer(stack, tmp_path, (relay_addr,),
                                                       net_options=CONSUMER)
            await wait_for_providers(net, FAKE_MODEL, 2)
            await advertised_circuit(net, cheap.net.peer_id)

            async def kill_relay_when_paused() -> None:
                await behind_nat.paused.wait()
                relay_scope.cancel()

            nursery.start_soon(kill_relay_when_paused)
            outcome = await client.run(FAKE_MODEL, "go", JobParams(max_tokens=8))
            assert relay_scope.cancelled_caught or relay_scope.cancel_called
            assert outcome.text == "".join(f"t{i} " for i in range(8))
            assert outcome.provider == dear.net.peer_id and outcome.path == "direct"
            assert [f.provider for f in outcome.failovers] == [cheap.net.peer_id]
            assert charges(ledger) == [bytes.fromhex(outcome.job_id)]
            assert charges(cheap.ledger) == []
            with trio.fail_after(10):  # its slot went with the relay
                while cheap.net.relay_client.slots:
                    await trio.sleep(0.1)
            # The relay went, not the consumer (attack 69): the job lost that way holds
            # nothing against its key there (on the code before, refused 10 minutes).
            await await_until(lambda: bool(cheap.server.records))
            assert cheap.server.records[-1].outcome == "cancelled"
            cheap.server.gate.admit(client.identity.public_key, time.time_ns() // 1_000_000,
                                    idle=True)  # no Refused
            nursery.cancel_scope.cancel()


async def test_a_relay_cutting_a_circuit_at_its_granted_duration_is_not_the_consumer(
    tmp_path: Path,
) -> None:
    """Attack 69, the cut: a relay cuts each circuit at the duration it granted (ours 15
    minutes; one relayed connection carries many jobs), and the provider saw the job's
    consumer vanish while its own connection to the relay lived, so it refused the key
    10 minutes as one that left. The circuit's end is known from the provider's slot:
    a job cut there holds nothing against the key."""
    engine = FakeBackend(pause_after=2)  # the answer outlives the circuit
    short = replace(relay_config(), relay=RelayServiceConfig(mode="on", circuit_duration_s=3))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, _ = await relayed_setup(
                stack, nursery, engine, tmp_path, CONSUMER, relay_net=short)
            pid = provider.net.peer_id
            assert provider.net.relay_client.slots[relay.peer_id].circuit_s == 3
            stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
            await stream.write(encode_frame(signed_request(
                client.identity, pid, FAKE_MODEL, max_tokens=50)))
            assert isinstance(decode(await stream.read_frame(timeout_s=5)).msg, JobAccept)
            await engine.paused.wait()
            await await_until(lambda: relay.relay_hop.refusals["duration"] > 0, timeout_s=10)
            await await_until(lambda: bool(provider.server.records), timeout_s=10)
            assert provider.server.records[-1].outcome == "cancelled"
            provider.server.gate.admit(client.identity.public_key, time.time_ns() // 1_000_000,
                                       idle=True)  # no Refused: the relay cut, not the key
            nursery.cancel_scope.cancel()


async def test_a_relay_cutting_a_circuit_at_its_byte_budget_is_not_the_consumer(
    tmp_path: Path,
) -> None:
    """Attack 71: a relay also cuts a circuit once it has carried the bytes it granted
    (ours 16 MiB, here 1 MiB; one relayed connection carries many jobs), and the
    provider saw the job's consumer vanish while its own connection to the relay lived:
    it refused the key 10 minutes as one that left, and counted the cut against the
    relay (attack 70). The provider counts the bytes through each circuit the relay
    brings it: a job cut there, at the budget the relay granted in the slot, is the
    relay's doing."""
    engine = FakeBackend(tokens=tuple("x" * 2000 for _ in range(1000)))  # 2 MB
    small = replace(relay_config(), relay=RelayServiceConfig(mode="on",
                                                             circuit_bytes=1024 * 1024))
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, _ = await relayed_setup(
                stack, nursery, engine, tmp_path, CONSUMER, relay_net=small)
            pid = provider.net.peer_id
            assert provider.net.relay_client.slots[relay.peer_id].circuit_bytes == 1024 * 1024
            stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
            await stream.write(encode_frame(signed_request(
                client.identity, pid, FAKE_MODEL, max_tokens=1000)))
            with pytest.raises(StreamClosedError):  # cut by the relay at 1 MiB
                while True:
                    await stream.read_frame(timeout_s=10)
            await await_until(lambda: bool(provider.server.records), timeout_s=10)
            assert provider.server.records[-1].outcome == "cancelled"
            provider.server.gate.admit(client.identity.public_key, time.time_ns() // 1_000_000,
                                       idle=True)  # no Refused: the relay cut, not the key
            assert provider.net.relay_check.cuts.cuts(relay.peer_id) == 0
            nursery.cancel_scope.cancel()


async def test_a_consumer_that_leaves_a_relayed_job_is_refused_while_the_relay_lives(
    tmp_path: Path,
) -> None:
    """Attack 69's bound: a relayed job left by the consumer (its stream reset, its
    connection through the relay still up) is a result unpaid, as a direct one is
    (attack 67): the key is refused there after it."""
    engine = FakeBackend(pause_after=2)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, _ = await relayed_setup(
                stack, nursery, engine, tmp_path, CONSUMER)
            pid, answers = provider.net.peer_id, []
            for _ in range(2):
                stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
                assert stream.path == "relayed"
                await stream.write(encode_frame(signed_request(
                    client.identity, pid, FAKE_MODEL, max_tokens=50)))
                answers.append(decode(await stream.read_frame(timeout_s=5)).msg)
                await engine.paused.wait()
                await stream.reset()  # the consumer leaves; the relay stays
                await await_until(lambda: len(provider.server.records) == len(answers))
            assert isinstance(answers[0], JobAccept)
            assert isinstance(answers[1], JobReject) and answers[1].code == "insufficient_credit"
            assert relay.relay_hop.serving and provider.net.relay_client.slots
            nursery.cancel_scope.cancel()


async def test_a_relay_that_carries_checks_but_cuts_jobs_is_dropped(tmp_path: Path) -> None:
    """Attack 70: a relay that holds a NATed provider's slot, brings the relay checks'
    circuits (a handshake each) and cuts every circuit that carries a job (here: at
    64 KiB, while it granted 16 MiB) left the provider's relayed consumers
    failing for good: its checks passed, so it kept the slot. Now relayed jobs whose
    connection the relay closed under them, from 3 keys in 10 minutes with more cut than
    finished, drop the slot as failed checks do (the relay shunned 30 minutes); a
    consumer that resets its stream, its connection through the relay alive, does not
    count."""
    # 200 KB over 2 s: a job reset at once is still running when it is.
    engine = FakeBackend(tokens=tuple("x" * 2000 for _ in range(100)), delay_s=0.02)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay, provider, net, client, _ = await relayed_setup(
                stack, nursery, engine, tmp_path, CONSUMER, picked=True)
            pid, relay_id = provider.net.peer_id, relay.peer_id
            # The relay keeps granting 16 MiB in the slot, and cuts each circuit at 64 KiB.
            carry = relay.relay_hop._relay_data

            async def cut_short(src: object, dst: object, peer: object,
                                deadline: float | None = None, _: object = None) -> None:
                await carry(src, dst, peer, deadline, [64 * 1024])  # type: ignore[arg-type]

            relay.relay_hop._relay_data = cut_short  # type: ignore[method-assign]
            consumers = [(net, client.identity)]
            for i in range(2):
                (tmp_path / f"c{i}").mkdir()
                more, more_client, _ = await start_consumer(
                    stack, tmp_path / f"c{i}", (relay.addrs()[0],), net_options=CONSUMER)
                await advertised_circuit(more, pid)
                consumers.append((more, more_client.identity))
            # First a consumer that leaves on its own: its stream reset, not its circuit.
            stream = await net.open_stream(pid, JOB_PROTOCOL_ID)
            await stream.write(encode_frame(signed_request(  # a key of its own: refused after
                NodeIdentity.generate(), pid, FAKE_MODEL, max_tokens=100)))
            assert isinstance(decode(await stream.read_frame(timeout_s=5)).msg, JobAccept)
            await stream.reset()
            await await_until(lambda: len(provider.server.records) == 1, timeout_s=10)
            assert provider.net.relay_check.cuts.cuts(relay_id) == 0
            for index, (host, identity) in enumerate(consumers):
                stream = await host.open_stream(pid, JOB_PROTOCOL_ID)
                assert stream.path == "relayed"
                await stream.write(encode_frame(signed_request(
                    identity, pid, FAKE_MODEL, max_tokens=100)))
                with pytest.raises(StreamClosedError):  # cut by the relay mid-answer
                    while True:
                        await stream.read_frame(timeout_s=10)
                ended = index + 2
                await await_until(lambda: len(provider.server.records) == ended,  # noqa: B023
                                  timeout_s=10)
                assert provider.server.records[-1].outcome == "cancelled"
                if index < 2:
                    assert provider.net.relay_check.cuts.cuts(relay_id) == index + 1
                    assert relay_id in provider.net.relay_client.slots
            await await_until(lambda: relay_id not in provider.net.relay_client.slots,
                              timeout_s=10)
            assert provider.net.relay_check.is_shunned(relay_id)
            nursery.cancel_scope.cancel()


async def start_validator(stack: AsyncExitStack, nursery: trio.Nursery, tmp: Path,
                          bootstrap: tuple[str, ...], model: Path) -> Verifier:
    """A validator node (its own engine judges) whose catalog hears the providers."""
    net, client, ledger = await start_consumer(stack, tmp, bootstrap, net_options=CONSUMER)
    book = stack.enter_context(ReputationBook.open(tmp / "validator-rep.sqlite3"))
    verifier = Verifier(net, client.identity, client,
                        backend=EmbeddedBackend([ModelSource(TINY_MODEL_NAME, model)]),
                        models=frozenset({TINY_MODEL_NAME}), reputation=book, ledger=ledger,
                        config=VerifyConfig(check_max_tokens=8, check_listen=CONSUMER_LISTEN),
                        rng=random.Random(3))
    nursery.start_soon(verifier.run)
    return verifier


async def test_a_check_job_reaches_a_provider_behind_nat_through_its_relay_only(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            # The provider's "router": the direct address it advertises, where every
            # connection attempt is counted (and dropped, as a NAT drops it).
            knocks: list[str] = []

            async def router(stream: trio.SocketStream) -> None:
                knocks.append(str(stream.socket.getpeername()))
                await stream.aclose()

            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            router_port = listeners[0].socket.getsockname()[1]
            nursery.start_soon(trio.serve_listeners, router, listeners)
            relay = await stack.enter_async_context(run_host(relay_config()))
            relay_addr = relay.addrs()[0]
            provider = await start_provider(
                stack, nursery, engine, tmp_path, bootstrap=(relay_addr,),
                net_options=behind_nat_options(relay_addr) | {
                    "announce_addrs": (f"/ip4/127.0.0.1/tcp/{router_port}",)})
            verifier = await start_validator(stack, nursery, tmp_path, (relay_addr,),
                                             tiny_model)
            await advertised_circuit(verifier.net, provider.net.peer_id)
            records = provider.server.records

            # The attack's premise: a check host that dials as consumers do knocks on the
            # provider's router first, from the validator's own address, before its relay
            # carries the job (on loopback the provider's address counts as our own
            # network, where consumers try direct first; on the internet, a validator on
            # its LAN would).
            verifier.config = replace(verifier.config, check_via_relay=False)
            assert await verifier.check_provider(provider.net.peer_id, TINY_MODEL_NAME)
            assert knocks and records[-1].path == "relayed"
            # The validator's own node also knocked, in its DHT walk (py-libp2p dials the
            # peers it asks directly, and retries a refused dial 3 times over ~1 s: not a
            # check, docs/verify.md): let that settle before counting.
            knocked = -1
            while knocked != len(knocks):
                knocked = len(knocks)
                await trio.sleep(2.0)

            verifier.config = replace(verifier.config, check_via_relay=True)
            for _ in range(2):
                assert await verifier.check_provider(provider.net.peer_id, TINY_MODEL_NAME)
                assert records[-1].path == "relayed" and records[-1].outcome == "completed"
            assert len(knocks) == knocked  # the router saw nothing of these checks
            # Each check came from a key of its own, never the validator's.
            signers = [r.consumer for r in records]
            assert len(set(signers)) == 3 and verifier.net.peer_id not in signers
            nursery.cancel_scope.cancel()


async def test_a_bogus_relay_address_does_not_spare_a_provider_its_checks(
    tiny_model: Path, tmp_path: Path
) -> None:
    engine = EmbeddedBackend([ModelSource(TINY_MODEL_NAME, tiny_model)])
    nobody = NodeIdentity.generate().peer_id
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery, AsyncExitStack() as stack:
            relay = await stack.enter_async_context(run_host(relay_config()))
            relay_addr = relay.addrs()[0]
            provider = await start_provider(stack, nursery, engine, tmp_path,
                                            bootstrap=(relay_addr,),
                                            net_options={"autonat": MANUAL})
            # The lie: its adverts name a "relay" nobody runs (and only loopback, no public
            # address), in the hope that checks go there and never arrive.
            bogus = Multiaddr(
                f"/ip4/127.0.0.1/tcp/1/p2p/{nobody}/p2p-circuit/p2p/{provider.net.peer_id}")
            own = provider.net._host.get_addrs
            provider.net._host.get_addrs = lambda: [*own(), bogus]  # type: ignore[method-assign]
            verifier = await start_validator(stack, nursery, tmp_path, (relay_addr,),
                                             tiny_model)
            await advertised_circuit(verifier.net, provider.net.peer_id)
            result = await verifier.check_provider(provider.net.peer_id, TINY_MODEL_NAME)
            assert result is not None  # checked all the same, over a direct connection
            assert provider.server.records[-1].path == "direct"
            assert provider.server.records[-1].outcome == "completed"
            nursery.cancel_scope.cancel()
