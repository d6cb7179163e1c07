"""Layer apply: entry types, compression, diff_id, whiteouts and hostile tars (no root needed)."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterable
from pathlib import Path

import pytest
import zstandard

from bulkhead.errors import LayerError, UnsafeLayer, UnsupportedMediaType
from bulkhead.images.layer import (
    AppliedLayer,
    Change,
    apply_layer,
    detect_compression,
    write_layer,
)

Entry = tuple[tarfile.TarInfo, bytes | None]
MTIME = 1_600_000_000


def info(
    name: str,
    kind: bytes = tarfile.REGTYPE,
    *,
    data: bytes | None = None,
    link: str = "",
    mode: int = 0o644,
    mtime: int = MTIME,
    pax: dict[str, str] | None = None,
) -> Entry:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = mode
    ti.mtime = mtime
    ti.linkname = link
    ti.uid = os.geteuid()
    ti.gid = os.getegid()
    if pax:
        ti.pax_headers = pax
    if kind == tarfile.REGTYPE:
        data = data or b""
        ti.size = len(data)
    return ti, data


def d(name: str, mode: int = 0o755, mtime: int = MTIME) -> Entry:
    return info(name, tarfile.DIRTYPE, mode=mode, mtime=mtime)


def f(name: str, data: bytes = b"", mode: int = 0o644, **kw: object) -> Entry:
    return info(name, data=data, mode=mode, **kw)  # type: ignore[arg-type]


def sym(name: str, link: str) -> Entry:
    return info(name, tarfile.SYMTYPE, link=link, mode=0o777)


def hard(name: str, link: str) -> Entry:
    return info(name, tarfile.LNKTYPE, link=link)


def make_tar(entries: Iterable[Entry], fmt: int = tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tf:
        for ti, data in entries:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def apply_bytes(tmp_path: Path, data: bytes, target: Path, **kw: object) -> AppliedLayer:
    layer = tmp_path / "layer.tar"
    layer.write_bytes(data)
    target.mkdir(exist_ok=True)
    return apply_layer(str(layer), str(target), **kw)  # type: ignore[arg-type]


@pytest.fixture
def target(tmp_path: Path) -> Path:
    t = tmp_path / "target"
    t.mkdir()
    return t


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory beside the target that no layer may touch."""
    o = tmp_path / "outside"
    o.mkdir()
    (o / "victim").write_text("untouched\n")
    return o


def snapshot(path: Path) -> dict[str, tuple[int, bytes]]:
    out = {}
    for p in sorted(path.rglob("*")):
        st = p.lstat()
        out[str(p)] = (st.st_mode, p.read_bytes() if p.is_file() and not p.is_symlink() else b"")
    return out


# --- entry types and metadata ---------------------------------------------------------------


