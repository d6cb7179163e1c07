"""``linux.resources`` enforced by a real cgroup-v2-only kernel (the VM lane).

The v2 half of issue 3; ``tests/integration/test_cgroups_enforcement.py`` is
the v1 half, through ``bulkhead-runtime``. The runtime's CLI is too slow
under the lane's software emulation, so these tests work at the library
level: plain children (busybox, whose ``sh`` and ``dd`` behave as in the v1
tests' containers) moved into a ``new_manager("/bulkhead/test-<random>")``
cgroup configured with ``apply``. Each test makes its children hit one limit
and checks what the kernel did. The fixture kills every child and anything
left in the cgroup, thaws it and removes it, even when a test fails.

Every test prints its measured figures on a line starting with
``ENFORCEMENT v2`` (``pytest -s`` shows them). Under emulation code runs
20-40x slower than on a host: the figures that are rates (CPU share) hold,
the times do not.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bulkhead.cgroups import CgroupManager, fs, new_manager
from bulkhead.oci.runtime_spec import (
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxMemory,
    LinuxPids,
    LinuxResources,
)

ROOT = "/sys/fs/cgroup"
MiB = 1 << 20
#: In the vmtest guest (thrown away afterwards): device nodes may be made there.
IN_GUEST = os.path.isdir("/run/cgroup2-vm")
BUSYBOX = shutil.which("busybox") or "/bin/busybox"


def report(what: str, **figures: object) -> None:
    text = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\nENFORCEMENT v2 {what}: {text}")


def wait_for(cond: Callable[[], object], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


class Box:
    """A test's own cgroup, its files, a scratch directory and the children it started."""

    def __init__(self, tmp: Path) -> None:
        self.path = f"/bulkhead/test-{uuid.uuid4().hex[:8]}"
        self.cg: CgroupManager = new_manager(self.path)
        self.dir = ROOT + self.path
        self.tmp = tmp
        self.children: list[subprocess.Popen[bytes]] = []

    def sh(self, script: str, stdout: int | None = None) -> subprocess.Popen[bytes]:
        """busybox ``sh -c 'read x; <script>'``, moved into the cgroup; it starts at :meth:`go`."""
        p = subprocess.Popen(
            [BUSYBOX, "sh", "-c", "read x; " + script], stdin=subprocess.PIPE, stdout=stdout
        )
        self.children.append(p)
        self.cg.add_pid(p.pid)
        return p

    @staticmethod
    def go(p: subprocess.Popen[bytes]) -> None:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
        p.stdin.close()

    def read_int(self, name: str) -> int:
        return int(Path(f"{self.dir}/{name}").read_text())

    def keyed(self, name: str) -> dict[str, int]:
        lines = Path(f"{self.dir}/{name}").read_text().splitlines()
        return {k: int(v) for k, v in (line.split() for line in lines)}


@pytest.fixture
def box() -> Iterator[Box]:
    if not os.path.exists(BUSYBOX):
        pytest.skip("needs busybox (Debian's busybox-static)")
    with tempfile.TemporaryDirectory(prefix="bulkhead-enf-") as tmp:
        b = Box(Path(tmp))
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
            fs.remove_tree(b.dir, time.monotonic() + 30)
            assert not os.path.exists(b.dir)


# ------------------------------------------------------------------ memory


def test_memory_hog_is_oom_killed_and_reported(box: Box) -> None:
    """dd's 64 MiB buffer under a 32 MiB limit (swap too): killed, counted, announced."""
    limit = 32 * MiB
    cg = box.cg
    cg.create()
    cg.apply(LinuxResources(memory=LinuxMemory(limit=limit, swap=limit)))
    assert box.read_int("memory.max") == limit
    if os.path.exists(f"{box.dir}/memory.swap.max"):
        assert box.read_int("memory.swap.max") == 0
    dd = box.sh(f"exec {BUSYBOX} dd if=/dev/zero of=/dev/null bs=64M count=1")
    with cg.oom_events() as watcher:
        assert watcher.wait(0) == 0
        t0 = time.monotonic()
        box.go(dd)
        kills = watcher.wait(120)
        oom_after = time.monotonic() - t0
        assert dd.wait(timeout=60) == -signal.SIGKILL
    events = box.keyed("memory.events")
    mem = cg.stats().memory
    report(
        "memory (memory+swap limit)",
        limit_mib=limit // MiB,
        oom_reported_after_s=f"{oom_after:.3f}",
        watcher_kills=kills,
        dd_killed_by="SIGKILL",
        peak_mib=f"{mem.usage.max / MiB:.1f}",
        stats_failcnt=mem.usage.failcnt,
        memory_events=events,
    )
    assert kills == 1
    assert events["oom_kill"] == 1 and events["oom"] >= 1
    assert events["max"] > 0
    assert mem.usage.limit == limit
    assert mem.usage.failcnt == events["max"]  # runc: failcnt is memory.events' max
    assert 0 < mem.usage.max <= limit


# ------------------------------------------------------------------ pids


