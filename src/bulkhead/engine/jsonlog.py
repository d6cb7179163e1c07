"""Docker's ``json-file`` log driver: the writer (monitor side) and the reader (daemon side).

A container's log is a file of JSON lines, one per *message*::

    {"log":"hello\\n","stream":"stdout","time":"2024-05-01T12:00:00.1234567Z"}

*message*
    what the container wrote up to and including a newline. A line longer
    than 16 KiB is cut into 16 KiB messages without a newline, the last
    piece keeps it (Docker's ``partial`` messages); what is left without a
    newline when the stream closes is written as it is.
*stream*
    ``stdout`` or ``stderr`` (a container with a terminal has only
    ``stdout``).
*rotation*
    with ``max_size`` > 0 the file is rotated before it would grow past that
    size: ``path`` → ``path.1`` → ``path.2`` ... and at most ``max_files``
    files exist in all (``max_files`` = 1 truncates instead).

:class:`JsonLogWriter` is the monitor's (synchronous, unbuffered: every
message reaches the file before the next read of the container's output);
:func:`follow_logs` is the daemon's ``docker logs``: the rotated files
oldest first, ``tail``, ``since``/``until`` and ``follow`` (polling, so the
writer needs no cooperation).
"""

from __future__ import annotations

import asyncio
import calendar
import collections
import contextlib
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any, NamedTuple

import msgspec

#: Docker cuts messages at 16 KiB (``bufio`` size of its log copier).
MAX_MESSAGE = 16 * 1024

STREAM_NAMES = {1: "stdout", 2: "stderr"}
STREAM_NUMBERS = {"stdout": 1, "stderr": 2}


def log_time(ns: int | None = None) -> str:
    """``ns`` (default: now) as Go's ``time.RFC3339Nano`` in UTC, as Docker's json-file stores it.

    Trailing zeros of the fraction are dropped (``...:20.00012Z``, ``...:20Z``).
    """
    if ns is None:
        ns = time.time_ns()
    secs, nanos = divmod(ns, 1_000_000_000)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if nanos:
        text += f".{nanos:09d}".rstrip("0")
    return text + "Z"


def fixed_time(ns: int) -> str:
    """``ns`` with all nine fraction digits (Docker's ``RFC3339NanoFixed``: ``docker logs -t``)."""
    secs, nanos = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"


def parse_time(text: str) -> int:
    """An RFC 3339 time (``Z`` or ``±hh:mm``, any fraction length) as nanoseconds since the epoch.

    Raises ValueError naming the text when it is not one.
    """
    try:
        base, rest = text[:19], text[19:]
        secs = calendar.timegm(time.strptime(base, "%Y-%m-%dT%H:%M:%S"))
        nanos = 0
        if rest.startswith("."):
            digits = ""
            i = 1
            while i < len(rest) and rest[i].isdigit():
                digits += rest[i]
                i += 1
            nanos = int((digits + "000000000")[:9]) if digits else 0
            rest = rest[i:]
        if rest in ("Z", "z", ""):
            offset = 0
        else:
            sign = 1 if rest[0] == "+" else -1
            if rest[0] not in "+-":
                raise ValueError(rest)
            hh, mm = rest[1:].split(":")
            offset = sign * (int(hh) * 3600 + int(mm) * 60)
        return (secs - offset) * 1_000_000_000 + nanos
    except (ValueError, IndexError):
        raise ValueError(f"invalid log time {text!r}: expected RFC 3339") from None


class LogEntry(msgspec.Struct):
    """One line of a json-file log."""

    log: str
    stream: str
    time: str


_decoder = msgspec.json.Decoder(LogEntry)

