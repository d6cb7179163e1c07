"""Healthchecks: the daemon runs each running container's probe and keeps its verdict.

Vocabulary (Docker's, moby ``daemon/health.go``):

*healthcheck*
    ``Config.Healthcheck``: ``Test`` is ``["CMD", prog, args...]`` (run as
    is), ``["CMD-SHELL", "text"]`` (run by the container's ``Shell``,
    default ``/bin/sh -c``) or ``["NONE"]`` (no check, also what
    ``--no-healthcheck`` sends); ``Interval``, ``Timeout``, ``StartPeriod``,
    ``StartInterval`` in nanoseconds (0: the default) and ``Retries``. The
    image's ``HEALTHCHECK`` fills in what the create request leaves unset,
    field by field (:func:`merge_healthcheck`).
*probe*
    one run of the test: an exec in the container (the container's user,
    working directory and environment, no TTY), its output kept up to
    :data:`MAX_OUTPUT` bytes. A probe still running after ``Timeout`` is
    SIGKILLed by its exec session (``kill_after``: also when the daemon
    died meanwhile) and counts as exit code -1, ``Health check exceeded
    timeout (30s)``. Each probe is ``exec_create``/``exec_start``/
    ``exec_die`` events, as in Docker.
*health*
    ``State.Health``: ``Status`` (``starting`` from each start until the
    first verdict, ``healthy`` after a probe exited 0, ``unhealthy`` after
    ``Retries`` failures in a row), ``FailingStreak`` and ``Log`` (the last
    :data:`MAX_LOG` results). During ``StartPeriod`` failures of a
    still-``starting`` container do not count; a success ends the start
    period. A change of status is a ``health_status: <status>`` event.
*schedule*
    the first probe comes one interval after the start (``StartInterval``
    between probes while ``starting`` inside the start period); the next
    one interval after the end of the previous. No probe runs while the
    container is paused.
*on failure*
    the label ``bulkhead.health-on-failure`` (:data:`ON_FAILURE_LABEL`; our
    CLI's ``--health-on-failure``, podman's flag) says what to do when the
    container turns unhealthy: ``none`` (the default), ``kill`` (SIGKILL;
    the restart policy then applies), ``restart`` (the engine's restart,
    counted in ``RestartCount``) or ``stop``.

:class:`HealthMonitor` runs one asyncio task per running container with a
probe, in the daemon. The health state lives in the container's record
(:class:`~bulkhead.engine.containers.Health`), written after every probe;
a probe's exec id is recorded before it starts, so that a daemon killed
while it ran records its result after the restart (:meth:`HealthMonitor.resume`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import struct
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from bulkhead.engine.containers import Container, Health, HealthResult, now_rfc3339, parse_rfc3339
from bulkhead.errors import BulkheadError, NoSuchContainer

if TYPE_CHECKING:
    from bulkhead.engine.bundle import ContainerPaths
    from bulkhead.engine.containers import ContainerStore
    from bulkhead.engine.monitor import MonitorClient

log = logging.getLogger("bulkhead.engine.health")

SECOND = 1_000_000_000
#: moby's defaults (nanoseconds) when a field is 0
DEFAULT_INTERVAL = 30 * SECOND
DEFAULT_TIMEOUT = 30 * SECOND
DEFAULT_START_PERIOD = 0
DEFAULT_START_INTERVAL = 5 * SECOND
DEFAULT_RETRIES = 3
#: probe output kept (bytes; more is cut and "..." appended)
MAX_OUTPUT = 4096
#: results kept in ``State.Health.Log``
MAX_LOG = 5
#: how long past its timeout a probe's stream may take to end (the session kills it)
KILL_GRACE = 10.0

STARTING, HEALTHY, UNHEALTHY, NONE = "starting", "healthy", "unhealthy", "none"
#: ``ps --filter health=``'s values
FILTER_VALUES = (STARTING, HEALTHY, UNHEALTHY, NONE)

ON_FAILURE_LABEL = "bulkhead.health-on-failure"
ON_FAILURE_ACTIONS = ("none", "kill", "restart", "stop")

_KEYS = ("Interval", "Timeout", "StartPeriod", "StartInterval", "Retries")


class ProbeConfig(msgspec.Struct, kw_only=True, frozen=True):
    """A healthcheck that runs: the command and the defaults applied (nanoseconds)."""

    command: list[str]
    interval: int = DEFAULT_INTERVAL
    timeout: int = DEFAULT_TIMEOUT
    start_period: int = DEFAULT_START_PERIOD
    start_interval: int = DEFAULT_START_INTERVAL
    retries: int = DEFAULT_RETRIES


def merge_healthcheck(
    user: dict[str, Any] | None, image: dict[str, Any] | None
) -> dict[str, Any] | None:
    """moby's merge: the request's ``Healthcheck``, its unset fields (empty ``Test``, 0) from the image's."""
    if not user:
        return dict(image) if image else None
    out = dict(user)
    if not image:
        return out
    if not out.get("Test"):
        out["Test"] = image.get("Test")
    for key in _KEYS:
        if not out.get(key) and image.get(key):
            out[key] = image[key]
    return {k: v for k, v in out.items() if v is not None}


