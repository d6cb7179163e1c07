"""The container's root filesystem, built for real inside throwaway mount namespaces.

Every test that mounts does it in a forked child that first unshares its
mount namespace (plus pid, ipc, uts, net and, when asked, user and cgroup)
and makes ``/`` recursively private, so nothing can reach the host's mount
table even if a test fails half-way. The child reports back a JSON value (or
a traceback) through a pipe; the autouse fixture checks afterwards that the
host's mount table shows none of the test's paths.

The child runs :func:`prepare_rootfs`, :func:`enter_rootfs` and
:func:`finalize_rootfs` exactly as the container's init does, then looks
around from inside the new root (with plain os calls and, where handy, the
rootfs's own busybox).
"""

from __future__ import annotations

import errno
import json
import os
import select
import signal
import stat
import subprocess
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkhead.errors import SpecError, StartError
from bulkhead.linux import namespaces as ns
from bulkhead.linux.mount import MS_PRIVATE, MS_REC, MS_SLAVE, make_propagation, mount
from bulkhead.oci.runtime_spec import Spec, load_spec
from bulkhead.runtime import rootfs as rf

NAMESPACES = ns.CLONE_NEWNS | ns.CLONE_NEWPID | ns.CLONE_NEWIPC | ns.CLONE_NEWUTS | ns.CLONE_NEWNET


