"""secure_join and open_in_root: scoped path resolution inside a rootfs."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from bulkhead.runtime.securejoin import (
    create_in_root,
    mkdir_all_in_root,
    open_in_root,
    secure_join,
)


@pytest.fixture(autouse=True, params=[True, False], ids=["openat2", "walk"])
def openat2(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Every test with open_in_root's openat2(2) fast path, and with the walk alone."""
    import bulkhead.runtime.securejoin as sj

    monkeypatch.setattr(sj, "_openat2_ok", sj._openat2_ok and request.param)
    return bool(request.param)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("root:x:0:0\n")
    (r / "usr" / "lib").mkdir(parents=True)
    (r / "var").mkdir()
    return r


def test_plain_paths(root: Path) -> None:
    assert secure_join(str(root), "/etc/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "etc/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "") == str(root)
    assert secure_join(str(root), "/") == str(root)
    assert secure_join(str(root), "//etc//./passwd/") == f"{root}/etc/passwd"


def test_root_is_cleaned(root: Path) -> None:
    assert secure_join(f"{root}/./etc/..//", "/etc") == f"{root}/etc"


def test_dotdot_stays_inside(root: Path) -> None:
    assert secure_join(str(root), "../../../etc/passwd") == f"{root}/etc/passwd"
    assert secure_join(str(root), "/usr/../../..") == str(root)
    assert secure_join(str(root), "usr/lib/../../var") == f"{root}/var"


def test_missing_components_are_lexical(root: Path) -> None:
    assert secure_join(str(root), "/a/b/c") == f"{root}/a/b/c"
    assert secure_join(str(root), "/a/../b") == f"{root}/b"
    # below a file: not a directory, treated as missing
    assert secure_join(str(root), "/etc/passwd/x") == f"{root}/etc/passwd/x"


def test_relative_symlink(root: Path) -> None:
    (root / "lib").symlink_to("usr/lib")
    assert secure_join(str(root), "/lib/x.so") == f"{root}/usr/lib/x.so"


def test_absolute_symlink_is_rooted(root: Path) -> None:
    (root / "var" / "run").symlink_to("/run")
    assert secure_join(str(root), "/var/run/x") == f"{root}/run/x"


def test_symlink_escape_with_dotdot(root: Path) -> None:
    (root / "evil").symlink_to("../../../../../../etc")
    assert secure_join(str(root), "/evil/shadow") == f"{root}/etc/shadow"
    (root / "var" / "evil2").symlink_to("../../..")
    assert secure_join(str(root), "/var/evil2") == str(root)


def test_symlink_to_host_absolute_path(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "out").symlink_to(outside)
    got = secure_join(str(root), "/out/x")
    assert got == f"{root}{outside}/x"
    assert got.startswith(str(root) + "/")


def test_symlink_chain(root: Path) -> None:
    (root / "a").symlink_to("b")
    (root / "b").symlink_to("/c")
    (root / "c").symlink_to("etc")
    assert secure_join(str(root), "/a/passwd") == f"{root}/etc/passwd"


def test_dangling_symlink_resolves_lexically(root: Path) -> None:
    (root / "dangling").symlink_to("/nowhere/deep")
    assert secure_join(str(root), "/dangling/x") == f"{root}/nowhere/deep/x"


def test_symlink_then_dotdot(root: Path) -> None:
    # ".." applies to the resolved symlink, not to the link's own directory
    (root / "var" / "lib").symlink_to("/usr/lib")
    assert secure_join(str(root), "/var/lib/..") == f"{root}/usr"


def test_symlink_loop(root: Path) -> None:
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    with pytest.raises(OSError) as info:
        secure_join(str(root), "/loop1/x")
    assert info.value.errno == errno.ELOOP


def test_self_loop(root: Path) -> None:
    (root / "self").symlink_to("self")
    with pytest.raises(OSError) as info:
        secure_join(str(root), "self")
    assert info.value.errno == errno.ELOOP


def test_symlink_to_root(root: Path) -> None:
    (root / "r").symlink_to("/")
    assert secure_join(str(root), "/r/r/r/etc") == f"{root}/etc"


def test_root_slash(tmp_path: Path) -> None:
    assert secure_join("/", "/etc/../tmp") == "/tmp"
    assert secure_join("/", "..") == "/"


def test_open_in_root_existing(root: Path) -> None:
    fd, resolved = open_in_root(str(root), "/etc/passwd")
    try:
        assert resolved == f"{root}/etc/passwd"
        assert os.path.samestat(os.fstat(fd), os.stat(resolved))
    finally:
        os.close(fd)


