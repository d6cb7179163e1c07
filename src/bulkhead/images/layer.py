"""Layer apply: unpack one image layer (a tar stream of filesystem changes) into a directory.

Vocabulary (the OCI image spec's "layer" chapter and containerd's ``archive``):

layer
    A tar archive, optionally compressed (gzip or zstd), holding the files a
    layer adds or changes, plus *whiteouts* for the paths it deletes.
diff_id
    ``sha256:`` of the *uncompressed* tar stream, every byte up to EOF. The
    image config lists one per layer (``rootfs.diff_ids``); chain ids are built
    from them. :func:`apply_layer` computes it while it applies.
whiteout
    An empty entry named ``.wh.<name>``: "``<name>`` from the layers below is
    deleted". ``.wh..wh..opq`` in a directory makes it *opaque*: nothing from
    the layers below shows through it (the layer's own entries still do).
overlay form
    How overlayfs spells the same things in an upper directory: a deleted
    path is a character device 0:0, an opaque directory carries the xattr
    ``trusted.overlay.opaque=y``. ``whiteouts="overlay"`` writes that form, for
    a snapshot that overlay will stack on its parents; ``whiteouts="delete"``
    removes the named paths (and an opaque directory's older contents) from
    ``target`` instead: the vfs snapshotter applies each layer on a copy of
    its parent.

Safety: a layer can never create, change or delete anything outside
``target``. Paths are never resolved by the kernel from a string: each
parent directory is opened one component at a time with
``O_NOFOLLOW | O_DIRECTORY`` relative to its parent's fd, and a symlink met on
the way is resolved by this module *as if target were /* (containerd's
``fs.RootPath``, runc's securejoin). The cases, and what happens:

======================================  =========================================================
``..`` in an entry or hardlink name     refused: :class:`UnsafeLayer` naming the entry (GNU tar
                                        refuses these members too; real layers never have them)
absolute name ``/etc/x``                contained: the leading ``/`` is dropped (GNU tar, containerd)
NUL in a name                           refused (:class:`UnsafeLayer`); a newline is an ordinary
                                        byte of a Linux name and stays inside ``target``
entry written "through" a symlink       contained: the symlink is followed as if ``target`` were
(``evil -> /etc``, then ``evil/passwd``) ``/``: the file lands in ``target/etc/passwd``
symlink as the last component           never followed: it is replaced (``O_EXCL|O_NOFOLLOW``)
symlink whose text points outside       kept as it is: a symlink is data (``/usr/bin/vi ->
                                        /etc/alternatives/vi`` is normal); what matters is that
                                        nothing here follows it outside
hardlink to ``/etc/shadow``             contained: the target is looked up inside ``target``; if
                                        it is not there, :class:`LayerError`
hardlink to a symlink leading outside   contained: the link is made to the symlink itself
                                        (``linkat`` without ``AT_SYMLINK_FOLLOW``)
directory replaced by a symlink         contained: the directory is removed, later entries under
mid-layer                               its name resolve the new symlink inside ``target``
device nodes when not root              skipped and listed in :attr:`AppliedLayer.skipped`
                                        (containerd does the same in a user namespace)
more than 40 symlinks on one path       refused (:class:`UnsafeLayer`), as the kernel's ``ELOOP``
======================================  =========================================================

A refused entry stops the apply half-way: apply into a fresh directory (a
snapshot being prepared) and throw it away on error.

Xattrs (PAX ``SCHILY.xattr.*``) are set after owner and mode, so
``security.capability`` survives the ``chown``. ``trusted.*`` is never taken from
a layer (``trusted.overlay.*`` would let a layer forge overlay's own opaque,
redirect and metacopy markers) and ``security.selinux`` only when SELinux is
enabled on the host; both are listed in ``skipped`` otherwise. An xattr the
filesystem does not support is skipped the same way.

Owners are applied as root. When not root, ``chown`` to another owner is
skipped silently (files end up owned by the caller), as rootless tools do.
Directory modification times are set at the end, after their contents.
"""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
import queue
import shutil
import stat
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO, Literal

from bulkhead.errors import LayerError, UnsafeLayer

if TYPE_CHECKING:
    import tarfile

__all__ = [
    "AppliedLayer",
    "Change",
    "WrittenLayer",
    "apply_layer",
    "detect_compression",
    "write_layer",
]

Whiteouts = Literal["overlay", "delete"]
Compression = Literal["gzip", "zstd", "none"]

WHITEOUT_PREFIX = b".wh."
WHITEOUT_META_PREFIX = b".wh..wh."
WHITEOUT_OPAQUE = b".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"

_CHUNK = 1 << 20
_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_MAX_SYMLINKS = 40
_MAX_CACHED_DIRS = 2048
_SENDFILE_MIN = 128 << 10  # below this, one write() from the mapping is as fast
_MAX_META_SIZE = 16 << 20  # GNU long names and PAX headers larger than this are refused

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@dataclass(frozen=True, slots=True)
class AppliedLayer:
    """What :func:`apply_layer` did.

    ``diff_id`` is ``sha256:<hex>`` of the uncompressed tar, ``size`` its
    length in bytes, ``files`` the number of entries created (files,
    directories, links, devices; whiteouts excluded), ``whiteouts`` the
    number of whiteout entries handled and ``skipped`` what could not be
    applied here, one ``"<path>: <why>"`` line each.
    """

    diff_id: str
    size: int
    files: int
    whiteouts: int = 0
    skipped: tuple[str, ...] = field(default=())


