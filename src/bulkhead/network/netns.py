"""Network namespaces of containers: made, entered, removed.

A container on a bridge network gets its network namespace from the daemon,
not from the runtime: ``<exec_root>/netns/<container id>`` is a *bind mount
of a namespace file* (``/proc/thread-self/ns/net`` of the thread that made
it), which keeps the namespace alive without any process in it; the spec's
``linux.namespaces`` entry ``{"type": "network", "path": ...}`` makes the
runtime join it. Removing it is ``umount`` + ``unlink`` (the namespace dies
with its last user).

Namespaces are per *thread* for ``unshare(CLONE_NEWNET)`` and ``setns``:
:func:`run_in` runs a function in a short-lived dedicated thread that enters
(or makes) the namespace and ends afterwards, so no worker thread of the
daemon is ever left in a container's namespace (Go's LockOSThread does the
same). The daemon has threads and never forks (pyroute2's own netns helpers
fork: they are not used).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from bulkhead.linux import mount as mnt
from bulkhead.linux.namespaces import CLONE_NEWNET, setns, unshare

T = TypeVar("T")

MS_BIND = 0x1000
MNT_DETACH = 2


def run_in(path: str | None, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a dedicated thread inside the namespace at ``path``.

    ``path`` None: inside a new, empty network namespace (unshared by that thread).
    """
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            if path is None:
                unshare(CLONE_NEWNET)
            else:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                try:
                    setns(fd, CLONE_NEWNET)
                finally:
                    os.close(fd)
            result.append(fn())
        except BaseException as exc:  # handed to the caller
            error.append(exc)

    t = threading.Thread(target=body, name="bulkhead-netns")
    t.start()
    t.join()
    if error:
        raise error[0]
    return result[0]


def create(path: Path, *, loopback: bool = True) -> None:
    """Make a new network namespace bound at ``path``, its loopback up (no-op if it exists).

    ``loopback`` False leaves ``lo`` down (the bridge driver brings it up with
    the first endpoint, saving a netlink socket).
    """
    if path.exists() and os.path.ismount(path):
        return
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    path.touch(mode=0o444)

    def bind() -> None:
        mnt.mount("/proc/thread-self/ns/net", path, None, MS_BIND)
        if not loopback:
            return
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="lo")
            if idx:
                ipr.link("set", index=idx[0], state="up")

    try:
        run_in(None, bind)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise


def remove(path: Path) -> None:
    """Unmount and delete a namespace file (fine when it is gone)."""
    with contextlib.suppress(OSError):
        mnt.umount2(path, MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def is_bound(path: Path) -> bool:
    return path.exists() and os.path.ismount(path)
