"""Healthchecks run by the daemon: the stock docker CLI, our CLI, the image's HEALTHCHECK,
the on-failure actions, and a daemon killed while a probe runs.

Short intervals (docker's minimum is 1 ms) keep these fast; every wait is a
bounded poll, never a fixed sleep that must be long enough.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from tests.integration.engine_fixtures import Daemon


def _poll(what: Callable[[], Any], timeout: float = 60.0, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = what()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"not reached within {timeout}s (last: {last!r})")


def _health(daemon: Daemon, name: str) -> dict[str, Any] | None:
    r = daemon.docker("inspect", "--format", "{{json .State.Health}}", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


def _status(daemon: Daemon, name: str) -> str:
    h = _health(daemon, name)
    return "" if h is None else str(h["Status"])


def _ps_status(daemon: Daemon, name: str) -> str:
    r = daemon.docker("ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Status}}")
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def _events(daemon: Daemon, name: str) -> list[dict[str, Any]] | None:
    """The container's events so far (None while the daemon has no ``/events`` yet)."""
    r = daemon.docker(
        "events", "--since", "0", "--until", str(int(time.time()) + 1),
        "--filter", f"container={name}", "--format", "{{json .}}",
    )  # fmt: skip
    if "page not found" in r.stderr:
        return None
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_docker_cli_health_cmd_healthy_unhealthy_ps_and_events(daemon: Daemon) -> None:
    r = daemon.docker(
        "run", "-d", "--name", "hc", "--health-cmd", "cat /tmp/ok",
        "--health-interval", "300ms", "--health-timeout", "5s", "--health-retries", "2",
        "busybox", "sh", "-c", "touch /tmp/ok; exec sleep 300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cfg = json.loads(
        daemon.docker("inspect", "--format", "{{json .Config.Healthcheck}}", "hc").stdout
    )
    assert cfg == {
        "Test": ["CMD-SHELL", "cat /tmp/ok"],
        "Interval": 300_000_000,
        "Timeout": 5_000_000_000,
        "Retries": 2,
    }
    _poll(lambda: _status(daemon, "hc") == "healthy")
    assert _ps_status(daemon, "hc").endswith("(healthy)")
    h = _health(daemon, "hc")
    assert h is not None and h["FailingStreak"] == 0
    entry = h["Log"][-1]
    assert entry["ExitCode"] == 0 and entry["Output"] == ""
    assert set(entry) == {"Start", "End", "ExitCode", "Output"}

    def ids(flt: str) -> str:
        out = daemon.docker("ps", "-q", "--no-trunc", "--filter", f"health={flt}").stdout
        return out.strip()

    cid = daemon.docker("inspect", "--format", "{{.Id}}", "hc").stdout.strip()
    assert ids("healthy") == cid
    assert ids("unhealthy") == "" and ids("none") == ""
    bad = daemon.docker("ps", "--filter", "health=sick")
    assert bad.returncode != 0 and "Unrecognised filter value for health: sick" in bad.stderr

    assert daemon.docker("exec", "hc", "rm", "/tmp/ok").returncode == 0
    _poll(lambda: _status(daemon, "hc") == "unhealthy")
    h = _health(daemon, "hc")
    assert h is not None and h["FailingStreak"] >= 2
    failed = h["Log"][-1]
    assert failed["ExitCode"] == 1 and "No such file or directory" in failed["Output"]
    assert len(h["Log"]) <= 5
    assert _ps_status(daemon, "hc").endswith("(unhealthy)")
    assert ids("unhealthy") == cid

    events = _events(daemon, "hc")
    if events is not None:
        actions = [e["Action"] for e in events]
        assert actions.count("health_status: healthy") == 1
        assert actions.count("health_status: unhealthy") == 1
        assert actions.index("health_status: healthy") < actions.index("health_status: unhealthy")
        assert "exec_create: /bin/sh -c cat /tmp/ok" in actions
        assert "exec_start: /bin/sh -c cat /tmp/ok" in actions
        die = [e for e in events if e["Action"] == "exec_die"]
        assert die and {"execID", "exitCode"} <= set(die[-1]["Actor"]["Attributes"])
    # a probe's exec record is read once and removed: only the `docker exec` one stays
    assert len(list((daemon.exec_root / cid / "exec").glob("*.json"))) == 1
    assert daemon.docker("rm", "-f", "hc").returncode == 0


def test_timeout_start_period_and_no_health_for_plain_containers(daemon: Daemon) -> None:
    r = daemon.docker(
        "run", "-d", "--name", "slow", "--health-cmd", "echo out; exec sleep 30",
        "--health-interval", "200ms", "--health-timeout", "500ms", "--health-retries", "1",
        "busybox", "sleep", "300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    h = _poll(lambda: (x := _health(daemon, "slow")) and x["Log"] and x)
    entry = h["Log"][0]
    assert entry["ExitCode"] == -1
    assert entry["Output"] == "Health check exceeded timeout (500ms): out\n"
    _poll(lambda: _status(daemon, "slow") == "unhealthy")

    # failures inside the start period do not count; the first success ends it
    r = daemon.docker(
        "run", "-d", "--name", "boot", "--health-cmd", "cat /tmp/up",
        "--health-interval", "200ms", "--health-retries", "1",
        "--health-start-period", "1h", "--health-start-interval", "200ms",
        "busybox", "sleep", "300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    h = _poll(lambda: (x := _health(daemon, "boot")) and len(x["Log"]) >= 3 and x)
    assert h["Status"] == "starting" and h["FailingStreak"] == 0
    assert "(health: starting)" in _ps_status(daemon, "boot")
    daemon.docker("exec", "boot", "touch", "/tmp/up")
    _poll(lambda: _status(daemon, "boot") == "healthy")
    daemon.docker("exec", "boot", "rm", "/tmp/up")
    _poll(lambda: _status(daemon, "boot") == "unhealthy")

    # no healthcheck: no Health at all, no suffix, health=none
    assert daemon.docker("run", "-d", "--name", "plain", "busybox", "sleep", "300").returncode == 0
    assert _health(daemon, "plain") is None
    assert _ps_status(daemon, "plain").startswith("Up ")
    assert "(" not in _ps_status(daemon, "plain")
    none = daemon.docker("ps", "--format", "{{.Names}}", "--filter", "health=none").stdout.split()
    assert none == ["plain"]
    assert daemon.docker("rm", "-f", "slow", "boot", "plain").returncode == 0