def detect_compression(head: bytes) -> Compression:
    """Name the compression of a layer from its first bytes (as containerd does)."""
    if head.startswith(_GZIP_MAGIC):
        return "gzip"
    if head.startswith(_ZSTD_MAGIC):
        return "zstd"
    return "none"


def _check_media_type(media_type: str | None) -> None:
    # The magic bytes decide the compression (images in the wild mislabel it);
    # the media type only has to be one of a layer.
    if media_type is None:
        return
    if "tar" not in media_type:
        from bulkhead.errors import UnsupportedMediaType

        raise UnsupportedMediaType(f"not a layer media type: {media_type}", media_type)


# --- sources: the uncompressed tar, hashed while it is read ---------------------------------


class _Source:
    """The uncompressed tar stream: exact reads, skips, copies into an fd."""

    def read(self, n: int) -> bytes:
        raise NotImplementedError

    def skip(self, n: int) -> None:
        raise NotImplementedError

    def copy(self, fd: int, n: int) -> None:
        raise NotImplementedError

    def finish(self) -> tuple[str, int]:
        """Read to EOF; return (diff_id, size)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


def _truncated() -> LayerError:
    return LayerError("layer is truncated (the tar stream ends inside an entry)")


class _MmapSource(_Source):
    """An uncompressed tar in a regular file: mapped, hashed by a second thread."""

    def __init__(self, fd: int, start: int) -> None:
        self.fd = fd
        length = os.fstat(fd).st_size
        self.end = length
        self.pos = start
        self.start = start
        self.mm: mmap.mmap | None = None
        self.view: memoryview | None = None
        self.digest = hashlib.sha256()
        self.stop = False
        if length > 0:
            self.mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            self.mm.madvise(mmap.MADV_SEQUENTIAL)
            self.view = memoryview(self.mm)
        self.thread = threading.Thread(target=self._hash, name="layer-hash", daemon=True)
        self.thread.start()

    def _hash(self) -> None:
        view = self.view
        if view is None:
            return
        update = self.digest.update
        for off in range(self.start, self.end, 4 * _CHUNK):
            if self.stop:
                return
            update(view[off : off + 4 * _CHUNK])

    def read(self, n: int) -> bytes:
        pos = self.pos
        if pos + n > self.end or self.mm is None:
            if pos == self.end:
                return b""
            raise _truncated()
        self.pos = pos + n
        return self.mm[pos : pos + n]

    def skip(self, n: int) -> None:
        if self.pos + n > self.end:
            raise _truncated()
        self.pos += n

    def copy(self, fd: int, n: int) -> None:
        pos = self.pos
        if pos + n > self.end:
            raise _truncated()
        self.pos = pos + n
        if n >= _SENDFILE_MIN:
            # In-kernel copy from the page cache: no page faults on the mapping
            # (copy_file_range refuses to cross filesystems: EXDEV).
            src = self.fd
            while n:
                done = os.sendfile(fd, src, pos, min(n, 1 << 30))
                if not done:
                    raise _truncated()
                pos += done
                n -= done
            return
        view = self.view
        assert view is not None
        while n:
            done = os.write(fd, view[pos : pos + n])
            pos += done
            n -= done

    def finish(self) -> tuple[str, int]:
        self.thread.join()
        return "sha256:" + self.digest.hexdigest(), self.end - self.start

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        if self.view is not None:
            self.view.release()
        if self.mm is not None:
            self.mm.close()


def _raw_chunks(raw: BinaryIO, head: bytes) -> Iterator[bytes]:
    if head:
        yield head
    while True:
        data = raw.read(_CHUNK)
        if not data:
            return
        yield data


def _gzip_chunks(raw: BinaryIO, head: bytes) -> Iterator[bytes]:
    d = zlib.decompressobj(wbits=31)
    fed = False
    for data in _raw_chunks(raw, head):
        while data:
            fed = True
            out = d.decompress(data, 4 * _CHUNK)
            if out:
                yield out
            if d.eof:
                # Another gzip member may follow (pigz, concatenated streams).
                data = d.unused_data
                d = zlib.decompressobj(wbits=31)
                fed = False
                if data and not data.startswith(_GZIP_MAGIC):
                    if data.strip(b"\0"):
                        raise LayerError("trailing garbage after the gzip stream")
                    data = b""
            else:
                data = d.unconsumed_tail
    if fed:
        while not d.eof:
            out = d.decompress(b"", 4 * _CHUNK)
            if not out:
                raise LayerError("gzip stream is truncated")
            yield out


def _zstd_chunks(raw: BinaryIO, head: bytes) -> Iterator[bytes]:
    import zstandard

    class _Prefixed:
        def __init__(self) -> None:
            self.head = head

        def read(self, n: int = -1) -> bytes:
            if self.head:
                out, self.head = self.head, b""
                return out
            return raw.read(n)

    reader = zstandard.ZstdDecompressor().stream_reader(
        _Prefixed(),  # type: ignore[arg-type]
        read_size=_CHUNK,
        read_across_frames=True,
    )
    while True:
        try:
            data = reader.read(4 * _CHUNK)
        except zstandard.ZstdError as e:
            raise LayerError(f"corrupt zstd stream: {e}") from None
        if not data:
            return
        yield data


class _StreamSource(_Source):
    """A stream (a pipe, a download, a compressed blob): read, decompressed and
    hashed by a producer thread, consumed here from a small queue of chunks."""

    def __init__(self, raw: BinaryIO, head: bytes, compression: Compression) -> None:
        self.digest = hashlib.sha256()
        self.size = 0
        self.queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=8)
        self.stop = False
        self.buf = b""
        self.off = 0
        self.eof = False
        if compression == "gzip":
            gen = _gzip_chunks(raw, head)
        elif compression == "zstd":
            gen = _zstd_chunks(raw, head)
        else:
            gen = _raw_chunks(raw, head)
        self.thread = threading.Thread(
            target=self._produce, args=(gen,), name="layer-read", daemon=True
        )
        self.thread.start()

    def _produce(self, gen: Iterator[bytes]) -> None:
        put = self.queue.put
        try:
            for chunk in gen:
                if self.stop:
                    return
                put(chunk)
        except zlib.error as e:
            put(LayerError(f"corrupt gzip stream: {e}"))
            return
        except BaseException as e:  # handed to the consumer
            put(e)
            return
        put(None)

    def _next(self) -> bool:
        if self.eof:
            return False
        item = self.queue.get()
        if item is None:
            self.eof = True
            return False
        if isinstance(item, BaseException):
            self.eof = True
            raise item
        # Hashed here, not by the producer: decompression keeps that thread
        # busy, and sha256 lets go of the GIL while the producer works.
        self.digest.update(item)
        self.size += len(item)
        self.buf = item
        self.off = 0
        return True

    def read(self, n: int) -> bytes:
        off = self.off
        buf = self.buf
        if off + n <= len(buf):
            self.off = off + n
            return buf[off : off + n]
        parts = [buf[off:]]
        need = n - len(parts[0])
        while need:
            if not self._next():
                if need == n:
                    return b""
                raise _truncated()
            take = self.buf[:need]
            parts.append(take)
            self.off = len(take)
            need -= len(take)
        return b"".join(parts)

    def skip(self, n: int) -> None:
        while True:
            left = len(self.buf) - self.off
            if n <= left:
                self.off += n
                return
            n -= left
            if not self._next():
                raise _truncated()

    def copy(self, fd: int, n: int) -> None:
        while n:
            left = len(self.buf) - self.off
            if left == 0:
                if not self._next():
                    raise _truncated()
                continue
            take = min(n, left)
            view = memoryview(self.buf)[self.off : self.off + take]
            while view:
                done = os.write(fd, view)
                view = view[done:]
            self.off += take
            n -= take

    def finish(self) -> tuple[str, int]:
        while self._next():
            pass
        self.thread.join()
        return "sha256:" + self.digest.hexdigest(), self.size

    def close(self) -> None:
        self.stop = True
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self.thread.join()


def _open_source(source: BinaryIO | str | os.PathLike[str]) -> tuple[_Source, Callable[[], None]]:
    if isinstance(source, (str, os.PathLike)):
        f: BinaryIO = open(source, "rb", buffering=0)  # noqa: SIM115 - closed by the caller
        close_raw = f.close
    else:
        f = source
        close_raw = _nothing
    try:
        fd: int | None
        try:
            fd = f.fileno()
        except (OSError, AttributeError, ValueError):
            fd = None
        if fd is not None and stat.S_ISREG(os.fstat(fd).st_mode):
            start = f.tell()
            head = os.pread(fd, 8, start)
            compression = detect_compression(head)
            if compression == "none":
                return _MmapSource(fd, start), close_raw
            return _StreamSource(f, b"", compression), close_raw
        head = f.read(8) or b""
        while len(head) < 8:
            more = f.read(8 - len(head))
            if not more:
                break
            head += more
        return _StreamSource(f, head, detect_compression(head)), close_raw
    except BaseException:
        close_raw()
        raise


def _nothing() -> None:
    return None


# --- header parsing --------------------------------------------------------------------------


def _num(field_: bytes) -> int:
    if field_ and field_[0] & 0x80:
        # base-256 (GNU): big-endian two's complement after the marker bit
        value = int.from_bytes(field_, "big", signed=False)
        value &= (1 << (len(field_) * 8 - 1)) - 1
        if field_[0] & 0x40:
            value -= 1 << (len(field_) * 8 - 1)
        return value
    text = field_.split(b"\0", 1)[0].strip()
    if not text:
        return 0
    try:
        return int(text, 8)
    except ValueError:
        raise LayerError(
            f"invalid tar header (a number field reads {field_!r}): not a tar, or corrupt"
        ) from None


def _onum(field_: bytes) -> int:
    """:func:`_num` for the common case: octal digits and one terminator."""
    try:
        return int(field_[:-1], 8)
    except ValueError:
        return _num(field_)


def _pax_records(data: bytes) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        if data[pos] == 0:
            break
        sp = data.find(b" ", pos, pos + 24)
        if sp < 0:
            raise LayerError("malformed PAX header")
        try:
            length = int(data[pos:sp])
        except ValueError:
            raise LayerError("malformed PAX header") from None
        if length <= sp - pos + 1 or pos + length > end or data[pos + length - 1] != 0x0A:
            raise LayerError("malformed PAX header")
        key, eq, value = data[sp + 1 : pos + length - 1].partition(b"=")
        if not eq:
            raise LayerError("malformed PAX header")
        out[key] = value
        pos += length
    return out


def _pax_int(value: bytes) -> int:
    if not value.isdigit():
        raise LayerError(f"invalid PAX number {value!r}")
    return int(value)


def _pax_time(value: bytes) -> int:
    whole, _, frac = value.partition(b".")
    try:
        secs = int(whole)
        ns = int((frac[:9] or b"0").ljust(9, b"0")) if frac else 0
    except ValueError:
        raise LayerError(f"invalid PAX time {value!r}") from None
    return secs * 1_000_000_000 + (-ns if secs < 0 or whole.startswith(b"-") else ns)


def _selinux_enabled() -> bool:
    return os.path.exists("/sys/fs/selinux/enforce")


def _current_umask() -> int:
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _is_symlink_error(e: OSError) -> bool:
    return e.errno in (errno.ELOOP, errno.ENOTDIR)


# --- the applier -----------------------------------------------------------------------------


class _Applier:
    def __init__(self, target: str, whiteouts: Whiteouts) -> None:
        self.root = os.open(target, _DIR_FLAGS)
        self.dirs: dict[bytes, int] = {b"": self.root}
        self.whiteouts = whiteouts
        self.is_root = os.geteuid() == 0
        self.euid = os.geteuid()
        self.egid = os.getegid()
        self.umask = _current_umask()
        self.selinux = _selinux_enabled()
        self.skipped: list[str] = []
        self.dir_times: list[tuple[bytes, int, int]] = []
        self.deferred_modes: list[tuple[bytes, int]] = []
        self.files = 0
        self.whiteout_count = 0
        # directories with the setgid bit: new entries inherit their group, so chown anyway
        self.sgid: set[bytes] = set()
        # delete mode: what this layer created, so an opaque marker spares it
        self.created: set[bytes] | None = set() if whiteouts == "delete" else None

    def close(self) -> None:
        for fd in self.dirs.values():
            os.close(fd)
        self.dirs.clear()

    # directory fds ---------------------------------------------------------------------------

    def _forget(self, key: bytes) -> None:
        """Drop cached fds at or below ``key`` (it was removed or replaced)."""
        if key not in self.dirs:
            return  # descendants are only cached below a cached directory
        prefix = key + b"/"
        for k in [k for k in self.dirs if k == key or k.startswith(prefix)]:
            if k:
                os.close(self.dirs.pop(k))

    def _dir(self, key: bytes) -> int:
        """An fd of directory ``key`` (a cleaned relative path), created if missing."""
        fd = self.dirs.get(key)
        if fd is not None:
            return fd
        if key and key in self.sgid:
            self.sgid.discard(key)
        pkey, _, base = key.rpartition(b"/")
        pfd = self._dir(pkey)
        try:
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        except FileNotFoundError:
            os.mkdir(base, 0o755, dir_fd=pfd)
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        except OSError as e:
            if not _is_symlink_error(e):
                raise
            fd = self._open_dir_slow(key)
        else:
            if os.fstat(fd).st_mode & stat.S_ISGID:
                self.sgid.add(key)
        self.dirs[key] = fd
        return fd

    def _open_dir_slow(self, key: bytes, create: bool = True) -> int:
        """Walk ``key`` from the root, resolving symlinks as if the root were ``/``."""
        pending = key.split(b"/")
        pending.reverse()
        stack: list[int] = []
        links = 0
        try:
            while pending:
                name = pending.pop()
                if name in (b"", b"."):
                    continue
                if name == b"..":
                    if stack:
                        os.close(stack.pop())
                    continue
                cur = stack[-1] if stack else self.root
                try:
                    fd = os.open(name, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    if not create:
                        raise
                    try:
                        os.mkdir(name, 0o755, dir_fd=cur)
                    except FileExistsError:
                        pass
                    else:
                        fd = os.open(name, _DIR_FLAGS, dir_fd=cur)
                        stack.append(fd)
                        continue
                    fd = -1
                except OSError as e:
                    if not _is_symlink_error(e):
                        raise
                    fd = -1
                if fd >= 0:
                    stack.append(fd)
                    continue
                st = os.stat(name, dir_fd=cur, follow_symlinks=False)
                if not stat.S_ISLNK(st.st_mode):
                    raise LayerError(
                        f"{key.decode(errors='replace')}: "
                        f"{name.decode(errors='replace')} is not a directory"
                    )
                links += 1
                if links > _MAX_SYMLINKS:
                    raise UnsafeLayer(
                        f"{key.decode(errors='replace')}: too many levels of symbolic links"
                    )
                link = os.readlink(name, dir_fd=cur)
                if link.startswith(b"/"):
                    while stack:
                        os.close(stack.pop())
                parts = link.split(b"/")
                parts.reverse()
                pending.extend(parts)
            return stack.pop() if stack else os.dup(self.root)
        finally:
            for fd in stack:
                os.close(fd)

    def _lookup_dir(self, key: bytes) -> tuple[int, bool] | None:
        """Like :meth:`_dir` but never creates: ``(fd, owned)`` or ``None`` when missing."""
        fd = self.dirs.get(key)
        if fd is not None:
            return fd, False
        try:
            return self._open_dir_slow(key, create=False), True
        except (FileNotFoundError, LayerError):
            return None

    # removal ---------------------------------------------------------------------------------

    def _remove(self, pfd: int, base: bytes, key: bytes) -> bool:
        """Remove ``base`` in ``pfd`` whatever it is; False if it did not exist."""
        try:
            os.unlink(base, dir_fd=pfd)
            self._forget(key)
            return True
        except FileNotFoundError:
            return False
        except IsADirectoryError:
            pass
        except PermissionError:
            # EPERM from unlink of a directory on some filesystems
            st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode):
                raise
        self._forget(key)
        shutil.rmtree(os.fsdecode(base), dir_fd=pfd)
        return True

    # metadata ---------------------------------------------------------------------------------

    def _own(self, fd: int, uid: int, gid: int) -> None:
        if uid == self.euid and gid == self.egid and not self.is_root:
            return
        try:
            os.fchown(fd, uid, gid)
        except PermissionError:
            if self.is_root:
                raise

    def _xattrs(
        self, name: str, fd_or_path: int | str, xattrs: dict[str, bytes], symlink: bool
    ) -> None:
        for key, value in xattrs.items():
            if key.startswith("trusted."):
                self.skipped.append(f"{name}: xattr {key} (trusted.* is never taken from a layer)")
                continue
            if key == "security.selinux" and not self.selinux:
                self.skipped.append(f"{name}: xattr {key} (SELinux is not enabled)")
                continue
            try:
                os.setxattr(fd_or_path, key, value, follow_symlinks=not symlink)
            except OSError as e:
                if e.errno == errno.EOPNOTSUPP or (
                    e.errno in (errno.EPERM, errno.EACCES) and not self.is_root
                ):
                    self.skipped.append(f"{name}: xattr {key} ({os.strerror(e.errno)})")
                    continue
                raise LayerError(f"{name}: cannot set xattr {key}: {e.strerror}") from None

    # the loop ---------------------------------------------------------------------------------

    def run(self, src: _Source) -> None:
        read = src.read
        skip = src.skip
        copy = src.copy
        dirs = self.dirs
        get_dir = self._dir
        is_root = self.is_root
        umask = self.umask
        created = self.created
        euid, egid = self.euid, self.egid
        sgid = self.sgid
        pax: dict[bytes, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        os_open = os.open
        os_close = os.close
        os_fchown = os.fchown
        os_fchmod = os.fchmod
        os_utime = os.utime
        onum = _onum
        check = True
        while True:
            if len(dirs) > _MAX_CACHED_DIRS:
                # between entries only: an entry's code holds fds from the cache
                for k in [k for k in dirs if k]:
                    os_close(dirs.pop(k))
            hdr = read(_BLOCK)
            if hdr == _ZERO_BLOCK or not hdr:
                break  # end of archive (or a clean EOF without one, as Go's reader accepts)
            if check or hdr[257:262] != b"ustar":
                # The first header, and any without the ustar magic, must add up; later
                # ustar headers skip it (sum() is 15% of a small file's time). Corruption
                # is what digests catch: the blob's and the diff_id computed here.
                if _num(hdr[148:156]) != sum(hdr) - sum(hdr[148:156]) + 256:
                    raise LayerError(
                        "invalid tar header (checksum mismatch): not a tar, or corrupt"
                    )
                check = False
            t = hdr[156]
            size = onum(hdr[124:136])
            if size < 0:
                raise LayerError(f"invalid tar header (negative size {size})")
            if t in (0x4C, 0x4B, 0x78, 0x67):  # L K x g: metadata for the next entry
                if size > _MAX_META_SIZE:
                    raise LayerError(f"tar metadata entry of {size} bytes is too large")
                data = read(size)
                if len(data) != size:
                    raise _truncated()
                skip(-size % _BLOCK)
                if t == 0x4C:
                    long_name = data.split(b"\0", 1)[0]
                elif t == 0x4B:
                    long_link = data.split(b"\0", 1)[0]
                elif t == 0x78:
                    pax.update(_pax_records(data))
                continue
            # --- the entry's name, link name and numbers
            if long_name is not None:
                name = long_name
            elif b"path" in pax:
                name = pax[b"path"]
            else:
                name = hdr[0:100].split(b"\0", 1)[0]
                if hdr[257:263] == b"ustar\x00" and hdr[345] != 0:
                    name = hdr[345:500].split(b"\0", 1)[0] + b"/" + name
            mtime_ns = onum(hdr[136:148]) * 1_000_000_000
            uid = onum(hdr[108:116])
            gid = onum(hdr[116:124])
            mode = onum(hdr[100:108]) & 0o7777
            atime_ns = mtime_ns
            xattrs: dict[str, bytes] | None = None
            if pax:
                if b"size" in pax:
                    size = _pax_int(pax[b"size"])
                if b"uid" in pax:
                    uid = _pax_int(pax[b"uid"])
                if b"gid" in pax:
                    gid = _pax_int(pax[b"gid"])
                if b"mtime" in pax:
                    mtime_ns = _pax_time(pax[b"mtime"])
                    atime_ns = mtime_ns
                if b"atime" in pax:
                    atime_ns = _pax_time(pax[b"atime"])
                for k, v in pax.items():
                    if k.startswith(b"SCHILY.xattr."):
                        if xattrs is None:
                            xattrs = {}
                        xattrs[k[13:].decode("utf-8", "surrogateescape")] = v
                    elif k.startswith(b"GNU.sparse."):
                        raise LayerError("sparse files (GNU.sparse PAX headers) are not supported")
            if long_link is not None:
                linkname = long_link
            elif b"linkpath" in pax:
                linkname = pax[b"linkpath"]
            else:
                linkname = hdr[157:257].split(b"\0", 1)[0]
            if pax:
                pax = {}
            long_name = long_link = None

            # --- the name, cleaned and checked
            if b"\0" in name:
                raise UnsafeLayer(f"{name!r}: NUL in an entry name")
            parts = [p for p in name.split(b"/") if p and p != b"."]
            if b".." in parts:
                raise UnsafeLayer(f"{_show(name)}: '..' in an entry name")
            if not parts:
                # the root itself ("./"): its metadata belongs to the snapshot, not the layer
                if t != 0x35:
                    raise UnsafeLayer(f"{_show(name)}: entry names the root but is not a directory")
                skip(size + (-size % _BLOCK))
                continue
            base = parts[-1]
            if len(parts) == 1:
                pkey = b""
                key = base
            else:
                pkey = b"/".join(parts[:-1])
                key = pkey + b"/" + base
            pfd = dirs.get(pkey)
            if pfd is None:
                pfd = get_dir(pkey)

            # --- whiteouts
            if base.startswith(WHITEOUT_PREFIX):
                skip(size + (-size % _BLOCK))
                self._whiteout(pfd, pkey, base, name, uid, gid)
                continue

            if created is not None:
                created.add(key)
                up = pkey
                while up and up not in created:
                    created.add(up)
                    up = up.rpartition(b"/")[0]
            self.files += 1
            if t == 0x30 or t == 0 or t == 0x37:  # regular file
                try:
                    fd = os_open(base, _NEW_FILE_FLAGS, mode & 0o777, dir_fd=pfd)
                except FileExistsError:
                    self._remove(pfd, base, key)
                    fd = os_open(base, _NEW_FILE_FLAGS, mode & 0o777, dir_fd=pfd)
                try:
                    if size:
                        copy(fd, size)
                        pad = -size % _BLOCK
                        if pad:
                            skip(pad)
                    if is_root:
                        if uid or gid or pkey in sgid:
                            os_fchown(fd, uid, gid)
                    elif uid != euid or gid != egid:
                        self._own(fd, uid, gid)
                    if mode & ~umask != mode or mode & 0o7000:
                        os_fchmod(fd, mode)
                    if xattrs:
                        self._xattrs(_show(name), fd, xattrs, False)
                    os_utime(fd, ns=(atime_ns, mtime_ns))
                finally:
                    os_close(fd)
                continue
            skip(size + (-size % _BLOCK))
            if t == 0x35:  # directory
                self._directory(pfd, base, key, name, mode, uid, gid, xattrs, mtime_ns)
            elif t == 0x32:  # symlink
                if b"\0" in linkname:
                    raise UnsafeLayer(f"{_show(name)}: NUL in a symlink target")
                try:
                    os.symlink(linkname, base, dir_fd=pfd)
                except FileExistsError:
                    self._remove(pfd, base, key)
                    os.symlink(linkname, base, dir_fd=pfd)
                self._path_meta(pfd, base, name, uid, gid, None, xattrs, atime_ns, mtime_ns)
            elif t == 0x31:  # hardlink
                self._hardlink(pfd, base, key, name, linkname)
            elif t in (0x33, 0x34, 0x36):  # char, block, fifo
                if t == 0x36:
                    kind = stat.S_IFIFO
                    dev = 0
                else:
                    kind = stat.S_IFCHR if t == 0x33 else stat.S_IFBLK
                    dev = os.makedev(_num(hdr[329:337]), _num(hdr[337:345]))
                try:
                    self._mknod(pfd, base, key, kind | (mode & 0o777), dev)
                except PermissionError:
                    if is_root:
                        raise
                    self.files -= 1
                    self.skipped.append(f"{_show(name)}: device node (not root)")
                    continue
                self._path_meta(pfd, base, name, uid, gid, mode, xattrs, atime_ns, mtime_ns)
            elif t == 0x44:  # GNU dumpdir: a directory
                self._directory(pfd, base, key, name, mode, uid, gid, xattrs, mtime_ns)
            elif t == 0x56:  # volume label
                self.files -= 1
            else:
                raise LayerError(f"{_show(name)}: unsupported tar entry type {chr(t)!r}")

    def _mknod(self, pfd: int, base: bytes, key: bytes, mode: int, dev: int) -> None:
        try:
            os.mknod(base, mode, dev, dir_fd=pfd)
        except FileExistsError:
            self._remove(pfd, base, key)
            os.mknod(base, mode, dev, dir_fd=pfd)

    def _path_meta(
        self,
        pfd: int,
        base: bytes,
        name: bytes,
        uid: int,
        gid: int,
        mode: int | None,
        xattrs: dict[str, bytes] | None,
        atime_ns: int,
        mtime_ns: int,
    ) -> None:
        """Owner, mode, xattrs and times of a non-file entry, by name, never following it."""
        if self.is_root or uid != self.euid or gid != self.egid:
            try:
                os.chown(base, uid, gid, dir_fd=pfd, follow_symlinks=False)
            except PermissionError:
                if self.is_root:
                    raise
        if mode is not None and (mode & ~self.umask != mode or mode & 0o7000):
            os.chmod(base, mode, dir_fd=pfd)  # a device or fifo just made: not a symlink
        if xattrs:
            self._xattrs(_show(name), f"/proc/self/fd/{pfd}/{os.fsdecode(base)}", xattrs, True)
        os.utime(base, ns=(atime_ns, mtime_ns), dir_fd=pfd, follow_symlinks=False)

    def _directory(
        self,
        pfd: int,
        base: bytes,
        key: bytes,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        xattrs: dict[str, bytes] | None,
        mtime_ns: int,
    ) -> None:
        fd = self.dirs.get(key)
        if fd is None:
            try:
                os.mkdir(base, 0o700, dir_fd=pfd)
            except FileExistsError:
                pass
            try:
                fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            except OSError as e:
                if not (_is_symlink_error(e) or e.errno == errno.ENOTDIR):
                    raise
                # something else is in the way: replace it (containerd's RemoveAll)
                self._remove(pfd, base, key)
                os.mkdir(base, 0o700, dir_fd=pfd)
                fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
            self.dirs[key] = fd
        if self.is_root or uid != self.euid or gid != self.egid:
            self._own(fd, uid, gid)
        if not self.is_root and mode & 0o300 != 0o300:
            os.fchmod(fd, 0o700)
            self.deferred_modes.append((key, mode))
        else:
            os.fchmod(fd, mode)
        if mode & stat.S_ISGID:
            self.sgid.add(key)
        else:
            self.sgid.discard(key)
        if xattrs:
            self._xattrs(_show(name), fd, xattrs, False)
        self.dir_times.append((key, mtime_ns, mtime_ns))

    def _hardlink(self, pfd: int, base: bytes, key: bytes, name: bytes, linkname: bytes) -> None:
        if b"\0" in linkname:
            raise UnsafeLayer(f"{_show(name)}: NUL in a hardlink target")
        lparts = [p for p in linkname.split(b"/") if p and p != b"."]
        if b".." in lparts:
            raise UnsafeLayer(f"{_show(name)}: '..' in the hardlink target {_show(linkname)}")
        if not lparts:
            raise UnsafeLayer(f"{_show(name)}: hardlink to the root directory")
        lpkey = b"/".join(lparts[:-1])
        lfd = self.dirs.get(lpkey)
        if lfd is None:
            lfd = self._dir(lpkey)
        lkey = b"/".join(lparts)
        if lkey == key:
            return  # a link to itself: nothing to do
        for _ in range(2):
            try:
                os.link(lparts[-1], base, src_dir_fd=lfd, dst_dir_fd=pfd, follow_symlinks=False)
                return
            except FileExistsError:
                self._remove(pfd, base, key)
            except FileNotFoundError:
                raise LayerError(
                    f"{_show(name)}: hardlink target {_show(linkname)} does not exist"
                ) from None
            except PermissionError:
                raise LayerError(
                    f"{_show(name)}: cannot hardlink to {_show(linkname)} (a directory?)"
                ) from None
        raise LayerError(f"{_show(name)}: cannot create hardlink")

    def _whiteout(
        self, pfd: int, pkey: bytes, base: bytes, name: bytes, uid: int, gid: int
    ) -> None:
        self.whiteout_count += 1
        if base == WHITEOUT_OPAQUE:
            if self.whiteouts == "overlay":
                try:
                    os.setxattr(pfd, OVERLAY_OPAQUE_XATTR, b"y")
                except OSError as e:
                    raise LayerError(
                        f"{_show(name)}: cannot mark the directory opaque "
                        f"({OVERLAY_OPAQUE_XATTR}: {e.strerror}); overlay form needs root, "
                        "use whiteouts='delete'"
                    ) from None
            else:
                assert self.created is not None
                prefix = pkey + b"/" if pkey else b""
                for entry in os.listdir(pfd):
                    ebytes = os.fsencode(entry)
                    if prefix + ebytes not in self.created:
                        self._remove(pfd, ebytes, prefix + ebytes)
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            return  # other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): ignored, as containerd does
        target = base[len(WHITEOUT_PREFIX) :]
        if target in (b"", b".", b".."):
            raise UnsafeLayer(f"{_show(name)}: whiteout of {_show(target)}")
        key = pkey + b"/" + target if pkey else target
        if self.whiteouts == "overlay":
            self._remove(pfd, target, key)
            try:
                os.mknod(target, stat.S_IFCHR, 0, dir_fd=pfd)
            except PermissionError:
                raise LayerError(
                    f"{_show(name)}: cannot create an overlay whiteout (a 0:0 device); "
                    "use whiteouts='delete'"
                ) from None
            if self.is_root and (uid or gid):
                os.chown(target, uid, gid, dir_fd=pfd, follow_symlinks=False)
        else:
            self._remove(pfd, target, key)
            if self.created is not None:
                self.created.discard(key)

    def finish(self) -> None:
        """Modes kept writable until now, then directory times (their contents are done)."""
        for key, mode in reversed(self.deferred_modes):
            self._at_end(key, lambda fd, mode=mode: os.fchmod(fd, mode))  # type: ignore[misc]
        for key, atime_ns, mtime_ns in reversed(self.dir_times):
            self._at_end(key, lambda fd, a=atime_ns, m=mtime_ns: os.utime(fd, ns=(a, m)))  # type: ignore[misc]

    def _at_end(self, key: bytes, action: Callable[[int], None]) -> None:
        found = self._lookup_dir(key)
        if found is None:
            return  # removed later in the layer
        fd, owned = found
        try:
            action(fd)
        finally:
            if owned:
                os.close(fd)


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


def apply_layer(
    source: BinaryIO | str | os.PathLike[str],
    target: str | os.PathLike[str],
    *,
    whiteouts: Whiteouts = "overlay",
    media_type: str | None = None,
) -> AppliedLayer:
    """Apply the layer read from ``source`` (a path or a binary stream) to directory ``target``.

    The compression (gzip, zstd or none) is recognised from the stream's
    first bytes; ``media_type``, when given, must be a layer's (its
    compression suffix is not trusted). ``whiteouts`` chooses overlay form or
    deletion (see the module's docstring). The whole stream is read, so the
    returned ``diff_id`` covers every byte; compare it with the image
    config's ``rootfs.diff_ids``. Raises :class:`LayerError` for a corrupt or
    truncated layer and :class:`UnsafeLayer` for an entry that tries to leave
    ``target``.
    """
    if whiteouts not in ("overlay", "delete"):
        raise ValueError(f"whiteouts must be 'overlay' or 'delete', not {whiteouts!r}")
    _check_media_type(media_type)
    src, close_raw = _open_source(source)
    try:
        applier = _Applier(os.fspath(target), whiteouts)
        try:
            applier.run(src)
            applier.finish()
        finally:
            applier.close()
        diff_id, size = src.finish()
    finally:
        src.close()
        close_raw()
    return AppliedLayer(
        diff_id=diff_id,
        size=size,
        files=applier.files,
        whiteouts=applier.whiteout_count,
        skipped=tuple(applier.skipped),
    )


# --- writing a layer (the other direction: a snapshot's changes as a tar) ---------------------

ChangeKind = Literal["add", "modify", "delete", "opaque"]


@dataclass(frozen=True, slots=True)
class Change:
    """One change of a snapshot against its parent, as a diff finds it.

    ``path`` is relative to the snapshot's root, ``/``-separated. ``add`` and
    ``modify`` are written as the entry found at ``path``; ``delete`` as a
    whiteout ``.wh.<name>``; ``opaque`` (a directory whose older contents are
    all gone) as ``<path>/.wh..wh..opq``.
    """

    kind: ChangeKind
    path: str


@dataclass(frozen=True, slots=True)
class WrittenLayer:
    """``diff_id`` and ``size`` of the uncompressed tar :func:`write_layer` wrote."""

    diff_id: str
    size: int


class _HashingWriter:
    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.out.write(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _open_parent(root_fd: int, parts: list[str]) -> int:
    """The fd of ``parts``' parent, walked without following any symlink."""
    fd = os.dup(root_fd)
    try:
        for name in parts[:-1]:
            nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_layer(
    changes: Iterable[Change], root: str | os.PathLike[str], out: BinaryIO
) -> WrittenLayer:
    """Write ``changes`` (found under ``root``) as an uncompressed PAX tar layer to ``out``.

    Give the changes in lexical path order, parents before children (the
    order a diff walks). Entries are read from ``root`` without following
    symlinks in any path component (the snapshot's content is the
    container's, so it is not trusted); hardlinked files become hardlink
    entries after their first name; xattrs are kept except ``trusted.*``
    (overlay's own bookkeeping lives there). Owners are numeric, user and
    group names empty, as Docker's layers.
    """
    import tarfile  # here: apply_layer does not need it, and a CLI start should not pay for it

    writer = _HashingWriter(out)
    root_fd = os.open(os.fspath(root), _DIR_FLAGS)
    seen: dict[tuple[int, int], str] = {}
    try:
        with tarfile.TarFile(
            fileobj=writer,  # type: ignore[arg-type]
            mode="w",
            format=tarfile.PAX_FORMAT,
        ) as tf:
            for change in changes:
                parts = [p for p in change.path.split("/") if p and p != "."]
                if not parts or ".." in parts:
                    raise LayerError(f"{change.path!r}: not a path inside the snapshot")
                name = "/".join(parts)
                if change.kind in ("delete", "opaque"):
                    if change.kind == "delete":
                        wname = "/".join([*parts[:-1], ".wh." + parts[-1]])
                    else:
                        wname = name + "/" + WHITEOUT_OPAQUE.decode()
                    ti = tarfile.TarInfo(wname)
                    ti.mode = 0o644
                    tf.addfile(ti)
                    continue
                pfd = _open_parent(root_fd, parts)
                try:
                    _add_entry(tf, pfd, parts[-1], name, seen)
                finally:
                    os.close(pfd)
    finally:
        os.close(root_fd)
    return WrittenLayer("sha256:" + writer.digest.hexdigest(), writer.size)


def _add_entry(
    tf: tarfile.TarFile, pfd: int, base: str, name: str, seen: dict[tuple[int, int], str]
) -> None:
    import tarfile

    st = os.stat(base, dir_fd=pfd, follow_symlinks=False)
    ti = tarfile.TarInfo(name)
    ti.mode = stat.S_IMODE(st.st_mode)
    ti.uid, ti.gid = st.st_uid, st.st_gid
    ti.uname = ti.gname = ""
    ti.mtime = st.st_mtime_ns // 1_000_000_000
    kind = stat.S_IFMT(st.st_mode)
    fd = -1
    try:
        if kind == stat.S_IFREG:
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in seen:
                ti.type = tarfile.LNKTYPE
                ti.linkname = seen[key]
                tf.addfile(ti)
                return
            if st.st_nlink > 1:
                seen[key] = name
            fd = os.open(base, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            ti.size = st.st_size
        elif kind == stat.S_IFDIR:
            ti.type = tarfile.DIRTYPE
            fd = os.open(base, _DIR_FLAGS, dir_fd=pfd)
        elif kind == stat.S_IFLNK:
            ti.type = tarfile.SYMTYPE
            ti.linkname = os.readlink(base, dir_fd=pfd)
        elif kind in (stat.S_IFCHR, stat.S_IFBLK):
            ti.type = tarfile.CHRTYPE if kind == stat.S_IFCHR else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif kind == stat.S_IFIFO:
            ti.type = tarfile.FIFOTYPE
        else:
            return  # sockets are not carried by layers
        if fd >= 0:
            pax: dict[str, str] = {}
            for key_ in os.listxattr(fd):
                if key_.startswith("trusted."):
                    continue
                value = os.getxattr(fd, key_)
                pax["SCHILY.xattr." + key_] = value.decode("utf-8", "surrogateescape")
            if pax:
                ti.pax_headers = pax
        if kind == stat.S_IFREG:
            with os.fdopen(fd, "rb", closefd=False) as fh:
                tf.addfile(ti, fh)
        else:
            tf.addfile(ti)
    finally:
        if fd >= 0:
            os.close(fd)
