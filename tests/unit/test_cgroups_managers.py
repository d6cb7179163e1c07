"""Unit tests of the v1 and v2 managers against fake hierarchies in a temporary directory.

A fake hierarchy is plain directories and files. The real cgroupfs creates
control files on ``mkdir`` and removes them on ``rmdir``, and refuses
``rmdir`` of a cgroup with children or processes (EBUSY); the ``fake_fs``
fixture patches :mod:`bulkhead.cgroups.fs` to behave the same, and records
every write in order.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkhead.cgroups import devicefilter, fs, hugetlb, new_manager, rdma
from bulkhead.cgroups.layout import Layout, layout_from_text
from bulkhead.cgroups.v1 import V1Manager
from bulkhead.cgroups.v2 import V2Manager
from bulkhead.errors import CgroupError, SpecError
from bulkhead.oci.runtime_spec import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxMemory,
    LinuxNetwork,
    LinuxPids,
    LinuxRdma,
    LinuxResources,
)

V1_HIERARCHIES = ("cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids")

V1_FILES: dict[str, dict[str, str]] = {
    "memory": {
        "memory.limit_in_bytes": "9223372036854771712",
        "memory.memsw.limit_in_bytes": "9223372036854771712",
        "memory.soft_limit_in_bytes": "9223372036854771712",
        "memory.swappiness": "60",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        "memory.usage_in_bytes": "4096",
        "memory.max_usage_in_bytes": "8192",
        "memory.failcnt": "0",
        "memory.stat": "cache 100\nrss 200\n",
        "cgroup.event_control": "",
    },
    "cpu": {
        "cpu.shares": "1024",
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "-1",
        "cpu.cfs_burst_us": "0",
        "cpu.idle": "0",
        "cpu.stat": "nr_periods 5\nnr_throttled 2\nthrottled_time 300\n",
    },
    "cpuacct": {"cpuacct.usage": "123", "cpuacct.usage_percpu": "100 23\n"},
    "cpuset": {
        "cpuset.cpus": "",
        "cpuset.mems": "",
        "cpuset.effective_cpus": "",
        "cpuset.effective_mems": "",
    },
    "devices": {"devices.allow": "", "devices.deny": "", "devices.list": "a *:* rwm\n"},
    "freezer": {"freezer.state": "THAWED"},
    "blkio": {
        "blkio.throttle.read_bps_device": "",
        "blkio.throttle.io_service_bytes_recursive": "Total 0\n",
    },
    "pids": {"pids.max": "max", "pids.current": "1"},
    "unified": {"cgroup.controllers": "", "cgroup.subtree_control": "", "hugetlb.2MB.max": "max"},
}

V2_FILES = {
    "cgroup.subtree_control": "",
    "cgroup.freeze": "0",
    "cgroup.events": "populated 0\nfrozen 0\n",
    "cgroup.kill": "",
    "memory.max": "max",
    "memory.low": "0",
    "memory.high": "max",
    "memory.swap.max": "max",
    "memory.current": "0",
    "memory.events": "oom 0\noom_kill 0\n",
    "memory.stat": "file 0\n",
    "cpu.max": "max 100000",
    "cpu.weight": "100",
    "cpu.stat": "usage_usec 5\n",
    "cpuset.cpus": "",
    "cpuset.mems": "",
    "cpuset.cpus.effective": "",
    "pids.max": "max",
    "pids.current": "0",
    "io.max": "",
    "io.weight": "default 100",
    "hugetlb.2MB.max": "max",
    "hugetlb.2MB.current": "0",
}

V2_CONTROLLERS = "cpuset cpu io memory hugetlb pids"


class FakeTree:
    """Fake cgroup hierarchies under ``root`` and a log of writes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log: list[tuple[str, str]] = []
        self.device_programs: dict[str, bytes] = {}  # v2: what devicefilter.attach was given

    def rel(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def writes(self, name: str | None = None) -> list[tuple[str, str]]:
        """Logged writes, as (path relative to root, value), optionally of one file name."""
        return [
            (self.rel(p), v) for p, v in self.log if name is None or os.path.basename(p) == name
        ]


def _populate(tree: FakeTree, path: Path) -> None:
    kind = tree.rel(str(path)).split("/")[0]
    (path / "cgroup.procs").write_text("")
    if kind == "v2":
        for name, value in V2_FILES.items():
            (path / name).write_text(value)
        parent_enabled = (path.parent / "cgroup.subtree_control").read_text()
        (path / "cgroup.controllers").write_text(parent_enabled)
        return
    for name, value in V1_FILES.get(kind, {}).items():
        (path / name).write_text(value)


@pytest.fixture
def fake_fs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTree]:
    tree = FakeTree(tmp_path)
    real_write = fs.write

    def mkdir(path: str) -> bool:
        if os.path.isdir(path):
            return False
        os.mkdir(path)
        _populate(tree, Path(path))
        return True

    def rmdir(path: str) -> None:
        p = Path(path)
        if not p.is_dir():
            raise FileNotFoundError(errno.ENOENT, "No such file", path)
        if any(c.is_dir() for c in p.iterdir()) or (p / "cgroup.procs").read_text().strip():
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        for c in p.iterdir():
            c.unlink()
        p.rmdir()

    def write(path: str, value: str) -> None:
        tree.log.append((path, value))
        name = os.path.basename(path)
        if name == "cgroup.subtree_control":
            enabled = set(Path(path).read_text().split())
            for item in value.split():
                (enabled.add if item[0] == "+" else enabled.discard)(item[1:])
            value = " ".join(sorted(enabled))
            for child in Path(path).parent.iterdir():  # what children may use follows
                if child.is_dir():
                    (child / "cgroup.controllers").write_text(value)
        elif name == "cgroup.freeze":
            events = Path(path).with_name("cgroup.events")
            events.write_text(f"populated 0\nfrozen {value}\n")
        real_write(path, value)

    monkeypatch.setattr(fs, "mkdir", mkdir)
    monkeypatch.setattr(fs, "rmdir", rmdir)
    monkeypatch.setattr(fs, "write", write)
    monkeypatch.setattr(hugetlb, "host_sizes", lambda: ("2MB", "1GB"))
    monkeypatch.setattr(
        devicefilter, "attach", lambda d, program: tree.device_programs.__setitem__(d, program)
    )
    yield tree


