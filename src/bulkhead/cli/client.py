"""A lean HTTP/1.1 client of the Engine API over a unix socket (``socket`` + ``json``).

One connection per request (unix sockets connect in microseconds), so no
pool and no state. Bodies come back with ``Content-Length``, chunked
transfer coding, or until close. A *hijacked* request (attach, exec start)
sends ``Connection: Upgrade`` / ``Upgrade: tcp``; after the daemon's ``101
UPGRADED`` (or ``200``) the socket carries the raw stream both ways.

*Autostart*: when the socket does not answer and it is the default one (or
``BULKHEAD_AUTOSTART=1``), :func:`start_daemon` spawns ``python -m
bulkhead.daemon`` in its own session (``os.posix_spawn`` with ``setsid``,
stdio to a log file) and waits up to 5 s for ``/_ping``.
"""

from __future__ import annotations

import os
import sys
import time

# _socket, not socket: the socket module builds its IntEnums at import (enum, selectors,
# functools, collections: ~8 ms of every command); the C type has all the client uses.
from _socket import AF_UNIX, SOCK_STREAM
from _socket import socket as Socket

from bulkhead.cli.jsonlite import dumps, loads

TYPE_CHECKING = False  # typing, collections.abc and urllib.parse cost milliseconds at start
if TYPE_CHECKING:
    from collections.abc import Generator, Iterable, Iterator
    from typing import Any

DEFAULT_SOCKET = "/run/bulkhead/bulkhead.sock"
#: The API version the CLI speaks (docker 28.2's: the request bodies are built as it builds them).
API_VERSION = "1.50"
USER_AGENT = "bulkhead-cli"
AUTOSTART_TIMEOUT = 5.0


class DaemonUnavailable(Exception):
    """Nothing answers on the socket (and it was not started for us)."""


