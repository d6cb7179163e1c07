"""containerd 1.6 (through containerd-shim-runc-v2) drives the runtime via ``ctr``.

Run: ``.venv/bin/pytest -q tests/conformance/test_containerd.py`` (as root; containerd is
started and stopped by the session, see conftest.py). What the shim asks of the runtime
(argv logged by the wrapper; ``R`` = ``--root <runc-root>/<namespace> --log
<bundle>/log.json --log-format json``)::

    R create --bundle <bundle> --pid-file <bundle>/init.pid [--console-socket <tmp>/pty.sock] <id>
    R start <id>
    R exec --process <tmp>/runc-process<N> [--console-socket S] --detach --pid-file <bundle>/<exec-id>.pid <id>
    R ps --format json <id> | R pause <id> | R resume <id> | R kill [--all] <id> <signal number>
    R delete <id>            (the shim, after the init exited)
    R delete --force <id>    (``containerd-shim-runc-v2 delete``, run by containerd afterwards)

The shim reads the pid files with ``strconv.Atoi``: digits only, a trailing newline makes
the create fail ("failed to retrieve OCI runtime container pid"). When a verb fails it
parses every line of ``log.json`` as JSON (``time`` must be RFC 3339 if present, or the
whole error becomes "unable to retrieve OCI runtime error") and reports the ``msg`` of the
last ``"level":"error"`` line; the runtime's stderr is not shown.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
from tests.conformance.conftest import CtrForTest, PtyProcess

pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_echo_hello(ctr: CtrForTest) -> None:
    cid = ctr.new_id()
    out = ctr.run(cid, "--rm", cmd=["echo", "hello"])
    assert out.stdout == "hello\n"


def test_shim_invokes_runtime_with_json_log(ctr: CtrForTest) -> None:
    before = len(ctr.runtime.argv_lines())
    cid = ctr.new_id()
    ctr.run(cid, "--rm", cmd=["true"])
    lines = [line for line in ctr.runtime.argv_lines()[before:] if f"[{cid}]" in line]
    verbs = [v for line in lines for v in ("create", "start", "delete") if f" [{v}]" in line]
    assert verbs[:3] == ["create", "start", "delete"], lines
    for line in lines:
        assert "[--log-format] [json]" in line and "[--root]" in line, line


@pytest.mark.parametrize("code", [0, 1, 3, 42, 255])
def test_exit_code_passes_through(ctr: CtrForTest, code: int) -> None:
    cid = ctr.new_id()
    proc = ctr.run(cid, "--rm", cmd=["sh", "-c", f"exit {code}"], check=False)
    assert proc.returncode == code, proc.stderr


def test_stdout_and_stderr(ctr: CtrForTest) -> None:
    # (ctr does not close the task's stdin when its own reaches EOF: no stdin test here.)
    cid = ctr.new_id()
    proc = ctr.run(cid, "--rm", cmd=["sh", "-c", "echo out; echo oops >&2"], input="")
    assert proc.stdout == "out\n"
    assert "oops" in proc.stderr


def test_cgroup_is_ours(ctr: CtrForTest) -> None:
    cid = ctr.new_id()
    out = ctr.run(cid, "--rm", cmd=["cat", "/proc/self/cgroup"]).stdout
    # containerd creates no cgroup namespace here: the container sees its full path.
    assert f"{ctr.env.cgroup_parent}/{cid}" in out, out


def test_command_not_found_reports_runtime_error(ctr: CtrForTest) -> None:
    """The shim reads the last error line of log.json and puts it into ctr's error."""
    cid = ctr.new_id()
    proc = ctr.run(cid, "--rm", cmd=["/nonexistent"], check=False)
    assert proc.returncode != 0
    assert "/nonexistent" in proc.stderr, proc.stderr
    assert "no such file or directory" in proc.stderr or "not found" in proc.stderr


def _wait_status(ctr: CtrForTest, cid: str, status: str, timeout: float = 10) -> str:
    seen = ""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in ctr("tasks", "ls").stdout.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0] == cid:
                seen = fields[2]
        if seen == status:
            return seen
        time.sleep(0.05)
    return seen


