"""Performing a snapshotter's mounts: :func:`mount_all`, :func:`unmount_all`, :func:`mounted`.

Snapshotters describe mounts as data (:class:`bulkhead.snapshots.Mount`);
callers that want the tree visible somewhere call :func:`mount_all`. Bind
mounts are ``mount(2)`` with ``MS_BIND`` plus a remount for ``ro``;
other types are one ``mount(2)``.

Overlay and the one-page limit
------------------------------
mount(2) copies at most one page (4096 bytes, with its NUL) of option text:
with a hundred layers of long paths, ``lowerdir=`` alone is longer. Three
ways of mounting an overlay, tried in this order by ``method="auto"``:

``legacy``
    one mount(2) with the options as written, when they fit in the page;
``fsconfig``
    the new mount API: ``fsopen("overlay")``, one ``fsconfig`` per option
    and one ``lowerdir+`` per layer (Linux 6.8 and later), so no limit but
    overlay's own 500 layers; ``fsmount`` + ``move_mount`` attach it;
``fdpaths``
    mount(2) with every path rewritten relative to an ``O_PATH`` descriptor
    of the paths' common directory (``/proc/self/fd/N/12/fs``), which
    overlay resolves like any path: ~24 bytes a layer instead of the full
    path (containerd gets the same effect with relative paths and a chdir).

If none fits, :class:`bulkhead.errors.SnapshotError` says so.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import Literal

from bulkhead.errors import SnapshotError
from bulkhead.linux import mount as lm
from bulkhead.linux.libc import syscall
from bulkhead.snapshots import Mount

OverlayMethod = Literal["auto", "legacy", "fsconfig", "fdpaths"]

#: the most option text mount(2) takes (one page, less the terminating NUL)
MAX_OPTIONS = os.sysconf("SC_PAGESIZE") - 1

FSOPEN_CLOEXEC = 0x1
FSMOUNT_CLOEXEC = 0x1
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_CMD_CREATE = 6

#: MS_* flag -> MOUNT_ATTR_* for fsmount(2)
_ATTRS = {
    lm.MS_RDONLY: lm.MOUNT_ATTR_RDONLY,
    lm.MS_NOSUID: lm.MOUNT_ATTR_NOSUID,
    lm.MS_NODEV: lm.MOUNT_ATTR_NODEV,
    lm.MS_NOEXEC: lm.MOUNT_ATTR_NOEXEC,
    lm.MS_NOATIME: lm.MOUNT_ATTR_NOATIME,
    lm.MS_STRICTATIME: lm.MOUNT_ATTR_STRICTATIME,
    lm.MS_NODIRATIME: lm.MOUNT_ATTR_NODIRATIME,
}

_PATH_KEYS = ("lowerdir", "upperdir", "workdir")


def mount_all(mounts: list[Mount], target: str, *, overlay_method: OverlayMethod = "auto") -> None:
    """Mount ``mounts`` in order at ``target``; on failure, undo the ones already made."""
    done = 0
    try:
        for m in mounts:
            where = os.path.join(target, m.target.lstrip("/")) if m.target else target
            mount_one(m, where, overlay_method=overlay_method)
            done += 1
    except BaseException:
        for m in reversed(mounts[:done]):
            where = os.path.join(target, m.target.lstrip("/")) if m.target else target
            with contextlib.suppress(OSError):
                lm.umount2(where, lm.MNT_DETACH)
        raise


def unmount_all(target: str) -> None:
    """Unmount every mount stacked at ``target`` (lazily, ``MNT_DETACH``, when busy).

    A ``target`` that is not (or no longer) a mount point is fine.
    """
    for _ in range(10000):
        try:
            lm.umount2(target, lm.UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOENT):
                return
            if exc.errno != errno.EBUSY:
                raise
            lm.umount2(target, lm.MNT_DETACH | lm.UMOUNT_NOFOLLOW)
    raise SnapshotError(f"{target}: still mounted after 10000 unmounts")


@contextlib.contextmanager
def mounted(
    mounts: list[Mount], target: str | None = None, *, overlay_method: OverlayMethod = "auto"
) -> Iterator[str]:
    """Mount ``mounts`` at ``target`` (default: a new temporary directory) for a ``with`` block."""
    made = None
    if target is None:
        target = made = tempfile.mkdtemp(prefix="bulkhead-mount-")
    try:
        mount_all(mounts, target, overlay_method=overlay_method)
        try:
            yield target
        finally:
            unmount_all(target)
    finally:
        if made is not None:
            with contextlib.suppress(OSError):
                os.rmdir(made)


def mount_one(m: Mount, target: str, *, overlay_method: OverlayMethod = "auto") -> None:
    """Perform one :class:`Mount` at ``target``."""
    opts = lm.parse_mount_options(m.options)
    if m.type == "bind" or opts.is_bind:
        _bind(m.source, target, opts)
    elif m.type == "overlay":
        mount_overlay(m.options, target, method=overlay_method)
    else:
        lm.mount(m.source, target, m.type, opts.flags, opts.data or None)
        for prop in opts.propagation:
            lm.make_propagation(target, prop)


def _bind(source: str, target: str, opts: lm.MountOptions) -> None:
    flags = opts.flags | lm.MS_BIND
    lm.mount(source, target, None, flags & (lm.MS_BIND | lm.MS_REC), None)
    rest = flags & ~(lm.MS_BIND | lm.MS_REC | lm.MS_REMOUNT | lm.MS_PROPAGATION)
    if rest:
        try:
            lm.mount(None, target, None, lm.MS_BIND | lm.MS_REMOUNT | rest, None)
        except BaseException:
            with contextlib.suppress(OSError):
                lm.umount2(target, lm.MNT_DETACH)
            raise
    for prop in opts.propagation:
        lm.make_propagation(target, prop)


# --------------------------------------------------------------------------- overlay


def split_overlay_options(options: list[str]) -> tuple[int, list[tuple[str, str | None]]]:
    """``(MS_* flags, [(key, value or None), ...])`` of overlay mount options."""
    flags = 0
    words: list[tuple[str, str | None]] = []
    for word in options:
        entry = lm.MOUNT_FLAGS.get(word)
        if entry is not None:
            clear, flag = entry
            flags = flags & ~flag if clear else flags | flag
            continue
        key, sep, value = word.partition("=")
        words.append((key, value if sep else None))
    return flags, words


def overlay_data(words: Sequence[tuple[str, str | None]]) -> str:
    """The mount(2) option text of ``words``."""
    return ",".join(k if v is None else f"{k}={v}" for k, v in words)


def shorten_paths(
    words: Sequence[tuple[str, str | None]], fd: int, common: str
) -> list[tuple[str, str | None]]:
    """``words`` with ``common`` replaced by ``/proc/self/fd/<fd>`` in every path."""
    prefix = f"/proc/self/fd/{fd}"

    def short(p: str) -> str:
        return prefix + p[len(common) :] if p == common or p.startswith(common + "/") else p

    out: list[tuple[str, str | None]] = []
    for key, value in words:
        if key in _PATH_KEYS and value:
            value = ":".join(short(p) for p in value.split(":"))
        out.append((key, value))
    return out


def common_directory(words: Sequence[tuple[str, str | None]]) -> str | None:
    """The deepest directory containing every path of ``words`` (None if there is none)."""
    paths = [p for key, v in words if key in _PATH_KEYS and v for p in v.split(":")]
    if not paths or not all(os.path.isabs(p) for p in paths):
        return None
    common = os.path.commonpath(paths)
    if common in paths:
        common = os.path.dirname(common)
    return common if common != "/" else None


_lowerdir_plus: bool | None = None


def lowerdir_plus_supported() -> bool:
    """Does this kernel's overlay take ``lowerdir+`` through fsconfig (Linux 6.8+)?"""
    global _lowerdir_plus
    if _lowerdir_plus is None:
        try:
            fd = syscall("fsopen", b"overlay", FSOPEN_CLOEXEC)
        except OSError:
            _lowerdir_plus = False
        else:
            try:
                syscall("fsconfig", fd, FSCONFIG_SET_STRING, b"lowerdir+", b"/", 0)
                _lowerdir_plus = True
            except OSError:
                _lowerdir_plus = False
            finally:
                os.close(fd)
    return _lowerdir_plus