def test_entry_types_modes_times_and_diff_id(tmp_path: Path, target: Path) -> None:
    data = make_tar(
        [
            d("etc", mode=0o750, mtime=MTIME - 100),
            f("etc/hosts", b"127.0.0.1 localhost\n", mtime=MTIME - 5),
            f("etc/run", b"#!/bin/sh\n", mode=0o4755),
            d("tmp", mode=0o1777),
            sym("etc/link", "hosts"),
            sym("abs", "/etc/hosts"),
            hard("etc/hosts2", "etc/hosts"),
            info("fifo", tarfile.FIFOTYPE, mode=0o600),
            f("implicit/parent/file", b"x"),
        ]
    )
    applied = apply_bytes(tmp_path, data, target)
    assert applied.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert applied.size == len(data)
    assert applied.files == 9
    hosts = target / "etc/hosts"
    assert hosts.read_bytes() == b"127.0.0.1 localhost\n"
    assert hosts.stat().st_mtime == MTIME - 5
    assert stat.S_IMODE(hosts.stat().st_mode) == 0o644
    assert stat.S_IMODE((target / "etc/run").stat().st_mode) == 0o4755
    assert stat.S_IMODE((target / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((target / "etc").stat().st_mode) == 0o750
    # directory times are set after their contents were written
    assert (target / "etc").stat().st_mtime == MTIME - 100
    assert os.readlink(target / "etc/link") == "hosts"
    assert os.readlink(target / "abs") == "/etc/hosts"
    assert (target / "etc/hosts2").stat().st_ino == hosts.stat().st_ino
    assert stat.S_ISFIFO((target / "fifo").lstat().st_mode)
    assert (target / "implicit/parent/file").read_bytes() == b"x"
    assert stat.S_IMODE((target / "implicit").stat().st_mode) == 0o755


def test_readonly_directory_still_gets_its_contents(tmp_path: Path, target: Path) -> None:
    apply_bytes(tmp_path, make_tar([d("ro", mode=0o555), f("ro/file", b"1")]), target)
    assert (target / "ro/file").read_bytes() == b"1"
    assert stat.S_IMODE((target / "ro").stat().st_mode) == 0o555
    os.chmod(target / "ro", 0o755)  # so tmp_path can be removed


def test_empty_files_and_large_file_use_every_copy_path(tmp_path: Path, target: Path) -> None:
    big = os.urandom((1 << 20) + 7)
    data = make_tar([f("empty"), f("big", big), f("small", b"abc")])
    apply_bytes(tmp_path, data, target)
    assert (target / "empty").read_bytes() == b""
    assert (target / "big").read_bytes() == big
    assert (target / "small").read_bytes() == b"abc"


@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_long_names_and_link_names(tmp_path: Path, target: Path, fmt: int) -> None:
    deep = "/".join(["directory-with-a-long-name"] * 8)
    name = deep + "/" + "f" * 150
    data = make_tar([f(name, b"long"), sym("s", name), hard("h", name)], fmt)
    apply_bytes(tmp_path, data, target)
    assert (target / name).read_bytes() == b"long"
    assert os.readlink(target / "s") == name
    assert (target / "h").read_bytes() == b"long"


def test_ustar_prefix_field(tmp_path: Path, target: Path) -> None:
    name = "p" * 90 + "/" + "n" * 90
    apply_bytes(tmp_path, make_tar([f(name, b"u")], tarfile.USTAR_FORMAT), target)
    assert (target / name).read_bytes() == b"u"


def test_pax_mtime_with_fraction_and_user_xattr(tmp_path: Path, target: Path) -> None:
    probe = target / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    probe.unlink()
    data = make_tar(
        [
            f(
                "x",
                b"1",
                pax={
                    "mtime": "1600000000.25",
                    "SCHILY.xattr.user.comment": "hello",
                    "SCHILY.xattr.trusted.overlay.opaque": "y",
                },
            )
        ]
    )
    applied = apply_bytes(tmp_path, data, target)
    assert os.getxattr(target / "x", "user.comment") == b"hello"
    assert (target / "x").stat().st_mtime_ns == 1_600_000_000_250_000_000
    # trusted.* is never taken from a layer (overlay would obey trusted.overlay.*)
    assert any("trusted.overlay.opaque" in s for s in applied.skipped)
    with pytest.raises(OSError):
        os.getxattr(target / "x", "trusted.overlay.opaque")


def test_entries_replace_what_is_there(tmp_path: Path, target: Path) -> None:
    (target / "was-dir").mkdir()
    (target / "was-dir/child").write_text("c")
    (target / "was-file").write_text("f")
    (target / "file").write_text("old")
    data = make_tar([f("was-dir", b"now a file"), d("was-file"), f("file", b"new")])
    apply_bytes(tmp_path, data, target)
    assert (target / "was-dir").read_bytes() == b"now a file"
    assert (target / "was-file").is_dir()
    assert (target / "file").read_bytes() == b"new"


def test_root_entry_is_skipped(tmp_path: Path, target: Path) -> None:
    os.chmod(target, 0o711)
    apply_bytes(tmp_path, make_tar([d("./", mode=0o777), f("./a", b"a")]), target)
    assert stat.S_IMODE(target.stat().st_mode) == 0o711
    assert (target / "a").read_bytes() == b"a"


# --- compression and sources ----------------------------------------------------------------


def layer_tar() -> bytes:
    return make_tar([d("a"), f("a/b", os.urandom(300_000)), f("a/c", b"c" * 10)])


def tree(path: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("compression", ["none", "gzip", "gzip-multi", "zstd"])
@pytest.mark.parametrize("as_stream", [False, True])
def test_compressions_and_streams(
    tmp_path: Path, target: Path, compression: str, as_stream: bool
) -> None:
    data = layer_tar()
    if compression == "gzip":
        blob = gzip.compress(data)
    elif compression == "gzip-multi":
        blob = gzip.compress(data[:10_000]) + gzip.compress(data[10_000:])
    elif compression == "zstd":
        blob = zstandard.ZstdCompressor().compress(data)
    else:
        blob = data
    if as_stream:
        applied = apply_layer(io.BytesIO(blob), str(target))
    else:
        (tmp_path / "blob").write_bytes(blob)
        applied = apply_layer(str(tmp_path / "blob"), str(target))
    assert applied.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert applied.size == len(data)
    expect = tmp_path / "expect"
    expect.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(expect, filter="data")
    assert tree(target) == tree(expect)


def test_open_file_object_from_its_position(tmp_path: Path, target: Path) -> None:
    data = layer_tar()
    (tmp_path / "blob").write_bytes(b"JUNK" * 1000 + data)
    with open(tmp_path / "blob", "rb") as fh:
        fh.seek(4000)
        applied = apply_layer(fh, str(target))
    assert applied.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()


def test_detect_compression() -> None:
    assert detect_compression(b"\x1f\x8b\x08") == "gzip"
    assert detect_compression(b"\x28\xb5\x2f\xfd") == "zstd"
    assert detect_compression(b"etc/") == "none"


def test_media_type_must_be_a_layer(tmp_path: Path, target: Path) -> None:
    with pytest.raises(UnsupportedMediaType):
        apply_bytes(
            tmp_path, layer_tar(), target, media_type="application/vnd.oci.image.config.v1+json"
        )
    # a mislabelled compression is fine: the magic bytes decide
    apply_bytes(
        tmp_path, layer_tar(), target, media_type="application/vnd.oci.image.layer.v1.tar+gzip"
    )


@pytest.mark.parametrize("as_stream", [False, True])
def test_truncated_layer(tmp_path: Path, target: Path, as_stream: bool) -> None:
    data = layer_tar()[:200_000]
    with pytest.raises(LayerError, match="truncated"):
        if as_stream:
            apply_layer(io.BytesIO(data), str(target))
        else:
            apply_bytes(tmp_path, data, target)


def test_truncated_gzip(tmp_path: Path, target: Path) -> None:
    blob = gzip.compress(layer_tar())[:-100]
    with pytest.raises(LayerError):
        apply_layer(io.BytesIO(blob), str(target))


def test_not_a_tar(tmp_path: Path, target: Path) -> None:
    with pytest.raises(LayerError, match="invalid tar header"):
        apply_bytes(tmp_path, b"hello world\n" * 100, target)


# --- whiteouts (delete mode: the vfs snapshotter) -------------------------------------------


def test_whiteouts_delete_mode(tmp_path: Path, target: Path) -> None:
    (target / "gone").write_text("x")
    (target / "gonedir/sub").mkdir(parents=True)
    (target / "gonedir/sub/f").write_text("x")
    (target / "opq").mkdir()
    (target / "opq/old").write_text("old")
    (target / "opq/olddir").mkdir()
    (target / "keep").write_text("k")
    data = make_tar(
        [
            f(".wh.gone"),
            f(".wh.gonedir"),
            f(".wh.never-existed"),
            d("opq"),
            f("opq/new", b"new"),
            f("opq/.wh..wh..opq"),
            f("opq/deeper/also-new", b"n"),
        ]
    )
    applied = apply_bytes(tmp_path, data, target, whiteouts="delete")
    assert applied.whiteouts == 4
    assert not (target / "gone").exists()
    assert not (target / "gonedir").exists()
    assert not (target / ".wh.gone").exists()
    assert sorted(os.listdir(target / "opq")) == ["deeper", "new"]
    assert (target / "keep").read_text() == "k"


def test_whiteout_of_dot_dot_is_refused(tmp_path: Path, target: Path) -> None:
    with pytest.raises(UnsafeLayer, match=r"\.wh\.\.\."):
        apply_bytes(tmp_path, make_tar([f("a/.wh...")]), target, whiteouts="delete")


def test_whiteouts_mode_is_checked(tmp_path: Path, target: Path) -> None:
    with pytest.raises(ValueError):
        apply_bytes(tmp_path, layer_tar(), target, whiteouts="aufs")


# --- hostile layers -------------------------------------------------------------------------


def test_dot_dot_is_refused(tmp_path: Path, target: Path, outside: Path) -> None:
    with pytest.raises(UnsafeLayer, match=r"\.\./outside/evil"):
        apply_bytes(tmp_path, make_tar([f("../outside/evil", b"pwn")]), target)
    with pytest.raises(UnsafeLayer):
        apply_bytes(tmp_path, make_tar([f("a/../../outside/evil", b"pwn")]), target)
    assert sorted(os.listdir(outside)) == ["victim"]


def test_absolute_names_are_contained(tmp_path: Path, target: Path, outside: Path) -> None:
    evil = str(outside / "evil")
    apply_bytes(tmp_path, make_tar([f(evil, b"pwn"), f("/etc/x", b"x")]), target)
    assert sorted(os.listdir(outside)) == ["victim"]
    assert (target / evil.lstrip("/")).read_bytes() == b"pwn"
    assert (target / "etc/x").read_bytes() == b"x"


@pytest.mark.parametrize("link", ["ABS", "../../../../../../../../OUT", "../../../../../.."])
def test_write_through_symlink_is_contained(
    tmp_path: Path, target: Path, outside: Path, link: str
) -> None:
    link = link.replace("ABS", str(outside)).replace("OUT", str(outside).lstrip("/"))
    before = snapshot(outside)
    data = make_tar([sym("evil", link), f("evil/victim", b"pwn"), f("evil/new", b"pwn")])
    apply_bytes(tmp_path, data, target)
    assert snapshot(outside) == before
    landed = [p for p in target.rglob("new") if p.is_file()]
    assert [p.read_bytes() for p in landed] == [b"pwn"]
    assert all(target in p.resolve().parents for p in landed)


def test_symlink_as_last_component_is_replaced_not_followed(
    tmp_path: Path, target: Path, outside: Path
) -> None:
    data = make_tar([sym("f", str(outside / "victim")), f("f", b"pwn")])
    apply_bytes(tmp_path, data, target)
    assert (outside / "victim").read_text() == "untouched\n"
    assert not (target / "f").is_symlink()
    assert (target / "f").read_bytes() == b"pwn"


def test_hardlink_to_outside_path(tmp_path: Path, target: Path, outside: Path) -> None:
    with pytest.raises(UnsafeLayer):
        apply_bytes(tmp_path, make_tar([hard("h", "../outside/victim")]), target)
    # an absolute target is looked up inside the target: not there, so an error
    with pytest.raises(LayerError, match="does not exist"):
        apply_bytes(tmp_path, make_tar([hard("h", str(outside / "victim"))]), target)
    assert (outside / "victim").stat().st_nlink == 1


def test_hardlink_through_symlinked_parent_is_contained(
    tmp_path: Path, target: Path, outside: Path
) -> None:
    data = make_tar([sym("evil", str(outside)), hard("h", "evil/victim")])
    with pytest.raises(LayerError, match="does not exist"):
        apply_bytes(tmp_path, data, target)
    assert (outside / "victim").stat().st_nlink == 1


def test_hardlink_to_symlink_leading_outside(tmp_path: Path, target: Path, outside: Path) -> None:
    data = make_tar(
        [sym("s", str(outside / "victim")), hard("h", "s"), f("h2", b"x"), hard("h", "s")]
    )
    apply_bytes(tmp_path, data, target)
    # the link is to the symlink itself, never to what it points at
    assert (target / "h").is_symlink()
    assert (target / "h").lstat().st_ino == (target / "s").lstat().st_ino
    assert (outside / "victim").stat().st_nlink == 1
    # and a file written over the hardlinked symlink replaces it
    apply_bytes(tmp_path, make_tar([f("h", b"pwn")]), target)
    assert (outside / "victim").read_text() == "untouched\n"


def test_directory_replaced_by_symlink_mid_layer(
    tmp_path: Path, target: Path, outside: Path
) -> None:
    before = snapshot(outside)
    data = make_tar(
        [
            d("dir"),
            f("dir/a", b"a"),
            sym("dir", str(outside)),
            f("dir/victim", b"pwn"),
            f("dir/b", b"b"),
        ]
    )
    apply_bytes(tmp_path, data, target)
    assert snapshot(outside) == before
    assert (target / "dir").is_symlink()
    inside = target / str(outside).lstrip("/")
    assert (inside / "victim").read_bytes() == b"pwn"
    assert (inside / "b").read_bytes() == b"b"


def test_symlink_loop_is_refused(tmp_path: Path, target: Path) -> None:
    data = make_tar([sym("a", "b"), sym("b", "a"), f("a/x", b"x")])
    with pytest.raises(UnsafeLayer, match="symbolic links"):
        apply_bytes(tmp_path, data, target)


def test_nul_in_name_is_refused(tmp_path: Path, target: Path) -> None:
    data = make_tar([f("x", b"x", pax={"path": "a\x00b"})])
    with pytest.raises(UnsafeLayer, match="NUL"):
        apply_bytes(tmp_path, data, target)


def test_newline_in_name_stays_inside(tmp_path: Path, target: Path) -> None:
    apply_bytes(tmp_path, make_tar([f("a\n..x/\n../b\n", b"nl")]), target)
    assert (target / "a\n..x/\n../b\n").read_bytes() == b"nl"
    assert os.listdir(target) == ["a\n..x"]


def test_whiteout_through_symlink_is_contained(tmp_path: Path, target: Path, outside: Path) -> None:
    data = make_tar([sym("evil", str(outside)), f("evil/.wh.victim")])
    apply_bytes(tmp_path, data, target, whiteouts="delete")
    assert (outside / "victim").read_text() == "untouched\n"


def test_opaque_through_symlink_is_contained(tmp_path: Path, target: Path, outside: Path) -> None:
    data = make_tar([sym("evil", "../../../.." + str(outside)), f("evil/.wh..wh..opq")])
    apply_bytes(tmp_path, data, target, whiteouts="delete")
    assert sorted(os.listdir(outside)) == ["victim"]


def test_devices_when_not_root_are_skipped(tmp_path: Path, target: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("as root devices are created (tests/integration)")
    dev = info("dev/null", tarfile.CHRTYPE, mode=0o666)
    dev[0].devmajor, dev[0].devminor = 1, 3
    applied = apply_bytes(tmp_path, make_tar([dev, f("after", b"a")]), target)
    assert not (target / "dev/null").exists()
    assert any("dev/null" in s for s in applied.skipped)
    assert (target / "after").read_bytes() == b"a"


# --- write_layer: a snapshot's changes as a layer ---------------------------------------------


def test_write_layer_round_trip(tmp_path: Path) -> None:
    snap = tmp_path / "snap"
    (snap / "etc").mkdir(parents=True)
    (snap / "etc/conf").write_bytes(b"conf")
    os.link(snap / "etc/conf", snap / "etc/conf2")
    os.symlink("conf", snap / "etc/link")
    os.mkfifo(snap / "fifo")
    os.chmod(snap / "etc/conf", 0o4750)
    changes = [
        Change("add", "etc"),
        Change("add", "etc/conf"),
        Change("add", "etc/conf2"),
        Change("add", "etc/link"),
        Change("delete", "etc/old"),
        Change("add", "fifo"),
        Change("opaque", "var"),
    ]
    buf = io.BytesIO()
    written = write_layer(changes, str(snap), buf)
    data = buf.getvalue()
    assert written.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert written.size == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: m for m in tf.getmembers()}
    assert members["etc/conf2"].islnk() and members["etc/conf2"].linkname == "etc/conf"
    assert "etc/.wh.old" in members
    assert "var/.wh..wh..opq" in members
    # applied (vfs style) on a parent that had the deleted files
    parent = tmp_path / "parent"
    (parent / "etc").mkdir(parents=True)
    (parent / "etc/old").write_text("old")
    (parent / "var").mkdir()
    (parent / "var/lib").write_text("lib")
    applied = apply_layer(io.BytesIO(data), str(parent), whiteouts="delete")
    assert applied.diff_id == written.diff_id
    assert not (parent / "etc/old").exists()
    assert os.listdir(parent / "var") == []
    assert (parent / "etc/conf2").read_bytes() == b"conf"
    assert stat.S_IMODE((parent / "etc/conf").stat().st_mode) == 0o4750
    assert os.readlink(parent / "etc/link") == "conf"
    assert stat.S_ISFIFO((parent / "fifo").lstat().st_mode)


def test_write_layer_does_not_follow_symlinks_out_of_the_snapshot(
    tmp_path: Path, outside: Path
) -> None:
    snap = tmp_path / "snap"
    snap.mkdir()
    os.symlink(outside, snap / "evil")
    with pytest.raises(OSError):
        write_layer([Change("add", "evil/victim")], str(snap), io.BytesIO())
    with pytest.raises(LayerError):
        write_layer([Change("add", "../outside/victim")], str(snap), io.BytesIO())


def test_many_directories_and_links_across_them(tmp_path: Path, target: Path) -> None:
    """More directories than the fd cache holds: entries still land where they belong."""
    entries = []
    for i in range(2200):
        entries += [d(f"d{i}"), f(f"d{i}/f", str(i).encode())]
    entries += [hard(f"d{i}/h", f"d{(i * 7) % 2200}/f") for i in range(0, 2200, 3)]
    apply_bytes(tmp_path, make_tar(entries), target)
    assert (target / "d2199/f").read_bytes() == b"2199"
    for i in range(0, 2200, 3):
        assert (target / f"d{i}/h").read_bytes() == str((i * 7) % 2200).encode()


@pytest.mark.parametrize("key", ["size", "uid", "mtime"])
def test_bad_pax_numbers(tmp_path: Path, target: Path, key: str) -> None:
    data = make_tar([f("x", b"1", pax={key: "-5" if key != "mtime" else "x"})])
    with pytest.raises(LayerError, match="invalid PAX"):
        apply_bytes(tmp_path, data, target)


def test_negative_size_in_header(tmp_path: Path, target: Path) -> None:
    raw = bytearray(make_tar([f("x", b"")], tarfile.USTAR_FORMAT))
    raw[124:136] = b"-0000000001\0"
    raw[148:156] = b"        "
    raw[148:156] = b"%06o\0 " % sum(raw[:512])
    with pytest.raises(LayerError, match="negative size"):
        apply_bytes(tmp_path, bytes(raw), target)


def test_base256_numbers(tmp_path: Path, target: Path) -> None:
    big_uid = 1 << 22
    ti, data = f("x", b"1")
    ti.uid = big_uid if os.geteuid() == 0 else os.geteuid()
    ti.mtime = 8**11 + 5  # too large for 11 octal digits: GNU base-256
    raw = make_tar([(ti, data)], tarfile.GNU_FORMAT)
    apply_bytes(tmp_path, raw, target)
    assert (target / "x").stat().st_mtime == 8**11 + 5
    if os.geteuid() == 0:
        assert (target / "x").stat().st_uid == big_uid


def test_corrupt_zstd(tmp_path: Path, target: Path) -> None:
    """A zstd frame without a checksum may decode to other bytes: the diff_id tells."""
    data = layer_tar()
    blob = bytearray(zstandard.ZstdCompressor().compress(data))
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)
    try:
        applied = apply_layer(io.BytesIO(bytes(blob)), str(target))
    except LayerError:
        return
    assert applied.diff_id != "sha256:" + hashlib.sha256(data).hexdigest()
    # a damaged frame header is refused outright
    blob = bytearray(zstandard.ZstdCompressor().compress(data))
    blob[4:12] = b"\xff" * 8
    with pytest.raises(LayerError, match="zstd"):
        apply_layer(io.BytesIO(bytes(blob)), str(target))


def test_corrupt_gzip(tmp_path: Path, target: Path) -> None:
    blob = bytearray(gzip.compress(layer_tar()))
    blob[len(blob) // 2 : len(blob) // 2 + 64] = bytes(64)
    (tmp_path / "l.gz").write_bytes(bytes(blob))
    with pytest.raises(LayerError):
        apply_layer(str(tmp_path / "l.gz"), str(target))
