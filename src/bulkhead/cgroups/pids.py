"""The pids controller: a cap on how many tasks (processes and threads) a cgroup holds.

``linux.resources.pids.limit`` goes to ``pids.max`` (same file on v1 and
v2): a positive number, or ``max``, which bulkhead writes for -1 and for
0 (the spec's "no limit"; runc reads both so). Other negative numbers are
an error. A ``fork``/``clone`` beyond the cap fails with
EAGAIN inside the container. ``pids.current`` counts the tasks now.
"""

from __future__ import annotations

from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, PidsResources, need_int
from bulkhead.cgroups.stats import Pids
from bulkhead.errors import CgroupError

F = f"{PREFIX}.pids.limit"


def plan(pids: PidsResources | None, d: str) -> list[Write]:
    """The writes that apply ``pids`` to the pids cgroup ``d`` (v1 or v2)."""
    if pids is None or pids.limit is None:
        return []
    limit = need_int(pids.limit, F)
    if limit < -1:
        raise CgroupError(f"{F}: {limit} is not a valid limit (a positive number, or -1 for none)")
    return [Write(f"{d}/pids.max", str(limit) if limit > 0 else "max", F)]


def stats(d: str) -> Pids:
    """Tasks in the pids cgroup ``d`` and its limit (0: none)."""
    return Pids(
        current=fs.read_int(f"{d}/pids.current") or 0, limit=fs.read_int(f"{d}/pids.max", 0) or 0
    )
