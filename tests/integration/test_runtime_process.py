"""The container's process: namespaces, user, capabilities, limits, seccomp, console, fds."""

from __future__ import annotations

import array
import os
import socket
import subprocess
import threading
import time
from pathlib import Path

from tests.integration.runtime_helpers import RUNTIME, RuntimeCLI


def run_out(rt: RuntimeCLI, b: Path, cid: str) -> str:
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def status_field(text: str, name: str) -> str:
    for line in text.splitlines():
        if line.startswith(name + ":"):
            return line.split(":", 1)[1].strip()
    raise KeyError(name)


def test_all_new_namespaces_differ_from_host(rt, bundle, cid):
    b = bundle(
        [
            "sh",
            "-c",
            "for n in mnt pid net ipc uts user cgroup time; do readlink /proc/self/ns/$n; done",
        ],
        linux={
            "namespaces": [
                {"type": t}
                for t in ("mount", "pid", "network", "ipc", "uts", "user", "cgroup", "time")
            ],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        },
    )
    # a user namespace with a mapping needs a rootfs the mapped root can read
    out = run_out(rt, b, cid).split()
    host = [
        os.readlink(f"/proc/self/ns/{n}")
        for n in ("mnt", "pid", "net", "ipc", "uts", "user", "cgroup", "time")
    ]
    assert len(out) == 8
    for mine, theirs in zip(out, host, strict=True):
        assert mine != theirs


def test_user_namespace_maps_ids(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "id -u; cat /proc/self/uid_map /proc/self/gid_map"],
        linux={
            "namespaces": [{"type": t} for t in ("mount", "pid", "ipc", "uts", "user")],
            "uidMappings": [{"containerID": 0, "hostID": 200000, "size": 1000}],
            "gidMappings": [{"containerID": 0, "hostID": 300000, "size": 1000}],
        },
    )
    lines = run_out(rt, b, cid).splitlines()
    assert lines[0] == "0"
    assert lines[1].split() == ["0", "200000", "1000"]
    assert lines[2].split() == ["0", "300000", "1000"]


def test_time_namespace_offsets(rt, bundle, cid):
    b = bundle(
        ["cat", "/proc/uptime"],
        linux={
            "namespaces": [{"type": t} for t in ("mount", "pid", "uts", "time")],
            "timeOffsets": {
                "boottime": {"secs": 86400 * 365, "nanosecs": 0},
                "monotonic": {"secs": 1000, "nanosecs": 0},
            },
        },
    )
    uptime = float(run_out(rt, b, cid).split()[0])
    host = float(Path("/proc/uptime").read_text().split()[0])
    assert uptime - host > 86400 * 364


def test_join_network_namespace_by_path(rt, bundle, cid):
    name = "bh-" + cid
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        # veth, not dummy: this kernel has no dummy driver.
        subprocess.run(
            ["ip", "-n", name, "link", "add", "bhdummy0", "type", "veth", "peer", "bhdummy1"],
            check=True,
        )
        b = bundle(
            ["cat", "/proc/net/dev"],
            linux={
                "namespaces": [
                    {"type": "mount"},
                    {"type": "pid"},
                    {"type": "uts"},
                    {"type": "network", "path": f"/run/netns/{name}"},
                ]
            },
        )
        assert "bhdummy0" in run_out(rt, b, cid)
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_hostname_domainname_and_sysctl(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "hostname; cat /proc/sys/kernel/domainname /proc/sys/net/ipv4/ip_forward"],
        hostname="h1",
        domainname="example.test",
        linux={"sysctl": {"net.ipv4.ip_forward": "1"}},
    )
    assert run_out(rt, b, cid).split() == ["h1", "example.test", "1"]


def test_user_groups_umask_cwd_env(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "id; umask; pwd; echo $FOO $HOME"],
        process={
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [29, 44], "umask": 0o027},
            "cwd": "/tmp",
            "env": ["PATH=/bin", "FOO=bar"],
        },
    )
    lines = run_out(rt, b, cid).splitlines()
    assert lines[0].startswith("uid=1000(user) gid=1000(user) groups=29(audio),44(video)")
    assert lines[1] == "0027"
    assert lines[2] == "/tmp"
    assert lines[3] == "bar /home/user"


