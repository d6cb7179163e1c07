"""``stats`` and ``top`` on the real kernel: the stock docker CLI, docker-py and our CLI.

Each test gets a fresh daemon (the ``daemon`` fixture of
:mod:`tests.integration.engine_fixtures`); containers run busybox.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from tests.integration.engine_fixtures import DOCKER, Daemon

from bulkhead.cgroups import detect
from bulkhead.cli.stats import cpu_percent
from bulkhead.engine.stats import chain

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed"),
]

HOG = ["sh", "-c", "while :; do :; done"]


@pytest.fixture
def daemon(daemon_factory: Any) -> Daemon:
    """The shared fixture's daemon; ``BULKHEAD_TEST_RUNTIME=runc`` (or crun) runs the
    containers of this file on that runtime (the cgroup is where runc puts it too)."""
    runtime = os.environ.get("BULKHEAD_TEST_RUNTIME")
    made: Daemon = daemon_factory(["--default-runtime", runtime] if runtime else None)
    return made


SLEEPERS = ["sh", "-c", "sleep 600 & sleep 600; wait"]


def ok(r: Any) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    out: str = r.stdout
    return out


def wait_for_processes(daemon: Daemon, name: str, count: int) -> None:
    """Until ``name`` runs ``count`` processes (sh forks its sleeps after run returns)."""
    client = daemon.client()
    deadline = time.monotonic() + 30
    while len(client.api.top(name)["Processes"]) != count:
        assert time.monotonic() < deadline, client.api.top(name)
        time.sleep(0.1)


def cgroup_cpu_ns(daemon: Daemon, cid: str) -> int:
    """The container's CPU time as its cgroup accounts it (what the stats must agree with)."""
    rel = f"{daemon.cgroup_parent.strip('/')}/{cid}"
    if detect().version == 2:
        text = Path(f"/sys/fs/cgroup/{rel}/cpu.stat").read_text()
        return int(dict(line.split() for line in text.splitlines())["usage_usec"]) * 1000
    return int(Path(f"/sys/fs/cgroup/cpuacct/{rel}/cpuacct.usage").read_text())


