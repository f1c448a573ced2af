"""A fixed one-way delay on every packet a NAT router of the docker NAT testnet forwards,
for measuring a job over links slower than a docker bridge (bench/reachability.py
`--delay-ms`).

This kernel has no netem (`CONFIG_NET_SCH_NETEM` is off), so the delay is done in user
space: an iptables rule queues each forwarded packet to NFQUEUE and this script, run
inside the router with the system python (stdlib only: it is copied into the container,
which has no p2pinfer), holds each one `delay_ms` and then accepts it. The kernel hands
packets over in order and gives them increasing ids; one delay for all keeps that order,
so a batch verdict ("accept every id up to N") releases whatever has waited long enough.
Only packet metadata is copied to user space (`NFQNL_COPY_META`), never payload.

    python3 netdelay.py DELAY_MS [QUEUE]      # prints "ready" once bound

The wire format is nfnetlink's (linux/netfilter/nfnetlink_queue.h): a netlink header in
host byte order, an nfgenmsg whose queue number is big-endian, then attributes whose
payload structs are big-endian.
"""

from __future__ import annotations

import collections
import errno
import os
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NF_ACCEPT = 1
NLMSG_ERROR = 2
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLA_TYPE_MASK = 0x3FFF
_HEADER = struct.Struct("=IHHII")  # nlmsghdr: len, type, flags, seq, pid
_NFGEN = struct.Struct(">BBH")  # nfgenmsg: family, version, queue number (big-endian)
_ATTR = struct.Struct("=HH")  # nlattr: len, type


def _align(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = _ATTR.pack(_ATTR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align(len(raw)) - len(raw))


def message(msg_type: int, queue: int, attrs: bytes, *, flags: int = NLM_F_REQUEST,
            seq: int = 0) -> bytes:
    """An nfnetlink message of the queue subsystem to `queue`."""
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, queue) + attrs
    return _HEADER.pack(_HEADER.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type,
                        flags, seq, 0) + body


def config_messages(queue: int) -> list[bytes]:
    """Bind `queue` (IPv4) to this socket, then ask for metadata only (no payload)."""
    bind = attr(NFQA_CFG_CMD, struct.pack(">BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET))
    params = attr(NFQA_CFG_PARAMS, struct.pack(">IB", 0, NFQNL_COPY_META))
    return [message(NFQNL_MSG_CONFIG, queue, bind, flags=NLM_F_REQUEST | NLM_F_ACK, seq=1),
            message(NFQNL_MSG_CONFIG, queue, params, flags=NLM_F_REQUEST | NLM_F_ACK, seq=2)]


def verdict_up_to(queue: int, packet_id: int) -> bytes:
    """Accept every packet of `queue` whose id is at most `packet_id`."""
    return message(NFQNL_MSG_VERDICT_BATCH, queue,
                   attr(NFQA_VERDICT_HDR, struct.pack(">II", NF_ACCEPT, packet_id)))


def parse(buf: bytes) -> tuple[list[int], list[int]]:
    """The packet ids queued in `buf` (in order) and the error codes of its acks (0 = ok).
    A truncated or malformed message ends the parse: what came before it stands."""
    ids: list[int] = []
    errors: list[int] = []
    off = 0
    while off + _HEADER.size <= len(buf):
        length, msg_type, _flags, _seq, _pid = _HEADER.unpack_from(buf, off)
        if length < _HEADER.size or off + length > len(buf):
            break
        if msg_type == NLMSG_ERROR:
            errors.append(-struct.unpack_from("=i", buf, off + _HEADER.size)[0])
        elif msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            pos, end = off + _HEADER.size + _NFGEN.size, off + length
            while pos + _ATTR.size <= end:
                alen, akind = _ATTR.unpack_from(buf, pos)
                if alen < _ATTR.size:
                    break
                if akind & NLA_TYPE_MASK == NFQA_PACKET_HDR and alen >= _ATTR.size + 4:
                    ids.append(struct.unpack_from(">I", buf, pos + _ATTR.size)[0])
                    break
                pos += _align(alen)
        off += _align(length)
    return ids, errors


def serve(delay_s: float, queue: int) -> None:
    """Hold every packet of `queue` for `delay_s`, forever."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    sock.bind((0, 0))
    for msg in config_messages(queue):
        sock.send(msg)
        _, errors = parse(sock.recv(1 << 16))
        if any(errors):
            raise SystemExit(f"nfqueue config refused: {os.strerror(errors[0])}")
    print("ready", flush=True)
    sock.setblocking(False)
    pending: collections.deque[tuple[float, int]] = collections.deque()
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            now = time.monotonic()
            while True:
                try:
                    buf = sock.recv(1 << 16)
                except BlockingIOError:
                    break
                except OSError as exc:  # ENOBUFS: the kernel dropped what did not fit
                    if exc.errno != errno.ENOBUFS:
                        raise
                    continue
                ids, _ = parse(buf)
                pending.extend((now + delay_s, i) for i in ids)
        now, last = time.monotonic(), -1
        while pending and pending[0][0] <= now:
            last = pending.popleft()[1]
        if last >= 0:
            sock.send(verdict_up_to(queue, last))


if __name__ == "__main__":
    serve(float(sys.argv[1]) / 1000, int(sys.argv[2]) if len(sys.argv) > 2 else 0)
