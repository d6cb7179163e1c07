"""Diff: the changes of a snapshot against its parent, as a layer tar.

A *layer* is a tar of changes: added or modified entries as themselves,
deleted ones as *whiteouts* (an empty file ``.wh.<name>`` beside where the
deleted entry was) and directories whose lower contents are all gone as
*opaque* (an empty ``<dir>/.wh..wh..opq``). Its *diff id* is the sha256 of
the uncompressed tar; an image config's ``rootfs.diff_ids`` lists them.

Two ways of finding the changes:

* overlay (:class:`~bulkhead.snapshots.overlay.OverlaySnapshotter`): the
  snapshot's upper directory *is* the change set: every entry in it was
  added or modified, 0:0 character devices are whiteouts and directories
  with ``trusted.overlay.opaque="y"`` are opaque;
* vfs: the snapshot's full tree is compared with its parent's, entry by
  entry: type, mode, owner, size, mtime, device numbers, link target and
  xattrs, and the contents when the timestamps are too coarse to tell
  (nanoseconds 0, as after unpacking a tar).

The tar is deterministic: entries in sorted order (a directory before its
contents, an opaque marker right after its directory), PAX format, mtimes in
whole seconds, no user or group names, xattrs as ``SCHILY.xattr.*`` records
(overlay's own ``trusted.overlay.*`` left out), hard links within the layer
as link entries.
"""

from __future__ import annotations

import filecmp
import hashlib
import os
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, NamedTuple

from bulkhead.errors import SnapshotError
from bulkhead.snapshots.base import DiffDirs

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
_OVERLAY_XATTR = "trusted.overlay."


@dataclass(frozen=True)
class LayerDiff:
    """What :func:`diff` wrote: the diff id (``sha256:<hex>``), its size in bytes and entry count."""

    diff_id: str
    size: int
    entries: int


class _HashingWriter:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.hash.update(data)
        self.size += len(data)
        self._out.write(data)


# --------------------------------------------------------------------------- the tar writer
#
# tarfile costs ~50 us an entry in Python; a ustar header is 512 bytes with
# a few octal fields, so it is built here directly (about 4x faster), PAX
# extended records added only for what ustar cannot hold: long or non-ASCII
# names and link targets, xattrs, ids, sizes and times out of range.

_BLOCK = 512
_ZEROS = bytes(_BLOCK)
_PAX_NAME = b"././@PaxHeader"


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: bytes, value: bytes) -> bytes:
    payload = b" " + key + b"=" + value + b"\n"
    digits = len(str(len(payload)))
    while len(str(len(payload) + digits)) != digits:
        digits += 1
    return str(len(payload) + digits).encode() + payload


def _header(
    name: bytes,
    typeflag: bytes,
    *,
    mode: int = 0,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    linkname: bytes = b"",
    devmajor: int = 0,
    devminor: int = 0,
) -> bytes:
    head = b"".join(
        (
            name.ljust(100, b"\0"),
            _octal(mode, 8),
            _octal(uid, 8),
            _octal(gid, 8),
            _octal(size, 12),
            _octal(mtime, 12),
            b" " * 8,
            typeflag,
            linkname.ljust(100, b"\0"),
            b"ustar\x0000",
            bytes(64),  # uname, gname
            _octal(devmajor, 8),
            _octal(devminor, 8),
            bytes(167),  # prefix, padding
        )
    )
    checksum = b"%06o\0 " % sum(head)
    return head[:148] + checksum + head[156:]


