"""Pieces shared by the in-process job tests: real hosts, fakes for exact faults, ledgers."""

from __future__ import annotations

from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from p2pinfer.backends.base import (
    Backend,
    ChatMessage,
    Completion,
    ModelInfo,
    SamplingParams,
    StreamEvent,
    TokenDelta,
    Usage,
)
from p2pinfer.identity import NodeIdentity
from p2pinfer.jobs.client import JobClient
from p2pinfer.jobs.job_server import JobServer, JobServerConfig
from p2pinfer.jobs.job_types import ClientConfig
from p2pinfer.jobs.refusals import keep_refusals
from p2pinfer.market.ledger import Ledger
from p2pinfer.metrics import NodeMetrics
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost
from p2pinfer.node.offer import model_offer
from p2pinfer.protocol import Advert, AdvertHardware, JobParams, ReplayWindow
from p2pinfer.settle.channels import ChannelBook
from p2pinfer.settle.payer import PayerBook
from p2pinfer.verify.reputation_store import ReputationBook

FAKE_MODEL = "fake:1b"
FAKE_DIGEST = "cd" * 32
CREDIT = 10_000_000


class FakeBackend:
    """Emits `tokens` one by one (`delay_s` apart after the first: a provider dripping its
    answer). With `pause_after=N` it sets `paused` after N tokens and waits for `resume`
    (forever if nobody sets it). Records entering and leaving."""

    name = "fake"

    def __init__(
        self,
        tokens: Sequence[str] = tuple(f"t{i} " for i in range(20)),
        *,
        model: str = FAKE_MODEL,
        pause_after: int | None = None,
        prompt_tokens: int = 5,
        delay_s: float = 0.0,
    ) -> None:
        self.tokens = list(tokens)
        self.delay_s = delay_s
        self.model = model
        self.pause_after = pause_after
        self.prompt_tokens = prompt_tokens
        self.paused = trio.Event()
        self.resume = trio.Event()
        self.exited = trio.Event()
        self.entered = 0
        self.emitted = 0

    async def list_models(self) -> list[ModelInfo]:
        return [ModelInfo(name=self.model, digest=FAKE_DIGEST, context_length=2048)]

    def chat(
        self, model: str, messages: Sequence[ChatMessage], params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        return self._stream(params)

    def generate(
        self, model: str, prompt: str, params: SamplingParams
    ) -> AbstractAsyncContextManager[AsyncIterator[StreamEvent]]:
        return self._stream(params)

    async def aclose(self) -> None:
        pass

    @asynccontextmanager
    async def _stream(self, params: SamplingParams) -> AsyncIterator[AsyncIterator[StreamEvent]]:
        self.entered += 1
        events = self._events(params)
        try:
            yield events
        finally:
            await events.aclose()  # as a real engine's stream: closed with its context
            self.exited.set()

    async def _events(self, params: SamplingParams) -> AsyncGenerator[StreamEvent, None]:
        count = 0
        for token in self.tokens[: params.max_tokens]:
            if self.pause_after is not None and count == self.pause_after:
                self.paused.set()
                await self.resume.wait()
            if count and self.delay_s:
                await trio.sleep(self.delay_s)
            await trio.lowlevel.checkpoint()
            count += 1
            self.emitted += 1
            yield TokenDelta(token)
        reason = "length" if count == params.max_tokens else "stop"
        yield Completion(reason, Usage(self.prompt_tokens, count))  # type: ignore[arg-type]


def advert_for(server: JobServer, *, stake: int = 0, capacity: int = 1) -> Callable[[], Advert]:
    """What a node advertises for the models `server` serves, priced by the server now."""

    def current() -> Advert:
        offers = tuple(
            model_offer(info, server.advertised_price(info.name))
            for info in server.models.values()
        )
        return Advert(models=offers, hardware=AdvertHardware("test cpu", 2, 1024, ()),
                      engine="fake", stake=stake, capacity=capacity, listen_addrs=(), seq=0,
                      issued_at=0, ttl_ms=60_000)

    return current


@dataclass
class Provider:
    net: NetHost
    server: JobServer
    ledger: Ledger
    backend: Backend
    metrics: NodeMetrics
    scope: trio.CancelScope


async def start_provider(
    stack: AsyncExitStack,
    nursery: trio.Nursery,
    backend: Backend,
    tmp: Path,
    *,
    config: JobServerConfig = JobServerConfig(),
    bootstrap: tuple[str, ...] = (),
    replay: ReplayWindow | None = None,
    identity: NodeIdentity | None = None,
    channels: ChannelBook | None = None,
    net_options: Mapping[str, Any] | None = None,
    refusals: ReputationBook | None = None,
) -> Provider:
    """A provider host serving `backend` with its own ledger, advertising every second
    (paid through `channels` when given). Cancel `provider.scope` to make it vanish as a
    crashed process would. `net_options`: more NetConfig fields (relays, announce);
    `refusals`: the reputation table its refusals are journaled in, as a node's are."""
    identity = identity or NodeIdentity.generate()
    ledger = stack.enter_context(Ledger.open(tmp / f"{identity.peer_id[-8:]}.sqlite3", identity))
    scope = trio.CancelScope()
    ready: list[Provider] = []
    started = trio.Event()

    async def run() -> None:
        with scope:
            async with run_host(NetConfig(identity, bootstrap=bootstrap,
                                          **(net_options or {}))) as net, \
                    trio.open_nursery() as tasks:
                models = {m.name: m for m in await backend.list_models()}
                metrics = NodeMetrics()
                server = JobServer(identity, backend, models, config=config,
                                   catalog=net.catalog, ledger=ledger, metrics=metrics,
                                   replay=replay, channels=channels)
                if refusals is not None:
                    await tasks.start(keep_refusals, refusals, server.gate, channels)
                server.install(net.set_stream_handler)
                server.paid_hooks.append(net.value_peer)  # as the node does
                server.relayed_hooks.append(net.relay_check.job_ended)
                net.start_advertising(advert_for(server), interval_s=1.0)
                ready.append(Provider(net, server, ledger, backend, metrics, scope))
                started.set()
                await trio.sleep_forever()

    nursery.start_soon(run)
    await started.wait()
    return ready[0]


async def start_consumer(
    stack: AsyncExitStack,
    tmp: Path,
    bootstrap: tuple[str, ...],
    *,
    config: ClientConfig = ClientConfig(),
    credit: int = CREDIT,
    identity: NodeIdentity | None = None,
    payer: Callable[[Ledger], PayerBook] | None = None,
    net_options: Mapping[str, Any] | None = None,
) -> tuple[NetHost, JobClient, Ledger]:
    """A consumer host with a ledger holding `credit` micro-credits (paying through the
    `payer` built on its ledger, when given; `net_options`: more NetConfig fields)."""
    identity = identity or NodeIdentity.generate()
    ledger = stack.enter_context(Ledger.open(tmp / "consumer.sqlite3", identity))
    if credit:
        ledger.record_faucet(identity.public_key, credit, grant_id="test")
    net = await stack.enter_async_context(run_host(NetConfig(identity, bootstrap=bootstrap,
                                                             **(net_options or {}))))
    client = JobClient(net, identity, ledger=ledger, config=config,
                       payer=payer(ledger) if payer is not None else None)
    return net, client, ledger


@dataclass
class CheapAndDear:
    """Two providers of FAKE_MODEL, the cheap one ranked first, and a consumer who sees both."""

    cheap: Provider
    dear: Provider
    net: NetHost
    client: JobClient
    ledger: Ledger


async def cheap_and_dear(
    stack: AsyncExitStack, nursery: trio.Nursery, tmp: Path, *,
    cheap: Backend | None = None, dear: Backend | None = None, via_cheap: bool = False,
    config: ClientConfig = ClientConfig(),
) -> CheapAndDear:
    """Providers at 100 and 900 per 1k tokens (FakeBackends unless given) and a consumer
    (`config`) bootstrapped through the dear one (`via_cheap`: the cheap one), once it
    sees both."""
    first = await start_provider(stack, nursery, cheap or FakeBackend(), tmp,
                                 config=JobServerConfig(price_per_1k=100))
    second = await start_provider(stack, nursery, dear or FakeBackend(), tmp,
                                  config=JobServerConfig(price_per_1k=900),
                                  bootstrap=(first.net.addrs()[0],))
    entry = first if via_cheap else second
    net, client, ledger = await start_consumer(stack, tmp, (entry.net.addrs()[0],),
                                               config=config)
    await wait_for_providers(net, FAKE_MODEL, 2)
    return CheapAndDear(first, second, net, client, ledger)


async def wait_for_providers(net: NetHost, model: str, count: int) -> None:
    """Until `count` providers of `model` are in `net`'s catalog (bound it by the caller)."""
    await net.catalog.wait_for(lambda c: len(c.providers(model)) >= count)


def charges(ledger: Ledger) -> list[bytes]:
    """Job ids of the charge entries in `ledger`."""
    return [e.body.job_id for e in ledger.entries() if e.kind == "charge"]  # type: ignore[attr-defined]


async def queued_behind_a_running_job(
    nursery: trio.Nursery, provider: Provider, client: JobClient, stuck: FakeBackend,
    while_queued: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """On a provider of one slot and a queue of one (`JobServerConfig(max_concurrency=1,
    queue=1)`) serving `stuck`: a paid warm-up job (a key that never paid runs one job
    at a time), then job "a" holds the slot (paused after its first token) while job
    "b" waits in the queue, and `while_queued` runs; then both end whole, "b" after "a"."""
    stuck.pause_after = None
    await client.run(FAKE_MODEL, "warm up", JobParams(max_tokens=1))
    stuck.pause_after = 1
    results: list[str] = []

    async def second() -> None:
        results.append((await client.run(FAKE_MODEL, "b", JobParams(max_tokens=2))).text)

    async with client.job(FAKE_MODEL, "a", JobParams(max_tokens=2)) as first:
        await first.next_delta()
        nursery.start_soon(second)
        with trio.fail_after(5):
            while provider.server._slots[FAKE_MODEL].waiting == 0:
                await trio.sleep(0.01)
        if while_queued is not None:
            await while_queued()
        stuck.pause_after = None
        stuck.resume.set()
        assert [d.text async for d in first] == ["t1 "]
    with trio.fail_after(10):
        while not results:
            await trio.sleep(0.01)
    assert results == ["t0 t1 "]
