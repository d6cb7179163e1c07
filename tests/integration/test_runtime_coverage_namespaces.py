"""Namespaces through the real CLI: each kind joined by path, user-namespace order, time offsets.

Creating all eight new namespaces is covered by
``test_runtime_process.test_all_new_namespaces_differ_from_host`` and joining
a network namespace by ``test_join_network_namespace_by_path``; this file
covers joining every other kind by path.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.runtime_helpers import RuntimeCLI

ALL = ("mount", "pid", "network", "ipc", "uts", "user", "cgroup", "time")
PROC_NAME = {"mount": "mnt", "network": "net"}
USER_MAP = [{"containerID": 0, "hostID": 200000, "size": 65536}]


def proc_name(kind: str) -> str:
    return PROC_NAME.get(kind, kind)


def run_out(rt: RuntimeCLI, b: Path, cid: str) -> str:
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def drop_keys(b: Path, *keys: str) -> Path:
    """Remove top-level ``keys`` (``hostname``, ...) from the bundle's config.json."""
    path = b / "config.json"
    spec = json.loads(path.read_text())
    for key in keys:
        spec.pop(key, None)
    path.write_text(json.dumps(spec))
    return b


def readlinks(kinds: tuple[str, ...]) -> list[str]:
    """A shell loop printing the container's own namespace links, in ``kinds`` order."""
    names = " ".join(proc_name(k) for k in kinds)
    return ["sh", "-c", f"for n in {names}; do readlink /proc/self/ns/$n; done"]


@pytest.fixture
def first(rt, bundle, cid) -> Iterator[int]:
    """A running container with every namespace but user new; yields its init pid."""
    b = bundle(
        ["sleep", "60"],
        linux={"namespaces": [{"type": t} for t in ALL if t != "user"]},
    )
    rt("run", "-d", "--bundle", str(b), cid)
    yield rt.state(cid)["pid"]
    rt("delete", "--force", cid, check=False)


@pytest.mark.parametrize("kind", ["pid", "ipc", "uts", "cgroup", "time"])
def test_join_namespace_by_path(rt, bundle, cid, cgroup_parent, first, kind):
    """The second container is in the first one's namespace of ``kind``, and only that one."""
    others = [{"type": t} for t in ("mount", "pid", "ipc", "uts", "network") if t != kind]
    namespaces = [*others, {"type": kind, "path": f"/proc/{first}/ns/{proc_name(kind)}"}]
    kinds = ("pid", "ipc", "uts", "cgroup", "time", "network")
    b = bundle(
        readlinks(kinds),
        linux={"namespaces": namespaces, "cgroupsPath": f"{cgroup_parent}/{cid}-b"},
    )
    if kind == "uts":
        drop_keys(b, "hostname")  # only a container with a UTS namespace of its own may set it
    got = dict(zip(kinds, run_out(rt, b, cid + "-b").split(), strict=True))
    theirs = {k: os.readlink(f"/proc/{first}/ns/{proc_name(k)}") for k in kinds}
    assert got[kind] == theirs[kind]
    for other in ("ipc", "network", "pid"):
        if other != kind:
            assert got[other] != theirs[other], other


def test_joined_pid_namespace_is_not_pid_1(rt, bundle, cid, cgroup_parent, first):
    b = bundle(
        ["sh", "-c", "echo $$; ps -o pid,comm | grep -c sleep"],
        linux={
            "namespaces": [
                {"type": "mount"},
                {"type": "pid", "path": f"/proc/{first}/ns/pid"},
            ],
            "cgroupsPath": f"{cgroup_parent}/{cid}-b",
        },
    )
    drop_keys(b, "hostname")
    pid, sleepers = run_out(rt, b, cid + "-b").split()
    assert int(pid) > 1  # the first container's sleep is PID 1 there
    assert sleepers == "1"  # and visible from the second


def test_join_user_namespace_by_path(rt, bundle, cid, cgroup_parent):
    a = bundle(
        ["sleep", "60"],
        linux={
            "namespaces": [{"type": t} for t in ("mount", "pid", "ipc", "uts", "user")],
            "uidMappings": USER_MAP,
            "gidMappings": USER_MAP,
        },
    )
    rt("run", "-d", "--bundle", str(a), cid)
    pid = rt.state(cid)["pid"]
    b = bundle(
        ["sh", "-c", "readlink /proc/self/ns/user; cat /proc/self/uid_map; id -u"],
        linux={
            "namespaces": [
                *({"type": t} for t in ("mount", "pid", "ipc", "uts")),
                {"type": "user", "path": f"/proc/{pid}/ns/user"},
            ],
            "cgroupsPath": f"{cgroup_parent}/{cid}-b",
        },
    )
    lines = run_out(rt, b, cid + "-b").splitlines()
    assert lines[0] == os.readlink(f"/proc/{pid}/ns/user")
    assert lines[1].split() == ["0", "200000", "65536"]
    assert lines[2] == "0"


@pytest.fixture
def mount_ns_file(tmp_path: Path) -> Iterator[Path]:
    """A persistent mount namespace of our own, bound on a file in our temp dir."""
    holder = tmp_path / "nsdir"
    holder.mkdir()
    # Make the holder a private mount so the nsfs bind stays out of the host's peers.
    subprocess.run(["mount", "--bind", str(holder), str(holder)], check=True)
    try:
        subprocess.run(["mount", "--make-private", str(holder)], check=True)
        nsfile = holder / "mnt"
        nsfile.touch()
        subprocess.run(
            ["unshare", f"--mount={nsfile}", "--propagation", "private", "true"], check=True
        )
        try:
            yield nsfile
        finally:
            subprocess.run(["umount", "-l", str(nsfile)], check=False)
    finally:
        subprocess.run(["umount", "-l", str(holder)], check=False)


