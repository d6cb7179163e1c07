"""Unit tests of cgroup mount discovery (layout) and cgroupsPath handling (paths)."""

from __future__ import annotations

import pytest

from bulkhead.cgroups import default_path, layout, paths
from bulkhead.errors import CgroupError, SpecError, UnsupportedError

# This project's machines: v1 hierarchies plus a cgroup2 side mount (hybrid).
HYBRID = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""

HYBRID_SELF = """\
9:name=systemd:/
8:pids:/
4:memory:/process_api/806de0
1:cpu:/
0::/
"""

UNIFIED = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
"""

# A Debian 10 style legacy host: cpu and cpuacct co-mounted, with the usual symlinks.
LEGACY = """\
25 18 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 25 0:28 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices
"""

LEGACY_SELF = "5:devices:/user.slice\n3:memory:/user.slice/x\n2:cpu,cpuacct:/\n1:name=systemd:/\n"


def test_hybrid_host() -> None:
    lay = layout.layout_from_text(HYBRID, HYBRID_SELF)
    assert lay.mode == "hybrid"
    assert lay.version == 1
    assert lay.unified is not None and lay.unified.mountpoint == "/sys/fs/cgroup/unified"
    assert lay.v1["memory"].mountpoint == "/sys/fs/cgroup/memory"
    assert lay.v1["name=systemd"].mountpoint == "/sys/fs/cgroup/systemd"
    assert lay.own_cgroup("memory") == "/process_api/806de0"
    assert lay.own_cgroup("cpuset") == "/"  # not listed: the root
    assert len(lay.v1_mounts()) == 9


def test_unified_host() -> None:
    lay = layout.layout_from_text(UNIFIED, "0::/user.slice/session-1.scope\n")
    assert lay.mode == "unified"
    assert lay.version == 2
    assert lay.v1 == {}
    assert lay.own_cgroup("") == "/user.slice/session-1.scope"


def test_legacy_host_with_co_mounted_controllers() -> None:
    lay = layout.layout_from_text(LEGACY, LEGACY_SELF)
    assert lay.mode == "legacy"
    assert lay.v1["cpu"] is lay.v1["cpuacct"]
    assert lay.v1["cpu"].controllers == ("cpu", "cpuacct")
    assert [m.mountpoint for m in lay.v1_mounts()] == [
        "/sys/fs/cgroup/systemd",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/devices",
    ]
    assert lay.own_cgroup("devices") == "/user.slice"


def test_mount_root_of_a_container_makes_own_cgroup_relative() -> None:
    # Inside a container without a cgroup namespace the mount shows a sub-tree.
    text = "40 31 0:32 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n"
    text += "41 31 0:33 /docker/abc /sys/fs/cgroup/devices rw - cgroup cgroup rw,devices\n"
    lay = layout.layout_from_text(text, "4:memory:/docker/abc/inner\n5:devices:/elsewhere\n")
    assert lay.own_cgroup("memory") == "/inner"
    assert lay.own_cgroup("devices") == "/"


def test_no_cgroups_mounted_is_an_error() -> None:
    with pytest.raises(CgroupError, match="no cgroup hierarchy"):
        layout.layout_from_text("22 1 8:1 / / rw - ext4 /dev/vda1 rw\n", "")


def test_mountinfo_escapes() -> None:
    text = "40 31 0:32 / /mnt/with\\040space rw - cgroup cgroup rw,memory\n"
    v1, _ = layout.parse_mountinfo(text)
    assert v1["memory"].mountpoint == "/mnt/with space"


def test_detect_on_this_host_is_cached() -> None:
    lay = layout.detect()
    assert lay is layout.detect()
    assert lay.mode in ("legacy", "hybrid", "unified")


# ---------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("given", "cleaned"),
    [
        ("/bulkhead/abc", "/bulkhead/abc"),
        ("//bulkhead/./abc/", "/bulkhead/abc"),
        ("bulkhead/abc", "bulkhead/abc"),
        ("./x", "x"),
        ("/a:b/c", "/a:b/c"),
    ],
)
def test_check_cleans(given: str, cleaned: str) -> None:
    assert paths.check(given) == cleaned


@pytest.mark.parametrize("bad", ["/bulkhead/../etc", "..", "a/../../b", "", "/", ".", "a\0b"])
def test_check_refuses(bad: str) -> None:
    with pytest.raises(SpecError) as err:
        paths.check(bad)
    assert err.value.where == "linux.cgroupsPath"


def test_systemd_form_is_unsupported() -> None:
    with pytest.raises(UnsupportedError, match="systemd"):
        paths.check("system.slice:docker:abc")


def test_resolve_absolute_and_relative() -> None:
    assert paths.resolve("/bulkhead/x", "/process_api/1") == "bulkhead/x"
    assert paths.resolve("bulkhead/x", "/process_api/1") == "process_api/1/bulkhead/x"
    assert paths.resolve("bulkhead/x", "/") == "bulkhead/x"


def test_default_path() -> None:
    assert default_path("abc") == "/bulkhead/abc"
