"""Parsing /proc/<pid>/mountinfo lines."""

from __future__ import annotations

from bulkhead.linux import mountinfo

SAMPLE = (
    "36 35 98:0 /mnt1 /mnt\\0402 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue\n"
    "40 36 0:31 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory\n"
    "garbage line without separator\n"
    "41 36 0:32 / /proc rw - proc proc\n"
)


def test_fields_escapes_and_optional_fields() -> None:
    first, cgroup, proc = mountinfo.parse(SAMPLE)
    assert first.mount_id == 36 and first.parent_id == 35
    assert first.root == "/mnt1" and first.mountpoint == "/mnt 2"
    assert first.optional == ["master:1", "shared:7"]
    assert (first.fstype, first.source, first.super_options) == (
        "ext3",
        "/dev/root",
        "rw,errors=continue",
    )
    assert cgroup.super_options == "rw,memory" and cgroup.optional == []
    assert proc.super_options == ""


def test_unescape() -> None:
    assert mountinfo.unescape("a\\040b\\011c\\134d") == "a b\tc\\d"
    assert mountinfo.unescape("no-escapes") == "no-escapes"
    assert mountinfo.unescape("trailing\\04") == "trailing\\04"


def test_malformed_lines_are_skipped() -> None:
    assert mountinfo.parse_line("1 2 3") is None
    assert mountinfo.parse_line("1 2 0:1 / /x rw - ") is None


def test_reads_this_process() -> None:
    mounts = mountinfo.read()
    assert any(m.mountpoint == "/" for m in mounts)
