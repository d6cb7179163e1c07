"""The container's root filesystem through the real CLI.

``test_rootfs.py`` drives the rootfs module as a library in throwaway mount
namespaces; these tests run ``bulkhead-runtime`` and look from inside the
container (busybox) or from the host at the container's mount table.

Host-side mounts (a shared source for propagation, a submount for rbind,
a persistent namespace) are made only inside the test's own temporary
directory and unmounted lazily afterwards, also on failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.runtime_helpers import RuntimeCLI

DEFAULT_NS = [{"type": t} for t in ("mount", "pid", "ipc", "uts", "network")]
USER_MAP = [{"containerID": 0, "hostID": 200000, "size": 65536}]


def run_out(rt: RuntimeCLI, b: Path, cid: str, *flags: str) -> str:
    proc = rt("run", *flags, "--bundle", str(b), cid, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def mountinfo(text: str) -> dict[str, dict[str, Any]]:
    """Mount point -> {root, options, optional, fstype, source, super} (the last mount wins)."""
    out: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        if " - " not in line:
            continue
        left, right = line.split(" - ", 1)
        f = left.split()
        r = right.split()
        out[f[4]] = {
            "root": f[3],
            "options": set(f[5].split(",")),
            "optional": f[6:],
            "fstype": r[0],
            "source": r[1],
            "super": set(r[2].split(",")) if len(r) > 2 else set(),
        }
    return out


def wait_for(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def host_mounts() -> Iterator[Callable[..., None]]:
    """``mount(*args)`` on the host (only under our tmp_path); all undone afterwards."""
    targets: list[str] = []

    def do(*args: str) -> None:
        subprocess.run(["mount", *args], check=True)
        targets.append(args[-1])

    yield do
    for target in reversed(targets):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)


# ----------------------------------------------------------------------------- default mounts


def test_default_mounts_have_their_types_and_options(rt, bundle, cid):
    b = bundle(["cat", "/proc/self/mountinfo"])
    table = mountinfo(run_out(rt, b, cid))
    assert table["/proc"]["fstype"] == "proc"
    dev = table["/dev"]
    assert dev["fstype"] == "tmpfs" and "nosuid" in dev["options"]
    assert {"mode=755", "size=65536k"} <= dev["super"]
    pts = table["/dev/pts"]
    assert pts["fstype"] == "devpts"
    assert {"nosuid", "noexec"} <= pts["options"]
    assert {"gid=5", "mode=620", "ptmxmode=666"} <= pts["super"]
    shm = table["/dev/shm"]
    assert shm["fstype"] == "tmpfs" and {"nosuid", "nodev", "noexec"} <= shm["options"]
    assert shm["source"] == "shm"
    mq = table["/dev/mqueue"]
    assert mq["fstype"] == "mqueue" and {"nosuid", "nodev", "noexec"} <= mq["options"]
    sysfs = table["/sys"]
    assert sysfs["fstype"] == "sysfs" and {"ro", "nosuid", "nodev", "noexec"} <= sysfs["options"]
    cg = table["/sys/fs/cgroup/memory"]
    assert cg["fstype"] == "cgroup" and "ro" in cg["options"] and "memory" in cg["super"]


def test_devpts_is_a_new_instance(rt, bundle, cid):
    """The container's ptys are numbered from 0 in its own devpts, not the host's."""
    b = bundle(["sh", "-c", "ls /dev/pts; stat -c %t:%T /dev/pts/ptmx"])
    out = run_out(rt, b, cid).split()
    assert out == ["ptmx", "5:2"]


# ----------------------------------------------------------------------------- spec mounts


def test_bind_and_rbind(rt, bundle, cid, tmp_path, host_mounts):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "top").write_text("top\n")
    host_mounts("-t", "tmpfs", "bh-cov-sub", str(src / "sub"))
    (src / "sub" / "inner").write_text("inner\n")
    single = tmp_path / "single-file"
    single.write_text("single\n")
    b = bundle(
        [
            "sh",
            "-c",
            "cat /mnt/b/top; ls /mnt/b/sub | wc -l; cat /mnt/r/sub/inner; cat /mnt/f;"
            " touch /mnt/ro/x 2>/dev/null && echo rw || echo ro",
        ],
        mounts=[
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/mnt/b", "type": "bind", "source": str(src), "options": ["bind"]},
            {"destination": "/mnt/r", "type": "bind", "source": str(src), "options": ["rbind"]},
            {"destination": "/mnt/f", "type": "bind", "source": str(single), "options": ["bind"]},
            {
                "destination": "/mnt/ro",
                "type": "bind",
                "source": str(src),
                "options": ["bind", "ro"],
            },
        ],
    )
    out = run_out(rt, b, cid).split()
    assert out == ["top", "0", "inner", "single", "ro"]


def test_tmpfs_options(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "grep ' /scratch ' /proc/self/mountinfo; stat -c %a /scratch;"
            " dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null && echo fits || echo full",
        ],
        mounts=[
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
            {
                "destination": "/scratch",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["size=1m", "mode=710", "nosuid", "noexec"],
            },
        ],
    )
    line, mode, fits = run_out(rt, b, cid).splitlines()
    entry = mountinfo(line)["/scratch"]
    assert entry["fstype"] == "tmpfs"
    assert {"nosuid", "noexec"} <= entry["options"]
    assert {"size=1024k", "mode=710"} <= entry["super"]
    assert mode == "710"
    assert fits == "full"


def test_overlay_mount(rt, bundle, cid, tmp_path):
    lower, upper, work = (tmp_path / n for n in ("lower", "upper", "work"))
    for d in (lower, upper, work):
        d.mkdir()
    (lower / "from-lower").write_text("lower\n")
    b = bundle(
        ["sh", "-c", "cat /merged/from-lower; echo new > /merged/made-inside; ls /merged"],
        mounts=[
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/merged",
                "type": "overlay",
                "source": "overlay",
                "options": [f"lowerdir={lower}", f"upperdir={upper}", f"workdir={work}"],
            },
        ],
    )
    out = run_out(rt, b, cid).split()
    assert out == ["lower", "from-lower", "made-inside"]
    assert (upper / "made-inside").read_text() == "new\n"
    assert not (lower / "made-inside").exists()


def test_cgroup_v1_mount_with_and_without_cgroup_namespace(rt, bundle, cid, cgroup_parent):
    script = "grep ' /sys/fs/cgroup/memory ' /proc/self/mountinfo"
    b = bundle(["sh", "-c", script])
    plain = mountinfo(run_out(rt, b, cid))["/sys/fs/cgroup/memory"]
    # Without a cgroup namespace: a bind of the container's own cgroup.
    assert plain["root"] == f"{cgroup_parent}/{cid}"
    b = bundle(
        ["sh", "-c", script + "; grep memory /proc/self/cgroup"],
        linux={
            "namespaces": [*DEFAULT_NS, {"type": "cgroup"}],
            "cgroupsPath": f"{cgroup_parent}/{cid}-ns",
        },
    )
    line, own = run_out(rt, b, cid + "-ns").splitlines()
    # In a cgroup namespace: a fresh mount whose root is the namespace's root.
    assert mountinfo(line)["/sys/fs/cgroup/memory"]["root"] == "/"
    assert own.endswith(":memory:/")


# ----------------------------------------------------------------------------- propagation


@pytest.fixture
def shared_dir(tmp_path, host_mounts) -> Path:
    """A directory of ours that is a shared mount on the host."""
    d: Path = tmp_path / "shared"
    (d / "sub").mkdir(parents=True)
    host_mounts("--bind", str(d), str(d))
    host_mounts("--make-rshared", str(d))
    return d


def container_mountinfo(pid: int) -> dict[str, dict[str, Any]]:
    return mountinfo(Path(f"/proc/{pid}/mountinfo").read_text())


def test_bind_mount_propagation_flags(rt, bundle, cid, shared_dir, host_mounts):
    mounts: list[dict[str, Any]] = [{"destination": "/proc", "type": "proc", "source": "proc"}]
    for name, prop in (("s", "rshared"), ("l", "rslave"), ("p", "rprivate")):
        mounts.append(
            {
                "destination": f"/mnt/{name}",
                "type": "bind",
                "source": str(shared_dir),
                "options": ["rbind", prop],
            }
        )
    b = bundle(["sleep", "60"], mounts=mounts)
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    table = container_mountinfo(pid)
    assert any(o.startswith("shared:") for o in table["/mnt/s"]["optional"])
    assert any(o.startswith("master:") for o in table["/mnt/l"]["optional"])
    assert table["/mnt/p"]["optional"] == []
    host_mounts("-t", "tmpfs", "bh-cov-prop", str(shared_dir / "sub"))
    assert wait_for(lambda: "/mnt/l/sub" in container_mountinfo(pid))
    table = container_mountinfo(pid)
    assert "/mnt/s/sub" in table  # a slave of the host as well: it receives
    assert "/mnt/p/sub" not in table


@pytest.fixture
def shared_bundle(bundle, host_mounts) -> Callable[..., Path]:
    """A bundle whose directory is a shared mount on the host (its rootfs below it)."""

    def make(*args: Any, **kwargs: Any) -> Path:
        b: Path = bundle(*args, **kwargs)
        (b / "rootfs" / "mnt" / "sub").mkdir(parents=True, exist_ok=True)
        host_mounts("--bind", str(b), str(b))
        host_mounts("--make-rshared", str(b))
        return b

    return make


@pytest.mark.parametrize("propagation", [None, "rslave"], ids=["default", "rslave"])
def test_rootfs_propagation_slave_receives_host_mounts(
    rt, shared_bundle, cid, host_mounts, propagation
):
    """runc's default (rslave): a mount the host makes under the rootfs appears inside."""
    linux = {} if propagation is None else {"rootfsPropagation": propagation}
    b = shared_bundle(["sleep", "60"], linux=linux)
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    assert any(o.startswith("master:") for o in container_mountinfo(pid)["/"]["optional"])
    host_mounts("-t", "tmpfs", "bh-cov-rootprop", str(b / "rootfs" / "mnt" / "sub"))
    assert wait_for(lambda: "/mnt/sub" in container_mountinfo(pid), timeout=1)


