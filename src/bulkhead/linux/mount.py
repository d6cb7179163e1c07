"""Mounting: mount(2), umount2(2), pivot_root(2), the new mount API and option parsing.

Vocabulary
----------
*mount*
    Attaching a filesystem (or a view of one) at a *mount point*, a
    directory or file of an already visible filesystem. The kernel keeps one
    *mount table* per mount namespace (``/proc/self/mountinfo`` shows it).
*bind mount* (``MS_BIND``)
    Making an existing file or directory visible at a second place. With
    ``MS_REC`` (``rbind``) the mounts below the source come along too.
*remount* (``MS_REMOUNT``)
    Changing the flags of an existing mount. ``MS_BIND|MS_REMOUNT`` changes
    only the per-mount flags (read-only, nosuid, nodev, noexec, atime) of one
    mount and leaves the filesystem (the *superblock*) alone; that is how a
    bind mount is made read-only.
*propagation*
    Whether mount events under a mount are passed to its peers: ``shared``
    (both ways), ``slave`` (from the master only), ``private`` (never) and
    ``unbindable`` (private, and may not be bind-mounted). A propagation
    change is its own ``mount("", target, NULL, MS_<TYPE>[|MS_REC])`` call.
*locked flags*
    Mounts a user namespace inherited from a more privileged one keep their
    ``ro``/``nodev``/``nosuid``/``noexec``/atime flags locked: a remount that
    would clear one of them fails with ``EPERM``. Remounts therefore carry the
    mount's current locked flags along (:func:`mount_flags_of`).
*mount attributes*
    The new mount API's per-mount flags (``MOUNT_ATTR_*``), set or cleared on a
    whole tree at once with :func:`mount_setattr` and ``AT_RECURSIVE``. The
    OCI options ``rro``, ``rnosuid`` ... map to them.
*idmapped mount*
    A mount whose file owners are translated through a user namespace's id
    mappings (``MOUNT_ATTR_IDMAP``): made on a detached copy of a tree
    (:func:`open_tree` with ``OPEN_TREE_CLONE``) and then attached with
    :func:`move_mount`.
*pivot_root*
    Swapping the calling mount namespace's root mount for another one; the
    old root stays reachable until unmounted (see ``runtime/rootfs.py`` for
    the ``pivot_root(".", ".")`` trick).

OCI mount options
-----------------
:func:`parse_mount_options` turns a runtime-spec ``mounts[].options`` list
into :class:`MountOptions` with runc's table: words that name an ``MS_*`` flag
set or clear it, propagation words are collected in order, ``r*`` words become
recursive mount attributes, ``idmap``/``ridmap`` ask for an idmapped mount,
``tmpcopyup`` asks to copy the directory's contents into a new tmpfs, and
every other word is filesystem-specific *data* (``mode=755``, ``size=64m``)
passed to mount(2) joined with commas.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import NamedTuple

from bulkhead.linux.libc import LIBC, check, syscall

# --------------------------------------------------------------------------- mount(2) flags

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_SYNCHRONOUS = 0x10
MS_REMOUNT = 0x20
MS_MANDLOCK = 0x40
MS_DIRSYNC = 0x80
MS_NOSYMFOLLOW = 0x100
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_SILENT = 0x8000
MS_POSIXACL = 0x10000
MS_UNBINDABLE = 0x20000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000
MS_SHARED = 0x100000
MS_RELATIME = 0x200000
MS_KERNMOUNT = 0x400000
MS_I_VERSION = 0x800000
MS_STRICTATIME = 0x1000000
MS_LAZYTIME = 0x2000000

#: the propagation types; exactly one may be given per mount(2) call
MS_PROPAGATION = MS_SHARED | MS_SLAVE | MS_PRIVATE | MS_UNBINDABLE
#: the mutually exclusive atime modes
MS_ATIME_MODES = MS_NOATIME | MS_RELATIME | MS_STRICTATIME
#: every atime-related flag
MS_ATIME_FLAGS = MS_ATIME_MODES | MS_NODIRATIME
#: flags the kernel locks on mounts inherited into a less privileged user namespace
MS_LOCK_FLAGS = MS_RDONLY | MS_NODEV | MS_NOEXEC | MS_NOSUID | MS_ATIME_FLAGS

# --------------------------------------------------------------------------- umount2(2) flags

MNT_FORCE = 0x1
MNT_DETACH = 0x2
MNT_EXPIRE = 0x4
UMOUNT_NOFOLLOW = 0x8

# --------------------------------------------------------------------------- new mount API

MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

OPEN_TREE_CLONE = 0x1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC

MOVE_MOUNT_F_SYMLINKS = 0x1
MOVE_MOUNT_F_AUTOMOUNTS = 0x2
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_SYMLINKS = 0x10
MOVE_MOUNT_T_AUTOMOUNTS = 0x20
MOVE_MOUNT_T_EMPTY_PATH = 0x40

# statvfs(3) f_flag bits (<sys/statvfs.h>, <linux/statfs.h>)
ST_RDONLY = 0x1
ST_NOSUID = 0x2
ST_NODEV = 0x4
ST_NOEXEC = 0x8
ST_SYNCHRONOUS = 0x10
ST_MANDLOCK = 0x40
ST_NOATIME = 0x400
ST_NODIRATIME = 0x800
ST_RELATIME = 0x1000
ST_NOSYMFOLLOW = 0x2000

# --------------------------------------------------------------------------- the calls

LIBC.mount.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.c_ulong,
    ctypes.c_char_p,
]
LIBC.mount.restype = ctypes.c_int
LIBC.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
LIBC.umount2.restype = ctypes.c_int

StrPath = str | bytes | os.PathLike[str]


def _b(value: StrPath | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(
    source: StrPath | None,
    target: StrPath,
    fstype: str | None = None,
    flags: int = 0,
    data: str | None = None,
) -> None:
    """mount(2): attach ``source`` (of type ``fstype``) at ``target`` with ``flags``.

    ``data`` is the filesystem-specific option string (``"mode=755,size=64m"``);
    empty strings are passed as NULL. Raises :class:`OSError` naming ``target``.
    """
    result = LIBC.mount(
        _b(source) if source else None,
        _b(target),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    check(result, "mount", os.fspath(target))


def umount2(target: StrPath, flags: int = 0) -> None:
    """umount2(2): detach the mount at ``target`` (``MNT_DETACH`` = lazily)."""
    path = os.fspath(target)
    check(LIBC.umount2(_b(path), flags), "umount2", path)


def pivot_root(new_root: StrPath, put_old: StrPath) -> None:
    """pivot_root(2): make ``new_root`` the root mount and move the old one to ``put_old``."""
    new = os.fsencode(new_root)
    old = os.fsencode(put_old)
    try:
        syscall("pivot_root", new, old)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fsdecode(new)) from None


class MountAttr(ctypes.Structure):
    """``struct mount_attr`` of mount_setattr(2) (``MOUNT_ATTR_SIZE_VER0`` = 32 bytes)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def mount_setattr(
    path: StrPath,
    attr_set: int = 0,
    attr_clr: int = 0,
    *,
    propagation: int = 0,
    userns_fd: int | None = None,
    recursive: bool = False,
    dirfd: int = AT_FDCWD,
    flags: int = 0,
) -> None:
    """mount_setattr(2): set ``attr_set`` and clear ``attr_clr`` on the mount at ``path``.

    With ``recursive`` the change applies to every mount below too
    (``AT_RECURSIVE``). ``userns_fd`` with ``MOUNT_ATTR_IDMAP`` in
    ``attr_set`` makes the (detached) mount idmapped through that user
    namespace. Pass ``path=""``, ``dirfd=fd`` and ``flags=AT_EMPTY_PATH`` to
    act on a mount fd from :func:`open_tree`.
    """
    attr = MountAttr(attr_set, attr_clr, propagation, userns_fd if userns_fd is not None else 0)
    if recursive:
        flags |= AT_RECURSIVE
    p = os.fsencode(path)
    try:
        syscall("mount_setattr", dirfd, p, flags, ctypes.byref(attr), ctypes.sizeof(attr))
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fsdecode(p) or f"fd {dirfd}") from None