def test_rlimits_and_oom_score_adj(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj"],
        process={
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 777}],
            "oomScoreAdj": 123,
        },
    )
    assert run_out(rt, b, cid).split() == ["512", "777", "123"]


def test_capabilities_sets(rt, bundle, cid):
    caps = ["CAP_CHOWN", "CAP_KILL"]
    b = bundle(
        ["cat", "/proc/self/status"],
        process={
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": caps,
                "ambient": caps,
            }
        },
    )
    status = run_out(rt, b, cid)
    want = f"{(1 << 0) | (1 << 5):016x}"
    for field in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert status_field(status, field) == want, field


def test_no_new_privileges(rt, bundle, cid):
    b = bundle(["cat", "/proc/self/status"], process={"noNewPrivileges": True})
    assert status_field(run_out(rt, b, cid), "NoNewPrivs") == "1"
    b = bundle(["cat", "/proc/self/status"], process={"noNewPrivileges": False})
    assert status_field(run_out(rt, b, cid + "x"), "NoNewPrivs") == "0"


def test_seccomp_errno_and_args(rt, bundle, cid):
    seccomp = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["chmod", "fchmodat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
        ],
    }
    b = bundle(
        ["sh", "-c", "mkdir /tmp/x; echo mkdir=$?; chmod 700 /tmp; echo chmod=$?"],
        linux={"seccomp": seccomp},
    )
    out = run_out(rt, b, cid)
    assert "mkdir=1" in out and "chmod=1" in out


def test_missing_executable_exit_127(rt, bundle, cid):
    b = bundle(["no-such-program"])
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 127
    # runc's text log escapes the quotes: exec: \"no-such-program\": ...
    assert 'exec: \\"no-such-program\\": executable file not found in $PATH' in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert rt("list", "-q").stdout == ""
    assert not (rt.root / cid).exists()


def test_no_fd_leaks_into_container(rt, bundle, cid):
    b = bundle(["ls", "/proc/self/fd"])
    assert run_out(rt, b, cid).split() == ["0", "1", "2", "3"]  # 3: ls's own directory fd


def test_preserve_fds_and_listen_fds(rt, bundle, cid, tmp_path):
    r, w = os.pipe()
    os.write(w, b"through-fd-3\n")
    os.close(w)
    b = bundle(["sh", "-c", "cat <&3; echo $LISTEN_FDS"])
    proc = subprocess.run(
        [RUNTIME, "--root", str(rt.root), "run", "--preserve-fds", "1", "--bundle", str(b), cid],
        pass_fds=(r, 3),  # 3 too: subprocess closes fds after preexec_fn
        capture_output=True,
        text=True,
        check=False,
        preexec_fn=lambda: os.dup2(r, 3),
    )
    os.close(r)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0] == "through-fd-3"


