"""Bad ``linux.resources`` on this host's cgroup v1: one clear line naming the field, nothing changed.

Two levels:

- the v1 manager itself, on cgroups of its own below ``/bulkhead/test-<random>``
  (as tests/integration/test_cgroups_v1.py): every setting file of the
  cgroup is read before and after each rejected ``apply`` and must not
  differ, including when the kernel refuses a write half-way through an
  update (what was written is then put back);
- ``bulkhead-runtime update`` / ``create`` on a running busybox container:
  exit status 1, one line on stderr naming the spec field, the container's
  cgroup unchanged.

Children are killed by PID and the cgroups removed even when a test fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.integration.runtime_helpers import RuntimeCLI, cgroup_dirs

from bulkhead import logs
from bulkhead.cgroups import CgroupManager, detect, fs, new_manager
from bulkhead.errors import CgroupError, SpecError
from bulkhead.oci.runtime_spec import LinuxResources

LAYOUT = detect()
if LAYOUT.version != 1:
    pytest.skip("this host is not cgroup v1 (see tests/cgroupv2)", allow_module_level=True)

#: The files that hold settings (not statistics) in a v1 or hybrid cgroup.
SETTINGS = frozenset(
    {
        "memory.limit_in_bytes",
        "memory.memsw.limit_in_bytes",
        "memory.soft_limit_in_bytes",
        "memory.swappiness",
        "memory.kmem.tcp.limit_in_bytes",
        "cpu.shares",
        "cpu.cfs_quota_us",
        "cpu.cfs_period_us",
        "cpu.cfs_burst_us",
        "cpu.idle",
        "cpu.rt_runtime_us",
        "cpu.rt_period_us",
        "cpuset.cpus",
        "cpuset.mems",
        "pids.max",
        "blkio.weight",
        "blkio.bfq.weight",
        "blkio.bfq.weight_device",
        "blkio.throttle.read_bps_device",
        "blkio.throttle.write_bps_device",
        "blkio.throttle.read_iops_device",
        "blkio.throttle.write_iops_device",
        "devices.list",
        "freezer.state",
        "hugetlb.2MB.max",
        "hugetlb.2MB.limit_in_bytes",
    }
)


def settings(dirs: list[str]) -> dict[str, str]:
    """Every setting of the cgroup in each hierarchy, and memory.oom_control's flag."""
    out: dict[str, str] = {}
    for d in dirs:
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            if name in SETTINGS:
                out[f"{d}/{name}"] = fs.read(f"{d}/{name}")
        oom = fs.read_opt(f"{d}/memory.oom_control")
        if oom is not None:
            out[f"{d}/oom_kill_disable"] = oom.splitlines()[0]
    return out


def res(doc: dict[str, Any]) -> LinuxResources:
    """``linux.resources`` from its JSON form (the model's own checks apply)."""
    return msgspec.convert(doc, type=LinuxResources)


class Box:
    """A test's own cgroup, its manager, and the children it started."""

    def __init__(self) -> None:
        self.path = f"/bulkhead/test-{uuid.uuid4().hex[:8]}"
        self.cg: CgroupManager = new_manager(self.path)
        self.children: list[subprocess.Popen[bytes]] = []

    def dirs(self) -> list[str]:
        tops = [m.mountpoint for m in LAYOUT.v1_mounts()]
        if LAYOUT.unified is not None:
            tops.append(LAYOUT.unified.mountpoint)
        return [f"{top}{self.path}" for top in tops]

    def settings(self) -> dict[str, str]:
        return settings(self.dirs())


@pytest.fixture
def box() -> Iterator[Box]:
    b = Box()
    try:
        yield b
    finally:
        for p in b.children:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
        deadline = time.monotonic() + 5
        for d in b.dirs():
            assert "/bulkhead/test-" in d  # never anything but our own
            fs.remove_tree(d, deadline)
        assert not [d for d in b.dirs() if os.path.exists(d)]


@pytest.fixture
def made(box: Box) -> Box:
    """A box whose cgroup exists, with some limits set."""
    box.cg.create()
    box.cg.apply(
        res(
            {
                "memory": {"limit": 64 << 20, "swap": 64 << 20},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
                "pids": {"limit": 50},
            }
        ),
        initial=True,
    )
    return box