def _fs_messages(fd: int) -> str:
    """The messages the kernel left on an fsopen context (``"e overlay: ..."``)."""
    out = []
    for _ in range(32):
        try:
            out.append(os.read(fd, 4096).decode(errors="replace").strip())
        except OSError:
            break
    return "; ".join(m for m in out if m)


def _mount_fsconfig(flags: int, words: list[tuple[str, str | None]], target: str) -> None:
    fd = syscall("fsopen", b"overlay", FSOPEN_CLOEXEC)
    try:
        try:
            syscall("fsconfig", fd, FSCONFIG_SET_STRING, b"source", b"overlay", 0)
            for key, value in words:
                if value is None:
                    syscall("fsconfig", fd, FSCONFIG_SET_FLAG, key.encode(), None, 0)
                elif key == "lowerdir":
                    for layer in value.split(":"):
                        syscall(
                            "fsconfig", fd, FSCONFIG_SET_STRING, b"lowerdir+", os.fsencode(layer), 0
                        )
                else:
                    syscall(
                        "fsconfig", fd, FSCONFIG_SET_STRING, key.encode(), os.fsencode(value), 0
                    )
            syscall("fsconfig", fd, FSCONFIG_CMD_CREATE, None, None, 0)
        except OSError as exc:
            detail = _fs_messages(fd)
            raise OSError(
                exc.errno, f"overlay: {exc.strerror}{': ' + detail if detail else ''}", target
            ) from None
        attrs = 0
        for ms, attr in _ATTRS.items():
            if flags & ms:
                attrs |= attr
        mfd = syscall("fsmount", fd, FSMOUNT_CLOEXEC, attrs)
    finally:
        os.close(fd)
    try:
        lm.move_mount(mfd, target)
    finally:
        os.close(mfd)


def mount_overlay(options: list[str], target: str, *, method: OverlayMethod = "auto") -> str:
    """Mount an overlay with mount(8)-style ``options`` at ``target``; return the method used."""
    flags, words = split_overlay_options(options)
    data = overlay_data(words)
    if method == "auto":
        if len(data.encode()) <= MAX_OPTIONS:
            method = "legacy"
        elif lowerdir_plus_supported():
            method = "fsconfig"
        else:
            method = "fdpaths"
    if method == "fsconfig":
        _mount_fsconfig(flags, words, target)
        return method
    if method == "legacy":
        _check_length(data, target)
        lm.mount("overlay", target, "overlay", flags, data)
        return method
    common = common_directory(words)
    if common is None:
        raise SnapshotError(f"overlay at {target}: its paths share no directory to shorten them by")
    fd = os.open(common, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        short = overlay_data(shorten_paths(words, fd, common))
        _check_length(short, target)
        lm.mount("overlay", target, "overlay", flags, short)
    finally:
        os.close(fd)
    return method


def _check_length(data: str, target: str) -> None:
    if len(data.encode()) > MAX_OPTIONS:
        raise SnapshotError(
            f"overlay at {target}: {len(data.encode())} bytes of mount options, more than the"
            f" {MAX_OPTIONS} mount(2) takes (too many layers for this kernel, which lacks"
            " overlay's lowerdir+ of Linux 6.8)"
        )
