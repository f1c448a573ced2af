"""Attack: the DHT's value store as a memory bomb.

py-libp2p 0.8.1's KadDHT stores, by default, the value of any non-namespaced key a peer
PUTs, unchecked and unthrottled, up to 50,000 of them (then it scans them all on every
put). p2pinfer uses provider records only, so its DHT refuses every PUT_VALUE. Real
p2pinfer hosts on 127.0.0.1; the attacker writes PUT_VALUE messages as the protocol
allows.
"""

from __future__ import annotations

import pytest
import trio
import varint
from libp2p.kad_dht.common import MAX_VALUE_STORE_SIZE
from libp2p.kad_dht.pb.kademlia_pb2 import Message
from libp2p.peer.id import ID
from libp2p.records.validator import BlankValidator, NamespacedValidator

from p2pinfer.identity import NodeIdentity
from p2pinfer.net.compat.kad_protocol import DHT_PROTOCOL_ID
from p2pinfer.net.config import NetConfig
from p2pinfer.net.host import run_host
from p2pinfer.net.nethost import NetHost

pytestmark = pytest.mark.network


async def put_value(attacker: NetHost, target: NetHost, key: bytes, value: bytes) -> None:
    msg = Message()
    msg.type = Message.MessageType.PUT_VALUE
    msg.key = key
    msg.record.key = key
    msg.record.value = value
    raw = msg.SerializeToString()
    stream = await attacker._host.new_stream(ID.from_base58(target.peer_id), [DHT_PROTOCOL_ID])
    try:
        await stream.write(varint.encode(len(raw)) + raw)
        with trio.move_on_after(5):
            await stream.read(1)
    except Exception:  # refused: the stream is reset
        pass
    finally:
        await stream.reset()


def test_libp2p_s_default_validator_takes_any_non_namespaced_key() -> None:
    """The defect: what KadDHT builds when given no validator."""
    default = NamespacedValidator({}, strict_validation=False)
    assert isinstance(default.validator_by_key("junk"), BlankValidator)
    assert MAX_VALUE_STORE_SIZE == 50_000


async def test_a_node_s_dht_stores_no_value_a_peer_puts() -> None:
    with trio.fail_after(60):
        async with run_host(NetConfig(NodeIdentity.generate())) as target, \
                run_host(NetConfig(NodeIdentity.generate())) as attacker:
            await attacker.connect(next(a for a in target.addrs() if "/tcp/" in a))
            for n in range(10):
                await put_value(attacker, target, f"junk{n}".encode(), b"\xaa" * 200_000)
            await put_value(attacker, target, b"/pk/junk", b"\xaa" * 1000)
            assert len(target._dht.value_store.store) == 0
            # A refused PUT_VALUE costs the peer its stream, not its connection.
            assert attacker.peer_id in target.peers()
