"""``linux.resources`` enforced by the real kernel: containers run through ``bulkhead-runtime``.

The v1 (hybrid host) half of issue 3; ``tests/cgroupv2/test_enforcement_v2.py``
is the cgroup v2 half, at the library level in the VM lane. Each test runs
a busybox container whose cgroup is below the ``cgroup_parent`` fixture's
``/bulkhead/test-<random>``, makes it hit one limit, and checks what the
kernel did (not what bulkhead wrote). The ``rt`` fixture deletes every
container (``delete --force``) and ``cgroup_parent`` checks that no cgroup
is left, even when a test fails.

Every test prints its measured figures on a line starting with
``ENFORCEMENT v1`` (``pytest -s`` shows them).
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.integration.runtime_helpers import RUNTIME, RuntimeCLI, alive

from bulkhead.cgroups import detect, new_manager

if detect().version != 1:
    pytest.skip("this host is not cgroup v1 (see tests/cgroupv2)", allow_module_level=True)

MiB = 1 << 20

#: The first thing every container here does: wait (without forking) for the test's go.
GATE = "mkfifo /tmp/go && read x < /tmp/go; "


def report(what: str, **figures: object) -> None:
    text = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\nENFORCEMENT v1 {what}: {text}")


def wait_for(cond: Callable[[], object], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


class Ctr:
    """A detached container: its init's pid, its files and its cgroup's files."""

    def __init__(self, rt: RuntimeCLI, cid: str, bundle: Path, cgroups_path: str) -> None:
        rt("run", "-d", "--bundle", str(bundle), cid)
        self.rt, self.cid = rt, cid
        self.pid: int = rt.state(cid)["pid"]
        self.cg = new_manager(cgroups_path)

    def file(self, path: str) -> Path:
        """A file of the container's root filesystem, seen from the host."""
        return Path(f"/proc/{self.pid}/root{path}")

    def cgfile(self, controller: str, name: str) -> Path:
        return Path(self.cg.path(controller)) / name

    def read_int(self, controller: str, name: str) -> int:
        return int(self.cgfile(controller, name).read_text())

    def keyed(self, controller: str, name: str) -> dict[str, int]:
        lines = self.cgfile(controller, name).read_text().splitlines()
        return {k: int(v) for k, v in (line.split() for line in lines)}

    def go(self, fifo: str = "/tmp/go", timeout: float = 10.0) -> None:
        """Wake the container's ``read x < fifo`` (waits until it is reading)."""
        path = self.file(fifo)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:  # no fifo yet, or nobody reading it yet
                if exc.errno not in (errno.ENOENT, errno.ENXIO) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
                continue
            try:
                os.write(fd, b"go\n")
            finally:
                os.close(fd)
            return

    def stats(self) -> dict[str, Any]:
        event = json.loads(self.rt("events", "--stats", self.cid).stdout)
        assert event["type"] == "stats"
        data: dict[str, Any] = event["data"]
        return data


StartCtr = Callable[..., Ctr]


@pytest.fixture
def ctr(rt: RuntimeCLI, bundle: Callable[..., Path], cid: str, cgroup_parent: str) -> StartCtr:
    """``ctr(args, resources, process=None)``: a detached busybox container with those resources."""

    def start(
        args: list[str], resources: dict[str, Any], process: dict[str, Any] | None = None
    ) -> Ctr:
        config: dict[str, Any] = {"process": process} if process else {}
        b = bundle(args, linux={"resources": resources}, **config)
        return Ctr(rt, cid, b, f"{cgroup_parent}/{cid}")

    return start


# ------------------------------------------------------------------ memory