def open_tree(path: StrPath, flags: int = 0, *, dirfd: int = AT_FDCWD) -> int:
    """open_tree(2): an fd for the mount at ``path``; ``OPEN_TREE_CLONE`` makes a detached copy.

    ``OPEN_TREE_CLOEXEC`` is always added. With ``AT_RECURSIVE`` the copy
    includes the mounts below ``path`` (an ``rbind``).
    """
    p = os.fsencode(path)
    try:
        return syscall("open_tree", dirfd, p, flags | OPEN_TREE_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fsdecode(p)) from None


def move_mount(
    from_fd: int,
    to_path: StrPath,
    *,
    from_path: StrPath = "",
    to_dirfd: int = AT_FDCWD,
    flags: int = MOVE_MOUNT_F_EMPTY_PATH,
) -> None:
    """move_mount(2): attach the mount ``from_fd`` refers to at ``to_path``."""
    to = os.fsencode(to_path)
    try:
        syscall("move_mount", from_fd, os.fsencode(from_path), to_dirfd, to, flags)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, os.fsdecode(to)) from None


def make_propagation(target: StrPath, flags: int) -> None:
    """Change the propagation of the mount at ``target`` (``MS_SLAVE|MS_REC`` ...)."""
    mount(None, target, None, flags, None)


