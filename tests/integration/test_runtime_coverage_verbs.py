"""Verbs and global flags through the real CLI, beyond ``test_runtime_lifecycle.py``.

States at every moment (``creating`` while hooks run, ``stopped`` when the
creating process dies half-way), ``kill --all``, ``update``, ``events``
(stats, interval, OOM), ``exec``'s flags, ``spec --rootless`` that runs,
``features`` against the host, the default ``--root``, ``--log`` /
``--log-format`` / ``--debug``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.runtime_helpers import RUNTIME, RuntimeCLI, alive, cgroup_dirs


def wait_status(rt: RuntimeCLI, cid: str, status: str, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while True:
        now = str(rt.state(cid)["status"])
        if now == status or time.monotonic() > deadline:
            return now
        time.sleep(0.02)


def wait_for(cond: Any, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture
def started_pids() -> Iterator[list[int]]:
    """Pids of processes a test started indirectly (hooks); SIGKILLed afterwards."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# ----------------------------------------------------------------------------- states


def test_state_is_creating_while_create_runs(rt, bundle, cid, tmp_path):
    """A prestart hook asks the runtime itself: the container is ``creating`` at that moment."""
    out = tmp_path / "seen"
    hook = tmp_path / "ask.sh"
    hook.write_text(
        f'#!/bin/sh\n"{RUNTIME}" --root "{rt.root}" state {cid} > {out}\n'
        f'"{RUNTIME}" --root "{rt.root}" list -q >> {out}\n'
    )
    hook.chmod(0o755)
    b = bundle(["true"], hooks={"prestart": [{"path": str(hook)}]})
    rt("create", "--bundle", str(b), cid)
    text = out.read_text()
    doc = json.loads(text[: text.rindex("}") + 1])
    assert doc["status"] == "creating"
    assert doc["id"] == cid
    assert text.split()[-1] == cid  # list shows it too
    assert rt.state(cid)["status"] == "created"


