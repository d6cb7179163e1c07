"""The rdma controller: how many RDMA handles and objects a cgroup may hold, per device.

``linux.resources.rdma`` maps an RDMA device name (an *HCA*, host channel
adapter, as ``/sys/class/infiniband`` lists it: ``mlx5_0``, ``siw0`` ...)
to ``{hcaHandles, hcaObjects}``: the most verbs contexts (handles) and
verbs objects (queue pairs, memory regions ...) the cgroup may allocate on
it. The spec asks for at least one of the two in each entry.

Both versions use the same file, ``rdma.max``, one device per write::

    mlx5_0 hca_handle=2 hca_object=2000

A limit left out keeps its value (``max`` on a new cgroup), as runc writes
it. The kernel reads the numbers as a signed int (``max`` is its largest),
so a value above 2147483647 is an error here rather than an EINVAL later.
A device the kernel does not know is refused (ENODEV); bulkhead checks
``/sys/class/infiniband`` first so that the error names the field before
anything is written. ``rdma.current`` holds the use.

On cgroup v1 the controller is its own hierarchy (``/sys/fs/cgroup/rdma``),
which many hosts (this project's machines included) do not mount or do not
build: asking for rdma limits there is a CgroupError that says which.
"""

from __future__ import annotations

from collections.abc import Mapping

from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, RdmaLimit, need_int
from bulkhead.errors import CgroupError

F = f"{PREFIX}.rdma"

#: Where the kernel lists RDMA devices (a setting for the tests).
SYS_CLASS_INFINIBAND = "/sys/class/infiniband"

#: The kernel's largest limit (S32_MAX, shown as ``max``).
LIMIT_MAX = 2**31 - 1


def _field(name: object) -> str:
    return f"{F}[{name!r}]"


def plan(rdma: Mapping[str, RdmaLimit] | None, d: str) -> list[Write]:
    """The writes of ``rdma`` to ``rdma.max`` of the cgroup ``d`` (v1 or v2), checked."""
    writes: list[Write] = []
    for name, limits in (rdma or {}).items():
        field = _field(name)
        if (
            not isinstance(name, str)
            or not name
            or name in (".", "..")
            or any(c.isspace() or c in "/=" for c in name)
        ):
            raise CgroupError(f"{field}: not an RDMA device name such as mlx5_0")
        parts = [name]
        for key, spec_name, value in (
            ("hca_handle", "hcaHandles", limits.hca_handles),
            ("hca_object", "hcaObjects", limits.hca_objects),
        ):
            if value is None:
                continue
            n = need_int(value, f"{field}.{spec_name}")
            if not 0 <= n <= LIMIT_MAX:
                raise CgroupError(
                    f"{field}.{spec_name}: {n} is out of range 0..{LIMIT_MAX} (the kernel's limit)"
                )
            parts.append(f"{key}={n}")
        if len(parts) == 1:
            raise CgroupError(f"{field}: give hcaHandles or hcaObjects (the spec needs one)")
        if not fs.exists(f"{SYS_CLASS_INFINIBAND}/{name}"):
            raise CgroupError(
                f"{field}: no RDMA device {name} on this host (see {SYS_CLASS_INFINIBAND})"
            )
        writes.append(Write(f"{d}/rdma.max", " ".join(parts), field))
    return writes