class _TarWriter:
    """Deterministic PAX tar entries to a :class:`_HashingWriter`."""

    def __init__(self, out: _HashingWriter) -> None:
        self.out = out

    def entry(
        self,
        name: str,
        typeflag: bytes,
        *,
        mode: int = 0,
        uid: int = 0,
        gid: int = 0,
        size: int = 0,
        mtime: int = 0,
        linkname: str = "",
        devmajor: int = 0,
        devminor: int = 0,
        xattrs: dict[str, bytes] | None = None,
    ) -> None:
        bname = os.fsencode(name)
        if typeflag == tarfile.DIRTYPE and not bname.endswith(b"/"):
            bname += b"/"
        blink = os.fsencode(linkname)
        records: list[bytes] = []
        if len(bname) > 100 or not bname.isascii():
            records.append(_pax_record(b"path", bname))
            bname = bname[:99].decode("ascii", "replace").encode("ascii", "replace")
        if len(blink) > 100 or not blink.isascii():
            records.append(_pax_record(b"linkpath", blink))
            blink = b""
        if not 0 <= uid < 0o7777777:
            records.append(_pax_record(b"uid", str(uid).encode()))
            uid = 0
        if not 0 <= gid < 0o7777777:
            records.append(_pax_record(b"gid", str(gid).encode()))
            gid = 0
        if size >= 0o77777777777:
            records.append(_pax_record(b"size", str(size).encode()))
        if not 0 <= mtime < 0o77777777777:
            records.append(_pax_record(b"mtime", str(mtime).encode()))
            mtime = 0
        for key, value in sorted((xattrs or {}).items()):
            records.append(_pax_record(b"SCHILY.xattr." + os.fsencode(key), value))
        if records:
            if any(not _is_utf8(r) for r in records):
                records.insert(0, _pax_record(b"hdrcharset", b"BINARY"))
            data = b"".join(records)
            self.out.write(_header(_PAX_NAME, tarfile.XHDTYPE, mode=0o644, size=len(data)))
            self._data(data)
        self.out.write(
            _header(
                bname,
                typeflag,
                mode=mode,
                uid=uid,
                gid=gid,
                size=size if size < 0o77777777777 else 0,
                mtime=mtime,
                linkname=blink,
                devmajor=devmajor,
                devminor=devminor,
            )
        )

    def _data(self, data: bytes) -> None:
        self.out.write(data)
        if len(data) % _BLOCK:
            self.out.write(_ZEROS[: _BLOCK - len(data) % _BLOCK])

    def file_data(self, f: BinaryIO, size: int, name: str) -> None:
        left = size
        while left:
            chunk = f.read(min(left, 1 << 20))
            if not chunk:
                raise SnapshotError(f"{name}: shrank while the diff was being written")
            self.out.write(chunk)
            left -= len(chunk)
        if size % _BLOCK:
            self.out.write(_ZEROS[: _BLOCK - size % _BLOCK])

    def close(self) -> None:
        self.out.write(_ZEROS * 2)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def diff(snapshotter: object, key: str, out: BinaryIO | str | os.PathLike[str]) -> LayerDiff:
    """Write the changes of snapshot ``key`` against its parent to ``out`` as a layer tar.

    ``snapshotter`` must offer ``diff_dirs(key)`` (both of ours do). ``out``
    is a binary file or a path to create.
    """
    get_dirs = getattr(snapshotter, "diff_dirs", None)
    if get_dirs is None:
        raise SnapshotError(f"{type(snapshotter).__name__} cannot tell where its changes are")
    dirs: DiffDirs = get_dirs(key)
    if isinstance(out, str | os.PathLike):
        with open(out, "wb") as f:
            return diff_dirs(dirs, f)
    return diff_dirs(dirs, out)


def diff_dirs(dirs: DiffDirs, out: BinaryIO) -> LayerDiff:
    """:func:`diff` for explicit directories."""
    writer = _HashingWriter(out)
    tar = _TarWriter(writer)
    layer = _LayerWriter(tar)
    if dirs.overlay:
        _walk_upper(layer, dirs.upper)
    else:
        _compare(layer, dirs.lowers[0] if dirs.lowers else None, dirs.upper)
    tar.close()
    return LayerDiff("sha256:" + writer.hash.hexdigest(), writer.size, layer.entries)


class _LayerWriter:
    def __init__(self, tar: _TarWriter) -> None:
        self.tar = tar
        self.entries = 0
        self.links: dict[tuple[int, int], str] = {}

    def add(
        self, path: str, name: str, st: os.stat_result, xattr_names: list[str] | None = None
    ) -> None:
        """Add the entry at ``path`` (already lstat'ed) as ``name``."""
        mode = st.st_mode
        xattrs = _xattrs(path, xattr_names)

        def put(
            typeflag: bytes, *, size: int = 0, linkname: str = "", major: int = 0, minor: int = 0
        ) -> None:
            self.tar.entry(
                name,
                typeflag,
                mode=stat.S_IMODE(mode),
                uid=st.st_uid,
                gid=st.st_gid,
                size=size,
                mtime=st.st_mtime_ns // 1_000_000_000,
                linkname=linkname,
                devmajor=major,
                devminor=minor,
                xattrs=xattrs,
            )

        ident = (st.st_dev, st.st_ino)
        self.entries += 1
        if not stat.S_ISDIR(mode) and st.st_nlink > 1:
            first = self.links.get(ident)
            if first is not None:
                put(tarfile.LNKTYPE, linkname=first)
                return
            self.links[ident] = name
        if stat.S_ISREG(mode):
            # The snapshot's content is the container's: never follow a
            # symlink swapped in since the lstat (diff a stopped or paused
            # container: directories above are walked by path).
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with open(fd, "rb", buffering=0) as f:
                now = os.fstat(fd)
                if (now.st_dev, now.st_ino) != ident:
                    raise SnapshotError(f"{name}: changed while the diff was being written")
                put(tarfile.REGTYPE, size=st.st_size)
                self.tar.file_data(f, st.st_size, name)
        elif stat.S_ISDIR(mode):
            put(tarfile.DIRTYPE)
        elif stat.S_ISLNK(mode):
            put(tarfile.SYMTYPE, linkname=os.readlink(path))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            typeflag = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            put(typeflag, major=os.major(st.st_rdev), minor=os.minor(st.st_rdev))
        elif stat.S_ISFIFO(mode):
            put(tarfile.FIFOTYPE)
        else:
            self.entries -= 1  # sockets: tar has no type for them (GNU tar skips them too)

    def marker(self, name: str) -> None:
        """An empty whiteout or opaque marker entry."""
        self.tar.entry(name, tarfile.REGTYPE)
        self.entries += 1