def test_detached_task_exec_ps_kill(ctr: CtrForTest) -> None:
    cid = ctr.new_id()
    ctr.run(cid, "--detach", cmd=["sleep", "1000"])
    assert _wait_status(ctr, cid, "RUNNING") == "RUNNING"

    listed = [line.split() for line in ctr("tasks", "ls").stdout.splitlines()[1:]]
    pid = next(int(f[1]) for f in listed if f and f[0] == cid)
    assert pid > 0 and os.path.exists(f"/proc/{pid}")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"

    assert ctr.exec(cid, "e1", "echo", "from", "exec").stdout == "from exec\n"
    proc = ctr.exec(cid, "e2", "sh", "-c", "exit 4", check=False)
    assert proc.returncode == 4, proc.stderr
    proc = ctr.exec(cid, "e3", "/nonexistent", check=False)
    assert proc.returncode != 0 and "/nonexistent" in proc.stderr, proc.stderr

    # `ctr tasks ps` is the runtime's `ps --format json`.
    ps_pids = [int(line.split()[0]) for line in ctr("tasks", "ps", cid).stdout.splitlines()[1:]]
    assert pid in ps_pids

    ctr("tasks", "pause", cid)
    assert _wait_status(ctr, cid, "PAUSED") == "PAUSED"
    ctr("tasks", "resume", cid)
    assert _wait_status(ctr, cid, "RUNNING") == "RUNNING"

    ctr("tasks", "kill", "--signal", "SIGKILL", cid)
    assert _wait_status(ctr, cid, "STOPPED") == "STOPPED"
    ctr("tasks", "delete", cid)
    ctr("containers", "delete", cid)
    assert cid not in ctr("containers", "ls", "-q").stdout.split()


def test_kill_signal_reaches_init(ctr: CtrForTest) -> None:
    cid = ctr.new_id()
    script = 'trap "exit 7" TERM; while :; do sleep 0.1; done'
    ctr.run(cid, "--detach", cmd=["sh", "-c", script])
    assert _wait_status(ctr, cid, "RUNNING") == "RUNNING"
    time.sleep(0.3)  # let sh install its trap
    ctr("tasks", "kill", "--signal", "SIGTERM", cid)
    assert _wait_status(ctr, cid, "STOPPED") == "STOPPED"
    proc = ctr("tasks", "delete", cid)  # prints the exit status
    assert "7" in proc.stdout.split() or "7" in proc.stderr, (proc.stdout, proc.stderr)


def test_tty(ctr: CtrForTest, spawn_pty) -> None:
    cid = ctr.new_id()
    # ctr sets the window size just after the task started: wait for it.
    script = 'tty; for i in $(seq 50); do [ "$(stty size)" = "40 120" ] && break; sleep 0.1; done; stty size; exit 5'
    argv = ctr.env.ctr_argv(*ctr.run_options(cid, "--rm", "--tty"), "sh", "-c", script)
    p: PtyProcess = spawn_pty(argv, ctr.env.env, rows=40, cols=120)
    assert p.wait() == 5, p.text
    lines = p.text.replace("\r", "").split("\n")
    assert "/dev/pts/0" in lines, p.text
    assert "40 120" in lines, p.text


def test_exec_tty(ctr: CtrForTest, spawn_pty) -> None:
    cid = ctr.new_id()
    ctr.run(cid, "--detach", cmd=["sleep", "1000"])
    assert _wait_status(ctr, cid, "RUNNING") == "RUNNING"
    argv = ctr.env.ctr_argv(*ctr.exec_options(cid, "t1", "--tty"), "sh", "-c", "tty; exit 6")
    p: PtyProcess = spawn_pty(argv, ctr.env.env)
    assert p.wait() == 6, p.text
    assert "/dev/pts/" in p.text, p.text


def test_runtime_state_after_start(ctr: CtrForTest) -> None:
    """The runtime's own ``state`` agrees with containerd about a running task."""
    cid = ctr.new_id()
    ctr.run(cid, "--detach", cmd=["sleep", "1000"])
    assert _wait_status(ctr, cid, "RUNNING") == "RUNNING"
    root = ctr.env.runc_root / ctr.env.namespace
    proc = subprocess.run(
        [str(ctr.runtime.binary), "--root", str(root), "state", cid],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    state = json.loads(proc.stdout)
    assert state["id"] == cid
    assert state["status"] == "running"
    assert state["bundle"].endswith(f"/{ctr.env.namespace}/{cid}")
    listed = [line.split() for line in ctr("tasks", "ls").stdout.splitlines()[1:]]
    assert state["pid"] == next(int(f[1]) for f in listed if f and f[0] == cid)