def host_idle_ticks() -> tuple[int, int]:
    """(idle + iowait ticks, all ticks) of /proc/stat's cpu line."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return fields[3] + fields[4], sum(fields)


def test_docker_stats_no_stream_and_docker_top(daemon: Daemon) -> None:
    ok(daemon.docker("run", "-d", "--name", "s1", "-m", "64m", "busybox", *SLEEPERS))
    wait_for_processes(daemon, "s1", 3)
    ok(daemon.docker("create", "--name", "idle", "busybox", "true"))
    table = ok(daemon.docker("stats", "--no-stream"))
    lines = table.splitlines()
    assert lines[0].split() == [
        *("CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT"),
        *("MEM", "%", "NET", "I/O", "BLOCK", "I/O", "PIDS"),
    ]
    assert len(lines) == 2 and " s1 " in lines[1]  # running containers only
    row = json.loads(ok(daemon.docker("stats", "--no-stream", "--format", "{{json .}}", "s1")))
    assert row["Name"] == "s1" and row["Container"] == "s1"
    assert row["MemUsage"].endswith(" / 64MiB"), row  # the -m limit
    usage = row["MemUsage"].split(" / ")[0]
    assert usage != "0B" and usage.endswith(("KiB", "MiB")), row
    assert row["PIDs"] == "3", row  # sh and two sleeps
    assert row["NetIO"] == "0B / 0B"  # --network none: no interface but lo
    assert row["CPUPerc"].endswith("%") and float(row["CPUPerc"][:-1]) < 50
    # -a adds the created container, with zeroes
    all_rows = ok(daemon.docker("stats", "--no-stream", "-a", "--format", "{{.Name}} {{.PIDs}}"))
    assert sorted(all_rows.split("\n")[:-1]) == ["idle 0", "s1 3"]

    since = f"{time.time():.3f}"
    top = ok(daemon.docker("top", "s1")).splitlines()
    assert top[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    commands = sorted(" ".join(line.split()[7:]) for line in top[1:])
    # (ps without a terminal cuts lines at 80 columns, for dockerd too)
    assert commands[0].startswith("sh -c sleep 600 &") and commands[1:] == ["sleep 600"] * 2
    pid = daemon.client().api.inspect_container("s1")["State"]["Pid"]
    assert str(pid) in [line.split()[1] for line in top[1:]]  # the host's PIDs
    custom = ok(daemon.docker("top", "s1", "-o", "pid,comm")).splitlines()
    assert custom[0].split() == ["PID", "COMMAND"]
    assert sorted(line.split()[1] for line in custom[1:]) == ["sh", "sleep", "sleep"]
    until = str(time.time() + 1)
    events = ok(
        daemon.docker("events", "--since", since, "--until", until, "--filter", "event=top")
    )
    assert len(events.splitlines()) == 2 and "container top" in events  # one per docker top
    assert "name=s1" in events.splitlines()[0]
    r = daemon.docker("top", "idle")
    assert r.returncode == 1 and "is not running" in r.stderr, r.stderr
    r = daemon.docker("top", "s1", "-o", "user=PID")
    assert r.returncode == 1 and 'specifying "user=PID" is not allowed' in r.stderr

    # our CLI: the same table and fields
    ours = ok(daemon.bulkhead("stats", "--no-stream", "s1")).splitlines()
    assert ours[0] == lines[0]
    assert ours[1].split()[1] == "s1" and ours[1].split()[-1] == "3"
    mine = json.loads(ok(daemon.bulkhead("stats", "--no-stream", "--format", "{{json .}}", "s1")))
    assert sorted(mine) == sorted(row) and mine["MemUsage"].endswith(" / 64MiB")
    assert ok(daemon.bulkhead("top", "s1")).splitlines()[0] == top[0]
    r = daemon.bulkhead("stats", "--no-stream", "nope")
    assert r.returncode == 1 and "No such container: nope" in r.stderr


def test_api_stats_stream_one_shot_and_stopped(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", SLEEPERS, detach=True, name="s2", mem_limit="32m")
    wait_for_processes(daemon, "s2", 3)
    # docker-py: stream=False waits for two samples, so precpu is filled
    doc = c.stats(stream=False)
    assert doc["name"] == "/s2" and doc["id"] == c.id
    assert doc["memory_stats"]["limit"] == 32 * 1024 * 1024
    assert doc["pids_stats"]["current"] == 3
    assert doc["precpu_stats"]["system_cpu_usage"] > 0
    assert doc["cpu_stats"]["system_cpu_usage"] > doc["precpu_stats"]["system_cpu_usage"]
    assert doc["cpu_stats"]["online_cpus"] == os.cpu_count()
    assert doc["preread"] < doc["read"]
    inactive = "total_inactive_file" if detect().version == 1 else "inactive_file"
    assert inactive in doc["memory_stats"]["stats"]
    assert "networks" not in doc  # --network none: Docker reports none
    one = client.api.stats(c.id, stream=False, one_shot=True)
    assert one["preread"] == "0001-01-01T00:00:00Z" and one["cpu_stats"]["cpu_usage"]
    # stream: one document a second, each with the previous one's CPU numbers
    stream = client.api.stats(c.id, stream=True, decode=True)
    first, second = next(stream), next(stream)
    stream.close()
    assert second["precpu_stats"] == first["cpu_stats"]
    assert second["preread"] == first["read"]
    # top through docker-py
    procs = c.top()
    assert len(procs["Processes"]) == 3 and "PID" in procs["Titles"]
    # --network host: the host's interfaces are not the container's (moby reports none)
    host = client.containers.run("busybox", ["sleep", "600"], detach=True, network_mode="host")
    assert "networks" not in host.stats(stream=False, one_shot=True)
    host.remove(force=True)

    c.kill()
    c.wait(timeout=30)
    stopped = c.stats(stream=False)
    assert stopped["name"] == "/s2" and stopped["id"] == c.id
    assert stopped["read"] == "0001-01-01T00:00:00Z" and stopped["memory_stats"] == {}
    # a stream of a stopped container: empty documents until the container is removed
    stream = client.api.stats(c.id, stream=True, decode=True)
    assert next(stream)["pids_stats"] == {}
    c.remove()
    deadline = time.monotonic() + 60
    for _ in stream:  # a document a second until the removal is seen, then the end
        assert time.monotonic() < deadline, "the stats stream outlived its container"


def test_cpu_percent_of_a_half_cpu_hog(daemon: Daemon) -> None:
    """``--cpus 0.5`` shows as ≈50% (the accuracy figure of the issue)."""
    client = daemon.client()
    c = client.containers.run("busybox", HOG, detach=True, name="hog", nano_cpus=500_000_000)
    time.sleep(1.0)  # let the hog get going
    idle0, total0 = host_idle_ticks()
    cg0 = cgroup_cpu_ns(daemon, c.id)
    t0 = time.monotonic()
    first = client.api.stats(c.id, stream=False, one_shot=True)
    time.sleep(4.0)
    second = chain(client.api.stats(c.id, stream=False, one_shot=True), first)
    cg1 = cgroup_cpu_ns(daemon, c.id)
    wall = time.monotonic() - t0
    idle1, total1 = host_idle_ticks()
    ours = cpu_percent(second)  # the docker CLI's formula on our documents
    truth = (cg1 - cg0) / (wall * 1e9) * 100  # the cgroup's own count over the same window
    assert abs(ours - truth) < 8, (ours, truth)
    assert ours < 65, ours  # the quota holds, and the figure shows it
    idle_cpus = (idle1 - idle0) / max(total1 - total0, 1) * (os.cpu_count() or 1)
    if idle_cpus >= 0.6:  # the hog was not starved by other load: only its quota held it
        assert 35 < ours < 65, (ours, idle_cpus)
    # the stock CLI's figure is in the same range
    row = json.loads(ok(daemon.docker("stats", "--no-stream", "--format", "{{json .}}", "hog")))
    assert 0 < float(row["CPUPerc"][:-1]) < 65, row
    c.remove(force=True)


def test_cli_stats_streams_until_interrupted(daemon: Daemon) -> None:
    import select
    import signal
    import subprocess
    import sys

    ok(daemon.docker("run", "-d", "--name", "s3", "busybox", *SLEEPERS))
    wait_for_processes(daemon, "s3", 3)
    # the stock CLI's live table: redrawn (cursor home, erase) with our streamed samples
    assert DOCKER is not None
    stock = subprocess.Popen(
        [DOCKER, "stats", "--format", "{{.Name}} {{.PIDs}}", "s3"],
        env=daemon.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert stock.stdout is not None
        got = b""
        deadline = time.monotonic() + 30
        while got.count(b"s3 3") < 4 and time.monotonic() < deadline:
            if select.select([stock.stdout], [], [], 1.0)[0]:
                got += os.read(stock.stdout.fileno(), 4096)
    finally:
        stock.kill()  # docker 28's stats outlives SIGTERM/SIGINT in this mode
        stock.communicate(timeout=30)
    assert got.count(b"s3 3") >= 4 and b"--" not in got, got[-400:]
    exe = str(Path(sys.executable).with_name("bulkhead"))
    proc = subprocess.Popen(
        [exe, "stats", "--format", "{{.Name}} {{.PIDs}}"],
        env=daemon.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1.0)[0]:
                seen.append(proc.stdout.readline())  # one line per refresh
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert seen == ["s3 3\n"] * 3