def statvfs_to_mount_flags(f_flag: int) -> int:
    """The ``MS_*`` flags a mount has, from statvfs(3)'s ``f_flag``.

    ``MS_STRICTATIME`` is not stored by the kernel: a mount with none of the
    other atime modes is a strictatime mount.
    """
    flags = 0
    for st, ms in (
        (ST_RDONLY, MS_RDONLY),
        (ST_NOSUID, MS_NOSUID),
        (ST_NODEV, MS_NODEV),
        (ST_NOEXEC, MS_NOEXEC),
        (ST_MANDLOCK, MS_MANDLOCK),
        (ST_SYNCHRONOUS, MS_SYNCHRONOUS),
        (ST_NOATIME, MS_NOATIME),
        (ST_NODIRATIME, MS_NODIRATIME),
        (ST_RELATIME, MS_RELATIME),
        (ST_NOSYMFOLLOW, MS_NOSYMFOLLOW),
    ):
        if f_flag & st:
            flags |= ms
    if not flags & MS_ATIME_MODES:
        flags |= MS_STRICTATIME
    return flags


#: statfs(2) ``f_type`` values ("magic numbers") of filesystems we look for
PROC_SUPER_MAGIC = 0x9FA0
SYSFS_MAGIC = 0x62656572
TMPFS_MAGIC = 0x01021994
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270

LIBC.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
LIBC.statfs.restype = ctypes.c_int


def filesystem_type(path: StrPath) -> int:
    """The filesystem magic number (statfs(2) ``f_type``) of the filesystem holding ``path``.

    :func:`os.statvfs` does not report it. ``f_type`` is the first member of
    ``struct statfs`` (a ``long``) on the architectures we support.
    """
    buf = ctypes.create_string_buffer(256)
    p = os.fspath(path)
    check(LIBC.statfs(os.fsencode(p), buf), "statfs", p)
    return int.from_bytes(buf.raw[: ctypes.sizeof(ctypes.c_long)], sys.byteorder)


def mount_flags_of(path: StrPath) -> int:
    """The ``MS_*`` per-mount flags of the mount ``path`` is on (from statvfs)."""
    return statvfs_to_mount_flags(os.statvfs(path).f_flag)


# --------------------------------------------------------------------------- OCI options

#: option word -> (clears the flag?, MS_* flag)   (runc's mountFlags table)
MOUNT_FLAGS: dict[str, tuple[bool, int]] = {
    "async": (True, MS_SYNCHRONOUS),
    "atime": (True, MS_NOATIME),
    "bind": (False, MS_BIND),
    "defaults": (False, 0),
    "dev": (True, MS_NODEV),
    "diratime": (True, MS_NODIRATIME),
    "dirsync": (False, MS_DIRSYNC),
    "exec": (True, MS_NOEXEC),
    "iversion": (False, MS_I_VERSION),
    "lazytime": (False, MS_LAZYTIME),
    "loud": (True, MS_SILENT),
    "mand": (False, MS_MANDLOCK),
    "noatime": (False, MS_NOATIME),
    "nodev": (False, MS_NODEV),
    "nodiratime": (False, MS_NODIRATIME),
    "noexec": (False, MS_NOEXEC),
    "noiversion": (True, MS_I_VERSION),
    "nolazytime": (True, MS_LAZYTIME),
    "nomand": (True, MS_MANDLOCK),
    "norelatime": (True, MS_RELATIME),
    "nostrictatime": (True, MS_STRICTATIME),
    "nosuid": (False, MS_NOSUID),
    "nosymfollow": (False, MS_NOSYMFOLLOW),
    "rbind": (False, MS_BIND | MS_REC),
    "relatime": (False, MS_RELATIME),
    "remount": (False, MS_REMOUNT),
    "ro": (False, MS_RDONLY),
    "rw": (True, MS_RDONLY),
    "silent": (False, MS_SILENT),
    "strictatime": (False, MS_STRICTATIME),
    "suid": (True, MS_NOSUID),
    "sync": (False, MS_SYNCHRONOUS),
    "symfollow": (True, MS_NOSYMFOLLOW),
}

#: option word -> propagation flags (also the values of ``linux.rootfsPropagation``)
PROPAGATION_FLAGS: dict[str, int] = {
    "rprivate": MS_PRIVATE | MS_REC,
    "private": MS_PRIVATE,
    "rslave": MS_SLAVE | MS_REC,
    "slave": MS_SLAVE,
    "rshared": MS_SHARED | MS_REC,
    "shared": MS_SHARED,
    "runbindable": MS_UNBINDABLE | MS_REC,
    "unbindable": MS_UNBINDABLE,
}

