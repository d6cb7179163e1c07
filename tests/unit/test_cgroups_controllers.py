"""Unit tests of the per-controller modules: spec fields to planned writes, and stats parsing.

Plans are pure apart from a few reads of the cgroup they target, which the
tests provide as files in a temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from bulkhead import logs
from bulkhead.cgroups import blkio, cpu, cpuset, devices, hugetlb, memory, network, pids, rdma
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import format_id_list, parse_id_list
from bulkhead.errors import CgroupError
from bulkhead.oci.runtime_spec import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxInterfacePriority,
    LinuxMemory,
    LinuxNetwork,
    LinuxPids,
    LinuxThrottleDevice,
    LinuxWeightDevice,
)


def files(d: Path, **content: str) -> str:
    """Make control files in ``d`` (``memory_max="max"`` is ``memory.max``); return ``str(d)``."""
    d.mkdir(parents=True, exist_ok=True)
    for name, value in content.items():
        (d / name.replace("__", ".")).write_text(value)
    return str(d)


def pairs(writes: list[Write], base: str) -> list[tuple[str, str]]:
    return [(w.path.removeprefix(base + "/"), w.value) for w in writes]


@pytest.fixture(autouse=True)
def block_devices(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """A fake /sys/dev/block: disks 8:0 (mq-deadline) and 8:16 (bfq), partition 8:1 of 8:0."""
    top = tmp_path_factory.mktemp("sys")
    for disk, dev, sched in (
        ("sda", "8:0", "[mq-deadline] bfq none"),
        ("sdb", "8:16", "mq-deadline [bfq] none"),
    ):
        files(top / "devices" / disk, dev=dev)
        (top / "devices" / disk / "queue").mkdir()
        (top / "devices" / disk / "queue" / "scheduler").write_text(sched + "\n")
    files(top / "devices" / "sda" / "sda1", dev="8:1", partition="1")
    (top / "block").mkdir()
    (top / "block" / "8:0").symlink_to("../devices/sda")
    (top / "block" / "8:16").symlink_to("../devices/sdb")
    (top / "block" / "8:1").symlink_to("../devices/sda/sda1")
    monkeypatch.setattr(blkio, "SYS_DEV_BLOCK", str(top / "block"))
    return top


@pytest.fixture
def warnings() -> Any:
    """The warnings library code reports while the test runs."""
    seen: list[str] = []
    logs.set_sink(lambda level, message: seen.append(message))
    yield seen
    logs.set_sink(None)


# ---------------------------------------------------------------------- memory


def test_memory_v1_limit_swap_order_when_raising(tmp_path: Path) -> None:
    d = files(
        tmp_path,
        memory__limit_in_bytes="1048576",
        memory__memsw__limit_in_bytes="1048576",
    )
    w = memory.plan_v1(LinuxMemory(limit=4 << 20, swap=8 << 20), d)
    # raising: memsw first, or the kernel refuses limit > memsw
    assert pairs(w, d) == [
        ("memory.memsw.limit_in_bytes", str(8 << 20)),
        ("memory.limit_in_bytes", str(4 << 20)),
    ]


def test_memory_v1_limit_swap_order_when_lowering(tmp_path: Path) -> None:
    d = files(
        tmp_path,
        memory__limit_in_bytes=str(64 << 20),
        memory__memsw__limit_in_bytes=str(128 << 20),
    )
    w = memory.plan_v1(LinuxMemory(limit=4 << 20, swap=8 << 20), d)
    assert [p for p, _ in pairs(w, d)] == ["memory.limit_in_bytes", "memory.memsw.limit_in_bytes"]


def test_memory_v1_all_fields(tmp_path: Path) -> None:
    d = files(tmp_path, memory__memsw__limit_in_bytes="0", memory__kmem__tcp__limit_in_bytes="0")
    w = memory.plan_v1(
        LinuxMemory(
            limit=-1,
            reservation=1 << 20,
            swappiness=10,
            disable_oom_killer=True,
            kernel=123,  # ignored (with a warning): deprecated
            kernel_tcp=2 << 20,
        ),
        d,
    )
    assert pairs(w, d) == [
        ("memory.memsw.limit_in_bytes", "-1"),  # unlimited memory: unlimited memsw too
        ("memory.limit_in_bytes", "-1"),
        ("memory.soft_limit_in_bytes", str(1 << 20)),
        ("memory.swappiness", "10"),
        ("memory.oom_control", "1"),
        ("memory.kmem.tcp.limit_in_bytes", str(2 << 20)),
    ]


@pytest.mark.parametrize(
    ("mem", "message"),
    [
        (LinuxMemory(limit=-5), r"memory\.limit: -5 is not a valid limit"),
        (
            LinuxMemory(limit="1g"),  # type: ignore[arg-type]
            r"memory\.limit: '1g' is not an integer",
        ),
        (LinuxMemory(limit=8 << 20, swap=4 << 20), r"memory\.swap: .* below memory\.limit"),
        (LinuxMemory(swappiness=101), r"memory\.swappiness: 101 is out of range 0\.\.100"),
        (LinuxMemory(use_hierarchy=False), r"memory\.useHierarchy"),
    ],
)
def test_memory_bad_values(tmp_path: Path, mem: Any, message: str) -> None:
    d = files(tmp_path, memory__memsw__limit_in_bytes="0")
    with pytest.raises(CgroupError, match="^linux.resources." + message):
        memory.plan_v1(mem, d)


def test_memory_v1_swap_without_accounting(tmp_path: Path) -> None:
    d = files(tmp_path)
    with pytest.raises(CgroupError, match=r"memory\.swap: this kernel does not account swap"):
        memory.plan_v1(LinuxMemory(limit=1 << 20, swap=2 << 20), d)
    # an implicit unlimited swap is simply skipped
    assert pairs(memory.plan_v1(LinuxMemory(limit=-1), d), d) == [("memory.limit_in_bytes", "-1")]


def test_memory_swap_unlimited_without_accounting_is_fine(tmp_path: Path) -> None:
    d = files(tmp_path, memory__limit_in_bytes="1048576")
    assert memory.plan_v1(LinuxMemory(swap=-1), d) == []  # no swap limit to lift
    assert pairs(memory.plan_v2(LinuxMemory(limit=1 << 20, swap=-1), d), d) == [
        ("memory.max", str(1 << 20))
    ]
    with pytest.raises(CgroupError, match=r"memory\.swap: this kernel does not account swap"):
        memory.plan_v2(LinuxMemory(limit=1 << 20, swap=2 << 20), d)


def test_memory_v1_swap_alone_must_cover_the_current_limit(tmp_path: Path) -> None:
    d = files(
        tmp_path,
        memory__limit_in_bytes=str(64 << 20),
        memory__memsw__limit_in_bytes=str(64 << 20),
    )
    assert pairs(memory.plan_v1(LinuxMemory(swap=128 << 20), d), d) == [
        ("memory.memsw.limit_in_bytes", str(128 << 20))
    ]
    with pytest.raises(CgroupError, match=r"^linux\.resources\.memory\.swap: .* current memory"):
        memory.plan_v1(LinuxMemory(swap=32 << 20), d)


def test_memory_kernel_fields_are_ignored_with_a_warning(
    tmp_path: Path, warnings: list[str]
) -> None:
    d = files(tmp_path, memory__kmem__tcp__limit_in_bytes="0", memory__swap__max="max")
    assert memory.plan_v1(LinuxMemory(kernel=1 << 20), d) == []
    assert warnings == [
        "linux.resources.memory.kernel: ignored (kernel memory limits are deprecated)"
    ]
    warnings.clear()
    # v2: kernelTCP too (runc); kernel memory is part of memory.max there
    assert memory.plan_v2(LinuxMemory(kernel=1 << 20, kernel_tcp=1 << 20), d) == []
    assert len(warnings) == 1
    assert warnings[0].startswith(
        "linux.resources.memory.kernel and linux.resources.memory.kernelTCP: ignored"
    )
    # v1 still has kernelTCP; a kernel without it says so
    assert pairs(memory.plan_v1(LinuxMemory(kernel_tcp=1 << 20), d), d) == [
        ("memory.kmem.tcp.limit_in_bytes", str(1 << 20))
    ]
    (tmp_path / "memory.kmem.tcp.limit_in_bytes").unlink()
    with pytest.raises(CgroupError, match=r"memory\.kernelTCP: this kernel has no memory\.kmem"):
        memory.plan_v1(LinuxMemory(kernel_tcp=1 << 20), d)
    with pytest.raises(CgroupError, match=r"memory\.kernel: -3 is not a valid limit"):
        memory.plan_v1(LinuxMemory(kernel=-3), d)


def test_memory_check_before_update(tmp_path: Path) -> None:
    v1 = files(
        tmp_path / "v1",
        memory__limit_in_bytes=str(64 << 20),
        memory__memsw__limit_in_bytes=str(64 << 20),
        memory__usage_in_bytes=str(10 << 20),
        memory__memsw__usage_in_bytes=str(12 << 20),
    )
    v2 = files(
        tmp_path / "v2",
        memory__max=str(64 << 20),
        memory__swap__max="0",
        memory__current=str(10 << 20),
        memory__swap__current=str(2 << 20),
    )
    for plan, d in ((memory.plan_v1, v1), (memory.plan_v2, v2)):
        with pytest.raises(CgroupError, match=r"^linux\.resources\.memory\.limit: 8388608 is not "):
            plan(LinuxMemory(limit=8 << 20, check_before_update=True), d)
        with pytest.raises(CgroupError, match=r"memory\.limit: 10485760 is not above"):
            plan(LinuxMemory(limit=10 << 20, check_before_update=True), d)  # equal: refused
        with pytest.raises(CgroupError, match=r"memory\.swap: 11534336 is not above .*12582912"):
            plan(LinuxMemory(limit=11 << 20, swap=11 << 20, check_before_update=True), d)
        assert plan(LinuxMemory(limit=16 << 20, swap=16 << 20, check_before_update=True), d)
        assert plan(LinuxMemory(limit=8 << 20), d)  # without the flag: the kernel's call


@pytest.mark.parametrize(
    ("field", "value"),
    [("disable_oom_killer", 1), ("use_hierarchy", "yes"), ("check_before_update", 0)],
)
def test_memory_flags_must_be_booleans(tmp_path: Path, field: str, value: object) -> None:
    mem = LinuxMemory()
    setattr(mem, field, value)
    with pytest.raises(CgroupError, match=r"is not true or false"):
        memory.plan_v1(mem, str(tmp_path))


@pytest.mark.parametrize(
    ("swap", "limit", "expect"),
    [
        (None, -1, -1),
        (-1, 100, -1),
        (None, 100, None),
        (300, 100, 200),
        (100, 100, 0),
        (300, -1, 300),  # unlimited memory: swap as is (runc)
        (-1, -1, -1),
        (-1, None, -1),
    ],
)
def test_swap_v2_conversion(swap: int | None, limit: int | None, expect: int | None) -> None:
    assert memory.swap_v2(swap, limit) == expect


def test_swap_v2_needs_a_memory_limit(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match="needs a memory limit"):
        memory.swap_v2(100, None)
    # an update of swap alone converts against the limit the cgroup has ...
    d = files(tmp_path, memory__swap__max="max", memory__max=str(100 << 20))
    assert pairs(memory.plan_v2(LinuxMemory(swap=300 << 20), d), d) == [
        ("memory.swap.max", str(200 << 20))
    ]
    with pytest.raises(CgroupError, match=r"memory\.swap: .* below the current memory limit"):
        memory.plan_v2(LinuxMemory(swap=50 << 20), d)
    # ... and needs one
    (tmp_path / "memory.max").write_text("max\n")
    with pytest.raises(CgroupError, match=r"^linux\.resources\.memory\.swap: .*needs a memory"):
        memory.plan_v2(LinuxMemory(swap=300 << 20), d)


def test_memory_v2(tmp_path: Path) -> None:
    d = files(tmp_path, memory__swap__max="max")
    w = memory.plan_v2(LinuxMemory(limit=100 << 20, swap=300 << 20, reservation=-1), d)
    assert pairs(w, d) == [
        ("memory.swap.max", str(200 << 20)),
        ("memory.max", str(100 << 20)),
        ("memory.low", "max"),
    ]
    w = memory.plan_v2(LinuxMemory(limit=100 << 20, swap=100 << 20), d)
    assert pairs(w, d)[0] == ("memory.swap.max", "0")  # equal: no swap at all


def test_memory_v2_refuses_v1_only_fields(tmp_path: Path) -> None:
    d = files(tmp_path)
    with pytest.raises(CgroupError, match="swappiness"):
        memory.plan_v2(LinuxMemory(swappiness=0), d)
    with pytest.raises(CgroupError, match="disableOOMKiller"):
        memory.plan_v2(LinuxMemory(disable_oom_killer=True), d)
    assert memory.plan_v2(LinuxMemory(disable_oom_killer=False, kernel=1), d) == []


def test_memory_stats_v1(tmp_path: Path) -> None:
    d = files(
        tmp_path,
        memory__usage_in_bytes="4096",
        memory__max_usage_in_bytes="8192",
        memory__failcnt="3",
        memory__limit_in_bytes="65536",
        memory__stat="cache 100\nrss 200\ntotal_cache 100\n",
    )
    m = memory.stats_v1(d)
    assert (m.usage.usage, m.usage.max, m.usage.failcnt, m.usage.limit) == (4096, 8192, 3, 65536)
    assert m.cache == 100
    assert m.raw["rss"] == 200


def test_memory_stats_v2(tmp_path: Path) -> None:
    d = files(
        tmp_path,
        memory__current="1000",
        memory__max="max",
        memory__peak="2000",
        memory__events="low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\n",
        memory__stat="anon 10\nfile 20\n",
        memory__swap__current="5",
        memory__swap__max="100",
    )
    m = memory.stats_v2(d)
    assert m.usage.usage == 1000 and m.usage.max == 2000 and m.usage.failcnt == 7
    assert m.usage.limit == 2**64 - 1
    assert m.swap.usage == 1005  # memory + swap, as v1 reports it
    assert m.swap.limit == 2**64 - 1  # no memory limit: no memory+swap limit
    assert m.cache == 20
    assert memory.oom_kills(d, 2) == 1


# ---------------------------------------------------------------------- cpu


@pytest.mark.parametrize(
    ("shares", "weight"),
    # opencontainers/cgroups' own table (utils_test.go), and a few between
    [
        (0, 0),
        (1, 1),
        (2, 1),
        (3, 2),
        (1024, 100),
        (262143, 10000),
        (262144, 10000),
        (262145, 10000),
        (512, 59),
        (2048, 174),
    ],
)
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert cpu.shares_to_weight(shares) == weight


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000), (0, 0)])
def test_shares_to_weight_linear(shares: int, weight: int) -> None:
    assert cpu.shares_to_weight_linear(shares) == weight


def test_shares_to_weight_is_monotonic() -> None:
    weights = [cpu.shares_to_weight(s) for s in range(2, 262145, 97)]
    assert weights == sorted(weights) and weights[0] >= 1 and weights[-1] <= 10000


def test_cpu_v1(tmp_path: Path) -> None:
    d = str(tmp_path)
    w = cpu.plan_v1(LinuxCPU(shares=512, quota=50000, period=100000, burst=1000, idle=0), d)
    assert pairs(w, d) == [
        ("cpu.idle", "0"),
        ("cpu.shares", "512"),
        ("cpu.cfs_period_us", "100000"),
        ("cpu.cfs_quota_us", "50000"),
        ("cpu.cfs_burst_us", "1000"),
    ]
    assert w[2].retry_on_einval  # period vs. quota: order depends on old values


def test_cpu_idle_after_shares(tmp_path: Path) -> None:
    d = str(tmp_path)
    w = cpu.plan_v1(LinuxCPU(shares=512, idle=1), d)
    assert pairs(w, d) == [("cpu.shares", "512"), ("cpu.idle", "1")]


@pytest.mark.parametrize(
    ("c", "message"),
    [
        (LinuxCPU(shares=1), r"cpu\.shares: 1 is out of range 2\.\.262144"),
        (LinuxCPU(shares=300000), r"cpu\.shares: 300000 is out of range"),
        (LinuxCPU(quota=-7), r"cpu\.quota: -7 is too small"),
        (LinuxCPU(quota=500), r"cpu\.quota: 500 is too small"),
        (LinuxCPU(period=10), r"cpu\.period: 10 is out of range"),
        (LinuxCPU(quota=10000, burst=20000), r"cpu\.burst: 20000 is more than the quota"),
        (LinuxCPU(idle=2), r"cpu\.idle: 2 is out of range 0\.\.1"),
        (
            LinuxCPU(shares="many"),  # type: ignore[arg-type]
            r"cpu\.shares: 'many' is not an integer",
        ),
    ],
)
def test_cpu_bad_values(tmp_path: Path, c: Any, message: str) -> None:
    with pytest.raises(CgroupError, match="^linux.resources." + message):
        cpu.plan_v1(c, str(tmp_path))


def test_cpu_v2(tmp_path: Path) -> None:
    d = files(tmp_path, cpu__max="max 100000")
    w = cpu.plan_v2(LinuxCPU(shares=1024, quota=50000, period=200000, burst=100), d)
    assert pairs(w, d) == [
        ("cpu.weight", "100"),
        ("cpu.max", "50000 200000"),
        ("cpu.max.burst", "100"),
    ]
    assert pairs(cpu.plan_v2(LinuxCPU(quota=-1), d), d) == [("cpu.max", "max")]
    (tmp_path / "cpu.max").write_text("30000 100000\n")
    # only the period: the quota there is stays
    assert pairs(cpu.plan_v2(LinuxCPU(period=50000), d), d) == [("cpu.max", "30000 50000")]


def test_cpu_v2_has_no_realtime(tmp_path: Path) -> None:
    with pytest.raises(CgroupError, match=r"^linux\.resources\.cpu\.realtimeRuntime: .*v2"):
        cpu.plan_v2(LinuxCPU(realtime_runtime=1000), str(tmp_path))
    with pytest.raises(CgroupError, match=r"^linux\.resources\.cpu\.realtimePeriod: .*v2"):
        cpu.plan_v2(LinuxCPU(realtime_period=1000), str(tmp_path))
    assert cpu.plan_v2(LinuxCPU(realtime_period=0, realtime_runtime=0), str(tmp_path)) == []


def test_cpu_v1_realtime(tmp_path: Path) -> None:
    parent = files(tmp_path, cpu__rt_runtime_us="950000", cpu__rt_period_us="1000000")
    d = files(tmp_path / "c", cpu__rt_runtime_us="0", cpu__rt_period_us="1000000")
    w = cpu.plan_v1(LinuxCPU(realtime_period=500000, realtime_runtime=100000), d)
    assert pairs(w, d) == [("cpu.rt_period_us", "500000"), ("cpu.rt_runtime_us", "100000")]
    assert all(x.retry_on_einval for x in w)  # period and runtime constrain each other
    # a parent without realtime time of its own: refused before any write, naming it
    (tmp_path / "cpu.rt_runtime_us").write_text("0\n")
    with pytest.raises(CgroupError, match=rf"realtimeRuntime: the parent cgroup {parent} has no"):
        cpu.plan_v1(LinuxCPU(realtime_runtime=100000), d)
    for bad, message in [
        (LinuxCPU(realtime_runtime=-2), r"realtimeRuntime: -2 is not a runtime"),
        (LinuxCPU(realtime_period=10, realtime_runtime=20), r"realtimeRuntime: 20 is more than"),
    ]:
        with pytest.raises(CgroupError, match=r"^linux\.resources\.cpu\." + message):
            cpu.plan_v1(bad, d)
    # a kernel without RT group scheduling
    (tmp_path / "c" / "cpu.rt_runtime_us").unlink()
    with pytest.raises(CgroupError, match=r"realtimePeriod: this kernel has no realtime group"):
        cpu.plan_v1(LinuxCPU(realtime_period=500000), d)


def test_cpu_stats(tmp_path: Path) -> None:
    acct = files(
        tmp_path / "cpuacct",
        cpuacct__usage="3000",
        cpuacct__usage_percpu="1000 2000 \n",
        cpuacct__usage_user="2500",
        cpuacct__usage_sys="500",
    )
    c = files(tmp_path / "cpu", cpu__stat="nr_periods 10\nnr_throttled 4\nthrottled_time 99\n")
    s = cpu.stats_v1(acct, c)
    assert s.usage.total == 3000 and s.usage.percpu == [1000, 2000]
    assert (s.usage.user, s.usage.kernel) == (2500, 500)
    assert (s.throttling.periods, s.throttling.throttled_periods) == (10, 4)
    v2 = files(
        tmp_path / "v2",
        cpu__stat="usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 1\nnr_throttled 1\nthrottled_usec 3\n",
    )
    s2 = cpu.stats_v2(v2)
    assert (s2.usage.total, s2.usage.user, s2.throttling.throttled_time) == (7000, 5000, 3000)


# ---------------------------------------------------------------------- cpuset


def test_id_lists() -> None:
    assert parse_id_list("0-3,8,10-11", "f") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_id_list("", "f") == set()
    assert format_id_list({0, 1, 2, 3, 8, 10, 11}) == "0-3,8,10-11"
    for bad in ("a", "3-1", "1,,2", "-1"):
        with pytest.raises(CgroupError, match=r"^f: "):
            parse_id_list(bad, "f")


def test_cpuset_checks_host_cpus(tmp_path: Path) -> None:
    files(tmp_path, cpuset__effective_cpus="0-1\n", cpuset__effective_mems="0\n")
    d = str(tmp_path / "leaf")
    w = cpuset.plan(LinuxCPU(cpus="1", mems="0"), d, 1)
    assert pairs(w, d) == [("cpuset.cpus", "1"), ("cpuset.mems", "0")]
    with pytest.raises(CgroupError, match=r"cpu\.cpus: '0-3' names CPUs 2-3 .*available: 0-1"):
        cpuset.plan(LinuxCPU(cpus="0-3"), d, 1)
    with pytest.raises(CgroupError, match=r"cpu\.mems: '1' names memory nodes 1"):
        cpuset.plan(LinuxCPU(mems="1"), d, 1)
    assert cpuset.plan(LinuxCPU(cpus=""), d, 1) == []


def test_cpuset_v2_file_names(tmp_path: Path) -> None:
    files(tmp_path, cpuset__cpus__effective="0-7\n")
    d = str(tmp_path / "leaf")
    assert pairs(cpuset.plan(LinuxCPU(cpus="4-7"), d, 2), d) == [("cpuset.cpus", "4-7")]
    with pytest.raises(CgroupError):
        cpuset.plan(LinuxCPU(cpus="8"), d, 2)


def test_cpuset_init_v1_copies_parent(tmp_path: Path) -> None:
    files(tmp_path, cpuset__cpus="0-1", cpuset__mems="0")
    files(tmp_path / "a", cpuset__cpus="", cpuset__mems="")
    files(tmp_path / "a" / "b", cpuset__cpus="\n", cpuset__mems="")
    cpuset.init_v1(str(tmp_path), "a/b")
    assert (tmp_path / "a" / "b" / "cpuset.cpus").read_text() == "0-1"
    assert (tmp_path / "a" / "cpuset.mems").read_text() == "0"


# ---------------------------------------------------------------------- pids


def test_pids(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert pairs(pids.plan(LinuxPids(limit=100), d), d) == [("pids.max", "100")]
    assert pairs(pids.plan(LinuxPids(limit=-1), d), d) == [("pids.max", "max")]
    assert pairs(pids.plan(LinuxPids(limit=0), d), d) == [("pids.max", "max")]
    assert pids.plan(LinuxPids(), d) == []
    with pytest.raises(CgroupError, match=r"^linux\.resources\.pids\.limit: -5 is not a valid"):
        pids.plan(LinuxPids(limit=-5), d)
    files(tmp_path, pids__current="3", pids__max="max")
    assert pids.stats(d).current == 3 and pids.stats(d).limit == 0


# ---------------------------------------------------------------------- blkio


def test_weight_conversion() -> None:
    assert blkio.weight_to_io_weight(10) == 1
    assert blkio.weight_to_io_weight(1000) == 10000
    assert blkio.weight_to_io_weight(500) == 1 + 490 * 9999 // 990


def throttled() -> LinuxBlockIO:
    return LinuxBlockIO(
        throttle_read_bps_device=[LinuxThrottleDevice(major=8, minor=0, rate=1048576)],
        throttle_write_iops_device=[LinuxThrottleDevice(major=8, minor=16, rate=0)],
    )


def test_blkio_v1_throttles(tmp_path: Path) -> None:
    d = str(tmp_path)
    assert pairs(blkio.plan_v1(throttled(), d), d) == [
        ("blkio.throttle.read_bps_device", "8:0 1048576"),
        ("blkio.throttle.write_iops_device", "8:16 0"),
    ]


def test_blkio_v1_weight_needs_a_weight_file(tmp_path: Path) -> None:
    d = str(tmp_path)
    with pytest.raises(CgroupError, match=r"blockIO\.weight: .*no weight file"):
        blkio.plan_v1(LinuxBlockIO(weight=500), d)
    files(tmp_path, blkio__bfq__weight="100")
    bio = LinuxBlockIO(weight=500, weight_device=[LinuxWeightDevice(major=8, minor=16, weight=20)])
    assert pairs(blkio.plan_v1(bio, d), d) == [
        ("blkio.bfq.weight", "500"),
        ("blkio.bfq.weight_device", "8:16 20"),
    ]
    with pytest.raises(CgroupError, match=r"blockIO\.weight: 5 is out of range 10\.\.1000"):
        blkio.plan_v1(LinuxBlockIO(weight=5), d)


def test_blkio_v2(tmp_path: Path) -> None:
    d = str(tmp_path)
    bio = throttled()
    bio.weight = 1000
    assert pairs(blkio.plan_v2(bio, d), d) == [
        ("io.weight", "10000"),
        ("io.max", "8:0 rbps=1048576"),
        ("io.max", "8:16 wiops=max"),
    ]
    files(tmp_path, io__bfq__weight="100")
    assert pairs(blkio.plan_v2(LinuxBlockIO(weight=300), d), d) == [("io.bfq.weight", "300")]


def test_blkio_bad_device(tmp_path: Path) -> None:
    bio = LinuxBlockIO(throttle_read_bps_device=[LinuxThrottleDevice(major=-1, minor=0, rate=1)])
    with pytest.raises(CgroupError, match=r"throttleReadBpsDevice\[0\]"):
        blkio.plan_v1(bio, str(tmp_path))


def test_blkio_devices_are_checked_before_any_write(tmp_path: Path) -> None:
    d = files(tmp_path, blkio__bfq__weight="100")
    for bio, message in [
        (
            LinuxBlockIO(
                throttle_write_bps_device=[LinuxThrottleDevice(major=8, minor=99, rate=1)]
            ),
            r"throttleWriteBpsDevice\[0\]: no block device 8:99 on this host",
        ),
        (
            LinuxBlockIO(throttle_read_iops_device=[LinuxThrottleDevice(major=8, minor=1, rate=1)]),
            r"throttleReadIOPSDevice\[0\]: 8:1 is a partition; .*\(its disk is 8:0\)",
        ),
        (
            LinuxBlockIO(
                weight=100,
                throttle_read_bps_device=[LinuxThrottleDevice(major=8, minor=0, rate=-1)],
            ),
            r"throttleReadBpsDevice\[0\]\.rate: -1 is negative",
        ),
    ]:
        for plan in (blkio.plan_v1, blkio.plan_v2):
            with pytest.raises(CgroupError, match=r"^linux\.resources\.blockIO\." + message):
                plan(bio, d)
    # a per-device weight through BFQ's file needs a disk on BFQ
    bio = LinuxBlockIO(weight_device=[LinuxWeightDevice(major=8, minor=0, weight=100)])
    with pytest.raises(
        CgroupError, match=r"weightDevice\[0\]\.weight: device 8:0 does not use the BFQ"
    ):
        blkio.plan_v1(bio, d)
    bio = LinuxBlockIO(weight_device=[LinuxWeightDevice(major=8, minor=16, weight=100)])
    assert pairs(blkio.plan_v1(bio, d), d) == [("blkio.bfq.weight_device", "8:16 100")]


def test_blkio_v1_leaf_weights_need_cfq(tmp_path: Path) -> None:
    d = files(tmp_path, blkio__bfq__weight="100")
    with pytest.raises(CgroupError, match=r"blockIO\.leafWeight: this kernel has no blkio\.leaf_w"):
        blkio.plan_v1(LinuxBlockIO(leaf_weight=100), d)
    bio = LinuxBlockIO(weight_device=[LinuxWeightDevice(major=8, minor=16, leaf_weight=100)])
    with pytest.raises(CgroupError, match=r"weightDevice\[0\]\.leafWeight: this kernel has no"):
        blkio.plan_v1(bio, d)
    files(tmp_path, blkio__leaf_weight="100", blkio__leaf_weight_device="")
    assert pairs(blkio.plan_v1(LinuxBlockIO(leaf_weight=200), d), d) == [
        ("blkio.leaf_weight", "200")
    ]
    with pytest.raises(CgroupError, match=r"blockIO\.leafWeight: cgroup v2 has no leaf weights"):
        blkio.plan_v2(LinuxBlockIO(leaf_weight=200), d)


def test_blkio_v2_device_weights(tmp_path: Path) -> None:
    d = str(tmp_path)
    bio = LinuxBlockIO(weight_device=[LinuxWeightDevice(major=8, minor=0, weight=1000)])
    # no BFQ files: iocost's io.weight, converted as the default weight is
    assert pairs(blkio.plan_v2(bio, d), d) == [("io.weight", "8:0 10000")]
    files(tmp_path, io__bfq__weight="default 100\n")
    with pytest.raises(CgroupError, match=r"does not use the BFQ"):
        blkio.plan_v2(bio, d)
    bio = LinuxBlockIO(weight_device=[LinuxWeightDevice(major=8, minor=16, weight=1000)])
    assert pairs(blkio.plan_v2(bio, d), d) == [("io.bfq.weight", "8:16 1000")]


def test_blkio_stats(tmp_path: Path) -> None:
    d = files(
        tmp_path,
        blkio__throttle__io_service_bytes_recursive="8:0 Read 4096\n8:0 Write 512\nTotal 4608\n",
        io__stat="8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n",
    )
    s = blkio.stats_v1(d)
    assert [(e.op, e.value) for e in s.io_service_bytes_recursive] == [
        ("Read", 4096),
        ("Write", 512),
    ]
    s2 = blkio.stats_v2(d)
    assert [(e.op, e.value) for e in s2.io_serviced_recursive] == [("Read", 1), ("Write", 2)]
    assert b"ioServiceBytesRecursive" in msgspec.json.encode(s2)


# ---------------------------------------------------------------------- hugetlb


def test_hugetlb_size_names() -> None:
    assert hugetlb.size_name(2 << 20) == "2MB"
    assert hugetlb.size_name(1 << 30) == "1GB"
    assert hugetlb.size_name(64 << 10) == "64KB"
    assert hugetlb.parse_size("2MB", "f") == 2 << 20
    assert hugetlb.parse_size("1GiB", "f") == 1 << 30
    with pytest.raises(CgroupError, match="not a page size"):
        hugetlb.parse_size("huge", "f")


def test_hugetlb_plans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hugetlb, "host_sizes", lambda: ("2MB", "1GB"))
    d = files(tmp_path, hugetlb__2MB__rsvd__max="max")
    limits = [LinuxHugepageLimit(page_size="2MB", limit=4 << 20)]
    assert pairs(hugetlb.plan_v1(limits, d), d) == [("hugetlb.2MB.limit_in_bytes", str(4 << 20))]
    assert pairs(hugetlb.plan_v2(limits, d), d) == [
        ("hugetlb.2MB.max", str(4 << 20)),
        ("hugetlb.2MB.rsvd.max", str(4 << 20)),
    ]
    with pytest.raises(CgroupError, match=r"hugepageLimits\[0\]\.pageSize: 4MB .*2MB, 1GB"):
        hugetlb.plan_v1([LinuxHugepageLimit(page_size="4MB", limit=1)], d)


def test_hugetlb_host_sizes(tmp_path: Path) -> None:
    (tmp_path / "hugepages-2048kB").mkdir()
    (tmp_path / "hugepages-1048576kB").mkdir()
    assert hugetlb.host_sizes(str(tmp_path)) == ("2MB", "1GB")


# ---------------------------------------------------------------------- devices


def test_device_rules_v1(tmp_path: Path) -> None:
    d = str(tmp_path)
    rules = [
        LinuxDeviceCgroup(allow=False, access="rwm"),
        LinuxDeviceCgroup(allow=True, type="c", major=10, minor=229, access="rw"),
        LinuxDeviceCgroup(allow=False, type="b", major=8, minor=-1, access="m"),
    ]
    w = pairs(devices.plan_v1(rules, d), d)
    assert w[:4] == [
        ("devices.deny", "a"),
        ("devices.deny", "a"),
        ("devices.allow", "c 10:229 rw"),
        ("devices.deny", "b 8:* m"),
    ]
    assert ("devices.allow", "c 1:3 rwm") in w[4:]  # the standard nodes follow
    assert len(w) == 4 + len(devices.DEFAULT_RULES)


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (LinuxDeviceCgroup(allow=True, type="x"), r"devices\[0\]\.type"),
        (LinuxDeviceCgroup(allow=True, type="c", access="rwx"), r"devices\[0\]\.access"),
        (LinuxDeviceCgroup(allow=True, type="c", major=-3), r"devices\[0\]\.major"),
    ],
)
def test_device_rules_bad(tmp_path: Path, rule: LinuxDeviceCgroup, message: str) -> None:
    with pytest.raises(CgroupError, match=message):
        devices.plan_v1([rule], str(tmp_path))
    with pytest.raises(CgroupError, match=message):
        devices.plan_v2([rule])


# ---------------------------------------------------------------------- network


def test_network_v1(tmp_path: Path) -> None:
    d = str(tmp_path)
    net = LinuxNetwork(
        class_id=0x100001, priorities=[LinuxInterfacePriority(name="eth0", priority=5)]
    )
    assert pairs(network.plan_net_cls(net, d), d) == [("net_cls.classid", str(0x100001))]
    assert pairs(network.plan_net_prio(net, d), d) == [("net_prio.ifpriomap", "eth0 5")]
    bad = LinuxNetwork(priorities=[LinuxInterfacePriority(name="a b", priority=1)])
    with pytest.raises(CgroupError, match=r"priorities\[0\]\.name"):
        network.plan_net_prio(bad, d)


# ---------------------------------------------------------------------- rdma


class Rdma(msgspec.Struct):
    hca_handles: int | None = None
    hca_objects: int | None = None


def test_rdma(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ib = tmp_path / "infiniband"
    (ib / "mlx5_0").mkdir(parents=True)
    monkeypatch.setattr(rdma, "SYS_CLASS_INFINIBAND", str(ib))
    d = str(tmp_path)
    plan = rdma.plan({"mlx5_0": Rdma(hca_handles=2, hca_objects=2000)}, d)
    assert pairs(plan, d) == [("rdma.max", "mlx5_0 hca_handle=2 hca_object=2000")]
    assert pairs(rdma.plan({"mlx5_0": Rdma(hca_objects=0)}, d), d) == [
        ("rdma.max", "mlx5_0 hca_object=0")
    ]
    assert rdma.plan(None, d) == [] and rdma.plan({}, d) == []
    for entries, message in [
        ({"mlx5_0": Rdma()}, r"\['mlx5_0'\]: give hcaHandles or hcaObjects"),
        ({"mlx5_0": Rdma(hca_handles=-1)}, r"\['mlx5_0'\]\.hcaHandles: -1 is out of range"),
        (
            {"mlx5_0": Rdma(hca_objects=2**31)},
            r"\['mlx5_0'\]\.hcaObjects: 2147483648 is out of range",
        ),
        ({"mlx5_0": Rdma(hca_objects="x")}, r"\['mlx5_0'\]\.hcaObjects: 'x' is not an integer"),  # type: ignore[arg-type]
        ({"mlx9": Rdma(hca_handles=1)}, r"\['mlx9'\]: no RDMA device mlx9 on this host"),
        ({"a b": Rdma(hca_handles=1)}, r"\['a b'\]: not an RDMA device name"),
        ({"../x": Rdma(hca_handles=1)}, r"\['\.\./x'\]: not an RDMA device name"),
    ]:
        with pytest.raises(CgroupError, match=r"^linux\.resources\.rdma" + message):
            rdma.plan(entries, d)
