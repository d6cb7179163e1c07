"""The daemon on a cgroup-v2-only kernel (the VM lane), driven by the real ``docker`` CLI.

One test (each docker call costs seconds under software emulation): a
detached container's limits land in its cgroup v2 files and are what it sees
through its own cgroup namespace; pause freezes it (``cgroup.freeze``) and
update rewrites its v2 limits, which stats shows; crun runs a container; a memory hog is OOM-killed and reported as
such; stop and remove leave no cgroup behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.integration.engine_fixtures import Daemon

CGROUP_ROOT = Path("/sys/fs/cgroup")
TIMEOUT = 300


def test_engine_limits_oom_and_cleanup_on_cgroup_v2(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()

    def docker(*args: str) -> str:
        r = d.docker(*args, timeout=TIMEOUT)
        assert r.returncode == 0, f"docker {' '.join(args)}: {r.stderr}"
        return r.stdout

    cid = docker(
        "run", "-d", "--name", "limited", "-m", "32m", "--pids-limit", "20", "--cpus", "0.5",
        "busybox", "sleep", "300",
    ).strip()  # fmt: skip
    cgroup = CGROUP_ROOT / d.cgroup_parent.lstrip("/") / cid
    assert (cgroup / "memory.max").read_text().strip() == str(32 << 20)
    assert (cgroup / "pids.max").read_text().strip() == "20"
    assert (cgroup / "cpu.max").read_text().split() == ["50000", "100000"]
    # A private cgroup namespace (Docker's default on v2): the container's cgroup is its root.
    assert docker("exec", "limited", "cat", "/sys/fs/cgroup/memory.max").strip() == str(32 << 20)
    assert docker("exec", "limited", "cat", "/proc/self/cgroup").strip() == "0::/"

    r = d.docker(
        "run", "--name", "hog", "-m", "16m", "busybox", "tail", "/dev/zero", timeout=TIMEOUT
    )
    assert r.returncode == 137, r.stderr
    state = json.loads(docker("inspect", "hog"))[0]["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137

    # pause freezes through cgroup.freeze (v2); update rewrites memory.max, memory.swap.max
    # (memory+swap - memory) and cpu.max of the running container
    docker("pause", "limited")
    assert (cgroup / "cgroup.freeze").read_text().strip() == "1"
    assert "frozen 1" in (cgroup / "cgroup.events").read_text()
    assert json.loads(docker("inspect", "limited"))[0]["State"]["Status"] == "paused"
    docker("unpause", "limited")
    assert "frozen 0" in (cgroup / "cgroup.events").read_text()
    docker("update", "--memory", "48m", "--memory-swap", "64m", "--cpus", "0.25", "limited")
    assert (cgroup / "memory.max").read_text().strip() == str(48 << 20)
    assert (cgroup / "memory.swap.max").read_text().strip() == str(16 << 20)
    assert (cgroup / "cpu.max").read_text().split() == ["25000", "100000"]
    # docker stats and top read the v2 cgroup: the updated limit, one process
    row = json.loads(docker("stats", "--no-stream", "--format", "{{json .}}", "limited"))
    assert row["MemUsage"].endswith(" / 48MiB") and row["PIDs"] == "1", row
    assert "sleep 300" in docker("top", "limited")

    # crun runs here (it refuses the v1 hybrid host): the engine writes the ociVersion it knows
    assert docker("run", "--rm", "--runtime", "crun", "busybox", "echo", "crun ok") == "crun ok\n"

    docker("stop", "-t", "1", "limited")
    docker("rm", "limited", "hog")
    assert not cgroup.exists()
