"""The content store: blobs on disk, addressed by their digest.

Vocabulary (containerd's, whose local content store is the model):

*blob*
    An immutable byte string stored under its *digest*,
    ``algorithm:encoded`` (``sha256:<64 hex>`` or ``sha512:<128 hex>``).
    Manifests, indexes, image configs and layers are all blobs; the store
    does not care which is which.

*ingest*
    A write in progress. Every write has a *ref*, a caller-chosen name that
    stays the same across attempts (the registry client uses
    ``"pull-sha256:..."``). An ingest that was interrupted (the process was
    killed, the connection dropped) is *resumed* by opening a writer with
    the same ref: it continues at :attr:`Writer.offset`, after the bytes
    already on disk have been hashed again.

*commit*
    The end of an ingest: the size and digest are checked against what the
    caller expected (a descriptor's ``size`` and ``digest``), the data is
    ``fsync``\\ ed, made read-only and linked into ``blobs/`` in one atomic
    step. A blob is either wholly there or not there; nothing half-written
    is ever visible under ``blobs/``.

*lease*
    A shared lock on the store that keeps the garbage collector away. Blobs
    written by a pull are not referenced by any image until the pull has
    recorded the image; holding a :meth:`ContentStore.lease` from the first
    write to that record keeps :meth:`ContentStore.gc` from sweeping them in
    between (the collector waits for every lease to end).

*garbage collection*
    Mark and sweep: every blob reachable from the *roots* (the digests the
    image store refers to) through the *children* of each blob (a manifest's
    config and layers, an index's manifests: :func:`image_children`) is
    kept, everything else is removed, and so are ingests nobody touched for
    a day.

*fsck*
    Every blob hashed again and compared with its name; referenced blobs
    that are missing or of the wrong size reported; files that have no
    business under ``blobs/`` reported as strays.

Layout under the store's root::

    blobs/<algorithm>/<encoded>          committed blobs, mode 0444
    ingest/<sha256 of ref>/data          the bytes received so far
    ingest/<sha256 of ref>/ref           the ref, in full
    ingest/<sha256 of ref>/startedat     when the first attempt started (ns since the epoch)
    ingest/<sha256 of ref>/total         the expected size, when known
    ingest/<sha256 of ref>/expected      the expected digest, when known
    ingest/<sha256 of ref>/lock          flock(2)ed by the writer that owns the ingest
    lock                                 flock(2): shared by commits and leases, exclusive by gc

Concurrency. One ref has at most one writer at a time: a second writer of
the same ref (in this process or another) *waits* for the first to commit,
abort or close (``timeout=`` bounds the wait, then :class:`IngestLocked`
is raised; ``timeout=0`` fails at once, as containerd's "ref locked"). Two
writers of the same blob under *different* refs both succeed: the second
commit finds the blob already there, checks it and discards its own copy.
Locks are ``flock(2)`` locks, so they are released by the kernel when a
writer's process dies, and an interrupted ingest can be resumed at once.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import shutil
import stat
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import IO, BinaryIO, Literal, Protocol

import msgspec

from bulkhead.errors import (
    BlobNotFound,
    ContentError,
    DigestMismatch,
    InvalidDigest,
    SizeMismatch,
)
from bulkhead.oci.image_spec import (
    DIGEST_ALGORITHMS,
    MEDIA_TYPE_DOCKER_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST,
    MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST,
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_OCI_MANIFEST,
    digest_of,
    validate_digest,
)

__all__ = [
    "ALGORITHMS",
    "BlobInfo",
    "ContentStore",
    "IngestLocked",
    "IngestStatus",
    "Problem",
    "Writer",
    "digest_of",
    "image_children",
]

#: Digest algorithms the store accepts, with the length of their hex encoding.
ALGORITHMS: dict[str, int] = DIGEST_ALGORITHMS

#: Read and write size of streaming copies: large enough that per-call
#: overhead vanishes, small enough to stay in the CPU's caches.
BUFFER_SIZE = 4 << 20

#: Buffers being hashed while the next one is read and written.
PIPELINE_DEPTH = 3

#: Blobs larger than this are never read by :meth:`ContentStore.gc` to find
#: children: no manifest, index or config is that large (registries refuse
#: manifests over 4 MiB), while layers are.
MAX_WALK_SIZE = 16 << 20

#: Ingests untouched for longer than this are removed by :meth:`ContentStore.gc`.
INGEST_MAX_AGE = 24 * 3600.0

_HEX = frozenset("0123456789abcdef")

# Leases held by this process, per store root: gc() refuses to wait for its own.
_leases: dict[str, int] = {}
_leases_mu = threading.Lock()


class IngestLocked(ContentError):
    """Another writer holds this ref and did not let go within the timeout ("ref locked")."""

    def __init__(self, message: str, ref: str) -> None:
        self.ref = ref
        super().__init__(message)


# --- digests -------------------------------------------------------------------


def split_digest(digest: str) -> tuple[str, str]:
    """``"sha256:ab..."`` -> ``("sha256", "ab...")``, or :class:`InvalidDigest`.

    :func:`bulkhead.oci.image_spec.validate_digest` decides (go-digest's
    rules: a supported algorithm, exactly its number of lowercase hex
    digits), which also keeps ``sha256:../..`` out of the store's paths.
    """
    algorithm, _, encoded = validate_digest(digest).partition(":")
    return algorithm, encoded


# --- models --------------------------------------------------------------------


class BlobInfo(msgspec.Struct, frozen=True):
    """A committed blob: its digest, size in bytes and when it was committed."""

    digest: str
    size: int
    created: datetime


class IngestStatus(msgspec.Struct, frozen=True):
    """A write in progress (or interrupted): ``offset`` bytes of ``total`` received.

    ``total`` is ``None`` when the writer was not told the size. ``updated``
    is the last time data arrived; :meth:`ContentStore.gc` removes ingests
    whose ``updated`` is older than its threshold.
    """

    ref: str
    offset: int
    total: int | None
    expected: str | None
    started: datetime
    updated: datetime


ProblemKind = Literal["corrupt", "missing", "size", "stray-file"]


class Problem(msgspec.Struct, frozen=True):
    """One thing :meth:`ContentStore.fsck` found wrong.

    ``kind`` is one of:

    ``"corrupt"``     the blob's bytes do not hash to its name
    ``"missing"``     a referenced digest has no blob
    ``"size"``        a referenced blob is not as long as the reference says
    ``"stray-file"``  something under ``blobs/`` that is not a blob (``digest`` is its path)

    ``repaired`` is true when ``fsck(repair=True)`` removed the blob.
    """

    digest: str
    kind: ProblemKind
    detail: str
    path: str = ""
    repaired: bool = False


#: ``children(digest, data) -> digests``: the blobs a blob refers to.
ChildrenFunc = Callable[[str, bytes], Iterable[str]]


class _Readable(Protocol):
    def read(self, n: int = -1, /) -> bytes: ...


# --- helpers -------------------------------------------------------------------


def _now_ns() -> int:
    return time.time_ns()


def _from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, UTC)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return None


def _write_text(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _hash_file(path: str, algorithm: str) -> tuple[str, int]:
    """Hash the file at ``path``: ``(hex digest, size)``."""
    h = hashlib.new(algorithm)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        size = 0
        buf = bytearray(BUFFER_SIZE)
        view = memoryview(buf)
        while n := os.readv(fd, [buf]):
            h.update(view[:n])
            size += n
    finally:
        os.close(fd)
    return h.hexdigest(), size


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lock_wait(path: str, *, exclusive: bool) -> int:
    """:func:`_lock` without a timeout."""
    fd = _lock(path, exclusive, None)
    assert fd is not None
    return fd


def _lock(path: str, exclusive: bool, timeout: float | None) -> int | None:
    """Open ``path`` (created if needed) and flock it: the fd, or ``None`` on timeout.

    ``timeout=None`` waits for as long as it takes; ``0`` does not wait.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    op = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    try:
        if timeout is None:
            fcntl.flock(fd, op)
            return fd
        deadline = time.monotonic() + timeout
        delay = 0.001
        while True:
            try:
                fcntl.flock(fd, op | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    os.close(fd)
                    return None
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.05)
    except BaseException:
        os.close(fd)
        raise


