"""Waiting for OOM kills: the kernel tells us, we need not poll the counters.

When a cgroup's memory use reaches its limit and reclaim cannot help, the
*OOM killer* kills a process of that cgroup. Engines report it (Docker's
``OOMKilled``, ``runc events``' ``oom``). Each cgroup version announces it
its own way:

v1: ``cgroup.event_control``
    Create an ``eventfd(2)``, open ``memory.oom_control``, and write
    ``"<eventfd> <oom_control fd>"`` to the cgroup's ``cgroup.event_control``.
    The kernel then adds 1 to the eventfd's counter at each OOM of that
    cgroup, and signals it once more when the cgroup is removed (so after a
    wake-up, a vanished ``cgroup.event_control`` means "gone").
v2: ``memory.events``
    A flat keyed file whose ``oom_kill`` counter counts kills; every change
    wakes a ``poll(2)`` waiting for POLLPRI on an open descriptor of it. When
    the cgroup is removed, reading the descriptor fails with ENODEV.

:class:`OOMWatcher` hides the difference: ``wait(timeout)`` returns how many
OOM events happened since the last call (v2: kills; v1: OOM notifications,
which are kills unless ``disableOOMKiller`` holds the tasks instead), 0 on
timeout, and None once the cgroup is gone. ``fileno()`` and ``poll_events``
let an event loop wait on several watchers at once.
"""

from __future__ import annotations

import errno
import os
import select
import time
from types import TracebackType

from bulkhead.cgroups import fs
from bulkhead.errors import CgroupError


class OOMWatcher:
    """Base of the two watchers: a file descriptor that wakes on OOM, and ``wait``."""

    #: The poll(2) events ``fileno()`` signals: POLLIN (v1 eventfd) or POLLPRI (v2).
    poll_events: int = select.POLLIN

    def __init__(self, memory_dir: str) -> None:
        self.dir = memory_dir
        self._fd = -1

    def fileno(self) -> int:
        """The descriptor that becomes ready (``poll_events``) when something happened."""
        return self._fd

    def wait(self, timeout: float | None = None) -> int | None:
        """OOM events since the last call: >0 some, 0 on timeout, None when the cgroup is gone."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop watching."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> OOMWatcher:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _poll(self, timeout: float | None) -> bool:
        poller = select.poll()
        poller.register(self._fd, self.poll_events)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        return bool(poller.poll(ms))


class V1OOMWatcher(OOMWatcher):
    """OOM notifications of a v1 memory cgroup through ``cgroup.event_control``."""

    poll_events = select.POLLIN

    def __init__(self, memory_dir: str) -> None:
        super().__init__(memory_dir)
        control = f"{memory_dir}/cgroup.event_control"
        try:
            ofd = os.open(f"{memory_dir}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise CgroupError(f"cannot watch {memory_dir} for OOM: {exc.strerror}") from exc
        try:
            self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            fs.write(control, f"{self._fd} {ofd}")
        except OSError as exc:
            self.close()
            raise CgroupError(f"cannot watch {memory_dir} for OOM: {exc.strerror}") from exc
        finally:
            os.close(ofd)  # the kernel holds its own reference now
        self._control = control

    def wait(self, timeout: float | None = None) -> int | None:
        if self._fd < 0:
            return None
        if not self._poll(timeout):
            return 0
        try:
            count = os.eventfd_read(self._fd)
        except BlockingIOError:
            return 0
        if not fs.exists(self._control):
            return None  # the removal of the cgroup signalled us
        return count


class V2OOMWatcher(OOMWatcher):
    """OOM kills of a v2 cgroup, from ``memory.events`` woken by poll(POLLPRI)."""

    poll_events = select.POLLPRI

    def __init__(self, memory_dir: str) -> None:
        super().__init__(memory_dir)
        try:
            self._fd = os.open(f"{memory_dir}/memory.events", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise CgroupError(f"cannot watch {memory_dir} for OOM: {exc.strerror}") from exc
        kills = self._kills()
        self._seen = kills if kills is not None else 0

    def _kills(self) -> int | None:
        try:
            data = os.pread(self._fd, 4096, 0).decode()
        except OSError as exc:
            if exc.errno in (errno.ENODEV, errno.ENOENT):
                return None
            raise
        for line in data.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def wait(self, timeout: float | None = None) -> int | None:
        if self._fd < 0:
            return None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            kills = self._kills()
            if kills is None:
                return None
            if kills > self._seen:
                new, self._seen = kills - self._seen, kills
                return new
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return 0
            self._poll(left)
