"""The v2 cgroup manager on a real cgroup-v2-only kernel (the VM lane).

Each test works below ``/bulkhead/test-<random>``; its fixture kills the
children it started (and anything left in its cgroup), thaws, and removes
the cgroups leaf first. Code runs 20-40x slower under the lane's software
emulation, so children are ``sh`` where possible and waits are generous.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkhead.cgroups import CgroupManager, blkio, detect, devicefilter, fs, hugetlb, new_manager
from bulkhead.cgroups.stats import UNLIMITED
from bulkhead.cgroups.v2 import V2Manager
from bulkhead.errors import CgroupError
from bulkhead.oci.runtime_spec import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxMemory,
    LinuxPids,
    LinuxResources,
    LinuxThrottleDevice,
    LinuxWeightDevice,
)

ROOT = "/sys/fs/cgroup"

#: In the vmtest guest (thrown away afterwards): tests may then also load kernel
#: modules and make device nodes, which they do not do on a real cgroup v2 host.
IN_GUEST = os.path.isdir("/run/cgroup2-vm")


class Box:
    """A test's own cgroup path, its manager, and the children it started."""

    def __init__(self) -> None:
        self.path = f"/bulkhead/test-{uuid.uuid4().hex[:8]}"
        self.cg: CgroupManager = new_manager(self.path)
        self.dir = ROOT + self.path
        self.children: list[subprocess.Popen[bytes]] = []

    def spawn_gated(self, *argv: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
        """A child whose program first reads a line from stdin: it waits until :func:`go`."""
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=stdout)
        self.children.append(p)
        return p


def go(p: subprocess.Popen[bytes]) -> None:
    assert p.stdin is not None
    p.stdin.write(b"go\n")
    p.stdin.close()


@pytest.fixture
def box() -> Iterator[Box]:
    b = Box()
    try:
        yield b
    finally:
        for p in b.children:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
        if os.path.isdir(b.dir):
            for pid in fs.read_procs(b.dir):  # our children's children
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                fs.write(f"{b.dir}/cgroup.freeze", "0")
            except OSError:
                pass
        for p in b.children:
            p.wait()
        assert "/bulkhead/test-" in b.dir
        fs.remove_tree(b.dir, time.monotonic() + 10)
        assert not os.path.exists(b.dir)


def read(path: str) -> str:
    return Path(path).read_text().strip()


def wait_for(predicate: object, timeout: float = 30.0) -> bool:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())


def test_detect_and_create(box: Box) -> None:
    assert detect().mode == "unified"
    assert isinstance(box.cg, V2Manager)
    box.cg.create()
    # every controller the root offers is enabled down to our parent
    offered = set(read(f"{ROOT}/cgroup.controllers").split())
    assert set(read(f"{ROOT}/bulkhead/cgroup.subtree_control").split()) == offered
    assert set(read(f"{box.dir}/cgroup.controllers").split()) == offered
    assert box.cg.paths() == {"": box.dir}


def test_limits_read_back_with_conversions(box: Box) -> None:
    cg = box.cg
    cg.create()
    hugepages = []
    if os.path.exists(f"{box.dir}/hugetlb.2MB.max"):
        hugepages = [LinuxHugepageLimit(page_size="2MB", limit=4 << 20)]
    cg.apply(
        LinuxResources(
            memory=LinuxMemory(limit=64 << 20, swap=96 << 20, reservation=16 << 20),
            cpu=LinuxCPU(shares=1024, quota=50000, period=100000, cpus="0"),
            pids=LinuxPids(limit=42),
            hugepage_limits=hugepages,
            unified={"memory.high": str(48 << 20)},
        ),
        initial=True,
    )
    d = box.dir
    assert read(f"{d}/memory.max") == str(64 << 20)
    assert read(f"{d}/memory.low") == str(16 << 20)
    if os.path.exists(f"{d}/memory.swap.max"):
        assert read(f"{d}/memory.swap.max") == str(32 << 20)  # memory+swap minus memory
    assert read(f"{d}/memory.high") == str(48 << 20)
    assert read(f"{d}/cpu.weight") == "100"  # the default 1024 shares: the default weight
    assert read(f"{d}/cpu.max") == "50000 100000"
    assert read(f"{d}/cpuset.cpus") == "0"
    assert read(f"{d}/pids.max") == "42"
    if hugepages:
        assert read(f"{d}/hugetlb.2MB.max") == str(4 << 20)
    # an update of the period alone keeps the quota
    cg.apply(LinuxResources(cpu=LinuxCPU(period=200000)))
    assert read(f"{d}/cpu.max") == "50000 200000"


