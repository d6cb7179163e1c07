"""runtime-spec mount options -> mount(2) flags, propagation, recursive attributes, data."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkhead.linux import mount as m
from bulkhead.linux.mount import MountOptions, parse_mount_options


@pytest.mark.parametrize(
    ("word", "flag"),
    [
        ("ro", m.MS_RDONLY),
        ("nosuid", m.MS_NOSUID),
        ("nodev", m.MS_NODEV),
        ("noexec", m.MS_NOEXEC),
        ("sync", m.MS_SYNCHRONOUS),
        ("dirsync", m.MS_DIRSYNC),
        ("remount", m.MS_REMOUNT),
        ("mand", m.MS_MANDLOCK),
        ("noatime", m.MS_NOATIME),
        ("nodiratime", m.MS_NODIRATIME),
        ("relatime", m.MS_RELATIME),
        ("strictatime", m.MS_STRICTATIME),
        ("lazytime", m.MS_LAZYTIME),
        ("nosymfollow", m.MS_NOSYMFOLLOW),
        ("iversion", m.MS_I_VERSION),
        ("silent", m.MS_SILENT),
        ("bind", m.MS_BIND),
        ("rbind", m.MS_BIND | m.MS_REC),
    ],
)
def test_setting_flags(word: str, flag: int) -> None:
    opts = parse_mount_options([word])
    assert opts.flags == flag
    assert opts.cleared == 0
    assert opts.data == ""


@pytest.mark.parametrize(
    ("setter", "clearer", "flag"),
    [
        ("ro", "rw", m.MS_RDONLY),
        ("nosuid", "suid", m.MS_NOSUID),
        ("nodev", "dev", m.MS_NODEV),
        ("noexec", "exec", m.MS_NOEXEC),
        ("sync", "async", m.MS_SYNCHRONOUS),
        ("mand", "nomand", m.MS_MANDLOCK),
        ("noatime", "atime", m.MS_NOATIME),
        ("nodiratime", "diratime", m.MS_NODIRATIME),
        ("relatime", "norelatime", m.MS_RELATIME),
        ("strictatime", "nostrictatime", m.MS_STRICTATIME),
        ("lazytime", "nolazytime", m.MS_LAZYTIME),
        ("nosymfollow", "symfollow", m.MS_NOSYMFOLLOW),
        ("iversion", "noiversion", m.MS_I_VERSION),
        ("silent", "loud", m.MS_SILENT),
    ],
)
def test_clearing_flags_later_word_wins(setter: str, clearer: str, flag: int) -> None:
    cleared = parse_mount_options([setter, clearer])
    assert cleared.flags == 0
    assert cleared.cleared == flag
    again = parse_mount_options([clearer, setter])
    assert again.flags == flag
    assert again.cleared == 0


@pytest.mark.parametrize(
    ("word", "flags"),
    [
        ("private", m.MS_PRIVATE),
        ("rprivate", m.MS_PRIVATE | m.MS_REC),
        ("shared", m.MS_SHARED),
        ("rshared", m.MS_SHARED | m.MS_REC),
        ("slave", m.MS_SLAVE),
        ("rslave", m.MS_SLAVE | m.MS_REC),
        ("unbindable", m.MS_UNBINDABLE),
        ("runbindable", m.MS_UNBINDABLE | m.MS_REC),
    ],
)
def test_propagation(word: str, flags: int) -> None:
    opts = parse_mount_options(["bind", word])
    assert opts.propagation == (flags,)
    assert opts.flags == m.MS_BIND


def test_propagation_keeps_order() -> None:
    opts = parse_mount_options(["rshared", "slave", "private"])
    assert opts.propagation == (m.MS_SHARED | m.MS_REC, m.MS_SLAVE, m.MS_PRIVATE)


@pytest.mark.parametrize(
    ("word", "attr_set", "attr_clr"),
    [
        ("rro", m.MOUNT_ATTR_RDONLY, 0),
        ("rrw", 0, m.MOUNT_ATTR_RDONLY),
        ("rnosuid", m.MOUNT_ATTR_NOSUID, 0),
        ("rsuid", 0, m.MOUNT_ATTR_NOSUID),
        ("rnodev", m.MOUNT_ATTR_NODEV, 0),
        ("rdev", 0, m.MOUNT_ATTR_NODEV),
        ("rnoexec", m.MOUNT_ATTR_NOEXEC, 0),
        ("rexec", 0, m.MOUNT_ATTR_NOEXEC),
        ("rnodiratime", m.MOUNT_ATTR_NODIRATIME, 0),
        ("rdiratime", 0, m.MOUNT_ATTR_NODIRATIME),
        # setting an atime mode must also clear the whole atime field
        ("rrelatime", 0, m.MOUNT_ATTR__ATIME),
        ("rnorelatime", 0, 0),
        ("rnoatime", m.MOUNT_ATTR_NOATIME, m.MOUNT_ATTR__ATIME),
        ("ratime", 0, m.MOUNT_ATTR_NOATIME),
        ("rstrictatime", m.MOUNT_ATTR_STRICTATIME, m.MOUNT_ATTR__ATIME),
        ("rnostrictatime", 0, m.MOUNT_ATTR_STRICTATIME),
        ("rnosymfollow", m.MOUNT_ATTR_NOSYMFOLLOW, 0),
        ("rsymfollow", 0, m.MOUNT_ATTR_NOSYMFOLLOW),
    ],
)
def test_recursive_attributes(word: str, attr_set: int, attr_clr: int) -> None:
    opts = parse_mount_options(["rbind", word])
    assert (opts.attr_set, opts.attr_clr) == (attr_set, attr_clr)
    assert opts.flags == m.MS_BIND | m.MS_REC


def test_recursive_attribute_later_word_wins() -> None:
    opts = parse_mount_options(["rro", "rrw"])
    assert (opts.attr_set, opts.attr_clr) == (0, m.MOUNT_ATTR_RDONLY)
    opts = parse_mount_options(["rrw", "rro"])
    assert (opts.attr_set, opts.attr_clr) == (m.MOUNT_ATTR_RDONLY, 0)


@pytest.mark.parametrize(("word", "idmap"), [("idmap", "idmap"), ("ridmap", "ridmap")])
def test_idmap(word: str, idmap: str) -> None:
    opts = parse_mount_options(["bind", word])
    assert opts.idmap == idmap
    assert opts.data == ""


def test_data_words_are_joined_in_order() -> None:
    opts = parse_mount_options(
        ["nosuid", "mode=755", "noexec", "size=65536k", "newinstance", "gid=5"]
    )
    assert opts.flags == m.MS_NOSUID | m.MS_NOEXEC
    assert opts.data == "mode=755,size=65536k,newinstance,gid=5"


def test_defaults_is_dropped_not_passed_as_data() -> None:
    assert parse_mount_options(["defaults"]) == MountOptions()


def test_tmpcopyup() -> None:
    opts = parse_mount_options(["tmpcopyup", "mode=1777"])
    assert opts.tmpcopyup
    assert opts.data == "mode=1777"


def test_empty_and_none() -> None:
    assert parse_mount_options(None) == MountOptions()
    assert parse_mount_options([]) == MountOptions()


def test_default_spec_mounts() -> None:
    dev = parse_mount_options(["nosuid", "strictatime", "mode=755", "size=65536k"])
    assert dev.flags == m.MS_NOSUID | m.MS_STRICTATIME
    assert dev.data == "mode=755,size=65536k"
    sysfs = parse_mount_options(["nosuid", "noexec", "nodev", "ro"])
    assert sysfs.flags == m.MS_NOSUID | m.MS_NOEXEC | m.MS_NODEV | m.MS_RDONLY
    bind = parse_mount_options(["rbind", "rprivate", "ro"])
    assert bind.is_bind and bind.recursive
    assert bind.propagation == (m.MS_PRIVATE | m.MS_REC,)


def test_statvfs_flags() -> None:
    assert m.statvfs_to_mount_flags(0) == m.MS_STRICTATIME
    assert m.statvfs_to_mount_flags(m.ST_RDONLY | m.ST_NOSUID | m.ST_RELATIME) == (
        m.MS_RDONLY | m.MS_NOSUID | m.MS_RELATIME
    )
    assert m.statvfs_to_mount_flags(m.ST_NOATIME | m.ST_NODIRATIME | m.ST_NOEXEC) == (
        m.MS_NOATIME | m.MS_NODIRATIME | m.MS_NOEXEC
    )
    assert m.statvfs_to_mount_flags(m.ST_NODEV | m.ST_NOSYMFOLLOW) == (
        m.MS_NODEV | m.MS_NOSYMFOLLOW | m.MS_STRICTATIME
    )


def test_mount_flags_of_proc() -> None:
    flags = m.mount_flags_of("/proc")
    assert flags & m.MS_ATIME_MODES  # exactly one atime mode is reported
    assert bin(flags & m.MS_ATIME_MODES).count("1") == 1


def test_filesystem_type() -> None:
    assert m.filesystem_type("/proc") == m.PROC_SUPER_MAGIC
    assert m.filesystem_type("/proc/self") == m.PROC_SUPER_MAGIC
    with pytest.raises(FileNotFoundError):
        m.filesystem_type("/nonexistent-bulkhead-path")


def test_mount_errors_name_the_target(tmp_path: Path) -> None:
    with pytest.raises(OSError) as info:
        m.mount("none", tmp_path / "missing", "tmpfs", 0, None)
    assert info.value.filename == str(tmp_path / "missing")
    assert info.value.errno is not None