def test_open_in_root_missing_without_create(root: Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        open_in_root(str(root), "/no/such")
    assert info.value.filename == f"{root}/no/such"


def test_create_dir_through_symlink_stays_inside(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "mnt").symlink_to(outside)
    made = mkdir_all_in_root(str(root), "/mnt/data/sub")
    assert made == f"{root}{outside}/data/sub"
    assert os.path.isdir(made)
    assert list(outside.iterdir()) == []


def test_create_file(root: Path) -> None:
    made = create_in_root(str(root), "/etc/new/hosts", directory=False)
    assert made == f"{root}/etc/new/hosts"
    assert stat.S_ISREG(os.lstat(made).st_mode)
    assert os.path.isdir(f"{root}/etc/new")


def test_create_existing_is_left_alone(root: Path) -> None:
    made = create_in_root(str(root), "/etc/passwd", directory=False)
    assert Path(made).read_text() == "root:x:0:0\n"
    assert create_in_root(str(root), "/etc", directory=True) == f"{root}/etc"


def test_open_in_root_refuses_a_file_as_directory(root: Path) -> None:
    with pytest.raises(NotADirectoryError):
        mkdir_all_in_root(str(root), "/etc/passwd/x")


def test_open_in_root_refuses_symlink_swapped_in(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A symlink that is *not* resolved by secure_join (a race) is refused by the fd walk."""
    import bulkhead.runtime.securejoin as sj

    outside = tmp_path / "outside"
    outside.mkdir()
    real = sj.secure_join

    def racy(r: str, p: str) -> str:
        resolved = real(r, p)
        # after resolution, swap /var for a symlink to the host
        os.rename(root / "var", root / "var.old")
        (root / "var").symlink_to(outside)
        return resolved

    monkeypatch.setattr(sj, "secure_join", racy)
    monkeypatch.setattr(sj, "_openat2_ok", False)  # the walk's own defence
    with pytest.raises(NotADirectoryError):
        open_in_root(str(root), "/var/x", create="dir")
    assert list(outside.iterdir()) == []


def test_open_in_root_loop(root: Path) -> None:
    (root / "l").symlink_to("l")
    with pytest.raises(OSError) as info:
        mkdir_all_in_root(str(root), "/l/x")
    assert info.value.errno == errno.ELOOP


def test_open_in_root_openat2_matches_the_walk(root: Path, tmp_path: Path) -> None:
    """Scoped symlinks, ``..`` and creation give the walk's fd and path by openat2 too."""
    import bulkhead.runtime.securejoin as sj

    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "abs").symlink_to("/usr/lib")
    (root / "esc").symlink_to("../../../outside")
    (root / "usr" / "lib" / "dangling").symlink_to("/var/made")
    cases: list[tuple[str, str | None]] = [
        ("/abs", None),
        ("/abs/../../etc/passwd", None),
        ("/esc", "dir"),
        ("/esc/new", "dir"),
        ("/var/a", "dir"),
        ("/var/f", "file"),
        ("/top", "dir"),
        ("/abs/dangling", "dir"),
        ("/usr/missing/../lib", None),
        ("/etc/new/hosts", "file"),
        ("/etc/passwd/", None),
        ("//etc/./../etc//passwd", "file"),
        ("/usr/lib/dangling", "file"),
        ("usr/lib/new", "dir"),
    ]
    for path, create in cases:
        got: list[tuple[str, tuple[int, int, int]]] = []
        for fast in (True, False):
            sj._openat2_ok = fast
            try:
                fd, resolved = open_in_root(str(root), path, create=create)  # type: ignore[arg-type]
            finally:
                sj._openat2_ok = True
            st = os.fstat(fd)
            os.close(fd)
            got.append((resolved, (st.st_dev, st.st_ino, st.st_mode)))
        assert got[0] == got[1], path
        assert got[0][0].startswith(str(root))
    assert list(outside.iterdir()) == []


def test_open_in_root_with_root_as_own_fd(root: Path) -> None:
    """A root named /proc/self/fd/N (as the runtime names the rootfs) is that fd."""
    (root / "abs").symlink_to("/usr/lib")
    root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    file_fd = os.open(root / "etc" / "passwd", os.O_PATH)
    try:
        via = f"/proc/self/fd/{root_fd}"
        for path, create in [("/usr/lib", None), ("/abs/x", "dir"), ("/etc/y", "file")]:
            fd, resolved = open_in_root(via, path, create=create)  # type: ignore[arg-type]
            try:
                assert resolved.startswith(via + "/")
                want = os.lstat(root / secure_join(str(root), path)[len(str(root)) + 1 :])
                assert (os.fstat(fd).st_ino, os.fstat(fd).st_dev) == (want.st_ino, want.st_dev)
            finally:
                os.close(fd)
        assert os.fstat(root_fd)  # still open
        with pytest.raises(NotADirectoryError):
            open_in_root(f"/proc/self/fd/{file_fd}", "/x")
    finally:
        os.close(root_fd)
        os.close(file_fd)
