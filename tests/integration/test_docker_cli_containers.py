"""The real docker CLI (28.x) driving the daemon's container and exec endpoints.

Each test gets a fresh daemon with the offline busybox image (the ``daemon``
fixture of :mod:`tests.integration.engine_fixtures`), which cleans up
containers, mounts and processes afterwards.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import tarfile
import termios
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration.engine_fixtures import DOCKER, Daemon
from tests.integration.registry_fixtures import free_port

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed"),
]


@pytest.fixture
def daemon(daemon_factory: Any) -> Daemon:
    """The shared fixture's daemon; ``BULKHEAD_TEST_RUNTIME=runc`` (or crun,
    bulkhead-runtime) runs every container of this file on that runtime."""
    runtime = os.environ.get("BULKHEAD_TEST_RUNTIME")
    made: Daemon = daemon_factory(["--default-runtime", runtime] if runtime else None)
    return made


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def run_pty(
    daemon: Daemon,
    args: list[str],
    script: list[tuple[bytes, bytes]],
    timeout: float = 30,
    size: tuple[int, int] = (24, 80),
) -> tuple[int, bytes]:
    """Run the docker CLI on a pseudo-terminal of ``size`` (rows, columns).

    ``script`` is a list of (wait for this output, then type this); the
    exit code is -9 when the CLI had to be killed at ``timeout``.
    """
    assert DOCKER is not None
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child: never returns into pytest
        try:
            fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", size[0], size[1], 0, 0))
            os.execvpe(DOCKER, [DOCKER, *args], daemon.env())
        finally:
            os._exit(127)
    out = b""
    seen = 0  # output already matched by earlier steps
    steps = list(script)
    deadline = time.monotonic() + timeout
    killed = False
    try:
        while True:
            if steps and steps[0][0] in out[seen:]:
                seen = out.index(steps[0][0], seen) + len(steps[0][0])
                time.sleep(0.2)
                os.write(fd, steps.pop(0)[1])
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                killed = True
                break
            ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
            if ready:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return (-9 if killed else os.waitstatus_to_exitcode(status)), out


def test_run_rm_prints_output_and_exits_with_its_code(daemon: Daemon) -> None:
    r = daemon.docker("run", "--rm", "busybox", "echo", "hello")
    assert ok(r) == "hello\n"
    r = daemon.docker("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3
    assert r.stdout == "out\n"
    assert r.stderr == "err\n"
    assert ok(daemon.docker("ps", "-aq")) == ""  # --rm removed them


def test_run_missing_command_is_127_and_bad_option_125(daemon: Daemon) -> None:
    r = daemon.docker("run", "--rm", "busybox", "nosuchcommand")
    assert r.returncode == 127, r.stderr
    r = daemon.docker("run", "--rm", "-m", "1k", "busybox", "true")
    assert r.returncode == 125
    assert "Minimum memory limit allowed is 6MB" in r.stderr
    r = daemon.docker("run", "--rm", "--pull", "never", "nosuchimage:latest", "true")
    assert r.returncode == 125


def test_run_t_without_i_still_streams_output(daemon: Daemon) -> None:
    # the CLI half-closes at once when stdin is not attached: output must go on
    r = daemon.docker("run", "-t", "--rm", "busybox", "sh", "-c", "sleep 0.3; echo late")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "late"


def test_unknown_image_tries_a_pull_then_fails_125(daemon: Daemon) -> None:
    # a registry on loopback that nothing serves: the pull fails at once, nothing is left
    ref = f"127.0.0.1:{free_port()}/nosuch:1"
    r = daemon.docker("run", "--rm", ref, "true")
    assert r.returncode == 125
    assert "Unable to find image" in r.stderr  # the CLI tried the pull
    assert ok(daemon.docker("ps", "-aq")) == ""
    r = daemon.docker("create", ref)
    assert r.returncode == 1 and ref in r.stderr


def test_run_stdin_pipe(daemon: Daemon) -> None:
    r = daemon.docker(
        "run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z; echo done", input="abc\n"
    )
    assert ok(r) == "ABC\ndone\n"


def test_detached_lifecycle_logs_stop_rm(daemon: Daemon) -> None:
    cid = ok(
        daemon.docker(
            "run",
            "-d",
            "--name",
            "ticker",
            "busybox",
            "sh",
            "-c",
            "trap 'echo bye; exit 0' TERM; echo started; while :; do sleep 0.1; done",
        )
    ).strip()
    assert len(cid) == 64
    deadline = time.monotonic() + 10
    while "started" not in daemon.docker("logs", "ticker").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    ps = ok(daemon.docker("ps", "--format", "{{.Names}} {{.State}}"))
    assert "ticker running" in ps
    inspect = json.loads(ok(daemon.docker("inspect", "ticker")))[0]
    assert inspect["State"]["Running"] is True
    assert inspect["Id"] == cid
    ok(daemon.docker("stop", "-t", "5", "ticker"))
    assert ok(daemon.docker("logs", "ticker")) == "started\nbye\n"
    assert (
        ok(
            daemon.docker("inspect", "-f", "{{.State.ExitCode}} {{.State.Status}}", "ticker")
        ).strip()
        == "0 exited"
    )
    r = daemon.docker("stop", "ticker")  # already stopped: 304, the CLI is happy
    assert r.returncode == 0
    ok(daemon.docker("rm", "ticker"))
    r = daemon.docker("inspect", "ticker")
    assert r.returncode == 1 and "No such" in r.stderr


def test_rm_running_needs_force_and_name_conflict(daemon: Daemon) -> None:
    ok(daemon.docker("run", "-d", "--name", "busy", "busybox", "sleep", "60"))
    r = daemon.docker("rm", "busy")
    assert r.returncode == 1
    assert "stop the container before removing or force remove" in r.stderr
    r = daemon.docker("run", "-d", "--name", "busy", "busybox", "true")
    assert r.returncode == 125 and "Conflict" in r.stderr
    ok(daemon.docker("rm", "-f", "busy"))


def test_logs_follow_tail_timestamps(daemon: Daemon) -> None:
    ok(
        daemon.docker(
            "run",
            "-d",
            "--name",
            "counter",
            "busybox",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo line$i; sleep 0.2; done",
        )
    )
    r = daemon.docker("logs", "-f", "counter", timeout=30)
    assert ok(r) == "".join(f"line{i}\n" for i in range(1, 6))
    assert ok(daemon.docker("logs", "--tail", "2", "counter")) == "line4\nline5\n"
    stamped = ok(daemon.docker("logs", "-t", "--tail", "1", "counter"))
    assert stamped.endswith(" line5\n") and stamped.startswith("20")
    assert (
        ok(daemon.docker("logs", "--since", "2000-01-01T00:00:00Z", "--tail", "1", "counter"))
        == "line5\n"
    )
    assert ok(daemon.docker("logs", "--until", "2000-01-01T00:00:00Z", "counter")) == ""


def test_wait_kill_restart(daemon: Daemon) -> None:
    loop = "trap 'exit 7' USR1; echo ready; while :; do sleep 0.1; done"
    ok(daemon.docker("run", "-d", "--name", "waiter", "busybox", "sh", "-c", loop))
    deadline = time.monotonic() + 10  # PID 1 ignores USR1 until the trap is set
    while "ready" not in daemon.docker("logs", "waiter").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    ok(daemon.docker("kill", "-s", "USR1", "waiter"))
    assert ok(daemon.docker("wait", "waiter")).strip() == "7"
    ok(daemon.docker("restart", "waiter"))
    assert ok(daemon.docker("inspect", "-f", "{{.State.Running}}", "waiter")).strip() == "true"
    ok(daemon.docker("restart", "-t", "1", "waiter"))  # sh ignores TERM as PID 1: killed after 1 s
    assert ok(daemon.docker("inspect", "-f", "{{.State.Running}}", "waiter")).strip() == "true"
    r = daemon.docker("kill", "-s", "NOPE", "waiter")
    assert r.returncode == 1 and "NOPE" in r.stderr
    ok(daemon.docker("kill", "waiter"))
    assert ok(daemon.docker("wait", "waiter")).strip() == "137"
    r = daemon.docker("kill", "waiter")
    assert r.returncode == 1 and "is not running" in r.stderr


def test_create_then_start_attach(daemon: Daemon) -> None:
    cid = ok(daemon.docker("create", "--name", "c1", "busybox", "echo", "from-create")).strip()
    assert ok(daemon.docker("inspect", "-f", "{{.State.Status}}", cid)).strip() == "created"
    assert ok(daemon.docker("start", "-a", "c1")) == "from-create\n"
    assert ok(daemon.docker("inspect", "-f", "{{.State.Status}}", cid)).strip() == "exited"


def test_attach_to_running_container(daemon: Daemon) -> None:
    # the container speaks only once told to (a file made by exec), after the attach is up
    script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; echo attached-output"
    ok(daemon.docker("run", "-d", "--name", "att", "busybox", "sh", "-c", script))
    assert DOCKER is not None
    attach = subprocess.Popen(
        [DOCKER, "attach", "att"], env=daemon.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        time.sleep(1)
        ok(daemon.docker("exec", "att", "touch", "/tmp/go"))
        out, err = attach.communicate(timeout=20)
    finally:
        if attach.poll() is None:
            attach.kill()
            attach.wait()
    assert attach.returncode == 0, err
    assert out == b"attached-output\n"


def test_exec_and_exit_codes(daemon: Daemon) -> None:
    ok(daemon.docker("run", "-d", "--name", "ex", "-e", "FROM_RUN=1", "busybox", "sleep", "60"))
    assert ok(daemon.docker("exec", "ex", "echo", "hi")) == "hi\n"
    r = daemon.docker(
        "exec", "-e", "X=2", "-w", "/tmp", "ex", "sh", "-c", "echo $FROM_RUN$X $(pwd); exit 4"
    )
    assert r.returncode == 4 and r.stdout == "12 /tmp\n"
    assert ok(daemon.docker("exec", "-u", "nobody", "ex", "id", "-u")).strip() == "65534"
    r = daemon.docker("exec", "ex", "nosuchcommand")
    assert r.returncode == 127
    r = daemon.docker("exec", "-u", "nosuchuser", "ex", "true")
    assert r.returncode == 126 and "nosuchuser" in r.stdout + r.stderr
    assert ok(daemon.docker("exec", "-i", "ex", "cat", input="piped\n")) == "piped\n"
    ok(daemon.docker("exec", "-d", "ex", "sh", "-c", "echo bg > /tmp/bg"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        r = daemon.docker("exec", "ex", "cat", "/tmp/bg")
        if r.returncode == 0:
            break
        time.sleep(0.1)
    assert r.stdout == "bg\n"
    ok(daemon.docker("stop", "-t", "0", "ex"))
    r = daemon.docker("exec", "ex", "true")
    assert r.returncode != 0 and "is not running" in r.stderr


def test_run_it_under_a_terminal(daemon: Daemon) -> None:
    code, out = run_pty(
        daemon,
        ["run", "-it", "--rm", "busybox", "sh"],
        [(b"# ", b"echo $((6*7))\r"), (b"42", b"exit 5\r")],
    )
    assert b"42" in out, out
    assert code == 5, out


def test_run_it_gets_the_terminal_size(daemon: Daemon) -> None:
    code, out = run_pty(
        daemon, ["run", "-it", "--rm", "busybox", "stty", "size"], [], size=(31, 97)
    )
    assert code == 0, out
    assert b"31 97" in out, (out, daemon.log())


def test_run_it_detach_keys_leave_it_running(daemon: Daemon) -> None:
    code, out = run_pty(
        daemon,
        ["run", "-it", "--name", "keep", "busybox", "sh"],
        [(b"# ", b"echo in-shell\r"), (b"in-shell", b"\x10\x11")],
    )
    assert code == 0, out
    assert ok(daemon.docker("inspect", "-f", "{{.State.Running}}", "keep")).strip() == "true"
    ok(daemon.docker("rm", "-f", "keep"))


def test_create_it_then_start_ai(daemon: Daemon) -> None:
    ok(daemon.docker("create", "-it", "--name", "later", "busybox", "sh"))
    code, out = run_pty(
        daemon, ["start", "-ai", "later"], [(b"# ", b"echo $((7*6))\r"), (b"42", b"exit 6\r")]
    )
    assert code == 6, out
    assert ok(daemon.docker("inspect", "-f", "{{.State.ExitCode}}", "later")).strip() == "6"


def test_exec_it_under_a_terminal(daemon: Daemon) -> None:
    ok(daemon.docker("run", "-d", "--name", "tt", "busybox", "sleep", "60"))
    code, out = run_pty(
        daemon,
        ["exec", "-it", "tt", "sh"],
        [(b"# ", b"tty; echo $((6*7))\r"), (b"42", b"exit 3\r")],
    )
    assert b"/dev/pts/" in out and b"42" in out, out
    assert code == 3, out
    code, out = run_pty(daemon, ["exec", "-it", "tt", "stty", "size"], [], size=(27, 88))
    assert code == 0 and b"27 88" in out, out


def test_rename_inspect_ps_filters(daemon: Daemon) -> None:
    ok(daemon.docker("run", "-d", "--name", "old", "-l", "team=a", "busybox", "sleep", "60"))
    ok(daemon.docker("create", "--name", "idle", "busybox", "true"))
    ok(daemon.docker("rename", "old", "new"))
    assert ok(daemon.docker("ps", "--format", "{{.Names}}")).split() == ["new"]
    names = ok(daemon.docker("ps", "-a", "--format", "{{.Names}}")).split()
    assert sorted(names) == ["idle", "new"]
    assert ok(
        daemon.docker("ps", "-a", "--filter", "label=team=a", "--format", "{{.Names}}")
    ).split() == ["new"]
    assert ok(
        daemon.docker("ps", "-a", "--filter", "status=created", "--format", "{{.Names}}")
    ).split() == ["idle"]
    r = daemon.docker("rename", "new", "idle")
    assert r.returncode == 1 and "Conflict" in r.stderr


def test_run_options_reach_the_container(daemon: Daemon) -> None:
    out = ok(
        daemon.docker(
            "run",
            "--rm",
            "-h",
            "myhost",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
            "-e",
            "A=1",
            "--read-only",
            "--tmpfs",
            "/scratch",
            "busybox",
            "sh",
            "-c",
            "echo $(hostname) $(pwd) $(id -u):$(id -g) $A; touch /x 2>/dev/null || echo ro; touch /scratch/y && echo tmpfs",
        )
    )
    assert out == "myhost /tmp 1000:1000 1\nro\ntmpfs\n"


def test_cp_export_diff_commit(daemon: Daemon, tmp_path: Path) -> None:
    ok(
        daemon.docker(
            "run", "-d", "--name", "files", "busybox", "sh", "-c", "echo data > /made; sleep 60"
        )
    )
    deadline = time.monotonic() + 5
    while (
        daemon.docker("exec", "files", "cat", "/made").returncode != 0
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    ok(daemon.docker("cp", "files:/made", str(tmp_path / "made")))
    assert (tmp_path / "made").read_text() == "data\n"
    (tmp_path / "in.txt").write_text("into\n")
    ok(daemon.docker("cp", str(tmp_path / "in.txt"), "files:/in.txt"))
    assert ok(daemon.docker("exec", "files", "cat", "/in.txt")) == "into\n"
    diff = ok(daemon.docker("diff", "files")).split("\n")
    assert "A /made" in diff and "A /in.txt" in diff
    ok(daemon.docker("export", "-o", str(tmp_path / "fs.tar"), "files"))
    with tarfile.open(tmp_path / "fs.tar") as tar:
        assert "made" in {m.name.lstrip("./") for m in tar.getmembers()}
    image = ok(daemon.docker("commit", "files", "snap:1")).strip()
    assert image.startswith("sha256:")
    assert ok(daemon.docker("run", "--rm", "snap:1", "cat", "/made")) == "data\n"


def test_after_a_daemon_kill_the_container_is_still_served(daemon: Daemon) -> None:
    ok(
        daemon.docker(
            "run",
            "-d",
            "--name",
            "survivor",
            "busybox",
            "sh",
            "-c",
            "trap 'exit 0' TERM; echo before; while :; do sleep 0.1; done",
        )
    )
    deadline = time.monotonic() + 10
    while "before" not in daemon.docker("logs", "survivor").stdout and time.monotonic() < deadline:
        time.sleep(0.05)
    daemon.restart(kill=True)
    assert ok(daemon.docker("inspect", "-f", "{{.State.Running}}", "survivor")).strip() == "true"
    assert ok(daemon.docker("exec", "survivor", "echo", "after")) == "after\n"
    assert ok(daemon.docker("logs", "survivor")) == "before\n"
    ok(daemon.docker("stop", "survivor"))
    assert ok(daemon.docker("wait", "survivor")).strip() == "0"
    ok(daemon.docker("rm", "survivor"))


def test_log_options_rotate_and_the_none_driver(daemon: Daemon) -> None:
    script = "i=1; while [ $i -le 200 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx; i=$((i+1)); done"
    ok(
        daemon.docker(
            "run",
            "--name",
            "rot",
            "--log-opt",
            "max-size=1k",
            "--log-opt",
            "max-file=2",
            "busybox",
            "sh",
            "-c",
            script,
        )
    )
    lines = ok(daemon.docker("logs", "rot")).splitlines()
    assert lines[-1].startswith("line-200-")
    assert 10 < len(lines) < 200  # older files rotated away (2 files of 1 KiB)
    r = daemon.docker("run", "--log-opt", "max-file=x", "busybox", "true")
    assert r.returncode == 125 and "max-file" in r.stderr
    ok(daemon.docker("run", "--name", "quiet", "--log-driver", "none", "busybox", "echo", "gone"))
    r = daemon.docker("logs", "quiet")
    assert r.returncode == 1 and "does not support reading" in r.stderr
    r = daemon.docker("run", "--log-driver", "syslog", "busybox", "true")
    assert r.returncode == 125 and "logging driver 'syslog' is not supported" in r.stderr


def test_security_and_resource_flags_reach_the_process(daemon: Daemon, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("FROM_FILE=yes\n# a comment\n")
    probe = (
        "grep -E '^(CapEff|NoNewPrivs)' /proc/self/status | tr -s '\\t' ' ';"
        "echo nofile $(ulimit -n); echo somaxconn $(cat /proc/sys/net/core/somaxconn);"
        "echo oom $(cat /proc/self/oom_score_adj); echo groups $(id -G);"
        "test -c /dev/mynull && echo device ok; echo env $FROM_FILE;"
        "df -k /dev/shm | tail -1 | awk '{print \"shm\", $2}'"
    )
    out = ok(daemon.docker(
        "run", "--rm", "--cap-add", "NET_ADMIN", "--cap-drop", "MKNOD",
        "--security-opt", "no-new-privileges", "--ulimit", "nofile=100:200",
        "--sysctl", "net.core.somaxconn=1024", "--oom-score-adj", "100", "--group-add", "10",
        "--device", "/dev/null:/dev/mynull:r", "--env-file", str(env_file), "--shm-size", "8m",
        "busybox", "sh", "-c", probe,
    )).splitlines()  # fmt: skip
    assert "CapEff: 00000000a00435fb" in out  # Docker's 14, + NET_ADMIN (12), - MKNOD (27)
    assert "NoNewPrivs: 1" in out
    assert "nofile 100" in out
    assert "somaxconn 1024" in out
    assert "oom 100" in out
    assert "10" in next(line for line in out if line.startswith("groups")).split()
    assert "device ok" in out
    assert "env yes" in out
    assert "shm 8192" in out


def test_init_entrypoint_and_host_namespaces(daemon: Daemon) -> None:
    assert (
        ok(daemon.docker("run", "--rm", "--init", "busybox", "cat", "/proc/1/comm"))
        == "docker-init\n"
    )
    assert ok(
        daemon.docker("run", "--rm", "--entrypoint", "echo", "busybox", "via", "entrypoint")
    ) == ("via entrypoint\n")
    assert ok(daemon.docker("run", "--rm", "--uts", "host", "busybox", "hostname")).strip() == (
        os.uname().nodename
    )
    assert (
        ok(daemon.docker("run", "--rm", "--pid", "host", "busybox", "cat", "/proc/1/comm")).strip()
        != "cat"
    )
    cid = ok(daemon.docker(
        "create", "--stop-signal", "SIGUSR1", "--stop-timeout", "3", "-l", "a=b", "busybox"
    )).strip()  # fmt: skip
    inspect = json.loads(ok(daemon.docker("inspect", cid)))[0]
    assert inspect["Config"]["StopSignal"] == "SIGUSR1"
    assert inspect["Config"]["StopTimeout"] == 3
    assert inspect["Config"]["Labels"] == {"a": "b"}


def test_network_modes(daemon: Daemon) -> None:
    # none: only a loopback. This daemon runs in the host's namespace with `bridge: none`:
    # no default bridge network (as dockerd --bridge=none), the default is none
    out = ok(daemon.docker("run", "--rm", "--network", "none", "busybox", "ls", "/sys/class/net"))
    assert out.split() == ["lo"]
    out = ok(daemon.docker("run", "--rm", "busybox", "ls", "/sys/class/net"))
    assert out.split() == ["lo"]
    r = daemon.docker("run", "--rm", "--network", "bridge", "busybox", "true")
    assert r.returncode == 125 and "network bridge not found" in r.stderr
    host = sorted(os.listdir("/sys/class/net"))
    out = ok(daemon.docker("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net"))
    assert sorted(out.split()) == host
    r = daemon.docker("run", "--rm", "-h", "named", "--uts", "host", "busybox", "true")
    assert r.returncode == 125 and "conflicting options: hostname and the UTS mode" in r.stderr
    r = daemon.docker("run", "--rm", "--network", "mynet", "busybox", "true")
    assert r.returncode == 125 and "network mynet not found" in r.stderr


@pytest.mark.skipif(not os.path.exists("/usr/sbin/runc"), reason="runc not installed")
def test_runtime_per_container(daemon: Daemon) -> None:
    assert (
        ok(daemon.docker("run", "--rm", "--runtime", "runc", "busybox", "echo", "via-runc"))
        == "via-runc\n"
    )
    cid = ok(daemon.docker("run", "-d", "--runtime", "runc", "busybox", "sleep", "60")).strip()
    assert ok(daemon.docker("inspect", "-f", "{{.HostConfig.Runtime}}", cid)).strip() == "runc"
    assert ok(daemon.docker("exec", cid, "echo", "exec-runc")) == "exec-runc\n"
    ok(daemon.docker("rm", "-f", cid))
    r = daemon.docker("run", "--rm", "--runtime", "nosuch", "busybox", "true")
    assert r.returncode == 125 and "unknown or invalid runtime name: nosuch" in r.stderr


def test_unread_stdin_does_not_reset_the_connection(daemon: Daemon) -> None:
    # the container never reads its stdin: the daemon must not close the CLI's
    # connection with those bytes unread (the kernel would reset it)
    assert DOCKER is not None
    for args in (
        ["run", "-i", "--rm", "busybox", "echo", "hi"],
        ["run", "-i", "busybox", "echo", "hi"],
    ):
        r = subprocess.run(
            [DOCKER, *args],
            input=b"\0" * 3_000_000,
            env=daemon.env(),
            capture_output=True,
            timeout=60,
        )
        assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr
    cid = ok(daemon.docker("run", "-d", "busybox", "sleep", "60")).strip()
    r = subprocess.run(
        [DOCKER, "exec", "-i", cid, "echo", "hi"], input=b"\0" * 3_000_000, env=daemon.env(),
        capture_output=True, timeout=60,
    )  # fmt: skip
    assert (r.returncode, r.stdout) == (0, b"hi\n"), r.stderr


def test_seccomp_profile_file_is_sent_inline_and_applied(daemon: Daemon, tmp_path: Path) -> None:
    # the docker CLI reads the file and sends its JSON in SecurityOpt ("seccomp={...}")
    profile = tmp_path / "profile.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }))  # fmt: skip
    r = daemon.docker(
        "run", "--rm", "--security-opt", f"seccomp={profile}", "busybox", "mkdir", "/x"
    )
    assert r.returncode == 1 and "Operation not permitted" in r.stderr, r.stderr
    ok(
        daemon.docker(
            "run", "--rm", "--security-opt", "seccomp=unconfined", "busybox", "mkdir", "/x"
        )
    )


def test_large_output_arrives_whole(daemon: Daemon) -> None:
    r = daemon.docker("run", "--rm", "busybox", "seq", "1", "300000", timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert len(lines) == 300001 and lines[-2] == "300000" and lines[0] == "1"
    big = "x" * 4_000_000
    r = daemon.docker("run", "--rm", "-i", "busybox", "wc", "-c", input=big, timeout=120)
    assert r.stdout.strip() == "4000000", r.stderr