def test_fork_bomb_stops_at_the_pids_limit(box: Box) -> None:
    """The v1 test's bomb: every process forks copies of itself until a fork fails.

    The top process starts it next to a job waiting on a fifo, then waits:
    ash's ``wait`` reaps the bomb's orphans while a job of its own runs, and
    the top forks nothing while the bomb runs, so it survives.
    """
    limit = 16
    t = box.tmp
    os.mkfifo(t / "resume")
    cg = box.cg
    cg.create()
    cg.apply(LinuxResources(pids=LinuxPids(limit=limit)))
    assert box.read_int("pids.max") == limit
    top = box.sh(
        f"b() {{ while [ ! -e {t}/halt ]; do b & done; }}; "
        f"(read x < {t}/resume) & b 2>>{t}/bomb.err & wait; "
        f"echo survived > {t}/survived; exec {BUSYBOX} sleep 600"
    )
    box.go(top)
    tasks: list[int] = []
    current: list[int] = []
    t0 = time.monotonic()
    reached_at = None
    while time.monotonic() - t0 < 4.0:
        tasks.append(len(Path(f"{box.dir}/cgroup.threads").read_text().split()))
        current.append(box.read_int("pids.current"))
        if reached_at is None and current[-1] >= limit:
            reached_at = time.monotonic() - t0
    (t / "halt").touch()
    # the bomb dies out: the top and its fifo job are left, and the top goes on
    assert wait_for(lambda: box.read_int("pids.current") == 2, 60)
    assert top.poll() is None
    fd = os.open(t / "resume", os.O_WRONLY)  # the job reads it already
    os.write(fd, b"go\n")
    os.close(fd)
    assert wait_for(lambda: (t / "survived").exists())
    assert wait_for(lambda: box.read_int("pids.current") == 1)
    assert top.poll() is None
    errors = (t / "bomb.err").read_text()
    eagain = "can't fork: " + os.strerror(errno.EAGAIN)
    fork_failures = box.keyed("pids.events").get("max", 0)
    peak = box.read_int("pids.peak") if os.path.exists(f"{box.dir}/pids.peak") else None
    report(
        "pids",
        limit=limit,
        max_tasks_sampled=max(tasks),
        max_pids_current_sampled=max(current),
        pids_current_above_limit=sum(1 for n in current if n > limit),
        samples=len(tasks),
        limit_reached_after_s=None if reached_at is None else f"{reached_at:.3f}",
        pids_peak=peak,
        fork_failures_counted=fork_failures,
        cant_fork_messages=errors.count(eagain),
        message=eagain,
    )
    assert reached_at is not None
    assert max(tasks) <= limit
    assert peak is None or peak == limit
    assert fork_failures > 0
    assert cg.stats().pids.limit == limit
    # every fork that failed failed with EAGAIN
    assert errors.count(eagain) > 0
    assert errors.replace(eagain, "").replace("sh: ", "").split() == []


# ------------------------------------------------------------------ cpu

HOG = "while :; do :; done"


def test_cpu_quota_holds_a_hog_to_half_a_core(box: Box) -> None:
    cg = box.cg
    cg.create()
    cg.apply(LinuxResources(cpu=LinuxCPU(quota=50000, period=100000)))
    assert Path(f"{box.dir}/cpu.max").read_text().split() == ["50000", "100000"]
    hog = box.sh(HOG)
    box.go(hog)
    time.sleep(0.5)  # past the first periods

    def share(window: float = 2.0) -> float:
        u0, t0 = box.keyed("cpu.stat")["usage_usec"], time.monotonic()
        time.sleep(window)
        u1, t1 = box.keyed("cpu.stat")["usage_usec"], time.monotonic()
        return (u1 - u0) / 1e6 / (t1 - t0)

    # The quota is a ceiling: every window must stay under 60%. Reaching 40%
    # needs a free (virtual) core, which other load may take: up to three
    # windows for that.
    shares: list[float] = []
    while len(shares) < 3 and (not shares or shares[-1] < 0.40):
        shares.append(share())
    throttling = cg.stats().cpu.throttling
    report(
        "cpu",
        quota_period="50000/100000",
        used_pct_of_a_core="/".join(f"{x * 100:.1f}" for x in shares),
        window_s="2.0",
        periods=throttling.periods,
        throttled_periods=throttling.throttled_periods,
    )
    assert max(shares) <= 0.60
    assert max(shares) >= 0.40
    assert throttling.throttled_periods > 0


def test_cpuset_pins_to_cpu_1(box: Box) -> None:
    if 1 not in os.sched_getaffinity(0):
        pytest.skip("needs CPU 1")
    cg = box.cg
    cg.create()
    cg.apply(LinuxResources(cpu=LinuxCPU(cpus="1")))
    assert Path(f"{box.dir}/cpuset.cpus.effective").read_text().strip() == "1"
    hog = box.sh(HOG)
    box.go(hog)
    status = Path(f"/proc/{hog.pid}/status").read_text()
    allowed = next(
        line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list")
    )
    assert os.sched_getaffinity(hog.pid) == {1}
    time.sleep(0.5)
    last_cpu = int(Path(f"/proc/{hog.pid}/stat").read_text().rsplit(")", 1)[1].split()[36])
    report("cpuset", cpus="1", cpus_allowed_list=allowed, last_ran_on_cpu=last_cpu)
    assert allowed == "1"
    assert last_cpu == 1


