"""``docker cp``'s file work chrooted into the container (bulkhead.engine.chrooted): root only."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from bulkhead.engine import chrooted, filesystem
from bulkhead.errors import SpecError

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chroot needs root")


_FLIP = """
import os, sys
d, outside = sys.argv[1], sys.argv[2]
while True:
    try:
        os.mkdir(d); os.rmdir(d); os.symlink(outside, d); os.unlink(d)
    except OSError:
        pass
"""


def _tar(name: str, data: bytes) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        tar.addfile(ti, io.BytesIO(data))
    buf.seek(0)
    return buf


def _put(root: Path, path: str, name: str, data: bytes, tmp: Path) -> None:
    src = tmp / "in.tar"
    src.write_bytes(_tar(name, data).getvalue())
    with open(src, "rb") as f:
        chrooted.run("put", str(root), path, "c1", stdin=f)


def test_stat_get_put_resolve_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hello").write_text("hi\n")
    (root / "d").mkdir()
    (root / "d" / "up").symlink_to("/")  # inside the container: its own root
    assert chrooted.run("stat", str(root), "/d/up/etc/hello", "c1")["size"] == 3
    out = tmp_path / "out.tar"
    with open(out, "wb") as f:
        got = chrooted.run("get", str(root), "/d/up/etc/hello", "c1", stdout=f)
    assert got["name"] == "hello"
    with tarfile.open(out) as tar:
        member = tar.getmember("hello")
        assert member.uname == "" and member.gname == ""  # no NSS lookup in the container
        data = tar.extractfile(member)
        assert data is not None and data.read() == b"hi\n"
    _put(root, "/d/up/", "f", b"x", tmp_path)
    assert (root / "f").read_bytes() == b"x"


def test_errors_keep_their_kind(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "file").write_text("")
    with pytest.raises(
        filesystem.PathNotFound, match="Could not find the file /nope in container c1"
    ):
        chrooted.run("stat", str(root), "/nope", "c1")
    with pytest.raises(SpecError, match="extraction point is not a directory"):
        _put(root, "/file", "f", b"x", tmp_path)


def test_a_container_swapping_a_directory_for_a_symlink_cannot_send_a_copy_out(
    tmp_path: Path,
) -> None:
    # CVE-2018-15664: the container replaces /w/d with a symlink to a path that, resolved
    # on the host, is outside the container (here: a directory of this test). Chrooted,
    # the copy resolves every component inside the container, whatever the timing.
    root = tmp_path / "root"
    (root / "w").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    # The container's side, in a process of its own (real concurrency, not the GIL's turns).
    flipper = subprocess.Popen(
        [sys.executable, "-c", _FLIP, str(root / "w" / "d"), str(outside)],
        stdout=subprocess.DEVNULL,
    )
    try:
        for i in range(40):
            try:
                _put(root, "/w/d/", f"f{i}", b"x", tmp_path)
            except (SpecError, filesystem.PathNotFound, chrooted.ChrootedError):
                pass  # the point was not a directory at that moment: refused, fine
    finally:
        flipper.kill()
        flipper.wait()
    assert list(outside.iterdir()) == []