def test_rootfs_propagation_private_receives_nothing(rt, shared_bundle, cid, host_mounts):
    b = shared_bundle(["sleep", "60"], linux={"rootfsPropagation": "rprivate"})
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    assert container_mountinfo(pid)["/"]["optional"] == []
    host_mounts("-t", "tmpfs", "bh-cov-rootprop", str(b / "rootfs" / "mnt" / "sub"))
    time.sleep(0.2)
    assert "/mnt/sub" not in container_mountinfo(pid)


@pytest.mark.parametrize("propagation", ["shared", "rshared"])
def test_rootfs_propagation_shared(rt, bundle, cid, propagation):
    b = bundle(
        ["cat", "/proc/self/mountinfo"],
        linux={"rootfsPropagation": propagation},
    )
    optional = mountinfo(run_out(rt, b, cid))["/"]["optional"]
    assert any(o.startswith("shared:") for o in optional)


# ----------------------------------------------------------------------------- the root itself


def test_readonly_root(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "touch /newfile 2>&1; touch /dev/shm/ok && echo shm-ok; cat /proc/self/mountinfo",
        ],
        root={"path": "rootfs", "readonly": True},
    )
    err, shm, *table = run_out(rt, b, cid).splitlines()
    assert "Read-only file system" in err
    assert shm == "shm-ok"
    assert "ro" in mountinfo("\n".join(table))["/"]["options"]