def _host_mount_lines(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


@pytest.fixture(autouse=True)
def no_leaks(tmp_path: Path) -> Iterator[None]:
    before = len(_host_mount_lines("bulkhead"))
    yield
    assert len(_host_mount_lines("bulkhead")) == before
    assert _host_mount_lines(str(tmp_path)) == []


# --------------------------------------------------------------------------- the harness


def _send(fd: int, payload: dict[str, Any]) -> None:
    data = json.dumps(payload).encode()
    while data:
        data = data[os.write(fd, data) :]


def _run_and_report(fn: Callable[[], Any], out: int) -> None:
    try:
        payload = {"result": fn()}
    except BaseException:
        payload = {"error": traceback.format_exc()}
    try:
        _send(out, payload)
    finally:
        os._exit(0)


def isolated(
    fn: Callable[[], Any],
    *,
    flags: int = NAMESPACES,
    userns: bool = False,
    id_map: str = "0 0 65536\n",
    cwd: str | None = None,
    timeout: float = 60,
) -> Any:
    """Run ``fn`` in a child with its own namespaces; return what it returned (JSON).

    With ``userns`` the child first unshares a user namespace whose uid and
    gid maps are ``id_map``; ``cwd`` is where it starts (before any unshare).
    """
    out_r, out_w = os.pipe()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(out_r)
            os.close(ready_r)
            os.close(go_w)
            if cwd is not None:
                os.chdir(cwd)
            if userns:
                ns.unshare(ns.CLONE_NEWUSER)
                os.write(ready_w, b"u")
                os.read(go_r, 1)
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            ns.unshare(flags)
            # First thing: nothing mounted from now on may reach the host.
            make_propagation("/", MS_PRIVATE | MS_REC)
            if flags & ns.CLONE_NEWPID:
                child = os.fork()  # PID 1 of the new pid namespace
                if child == 0:
                    _run_and_report(fn, out_w)
                os.close(out_w)
                os.waitpid(child, 0)
                os._exit(0)
            _run_and_report(fn, out_w)
        except BaseException:
            try:
                _send(out_w, {"error": traceback.format_exc()})
            finally:
                os._exit(1)
    os.close(out_w)
    os.close(ready_w)
    os.close(go_r)
    try:
        if userns:
            assert os.read(ready_r, 1) == b"u"
            for name in ("uid_map", "gid_map"):
                Path(f"/proc/{pid}/{name}").write_text(id_map)
            os.write(go_w, b"g")
        chunks = []
        while True:
            ready, _, _ = select.select([out_r], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                pytest.fail("the isolated child timed out")
            chunk = os.read(out_r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        for fd in (out_r, ready_r, go_w):
            os.close(fd)
        os.waitpid(pid, 0)
    if not chunks:
        pytest.fail("the isolated child died without a report")
    msg = json.loads(b"".join(chunks))
    if "error" in msg:
        pytest.fail("in the container:\n" + msg["error"], pytrace=False)
    return msg["result"]


def in_container(
    plan: rf.RootfsPlan,
    check: Callable[[], Any],
    *,
    before: Callable[[], None] | None = None,
    after_prepare: Callable[[], Any] | None = None,
    flags: int = NAMESPACES,
    userns: bool = False,
    id_map: str = "0 0 65536\n",
    cwd: str | None = None,
) -> Any:
    """Build ``plan`` like the init does, then run ``check`` inside the new root."""

    def body() -> Any:
        if before is not None:
            before()
        rf.prepare_rootfs(plan)
        early = after_prepare() if after_prepare is not None else None
        rf.enter_rootfs(plan)
        rf.finalize_rootfs(plan)
        result = check()
        return {"early": early, "check": result} if after_prepare is not None else result

    return isolated(body, flags=flags, userns=userns, id_map=id_map, cwd=cwd)


def mountinfo_here() -> list[dict[str, Any]]:
    """The current mount table (inside the container), as JSON-able dicts."""
    return [
        {
            "root": i.root,
            "mountpoint": i.mountpoint,
            "options": i.options.split(","),
            "optional": i.optional,
            "fstype": i.fstype,
            "super": i.super_options,
        }
        for i in rf.read_mountinfo()
    ]


def mount_at(table: list[dict[str, Any]], mountpoint: str) -> dict[str, Any]:
    found = [m for m in table if m["mountpoint"] == mountpoint]
    assert found, f"nothing mounted at {mountpoint}: {[m['mountpoint'] for m in table]}"
    return found[-1]


def write_errno(path: str) -> int:
    """0 if ``path`` could be written, else the errno."""
    try:
        with open(path, "w") as f:
            f.write("x")
    except OSError as exc:
        return exc.errno or -1
    return 0


def busybox(*args: str) -> str:
    return subprocess.run(
        ["/bin/busybox", *args], check=True, capture_output=True, text=True
    ).stdout


# --------------------------------------------------------------------------- specs and plans

Maker = Callable[..., tuple[Spec, Path]]


@pytest.fixture
def make_spec(make_bundle: Any) -> Maker:
    """``make(**config) -> (spec, bundle)``: a busybox bundle of our own with config merged in."""

    def make(**config: Any) -> tuple[Spec, Path]:
        bundle = make_bundle(["true"], config=config or None)
        return load_spec(bundle / "config.json"), bundle

    return make


def plan_of(
    spec: Spec,
    bundle: Path,
    *,
    no_pivot: bool = False,
    userns: bool = False,
    cgroup_path: str = "/",
    cgroupns: bool = False,
) -> rf.RootfsPlan:
    return rf.plan_rootfs(
        spec, bundle, no_pivot=no_pivot, userns=userns, cgroup_path=cgroup_path, cgroupns=cgroupns
    )


def basic_mounts(*extra: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"],
        },
        *extra,
    ]


def _unified_host() -> bool:
    return any(
        i.fstype == "cgroup2" and i.mountpoint == "/sys/fs/cgroup" for i in rf.read_mountinfo()
    )


UNIFIED = _unified_host()
needs_cgroup2 = pytest.mark.skipif(
    not UNIFIED, reason="needs a cgroup v2 only host (shared/vmtest/run-in-cgroup2-vm)"
)
needs_cgroup1 = pytest.mark.skipif(UNIFIED, reason="needs cgroup v1 hierarchies")


# =========================================================================== the default spec


def test_default_spec(make_spec: Maker) -> None:
    spec, bundle = make_spec(root={"path": "rootfs", "readonly": True})
    plan = plan_of(spec, bundle)

    def check() -> dict[str, Any]:
        table = mountinfo_here()
        return {
            "ls": sorted(os.listdir("/")),
            "self": os.readlink("/proc/self"),
            "roots": [m for m in table if m["mountpoint"] == "/"],
            "types": {m["mountpoint"]: m["fstype"] for m in table},
            "opts": {m["mountpoint"]: m["options"] for m in table},
            "write_root": write_errno("/newfile"),
            "write_tmp": write_errno("/tmp/newfile"),
            "write_dev": write_errno("/dev/newfile"),
            "write_shm": write_errno("/dev/shm/x"),
            "proc_sys": write_errno("/proc/sys/kernel/hostname"),
            "acpi": os.listdir("/proc/acpi"),
            "timer_list": open("/proc/timer_list").read(),
            "cgroups": sorted(os.listdir("/sys/fs/cgroup")),
            "cgroup_write": write_errno("/sys/fs/cgroup/pids/x"),
            "busybox": busybox("echo", "hello"),
        }

    got = in_container(plan, check)
    assert "bin" in got["ls"] and "etc" in got["ls"]
    assert got["self"] == "1"
    assert len(got["roots"]) == 1  # the old root is gone
    types = got["types"]
    assert types["/proc"] == "proc"
    assert types["/dev"] == "tmpfs"
    assert types["/dev/pts"] == "devpts"
    assert types["/dev/shm"] == "tmpfs"
    assert types["/dev/mqueue"] == "mqueue"
    assert types["/sys"] == "sysfs"
    if UNIFIED:
        assert types["/sys/fs/cgroup"] == "cgroup2"
    else:
        assert types["/sys/fs/cgroup"] == "tmpfs"
        assert types["/sys/fs/cgroup/pids"] == "cgroup"
    assert types["/proc/acpi"] == "tmpfs"
    assert types["/proc/sys"] == "proc"
    assert "ro" in got["opts"]["/"]
    assert "ro" in got["opts"]["/sys"]
    assert "ro" in got["opts"]["/sys/fs/cgroup"]
    assert "rw" in got["opts"]["/dev"]
    assert got["write_root"] == errno.EROFS
    assert got["write_tmp"] == errno.EROFS
    assert got["write_dev"] == 0
    assert got["write_shm"] == 0
    assert got["proc_sys"] == errno.EROFS
    assert got["acpi"] == []
    assert got["timer_list"] == ""
    if UNIFIED:
        assert "cgroup.controllers" in got["cgroups"]
    else:
        assert {"cpu", "cpuacct", "memory", "pids", "systemd", "unified"} <= set(got["cgroups"])
        assert got["cgroup_write"] == errno.EROFS
    assert got["busybox"] == "hello\n"


# =========================================================================== mount types


def test_every_filesystem_type(make_spec: Maker, tmp_path: Path) -> None:
    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "from-lower").write_text("lower\n")
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=1m"],
            },
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]},
            {"destination": "/run/ro", "type": "tmpfs", "options": ["ro", "size=1m"]},
            {
                "destination": "/mnt/overlay",
                "type": "overlay",
                "source": "overlay",
                "options": [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"],
            },
        )
    )
    plan = plan_of(spec, bundle)

    def check() -> dict[str, Any]:
        table = mountinfo_here()
        master, slave = os.openpty()
        pty = os.ttyname(slave)
        os.close(master)
        os.close(slave)
        with open("/mnt/overlay/new", "w") as f:
            f.write("upper\n")
        return {
            "types": {m["mountpoint"]: m["fstype"] for m in table},
            "shm": oct(stat.S_IMODE(os.stat("/dev/shm").st_mode)),
            "shm_opts": mount_at(table, "/dev/shm")["options"],
            "shm_super": mount_at(table, "/dev/shm")["super"],
            "pty": pty,
            "sys_write": write_errno("/sys/kernel/uevent_helper"),
            "run_ro": write_errno("/run/ro/x"),
            "lower": open("/mnt/overlay/from-lower").read(),
        }

    got = in_container(plan, check)
    types = got["types"]
    assert types["/dev/mqueue"] == "mqueue"
    assert types["/sys"] == "sysfs"
    assert types["/mnt/overlay"] == "overlay"
    assert got["shm"] == "0o1777"
    assert {"nosuid", "nodev", "noexec"} <= set(got["shm_opts"])
    assert "size=1024k" in got["shm_super"]
    assert got["pty"].startswith("/dev/pts/")
    assert got["sys_write"] == errno.EROFS
    assert got["run_ro"] == errno.EROFS
    assert got["lower"] == "lower\n"
    assert (upper / "new").read_text() == "upper\n"