def v1_layout(tree: FakeTree, *, hybrid: bool = True, own_memory: str = "/") -> Layout:
    root = tree.root
    lines = []
    for i, h in enumerate((*V1_HIERARCHIES, "systemd")):
        (root / h).mkdir()
        opt = "name=systemd" if h == "systemd" else h
        lines.append(f"{30 + i} 20 0:{30 + i} / {root}/{h} rw - cgroup cgroup rw,{opt}")
        for name, value in V1_FILES.get(h, {}).items():
            (root / h / name).write_text(value)
        (root / h / "cgroup.procs").write_text("")
    (root / "cpuset" / "cpuset.cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.mems").write_text("0\n")
    (root / "cpuset" / "cpuset.effective_cpus").write_text("0-3\n")
    (root / "cpuset" / "cpuset.effective_mems").write_text("0\n")
    if hybrid:
        (root / "unified").mkdir()
        (root / "unified" / "cgroup.controllers").write_text("hugetlb\n")
        (root / "unified" / "cgroup.subtree_control").write_text("")
        lines.append(f"50 20 0:50 / {root}/unified rw - cgroup2 cgroup2 rw")
    own = f"4:memory:{own_memory}\n0::/\n"
    return layout_from_text("\n".join(lines) + "\n", own, cgroup_root=str(root))


def v2_layout(tree: FakeTree) -> Layout:
    root = tree.root / "v2"
    root.mkdir()
    (root / "cgroup.controllers").write_text(V2_CONTROLLERS + "\n")
    (root / "cgroup.subtree_control").write_text("")
    (root / "cpuset.cpus.effective").write_text("0-3\n")
    (root / "cpuset.mems.effective").write_text("0\n")
    line = f"30 20 0:30 / {root} rw - cgroup2 cgroup2 rw\n"
    return layout_from_text(line, "0::/\n", cgroup_root=str(root))


def resources() -> LinuxResources:
    return LinuxResources(
        memory=LinuxMemory(limit=64 << 20),
        cpu=LinuxCPU(shares=512, cpus="1"),
        pids=LinuxPids(limit=100),
    )


# ---------------------------------------------------------------------- v1


def test_new_manager_picks_by_layout(fake_fs: FakeTree) -> None:
    assert isinstance(new_manager("/bulkhead/x", layout=v1_layout(fake_fs)), V1Manager)
    assert isinstance(new_manager("/bulkhead/x", layout=v2_layout(fake_fs)), V2Manager)