NS_ROOT_SCRIPT = r"""
import json, os, sys
from bulkhead.linux import namespaces as ns
from bulkhead.linux.mount import MNT_DETACH, MS_PRIVATE, MS_REC, make_propagation, umount2

pid = int(sys.argv[1])
proc = os.open("/proc", os.O_DIRECTORY | os.O_RDONLY)
fd = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY)
ns.setns(fd, ns.CLONE_NEWNS)        # the container's mount namespace ...
ns.unshare(ns.CLONE_NEWNS)          # ... a private copy of it: we change only the copy
make_propagation("/", MS_PRIVATE | MS_REC)
umount2("/", MNT_DETACH)            # take the container's root away: what is below?
mine = os.open(f"{os.getpid()}/ns/mnt", os.O_RDONLY, dir_fd=proc)
ns.setns(mine, ns.CLONE_NEWNS)      # back to the namespace's root, on whatever is mounted there
print(json.dumps(sorted(os.listdir("/"))))
"""


def below_container_root(pid: int, tmp_path: Path) -> list[str]:
    """What the container's mount namespace holds under the container's ``/``."""
    script = tmp_path / "ns_root.py"
    script.write_text(NS_ROOT_SCRIPT)
    proc = subprocess.run(
        [sys.executable, str(script), str(pid)], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr
    listing: list[str] = json.loads(proc.stdout)
    return listing


def test_pivot_root_leaves_the_host_root_behind(rt, bundle, cid, tmp_path):
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    below = below_container_root(rt.state(cid)["pid"], tmp_path)
    assert "work" not in below and set(below) != set(os.listdir("/"))


def test_no_pivot_chroots_on_top_of_the_host_root(rt, bundle, cid, tmp_path):
    b = bundle(["sh", "-c", "ls /; sleep 60"])
    rt("run", "-d", "--no-pivot", "--bundle", str(b), cid)
    below = below_container_root(rt.state(cid)["pid"], tmp_path)
    # The host's root is still in the namespace, under the container's.
    assert set(os.listdir("/")) - {"proc", "sys"} <= set(below)


def test_no_pivot_container_still_sees_only_its_rootfs(rt, bundle, cid):
    b = bundle(["ls", "/"])
    out = run_out(rt, b, cid, "--no-pivot").split()
    assert "bin" in out and "work" not in out


# ----------------------------------------------------------------------------- /dev


def test_default_devices_and_dev_symlinks(rt, bundle, cid):
    names = ("null", "zero", "full", "random", "urandom", "tty")
    b = bundle(
        [
            "sh",
            "-c",
            " ".join(f"stat -c '%n %F %t %T %a %u %g' /dev/{n};" for n in names)
            + " for l in fd stdin stdout stderr ptmx; do echo $l $(readlink /dev/$l); done;"
            " head -c 4 /dev/zero | od -An -tx1; echo gone > /dev/null && echo null-ok",
        ]
    )
    lines = run_out(rt, b, cid).splitlines()
    stats = {line.split()[0]: line.split()[1:] for line in lines[: len(names)]}
    want = {"null": (1, 3), "zero": (1, 5), "full": (1, 7), "random": (1, 8)}
    want |= {"urandom": (1, 9), "tty": (5, 0)}
    for name, (major, minor) in want.items():
        fields = stats[f"/dev/{name}"]
        assert fields[:3] == ["character", "special", "file"], name
        assert [int(fields[3], 16), int(fields[4], 16)] == [major, minor], name
        assert fields[5:] == ["666", "0", "0"], name
    links = dict(line.split() for line in lines[len(names) : len(names) + 5])
    assert links == {
        "fd": "/proc/self/fd",
        "stdin": "/proc/self/fd/0",
        "stdout": "/proc/self/fd/1",
        "stderr": "/proc/self/fd/2",
        "ptmx": "pts/ptmx",
    }
    assert lines[-2].split() == ["00", "00", "00", "00"]
    assert lines[-1] == "null-ok"


SPEC_DEVICES = [
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
    {"path": "/dev/myzero", "type": "c", "major": 1, "minor": 5, "fileMode": 0o666},
]


def test_spec_devices_are_made(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "stat -c '%n %F %t %T %a %u %g' /dev/mydev /dev/net/tun;"
            " stat -c '%n %F' /dev/myfifo; head -c 2 /dev/myzero | od -An -tx1",
        ],
        linux={"devices": SPEC_DEVICES},
    )
    lines = run_out(rt, b, cid).splitlines()
    assert lines[0].split()[4:] == ["1", "5", "640", "1000", "44"]
    assert lines[0].startswith("/dev/mydev character special file ")
    assert lines[1].split()[:6] == ["/dev/net/tun", "character", "special", "file", "a", "c8"]
    assert lines[2] == "/dev/myfifo fifo"
    assert lines[3].split() == ["00", "00"]


