"""Control groups: the kernel's way to limit, account and freeze a group of processes.

A *cgroup* is a directory in a special filesystem; the processes listed in
its ``cgroup.procs`` are its members, and its *control files* set limits
(``memory.max``) or report use (``memory.current``). Cgroups nest: limits
apply to a whole sub-tree. The kernel parts behind the files are
*controllers* (memory, cpu, pids, io ...). There are two generations:
**v1**, one tree (*hierarchy*) per controller, and **v2**, one tree for all.
:mod:`.layout` explains how a host mixes them.

The runtime needs one thing from this package: a :class:`CgroupManager`
for a container's ``linux.cgroupsPath``, from :func:`new_manager`, which
picks the v1 or the v2 implementation by what :func:`detect` finds
mounted. The manager turns ``linux.resources`` into file writes, one small
module per controller:

===========  ==================================================
module       controller(s)
===========  ==================================================
memory       memory (limits, swap, OOM killer)
cpu          cpu, cpuacct (shares/weight, CFS quota, idle)
cpuset       cpuset (CPUs and memory nodes)
pids         pids (task count)
blkio        blkio / io (weights, throttles)
hugetlb      hugetlb (huge pages per size)
devices      devices (v1 allow/deny lists)
network      net_cls, net_prio (v1 only)
rdma         rdma (RDMA handles and objects per device)
freezer      freezer / cgroup.freeze (pause, resume)
events       OOM notifications
===========  ==================================================

Usage::

    from bulkhead.cgroups import new_manager

    cg = new_manager("/bulkhead/web1")
    cg.create()
    cg.apply(spec.linux.resources, initial=True)
    cg.add_pid(pid)
    ...
    cg.destroy()

Every field is checked before the first write, and an error names the
field (``linux.resources.memory.limit: ...``). An update (``apply``
without ``initial``) is all or nothing: the files are read first, and if
the kernel refuses a write half-way, what was written is put back
(:func:`.fs.apply_writes`). The field-by-field status of both versions is
in ``docs/cgroups-resources.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bulkhead.cgroups.layout import Layout, detect
from bulkhead.cgroups.manager import CgroupManager, FreezerState
from bulkhead.cgroups.paths import default_path
from bulkhead.cgroups.stats import Stats

if TYPE_CHECKING:
    from bulkhead.cgroups.events import OOMWatcher
    from bulkhead.cgroups.resources import Resources

__all__ = [
    "CgroupManager",
    "FreezerState",
    "Layout",
    "OOMWatcher",
    "Resources",
    "Stats",
    "default_path",
    "detect",
    "new_manager",
]


def __getattr__(name: str) -> object:
    # Imported on first use: the runtime needs these for typing only.
    if name == "OOMWatcher":
        from bulkhead.cgroups.events import OOMWatcher

        return OOMWatcher
    if name == "Resources":
        from bulkhead.cgroups.resources import Resources

        return Resources
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def new_manager(cgroups_path: str, *, layout: Layout | None = None) -> CgroupManager:
    """The manager of the cgroup at ``cgroups_path`` (a ``linux.cgroupsPath``).

    Nothing is created until :meth:`CgroupManager.create`. ``layout``
    defaults to this host's (:func:`detect`, cached per process). Raises
    :class:`~bulkhead.errors.SpecError` for a path with ``..``,
    :class:`~bulkhead.errors.UnsupportedError` for the systemd
    ``slice:prefix:name`` form.
    """
    layout = layout if layout is not None else detect()
    if layout.version == 2:
        from bulkhead.cgroups.v2 import V2Manager

        return V2Manager(cgroups_path, layout)
    from bulkhead.cgroups.v1 import V1Manager

    return V1Manager(cgroups_path, layout)
