"""The NFQUEUE delay script of the docker NAT testnet (p2pinfer/testnet/netdelay.py): the
messages it sends and its parse of what the kernel sends back, byte for byte against
nfnetlink_queue's layout. Its run against a real kernel is bench/reachability.py's
`--delay-ms` and tests/integration/test_docker_nat.py."""

from __future__ import annotations

import socket
import struct

from p2pinfer.testnet import netdelay


def packet_message(packet_id: int, *, extra_before: bytes = b"") -> bytes:
    """What the kernel queues: an NFQNL_MSG_PACKET whose NFQA_PACKET_HDR holds the id."""
    hdr = netdelay.attr(netdelay.NFQA_PACKET_HDR, struct.pack(">IHB", packet_id, 0x0800, 2))
    return netdelay.message(netdelay.NFQNL_MSG_PACKET, 0, extra_before + hdr, flags=0)


def ack(errno_value: int) -> bytes:
    body = struct.pack("=i", -errno_value) + b"\0" * 16  # the error, then the request header
    return struct.pack("=IHHII", 16 + len(body), netdelay.NLMSG_ERROR, 0, 1, 0) + body


def test_attributes_are_padded_to_four_bytes() -> None:
    raw = netdelay.attr(7, b"\x01\x02\x03\x04\x05")
    assert struct.unpack_from("=HH", raw) == (9, 7)  # the length counts no padding
    assert len(raw) == 12 and raw.endswith(b"\0\0\0")


def test_the_bind_and_params_messages_follow_nfnetlink_queue_layout() -> None:
    bind, params = netdelay.config_messages(5)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", bind)
    assert length == len(bind) and kind == (3 << 8) | 2  # subsystem QUEUE, MSG_CONFIG
    assert flags == netdelay.NLM_F_REQUEST | netdelay.NLM_F_ACK and seq == 1
    assert struct.unpack_from(">BBH", bind, 16) == (socket.AF_UNSPEC, 0, 5)  # queue, big-endian
    assert struct.unpack_from("=HH", bind, 20) == (8, netdelay.NFQA_CFG_CMD)
    assert struct.unpack_from(">BxH", bind, 24) == (netdelay.NFQNL_CFG_CMD_BIND, socket.AF_INET)
    assert struct.unpack_from("=HH", params, 20) == (9, netdelay.NFQA_CFG_PARAMS)
    assert struct.unpack_from(">IB", params, 24) == (0, netdelay.NFQNL_COPY_META)


def test_a_batch_verdict_accepts_up_to_an_id() -> None:
    msg = netdelay.verdict_up_to(0, 0x01020304)
    assert struct.unpack_from("=HH", msg, 4)[0] == (3 << 8) | netdelay.NFQNL_MSG_VERDICT_BATCH
    assert struct.unpack_from(">II", msg, 24) == (netdelay.NF_ACCEPT, 0x01020304)


def test_parse_reads_every_queued_id_in_order_and_the_acks() -> None:
    other_attr = netdelay.attr(9, b"\xff" * 6)  # attributes before the header are skipped
    buf = packet_message(41) + packet_message(42, extra_before=other_attr) + ack(0) + ack(1)
    assert netdelay.parse(buf) == ([41, 42], [0, 1])


def test_parse_stops_at_a_truncated_or_malformed_message() -> None:
    whole = packet_message(7)
    assert netdelay.parse(whole + packet_message(8)[:-3]) == ([7], [])
    bad_length = struct.pack("=IHHII", 4, 0, 0, 0, 0)  # shorter than its own header
    assert netdelay.parse(whole + bad_length + packet_message(9)) == ([7], [])
    zero_attr = netdelay.message(netdelay.NFQNL_MSG_PACKET, 0, struct.pack("=HH", 0, 1), flags=0)
    assert netdelay.parse(zero_attr + whole) == ([7], [])