def probe_config(config: dict[str, Any]) -> ProbeConfig | None:
    """The probe of a container's ``Config`` (None: no healthcheck, ``NONE`` or an unknown type)."""
    hc = config.get("Healthcheck")
    if not isinstance(hc, dict):
        return None
    test = hc.get("Test") or []
    if not isinstance(test, list) or not test:
        return None
    kind, rest = str(test[0]), [str(t) for t in test[1:]]
    if kind == "CMD":
        command = rest
    elif kind == "CMD-SHELL":
        shell = config.get("Shell") or ["/bin/sh", "-c"]
        command = [*(str(s) for s in shell), *rest]
    else:  # NONE, or a type moby warns about and ignores
        return None
    if not command:
        return None

    def ns(key: str, default: int) -> int:
        value = hc.get(key)
        return int(value) if isinstance(value, int) and value > 0 else default

    return ProbeConfig(
        command=command,
        interval=ns("Interval", DEFAULT_INTERVAL),
        timeout=ns("Timeout", DEFAULT_TIMEOUT),
        start_period=ns("StartPeriod", DEFAULT_START_PERIOD),
        start_interval=ns("StartInterval", DEFAULT_START_INTERVAL),
        retries=ns("Retries", DEFAULT_RETRIES),
    )


def on_failure_action(labels: dict[str, Any] | None) -> str:
    """The ``bulkhead.health-on-failure`` label's action (``none`` without it)."""
    value = str((labels or {}).get(ON_FAILURE_LABEL) or "none").strip().lower()
    return value if value in ON_FAILURE_ACTIONS else "none"


def go_duration(ns: int) -> str:
    """Go's ``time.Duration.String``: ``30s``, ``500ms``, ``1.5s``, ``1m0s``, ``1h0m0s``."""
    if ns == 0:
        return "0s"
    sign, u = ("-", -ns) if ns < 0 else ("", ns)

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        digits = f"{rest:0{len(str(unit)) - 1}d}".rstrip("0")
        return f"{whole}.{digits}" if digits else str(whole)

    if u < 1000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{frac(u, 1000)}µs"
    if u < SECOND:
        return f"{sign}{frac(u, 1_000_000)}ms"
    secs, rest = divmod(u, SECOND)
    hours, secs = divmod(secs, 3600)
    minutes, secs = divmod(secs, 60)
    text = frac(secs * SECOND + rest, SECOND) + "s"
    if hours:
        text = f"{hours}h{minutes}m{text}"
    elif minutes:
        text = f"{minutes}m{text}"
    return sign + text


def timeout_message(timeout_ns: int, output: str) -> str:
    """moby's text for a probe killed at its timeout."""
    text = f"Health check exceeded timeout ({go_duration(timeout_ns)})"
    return f"{text}: {output}" if output else text


def apply_result(health: Health, result: HealthResult, cfg: ProbeConfig, started_at: float) -> None:
    """moby's ``handleProbeResult``: log ``result`` and move ``health`` to its new status.

    ``started_at``: the container's start (seconds since the epoch), for the start period.
    """
    health.log = [*health.log, result][-MAX_LOG:]
    if result.exit_code == 0:
        health.failing_streak = 0
        health.status = HEALTHY
        return
    if health.status == STARTING and parse_rfc3339(result.start) - started_at < (
        cfg.start_period / SECOND
    ):
        return  # a failure inside the start period does not count
    health.failing_streak += 1
    if health.failing_streak >= cfg.retries:
        health.status = UNHEALTHY


def next_delay(cfg: ProbeConfig, status: str, elapsed: float) -> float:
    """Seconds until the next probe (moby's ``getInterval``); ``elapsed`` since the start."""
    interval = cfg.interval / SECOND
    start_period = cfg.start_period / SECOND
    if elapsed >= start_period:
        return interval
    remaining = start_period - elapsed
    if remaining < interval:
        return remaining
    return cfg.start_interval / SECOND if status == STARTING else interval


