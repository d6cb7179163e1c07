"""The hijacked stream of attach and exec, on the terminal.

After the upgrade the socket carries, towards the client, either the raw
bytes of a TTY or Docker's *multiplexed* stream: frames with an 8-byte
header (stream 0 stdin, 1 stdout, 2 stderr; three zero bytes; big-endian
32-bit length) then the payload. Towards the daemon it carries stdin bytes;
closing our write side (``shutdown(SHUT_WR)``) tells the daemon stdin ended.

:func:`pump` runs one ``select`` loop (single-threaded: the CLI never
starts threads) over the socket, stdin and a signal wake-up pipe. With a
TTY and a terminal on stdin, the terminal goes to raw mode for the
duration, SIGWINCH sends the new size to the daemon (a separate request),
and the detach sequence (ctrl-p ctrl-q by default) leaves the container
running.
"""

from __future__ import annotations

import os
import select
import sys

# _signal and _socket, not signal and socket: those build IntEnums at import (enum and more:
# milliseconds of every `run`); the C modules have all the stream needs.
from _socket import SHUT_WR

TYPE_CHECKING = False  # typing, contextlib and struct: milliseconds on every `run`
if TYPE_CHECKING:
    import signal as _signal  # the same functions, with stubs
    from _socket import socket as Socket
    from collections.abc import Callable, Iterator
    from typing import Any
else:
    import _signal

DEFAULT_DETACH_KEYS = b"\x10\x11"  # ctrl-p, ctrl-q


class Demuxer:
    """Split Docker's multiplexed stream into (stream, payload) pieces."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        self._buf += data
        while len(self._buf) >= 8:
            stream, size = self._buf[0], int.from_bytes(self._buf[4:8], "big")
            if len(self._buf) < 8 + size:
                break
            payload = self._buf[8 : 8 + size]
            self._buf = self._buf[8 + size :]
            yield stream, payload

    @property
    def pending(self) -> bytes:
        return self._buf


def parse_detach_keys(spec: str) -> bytes:
    """Docker's ``--detach-keys`` (``ctrl-p,ctrl-q``, ``a``) as the byte sequence."""
    if not spec:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for key in spec.split(","):
        key = key.strip()
        if key.startswith("ctrl-") and len(key) == 6:
            c = key[5].lower()
            if "a" <= c <= "z":
                out.append(ord(c) - ord("a") + 1)
            else:
                out.append({"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}[c])
        elif len(key) == 1:
            out.append(ord(key))
        else:
            raise ValueError(f"Unknown character: '{key}'")
    return bytes(out)


class raw_terminal:
    """Put the terminal on ``fd`` in raw mode for the block (restored on any exit)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.saved: list[Any] | None = None

    def __enter__(self) -> None:
        import termios
        import tty

        self.saved = termios.tcgetattr(self.fd)
        tty.setraw(self.fd, termios.TCSANOW)

    def __exit__(self, *exc: object) -> None:
        import termios

        if self.saved is not None:
            termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)


class _NoContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def terminal_size(fd: int | None = None) -> tuple[int, int]:
    """(rows, columns) of the terminal on ``fd`` (stdout by default), or (0, 0)."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno() if fd is None else fd)
    except (OSError, ValueError):
        return 0, 0
    return size.lines, size.columns


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [])
            continue
        view = view[n:]


def _half_close(sock: Socket) -> None:
    """Tell the daemon stdin ended (``shutdown(SHUT_WR)``); the output keeps flowing."""
    try:
        sock.shutdown(SHUT_WR)
    except OSError:
        pass


def pump(
    sock: Socket,
    leftover: bytes,
    *,
    tty: bool,
    stdin: bool,
    stdout_fd: int = 1,
    stderr_fd: int = 2,
    stdin_fd: int = 0,
    on_resize: Callable[[int, int], None] | None = None,
    detach_keys: bytes = DEFAULT_DETACH_KEYS,
) -> bool:
    """Copy the stream to stdout/stderr and stdin to the stream until the daemon closes.

    Returns False when the user detached with the detach keys, else True.
    """
    demux = None if tty else Demuxer()
    raw = tty and stdin and os.isatty(stdin_fd)
    wake_r = wake_w = -1
    old_wakeup = -1
    old_handler = None
    if on_resize is not None and tty and os.isatty(stdout_fd):
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        old_wakeup = _signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        old_handler = _signal.signal(_signal.SIGWINCH, lambda *_: None)
        rows, cols = terminal_size(stdout_fd)
        if rows:
            on_resize(rows, cols)

    def deliver(data: bytes) -> None:
        if demux is None:
            _write_all(stdout_fd, data)
            return
        for stream, payload in demux.feed(data):
            _write_all(stderr_fd if stream == 2 else stdout_fd, payload)

    detached = False
    sock_fd = sock.fileno()
    # Non-blocking writes: stdin waits in `pending` while the daemon cannot take
    # it, and output keeps being read meanwhile. A blocking sendall would
    # deadlock on a command that answers as it reads (`cat` with a large input:
    # it stops reading while its output is not drained).
    sock.setblocking(False)
    pending = b""
    stdin_ended = False
    ctx: raw_terminal | _NoContext = raw_terminal(stdin_fd) if raw else _NoContext()
    with ctx:
        try:
            if leftover:
                deliver(leftover)
            reading_stdin = stdin
            matched = 0
            while True:
                watch = [sock_fd]
                if reading_stdin and not pending:
                    watch.append(stdin_fd)
                if wake_r >= 0:
                    watch.append(wake_r)
                ready, writable, _ = select.select(watch, [sock_fd] if pending else [], [])
                if wake_r >= 0 and wake_r in ready:
                    try:
                        os.read(wake_r, 512)
                    except BlockingIOError:
                        pass
                    rows, cols = terminal_size(stdout_fd)
                    if rows and on_resize is not None:
                        try:
                            on_resize(rows, cols)
                        except Exception:  # a resize the daemon refuses is no reason to stop
                            pass
                if sock_fd in ready:
                    try:
                        data = sock.recv(65536)
                    except BlockingIOError:
                        continue
                    except ConnectionResetError:
                        data = b""
                    if not data:
                        break
                    deliver(data)
                if pending and sock_fd in writable:
                    try:
                        sent = sock.send(pending)
                    except BlockingIOError:
                        sent = 0
                    except OSError:  # the daemon closed its side: output may still come
                        sent, pending, reading_stdin = 0, b"", False
                    pending = pending[sent:]
                    if not pending and stdin_ended:
                        _half_close(sock)
                if reading_stdin and not pending and stdin_fd in ready:
                    try:
                        data = os.read(stdin_fd, 65536)
                    except OSError:
                        data = b""
                    if not data:
                        reading_stdin = False
                        stdin_ended = True
                        _half_close(sock)
                        continue
                    if raw and detach_keys:
                        # the detach sequence may span reads: keep the matched prefix
                        out = bytearray()
                        for byte in data:
                            if byte == detach_keys[matched]:
                                matched += 1
                                if matched == len(detach_keys):
                                    detached = True
                                    break
                                continue
                            if matched:
                                out += detach_keys[:matched]
                                matched = 0
                            out.append(byte)
                        if detached:
                            if out:  # what was typed before the sequence still goes
                                sock.setblocking(True)
                                sock.sendall(bytes(out))
                            break
                        data = bytes(out)
                    pending = data
        finally:
            if wake_r >= 0:
                _signal.set_wakeup_fd(old_wakeup)
                if old_handler is not None:
                    _signal.signal(_signal.SIGWINCH, old_handler)
                os.close(wake_r)
                os.close(wake_w)
            sock.close()
    return not detached