@pytest.mark.parametrize("with_swap_limit", [True, False], ids=["memsw", "memory-only"])
def test_memory_hog_is_oom_killed_and_reported(
    ctr: StartCtr, rt: RuntimeCLI, with_swap_limit: bool
) -> None:
    """dd's 64 MiB buffer under a 32 MiB limit: the OOM killer, then ``events``' oom."""
    limit = 32 * MiB
    memory = {"limit": limit, "swap": limit} if with_swap_limit else {"limit": limit}
    script = (
        GATE + "dd if=/dev/zero of=/dev/null bs=64M count=1; echo $? > /tmp/dd.rc; exec sleep 60"
    )
    c = ctr(["sh", "-c", script], {"memory": memory})
    assert c.read_int("memory", "memory.limit_in_bytes") == limit
    if with_swap_limit:
        assert c.read_int("memory", "memory.memsw.limit_in_bytes") == limit
    events = subprocess.Popen(
        [RUNTIME, "--root", str(rt.root), "events", "--interval", "1s", c.cid],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert events.stdout is not None
        first = json.loads(events.stdout.readline())  # the watcher is set up
        assert first["type"] == "stats"
        t0 = time.monotonic()
        c.go()
        oom_after = None
        deadline = t0 + 60
        while time.monotonic() < deadline:
            line = events.stdout.readline()
            if not line:
                break
            event = json.loads(line)
            if event["type"] == "oom":
                oom_after = time.monotonic() - t0
                assert event == {"type": "oom", "id": c.cid}
                break
        assert oom_after is not None, "no oom event within 60 s"
        assert wait_for(lambda: c.file("/tmp/dd.rc").exists())
        dd_status = int(c.file("/tmp/dd.rc").read_text())
        assert dd_status == 128 + 9  # SIGKILL
        # the init (the shell) survived: only dd was killed
        assert rt.state(c.cid)["status"] == "running" and alive(c.pid)
        mem = c.stats()["memory"]
        oom_control = c.keyed("memory", "memory.oom_control")
        failcnt = c.read_int("memory", "memory.failcnt")
        memsw_failcnt = c.read_int("memory", "memory.memsw.failcnt")
        report(
            f"memory ({'memory+swap' if with_swap_limit else 'memory only'} limit)",
            limit_mib=limit // MiB,
            oom_event_after_s=f"{oom_after:.3f}",
            dd_exit=dd_status,
            peak_mib=f"{mem['usage']['max'] / MiB:.1f}",
            stats_failcnt=mem["usage"]["failcnt"],
            stats_memsw_failcnt=mem["swap"]["failcnt"],
            oom_kill=oom_control.get("oom_kill"),
        )
        assert mem["usage"]["limit"] == limit
        assert 0 < mem["usage"]["max"] <= limit
        if with_swap_limit:
            assert mem["swap"]["limit"] == limit
            assert mem["swap"]["max"] <= limit
        assert oom_control["oom_kill"] == 1
        assert oom_control["under_oom"] == 0
        # the stats say what the kernel counted ...
        assert (mem["usage"]["failcnt"], mem["swap"]["failcnt"]) == (failcnt, memsw_failcnt)
        # ... which is nothing at all with memory+swap at the limit: the
        # charge fails on memsw first, and Linux 6.12+ counts failures only
        # on the memory counter of a v1 cgroup (page_counter.track_failcnt)
        if not with_swap_limit:
            assert failcnt > 0
    finally:
        if events.poll() is None:
            events.kill()
        events.wait()


# ------------------------------------------------------------------ pids

# A fork bomb: every process forks copies of itself in a loop until a fork
# fails (busybox sh then exits with "can't fork"), so the population churns
# at the limit; /tmp/halt stops it. The init starts it next to a job that
# waits on a fifo, and then waits: ash's ``wait`` reaps any child while a job
# of its own runs, so the bomb's orphans do not stay as zombies (which would
# hold the limit). The init forks nothing while the bomb runs.
BOMB = (
    "mkfifo /tmp/go /tmp/resume && read x < /tmp/go; "
    "b() { while [ ! -e /tmp/halt ]; do b & done; }; "
    "(read x < /tmp/resume) & b 2>>/tmp/bomb.err & wait; "
    "echo survived > /tmp/survived; exec sleep 60"
)


def test_fork_bomb_stops_at_the_pids_limit(ctr: StartCtr, rt: RuntimeCLI) -> None:
    limit = 24
    c = ctr(["sh", "-c", BOMB], {"pids": {"limit": limit}})
    assert c.read_int("pids", "pids.max") == limit
    c.go()
    # pids.current counts tasks, exited ones not yet reaped included, and may
    # read above the limit for an instant: the kernel adds a fork's charge
    # first and takes it back when it is over the limit (kernel/cgroup/pids.c,
    # pids_try_charge). pids.peak only records charges that stuck, and the
    # tasks file lists the live tasks.
    tasks_file = c.cgfile("pids", "tasks")
    tasks: list[int] = []
    current: list[int] = []
    t0 = time.monotonic()
    reached_at = None
    while time.monotonic() - t0 < 2.0:
        tasks.append(len(tasks_file.read_text().split()))
        current.append(c.read_int("pids", "pids.current"))
        if reached_at is None and current[-1] >= limit:
            reached_at = time.monotonic() - t0
    c.file("/tmp/halt").touch()
    # the bomb dies out: the init and its fifo job are left ...
    assert wait_for(lambda: c.read_int("pids", "pids.current") == 2, 30)
    assert rt.state(c.cid)["status"] == "running" and alive(c.pid)
    # ... and the init goes on
    c.go("/tmp/resume")
    assert wait_for(lambda: c.file("/tmp/survived").exists())
    assert wait_for(lambda: c.read_int("pids", "pids.current") == 1)
    # and the container takes new processes again
    assert rt("exec", c.cid, "echo", "still here").stdout == "still here\n"
    # the bomb's processes append their errors concurrently: busybox writes
    # "sh: " and the rest separately, so lines may interleave
    errors = c.file("/tmp/bomb.err").read_text()
    eagain = "can't fork: " + os.strerror(errno.EAGAIN)
    fork_failures = c.keyed("pids", "pids.events").get("max", 0)
    peak_file = c.cgfile("pids", "pids.peak")
    peak = int(peak_file.read_text()) if peak_file.exists() else None
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
    # Sampling may miss the moment on a loaded machine; the kernel's own
    # pids.peak (where it exists) records that the limit was reached.
    assert reached_at is not None or peak == limit
    assert max(tasks) <= limit
    assert peak is None or peak == limit
    assert fork_failures > 0
    # every fork that failed failed with EAGAIN
    assert errors.count(eagain) > 0
    assert errors.replace(eagain, "").replace("sh: ", "").split() == []


# ------------------------------------------------------------------ cpu

HOG = ["sh", "-c", "while :; do :; done"]


def cpu_share(c: Ctr, window: float = 2.0) -> tuple[float, float]:
    """(cores used, seconds measured): the cgroup's CPU time over a wall-clock window."""
    u0, t0 = c.read_int("cpuacct", "cpuacct.usage"), time.monotonic()
    time.sleep(window)
    u1, t1 = c.read_int("cpuacct", "cpuacct.usage"), time.monotonic()
    return (u1 - u0) / 1e9 / (t1 - t0), t1 - t0


def test_cpu_quota_holds_a_hog_to_half_a_core(ctr: StartCtr) -> None:
    c = ctr(HOG, {"cpu": {"quota": 50000, "period": 100000}})
    assert c.read_int("cpu", "cpu.cfs_quota_us") == 50000
    assert c.read_int("cpu", "cpu.cfs_period_us") == 100000
    time.sleep(0.3)  # past the first period
    # The quota is a ceiling: every window must stay under 60%. Reaching 40%
    # needs a free core, which other load on the host may take: up to three
    # windows for that.
    shares: list[float] = []
    window = 0.0
    while len(shares) < 3 and (not shares or shares[-1] < 0.40):
        share, window = cpu_share(c)
        shares.append(share)
    throttling = c.stats()["cpu"]["throttling"]
    report(
        "cpu",
        quota_period="50000/100000",
        used_pct_of_a_core="/".join(f"{x * 100:.1f}" for x in shares),
        window_s=f"{window:.2f}",
        periods=throttling["periods"],
        throttled_periods=throttling["throttledPeriods"],
    )
    assert max(shares) <= 0.60
    assert max(shares) >= 0.40
    assert throttling["throttledPeriods"] > 0


def test_cpuset_pins_the_container_to_cpu_1(ctr: StartCtr) -> None:
    if 1 not in os.sched_getaffinity(0):
        pytest.skip("needs CPU 1")
    c = ctr(HOG, {"cpu": {"cpus": "1"}})
    assert c.cgfile("cpuset", "cpuset.cpus").read_text().strip() == "1"
    status = Path(f"/proc/{c.pid}/status").read_text()
    allowed = next(
        line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list")
    )
    assert allowed == "1"
    assert os.sched_getaffinity(c.pid) == {1}
    before = [int(x) for x in c.cgfile("cpuacct", "cpuacct.usage_percpu").read_text().split()]
    time.sleep(1.0)
    after = [int(x) for x in c.cgfile("cpuacct", "cpuacct.usage_percpu").read_text().split()]
    per_cpu = [(a - b) / 1e9 for a, b in zip(after, before, strict=True)]
    last_cpu = int(Path(f"/proc/{c.pid}/stat").read_text().rsplit(")", 1)[1].split()[36])
    report(
        "cpuset",
        cpus="1",
        cpus_allowed_list=allowed,
        last_ran_on_cpu=last_cpu,
        cpu_s_per_cpu_over_1s=[f"{x:.3f}" for x in per_cpu],
    )
    assert last_cpu == 1
    assert per_cpu[0] == 0
    # It ran on CPU 1 (not a full second of it: other work on a busy machine shares that CPU).
    assert per_cpu[1] > 0.1


# ------------------------------------------------------------------ devices

# Probes each device with busybox dd (count=0: open, no I/O) and prints
# "<label>: ok" or "<label>: <strerror>". The nodes are made inside (mknod
# is allowed for every char and block device by the default rules).
DEVICE_PROBE = """
p() { l=$1; shift; if o=$(dd "$@" count=0 conv=notrunc 2>&1); then echo "$l: ok"; else echo "$l: ${o##*: }"; fi; }
mknod /dev/t-zero c 1 5 && mknod /dev/t-kmsg c 1 11 && mknod /dev/t-loop b 7 0 && echo "mknod: ok"
p null-rw if=/dev/null of=/dev/null
p zero-r if=/dev/zero of=/dev/null
p t-zero-r if=/dev/t-zero of=/dev/null
p t-kmsg-w if=/dev/null of=/dev/t-kmsg
p t-kmsg-r if=/dev/t-kmsg of=/dev/null
p t-loop-r if=/dev/t-loop of=/dev/null
"""

#: mknod needs CAP_MKNOD; CAP_SYSLOG makes the kmsg driver itself let a reader open it
#: (kernel.dmesg_restrict), so that an EPERM there comes from the devices cgroup.
DEVICE_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_MKNOD", "CAP_SYSLOG"]


def probe_devices(
    rt: RuntimeCLI, bundle: Callable[..., Path], cid: str, cgroups_path: str, rules: list[Any]
) -> dict[str, str]:
    caps = {k: DEVICE_CAPS for k in ("bounding", "effective", "permitted")}
    b = bundle(
        ["sh", "-c", DEVICE_PROBE],
        linux={"cgroupsPath": cgroups_path, "resources": {"devices": rules}},
        process={"capabilities": caps},
    )
    out = rt("run", "--bundle", str(b), cid).stdout
    return dict(line.split(": ", 1) for line in out.splitlines())


def test_devices_denied_cannot_be_opened_allowed_can(
    rt: RuntimeCLI, bundle, cid: str, cgroup_parent: str
) -> None:
    eperm = os.strerror(errno.EPERM)
    rules = [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # /dev/null
        {"allow": False, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # /dev/zero
        {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "w"},  # /dev/kmsg
    ]
    got = probe_devices(rt, bundle, cid, f"{cgroup_parent}/{cid}", rules)
    # runc's semantics: the spec's rules, then the default devices (which
    # include /dev/zero: the spec's deny of 1:5 is overridden, as with runc)
    assert got == {
        "mknod": "ok",
        "null-rw": "ok",
        "zero-r": "ok",
        "t-zero-r": "ok",
        "t-kmsg-w": "ok",  # the spec's rule allows w ...
        "t-kmsg-r": eperm,  # ... but not r
        "t-loop-r": eperm,  # no rule: denied (mknod only)
    }
    # the control: the same probes with those two allowed open, so the EPERMs
    # above came from the devices cgroup and not from the drivers
    control = [*rules, {"allow": True, "type": "c", "major": 1, "minor": 11, "access": "rw"}]
    control.append({"allow": True, "type": "b", "major": 7, "minor": 0, "access": "r"})
    got_control = probe_devices(rt, bundle, cid + "-c", f"{cgroup_parent}/{cid}-c", control)
    report("devices", denied=got, allowed_in_control=got_control)
    assert got_control["t-kmsg-r"] == "ok"
    assert got_control["t-loop-r"] == "ok"


# ------------------------------------------------------------------ freezer


def test_paused_container_makes_no_progress_and_resumes(ctr: StartCtr, rt: RuntimeCLI) -> None:
    c = ctr(["sh", "-c", "while :; do echo >> /tmp/count; done"], {})
    count = c.file("/tmp/count")

    def size() -> int:
        return count.stat().st_size if count.exists() else 0

    def cpu() -> int:
        return c.read_int("cpuacct", "cpuacct.usage")

    assert wait_for(lambda: size() > 0)
    t0 = time.monotonic()
    rt("pause", c.cid)
    pause_s = time.monotonic() - t0
    assert rt.state(c.cid)["status"] == "paused"
    assert c.cgfile("freezer", "freezer.state").read_text().strip() == "FROZEN"
    size0, cpu0 = size(), cpu()
    time.sleep(1.0)
    size1, cpu1 = size(), cpu()
    t0 = time.monotonic()
    rt("resume", c.cid)
    resume_s = time.monotonic() - t0
    assert rt.state(c.cid)["status"] == "running"
    assert wait_for(lambda: size() > size1, 5)
    time.sleep(0.5)
    size2, cpu2 = size(), cpu()
    report(
        "freezer",
        pause_cli_s=f"{pause_s:.3f}",
        resume_cli_s=f"{resume_s:.3f}",
        counter_while_frozen_1s=size1 - size0,
        cpu_ns_while_frozen_1s=cpu1 - cpu0,
        counter_after_resume=size2 - size1,
        cpu_ms_after_resume=(cpu2 - cpu1) // 1_000_000,
    )
    assert size1 == size0, "a paused container made progress"
    assert cpu1 == cpu0, "a paused container used CPU"
    assert size2 > size1 and cpu2 > cpu1
