"""``bulkhead-runtime events``: runc's JSON lines of stats and OOM kills."""

from __future__ import annotations

import json
import subprocess
import time

from tests.integration.runtime_helpers import RUNTIME, RuntimeCLI

MiB = 1024 * 1024


def test_events_stats_prints_one_runc_stats_event(rt: RuntimeCLI, bundle, cid) -> None:
    b = bundle(["sleep", "30"], linux={"resources": {"pids": {"limit": 50}}})
    rt("run", "-d", "--bundle", str(b), cid)
    out = rt("events", "--stats", cid).stdout.splitlines()
    assert len(out) == 1
    event = json.loads(out[0])
    assert event["type"] == "stats" and event["id"] == cid
    data = event["data"]
    assert data["pids"] == {"current": 1, "limit": 50}
    assert data["memory"]["usage"]["usage"] > 0
    assert data["cpu"]["usage"]["total"] > 0


def test_events_reports_an_oom_kill_and_ends_with_the_container(
    rt: RuntimeCLI, bundle, cid
) -> None:
    # dd reads into a 64 MiB buffer: the memory limit kills it on the way;
    # the shell (the init) survives it, so the container keeps running. It
    # starts once events is watching (the test creates /tmp/go).
    limit = 32 * MiB
    b = bundle(
        [
            "sh",
            "-c",
            "until [ -e /tmp/go ]; do sleep 0.05; done; dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 30",
        ],
        linux={"resources": {"memory": {"limit": limit, "swap": limit}}},
    )
    rt("run", "-d", "--bundle", str(b), cid)
    pid = rt.state(cid)["pid"]
    proc = subprocess.Popen(
        [RUNTIME, "--root", str(rt.root), "events", "--interval", "200ms", cid],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        events = [json.loads(proc.stdout.readline())]
        with open(f"/proc/{pid}/root/tmp/go", "w"):
            pass
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            events.append(json.loads(line))
            if events[-1]["type"] == "oom":
                break
        assert {"type": "oom", "id": cid} in events
        assert events[0]["type"] == "stats"
        rt("delete", "--force", cid)
        assert proc.wait(timeout=10) == 0  # the cgroup is gone: events ends
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_events_refuses_bad_interval_and_stopped_container(rt: RuntimeCLI, bundle, cid) -> None:
    b = bundle(["true"])
    rt("run", "--keep", "--bundle", str(b), cid)
    bad = rt("events", "--interval", "soon", cid, check=False)
    assert bad.returncode == 1 and "invalid --interval 'soon'" in bad.stderr
    stopped = rt("events", "--stats", cid, check=False)
    assert stopped.returncode == 1 and "is not running" in stopped.stderr