class APIError(Exception):
    """An error response: ``status`` and the daemon's ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def __str__(self) -> str:
        return f"Error response from daemon: {self.message}"


def socket_from_env(host: str | None = None) -> tuple[str, bool]:
    """The socket path and whether it is the default (``-H``, BULKHEAD_HOST, DOCKER_HOST)."""
    for value in (host, os.environ.get("BULKHEAD_HOST"), os.environ.get("DOCKER_HOST")):
        if value:
            if value.startswith("unix://"):
                return value[len("unix://") :], value[len("unix://") :] == DEFAULT_SOCKET
            if "://" in value:
                raise DaemonUnavailable(f"unsupported host {value!r}: only unix:// sockets")
            return value, value == DEFAULT_SOCKET
    return DEFAULT_SOCKET, True


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _quote(text: str, safe: bytes) -> str:
    """Percent-encoding (RFC 3986): unreserved and ``safe`` bytes kept."""
    ok = _UNRESERVED | frozenset(safe)
    return "".join(chr(b) if b in ok else f"%{b:02X}" for b in text.encode())


def _quote_path(path: str) -> str:
    return _quote(path, b"/:@!$&'()*+,;=")


def urlencode(pairs: list[tuple[str, str]]) -> str:
    """A query string (``application/x-www-form-urlencoded``, spaces as ``+``)."""
    return "&".join(
        _quote(k, b" ").replace(" ", "+") + "=" + _quote(v, b" ").replace(" ", "+")
        for k, v in pairs
    )


def build_target(path: str, query: dict[str, Any] | None = None) -> str:
    """``/v1.50`` + ``path`` + the query (None values dropped, lists repeated, bools 1/0)."""
    target = f"/v{API_VERSION}{_quote_path(path)}"
    if query:
        pairs: list[tuple[str, str]] = []
        for key, value in query.items():
            if value is None:
                continue
            values = value if isinstance(value, list) else [value]
            for v in values:
                if isinstance(v, bool):
                    v = "1" if v else "0"
                pairs.append((key, str(v)))
        if pairs:
            target += "?" + urlencode(pairs)
    return target


class Response:
    """A response whose body is read on demand (``read``, ``chunks``, ``lines``)."""

    def __init__(
        self,
        sock: Socket,
        status: int,
        reason: str,
        headers: dict[str, str],
        buffered: bytes,
        method: str,
    ) -> None:
        self.sock = sock
        self.status = status
        self.reason = reason
        self.headers = headers
        self._buf = buffered
        self._method = method
        te = headers.get("transfer-encoding", "").lower()
        self._chunked = "chunked" in te
        length = headers.get("content-length")
        self._remaining: int | None = (
            int(length) if length is not None and not self._chunked else None
        )
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            self._remaining = 0
            self._chunked = False
        self._done = False

    def _recv(self) -> bytes:
        if self._buf:
            data, self._buf = self._buf, b""
            return data
        return self.sock.recv(65536)

    def _read_exact_line(self) -> bytes:
        while b"\r\n" not in self._buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("connection closed inside a chunk header")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\r\n")
        return line

    def _read_n(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = self.sock.recv(max(65536, n - len(self._buf)))
            if not data:
                raise ConnectionError("connection closed inside a chunk")
            self._buf += data
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def chunks(self) -> Generator[bytes, None, None]:
        """The body as it arrives."""
        if self._done:
            return
        try:
            if self._chunked:
                while True:
                    size = int(self._read_exact_line().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self._read_exact_line():  # trailers
                            pass
                        break
                    yield self._read_n(size)
                    self._read_n(2)
            elif self._remaining is not None:
                while self._remaining > 0:
                    data = self._recv()
                    if not data:
                        break
                    if len(data) > self._remaining:
                        data = data[: self._remaining]
                    self._remaining -= len(data)
                    yield data
            else:
                while True:
                    data = self._recv()
                    if not data:
                        break
                    yield data
        finally:
            self._done = True
            self.close()

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def json(self) -> Any:
        data = self.read()
        return loads(data) if data.strip() else None

    def first_json(self) -> Any:
        """The body's first JSON document, as soon as it is complete (None for no body).

        The rest of the body is not waited for: the daemon may end a chunked
        body some time after its last document (``wait``'s answer, when the
        daemon is busy removing the container), and docker's CLI decodes the
        answer the same way (a json.Decoder on the body, no read to EOF).
        """
        buf = b""
        chunks = self.chunks()
        try:
            for chunk in chunks:
                buf += chunk
                if buf.rstrip().endswith((b"}", b"]")):
                    try:
                        return loads(buf)
                    except ValueError:
                        continue  # a document split inside a string or a nested object
        finally:
            chunks.close()
        return loads(buf) if buf.strip() else None

    def lines(self) -> Iterator[bytes]:
        """Newline-delimited messages (pull progress, load output, events)."""
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            while b"\n" in pending:
                line, _, pending = pending.partition(b"\n")
                if line.strip():
                    yield line
        if pending.strip():
            yield pending

    def json_messages(self) -> Iterator[Any]:
        """JSON-lines messages; a line that is not JSON comes back as ``{"stream": line}``."""
        for line in self.lines():
            try:
                yield loads(line)
            except ValueError:
                yield {"stream": line.decode(errors="replace") + "\n"}

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def error_message(status: int, body: bytes) -> str:
    try:
        doc = loads(body)
    except ValueError:
        text = body.decode(errors="replace").strip()
        return text or f"HTTP {status}"
    if isinstance(doc, dict) and "message" in doc:
        return str(doc["message"])
    return body.decode(errors="replace").strip()


class PendingRequest:
    """A request sent whose response has not been read yet."""

    def __init__(self, sock: Socket, method: str) -> None:
        self.sock = sock
        self.method = method

    def response(self) -> Response:
        try:
            return _read_head(self.sock, self.method)
        except BaseException:
            self.sock.close()
            raise

    def close(self) -> None:
        self.sock.close()


def _read_head(sock: Socket, method: str) -> Response:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the daemon closed the connection without a response")
        buf += data
        if len(buf) > 1 << 20:
            raise ConnectionError("response headers too large")
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    status = int(parts[1])
    reason = parts[2] if len(parts) > 2 else ""
    headers: dict[str, str] = {}
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return Response(sock, status, reason, headers, rest, method)


class Client:
    """The Engine API on ``socket_path``; ``autostart`` starts a daemon when none answers."""

    def __init__(self, socket_path: str = DEFAULT_SOCKET, *, autostart: bool = False) -> None:
        self.socket_path = socket_path
        self.autostart = autostart
        self._started = False

    # --- connections -------------------------------------------------------------

    def _connect(self) -> Socket:
        sock = Socket(AF_UNIX, SOCK_STREAM)
        try:
            sock.connect(self.socket_path)
            return sock
        except PermissionError:
            sock.close()
            raise DaemonUnavailable(
                "permission denied while trying to connect to the bulkhead daemon socket "
                f"at unix://{self.socket_path}"
            ) from None
        except OSError as exc:  # no socket, nobody listening, a bad path
            sock.close()
            if self.autostart and not self._started:
                self._started = True
                try:
                    start_daemon(self.socket_path)
                except OSError as start_exc:  # e.g. not root: /run/bulkhead is not ours
                    raise DaemonUnavailable(
                        f"Cannot connect to the bulkhead daemon at unix://{self.socket_path}"
                        f" and cannot start one: {start_exc}"
                    ) from None
                return self._connect()
            raise DaemonUnavailable(
                f"Cannot connect to the bulkhead daemon at unix://{self.socket_path}. "
                f"Is the daemon running? ({exc.strerror})"
            ) from None

    def send(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        upgrade: bool = False,
    ) -> Response:
        """Send a request; return the response with its headers read.

        ``body``: None, bytes, a JSON-able object, or an iterable of byte
        chunks (sent with chunked transfer coding: image load, import, cp).
        """
        pending = self.start_request(
            method, path, query=query, body=body, headers=headers, upgrade=upgrade
        )
        return pending.response()

    def start_request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
        upgrade: bool = False,
    ) -> PendingRequest:
        """Send a request and return before its response: ``.response()`` reads it.

        ``run`` sends its ``wait`` this way before starting the container
        (as docker does), so that the exit of a ``--rm`` container is not missed.
        """
        sock = self._connect()
        target = build_target(path, query)
        hdrs = {"Host": "bulkhead", "User-Agent": USER_AGENT}
        payload: bytes | None = None
        stream: Iterable[bytes] | None = None
        if body is None:
            if method in ("POST", "PUT"):
                payload = b""
        elif isinstance(body, bytes | bytearray):
            payload = bytes(body)
        elif isinstance(body, dict | list):
            payload = dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        else:
            stream = body
        if payload is not None:
            hdrs["Content-Length"] = str(len(payload))
        if stream is not None:
            hdrs["Transfer-Encoding"] = "chunked"
        if upgrade:
            hdrs["Connection"] = "Upgrade"
            hdrs["Upgrade"] = "tcp"
        if headers:
            hdrs.update(headers)
        head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        try:
            sock.sendall(head.encode("latin-1") + b"\r\n" + (payload or b""))
            if stream is not None:
                for chunk in stream:
                    if chunk:
                        sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sock.sendall(b"0\r\n\r\n")
        except BaseException:
            sock.close()
            raise
        return PendingRequest(sock, method)

    # --- conveniences ------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, Any] | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """Like :meth:`send`, raising :class:`APIError` for a status >= 400."""
        resp = self.send(method, path, query=query, body=body, headers=headers)
        if resp.status >= 400:
            raise APIError(resp.status, error_message(resp.status, resp.read()))
        return resp

    def get(self, path: str, **query: Any) -> Any:
        return self.request("GET", path, query=query).json()

    def post(self, path: str, body: Any = None, **query: Any) -> Any:
        return self.request("POST", path, query=query, body=body).json()

    def delete(self, path: str, **query: Any) -> Any:
        return self.request("DELETE", path, query=query).json()

    def hijack(
        self, method: str, path: str, *, query: dict[str, Any] | None = None, body: Any = None
    ) -> tuple[Socket, bytes, dict[str, str]]:
        """An upgraded connection: the socket, bytes already received, the headers."""
        resp = self.send(method, path, query=query, body=body, upgrade=True)
        if resp.status >= 400:
            raise APIError(resp.status, error_message(resp.status, resp.read()))
        if resp.status not in (101, 200):
            resp.close()
            raise APIError(resp.status, f"unable to upgrade to tcp, received {resp.status}")
        return resp.sock, resp._buf, resp.headers

    def ping(self, timeout: float = 1.0) -> bool:
        try:
            sock = Socket(AF_UNIX, SOCK_STREAM)
        except OSError:
            return False
        try:
            sock.settimeout(timeout)
            sock.connect(self.socket_path)
            sock.sendall(b"GET /_ping HTTP/1.1\r\nHost: bulkhead\r\nConnection: close\r\n\r\n")
            return sock.recv(16).startswith(b"HTTP/1.1 200")
        except OSError:
            return False
        finally:
            sock.close()


def daemon_log_path(socket_path: str) -> str:
    """Where an autostarted daemon logs: /var/log/bulkhead.log for the default socket."""
    if socket_path == DEFAULT_SOCKET and os.access("/var/log", os.W_OK):
        return "/var/log/bulkhead.log"
    return os.path.join(os.path.dirname(socket_path) or ".", "daemon.log")


def daemon_argv(socket_path: str) -> list[str]:
    """The daemon's command line (extra words from ``BULKHEAD_DAEMON_ARGS``)."""
    import shlex

    argv = [sys.executable, "-m", "bulkhead.daemon", "--host", f"unix://{socket_path}"]
    return argv + shlex.split(os.environ.get("BULKHEAD_DAEMON_ARGS", ""))


