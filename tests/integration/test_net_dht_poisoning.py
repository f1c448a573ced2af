"""Attack: one lying DHT node poisons every lookup that asks it.

A GET_PROVIDERS answer is one peer's word: nothing in it is signed by the providers it
names. Before this defence, `ProviderRecords.find` kept every provider any answer named
in the node's own provider store (which the node then served to others as if each had
announced itself there), merged all answers and cut the list at 20 by PeerID. So one
DHT node answering with 40 made-up PeerIDs that sort before the honest provider's hid
the honest provider from every lookup that asked it, and the made-up records spread.
Real p2pinfer hosts on 127.0.0.1; the liar is a stock py-libp2p Kademlia node whose
provider store is written to directly, as a modified node would answer.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.kad_dht.provider_store import ProviderRecord
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from multiaddr import Multiaddr

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.dht import model_key_bytes
from p2pinfer.net.host import run_host
from tests.integration.net_helpers import config, kad_server

pytestmark = pytest.mark.network

MODEL = "smollm2:135m"
FAKES = 60


def made_up_ids(below: str, count: int) -> list[ID]:
    """`count` PeerIDs of fresh keys that sort before `below` (as the old cut did)."""
    out: list[ID] = []
    while len(out) < count:
        peer = ID.from_pubkey(create_new_key_pair().public_key)
        if peer.to_base58() < below:
            out.append(peer)
    return out


def high_identity() -> NodeIdentity:
    """Of 16 fresh identities, the one whose PeerID sorts last (so made-up ones are quick
    to find below it)."""
    return max((NodeIdentity.generate() for _ in range(16)), key=lambda i: i.peer_id)


async def test_a_lying_dht_node_neither_hides_the_honest_provider_nor_enters_our_store() -> None:
    with trio.fail_after(90):
        async with AsyncExitStack() as stack:
            boot = await stack.enter_async_context(run_host(config()))
            joined = (str(boot.addrs()[0]),)
            provider = await stack.enter_async_context(
                run_host(config(high_identity(), bootstrap=joined)))
            await provider.provide(MODEL)  # re-provided once it is connected

            liar = await stack.enter_async_context(kad_server())
            fakes = made_up_ids(provider.peer_id, FAKES)
            key = model_key_bytes(MODEL)
            liar.provider_store.providers[key] = {
                str(peer): ProviderRecord(PeerInfo(peer, [Multiaddr(
                    f"/ip4/10.9.{n // 250}.{n % 250 + 1}/tcp/4001")]))
                for n, peer in enumerate(fakes)
            }
            liar_addr = f"{liar.host.get_addrs()[0]}"
            if "/p2p/" not in liar_addr:
                liar_addr += f"/p2p/{liar.host.get_id()}"
            consumer = await stack.enter_async_context(
                run_host(config(bootstrap=(*joined, liar_addr))))

            boot_store = boot.records._dht.provider_store
            while provider.peer_id not in {
                    info.peer_id.to_base58() for info in boot_store.get_providers(key)}:
                await trio.sleep(0.05)  # the honest record is where the consumer will ask
            fake_ids = {peer.to_base58() for peer in fakes}
            found: list[str] = []
            while not fake_ids & set(found):  # until the liar's answer is counted
                found = [ref.peer_id for ref in await consumer.find_providers(MODEL)]
                await trio.sleep(0.05)

            assert provider.peer_id in found
            assert len(found) <= 20
            held = consumer.records._dht.provider_store.providers.get(key, {})
            assert not fake_ids & set(held), "another peer's answer entered our own store"
