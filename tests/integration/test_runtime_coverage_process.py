"""The container's process through the real CLI: capabilities, seccomp, terminal, fds, LSMs, CVEs.

Complements ``test_runtime_process.py`` with the cases it leaves open: the
five capability sets told apart, every seccomp action and argument operator,
``defaultErrnoRet``, flags, the notify listener, a foreground terminal,
LISTEN_FDS, and the CVE-2024-21626 working-directory escape.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import json
import os
import select
import socket
import struct
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.integration.runtime_helpers import RUNTIME, RuntimeCLI, cgroup_dirs

CAP = {"CAP_CHOWN": 0, "CAP_KILL": 5, "CAP_SETUID": 7, "CAP_NET_RAW": 13, "CAP_SYS_ADMIN": 21}


def run_out(rt: RuntimeCLI, b: Path, cid: str) -> str:
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def cap_fields(status: str) -> dict[str, int]:
    return {
        line.split(":")[0]: int(line.split()[1], 16)
        for line in status.splitlines()
        if line.startswith("Cap")
    }


def mask(*names: str) -> int:
    bits = 0
    for name in names:
        bits |= 1 << CAP[name]
    return bits


# ----------------------------------------------------------------------------- capabilities

DISTINCT_CAPS = {
    "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW", "CAP_SETUID"],
    "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
    "effective": ["CAP_CHOWN", "CAP_KILL"],
    "inheritable": ["CAP_CHOWN", "CAP_NET_RAW"],
    "ambient": ["CAP_CHOWN"],
}


def test_five_capability_sets_for_a_non_root_user(rt, bundle, cid):
    """After execve a non-root program keeps bounding, inheritable and (as P and E) ambient."""
    b = bundle(
        ["cat", "/proc/self/status"],
        process={"user": {"uid": 1000, "gid": 1000}, "capabilities": DISTINCT_CAPS},
    )
    got = cap_fields(run_out(rt, b, cid))
    assert got == {
        "CapInh": mask(*DISTINCT_CAPS["inheritable"]),
        "CapPrm": mask(*DISTINCT_CAPS["ambient"]),
        "CapEff": mask(*DISTINCT_CAPS["ambient"]),
        "CapBnd": mask(*DISTINCT_CAPS["bounding"]),
        "CapAmb": mask(*DISTINCT_CAPS["ambient"]),
    }


def test_permitted_set_limits_root_under_no_new_privileges(rt, bundle, cid):
    """Root execs with bounding|inheritable, cut to the permitted set by no_new_privs (as runc)."""
    b = bundle(
        ["cat", "/proc/self/status"],
        process={"noNewPrivileges": True, "capabilities": DISTINCT_CAPS},
    )
    got = cap_fields(run_out(rt, b, cid))
    assert got["CapPrm"] == got["CapEff"] == mask(*DISTINCT_CAPS["permitted"])
    assert got["CapBnd"] == mask(*DISTINCT_CAPS["bounding"])


def test_effective_outside_permitted_is_refused(rt, bundle, cid, cgroup_parent):
    """The effective set is applied (capset refuses E not within P, as for runc)."""
    b = bundle(
        ["true"],
        process={
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL"],
                "permitted": ["CAP_CHOWN"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
            }
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "Operation not permitted" in proc.stderr
    assert not (rt.root / cid).exists()
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")


# ----------------------------------------------------------------------------- seccomp


def seccomp_bundle(bundle, args: list[str], seccomp: dict[str, Any], **process: Any) -> Path:
    path: Path = bundle(args, linux={"seccomp": seccomp}, process=process or None)
    return path


@pytest.mark.parametrize(
    ("errno_ret", "message"),
    [(None, "Operation not permitted"), (13, "Permission denied"), (18, "cross-device link")],
)
def test_seccomp_errno_ret_is_the_errno_seen(rt, bundle, cid, errno_ret, message):
    rule: dict[str, Any] = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
    if errno_ret is not None:
        rule["errnoRet"] = errno_ret
    b = bundle(
        ["mkdir", "/tmp/x"],
        linux={"seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}},
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert message in proc.stderr


def all_syscall_names() -> list[str]:
    """Every syscall libseccomp knows for this machine."""
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_syscall_resolve_num_arch.restype = ctypes.c_void_p
    libc = ctypes.CDLL(None)
    names = []
    for nr in range(1024):
        p = lib.seccomp_syscall_resolve_num_arch(0, nr)
        if p:
            names.append(ctypes.string_at(p).decode())
            libc.free(ctypes.c_void_p(p))
    return names


def allowed_but_mkdir() -> list[str]:
    return [n for n in all_syscall_names() if n not in ("mkdir", "mkdirat")]


def test_seccomp_default_action_with_default_errno_ret(rt, bundle, cid):
    """defaultAction ERRNO with defaultErrnoRet 95: everything not allowed fails with EOPNOTSUPP."""
    allowed = allowed_but_mkdir()
    b = bundle(
        ["sh", "-c", "echo before; mkdir /tmp/x; echo rc=$?"],
        linux={
            "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO",
                "defaultErrnoRet": 95,
                "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
                "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}],
            }
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.stdout.split() == ["before", "rc=1"]
    assert "Operation not supported" in proc.stderr


@pytest.mark.parametrize(
    ("action", "exit_code", "message"),
    [
        ("SCMP_ACT_KILL", 128 + 31, ""),
        ("SCMP_ACT_KILL_THREAD", 128 + 31, ""),
        ("SCMP_ACT_KILL_PROCESS", 128 + 31, ""),
        ("SCMP_ACT_TRAP", 128 + 31, ""),
        ("SCMP_ACT_TRACE", 1, "Function not implemented"),  # no tracer: ENOSYS
        ("SCMP_ACT_LOG", 0, ""),
        ("SCMP_ACT_ALLOW", 0, ""),
    ],
)
def test_seccomp_each_action(rt, bundle, cid, action, exit_code, message):
    b = bundle(
        ["mkdir", "/tmp/made"],
        linux={
            "seccomp": {
                "defaultAction": "SCMP_ACT_ERRNO"
                if action == "SCMP_ACT_ALLOW"
                else "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": action},
                    *(
                        [{"names": allowed_but_mkdir(), "action": "SCMP_ACT_ALLOW"}]
                        if action == "SCMP_ACT_ALLOW"
                        else []
                    ),
                ],
            }
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == exit_code, proc.stderr
    assert message in proc.stderr


OPERATOR_CASES = [
    ("SCMP_CMP_NE", 3, None, lambda p: p != 3),
    ("SCMP_CMP_LT", 3, None, lambda p: p < 3),
    ("SCMP_CMP_LE", 3, None, lambda p: p <= 3),
    ("SCMP_CMP_EQ", 3, None, lambda p: p == 3),
    ("SCMP_CMP_GE", 3, None, lambda p: p >= 3),
    ("SCMP_CMP_GT", 3, None, lambda p: p > 3),
    ("SCMP_CMP_MASKED_EQ", 6, 2, lambda p: p & 6 == 2),
]
PIDS = [1, 2, 3, 4, 5, 10]


@pytest.mark.parametrize(
    ("op", "value", "value_two", "blocked"), OPERATOR_CASES, ids=[c[0] for c in OPERATOR_CASES]
)
def test_seccomp_argument_operators(rt, bundle, cid, op, value, value_two, blocked):
    """kill(pid, 0) is refused with EOPNOTSUPP exactly for the pids the condition matches."""
    arg: dict[str, Any] = {"index": 0, "value": value, "op": op}
    if value_two is not None:
        arg["valueTwo"] = value_two
    script = "; ".join(
        f"kill -0 {p} 2>/tmp/e; echo {p} $(grep -c 'not supported' /tmp/e)" for p in PIDS
    )
    b = bundle(
        ["sh", "-c", script],
        linux={
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 95, "args": [arg]}
                ],
            }
        },
    )
    got = dict(line.split() for line in run_out(rt, b, cid).splitlines())
    assert got == {str(p): "1" if blocked(p) else "0" for p in PIDS}


def test_seccomp_conditions_on_two_arguments_must_all_hold(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "trap '' USR1; for s in 0 USR1; do kill -$s 1 2>/tmp/e; echo $s $(grep -c 'not supp' /tmp/e); done",
        ],
        linux={
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {
                        "names": ["kill"],
                        "action": "SCMP_ACT_ERRNO",
                        "errnoRet": 95,
                        "args": [
                            {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                            {"index": 1, "value": 10, "op": "SCMP_CMP_EQ"},
                        ],
                    }
                ],
            }
        },
    )
    assert run_out(rt, b, cid).split() == ["0", "0", "USR1", "1"]


def test_seccomp_flags_are_accepted(rt, bundle, cid):
    b = bundle(
        ["mkdir", "/tmp/x"],
        linux={
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
            }
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1 and "Operation not permitted" in proc.stderr


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("flags", ["SECCOMP_FILTER_FLAG_BOGUS"]),
        ("architectures", ["SCMP_ARCH_BOGUS"]),
        ("defaultAction", "SCMP_ACT_BOGUS"),
    ],
)
def test_seccomp_unknown_names_are_a_clear_error(rt, bundle, cid, cgroup_parent, field, value):
    seccomp: dict[str, Any] = {"defaultAction": "SCMP_ACT_ALLOW", field: value}
    b = bundle(["true"], linux={"seccomp": seccomp})
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "BOGUS" in lines[0]
    assert not (rt.root / cid).exists()
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")


def test_seccomp_without_no_new_privileges(rt, bundle, cid):
    """Loaded while the init still has CAP_SYS_ADMIN; the program runs without no_new_privs."""
    b = bundle(
        ["sh", "-c", "grep NoNewPrivs /proc/self/status; mkdir /tmp/x"],
        process={"noNewPrivileges": False},
        linux={
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
            }
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.stdout.split() == ["NoNewPrivs:", "0"]
    assert proc.returncode == 1 and "Operation not permitted" in proc.stderr


NOTIF = struct.Struct("=QII" + "IIQ6Q")  # struct seccomp_notif
NOTIF_RESP = struct.Struct("=QqiI")  # struct seccomp_notif_resp
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101


@pytest.mark.parametrize("nnp", [True, False], ids=["nnp", "no-nnp"])
def test_seccomp_notify_sends_the_listener_to_listener_path(rt, bundle, cid, tmp_path, nnp):
    """As runc: the state (fds ["seccompFd"]) and the listener go to listenerPath; the agent answers."""
    sock_path = tmp_path / "agent.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    server.settimeout(0.05)
    got: dict[str, Any] = {}
    stop = threading.Event()

    def agent() -> None:
        try:
            while True:
                try:
                    conn, _ = server.accept()
                    break
                except TimeoutError:
                    if stop.is_set():
                        return
            conn.settimeout(10)
            msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
            conn.close()
            got["msg"] = json.loads(msg)
            listener = fds[0]
            ready, _, _ = select.select([listener], [], [], 10)
            if ready:
                buf = bytearray(NOTIF.size)
                fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
                notif_id = NOTIF.unpack(buf)[0]
                resp = bytearray(NOTIF_RESP.pack(notif_id, 0, -errno.EXDEV, 0))
                fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp, True)
                got["answered"] = True
            os.close(listener)
        except OSError as exc:
            got["error"] = exc

    t = threading.Thread(target=agent)
    t.start()
    try:
        b = bundle(
            ["mkdir", "/tmp/x"],
            process={"noNewPrivileges": nnp},
            linux={
                "seccomp": {
                    "defaultAction": "SCMP_ACT_ALLOW",
                    "listenerPath": str(sock_path),
                    "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
                }
            },
        )
        proc = rt("run", "--bundle", str(b), cid, check=False, timeout=30)
    finally:
        stop.set()
        t.join(15)
        server.close()
    assert got.get("answered"), (proc.stderr, got)
    assert got["msg"]["fds"] == ["seccompFd"]
    assert got["msg"]["state"]["id"] == cid
    assert proc.returncode == 1 and "cross-device link" in proc.stderr


# ----------------------------------------------------------------------------- terminal


def test_run_in_the_foreground_relays_the_terminal(rt, bundle, cid):
    """Without a console socket ``run`` keeps the pty master and copies its output."""
    b = bundle(["sh", "-c", "tty; test -t 0 && test -t 1 && echo both-ttys"], terminal=True)
    out = run_out(rt, b, cid).replace("\r", "").splitlines()
    assert out == ["/dev/pts/0", "both-ttys"]


def test_terminal_without_console_socket_when_detached_is_refused(rt, bundle, cid, cgroup_parent):
    b = bundle(["true"], terminal=True)
    proc = rt("run", "-d", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "console socket" in proc.stderr
    assert not (rt.root / cid).exists()
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")


def test_console_socket_without_terminal_is_refused(rt, bundle, cid, tmp_path):
    sock_path = tmp_path / "c.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    try:
        b = bundle(["true"])
        proc = rt(
            "create", "--console-socket", str(sock_path), "--bundle", str(b), cid, check=False
        )
    finally:
        server.close()
    assert proc.returncode == 1
    assert "console socket" in proc.stderr


# ----------------------------------------------------------------------------- fds


def test_listen_fds_and_preserve_fds(rt, bundle, cid, tmp_path):
    """LISTEN_FDS=2 from our caller: fds 3-4 pass with LISTEN_FDS=2, LISTEN_PID=1; --preserve-fds 1 adds 5."""
    files = []
    for n in (3, 4, 5):
        f = tmp_path / f"fd{n}"
        f.write_text(f"content-{n}\n")
        files.append(f)
    b = bundle(
        [
            "sh",
            "-c",
            "cat <&3; cat <&4; cat <&5; echo $LISTEN_FDS $LISTEN_PID; ls /proc/self/fd | wc -l",
        ]
    )
    cmd = (
        "export LISTEN_PID=$$ LISTEN_FDS=2; "
        f'exec "{RUNTIME}" --root "{rt.root}" run --preserve-fds 1 --bundle "{b}" {cid}'
        f' 3<"{files[0]}" 4<"{files[1]}" 5<"{files[2]}"'
    )
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == ["content-3", "content-4", "content-5"]
    assert lines[3] == "2 1"
    assert lines[4] == "7"  # 0-5 and ls's own directory fd


def test_without_listen_fds_no_fd_and_no_variable(rt, bundle, cid, tmp_path):
    f = tmp_path / "fd3"
    f.write_text("x\n")
    b = bundle(["sh", "-c", "echo [$LISTEN_FDS]; ls /proc/self/fd | wc -l"])
    cmd = f'exec "{RUNTIME}" --root "{rt.root}" run --bundle "{b}" {cid} 3<"{f}" 7<"{f}"'
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["[]", "4"]  # 0-2 and ls's own: inherited 3 and 7 are closed


def test_exec_preserve_fds_and_no_leak(rt, bundle, cid, tmp_path):
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    f = tmp_path / "fd3"
    f.write_text("via-exec\n")
    base = f'"{RUNTIME}" --root "{rt.root}" exec'
    proc = subprocess.run(
        ["sh", "-c", f'exec {base} --preserve-fds 1 {cid} sh -c "cat <&3" 3<"{f}"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout == "via-exec\n", proc.stderr
    proc = subprocess.run(
        ["sh", "-c", f'exec {base} {cid} ls /proc/self/fd 3<"{f}" 9<"{f}"'],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.stdout.split() == ["0", "1", "2", "3"], proc.stderr  # 3: ls's own


# ----------------------------------------------------------------------------- CVE-2024-21626


@pytest.mark.parametrize("fd", range(3, 13))
def test_cwd_through_a_leaked_fd_never_reaches_the_host(rt, bundle, cid, tmp_path, fd):
    """cwd /proc/self/fd/N: no fd of the runtime (nor one it inherited) is a way out of the root."""
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "host-marker").write_text("outside\n")
    b = bundle(["sh", "-c", "pwd; ls; ls ..; cat ../../../../../../etc/hostname"])
    spec = json.loads((b / "config.json").read_text())
    spec["process"]["cwd"] = f"/proc/self/fd/{fd}"
    (b / "config.json").write_text(json.dumps(spec))
    cmd = f'exec "{RUNTIME}" --root "{rt.root}" run --bundle "{b}" {cid} 7<"{host_dir}"'
    proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
    assert "host-marker" not in proc.stdout
    assert str(tmp_path) not in proc.stdout
    hostname = Path("/etc/hostname").read_text().strip() if Path("/etc/hostname").exists() else ""
    if hostname and hostname != "busybox":
        assert hostname not in proc.stdout.split()
    assert proc.returncode != 0  # /proc/self/fd/N is never a directory of the container


def test_exec_cwd_through_a_leaked_fd_is_refused(rt, bundle, cid, tmp_path):
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "host-marker").write_text("outside\n")
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    for fd in range(3, 13):
        cmd = (
            f'exec "{RUNTIME}" --root "{rt.root}" exec --cwd /proc/self/fd/{fd} {cid} ls'
            f' 7<"{host_dir}"'
        )
        proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=60)
        assert "host-marker" not in proc.stdout, fd
        assert proc.returncode != 0, (fd, proc.stdout)


# ----------------------------------------------------------------------------- LSMs


def test_selinux_label_requested_but_missing(rt, bundle, cid, cgroup_parent):
    try:
        enabled = "selinux" in Path("/sys/kernel/security/lsm").read_text()
    except OSError:
        enabled = False
    if enabled and Path("/sys/fs/selinux/enforce").exists():
        pytest.skip("SELinux is enabled here")
    b = bundle(["true"], process={"selinuxLabel": "system_u:system_r:container_t:s0:c1,c2"})
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "SELinux" in lines[0]
    assert not (rt.root / cid).exists()
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")


def test_exec_apparmor_and_label_requested_but_missing(rt, bundle, cid):
    if Path("/sys/kernel/security/apparmor").exists():
        pytest.skip("AppArmor is enabled here")
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    proc = rt("exec", "--apparmor", "docker-default", cid, "true", check=False)
    assert proc.returncode == 1 and "AppArmor" in proc.stderr
    proc = rt(
        "exec", "--process-label", "system_u:system_r:container_t:s0", cid, "true", check=False
    )
    assert proc.returncode == 1 and "SELinux" in proc.stderr


# ----------------------------------------------------------------------------- rlimits, misc


def test_several_rlimits(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "ulimit -c; ulimit -Hc; ulimit -s; ulimit -n"],
        process={
            "rlimits": [
                {"type": "RLIMIT_CORE", "soft": 1024 * 1024, "hard": 2 * 1024 * 1024},
                {"type": "RLIMIT_STACK", "soft": 4 * 1024 * 1024, "hard": 8 * 1024 * 1024},
                {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 200},
            ]
        },
    )
    assert run_out(rt, b, cid).split() == ["2048", "4096", "4096", "100"]


def test_bad_rlimit_type_is_a_clear_error(rt, bundle, cid):
    b = bundle(["true"], process={"rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]})
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "RLIMIT_BOGUS" in lines[0]


def test_default_umask_and_home(rt, bundle, cid):
    b = bundle(["sh", "-c", "umask; echo $HOME"], process={"env": ["PATH=/bin"]})
    assert run_out(rt, b, cid).split() == ["0022", "/root"]


def test_process_env_is_exactly_the_spec_env(rt, bundle, cid):
    b = bundle(["env"], process={"env": ["PATH=/bin", "A=1", "B=two words"]})
    env = sorted(run_out(rt, b, cid).splitlines())
    assert env == ["A=1", "B=two words", "HOME=/root", "PATH=/bin"]


# ----------------------------------------------------------------------------- exec inherits


def test_exec_gets_the_container_seccomp_and_capabilities(rt, bundle, cid):
    b = bundle(
        ["sleep", "60"],
        linux={
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [
                    {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 18}
                ],
            }
        },
        process={"capabilities": {k: ["CAP_KILL", "CAP_CHOWN"] for k in ("bounding", "permitted")}},
    )
    rt("run", "-d", "--bundle", str(b), cid)
    proc = rt("exec", cid, "mkdir", "/tmp/x", check=False)
    assert proc.returncode == 1 and "cross-device link" in proc.stderr
    init = cap_fields(Path(f"/proc/{rt.state(cid)['pid']}/status").read_text())
    execd = cap_fields(rt("exec", cid, "cat", "/proc/self/status").stdout)
    assert execd["CapBnd"] == init["CapBnd"] == mask("CAP_KILL", "CAP_CHOWN")