def test_creator_killed_half_way_is_stopped_and_deletable(
    rt, bundle, cid, tmp_path, cgroup_parent, started_pids
):
    hook_pid = tmp_path / "hook.pid"
    hook = tmp_path / "block.sh"
    hook.write_text(f"#!/bin/sh\necho $$ > {hook_pid}\nexec sleep 60\n")
    hook.chmod(0o755)
    b = bundle(["true"], hooks={"createRuntime": [{"path": str(hook)}]})
    creator = subprocess.Popen(
        [RUNTIME, "--root", str(rt.root), "create", "--bundle", str(b), cid],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_for(lambda: hook_pid.exists() and hook_pid.read_text().strip())
        started_pids.append(int(hook_pid.read_text()))
        assert rt.state(cid)["status"] == "creating"
        creator.kill()
        creator.wait(10)
    finally:
        if creator.poll() is None:
            creator.kill()
            creator.wait(10)
    assert rt.state(cid)["status"] == "stopped"
    rt("delete", cid)
    assert not (rt.root / cid).exists()
    # the half-made init noticed its runtime was gone and ended: nothing holds the cgroup
    assert wait_for(lambda: not cgroup_dirs(f"{cgroup_parent}/{cid}"), timeout=5) or not any(
        (d / "cgroup.procs").read_text().strip() for d in cgroup_dirs(f"{cgroup_parent}/{cid}")
    )


def test_every_state_seen_from_fresh_processes(rt, bundle, cid, tmp_path):
    """created -> running -> paused -> running -> stopped, each read by a new runtime process."""
    gate = tmp_path / "rootfs-gate"
    b = bundle(["sh", "-c", "while [ ! -e /gate ]; do sleep 0.05; done"])
    gate = b / "rootfs" / "gate"
    rt("create", "--bundle", str(b), cid)
    assert rt.state(cid)["status"] == "created"
    rt("start", cid)
    assert rt.state(cid)["status"] == "running"
    rt("pause", cid)
    assert rt.state(cid)["status"] == "paused"
    rt("resume", cid)
    assert rt.state(cid)["status"] == "running"
    gate.touch()
    assert wait_status(rt, cid, "stopped") == "stopped"
    st = rt.state(cid)
    assert st["pid"] == 0


def test_kill_of_a_created_container(rt, bundle, cid):
    b = bundle(["sh", "-c", "echo ran > /proc/1/root/tmp/x"])
    rt("create", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    rt("kill", cid, "KILL")
    assert wait_status(rt, cid, "stopped") == "stopped"
    assert not alive(pid)
    assert not (b / "rootfs" / "tmp" / "x").exists()
    assert rt("start", cid, check=False).returncode == 1


def test_kill_all_reaches_every_process(rt, bundle, cid):
    """TERM to PID 1 of a pid namespace without a handler is ignored; --all reaches the rest."""
    b = bundle(["sh", "-c", "sleep 60 & sleep 61 & wait; sleep 62"])
    rt("run", "-d", "--bundle", str(b), cid)
    assert wait_for(lambda: len(json.loads(rt("ps", "--format", "json", cid).stdout)) == 3)
    rt("kill", cid, "TERM")
    time.sleep(0.2)
    assert len(json.loads(rt("ps", "--format", "json", cid).stdout)) == 3
    rt("kill", "--all", cid, "TERM")
    # the sleeps die, sh's wait returns and it goes on to its last sleep, killed too by then
    assert wait_for(lambda: len(json.loads(rt("ps", "--format", "json", cid).stdout)) <= 2)


def test_delete_force_of_a_paused_container(rt, bundle, cid, cgroup_parent):
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    rt("pause", cid)
    rt("delete", "--force", cid)
    assert wait_for(lambda: not alive(pid), timeout=5)
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")
    assert not (rt.root / cid).exists()


def test_delete_several_ids(rt, bundle, cid, cgroup_parent):
    ids = [cid, cid + "-2"]
    for n, i in enumerate(ids):
        b = bundle(["true"], linux={"cgroupsPath": f"{cgroup_parent}/{i}"})
        rt("run", "--keep", "--bundle", str(b), i)
        assert n == 0 or rt.state(i)["status"] == "stopped"
    rt("delete", *ids)
    assert rt("list", "-q").stdout == ""


def test_run_removes_its_cgroup_and_state(rt, bundle, cid, cgroup_parent):
    b = bundle(["sh", "-c", "cat /proc/self/cgroup | grep memory"])
    out = rt("run", "--bundle", str(b), cid).stdout
    assert out.strip().endswith(f"{cgroup_parent}/{cid}")
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")
    assert not (rt.root / cid).exists()


def test_exec_joins_the_cgroup(rt, bundle, cid, cgroup_parent):
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    out = rt("exec", cid, "cat", "/proc/self/cgroup").stdout
    pids_line = next(line for line in out.splitlines() if ":pids:" in line)
    assert pids_line.endswith(f"{cgroup_parent}/{cid}")


# ----------------------------------------------------------------------------- update / events


def cgroup_file(cgroup: str, controller: str, name: str) -> str:
    for d in cgroup_dirs(cgroup):
        if f"/{controller}/" in str(d) and (d / name).exists():
            return (d / name).read_text().strip()
    raise FileNotFoundError(f"{controller}/{name}")


def test_update_with_flags_and_a_resources_file(rt, bundle, cid, cgroup_parent, tmp_path):
    cg = f"{cgroup_parent}/{cid}"
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    rt("update", "--pids-limit", "42", "--memory", "64m", "--cpu-share", "512", cid)
    assert cgroup_file(cg, "pids", "pids.max") == "42"
    assert cgroup_file(cg, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert cgroup_file(cg, "cpu", "cpu.shares") == "512"
    res = tmp_path / "r.json"
    res.write_text(json.dumps({"pids": {"limit": 77}, "cpu": {"shares": 256}}))
    rt("update", "-r", str(res), cid)
    assert cgroup_file(cg, "pids", "pids.max") == "77"
    assert cgroup_file(cg, "cpu", "cpu.shares") == "256"
    rt("update", "-r", "-", cid, input=b'{"pids": {"limit": 5}}')
    assert cgroup_file(cg, "pids", "pids.max") == "5"
    proc = rt("update", "--memory", "lots", cid, check=False)
    assert proc.returncode == 1 and "lots" in one_line(proc.stderr)
    assert cgroup_file(cg, "memory", "memory.limit_in_bytes") == str(64 << 20)


def test_update_of_a_stopped_container_fails(rt, bundle, cid):
    b = bundle(["true"])
    rt("run", "--keep", "--bundle", str(b), cid)
    proc = rt("update", "--pids-limit", "10", cid, check=False)
    assert proc.returncode == 1
    assert "not running" in one_line(proc.stderr)


def test_events_stats_prints_one_stats_event(rt, bundle, cid):
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    lines = rt("events", "--stats", cid).stdout.splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["type"] == "stats" and event["id"] == cid
    data = event["data"]
    assert {"cpu", "memory", "pids", "blkio"} <= set(data)
    assert data["pids"]["current"] == 1
    assert data["memory"]["usage"]["usage"] > 0
    assert data["cpu"]["usage"]["total"] > 0


def test_events_of_a_stopped_container_fails(rt, bundle, cid):
    b = bundle(["true"])
    rt("run", "--keep", "--bundle", str(b), cid)
    proc = rt("events", "--stats", cid, check=False)
    assert proc.returncode == 1 and "not running" in one_line(proc.stderr)


@pytest.fixture
def events_proc(rt) -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def test_events_interval_and_end_on_delete(rt, bundle, cid, events_proc):
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    p = subprocess.Popen(
        [RUNTIME, "--root", str(rt.root), "events", "--interval", "100ms", cid],
        stdout=subprocess.PIPE,
        text=True,
    )
    events_proc.append(p)
    assert p.stdout is not None
    lines = [p.stdout.readline() for _ in range(3)]
    assert all(json.loads(line)["type"] == "stats" for line in lines)
    rt("delete", "--force", cid)
    assert p.wait(10) == 0  # ends by itself once the container is gone


def test_events_reports_an_oom_kill(rt, bundle, cid, events_proc):
    limit = 16 << 20
    b = bundle(
        ["sleep", "60"],
        linux={"resources": {"memory": {"limit": limit, "swap": limit}}},
    )
    rt("run", "-d", "--bundle", str(b), cid)
    p = subprocess.Popen(
        [RUNTIME, "--root", str(rt.root), "events", "--interval", "30s", cid],
        stdout=subprocess.PIPE,
        text=True,
    )
    events_proc.append(p)
    assert p.stdout is not None
    assert json.loads(p.stdout.readline())["type"] == "stats"  # watching now
    hog = rt("exec", cid, "sh", "-c", "a=$(head -c 64000000 /dev/zero | tr '\\0' x)", check=False)
    assert hog.returncode == 137  # SIGKILLed by the OOM killer
    event = json.loads(p.stdout.readline())
    assert event == {"type": "oom", "id": cid}


def test_events_bad_interval(rt, bundle, cid):
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    proc = rt("events", "--interval", "soon", cid, check=False)
    assert proc.returncode == 1 and "soon" in one_line(proc.stderr)


# ----------------------------------------------------------------------------- ps / list


def test_ps_with_ps_arguments(rt, bundle, cid):
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    lines = rt("ps", cid, "--", "-o", "pid,comm").stdout.splitlines()
    assert lines[0].split() == ["PID", "COMMAND"]
    assert [line.split() for line in lines[1:]] == [[str(pid), "sleep"]]


def test_ps_of_a_stopped_container_fails(rt, bundle, cid):
    b = bundle(["true"])
    rt("run", "--keep", "--bundle", str(b), cid)
    proc = rt("ps", cid, check=False)
    assert proc.returncode == 1 and "not running" in one_line(proc.stderr)


def test_list_formats_with_several_containers(rt, bundle, cid, cgroup_parent):
    ids = sorted([cid + "-a", cid + "-b"])
    for i in ids:
        b = bundle(["sleep", "60"], linux={"cgroupsPath": f"{cgroup_parent}/{i}"})
        rt("run", "-d", "--bundle", str(b), i)
    assert rt("list", "-q").stdout.split() == ids
    docs = json.loads(rt("list", "-f", "json").stdout)
    assert [d["id"] for d in docs] == ids
    assert all(d["status"] == "running" and d["pid"] > 0 for d in docs)
    assert {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"} <= set(
        docs[0]
    )
    table = rt("list").stdout.splitlines()
    assert len(table) == 3 and [row.split()[0] for row in table[1:]] == ids


def test_list_of_an_empty_or_missing_root(tmp_path):
    cli = RuntimeCLI(tmp_path / "never-made")
    proc = cli("list")
    assert proc.stdout.split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert cli("list", "-q").stdout == ""
    assert json.loads(cli("list", "--format", "json").stdout) in ([], None)


# ----------------------------------------------------------------------------- exec flags


@pytest.fixture
def running(rt, bundle, cid) -> str:
    b = bundle(["sleep", "60"])
    rt("run", "-d", "--bundle", str(b), cid)
    return str(cid)


def test_exec_cap_adds_a_capability(rt, running):
    status = rt("exec", "--cap", "CAP_SYS_ADMIN", running, "cat", "/proc/self/status").stdout
    bnd = next(line for line in status.splitlines() if line.startswith("CapBnd:"))
    assert int(bnd.split()[1], 16) & (1 << 21)
    plain = rt("exec", running, "cat", "/proc/self/status").stdout
    bnd = next(line for line in plain.splitlines() if line.startswith("CapBnd:"))
    assert not int(bnd.split()[1], 16) & (1 << 21)


def test_exec_no_new_privs(rt, bundle, cid):
    b = bundle(["sleep", "60"], process={"noNewPrivileges": False})
    rt("run", "-d", "--bundle", str(b), cid)
    script = ["sh", "-c", "grep NoNewPrivs /proc/self/status"]
    assert rt("exec", cid, *script).stdout.split() == ["NoNewPrivs:", "0"]
    assert rt("exec", "--no-new-privs", cid, *script).stdout.split() == ["NoNewPrivs:", "1"]


def test_exec_user_groups_and_env(rt, running):
    out = rt(
        "exec",
        "--user",
        "1000:44",
        "--additional-gids",
        "29",
        "-e",
        "PATH=/bin",
        "-e",
        "NEW=x",
        running,
        "sh",
        "-c",
        "id -u; id -g; id -G; echo $NEW",
    ).stdout.split()
    assert out == ["1000", "44", "44", "29", "x"] or out == ["1000", "44", "29", "44", "x"]


def test_exec_tty_with_console_socket(rt, running, tmp_path):
    sock_path = tmp_path / "exec-console.sock"
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
        rt(
            "exec",
            "-t",
            "-d",
            "--console-socket",
            str(sock_path),
            running,
            "sh",
            "-c",
            "tty; echo exec-tty-ok",
        )
        t.join(10)
        assert got and os.isatty(got[0])
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
    lines = data.decode().replace("\r", "").splitlines()
    assert lines[0].startswith("/dev/pts/") and lines[1] == "exec-tty-ok"


def test_exec_tty_in_the_foreground(rt, running):
    out = rt("exec", "-t", running, "tty").stdout.replace("\r", "").strip()
    assert out.startswith("/dev/pts/")


def test_exec_in_a_paused_container_is_refused(rt, running):
    rt("pause", running)
    proc = rt("exec", running, "true", check=False)
    assert proc.returncode == 1 and "paused" in one_line(proc.stderr)
    rt("resume", running)


# ----------------------------------------------------------------------------- spec / features


def test_spec_rootless_runs(rt, cid, tmp_path, busybox_rootfs):
    import shutil

    bundle_dir = tmp_path / "rootless"
    bundle_dir.mkdir()
    rt("spec", "--rootless", "--bundle", str(bundle_dir))
    spec = json.loads((bundle_dir / "config.json").read_text())
    kinds = {ns["type"] for ns in spec["linux"]["namespaces"]}
    assert "user" in kinds and "network" not in kinds
    assert not any(m["type"] == "cgroup" for m in spec["mounts"])
    sys_mount = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert "rbind" in sys_mount["options"]
    assert "resources" not in spec["linux"]
    shutil.copytree(busybox_rootfs, bundle_dir / "rootfs", symlinks=True)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = ["sh", "-c", "id -u; cat /proc/self/uid_map"]
    spec["linux"]["cgroupsPath"] = f"/bulkhead/test-rootless-{uuid.uuid4().hex[:8]}"
    (bundle_dir / "config.json").write_text(json.dumps(spec))
    try:
        out = rt("run", "--bundle", str(bundle_dir), cid).stdout.splitlines()
    finally:
        rt("delete", "--force", cid, check=False)
    assert out[0] == "0"
    assert out[1].split() == ["0", str(os.geteuid()), "1"]
    assert not cgroup_dirs(spec["linux"]["cgroupsPath"])


def test_spec_defaults_match_runc_spec(rt, tmp_path):
    rt("spec", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["ociVersion"].startswith("1.")
    assert spec["root"] == {"path": "rootfs", "readonly": True}
    caps = spec["process"]["capabilities"]
    assert caps["bounding"] == ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    assert [ns["type"] for ns in spec["linux"]["namespaces"]] == [
        "pid",
        "network",
        "ipc",
        "uts",
        "mount",
    ]
    assert "/proc/kcore" in spec["linux"]["maskedPaths"]
    assert "/proc/sys" in spec["linux"]["readonlyPaths"]


def test_features_describe_this_host(rt):
    doc = json.loads(rt("features").stdout)
    assert doc["ociVersionMin"] == "1.0.0"
    assert doc["ociVersionMax"].startswith("1.")
    assert doc["hooks"] == [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ]
    for option in ("bind", "rbind", "ro", "rprivate", "rshared", "rslave", "nosuid", "noexec"):
        assert option in doc["mountOptions"], option
    linux = doc["linux"]
    assert "CAP_SYS_ADMIN" in linux["capabilities"] and "CAP_CHOWN" in linux["capabilities"]
    assert linux["cgroup"]["v1"] is True
    assert linux["cgroup"]["systemd"] is False
    seccomp = linux["seccomp"]
    assert seccomp["enabled"] is True
    assert set(seccomp["operators"]) == {
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    }
    assert "SCMP_ARCH_X86_64" in seccomp["archs"]
    assert linux["apparmor"]["enabled"] == Path("/sys/kernel/security/apparmor").exists()
    assert linux["selinux"]["enabled"] == Path("/sys/fs/selinux/enforce").exists()


# ----------------------------------------------------------------------------- global flags


def test_default_root_is_run_bulkhead_runtime(bundle, cid, cgroup_parent):
    b = bundle(["sleep", "60"])
    cmd = [RUNTIME]
    try:
        subprocess.run([*cmd, "run", "-d", "--bundle", str(b), cid], check=True, timeout=60)
        assert (Path("/run/bulkhead-runtime") / cid / "state.json").exists()
        state = json.loads(subprocess.run([*cmd, "state", cid], capture_output=True).stdout)
        assert state["status"] == "running"
    finally:
        subprocess.run([*cmd, "delete", "--force", cid], check=False, timeout=60)
    assert not (Path("/run/bulkhead-runtime") / cid).exists()


def test_log_file_in_text_format(rt, tmp_path):
    log = tmp_path / "runtime.log"
    proc = rt("--log", str(log), "state", "nope", check=False)
    assert proc.returncode == 1
    line = log.read_text().splitlines()[-1]
    assert line.startswith('time="') and "level=error" in line
    assert 'msg="container does not exist' in line
    assert proc.stderr.strip() == "container does not exist: nope"


def test_log_format_json_on_stderr(rt):
    proc = rt("--log-format", "json", "state", "nope", check=False)
    assert proc.returncode == 1
    entry = json.loads(one_line(proc.stderr))
    assert entry["level"] == "error"
    assert "does not exist" in entry["msg"]
    assert "time" in entry


def test_log_format_rejects_unknown(rt):
    proc = rt("--log-format", "xml", "list", check=False)
    assert proc.returncode != 0


def test_debug_logs_debug_lines(rt, bundle, cid, tmp_path):
    log = tmp_path / "debug.log"
    b = bundle(["true"])
    rt("--debug", "--log", str(log), "--log-format", "json", "run", "--bundle", str(b), cid)
    text = log.read_text() if log.exists() else ""
    levels = [json.loads(line)["level"] for line in text.splitlines()]
    assert "debug" in levels


def test_without_debug_no_debug_lines(rt, bundle, cid, tmp_path):
    log = tmp_path / "quiet.log"
    b = bundle(["true"])
    rt("--log", str(log), "--log-format", "json", "run", "--bundle", str(b), cid)
    text = log.read_text() if log.exists() else ""
    assert all(json.loads(line)["level"] != "debug" for line in text.splitlines())


def test_single_dash_long_flags_as_runc(rt, bundle, cid):
    b = bundle(["sh", "-c", "echo dash"])
    proc = rt("run", "-bundle", str(b), cid)
    assert proc.stdout == "dash\n"
    b = bundle(["sh", "-c", "echo equals"])
    proc = rt("run", f"--bundle={b}", cid + "x")
    assert proc.stdout == "equals\n"


# ----------------------------------------------------------------------------- keyring


@pytest.mark.parametrize("flag", [None, "--no-new-keyring"])
def test_session_keyring(rt, bundle, cid, flag):
    """A session keyring of its own named ``_ses.<id>`` (runc's), unless --no-new-keyring."""
    b = bundle(["cat", "/proc/keys"], linux={"maskedPaths": []})
    args = ["run", *([flag] if flag else []), "--bundle", str(b), cid]
    keys = rt(*args).stdout
    if flag is None:
        assert f" _ses.{cid}: " in keys
    else:
        assert f" _ses.{cid}: " not in keys
