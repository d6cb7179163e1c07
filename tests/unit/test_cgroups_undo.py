"""Unit tests of how an update that the kernel refuses half-way is put back (``fs.apply_writes``).

The files are plain files in a temporary directory; a wrapped ``fs.write``
plays the kernel and refuses what a test says.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.errors import CgroupError


@pytest.fixture
def log(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every write, as (file name, value); a file named ``refused`` says EINVAL."""
    seen: list[tuple[str, str]] = []
    real = fs.write

    def write(path: str, value: str) -> None:
        seen.append((os.path.basename(path), value))
        if os.path.basename(path) == "refused":
            raise OSError(errno.EINVAL, "Invalid argument", path)
        real(path, value)

    monkeypatch.setattr(fs, "write", write)
    return seen


def make(d: Path, **content: str) -> str:
    for name, value in content.items():
        (d / name.replace("__", ".")).write_text(value)
    return str(d)


def test_value_files_get_their_old_value_back(tmp_path: Path, log: list[tuple[str, str]]) -> None:
    d = make(tmp_path, pids__max="max\n", memory__max="1048576\n", refused="x")
    plan = [
        Write(f"{d}/pids.max", "5", "linux.resources.pids.limit"),
        Write(f"{d}/memory.max", "2097152", "linux.resources.memory.limit"),
        Write(f"{d}/refused", "1", "linux.resources.unified['refused']"),
    ]
    with pytest.raises(CgroupError, match=r"^linux\.resources\.unified\['refused'\]: .*2 earlier"):
        fs.apply_writes(plan, undo=True)
    assert log[3:] == [("memory.max", "1048576"), ("pids.max", "max")]  # last changed first
    assert (tmp_path / "pids.max").read_text() == "max"
    # without undo (a new cgroup): no reads, no undo
    log.clear()
    with pytest.raises(CgroupError) as info:
        fs.apply_writes(plan)
    assert "undone" not in str(info.value) and len(log) == 3


def test_nothing_is_written_when_a_file_is_missing(
    tmp_path: Path, log: list[tuple[str, str]]
) -> None:
    d = make(tmp_path, pids__max="max\n")
    plan = [
        Write(f"{d}/pids.max", "5", "linux.resources.pids.limit"),
        Write(f"{d}/cpu.idle", "1", "linux.resources.cpu.idle"),
    ]
    with pytest.raises(
        CgroupError, match=r"^linux\.resources\.cpu\.idle: this kernel .* no cpu\.idle"
    ):
        fs.apply_writes(plan, undo=True)
    assert log == []
    with pytest.raises(CgroupError, match=r"pids\.limit: the cgroup does not exist"):
        fs.apply_writes([Write(f"{d}/gone/pids.max", "1", "linux.resources.pids.limit")], undo=True)


def test_tables_get_back_the_lines_of_the_keys_touched(
    tmp_path: Path, log: list[tuple[str, str]]
) -> None:
    d = make(
        tmp_path,
        io__max="8:0 rbps=100 wbps=max riops=max wiops=max\n",
        io__weight="default 100\n8:0 50\n",
        blkio__throttle__read_bps_device="8:0 100\n",
        rdma__max="mlx5_0 hca_handle=2 hca_object=max\n",
        net_prio__ifpriomap="lo 0\neth0 3\n",
        refused="",
    )
    plan = [
        Write(f"{d}/io.max", "8:0 rbps=5", "f"),
        Write(f"{d}/io.max", "8:16 wbps=5", "f"),
        Write(f"{d}/io.weight", "300", "f"),
        Write(f"{d}/io.weight", "8:16 70", "f"),
        Write(f"{d}/blkio.throttle.read_bps_device", "8:16 7", "f"),
        Write(f"{d}/rdma.max", "mlx5_0 hca_handle=1", "f"),
        Write(f"{d}/rdma.max", "siw0 hca_object=1", "f"),
        Write(f"{d}/net_prio.ifpriomap", "eth0 9", "f"),
        Write(f"{d}/refused", "1", "f"),
    ]
    with pytest.raises(CgroupError):
        fs.apply_writes(plan, undo=True)
    assert log[9:] == [
        ("net_prio.ifpriomap", "eth0 3"),
        ("rdma.max", "mlx5_0 hca_handle=2 hca_object=max"),
        ("rdma.max", "siw0 hca_handle=max hca_object=max"),
        ("blkio.throttle.read_bps_device", "8:16 0"),
        ("io.weight", "default 100"),
        ("io.weight", "8:16 default"),
        ("io.max", "8:0 rbps=100 wbps=max riops=max wiops=max"),
        ("io.max", "8:16 rbps=max wbps=max riops=max wiops=max"),
    ]


def test_v1_device_rules_are_replayed_from_devices_list(
    tmp_path: Path, log: list[tuple[str, str]]
) -> None:
    d = make(
        tmp_path,
        devices__allow="",
        devices__deny="",
        devices__list="c 1:3 rwm\nc 136:* rwm\n",
        refused="",
    )
    plan = [
        Write(f"{d}/devices.deny", "a", "linux.resources.devices"),
        Write(f"{d}/devices.allow", "c 10:229 rw", "linux.resources.devices[0]"),
        Write(f"{d}/refused", "1", "f"),
    ]
    with pytest.raises(CgroupError):
        fs.apply_writes(plan, undo=True)
    assert log[3:] == [
        ("devices.deny", "a"),
        ("devices.allow", "c 1:3 rwm"),
        ("devices.allow", "c 136:* rwm"),
    ]
    log.clear()
    (tmp_path / "devices.list").write_text("a *:* rwm\n")  # everything allowed
    with pytest.raises(CgroupError):
        fs.apply_writes(plan, undo=True)
    assert log[3:] == [("devices.deny", "a"), ("devices.allow", "a")]


def test_oom_control_and_multi_line_files(
    tmp_path: Path, log: list[tuple[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    d = make(
        tmp_path,
        memory__oom_control="oom_kill_disable 0\nunder_oom 0\noom_kill 3\n",
        cpuset__cpus="\n",
        memory__reclaim="",  # write-only in the kernel: an action, nothing to put back
        some__table="a 1\nb 2\n",
        refused="",
    )
    real_read = fs.read

    def read(path: str) -> str:
        if path.endswith("/memory.reclaim"):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return real_read(path)

    monkeypatch.setattr(fs, "read", read)
    plan = [
        Write(f"{d}/memory.reclaim", "1M", "f"),
        Write(f"{d}/memory.oom_control", "1", "f"),
        Write(f"{d}/cpuset.cpus", "1", "f"),
        Write(f"{d}/some.table", "c 3", "f"),
        Write(f"{d}/refused", "1", "f"),
    ]
    with pytest.raises(CgroupError):
        fs.apply_writes(plan, undo=True)
    assert log[5:] == [
        ("some.table", "a 1"),
        ("some.table", "b 2"),
        ("cpuset.cpus", "\n"),  # empty (v2: the parent's CPUs) stays a write
        ("memory.oom_control", "0"),
    ]


def test_then_failing_undoes_the_writes(tmp_path: Path, log: list[tuple[str, str]]) -> None:
    d = make(tmp_path, pids__max="max\n")

    def attach() -> None:
        raise CgroupError("linux.resources.devices: cannot attach")

    with pytest.raises(CgroupError, match=r"^linux\.resources\.devices: cannot attach \(the 1 "):
        fs.apply_writes([Write(f"{d}/pids.max", "5", "f")], undo=True, then=attach)
    assert (tmp_path / "pids.max").read_text() == "max"
