"""The memory controller: limits on RAM and swap, and what was used.

Spec fields (``linux.resources.memory``) and where they land:

=====================  ==============================  ==========================
field                  v1 file                          v2 file
=====================  ==============================  ==========================
limit                  memory.limit_in_bytes            memory.max
reservation            memory.soft_limit_in_bytes       memory.low
swap                   memory.memsw.limit_in_bytes      memory.swap.max (swap - limit)
swappiness             memory.swappiness                (none: error)
disableOOMKiller       memory.oom_control               (none: error)
kernelTCP              memory.kmem.tcp.limit_in_bytes   (ignored: v2 counts it in memory.max)
kernel                 (ignored, deprecated by kernel)  (ignored)
=====================  ==============================  ==========================

``swap`` in the spec is *memory plus swap* (v1's ``memsw``). v2 limits swap
alone, so bulkhead writes ``swap - limit`` there, as runc does; ``-1``
means no limit. A value of 0 means "not set" for limit, swap and
reservation (runc's reading of the spec).

On v1 the memory limit may never exceed the memory+swap limit, so when both
change the order of the two writes depends on the old limit.

Not yet: ``checkBeforeUpdate`` (refuse a new limit below current usage
instead of letting the kernel reclaim or OOM) is accepted and ignored.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, MemoryResources, need_limit, need_range
from bulkhead.cgroups.stats import UNLIMITED, Memory, MemoryEntry
from bulkhead.errors import CgroupError

F = f"{PREFIX}.memory"


def _set(value: int | None) -> bool:
    return value is not None and value != 0


def _check(mem: MemoryResources) -> tuple[int | None, int | None, int | None]:
    """The checked (limit, swap, reservation), each None when not set."""
    limit = need_limit(mem.limit, f"{F}.limit") if _set(mem.limit) else None
    swap = need_limit(mem.swap, f"{F}.swap") if _set(mem.swap) else None
    reservation = need_limit(mem.reservation, f"{F}.reservation") if _set(mem.reservation) else None
    if limit is not None and limit > 0 and swap is not None and 0 < swap < limit:
        raise CgroupError(
            f"{F}.swap: {swap} is below memory.limit {limit}; swap is memory+swap "
            "and must be at least the limit (equal: no swap)"
        )
    if mem.swappiness is not None:
        need_range(mem.swappiness, f"{F}.swappiness", 0, 100)
    if _set(mem.kernel_tcp):
        need_limit(mem.kernel_tcp, f"{F}.kernelTCP")
    if mem.use_hierarchy is False:
        raise CgroupError(
            f"{F}.useHierarchy: false is not possible: this kernel always accounts hierarchically"
        )
    return limit, swap, reservation


def _busy(d: str, value: str) -> Callable[[OSError], str | None]:
    """Explain EBUSY on a limit write: the cgroup already uses more than that."""

    def explain(exc: OSError) -> str | None:
        if exc.errno != errno.EBUSY:
            return None
        usage = fs.read_opt(f"{d}/memory.usage_in_bytes") or fs.read_opt(f"{d}/memory.current")
        return (
            f"cannot lower the limit to {value}: the cgroup uses more "
            f"(usage {(usage or '?').strip()} bytes)"
        )

    return explain


def plan_v1(mem: MemoryResources | None, d: str) -> list[Write]:
    """The writes that apply ``mem`` to the v1 memory cgroup ``d``."""
    if mem is None:
        return []
    limit, swap, reservation = _check(mem)
    if limit == -1 and swap is None:
        swap = -1  # "no memory limit" means no memory+swap limit either (runc)
    writes: list[Write] = []
    memsw = f"{d}/memory.memsw.limit_in_bytes"
    if swap is not None and not fs.exists(memsw):
        if _set(mem.swap):
            raise CgroupError(
                f"{F}.swap: this kernel does not account swap "
                "(no memory.memsw.limit_in_bytes; boot with swapaccount=1)"
            )
        swap = None
    w_limit = (
        Write(f"{d}/memory.limit_in_bytes", str(limit), f"{F}.limit", explain=_busy(d, str(limit)))
        if limit is not None
        else None
    )
    w_swap = (
        Write(memsw, str(swap), f"{F}.swap", explain=_busy(d, str(swap)))
        if swap is not None
        else None
    )
    if w_limit is not None and w_swap is not None:
        current = fs.read_int(f"{d}/memory.limit_in_bytes") or 0
        if swap == -1 or (swap is not None and current < swap):
            writes += [w_swap, w_limit]  # raising: make room for the new limit first
        else:
            writes += [w_limit, w_swap]
    else:
        writes += [w for w in (w_limit, w_swap) if w is not None]
    if reservation is not None:
        writes.append(
            Write(f"{d}/memory.soft_limit_in_bytes", str(reservation), f"{F}.reservation")
        )
    if mem.swappiness is not None:
        writes.append(Write(f"{d}/memory.swappiness", str(mem.swappiness), f"{F}.swappiness"))
    if mem.disable_oom_killer is not None:
        value = "1" if mem.disable_oom_killer else "0"
        writes.append(Write(f"{d}/memory.oom_control", value, f"{F}.disableOOMKiller"))
    if _set(mem.kernel_tcp):
        writes.append(
            Write(f"{d}/memory.kmem.tcp.limit_in_bytes", str(mem.kernel_tcp), f"{F}.kernelTCP")
        )
    return writes


def swap_v2(swap: int | None, limit: int | None) -> int | None:
    """runc's conversion of the spec's memory+swap to v2's swap-only ``memory.swap.max``.

    Returns None for "leave it", -1 for ``max``. An unlimited memory with no
    swap given means unlimited swap too.
    """
    if limit == -1 and swap is None:
        return -1
    if swap is None or swap == -1:
        return swap
    if limit is None or limit == -1:
        raise CgroupError(f"{F}.swap: a swap limit needs a memory limit (memory.limit)")
    return swap - limit


def plan_v2(mem: MemoryResources | None, d: str) -> list[Write]:
    """The writes that apply ``mem`` to the v2 cgroup ``d``."""
    if mem is None:
        return []
    limit, swap, reservation = _check(mem)
    if mem.swappiness is not None:
        raise CgroupError(f"{F}.swappiness: cgroup v2 has no per-cgroup swappiness")
    if mem.disable_oom_killer:
        raise CgroupError(f"{F}.disableOOMKiller: cgroup v2 cannot turn off the OOM killer")
    writes: list[Write] = []
    swap_max = swap_v2(swap, limit)
    if swap_max is not None:
        path = f"{d}/memory.swap.max"
        if fs.exists(path):
            value = "max" if swap_max == -1 else str(swap_max)
            writes.append(Write(path, value, f"{F}.swap"))
        elif swap is not None:
            raise CgroupError(
                f"{F}.swap: this kernel does not account swap (no memory.swap.max; "
                "boot with swapaccount=1)"
            )
    if limit is not None:
        value = "max" if limit == -1 else str(limit)
        writes.append(Write(f"{d}/memory.max", value, f"{F}.limit", explain=_busy(d, value)))
    if reservation is not None:
        value = "max" if reservation == -1 else str(reservation)
        writes.append(Write(f"{d}/memory.low", value, f"{F}.reservation"))
    return writes


def _entry(d: str, prefix: str) -> MemoryEntry:
    return MemoryEntry(
        usage=fs.read_int(f"{d}/{prefix}usage_in_bytes") or 0,
        max=fs.read_int(f"{d}/{prefix}max_usage_in_bytes") or 0,
        failcnt=fs.read_int(f"{d}/{prefix}failcnt") or 0,
        limit=fs.read_int(f"{d}/{prefix}limit_in_bytes") or 0,
    )


def stats_v1(d: str) -> Memory:
    """Memory use of the v1 memory cgroup ``d``."""
    raw = fs.read_keyed(f"{d}/memory.stat")
    return Memory(
        cache=raw.get("cache", 0),
        usage=_entry(d, "memory."),
        swap=_entry(d, "memory.memsw."),
        kernel=_entry(d, "memory.kmem."),
        kernel_tcp=_entry(d, "memory.kmem.tcp."),
        raw=raw,
    )


def stats_v2(d: str) -> Memory:
    """Memory use of the v2 cgroup ``d`` (swap reported as memory+swap, as on v1)."""
    raw = fs.read_keyed(f"{d}/memory.stat")
    events = fs.read_keyed(f"{d}/memory.events")
    usage = MemoryEntry(
        usage=fs.read_int(f"{d}/memory.current") or 0,
        limit=fs.read_int(f"{d}/memory.max", UNLIMITED) or 0,
        max=fs.read_int(f"{d}/memory.peak") or 0,
        failcnt=events.get("max", 0),
    )
    swap = MemoryEntry()
    swap_current = fs.read_int(f"{d}/memory.swap.current")
    if swap_current is not None:
        swap_limit = fs.read_int(f"{d}/memory.swap.max", UNLIMITED) or 0
        swap = MemoryEntry(
            usage=swap_current + usage.usage,
            limit=UNLIMITED if UNLIMITED in (swap_limit, usage.limit) else swap_limit + usage.limit,
            failcnt=fs.read_keyed(f"{d}/memory.swap.events").get("max", 0),
        )
    return Memory(cache=raw.get("file", 0), usage=usage, swap=swap, raw=raw)


def oom_kills(d: str, version: int) -> int:
    """How many processes the OOM killer has killed in cgroup ``d`` so far."""
    name = "memory.oom_control" if version == 1 else "memory.events"
    return fs.read_keyed(os.path.join(d, name)).get("oom_kill", 0)