def test_tmpfs_keeps_mode_of_existing_directory(make_spec: Maker) -> None:
    spec, bundle = make_spec(mounts=basic_mounts({"destination": "/tmp", "type": "tmpfs"}))
    assert stat.S_IMODE((bundle / "rootfs" / "tmp").stat().st_mode) == 0o1777
    plan = plan_of(spec, bundle)
    got = in_container(plan, lambda: oct(stat.S_IMODE(os.stat("/tmp").st_mode)))
    assert got == "0o1777"


def test_tmpcopyup(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {"destination": "/etc", "type": "tmpfs", "source": "tmpfs", "options": ["tmpcopyup"]}
        )
    )
    etc = bundle / "rootfs" / "etc"
    (etc / "sub").mkdir()
    (etc / "sub" / "file").write_text("deep\n")
    os.chown(etc / "sub" / "file", 1000, 44)
    (etc / "link").symlink_to("hostname")
    plan = plan_of(spec, bundle)

    def check() -> dict[str, Any]:
        with open("/etc/written", "w") as f:
            f.write("x")
        st = os.stat("/etc/sub/file")
        return {
            "fstype": mount_at(mountinfo_here(), "/etc")["fstype"],
            "hostname": open("/etc/hostname").read(),
            "deep": open("/etc/sub/file").read(),
            "owner": [st.st_uid, st.st_gid],
            "link": os.readlink("/etc/link"),
        }

    got = in_container(plan, check)
    assert got == {
        "fstype": "tmpfs",
        "hostname": "busybox\n",
        "deep": "deep\n",
        "owner": [1000, 44],
        "link": "hostname",
    }
    assert not (etc / "written").exists()


# =========================================================================== bind mounts


def test_bind_readonly_directory_and_file(make_spec: Maker, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "hello").write_text("hi\n")
    single = tmp_path / "single.conf"
    single.write_text("conf\n")
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {"destination": "/mnt/data", "type": "bind", "source": str(data), "options": ["ro"]},
            {"destination": "/etc/app/single.conf", "source": str(single), "options": ["bind"]},
            {"destination": "/mnt/rel", "source": "relsrc", "options": ["rbind", "nosuid"]},
        )
    )
    (bundle / "relsrc").mkdir()
    (bundle / "relsrc" / "r").write_text("rel\n")
    plan = plan_of(spec, bundle)
    assert plan.mounts[-1].source == str(bundle / "relsrc")

    def check() -> dict[str, Any]:
        table = mountinfo_here()
        return {
            "read": open("/mnt/data/hello").read(),
            "write": write_errno("/mnt/data/new"),
            "opts": mount_at(table, "/mnt/data")["options"],
            "single": open("/etc/app/single.conf").read(),
            "single_is_file": os.path.isfile("/etc/app/single.conf"),
            "rel": open("/mnt/rel/r").read(),
            "rel_opts": mount_at(table, "/mnt/rel")["options"],
            "rel_write": write_errno("/mnt/rel/w"),
        }

    got = in_container(plan, check)
    assert got["read"] == "hi\n"
    assert got["write"] == errno.EROFS
    assert "ro" in got["opts"]
    assert got["single"] == "conf\n"
    assert got["single_is_file"]
    assert got["rel"] == "rel\n"
    assert "nosuid" in got["rel_opts"] and "rw" in got["rel_opts"]
    assert got["rel_write"] == 0
    assert (bundle / "relsrc" / "w").exists()
    assert not (data / "new").exists()


def test_recursive_readonly(make_spec: Maker, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)

    def before() -> None:
        mount("tmpfs", src / "sub", "tmpfs", 0, "size=1m")

    spec, bundle = make_spec(
        mounts=basic_mounts(
            {"destination": "/mnt/plain", "source": str(src), "options": ["rbind", "ro"]},
            {"destination": "/mnt/rro", "source": str(src), "options": ["rbind", "rro"]},
        )
    )
    plan = plan_of(spec, bundle)

    def check() -> dict[str, int]:
        return {
            "plain_top": write_errno("/mnt/plain/x"),
            "plain_sub": write_errno("/mnt/plain/sub/x"),
            "rro_top": write_errno("/mnt/rro/x"),
            "rro_sub": write_errno("/mnt/rro/sub/y"),
        }

    got = in_container(plan, check, before=before)
    # "ro" only covers the top mount of an rbind; "rro" covers the whole tree
    assert got == {
        "plain_top": errno.EROFS,
        "plain_sub": 0,
        "rro_top": errno.EROFS,
        "rro_sub": errno.EROFS,
    }


def test_propagation_options(make_spec: Maker, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {"destination": "/mnt/shared", "source": str(plain), "options": ["bind", "rshared"]},
            # a shared tmpfs inside the container, and a slave bind of it
            {"destination": "/mnt/master", "type": "tmpfs", "options": ["rshared"]},
            {"destination": "/mnt/slave", "source": "SET BELOW", "options": ["rbind", "rslave"]},
            {"destination": "/mnt/private", "source": str(plain), "options": ["bind", "private"]},
            {"destination": "/mnt/unbind", "source": str(plain), "options": ["bind", "unbindable"]},
        ),
        linux={"maskedPaths": [], "readonlyPaths": []},
    )
    rootfs = bundle / "rootfs"
    (rootfs / "mnt" / "master").mkdir()
    assert spec.mounts is not None
    spec.mounts[5].source = f"{rootfs}/mnt/master"
    plan = plan_of(spec, bundle)

    def check() -> dict[str, list[str]]:
        table = mountinfo_here()
        return {
            p: mount_at(table, p)["optional"]
            for p in ("/mnt/shared", "/mnt/master", "/mnt/slave", "/mnt/private", "/mnt/unbind")
        }

    got = in_container(plan, check)
    assert any(o.startswith("shared:") for o in got["/mnt/shared"])
    master = [o for o in got["/mnt/master"] if o.startswith("shared:")]
    assert master
    assert got["/mnt/slave"] == ["master:" + master[0].split(":")[1]]
    assert got["/mnt/private"] == []
    assert got["/mnt/unbind"] == ["unbindable"]


