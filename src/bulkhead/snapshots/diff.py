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

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        self.size += len(data)
        self._out.write(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


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
    with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        layer = _LayerWriter(tar)
        if dirs.overlay:
            _walk_upper(layer, dirs.upper)
        else:
            _compare(layer, dirs.lowers[0] if dirs.lowers else None, dirs.upper)
    return LayerDiff("sha256:" + writer.hash.hexdigest(), writer.size, layer.entries)


class _LayerWriter:
    def __init__(self, tar: tarfile.TarFile) -> None:
        self.tar = tar
        self.entries = 0
        self.links: dict[tuple[int, int], str] = {}

    def add(self, path: str, name: str, st: os.stat_result) -> None:
        """Add the entry at ``path`` (already lstat'ed) as ``name``."""
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.uid, info.gid = st.st_uid, st.st_gid
        info.uname = info.gname = ""
        info.mtime = int(st.st_mtime)
        xattrs = _xattrs(path)
        if xattrs:
            info.pax_headers = {
                "SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()
            }
        mode = st.st_mode
        ident = (st.st_dev, st.st_ino)
        if not stat.S_ISDIR(mode) and st.st_nlink > 1 and ident in self.links:
            info.type = tarfile.LNKTYPE
            info.linkname = self.links[ident]
            self._write(info)
            return
        if stat.S_ISREG(mode):
            info.type = tarfile.REGTYPE
            info.size = st.st_size
            if st.st_nlink > 1:
                self.links[ident] = name
            with open(path, "rb") as f:
                self._write(info, f)
            return
        if stat.S_ISDIR(mode):
            info.type = tarfile.DIRTYPE
        elif stat.S_ISLNK(mode):
            info.type = tarfile.SYMTYPE
            info.linkname = os.readlink(path)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
            info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
        elif stat.S_ISFIFO(mode):
            info.type = tarfile.FIFOTYPE
        else:
            return  # sockets: tar has no type for them (GNU tar skips them too)
        if st.st_nlink > 1 and not stat.S_ISDIR(mode):
            self.links[ident] = name
        self._write(info)

    def marker(self, name: str) -> None:
        """An empty whiteout or opaque marker entry."""
        info = tarfile.TarInfo(name)
        info.mode = 0
        info.uname = info.gname = ""
        info.mtime = 0
        self._write(info)

    def _write(self, info: tarfile.TarInfo, fileobj: BinaryIO | None = None) -> None:
        self.tar.addfile(info, fileobj)
        self.entries += 1


def _xattrs(path: str) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
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


def _is_opaque(path: str) -> bool:
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
        for attr in ("trusted.overlay.redirect", "trusted.overlay.metacopy"):
            try:
                os.getxattr(path, attr, follow_symlinks=False)
            except OSError:
                continue
            raise SnapshotError(
                f"{entry}: overlay {attr.rsplit('.', 1)[1]} in the upper directory: this"
                " diff needs redirect_dir and metacopy off (overlay module parameters)"
            )
        layer.add(path, entry, st)
        if stat.S_ISDIR(st.st_mode):
            if _is_opaque(path):
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
