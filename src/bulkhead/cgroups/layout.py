"""Where this host mounts its cgroup hierarchies, read once per process.

Vocabulary:

hierarchy
    A tree of cgroups, mounted as a filesystem. cgroup **v1** has one
    hierarchy per *controller* (or per group of co-mounted controllers, as
    ``cpu,cpuacct`` on many distributions), each its own ``cgroup`` mount
    under ``/sys/fs/cgroup/<name>``. cgroup **v2** has exactly one
    hierarchy, a ``cgroup2`` mount, that every controller attaches to.
controller
    The kernel part that enforces or accounts one resource: ``memory``,
    ``cpu``, ``cpuacct``, ``cpuset``, ``pids``, ``blkio`` (v2: ``io``),
    ``devices``, ``freezer``, ``hugetlb`` ... A v1 hierarchy with no
    controller has a *name* instead (``name=systemd``): it only groups
    processes.
mode
    ``unified``: ``/sys/fs/cgroup`` is the cgroup2 mount (pure v2).
    ``legacy``: only v1 hierarchies. ``hybrid``: v1 hierarchies for the
    controllers plus a cgroup2 mount at ``/sys/fs/cgroup/unified`` that holds
    whichever controllers no v1 hierarchy took (often none; ``hugetlb`` on
    this project's machines). bulkhead uses the v1 manager for ``legacy``
    and ``hybrid``, the v2 manager for ``unified``, as runc does.
own cgroup
    Where the calling process lives in each hierarchy (``/proc/self/cgroup``).
    A relative ``linux.cgroupsPath`` is taken relative to it.
mount root
    The part of a hierarchy a mount shows (field 4 of mountinfo): ``/`` for
    the host's own mounts, a sub-tree inside some containers. Paths under a
    mount are relative to its root.

:func:`detect` parses ``/proc/self/mountinfo`` and ``/proc/self/cgroup``
once and caches the :class:`Layout`; :func:`layout_from_text` does the same
for given text (the unit tests build layouts of fake trees with it).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Literal, NamedTuple

from bulkhead.errors import CgroupError
from bulkhead.linux import mountinfo

Mode = Literal["legacy", "hybrid", "unified"]

#: Where hosts mount their cgroup hierarchies.
CGROUP_ROOT = "/sys/fs/cgroup"

#: The controllers a v1 ``cgroup`` mount may carry in its super options.
V1_CONTROLLERS = frozenset(
    {
        "blkio",
        "cpu",
        "cpuacct",
        "cpuset",
        "devices",
        "freezer",
        "hugetlb",
        "memory",
        "misc",
        "net_cls",
        "net_prio",
        "perf_event",
        "pids",
        "rdma",
    }
)


class Mount(NamedTuple):
    """One mounted hierarchy.

    ``controllers`` are the v1 controllers (or the ``name=...`` of a named
    hierarchy) it carries; empty for cgroup2, whose controllers are listed
    in its root's ``cgroup.controllers`` instead.
    """

    mountpoint: str
    root: str
    fstype: Literal["cgroup", "cgroup2"]
    controllers: tuple[str, ...] = ()


class Layout(NamedTuple):
    """The cgroup mounts of this host and the calling process's place in them.

    ``v1`` maps each v1 controller (and ``name=systemd`` ...) to its
    mount; co-mounted controllers map to the same :class:`Mount`.
    ``unified`` is the cgroup2 mount (the whole story in ``unified`` mode,
    the side mount in ``hybrid`` mode). ``own`` maps the same keys (``""``
    for cgroup2) to the process's own cgroup, relative to the mount's root.
    """

    mode: Mode
    v1: Mapping[str, Mount] = {}
    unified: Mount | None = None
    own: Mapping[str, str] = {}

    @property
    def version(self) -> Literal[1, 2]:
        """2 when the host is pure cgroup v2, else 1 (legacy and hybrid)."""
        return 2 if self.mode == "unified" else 1

    def v1_mounts(self) -> list[Mount]:
        """Each v1 hierarchy once (co-mounted controllers share a mount)."""
        seen: dict[str, Mount] = {}
        for mount in self.v1.values():
            seen.setdefault(mount.mountpoint, mount)
        return list(seen.values())

    def own_cgroup(self, key: str) -> str:
        """The process's cgroup in hierarchy ``key`` (``""`` for cgroup2), ``/`` if unknown."""
        return self.own.get(key, "/")


