"""One conformance suite for every snapshotter, with real mounts (containerd's snapshots/testsuite).

Each test runs against overlay (root on / : ext4), vfs on / and vfs on a
tmpfs of the test's own. Every mount a test makes is undone at teardown,
even when the test fails, and teardown checks that nothing under the test's
directory is still mounted.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bulkhead.errors import SnapshotError, SnapshotExists, SnapshotNotFound
from bulkhead.linux import mount as lm
from bulkhead.snapshots import Info, Kind, Mount, Snapshotter
from bulkhead.snapshots.base import BaseSnapshotter
from bulkhead.snapshots.diff import diff
from bulkhead.snapshots.mount import mount_all, mount_overlay, unmount_all
from bulkhead.snapshots.overlay import OverlaySnapshotter
from bulkhead.snapshots.vfs import VfsSnapshotter

pytestmark = pytest.mark.root

KINDS = ["overlay", "vfs", "vfs-tmpfs", "overlay-tmpfs"]


def mounted_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp.startswith(prefix) or mp == str(path):
                out.append(mp)
    return out


@pytest.fixture(params=KINDS)
def sn(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BaseSnapshotter]:
    root = tmp_path / "root"
    root.mkdir()
    kind = request.param
    on_tmpfs = kind.endswith("-tmpfs")
    if on_tmpfs:
        lm.mount("tmpfs", root, "tmpfs", 0, "mode=755")
    try:
        s: BaseSnapshotter = (
            OverlaySnapshotter(root) if kind.startswith("overlay") else VfsSnapshotter(root)
        )
        try:
            yield s
        finally:
            s.close()
    finally:
        if on_tmpfs:
            unmount_all(str(root))
        leaked = mounted_under(tmp_path)
        for mp in reversed(leaked):
            unmount_all(mp)
        assert not leaked, f"mounts left behind: {leaked}"


MountFn = Callable[[list[Mount], str], Path]


@pytest.fixture
def mnt(sn: BaseSnapshotter, tmp_path: Path) -> Iterator[MountFn]:
    """``mnt(mounts, name) -> target``: mounted until the test ends (or failed)."""
    targets: list[str] = []

    def do(mounts: list[Mount], name: str) -> Path:
        target = tmp_path / "mnt" / name
        target.mkdir(parents=True, exist_ok=True)
        targets.append(str(target))
        mount_all(mounts, str(target))
        return target

    yield do
    for t in reversed(targets):
        unmount_all(t)


def umount(target: Path) -> None:
    unmount_all(str(target))


def write(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    path.chmod(mode)


def tree(root: Path, *, dir_mtimes: bool = False) -> dict[str, tuple[object, ...]]:
    """Everything about a tree that a layer carries, by relative path."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            xattrs = {
                x: os.getxattr(p, x, follow_symlinks=False)
                for x in os.listxattr(p, follow_symlinks=False)
                if not x.startswith("trusted.overlay.")
            }
            content: object = None
            if stat.S_ISREG(st.st_mode):
                content = hashlib.sha256(Path(p).read_bytes()).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                content = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                content = st.st_rdev
            mtime = int(st.st_mtime) if dir_mtimes or not stat.S_ISDIR(st.st_mode) else None
            out[rel] = (st.st_mode, st.st_uid, st.st_gid, content, sorted(xattrs.items()), mtime)
    return out


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): p.read_text() if p.is_file() and not p.is_symlink() else "<dir>"
        for p in sorted(root.rglob("*"))
    }


# --------------------------------------------------------------------------- basics


def test_implements_protocol(sn: BaseSnapshotter) -> None:
    assert isinstance(sn, Snapshotter)