# --- the writer ------------------------------------------------------------------


class Writer:
    """One ingest, open for writing. Get one from :meth:`ContentStore.writer`.

    ``offset`` is how many bytes are already there: 0 for a new ingest, more
    when an interrupted one is resumed (a registry client then asks for
    ``Range: bytes=<offset>-``). ``exists`` is true when the expected blob
    was already in the store when the writer was opened: the caller may
    :meth:`close` and skip the download (committing anyway is harmless).

    A writer holds its ref's lock until :meth:`commit`, :meth:`abort` or
    :meth:`close`. As a context manager it closes on exit, keeping whatever
    was written for a later resume (a failed commit removes the ingest
    itself).
    """

    def __init__(
        self,
        store: ContentStore,
        ref: str,
        path: str,
        lock_fd: int,
        *,
        expected: str | None,
        total: int | None,
    ) -> None:
        self._store = store
        self.ref = ref
        self._path = path
        self._lock_fd: int | None = lock_fd
        self.expected = expected
        self.total = total
        self.algorithm = split_digest(expected)[0] if expected else "sha256"
        self._hash = hashlib.new(self.algorithm)
        self.offset = 0
        self.exists = False
        self.started = _from_ns(_now_ns())
        self._fd: int | None = None

    # -- opening ---------------------------------------------------------------

    def _open(self) -> None:
        """Set up a fresh ingest, or resume the one on disk (re-hashing its data)."""
        data = os.path.join(self._path, "data")
        if self._resumable():
            fd = os.open(data, os.O_RDWR | os.O_CLOEXEC)
            try:
                buf = bytearray(BUFFER_SIZE)
                view = memoryview(buf)
                while n := os.readv(fd, [buf]):
                    self._hash.update(view[:n])
                    self.offset += n
                if self.total is not None and self.offset > self.total:
                    raise ValueError("ingest longer than expected")
            except BaseException:
                os.close(fd)
                raise
            self._fd = fd
            if self.total is not None and not os.path.exists(os.path.join(self._path, "total")):
                _write_text(os.path.join(self._path, "total"), str(self.total))
            if self.expected and not os.path.exists(os.path.join(self._path, "expected")):
                _write_text(os.path.join(self._path, "expected"), self.expected)
            started = _read_text(os.path.join(self._path, "startedat"))
            if started and started.strip().isdigit():
                self.started = _from_ns(int(started))
            return
        for name in ("data", "total", "expected", "startedat"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._path, name))
        _write_text(os.path.join(self._path, "ref"), self.ref)
        _write_text(os.path.join(self._path, "startedat"), str(_now_ns()))
        if self.total is not None:
            _write_text(os.path.join(self._path, "total"), str(self.total))
        if self.expected is not None:
            _write_text(os.path.join(self._path, "expected"), self.expected)
        self._fd = os.open(data, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def _resumable(self) -> bool:
        """Whether the ingest on disk is for this ref and this blob.

        Expectations the caller left out are taken from the ingest (a
        resumed pull need not remember the size and digest it asked for).
        """
        if not os.path.exists(os.path.join(self._path, "data")):
            return False
        if _read_text(os.path.join(self._path, "ref")) != self.ref:
            return False
        text = _read_text(os.path.join(self._path, "total"))
        total = int(text) if text is not None and text.isdigit() else None
        expected = _read_text(os.path.join(self._path, "expected")) or None
        if expected is not None and not _valid(expected):
            return False
        if self.total is not None and total is not None and total != self.total:
            return False
        if self.expected is not None and expected is not None and expected != self.expected:
            return False
        if self.total is None:
            self.total = total
        if self.expected is None and expected is not None:
            self.expected = expected
            self.algorithm = split_digest(expected)[0]
            self._hash = hashlib.new(self.algorithm)
        return True

    # -- writing -----------------------------------------------------------------

    def _check_open(self) -> int:
        if self._fd is None:
            raise ContentError(f"ingest {self.ref!r}: writer is closed")
        return self._fd

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data``; more than the expected size is a :class:`SizeMismatch` (ingest removed)."""
        fd = self._check_open()
        n = len(data)
        if self.total is not None and self.offset + n > self.total:
            actual = self.offset + n
            self.abort()
            raise SizeMismatch(
                f"{self.expected or self.ref}: got at least {actual} bytes, expected {self.total}",
                self.expected,
                expected=self.total,
                actual=actual,
            )
        _write_all(fd, data)
        self._hash.update(data)
        self.offset += n
        return n

    def write_from(self, stream: _Readable | IO[bytes], limit: int | None = None) -> int:
        """Copy ``stream`` to the end of the ingest; returns the bytes copied.

        Hashing runs in a second thread while the main one reads and writes
        (``hashlib`` and ``os.write`` release the GIL), so a large copy goes
        at the speed of the slower of the two rather than their sum; a few
        buffers in flight (:data:`PIPELINE_DEPTH`) absorb scheduling jitter.
        Reads stop at end of stream, or after ``limit`` bytes.
        """
        fd = self._check_open()
        readinto = getattr(stream, "readinto", None)
        depth = max(1, PIPELINE_DEPTH)
        bufs: list[bytearray] = []
        copied = 0
        pool: ThreadPoolExecutor | None = None
        pending: deque[Future[None]] = deque()
        i = 0
        try:
            while True:
                want = BUFFER_SIZE if limit is None else min(BUFFER_SIZE, limit - copied)
                if want <= 0:
                    break
                if len(pending) >= depth:
                    pending.popleft().result()  # the buffer about to be reused is hashed
                if len(bufs) <= i:
                    bufs.append(bytearray(BUFFER_SIZE))
                view = memoryview(bufs[i])[:want]
                if readinto is not None:
                    n = readinto(view) or 0
                else:
                    chunk = stream.read(want)
                    n = len(chunk)
                    view[:n] = chunk
                if not n:
                    break
                chunk_view = view[:n]
                if self.total is not None and self.offset + n > self.total:
                    while pending:
                        pending.popleft().result()
                    self.write(chunk_view)  # raises SizeMismatch, removes the ingest
                if pool is None and n == BUFFER_SIZE:
                    pool = ThreadPoolExecutor(1, thread_name_prefix="content-hash")
                if pool is not None:
                    # One worker: the hash sees the chunks in order.
                    pending.append(pool.submit(self._hash.update, chunk_view))
                    _write_all(fd, chunk_view)
                else:
                    _write_all(fd, chunk_view)
                    self._hash.update(chunk_view)
                self.offset += n
                copied += n
                i = (i + 1) % (depth + 1)
            while pending:
                pending.popleft().result()
        finally:
            for f in pending:
                with contextlib.suppress(BaseException):
                    f.result()
            if pool is not None:
                pool.shutdown()
        return copied

    def digest(self) -> str:
        """The digest of the bytes written so far."""
        return f"{self.algorithm}:{self._hash.hexdigest()}"

    def status(self) -> IngestStatus:
        """Where this ingest stands."""
        return IngestStatus(
            ref=self.ref,
            offset=self.offset,
            total=self.total,
            expected=self.expected,
            started=self.started,
            updated=_from_ns(_now_ns()),
        )

    # -- ending ------------------------------------------------------------------

    def commit(self, expected_digest: str | None = None, expected_size: int | None = None) -> str:
        """Check, then atomically publish the blob; returns its digest.

        ``expected_digest`` and ``expected_size`` default to what the writer
        was opened with. A size or digest that differs raises
        :class:`SizeMismatch` or :class:`DigestMismatch` (naming expected
        and actual) and removes the ingest: the next attempt starts over.
        If the blob is already in the store (another writer won the race),
        this ingest is discarded and the commit succeeds.
        """
        fd = self._check_open()
        expected_digest = expected_digest or self.expected
        if expected_size is None:
            expected_size = self.total
        try:
            if expected_size is not None and self.offset != expected_size:
                raise SizeMismatch(
                    f"{expected_digest or self.ref}: size {self.offset}, expected {expected_size}",
                    expected_digest,
                    expected=expected_size,
                    actual=self.offset,
                )
            if expected_digest is not None:
                algorithm, _ = split_digest(expected_digest)
                if algorithm == self.algorithm:
                    actual = self.digest()
                else:
                    hexd, _ = _hash_file(os.path.join(self._path, "data"), algorithm)
                    actual = f"{algorithm}:{hexd}"
                if actual != expected_digest:
                    raise DigestMismatch(
                        f"digest mismatch: expected {expected_digest}, got {actual}"
                        f" ({self.offset} bytes)",
                        expected_digest,
                        expected=expected_digest,
                        actual=actual,
                    )
                digest = expected_digest
            else:
                digest = self.digest()
        except BaseException:
            self.abort()
            raise
        os.fsync(fd)
        os.fchmod(fd, 0o444)
        os.utime(fd)  # the blob's mtime is its commit time (BlobInfo.created)
        self._store._publish(os.path.join(self._path, "data"), digest, self.offset)
        self._finish(remove=True)
        return digest

    def abort(self) -> None:
        """Throw the ingest away (data and all) and release the ref."""
        if self._lock_fd is None:
            return
        self._finish(remove=True)

    def close(self) -> None:
        """Release the ref, keeping the ingest on disk so that it can be resumed.

        An ingest with no bytes yet is removed: there is nothing to resume.
        """
        if self._lock_fd is None:
            return
        self._finish(remove=self.offset == 0)

    def _finish(self, remove: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if remove:
            self._store._remove_ingest(self._path)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


# --- the store -------------------------------------------------------------------


class ContentStore:
    """A content-addressed blob store under ``root`` (created if needed).

    Safe to use from several threads and several processes at once: all
    coordination is through the filesystem (atomic link/rename and
    ``flock(2)``).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self._blobs = os.path.join(self.root, "blobs")
        self._ingest = os.path.join(self.root, "ingest")
        self._lockfile = os.path.join(self.root, "lock")
        for d in (self.root, self._blobs, self._ingest):
            os.makedirs(d, mode=0o755 if d != self._ingest else 0o700, exist_ok=True)

    def __repr__(self) -> str:
        return f"ContentStore({self.root!r})"

    # -- paths -------------------------------------------------------------------

    def _blob_path(self, digest: str) -> str:
        algorithm, encoded = split_digest(digest)
        return os.path.join(self._blobs, algorithm, encoded)

    def _ingest_path(self, ref: str) -> str:
        return os.path.join(self._ingest, hashlib.sha256(ref.encode()).hexdigest())

    # -- reading -----------------------------------------------------------------

    def exists(self, digest: str) -> bool:
        """Whether the blob is in the store (a regular file: a symlink there is no blob)."""
        return _is_file(self._blob_path(digest))

    def path(self, digest: str) -> str:
        """The blob's file (read-only: never write to it), or :class:`BlobNotFound`."""
        p = self._blob_path(digest)
        if not _is_file(p):
            raise BlobNotFound(f"blob {digest} not found", digest)
        return p

    def info(self, digest: str) -> BlobInfo:
        """Size and commit time of a blob, or :class:`BlobNotFound`."""
        try:
            st = os.lstat(self._blob_path(digest))
        except FileNotFoundError:
            st = None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise BlobNotFound(f"blob {digest} not found", digest)
        return BlobInfo(digest=digest, size=st.st_size, created=_from_ns(st.st_mtime_ns))

    def open(self, digest: str) -> BinaryIO:
        """The blob, open for reading (the caller closes it), or :class:`BlobNotFound`."""
        try:
            fd = os.open(self._blob_path(digest), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except (FileNotFoundError, OSError) as e:
            if isinstance(e, FileNotFoundError) or e.errno == errno.ELOOP:
                raise BlobNotFound(f"blob {digest} not found", digest) from None
            raise
        return os.fdopen(fd, "rb")

    def read(self, digest: str, *, verify: bool = False) -> bytes:
        """The whole blob; ``verify=True`` checks its digest (for manifests and configs)."""
        with self.open(digest) as f:
            data = f.read()
        if verify:
            actual = digest_of(data, split_digest(digest)[0])
            if actual != digest:
                raise DigestMismatch(
                    f"blob {digest} is corrupt: its content hashes to {actual}",
                    digest,
                    expected=digest,
                    actual=actual,
                )
        return data

    def walk(self) -> Iterator[BlobInfo]:
        """Every blob in the store (in no particular order)."""
        for algorithm, length in ALGORITHMS.items():
            try:
                it = os.scandir(os.path.join(self._blobs, algorithm))
            except FileNotFoundError:
                continue
            with it:
                for entry in it:
                    name = entry.name
                    if len(name) != length or not _HEX.issuperset(name):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        yield BlobInfo(
                            digest=f"{algorithm}:{name}",
                            size=st.st_size,
                            created=_from_ns(st.st_mtime_ns),
                        )

    def delete(self, digest: str) -> None:
        """Remove a blob, or :class:`BlobNotFound`. Readers that have it open keep reading."""
        try:
            os.unlink(self._blob_path(digest))
        except FileNotFoundError:
            raise BlobNotFound(f"blob {digest} not found", digest) from None

    # -- writing -----------------------------------------------------------------

    def writer(
        self,
        ref: str,
        expected: str | None = None,
        size: int | None = None,
        *,
        timeout: float | None = None,
    ) -> Writer:
        """Start or resume the ingest named ``ref``.

        ``expected`` (a digest) picks the hash algorithm and is checked at
        commit; ``size`` is checked as data arrives and at commit. An ingest
        on disk under the same ref is resumed when it was for the same
        ``expected`` and ``size`` (its bytes are hashed again), and started
        over otherwise.

        If another writer holds the ref, this waits until it lets go; after
        ``timeout`` seconds (``0``: at once) :class:`IngestLocked` is raised.
        """
        if not ref:
            raise ValueError("an ingest needs a non-empty ref")
        if expected is not None:
            split_digest(expected)
        if size is not None and size < 0:
            raise ValueError(f"negative size {size}")
        path = self._ingest_path(ref)
        lock_fd = self._lock_ingest(ref, path, timeout)
        try:
            w = Writer(self, ref, path, lock_fd, expected=expected, total=size)
            if expected is not None:
                w.exists = self.exists(expected)
            try:
                w._open()
            except (ValueError, OSError):
                # Data on disk we cannot use (longer than expected, unreadable): start over.
                w.offset = 0
                w._hash = hashlib.new(w.algorithm)
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(path, "data"))
                w._open()
        except BaseException:
            os.close(lock_fd)
            raise
        return w

    def _lock_ingest(self, ref: str, path: str, timeout: float | None) -> int:
        """Lock ``path/lock``, making sure the directory we locked is still the live one.

        A commit or abort renames the ingest directory away while holding
        the lock: a waiter that gets the lock then checks that its lock file
        is still the one at ``path/lock`` and starts over if not.
        """
        lock = os.path.join(path, "lock")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with contextlib.suppress(FileExistsError):
                os.mkdir(path, 0o700)
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                fd = _lock(lock, True, left)
            except FileNotFoundError:
                continue  # the directory went away between mkdir and open
            if fd is None:
                raise IngestLocked(f"ingest {ref!r} is locked by another writer", ref)
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(lock))
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)

    def _remove_ingest(self, path: str) -> None:
        """Remove an ingest directory whose lock the caller holds (rename away, then delete)."""
        trash = os.path.join(self._ingest, f".trash-{uuid.uuid4().hex}")
        try:
            os.rename(path, trash)
        except FileNotFoundError:
            return
        shutil.rmtree(trash, ignore_errors=True)

    def _publish(self, data_path: str, digest: str, size: int) -> None:
        """Link a checked, fsynced, read-only ingest file into ``blobs/``."""
        target = self._blob_path(digest)
        parent = os.path.dirname(target)
        if not os.path.isdir(parent):
            os.makedirs(parent, mode=0o755, exist_ok=True)
            _fsync_dir(self._blobs)
        with self._shared_lock():
            try:
                os.link(data_path, target)
            except FileExistsError:
                # Someone else committed the same blob first. Keep theirs if it
                # is whole; a short one (damaged on disk) or a non-file is replaced.
                st = os.lstat(target)
                if not stat.S_ISREG(st.st_mode) or st.st_size != size:
                    os.rename(data_path, target)
            _fsync_dir(parent)

    def write_blob(self, data: bytes | bytearray | memoryview, expected: str | None = None) -> str:
        """Store ``data`` (checked against ``expected`` when given); returns its digest."""
        algorithm = split_digest(expected)[0] if expected else "sha256"
        digest = digest_of(data, algorithm)
        if expected is not None and digest != expected:
            raise DigestMismatch(
                f"digest mismatch: expected {expected}, got {digest} ({len(data)} bytes)",
                expected,
                expected=expected,
                actual=digest,
            )
        if self.exists(digest):
            return digest
        w = self.writer(f"write-{uuid.uuid4().hex}", digest, len(data))
        try:
            w.write(data)
            return w.commit()
        finally:
            w.abort()

    def ingest_from(
        self,
        stream: _Readable | IO[bytes],
        expected_digest: str | None = None,
        expected_size: int | None = None,
        *,
        ref: str | None = None,
    ) -> str:
        """Store what ``stream`` yields until its end; returns the digest.

        With ``expected_digest`` the default ref is ``"ingest-<digest>"``,
        so concurrent ingests of the same blob wait for each other and all
        but the first return at once, without reading their stream; a
        resumed ingest skips the bytes it has when the stream is seekable
        and starts over when not.
        """
        if ref is None:
            ref = f"ingest-{expected_digest}" if expected_digest else f"ingest-{uuid.uuid4().hex}"
        w = self.writer(ref, expected_digest, expected_size)
        try:
            if w.exists and expected_digest is not None:
                w.abort()
                return expected_digest
            if w.offset:
                seek = getattr(stream, "seek", None)
                seekable = getattr(stream, "seekable", None)
                if seek is not None and seekable is not None and seekable():
                    seek(w.offset, os.SEEK_CUR)
                else:
                    w.abort()
                    w = self.writer(ref, expected_digest, expected_size)
            w.write_from(stream)
            return w.commit(expected_digest, expected_size)
        finally:
            w.close()

    def ingests(self) -> list[IngestStatus]:
        """The ingests on disk (in progress or interrupted)."""
        out = []
        for entry in self._ingest_dirs():
            status = self._ingest_status(entry)
            if status is not None:
                out.append(status)
        return out

    def _ingest_dirs(self) -> Iterator[str]:
        try:
            names = os.listdir(self._ingest)
        except FileNotFoundError:
            return
        for name in names:
            if not name.startswith("."):
                yield os.path.join(self._ingest, name)

    @staticmethod
    def _ingest_status(path: str) -> IngestStatus | None:
        try:
            st = os.stat(os.path.join(path, "data"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        ref = _read_text(os.path.join(path, "ref"))
        if ref is None:
            return None
        total = _read_text(os.path.join(path, "total"))
        started = _read_text(os.path.join(path, "startedat"))
        return IngestStatus(
            ref=ref,
            offset=st.st_size,
            total=int(total) if total and total.isdigit() else None,
            expected=_read_text(os.path.join(path, "expected")) or None,
            started=_from_ns(int(started) if started and started.isdigit() else st.st_ctime_ns),
            updated=_from_ns(st.st_mtime_ns),
        )

    def abort(self, ref: str) -> None:
        """Remove the ingest named ``ref`` (waits for its writer to let go)."""
        path = self._ingest_path(ref)
        if not os.path.isdir(path):
            return
        fd = self._lock_ingest(ref, path, None)
        try:
            self._remove_ingest(path)
        finally:
            os.close(fd)

    # -- leases and garbage collection -------------------------------------------

    @contextlib.contextmanager
    def _shared_lock(self) -> Iterator[None]:
        fd = _lock_wait(self._lockfile, exclusive=False)
        try:
            yield
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        """Keep :meth:`gc` away while held (across processes).

        Hold one from the first blob a pull writes until the image that
        refers to them is recorded, so that a collection running meanwhile
        cannot sweep the blobs as unreferenced. Do not call :meth:`gc` while
        holding a lease of the same store (it would wait for itself: this
        is refused in-process).
        """
        fd = _lock_wait(self._lockfile, exclusive=False)
        with _leases_mu:
            _leases[self.root] = _leases.get(self.root, 0) + 1
        try:
            yield
        finally:
            with _leases_mu:
                _leases[self.root] -= 1
            os.close(fd)

    def gc(
        self,
        roots: Iterable[str],
        children: ChildrenFunc | None = None,
        *,
        ingest_max_age: float = INGEST_MAX_AGE,
        grace: float = 0.0,
        timeout: float | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Mark and sweep: remove every blob not reachable from ``roots``; returns their digests.

        ``children(digest, data)`` names the blobs a blob refers to (default
        :func:`image_children`: manifests, indexes, image configs); blobs
        larger than :data:`MAX_WALK_SIZE` are leaves and are not read. A
        root or child that is not in the store is skipped (:meth:`fsck`
        reports it). Blobs committed less than ``grace`` seconds ago are
        kept. Ingests whose data has not changed for ``ingest_max_age``
        seconds and that no writer holds are removed too; an ingest that is
        being written never is.

        Waits for every :meth:`lease` (and commit) to end first, and holds
        commits off while it runs; after ``timeout`` seconds of waiting,
        :class:`ContentError` is raised.
        """
        if children is None:
            children = image_children
        with _leases_mu:
            if _leases.get(self.root):
                raise ContentError(f"{self}: gc while this process holds a lease would deadlock")
        fd = _lock(self._lockfile, True, timeout)
        if fd is None:
            raise ContentError(f"{self}: gc timed out waiting for leases and commits to end")
        try:
            marked = self._mark(roots, children)
            removed: list[str] = []
            cutoff = time.time() - grace
            for info in list(self.walk()):
                if info.digest in marked or info.created.timestamp() > cutoff:
                    continue
                if not dry_run:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self._blob_path(info.digest))
                removed.append(info.digest)
            if not dry_run:
                self._gc_ingests(ingest_max_age)
        finally:
            os.close(fd)
        return removed

    def _mark(self, roots: Iterable[str], children: ChildrenFunc) -> set[str]:
        marked: set[str] = set()
        todo = [r for r in roots if _valid(r)]
        while todo:
            digest = todo.pop()
            if digest in marked:
                continue
            marked.add(digest)
            path = self._blob_path(digest)
            try:
                with open(path, "rb") as f:
                    if os.fstat(f.fileno()).st_size > MAX_WALK_SIZE:
                        continue
                    data = f.read()
            except FileNotFoundError:
                continue
            for child in children(digest, data):
                if child not in marked and _valid(child):
                    todo.append(child)
        return marked

    def _gc_ingests(self, max_age: float) -> None:
        now = time.time()
        try:
            names = os.listdir(self._ingest)
        except FileNotFoundError:
            return
        for name in names:
            path = os.path.join(self._ingest, name)
            if name.startswith(".trash-"):
                # Left by a process that died between rename and delete.
                shutil.rmtree(path, ignore_errors=True)
                continue
            if not os.path.isdir(path) or os.path.islink(path):
                continue  # not ours: leave it alone
            try:
                mtime = max(
                    (
                        os.stat(os.path.join(path, f)).st_mtime
                        for f in ("data", "ref", "lock")
                        if os.path.exists(os.path.join(path, f))
                    ),
                    default=os.stat(path).st_mtime,
                )
            except FileNotFoundError:
                continue
            if now - mtime < max_age:
                continue
            try:
                fd = _lock(os.path.join(path, "lock"), True, 0)
            except OSError:
                continue
            if fd is None:
                continue  # a writer holds it: in progress, keep
            try:
                if os.path.samestat(os.fstat(fd), os.stat(os.path.join(path, "lock"))):
                    self._remove_ingest(path)
            except FileNotFoundError:
                pass
            finally:
                os.close(fd)

    # -- fsck --------------------------------------------------------------------

    def fsck(
        self,
        referenced: Mapping[str, int | None] | Iterable[str] | None = None,
        *,
        repair: bool = False,
        workers: int | None = None,
    ) -> list[Problem]:
        """Check the store: every blob hashed again; returns what is wrong.

        ``referenced`` lists digests something refers to (or maps them to
        the size the reference claims): those not in the store are
        ``"missing"``, those of another size ``"size"``. ``repair=True``
        deletes corrupt blobs, so that the next pull fetches them again.
        Blobs are hashed by ``workers`` threads (default: one per CPU).
        """
        problems: list[Problem] = []
        blobs: list[tuple[str, str]] = []
        try:
            top = sorted(os.listdir(self._blobs))
        except FileNotFoundError:
            top = []
        for algorithm in top:
            adir = os.path.join(self._blobs, algorithm)
            length = ALGORITHMS.get(algorithm)
            if length is None or not os.path.isdir(adir) or os.path.islink(adir):
                problems.append(self._stray(adir, "not a digest algorithm directory"))
                continue
            for name in sorted(os.listdir(adir)):
                p = os.path.join(adir, name)
                if len(name) != length or not _HEX.issuperset(name):
                    problems.append(self._stray(p, f"not a {algorithm} digest"))
                    continue
                if not stat.S_ISREG(os.lstat(p).st_mode):
                    problems.append(self._stray(p, "not a regular file"))
                    continue
                blobs.append((f"{algorithm}:{name}", p))

        def check(item: tuple[str, str]) -> Problem | None:
            digest, p = item
            algorithm = digest.split(":", 1)[0]
            try:
                hexd, size = _hash_file(p, algorithm)
            except FileNotFoundError:
                return None  # deleted meanwhile
            except OSError as e:
                return Problem(digest, "corrupt", f"cannot be read: {e}", p)
            actual = f"{algorithm}:{hexd}"
            if actual == digest:
                return None
            return Problem(digest, "corrupt", f"content ({size} bytes) hashes to {actual}", p)

        with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
            for problem in pool.map(check, blobs):
                if problem is None:
                    continue
                if repair:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(problem.path)
                    problem = msgspec.structs.replace(problem, repaired=True)
                problems.append(problem)

        if referenced is not None:
            sizes: Mapping[str, int | None] = (
                referenced if isinstance(referenced, Mapping) else dict.fromkeys(referenced)
            )
            for digest, want in sizes.items():
                try:
                    p = self._blob_path(digest)
                except InvalidDigest as e:
                    problems.append(Problem(digest, "missing", str(e)))
                    continue
                try:
                    size = os.stat(p).st_size
                except FileNotFoundError:
                    problems.append(
                        Problem(digest, "missing", "referenced but not in the store", p)
                    )
                    continue
                if want is not None and size != want:
                    problems.append(
                        Problem(digest, "size", f"{size} bytes, referenced as {want} bytes", p)
                    )
        return problems

    def _stray(self, path: str, why: str) -> Problem:
        rel = os.path.relpath(path, self.root)
        return Problem(rel, "stray-file", f"{rel}: {why}", path)


def _valid(digest: str) -> bool:
    try:
        split_digest(digest)
    except InvalidDigest:
        return False
    return True


# --- children of image blobs ---------------------------------------------------------

_INDEX_TYPES = frozenset({MEDIA_TYPE_OCI_INDEX, MEDIA_TYPE_DOCKER_MANIFEST_LIST})
_MANIFEST_TYPES = frozenset(
    {
        MEDIA_TYPE_OCI_MANIFEST,
        MEDIA_TYPE_DOCKER_MANIFEST,
        "application/vnd.oci.artifact.manifest.v1+json",  # image-spec 1.1-rc only
    }
)
_SCHEMA1_TYPES = frozenset(
    {MEDIA_TYPE_DOCKER_SCHEMA1_MANIFEST, MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED_MANIFEST}
)


class _Link(msgspec.Struct):
    digest: str = ""


class _FsLayer(msgspec.Struct):
    blobSum: str = ""


class _Links(msgspec.Struct):
    """The parts of a manifest, index or config that refer to other blobs."""

    schemaVersion: int | None = None
    mediaType: str | None = None
    manifests: list[_Link] | None = None
    config: _Link | None = None
    layers: list[_Link] | None = None
    blobs: list[_Link] | None = None  # the short-lived OCI artifact manifest
    fsLayers: list[_FsLayer] | None = None


_links_decoder = msgspec.json.Decoder(_Links)


def image_children(digest: str, data: bytes) -> list[str]:
    """The blobs an image blob refers to, for :meth:`ContentStore.gc`.

    An index (OCI index, Docker manifest list) refers to its manifests; a
    manifest (OCI, Docker schema2) to its config and layers; configs and
    layers refer to nothing. The kind is taken from ``mediaType`` when the
    document has one and guessed from its fields when not (OCI allows
    leaving it out). Anything that is not a JSON object has no children.
    """
    head = data[:64].lstrip()
    if not head.startswith(b"{"):
        return []
    try:
        doc = _links_decoder.decode(data)
    except msgspec.DecodeError:
        return []
    media_type = doc.mediaType
    out: list[str] = []
    if media_type in _INDEX_TYPES or (media_type is None and doc.manifests is not None):
        out.extend(m.digest for m in doc.manifests or ())
    elif media_type in _SCHEMA1_TYPES or (media_type is None and doc.fsLayers is not None):
        out.extend(fs.blobSum for fs in doc.fsLayers or ())
    elif media_type in _MANIFEST_TYPES or media_type is None or doc.config is not None:
        # Manifests, including artifacts with their own config media type.
        if doc.config is not None:
            out.append(doc.config.digest)
        out.extend(layer.digest for layer in doc.layers or ())
        out.extend(b.digest for b in doc.blobs or ())
    return [d for d in out if d]
