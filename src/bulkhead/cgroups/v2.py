"""The cgroup v2 manager: one hierarchy, one directory per container.

On a *unified* host (``/sys/fs/cgroup`` is ``cgroup2``) every controller
attaches to the one tree, and a container's cgroup is a single directory.
What makes v2 different from v1:

``cgroup.controllers`` / ``cgroup.subtree_control``
    A controller is usable in a cgroup only when its parent lists it in
    ``cgroup.subtree_control`` (and a parent can only enable what its own
    ``cgroup.controllers`` offers). :func:`enable_subtree` enables what is
    offered at every level down to the container's parent, as runc does.
no internal processes
    A non-root cgroup that enables controllers for its children may not
    hold processes itself, so containers are leaves and their parents
    (``/bulkhead``) stay empty.
``cgroup.kill``
    Writing ``1`` SIGKILLs every process of the sub-tree at once, with no
    race against forks (kernels >= 5.14).
``cgroup.freeze``, ``cgroup.events``
    Freezing without a separate controller (see :mod:`.freezer`).
devices
    No files: an eBPF program attached to the cgroup (:mod:`.devicefilter`).
``unified``
    ``linux.resources.unified`` maps v2 file names to values
    (``{"memory.high": "1G"}``) for settings the spec has no field for; they
    are written last, so they win. A key whose controller this cgroup lacks
    is an error before any write (runc and crun check the same).
rdma
    ``rdma.max`` per device (:mod:`.rdma`).
"""

from __future__ import annotations

import os
import signal
import time
from typing import TYPE_CHECKING

from bulkhead.cgroups import (
    blkio,
    cpu,
    cpuset,
    devicefilter,
    devices,
    freezer,
    fs,
    hugetlb,
    memory,
    paths,
    pids,
    rdma,
)
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.layout import Layout
from bulkhead.cgroups.resources import PREFIX, Resources
from bulkhead.cgroups.stats import Stats
from bulkhead.errors import CgroupError

if TYPE_CHECKING:
    from bulkhead.cgroups.events import OOMWatcher
    from bulkhead.cgroups.manager import FreezerState

#: How long destroy() waits for exiting processes to leave.
DESTROY_TIMEOUT = 2.0

# Files a ``unified`` entry may never write: moving processes is the
# runtime's job, and the tree's shape is ours.
_FORBIDDEN_UNIFIED = frozenset(
    {"cgroup.procs", "cgroup.threads", "cgroup.subtree_control", "cgroup.kill", "cgroup.type"}
)


def enable_subtree(
    top: str, rel: str, only: set[str] | None = None, include_top: bool = True
) -> None:
    """Enable controllers in ``cgroup.subtree_control`` from ``top`` down to ``rel``'s parent.

    Each level gets every controller its ``cgroup.controllers`` offers (or
    those of ``only``). Failures are ignored here, as in runc: a controller
    that could not be enabled shows up later as a clear error when a limit
    needs it. ``include_top=False`` leaves the hierarchy's root alone.
    """
    levels = [top]
    parts = [p for p in rel.split("/") if p]
    for part in parts[:-1]:
        levels.append(f"{levels[-1]}/{part}")
    for level in levels if include_top else levels[1:]:
        try:
            offered = fs.read(f"{level}/cgroup.controllers").split()
            enabled = set(fs.read(f"{level}/cgroup.subtree_control").split())
        except OSError:
            continue
        missing = [c for c in offered if c not in enabled and (only is None or c in only)]
        if not missing:
            continue
        try:
            fs.write(f"{level}/cgroup.subtree_control", " ".join("+" + c for c in missing))
        except OSError:
            for c in missing:
                try:
                    fs.write(f"{level}/cgroup.subtree_control", "+" + c)
                except OSError:
                    pass


def check_unified(entries: dict[str, str] | None, d: str) -> list[Write]:
    """The writes of ``linux.resources.unified``, checked (names are plain v2 file names)."""
    writes: list[Write] = []
    for key, value in (entries or {}).items():
        field = f"{PREFIX}.unified[{key!r}]"
        if (
            not isinstance(key, str)
            or "/" in key
            or "\0" in key
            or key.startswith(".")
            or "." not in key
        ):
            raise CgroupError(f"{field}: not a cgroup v2 file name such as memory.high")
        if key in _FORBIDDEN_UNIFIED:
            raise CgroupError(f"{field}: {key} is managed by the runtime, not by resources")
        if not isinstance(value, str):
            raise CgroupError(f"{field}: the value must be a string")
        writes.append(Write(f"{d}/{key}", value, field))
    return writes


