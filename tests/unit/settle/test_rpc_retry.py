"""The chain client's HTTP provider against an RPC server that drops a connection
before answering (an idle keep-alive connection closed just as a request goes out;
hypercorn, which serves the local chain, closes idle ones after 5 s): a read is tried
again on a new connection, a transaction is never sent twice. A raw socket server on
127.0.0.1 in a thread."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from p2pinfer.settle.chain import rpc_provider


class DroppingRpcServer:
    """Answers JSON-RPC with `0x539`, after closing the first `drop` connections as soon
    as their request has arrived; counts the requests it received."""

    def __init__(self, drop: int) -> None:
        self.drop = drop
        self.received: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                body = self._read_request(conn)
                self.received.append(body["method"])
                if len(self.received) <= self.drop:
                    continue  # closed without an answer
                answer = json.dumps({"jsonrpc": "2.0", "id": body["id"], "result": "0x539"})
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                             % (len(answer), answer.encode()))

    @staticmethod
    def _read_request(conn: socket.socket) -> dict[str, object]:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:"))
        while len(body) < length:
            body += conn.recv(65536)
        parsed: dict[str, object] = json.loads(body)
        return parsed

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def dropping_once() -> Iterator[DroppingRpcServer]:
    server = DroppingRpcServer(drop=1)
    yield server
    server.close()


def test_a_read_whose_connection_drops_before_the_answer_is_tried_again(
        dropping_once: DroppingRpcServer) -> None:
    with requests.Session() as session:
        provider = rpc_provider(dropping_once.url, 5.0, session)
        assert provider.make_request("eth_chainId", [])["result"] == "0x539"
    assert dropping_once.received == ["eth_chainId", "eth_chainId"]


def test_a_transaction_whose_connection_drops_is_not_sent_again(
        dropping_once: DroppingRpcServer) -> None:
    # The server may have taken it: a second send could spend the nonce twice over, so
    # the caller learns of the failure and checks the receipt instead.
    with requests.Session() as session:
        provider = rpc_provider(dropping_once.url, 5.0, session)
        with pytest.raises(requests.exceptions.ConnectionError):
            provider.make_request("eth_sendRawTransaction", ["0x00"])
    assert dropping_once.received == ["eth_sendRawTransaction"]


def test_a_chain_that_keeps_dropping_fails_after_three_tries() -> None:
    server = DroppingRpcServer(drop=10)
    try:
        with requests.Session() as session:
            provider = rpc_provider(server.url, 5.0, session)
            with pytest.raises(requests.exceptions.ConnectionError):
                provider.make_request("eth_blockNumber", [])
        assert server.received == ["eth_blockNumber"] * 3
    finally:
        server.close()
