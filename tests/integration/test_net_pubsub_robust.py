"""A peer sending a malformed pubsub RPC loses its stream; the receiving host lives on."""

from __future__ import annotations

import pytest
import trio
from libp2p.pubsub.gossipsub import PROTOCOL_ID_V11

from p2pinfer.net.host import run_host
from p2pinfer.protocol import encode_frame
from tests.integration.net_helpers import advert_template, config

pytestmark = pytest.mark.network


async def test_a_malformed_pubsub_rpc_does_not_bring_the_host_down() -> None:
    with trio.fail_after(30):
        async with run_host(config()) as target, run_host(config()) as attacker:
            target.start_advertising(advert_template, interval_s=60)
            await attacker.connect(target.addrs()[0])
            stream = await attacker.open_stream(target.peer_id, str(PROTOCOL_ID_V11))
            # A valid frame whose body is not a protobuf RPC (field 15, wire type 7).
            await stream.write(encode_frame(b"\x7f\xff\xff\xff\xff"))
            assert await stream.read_some(timeout_s=10) == b""  # the target reset it
            # The target still serves: its advert over the info protocol, on a new stream.
            fetched = await attacker.fetch_advert(target.peer_id)
            assert fetched is not None and fetched.advert.signer == target.peer_id