class V2Manager:
    """A container's cgroup on a cgroup v2 (unified) host."""

    version = 2

    def __init__(self, cgroups_path: str, layout: Layout) -> None:
        if layout.unified is None:
            raise CgroupError("this host has no cgroup2 mount")
        self._path = paths.check(cgroups_path)
        self._top = layout.unified.mountpoint
        self._rel = paths.resolve(self._path, layout.own_cgroup(""))
        if not self._rel:
            raise CgroupError(
                f"{cgroups_path!r} resolves to the root cgroup; refusing to manage it"
            )
        self._dir = f"{self._top}/{self._rel}"

    def __repr__(self) -> str:
        return f"V2Manager({self._dir!r})"

    @property
    def cgroups_path(self) -> str:
        return self._path

    # ------------------------------------------------------------- lifecycle

    def create(self) -> None:
        try:
            fs.makedirs(self._top, self._rel)
        except OSError as exc:
            raise CgroupError(f"cannot create cgroup {self._dir}: {exc.strerror}") from exc
        enable_subtree(self._top, self._rel)

    def add_pid(self, pid: int) -> None:
        try:
            fs.write(f"{self._dir}/cgroup.procs", str(pid))
        except OSError as exc:
            raise CgroupError(
                f"cannot move process {pid} into {self._dir}: {exc.strerror}"
            ) from exc

    def apply(self, resources: Resources | None, *, initial: bool = False) -> None:
        writes = self._plan(resources, initial)
        # like v1's devices files, the rules are applied whole: at the start
        # (deny all but the standard nodes when the spec gives none) and when
        # an update gives rules
        rules = resources.devices if resources is not None else None
        program = devices.plan_v2(rules or ()) if rules is not None or initial else None
        d = self._dir
        # an update is all or nothing: files read first, undone if the kernel
        # refuses a write (or the device program) half-way; a new cgroup is
        # removed by the runtime instead
        fs.apply_writes(
            writes,
            undo=not initial,
            then=None if program is None else lambda: devicefilter.attach(d, program),
        )

    def _plan(self, r: Resources | None, initial: bool) -> list[Write]:
        d = self._dir
        writes: list[Write] = []
        if r is None:
            return writes
        if r.network is not None and (r.network.class_id or r.network.priorities):
            raise CgroupError(
                f"{PREFIX}.network: cgroup v2 has no net_cls/net_prio controllers "
                "(match the cgroup path in nftables instead)"
            )
        writes += memory.plan_v2(r.memory, d)
        writes += cpu.plan_v2(r.cpu, d)
        writes += cpuset.plan(r.cpu, d, 2)
        writes += pids.plan(r.pids, d)
        writes += blkio.plan_v2(r.block_io, d)
        if r.hugepage_limits:
            writes += hugetlb.plan_v2(list(r.hugepage_limits), d)
        writes += rdma.plan(r.rdma, d)
        writes += check_unified(dict(r.unified) if r.unified else None, d)
        self._check_controllers(writes)
        return writes

    def _check_controllers(self, writes: list[Write]) -> None:
        """Fail before writing if a write needs a controller this cgroup lacks."""
        if not writes:
            return
        try:
            offered = set(fs.read(f"{self._dir}/cgroup.controllers").split())
        except OSError as exc:
            raise CgroupError(f"cannot configure {self._dir}: {exc.strerror}") from exc
        offered.add("cgroup")
        for w in writes:
            ctrl = os.path.basename(w.path).split(".", 1)[0]
            if ctrl not in offered:
                raise CgroupError(
                    f"{w.field}: the {ctrl} controller is not enabled for {self._dir} "
                    f"(its parent's cgroup.subtree_control offers: {' '.join(sorted(offered - {'cgroup'})) or 'nothing'})"
                    + self._why_not_enabled(ctrl)
                )

    def _why_not_enabled(self, ctrl: str) -> str:
        """Why the parent could not enable ``ctrl`` for us, when we can tell."""
        parent = os.path.dirname(self._dir)
        if parent == self._top:
            return ""
        if ctrl not in (fs.read_opt(f"{parent}/cgroup.controllers") or "").split():
            return f"; {parent} has no {ctrl} controller itself (not delegated to it)"
        try:
            busy = fs.read_procs(parent, recursive=False)
        except OSError:
            return ""
        if busy:
            return (
                f"; {parent} holds processes, and cgroup v2 lets a cgroup with processes "
                "enable no domain controllers (memory, io ...) for its children: give a "
                "cgroupsPath outside it"
            )
        return ""

    def destroy(self) -> None:
        try:
            left = fs.remove_tree(self._dir, time.monotonic() + DESTROY_TIMEOUT)
        except OSError as exc:
            raise CgroupError(f"cannot remove cgroup {self._dir}: {exc.strerror}") from exc
        if left:
            raise CgroupError(
                f"cannot remove cgroup {', '.join(left)}: still busy "
                f"(processes left: {fs.read_procs(self._dir)})"
            )

    def exists(self) -> bool:
        return fs.exists(self._dir)

    def path(self, controller: str = "") -> str:
        return self._dir

    def paths(self) -> dict[str, str]:
        return {"": self._dir}

    # ------------------------------------------------------------- freezer

    def freeze(self) -> None:
        freezer.freeze_v2(self._dir)

    def thaw(self) -> None:
        freezer.thaw_v2(self._dir)

    def state(self) -> FreezerState:
        return freezer.state_v2(self._dir)

    # ------------------------------------------------------------- processes

    def pids(self) -> list[int]:
        try:
            return fs.read_procs(self._dir)
        except OSError as exc:
            raise CgroupError(f"cannot list the processes of {self._dir}: {exc.strerror}") from exc

    def kill_all(self, sig: int) -> None:
        if sig == signal.SIGKILL:
            try:
                fs.write(f"{self._dir}/cgroup.kill", "1")
                return
            except FileNotFoundError:
                if not self.exists():
                    return
            except OSError as exc:
                raise CgroupError(
                    f"cannot kill the processes of {self._dir}: {exc.strerror}"
                ) from exc
        frozen_before = self.state() == "FROZEN"
        if not frozen_before:
            self.freeze()  # no forks while we signal: every process gets it
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if not frozen_before:
                self.thaw()

    # ------------------------------------------------------------- observing

    def stats(self) -> Stats:
        d = self._dir
        if not fs.exists(d):
            raise CgroupError(f"cgroup {d} does not exist")
        try:
            return Stats(
                memory=memory.stats_v2(d),
                cpu=cpu.stats_v2(d),
                pids=pids.stats(d),
                blkio=blkio.stats_v2(d),
                hugetlb=hugetlb.stats_v2(d),
            )
        except OSError as exc:
            raise CgroupError(f"cannot read the statistics of {d}: {exc.strerror}") from exc

    def oom_events(self) -> OOMWatcher:
        from bulkhead.cgroups.events import V2OOMWatcher

        return V2OOMWatcher(self._dir)