#: How Docker's json-file writes a message's characters that JSON or HTML would misread
#: (moby's ``jsonlog.ffjsonWriteJSONBytesAsString``, Go's ``json.Marshal`` rules): control
#: characters as ``\u00XX`` except ``\n`` and ``\r``; ``<``, ``>``, ``&`` as ``\u003c``,
#: ``\u003e``, ``\u0026``; U+2028 and U+2029 escaped; DEL and other UTF-8 as they are; every
#: byte that is not part of valid UTF-8 as the six characters ``\ufffd`` (one per byte, as Go's
#: ``utf8.DecodeRune`` sees them), so a real U+FFFD in the output stays distinguishable.
_ESCAPES: dict[str, str] = {chr(c): f"\\u{c:04x}" for c in range(0x20)}
_ESCAPES.update({"\n": "\\n", "\r": "\\r", '"': '\\"', "\\": "\\\\"})
_ESCAPES.update({c: f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"})
#: bytes that are not UTF-8 come out of ``surrogateescape`` as U+DC80..U+DCFF, one per byte
_ESCAPES.update({chr(0xDC00 + b): "\\ufffd" for b in range(0x80, 0x100)})
_TO_ESCAPE = re.compile('[\x00-\x1f"\\\\<>&\u2028\u2029\udc80-\udcff]')


def _escape(match: re.Match[str]) -> str:
    return _ESCAPES[match.group()]


def json_string_body(message: bytes) -> bytes:
    """``message`` as the inside of a JSON string, byte for byte as Docker's json-file writes it."""
    text = message.decode("utf-8", "surrogateescape")
    return _TO_ESCAPE.sub(_escape, text).encode("utf-8")


def log_line(stream: int, message: bytes, stamp: str) -> bytes:
    """One json-file line (newline included): ``{"log":...,"stream":...,"time":...}``."""
    return b"".join(
        (
            b'{"log":"',
            json_string_body(message),
            b'","stream":"',
            STREAM_NAMES[stream].encode(),
            b'","time":"',
            stamp.encode(),
            b'"}\n',
        )
    )


class JsonLogWriter:
    """Append a container's output to ``path`` in Docker's json-file format, rotating it."""

    def __init__(self, path: str | os.PathLike[str], max_size: int = 0, max_files: int = 1) -> None:
        self.path = os.fspath(path)
        self.max_size = max(0, max_size)
        self.max_files = max(1, max_files)
        self._fd = self._open(truncate=False)
        self.size = os.fstat(self._fd).st_size
        self._partial: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self._pending = bytearray()

    def _open(self, *, truncate: bool) -> int:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        if truncate:
            flags |= os.O_TRUNC
        return os.open(self.path, flags, 0o640)

    def write(self, stream: int, data: bytes, now_ns: int | None = None) -> None:
        """Take a chunk of output of ``stream`` (1 stdout, 2 stderr); write its whole messages."""
        buf = self._partial[stream]
        buf += data
        stamp = log_time(now_ns)
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            end = nl + 1 if nl >= 0 else -1
            if end < 0 or end - start > MAX_MESSAGE:
                if len(buf) - start >= MAX_MESSAGE:
                    self._emit(stream, bytes(buf[start : start + MAX_MESSAGE]), stamp)
                    start += MAX_MESSAGE
                    continue
                break
            self._emit(stream, bytes(buf[start:end]), stamp)
            start = end
        del buf[:start]
        self._write_out()

    def position(self) -> LogPosition:
        """Where the log is now: the current file's inode and size (all written so far)."""
        st = os.fstat(self._fd)
        return LogPosition(st.st_ino, st.st_size)

    def flush(self, stream: int | None = None, now_ns: int | None = None) -> None:
        """Write what is left without a newline (the stream closed)."""
        for s in (1, 2) if stream is None else (stream,):
            buf = self._partial[s]
            if buf:
                self._emit(s, bytes(buf), log_time(now_ns))
                buf.clear()
        self._write_out()

    def _emit(self, stream: int, message: bytes, stamp: str) -> None:
        """Queue one message's line (rotating first if it would not fit)."""
        line = log_line(stream, message, stamp)
        if self.max_size and self.size and self.size + len(line) > self.max_size:
            self._write_out()
            self.rotate()
        self._pending += line
        self.size += len(line)

    def _write_out(self) -> None:
        """Write the queued lines: one write(2) per chunk of output, not one per line."""
        view = memoryview(self._pending)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        finally:
            view.release()
            self._pending.clear()

    def rotate(self) -> None:
        """``path`` → ``path.1`` → ... (keeping ``max_files`` files), then a fresh ``path``."""
        os.close(self._fd)
        if self.max_files > 1:
            for i in range(self.max_files - 1, 1, -1):
                older = f"{self.path}.{i - 1}"
                if os.path.exists(older):
                    os.replace(older, f"{self.path}.{i}")
            os.replace(self.path, self.path + ".1")
            self._fd = self._open(truncate=False)
        else:
            self._fd = self._open(truncate=True)
        self.size = 0

    def close(self) -> None:
        self.flush()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ---------------------------------------------------------------------- reading


def log_files(path: str | os.PathLike[str]) -> list[str]:
    """The files of a log, oldest first: ``path.N`` ... ``path.1``, ``path`` (those that exist)."""
    base = os.fspath(path)
    rotated: list[tuple[int, str]] = []
    directory = os.path.dirname(base) or "."
    prefix = os.path.basename(base) + "."
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        names = []
    for name in names:
        if name.startswith(prefix) and name[len(prefix) :].isdigit():
            rotated.append((int(name[len(prefix) :]), os.path.join(directory, name)))
    out = [p for _, p in sorted(rotated, reverse=True)]
    if os.path.exists(base):
        out.append(base)
    return out


class _Filter:
    def __init__(
        self,
        since: float | None,
        until: float | None,
        stdout: bool,
        stderr: bool,
        timestamps: bool,
    ) -> None:
        self.since = int(since * 1e9) if since else None
        self.until = int(until * 1e9) if until else None
        self.streams = {n for n, want in ((1, stdout), (2, stderr)) if want}
        self.timestamps = timestamps
        #: an entry later than ``until`` was seen: stop
        self.past_until = False

    def apply(self, raw: bytes) -> tuple[int, bytes] | None:
        try:
            entry = _decoder.decode(raw)
        except msgspec.DecodeError:
            return None  # a torn or foreign line: skip it, as Docker does
        stream = STREAM_NUMBERS.get(entry.stream, 1)
        if stream not in self.streams:
            return None
        if self.since is not None or self.until is not None:
            try:
                when = parse_time(entry.time)
            except ValueError:
                return None
            if self.since is not None and when < self.since:
                return None
            if self.until is not None and when > self.until:
                self.past_until = True
                return None
        data = entry.log.encode("utf-8", "surrogateescape")
        if self.timestamps:
            try:
                stamp = fixed_time(parse_time(entry.time))
            except ValueError:
                stamp = entry.time
            data = stamp.encode() + b" " + data
        return stream, data


class _DirWatch:
    """Wake-ups for a directory's changes (inotify), so that following needs no busy polling.

    Watches the log's directory for writes, creations and renames (rotation).
    ``wait(timeout)`` returns when something happened or the timeout passed;
    without inotify it is a plain sleep (the caller polls).
    """

    _IN_MODIFY = 0x002
    _IN_MOVED_TO = 0x080
    _IN_CREATE = 0x100
    _IN_NONBLOCK = os.O_NONBLOCK
    _IN_CLOEXEC = os.O_CLOEXEC

    def __init__(self, directory: str) -> None:
        self.fd = -1
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()
        try:
            from bulkhead.linux.libc import LIBC

            fd = int(LIBC.inotify_init1(self._IN_NONBLOCK | self._IN_CLOEXEC))
            if fd < 0:
                return
            mask = self._IN_MODIFY | self._IN_MOVED_TO | self._IN_CREATE
            if LIBC.inotify_add_watch(fd, os.fsencode(directory), mask) < 0:
                os.close(fd)
                return
        except (OSError, AttributeError):
            return
        self.fd = fd
        self.loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except OSError:
            pass
        self.event.set()

    async def wait(self, timeout: float) -> None:
        if self.fd < 0:
            await asyncio.sleep(timeout)
            return
        try:
            await asyncio.wait_for(self.event.wait(), timeout)
        except TimeoutError:
            pass
        self.event.clear()

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1


class LogPosition(NamedTuple):
    """Where a json-file log ended at one moment: its current file's inode and size."""

    inode: int
    size: int


def log_position(path: str | os.PathLike[str]) -> LogPosition | None:
    """The log's :class:`LogPosition` now (None: no log file yet)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return LogPosition(st.st_ino, st.st_size)


#: one read of a log file
_READ = 256 * 1024


class _FileChain:
    """The files of a rotating log, read one after the other by inode, not by name.

    Rotation renames ``path`` → ``path.1`` → ``path.2`` ...: a name does not
    hold its file, but an open descriptor does. The reader keeps the file it
    reads open, and when that file is no longer ``path`` (rotated), it drains
    it (the writer finishes a file before renaming it) and then opens the
    file that came right after it: the one now one number lower. Two
    rotations while the reader was busy are thus two files to read, not one
    skipped. Only a reader slower than ``max_files`` rotations loses files
    (they were deleted), and then it goes on from the oldest file left.
    """

    def __init__(self, base: str) -> None:
        self.base = base
        self.fd = -1
        self.ino = 0
        #: the current file was seen rotated: once drained, move to the next
        self.rotated = False

    def _listing(self) -> list[tuple[str, int]]:
        out = []
        for name in log_files(self.base):
            try:
                out.append((name, os.stat(name).st_ino))
            except FileNotFoundError:
                continue
        return out

    def _open(self, candidates: list[tuple[str, int]]) -> bool | None:
        """Open the first of ``candidates``; None when it changed under us (look again)."""
        if not candidates:
            return False
        name, ino = candidates[0]
        try:
            fd = os.open(name, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        if os.fstat(fd).st_ino != ino:
            os.close(fd)
            return None
        self.close()
        self.fd, self.ino, self.rotated = fd, ino, False
        return True

    def open_next(self) -> bool:
        """Open the file after the current one (the oldest one without one); False: none yet."""
        for _ in range(100):
            listing = self._listing()
            inodes = [ino for _, ino in listing]
            if self.fd >= 0 and self.ino in inodes:
                candidates = listing[inodes.index(self.ino) + 1 :]
            else:
                candidates = listing  # nothing read yet, or the reader fell behind the rotation
            opened = self._open(candidates)
            if opened is not None:
                return opened
        return False

    def is_current(self) -> bool:
        """Whether the open file is still ``path`` (else it was rotated away)."""
        try:
            return os.stat(self.base).st_ino == self.ino
        except FileNotFoundError:
            return False

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


async def follow_logs(
    path: str | os.PathLike[str],
    *,
    since: float | None = None,
    until: float | None = None,
    tail: int | None = None,
    follow: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    timestamps: bool = False,
    stop_event: asyncio.Event | None = None,
    poll_interval: float = 0.1,
    upto: LogPosition | None = None,
) -> AsyncIterator[tuple[int, bytes]]:
    """Yield ``(stream, message)`` from a json-file log, oldest first.

    ``since``/``until`` are seconds since the epoch (0/None: unbounded);
    ``tail`` keeps only the last N messages already written (None or < 0:
    all); ``follow`` then waits for new messages, across rotations, until
    ``stop_event`` is set and what was written by then is drained.
    ``timestamps`` prefixes each message with its time and a space.
    ``upto`` (:func:`log_position`, without ``follow``) ends the read where
    the log was then, even if it has grown or been rotated since: an attach
    with ``logs=1&stream=1`` replays up to the moment its live stream began.
    New lines are noticed through inotify on the log's directory;
    ``poll_interval`` is how often to look where inotify is not available.

    Files are followed by inode (:class:`_FileChain`): a follower that keeps
    up (less than ``max_files - 1`` rotations behind) neither loses nor
    repeats a message, however many rotations happen meanwhile.
    """
    batches = follow_log_batches(
        path,
        since=since,
        until=until,
        tail=tail,
        follow=follow,
        stdout=stdout,
        stderr=stderr,
        timestamps=timestamps,
        stop_event=stop_event,
        poll_interval=poll_interval,
        upto=upto,
    )
    async with contextlib.aclosing(batches):
        async for batch in batches:
            for item in batch:
                yield item


async def follow_log_batches(
    path: str | os.PathLike[str],
    *,
    since: float | None = None,
    until: float | None = None,
    tail: int | None = None,
    follow: bool = False,
    stdout: bool = True,
    stderr: bool = True,
    timestamps: bool = False,
    stop_event: asyncio.Event | None = None,
    poll_interval: float = 0.1,
    upto: LogPosition | None = None,
) -> AsyncGenerator[list[tuple[int, bytes]], None]:
    """:func:`follow_logs` a read at a time: lists of ``(stream, message)``, never empty.

    The daemon's ``docker logs`` writes a list as one piece: a fast writer's
    follower then costs a write per read of the log, not one per message.
    """
    filt = _Filter(since, until, stdout, stderr, timestamps)
    base = os.fspath(path)
    pending: collections.deque[tuple[int, bytes]] | None = (
        collections.deque(maxlen=tail) if tail is not None and tail >= 0 else None
    )
    chain = _FileChain(base)
    catching_up = True  # reading what was there when we began (``tail`` applies to it)
    watch: _DirWatch | None = None
    leftover = b""
    budget = -1  # bytes left to read in this file before ``upto`` (-1: all of it)

    def opened() -> int:
        if upto is not None and chain.ino == upto.inode:
            return upto.size
        return -1

    try:
        if chain.open_next():
            budget = opened()
        while True:
            chunk = b""
            if chain.fd >= 0 and budget != 0:
                chunk = os.read(chain.fd, _READ if budget < 0 else min(_READ, budget))
                if budget > 0:
                    budget -= len(chunk)
            if chunk:
                lines = (leftover + chunk).split(b"\n")
                leftover = lines.pop()
                batch: list[tuple[int, bytes]] = []
                for raw in lines:
                    item = filt.apply(raw)
                    if item is None:
                        if filt.past_until:
                            break
                    elif catching_up and pending is not None:
                        pending.append(item)
                    else:
                        batch.append(item)
                if batch:
                    yield batch
                if filt.past_until:
                    break
                await asyncio.sleep(0)
                continue
            if budget == 0:
                break  # at the position of ``upto``: what came after is not ours
            # At the end of this file: rotated meanwhile (drain it once more, then the next)?
            if chain.fd >= 0 and not chain.is_current():
                if not chain.rotated:
                    chain.rotated = True
                    continue
                if chain.open_next():
                    leftover = b""  # a torn last line of the rotated file (a crash): skipped
                    budget = opened()
                    continue
            elif chain.fd < 0 and chain.open_next():
                budget = opened()
                continue
            # At the end of the log as it is now.
            if catching_up:
                catching_up = False
                if pending:
                    kept = list(pending)
                    pending.clear()
                    for k in range(0, len(kept), 1000):
                        yield kept[k : k + 1000]
                if not follow:
                    break
                watch = _DirWatch(os.path.dirname(os.path.abspath(base)))
                continue  # look once more: something may have come meanwhile
            if chain.fd >= 0 and chain.is_current():
                try:
                    size = os.fstat(chain.fd).st_size
                except OSError:
                    size = 0
                if size < os.lseek(chain.fd, 0, os.SEEK_CUR):
                    os.lseek(chain.fd, 0, os.SEEK_SET)  # truncated in place (max_files = 1)
                    leftover = b""
                    continue
            if stop_event is not None and stop_event.is_set():
                break
            assert watch is not None
            # Until the file changes (inotify; polling as a fallback) or we are told to stop.
            # With inotify the timeout is only a safety net (a file system that does not report).
            timeout = poll_interval if watch.fd < 0 else max(poll_interval, 1.0)
            waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(watch.wait(timeout))]
            if stop_event is not None:
                waits.append(asyncio.ensure_future(stop_event.wait()))
            try:
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
    finally:
        if watch is not None:
            watch.close()
        chain.close()