def test_basic_chain(sn: BaseSnapshotter, mnt: MountFn) -> None:
    """containerd's Basic: prepare, write, commit, prepare on it, change, commit, view, remove."""
    mounts = sn.prepare("preparing", labels={"l": "1"})
    assert mounts
    t = mnt(mounts, "preparing")
    write(t / "foo", "foo\n", 0o777)
    (t / "a" / "b" / "c").mkdir(parents=True)
    umount(t)
    sn.commit("committed", "preparing")
    si = sn.stat("committed")
    assert (si.kind, si.parent, si.name) == (Kind.COMMITTED, None, "committed")
    assert si.labels == {"l": "1"}
    with pytest.raises(SnapshotNotFound):
        sn.stat("preparing")

    t = mnt(sn.prepare("next", "committed"), "next")
    assert files(t) == {"a": "<dir>", "a/b": "<dir>", "a/b/c": "<dir>", "foo": "foo\n"}
    write(t / "bar", "bar\n")
    write(t / "foo", "bar\n")
    subprocess.run(["rm", "-rf", str(t / "a" / "b")], check=True)
    ni = sn.stat("next")
    assert (ni.kind, ni.parent) == (Kind.ACTIVE, "committed")
    umount(t)
    sn.commit("committed-next", "next")
    si2 = sn.stat("committed-next")
    assert (si2.kind, si2.parent) == (Kind.COMMITTED, "committed")

    walked = {i.name: i for i in sn.walk()}
    assert walked == {"committed": si, "committed-next": si2}

    v = mnt(sn.view("view", "committed-next"), "view")
    assert files(v) == {"a": "<dir>", "bar": "bar\n", "foo": "bar\n"}
    assert sn.stat("view").kind == Kind.VIEW
    umount(v)
    sn.remove("view")
    with pytest.raises(SnapshotError, match="remove"):
        sn.remove("committed")
    sn.remove("committed-next")
    sn.remove("committed")
    assert list(sn.walk()) == []
    assert sorted(os.listdir(sn.snapshots_dir)) == []


def test_transitivity_and_stat(sn: BaseSnapshotter, mnt: MountFn) -> None:
    t = mnt(sn.prepare("p"), "p")
    write(t / "foo", "foo\n")
    umount(t)
    before = time.time()
    sn.commit("A", "p")
    t = mnt(sn.prepare("n", "A"), "n")
    write(t / "foo", "foo bar\n")
    umount(t)
    sn.commit("B", "n")
    a, b = sn.stat("A"), sn.stat("B")
    assert a.parent is None and b.parent == "A" and sn.stat(b.parent).parent is None
    assert b.created >= before - 1 and b.updated >= b.created


def test_duplicate_and_bad_keys(sn: BaseSnapshotter) -> None:
    sn.prepare("p")
    sn.commit("A", "p")
    sn.prepare("new", "A")
    with pytest.raises(SnapshotExists):
        sn.view("new", "A")
    with pytest.raises(SnapshotExists):
        sn.prepare("new", "A")
    sn.view("v", "A")
    with pytest.raises(SnapshotExists):
        sn.view("v", "A")
    with pytest.raises(SnapshotExists):
        sn.prepare("A")
    with pytest.raises(SnapshotNotFound):
        sn.prepare("x", "nope")
    with pytest.raises(SnapshotError, match="not committed"):
        sn.prepare("x", "new")
    with pytest.raises(SnapshotError, match="not an active"):
        sn.commit("C", "v")
    sn.prepare("q")
    with pytest.raises(SnapshotExists):
        sn.commit("A", "q")
    with pytest.raises(SnapshotError, match="committed"):
        sn.mounts("A")
    with pytest.raises(SnapshotNotFound):
        sn.remove("nope")
    with pytest.raises(SnapshotNotFound):
        sn.commit("D", "nope")
    # failed creations leave no directories behind
    assert sorted(os.listdir(sn.snapshots_dir)) == sorted(
        str(i) for i in range(1, 10) if os.path.isdir(os.path.join(sn.snapshots_dir, str(i)))
    )
    assert not [n for n in os.listdir(sn.snapshots_dir) if not n.isdigit()]


def test_remove_intermediate_refused(sn: BaseSnapshotter) -> None:
    sn.prepare("base")
    sn.commit("cbase", "base")
    sn.prepare("inter", "cbase")
    sn.commit("cinter", "inter")
    sn.prepare("top", "cinter")
    with pytest.raises(SnapshotError, match="remove"):
        sn.remove("cinter")
    sn.remove("top")
    sn.remove("cinter")
    sn.remove("cbase")
    assert list(sn.walk()) == []