# ------------------------------------------------------------------ devices (eBPF)


def probe_devices(box: Box, block: str | None) -> dict[str, str]:
    """``<label>: ok`` or ``<label>: <strerror>`` for each open (busybox dd count=0), in the cgroup."""
    script = (
        f'p() {{ l=$1; shift; if o=$({BUSYBOX} dd "$@" count=0 conv=notrunc 2>&1); '
        'then echo "$l: ok"; else echo "$l: ${o##*: }"; fi; }; '
        "p null-rw if=/dev/null of=/dev/null; "
        "p zero-r if=/dev/zero of=/dev/null; "
        "p kmsg-w if=/dev/null of=/dev/kmsg; "
        "p kmsg-r if=/dev/kmsg of=/dev/null; "
    )
    if block:
        script += f"p loop-r if={block} of=/dev/null; "
    child = box.sh(script, subprocess.PIPE)
    box.go(child)
    assert child.stdout is not None
    out = child.stdout.read().decode()
    assert child.wait(timeout=60) == 0
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_devices_denied_cannot_be_opened_allowed_can(box: Box) -> None:
    """The v1 test's rules: deny all, allow /dev/null, deny /dev/zero, allow /dev/kmsg for w.

    runc's semantics: the default devices come after the spec's rules, so
    /dev/zero (1:5) stays open. In the guest a block node (7:0, the loop
    driver's) made with mknod in the cgroup (mknod is allowed by default)
    must not open either.
    """
    eperm = os.strerror(errno.EPERM)
    cg = box.cg
    cg.create()
    block = None
    if IN_GUEST:
        block = f"/dev/bulkhead-test-{uuid.uuid4().hex[:8]}"
    rules = [
        LinuxDeviceCgroup(allow=False, access="rwm"),
        LinuxDeviceCgroup(allow=True, type="c", major=1, minor=3, access="rwm"),
        LinuxDeviceCgroup(allow=False, type="c", major=1, minor=5, access="rwm"),
        LinuxDeviceCgroup(allow=True, type="c", major=1, minor=11, access="w"),
    ]
    cg.apply(LinuxResources(devices=rules), initial=True)
    try:
        if block:
            mknod = box.sh(f"exec {BUSYBOX} mknod {block} b 7 0")
            box.go(mknod)
            assert mknod.wait(timeout=60) == 0
        got = probe_devices(box, block)
        # the control: the same probes with kmsg read and the block node allowed
        control = [
            *rules,
            LinuxDeviceCgroup(allow=True, type="c", major=1, minor=11, access="rw"),
            LinuxDeviceCgroup(allow=True, type="b", major=7, minor=0, access="r"),
        ]
        cg.apply(LinuxResources(devices=control))
        got_control = probe_devices(box, block)
    finally:
        if block and os.path.exists(block):
            os.unlink(block)
    report("devices", denied=got, allowed_in_control=got_control)
    want = {"null-rw": "ok", "zero-r": "ok", "kmsg-w": "ok", "kmsg-r": eperm}
    if block:
        want["loop-r"] = eperm
    assert got == want
    assert got_control["kmsg-r"] == "ok"
    if block:  # opened, or refused by the driver (no loop device there), not by us
        assert got_control["loop-r"] != eperm


# ------------------------------------------------------------------ freezer


def test_frozen_group_makes_no_progress_and_resumes(box: Box) -> None:
    cg = box.cg
    cg.create()
    count = box.tmp / "count"
    counter = box.sh(f"while :; do echo >> {count}; done")
    box.go(counter)

    def size() -> int:
        return count.stat().st_size if count.exists() else 0

    def cpu() -> int:
        return box.keyed("cpu.stat")["usage_usec"]

    assert wait_for(lambda: size() > 0)
    t0 = time.monotonic()
    cg.freeze()
    freeze_s = time.monotonic() - t0
    assert cg.state() == "FROZEN"
    assert box.keyed("cgroup.events")["frozen"] == 1
    size0, cpu0 = size(), cpu()
    time.sleep(1.0)
    size1, cpu1 = size(), cpu()
    t0 = time.monotonic()
    cg.thaw()
    thaw_s = time.monotonic() - t0
    assert cg.state() == "THAWED"
    assert wait_for(lambda: size() > size1, 30)
    time.sleep(0.5)
    size2, cpu2 = size(), cpu()
    report(
        "freezer",
        freeze_s=f"{freeze_s:.3f}",
        thaw_s=f"{thaw_s:.3f}",
        counter_while_frozen_1s=size1 - size0,
        cpu_us_while_frozen_1s=cpu1 - cpu0,
        counter_after_resume=size2 - size1,
        cpu_ms_after_resume=(cpu2 - cpu1) // 1000,
    )
    assert size1 == size0, "a frozen group made progress"
    assert cpu1 == cpu0, "a frozen group used CPU"
    assert size2 > size1 and cpu2 > cpu1
