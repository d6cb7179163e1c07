"""Healthchecks without a kernel: the config merge, durations, status transitions, the
scheduler with a fake probe runner, the on-failure actions and the recovery of a probe that
ran while the daemon was killed (see :mod:`bulkhead.engine.health`)."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from bulkhead.cli.flags import UsageError
from bulkhead.cli.runflags import CREATE_COMMAND, build_create, go_duration_ns
from bulkhead.engine import health
from bulkhead.engine.containers import (
    Container,
    ContainerStore,
    Health,
    HealthResult,
    new_container_id,
    now_rfc3339,
)
from bulkhead.engine.engine import merged_config
from bulkhead.engine.hostconfig import parse_create_request
from bulkhead.engine.monitor import ExecStatus, MonitorClient
from bulkhead.errors import SpecError

MS = 1_000_000
S = 1_000_000_000


# -- the config ---------------------------------------------------------------------


class _Image:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = {"config": config}


def test_merge_fills_unset_fields_from_the_image() -> None:
    image = {"Test": ["CMD-SHELL", "check"], "Interval": 10 * S, "Retries": 5, "Timeout": 3 * S}
    user = {"Interval": 2 * S}
    assert health.merge_healthcheck(user, image) == {
        "Test": ["CMD-SHELL", "check"],
        "Interval": 2 * S,
        "Retries": 5,
        "Timeout": 3 * S,
    }
    assert health.merge_healthcheck(None, image) == image
    assert health.merge_healthcheck({"Test": ["NONE"]}, image)["Test"] == ["NONE"]  # type: ignore[index]
    assert health.merge_healthcheck(None, None) is None
    out = merged_config(_Image({"Healthcheck": image}), {"Healthcheck": {"Retries": 1}}, "h")  # type: ignore[arg-type]
    assert out["Healthcheck"]["Retries"] == 1 and out["Healthcheck"]["Test"] == image["Test"]
    assert "Healthcheck" not in merged_config(_Image({}), {}, "h")  # type: ignore[arg-type]


def test_probe_config_kinds_and_defaults() -> None:
    cfg = health.probe_config({"Healthcheck": {"Test": ["CMD", "ls", "/"]}})
    assert cfg is not None
    assert cfg.command == ["ls", "/"]
    assert (cfg.interval, cfg.timeout, cfg.start_period, cfg.retries) == (30 * S, 30 * S, 0, 3)
    assert cfg.start_interval == 5 * S
    shell = health.probe_config({"Healthcheck": {"Test": ["CMD-SHELL", "a && b"]}})
    assert shell is not None and shell.command == ["/bin/sh", "-c", "a && b"]
    own = health.probe_config(
        {"Shell": ["/bin/bash", "-ec"], "Healthcheck": {"Test": ["CMD-SHELL", "x"], "Retries": 1}}
    )
    assert own is not None and own.command == ["/bin/bash", "-ec", "x"] and own.retries == 1
    for none in ({}, {"Healthcheck": {"Test": ["NONE"]}}, {"Healthcheck": {"Interval": S}}):
        assert health.probe_config(none) is None
    assert health.probe_config({"Healthcheck": {"Test": ["WHAT", "x"]}}) is None


def test_go_durations_both_ways() -> None:
    for ns, text in [
        (0, "0s"),
        (500 * MS, "500ms"),
        (1500 * MS, "1.5s"),
        (30 * S, "30s"),
        (60 * S, "1m0s"),
        (90 * S, "1m30s"),
        (3600 * S, "1h0m0s"),
        (1500, "1.5µs"),
        (999, "999ns"),
    ]:
        assert health.go_duration(ns) == text
        assert go_duration_ns(text) == ns
    assert go_duration_ns("1.5h") == 5400 * S
    assert go_duration_ns("-1s") == -S
    assert go_duration_ns("0") == 0
    for bad, message in [
        ("1", 'time: missing unit in duration "1"'),
        ("", 'time: invalid duration ""'),
        ("1q", 'time: unknown unit "q" in duration "1q"'),
        ("s", 'time: invalid duration "s"'),
    ]:
        with pytest.raises(ValueError, match=message):
            go_duration_ns(bad)


def _create(*args: str) -> dict[str, Any]:
    plan = build_create(CREATE_COMMAND.parse([*args, "busybox"]), run=False, environ={})
    return plan.body


def test_cli_flags_errors_and_the_on_failure_label() -> None:
    body = _create("--health-cmd", "true", "--health-on-failure", "restart")
    assert body["Healthcheck"] == {"Test": ["CMD-SHELL", "true"]}
    assert body["Labels"] == {"bulkhead.health-on-failure": "restart"}
    assert "Healthcheck" not in _create()
    for args, message in [
        (("--no-healthcheck", "--health-retries", "1"), "conflicts with --health-\\* options"),
        (("--health-interval", "-1s"), "--health-interval cannot be negative"),
        (("--health-timeout", "-1s"), "--health-timeout cannot be negative"),
        (("--health-retries", "-1"), "--health-retries cannot be negative"),
        (("--health-start-period", "-1s"), "--health-start-period cannot be negative"),
        (("--health-interval", "1"), 'invalid argument "1" for "--health-interval" flag'),
        (("--health-on-failure", "explode"), "must be one of none, kill, restart, stop"),
    ]:
        with pytest.raises(UsageError, match=message):
            _create(*args)


def test_the_api_refuses_an_unknown_on_failure_action() -> None:
    with pytest.raises(SpecError, match=r"bulkhead\.health-on-failure"):
        parse_create_request(
            {"Image": "busybox", "Labels": {"bulkhead.health-on-failure": "explode"}}
        )
    parse_create_request({"Image": "busybox", "Labels": {"bulkhead.health-on-failure": "stop"}})


# -- transitions --------------------------------------------------------------------


def _result(code: int, start: str | None = None) -> HealthResult:
    return HealthResult(start=start or now_rfc3339(), end=now_rfc3339(), exit_code=code)


def test_transitions_streak_retries_and_log_length() -> None:
    cfg = health.ProbeConfig(command=["x"], retries=3)
    h = Health()
    health.apply_result(h, _result(1), cfg, 0.0)
    health.apply_result(h, _result(1), cfg, 0.0)
    assert (h.status, h.failing_streak) == ("starting", 2)
    health.apply_result(h, _result(1), cfg, 0.0)
    assert (h.status, h.failing_streak) == ("unhealthy", 3)
    health.apply_result(h, _result(0), cfg, 0.0)
    assert (h.status, h.failing_streak) == ("healthy", 0)
    for _ in range(2):
        health.apply_result(h, _result(7), cfg, 0.0)
    assert (h.status, h.failing_streak) == ("healthy", 2)  # below Retries: still healthy
    health.apply_result(h, _result(-1), cfg, 0.0)
    assert h.status == "unhealthy"
    assert len(h.log) == health.MAX_LOG
    assert [r.exit_code for r in h.log] == [1, 0, 7, 7, -1]


def test_start_period_failures_do_not_count_until_a_success() -> None:
    import time

    cfg = health.ProbeConfig(command=["x"], retries=1, start_period=3600 * S)
    started = time.time()
    h = Health()
    for _ in range(5):
        health.apply_result(h, _result(1), cfg, started)
    assert (h.status, h.failing_streak) == ("starting", 0)
    health.apply_result(h, _result(0), cfg, started)
    assert h.status == "healthy"
    health.apply_result(h, _result(1), cfg, started)  # healthy: the start period is over
    assert (h.status, h.failing_streak) == ("unhealthy", 1)
    late = health.ProbeConfig(command=["x"], retries=1, start_period=S)
    h = Health()
    health.apply_result(h, _result(1), late, started - 10)  # started 10 s ago: period over
    assert h.status == "unhealthy"


def test_next_delay_follows_moby() -> None:
    cfg = health.ProbeConfig(command=["x"], interval=10 * S, start_period=60 * S, start_interval=S)
    assert health.next_delay(cfg, "starting", 0.0) == 1.0
    assert health.next_delay(cfg, "healthy", 0.0) == 10.0
    assert health.next_delay(cfg, "starting", 55.0) == pytest.approx(5.0)
    assert health.next_delay(cfg, "starting", 70.0) == 10.0


def test_output_keeps_4096_bytes_of_frames() -> None:
    from bulkhead.engine.monitor import frame

    out = health._Output()
    data = frame(1, b"a" * 3000) + frame(2, b"b" * 3000)
    for i in range(0, len(data), 7):  # in odd pieces, as a socket delivers
        out.feed(data[i : i + 7])
    text = out.text()
    assert text == "a" * 3000 + "b" * 1096 + "..."
    small = health._Output()
    small.feed(frame(1, b"ok\n") + frame(2, "é".encode()))
    assert small.text() == "ok\né"


def test_render_and_ps_suffix() -> None:
    c = Container(id="a" * 64, name="x", created=now_rfc3339())
    c.config = {"Healthcheck": {"Test": ["CMD", "true"]}}
    assert health.status_suffix(c) == "" and health.filter_status(c) == "none"
    c.state.health = Health()
    assert health.status_suffix(c) == " (health: starting)"
    c.state.health.status = "unhealthy"
    assert health.status_suffix(c) == " (unhealthy)" and health.filter_status(c) == "unhealthy"
    c.state.health.log = [HealthResult(start="s", end="e", exit_code=1, output="o")]
    assert health.render(c.state.health) == {
        "Status": "unhealthy",
        "FailingStreak": 0,
        "Log": [{"Start": "s", "End": "e", "ExitCode": 1, "Output": "o"}],
    }
    assert health.summary(c) == {"Status": "none", "FailingStreak": 0}  # not running
    c.state.running = True
    c.state.health.failing_streak = 4
    assert health.summary(c) == {"Status": "unhealthy", "FailingStreak": 4}
    c.config = {"Healthcheck": {"Test": ["NONE"]}}
    assert health.status_suffix(c) == ""
    assert health.summary(c) == {"Status": "none", "FailingStreak": 0}


def test_old_records_load_without_health(tmp_path: Path) -> None:
    store = ContainerStore(tmp_path)
    c = Container(id=new_container_id(), name="old", created=now_rfc3339())
    doc = json.loads(msgspec.json.encode(c))
    del doc["state"]["health"]
    store._db.execute(
        "INSERT INTO containers (id, name, created, doc) VALUES (?, ?, ?, ?)",
        (c.id, c.name, c.created, json.dumps(doc).encode()),
    )
    assert store.get("old").state.health is None


# -- the scheduler --------------------------------------------------------------------


class FakeEngine:
    """What HealthMonitor uses of the engine, recording the calls."""

    def __init__(self, root: Path) -> None:
        self.store = ContainerStore(root / "db")
        self.root = root
        self.events: list[str] = []
        self.calls: list[str] = []

    def emit(self, c: Container, action: str, **extra: str) -> None:
        self.events.append(action)

    def paths(self, container_id: str) -> Any:
        raise AssertionError("the fake runner needs no bundle")

    def monitor(self, ref: str) -> MonitorClient:
        return MonitorClient(self.root / "exec" / ref)

    async def restart(
        self,
        ref: str,
        timeout: int | None = None,
        signal: str | None = None,
        *,
        policy: bool = False,
    ) -> None:
        self.calls.append("restart" if policy else "restart by user")

    async def kill(self, ref: str, signal: str | int = "SIGKILL") -> None:
        self.calls.append(f"kill {signal}")

    async def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> bool:
        self.calls.append("stop")
        return True


def _running(engine: FakeEngine, hc: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    c = Container(id=new_container_id(), name="c" + os.urandom(3).hex(), created=now_rfc3339())
    c.config = {"Healthcheck": hc, "Labels": labels or {}}
    c.state.status, c.state.running, c.state.started_at = "running", True, now_rfc3339()
    engine.store.add(c)
    return c.id


async def _until(check: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        assert loop.time() < deadline, "not reached in time"
        await asyncio.sleep(0.01)


@pytest.mark.parametrize("action", ["restart", "kill", "stop", "none"])
def test_scheduler_events_and_on_failure_action(tmp_path: Path, action: str) -> None:
    engine = FakeEngine(tmp_path)
    codes = [0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]
    seen: list[str] = []

    async def runner(c: Container, cfg: health.ProbeConfig, exec_id: str) -> HealthResult:
        seen.append(exec_id)
        stored = engine.store.get(c.id).state.health
        assert stored is not None and stored.probe_exec == exec_id  # recorded before it runs
        return _result(codes.pop(0) if codes else 1)

    cid = _running(
        engine,
        {"Test": ["CMD", "x"], "Interval": 5 * MS, "Retries": 2},
        {health.ON_FAILURE_LABEL: action},
    )

    async def main() -> None:
        mon = health.HealthMonitor(engine, runner)
        mon.on_start(cid)
        await _until(lambda: "health_status: unhealthy" in engine.events)
        await _until(lambda: action == "none" or engine.calls)
        mon.close()
        await asyncio.sleep(0)

    asyncio.run(main())
    assert engine.events[:2] == ["health_status: healthy", "health_status: unhealthy"]
    assert engine.events.count("health_status: unhealthy") == 1  # a change, not every failure
    want = {"restart": ["restart"], "kill": ["kill SIGKILL"], "stop": ["stop"], "none": []}
    assert engine.calls[:1] == want[action]
    h = engine.store.get(cid).state.health
    assert h is not None and h.status == "unhealthy" and h.probe_exec == ""
    assert len(set(seen)) == len(seen)  # a fresh exec id per probe
    if action == "restart":
        assert engine.store.get(cid).restart_count == 1


def test_scheduler_skips_paused_and_stops_with_the_container(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path)
    runs: list[str] = []

    async def runner(c: Container, cfg: health.ProbeConfig, exec_id: str) -> HealthResult:
        runs.append(exec_id)
        return _result(0)

    cid = _running(engine, {"Test": ["CMD", "x"], "Interval": 5 * MS})

    def pause(value: bool) -> None:
        def change(x: Container) -> None:
            x.state.paused = value

        engine.store.update(cid, change)

    async def main() -> None:
        mon = health.HealthMonitor(engine, runner)
        pause(True)
        mon.on_start(cid)
        await asyncio.sleep(0.1)
        assert runs == []  # no probe while paused
        assert cid in mon.running()
        pause(False)
        await _until(lambda: len(runs) >= 2)
        mon.stop(cid)
        await asyncio.sleep(0.05)
        count = len(runs)
        await asyncio.sleep(0.1)
        assert len(runs) == count and cid not in mon.running()

    asyncio.run(main())
    h = engine.store.get(cid).state.health
    assert h is not None and h.status == "healthy"


def test_resume_records_the_probe_a_killed_daemon_left(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path)
    cid = _running(engine, {"Test": ["CMD", "x"], "Interval": 3600 * S, "Timeout": 2 * S})
    exec_id = "e" * 64

    def interrupted(x: Container) -> None:
        x.state.health = Health(status="healthy", probe_exec=exec_id, probe_start=now_rfc3339())
        x.state.health.log = [_result(0)]

    engine.store.update(cid, interrupted)
    exec_dir = tmp_path / "exec" / cid / "exec"
    exec_dir.mkdir(parents=True)
    status = ExecStatus(pid=1, exit_code=137, timed_out=True)
    (exec_dir / f"{exec_id}.json").write_bytes(msgspec.json.encode(status))

    async def runner(c: Container, cfg: health.ProbeConfig, exec_id: str) -> HealthResult:
        raise AssertionError("no new probe within the hour")

    async def main() -> None:
        mon = health.HealthMonitor(engine, runner)
        mon.resume(cid)
        await _until(lambda: not engine.store.get(cid).state.health.probe_exec)  # type: ignore[union-attr]
        mon.close()

    asyncio.run(main())
    h = engine.store.get(cid).state.health
    assert h is not None
    assert [r.exit_code for r in h.log] == [0, -1]
    assert h.log[-1].output == "Health check exceeded timeout (2s)"
    assert h.status == "healthy" and h.failing_streak == 1
    assert not (exec_dir / f"{exec_id}.json").exists()  # read once, removed


def test_resume_clears_a_probe_that_never_started(tmp_path: Path) -> None:
    """The daemon died between recording the probe and its exec: nothing to report."""
    engine = FakeEngine(tmp_path)
    cid = _running(engine, {"Test": ["CMD", "x"], "Interval": 3600 * S})

    def marked(x: Container) -> None:
        x.state.health = Health(status="healthy", probe_exec="f" * 64, probe_start=now_rfc3339())

    engine.store.update(cid, marked)

    async def runner(c: Container, cfg: health.ProbeConfig, exec_id: str) -> HealthResult:
        raise AssertionError("no new probe within the hour")

    async def main() -> None:
        mon = health.HealthMonitor(engine, runner)
        mon.resume(cid)
        await _until(lambda: not engine.store.get(cid).state.health.probe_exec)  # type: ignore[union-attr]
        assert cid in mon.running()  # and the schedule goes on
        mon.close()

    asyncio.run(main())
    h = engine.store.get(cid).state.health
    assert h is not None and h.log == [] and h.status == "healthy"


def test_a_probe_that_cannot_run_is_a_failed_check(tmp_path: Path) -> None:
    engine = FakeEngine(tmp_path)
    cid = _running(engine, {"Test": ["CMD", "x"], "Interval": 5 * MS, "Retries": 2})
    calls: list[int] = []

    async def runner(c: Container, cfg: health.ProbeConfig, exec_id: str) -> HealthResult:
        calls.append(1)
        raise ValueError("config.json: bad JSON")

    async def main() -> None:
        mon = health.HealthMonitor(engine, runner)
        mon.on_start(cid)
        await _until(lambda: len(calls) >= 3)
        assert cid in mon.running()  # the schedule survives the error
        mon.close()

    asyncio.run(main())
    h = engine.store.get(cid).state.health
    assert h is not None and h.status == "unhealthy"
    assert h.log[-1].exit_code == -1 and h.log[-1].output == "config.json: bad JSON"