def test_mounts_again_and_active_mount_kinds(sn: BaseSnapshotter, mnt: MountFn) -> None:
    sn.prepare("p")
    t = mnt(sn.mounts("p"), "p")
    write(t / "x", "1")
    umount(t)
    t = mnt(sn.mounts("p"), "p2")
    assert (t / "x").read_text() == "1"


# --------------------------------------------------------------------------- layers


def commit_layer(
    sn: BaseSnapshotter, mnt: MountFn, name: str, parent: str | None, change: Callable[[Path], None]
) -> None:
    t = mnt(sn.prepare(name + "-active", parent), name)
    change(t)
    umount(t)
    sn.commit(name, name + "-active")


def test_deleted_files_in_child(sn: BaseSnapshotter, mnt: MountFn) -> None:
    def l1(t: Path) -> None:
        write(t / "foo", "foo\n")
        write(t / "foobar", "foobar\n")
        (t / "d").mkdir()
        write(t / "d" / "old", "old")

    def l2(t: Path) -> None:
        (t / "foobar").unlink()
        subprocess.run(["rm", "-rf", str(t / "d")], check=True)
        (t / "d").mkdir()  # overlay: an opaque directory
        write(t / "d" / "new", "new")

    commit_layer(sn, mnt, "l1", None, l1)
    commit_layer(sn, mnt, "l2", "l1", l2)
    commit_layer(sn, mnt, "l3", "l2", lambda t: None)
    v = mnt(sn.view("v3", "l3"), "v3")
    assert files(v) == {"d": "<dir>", "d/new": "new", "foo": "foo\n"}
    t = mnt(sn.prepare("a4", "l3"), "a4")
    assert files(t) == files(v)


def test_file_update_rename_and_remove_dir_in_lower(sn: BaseSnapshotter, mnt: MountFn) -> None:
    def l1(t: Path) -> None:
        (t / "etc").mkdir()
        write(t / "etc" / "hosts", "mydomain 10.0.0.1")
        write(t / "etc" / "profile", "PATH=/usr/bin")
        (t / "lib" / "sub").mkdir(parents=True)
        write(t / "lib" / "sub" / "f", "f")

    def l2(t: Path) -> None:
        write(t / "etc" / "hosts", "mydomain 10.0.0.2")
        os.rename(t / "etc" / "profile", t / "etc" / "profile.renamed")
        subprocess.run(["rm", "-rf", str(t / "lib")], check=True)

    commit_layer(sn, mnt, "l1", None, l1)
    commit_layer(sn, mnt, "l2", "l1", l2)
    v = mnt(sn.view("v", "l2"), "v")
    assert files(v) == {
        "etc": "<dir>",
        "etc/hosts": "mydomain 10.0.0.2",
        "etc/profile.renamed": "PATH=/usr/bin",
    }
    lower = mnt(sn.view("v1", "l1"), "v1")
    assert (lower / "etc" / "hosts").read_text() == "mydomain 10.0.0.1"