def start_daemon(socket_path: str, timeout: float = AUTOSTART_TIMEOUT) -> int | None:
    """Spawn a detached daemon for ``socket_path``; wait until ``/_ping`` answers.

    ``os.posix_spawn`` (no fork from Python), ``setsid`` so the daemon
    outlives the terminal; stdin is /dev/null, stdout and stderr go to the
    log. CLIs starting at the same moment take turns on a lock file beside
    the socket: the second finds the first one's daemon answering and
    spawns none. Returns the new daemon's pid (None when another answered).
    """
    import fcntl

    directory = os.path.dirname(socket_path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    client = Client(socket_path)
    lock_fd = os.open(
        os.path.join(directory, ".bulkhead-autostart.lock"), os.O_RDWR | os.O_CREAT, 0o600
    )
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        if client.ping(timeout=0.5):
            return None
        log_path = daemon_log_path(socket_path)
        argv = daemon_argv(socket_path)
        pid = os.posix_spawn(
            argv[0],
            argv,
            os.environ,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_OPEN, 1, log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640),
                (os.POSIX_SPAWN_DUP2, 1, 2),
            ],
            setsid=True,
        )
        deadline = time.monotonic() + timeout
        exited: int | None = None
        while time.monotonic() < deadline:
            if client.ping(timeout=0.5):
                return pid
            if exited is None:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    exited = os.waitstatus_to_exitcode(status)
                    break
            time.sleep(0.02)
    finally:
        os.close(lock_fd)
    if exited is not None:
        raise DaemonUnavailable(
            f"the bulkhead daemon exited at start-up (status {exited}); see {log_path}"
        )
    raise DaemonUnavailable(
        f"the bulkhead daemon did not answer on unix://{socket_path} within {timeout:g} s;"
        f" see {log_path}"
    )
