"""Diff (tree compare and overlay upper form, without root) and mount.py's option helpers."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from bulkhead.linux import mount as lm
from bulkhead.snapshots.base import DiffDirs
from bulkhead.snapshots.diff import diff, diff_dirs
from bulkhead.snapshots.mount import (
    MAX_OPTIONS,
    common_directory,
    overlay_data,
    shorten_paths,
    split_overlay_options,
)
from bulkhead.snapshots.vfs import VfsSnapshotter


def layer(dirs: DiffDirs) -> tuple[list[tarfile.TarInfo], bytes]:
    buf = io.BytesIO()
    result = diff_dirs(dirs, buf)
    data = buf.getvalue()
    assert result.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert result.size == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert result.entries == len(members)
    return members, data


def make_base(p: Path) -> None:
    p.mkdir()
    (p / "keep").write_text("same")
    (p / "change").write_text("before")
    (p / "gone").write_text("x")
    (p / "dir").mkdir()
    (p / "dir" / "a").write_text("a")
    (p / "olddir").mkdir()
    (p / "olddir" / "z").write_text("z")
    os.symlink("keep", p / "link")


def test_tree_compare(tmp_path: Path) -> None:
    lower = tmp_path / "lower"
    make_base(lower)
    upper = tmp_path / "upper"
    subprocess.run(["cp", "-a", str(lower), str(upper)], check=True)
    (upper / "change").write_text("after!")
    (upper / "gone").unlink()
    (upper / "dir" / "b").write_text("b")
    for f in (upper / "olddir").iterdir():
        f.unlink()
    (upper / "olddir").rmdir()
    (upper / "link").unlink()
    os.symlink("change", upper / "link")
    os.chmod(upper / "keep", 0o600)
    members, _ = layer(DiffDirs(str(upper), (str(lower),), overlay=False))
    names = [m.name for m in members]
    # whiteouts where the deleted names sort; "dir" itself changed (its mtime, by adding b)
    assert names == ["change", "dir", "dir/b", ".wh.gone", "keep", "link", ".wh.olddir"]
    by = {m.name: m for m in members}
    assert by["keep"].mode == 0o600
    assert by["link"].issym() and by["link"].linkname == "change"
    assert by[".wh.gone"].size == 0 and by[".wh.gone"].isreg()


def test_sorted_and_deterministic(tmp_path: Path) -> None:
    upper = tmp_path / "u"
    upper.mkdir()
    for name in ["b", "a", "c-dir"]:
        (upper / name).write_text(name)
    (upper / "a-dir").mkdir()
    (upper / "a-dir" / "z").write_text("z")
    members, data = layer(DiffDirs(str(upper), (), overlay=False))
    assert [m.name for m in members] == ["a", "a-dir", "a-dir/z", "b", "c-dir"]
    assert all(m.uname == "" and m.gname == "" for m in members)
    _, again = layer(DiffDirs(str(upper), (), overlay=False))
    assert again == data
    assert b"ustar\x0000" in data[:512]  # POSIX (PAX) headers, not GNU


def test_same_content_whole_second_mtime_is_compared(tmp_path: Path) -> None:
    lower, upper = tmp_path / "l", tmp_path / "u"
    lower.mkdir()
    upper.mkdir()
    (lower / "f").write_text("aaaa")
    (upper / "f").write_text("bbbb")  # same size
    (lower / "same").write_text("cccc")
    (upper / "same").write_text("cccc")
    for d in (lower, upper):
        os.utime(d / "f", (100, 100))
        os.utime(d / "same", (100, 100))
    members, _ = layer(DiffDirs(str(upper), (str(lower),), overlay=False))
    assert [m.name for m in members] == ["f"]


def test_hard_links_within_layer(tmp_path: Path) -> None:
    upper = tmp_path / "u"
    upper.mkdir()
    (upper / "one").write_text("data")
    os.link(upper / "one", upper / "two")
    members, _ = layer(DiffDirs(str(upper), (), overlay=False))
    by = {m.name: m for m in members}
    assert by["one"].isreg() and by["one"].size == 4
    assert by["two"].islnk() and by["two"].linkname == "one"


def test_xattrs_as_pax_records(tmp_path: Path) -> None:
    upper = tmp_path / "u"
    upper.mkdir()
    (upper / "f").write_text("x")
    os.setxattr(upper / "f", "user.bin", b"\xff\x00")
    members, _ = layer(DiffDirs(str(upper), (), overlay=False))
    value = members[0].pax_headers["SCHILY.xattr.user.bin"]
    assert value.encode("utf-8", "surrogateescape") == b"\xff\x00"


def test_overlay_upper_walk_plain_entries(tmp_path: Path) -> None:
    """The overlay form without whiteout devices (those need root: the integration suite)."""
    upper = tmp_path / "u"
    upper.mkdir()
    (upper / "etc").mkdir()
    (upper / "etc" / "x").write_text("x")
    members, _ = layer(DiffDirs(str(upper), ("/nonexistent",), overlay=True))
    assert [m.name for m in members] == ["etc", "etc/x"]


def test_diff_through_a_snapshotter(tmp_path: Path) -> None:
    with VfsSnapshotter(tmp_path / "root") as s:
        s.prepare("a")
        Path(s.diff_dirs("a").upper, "hello").write_text("hi")
        out = tmp_path / "layer.tar"
        result = diff(s, "a", out)
        assert result.entries == 1
        with tarfile.open(out) as tar:
            assert tar.getnames() == ["hello"]


# --------------------------------------------------------------------------- mount helpers


def test_split_overlay_options() -> None:
    flags, words = split_overlay_options(["ro", "index=off", "lowerdir=/a:/b", "userxattr"])
    assert flags == lm.MS_RDONLY
    assert words == [("index", "off"), ("lowerdir", "/a:/b"), ("userxattr", None)]
    assert overlay_data(words) == "index=off,lowerdir=/a:/b,userxattr"


def test_shorten_paths() -> None:
    root = "/var/lib/bulkhead/a-very-long-root/snapshots"
    words = [
        ("index", "off"),
        ("lowerdir", f"{root}/2/fs:{root}/1/fs"),
        ("upperdir", f"{root}/3/fs"),
        ("workdir", f"{root}/3/work"),
    ]
    common = common_directory(words)
    assert common == root
    short = shorten_paths(words, 7, root)
    assert overlay_data(short) == (
        "index=off,lowerdir=/proc/self/fd/7/2/fs:/proc/self/fd/7/1/fs,"
        "upperdir=/proc/self/fd/7/3/fs,workdir=/proc/self/fd/7/3/work"
    )


def test_common_directory_edge_cases() -> None:
    assert common_directory([("index", "off")]) is None
    assert common_directory([("lowerdir", "rel/a:rel/b")]) is None
    assert common_directory([("lowerdir", "/a:/b")]) is None  # only "/" in common
    assert common_directory([("lowerdir", "/x/a")]) == "/x"


def test_max_options_is_a_page() -> None:
    assert os.sysconf("SC_PAGESIZE") - 1 == MAX_OPTIONS


@pytest.mark.parametrize("layers", [128])
def test_fd_paths_fit_128_layers_of_long_paths(layers: int) -> None:
    root = "/var/lib/" + "x" * 200 + "/snapshots"
    lower = ":".join(f"{root}/{n}/fs" for n in range(1000, 1000 + layers))
    words = [
        ("index", "off"),
        ("lowerdir", lower),
        ("upperdir", f"{root}/9999/fs"),
        ("workdir", f"{root}/9999/work"),
    ]
    assert len(overlay_data(words)) > MAX_OPTIONS
    assert len(overlay_data(shorten_paths(words, 12, root))) <= MAX_OPTIONS


def test_deep_trees_need_no_recursion(tmp_path: Path) -> None:
    """A tree deeper than Python's recursion limit (a hostile image can make one)."""
    upper = tmp_path / "u"
    upper.mkdir()
    fd = os.open(upper, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(1100):
            os.mkdir("d", dir_fd=fd)
            new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
    finally:
        os.close(fd)
    try:
        members, _ = layer(DiffDirs(str(upper), (), overlay=False))
        assert len(members) == 1100
        members, _ = layer(DiffDirs(str(upper), (), overlay=True))
        assert len(members) == 1100
        from bulkhead.snapshots.base import disk_usage

        assert disk_usage(str(upper)).inodes == 1101
    finally:
        # shutil.rmtree (pytest's clean-up) recurses: GNU rm does not
        subprocess.run(["rm", "-rf", str(upper)], check=True)


def test_tar_writer_edge_cases_read_back_by_tarfile_and_gnu_tar(tmp_path: Path) -> None:
    upper = tmp_path / "u"
    upper.mkdir()
    long_dir = upper / ("d" * 120)
    long_dir.mkdir()
    (long_dir / "f").write_bytes(os.urandom(3 << 20))  # > one read chunk, not block aligned
    (upper / "naïve").write_text("utf-8 name")
    raw = os.fsencode(str(upper)) + b"/bad-\xff-name"
    with open(raw, "wb") as f:
        f.write(b"not utf-8 name")
    os.symlink("t" * 300, upper / "long-link")
    (upper / "empty").write_bytes(b"")
    os.utime(upper / "empty", ns=(0, 1_234_567_890_999_999_999))
    members, data = layer(DiffDirs(str(upper), (), overlay=False))
    by = {m.name: m for m in members}
    assert by["d" * 120 + "/f"].size == 3 << 20
    assert by["long-link"].linkname == "t" * 300
    assert "naïve" in by
    assert "bad-\udcff-name" in by
    assert by["empty"].mtime == 1_234_567_890
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile("d" * 120 + "/f")
        assert member is not None
        assert member.read() == (long_dir / "f").read_bytes()
    out = tmp_path / "l.tar"
    out.write_bytes(data)
    listing = subprocess.run(
        ["tar", "--quoting-style=literal", "-tf", str(out)], capture_output=True, check=True
    ).stdout.splitlines()
    assert b"long-link" in listing and b"bad-\xff-name" in listing
    assert len(data) % 512 == 0 and data.endswith(bytes(1024))


def test_pax_records_for_what_ustar_cannot_hold() -> None:
    from bulkhead.snapshots.diff import _HashingWriter, _pax_record, _TarWriter

    assert _pax_record(b"path", b"x") == b"9 path=x\n"
    assert _pax_record(b"k", b"v" * 95) == b"102 k=" + b"v" * 95 + b"\n"  # length counts itself
    buf = io.BytesIO()
    w = _TarWriter(_HashingWriter(buf))
    w.entry("f", tarfile.REGTYPE, uid=3_000_000, gid=5, mtime=-5)
    w.close()
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        (m,) = tar.getmembers()
    assert (m.uid, m.gid, m.mtime) == (3_000_000, 5, -5)
