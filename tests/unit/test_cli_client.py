"""The lean HTTP client: body framings, errors, hijack leftovers, pending requests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkhead.cli.client import APIError, Client


class OneShot:
    """Answer every connection with ``raw`` (then close); keep what was received."""

    def __init__(self, path: str, raw: bytes) -> None:
        self.raw = raw
        self.received: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                if b"Transfer-Encoding: chunked" in data:
                    while not data.endswith(b"0\r\n\r\n"):
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                self.received.append(data)
                conn.sendall(self.raw)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture()
def serve(tmp_path: Path) -> Iterator[object]:
    servers: list[OneShot] = []

    def start(raw: bytes) -> tuple[Client, OneShot]:
        path = str(tmp_path / f"s{len(servers)}.sock")
        server = OneShot(path, raw)
        servers.append(server)
        return Client(path), server

    yield start
    for s in servers:
        s.close()


def test_chunked_with_extensions_and_trailers(serve: object) -> None:
    client, _ = serve(  # type: ignore[operator]
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: y\r\n\r\n"
    )
    assert client.request("GET", "/x").read() == b"hello world"


def test_close_delimited_body(serve: object) -> None:
    client, _ = serve(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")  # type: ignore[operator]
    assert client.request("GET", "/x").read() == b"until the end"


def test_head_and_204_have_no_body(serve: object) -> None:
    client, _ = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 42\r\n\r\n")  # type: ignore[operator]
    resp = client.send("HEAD", "/x")
    assert resp.status == 200 and resp.read() == b""
    client, _ = serve(b"HTTP/1.1 204 No Content\r\n\r\n")  # type: ignore[operator]
    assert client.request("POST", "/x").read() == b""


def test_error_messages(serve: object) -> None:
    client, _ = serve(  # type: ignore[operator]
        b'HTTP/1.1 409 Conflict\r\nContent-Length: 24\r\n\r\n{"message":"name taken"}'
    )
    with pytest.raises(APIError) as info:
        client.get("/x")
    assert (info.value.status, str(info.value)) == (409, "Error response from daemon: name taken")
    client, _ = serve(b"HTTP/1.1 500 Oops\r\nContent-Length: 5\r\n\r\nplain")  # type: ignore[operator]
    with pytest.raises(APIError, match="plain"):
        client.get("/x")


def test_hijack_keeps_bytes_that_came_with_the_headers(serve: object) -> None:
    client, server = serve(  # type: ignore[operator]
        b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\nearly bytes"
    )
    sock, leftover, headers = client.hijack("POST", "/containers/x/attach", query={"stream": 1})
    sock.close()
    assert leftover == b"early bytes" and headers["upgrade"] == "tcp"
    request = server.received[0]
    assert b"Connection: Upgrade\r\n" in request and b"Upgrade: tcp\r\n" in request
    assert request.startswith(b"POST /v1.50/containers/x/attach?stream=1 HTTP/1.1\r\n")


def test_streamed_request_body_is_chunked(serve: object) -> None:
    client, server = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")  # type: ignore[operator]
    assert client.post("/images/load", iter([b"abc", b"", b"defg"])) == {}
    assert server.received[0].endswith(b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")


def test_json_lines(serve: object) -> None:
    client, _ = serve(  # type: ignore[operator]
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'8\r\n{"a":1}\n\r\n9\r\n{"b":2}\nx\r\n0\r\n\r\n'
    )
    assert list(client.request("POST", "/x").json_messages()) == [
        {"a": 1},
        {"b": 2},
        {"stream": "x\n"},
    ]


def test_pending_request_reads_later(serve: object) -> None:
    client, _ = serve(b'HTTP/1.1 200 OK\r\nContent-Length: 16\r\n\r\n{"StatusCode":3}')  # type: ignore[operator]
    pending = client.start_request("POST", "/containers/x/wait", query={"condition": "removed"})
    assert pending.response().json() == {"StatusCode": 3}


def test_first_json_does_not_wait_for_the_end_of_the_body() -> None:
    """``wait``'s answer counts once its document is complete: the last chunk may come late."""
    from bulkhead.cli.client import Response

    ours, daemon = socket.socketpair()
    with ours, daemon:
        ours.settimeout(5)  # reading to the end would block here, not hang the suite
        resp = Response(ours, 200, "OK", {"transfer-encoding": "chunked"}, b'5\r\n{"Sta', "POST")
        daemon.sendall(b'\r\nd\r\ntusCode": 3}\n\r\n')  # ...and no terminating chunk yet
        assert resp.first_json() == {"StatusCode": 3}


def test_first_json_of_an_empty_or_closed_body(serve: object) -> None:
    client, _ = serve(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # type: ignore[operator]
    assert client.request("POST", "/x").first_json() is None
    client, _ = serve(b'HTTP/1.1 200 OK\r\n\r\n{"StatusCode":0,"Error":{"Message":"x"}}')  # type: ignore[operator]
    assert client.request("POST", "/x").first_json() == {"StatusCode": 0, "Error": {"Message": "x"}}
