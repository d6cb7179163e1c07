"""Layer apply as root: owners, devices, capabilities, overlay whiteouts under a real overlay mount."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import needs_root

from bulkhead.images.layer import apply_layer

pytestmark = needs_root


def entry(name: str, kind: bytes = tarfile.REGTYPE, **kw: object) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mtime = 1_600_000_000
    ti.mode = 0o644 if kind != tarfile.DIRTYPE else 0o755
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def make_tar(entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for ti, data in entries:
            if data is not None:
                ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def apply(tmp_path: Path, data: bytes, target: Path, **kw: object) -> None:
    (tmp_path / "l.tar").write_bytes(data)
    target.mkdir(exist_ok=True)
    apply_layer(str(tmp_path / "l.tar"), str(target), **kw)  # type: ignore[arg-type]


def test_owners_devices_setuid_after_chown(tmp_path: Path) -> None:
    target = tmp_path / "t"
    data = make_tar(
        [
            (entry("home", tarfile.DIRTYPE, uid=1000, gid=1000, mode=0o750), None),
            (entry("home/f", uid=1000, gid=2000, mode=0o4755), b"x"),
            (entry("home/g", uid=0, gid=50, mode=0o2755), b"y"),
            (entry("link", tarfile.SYMTYPE, linkname="home/f", uid=33, gid=34), None),
            (entry("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
            (entry("dev/loop9", tarfile.BLKTYPE, devmajor=7, devminor=9, mode=0o660), None),
            (entry("fifo", tarfile.FIFOTYPE, uid=5, gid=6), None),
        ]
    )
    apply(tmp_path, data, target)
    st = (target / "home").stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 1000, 0o750)
    st = (target / "home/f").stat()
    # setuid survives the chown because the mode is applied after it
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 2000, 0o4755)
    st = (target / "home/g").stat()
    assert (st.st_gid, stat.S_IMODE(st.st_mode)) == (50, 0o2755)
    st = (target / "link").lstat()
    assert (st.st_uid, st.st_gid) == (33, 34)
    st = (target / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    st = (target / "dev/loop9").lstat()
    assert stat.S_ISBLK(st.st_mode) and os.minor(st.st_rdev) == 9
    st = (target / "fifo").lstat()
    assert (st.st_uid, st.st_gid) == (5, 6)


def test_setgid_directory_does_not_leak_its_group(tmp_path: Path) -> None:
    target = tmp_path / "t"
    data = make_tar(
        [
            (entry("shared", tarfile.DIRTYPE, gid=50, mode=0o2775), None),
            (entry("shared/f", uid=0, gid=0), b"f"),
        ]
    )
    apply(tmp_path, data, target)
    assert (target / "shared/f").stat().st_gid == 0


def test_security_capability_survives_chown(tmp_path: Path) -> None:
    target = tmp_path / "t"
    # VFS_CAP_REVISION_2, effective, cap_net_bind_service (10) permitted
    cap = bytes.fromhex("01000002" + "00040000" + "00000000" + "00000000" + "00000000")
    ti = entry("ping", uid=0, gid=0, mode=0o755)
    ti.pax_headers = {"SCHILY.xattr.security.capability": cap.decode("latin-1")}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT, encoding="latin-1") as tf:
        ti.size = 1
        tf.addfile(ti, io.BytesIO(b"p"))
    raw = buf.getvalue()
    apply(tmp_path, raw, target)
    got = os.getxattr(target / "ping", "security.capability")
    assert got[:8] == cap[:8]


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for p in (lower, upper, work, merged):
        p.mkdir()
    yield lower, upper, merged
    subprocess.run(["umount", str(merged)], check=False, capture_output=True)


def test_overlay_whiteouts_hide_lower_files(
    tmp_path: Path, overlay: tuple[Path, Path, Path]
) -> None:
    lower, upper, merged = overlay
    base = make_tar(
        [
            (entry("etc", tarfile.DIRTYPE), None),
            (entry("etc/gone"), b"g"),
            (entry("etc/kept"), b"k"),
            (entry("opq", tarfile.DIRTYPE), None),
            (entry("opq/old"), b"o"),
        ]
    )
    apply(tmp_path, base, lower)
    change = make_tar(
        [
            (entry("etc/.wh.gone", uid=0, gid=0), b""),
            (entry("opq", tarfile.DIRTYPE), None),
            (entry("opq/.wh..wh..opq"), b""),
            (entry("opq/new"), b"n"),
        ]
    )
    apply(tmp_path, change, upper, whiteouts="overlay")
    st = (upper / "etc/gone").lstat()
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(upper / "opq", "trusted.overlay.opaque") == b"y"
    assert not (upper / "etc/.wh.gone").exists()
    work = tmp_path / "work"
    subprocess.run(
        [
            "mount",
            "-t",
            "overlay",
            "overlay",
            "-o",
            f"lowerdir={lower},upperdir={upper},workdir={work}",
            str(merged),
        ],
        check=True,
    )
    assert sorted(os.listdir(merged / "etc")) == ["kept"]
    assert sorted(os.listdir(merged / "opq")) == ["new"]


@pytest.fixture
def public_tmp() -> Iterator[Path]:
    """A temp dir an unprivileged user can reach (pytest's own is 0700 under root's)."""
    d = Path(tempfile.mkdtemp(prefix="bulkhead-layer-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d)


def test_device_nodes_as_unprivileged_user_are_skipped(public_tmp: Path) -> None:
    """A device node in a layer applied by a non-root user: skipped, listed, no error."""
    tmp_path = public_tmp
    target = tmp_path / "t"
    target.mkdir()
    ti = entry("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)
    (tmp_path / "l.tar").write_bytes(make_tar([(ti, None), (entry("after"), b"a")]))
    os.chown(target, 65534, 65534)
    src = Path(__file__).resolve().parents[2] / "src"
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from bulkhead.images.layer import apply_layer;"
        "r = apply_layer(sys.argv[2], sys.argv[3]); print(r.skipped)"
    )
    out = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "/usr/bin/python3",
            "-S",
            "-c",
            code,
            str(src),
            str(tmp_path / "l.tar"),
            str(target),
        ],
        capture_output=True,
        text=True,
        env={"PATH": os.environ["PATH"]},
    )
    if "No module named" in out.stderr or "Permission denied" in out.stderr:
        pytest.skip(f"the unprivileged user cannot import bulkhead here: {out.stderr[-200:]}")
    assert out.returncode == 0, out.stderr
    assert "dev/sda" in out.stdout
    assert not (target / "dev/sda").exists()
    assert (target / "after").read_bytes() == b"a"
