"""pause / unpause / update, through the real docker CLI, docker-py and bulkhead's CLI.

Each test gets a fresh daemon (the ``daemon_factory`` fixture: its own roots
and cgroup parent, clean-up and leak checks). The pause and update tests
run on the built-in runtime and on runc: the engine drives the first as a
library and the second as a command (``runc pause``, ``runc update
--resources -``). What the kernel does is read back from the container's
cgroup (``freezer.state``, ``memory.limit_in_bytes``, ``cpu.cfs_quota_us``,
``pids.max``) under the daemon's cgroup parent.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker  # type: ignore[import-untyped]
import pytest
from tests.integration.engine_fixtures import DOCKER, Daemon

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed"),
]

#: A container that counts, one number per line, ~20 a second.
COUNTER = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i; sleep 0.05; done"]


@pytest.fixture(params=["bulkhead", "runc"])
def daemon(daemon_factory: Any, request: pytest.FixtureRequest) -> Daemon:
    made: Daemon = daemon_factory(["--default-runtime", str(request.param)])
    return made


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def fails(r: subprocess.CompletedProcess[str], *words: str) -> str:
    assert r.returncode != 0, f"expected a failure\nstdout: {r.stdout}\nstderr: {r.stderr}"
    for w in words:
        assert w in r.stderr, f"{w!r} not in {r.stderr!r}"
    return r.stderr


def wait_for(what: str, check: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def cgroup_file(d: Daemon, controller: str, cid: str, name: str) -> Path:
    return Path("/sys/fs/cgroup", controller, d.cgroup_parent.lstrip("/"), cid, name)


def cgroup_read(d: Daemon, controller: str, cid: str, name: str) -> str:
    return cgroup_file(d, controller, cid, name).read_text().strip()


def inspect(d: Daemon, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(d.docker("inspect", ref)))[0]
    return doc


def count(d: Daemon, ref: str) -> int:
    """The counter's last number (from the container's log)."""
    lines = ok(d.docker("logs", ref)).split()
    return int(lines[-1]) if lines else 0


def start_counter(d: Daemon, name: str, *extra: str) -> str:
    cid = ok(d.docker("run", "-d", "--name", name, *extra, "busybox", *COUNTER)).strip()
    wait_for("the counter to count", lambda: count(d, name) >= 2)
    return cid


# -- pause / unpause ----------------------------------------------------------------------


def test_pause_freezes_and_unpause_thaws(daemon: Daemon) -> None:
    since = str(int(time.time()) - 1)
    cid = start_counter(daemon, "counter")
    assert cgroup_read(daemon, "freezer", cid, "freezer.state") == "THAWED"
    assert ok(daemon.docker("pause", "counter")).strip() == "counter"
    assert cgroup_read(daemon, "freezer", cid, "freezer.state") == "FROZEN"
    state = inspect(daemon, "counter")["State"]
    assert (state["Status"], state["Running"], state["Paused"]) == ("paused", True, True)
    ps = ok(daemon.docker("ps", "--format", "{{.Names}} {{.Status}} {{.State}}"))
    assert "(Paused)" in ps and "paused" in ps, ps
    assert ok(daemon.docker("ps", "-q", "--filter", "status=paused")).strip() == cid[:12]

    # frozen: the counter does not move (its log is read twice, a second apart)
    frozen_at = count(daemon, "counter")
    time.sleep(1.0)
    assert count(daemon, "counter") == frozen_at

    fails(daemon.docker("pause", "counter"), f"Container {cid} is already paused")
    fails(
        daemon.docker("exec", "counter", "true"),
        f"Container {cid} is paused, unpause the container before exec",
    )

    assert ok(daemon.docker("unpause", "counter")).strip() == "counter"
    assert cgroup_read(daemon, "freezer", cid, "freezer.state") == "THAWED"
    state = inspect(daemon, "counter")["State"]
    assert (state["Status"], state["Paused"]) == ("running", False)
    wait_for("the counter to count again", lambda: count(daemon, "counter") > frozen_at + 2)
    fails(daemon.docker("unpause", "counter"), f"Container {cid} is not paused")
    ok(daemon.docker("exec", "counter", "true"))
    until = str(int(time.time()) + 1)
    events = ok(
        daemon.docker(
            "events", "--since", since, "--until", until, "--filter", "container=counter",
            "--filter", "event=pause", "--filter", "event=unpause", "--format", "{{.Action}}",
        )
    ).split()  # fmt: skip
    assert events == ["pause", "unpause"]
    ok(daemon.docker("rm", "-f", "counter"))


def test_pause_refused_when_not_running(daemon: Daemon) -> None:
    cid = ok(daemon.docker("create", "--name", "idle", "busybox", "true")).strip()
    fails(daemon.docker("pause", "idle"), f"Container {cid} is not running")
    fails(daemon.docker("unpause", "idle"), f"Container {cid} is not paused")
    r = daemon.bulkhead("pause", "idle", "nosuch")
    assert r.returncode == 1
    assert f"Container {cid} is not running" in r.stderr and "nosuch" in r.stderr


def test_stop_kill_rm_restart_of_a_paused_container(daemon: Daemon) -> None:
    # stop: the stop signal is sent, then the container is thawed to receive it
    start_counter(daemon, "stopme")
    ok(daemon.docker("pause", "stopme"))
    ok(daemon.docker("stop", "-t", "1", "stopme"))
    state = inspect(daemon, "stopme")["State"]
    assert (state["Status"], state["Paused"]) == ("exited", False)

    # kill: SIGKILL, then thawed (a v1-frozen task dies only when thawed)
    start_counter(daemon, "killme")
    ok(daemon.docker("pause", "killme"))
    ok(daemon.docker("kill", "killme"))
    wait_for("the kill", lambda: inspect(daemon, "killme")["State"]["Status"] == "exited")
    state = inspect(daemon, "killme")["State"]
    assert (state["ExitCode"], state["Paused"]) == (137, False)

    # rm: refused while paused; rm -f kills it
    start_counter(daemon, "rmme")
    ok(daemon.docker("pause", "rmme"))
    fails(daemon.docker("rm", "rmme"), "paused and must be unpaused first")
    ok(daemon.docker("rm", "-f", "rmme"))
    assert daemon.docker("inspect", "rmme").returncode != 0

    # restart: running again, not paused
    start_counter(daemon, "again")
    ok(daemon.docker("pause", "again"))
    ok(daemon.docker("restart", "-t", "1", "again"))
    state = inspect(daemon, "again")["State"]
    assert (state["Status"], state["Paused"]) == ("running", False)
    ok(daemon.docker("rm", "-f", "stopme", "killme", "again"))


def test_paused_container_stays_paused_across_a_daemon_restart(daemon: Daemon) -> None:
    cid = start_counter(daemon, "sleeper")
    ok(daemon.bulkhead("pause", "sleeper"))
    daemon.restart(kill=True)
    state = inspect(daemon, "sleeper")["State"]
    assert (state["Status"], state["Running"], state["Paused"]) == ("paused", True, True)
    assert cgroup_read(daemon, "freezer", cid, "freezer.state") == "FROZEN"
    assert ok(daemon.bulkhead("unpause", "sleeper")).strip() == "sleeper"
    frozen_at = count(daemon, "sleeper")
    wait_for("the counter after unpause", lambda: count(daemon, "sleeper") > frozen_at + 2)
    ok(daemon.docker("rm", "-f", "sleeper"))


def test_docker_py_pause_unpause_update(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", COUNTER, detach=True, name="py")
    c.pause()
    c.reload()
    assert c.status == "paused"
    c.unpause()
    c.reload()
    assert c.status == "running"
    reply = c.update(mem_limit="64m", memswap_limit="128m", cpu_shares=512)
    assert isinstance(reply, dict) and "Warnings" in reply
    c.reload()
    assert c.attrs["HostConfig"]["Memory"] == 64 << 20
    assert c.attrs["HostConfig"]["CpuShares"] == 512
    assert cgroup_read(daemon, "memory", c.id, "memory.limit_in_bytes") == str(64 << 20)
    assert cgroup_read(daemon, "cpu", c.id, "cpu.shares") == "512"
    c.remove(force=True)


# -- update ---------------------------------------------------------------------------------


def test_update_running_container_changes_its_cgroup(daemon: Daemon) -> None:
    cid = start_counter(daemon, "upd", "-m", "64m")
    assert cgroup_read(daemon, "memory", cid, "memory.limit_in_bytes") == str(64 << 20)

    assert ok(daemon.docker("update", "--memory", "100m", "--memory-swap", "200m", "upd")) == (
        "upd\n"
    )
    assert cgroup_read(daemon, "memory", cid, "memory.limit_in_bytes") == str(100 << 20)
    assert cgroup_read(daemon, "memory", cid, "memory.memsw.limit_in_bytes") == str(200 << 20)
    ok(daemon.docker("update", "--cpus", "0.5", "upd"))
    assert cgroup_read(daemon, "cpu", cid, "cpu.cfs_quota_us") == "50000"
    assert cgroup_read(daemon, "cpu", cid, "cpu.cfs_period_us") == "100000"
    ok(daemon.docker("update", "--pids-limit", "50", "--restart", "on-failure:3", "upd"))
    assert cgroup_read(daemon, "pids", cid, "pids.max") == "50"

    hc = inspect(daemon, "upd")["HostConfig"]
    assert (hc["Memory"], hc["MemorySwap"], hc["NanoCpus"], hc["PidsLimit"]) == (
        100 << 20,
        200 << 20,
        500_000_000,
        50,
    )
    assert hc["RestartPolicy"] == {"Name": "on-failure", "MaximumRetryCount": 3}

    # kept across a restart of the container (config.json was rewritten too)
    ok(daemon.docker("restart", "-t", "0", "upd"))
    assert cgroup_read(daemon, "memory", cid, "memory.limit_in_bytes") == str(100 << 20)
    assert cgroup_read(daemon, "cpu", cid, "cpu.cfs_quota_us") == "50000"
    assert cgroup_read(daemon, "pids", cid, "pids.max") == "50"

    # -1 lifts the pids limit; bulkhead's CLI speaks the same flags
    assert ok(daemon.bulkhead("update", "--pids-limit", "-1", "upd")) == "upd\n"
    assert cgroup_read(daemon, "pids", cid, "pids.max") == "max"
    ok(daemon.docker("rm", "-f", "upd"))


def test_update_stopped_container_is_kept_for_its_start(daemon: Daemon) -> None:
    cid = ok(daemon.docker("create", "--name", "later", "busybox", *COUNTER)).strip()
    ok(daemon.docker("update", "--memory", "48m", "--cpu-quota", "20000", "later"))
    assert inspect(daemon, "later")["HostConfig"]["Memory"] == 48 << 20
    ok(daemon.docker("start", "later"))
    assert cgroup_read(daemon, "memory", cid, "memory.limit_in_bytes") == str(48 << 20)
    assert cgroup_read(daemon, "cpu", cid, "cpu.cfs_quota_us") == "20000"
    ok(daemon.docker("rm", "-f", "later"))


def test_bad_updates_are_refused_and_change_nothing(daemon: Daemon) -> None:
    cid = start_counter(daemon, "strict", "-m", "64m", "--cpu-quota", "30000")
    before = inspect(daemon, "strict")["HostConfig"]

    fails(daemon.docker("update", "--memory", "1m", "strict"), "Minimum memory limit")
    fails(
        daemon.docker("update", "--memory", "64m", "--memory-swap", "32m", "strict"),
        "memoryswap limit should be larger than memory limit",
    )
    fails(
        daemon.docker("update", "--cpus", "0.5", "strict"),
        "Nano CPUs cannot be updated as CPU Quota has already been set",
    )
    fails(
        daemon.docker("update", "--memory", "512m", "strict"),
        "Memory limit should be smaller than already set memoryswap limit",
    )
    fails(daemon.docker("update", "--blkio-weight", "5", "strict"), "blkio weight")
    fails(daemon.docker("update", "--restart", "sometimes", "strict"), "restart policy")
    fails(daemon.bulkhead("update", "strict"), "you must provide one or more flags")

    assert inspect(daemon, "strict")["HostConfig"] == before
    assert cgroup_read(daemon, "memory", cid, "memory.limit_in_bytes") == str(64 << 20)
    assert cgroup_read(daemon, "cpu", cid, "cpu.cfs_quota_us") == "30000"
    ok(daemon.docker("rm", "-f", "strict"))


def test_update_below_usage_is_a_clear_conflict(daemon: Daemon) -> None:
    # ~24 MiB in the container's /dev/shm (tmpfs: charged to its memory cgroup, and it
    # cannot be reclaimed but by swapping, which the memory+swap limit forbids)
    ok(
        daemon.docker(
            "run", "-d", "--name", "hog", "-m", "64m", "--memory-swap", "64m", "busybox",
            "sh", "-c", "head -c 25000000 /dev/zero > /dev/shm/fill; echo ready; sleep 1000",
        )
    )  # fmt: skip
    wait_for("the hog", lambda: "ready" in ok(daemon.docker("logs", "hog")))
    cid = inspect(daemon, "hog")["Id"]
    r = daemon.docker("update", "--memory", "8m", "--memory-swap", "8m", "hog")
    fails(r, f"Cannot update container {cid}: ", "8388608")
    with pytest.raises(docker.errors.APIError) as refused:
        daemon.client().api.update_container("hog", mem_limit="8m", memswap_limit="8m")
    assert refused.value.status_code == 409
    assert inspect(daemon, "hog")["HostConfig"]["Memory"] == 64 << 20
    assert cgroup_read(daemon, "memory", cid, "memory.limit_in_bytes") == str(64 << 20)
    assert inspect(daemon, "hog")["State"]["Running"]
    ok(daemon.docker("rm", "-f", "hog"))


# -- commit ---------------------------------------------------------------------------------


def test_commit_of_a_running_container_leaves_it_running(daemon: Daemon) -> None:
    cid = start_counter(daemon, "snap")
    ok(daemon.docker("exec", "snap", "sh", "-c", "echo hello > /greeting"))
    image = ok(daemon.docker("commit", "snap", "snapped:1")).strip()
    assert image.startswith("sha256:")
    state = inspect(daemon, "snap")["State"]
    assert (state["Status"], state["Paused"]) == ("running", False)
    assert cgroup_read(daemon, "freezer", cid, "freezer.state") == "THAWED"
    out = ok(daemon.docker("run", "--rm", "snapped:1", "cat", "/greeting"))
    assert out == "hello\n"
    # --pause=false, and a paused container stays paused through a commit
    ok(daemon.docker("commit", "--pause=false", "snap", "snapped:2"))
    assert inspect(daemon, "snap")["State"]["Status"] == "running"
    ok(daemon.docker("pause", "snap"))
    ok(daemon.docker("commit", "snap", "snapped:3"))
    assert inspect(daemon, "snap")["State"]["Status"] == "paused"
    ok(daemon.docker("rm", "-f", "snap"))
