"""The cpuset controller: which CPUs and memory nodes a cgroup may use.

``linux.resources.cpu.cpus`` and ``.mems`` are kernel *list format* strings
(``0-3,6``). A child's sets must lie within its parent's: bulkhead checks
them against the parent's *effective* sets before writing, and names the
CPUs that do not exist, rather than letting the kernel answer EINVAL.

v1 files: ``cpuset.cpus``, ``cpuset.mems`` (and ``cpuset.effective_cpus``,
``cpuset.effective_mems``). A new v1 cpuset cgroup starts with *empty*
sets, and a process cannot join a cgroup with no CPUs (ENOSPC), so
:func:`init_v1` copies the parent's sets into each new level, as runc does.

v2 files: ``cpuset.cpus``, ``cpuset.mems``, ``cpuset.cpus.effective``,
``cpuset.mems.effective``; an empty set there means "the parent's".
"""

from __future__ import annotations

import os

from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, CPUResources, format_id_list, parse_id_list
from bulkhead.errors import CgroupError

F = f"{PREFIX}.cpu"


def init_v1(top: str, rel: str) -> None:
    """Give every level of ``top/rel`` (a v1 cpuset hierarchy) the CPUs and nodes of its parent."""
    parent = top
    for part in (p for p in rel.split("/") if p):
        path = f"{parent}/{part}"
        for name in ("cpuset.cpus", "cpuset.mems"):
            if not fs.read(f"{path}/{name}").strip():
                inherited = fs.read(f"{parent}/{name}").strip()
                if inherited:
                    fs.write(f"{path}/{name}", inherited)
        parent = path


def _allowed(d: str, kind: str, version: int) -> tuple[set[int], str] | None:
    """The ids the parent of ``d`` offers (and the file they came from), None if unknown."""
    name = f"cpuset.effective_{kind}" if version == 1 else f"cpuset.{kind}.effective"
    parent = os.path.dirname(d)
    for where in (parent, os.path.dirname(parent)):
        text = fs.read_opt(f"{where}/{name}")
        if text is not None and text.strip():
            return parse_id_list(text, name), f"{where}/{name}"
    return None


def plan(cpu: CPUResources | None, d: str, version: int) -> list[Write]:
    """The writes that set ``cpus`` and ``mems`` of the cpuset cgroup ``d`` (v1 or v2)."""
    if cpu is None:
        return []
    writes: list[Write] = []
    for kind, value in (("cpus", cpu.cpus), ("mems", cpu.mems)):
        if not value:
            continue  # None or "": not set
        field = f"{F}.{kind}"
        wanted = parse_id_list(value, field)
        allowed = _allowed(d, kind, version)
        if allowed is not None and not wanted <= allowed[0]:
            what = "CPUs" if kind == "cpus" else "memory nodes"
            raise CgroupError(
                f"{field}: {value!r} names {what} {format_id_list(wanted - allowed[0])} "
                f"that this host does not offer here (available: {format_id_list(allowed[0])})"
            )
        writes.append(Write(f"{d}/cpuset.{kind}", value.strip(), field))
    return writes