def _list_xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:
        return []


def _xattrs(path: str, names: list[str] | None = None) -> dict[str, bytes]:
    if names is None:
        names = _list_xattrs(path)
    out: dict[str, bytes] = {}
    for name in sorted(names):
        if name.startswith(_OVERLAY_XATTR):
            continue
        try:
            out[name] = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
    return out


def _sorted_names(path: str) -> list[str]:
    return sorted(os.listdir(path), key=os.fsencode)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _is_opaque(path: str, names: list[str]) -> bool:
    if "trusted.overlay.opaque" not in names:
        return False
    try:
        return os.getxattr(path, "trusted.overlay.opaque", follow_symlinks=False) == b"y"
    except OSError:
        return False


def _walk_upper(layer: _LayerWriter, top: str) -> None:
    """Every entry of an overlay upper directory, depth first (iterative: no depth limit)."""
    stack: list[tuple[str, str, Iterator[str]]] = [(top, "", iter(_sorted_names(top)))]
    while stack:
        directory, rel, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        path = os.path.join(directory, name)
        entry = _join(rel, name)
        st = os.lstat(path)
        if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
            layer.marker(_join(rel, WHITEOUT_PREFIX + name))
            continue
        names_ = _list_xattrs(path)
        for attr in ("trusted.overlay.redirect", "trusted.overlay.metacopy"):
            if attr in names_:
                raise SnapshotError(
                    f"{entry}: overlay {attr.rsplit('.', 1)[1]} in the upper directory: this"
                    " diff needs redirect_dir and metacopy off (overlay module parameters)"
                )
        layer.add(path, entry, st, names_)
        if stat.S_ISDIR(st.st_mode):
            if _is_opaque(path, names_):
                layer.marker(_join(entry, OPAQUE_MARKER))
            stack.append((path, entry, iter(_sorted_names(path))))


class _Frame(NamedTuple):
    lower: str | None  # None: everything below is new
    upper: str
    rel: str
    lower_names: set[str]
    upper_names: set[str]
    names: Iterator[str]


def _frame(lower: str | None, upper: str, rel: str) -> _Frame:
    lower_names = set(os.listdir(lower)) if lower is not None else set()
    upper_names = set(os.listdir(upper))
    names = iter(sorted(lower_names | upper_names, key=os.fsencode))
    return _Frame(lower, upper, rel, lower_names, upper_names, names)


def _compare(layer: _LayerWriter, lower: str | None, upper: str) -> None:
    """The changes from tree ``lower`` to tree ``upper``, depth first (iterative)."""
    stack = [_frame(lower, upper, "")]
    while stack:
        frame = stack[-1]
        name = next(frame.names, None)
        if name is None:
            stack.pop()
            continue
        entry = _join(frame.rel, name)
        if name not in frame.upper_names:
            layer.marker(_join(frame.rel, WHITEOUT_PREFIX + name))
            continue
        upath = os.path.join(frame.upper, name)
        ust = os.lstat(upath)
        udir = stat.S_ISDIR(ust.st_mode)
        if frame.lower is None or name not in frame.lower_names:
            layer.add(upath, entry, ust)
            if udir:
                stack.append(_frame(None, upath, entry))
            continue
        lpath = os.path.join(frame.lower, name)
        lst = os.lstat(lpath)
        if udir and stat.S_ISDIR(lst.st_mode):
            if _changed(lpath, lst, upath, ust):
                layer.add(upath, entry, ust)
            stack.append(_frame(lpath, upath, entry))
        elif udir:
            layer.add(upath, entry, ust)  # a directory where a file was: all of it is new
            stack.append(_frame(None, upath, entry))
        elif _changed(lpath, lst, upath, ust):
            layer.add(upath, entry, ust)


def _changed(lpath: str, lst: os.stat_result, upath: str, ust: os.stat_result) -> bool:
    """Does the upper entry differ from the lower one (containerd's ``sameFile``, inverted)?"""
    if (
        stat.S_IFMT(lst.st_mode) != stat.S_IFMT(ust.st_mode)
        or lst.st_mode != ust.st_mode
        or lst.st_uid != ust.st_uid
        or lst.st_gid != ust.st_gid
    ):
        return True
    if (stat.S_ISCHR(ust.st_mode) or stat.S_ISBLK(ust.st_mode)) and lst.st_rdev != ust.st_rdev:
        return True
    if stat.S_ISLNK(ust.st_mode) and os.readlink(lpath) != os.readlink(upath):
        return True
    if not stat.S_ISDIR(ust.st_mode) and lst.st_size != ust.st_size:
        return True
    if _xattrs(lpath) != _xattrs(upath):
        return True
    if lst.st_mtime_ns != ust.st_mtime_ns:
        return True
    if stat.S_ISREG(ust.st_mode) and ust.st_mtime_ns % 1_000_000_000 == 0:
        # Whole-second timestamps (a tar's): equal times prove nothing.
        return not filecmp.cmp(lpath, upath, shallow=False)
    return False
