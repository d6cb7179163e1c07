"""The memory controller: limits on RAM and swap, and what was used.

Spec fields (``linux.resources.memory``) and where they land:

=====================  ==============================  ===================================
field                  v1 file                          v2 file
=====================  ==============================  ===================================
limit                  memory.limit_in_bytes            memory.max
reservation            memory.soft_limit_in_bytes       memory.low
swap                   memory.memsw.limit_in_bytes      memory.swap.max (swap - limit)
swappiness             memory.swappiness                (none: error)
disableOOMKiller       memory.oom_control               (none: error when true)
useHierarchy           (always on: error when false)    (always on: error when false)
kernelTCP              memory.kmem.tcp.limit_in_bytes   (ignored with a warning, as runc)
kernel                 (ignored with a warning, as runc: deprecated by the kernel and the spec)
checkBeforeUpdate      usage_in_bytes (+ memsw.usage)   memory.current (+ memory.swap.current)
=====================  ==============================  ===================================

``swap`` in the spec is *memory plus swap* (v1's ``memsw``). v2 limits swap
alone, so bulkhead writes ``swap - limit`` there, as runc's
``ConvertMemorySwapToCgroupV2Value`` does; ``-1`` means no limit, and with
an unlimited memory the swap value is taken as is. A value of 0 means "not
set" for limit, swap and reservation (runc's reading of the spec). An update
that gives only ``swap`` converts against the cgroup's current memory limit.
A ``swap`` of -1 on a kernel that does not account swap asks for nothing
(there is no limit to lift), so it is accepted; a positive one is an error.

On v1 the memory limit may never exceed the memory+swap limit, so when both
change the order of the two writes depends on the old limit.

``checkBeforeUpdate``: a new limit at or below what the cgroup uses now is
refused before anything is written (runc and crun do this on v2; bulkhead on
both, so the answer does not depend on the host). Without it, a limit below
the usage is the kernel's to judge: v1 reclaims and, if it cannot, refuses
(EBUSY: a CgroupError, and the update is undone); v2 reclaims and, if it
cannot, OOM-kills (the spec's documented v2 behaviour).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from bulkhead import logs
from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, MemoryResources, need_limit, need_range
from bulkhead.cgroups.stats import UNLIMITED, Memory, MemoryEntry
from bulkhead.errors import CgroupError

F = f"{PREFIX}.memory"


def _set(value: int | None) -> bool:
    return value is not None and value != 0


def _warn_kernel(mem: MemoryResources, version: int) -> None:
    """runc ignores kernel memory limits (and kernelTCP on v2), with a warning: so do we."""
    names = [f"{F}.kernel"] if _set(mem.kernel) else []
    if version == 2 and _set(mem.kernel_tcp):
        names.append(f"{F}.kernelTCP")
    if names:
        logs.warning(
            __name__,
            f"{' and '.join(names)}: ignored (kernel memory limits are deprecated"
            + (")" if version == 1 else "; cgroup v2 counts kernel memory in memory.max)"),
        )


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
    if _set(mem.kernel):
        need_limit(mem.kernel, f"{F}.kernel")
    if _set(mem.kernel_tcp):
        need_limit(mem.kernel_tcp, f"{F}.kernelTCP")
    for name, value in (
        ("disableOOMKiller", mem.disable_oom_killer),
        ("useHierarchy", mem.use_hierarchy),
        ("checkBeforeUpdate", mem.check_before_update),
    ):
        if value is not None and not isinstance(value, bool):
            raise CgroupError(f"{F}.{name}: {value!r} is not true or false")
    if mem.use_hierarchy is False:
        raise CgroupError(
            f"{F}.useHierarchy: false is not possible: this kernel always accounts hierarchically"
        )
    return limit, swap, reservation


def _check_usage(
    mem: MemoryResources, limit: int | None, swap: int | None, usage: int, swap_usage: int | None
) -> None:
    """``checkBeforeUpdate``: refuse a limit at or below the current usage."""
    if not mem.check_before_update:
        return
    if limit is not None and 0 < limit <= usage:
        raise CgroupError(
            f"{F}.limit: {limit} is not above the current usage of {usage} bytes "
            "(checkBeforeUpdate refuses such a limit)"
        )
    if swap is not None and swap > 0 and swap_usage is not None and swap <= usage + swap_usage:
        raise CgroupError(
            f"{F}.swap: {swap} is not above the current memory+swap usage of "
            f"{usage + swap_usage} bytes (checkBeforeUpdate refuses such a limit)"
        )


def _busy(d: str, value: str) -> Callable[[OSError], str | None]:
    """Explain EBUSY on a limit write: the cgroup already uses more than that."""

    def explain(exc: OSError) -> str | None:
        if exc.errno != errno.EBUSY:
            return None
        usage = fs.read_opt(f"{d}/memory.usage_in_bytes") or fs.read_opt(f"{d}/memory.current")
        return (
            f"cannot lower the limit to {value}: the cgroup uses more and the kernel "
            f"could not reclaim enough (usage {(usage or '?').strip()} bytes)"
        )

    return explain


def plan_v1(mem: MemoryResources | None, d: str) -> list[Write]:
    """The writes that apply ``mem`` to the v1 memory cgroup ``d``."""
    if mem is None:
        return []
    limit, swap, reservation = _check(mem)
    _warn_kernel(mem, 1)
    memsw = f"{d}/memory.memsw.limit_in_bytes"
    accounts_swap = fs.exists(memsw)
    if mem.check_before_update and (limit is not None or swap is not None):
        usage = fs.read_int(f"{d}/memory.usage_in_bytes") or 0
        sw = fs.read_int(f"{d}/memory.memsw.usage_in_bytes") if accounts_swap else None
        _check_usage(mem, limit, swap, usage, None if sw is None else sw - usage)
    if limit == -1 and swap is None:
        swap = -1  # "no memory limit" means no memory+swap limit either (runc)
    writes: list[Write] = []
    if swap is not None and not accounts_swap:
        if swap != -1:
            raise CgroupError(
                f"{F}.swap: this kernel does not account swap "
                "(no memory.memsw.limit_in_bytes; boot with swapaccount=1)"
            )
        swap = None  # no swap limit to lift
    if swap is not None and swap > 0 and limit is None:
        current = fs.read_int(f"{d}/memory.limit_in_bytes")
        if current is not None and swap < current:
            raise CgroupError(
                f"{F}.swap: {swap} is below the current memory limit {current}; "
                "swap is memory+swap and must be at least the limit (give memory.limit too)"
            )
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
        tcp = f"{d}/memory.kmem.tcp.limit_in_bytes"
        if fs.exists(d) and not fs.exists(tcp):
            raise CgroupError(
                f"{F}.kernelTCP: this kernel has no memory.kmem.tcp.limit_in_bytes "
                "(TCP buffer accounting not built in)"
            )
        writes.append(Write(tcp, str(mem.kernel_tcp), f"{F}.kernelTCP"))
    return writes


def swap_v2(swap: int | None, limit: int | None) -> int | None:
    """runc's conversion of the spec's memory+swap to v2's swap-only ``memory.swap.max``.

    Returns None for "leave it", -1 for ``max``. An unlimited memory with no
    swap given means unlimited swap too; with an unlimited memory a swap
    value is taken as is (there is no memory limit to subtract).
    """
    if limit == -1 and swap is None:
        return -1
    if swap is None or swap == -1:
        return swap
    if limit == -1:
        return swap
    if limit is None:
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
    _warn_kernel(mem, 2)
    swap_file = f"{d}/memory.swap.max"
    accounts_swap = fs.exists(swap_file)
    if mem.check_before_update and (limit is not None or swap is not None):
        usage = fs.read_int(f"{d}/memory.current") or 0
        sw = fs.read_int(f"{d}/memory.swap.current") if accounts_swap else None
        _check_usage(mem, limit, swap, usage, sw)
    base = limit
    if swap is not None and swap > 0 and limit is None:
        # an update of swap alone: memory+swap against the limit there is now
        current = (fs.read_opt(f"{d}/memory.max") or "max").strip()
        if current != "max":
            base = int(current)
            if swap < base:
                raise CgroupError(
                    f"{F}.swap: {swap} is below the current memory limit {base}; "
                    "swap is memory+swap and must be at least the limit (give memory.limit too)"
                )
    writes: list[Write] = []
    swap_max = swap_v2(swap, base)
    if swap_max is not None:
        if accounts_swap:
            value = "max" if swap_max == -1 else str(swap_max)
            writes.append(Write(swap_file, value, f"{F}.swap"))
        elif swap is not None and swap != -1:
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