def test_spec_devices_are_bind_mounted_in_a_user_namespace(rt, bundle, cid):
    """mknod is refused in a user namespace: the host's node is bound onto an empty file."""
    b = bundle(
        [
            "sh",
            "-c",
            "stat -c '%n %F %t %T' /dev/net/tun; grep ' /dev/net/tun ' /proc/self/mountinfo",
        ],
        linux={
            "namespaces": [*DEFAULT_NS, {"type": "user"}],
            "uidMappings": USER_MAP,
            "gidMappings": USER_MAP,
            "devices": [{"path": "/dev/net/tun", "type": "c", "major": 10, "minor": 200}],
        },
    )
    stat_line, mount_line = run_out(rt, b, cid).splitlines()
    assert stat_line.split() == ["/dev/net/tun", "character", "special", "file", "a", "c8"]
    entry = mountinfo(mount_line)["/dev/net/tun"]
    assert entry["root"] == "/net/tun" and entry["fstype"] == "devtmpfs"


def test_console_for_a_terminal_container(rt, bundle, cid, tmp_path):
    """/dev/console is the container's pty (the slave of the master sent to the socket)."""
    import socket
    import threading

    sock_path = tmp_path / "console.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    got: list[int] = []

    def accept() -> None:
        conn, _ = server.accept()
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        got.extend(fds)
        conn.close()

    t = threading.Thread(target=accept)
    t.start()
    try:
        b = bundle(
            [
                "sh",
                "-c",
                "stat -c '%t:%T' /dev/console; stat -L -c '%t:%T' /proc/self/fd/0;"
                " grep ' /dev/console ' /proc/self/mountinfo",
            ],
            terminal=True,
        )
        rt("run", "-d", "--console-socket", str(sock_path), "--bundle", str(b), cid)
        t.join(10)
        assert got, "no pty master received"
        data = b""
        while True:
            try:
                chunk = os.read(got[0], 4096)
            except OSError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        for fd in got:
            os.close(fd)
        server.close()
    console, stdin, mount_line = data.decode().replace("\r", "").splitlines()[:3]
    assert console == stdin
    assert int(console.split(":")[0], 16) == 136  # a devpts pty
    assert mountinfo(mount_line)["/dev/console"]["fstype"] == "devpts"


