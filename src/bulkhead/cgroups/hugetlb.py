"""The hugetlb controller: limits on huge pages, per page size.

``linux.resources.hugepageLimits`` is a list of ``{pageSize, limit}``:
``pageSize`` as the kernel names it in file names (``2MB``, ``1GB``,
``64KB``), ``limit`` in bytes. The sizes a host offers are the
``/sys/kernel/mm/hugepages/hugepages-<N>kB`` directories; asking for
another is a CgroupError.

v1 files: ``hugetlb.<size>.limit_in_bytes`` (and ``usage_in_bytes``,
``max_usage_in_bytes``, ``failcnt``). v2 files: ``hugetlb.<size>.max``,
``.current``, ``.events`` and, on kernels >= 5.7, ``hugetlb.<size>.rsvd.max``
for reservations, which bulkhead sets to the same limit as runc does (so an
``mmap`` fails up front instead of a fault killing the process later).

On a *hybrid* host hugetlb may live on the cgroup2 side mount
(``/sys/fs/cgroup/unified``) rather than a v1 hierarchy; the v1 manager
then uses the v2 files there.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence

from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, HugepageLimit, need_int
from bulkhead.cgroups.stats import UNLIMITED, Hugetlb
from bulkhead.errors import CgroupError

F = f"{PREFIX}.hugepageLimits"
HUGEPAGES_DIR = "/sys/kernel/mm/hugepages"

_SIZE = re.compile(r"^(\d+)\s*([KkMGT]?)i?B?$")
_UNIT = {"": 1, "K": 1 << 10, "k": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def size_name(nbytes: int) -> str:
    """The kernel's name for a page size in bytes: 2097152 -> ``2MB`` (its ``mem_fmt``)."""
    if nbytes >= 1 << 30:
        return f"{nbytes >> 30}GB"
    if nbytes >= 1 << 20:
        return f"{nbytes >> 20}MB"
    return f"{nbytes >> 10}KB"


def parse_size(text: str, field: str) -> int:
    """A page size such as ``2MB`` in bytes."""
    m = _SIZE.match(text.strip()) if isinstance(text, str) else None
    if m is None:
        raise CgroupError(f"{field}: {text!r} is not a page size such as 2MB or 1GB")
    return int(m.group(1)) * _UNIT[m.group(2)]


@functools.cache
def host_sizes(hugepages_dir: str = HUGEPAGES_DIR) -> tuple[str, ...]:
    """The huge page sizes this host offers, by kernel name (``2MB``, ``1GB``)."""
    sizes: list[int] = []
    try:
        names = os.listdir(hugepages_dir)
    except OSError:
        return ()
    for name in names:
        if name.startswith("hugepages-") and name.endswith("kB"):
            try:
                sizes.append(int(name[len("hugepages-") : -2]) << 10)
            except ValueError:
                continue
    return tuple(size_name(s) for s in sorted(sizes))


def _checked(limits: Sequence[HugepageLimit]) -> list[tuple[str, int, str]]:
    """(kernel size name, limit, field) of each entry, checked against the host."""
    out: list[tuple[str, int, str]] = []
    offered = host_sizes()
    for i, entry in enumerate(limits):
        field = f"{F}[{i}]"
        name = size_name(parse_size(entry.page_size, f"{field}.pageSize"))
        if name not in offered:
            raise CgroupError(
                f"{field}.pageSize: {entry.page_size} pages are not offered by this host "
                f"(it has: {', '.join(offered) or 'no huge pages'})"
            )
        limit = need_int(entry.limit, f"{field}.limit")
        if limit < 0:
            raise CgroupError(f"{field}.limit: {limit} is negative")
        out.append((name, limit, field))
    return out


def plan_v1(limits: Sequence[HugepageLimit], d: str) -> list[Write]:
    """The writes that apply ``limits`` to the v1 hugetlb cgroup ``d``."""
    return [
        Write(f"{d}/hugetlb.{name}.limit_in_bytes", str(limit), f"{field}.limit")
        for name, limit, field in _checked(limits)
    ]


def plan_v2(limits: Sequence[HugepageLimit], d: str) -> list[Write]:
    """The writes that apply ``limits`` to the v2 cgroup ``d``."""
    writes: list[Write] = []
    for name, limit, field in _checked(limits):
        writes.append(Write(f"{d}/hugetlb.{name}.max", str(limit), f"{field}.limit"))
        rsvd = f"{d}/hugetlb.{name}.rsvd.max"
        if fs.exists(rsvd):
            writes.append(Write(rsvd, str(limit), f"{field}.limit"))
    return writes


def stats_v1(d: str) -> dict[str, Hugetlb]:
    """Huge page use per size in the v1 hugetlb cgroup ``d``."""
    out: dict[str, Hugetlb] = {}
    for name in host_sizes():
        usage = fs.read_int(f"{d}/hugetlb.{name}.usage_in_bytes")
        if usage is None:
            continue
        out[name] = Hugetlb(
            usage=usage,
            max=fs.read_int(f"{d}/hugetlb.{name}.max_usage_in_bytes") or 0,
            failcnt=fs.read_int(f"{d}/hugetlb.{name}.failcnt") or 0,
        )
    return out


def stats_v2(d: str) -> dict[str, Hugetlb]:
    """Huge page use per size in the v2 cgroup ``d`` (v2 keeps no peak)."""
    out: dict[str, Hugetlb] = {}
    for name in host_sizes():
        usage = fs.read_int(f"{d}/hugetlb.{name}.current", UNLIMITED)
        if usage is None:
            continue
        failcnt = fs.read_keyed(f"{d}/hugetlb.{name}.events").get("max", 0)
        out[name] = Hugetlb(usage=usage, failcnt=failcnt)
    return out
