"""Freezing: stopping every process of a cgroup in place, and letting them go again.

``pause``/``resume`` of a container. A frozen task is not stopped by a
signal (it cannot catch or see one) and makes no progress at all until
thawed; it keeps its memory, files and sockets.

v1 (``freezer`` hierarchy): write ``FROZEN`` or ``THAWED`` to
``freezer.state``. Freezing takes a moment: the file reads ``FREEZING``
until every task has stopped, so :func:`freeze_v1` keeps reading (each read
also nudges the kernel to re-check) until it says ``FROZEN``. On v1 a
frozen task does not die of SIGKILL until thawed.

v2 (``cgroup.freeze`` in every cgroup): write ``1`` or ``0``; the kernel
reports completion as ``frozen 1`` in ``cgroup.events``, and that file
wakes ``poll(2)`` (POLLPRI) when it changes. A v2-frozen task does die of
SIGKILL.
"""

from __future__ import annotations

import os
import select
import time
from typing import Literal

from bulkhead.cgroups import fs
from bulkhead.errors import CgroupError

FreezerState = Literal["THAWED", "FROZEN"]

#: How long a freeze may take before bulkhead gives up and thaws again.
TIMEOUT = 10.0


def freeze_v1(d: str, timeout: float = TIMEOUT) -> None:
    """Freeze the v1 freezer cgroup ``d`` and wait until every task is frozen."""
    path = f"{d}/freezer.state"
    deadline = time.monotonic() + timeout
    delay = 0.0001
    try:
        fs.write(path, "FROZEN")
        while True:
            state = fs.read(path).strip()
            if state == "FROZEN":
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.01)
            fs.write(path, "FROZEN")  # re-arm: tasks that were forking get another chance
    except OSError as exc:
        raise CgroupError(f"cannot freeze {d}: {exc.strerror}") from exc
    thaw_v1(d)
    raise CgroupError(f"cannot freeze {d}: tasks still freezing after {timeout:g}s (thawed again)")


def thaw_v1(d: str) -> None:
    """Let every task of the v1 freezer cgroup ``d`` run again."""
    try:
        fs.write(f"{d}/freezer.state", "THAWED")
    except OSError as exc:
        raise CgroupError(f"cannot thaw {d}: {exc.strerror}") from exc


def state_v1(d: str) -> FreezerState:
    """``FROZEN`` while the v1 cgroup ``d`` is frozen or freezing, else ``THAWED``."""
    try:
        state = fs.read(f"{d}/freezer.state").strip()
    except OSError as exc:
        raise CgroupError(f"cannot read the freezer state of {d}: {exc.strerror}") from exc
    return "THAWED" if state == "THAWED" else "FROZEN"


def _frozen_v2(fd: int) -> bool:
    os.lseek(fd, 0, os.SEEK_SET)
    return "frozen 1" in os.read(fd, 4096).decode()


def freeze_v2(d: str, timeout: float = TIMEOUT) -> None:
    """Freeze the v2 cgroup ``d``; wait for ``frozen 1`` in ``cgroup.events``."""
    try:
        fd = os.open(f"{d}/cgroup.events", os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise CgroupError(f"cannot freeze {d}: {exc.strerror}") from exc
    try:
        fs.write(f"{d}/cgroup.freeze", "1")
        poller = select.poll()
        poller.register(fd, select.POLLPRI)
        deadline = time.monotonic() + timeout
        while not _frozen_v2(fd):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            poller.poll(min(left, 0.1) * 1000)  # woken by the change; re-check now and then
        else:
            return
    except OSError as exc:
        raise CgroupError(f"cannot freeze {d}: {exc.strerror}") from exc
    finally:
        os.close(fd)
    thaw_v2(d)
    raise CgroupError(f"cannot freeze {d}: not frozen after {timeout:g}s (thawed again)")


def thaw_v2(d: str) -> None:
    """Let every task of the v2 cgroup ``d`` run again."""
    try:
        fs.write(f"{d}/cgroup.freeze", "0")
    except OSError as exc:
        raise CgroupError(f"cannot thaw {d}: {exc.strerror}") from exc


def state_v2(d: str) -> FreezerState:
    """``FROZEN`` when freezing of the v2 cgroup ``d`` was asked for, else ``THAWED``."""
    try:
        return "FROZEN" if fs.read(f"{d}/cgroup.freeze").strip() == "1" else "THAWED"
    except OSError as exc:
        raise CgroupError(f"cannot read the freezer state of {d}: {exc.strerror}") from exc
