"""The cgroup v1 manager: the same path in every hierarchy.

On a *legacy* or *hybrid* host each controller has its own tree
(``/sys/fs/cgroup/memory``, ``/sys/fs/cgroup/cpu`` ...), so a container's
cgroup is one directory per hierarchy, all at the same relative path, and
a process joins it by writing its pid to ``cgroup.procs`` in each. Named
hierarchies without a controller (``name=systemd``) are joined too, so
tools that track processes by them see the container, as with runc.

On a *hybrid* host the cgroup2 side mount (``/sys/fs/cgroup/unified``) gets
the same directory as well (runc does this), and serves as the hugetlb
cgroup when hugetlb is attached there rather than to a v1 hierarchy: the
v1 manager then writes v2 ``hugetlb.<size>.max`` files. bulkhead enables
hugetlb only in cgroups it owns; if the host's root does not pass it down,
hugepage limits are a CgroupError that says so.

A container without a devices hierarchy would see every device, so
:meth:`V1Manager.create` refuses a host that mounts none.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from bulkhead.cgroups import (
    blkio,
    cpu,
    cpuset,
    devices,
    freezer,
    fs,
    hugetlb,
    memory,
    network,
    paths,
    pids,
    rdma,
)
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.layout import Layout
from bulkhead.cgroups.resources import PREFIX, HugepageLimit, Resources
from bulkhead.cgroups.stats import Stats
from bulkhead.errors import CgroupError

if TYPE_CHECKING:
    from bulkhead.cgroups.events import OOMWatcher
    from bulkhead.cgroups.manager import FreezerState

#: How long destroy() waits for exiting processes to leave.
DESTROY_TIMEOUT = 2.0

#: A directory that never exists: what a controller that is not mounted plans against.
_NOWHERE = "/proc/self/.bulkhead-controller-not-mounted"

# The hierarchy whose cgroup.procs lists the container's processes (any will do).
_PROCS_FROM = ("pids", "freezer", "memory", "devices", "cpu", "cpuacct")


def _kernel_controllers() -> set[str] | None:
    """The controllers this kernel has (``/proc/cgroups``), None if unknown."""
    text = fs.read_opt("/proc/cgroups")
    if text is None:
        return None
    return {ln.split()[0] for ln in text.splitlines() if ln.strip() and not ln.startswith("#")}


def _not_mounted(ctrl: str) -> str:
    """Why a v1 controller cannot be used: not built into the kernel, or not mounted."""
    known = _kernel_controllers()
    if known is not None and ctrl not in known:
        return f"this kernel has no {ctrl} controller (see /proc/cgroups)"
    return f"the {ctrl} controller is not mounted on this host (no {ctrl} hierarchy)"


class _Hierarchy:
    __slots__ = ("dir", "rel", "top")

    def __init__(self, top: str, rel: str) -> None:
        self.top = top  # the hierarchy's mountpoint
        self.rel = rel  # the cgroup below it, no leading /
        self.dir = f"{top}/{rel}"


class V1Manager:
    """A container's cgroup on a cgroup v1 (legacy or hybrid) host."""

    version = 1

    def __init__(self, cgroups_path: str, layout: Layout) -> None:
        self._path = paths.check(cgroups_path)
        self._hierarchies: list[_Hierarchy] = []
        self._dirs: dict[str, str] = {}
        for mount in layout.v1_mounts():
            rel = paths.resolve(self._path, layout.own_cgroup(mount.controllers[0]))
            if not rel:
                raise CgroupError(
                    f"{cgroups_path!r} resolves to the root of {mount.mountpoint}; refusing to manage it"
                )
            h = _Hierarchy(mount.mountpoint, rel)
            self._hierarchies.append(h)
            for ctrl in mount.controllers:
                self._dirs[ctrl] = h.dir
        self._unified: _Hierarchy | None = None
        if layout.mode == "hybrid" and layout.unified is not None:
            rel = paths.resolve(self._path, layout.own_cgroup(""))
            if rel:
                self._unified = _Hierarchy(layout.unified.mountpoint, rel)

    def __repr__(self) -> str:
        return f"V1Manager({self._path!r})"

    @property
    def cgroups_path(self) -> str:
        return self._path

    def _all(self) -> list[_Hierarchy]:
        return [*self._hierarchies, *([self._unified] if self._unified else [])]

    def _need(self, ctrl: str, what: str) -> str:
        d = self._dirs.get(ctrl)
        if d is None:
            raise CgroupError(f"cannot {what}: the {ctrl} controller is not mounted on this host")
        return d

    # ------------------------------------------------------------- lifecycle

    def create(self) -> None:
        if "devices" not in self._dirs:
            raise CgroupError(
                "this host mounts no devices cgroup hierarchy; refusing to run a container "
                "with no device confinement"
            )
        for h in self._hierarchies:
            try:
                fs.makedirs(h.top, h.rel)
                if "cpuset" in self._dirs and self._dirs["cpuset"] == h.dir:
                    cpuset.init_v1(h.top, h.rel)
            except OSError as exc:
                raise CgroupError(f"cannot create cgroup {h.dir}: {exc.strerror}") from exc
        if self._unified is not None:
            try:
                fs.makedirs(self._unified.top, self._unified.rel)
            except OSError:
                self._unified = None  # best effort, as runc: it only tracks the processes

    def add_pid(self, pid: int) -> None:
        for h in self._hierarchies:
            try:
                fs.write(f"{h.dir}/cgroup.procs", str(pid))
            except OSError as exc:
                raise CgroupError(
                    f"cannot move process {pid} into {h.dir}: {exc.strerror}"
                ) from exc
        if self._unified is not None:
            try:
                fs.write(f"{self._unified.dir}/cgroup.procs", str(pid))
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise CgroupError(
                    f"cannot move process {pid} into {self._unified.dir}: {exc.strerror}"
                ) from exc

    def self_placement(self) -> tuple[list[str], str | None]:
        """How a process can join this cgroup by itself, without the migration lock's wait.

        Writing a pid to ``cgroup.procs`` takes the write side of the kernel's
        global ``cgroup_threadgroup_rwsem``, which first waits for an RCU grace
        period (5 to 30 ms here). A thread that writes ``0`` (itself) to a v1
        hierarchy's ``tasks`` file moves alone and skips that lock; the cgroup2
        side mount of a hybrid host has no such file for a domain cgroup, but a
        child can be born there (clone3 ``CLONE_INTO_CGROUP``). Returns the
        ``tasks`` files, one per v1 hierarchy, and the cgroup2 directory (None
        on a legacy host).
        """
        unified = self._unified.dir if self._unified is not None else None
        return [f"{h.dir}/tasks" for h in self._hierarchies], unified

    def apply(self, resources: Resources | None, *, initial: bool = False) -> None:
        # an update is all or nothing: files read first, undone if the kernel
        # refuses a write half-way; a new cgroup is removed by the runtime instead
        fs.apply_writes(self._plan(resources, initial), undo=not initial)

    def _section(self, ctrl: str, field: str, plan: Callable[[str], list[Write]]) -> list[Write]:
        """``plan`` against the ``ctrl`` cgroup, or an error if it would write to a missing one."""
        d = self._dirs.get(ctrl)
        if d is not None:
            return plan(d)
        try:
            wanted = bool(plan(_NOWHERE))
        except CgroupError:
            wanted = True
        if wanted:
            raise CgroupError(f"{field}: {_not_mounted(ctrl)}")
        return []

    def _plan(self, r: Resources | None, initial: bool) -> list[Write]:
        writes: list[Write] = []
        if r is not None:
            if r.unified:
                raise CgroupError(
                    f"{PREFIX}.unified: these are cgroup v2 settings, and this host uses cgroup v1"
                )
            writes += self._section("rdma", f"{PREFIX}.rdma", lambda d: rdma.plan(r.rdma, d))
            c, b, n = r.cpu, r.block_io, r.network
            writes += self._section(
                "memory", f"{PREFIX}.memory", lambda d: memory.plan_v1(r.memory, d)
            )
            writes += self._section("cpu", f"{PREFIX}.cpu", lambda d: cpu.plan_v1(c, d))
            writes += self._section("cpuset", f"{PREFIX}.cpu", lambda d: cpuset.plan(c, d, 1))
            writes += self._section("pids", f"{PREFIX}.pids", lambda d: pids.plan(r.pids, d))
            writes += self._section("blkio", f"{PREFIX}.blockIO", lambda d: blkio.plan_v1(b, d))
            writes += self._section(
                "net_cls", f"{PREFIX}.network.classID", lambda d: network.plan_net_cls(n, d)
            )
            writes += self._section(
                "net_prio", f"{PREFIX}.network.priorities", lambda d: network.plan_net_prio(n, d)
            )
            if r.hugepage_limits:
                writes += self._plan_hugetlb(list(r.hugepage_limits))
        rules = r.devices if r is not None else None
        if rules is not None or initial:
            d = self._need("devices", "confine devices")
            writes += devices.plan_v1(rules or (), d)
        return writes

    def _plan_hugetlb(self, limits: list[HugepageLimit]) -> list[Write]:
        field = f"{PREFIX}.hugepageLimits"
        d = self._dirs.get("hugetlb")
        if d is not None:
            return hugetlb.plan_v1(limits, d)
        u = self._unified

        def offered(d: str) -> bool:
            return "hugetlb" in (fs.read_opt(f"{d}/cgroup.controllers") or "").split()

        if u is None or not offered(u.top) or not fs.exists(u.dir):
            hugetlb.plan_v1(limits, _NOWHERE)  # bad values first
            raise CgroupError(f"{field}: {_not_mounted('hugetlb')}")
        if not offered(u.dir):
            from bulkhead.cgroups.v2 import enable_subtree

            enable_subtree(u.top, u.rel, only={"hugetlb"}, include_top=False)
            if not offered(u.dir):
                hugetlb.plan_v2(limits, u.dir)  # bad values first
                raise CgroupError(
                    f"{field}: the hugetlb controller is on the cgroup2 hierarchy at {u.top} "
                    f"but the host does not enable it there ({u.top}/cgroup.subtree_control); "
                    "bulkhead does not change the host's root cgroup"
                )
        return hugetlb.plan_v2(limits, u.dir)

    def destroy(self) -> None:
        deadline = time.monotonic() + DESTROY_TIMEOUT
        left: list[str] = []
        for h in self._all():
            try:
                left += fs.remove_tree(h.dir, deadline)
            except OSError as exc:
                raise CgroupError(f"cannot remove cgroup {h.dir}: {exc.strerror}") from exc
        if left:
            raise CgroupError(
                f"cannot remove cgroup {', '.join(left)}: still busy (processes left: {self.pids()})"
            )

    def exists(self) -> bool:
        return any(fs.exists(h.dir) for h in self._all())

    def path(self, controller: str) -> str:
        d = self._dirs.get(controller)
        if d is None and self._unified is not None and controller in ("", "hugetlb"):
            d = self._unified.dir
        if d is None:
            raise CgroupError(f"the {controller} controller is not mounted on this host")
        return d

    def paths(self) -> dict[str, str]:
        out = dict(self._dirs)
        if self._unified is not None:
            out[""] = self._unified.dir
        return out

    # ------------------------------------------------------------- freezer

    def freeze(self) -> None:
        freezer.freeze_v1(self._need("freezer", "freeze"))

    def thaw(self) -> None:
        freezer.thaw_v1(self._need("freezer", "thaw"))

    def state(self) -> FreezerState:
        d = self._dirs.get("freezer")
        return "THAWED" if d is None else freezer.state_v1(d)

    # ------------------------------------------------------------- processes

    def _procs_dir(self) -> str:
        for ctrl in _PROCS_FROM:
            if ctrl in self._dirs:
                return self._dirs[ctrl]
        return self._hierarchies[0].dir

    def pids(self) -> list[int]:
        d = self._procs_dir()
        try:
            return fs.read_procs(d)
        except OSError as exc:
            raise CgroupError(f"cannot list the processes of {d}: {exc.strerror}") from exc

    def kill_all(self, sig: int) -> None:
        """Signal every process, frozen meanwhile so that none forks past us.

        A cgroup frozen before stays frozen, except for SIGKILL: a v1-frozen
        task dies only when thawed, so then the cgroup is thawed (as runc does).
        """
        can_freeze = "freezer" in self._dirs and fs.exists(self._dirs["freezer"])
        was_thawed = can_freeze and self.state() == "THAWED"
        if was_thawed:
            self.freeze()
        try:
            for pid in self.pids():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        finally:
            if was_thawed or (can_freeze and sig == signal.SIGKILL):
                self.thaw()

    # ------------------------------------------------------------- observing

    def stats(self) -> Stats:
        if not self.exists():
            raise CgroupError(f"cgroup {self._path} does not exist")
        s = Stats()
        try:
            if "memory" in self._dirs:
                s.memory = memory.stats_v1(self._dirs["memory"])
            s.cpu = cpu.stats_v1(self._dirs.get("cpuacct"), self._dirs.get("cpu"))
            if "pids" in self._dirs:
                s.pids = pids.stats(self._dirs["pids"])
            if "blkio" in self._dirs:
                s.blkio = blkio.stats_v1(self._dirs["blkio"])
            if "hugetlb" in self._dirs:
                s.hugetlb = hugetlb.stats_v1(self._dirs["hugetlb"])
            elif self._unified is not None:
                s.hugetlb = hugetlb.stats_v2(self._unified.dir)
        except OSError as exc:
            raise CgroupError(
                f"cannot read the statistics of {self._path}: {exc.strerror}"
            ) from exc
        return s

    def oom_events(self) -> OOMWatcher:
        from bulkhead.cgroups.events import V1OOMWatcher

        return V1OOMWatcher(self._need("memory", "watch for OOM kills"))