def render(health: Health) -> dict[str, Any]:
    """``inspect``'s ``State.Health``."""
    return {
        "Status": health.status,
        "FailingStreak": health.failing_streak,
        "Log": [
            {"Start": r.start, "End": r.end, "ExitCode": r.exit_code, "Output": r.output}
            for r in health.log
        ],
    }


def status_suffix(c: Container) -> str:
    """What ``docker ps`` appends to ``Up 5 seconds``: `` (healthy)``, `` (health: starting)``."""
    h = c.state.health
    if h is None or probe_config(c.config) is None:
        return ""
    return " (health: starting)" if h.status == STARTING else f" ({h.status})"


def filter_status(c: Container) -> str:
    """The container's value for ``ps --filter health=``: a status, or ``none``."""
    h = c.state.health
    return NONE if h is None or probe_config(c.config) is None else h.status


def summary(c: Container) -> dict[str, Any]:
    """``GET /containers/json``'s ``Health`` (API 1.52): ``none`` unless running with a check."""
    h = c.state.health
    if h is None or not c.state.running or probe_config(c.config) is None:
        return {"Status": NONE, "FailingStreak": 0}
    return {"Status": h.status, "FailingStreak": h.failing_streak}


class _Output:
    """A probe's output from its exec stream (8-byte frames): the first :data:`MAX_OUTPUT` bytes."""

    def __init__(self) -> None:
        self.pending = b""
        self.kept = bytearray()
        self.truncated = False

    def feed(self, data: bytes) -> None:
        self.pending += data
        while len(self.pending) >= 8:
            _, size = struct.unpack(">BxxxI", self.pending[:8])
            if len(self.pending) < 8 + size:
                if len(self.kept) >= MAX_OUTPUT:  # nothing more is kept: do not buffer it
                    self.truncated = self.truncated or size > 0
                return
            payload = self.pending[8 : 8 + size]
            self.pending = self.pending[8 + size :]
            room = MAX_OUTPUT - len(self.kept)
            self.kept += payload[: max(0, room)]
            if len(payload) > room:
                self.truncated = True

    def text(self) -> str:
        out = bytes(self.kept).decode("utf-8", errors="replace")
        return out + "..." if self.truncated else out


class EngineLike(Protocol):
    """What :class:`HealthMonitor` uses of the engine."""

    store: ContainerStore

    def emit(self, c: Container, action: str, **extra: str) -> None: ...
    def paths(self, container_id: str) -> ContainerPaths: ...
    def monitor(self, ref: str) -> MonitorClient: ...
    async def restart(
        self,
        ref: str,
        timeout: int | None = None,
        signal: str | None = None,
        *,
        policy: bool = False,
    ) -> None: ...
    async def kill(self, ref: str, signal: str | int = "SIGKILL") -> None: ...
    async def stop(
        self, ref: str, timeout: int | None = None, signal: str | None = None
    ) -> bool: ...


#: runs one probe: (the container, its probe, the exec id to run it as) -> its result
Runner = Callable[[Container, ProbeConfig, str], Awaitable[HealthResult]]