# A CPU this host does not have; 8:250 is a block device number no device has here.
NO_CPU = os.cpu_count() or 1
NO_DEVICE = not os.path.exists("/sys/dev/block/8:250")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"memory": {"limit": -5}}, r"memory\.limit: -5 is not a valid limit"),
        ({"memory": {"limit": 1 << 30, "swap": 1 << 20}}, r"memory\.swap: 1048576 is below"),
        ({"memory": {"reservation": -7}}, r"memory\.reservation: -7 is not a valid limit"),
        ({"memory": {"swappiness": 101}}, r"memory\.swappiness: 101 is out of range 0\.\.100"),
        ({"memory": {"useHierarchy": False}}, r"memory\.useHierarchy: false is not possible"),
        ({"cpu": {"quota": -7}}, r"cpu\.quota: -7 is too small"),
        ({"cpu": {"period": 10}}, r"cpu\.period: 10 is out of range 1000\.\.1000000"),
        ({"cpu": {"shares": 1}}, r"cpu\.shares: 1 is out of range 2\.\.262144"),
        ({"cpu": {"idle": 3}}, r"cpu\.idle: 3 is out of range 0\.\.1"),
        ({"cpu": {"cpus": f"0-{NO_CPU + 7}"}}, rf"cpu\.cpus: '0-{NO_CPU + 7}' names CPUs"),
        ({"cpu": {"cpus": "0-"}}, r"cpu\.cpus: '0-' is not a list"),
        ({"cpu": {"mems": "5"}}, r"cpu\.mems: '5' names memory nodes 5 that this host"),
        ({"cpu": {"realtimeRuntime": 1000}}, r"cpu\.realtimeRuntime: the parent cgroup"),
        ({"cpu": {"realtimeRuntime": -3}}, r"cpu\.realtimeRuntime: -3 is not a runtime"),
        ({"pids": {"limit": -5}}, r"pids\.limit: -5 is not a valid limit"),
        ({"blockIO": {"weight": 5}}, r"blockIO\.weight: 5 is out of range 10\.\.1000"),
        (
            {"blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 250, "rate": 1}]}},
            r"blockIO\.throttleReadBpsDevice\[0\]: no block device 8:250 on this host",
        ),
        (
            {"blockIO": {"leafWeight": 100}},
            r"blockIO\.leafWeight: this kernel has no blkio\.leaf_weight",
        ),
        (
            {"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]},
            r"hugepageLimits\[0\]\.pageSize: 3MB pages are not offered",
        ),
        (
            {"devices": [{"allow": True, "type": "x", "access": "rwm"}]},
            r"devices\[0\]\.type: 'x' is not a, b or c",
        ),
        (
            {"devices": [{"allow": True, "type": "c", "access": "rwx"}]},
            r"devices\[0\]\.access: 'rwx' is not a combination",
        ),
        ({"network": {"classID": 7}}, r"network\.classID: (this kernel has no|the net_cls)"),
        (
            {"rdma": {"mlx5_0": {"hcaHandles": 2}}},
            r"rdma: (this kernel has no rdma controller|the rdma controller is not mounted)",
        ),
        ({"unified": {"memory.high": "1G"}}, r"unified: these are cgroup v2 settings"),
    ],
)
def test_bad_values_name_the_field_and_change_nothing(
    made: Box, doc: dict[str, Any], message: str
) -> None:
    if "8:250" in message and not NO_DEVICE:
        pytest.skip("8:250 exists here")
    before = made.settings()
    # good settings beside the bad one: none of them may be written either
    update = {"pids": {"limit": 9}, "cpu": {"shares": 1000}, **doc}
    if "cpu" in doc:
        update["cpu"] = {"shares": 1000, **doc["cpu"]}
    with pytest.raises(CgroupError, match=r"^linux\.resources\." + message) as info:
        made.cg.apply(res(update))
    assert "\n" not in str(info.value)
    assert made.settings() == before


def test_values_of_the_wrong_type(made: Box) -> None:
    """What the spec model would stop is stopped again by the manager (library callers)."""
    before = made.settings()
    r = res({"pids": {"limit": 9}})
    assert r.pids is not None
    r.pids.limit = "x"  # type: ignore[assignment]
    with pytest.raises(CgroupError, match=r"^linux\.resources\.pids\.limit: 'x' is not an integer"):
        made.cg.apply(r)
    r = res({"memory": {"limit": 1 << 20}})
    assert r.memory is not None
    r.memory.limit = True
    with pytest.raises(CgroupError, match=r"^linux\.resources\.memory\.limit: True is not an int"):
        made.cg.apply(r)
    assert made.settings() == before


def test_a_path_out_of_our_subtree_is_refused() -> None:
    for path in ("/bulkhead/../escape", "../escape", "bulkhead/./../../x"):
        with pytest.raises(SpecError, match=r"^linux\.cgroupsPath: .* has a '\.\.' component"):
            new_manager(path)


