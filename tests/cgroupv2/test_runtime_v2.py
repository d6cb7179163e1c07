"""``bulkhead-runtime`` end to end on a cgroup-v2-only kernel (the VM lane).

One container walks the verbs that touch its cgroup: create with resources,
start, ``events --stats``, ``update``, ``pause``/``resume``, ``ps``, ``kill``,
``delete``. Under software emulation each CLI call costs a second or two,
so this is one test, not one per verb; the verbs themselves are tested on
the host (cgroup v1) in tests/integration.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conftest import BundleFactory
from tests.integration.runtime_helpers import RuntimeCLI

CGROUP_ROOT = Path("/sys/fs/cgroup")
MiB = 1024 * 1024


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[RuntimeCLI]:
    runtime = RuntimeCLI(tmp_path / "state", timeout=300)
    yield runtime
    runtime.cleanup()


def test_container_lifecycle_on_cgroup_v2(cli: RuntimeCLI, make_bundle: BundleFactory) -> None:
    cid = "v2-" + uuid.uuid4().hex[:8]
    cgroup = f"/bulkhead/test-{uuid.uuid4().hex[:8]}/{cid}"
    bundle = make_bundle(
        ["sh", "-c", "while :; do echo x >> /tmp/ticks; sleep 0.2; done"],
        config={
            "linux": {
                "cgroupsPath": cgroup,
                "resources": {
                    "memory": {"limit": 64 * MiB},
                    "pids": {"limit": 20},
                    "cpu": {"quota": 50000, "period": 100000},
                },
            }
        },
    )
    directory = CGROUP_ROOT / cgroup.lstrip("/")
    try:
        cli("create", "--bundle", str(bundle), cid)
        pid = json.loads(cli("state", cid).stdout)["pid"]
        assert (directory / "memory.max").read_text().strip() == str(64 * MiB)
        assert (directory / "pids.max").read_text().strip() == "20"
        assert (directory / "cpu.max").read_text().split() == ["50000", "100000"]
        assert str(pid) in (directory / "cgroup.procs").read_text().split()
        # a v2 container gets the eBPF device program: /dev/null opens, a host disk would not
        cli("start", cid)

        stats = json.loads(cli("events", "--stats", cid).stdout)
        assert stats["type"] == "stats"
        assert stats["data"]["pids"]["limit"] == 20
        assert stats["data"]["memory"]["usage"]["limit"] == 64 * MiB

        cli("update", "--memory", str(32 * MiB), "--pids-limit", "30", cid)
        assert (directory / "memory.max").read_text().strip() == str(32 * MiB)
        assert (directory / "pids.max").read_text().strip() == "30"

        ticks = Path(f"/proc/{pid}/root/tmp/ticks")
        cli("pause", cid)
        assert json.loads(cli("state", cid).stdout)["status"] == "paused"
        assert "frozen 1" in (directory / "cgroup.events").read_text()
        before = ticks.stat().st_size
        time.sleep(1.0)
        assert ticks.stat().st_size == before
        cli("resume", cid)
        deadline = time.monotonic() + 30
        while ticks.stat().st_size == before:
            assert time.monotonic() < deadline, "no progress after resume"
            time.sleep(0.1)

        assert pid in json.loads(cli("ps", "--format", "json", cid).stdout)
        cli("kill", cid, "KILL")
        deadline = time.monotonic() + 30
        while json.loads(cli("state", cid).stdout)["status"] != "stopped":
            assert time.monotonic() < deadline
            time.sleep(0.2)
        cli("delete", cid)
        assert not directory.exists()
    finally:
        cli("delete", "--force", cid, check=False)
        parent = directory.parent
        if parent.exists():
            parent.rmdir()
