"""Snapshotters without mounting: the mounts they describe, their directories, vfs copies, usage."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bulkhead.errors import SnapshotError
from bulkhead.snapshots import Kind, Mount, Snapshotter
from bulkhead.snapshots.base import disk_usage
from bulkhead.snapshots.overlay import OverlaySnapshotter
from bulkhead.snapshots.vfs import VfsSnapshotter, copy_tree


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[OverlaySnapshotter]:
    s = OverlaySnapshotter(tmp_path / "ov")
    yield s
    s.close()


@pytest.fixture
def vfs(tmp_path: Path) -> Iterator[VfsSnapshotter]:
    s = VfsSnapshotter(tmp_path / "vfs")
    yield s
    s.close()


def fs(s: OverlaySnapshotter | VfsSnapshotter, n: int) -> str:
    return os.path.join(s.root, "snapshots", str(n), "fs")


def test_both_are_snapshotters(overlay: OverlaySnapshotter, vfs: VfsSnapshotter) -> None:
    assert isinstance(overlay, Snapshotter) and isinstance(vfs, Snapshotter)


def test_overlay_mounts(overlay: OverlaySnapshotter) -> None:
    root = overlay.root
    assert overlay.prepare("a") == [Mount("bind", fs(overlay, 1), options=["rw", "rbind"])]
    overlay.commit("A", "a")
    assert not os.path.exists(os.path.join(root, "snapshots", "1", "work"))
    assert overlay.view("v0") == [Mount("bind", fs(overlay, 2), options=["ro", "rbind"])]
    assert overlay.view("v1", "A") == [Mount("bind", fs(overlay, 1), options=["ro", "rbind"])]
    assert overlay.prepare("b", "A") == [
        Mount(
            "overlay",
            "overlay",
            options=[
                "index=off",
                f"lowerdir={fs(overlay, 1)}",
                f"upperdir={fs(overlay, 4)}",
                f"workdir={root}/snapshots/4/work",
            ],
        )
    ]
    overlay.commit("B", "b")
    assert overlay.view("v2", "B") == [
        Mount(
            "overlay",
            "overlay",
            options=["ro", "index=off", f"lowerdir={fs(overlay, 4)}:{fs(overlay, 1)}"],
        )
    ]
    assert overlay.mounts("v2") == overlay.mounts("v2")
    assert os.path.isdir(os.path.join(root, "snapshots", "5", "fs"))


def test_overlay_refuses_root_with_separators(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot carry"):
        OverlaySnapshotter(tmp_path / "a:b")


def test_vfs_copies_the_parent(vfs: VfsSnapshotter) -> None:
    assert vfs.prepare("a") == [Mount("bind", fs(vfs, 1), options=["rw", "rbind"])]
    base = Path(fs(vfs, 1))
    (base / "d").mkdir(mode=0o750)
    (base / "d").chmod(0o750)
    (base / "d" / "f").write_text("hello")
    os.link(base / "d" / "f", base / "d" / "g")
    os.symlink("d/f", base / "link")
    os.mkfifo(base / "fifo")
    os.setxattr(base / "d" / "f", "user.x", b"1")
    os.utime(base / "d" / "f", ns=(1, 1_500_000_001))
    vfs.commit("A", "a")
    assert vfs.prepare("b", "A") == [Mount("bind", fs(vfs, 2), options=["rw", "rbind"])]
    assert vfs.view("v", "A") == [Mount("bind", fs(vfs, 3), options=["ro", "rbind"])]
    copy = Path(fs(vfs, 2))
    assert (copy / "d" / "f").read_text() == "hello"
    assert os.stat(copy / "d" / "f").st_ino == os.stat(copy / "d" / "g").st_ino
    assert os.stat(copy / "d" / "f").st_ino != os.stat(base / "d" / "f").st_ino
    assert os.stat(copy / "d" / "f").st_mtime_ns == 1_500_000_001
    assert os.readlink(copy / "link") == "d/f"
    assert os.getxattr(copy / "d" / "f", "user.x") == b"1"
    assert os.stat(copy / "d").st_mode & 0o777 == 0o750
    assert Path(fs(vfs, 3), "d", "f").read_text() == "hello"


def test_copy_tree_reports_failure(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="copying"):
        copy_tree(str(tmp_path / "missing"), str(tmp_path / "dst"))


def test_failed_prepare_leaves_nothing(
    vfs: VfsSnapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    vfs.prepare("a")
    vfs.commit("A", "a")

    def broken(src: str, dst: str) -> None:
        os.mkdir(dst)
        raise SnapshotError("disk full")

    monkeypatch.setattr("bulkhead.snapshots.vfs.copy_tree", broken)
    with pytest.raises(SnapshotError, match="disk full"):
        vfs.prepare("b", "A")
    assert [i.name for i in vfs.walk()] == ["A"]
    assert os.listdir(os.path.join(vfs.root, "snapshots")) == ["1"]


def test_remove_deletes_directory(overlay: OverlaySnapshotter) -> None:
    overlay.prepare("a")
    Path(fs(overlay, 1), "f").write_text("x")
    overlay.remove("a")
    assert os.listdir(os.path.join(overlay.root, "snapshots")) == []


def test_view_has_no_diff_dirs(overlay: OverlaySnapshotter) -> None:
    overlay.prepare("a")
    overlay.commit("A", "a")
    overlay.view("v", "A")
    with pytest.raises(SnapshotError, match="view"):
        overlay.diff_dirs("v")
    overlay.prepare("b", "A")
    dirs = overlay.diff_dirs("b")
    assert dirs.overlay and dirs.lowers == (fs(overlay, 1),) and dirs.upper == fs(overlay, 3)


def test_kinds_are_strings() -> None:
    assert Kind("committed") is Kind.COMMITTED and str(Kind.VIEW) == "view"


def test_disk_usage_counts_hard_links_once(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "a").write_bytes(b"x" * 10000)
    os.link(d / "a", d / "b")
    (d / "sub").mkdir()
    u = disk_usage(str(d))
    assert u.inodes == 3
    assert 10000 <= u.size <= 10000 + 3 * 8192
    assert disk_usage(str(tmp_path / "missing")).inodes == 0


def test_open_snapshotter(tmp_path: Path) -> None:
    from bulkhead.snapshots import open_snapshotter

    s = open_snapshotter("vfs", str(tmp_path))
    try:
        assert isinstance(s, VfsSnapshotter) and s.root == str(tmp_path / "vfs")
    finally:
        s.close()
    with pytest.raises(SnapshotError, match="unknown snapshotter"):
        open_snapshotter("btrfs", str(tmp_path))


def test_slow_copy_does_not_block_other_calls(
    vfs: VfsSnapshotter, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    vfs.prepare("a")
    vfs.commit("A", "a")
    started, release = threading.Event(), threading.Event()
    real = copy_tree

    def slow(src: str, dst: str) -> None:
        started.set()
        assert release.wait(10)
        real(src, dst)

    monkeypatch.setattr("bulkhead.snapshots.vfs.copy_tree", slow)
    worker = threading.Thread(target=vfs.prepare, args=("b", "A"))
    worker.start()
    try:
        assert started.wait(10)
        # the store is not locked while the copy runs
        assert vfs.stat("A").kind == Kind.COMMITTED
        vfs.prepare("c")
        assert [i.name for i in vfs.walk()] == ["A", "c"]
        # and another process opening the root leaves the copy in progress alone
        other = VfsSnapshotter(vfs.root)
        other.close()
    finally:
        release.set()
        worker.join()
    assert [i.name for i in vfs.walk()] == ["A", "c", "b"]


def test_leftovers_of_dead_processes_are_removed(tmp_path: Path) -> None:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    snaps = tmp_path / "r" / "snapshots"
    snaps.mkdir(parents=True)
    (snaps / f"new-{proc.pid}-abc").mkdir()
    (snaps / f"new-{os.getpid()}-live").mkdir()
    (snaps / "rm-7").mkdir()
    (snaps / "12").mkdir()
    VfsSnapshotter(tmp_path / "r").close()
    assert os.listdir(snaps) == [f"new-{os.getpid()}-live"]