@pytest.mark.parametrize(
    ("propagation", "expect"),
    [("shared", "shared:"), ("unbindable", "unbindable"), ("private", None), ("rslave", None)],
)
def test_rootfs_propagation(make_spec: Maker, propagation: str, expect: str | None) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts(), linux={"rootfsPropagation": propagation, "maskedPaths": []}
    )
    plan = plan_of(spec, bundle)
    assert plan.rootfs_propagation
    got = in_container(plan, lambda: mount_at(mountinfo_here(), "/")["optional"])
    if expect is None:
        assert not any(o.startswith(("shared:", "unbindable")) for o in got)
    else:
        assert any(o.startswith(expect) for o in got)


def skip_unless_idmap_supported(path: Path) -> None:
    """tmpfs supports idmapped mounts from Linux 6.3 (Debian 12's 6.1 has it on ext4 only)."""
    release = tuple(int(x) for x in os.uname().release.split("-")[0].split(".")[:2])
    with open("/proc/self/mountinfo") as f:
        best, fstype = "", ""
        for line in f:
            fields = line.split()
            mount_point = fields[4]
            sep = fields.index("-")
            target = str(path)
            if (target == mount_point or target.startswith(mount_point.rstrip("/") + "/")) and len(
                mount_point
            ) >= len(best):
                best, fstype = mount_point, fields[sep + 1]
    if fstype == "tmpfs" and release < (6, 3):
        pytest.skip(f"idmapped mounts on tmpfs need Linux 6.3 (this is {os.uname().release})")


def test_idmapped_bind(make_spec: Maker, tmp_path: Path) -> None:
    skip_unless_idmap_supported(tmp_path)
    data = tmp_path / "idmapped"
    data.mkdir()
    (data / "owned-by-root").write_text("x")
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {
                "destination": "/mnt/idmapped",
                "source": str(data),
                "options": ["bind", "idmap"],
                "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 10}],
                "gidMappings": [{"containerID": 0, "hostID": 2000, "size": 10}],
            }
        )
    )
    plan = plan_of(spec, bundle)
    assert plan.mounts[-1].idmap is not None

    def check() -> list[int]:
        st = os.stat("/mnt/idmapped/owned-by-root")
        return [st.st_uid, st.st_gid]

    assert in_container(plan, check) == [1000, 2000]


def test_idmapped_bind_prepared_by_runtime(make_spec: Maker, tmp_path: Path) -> None:
    skip_unless_idmap_supported(tmp_path)
    data = tmp_path / "idmapped"
    data.mkdir()
    (data / "f").write_text("x")
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {
                "destination": "/mnt/idmapped",
                "source": str(data),
                "options": ["rbind", "ridmap"],
                "uidMappings": [{"containerID": 0, "hostID": 3000, "size": 1}],
                "gidMappings": [{"containerID": 0, "hostID": 3000, "size": 1}],
            }
        )
    )
    plan = plan_of(spec, bundle)
    rf.open_idmapped_mounts(plan)
    try:
        assert plan.mounts[-1].mount_fd is not None
        got = in_container(plan, lambda: os.stat("/mnt/idmapped/f").st_uid)
    finally:
        rf.close_mount_fds(plan)
    assert got == 3000
    assert plan.mounts[-1].mount_fd is None


# =========================================================================== cgroups


@needs_cgroup1
def test_cgroup_v1_binds_without_cgroup_namespace(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            }
        )
    )
    plan = plan_of(spec, bundle, cgroup_path="/")
    cg = plan.mounts[-1].cgroup
    assert cg is not None and cg.version == 1 and not cg.cgroupns
    names = {h.name for h in cg.hierarchies}
    assert {"cpu", "pids", "systemd", "unified"} <= names

    def check() -> dict[str, Any]:
        table = mountinfo_here()
        return {
            "pids": mount_at(table, "/sys/fs/cgroup/pids"),
            "unified": mount_at(table, "/sys/fs/cgroup/unified")["fstype"],
            "pids_files": "cgroup.procs" in os.listdir("/sys/fs/cgroup/pids"),
            "write": write_errno("/sys/fs/cgroup/pids/cgroup.procs"),
        }

    got = in_container(plan, check)
    assert got["pids"]["fstype"] == "cgroup"
    assert got["pids"]["root"] == "/"  # a bind of the hierarchy's root ("/" was the cgroup path)
    assert "ro" in got["pids"]["options"]
    assert got["unified"] == "cgroup2"
    assert got["pids_files"]
    assert got["write"] == errno.EROFS


@needs_cgroup1
def test_cgroup_v1_fresh_mounts_in_cgroup_namespace(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts({"destination": "/sys/fs/cgroup", "type": "cgroup", "options": ["ro"]})
    )
    plan = plan_of(spec, bundle, cgroup_path="/does/not/matter", cgroupns=True)

    def check() -> dict[str, Any]:
        table = mountinfo_here()
        return {
            p: [mount_at(table, p)["root"], mount_at(table, p)["fstype"]]
            for p in ("/sys/fs/cgroup/cpu", "/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")
        }

    got = in_container(plan, check, flags=NAMESPACES | ns.CLONE_NEWCGROUP)
    assert got["/sys/fs/cgroup/cpu"] == ["/", "cgroup"]
    assert got["/sys/fs/cgroup/systemd"] == ["/", "cgroup"]
    assert got["/sys/fs/cgroup/unified"] == ["/", "cgroup2"]


@needs_cgroup2
def test_cgroup_v2_fresh_mount_in_cgroup_namespace(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts({"destination": "/sys/fs/cgroup", "type": "cgroup", "options": ["ro"]})
    )
    plan = plan_of(spec, bundle, cgroup_path="/whatever", cgroupns=True)
    cg = plan.mounts[-1].cgroup
    assert cg is not None and cg.version == 2

    def check() -> dict[str, Any]:
        m = mount_at(mountinfo_here(), "/sys/fs/cgroup")
        return {
            "fstype": m["fstype"],
            "root": m["root"],
            "ro": "ro" in m["options"],
            "controllers": os.path.exists("/sys/fs/cgroup/cgroup.controllers"),
        }

    got = in_container(plan, check, flags=NAMESPACES | ns.CLONE_NEWCGROUP)
    assert got == {"fstype": "cgroup2", "root": "/", "ro": True, "controllers": True}