def test_chown_and_directory_permissions_survive_commit(sn: BaseSnapshotter, mnt: MountFn) -> None:
    def l1(t: Path) -> None:
        (t / "dir1").mkdir(mode=0o700)
        (t / "dir1").chmod(0o700)
        write(t / "dir1" / "f", "x")
        os.chown(t / "dir1" / "f", 1000, 1001)
        os.chmod(t / "dir1" / "f", 0o4755)  # after chown, which clears setuid
        os.chown(t / "dir1", 2000, 2000)

    commit_layer(sn, mnt, "l1", None, l1)
    commit_layer(sn, mnt, "l2", "l1", lambda t: os.chown(t / "dir1" / "f", 3000, 3000))
    v = mnt(sn.view("v", "l2"), "v")
    st = os.stat(v / "dir1")
    assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o700, 2000)
    st = os.stat(v / "dir1" / "f")
    assert (st.st_uid, st.st_gid) == (3000, 3000)
    lower = mnt(sn.view("v1", "l1"), "v1")
    st = os.stat(lower / "dir1" / "f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 1000, 1001)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_view_is_read_only(sn: BaseSnapshotter, mnt: MountFn, depth: int) -> None:
    parent: str | None = None
    for i in range(depth):

        def layer(t: Path, i: int = i) -> None:
            write(t / f"f{i}", str(i))

        commit_layer(sn, mnt, f"l{i}", parent, layer)
        parent = f"l{i}"
    v = mnt(sn.view("v", parent), "v")
    with pytest.raises(OSError) as e:
        (v / "new").write_text("x")
    assert e.value.errno == errno.EROFS
    assert sorted(os.listdir(v)) == [f"f{i}" for i in range(depth)]


# --------------------------------------------------------------------------- labels, usage, walk


def test_update_labels(sn: BaseSnapshotter) -> None:
    sn.prepare("p", labels={"a": "1", "b": "2"})
    info = sn.stat("p")
    new = sn.update(Info(info.kind, "p", labels={"c": "3"}))
    assert new.labels == {"c": "3"}
    new = sn.update(Info(info.kind, "p", labels={"d": "4", "c": ""}), "labels.d", "labels.c")
    assert new.labels == {"d": "4"}
    assert sn.stat("p").labels == {"d": "4"}
    assert new.updated >= info.updated
    with pytest.raises(SnapshotError, match="only labels"):
        sn.update(Info(info.kind, "p"), "parent")
    with pytest.raises(SnapshotNotFound):
        sn.update(Info(info.kind, "nope"))
    sn.commit("c", "p", labels={"e": "5"})
    assert sn.stat("c").labels == {"d": "4", "e": "5"}


def test_usage(sn: BaseSnapshotter, mnt: MountFn) -> None:
    t = mnt(sn.prepare("p"), "p")
    (t / "big").write_bytes(os.urandom(1 << 20))
    (t / "d").mkdir()
    write(t / "d" / "small", "x")
    os.link(t / "big", t / "big-link")
    umount(t)
    active = sn.usage("p")
    assert active.inodes == 4  # fs dir, big (once), d, d/small
    assert 1 << 20 <= active.size < (1 << 20) + 64 * 1024
    sn.commit("c", "p")
    assert sn.usage("c") == active
    t = mnt(sn.prepare("child", "c"), "child")
    write(t / "more", "y")
    umount(t)
    child = sn.usage("child")
    if isinstance(sn, OverlaySnapshotter):
        assert child.inodes == 2 and child.size < 64 * 1024  # only its own changes
    else:
        assert child.inodes == 5 and child.size >= 1 << 20  # a full copy


def test_walk_filters(sn: BaseSnapshotter) -> None:
    sn.prepare("p", labels={"gc.root": "yes"})
    sn.commit("c", "p")
    sn.prepare("a", "c", labels={"team": "x"})
    sn.view("v", "c")
    assert [i.name for i in sn.walk("kind==committed")] == ["c"]
    assert [i.name for i in sn.walk('labels."gc.root"')] == ["c"]
    assert [i.name for i in sn.walk("parent==c")] == ["a", "v"]
    assert [i.name for i in sn.walk("parent==c,labels.team==x")] == ["a"]
    assert [i.name for i in sn.walk(lambda i: i.kind == Kind.VIEW)] == ["v"]


def test_reopen_keeps_state_and_cleans_leftovers(sn: BaseSnapshotter, mnt: MountFn) -> None:
    t = mnt(sn.prepare("p"), "p")
    write(t / "f", "kept")
    umount(t)
    sn.commit("c", "p")
    leftover = Path(sn.snapshots_dir) / "new-crashed"
    leftover.mkdir()
    (Path(sn.snapshots_dir) / "99").mkdir()
    sn.close()
    again = type(sn)(sn.root)
    try:
        assert [i.name for i in again.walk()] == ["c"]
        assert not leftover.exists() and not (Path(sn.snapshots_dir) / "99").exists()
        v = mnt(again.view("v", "c"), "v")
        assert (v / "f").read_text() == "kept"
        umount(v)
    finally:
        again.close()


# --------------------------------------------------------------------------- mounts


def test_mount_all_undoes_on_failure(sn: BaseSnapshotter, tmp_path: Path) -> None:
    sn.prepare("p")
    good = sn.mounts("p")
    bad = Mount("overlay", "overlay", options=["lowerdir=/nonexistent-dir-x:/nonexistent-dir-y"])
    target = tmp_path / "fail"
    target.mkdir()
    with pytest.raises(OSError):
        mount_all([*good, bad], str(target))
    assert mounted_under(tmp_path / "fail") == []


def test_128_layer_chain(
    sn: BaseSnapshotter, mnt: MountFn, capsys: pytest.CaptureFixture[str]
) -> None:
    layers = 128
    parent = None
    t0 = time.perf_counter()
    for i in range(layers):
        mounts = sn.prepare(f"a{i}", parent)
        t = mnt(mounts, f"a{i}")
        write(t / f"f{i}", str(i))
        umount(t)
        sn.commit(f"c{i}", f"a{i}")
        parent = f"c{i}"
    build = time.perf_counter() - t0
    mounts = sn.prepare("top", parent)
    t1 = time.perf_counter()
    top = mnt(mounts, "top")
    mount_time = time.perf_counter() - t1
    assert sorted(os.listdir(top)) == sorted(f"f{i}" for i in range(layers))
    assert (top / "f0").read_text() == "0"
    if isinstance(sn, OverlaySnapshotter):
        option_bytes = len(",".join(mounts[0].options))
        assert option_bytes > 4096  # the case this test is for
        for method in ("fsconfig", "fdpaths"):
            target = top.parent / method
            target.mkdir()
            try:
                t2 = time.perf_counter()
                assert mount_overlay(mounts[0].options, str(target), method=method) == method
                took = time.perf_counter() - t2
                assert len(os.listdir(target)) == layers
            finally:
                unmount_all(str(target))
            with capsys.disabled():
                print(
                    f"\n  overlay 128 layers via {method}: {took * 1000:.2f} ms ({option_bytes} option bytes)"
                )
        with pytest.raises(SnapshotError, match="mount options"):
            mount_overlay(mounts[0].options, str(top.parent / "fsconfig"), method="legacy")
        # a read-only view of all 128 (overlay with lower dirs only, "ro")
        view = mnt(sn.view("top-view", parent), "top-view")
        assert len(os.listdir(view)) == layers
        with pytest.raises(OSError) as e:
            (view / "x").write_text("x")
        assert e.value.errno == errno.EROFS
    with capsys.disabled():
        print(
            f"\n  {type(sn).__name__} ({sn.root}): {layers} x (prepare+mount+write+commit)"
            f" {build / layers * 1000:.2f} ms each; mount of the top {mount_time * 1000:.2f} ms"
        )


# --------------------------------------------------------------------------- diff


def _apply_layer() -> Callable[..., object]:
    try:
        from bulkhead.images.layer import apply_layer
    except ImportError:
        pytest.skip("images/layer.py apply_layer is not there yet")
    return apply_layer


def base_tree(t: Path) -> None:
    (t / "etc").mkdir()
    write(t / "etc" / "passwd", "root:x:0:0\n")
    write(t / "etc" / "group", "root:x:0:\n")
    (t / "bin").mkdir()
    write(t / "bin" / "busybox", "ELF" * 1000, 0o755)
    os.link(t / "bin" / "busybox", t / "bin" / "sh")
    os.symlink("busybox", t / "bin" / "ls")
    os.mkfifo(t / "fifo")
    os.mknod(t / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    (t / "opaque").mkdir()
    write(t / "opaque" / "gone1", "1")
    write(t / "opaque" / "gone2", "2")
    (t / "gone-dir" / "deep").mkdir(parents=True)
    write(t / "gone-dir" / "deep" / "x", "x")
    os.setxattr(t / "etc" / "passwd", "user.base", b"b")
    write(t / "setuid", "s", 0o4755)


def change_tree(t: Path) -> None:
    write(t / "etc" / "passwd", "root:x:0:0\nuser:x:1000:1000\n")
    (t / "etc" / "group").unlink()
    os.chmod(t / "setuid", 0o755)
    subprocess.run(["rm", "-rf", str(t / "opaque"), str(t / "gone-dir")], check=True)
    (t / "opaque").mkdir()
    write(t / "opaque" / "fresh", "fresh")
    write(t / "new", "new", 0o600)
    os.chown(t / "new", 1000, 1000)
    os.link(t / "new", t / "new-link")
    os.setxattr(t / "new", "user.k", b"\x00\xffbinary")
    os.symlink("/etc/passwd", t / "abs-link")
    (t / "empty-dir").mkdir()
    os.mknod(t / "zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))


def test_diff_round_trip(sn: BaseSnapshotter, mnt: MountFn, tmp_path: Path) -> None:
    commit_layer(sn, mnt, "base", None, base_tree)
    active = mnt(sn.prepare("work", "base"), "work")
    change_tree(active)
    out = tmp_path / "layer.tar"
    result = diff(sn, "work", out)
    assert result.diff_id == "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest()
    assert result.size == out.stat().st_size
    again = diff(sn, "work", io.BytesIO())
    assert again.diff_id == result.diff_id  # deterministic

    with tarfile.open(out) as tar:
        members = {m.name.rstrip("/"): m for m in tar.getmembers()}
        names = [m.name.rstrip("/") for m in tar.getmembers()]
    assert "etc/.wh.group" in members
    assert ".wh.gone-dir" in members
    assert "bin/busybox" not in members and "bin/sh" not in members  # unchanged
    assert members["new-link"].islnk() and members["new-link"].linkname == "new"
    assert (
        members["new"].pax_headers["SCHILY.xattr.user.k"].encode("utf-8", "surrogateescape")
        == b"\x00\xffbinary"
    )
    assert members["zero"].ischr() and (members["zero"].devmajor, members["zero"].devminor) == (
        1,
        5,
    )
    assert members["setuid"].mode == 0o755
    if isinstance(sn, OverlaySnapshotter):
        assert names.index("opaque/.wh..wh..opq") == names.index("opaque") + 1
    else:
        assert "opaque/.wh.gone1" in members and "opaque/.wh.gone2" in members

    apply_layer = _apply_layer()
    parent_view = mnt(sn.view("pv", "base"), "pv")
    rebuilt = tmp_path / "rebuilt"
    subprocess.run(["cp", "-a", str(parent_view), str(rebuilt)], check=True)
    apply_layer(str(out), str(rebuilt), whiteouts="delete")
    assert tree(rebuilt) == tree(active)

    # The way an image is unpacked: the layer applied into a new active
    # snapshot of the same parent, through its mounts, then committed.
    target = mnt(sn.prepare("unpack", "base"), "unpack")
    apply_layer(str(out), str(target), whiteouts="delete")
    umount(target)
    sn.commit("unpacked", "unpack")
    view = mnt(sn.view("unpacked-view", "unpacked"), "unpacked-view")
    assert tree(view) == tree(active)
    if isinstance(sn, VfsSnapshotter):
        # the tree compare finds exactly the same layer again (overlay's differs:
        # the opaque directory became single whiteouts when applied through a mount)
        assert diff(sn, "unpacked", io.BytesIO()).diff_id == result.diff_id
    else:
        # Applied into the upper directory in overlay form (how the image
        # store unpacks), the overlay diff gives back the very same layer.
        sn.prepare("unpack-upper", "base")
        apply_layer(str(out), sn.diff_dirs("unpack-upper").upper, whiteouts="overlay")
        assert diff(sn, "unpack-upper", io.BytesIO()).diff_id == result.diff_id
        sn.commit("unpacked-upper", "unpack-upper")
        view = mnt(sn.view("upper-view", "unpacked-upper"), "upper-view")
        assert tree(view) == tree(active)


def test_diff_of_a_committed_base_is_its_whole_tree(
    sn: BaseSnapshotter, mnt: MountFn, tmp_path: Path
) -> None:
    commit_layer(sn, mnt, "base", None, base_tree)
    buf = io.BytesIO()
    diff(sn, "base", buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = {m.name: m for m in tar.getmembers()}
    names = list(members)
    assert names[:3] == ["bin", "bin/busybox", "bin/ls"]
    assert members["bin/sh"].islnk() and members["bin/sh"].linkname == "bin/busybox"
    assert not [n for n in names if ".wh." in n]
    assert len(names) == 16


def test_diff_of_unchanged_snapshot_is_empty(sn: BaseSnapshotter, mnt: MountFn) -> None:
    commit_layer(sn, mnt, "base", None, base_tree)
    sn.prepare("work", "base")
    buf = io.BytesIO()
    result = diff(sn, "work", buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        assert tar.getnames() == []
    assert result.entries == 0
    with pytest.raises(SnapshotError, match="view"):
        sn.view("v", "base")
        diff(sn, "v", io.BytesIO())


# --------------------------------------------------------------------------- choosing a driver


def test_overlay_supported_here_and_auto_picks_it(tmp_path: Path) -> None:
    from bulkhead.snapshots import open_snapshotter
    from bulkhead.snapshots.overlay import supported

    assert supported(str(tmp_path)) is None
    assert os.listdir(tmp_path) == []  # the check cleans up
    s = open_snapshotter("auto", str(tmp_path / "state"))
    try:
        assert isinstance(s, OverlaySnapshotter) and s.root == str(tmp_path / "state" / "overlay")
    finally:
        s.close()
    assert mounted_under(tmp_path) == []


def test_overlay_not_supported_on_overlay_upper(tmp_path: Path) -> None:
    """An overlay's merged tree cannot be another overlay's upper: auto falls back to vfs."""
    from bulkhead.snapshots import open_snapshotter
    from bulkhead.snapshots.overlay import supported

    for d in ("lower", "upper", "work", "merged"):
        (tmp_path / d).mkdir()
    mount_overlay(
        [
            f"lowerdir={tmp_path}/lower",
            f"upperdir={tmp_path}/upper",
            f"workdir={tmp_path}/work",
        ],
        str(tmp_path / "merged"),
    )
    try:
        reason = supported(str(tmp_path / "merged"))
        assert reason is not None and "overlay cannot be mounted" in reason
        s = open_snapshotter("auto", str(tmp_path / "merged"))
        try:
            assert isinstance(s, VfsSnapshotter)
        finally:
            s.close()
    finally:
        unmount_all(str(tmp_path / "merged"))


def test_mounted_context_manager(tmp_path: Path) -> None:
    from bulkhead.snapshots.mount import mounted

    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    with mounted([Mount("bind", str(src), options=["ro", "rbind"])]) as where:
        assert Path(where, "f").read_text() == "x"
        with pytest.raises(OSError):
            Path(where, "g").write_text("y")
    assert not os.path.exists(where)
    assert mounted_under(tmp_path) == []


def test_owners_modes_xattrs_devices_links_survive_the_chain(
    sn: BaseSnapshotter, mnt: MountFn
) -> None:
    capability = bytes.fromhex("0100000220000000000000000000000000000000")  # cap_net_bind_service

    def l1(t: Path) -> None:
        write(t / "f", "x")
        os.chown(t / "f", 5, 6)
        os.chmod(t / "f", 0o4755)
        os.setxattr(t / "f", "security.capability", capability)
        os.setxattr(t / "f", "trusted.mine", b"kept")
        os.link(t / "f", t / "g")
        os.mknod(t / "dev", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        os.mkfifo(t / "fifo")
        os.symlink("f", t / "sym")

    commit_layer(sn, mnt, "l1", None, l1)
    commit_layer(sn, mnt, "l2", "l1", lambda t: write(t / "other", "y"))
    for name, mounts in (("view", sn.view("v", "l2")), ("active", sn.prepare("a", "l2"))):
        t = mnt(mounts, name)
        st = os.lstat(t / "f")
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o4755, 5, 6)
        assert st.st_nlink == 2 and os.lstat(t / "g").st_ino == st.st_ino
        assert os.getxattr(t / "f", "security.capability") == capability
        assert os.getxattr(t / "f", "trusted.mine") == b"kept"
        assert os.lstat(t / "dev").st_rdev == os.makedev(1, 3)
        assert stat.S_ISFIFO(os.lstat(t / "fifo").st_mode)
        assert os.readlink(t / "sym") == "f"


def test_unmount_all_detaches_a_busy_mount(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x")
    target = tmp_path / "busy"
    target.mkdir()
    mount_all([Mount("bind", str(src), options=["rbind"])] * 2, str(target))  # two stacked
    try:
        with open(target / "f") as busy:  # keeps the top mount busy: umount2 says EBUSY
            with pytest.raises(OSError) as e:
                lm.umount2(str(target))
            assert e.value.errno == errno.EBUSY
            unmount_all(str(target))
            assert mounted_under(tmp_path) == []
            assert busy.read() == "x"  # a detached mount lives on for its users
    finally:
        unmount_all(str(target))
