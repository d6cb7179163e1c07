"""linux.resources on a real cgroup-v2-only kernel: conversions, fields v2 lacks, bad input.

Runs in the VM lane (``make test-cgroupv2``; skipped elsewhere by the
conftest). Each test works below ``/bulkhead/test-<random>``; the fixture
kills the children it started and removes the cgroups, also on failure.
Every rejected ``apply`` is checked against a snapshot of the cgroup's
settings (and its attached device programs): nothing may change, including
when the kernel refuses a write half-way through an update.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bulkhead import logs
from bulkhead.cgroups import CgroupManager, blkio, devicefilter, fs, new_manager
from bulkhead.errors import CgroupError, SpecError
from bulkhead.oci.runtime_spec import LinuxResources

ROOT = "/sys/fs/cgroup"
IN_GUEST = os.path.isdir("/run/cgroup2-vm")
RUNTIME = str(Path(sys.executable).parent / "bulkhead-runtime")

SETTINGS = (
    "memory.max",
    "memory.low",
    "memory.high",
    "memory.swap.max",
    "cpu.weight",
    "cpu.max",
    "cpu.max.burst",
    "cpu.idle",
    "cpuset.cpus",
    "cpuset.mems",
    "pids.max",
    "io.max",
    "io.weight",
    "io.bfq.weight",
    "hugetlb.2MB.max",
    "rdma.max",
    "cgroup.freeze",
)


def settings(d: str) -> dict[str, Any]:
    out: dict[str, Any] = {n: fs.read_opt(f"{d}/{n}") for n in SETTINGS}
    out["device programs"] = len(devicefilter.attached(d)) if os.path.isdir(d) else None
    return out


def res(doc: dict[str, Any]) -> LinuxResources:
    return msgspec.convert(doc, type=LinuxResources)


def read(path: str) -> str:
    return Path(path).read_text().strip()


class Box:
    def __init__(self) -> None:
        self.path = f"/bulkhead/test-{uuid.uuid4().hex[:8]}"
        self.cg: CgroupManager = new_manager(self.path)
        self.dir = ROOT + self.path
        self.children: list[subprocess.Popen[bytes]] = []

    def settings(self) -> dict[str, Any]:
        return settings(self.dir)


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
        assert "/bulkhead/test-" in b.dir  # never anything but our own
        if os.path.isdir(b.dir):
            for pid in fs.read_procs(b.dir):  # our children's children, containers below
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        fs.remove_tree(b.dir, time.monotonic() + 10)
        assert not os.path.exists(b.dir)


@pytest.fixture
def made(box: Box) -> Box:
    box.cg.create()
    box.cg.apply(
        res(
            {
                "memory": {"limit": 64 << 20},
                "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0"},
                "pids": {"limit": 50},
            }
        ),
        initial=True,
    )
    return box


def test_conversions(made: Box) -> None:
    d = made.dir
    # cpu shares -> weight: runc >= 1.3.2's curve (512 -> 59, the default 1024 -> 100)
    assert read(f"{d}/cpu.weight") == "59"
    for shares, weight in ((1024, "100"), (2, "1"), (262144, "10000")):
        made.cg.apply(res({"cpu": {"shares": shares}}))
        assert read(f"{d}/cpu.weight") == weight
    if not os.path.exists(f"{d}/memory.swap.max"):
        return
    # memory+swap -> swap alone; an update of swap alone uses the limit there is
    made.cg.apply(res({"memory": {"swap": 96 << 20}}))
    assert read(f"{d}/memory.swap.max") == str(32 << 20)
    # no memory limit: swap taken as is (runc)
    made.cg.apply(res({"memory": {"limit": -1, "swap": 100 << 20}}))
    assert read(f"{d}/memory.max") == "max"
    assert read(f"{d}/memory.swap.max") == str(100 << 20)


def test_kernel_memory_is_ignored_with_a_warning(made: Box) -> None:
    seen: list[str] = []
    logs.set_sink(lambda level, text: seen.append(text))
    try:
        before = made.settings()
        made.cg.apply(res({"memory": {"kernel": 1 << 30, "kernelTCP": 1 << 20}}))
    finally:
        logs.set_sink(None)
    assert len(seen) == 1 and seen[0].startswith(
        "linux.resources.memory.kernel and linux.resources.memory.kernelTCP: ignored"
    )
    assert made.settings() == before


NO_CPU = os.cpu_count() or 1


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        # what cgroup v2 does not have
        ({"memory": {"swappiness": 10}}, r"memory\.swappiness: cgroup v2 has no"),
        ({"memory": {"disableOOMKiller": True}}, r"memory\.disableOOMKiller: cgroup v2 cannot"),
        ({"memory": {"useHierarchy": False}}, r"memory\.useHierarchy: false is not possible"),
        ({"cpu": {"realtimeRuntime": 1000}}, r"cpu\.realtimeRuntime: cgroup v2 has no realtime"),
        ({"cpu": {"realtimePeriod": 1000}}, r"cpu\.realtimePeriod: cgroup v2 has no realtime"),
        ({"network": {"classID": 7}}, r"network: cgroup v2 has no net_cls"),
        ({"blockIO": {"leafWeight": 100}}, r"blockIO\.leafWeight: cgroup v2 has no leaf weights"),
        # bad values
        ({"memory": {"limit": -5}}, r"memory\.limit: -5 is not a valid limit"),
        ({"memory": {"limit": 1 << 30, "swap": 1 << 20}}, r"memory\.swap: 1048576 is below"),
        ({"pids": {"limit": -5}}, r"pids\.limit: -5 is not a valid limit"),
        ({"cpu": {"quota": -7}}, r"cpu\.quota: -7 is too small"),
        ({"cpu": {"shares": 1}}, r"cpu\.shares: 1 is out of range"),
        ({"cpu": {"cpus": f"0-{NO_CPU + 7}"}}, rf"cpu\.cpus: '0-{NO_CPU + 7}' names CPUs"),
        ({"cpu": {"mems": "5"}}, r"cpu\.mems: '5' names memory nodes 5"),
        ({"blockIO": {"weight": 5}}, r"blockIO\.weight: 5 is out of range 10\.\.1000"),
        (
            {"blockIO": {"throttleWriteBpsDevice": [{"major": 8, "minor": 250, "rate": 1}]}},
            r"blockIO\.throttleWriteBpsDevice\[0\]: no block device 8:250",
        ),
        (
            {"hugepageLimits": [{"pageSize": "3MB", "limit": 1}]},
            r"hugepageLimits\[0\]\.pageSize: 3MB pages are not offered",
        ),
        ({"rdma": {"mlx5_0": {"hcaHandles": 2}}}, r"rdma\['mlx5_0'\]: no RDMA device mlx5_0"),
        ({"rdma": {"mlx5_0": {}}}, r"rdma\['mlx5_0'\]: give hcaHandles or hcaObjects"),
        ({"unified": {"memory.bogus": "1"}}, r"unified\['memory\.bogus'\]: this kernel or cgroup"),
        ({"unified": {"cgroup.procs": "1"}}, r"unified\['cgroup\.procs'\]: cgroup\.procs is"),
        ({"unified": {"../../x.y": "1"}}, r"unified\['\.\./\.\./x\.y'\]: not a cgroup v2 file"),
        (
            {"devices": [{"allow": True, "type": "c", "access": "rwx"}]},
            r"devices\[0\]\.access: 'rwx' is not a combination",
        ),
    ],
)
def test_bad_values_name_the_field_and_change_nothing(
    made: Box, doc: dict[str, Any], message: str
) -> None:
    before = made.settings()
    update = {"pids": {"limit": 9}, "cpu": {"shares": 1000}, **doc}
    if "cpu" in doc:
        update["cpu"] = {"shares": 1000, **doc["cpu"]}
    with pytest.raises(CgroupError, match=r"^linux\.resources\." + message) as info:
        made.cg.apply(res(update))
    assert "\n" not in str(info.value)
    assert made.settings() == before


def test_a_path_out_of_our_subtree_is_refused() -> None:
    for path in ("/bulkhead/../escape", "../escape"):
        with pytest.raises(SpecError, match=r"^linux\.cgroupsPath: .* has a '\.\.' component"):
            new_manager(path)


def test_rdma_controller(made: Box) -> None:
    if "rdma" not in read(f"{ROOT}/cgroup.controllers").split():
        pytest.skip("this kernel has no rdma controller")
    assert "rdma" in read(f"{made.dir}/cgroup.controllers").split()
    assert os.path.exists(f"{made.dir}/rdma.max")
    devices = (
        sorted(os.listdir("/sys/class/infiniband"))
        if os.path.isdir("/sys/class/infiniband")
        else []
    )
    if not devices:
        return  # no RDMA device here (the lane's kernel has no RDMA drivers): errors only
    made.cg.apply(res({"rdma": {devices[0]: {"hcaHandles": 3, "hcaObjects": 30}}}))
    assert f"{devices[0]} hca_handle=3 hca_object=30" in read(f"{made.dir}/rdma.max")


def test_update_refused_half_way_is_undone(made: Box) -> None:
    """The kernel refuses the last write (``unified`` goes last): everything before is put back."""
    before = made.settings()
    update = {
        "memory": {"limit": 128 << 20, "reservation": 8 << 20},
        "cpu": {"shares": 2048, "quota": 20000, "period": 50000, "idle": 0},
        "pids": {"limit": 9},
        "devices": [{"allow": False, "access": "rwm"}],
        "unified": {"memory.high": "lots"},
    }
    with pytest.raises(CgroupError) as info:
        made.cg.apply(res(update))
    message = str(info.value)
    assert message.startswith("linux.resources.unified['memory.high']: the kernel refused 'lots'")
    assert "were undone" in message
    assert made.settings() == before


def hog(box: Box, mib: int) -> None:
    code = "import sys, time\nsys.stdin.readline()\n"
    code += f"b = bytearray({mib} << 20)\nfor i in range(0, len(b), 4096): b[i] = 1\n"
    code += "sys.stdout.write('ok')\nsys.stdout.flush()\ntime.sleep(300)\n"
    p = subprocess.Popen(
        [sys.executable, "-S", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    box.children.append(p)
    box.cg.add_pid(p.pid)
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(b"go\n")
    p.stdin.close()
    assert p.stdout.read(2) == b"ok"


def test_limit_below_usage_with_check_before_update(made: Box) -> None:
    hog(made, 24)
    before = made.settings()
    doc = {"pids": {"limit": 9}, "memory": {"limit": 8 << 20, "checkBeforeUpdate": True}}
    with pytest.raises(
        CgroupError, match=r"^linux\.resources\.memory\.limit: 8388608 is not above"
    ):
        made.cg.apply(res(doc))
    assert made.settings() == before


# ------------------------------------------------------------------ io: per-device tables


@pytest.fixture(scope="module")
def nullb() -> Iterator[str]:
    """null_blk's nullb0 (``major:minor``): loaded only in the throwaway guest."""
    if not os.path.exists("/sys/block/nullb0"):
        if not IN_GUEST:
            pytest.skip("loads null_blk: only in the vmtest guest (make test-cgroupv2)")
        r = subprocess.run(["modprobe", "null_blk", "nr_devices=1", "gb=1"], capture_output=True)
        if r.returncode != 0:
            pytest.skip(f"no null_blk module: {r.stderr.decode().strip()}")
    deadline = time.monotonic() + 10
    while not os.path.exists("/sys/block/nullb0/dev") and time.monotonic() < deadline:
        time.sleep(0.05)
    yield read("/sys/block/nullb0/dev")


