"""The create/start/state/kill/delete life of a container, as runc does it."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.integration.runtime_helpers import RuntimeCLI, alive, cgroup_dirs


def wait_status(rt: RuntimeCLI, cid: str, status: str, timeout: float = 10) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        st = rt.state(cid)
        if st["status"] == status or time.monotonic() > deadline:
            return st
        time.sleep(0.02)


def test_run_prints_and_passes_exit_code(rt, bundle, cid):
    b = bundle(["sh", "-c", "echo hello from $(hostname) pid $$; exit 3"], hostname="box")
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.stdout == "hello from box pid 1\n"
    assert proc.returncode == 3
    # run deletes the container afterwards
    assert rt("list", "-q").stdout == ""


def test_run_killed_by_signal_gives_128_plus_signal(rt, bundle, cid):
    # Without a pid namespace of its own, the shell is not an init the
    # kernel protects from its own SIGKILL.
    namespaces = [{"type": t} for t in ("mount", "ipc", "uts", "network")]
    b = bundle(["sh", "-c", "kill -9 $$"], linux={"namespaces": namespaces})
    assert rt("run", "--bundle", str(b), cid, check=False).returncode == 137


def test_create_start_states(rt, bundle, cid, tmp_path, cgroup_parent):
    out = tmp_path / "out"
    b = bundle(["sh", "-c", "echo started > /proc/1/root/dev/null; sleep 30"])
    pid_file = tmp_path / "pid"
    rt("create", "--bundle", str(b), "--pid-file", str(pid_file), cid)
    st = rt.state(cid)
    assert st["status"] == "created"
    assert st["id"] == cid
    assert st["pid"] == int(pid_file.read_text())
    assert st["bundle"] == str(b)
    assert st["rootfs"] == str(b / "rootfs")
    assert list(st) == ["ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"]
    # the container's init waits in its cgroup, before exec
    assert alive(st["pid"])
    assert any(
        str(st["pid"]) in (d / "cgroup.procs").read_text()
        for d in cgroup_dirs(f"{cgroup_parent}/{cid}")
    )
    assert Path(f"/proc/{st['pid']}/exe").resolve() != Path("/bin/busybox")
    # still created, seen from a different process a moment later
    assert rt.state(cid)["status"] == "created"
    rt("start", cid)
    assert wait_status(rt, cid, "running")["status"] == "running"
    listed = json.loads(rt("list", "--format", "json").stdout)
    assert [c["id"] for c in listed] == [cid]
    assert listed[0]["status"] == "running"
    table = rt("list").stdout.splitlines()
    assert table[0].split() == ["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER"]
    assert table[1].split()[:3] == [cid, str(st["pid"]), "running"]
    rt("kill", cid, "KILL")
    st = wait_status(rt, cid, "stopped")
    assert st["status"] == "stopped"
    assert st["pid"] == 0
    rt("delete", cid)
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")
    assert not (rt.root / cid).exists()
    assert not out.exists()


def test_kill_names_numbers_and_all(rt, bundle, cid):
    b = bundle(["sh", "-c", "trap 'echo got-usr1' USR1; while :; do sleep 30 & wait; done"])
    rt("run", "--detach", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    for sig in ("SIGUSR1", "USR1", "10"):
        rt("kill", cid, sig)
    rt("kill", "--all", cid, "9")
    assert wait_status(rt, cid, "stopped")["status"] == "stopped"
    assert not alive(pid)
    proc = rt("kill", cid, "KILL", check=False)
    assert proc.returncode == 1 and "not running" in proc.stderr
    assert rt("kill", cid, "NOSUCHSIG", check=False).returncode == 1


def test_delete_refuses_running_unless_forced(rt, bundle, cid, cgroup_parent):
    b = bundle(["sleep", "30"])
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    proc = rt("delete", cid, check=False)
    assert proc.returncode == 1
    assert "not stopped: running" in proc.stderr
    rt("delete", "--force", cid)
    assert not alive(pid)
    assert rt("state", cid, check=False).returncode == 1
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")


def test_delete_of_created_container_kills_it(rt, bundle, cid):
    b = bundle(["true"])
    rt("create", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    rt("delete", cid)
    assert not alive(pid)


def test_start_twice_and_in_wrong_states(rt, bundle, cid):
    b = bundle(["sleep", "30"])
    rt("create", "--bundle", str(b), cid)
    rt("start", cid)
    proc = rt("start", cid, check=False)
    assert proc.returncode == 1 and "running" in proc.stderr
    rt("kill", cid, "KILL")
    wait_status(rt, cid, "stopped")
    proc = rt("start", cid, check=False)
    assert proc.returncode == 1 and "stopped" in proc.stderr
    assert rt("pause", cid, check=False).returncode == 1
    assert rt("exec", cid, "true", check=False).returncode == 1


def test_state_of_created_survives_creator_exit(rt, bundle, cid):
    b = bundle(["true"])
    rt("create", "--bundle", str(b), cid)
    # the runtime process that created it is gone; the state is still right
    assert rt.state(cid)["status"] == "created"
    rt("start", cid)
    assert wait_status(rt, cid, "stopped")["status"] == "stopped"


def test_keep_leaves_stopped_container(rt, bundle, cid):
    b = bundle(["true"])
    rt("run", "--keep", "--bundle", str(b), cid)
    assert rt.state(cid)["status"] == "stopped"
    rt("delete", cid)


def test_run_forwards_signals(rt, bundle, cid, tmp_path):
    import subprocess

    from tests.integration.runtime_helpers import RUNTIME

    b = bundle(
        ["sh", "-c", "trap 'echo term; exit 7' TERM; echo ready; while true; do sleep 0.1; done"]
    )
    p = subprocess.Popen(
        [RUNTIME, "--root", str(rt.root), "run", "--bundle", str(b), cid],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None
    assert p.stdout.readline() == "ready\n"
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 7
    assert p.stdout.read() == "term\n"


def test_pause_resume(rt, bundle, cid):
    b = bundle(["sh", "-c", "while true; do echo x >> /tmp/count; done"])
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    count = Path(f"/proc/{pid}/root/tmp/count")
    rt("pause", cid)
    assert rt.state(cid)["status"] == "paused"
    time.sleep(0.1)
    before = count.stat().st_size
    time.sleep(0.3)
    assert count.stat().st_size == before
    rt("resume", cid)
    assert rt.state(cid)["status"] == "running"
    time.sleep(0.3)
    assert count.stat().st_size > before


def test_ps_lists_container_processes(rt, bundle, cid):
    b = bundle(["sh", "-c", "sleep 30 & sleep 31 & wait"])
    rt("run", "-d", "--bundle", str(b), cid)
    time.sleep(0.3)
    pids = json.loads(rt("ps", "--format", "json", cid).stdout)
    assert rt.state(cid)["pid"] in pids
    assert len(pids) == 3
    table = rt("ps", cid).stdout
    assert "sleep 30" in table and "sleep 31" in table
    assert table.splitlines()[0].split()[:2] == ["UID", "PID"]


def test_spec_and_features(tmp_path, rt):
    rt("spec", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert spec["process"]["args"] == ["sh"] and spec["process"]["terminal"] is True
    assert rt("spec", "--bundle", str(tmp_path), check=False).returncode == 1
    (tmp_path / "config.json").unlink()
    rt("spec", "--rootless", "--bundle", str(tmp_path))
    spec = json.loads((tmp_path / "config.json").read_text())
    assert {"type": "user"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"][0]["hostID"] == os.geteuid()
    features = json.loads(rt("features").stdout)
    assert features["ociVersionMin"].startswith("1.0")
    assert set(features["linux"]["namespaces"]) == {
        "mount",
        "pid",
        "network",
        "ipc",
        "uts",
        "user",
        "cgroup",
        "time",
    }
    assert "SCMP_ACT_ERRNO" in features["linux"]["seccomp"]["actions"]


def test_version_and_help(rt):
    assert rt("--version").stdout.startswith("bulkhead-runtime version")
    assert "create" in rt("--help").stdout
