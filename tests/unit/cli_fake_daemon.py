"""A scripted Engine API on a unix socket, for the CLI's unit tests (no daemon, no root).

``FakeDaemon(path)`` serves in a background thread: each request is matched
against ``routes`` (``(METHOD, path regex)`` → handler) and recorded in
``requests``. A handler returns ``(status, body)`` (body: bytes, a JSON-able
object, or a list of byte chunks sent with chunked encoding) or, for a
hijacked request, ``Hijacked(payload)``: ``101 UPGRADED`` then the payload
and a close.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class Hijacked:
    payload: bytes
    stdin: bytearray = field(default_factory=bytearray)
    wait_stdin: bool = False  # like `cat`: read stdin to its end, then answer
    wait_seen_at_start: bool = False  # set by a test's start route that looks for the wait


Handler = Callable[[Request], Any]


def _read_request(conn: socket.socket, buf: bytes) -> tuple[Request | None, bytes]:
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            return None, b""
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while True:
            while b"\r\n" not in rest:
                rest += conn.recv(65536)
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                rest += conn.recv(65536)
            body += rest[:size]
            rest = rest[size + 2 :]
            if size == 0:
                break
    else:
        length = int(headers.get("content-length") or 0)
        while len(rest) < length:
            rest += conn.recv(65536)
        body, rest = rest[:length], rest[length:]
    from urllib.parse import parse_qs, unquote, urlsplit

    parts = urlsplit(target)
    path = re.sub(r"^/v1\.\d+", "", unquote(parts.path))
    return Request(method, path, parse_qs(parts.query, keep_blank_values=True), headers, body), rest


class FakeDaemon:
    def __init__(self, path: str) -> None:
        self.path = path
        self.routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.requests: list[Request] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def host(self) -> str:
        return f"unix://{self.path}"

    def route(self, method: str, pattern: str, handler: Handler | Any) -> None:
        fn = handler if callable(handler) else (lambda _req, _v=handler: _v)
        self.routes.insert(0, (method, re.compile(pattern + "$"), fn))

    def calls(self) -> list[str]:
        return [f"{r.method} {r.path}" for r in self.requests]

    def close(self) -> None:
        self._stop = True
        self.sock.close()

    def _serve(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            self._handle_requests(conn)
        except OSError:
            pass  # the client went away (a closed wait, a test's end)

    def _handle_requests(self, conn: socket.socket) -> None:
        with conn:
            buf = b""
            while True:
                req, buf = _read_request(conn, buf)
                if req is None:
                    return
                self.requests.append(req)
                result: Any = (404, {"message": f"page not found: {req.method} {req.path}"})
                for method, pattern, fn in self.routes:
                    if method == req.method and pattern.match(req.path):
                        result = fn(req)
                        break
                if isinstance(result, Hijacked):
                    conn.sendall(
                        b"HTTP/1.1 101 UPGRADED\r\nContent-Type: application/vnd.docker.raw-stream"
                        b"\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                    )
                    if result.wait_stdin:
                        result.stdin += buf
                        while data := conn.recv(65536):
                            result.stdin += data
                    conn.sendall(result.payload)
                    conn.shutdown(socket.SHUT_WR)
                    while True:
                        data = conn.recv(65536)
                        if not data:
                            return
                        result.stdin += data
                status, body = result
                if isinstance(body, list) and body and all(isinstance(c, bytes) for c in body):
                    head = f"HTTP/1.1 {status} X\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                    payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in body) + b"0\r\n\r\n"
                    conn.sendall(head + payload)
                    continue
                if not isinstance(body, bytes):
                    body = json.dumps(body).encode() if body is not None else b""
                conn.sendall(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )


def frame(stream: int, data: bytes) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data
