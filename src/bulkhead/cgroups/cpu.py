"""The cpu controller (how much CPU time) and cpuacct (how much was used).

Two ways to share CPUs, both in ``linux.resources.cpu``:

shares / weight
    *Proportional*: under contention a cgroup gets CPU time in proportion to
    its weight among its siblings; idle CPUs are used freely. v1
    ``cpu.shares`` ranges 2..262144 (default 1024); v2 ``cpu.weight`` ranges
    1..10000 (default 100). bulkhead converts as runc >= 1.3.2 and crun >=
    1.23 do (opencontainers/cgroups ``ConvertCPUSharesToCgroupV2Value``): a
    quadratic curve in log2(shares) through the three points that matter,
    min 2 -> 1, default 1024 -> 100, max 262144 -> 10000
    (:func:`shares_to_weight`). The older linear formula,
    ``1 + ((shares - 2) * 9999) // 262142`` (:func:`shares_to_weight_linear`,
    runc < 1.3.2, crun < 1.23, still in Kubernetes' own arithmetic), maps the
    default 1024 shares to weight 39, so a container that asked for the
    default got less than an unconfigured cgroup beside it; the new one does
    not, which is why we use it.
quota / period / burst (CFS bandwidth control)
    *Absolute*: in each ``period`` microseconds the cgroup may run ``quota``
    microseconds (summed over all CPUs; -1 for no limit); ``burst`` lets it
    carry unused quota forward. v1: ``cpu.cfs_quota_us``,
    ``cpu.cfs_period_us``, ``cpu.cfs_burst_us``; v2: ``cpu.max`` ("quota
    period", "max" for none) and ``cpu.max.burst``.
idle
    1 puts the cgroup in the ``SCHED_IDLE`` class: it runs only when
    nothing else wants the CPU (``cpu.idle``, kernels >= 5.15).
realtimeRuntime / realtimePeriod
    v1 RT group scheduling (``cpu.rt_runtime_us``, ``cpu.rt_period_us``;
    kernels with ``CONFIG_RT_GROUP_SCHED``). A cgroup's realtime runtime
    must fit in its parent's, and a new parent (``/bulkhead``) has none, so
    a runtime given there is refused up front, naming the parent. v2 has no
    realtime group scheduling: an error, as with crun (upstream runc drops
    the fields on v2 without a word).

Accounting is cpuacct's on v1 (``cpuacct.usage`` ... in nanoseconds) and
``cpu.stat`` on v2 (microseconds). Values of 0 mean "not set" for shares,
quota and period (runc's reading).
"""

from __future__ import annotations

import math
import os

from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, CPUResources, need_int, need_range
from bulkhead.cgroups.stats import Cpu, CpuUsage, Throttling
from bulkhead.errors import CgroupError

F = f"{PREFIX}.cpu"

SHARES_MIN, SHARES_MAX = 2, 262144
PERIOD_MIN, PERIOD_MAX = 1000, 1_000_000  # microseconds: the kernel's bounds
QUOTA_MIN = 1000


def shares_to_weight(shares: int) -> int:
    """v1 ``cpu.shares`` to v2 ``cpu.weight``: runc >= 1.3.2's and crun >= 1.23's curve.

    ``10 ** ((l*l + 125*l) / 612 - 7/34)`` rounded up, with ``l = log2(shares)``:
    2 -> 1, 1024 -> 100, 262144 -> 10000. 0 stays 0 (unset); values beyond
    the range clamp to its ends.
    """
    if shares == 0:
        return 0
    if shares <= SHARES_MIN:
        return 1
    if shares >= SHARES_MAX:
        return 10000
    lg = math.log2(shares)
    return math.ceil(10 ** ((lg * lg + 125 * lg) / 612.0 - 7.0 / 34.0))


def shares_to_weight_linear(shares: int) -> int:
    """The old linear conversion (runc < 1.3.2, crun < 1.23): 1024 shares -> weight 39."""
    if shares == 0:
        return 0
    return 1 + ((shares - 2) * 9999) // 262142


def _set(value: int | None) -> bool:
    return value is not None and value != 0


