"""Loading libc once and calling it with errno checking.

``LIBC`` is the process's C library opened with ``use_errno=True`` so that
:func:`check` can read the ``errno`` a failed call left behind and raise the
same :class:`OSError` subclass (``FileNotFoundError``, ``PermissionError``
...) the :mod:`os` module would.
"""

from __future__ import annotations

import ctypes
import os

LIBC = ctypes.CDLL(None, use_errno=True)

MACHINE = os.uname().machine  # what platform.machine() says, without importing it

# System call numbers we call through syscall(2) because glibc 2.36 has no
# wrapper for them (pivot_root, the new mount API) or because we want the raw
# call. Only the architectures we support are listed.
_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {
        "pivot_root": 155,
        "seccomp": 317,
        "setns": 308,
        "unshare": 272,
        "execveat": 322,
        "memfd_create": 319,
        "close_range": 436,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "mount_setattr": 442,
        "ioprio_set": 251,
        "keyctl": 250,
        "personality": 135,
        "sched_setattr": 314,
        "clone3": 435,
        "openat2": 437,
    },
    "aarch64": {
        "pivot_root": 41,
        "seccomp": 277,
        "setns": 268,
        "unshare": 97,
        "execveat": 281,
        "memfd_create": 279,
        "close_range": 436,
        "open_tree": 428,
        "move_mount": 429,
        "fsopen": 430,
        "fsconfig": 431,
        "fsmount": 432,
        "mount_setattr": 442,
        "ioprio_set": 30,
        "keyctl": 219,
        "personality": 92,
        "sched_setattr": 274,
        "clone3": 435,
        "openat2": 437,
    },
}


def syscall_number(name: str) -> int:
    """The number of system call ``name`` on this machine's architecture."""
    try:
        return _SYSCALLS[MACHINE][name]
    except KeyError:
        raise OSError(0, f"system call {name} is not known on {MACHINE}") from None


def check(result: int, what: str, path: str | bytes | None = None) -> int:
    """Return ``result`` unless it is -1; then raise OSError for ``errno``.

    ``what`` names the call ("mount", "pivot_root" ...) and becomes part of
    the message so an error always says which step failed.
    """
    if result == -1:
        err = ctypes.get_errno()
        if path is None:
            raise OSError(err, f"{what}: {os.strerror(err)}")
        return_path = os.fsdecode(path)
        raise OSError(err, f"{what}: {os.strerror(err)}", return_path)
    return result


LIBC.syscall.restype = ctypes.c_long


def syscall(name: str, *args: object) -> int:
    """Call system call ``name`` with ``args`` and return its result (or raise).

    Python ints are passed as C ``long`` (syscall(2) is variadic, so a plain
    int would be truncated to 32 bits); bytes, None and ctypes objects pass
    through unchanged.
    """
    c_args = [ctypes.c_long(a) if isinstance(a, int) else a for a in args]
    return check(LIBC.syscall(ctypes.c_long(syscall_number(name)), *c_args), name)


def fspath(p: str | bytes | os.PathLike[str]) -> bytes:
    """A path as bytes for passing to C."""
    return os.fsencode(p)


# openat2(2) (Linux >= 5.6): how->resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [
        ("flags", ctypes.c_uint64),
        ("mode", ctypes.c_uint64),
        ("resolve", ctypes.c_uint64),
    ]


def openat2(dirfd: int, path: str, flags: int, resolve: int, mode: int = 0) -> int:
    """openat2(2): open ``path`` relative to ``dirfd`` under the ``resolve`` restrictions.

    Raises :class:`OSError` (``ENOSYS`` on kernels before 5.6, ``EAGAIN`` when
    a concurrent rename made a scoped lookup retry, ``EXDEV``/``ELOOP`` when a
    restriction was hit). A path containing NUL raises :class:`ValueError`.
    """
    raw = os.fsencode(path)
    if b"\0" in raw:
        raise ValueError("embedded null byte")
    how = _OpenHow(flags, mode, resolve)
    return check(
        LIBC.syscall(
            ctypes.c_long(syscall_number("openat2")),
            ctypes.c_long(dirfd),
            ctypes.c_char_p(raw),
            ctypes.byref(how),
            ctypes.c_size_t(ctypes.sizeof(how)),
        ),
        "openat2",
        path,
    )