def test_io_table_lines_are_put_back(made: Box, nullb: str) -> None:
    major, minor = (int(x) for x in nullb.split(":"))
    dev = {"major": major, "minor": minor}
    made.cg.apply(res({"blockIO": {"throttleReadBpsDevice": [{**dev, "rate": 1 << 20}]}}))
    before = made.settings()
    assert before["io.max"].startswith(f"{nullb} rbps=1048576 ")
    update = {
        "blockIO": {
            "weight": 300,
            "throttleReadBpsDevice": [{**dev, "rate": 5 << 20}],
            "throttleWriteIOPSDevice": [{**dev, "rate": 10}],
        },
        "unified": {"io.max": f"{nullb} bogus=1"},
    }
    with pytest.raises(CgroupError, match=r"unified\['io\.max'\]: .*were undone"):
        made.cg.apply(res(update))
    assert made.settings() == before
    # the partition check needs a partition: null_blk has none; its disk is whole
    blkio.check_device(nullb, "f")


# ------------------------------------------------------------------ through bulkhead-runtime


def runtime(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # output to files, not pipes: a detached container inherits them and
    # would hold a pipe open long after the runtime exited
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        done = subprocess.run(
            [RUNTIME, "--root", str(root), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            timeout=120,
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(
            done.args, done.returncode, out.read().decode(), err.read().decode()
        )


def test_runtime_update_bad_input(tmp_path: Path, box: Box) -> None:
    from bulkhead.devtools import busybox

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    rootfs = busybox.build_rootfs(bundle / "rootfs")
    cg = f"{box.path}/ctr"
    busybox.make_bundle(
        bundle,
        ["sleep", "300"],
        terminal=False,
        rootfs=rootfs,
        config={"linux": {"cgroupsPath": cg, "resources": {"memory": {"limit": 64 << 20}}}},
    )
    state = tmp_path / "state"
    cid = "v2-" + uuid.uuid4().hex[:8]
    try:
        started = runtime(state, "run", "-d", "--bundle", str(bundle), cid)
        assert started.returncode == 0, started.stderr
        d = ROOT + cg
        before = settings(d)
        for flags, field in [
            (["--memory", "-5"], "linux.resources.memory.limit (--memory)"),
            (["--cpu-share", "-5"], "linux.resources.cpu.shares (--cpu-share)"),
            (["--cpuset-cpus", "0-99"], "linux.resources.cpu.cpus: '0-99' names CPUs"),
            (["--cpu-rt-runtime", "1000"], "linux.resources.cpu.realtimeRuntime: cgroup v2"),
            (["--pids-limit", "-5"], "linux.resources.pids.limit: -5 is not a valid limit"),
        ]:
            proc = runtime(state, "update", "--pids-limit", "9", *flags, cid)
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            assert proc.returncode == 1 and len(lines) == 1 and field in lines[0], proc.stderr
            assert settings(d) == before
        f = tmp_path / "r.json"
        f.write_text(json.dumps({"pids": {"limit": 9}, "unified": {"memory.high": "lots"}}))
        proc = runtime(state, "update", "-r", str(f), cid)
        assert proc.returncode == 1 and "were undone" in proc.stderr
        assert settings(d) == before
    finally:
        runtime(state, "delete", "--force", cid)
        shutil.rmtree(state, ignore_errors=True)