def test_no_console_without_terminal(rt, bundle, cid):
    b = bundle(["sh", "-c", "test -e /dev/console && echo yes || echo no"])
    assert run_out(rt, b, cid).strip() == "no"


# ----------------------------------------------------------------------------- masked, read-only


def test_default_masked_paths(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "wc -c < /proc/keys; wc -c < /proc/timer_list; ls /sys/firmware | wc -l;"
            " ls /proc/acpi | wc -l; touch /sys/firmware/x 2>/dev/null && echo w || echo ro;"
            " stat -c '%t:%T' /proc/keys",
        ]
    )
    assert run_out(rt, b, cid).split() == ["0", "0", "0", "0", "ro", "1:3"]


def test_custom_masked_paths(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "cat /etc/secret | wc -c; ls /secretdir | wc -l; echo hi > /etc/secret && echo null;"
            " touch /secretdir/x 2>/dev/null && echo w || echo ro",
        ],
        linux={"maskedPaths": ["/etc/secret", "/secretdir", "/does/not/exist"]},
    )
    (b / "rootfs" / "etc" / "secret").write_text("top secret\n")
    (b / "rootfs" / "secretdir").mkdir()
    (b / "rootfs" / "secretdir" / "inside").write_text("also secret\n")
    assert run_out(rt, b, cid).split() == ["0", "0", "null", "ro"]
    assert (b / "rootfs" / "etc" / "secret").read_text() == "top secret\n"


def test_default_readonly_paths(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "{ echo 1 > /proc/sys/net/ipv4/ip_forward; } 2>&1; ls /proc/sys/net/ipv4/ip_forward;"
            " grep -E ' /proc/(sys|bus|fs|irq) ' /proc/self/mountinfo",
        ]
    )
    lines = run_out(rt, b, cid).splitlines()
    assert "Read-only file system" in lines[0]
    table = mountinfo("\n".join(lines[2:]))
    for path in ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"):
        assert "ro" in table[path]["options"], path


def test_custom_readonly_paths(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "touch /etc/new 2>/dev/null && echo w || echo ro; touch /root/ok && echo w || echo ro",
        ],
        linux={"readonlyPaths": ["/etc", "/no/such/path"]},
    )
    assert run_out(rt, b, cid).split() == ["ro", "w"]


def test_masked_and_readonly_paths_can_be_empty(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "grep -c -E ' /proc/(sys|kcore|keys|acpi) ' /proc/self/mountinfo"],
        linux={"maskedPaths": [], "readonlyPaths": []},
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.stdout.strip() == "0"


# ----------------------------------------------------------------------------- sysctl


def test_sysctl_in_the_ipc_namespace(rt, bundle, cid):
    b = bundle(["cat", "/proc/sys/kernel/msgmax"], linux={"sysctl": {"kernel.msgmax": "4242"}})
    assert run_out(rt, b, cid).strip() == "4242"
    assert Path("/proc/sys/kernel/msgmax").read_text().strip() != "4242"


def test_host_wide_sysctl_is_refused(rt, bundle, cid):
    """vm.* is not namespaced: writing it from a container would change the host."""
    current = Path("/proc/sys/vm/swappiness").read_text().strip()
    b = bundle(["true"], linux={"sysctl": {"vm.swappiness": current}})
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "vm.swappiness" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
