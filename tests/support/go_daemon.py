"""A go-libp2p peer for interop tests: the libp2p daemon (`p2pd`) that hivemind's wheel
ships (PyPI `hivemind==1.1.12`, installed with `--no-deps` by scripts/setup-venv; nothing
of hivemind's Python is imported).

The daemon is a go-libp2p host (Noise, yamux, multistream-select, identify, ping, Kademlia
on `/ipfs/kad/1.0.0`, Circuit Relay v2, GossipSub) driven over a unix socket by its control
protocol: varint-length-delimited protobuf (`p2pd.proto`, whose generated module ships
in the same wheel and is loaded from its file). Each request takes a new control
connection; after a STREAM_OPEN answered OK, that connection is the libp2p stream.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from types import ModuleType
from typing import Any

import multiaddr
import trio
from libp2p.peer.id import ID
from libp2p.utils.varint import encode_varint_prefixed

from tests.support.processes import stop_process

GO_IP = "127.0.0.4"


def daemon_files() -> tuple[Path, Path] | None:
    """(the p2pd binary, its p2pd_pb2.py) from the installed hivemind wheel, or None."""
    try:
        dist = distribution("hivemind")
    except PackageNotFoundError:
        return None
    binary = Path(str(dist.locate_file("hivemind/hivemind_cli/p2pd")))
    proto = Path(str(dist.locate_file("hivemind/proto/p2pd_pb2.py")))
    return (binary, proto) if binary.exists() and proto.exists() else None


def load_pb(path: Path) -> ModuleType:
    name = "p2pd_control_pb2"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


async def _read_delimited(stream: trio.SocketStream, message: Any) -> Any:
    length, shift = 0, 0
    while True:
        got = await stream.receive_some(1)
        if not got:
            raise EOFError("the daemon closed the control connection")
        length |= (got[0] & 0x7F) << shift
        shift += 7
        if not got[0] & 0x80:
            break
    body = b""
    while len(body) < length:
        more = await stream.receive_some(length - len(body))
        if not more:
            raise EOFError("the daemon closed the control connection mid-message")
        body += more
    message.ParseFromString(body)
    return message


async def _exchange(stream: trio.SocketStream, request: Any, pb: ModuleType) -> Any:
    """Send one control request on a new control connection; its Response."""
    await stream.send_all(encode_varint_prefixed(request.SerializeToString()))
    return await _read_delimited(stream, pb.Response())


@dataclass
class GoPeer:
    """A running daemon: its peer id, its TCP address, and its control socket."""

    peer_id: str
    addr: str  # /ip4/.../tcp/N/p2p/<peer_id>
    socket: str
    pb: ModuleType

    async def _call(self, request: Any) -> tuple[trio.SocketStream, Any]:
        stream = await trio.open_unix_socket(self.socket)
        return stream, await _exchange(stream, request, self.pb)

    async def peers(self) -> list[str]:
        """The peers the daemon holds a connection to."""
        stream, response = await self._call(self.pb.Request(type=self.pb.Request.LIST_PEERS))
        await stream.aclose()
        return [ID(p.id).to_base58() for p in response.peers]

    async def open_stream(self, peer_id: str, protocol: str) -> trio.SocketStream:
        """A stream from the go peer to `peer_id` speaking `protocol` (go dials if need be);
        RuntimeError with the daemon's message if it could not be opened."""
        pb = self.pb
        request = pb.Request(type=pb.Request.STREAM_OPEN, streamOpen=pb.StreamOpenRequest(
            peer=ID.from_base58(peer_id).to_bytes(), proto=[protocol], timeout=10))
        stream, response = await self._call(request)
        if response.type != self.pb.Response.OK:
            await stream.aclose()
            raise RuntimeError(response.error.msg)
        return stream


    async def subscribe(self, topic: str) -> trio.SocketStream:
        """Subscribe the go peer to `topic` (GossipSub): the returned connection yields
        each message it delivers (`next_message`); closing it unsubscribes."""
        pb = self.pb
        stream, response = await self._call(pb.Request(
            type=pb.Request.PUBSUB, pubsub=pb.PSRequest(type=pb.PSRequest.SUBSCRIBE,
                                                        topic=topic)))
        if response.type != pb.Response.OK:
            await stream.aclose()
            raise RuntimeError(response.error.msg)
        return stream

    async def next_message(self, subscription: trio.SocketStream) -> Any:
        """The next message (a PSMessage: from, data, seqno, signature...) delivered."""
        return await _read_delimited(subscription, self.pb.PSMessage())

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish `data` on `topic`, signed by the go peer's key."""
        pb = self.pb
        stream, response = await self._call(pb.Request(
            type=pb.Request.PUBSUB, pubsub=pb.PSRequest(type=pb.PSRequest.PUBLISH,
                                                        topic=topic, data=data)))
        await stream.aclose()
        if response.type != pb.Response.OK:
            raise RuntimeError(response.error.msg)


@contextmanager
def go_daemon(*flags: str) -> Iterator[GoPeer]:
    """Run p2pd on GO_IP (a random port) with `flags`; stop it after. The caller checks
    `daemon_files()` first."""
    files = daemon_files()
    assert files is not None, "hivemind's p2pd is not installed (scripts/setup-venv)"
    binary, proto = files
    pb = load_pb(proto)
    with tempfile.TemporaryDirectory() as tmp:
        socket = os.path.join(tmp, "p2pd.sock")
        proc = subprocess.Popen(
            [str(binary), f"-listen=/unix{socket}", f"-hostAddrs=/ip4/{GO_IP}/tcp/0", "-q",
             *flags], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            peer = trio.run(_identify, socket, pb)
            yield peer
        finally:
            stop_process(proc, grace_s=10)


async def _identify(socket: str, pb: ModuleType) -> GoPeer:
    deadline = time.monotonic() + 20
    while True:
        try:
            stream = await trio.open_unix_socket(socket)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            await trio.sleep(0.05)
    response = await _exchange(stream, pb.Request(type=pb.Request.IDENTIFY), pb)
    await stream.aclose()
    peer_id = ID(response.identify.id).to_base58()
    tcp = [str(multiaddr.Multiaddr(a)) for a in response.identify.addrs]
    addr = next(a for a in tcp if a.startswith(f"/ip4/{GO_IP}/tcp/"))
    return GoPeer(peer_id, f"{addr}/p2p/{peer_id}", socket, pb)