def test_bad_update_leaves_the_cgroup_unchanged(box: Box) -> None:
    cg = box.cg
    cg.create()
    cg.apply(LinuxResources(memory=LinuxMemory(limit=64 << 20)))
    with pytest.raises(CgroupError, match=r"^linux\.resources\.cpu\.cpus: '0-99' names CPUs"):
        cg.apply(LinuxResources(memory=LinuxMemory(limit=1 << 30), cpu=LinuxCPU(cpus="0-99")))
    with pytest.raises(CgroupError, match=r"^linux\.resources\.memory\.swappiness: "):
        cg.apply(LinuxResources(memory=LinuxMemory(limit=1 << 30, swappiness=10)))
    with pytest.raises(CgroupError, match=r"^linux\.resources\.unified\['memory\.bogus'\]: "):
        cg.apply(LinuxResources(unified={"memory.bogus": "1"}))
    assert read(f"{box.dir}/memory.max") == str(64 << 20)


def test_child_joins_freezes_and_thaws(box: Box) -> None:
    cg = box.cg
    cg.create()
    # a shell that appends a line to a file every 50 ms once told to go
    out = f"/tmp/{uuid.uuid4().hex}"
    script = f"read x; while :; do echo . >> {out}; sleep 0.05; done"
    child = box.spawn_gated("sh", "-c", script)
    cg.add_pid(child.pid)
    go(child)
    assert child.pid in cg.pids()
    assert f"0::{box.path}" in Path(f"/proc/{child.pid}/cgroup").read_text()

    def size() -> int:
        return os.path.getsize(out) if os.path.exists(out) else 0

    assert wait_for(lambda: size() > 2)
    cg.freeze()
    assert cg.state() == "FROZEN"
    assert "frozen 1" in read(f"{box.dir}/cgroup.events")
    frozen_at = size()
    time.sleep(1.5)
    assert size() == frozen_at, "a frozen child made progress"
    cg.thaw()
    assert cg.state() == "THAWED"
    assert wait_for(lambda: size() > frozen_at)


def test_kill_all_and_destroy(box: Box) -> None:
    cg = box.cg
    cg.create()
    shell = box.spawn_gated("sh", "-c", "read x; sleep 1000 & sleep 1000 & wait")
    cg.add_pid(shell.pid)
    go(shell)
    assert wait_for(lambda: len(cg.pids()) == 3)
    # a nested cgroup inside the container's, as an init system in it would make
    inner = f"{box.dir}/inner"
    os.mkdir(inner)
    grandchild = next(p for p in cg.pids() if p != shell.pid)
    fs.write(f"{inner}/cgroup.procs", str(grandchild))
    pids = cg.pids()
    assert len(pids) == 3 and grandchild in pids and shell.pid in pids

    cg.kill_all(signal.SIGTERM)  # freeze, signal each, thaw
    assert shell.wait(timeout=30) == -signal.SIGTERM
    assert cg.state() == "THAWED"
    cg.kill_all(signal.SIGKILL)  # cgroup.kill: whatever is left
    assert wait_for(lambda: cg.pids() == [])
    cg.destroy()
    assert not cg.exists()


def test_stats(box: Box) -> None:
    cg = box.cg
    cg.create()
    cg.apply(LinuxResources(memory=LinuxMemory(limit=256 << 20), pids=LinuxPids(limit=50)))
    code = "import sys, time\nsys.stdin.readline()\nb = bytearray(8 << 20)\n"
    code += "for i in range(0, len(b), 4096): b[i] = 1\nsys.stdout.write('ok')\n"
    code += "sys.stdout.flush()\ntime.sleep(1000)\n"
    child = box.spawn_gated(sys.executable, "-S", "-c", code, stdout=subprocess.PIPE)
    cg.add_pid(child.pid)
    go(child)
    assert child.stdout is not None and child.stdout.read(2) == b"ok"
    s = cg.stats()
    assert s.pids.current == 1 and s.pids.limit == 50
    assert s.memory.usage.limit == 256 << 20
    assert s.memory.usage.usage >= 8 << 20
    assert s.memory.raw["anon"] >= 8 << 20
    assert s.cpu.usage.total > 0 and s.cpu.usage.user > 0
    assert s.memory.usage.max >= 8 << 20  # memory.peak
    # no swap limit set: memory+swap is unlimited, its use at least the memory's
    assert s.memory.swap.limit == UNLIMITED
    assert s.memory.swap.usage >= s.memory.usage.usage
    assert set(s.hugetlb) == set(hugetlb.host_sizes())
    assert all(h.usage == 0 for h in s.hugetlb.values())
    # Docker's stats document from the same cgroup (GET /containers/{id}/stats, v2 shape)
    from bulkhead.engine.stats import Sampler

    doc = Sampler(cg, name="/t", container_id="x", pid=child.pid, networks=False).sample()
    assert doc is not None
    mem = doc["memory_stats"]
    assert mem["limit"] == 256 << 20 and mem["usage"] >= 8 << 20
    assert "max_usage" not in mem and mem["stats"]["anon"] >= 8 << 20
    assert "inactive_file" in mem["stats"] and "total_inactive_file" not in mem["stats"]
    assert doc["pids_stats"] == {"current": 1, "limit": 50}
    cpu = doc["cpu_stats"]
    assert cpu["cpu_usage"]["total_usage"] > 0 and "percpu_usage" not in cpu["cpu_usage"]
    assert cpu["system_cpu_usage"] > 0 and cpu["online_cpus"] >= 1
    assert doc["blkio_stats"]["io_serviced_recursive"] is None