def test_v1_create_apply_add_destroy(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/c1", layout=v1_layout(fake_fs))
    assert not cg.exists()
    cg.create()
    assert cg.exists()
    for h in (*V1_HIERARCHIES, "systemd", "unified"):
        assert (root / h / "bulkhead" / "c1").is_dir(), h
    # new cpuset levels got their parent's CPUs and nodes
    assert (root / "cpuset/bulkhead/cpuset.cpus").read_text() == "0-3"
    assert (root / "cpuset/bulkhead/c1/cpuset.mems").read_text() == "0"

    cg.apply(resources(), initial=True)
    assert (root / "memory/bulkhead/c1/memory.limit_in_bytes").read_text() == str(64 << 20)
    assert (root / "cpu/bulkhead/c1/cpu.shares").read_text() == "512"
    assert (root / "cpuset/bulkhead/c1/cpuset.cpus").read_text() == "1"
    assert (root / "pids/bulkhead/c1/pids.max").read_text() == "100"
    assert fake_fs.writes("devices.deny")[0] == ("devices/bulkhead/c1/devices.deny", "a")

    cg.add_pid(4242)
    procs = [p for p, v in fake_fs.writes("cgroup.procs") if v == "4242"]
    assert sorted(p.split("/")[0] for p in procs) == sorted((*V1_HIERARCHIES, "systemd", "unified"))
    assert cg.pids() == [4242]

    (root / "pids/bulkhead/c1/cgroup.procs").write_text("")
    for h in (*V1_HIERARCHIES, "systemd", "unified"):
        (root / h / "bulkhead/c1/cgroup.procs").write_text("")
    cg.destroy()
    assert not cg.exists()
    assert (root / "memory/bulkhead").is_dir()  # parents stay
    cg.destroy()  # idempotent


def test_v1_paths(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/p", layout=v1_layout(fake_fs))
    assert cg.path("memory") == f"{root}/memory/bulkhead/p"
    assert cg.path("hugetlb") == f"{root}/unified/bulkhead/p"  # hybrid: on the cgroup2 side
    assert cg.paths()["name=systemd"] == f"{root}/systemd/bulkhead/p"
    with pytest.raises(CgroupError, match="net_cls controller is not mounted"):
        cg.path("net_cls")


def test_v1_relative_path_is_below_own_cgroup(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    lay = v1_layout(fake_fs, own_memory="/tooling/session")
    cg = new_manager("ctr/abc", layout=lay)
    assert cg.path("memory") == f"{root}/memory/tooling/session/ctr/abc"
    assert cg.path("cpu") == f"{root}/cpu/ctr/abc"


def test_v1_bad_update_changes_nothing(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/u", layout=v1_layout(fake_fs))
    cg.create()
    cg.apply(resources())
    before = len(fake_fs.log)
    bad = LinuxResources(
        memory=LinuxMemory(limit=128 << 20),  # fine on its own ...
        cpu=LinuxCPU(cpus="0-9"),  # ... but the host has CPUs 0-3
    )
    with pytest.raises(CgroupError, match=r"linux\.resources\.cpu\.cpus: '0-9' names CPUs 4-9"):
        cg.apply(bad)
    assert len(fake_fs.log) == before
    assert (root / "memory/bulkhead/u/memory.limit_in_bytes").read_text() == str(64 << 20)
    with pytest.raises(CgroupError, match=r"pids\.limit: 'x' is not an integer"):
        cg.apply(LinuxResources(pids=LinuxPids(limit="x")))  # type: ignore[arg-type]
    assert len(fake_fs.log) == before


def test_v1_update_leaves_unset_fields_and_devices_alone(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/u2", layout=v1_layout(fake_fs))
    cg.create()
    fake_fs.log.clear()
    cg.apply(LinuxResources(pids=LinuxPids(limit=5)))
    assert fake_fs.writes() == [("pids/bulkhead/u2/pids.max", "5")]
    fake_fs.log.clear()
    cg.apply(None, initial=True)  # no resources at all: still the device rules
    assert fake_fs.writes()[0] == ("devices/bulkhead/u2/devices.deny", "a")


def test_v1_device_rules(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/dev", layout=v1_layout(fake_fs))
    cg.create()
    rules = [
        LinuxDeviceCgroup(allow=False, access="rwm"),
        LinuxDeviceCgroup(allow=True, type="c", major=10, minor=229, access="rwm"),
    ]
    cg.apply(LinuxResources(devices=rules))
    values = [v for _, v in fake_fs.writes() if "devices" in _]
    assert values[:3] == ["a", "a", "c 10:229 rwm"]
    assert "c 136:* rwm" in values


def test_v1_missing_controller_is_named(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/n", layout=v1_layout(fake_fs))
    cg.create()
    with pytest.raises(
        CgroupError, match=r"network\.classID: the net_cls controller is not mounted"
    ):
        cg.apply(LinuxResources(network=LinuxNetwork(class_id=1)))
    cg.apply(LinuxResources(network=LinuxNetwork()))  # nothing asked: fine
    with pytest.raises(CgroupError, match=r"unified: these are cgroup v2 settings"):
        cg.apply(LinuxResources(unified={"memory.high": "1G"}))


def test_v1_blkio_without_weight_file(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/b", layout=v1_layout(fake_fs))
    cg.create()
    with pytest.raises(CgroupError, match=r"blockIO\.weight: .*no weight file"):
        cg.apply(LinuxResources(block_io=LinuxBlockIO(weight=100)))


def test_v1_hybrid_hugetlb(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/h", layout=v1_layout(fake_fs))
    cg.create()
    limits = LinuxResources(hugepage_limits=[LinuxHugepageLimit(page_size="2MB", limit=2 << 20)])
    # the host root does not pass hugetlb down: we say so and touch nothing of the host's
    with pytest.raises(CgroupError, match=r"hugepageLimits: .* does not enable it"):
        cg.apply(limits)
    assert (root / "unified/cgroup.subtree_control").read_text() == ""
    # once the host enables it in its root, we enable it in our own levels
    (root / "unified/cgroup.subtree_control").write_text("hugetlb")
    (root / "unified/bulkhead/cgroup.controllers").write_text("hugetlb")
    cg.apply(limits)
    assert (root / "unified/bulkhead/cgroup.subtree_control").read_text() == "hugetlb"
    assert (root / "unified/bulkhead/h/hugetlb.2MB.max").read_text() == str(2 << 20)


def test_v1_legacy_without_devices_is_refused(fake_fs: FakeTree) -> None:
    lay = v1_layout(fake_fs, hybrid=False)
    lay = lay._replace(v1={k: v for k, v in lay.v1.items() if k != "devices"})
    with pytest.raises(CgroupError, match="no devices cgroup"):
        new_manager("/bulkhead/x", layout=lay).create()


def test_v1_destroy_removes_children_first(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/t", layout=v1_layout(fake_fs))
    cg.create()
    sub = root / "memory/bulkhead/t/inner/deeper"
    sub.mkdir(parents=True)
    (sub / "cgroup.procs").write_text("")
    (sub.parent / "cgroup.procs").write_text("")
    cg.destroy()
    assert not (root / "memory/bulkhead/t").exists()


def test_v1_destroy_gives_up_on_busy(fake_fs: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    import bulkhead.cgroups.v1 as v1

    monkeypatch.setattr(v1, "DESTROY_TIMEOUT", 0.05)
    root = fake_fs.root
    cg = new_manager("/bulkhead/busy", layout=v1_layout(fake_fs))
    cg.create()
    (root / "pids/bulkhead/busy/cgroup.procs").write_text("99999\n")
    with pytest.raises(CgroupError, match=r"still busy \(processes left: \[99999\]\)"):
        cg.destroy()


def test_v1_freeze_and_state(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/f", layout=v1_layout(fake_fs))
    cg.create()
    assert cg.state() == "THAWED"
    cg.freeze()
    assert cg.state() == "FROZEN"
    cg.thaw()
    assert cg.state() == "THAWED"


def test_v1_stats(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/s", layout=v1_layout(fake_fs))
    with pytest.raises(CgroupError, match="does not exist"):
        cg.stats()
    cg.create()
    s = cg.stats()
    assert s.memory.usage.usage == 4096 and s.memory.cache == 100
    assert s.cpu.usage.total == 123 and s.cpu.usage.percpu == [100, 23]
    assert s.cpu.throttling.throttled_periods == 2
    assert s.pids.current == 1 and s.pids.limit == 0


def test_v1_kill_all_signals_each_process(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/k", layout=v1_layout(fake_fs))
    cg.create()
    child = subprocess.Popen(["sleep", "60"])
    try:
        (root / "pids/bulkhead/k/cgroup.procs").write_text(f"{child.pid}\n")
        cg.kill_all(signal.SIGTERM)
        assert child.wait(timeout=10) == -signal.SIGTERM
        # frozen around the signals, thawed after
        states = [v for _, v in fake_fs.writes("freezer.state")]
        assert states[0] == "FROZEN" and states[-1] == "THAWED"
    finally:
        child.kill()
        child.wait()


def test_path_checks(fake_fs: FakeTree) -> None:
    lay = v1_layout(fake_fs)
    with pytest.raises(SpecError):
        new_manager("/bulkhead/../x", layout=lay)
    with pytest.raises(SpecError):
        new_manager("/", layout=lay)


# ---------------------------------------------------------------------- v2


def test_v2_create_enables_controllers_down_the_path(fake_fs: FakeTree) -> None:
    root = fake_fs.root / "v2"
    cg = new_manager("/bulkhead/c2", layout=v2_layout(fake_fs))
    cg.create()
    assert (root / "bulkhead/c2").is_dir()
    assert set((root / "cgroup.subtree_control").read_text().split()) == set(V2_CONTROLLERS.split())
    assert set((root / "bulkhead/cgroup.subtree_control").read_text().split()) == set(
        V2_CONTROLLERS.split()
    )
    assert (root / "bulkhead/c2/cgroup.subtree_control").read_text() == ""  # the leaf: none
    cg.create()  # again: nothing new to enable
    assert len(fake_fs.writes("cgroup.subtree_control")) == 2


def test_v2_apply_converts(fake_fs: FakeTree) -> None:
    root = fake_fs.root / "v2"
    cg = new_manager("/bulkhead/a2", layout=v2_layout(fake_fs))
    cg.create()
    res = resources()
    assert res.memory is not None and res.cpu is not None
    res.memory.swap = 96 << 20
    res.cpu.quota = 20000
    res.unified = {"memory.high": "50M"}
    res.devices = [LinuxDeviceCgroup(allow=False, access="rwm")]
    cg.apply(res, initial=True)
    d = root / "bulkhead/a2"
    assert (d / "memory.max").read_text() == str(64 << 20)
    assert (d / "memory.swap.max").read_text() == str(32 << 20)
    assert (d / "cpu.weight").read_text() == "59"  # 512 shares (runc >= 1.3.2's curve)
    assert (d / "cpu.max").read_text() == "20000"
    assert (d / "cpuset.cpus").read_text() == "1"
    assert (d / "pids.max").read_text() == "100"
    assert (d / "memory.high").read_text() == "50M"
    assert fake_fs.writes()[-1] == ("v2/bulkhead/a2/memory.high", "50M")  # unified wins: last
    program = fake_fs.device_programs.pop(str(d))
    assert devicefilter.run(program, "c", 1, 3, "rw")  # /dev/null
    assert not devicefilter.run(program, "b", 8, 0, "r")  # /dev/sda


def test_v2_device_rules_replace_on_update_only_when_given(fake_fs: FakeTree) -> None:
    d = str(fake_fs.root / "v2/bulkhead/d2")
    cg = new_manager("/bulkhead/d2", layout=v2_layout(fake_fs))
    cg.create()
    cg.apply(None, initial=True)  # no resources: the default rules
    assert not devicefilter.run(fake_fs.device_programs.pop(d), "c", 10, 229, "rw")
    cg.apply(LinuxResources(pids=LinuxPids(limit=5)))  # no devices: left alone
    assert fake_fs.device_programs == {}
    fuse = LinuxDeviceCgroup(allow=True, type="c", major=10, minor=229, access="rw")
    cg.apply(LinuxResources(devices=[fuse]))
    assert devicefilter.run(fake_fs.device_programs.pop(d), "c", 10, 229, "rw")
    with pytest.raises(CgroupError, match=r"devices\[0\]\.access"):
        cg.apply(LinuxResources(devices=[LinuxDeviceCgroup(allow=True, access="x")]))
    assert fake_fs.device_programs == {}


def test_v2_refuses_what_it_cannot_do(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/r2", layout=v2_layout(fake_fs))
    cg.create()
    before = len(fake_fs.log)
    for res, message in [
        (LinuxResources(network=LinuxNetwork(class_id=7)), r"network: cgroup v2 has no net_cls"),
        (LinuxResources(unified={"cgroup.procs": "1"}), r"unified\['cgroup.procs'\]"),
        (LinuxResources(unified={"../x": "1"}), r"not a cgroup v2 file name"),
        (LinuxResources(memory=LinuxMemory(swappiness=1)), r"memory\.swappiness"),
        (LinuxResources(cpu=LinuxCPU(cpus="7")), r"cpu\.cpus: '7' names CPUs 7"),
    ]:
        with pytest.raises(CgroupError, match=message):
            cg.apply(res)
    assert len(fake_fs.log) == before


def test_v2_controller_not_enabled_is_named(fake_fs: FakeTree) -> None:
    root = fake_fs.root / "v2"
    cg = new_manager("/bulkhead/e2", layout=v2_layout(fake_fs))
    cg.create()
    (root / "bulkhead/e2/cgroup.controllers").write_text("cpu memory\n")
    with pytest.raises(CgroupError, match=r"pids\.limit: the pids controller is not enabled"):
        cg.apply(LinuxResources(memory=LinuxMemory(limit=1 << 20), pids=LinuxPids(limit=3)))
    assert (root / "bulkhead/e2/memory.max").read_text() == "max"  # nothing written


def test_v2_freeze_kill_destroy(fake_fs: FakeTree) -> None:
    root = fake_fs.root / "v2"
    cg = new_manager("/bulkhead/k2", layout=v2_layout(fake_fs))
    cg.create()
    cg.freeze()
    assert cg.state() == "FROZEN"
    cg.thaw()
    assert cg.state() == "THAWED"
    cg.kill_all(signal.SIGKILL)
    assert fake_fs.writes("cgroup.kill") == [("v2/bulkhead/k2/cgroup.kill", "1")]
    assert cg.paths() == {"": str(root / "bulkhead/k2")}
    cg.destroy()
    assert not cg.exists()
    cg.kill_all(signal.SIGKILL)  # gone: nothing to do


def test_v2_stats(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/s2", layout=v2_layout(fake_fs))
    cg.create()
    s = cg.stats()
    assert s.cpu.usage.total == 5000
    assert s.memory.usage.limit == 2**64 - 1
    assert "2MB" in s.hugetlb


def test_v2_oom_watcher_sees_new_kills(fake_fs: FakeTree) -> None:
    root = fake_fs.root / "v2"
    cg = new_manager("/bulkhead/o2", layout=v2_layout(fake_fs))
    cg.create()
    events = root / "bulkhead/o2/memory.events"
    with cg.oom_events() as w:
        assert w.wait(0) == 0
        events.write_text("oom 2\noom_kill 2\n")
        start = time.monotonic()
        assert w.wait(1) == 2
        assert time.monotonic() - start < 1
        assert w.wait(0) == 0


def test_apply_before_create_says_so(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/early", layout=v1_layout(fake_fs))
    with pytest.raises(CgroupError, match=r"pids\.limit: the cgroup does not exist"):
        cg.apply(LinuxResources(pids=LinuxPids(limit=3)))


def test_v1_hugetlb_nowhere(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/hn", layout=v1_layout(fake_fs))
    cg.create()
    (root / "unified/cgroup.controllers").write_text("")  # a systemd hybrid: no controllers
    limits = LinuxResources(hugepage_limits=[LinuxHugepageLimit(page_size="2MB", limit=1)])
    with pytest.raises(CgroupError, match=r"hugepageLimits: the hugetlb controller is not mounted"):
        cg.apply(limits)
    bad = LinuxResources(hugepage_limits=[LinuxHugepageLimit(page_size="3MB", limit=1)])
    with pytest.raises(CgroupError, match=r"pageSize: 3MB pages are not offered"):
        cg.apply(bad)


# ---------------------------------------------------------------------- updates: all or nothing


def refuse(fake: FakeTree, monkeypatch: pytest.MonkeyPatch, name: str, err: int) -> None:
    """Make the fake kernel refuse writes to files called ``name`` with ``err``."""
    inner = fs.write

    def write(path: str, value: str) -> None:
        if os.path.basename(path) == name:
            fake.log.append((path, f"REFUSED {value}"))
            raise OSError(err, os.strerror(err), path)
        inner(path, value)

    monkeypatch.setattr(fs, "write", write)


def test_v1_update_refused_half_way_is_undone(
    fake_fs: FakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/undo", layout=v1_layout(fake_fs))
    cg.create()
    cg.apply(resources(), initial=True)
    mem = root / "memory/bulkhead/undo"
    before = {
        f.name: f.read_text()
        for h in ("memory", "cpu", "pids", "devices")
        for f in (root / h / "bulkhead/undo").iterdir()
    }
    refuse(fake_fs, monkeypatch, "pids.max", errno.EINVAL)
    update = LinuxResources(
        memory=LinuxMemory(limit=128 << 20, swappiness=5, disable_oom_killer=True),
        cpu=LinuxCPU(shares=2048),
        pids=LinuxPids(limit=7),
        devices=[LinuxDeviceCgroup(allow=True, type="c", major=10, minor=229, access="rw")],
    )
    with pytest.raises(CgroupError) as info:
        cg.apply(update)
    message = str(info.value)
    assert message.startswith("linux.resources.pids.limit: the kernel refused '7' for pids.max")
    assert "earlier write(s) of this update were undone" in message
    after = {
        f.name: f.read_text()
        for h in ("memory", "cpu", "pids", "devices")
        for f in (root / h / "bulkhead/undo").iterdir()
    }
    changed = {k for k in before if before[k].strip() != after[k].strip()}
    # the write-only devices files show the replayed devices.list, and the fake
    # oom_control holds the flag written back (the kernel shows it in its table)
    assert changed <= {"devices.allow", "devices.deny", "memory.oom_control"}, changed
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
    assert (mem / "memory.oom_control").read_text().strip() == "0"
    # the device rules went back to what devices.list said
    deny = [v for p, v in fake_fs.writes("devices.deny")]
    assert deny[-1] == "a"


def test_v1_update_of_a_missing_file_writes_nothing(fake_fs: FakeTree) -> None:
    root = fake_fs.root
    cg = new_manager("/bulkhead/mf", layout=v1_layout(fake_fs))
    cg.create()
    (root / "cpu/bulkhead/mf/cpu.idle").unlink()  # an older kernel
    before = len(fake_fs.log)
    with pytest.raises(
        CgroupError, match=r"^linux\.resources\.cpu\.idle: this kernel or cgroup has no"
    ):
        cg.apply(LinuxResources(memory=LinuxMemory(limit=1 << 20), cpu=LinuxCPU(idle=1)))
    assert len(fake_fs.log) == before


def test_v1_undo_failure_is_reported(fake_fs: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    cg = new_manager("/bulkhead/uf", layout=v1_layout(fake_fs))
    cg.create()
    inner = fs.write
    calls: list[str] = []

    def write(path: str, value: str) -> None:
        calls.append(os.path.basename(path))
        if os.path.basename(path) == "pids.max":
            raise OSError(errno.EINVAL, "Invalid argument", path)
        if os.path.basename(path) == "cpu.shares" and calls.count("cpu.shares") > 1:
            raise OSError(errno.EBUSY, "Device or resource busy", path)
        inner(path, value)

    monkeypatch.setattr(fs, "write", write)
    with pytest.raises(
        CgroupError,
        match=r"pids\.limit: .*putting back .* failed too \(cpu\.shares = '1024': Device or resource busy\): the cgroup is partly updated",
    ):
        cg.apply(LinuxResources(cpu=LinuxCPU(shares=512), pids=LinuxPids(limit=3)))


def test_v2_update_refused_half_way_is_undone(
    fake_fs: FakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_fs.root / "v2"
    cg = new_manager("/bulkhead/u2", layout=v2_layout(fake_fs))
    cg.create()
    d = root / "bulkhead/u2"
    (d / "io.max").write_text("8:16 rbps=100 wbps=max riops=max wiops=max\n")
    monkeypatch.setattr(
        "bulkhead.cgroups.blkio.check_device", lambda key, field, bfq_field=None: None
    )
    refuse(fake_fs, monkeypatch, "hugetlb.2MB.max", errno.EINVAL)
    update = LinuxResources(
        memory=LinuxMemory(limit=1 << 30, swap=2 << 30),
        cpu=LinuxCPU(shares=2048, quota=50000),
        block_io=LinuxBlockIO(
            weight=500,
            throttle_read_bps_device=[
                {"major": 8, "minor": 0, "rate": 1000},  # type: ignore[list-item]
                {"major": 8, "minor": 16, "rate": 2000},  # type: ignore[list-item]
            ],
        ),
        hugepage_limits=[LinuxHugepageLimit(page_size="2MB", limit=2 << 20)],
    )
    update = msgspec_convert(update)
    with pytest.raises(CgroupError, match=r"hugepageLimits\[0\]\.limit: .* were undone"):
        cg.apply(update)
    assert (d / "memory.max").read_text() == "max"
    assert (d / "memory.swap.max").read_text() == "max"
    assert (d / "cpu.max").read_text() == "max 100000"
    assert (d / "cpu.weight").read_text() == "100"
    # io.max is a table: each touched device gets its old line, or loses its rule
    undo = [v for _, v in fake_fs.writes("io.max")][-2:]
    assert sorted(undo) == [
        "8:0 rbps=max wbps=max riops=max wiops=max",
        "8:16 rbps=100 wbps=max riops=max wiops=max",
    ]
    assert [v for _, v in fake_fs.writes("io.weight")][-1] == "default 100"


def msgspec_convert(res: LinuxResources) -> LinuxResources:
    import msgspec

    return msgspec.convert(msgspec.to_builtins(res), type=LinuxResources)


def test_v2_device_program_failure_undoes_the_writes(
    fake_fs: FakeTree, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = fake_fs.root / "v2"
    cg = new_manager("/bulkhead/dp", layout=v2_layout(fake_fs))
    cg.create()

    def attach(d: str, program: bytes) -> None:
        raise CgroupError("linux.resources.devices: cannot attach the device program: EPERM")

    monkeypatch.setattr(devicefilter, "attach", attach)
    rule = LinuxDeviceCgroup(allow=True, type="c", major=10, minor=229, access="rw")
    with pytest.raises(CgroupError, match=r"^linux\.resources\.devices: .*were undone"):
        cg.apply(LinuxResources(pids=LinuxPids(limit=9), devices=[rule]))
    assert (root / "bulkhead/dp/pids.max").read_text() == "max"


def test_v2_rdma(fake_fs: FakeTree, monkeypatch: pytest.MonkeyPatch) -> None:
    ib = fake_fs.root / "infiniband"
    (ib / "siw0").mkdir(parents=True)
    monkeypatch.setattr(rdma, "SYS_CLASS_INFINIBAND", str(ib))
    root = fake_fs.root / "v2"
    layout = v2_layout(fake_fs)
    (root / "cgroup.controllers").write_text(V2_CONTROLLERS + " rdma\n")
    cg = new_manager("/bulkhead/rd", layout=layout)
    cg.create()
    (root / "bulkhead/rd/rdma.max").write_text("")
    res = LinuxResources(rdma={"siw0": LinuxRdma(hca_handles=1, hca_objects=10)})
    cg.apply(res)
    assert fake_fs.writes("rdma.max") == [
        ("v2/bulkhead/rd/rdma.max", "siw0 hca_handle=1 hca_object=10")
    ]
    with pytest.raises(CgroupError, match=r"^linux\.resources\.rdma\['mlx5_0'\]: no RDMA device"):
        cg.apply(LinuxResources(rdma={"mlx5_0": LinuxRdma(hca_handles=1)}))
    (root / "bulkhead/rd/cgroup.controllers").write_text("memory pids\n")
    with pytest.raises(CgroupError, match=r"rdma\['siw0'\]: the rdma controller is not enabled"):
        cg.apply(res)


def test_v1_rdma_and_network_name_what_is_missing(fake_fs: FakeTree) -> None:
    cg = new_manager("/bulkhead/rn", layout=v1_layout(fake_fs))
    cg.create()
    with pytest.raises(
        CgroupError,
        match=r"^linux\.resources\.rdma: (this kernel has no rdma controller|the rdma controller is not mounted)",
    ):
        cg.apply(LinuxResources(rdma={"mlx5_0": LinuxRdma(hca_handles=1)}))
    cg.apply(LinuxResources(rdma={}))  # nothing asked: fine


def test_makedirs_makes_only_the_missing_leaf_in_one_mkdir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bulkhead.cgroups import fs

    calls: list[str] = []
    real = fs.mkdir

    def counting(path: str) -> bool:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(fs, "mkdir", counting)
    top = str(tmp_path)
    assert fs.makedirs(top, "/bulkhead/p/a") == [
        f"{top}/bulkhead",
        f"{top}/bulkhead/p",
        f"{top}/bulkhead/p/a",
    ]
    calls.clear()
    assert fs.makedirs(top, "/bulkhead/p/b") == [f"{top}/bulkhead/p/b"]
    assert calls == [f"{top}/bulkhead/p/b"]
    assert fs.makedirs(top, "/bulkhead/p/b") == []
