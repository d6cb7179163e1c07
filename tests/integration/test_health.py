"""Healthchecks run by the daemon: the stock docker CLI, our CLI, the image's HEALTHCHECK,
the on-failure actions, and a daemon killed while a probe runs.

Short intervals (docker's minimum is 1 ms) keep these fast; every wait is a
bounded poll, never a fixed sleep that must be long enough.
"""

from __future__ import annotations

import json
import os
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


def _api_get(daemon: Daemon, path: str) -> Any:
    import http.client
    import socket

    class Conn(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(daemon.socket)

    conn = Conn("localhost", timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        return json.loads(resp.read())
    finally:
        conn.close()


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
    # API 1.52's ContainerSummary.Health; older clients (docker 28.2 speaks 1.50) do not get it
    rows = _api_get(daemon, "/v1.52/containers/json?all=1")
    assert [r["Health"] for r in rows] == [{"Status": "healthy", "FailingStreak": 0}]
    assert "Health" not in _api_get(daemon, "/v1.50/containers/json")[0]
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
        r = daemon.docker(
            "events", "--since", "0", "--until", str(int(time.time()) + 1),
            "--filter", "event=health_status", "--format", "{{.Action}}",
        )  # fmt: skip
        assert r.stdout.split("\n")[:2] == ["health_status: healthy", "health_status: unhealthy"]
    # a probe's exec record is read once and removed: only the `docker exec` one stays
    assert len(list((daemon.exec_root / cid / "exec").glob("*.json"))) == 1
    assert daemon.docker("rm", "-f", "hc").returncode == 0


def test_timeout_start_period_and_no_health_for_plain_containers(daemon: Daemon) -> None:
    r = daemon.docker(
        "run", "-d", "--name", "slow", "--health-cmd", "echo out; exec sleep 30",
        "--health-interval", "200ms", "--health-timeout", "2s", "--health-retries", "1",
        "busybox", "sleep", "300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    h = _poll(lambda: (x := _health(daemon, "slow")) and x["Log"] and x)
    entry = h["Log"][0]
    assert entry["ExitCode"] == -1
    assert entry["Output"] == "Health check exceeded timeout (2s): out\n"
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


def _inspect(daemon: Daemon, name: str, fmt: str) -> Any:
    r = daemon.docker("inspect", "--format", "{{json " + fmt + "}}", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_image_healthcheck_merged_with_run_flags(daemon: Daemon) -> None:
    # docker commit keeps the container's Healthcheck: an image with a HEALTHCHECK
    r = daemon.docker(
        "create", "--name", "base", "--health-cmd", "cat /tmp/ok", "--health-interval", "300ms",
        "--health-retries", "1", "busybox",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert daemon.docker("commit", "base", "hcimg").returncode == 0
    image_hc = _inspect(daemon, "hcimg", ".Config.Healthcheck")
    assert image_hc["Test"] == ["CMD-SHELL", "cat /tmp/ok"]
    assert _inspect(daemon, "base", ".State.Health") is None  # never started: no Health

    up = ["sh", "-c", "touch /tmp/ok; exec sleep 300"]
    assert daemon.docker("run", "-d", "--name", "img", "hcimg", *up).returncode == 0
    _poll(lambda: _status(daemon, "img") == "healthy")
    # run flags override the image's fields one by one; the test stays the image's
    r = daemon.docker("run", "-d", "--name", "mix", "--health-retries", "4", "hcimg", *up)
    assert r.returncode == 0, r.stderr
    assert _inspect(daemon, "mix", ".Config.Healthcheck") == {
        "Test": ["CMD-SHELL", "cat /tmp/ok"],
        "Interval": 300_000_000,
        "Retries": 4,
    }
    _poll(lambda: _status(daemon, "mix") == "healthy")
    # --no-healthcheck turns the image's check off
    r = daemon.docker("run", "-d", "--name", "off", "--no-healthcheck", "hcimg", *up)
    assert r.returncode == 0, r.stderr
    # (moby's merge still copies the image's other fields, as here)
    assert _inspect(daemon, "off", ".Config.Healthcheck") == {
        "Test": ["NONE"],
        "Interval": 300_000_000,
        "Retries": 1,
    }
    assert _health(daemon, "off") is None
    assert "(" not in _ps_status(daemon, "off")
    assert daemon.docker("rm", "-f", "base", "img", "mix", "off").returncode == 0


def test_our_cli_health_on_failure_restart(daemon: Daemon) -> None:
    """The ask since 2016: a container whose probe starts failing is restarted."""
    r = daemon.bulkhead(
        "run", "-d", "--name", "svc", "--health-cmd", "cat /tmp/ok", "--health-interval", "300ms",
        "--health-retries", "2", "--health-on-failure", "restart", "--stop-timeout", "1",
        "busybox", "sh", "-c", "touch /tmp/ok; exec sleep 300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    labels = _inspect(daemon, "svc", ".Config.Labels")
    assert labels == {"bulkhead.health-on-failure": "restart"}
    _poll(lambda: _status(daemon, "svc") == "healthy")
    first_start = _inspect(daemon, "svc", ".State.StartedAt")
    ps = daemon.bulkhead("ps", "--filter", "health=healthy", "--format", "{{.Names}} {{.Status}}")
    assert ps.returncode == 0 and ps.stdout.startswith("svc Up ") and "(healthy)" in ps.stdout

    assert daemon.docker("exec", "svc", "rm", "/tmp/ok").returncode == 0
    _poll(lambda: _inspect(daemon, "svc", ".RestartCount") == 1)
    _poll(lambda: _status(daemon, "svc") == "healthy")  # the start made /tmp/ok again
    assert _inspect(daemon, "svc", ".State.StartedAt") != first_start
    assert _inspect(daemon, "svc", ".State.Running") is True
    events = _events(daemon, "svc")
    if events is not None:
        actions = [e["Action"] for e in events]
        unhealthy = actions.index("health_status: unhealthy")
        assert "restart" in actions[unhealthy:]
        assert actions[unhealthy:].count("health_status: healthy") == 1
    # a second failure is a second restart: the daemon's restarts add up (a user's would reset)
    assert daemon.docker("exec", "svc", "rm", "/tmp/ok").returncode == 0
    _poll(lambda: _inspect(daemon, "svc", ".RestartCount") == 2)
    assert daemon.docker("rm", "-f", "svc").returncode == 0


def test_docker_cli_label_kill_then_policy_and_stop(daemon: Daemon) -> None:
    # the stock docker CLI sets the action as a label; kill: SIGKILL, then the restart policy
    r = daemon.docker(
        "run", "-d", "--name", "hk", "--label", "bulkhead.health-on-failure=kill",
        "--restart", "on-failure", "--health-cmd", "cat /tmp/ok", "--health-interval", "300ms",
        "--health-retries", "1", "busybox", "sh", "-c", "touch /tmp/ok; exec sleep 300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    _poll(lambda: _status(daemon, "hk") == "healthy")
    assert daemon.docker("exec", "hk", "rm", "/tmp/ok").returncode == 0
    _poll(lambda: _inspect(daemon, "hk", ".RestartCount") >= 1)
    _poll(lambda: _status(daemon, "hk") == "healthy")
    events = _events(daemon, "hk")
    if events is not None:
        died = [e for e in events if e["Action"] == "die"]
        assert died and died[0]["Actor"]["Attributes"]["exitCode"] == "137"

    # stop: the container is stopped (and stays so, as a docker stop would leave it)
    r = daemon.docker(
        "run", "-d", "--name", "hs", "--label", "bulkhead.health-on-failure=stop",
        "--restart", "unless-stopped", "--stop-timeout", "1", "--health-cmd", "false", "--health-interval", "300ms",
        "--health-retries", "1", "busybox", "sleep", "300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    _poll(lambda: _inspect(daemon, "hs", ".State.Status") == "exited")
    assert _status(daemon, "hs") == "unhealthy"
    assert _inspect(daemon, "hs", ".RestartCount") == 0
    assert _ps_status(daemon, "hs").startswith("Exited (")

    bad = daemon.docker("run", "-d", "--label", "bulkhead.health-on-failure=boom", "busybox")
    assert bad.returncode != 0 and "bulkhead.health-on-failure" in bad.stderr
    assert daemon.docker("rm", "-f", "hk", "hs").returncode == 0


def _probe_pids(container_id: str, argv: bytes) -> list[int]:
    """The processes running ``argv`` (NUL-separated) in the container's cgroup."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if f.read() != argv:
                    continue
            with open(f"/proc/{entry}/cgroup") as f:
                if container_id not in f.read():
                    continue
        except OSError:
            continue
        out.append(int(entry))
    return out


def test_daemon_killed_while_a_probe_runs(daemon: Daemon) -> None:
    """kill -9 of the daemon mid-probe: the probe still ends at its timeout (its exec session
    kills it), the result is recorded once after the restart, and the probes go on."""
    r = daemon.docker(
        "run", "-d", "--name", "hf", "--health-cmd", "echo probing; exec sleep 37",
        "--health-interval", "300ms", "--health-timeout", "3s", "--health-retries", "10",
        "busybox", "sleep", "300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    cid = _inspect(daemon, "hf", ".Id")
    argv = b"sleep\x0037\x00"
    probe = _poll(lambda: _probe_pids(cid, argv), interval=0.05)
    daemon.stop(kill=True)
    # no daemon: the exec session kills the probe at its 3 s timeout all the same
    _poll(lambda: not any(os.path.exists(f"/proc/{p}") for p in probe), timeout=30)
    daemon.start()

    def recovered_and_one_more() -> Any:
        h = _health(daemon, "hf")
        outputs = [e["Output"] for e in h["Log"]] if h else []
        lost = "Health check exceeded timeout (3s)"  # its output died with the daemon
        return h if lost in outputs and outputs.index(lost) < len(outputs) - 1 else None

    h = _poll(recovered_and_one_more, timeout=60)
    lost = [e for e in h["Log"] if e["Output"] == "Health check exceeded timeout (3s)"]
    assert len(lost) == 1 and lost[0]["ExitCode"] == -1  # recorded once
    for e in h["Log"]:
        if e is not lost[0]:
            assert e["ExitCode"] == -1
            assert e["Output"] == "Health check exceeded timeout (3s): probing\n"
    starts = [e["Start"] for e in h["Log"]]
    assert len(set(starts)) == len(starts) and starts == sorted(starts)
    # each probe counted once (the log keeps the last 5)
    assert h["FailingStreak"] == len(h["Log"]) or (len(h["Log"]) == 5 < h["FailingStreak"])
    assert daemon.docker("rm", "-f", "hf").returncode == 0


def test_no_probes_while_paused(daemon: Daemon) -> None:
    r = daemon.docker(
        "run", "-d", "--name", "hp", "--health-cmd", "true", "--health-interval", "200ms",
        "busybox", "sleep", "300",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    _poll(lambda: _status(daemon, "hp") == "healthy")
    assert daemon.docker("pause", "hp").returncode == 0
    assert _ps_status(daemon, "hp").endswith("(Paused)")
    before = _health(daemon, "hp")
    assert before is not None
    time.sleep(1.5)  # seven intervals: none may probe (an absence needs a wait)
    during = _health(daemon, "hp")
    assert during is not None
    # nothing new: no probe started, and one frozen mid-run is not recorded
    assert during["Log"] == before["Log"]
    assert daemon.docker("unpause", "hp").returncode == 0
    last = during["Log"][-1]["Start"]
    _poll(lambda: (x := _health(daemon, "hp")) and x["Log"][-1]["Start"] > last)
    assert _status(daemon, "hp") == "healthy"
    assert daemon.docker("rm", "-f", "hp").returncode == 0


def test_docker_py_healthcheck_and_the_daemons_minimums(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run(
        "busybox",
        ["sleep", "300"],
        name="hpy",
        detach=True,
        healthcheck={"test": ["CMD", "true"], "interval": 200_000_000, "retries": 1},
    )
    _poll(
        lambda: (
            (c.reload() or True) and c.attrs["State"].get("Health", {}).get("Status") == "healthy"
        )
    )
    assert c.attrs["State"]["Health"]["Log"][-1]["ExitCode"] == 0
    c.remove(force=True)
    # the docker CLI refuses only negative values; the daemon refuses under 1 ms (moby's rule)
    r = daemon.docker("run", "-d", "--health-cmd", "true", "--health-interval", "10us", "busybox")
    assert r.returncode != 0 and "Interval in Healthcheck cannot be less than 1ms" in r.stderr
    r = daemon.docker("run", "-d", "--health-cmd", "true", "--health-timeout", "-1s", "busybox")
    assert r.returncode != 0 and "--health-timeout cannot be negative" in r.stderr