#: option word -> (clears the attribute?, MOUNT_ATTR_*)   (runc's recAttrFlags table)
RECURSIVE_ATTRS: dict[str, tuple[bool, int]] = {
    "rro": (False, MOUNT_ATTR_RDONLY),
    "rrw": (True, MOUNT_ATTR_RDONLY),
    "rnosuid": (False, MOUNT_ATTR_NOSUID),
    "rsuid": (True, MOUNT_ATTR_NOSUID),
    "rnodev": (False, MOUNT_ATTR_NODEV),
    "rdev": (True, MOUNT_ATTR_NODEV),
    "rnoexec": (False, MOUNT_ATTR_NOEXEC),
    "rexec": (True, MOUNT_ATTR_NOEXEC),
    "rnodiratime": (False, MOUNT_ATTR_NODIRATIME),
    "rdiratime": (True, MOUNT_ATTR_NODIRATIME),
    "rrelatime": (False, MOUNT_ATTR_RELATIME),
    "rnorelatime": (True, MOUNT_ATTR_RELATIME),
    "rnoatime": (False, MOUNT_ATTR_NOATIME),
    "ratime": (True, MOUNT_ATTR_NOATIME),
    "rstrictatime": (False, MOUNT_ATTR_STRICTATIME),
    "rnostrictatime": (True, MOUNT_ATTR_STRICTATIME),
    "rnosymfollow": (False, MOUNT_ATTR_NOSYMFOLLOW),
    "rsymfollow": (True, MOUNT_ATTR_NOSYMFOLLOW),
}


class MountOptions(NamedTuple):
    """A runtime-spec ``options`` list, sorted into what mount(2) and friends take.

    ``flags``        ``MS_*`` flags to pass (``MS_BIND``, ``MS_RDONLY`` ...)
    ``cleared``      ``MS_*`` flags an option explicitly asked to be off (``rw``, ``suid`` ...)
    ``propagation``  propagation changes to apply after mounting, in order
    ``attr_set``     ``MOUNT_ATTR_*`` to set recursively (``rro`` ...)
    ``attr_clr``     ``MOUNT_ATTR_*`` to clear recursively (``rrw`` ...)
    ``idmap``        ``"idmap"``, ``"ridmap"`` (recursive) or ``None``
    ``tmpcopyup``    copy the destination's contents into the new tmpfs
    ``data``         the remaining words, comma-joined, for the filesystem
    """

    flags: int = 0
    cleared: int = 0
    propagation: tuple[int, ...] = ()
    attr_set: int = 0
    attr_clr: int = 0
    idmap: str | None = None
    tmpcopyup: bool = False
    data: str = ""

    @property
    def is_bind(self) -> bool:
        return bool(self.flags & MS_BIND)

    @property
    def recursive(self) -> bool:
        return bool(self.flags & MS_REC)


def parse_mount_options(options: list[str] | None) -> MountOptions:
    """Sort runtime-spec mount ``options`` the way runc does.

    A later word wins over an earlier one that contradicts it (``ro`` then
    ``rw`` leaves the mount writable). Setting an atime mode recursively
    (``rnoatime`` ...) also clears ``MOUNT_ATTR__ATIME``, as mount_setattr(2)
    requires. Unlike runc, ``defaults`` is dropped instead of being passed to
    the filesystem as data (where tmpfs and others would refuse it).
    """
    flags = cleared = attr_set = attr_clr = 0
    propagation: list[int] = []
    data: list[str] = []
    idmap: str | None = None
    tmpcopyup = False
    for word in options or []:
        flag_entry = MOUNT_FLAGS.get(word)
        if flag_entry is not None:
            clear, flag = flag_entry
            if clear:
                flags &= ~flag
                cleared |= flag
            else:
                flags |= flag
                cleared &= ~flag
            continue
        prop = PROPAGATION_FLAGS.get(word)
        if prop is not None:
            propagation.append(prop)
            continue
        attr_entry = RECURSIVE_ATTRS.get(word)
        if attr_entry is not None:
            clear, attr = attr_entry
            if clear:
                attr_clr |= attr
                attr_set &= ~attr
            else:
                attr_set |= attr
                attr_clr &= ~attr
                if attr & MOUNT_ATTR__ATIME == attr:
                    attr_clr |= MOUNT_ATTR__ATIME
            continue
        if word in ("idmap", "ridmap"):
            idmap = word
        elif word == "tmpcopyup":
            tmpcopyup = True
        else:
            data.append(word)
    return MountOptions(
        flags=flags,
        cleared=cleared,
        propagation=tuple(propagation),
        attr_set=attr_set,
        attr_clr=attr_clr,
        idmap=idmap,
        tmpcopyup=tmpcopyup,
        data=",".join(data),
    )
