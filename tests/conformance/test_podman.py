"""Podman 4.3 (through conmon) drives the runtime: run, exit codes, terminals, exec, stop, rm.

Run: ``.venv/bin/pytest -q tests/conformance/test_podman.py`` (as root; see conftest.py for the
isolation). What Podman asks of the runtime (argv logged by the wrapper)::

    conmon:  --log-format=json --log <userdata>/oci-log create --bundle <userdata>
             --pid-file <userdata>/pidfile [--console-socket /tmp/conmon-term.XXXXXX] <id>
    podman:  start <id> | kill <id> <signal number> | pause <id> | resume <id>
             | update --resources=<tmp file> <id> | delete --force <id> | --version (podman info)
    conmon:  --log-format=json --log <exec dir>/oci-log exec --pid-file <exec dir>/exec_pid
             --process <exec dir>/exec-process-N --detach [--tty --console-socket S] <id>

On a failed create/exec, conmon forwards the runtime's stderr and Podman reads the
``--log`` file: if the whole file parses as ONE JSON object ``{"level":"error","msg":...}``
its ``msg`` wins, otherwise the stderr text is used (two JSON lines, or a text line, with
an empty stderr give "container create failed (no logs from conmon)"). The message is
then mapped: "no such file or directory" / "executable file not found" -> exit 127,
"permission denied" -> 126, anything else -> 126. So: nothing in the log on success,
one error line on failure, and the same message on stderr. conmon accepts a pid file
with or without a trailing newline.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from tests.conformance.conftest import PodmanForTest, PtyProcess

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_echo_hello(podman: PodmanForTest) -> None:
    out = podman.run("--rm", podman.image, "echo", "hello")
    assert out.stdout == "hello\n"


def test_runtime_invoked_as_runc_is(podman: PodmanForTest) -> None:
    """The wrapper saw create (with a JSON log), start and delete for this container."""
    before = len(podman.runtime.argv_lines())
    podman.run("--rm", podman.image, "true")
    lines = podman.runtime.argv_lines()[before:]
    verbs = [v for line in lines for v in ("create", "start", "delete") if f" [{v}]" in line]
    assert verbs[:3] == ["create", "start", "delete"], lines
    create = next(line for line in lines if " [create]" in line)
    for flag in ("[--log-format=json]", "[--log]", "[--bundle]", "[--pid-file]"):
        assert flag in create, create


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_code_passes_through(podman: PodmanForTest, code: int) -> None:
    proc = podman.run("--rm", podman.image, "sh", "-c", f"exit {code}", check=False)
    assert proc.returncode == code, proc.stderr


def test_stdin_and_stderr(podman: PodmanForTest) -> None:
    proc = podman.run(
        "--rm", "-i", podman.image, "sh", "-c", "cat; echo oops >&2", input="from-stdin\n"
    )
    assert proc.stdout == "from-stdin\n"
    assert "oops" in proc.stderr


def test_container_environment(podman: PodmanForTest) -> None:
    script = "hostname; id -u; cat /proc/self/cgroup | grep -c libpod; ls /sys/class/net"
    out = podman.run("--rm", "--hostname", "hosty", podman.image, "sh", "-c", script).stdout
    hostname, uid, cgroups, nets = out.split("\n", 3)
    assert hostname == "hosty"
    assert uid == "0"
    assert int(cgroups) >= 1  # the container's cgroup is libpod-<id> below our parent
    assert nets.split() == ["lo"]  # --network none


def test_command_not_found_is_127(podman: PodmanForTest) -> None:
    proc = podman.run("--rm", podman.image, "/nonexistent", check=False)
    assert proc.returncode == 127, proc.stderr
    assert "/nonexistent" in proc.stderr


def test_not_executable_is_126(podman: PodmanForTest) -> None:
    proc = podman.run("--rm", podman.image, "/etc/passwd", check=False)
    assert proc.returncode == 126, proc.stderr


def test_interactive_tty(podman: PodmanForTest, spawn_pty) -> None:
    argv = podman.argv("run", *podman.env.run_args("--rm", "-it", podman.image, "sh"))
    p: PtyProcess = spawn_pty(argv, podman.env.env, rows=33, cols=101)
    assert p.read_until(b"# "), p.text
    p.write(b"tty; stty size; echo round-$((40+2))\r")
    assert p.read_until(b"round-42\r\n"), p.text
    lines = p.text.replace("\r", "").split("\n")
    assert "/dev/pts/0" in lines, p.text
    assert "33 101" in lines, p.text
    p.write(b"exit 5\r")
    assert p.wait() == 5, p.text


def test_tty_without_stdin(podman: PodmanForTest) -> None:
    """``-t`` alone: the runtime gets a console socket; output arrives with CRLF."""
    out = podman.run("--rm", "-t", podman.image, "sh", "-c", "tty; echo done").stdout
    assert out.replace("\r", "").split() == ["/dev/pts/0", "done"]


def _inspect(podman: PodmanForTest, name: str) -> dict:  # type: ignore[type-arg]
    data = json.loads(podman("inspect", name).stdout)
    assert len(data) == 1
    return data[0]  # type: ignore[no-any-return]


def test_detached_exec_stop_rm(podman: PodmanForTest) -> None:
    name = f"bh-{os.getpid()}-{time.monotonic_ns() % 100000}"
    cid = podman.run("-d", podman.image, "sleep", "1000", name=name).stdout.strip()
    assert len(cid) == 64

    ps = json.loads(podman("ps", "--format", "json").stdout)
    mine = [c for c in ps if c["Id"] == cid]
    assert mine and mine[0]["State"] == "running", ps

    state = _inspect(podman, name)["State"]
    assert state["Status"] == "running" and state["Running"] is True
    pid = state["Pid"]
    assert pid > 0 and os.path.exists(f"/proc/{pid}")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"

    assert podman("exec", name, "echo", "from", "exec").stdout == "from exec\n"
    assert podman("exec", name, "sh", "-c", "exit 4", check=False).returncode == 4
    assert podman("exec", name, "/nonexistent", check=False).returncode == 127
    proc = podman("exec", "-i", name, "sh", "-c", "cat", input="piped\n")
    assert proc.stdout == "piped\n"
    assert podman("exec", name, "cat", "/proc/1/cmdline").stdout.startswith("sleep\0")

    podman("stop", "--time", "1", name)
    state = _inspect(podman, name)["State"]
    assert state["Status"] == "exited" and state["Running"] is False
    assert state["ExitCode"] == 137  # sleep as PID 1 ignores SIGTERM: SIGKILL after 1 s
    assert not os.path.exists(f"/proc/{pid}") or _is_zombie_or_gone(pid)

    podman("rm", name)
    assert cid not in podman("ps", "-a", "-q", "--no-trunc").stdout


def _is_zombie_or_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def test_kill_signal_reaches_init(podman: PodmanForTest) -> None:
    name = f"bh-kill-{time.monotonic_ns() % 1000000}"
    script = 'trap "exit 7" TERM; echo ready; while :; do sleep 0.1; done'
    podman.run("-d", podman.image, "sh", "-c", script, name=name)
    for _ in range(100):
        if "ready" in podman("logs", name).stdout:
            break
        time.sleep(0.05)
    podman("kill", "--signal", "TERM", name)
    assert podman("wait", name).stdout.strip() == "7"
    podman("rm", name)


def test_pause_unpause(podman: PodmanForTest) -> None:
    name = f"bh-pause-{time.monotonic_ns() % 1000000}"
    podman.run("-d", podman.image, "sleep", "1000", name=name)
    podman("pause", name)
    assert _inspect(podman, name)["State"]["Status"] == "paused"
    podman("unpause", name)
    assert _inspect(podman, name)["State"]["Status"] == "running"
    assert podman("exec", name, "echo", "alive").stdout == "alive\n"
    podman("rm", "--force", "--time", "0", name)


def test_exec_tty(podman: PodmanForTest, spawn_pty) -> None:
    name = f"bh-exectty-{time.monotonic_ns() % 1000000}"
    podman.run("-d", podman.image, "sleep", "1000", name=name)
    p: PtyProcess = spawn_pty(
        podman.argv("exec", "-it", name, "sh", "-c", "tty; exit 6"), podman.env.env
    )
    assert p.wait() == 6, p.text
    assert "/dev/pts/" in p.text, p.text
    podman("rm", "--force", "--time", "0", name)