def _check(cpu: CPUResources) -> tuple[int | None, int | None, int | None, int | None]:
    """The checked (shares, quota, period, burst), each None when not set."""
    shares = (
        need_range(cpu.shares, f"{F}.shares", SHARES_MIN, SHARES_MAX) if _set(cpu.shares) else None
    )
    period = (
        need_range(cpu.period, f"{F}.period", PERIOD_MIN, PERIOD_MAX, "microseconds")
        if _set(cpu.period)
        else None
    )
    quota: int | None = None
    if _set(cpu.quota):
        quota = need_int(cpu.quota, f"{F}.quota")
        if quota != -1 and quota < QUOTA_MIN:
            raise CgroupError(
                f"{F}.quota: {quota} is too small (at least {QUOTA_MIN} microseconds, or -1 for none)"
            )
    burst: int | None = None
    if cpu.burst is not None:
        burst = need_int(cpu.burst, f"{F}.burst")
        if burst < 0:
            raise CgroupError(f"{F}.burst: {burst} is negative")
        if quota is not None and quota > 0 and burst > quota:
            raise CgroupError(f"{F}.burst: {burst} is more than the quota {quota}")
    if cpu.idle is not None:
        need_range(cpu.idle, f"{F}.idle", 0, 1)
    return shares, quota, period, burst


def plan_v1(cpu: CPUResources | None, d: str) -> list[Write]:
    """The writes that apply ``cpu`` to the v1 cpu cgroup ``d`` (cpuset fields aside)."""
    if cpu is None:
        return []
    shares, quota, period, burst = _check(cpu)
    writes: list[Write] = []
    if cpu.idle == 0:
        writes.append(Write(f"{d}/cpu.idle", "0", f"{F}.idle"))  # weights only count when not idle
    if shares is not None:
        writes.append(Write(f"{d}/cpu.shares", str(shares), f"{F}.shares"))
    # period, quota and burst constrain each other (and the parent's quota):
    # a write the kernel refuses for now is tried again after the others.
    if period is not None:
        writes.append(Write(f"{d}/cpu.cfs_period_us", str(period), f"{F}.period", True))
    if quota is not None:
        writes.append(Write(f"{d}/cpu.cfs_quota_us", str(quota), f"{F}.quota", burst is not None))
    if burst is not None:
        writes.append(Write(f"{d}/cpu.cfs_burst_us", str(burst), f"{F}.burst", True))
    writes += _plan_realtime(cpu, d)
    if cpu.idle == 1:
        writes.append(Write(f"{d}/cpu.idle", "1", f"{F}.idle"))
    return writes


def _plan_realtime(cpu: CPUResources, d: str) -> list[Write]:
    """``cpu.rt_period_us`` and ``cpu.rt_runtime_us`` (v1), checked against the parent's budget."""
    writes: list[Write] = []
    period = runtime = None
    if _set(cpu.realtime_period):
        period = need_range(
            cpu.realtime_period, f"{F}.realtimePeriod", 1, 2**31 - 1, "microseconds"
        )
    if _set(cpu.realtime_runtime):
        runtime = need_int(cpu.realtime_runtime, f"{F}.realtimeRuntime")
        if runtime < -1:
            raise CgroupError(
                f"{F}.realtimeRuntime: {runtime} is not a runtime (microseconds, or -1 for no limit)"
            )
        if period is not None and runtime > period:
            raise CgroupError(
                f"{F}.realtimeRuntime: {runtime} is more than realtimePeriod {period}"
            )
    if period is None and runtime is None:
        return writes
    if fs.exists(d):
        field = f"{F}.realtimeRuntime" if runtime is not None else f"{F}.realtimePeriod"
        if not fs.exists(f"{d}/cpu.rt_runtime_us"):
            raise CgroupError(
                f"{field}: this kernel has no realtime group scheduling "
                "(no cpu.rt_runtime_us: CONFIG_RT_GROUP_SCHED is off)"
            )
        parent = os.path.dirname(d)
        budget = fs.read_int(f"{parent}/cpu.rt_runtime_us")
        if runtime is not None and runtime != 0 and budget is not None and budget == 0:
            raise CgroupError(
                f"{F}.realtimeRuntime: the parent cgroup {parent} has no realtime runtime "
                "(its cpu.rt_runtime_us is 0), and a cgroup's realtime runtime must fit in "
                "its parent's"
            )
    if period is not None:
        writes.append(Write(f"{d}/cpu.rt_period_us", str(period), f"{F}.realtimePeriod", True))
    if runtime is not None:
        writes.append(Write(f"{d}/cpu.rt_runtime_us", str(runtime), f"{F}.realtimeRuntime", True))
    return writes