def test_join_mount_namespace_by_path(rt, bundle, cid, mount_ns_file):
    """The rootfs is built inside the joined mount namespace, not a new one or the host's."""
    b = bundle(
        ["sh", "-c", "stat -L -c %i /proc/self/ns/mnt; ls /"],
        linux={
            "namespaces": [
                {"type": "mount", "path": str(mount_ns_file)},
                *({"type": t} for t in ("pid", "ipc", "uts", "network")),
            ]
        },
    )
    out = run_out(rt, b, cid).split()
    assert int(out[0]) == os.stat(mount_ns_file).st_ino
    assert os.stat(mount_ns_file).st_ino != os.stat("/proc/self/ns/mnt").st_ino
    assert "bin" in out and "work" not in out


# ----------------------------------------------------------------------------- user namespaces


def test_user_namespace_owns_the_other_new_namespaces(rt, bundle, cid):
    """The user namespace comes first (maps written), then the rest: they belong to it.

    Root of the user namespace can then change the hostname and bring up
    ``lo``, which needs CAP_SYS_ADMIN / CAP_NET_ADMIN over the UTS and network
    namespaces' owner. Were they created before (or outside) the user
    namespace, both would fail with EPERM.
    """
    caps = ["CAP_SYS_ADMIN", "CAP_NET_ADMIN"]
    b = bundle(
        [
            "sh",
            "-c",
            "hostname renamed && hostname; ip link set lo up && ip -o link show lo | grep -c UP",
        ],
        linux={
            "namespaces": [{"type": t} for t in ("mount", "pid", "ipc", "uts", "network", "user")],
            "uidMappings": USER_MAP,
            "gidMappings": USER_MAP,
        },
        process={
            "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        },
    )
    assert run_out(rt, b, cid).split() == ["renamed", "1"]


def test_user_namespace_with_several_ranges_in_order(rt, bundle, cid):
    uid_maps = [
        {"containerID": 0, "hostID": 300000, "size": 1},
        {"containerID": 1, "hostID": 400001, "size": 999},
        {"containerID": 1000, "hostID": 501000, "size": 10},
    ]
    gid_maps = [
        {"containerID": 0, "hostID": 600000, "size": 100},
        {"containerID": 1000, "hostID": 701000, "size": 5},
    ]
    b = bundle(
        ["sh", "-c", "cat /proc/self/uid_map; echo --; cat /proc/self/gid_map"],
        linux={
            "namespaces": [{"type": t} for t in ("mount", "pid", "ipc", "uts", "user")],
            "uidMappings": uid_maps,
            "gidMappings": gid_maps,
        },
        process={"user": {"uid": 1000, "gid": 1000}},
    )
    uid_text, gid_text = run_out(rt, b, cid).split("--\n")
    assert [line.split() for line in uid_text.splitlines()] == [
        [str(m["containerID"]), str(m["hostID"]), str(m["size"])] for m in uid_maps
    ]
    assert [line.split() for line in gid_text.splitlines()] == [
        [str(m["containerID"]), str(m["hostID"]), str(m["size"])] for m in gid_maps
    ]


def test_user_namespace_process_runs_as_mapped_host_ids(rt, bundle, cid):
    b = bundle(
        ["sleep", "60"],
        linux={
            "namespaces": [{"type": t} for t in ("mount", "pid", "ipc", "uts", "user")],
            "uidMappings": [{"containerID": 0, "hostID": 210000, "size": 2000}],
            "gidMappings": [{"containerID": 0, "hostID": 220000, "size": 2000}],
        },
        process={"user": {"uid": 1000, "gid": 1000}},
    )
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    status = Path(f"/proc/{pid}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    gids = next(line for line in status.splitlines() if line.startswith("Gid:")).split()[1:]
    assert uids == ["211000"] * 4
    assert gids == ["221000"] * 4


# ----------------------------------------------------------------------------- time namespace


def test_time_offsets_both_clocks(rt, bundle, cid):
    b = bundle(
        ["cat", "/proc/self/timens_offsets"],
        linux={
            "namespaces": [{"type": t} for t in ("mount", "pid", "uts", "time")],
            "timeOffsets": {
                "boottime": {"secs": 86400, "nanosecs": 7},
                "monotonic": {"secs": 1234, "nanosecs": 500},
            },
        },
    )
    offsets = {
        line.split()[0]: line.split()[1:] for line in run_out(rt, b, cid).strip().splitlines()
    }
    assert offsets == {"monotonic": ["1234", "500"], "boottime": ["86400", "7"]}


def test_time_namespace_without_offsets_is_new_but_zero(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "readlink /proc/self/ns/time; cat /proc/self/timens_offsets"],
        linux={"namespaces": [{"type": t} for t in ("mount", "pid", "uts", "time")]},
    )
    lines = run_out(rt, b, cid).splitlines()
    assert lines[0] != os.readlink("/proc/self/ns/time")
    assert sorted(line.split()[1:] for line in lines[1:]) == [["0", "0"], ["0", "0"]]