class HealthMonitor:
    """The daemon's health checker: one task per running container with a probe.

    Hooks (one call each in the engine): :meth:`on_start` after a start,
    :meth:`resume` for a container adopted after a daemon restart,
    :meth:`stop` when the container's process ended, :meth:`close` when the
    daemon stops. ``runner`` replaces the exec probe (unit tests).
    """

    def __init__(self, engine: EngineLike, runner: Runner | None = None) -> None:
        self.engine = engine
        self.runner: Runner = runner or self._exec_probe
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._actions: set[asyncio.Task[None]] = set()

    # -- hooks

    def on_start(self, container_id: str) -> None:
        """The container (re)started: ``starting``, no failures, probes from now on."""
        c = self._get(container_id)
        if c is None or probe_config(c.config) is None:
            return

        def reset(x: Container) -> None:
            h = x.state.health or Health()
            h.status, h.failing_streak = STARTING, 0
            h.probe_exec = h.probe_start = ""
            x.state.health = h

        with contextlib.suppress(NoSuchContainer):
            self.engine.store.update(container_id, reset)
        self._launch(container_id)

    def resume(self, container_id: str) -> None:
        """A running container adopted by a restarted daemon: probes go on where they were."""
        c = self._get(container_id)
        if c is None or not c.state.running or probe_config(c.config) is None:
            return
        if c.state.health is None:
            self.on_start(container_id)
            return
        self._launch(container_id)

    def stop(self, container_id: str) -> None:
        """The container is no longer running: no more probes."""
        task = self._tasks.pop(container_id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    def close(self) -> None:
        for cid in list(self._tasks):
            self.stop(cid)
        for task in list(self._actions):
            task.cancel()

    def running(self) -> set[str]:
        """Containers with a health task (tests)."""
        return {cid for cid, t in self._tasks.items() if not t.done()}

    # -- the loop

    def _launch(self, container_id: str) -> None:
        self.stop(container_id)
        task = asyncio.ensure_future(self._loop(container_id))
        self._tasks[container_id] = task

        def done(t: asyncio.Task[None]) -> None:
            if self._tasks.get(container_id) is t:
                del self._tasks[container_id]
            if not t.cancelled() and t.exception() is not None:
                log.error("health checks of %s failed", container_id[:12], exc_info=t.exception())

        task.add_done_callback(done)

    def _get(self, container_id: str) -> Container | None:
        try:
            return self.engine.store.get(container_id)
        except NoSuchContainer:
            return None

    async def _loop(self, container_id: str) -> None:
        try:
            await self._recover(container_id)
        except Exception as exc:  # the schedule goes on without that result
            log.warning("recovering the last health check of %s: %s", container_id[:12], exc)
        while True:
            c = self._get(container_id)
            if c is None or not c.state.running:
                return
            cfg = probe_config(c.config)
            if cfg is None:
                return
            status = c.state.health.status if c.state.health else STARTING
            elapsed = time.time() - parse_rfc3339(c.state.started_at)
            await asyncio.sleep(next_delay(cfg, status, elapsed))
            c = self._get(container_id)
            if c is None or not c.state.running or c.state.restarting:
                return
            if c.state.paused:
                continue
            exec_id = secrets.token_hex(32)
            start = now_rfc3339()
            if not self._mark(container_id, exec_id, start):
                return
            try:
                result = await self.runner(c, cfg, exec_id)
            except Exception as exc:  # moby: an error running the probe is a failed check
                log.warning("health check of %s: %s", container_id[:12], exc)
                result = HealthResult(start=start, end=now_rfc3339(), exit_code=-1, output=str(exc))
            result.start = start
            self._record(container_id, cfg, result, exec_id)

    def _mark(self, container_id: str, exec_id: str, start: str) -> bool:
        """Record the probe about to run (a daemon killed while it runs finds it)."""

        def mark(x: Container) -> None:
            h = x.state.health or Health()
            h.probe_exec, h.probe_start = exec_id, start
            x.state.health = h

        try:
            self.engine.store.update(container_id, mark)
        except NoSuchContainer:
            return False
        return True

    def _record(
        self, container_id: str, cfg: ProbeConfig, result: HealthResult, exec_id: str
    ) -> None:
        """Apply a probe's result to the stored health; events and the on-failure action."""
        seen: list[str] = []

        def change(x: Container) -> None:
            h = x.state.health or Health()
            x.state.health = h
            if h.probe_exec != exec_id:
                return  # restarted meanwhile (reset), or recorded already
            h.probe_exec = h.probe_start = ""
            if not x.state.running or x.state.restarting or x.state.paused:
                return  # moby ignores a result that comes after the stop (or pause)
            seen.append(h.status)
            apply_result(h, result, cfg, parse_rfc3339(x.state.started_at))
            seen.append(h.status)

        try:
            c = self.engine.store.update(container_id, change)
        except NoSuchContainer:
            return
        if len(seen) == 2 and seen[0] != seen[1]:
            self.engine.emit(c, f"health_status: {seen[1]}")
            if seen[1] == UNHEALTHY:
                self._on_unhealthy(c)

    async def _recover(self, container_id: str) -> None:
        """A probe that ran when the previous daemon was killed: record how it ended."""
        c = self._get(container_id)
        h = c.state.health if c is not None else None
        cfg = probe_config(c.config) if c is not None else None
        if c is None or h is None or cfg is None or not h.probe_exec:
            return
        exec_id, start = h.probe_exec, h.probe_start
        client = self.engine.monitor(container_id)
        from bulkhead.engine.monitor import exec_socket_path

        # still running: its session kills it at its timeout and then writes its status
        deadline = time.monotonic() + cfg.timeout / SECOND + KILL_GRACE
        status = client.exec_status(exec_id)
        while status is None and time.monotonic() < deadline:
            if not os.path.exists(exec_socket_path(client.state_dir, exec_id)):
                status = client.exec_status(exec_id)
                break
            await asyncio.sleep(0.1)
            status = client.exec_status(exec_id)
        self._forget_exec(client, exec_id)
        if status is None:  # never started, or its record is gone: nothing to report
            self._clear_probe(container_id, exec_id)
            return
        result = HealthResult(start=start, end=now_rfc3339(), exit_code=status.exit_code)
        if status.timed_out:
            result.exit_code = -1
            result.output = timeout_message(cfg.timeout, "")
        self._record(container_id, cfg, result, exec_id)

    def _clear_probe(self, container_id: str, exec_id: str) -> None:
        def clear(x: Container) -> None:
            if x.state.health is not None and x.state.health.probe_exec == exec_id:
                x.state.health.probe_exec = x.state.health.probe_start = ""

        with contextlib.suppress(NoSuchContainer):
            self.engine.store.update(container_id, clear)

    # -- on failure

    def _on_unhealthy(self, c: Container) -> None:
        action = on_failure_action(c.config.get("Labels"))
        if action == "none":
            return
        log.info("container %s is unhealthy: %s", c.id[:12], action)
        task = asyncio.ensure_future(self._act(c.id, action))
        self._actions.add(task)
        task.add_done_callback(self._actions.discard)

    async def _act(self, container_id: str, action: str) -> None:
        try:
            if action == "kill":
                await self.engine.kill(container_id, "SIGKILL")
            elif action == "stop":
                await self.engine.stop(container_id)
            elif action == "restart":
                await self.engine.restart(container_id, policy=True)  # counted, not reset

                def count(x: Container) -> None:
                    x.restart_count += 1

                self.engine.store.update(container_id, count)
        except BulkheadError as exc:
            log.warning("%s of unhealthy container %s failed: %s", action, container_id[:12], exc)

    # -- the exec probe

    async def _exec_probe(self, c: Container, cfg: ProbeConfig, exec_id: str) -> HealthResult:
        """Run the probe as an exec in the container; moby's ``cmdProbe.run``."""
        client = self.engine.monitor(c.id)
        text = f"{cfg.command[0]} {' '.join(cfg.command[1:])}"  # moby: entrypoint, a space, args
        self.engine.emit(c, f"exec_create: {text}", execID=exec_id)
        config_json = str(self.engine.paths(c.id).config_json)
        process = await asyncio.to_thread(probe_process, config_json, c, cfg.command)
        timeout = cfg.timeout / SECOND
        try:
            _, reader, writer = await client.exec(
                exec_id, process, False, False, kill_after=timeout
            )
        except BulkheadError as exc:
            return HealthResult(end=now_rfc3339(), exit_code=-1, output=str(exc))
        self.engine.emit(c, f"exec_start: {text}", execID=exec_id)
        out = _Output()
        timed_out = False

        async def pump() -> None:
            while chunk := await reader.read(65536):
                out.feed(chunk)

        try:
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()
            try:
                await asyncio.wait_for(pump(), timeout)
            except TimeoutError:
                timed_out = True
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(pump(), KILL_GRACE)
        except OSError:
            pass
        finally:
            writer.close()
        end = now_rfc3339()
        status = client.exec_status(exec_id)
        self._forget_exec(client, exec_id)
        code = status.exit_code if status is not None else -1
        self.engine.emit(c, "exec_die", execID=exec_id, exitCode=str(code))
        if timed_out or (status is not None and status.timed_out):
            return HealthResult(
                end=end, exit_code=-1, output=timeout_message(cfg.timeout, out.text())
            )
        if status is None:
            return HealthResult(
                end=end, exit_code=-1, output=f"healthcheck for container {c.id} has no exit code"
            )
        return HealthResult(end=end, exit_code=code, output=out.text())

    @staticmethod
    def _forget_exec(client: MonitorClient, exec_id: str) -> None:
        """A probe's ``exec/<id>.json`` is read once: remove it (probes are many)."""
        with contextlib.suppress(OSError):
            os.unlink(os.path.join(client.state_dir, "exec", exec_id + ".json"))


def probe_process(config_json: str, c: Container, command: list[str]) -> dict[str, Any]:
    """The OCI process of a probe: the container's own (user, cwd, capabilities, environment)
    with ``command``, no terminal (sync: reads the bundle's ``config.json``)."""
    with open(config_json, "rb") as f:
        spec = json.load(f)
    process: dict[str, Any] = dict(spec.get("process") or {})
    process["args"] = list(command)
    process["terminal"] = False
    process.pop("consoleSize", None)
    own_term = any(str(e).startswith("TERM=") for e in (c.config.get("Env") or []))
    if not own_term:  # TERM=xterm is the container's TTY's, not the probe's
        process["env"] = [e for e in process.get("env") or [] if not str(e).startswith("TERM=")]
    return process