def hog(box: Box, mib: int) -> subprocess.Popen[bytes]:
    """A child in the box's cgroup that touches ``mib`` MiB and waits (prints ``ok`` when done)."""
    code = "import sys, time\nsys.stdin.readline()\n"
    code += f"b = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
    code += "sys.stdout.write('ok')\nsys.stdout.flush()\ntime.sleep(100)\n"
    p = subprocess.Popen(
        [sys.executable, "-S", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    box.children.append(p)
    box.cg.add_pid(p.pid)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(b"go\n")
    p.stdin.close()
    assert p.stdout.read(2) == b"ok"
    return p


def test_limit_below_usage_with_check_before_update(made: Box) -> None:
    hog(made, 24)
    before = made.settings()
    with pytest.raises(
        CgroupError, match=r"^linux\.resources\.memory\.limit: 8388608 is not above"
    ):
        made.cg.apply(
            res({"pids": {"limit": 9}, "memory": {"limit": 8 << 20, "checkBeforeUpdate": True}})
        )
    assert made.settings() == before


def test_limit_below_usage_refused_by_the_kernel_half_way_is_undone(made: Box) -> None:
    """memory+swap goes up first (it is being raised), then the kernel refuses the limit.

    The host has no swap, so the 24 MiB the child touched cannot go below
    8 MiB: ``memory.limit_in_bytes`` answers EBUSY after the memsw write has
    succeeded, and that write must be taken back.
    """
    hog(made, 24)
    before = made.settings()
    with pytest.raises(CgroupError) as info:
        made.cg.apply(res({"pids": {"limit": 9}, "memory": {"limit": 8 << 20, "swap": 256 << 20}}))
    message = str(info.value)
    assert message.startswith("linux.resources.memory.limit: cannot lower the limit to 8388608")
    assert "were undone" in message and "\n" not in message
    assert made.settings() == before


def test_kernel_memory_is_ignored_with_a_warning(made: Box) -> None:
    seen: list[str] = []
    logs.set_sink(lambda level, text: seen.append(text))
    try:
        before = made.settings()
        made.cg.apply(res({"memory": {"kernel": 1 << 30}}))
    finally:
        logs.set_sink(None)
    assert seen == ["linux.resources.memory.kernel: ignored (kernel memory limits are deprecated)"]
    assert made.settings() == before


# ---------------------------------------------------------------------- through bulkhead-runtime


def one_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    return lines[0]


def cgroup_settings(cgroup: str) -> dict[str, str]:
    return settings([str(d) for d in cgroup_dirs(cgroup)])


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--memory", "-5"], "linux.resources.memory.limit (--memory)"),
        (["--memory", "lots"], "linux.resources.memory.limit (--memory)"),
        (["--memory-swap", "1m"], "linux.resources.memory.swap: 1048576 is below"),
        (["--cpu-share", "-5"], "linux.resources.cpu.shares (--cpu-share)"),
        (["--cpu-share", "1"], "linux.resources.cpu.shares: 1 is out of range"),
        (["--cpu-quota", "-7"], "linux.resources.cpu.quota: -7 is too small"),
        (["--cpu-period", "abc"], "linux.resources.cpu.period (--cpu-period)"),
        (["--cpuset-cpus", "0-99"], "linux.resources.cpu.cpus: '0-99' names CPUs"),
        (["--cpuset-mems", "3"], "linux.resources.cpu.mems: '3' names memory nodes"),
        (["--pids-limit", "-5"], "linux.resources.pids.limit: -5 is not a valid limit"),
        (["--blkio-weight", "5"], "linux.resources.blockIO.weight: 5 is out of range"),
        (["--cpu-rt-runtime", "1000"], "linux.resources.cpu.realtimeRuntime: the parent"),
        (["--l3-cache-schema", "L3:0=f"], "--l3-cache-schema: Intel RDT"),
    ],
)
def test_runtime_update_bad_flags(
    rt: RuntimeCLI, bundle: Any, cid: str, cgroup_parent: str, flags: list[str], field: str
) -> None:
    b = bundle(["sleep", "60"], linux={"resources": {"memory": {"limit": 64 << 20}}})
    rt("run", "-d", "--bundle", str(b), cid)
    cg = f"{cgroup_parent}/{cid}"
    before = cgroup_settings(cg)
    proc = rt("update", "--pids-limit", "9", *flags, cid, check=False)
    assert proc.returncode == 1
    assert field in one_line(proc.stderr)
    assert cgroup_settings(cg) == before