def plan_v2(cpu: CPUResources | None, d: str) -> list[Write]:
    """The writes that apply ``cpu`` to the v2 cgroup ``d`` (cpuset fields aside)."""
    if cpu is None:
        return []
    shares, quota, period, burst = _check(cpu)
    for name, rt in (
        ("realtimeRuntime", cpu.realtime_runtime),
        ("realtimePeriod", cpu.realtime_period),
    ):
        if _set(rt):
            raise CgroupError(
                f"{F}.{name}: cgroup v2 has no realtime group scheduling (crun refuses "
                "it too; runc drops it without a word)"
            )
    writes: list[Write] = []
    if cpu.idle == 0:
        writes.append(Write(f"{d}/cpu.idle", "0", f"{F}.idle"))
    if shares is not None:
        writes.append(Write(f"{d}/cpu.weight", str(shares_to_weight(shares)), f"{F}.shares"))
    if quota is not None or period is not None:
        q = "max" if quota == -1 else str(quota) if quota is not None else None
        if q is None:  # only the period changes: keep the quota there is
            q = (fs.read_opt(f"{d}/cpu.max") or "max").split()[0]
        value = q if period is None else f"{q} {period}"
        writes.append(Write(f"{d}/cpu.max", value, f"{F}.quota", burst is not None))
    if burst is not None:
        writes.append(Write(f"{d}/cpu.max.burst", str(burst), f"{F}.burst", True))
    if cpu.idle == 1:
        writes.append(Write(f"{d}/cpu.idle", "1", f"{F}.idle"))
    return writes


_TICK_NS = 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def _ints(text: str | None) -> list[int]:
    return [int(x) for x in text.split()] if text else []


def stats_v1(cpuacct: str | None, cpu: str | None) -> Cpu:
    """CPU use from the v1 cpuacct cgroup and throttling from the cpu cgroup."""
    out = Cpu()
    if cpuacct is not None:
        u = out.usage
        u.total = fs.read_int(f"{cpuacct}/cpuacct.usage") or 0
        u.percpu = _ints(fs.read_opt(f"{cpuacct}/cpuacct.usage_percpu"))
        u.percpu_kernel = _ints(fs.read_opt(f"{cpuacct}/cpuacct.usage_percpu_sys"))
        u.percpu_user = _ints(fs.read_opt(f"{cpuacct}/cpuacct.usage_percpu_user"))
        user = fs.read_int(f"{cpuacct}/cpuacct.usage_user")
        kernel = fs.read_int(f"{cpuacct}/cpuacct.usage_sys")
        if user is None or kernel is None:  # older kernels: clock ticks in cpuacct.stat
            ticks = fs.read_keyed(f"{cpuacct}/cpuacct.stat")
            user = ticks.get("user", 0) * _TICK_NS
            kernel = ticks.get("system", 0) * _TICK_NS
        u.user, u.kernel = user, kernel
    if cpu is not None:
        st = fs.read_keyed(f"{cpu}/cpu.stat")
        out.throttling = Throttling(
            periods=st.get("nr_periods", 0),
            throttled_periods=st.get("nr_throttled", 0),
            throttled_time=st.get("throttled_time", 0),
        )
    return out


def stats_v2(d: str) -> Cpu:
    """CPU use and throttling of the v2 cgroup ``d`` (``cpu.stat`` is in microseconds)."""
    st = fs.read_keyed(f"{d}/cpu.stat")
    return Cpu(
        usage=CpuUsage(
            total=st.get("usage_usec", 0) * 1000,
            user=st.get("user_usec", 0) * 1000,
            kernel=st.get("system_usec", 0) * 1000,
        ),
        throttling=Throttling(
            periods=st.get("nr_periods", 0),
            throttled_periods=st.get("nr_throttled", 0),
            throttled_time=st.get("throttled_usec", 0) * 1000,
        ),
    )
