"""Linux namespaces: creating them (unshare), joining them (setns), id maps.

A *namespace* wraps a global resource so the processes inside see their own
instance of it. The runtime-spec names eight kinds; each has a CLONE_* flag
and a file under ``/proc/<pid>/ns/`` that can be opened to join it:

=========  ===============  ==============  ==================================
spec name  flag             /proc/pid/ns/   isolates
=========  ===============  ==============  ==================================
mount      CLONE_NEWNS      mnt             the mount table
pid        CLONE_NEWPID     pid             process ids (children only)
network    CLONE_NEWNET     net             interfaces, routes, firewall
ipc        CLONE_NEWIPC     ipc             SysV IPC, POSIX message queues
uts        CLONE_NEWUTS     uts             hostname and domain name
user       CLONE_NEWUSER    user            uids, gids and capabilities
cgroup     CLONE_NEWCGROUP  cgroup          the view of /proc/self/cgroup
time       CLONE_NEWTIME    time            CLOCK_MONOTONIC/BOOTTIME offsets
=========  ===============  ==============  ==================================

``pid`` and ``time`` apply to the *children* of the caller, never to the
caller itself: that is why the runtime forks once more after unsharing them.
"""

from __future__ import annotations

import os

from bulkhead.linux.libc import syscall

CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

#: runtime-spec namespace type -> (clone flag, name under /proc/<pid>/ns)
NAMESPACES: dict[str, tuple[int, str]] = {
    "user": (CLONE_NEWUSER, "user"),
    "mount": (CLONE_NEWNS, "mnt"),
    "pid": (CLONE_NEWPID, "pid"),
    "network": (CLONE_NEWNET, "net"),
    "ipc": (CLONE_NEWIPC, "ipc"),
    "uts": (CLONE_NEWUTS, "uts"),
    "cgroup": (CLONE_NEWCGROUP, "cgroup"),
    "time": (CLONE_NEWTIME, "time"),
}

#: The order in which namespaces are joined by path: the user namespace first
#: (it grants the capabilities needed to join the others), mount last among
#: the ones that change what paths mean.
JOIN_ORDER = ("user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount")


def unshare(flags: int) -> None:
    """Move the calling process into new namespaces of the kinds in ``flags``."""
    syscall("unshare", flags)


def setns(fd: int, nstype: int = 0) -> None:
    """Join the namespace that ``fd`` (an open /proc/<pid>/ns/* file) refers to."""
    syscall("setns", fd, nstype)


def ns_path(pid: int | str, kind: str) -> str:
    """The /proc path of process ``pid``'s namespace of runtime-spec kind ``kind``."""
    return f"/proc/{pid}/ns/{NAMESPACES[kind][1]}"


def ns_inode(path: str) -> int:
    """The inode number identifying the namespace at ``path`` (compare to tell two apart)."""
    return os.stat(path).st_ino


def format_id_map(mappings: list[tuple[int, int, int]]) -> bytes:
    """The contents of a uid_map/gid_map file: ``container host size`` per line."""
    return b"".join(b"%d %d %d\n" % m for m in mappings)


def write_id_maps(
    pid: int,
    uid_map: list[tuple[int, int, int]],
    gid_map: list[tuple[int, int, int]],
    *,
    deny_setgroups: bool = False,
) -> None:
    """Write the uid and gid maps of process ``pid``'s (new) user namespace.

    Each map may be written once, in one ``write``. An unprivileged writer
    must deny setgroups(2) before writing gid_map; root need not.
    """
    if deny_setgroups:
        _write_once(f"/proc/{pid}/setgroups", b"deny")
    if uid_map:
        _write_once(f"/proc/{pid}/uid_map", format_id_map(uid_map))
    if gid_map:
        _write_once(f"/proc/{pid}/gid_map", format_id_map(gid_map))


def format_time_offsets(offsets: dict[str, tuple[int, int]]) -> bytes:
    """The contents of /proc/self/timens_offsets: ``clock secs nanosecs`` per line."""
    return b"".join(
        b"%s %d %d\n" % (clock.encode(), secs, nanos) for clock, (secs, nanos) in offsets.items()
    )


def write_time_offsets(offsets: dict[str, tuple[int, int]]) -> None:
    """Set the clock offsets of the time namespace just unshared, before any child is born."""
    if offsets:
        _write_once("/proc/self/timens_offsets", format_time_offsets(offsets))


def _write_once(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