def test_runtime_update_resources_file_refused_half_way(
    rt: RuntimeCLI, bundle: Any, cid: str, cgroup_parent: str, tmp_path: Path
) -> None:
    """A file the kernel refuses half-way (a block device rule the host has no device for is
    caught first; a limit below what the container uses is the kernel's to refuse)."""
    script = "head -c 24m /dev/zero | tr '\\0' x > /dev/shm/fill; echo ok; sleep 60"
    b = bundle(
        ["sh", "-c", script],
        linux={"resources": {"memory": {"limit": 64 << 20, "swap": 64 << 20}}},
    )
    rt("run", "-d", "--bundle", str(b), cid)
    cg = f"{cgroup_parent}/{cid}"
    deadline = time.monotonic() + 20
    mem = next(d for d in cgroup_dirs(cg) if "/memory/" in str(d))
    while int((mem / "memory.usage_in_bytes").read_text()) < 20 << 20:
        assert time.monotonic() < deadline, "the container did not fill its memory"
        time.sleep(0.05)
    before = cgroup_settings(cg)
    f = tmp_path / "r.json"
    f.write_text(
        json.dumps({"pids": {"limit": 9}, "memory": {"limit": 8 << 20, "swap": 256 << 20}})
    )
    proc = rt("update", "-r", str(f), cid, check=False)
    assert proc.returncode == 1
    line = one_line(proc.stderr)
    assert "linux.resources.memory.limit: cannot lower the limit to 8388608" in line
    assert "were undone" in line
    assert cgroup_settings(cg) == before
    # the same with checkBeforeUpdate: refused before anything is written
    f.write_text(json.dumps({"memory": {"limit": 8 << 20, "checkBeforeUpdate": True}}))
    proc = rt("update", "-r", str(f), cid, check=False)
    assert proc.returncode == 1 and "is not above the current usage" in one_line(proc.stderr)
    assert cgroup_settings(cg) == before


@pytest.mark.parametrize(
    ("linux", "field"),
    [
        ({"resources": {"memory": {"limit": -5}}}, "linux.resources.memory.limit"),
        ({"resources": {"cpu": {"cpus": "0-99"}}}, "linux.resources.cpu.cpus"),
        ({"resources": {"pids": {"limit": "many"}}}, "linux.resources.pids.limit"),
        (
            {
                "resources": {
                    "blockIO": {"throttleReadBpsDevice": [{"major": 8, "minor": 250, "rate": 1}]}
                }
            },
            "linux.resources.blockIO.throttleReadBpsDevice[0]",
        ),
        ({"resources": {"rdma": {"mlx5_0": {"hcaHandles": 1}}}}, "linux.resources.rdma"),
        ({"cgroupsPath": "../escape"}, "linux.cgroupsPath"),
        ({"cgroupsPath": "/bulkhead/../../escape"}, "linux.cgroupsPath"),
    ],
)
def test_runtime_create_with_bad_resources(
    rt: RuntimeCLI, bundle: Any, cid: str, cgroup_parent: str, linux: dict[str, Any], field: str
) -> None:
    if "blockIO" in linux.get("resources", {}) and not NO_DEVICE:
        pytest.skip("8:250 exists here")
    b = bundle(["true"], linux=linux)
    proc = rt("create", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert field in one_line(proc.stderr).replace("$.linux", "linux")
    assert rt("list", "-q").stdout.split() == []
    assert cgroup_dirs(f"{cgroup_parent}/{cid}") == []
    for top in {m.mountpoint for m in LAYOUT.v1_mounts()}:
        assert not os.path.exists(f"{top}/escape")


def test_kernel_refusal_after_tables_and_device_rules_is_undone(box: Box) -> None:
    """The last write of an update fails: block I/O tables and device rules go back too.

    The container's cgroup sits below one whose device rules are the default
    ones only; an update that allows /dev/kmsg (c 1:11) there is refused by
    the kernel (EPERM: a child cannot get more than its parent) after the
    blkio throttle lines and the new device rules were written.
    """
    vda = next(
        (k for k in ("254:0", "253:0", "8:0") if os.path.exists(f"/sys/dev/block/{k}/queue")), None
    )
    if vda is None:
        pytest.skip("no whole disk to throttle here")
    major, minor = (int(x) for x in vda.split(":"))
    box.cg.create()
    box.cg.apply(None, initial=True)  # the parent: default device rules only
    child = new_manager(f"{box.path}/ctr")
    child.create()
    dev = {"major": major, "minor": minor}
    child.apply(
        res(
            {
                "blockIO": {"throttleReadBpsDevice": [{**dev, "rate": 1 << 20}]},
                "pids": {"limit": 20},
            }
        ),
        initial=True,
    )
    dirs = [f"{d}/ctr" for d in box.dirs()]
    before = settings(dirs)
    assert f"{vda} 1048576" in next(v for k, v in before.items() if k.endswith("read_bps_device"))
    update = {
        "pids": {"limit": 9},
        "blockIO": {
            "throttleReadBpsDevice": [{**dev, "rate": 5 << 20}],
            "throttleWriteIOPSDevice": [{**dev, "rate": 10}],
        },
        "devices": [{"allow": True, "type": "c", "major": 1, "minor": 11, "access": "r"}],
    }
    with pytest.raises(CgroupError) as info:
        child.apply(res(update))
    message = str(info.value)
    assert message.startswith("linux.resources.devices[0]: not permitted to write devices.allow")
    assert "were undone" in message
    assert settings(dirs) == before