def test_oom_kill_is_reported(box: Box) -> None:
    cg = box.cg
    cg.create()
    cg.apply(LinuxResources(memory=LinuxMemory(limit=32 << 20, swap=32 << 20)))
    code = "import sys\nsys.stdin.readline()\nb = bytearray(200 << 20)\n"
    code += "for i in range(0, len(b), 4096): b[i] = 1\n"
    child = box.spawn_gated(sys.executable, "-S", "-c", code)
    cg.add_pid(child.pid)
    with cg.oom_events() as watcher:
        assert watcher.wait(0) == 0
        go(child)
        events = watcher.wait(120)
        assert events is not None and events >= 1
        assert child.wait(timeout=60) == -signal.SIGKILL
        cg.destroy()
        assert watcher.wait(10) is None  # the cgroup is gone


def test_sigkill_reaches_a_frozen_container(box: Box) -> None:
    """``delete --force`` of a paused container: on v2 SIGKILL needs no thaw."""
    cg = box.cg
    cg.create()
    # exec: one process, the shell become sleep (dash forks a last command;
    # the shell's own cmdline names "sleep" too, so wait for argv[0])
    child = box.spawn_gated("sh", "-c", "read x; exec sleep 1000")
    cg.add_pid(child.pid)
    go(child)
    assert wait_for(
        lambda: (
            cg.pids() == [child.pid]
            and Path(f"/proc/{child.pid}/cmdline").read_bytes().startswith(b"sleep\0")
        )
    )
    cg.freeze()
    cg.kill_all(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    assert wait_for(lambda: cg.pids() == [])
    cg.destroy()
    assert not cg.exists()


def test_updates_to_unlimited_and_unified_last(box: Box) -> None:
    cg = box.cg
    cg.create()
    d = box.dir
    cg.apply(
        LinuxResources(
            memory=LinuxMemory(limit=64 << 20, swap=128 << 20),
            cpu=LinuxCPU(quota=20000, period=100000, burst=10000, idle=1),
            pids=LinuxPids(limit=10),
        )
    )
    assert read(f"{d}/memory.swap.max") == str(64 << 20)
    assert read(f"{d}/cpu.max.burst") == "10000"
    assert read(f"{d}/cpu.idle") == "1"
    # -1 (and pids 0) mean "no limit": max, and no memory limit lifts the swap one too
    cg.apply(
        LinuxResources(
            memory=LinuxMemory(limit=-1),
            cpu=LinuxCPU(quota=-1, idle=0),
            pids=LinuxPids(limit=0),
            unified={"pids.max": "7", "memory.high": "max"},
        )
    )
    assert read(f"{d}/memory.max") == "max"
    assert read(f"{d}/memory.swap.max") == "max"
    assert read(f"{d}/cpu.max") == "max 100000"
    assert read(f"{d}/cpu.idle") == "0"
    assert read(f"{d}/pids.max") == "7"  # the unified entry is written last: it wins
    assert read(f"{d}/memory.high") == "max"


def test_destroy_refuses_a_busy_cgroup(box: Box) -> None:
    cg = box.cg
    cg.create()
    child = box.spawn_gated("sh", "-c", "read x; exec sleep 1000")
    cg.add_pid(child.pid)
    with pytest.raises(CgroupError, match=rf"still busy \(processes left: \[{child.pid}\]\)"):
        cg.destroy()
    assert cg.exists()
    cg.kill_all(signal.SIGKILL)
    assert child.wait(timeout=30) == -signal.SIGKILL
    cg.destroy()
    assert not cg.exists()


def test_relative_path_below_a_cgroup_with_processes(box: Box) -> None:
    """A runtime started in a service cgroup (its own) with a relative cgroupsPath.

    cgroup v2's "no internal processes" rule: a cgroup that holds processes
    cannot enable domain controllers for its children, so the container's
    cgroup below it lacks them, and a limit needing one must say why.
    """
    service = f"{box.dir}/svc"
    box.cg.create()
    os.mkdir(service)
    code = (
        "import sys\n"
        "sys.stdin.readline()\n"
        "from bulkhead.cgroups import new_manager\n"
        "from bulkhead.errors import CgroupError\n"
        "from bulkhead.oci.runtime_spec import LinuxMemory, LinuxPids, LinuxResources\n"
        "cg = new_manager('ctr')\n"
        "print(cg.path())\n"
        "cg.create()\n"
        "try:\n"
        "    cg.apply(LinuxResources(pids=LinuxPids(limit=5)))\n"
        "    print('pids applied')\n"
        "    cg.apply(LinuxResources(memory=LinuxMemory(limit=64 << 20)))\n"
        "    print('memory applied')\n"
        "except CgroupError as exc:\n"
        "    print(exc)\n"
        "cg.destroy()\n"
    )
    child = box.spawn_gated(sys.executable, "-c", code, stdout=subprocess.PIPE)
    fs.write(f"{service}/cgroup.procs", str(child.pid))
    go(child)
    assert child.stdout is not None
    out = child.stdout.read().decode().splitlines()
    assert child.wait(timeout=60) == 0
    assert out[0] == f"{service}/ctr"
    # pids (like cpu and cpuset) is a threaded controller, exempt from the rule
    assert out[1] == "pids applied"
    assert out[2].startswith("linux.resources.memory.limit: the memory controller is not enabled")
    assert f"{service} holds processes" in out[2]


# ------------------------------------------------------------------ devices (eBPF)

# A child that, once told to go, tries to open each path read-only and prints errno (0: opened).
_OPEN_CODE = """
import os, sys
sys.stdin.readline()
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_NONBLOCK))
        print(0)
    except OSError as exc:
        print(exc.errno)
"""


def try_open(box: Box, *paths: str) -> list[int]:
    child = box.spawn_gated(sys.executable, "-S", "-c", _OPEN_CODE, *paths, stdout=subprocess.PIPE)
    box.cg.add_pid(child.pid)
    go(child)
    assert child.stdout is not None
    out = child.stdout.read().decode().split()
    assert child.wait(timeout=60) == 0
    return [int(x) for x in out]


def test_device_rules_are_enforced(box: Box) -> None:
    """The default rules: the standard nodes open, others (here /dev/kmsg, c 1:11) do not."""
    cg = box.cg
    cg.create()
    assert devicefilter.attached(box.dir) == []
    cg.apply(None, initial=True)
    assert len(devicefilter.attached(box.dir)) == 1
    assert try_open(box, "/dev/null", "/dev/zero", "/dev/kmsg") == [0, 0, errno.EPERM]
    if IN_GUEST:  # a node made inside: mknod is allowed, opening it is not
        node = f"/dev/bulkhead-test-{uuid.uuid4().hex[:8]}"
        try:
            mknod = box.spawn_gated("sh", "-c", f"read x; exec mknod {node} c 1 11")
            cg.add_pid(mknod.pid)
            go(mknod)
            assert mknod.wait(timeout=30) == 0
            assert try_open(box, node) == [errno.EPERM]
        finally:
            if os.path.exists(node):
                os.unlink(node)
    # an update with rules replaces the program (one stays attached)
    kmsg = LinuxDeviceCgroup(allow=True, type="c", major=1, minor=11, access="r")
    cg.apply(LinuxResources(devices=[LinuxDeviceCgroup(allow=False, access="rwm"), kmsg]))
    assert len(devicefilter.attached(box.dir)) == 1
    assert try_open(box, "/dev/kmsg", "/dev/null") == [0, 0]
    # an update without rules leaves them alone
    cg.apply(LinuxResources(pids=LinuxPids(limit=20)))
    assert try_open(box, "/dev/kmsg") == [0]
    # allow all (a privileged container)
    # rules again: the standard ones only, then allow all (a privileged container)
    cg.apply(LinuxResources(devices=[LinuxDeviceCgroup(allow=False, access="rwm")]))
    assert try_open(box, "/dev/kmsg") == [errno.EPERM]
    cg.apply(LinuxResources(devices=[LinuxDeviceCgroup(allow=True, access="rwm")]))
    assert try_open(box, "/dev/kmsg") == [0]
    assert len(devicefilter.attached(box.dir)) == 1


# ------------------------------------------------------------------ block I/O (io controller)


class BlockDevice:
    def __init__(self, name: str) -> None:
        self.node = f"/dev/{name}"
        major, minor = read(f"/sys/block/{name}/dev").split(":")
        self.major, self.minor = int(major), int(minor)
        self.key = f"{major}:{minor}"


@pytest.fixture(scope="module")
def nullb() -> Iterator[BlockDevice]:
    """null_blk's /dev/nullb0: a block device whose I/O costs nothing (the guest has no disk).

    Only reached in the cgroup2 guest (the conftest skips this suite elsewhere).
    """
    if not os.path.exists("/sys/block/nullb0"):
        if not IN_GUEST:
            pytest.skip("loads null_blk: only in the vmtest guest (make test-cgroupv2)")
        r = subprocess.run(["modprobe", "null_blk", "nr_devices=1", "gb=1"], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"no null_blk module: {r.stderr.decode().strip()}")
    assert wait_for(lambda: os.path.exists("/dev/nullb0"), 10)
    yield BlockDevice("nullb0")


def test_io_throttles_weights_and_stats(box: Box, nullb: BlockDevice) -> None:
    cg = box.cg
    cg.create()
    d = box.dir
    dev = (nullb.major, nullb.minor)
    cg.apply(
        LinuxResources(
            block_io=LinuxBlockIO(
                weight=500,
                throttle_read_bps_device=[LinuxThrottleDevice(*dev, rate=64 << 20)],
                throttle_write_iops_device=[LinuxThrottleDevice(*dev, rate=100)],
            )
        )
    )
    limits = f"{nullb.key} rbps={64 << 20} wbps=max riops=max wiops=100"
    assert read(f"{d}/io.max") == limits
    weight_file = f"{d}/io.bfq.weight" if os.path.exists(f"{d}/io.bfq.weight") else f"{d}/io.weight"
    want = "500" if weight_file.endswith("bfq.weight") else str(blkio.weight_to_io_weight(500))
    assert read(weight_file).splitlines()[0] == f"default {want}"
    # rate 0 removes a throttle
    cg.apply(
        LinuxResources(
            block_io=LinuxBlockIO(throttle_write_iops_device=[LinuxThrottleDevice(*dev, rate=0)])
        )
    )
    assert read(f"{d}/io.max") == f"{nullb.key} rbps={64 << 20} wbps=max riops=max wiops=max"
    # reads in the cgroup are counted per device
    child = box.spawn_gated(
        "sh", "-c", f"read x; dd if={nullb.node} of=/dev/null bs=4096 count=16 iflag=direct"
    )
    cg.add_pid(child.pid)
    go(child)
    assert child.wait(timeout=60) == 0
    s = cg.stats().blkio
    assert [(e.major, e.minor, e.op, e.value) for e in s.io_service_bytes_recursive] == [
        (*dev, "Read", 16 * 4096),
        (*dev, "Write", 0),
    ]
    assert (*dev, "Read", 16) in [
        (e.major, e.minor, e.op, e.value) for e in s.io_serviced_recursive
    ]


def test_io_errors_name_the_device_and_the_reason(box: Box, nullb: BlockDevice) -> None:
    cg = box.cg
    cg.create()
    no_such = LinuxThrottleDevice(major=nullb.major, minor=200, rate=1000)
    with pytest.raises(
        CgroupError,
        match=rf"^linux\.resources\.blockIO\.throttleReadBpsDevice\[0\]: no block device {nullb.major}:200 ",
    ):
        cg.apply(LinuxResources(block_io=LinuxBlockIO(throttle_read_bps_device=[no_such])))
    # a per-device weight needs BFQ on that device (or iocost enabled on it)
    per_device = LinuxWeightDevice(major=nullb.major, minor=nullb.minor, weight=300)
    with pytest.raises(
        CgroupError,
        match=r"^linux\.resources\.blockIO\.weightDevice\[0\]\.weight: .*BFQ",
    ):
        cg.apply(LinuxResources(block_io=LinuxBlockIO(weight_device=[per_device])))