@needs_cgroup2
def test_cgroup_v2_bind_of_own_cgroup(make_spec: Maker) -> None:
    own = rf._own_cgroups()[frozenset()]
    spec, bundle = make_spec(
        mounts=basic_mounts({"destination": "/sys/fs/cgroup", "type": "cgroup", "options": ["ro"]})
    )
    # a cgroup that does not exist: the bind falls back to where we are
    plan = plan_of(spec, bundle, cgroup_path="/bulkhead-no-such-cgroup")

    def check() -> dict[str, Any]:
        m = mount_at(mountinfo_here(), "/sys/fs/cgroup")
        return {"fstype": m["fstype"], "root": m["root"], "write": write_errno("/sys/fs/cgroup/x")}

    got = in_container(plan, check)
    assert got == {"fstype": "cgroup2", "root": own, "write": errno.EROFS}


def test_cgroup_plan_merged_hierarchies_get_symlinks() -> None:
    infos = [
        rf.MountInfo(1, 0, "/", "/sys/fs/cgroup", "rw", [], "tmpfs", "tmpfs", "rw"),
        rf.MountInfo(2, 1, "/", "/sys/fs/cgroup/cpu,cpuacct", "rw", [], "cgroup", "cgroup", "rw,cpu,cpuacct"),
        rf.MountInfo(3, 1, "/", "/sys/fs/cgroup/systemd", "rw", [], "cgroup", "cgroup", "rw,xattr,name=systemd"),
        rf.MountInfo(4, 1, "/", "/sys/fs/cgroup/cpu", "rw", [], "cgroup", "cgroup", "rw,cpu,cpuacct"),
    ]  # fmt: skip
    cg = rf.plan_cgroup_mount("/a/b", cgroupns=False, mounts=infos)
    assert [h.name for h in cg.hierarchies] == ["cpu,cpuacct", "systemd"]
    assert cg.hierarchies[0].source == "/sys/fs/cgroup/cpu,cpuacct/a/b"
    assert cg.hierarchies[1].options == "name=systemd"
    assert sorted(cg.symlinks) == [("cpu", "cpu,cpuacct"), ("cpuacct", "cpu,cpuacct")]


def test_cgroup_plan_unified_host() -> None:
    infos = [rf.MountInfo(1, 0, "/", "/sys/fs/cgroup", "rw", [], "cgroup2", "cgroup2", "rw")]
    cg = rf.plan_cgroup_mount("/x/y", cgroupns=False, mounts=infos)
    assert cg.version == 2
    assert cg.hierarchies[0].source == "/sys/fs/cgroup/x/y"


@needs_cgroup1
def test_cgroup_source_falls_back_to_own_cgroup() -> None:
    h = rf.CgroupHierarchy(
        name="pids",
        fstype="cgroup",
        options="pids",
        mountpoint="/sys/fs/cgroup/pids",
        root="/",
        source="/sys/fs/cgroup/pids/bulkhead-no-such-cgroup",
        key="pids",
    )
    own = rf._own_cgroups()[frozenset({"pids"})]
    assert rf._cgroup_source(h) == os.path.normpath("/sys/fs/cgroup/pids" + own)


# =========================================================================== devices