def parse_mountinfo(text: str) -> tuple[dict[str, Mount], list[Mount]]:
    """The v1 mounts by controller, and every cgroup2 mount, of a mountinfo text.

    A line reads ``id parent maj:min root mountpoint opts [optional...] -
    fstype source superopts``; v1 controllers are in the super options.
    When a hierarchy is mounted twice the first mount under
    ``/sys/fs/cgroup`` wins (bind mounts elsewhere are copies).
    """
    v1: dict[str, Mount] = {}
    v2: list[Mount] = []
    for info in mountinfo.parse(text):
        fstype = info.fstype
        if fstype not in ("cgroup", "cgroup2"):
            continue
        root = info.root
        mountpoint = info.mountpoint
        if fstype == "cgroup2":
            v2.append(Mount(mountpoint, root, "cgroup2"))
            continue
        ctrls = tuple(
            opt
            for opt in info.super_options.split(",")
            if opt in V1_CONTROLLERS or opt.startswith("name=")
        )
        if not ctrls:
            continue
        mount = Mount(mountpoint, root, "cgroup", ctrls)
        for ctrl in ctrls:
            old = v1.get(ctrl)
            if old is None or (
                not _under_cgroup_root(old.mountpoint) and _under_cgroup_root(mountpoint)
            ):
                v1[ctrl] = mount
    return v1, v2


def parse_proc_cgroup(text: str) -> dict[str, str]:
    """``/proc/<pid>/cgroup`` as {controller: path}, ``""`` for cgroup2.

    Lines read ``hierarchy-id:controller,controller:path``; a named
    hierarchy shows ``name=systemd``; cgroup2 shows ``0::path``.
    """
    own: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, ctrls, path = parts
        if not ctrls:
            own[""] = path
            continue
        for ctrl in ctrls.split(","):
            own[ctrl] = path
    return own


def layout_from_text(mountinfo: str, proc_cgroup: str, cgroup_root: str = CGROUP_ROOT) -> Layout:
    """The :class:`Layout` that a mountinfo and a /proc/self/cgroup text describe.

    ``unified`` mode when ``cgroup_root`` itself is a cgroup2 mount, or when
    no v1 hierarchy is mounted but a cgroup2 one is; ``hybrid`` when v1
    hierarchies and a cgroup2 mount coexist; ``legacy`` otherwise.
    """
    v1, v2_mounts = parse_mountinfo(mountinfo)
    raw_own = parse_proc_cgroup(proc_cgroup)
    at_root = [m for m in v2_mounts if m.mountpoint == cgroup_root]
    unified: Mount | None
    mode: Mode
    if at_root or (v2_mounts and not v1):
        unified = (at_root or v2_mounts)[-1]  # the last mount over a point is the visible one
        mode = "unified"
        v1 = {}
    else:
        unified = v2_mounts[0] if v2_mounts else None
        preferred = [m for m in v2_mounts if _under_cgroup_root(m.mountpoint)]
        if preferred:
            unified = preferred[0]
        mode = "hybrid" if unified is not None else "legacy"
    if mode != "unified" and not v1:
        raise CgroupError("no cgroup hierarchy is mounted on this host (see /proc/self/mountinfo)")
    own: dict[str, str] = {}
    for ctrl, mount in v1.items():
        if ctrl in raw_own:
            own[ctrl] = _relative_to_root(raw_own[ctrl], mount.root)
    if unified is not None and "" in raw_own:
        own[""] = _relative_to_root(raw_own[""], unified.root)
    return Layout(mode=mode, v1=v1, unified=unified, own=own)


@functools.cache
def detect() -> Layout:
    """This host's :class:`Layout`, parsed on first use and cached for the process."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mountinfo = f.read()
        with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
            proc_cgroup = f.read()
    except OSError as exc:
        raise CgroupError(f"cannot read the process's cgroup mounts: {exc}") from exc
    return layout_from_text(mountinfo, proc_cgroup)


def _under_cgroup_root(path: str) -> bool:
    return path == CGROUP_ROOT or path.startswith(CGROUP_ROOT + "/")


def _relative_to_root(cgroup: str, root: str) -> str:
    """``cgroup`` (a path in the whole hierarchy) as seen under a mount of ``root``.

    Inside a cgroup namespace or a container the process's cgroup may lie
    outside what the mount shows (``/../x``); such a path falls back to the
    mount's top, as runc's own-cgroup lookup does.
    """
    if root in ("", "/"):
        return cgroup or "/"
    if cgroup == root:
        return "/"
    if cgroup.startswith(root + "/"):
        return cgroup[len(root) :]
    return "/"