def test_exe_is_not_the_host_interpreter_and_not_dumpable_before_exec(rt, bundle, cid):
    """CVE-2019-5736: until exec the init is non-dumpable, and it execs through a sealed memfd.

    The container has a user namespace (host ids 200000+), so /proc/<pid>
    files of a dumpable process would belong to uid 200000; a non-dumpable
    one's belong to root. A program that re-executes /proc/self/exe from inside
    reaches the sealed trampoline, never the host's Python.
    """
    b = bundle(
        ["sleep", "30"],
        linux={
            "namespaces": [{"type": t} for t in ("mount", "pid", "ipc", "uts", "user")],
            "uidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
            "gidMappings": [{"containerID": 0, "hostID": 200000, "size": 65536}],
        },
    )
    rt("create", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    assert "python" in os.readlink(f"/proc/{pid}/exe")  # still the runtime, waiting
    assert os.stat(f"/proc/{pid}/status").st_uid == 0  # non-dumpable
    rt("start", cid)
    deadline = time.monotonic() + 5
    while "Name:\tsleep" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert os.readlink(f"/proc/{pid}/exe") == "/bin/busybox"
    assert os.stat(f"/proc/{pid}/status").st_uid == 200000  # dumpable again after exec
    rt("delete", "--force", cid)


def test_proc_self_exe_does_not_reach_the_runtime(rt, bundle, cid):
    """An exec'd ``/proc/self/exe`` (the CVE-2019-5736 entry point) is not the host's Python."""
    b = bundle(["sh", "-c", "sleep 30"])
    rt("run", "-d", "--bundle", str(b), cid)
    proc = rt("exec", cid, "/proc/self/exe", "-c", "import os; print(os.getpid())", check=False)
    assert proc.returncode != 0
    assert "python" not in proc.stdout.lower()


def test_cwd_outside_root_is_refused(rt, bundle, cid):
    b = bundle(["pwd"], process={"cwd": "/proc/self/fd/5"})
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode != 0


def test_console_socket_receives_pty_master(rt, bundle, cid, tmp_path):
    sock_path = tmp_path / "console.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(sock_path))
    server.listen(1)
    got: dict[str, object] = {}

    def accept() -> None:
        conn, _ = server.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        got["msg"], got["fd"] = msg, fds[0]
        conn.close()

    t = threading.Thread(target=accept)
    t.start()
    b = bundle(
        ["sh", "-c", "tty; echo cols=$(stty size)"],
        terminal=True,
        process={"consoleSize": {"height": 30, "width": 100}},
    )
    rt("run", "-d", "--console-socket", str(sock_path), "--bundle", str(b), cid)
    t.join(10)
    master = got["fd"]
    assert isinstance(master, int)
    data = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        data += chunk
    os.close(master)
    server.close()
    text = data.decode()
    assert "/dev/console" in text or "/dev/pts/0" in text
    assert "cols=30 100" in text


def test_exec_runs_in_container(rt, bundle, cid):
    b = bundle(["sleep", "30"], hostname="exechost")
    rt("run", "-d", "--bundle", str(b), cid)
    proc = rt(
        "exec",
        "--env",
        "X=1",
        "--cwd",
        "/tmp",
        "--user",
        "1000:1000",
        cid,
        "sh",
        "-c",
        "echo $X $(hostname) $(pwd) $(id -u):$(id -g); cat /proc/self/cgroup | head -1",
    )
    lines = proc.stdout.splitlines()
    assert lines[0] == "1 exechost /tmp 1000:1000"
    assert rt("exec", cid, "sh", "-c", "exit 5", check=False).returncode == 5
    assert rt("exec", cid, "nonexistent", check=False).returncode == 127


def test_exec_process_file_detach_pid_file(rt, bundle, cid, tmp_path):
    import json

    b = bundle(["sleep", "30"])
    rt("run", "-d", "--bundle", str(b), cid)
    proc_json = tmp_path / "process.json"
    proc_json.write_text(
        json.dumps(
            {
                "args": ["sleep", "20"],
                "cwd": "/",
                "env": ["PATH=/bin"],
                "user": {"uid": 0, "gid": 0},
            }
        )
    )
    pid_file = tmp_path / "exec.pid"
    rt("exec", "--process", str(proc_json), "--detach", "--pid-file", str(pid_file), cid)
    pid = int(pid_file.read_text())
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x0020\x00"
    init = rt.state(cid)["pid"]
    assert os.readlink(f"/proc/{pid}/ns/pid") == os.readlink(f"/proc/{init}/ns/pid")
    assert os.readlink(f"/proc/{pid}/ns/mnt") == os.readlink(f"/proc/{init}/ns/mnt")
    ps = rt("ps", "--format", "json", cid).stdout
    assert str(pid) in ps


def test_exec_tty_requires_console_socket_when_detached(rt, bundle, cid):
    b = bundle(["sleep", "30"])
    rt("run", "-d", "--bundle", str(b), cid)
    proc = rt("exec", "-t", "-d", cid, "true", check=False)
    assert proc.returncode == 1 and "console socket" in proc.stderr
    array.array("i")  # keep import used