def test_devices(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts(),
        linux={
            "devices": [
                {
                    "path": "/dev/mydev",
                    "type": "c",
                    "major": 1,
                    "minor": 5,
                    "fileMode": 0o640,
                    "uid": 1000,
                    "gid": 44,
                },
                {"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200},
                {"path": "/dev/myfifo", "type": "p"},
                {"path": "/dev/full", "type": "u", "major": 1, "minor": 7, "fileMode": 0o600},
            ]
        },
    )
    plan = plan_of(spec, bundle)

    def check() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for p in (
            "/dev/null",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
            "/dev/tty",
            "/dev/mydev",
            "/dev/net/tun",
            "/dev/myfifo",
        ):
            st = os.lstat(p)
            out[p] = {
                "chr": stat.S_ISCHR(st.st_mode),
                "fifo": stat.S_ISFIFO(st.st_mode),
                "dev": [os.major(st.st_rdev), os.minor(st.st_rdev)],
                "mode": oct(stat.S_IMODE(st.st_mode)),
                "owner": [st.st_uid, st.st_gid],
            }
        out["links"] = {
            n: os.readlink(f"/dev/{n}") for n in ("fd", "stdin", "stdout", "stderr", "ptmx")
        }
        out["core"] = os.path.lexists("/dev/core")
        with open("/dev/zero", "rb") as zero:
            out["zero"] = zero.read(4).hex()
        out["ls"] = busybox("ls", "/dev/fd/")
        return out

    got = in_container(plan, check)
    expect = {
        "/dev/null": (1, 3),
        "/dev/zero": (1, 5),
        "/dev/random": (1, 8),
        "/dev/urandom": (1, 9),
        "/dev/tty": (5, 0),
    }
    for path, (major, minor) in expect.items():
        assert got[path]["chr"], path
        assert got[path]["dev"] == [major, minor], path
        assert got[path]["mode"] == "0o666", path
        assert got[path]["owner"] == [0, 0], path
    assert got["/dev/full"]["dev"] == [1, 7] and got["/dev/full"]["mode"] == "0o600"
    assert got["/dev/mydev"] == {
        "chr": True,
        "fifo": False,
        "dev": [1, 5],
        "mode": "0o640",
        "owner": [1000, 44],
    }
    assert got["/dev/net/tun"]["dev"] == [10, 200]
    assert got["/dev/myfifo"]["fifo"]
    assert got["links"] == {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
        "ptmx": "pts/ptmx",
    }
    assert got["core"] == os.path.exists("/proc/kcore")
    assert got["zero"] == "00000000"
    assert got["ls"].split()  # /dev/fd lists the process's fds


def test_dev_bind_of_host_dev_skips_device_setup(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=[
            {"destination": "/proc", "type": "proc"},
            {"destination": "/dev", "source": "/dev", "options": ["rbind", "nosuid"]},
        ],
        linux={"maskedPaths": [], "readonlyPaths": []},
    )
    plan = plan_of(spec, bundle)
    assert not plan.setup_dev

    def check() -> dict[str, Any]:
        return {
            "null": os.path.exists("/dev/null"),
            "ptmx_link": os.path.islink("/dev/ptmx"),
            "fd": os.path.islink("/dev/fd"),
        }

    got = in_container(plan, check)
    assert got["null"]
    assert got["ptmx_link"] == os.path.islink("/dev/ptmx")  # the host's /dev as it is
    assert got["fd"] == os.path.islink("/dev/fd")


def test_console(make_spec: Maker) -> None:
    spec, bundle = make_spec(mounts=basic_mounts())
    plan = plan_of(spec, bundle)

    def body() -> dict[str, Any]:
        rf.prepare_rootfs(plan)
        rf.enter_rootfs(plan)
        _master, slave = os.openpty()
        rf.bind_console(os.ttyname(slave))
        rf.finalize_rootfs(plan)
        return {
            "console": os.stat("/dev/console").st_rdev,
            "slave": os.fstat(slave).st_rdev,
            "path": os.ttyname(slave),
        }

    got = isolated(body)
    assert got["console"] == got["slave"]
    assert got["path"].startswith("/dev/pts/")


# =========================================================================== read-only, masks


def test_readonly_root_refuses_writes(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        root={"path": "rootfs", "readonly": True},
        mounts=basic_mounts({"destination": "/run", "type": "tmpfs"}),
    )
    plan = plan_of(spec, bundle)

    def check() -> dict[str, Any]:
        return {
            "root": write_errno("/etc/hostname"),
            "new": write_errno("/newfile"),
            "mkdir": busybox_status("mkdir", "/newdir"),
            "run": write_errno("/run/ok"),
            "root_opts": mount_at(mountinfo_here(), "/")["options"],
        }

    got = in_container(plan, check)
    assert got["root"] == errno.EROFS
    assert got["new"] == errno.EROFS
    assert got["mkdir"] != 0
    assert got["run"] == 0
    assert "ro" in got["root_opts"]


def busybox_status(*args: str) -> int:
    return subprocess.run(["/bin/busybox", *args], capture_output=True).returncode


def test_masked_paths(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts(),
        linux={
            "maskedPaths": [
                "/etc/secret",
                "/secretdir",
                "/proc/timer_list",
                "/proc/acpi",
                "/does/not/exist",
            ]
        },
    )
    rootfs = bundle / "rootfs"
    (rootfs / "etc" / "secret").write_text("top secret\n")
    (rootfs / "secretdir").mkdir()
    (rootfs / "secretdir" / "inside").write_text("also secret\n")
    plan = plan_of(spec, bundle)

    def check() -> dict[str, Any]:
        return {
            "file": open("/etc/secret").read(),
            "file_write": write_errno("/etc/secret"),
            "dir": os.listdir("/secretdir"),
            "dir_write": write_errno("/secretdir/x"),
            "timer_list": open("/proc/timer_list").read(),
            "acpi": os.listdir("/proc/acpi"),
            "cat": busybox("cat", "/etc/secret"),
        }

    got = in_container(plan, check)
    assert got["file"] == ""
    assert got["file_write"] == 0  # writes to /dev/null vanish
    assert got["dir"] == []
    assert got["dir_write"] == errno.EROFS
    assert got["timer_list"] == ""
    assert got["acpi"] == []
    assert got["cat"] == ""
    assert (rootfs / "etc" / "secret").read_text() == "top secret\n"


def test_readonly_paths(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts(),
        linux={"readonlyPaths": ["/etc", "/proc/sys", "/proc/sysrq-trigger", "/no/such/path"]},
    )
    plan = plan_of(spec, bundle)

    def check() -> dict[str, int]:
        return {
            "etc": write_errno("/etc/newfile"),
            "etc_existing": write_errno("/etc/hostname"),
            "proc_sys": write_errno("/proc/sys/kernel/hostname"),
            "sysrq": write_errno("/proc/sysrq-trigger"),
            "other": write_errno("/root/ok"),
        }

    got = in_container(plan, check)
    assert got == {
        "etc": errno.EROFS,
        "etc_existing": errno.EROFS,
        "proc_sys": errno.EROFS,
        # missing on this kernel: skipped, and /proc refuses to create it
        "sysrq": errno.EROFS if os.path.exists("/proc/sysrq-trigger") else errno.ENOENT,
        "other": 0,
    }


def test_readonly_dev(make_spec: Maker) -> None:
    mounts = basic_mounts()
    mounts[1]["options"] = [*mounts[1]["options"], "ro"]
    spec, bundle = make_spec(mounts=mounts)
    plan = plan_of(spec, bundle)

    def check() -> dict[str, Any]:
        return {
            "write_dev": write_errno("/dev/x"),
            "null": os.path.exists("/dev/null"),
            "null_write": write_errno("/dev/null"),
        }

    got = in_container(plan, check)
    assert got == {"write_dev": errno.EROFS, "null": True, "null_write": 0}


# =========================================================================== entering the root


def test_pivot_root_leaves_no_old_root(make_spec: Maker, tmp_path: Path) -> None:
    marker = tmp_path / "host-marker"
    marker.write_text("host\n")
    spec, bundle = make_spec(mounts=basic_mounts(), linux={"maskedPaths": [], "readonlyPaths": []})
    plan = plan_of(spec, bundle)

    def check() -> dict[str, Any]:
        table = mountinfo_here()
        return {
            "roots": len([m for m in table if m["mountpoint"] == "/"]),
            "mountpoints": [m["mountpoint"] for m in table],
            "marker": os.path.exists(str(marker)),
            "dotdot": os.stat("/..").st_ino == os.stat("/").st_ino,
            "cwd": os.getcwd(),
            "ls": sorted(os.listdir("/")),
        }

    got = in_container(plan, check)
    assert got["roots"] == 1
    assert sorted(got["mountpoints"]) == ["/", "/dev", "/dev/pts", "/proc"]
    assert not got["marker"]
    assert got["dotdot"]
    assert got["cwd"] == "/"
    assert got["ls"] == sorted(os.listdir(bundle / "rootfs"))


def test_no_pivot_uses_chroot(make_spec: Maker, tmp_path: Path) -> None:
    marker = tmp_path / "host-marker"
    marker.write_text("host\n")
    spec, bundle = make_spec(mounts=basic_mounts())
    plan = plan_of(spec, bundle, no_pivot=True)
    assert "/proc" in plan.host_pseudo_mounts and "/sys" in plan.host_pseudo_mounts

    def check() -> dict[str, Any]:
        return {
            "ls": sorted(os.listdir("/")),
            "hostname": open("/etc/hostname").read(),
            "marker": os.path.exists(str(marker)),
            "self": os.readlink("/proc/self"),
            "echo": busybox("echo", "chrooted"),
        }

    got = in_container(plan, check)
    assert got["ls"] == sorted(os.listdir(bundle / "rootfs"))
    assert got["hostname"] == "busybox\n"
    assert not got["marker"]
    assert got["self"] == "1"
    assert got["echo"] == "chrooted\n"


def test_symlinked_destinations_stay_inside(make_spec: Maker, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    outside2 = tmp_path / "outside2"
    outside2.mkdir()
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {"destination": "/evil/sub", "type": "tmpfs"},
            {"destination": "/evil2", "type": "tmpfs"},
            {"destination": "/../../../escape", "type": "tmpfs"},
        )
    )
    rootfs = bundle / "rootfs"
    (rootfs / "evil").symlink_to(outside)  # absolute, pointing at the host
    (rootfs / "evil2").symlink_to("../../../../../../../../" + str(outside2).lstrip("/"))
    plan = plan_of(spec, bundle)
    assert plan.mounts[-1].destination == "/escape"
    inside = f"{rootfs}{outside}"

    def after_prepare() -> dict[str, bool]:
        return {
            "outside_sub": os.path.ismount(str(outside / "sub")),
            "outside2": os.path.ismount(str(outside2)),
            "inside_sub": os.path.ismount(f"{inside}/sub"),
            "inside2": os.path.ismount(f"{rootfs}{outside2}"),
            "escape": os.path.ismount(f"{rootfs}/escape"),
        }

    def check() -> list[str]:
        return sorted(m["mountpoint"] for m in mountinfo_here())

    got = in_container(plan, check, after_prepare=after_prepare)
    assert got["early"] == {
        "outside_sub": False,
        "outside2": False,
        "inside_sub": True,
        "inside2": True,
        "escape": True,
    }
    assert f"{outside}/sub" in got["check"] and str(outside2) in got["check"]
    assert list(outside.iterdir()) == [] and list(outside2.iterdir()) == []


