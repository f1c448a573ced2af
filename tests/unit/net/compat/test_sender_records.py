"""Pubsub sender records: stock py-libp2p 0.8.1 verifies the record on every RPC; with
the workaround, a peer's unchanged record is verified once, and a bad or foreign record
is still refused. On real hosts: tests/integration/test_net_upkeep.py."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import multiaddr
import pytest
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.peer.envelope import seal_record
from libp2p.peer.id import ID
from libp2p.peer.peer_record import PeerRecord
from libp2p.peer.peerstore import PeerStore
from libp2p.pubsub import utils as pubsub_utils
from libp2p.pubsub.pb import rpc_pb2

from p2pinfer.net import compat
from p2pinfer.net.compat import sender_records
from tests.unit.net.compat.canary import assert_written_for_installed_libp2p

Consume = Callable[..., bool]


def signed_record(seed: int) -> tuple[ID, bytes]:
    """A peer id and its signed peer record, as sent in an RPC's `senderRecord`."""
    pair = create_new_key_pair(bytes([seed]) * 32)
    pid = ID.from_pubkey(pair.public_key)
    record = PeerRecord(pid, [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/4001")])
    return pid, seal_record(record, pair.private_key).marshal_envelope()


def host() -> SimpleNamespace:
    store = PeerStore()
    return SimpleNamespace(get_peerstore=lambda: store)


def verifications(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Count the records py-libp2p's pubsub decodes and verifies."""
    seen: list[bytes] = []
    consume = pubsub_utils.consume_envelope

    def counting(data: bytes, domain: str) -> object:
        seen.append(data)
        return consume(data, domain)

    monkeypatch.setattr(pubsub_utils, "consume_envelope", counting)
    return seen


def receive(consume: Consume, rpcs: int, monkeypatch: pytest.MonkeyPatch) -> int:
    pid, raw = signed_record(1)
    seen = verifications(monkeypatch)
    receiver = host()
    for _ in range(rpcs):
        assert consume(rpc_pb2.RPC(senderRecord=raw), receiver, pid)
    return len(seen)


def test_canary_libp2p_is_the_version_the_workaround_was_written_for() -> None:
    assert_written_for_installed_libp2p(sender_records)


def test_defect_stock_libp2p_verifies_the_same_record_on_every_rpc(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # If this fails, upstream stopped re-verifying: drop the workaround.
    assert receive(sender_records.ORIGINAL, 5, monkeypatch) == 5


def test_an_unchanged_record_is_verified_once(monkeypatch: pytest.MonkeyPatch) -> None:
    assert receive(sender_records.consume_sender_record_once, 5, monkeypatch) == 1


def test_a_foreign_tampered_or_garbage_record_is_still_refused() -> None:
    pid, raw = signed_record(2)
    stranger, _ = signed_record(3)
    receiver = host()
    consume = sender_records.consume_sender_record_once
    assert consume(rpc_pb2.RPC(senderRecord=raw), receiver, pid)
    assert not consume(rpc_pb2.RPC(senderRecord=raw), receiver, stranger)
    tampered = raw[:-1] + bytes([raw[-1] ^ 1])
    assert not consume(rpc_pb2.RPC(senderRecord=tampered), receiver, pid)
    assert not consume(rpc_pb2.RPC(senderRecord=b"garbage"), receiver, pid)
    assert consume(rpc_pb2.RPC(), receiver, pid)  # no record: nothing to refuse


def test_a_peer_whose_addresses_expired_is_no_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    # py-libp2p's get_peer_record raises PeerStoreError ("peer ID is expired") for a peer
    # whose addresses' TTL ran out while its connection stays up (stock pubsub catches it
    # around the whole check). Raised out of a gossip stream handler, it stopped the node
    # (seen in docker: a node's gateway consumer, once DCUtR closed the relayed leg).
    pid, raw = signed_record(4)
    receiver = host()
    consume = sender_records.consume_sender_record_once
    assert consume(rpc_pb2.RPC(senderRecord=raw), receiver, pid)
    data = receiver.get_peerstore().peer_data_map[pid]
    data.ttl, data.last_identified = 1, 0  # identified at the epoch: long expired
    # Verified afresh and stored again, as stock py-libp2p answers it: the addresses live.
    assert consume(rpc_pb2.RPC(senderRecord=raw), receiver, pid)
    assert not data.is_expired()


def test_install_rebinds_the_name_where_pubsub_looks_it_up() -> None:
    compat.install()
    compat.install()
    for module in sender_records.CALLERS:
        assert module.maybe_consume_signed_record is sender_records.consume_sender_record_once