def test_proc_cannot_be_mounted_through_a_symlink(make_spec: Maker, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    spec, bundle = make_spec(mounts=[{"destination": "/proc", "type": "proc"}])
    rootfs = bundle / "rootfs"
    (rootfs / "proc").rmdir()
    (rootfs / "proc").symlink_to(outside)
    plan = plan_of(spec, bundle)

    def body() -> str:
        try:
            rf.prepare_rootfs(plan)
        except StartError as exc:
            return str(exc)
        return "mounted"

    message = isolated(body)
    assert "ordinary directory" in message
    assert "$.mounts[0]" in message


def test_mount_failure_names_the_mount(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts({"destination": "/mnt/bad", "type": "no-such-fs", "source": "x"})
    )
    plan = plan_of(spec, bundle)

    def body() -> dict[str, Any]:
        try:
            rf.prepare_rootfs(plan)
        except StartError as exc:
            return {"message": str(exc), "errno": exc.errno, "step": exc.step}
        return {}

    got = isolated(body)
    assert got["errno"] == errno.ENODEV
    assert got["step"] == "mount /mnt/bad"
    assert "$.mounts[3]" in got["message"] and "/mnt/bad" in got["message"]


# =========================================================================== user namespaces


def test_user_namespace_binds_devices_and_falls_back_for_sysfs(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {"destination": "/sys", "type": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        ),
        linux={"devices": [{"path": "/dev/kmsg", "type": "c", "major": 1, "minor": 11}]},
    )
    plan = plan_of(spec, bundle, userns=True)
    assert plan.bind_devices

    def check() -> dict[str, Any]:
        table = mountinfo_here()
        null = os.stat("/dev/null")
        return {
            "null": [stat.S_ISCHR(null.st_mode), os.major(null.st_rdev), os.minor(null.st_rdev)],
            "null_mount": mount_at(table, "/dev/null")["fstype"],
            "kmsg": mount_at(table, "/dev/kmsg")["fstype"],
            "sys": mount_at(table, "/sys")["fstype"],
            "sys_submounts": [
                m["mountpoint"] for m in table if m["mountpoint"].startswith("/sys/")
            ],
            "sys_write": write_errno("/sys/kernel/uevent_helper"),
            "uid": os.getuid(),
        }

    # no network namespace of our own: sysfs cannot be mounted, /sys is bound instead
    flags = NAMESPACES & ~ns.CLONE_NEWNET
    got = in_container(plan, check, flags=flags, userns=True)
    assert got["null"] == [True, 1, 3]
    assert got["null_mount"] == "devtmpfs"  # the host's node, bind-mounted
    assert got["kmsg"] == "devtmpfs"
    assert got["sys"] == "sysfs"
    # the host's /sys came along with its submounts: the rbind fallback, not a fresh sysfs
    assert "/sys/fs/cgroup" in got["sys_submounts"]
    assert got["sys_write"] == errno.EROFS
    assert got["uid"] == 0


def _unreachable_for(uid: int, path: Path) -> bool:
    """Whether some directory above ``path`` is closed to ``uid`` (not owner, no o+x)."""
    for parent in path.parents:
        st = parent.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            return True
    return False


def test_user_namespace_rootfs_behind_a_closed_directory(make_spec: Maker) -> None:
    """The mapped root cannot walk to the rootfs: the init starts inside it instead."""
    spec, bundle = make_spec(
        mounts=basic_mounts(
            {"destination": "/sys", "type": "sysfs", "options": ["ro"]},
            {"destination": "/dev/mqueue", "type": "mqueue"},
        ),
        linux={"maskedPaths": ["/proc/timer_list"], "readonlyPaths": ["/proc/sys"]},
        root={"path": "rootfs", "readonly": True},
    )
    rootfs = bundle / "rootfs"
    if not _unreachable_for(100000, rootfs):
        pytest.skip("the temporary directory is reachable by everyone here")
    plan = plan_of(spec, bundle, userns=True)

    def check() -> dict[str, Any]:
        return {
            "ls": sorted(os.listdir("/")),
            "uid": os.getuid(),
            "null": os.stat("/dev/null").st_rdev == os.makedev(1, 3),
            "timer_list": open("/proc/timer_list").read(),
            "root": write_errno("/x"),
            "echo": busybox("echo", "in userns"),
        }

    got = in_container(plan, check, userns=True, id_map="0 100000 65536\n", cwd=str(rootfs))
    assert got["ls"] == sorted(os.listdir(rootfs))
    assert got["uid"] == 0
    assert got["null"]
    assert got["timer_list"] == ""
    assert got["root"] == errno.EROFS
    assert got["echo"] == "in userns\n"

    def without_cwd() -> str:
        try:
            rf.prepare_rootfs(plan)
        except StartError as exc:
            return str(exc)
        return "prepared"

    message = isolated(without_cwd, userns=True, id_map="0 100000 65536\n")
    assert "cannot be reached from the container's user namespace" in message


# =========================================================================== planning errors


def test_plan_data_model(make_spec: Maker) -> None:
    spec, bundle = make_spec(root={"path": "rootfs", "readonly": True})
    plan = plan_of(spec, bundle)
    assert plan.rootfs == str((bundle / "rootfs").resolve())
    assert plan.readonly
    assert plan.root_propagation == MS_SLAVE | MS_REC
    assert plan.rootfs_propagation == 0
    assert [m.kind for m in plan.mounts] == [
        "proc",
        "tmpfs",
        "fs",
        "tmpfs",
        "fs",
        "sysfs",
        "cgroup",
    ]
    dev = plan.mounts[1]
    assert dev.destination == "/dev" and dev.data == "mode=755,size=65536k"
    assert [d.path for d in plan.devices] == [p for p, *_ in rf.DEFAULT_DEVICES]
    assert "/proc/kcore" in plan.masked_paths and "/proc/sys" in plan.readonly_paths
    assert plan.setup_dev and not plan.bind_devices


@pytest.mark.parametrize(
    ("config", "where"),
    [
        ({"mounts": [{"destination": "/x", "source": "missing", "options": ["bind"]}]}, "$.mounts[0].source"),
        ({"mounts": [{"destination": "/x", "source": "/no/such/dir", "type": "bind"}]}, "$.mounts[0].source"),
        ({"mounts": [{"destination": "/x", "source": "x"}]}, "$.mounts[0].type"),
        ({"mounts": [{"destination": "/", "type": "tmpfs"}]}, "$.mounts[0].destination"),
        ({"mounts": [{"destination": "/proc/sys/x", "type": "tmpfs"}]}, "$.mounts[0].destination"),
        ({"mounts": [{"destination": "/proc", "type": "tmpfs"}]}, "$.mounts[0].destination"),
        ({"mounts": [{"destination": "/x\u0000y", "type": "tmpfs"}]}, "$.mounts[0].destination"),
        ({"mounts": [{"destination": "/x", "type": "tmpfs", "options": ["idmap"]}]}, "$.mounts[0]"),
        ({"linux": {"rootfsPropagation": "sideways"}}, "$.linux.rootfsPropagation"),
        ({"linux": {"maskedPaths": ["relative"]}}, "$.linux.maskedPaths[0]"),
        ({"linux": {"readonlyPaths": ["/ok", "rel"]}}, "$.linux.readonlyPaths[1]"),
        ({"linux": {"devices": [{"path": "/dev/x", "type": "z", "major": 1, "minor": 1}]}}, "$.linux.devices[0].type"),
        ({"linux": {"devices": [{"path": "dev/x", "type": "c", "major": 1, "minor": 1}]}}, "$.linux.devices[0].path"),
        ({"linux": {"devices": [{"path": "/dev/x", "type": "c"}]}}, "$.linux.devices[0]"),
    ],
)  # fmt: skip
def test_plan_rejects_bad_input(make_spec: Maker, config: dict[str, Any], where: str) -> None:
    spec, bundle = make_spec(**config)
    with pytest.raises(SpecError) as info:
        plan_of(spec, bundle)
    assert info.value.where == where


def test_plan_requires_a_mount_namespace(make_spec: Maker) -> None:
    spec, bundle = make_spec(linux={"namespaces": [{"type": "pid"}]})
    with pytest.raises(SpecError) as info:
        plan_of(spec, bundle)
    assert info.value.where == "$.linux.namespaces"


def test_plan_rejects_missing_rootfs(make_spec: Maker) -> None:
    spec, bundle = make_spec()
    assert spec.root is not None
    spec.root.path = "no-such-rootfs"
    with pytest.raises(SpecError) as info:
        plan_of(spec, bundle)
    assert info.value.where == "$.root.path"


def test_plan_rejects_private_propagation_without_pivot(make_spec: Maker) -> None:
    spec, bundle = make_spec(linux={"rootfsPropagation": "rprivate"})
    with pytest.raises(SpecError) as info:
        plan_of(spec, bundle, no_pivot=True)
    assert info.value.where == "$.linux.rootfsPropagation"


def test_plan_idmap_defaults_to_container_user_namespace(make_spec: Maker, tmp_path: Path) -> None:
    spec, bundle = make_spec(
        mounts=[{"destination": "/x", "source": str(tmp_path), "options": ["rbind", "ridmap"]}],
        linux={
            "namespaces": [{"type": "user"}, {"type": "mount"}],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        },
    )
    plan = plan_of(spec, bundle, userns=True)
    idmap = plan.mounts[0].idmap
    assert idmap is not None
    assert idmap.uid_map == [(0, 100000, 65536)] and idmap.recursive


def test_spec_devices_override_defaults(make_spec: Maker) -> None:
    spec, bundle = make_spec(
        linux={
            "devices": [
                {"path": "/dev/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o600},
                {"path": "/dev/ptmx", "type": "c", "major": 5, "minor": 2},
            ]
        }
    )
    plan = plan_of(spec, bundle)
    nulls = [d for d in plan.devices if d.path == "/dev/null"]
    assert len(nulls) == 1 and nulls[0].mode == 0o600
    assert not any(d.path == "/dev/ptmx" for d in plan.devices)
