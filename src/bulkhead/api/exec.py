"""The exec endpoints: run another process in a running container (``docker exec``).

*exec instance*
    ``POST /containers/{id}/exec`` records what to run (``Cmd``, ``Env``,
    ``User``, ``WorkingDir``, ``Tty``, ``Privileged``, which streams to
    attach) under a new 64-hex id, in the daemon's memory only: Docker
    forgets exec instances when the daemon restarts too.
*exec start*
    ``POST /exec/{id}/start`` asks the container's monitor to run it
    (``{"op": "exec"}`` on ``ctl.sock``: the same connection then carries
    the process's stdio, multiplexed 8-byte frames or raw with a TTY) and
    hijacks the client's connection onto that stream; ``Detach`` runs it
    with nothing attached. A program that cannot be found or executed is,
    as in Docker, a message in the stream and exit code 127 or 126.
*process*
    the OCI process given to the runtime: the container's own process
    from its bundle's ``config.json`` (user, capabilities, rlimits,
    AppArmor, no_new_privileges) with the exec's ``args``, environment
    (the container's, then the exec's ``Env``), ``cwd``, ``user`` and
    ``terminal``; ``Privileged`` gives it every capability.

``GET /exec/{id}/json`` reports ``Running``, ``Pid`` and ``ExitCode`` (from
the monitor's ``exec/<id>.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bulkhead.api.containers import linger_close, parse_detach_keys, splice
from bulkhead.api.errors import BadRequest, Conflict
from bulkhead.api.routes import (
    Hijack,
    RawStream,
    Request,
    Response,
    Router,
    bool_field,
    frame,
    json_response,
)
from bulkhead.engine.options import RunOptions
from bulkhead.errors import BulkheadError, ContainerNotRunning, NoSuchExec, SpecError

if TYPE_CHECKING:
    from bulkhead.engine.context import Services
    from bulkhead.engine.engine import Engine

log = logging.getLogger("bulkhead.api.exec")

_TTY_STREAM = 1  # Docker writes exec errors on stdout

#: Ended exec instances kept for ``GET /exec/{id}/json`` (the oldest go first).
MAX_FINISHED = 1000


@dataclass
class ExecInstance:
    """One exec instance (Docker's ``ExecConfig`` plus its state)."""

    id: str
    container_id: str
    cmd: list[str]
    tty: bool = False
    attach_stdin: bool = False
    attach_stdout: bool = True
    attach_stderr: bool = True
    detach_keys: str = ""
    env: list[str] = field(default_factory=list)
    user: str = ""
    working_dir: str = ""
    privileged: bool = False
    console_size: tuple[int, int] | None = None
    running: bool = False
    started: bool = False
    exit_code: int | None = None
    pid: int = 0

    def inspect(self) -> dict[str, Any]:
        """Docker's ``ExecInspectResponse``."""
        return {
            "CanRemove": False,
            "ContainerID": self.container_id,
            "DetachKeys": self.detach_keys,
            "ExitCode": self.exit_code,
            "ID": self.id,
            "OpenStderr": self.attach_stderr,
            "OpenStdin": self.attach_stdin,
            "OpenStdout": self.attach_stdout,
            "ProcessConfig": {
                "arguments": self.cmd[1:],
                "entrypoint": self.cmd[0] if self.cmd else "",
                "privileged": self.privileged,
                "tty": self.tty,
                "user": self.user,
            },
            "Running": self.running,
            "Pid": self.pid,
        }


def _str(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"invalid {key}: expected a string, got {value!r}")
    return value


def _strs(doc: dict[str, Any], key: str) -> list[str]:
    value = doc.get(key)
    if value is None:
        return []
    if isinstance(value, str) and key == "Cmd":
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"invalid {key}: expected an array of strings")
    return list(value)


def _console_size(doc: dict[str, Any]) -> tuple[int, int] | None:
    size = doc.get("ConsoleSize")
    if size is None:
        return None
    if (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise BadRequest("invalid ConsoleSize: expected [height, width]")
    return (size[0], size[1]) if any(size) else None


def _exec_action(action: str, cmd: list[str]) -> str:
    """Docker's exec event action: ``exec_start: sh -c true`` (entrypoint, a space, the args)."""
    return f"{action}: {cmd[0] if cmd else ''} {' '.join(cmd[1:])}"


def _merge_env(base: list[str], extra: list[str]) -> list[str]:
    """Docker's ``ReplaceOrAppendEnvValues``: an override keeps the variable's place."""
    merged: dict[str, str] = {}
    for entry in [*base, *extra]:
        merged[entry.partition("=")[0]] = entry
    return list(merged.values())


class ExecAPI:
    """Exec instances of one daemon and their handlers."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.engine: Engine = services.engine
        self.instances: dict[str, ExecInstance] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    def exec_ids(self, container_id: str) -> list[str]:
        """The exec instances of ``container_id`` that have not ended (created or running)."""
        return [
            i.id
            for i in self.instances.values()
            if i.container_id == container_id and (i.running or not i.started)
        ]

    def get(self, exec_id: str) -> ExecInstance:
        inst = self.instances.get(exec_id)
        if inst is None:
            raise NoSuchExec(f"No such exec instance: {exec_id}")
        return inst

    # -- create

    async def create(self, req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("invalid JSON body: an ExecConfig object is required")
        c = self.engine.get(req.params["id"])
        if not c.state.running:
            raise ContainerNotRunning(f"container {c.id} is not running")
        if c.state.paused:
            raise Conflict(f"Container {c.id} is paused, unpause the container before exec")
        cmd = _strs(body, "Cmd")
        if not cmd:
            raise BadRequest("No exec command specified")
        env = _strs(body, "Env")
        for entry in env:
            if not entry or entry.startswith("="):
                raise BadRequest(f"invalid Env: invalid environment variable: {entry!r}")
        workdir = _str(body, "WorkingDir")
        if workdir and not workdir.startswith("/"):
            raise BadRequest(
                f"invalid WorkingDir: the working directory {workdir!r} is not absolute"
            )
        detach_keys = _str(body, "DetachKeys")
        parse_detach_keys(detach_keys)
        inst = ExecInstance(
            id=secrets.token_hex(32),
            container_id=c.id,
            cmd=cmd,
            tty=bool_field(body, "Tty"),
            attach_stdin=bool_field(body, "AttachStdin"),
            attach_stdout=bool_field(body, "AttachStdout"),
            attach_stderr=bool_field(body, "AttachStderr"),
            detach_keys=detach_keys,
            env=env,
            user=_str(body, "User"),
            working_dir=workdir,
            privileged=bool_field(body, "Privileged"),
            console_size=_console_size(body),
        )
        self._forget_finished()
        self.instances[inst.id] = inst
        self.engine.emit(c, _exec_action("exec_create", cmd), execID=inst.id)
        return json_response({"Id": inst.id}, 201)

    def _forget_finished(self) -> None:
        """Drop ended exec instances of removed containers, and the oldest ended ones past
        :data:`MAX_FINISHED` (Docker forgets them with their container too)."""
        idle = [i for i in self.instances.values() if not i.running]
        gone = {cid for cid in {i.container_id for i in idle} if not self.engine.store.exists(cid)}
        for inst in idle:
            if inst.container_id in gone:
                del self.instances[inst.id]
        finished = [i for i in self.instances.values() if i.started and not i.running]
        for inst in finished[: max(0, len(finished) - MAX_FINISHED)]:
            del self.instances[inst.id]

    # -- the process

    def _process(self, inst: ExecInstance) -> dict[str, Any]:
        """The OCI process for ``inst``, from the container's bundle (sync: reads files)."""
        paths = self.engine.paths(inst.container_id)
        with open(paths.config_json, "rb") as f:
            spec = json.load(f)
        base: dict[str, Any] = dict(spec.get("process") or {})
        process = dict(base)
        process["args"] = list(inst.cmd)
        process["terminal"] = inst.tty
        c = self.engine.get(inst.container_id)
        base_env = list(base.get("env") or [])
        own_term = any(e.startswith("TERM=") for e in (c.config.get("Env") or []))
        if not inst.tty and not own_term:
            # TERM=xterm is the container's TTY's, not the exec's (Docker sets it per exec)
            base_env = [e for e in base_env if not e.startswith("TERM=")]
        env = _merge_env(base_env, inst.env)
        if inst.tty and not any(e.startswith("TERM=") for e in env):
            env = _merge_env(env, ["TERM=xterm"])
        process["env"] = env
        if inst.working_dir:
            process["cwd"] = inst.working_dir
        if inst.user:
            from bulkhead.engine.spec import _user

            group_add = [str(g) for g in (c.host_config.get("GroupAdd") or [])]
            try:
                uid, gid, extra = _user(
                    str(paths.rootfs), inst.user, RunOptions(group_add=group_add)
                )
            except SpecError as exc:
                raise BadRequest(f"invalid User: {exc}") from None
            user: dict[str, Any] = {"uid": uid, "gid": gid}
            if extra:
                user["additionalGids"] = extra
            process["user"] = user
        if inst.privileged:
            from bulkhead.engine.spec import ALL_CAPABILITIES

            caps = list(ALL_CAPABILITIES)
            process["capabilities"] = {"bounding": caps, "effective": caps, "permitted": caps}
            process.pop("apparmorProfile", None)
        if inst.console_size:
            process["consoleSize"] = {"height": inst.console_size[0], "width": inst.console_size[1]}
        else:
            process.pop("consoleSize", None)
        return process

    def _status(self, inst: ExecInstance) -> Any:
        """The monitor's record of how the exec ended (None while it runs)."""
        from bulkhead.engine.monitor import MonitorClient

        return MonitorClient(self.engine.state_dir(inst.container_id)).exec_status(inst.id)

    def _finish(self, inst: ExecInstance, code: int | None = None) -> None:
        """Record how ``inst`` ended: ``code``, else the monitor's ``exec/<id>.json``.

        Without either it may still run (its client went away: the process
        goes on, as in Docker), unless its container is gone or stopped.
        """
        was_running = inst.running
        try:
            self._settle(inst, code)
        finally:
            if was_running and not inst.running:
                self._emit_die(inst)

    def _emit_die(self, inst: ExecInstance) -> None:
        """Docker's ``exec_die`` (``execID``, ``exitCode``), once the exec has ended."""
        with contextlib.suppress(BulkheadError):
            c = self.engine.get(inst.container_id)
            code = inst.exit_code if inst.exit_code is not None else 127
            self.engine.emit(c, "exec_die", execID=inst.id, exitCode=str(code))

    def _settle(self, inst: ExecInstance, code: int | None) -> None:
        if code is not None:
            inst.running, inst.exit_code = False, code
            return
        status = None
        with contextlib.suppress(BulkheadError, OSError):
            status = self._status(inst)
        if status is not None:
            inst.running, inst.exit_code = False, status.exit_code
            return
        try:
            container_running = self.engine.get(inst.container_id).state.running
        except BulkheadError:
            container_running = False
        if not container_running:
            inst.running = False
            if inst.exit_code is None:
                inst.exit_code = 137  # the container ended with the exec still running

    # -- start

    async def start(self, req: Request) -> Response | Hijack:
        inst = self.get(req.params["id"])
        body = req.json() or {}
        if not isinstance(body, dict):
            raise BadRequest("invalid JSON body: an ExecStartConfig object is expected")
        detach = bool_field(body, "Detach")
        if "Tty" in body and body["Tty"] is not None:
            inst.tty = bool_field(body, "Tty")
        size = _console_size(body)
        if size:
            inst.console_size = size
        if inst.started:
            raise Conflict(f"exec {inst.id} has already been started")
        client = self.engine.monitor(inst.container_id)  # 409 when not running
        if self.engine.get(inst.container_id).state.paused:
            raise Conflict(
                f"Container {inst.container_id} is paused, unpause the container before exec"
            )
        inst.started = True
        inst.running = True
        self.engine.emit(
            self.engine.get(inst.container_id), _exec_action("exec_start", inst.cmd), execID=inst.id
        )
        stdin = inst.attach_stdin and not detach

        async def run() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | BulkheadError:
            try:
                # an unknown user is the exec's failure (126), as the runtime's would be
                process = await asyncio.to_thread(self._process, inst)
                pid, reader, writer = await client.exec(inst.id, process, inst.tty, stdin)
            except BulkheadError as exc:
                code = int(getattr(exc, "exit_code", 126) or 126)
                self._finish(inst, code if code in (126, 127) else 126)
                return exc
            inst.pid = pid
            return reader, writer

        if detach:
            result = await run()
            if isinstance(result, BulkheadError):
                raise result
            task = asyncio.ensure_future(self._drain(inst, *result))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            return Response(200, b"", None)

        keys = parse_detach_keys(inst.detach_keys or req.query_str("detachKeys"))
        tty = inst.tty

        async def pump(stream: RawStream) -> None:
            # Started once the response is out, as Docker does: a client
            # whose HTTP reader buffers past the headers (docker-py) would
            # otherwise lose output that arrived with them.
            result = await run()
            if isinstance(result, BulkheadError):
                message = f"OCI runtime exec failed: {result}\r\n".encode()
                with contextlib.suppress(OSError):
                    await stream.write(message if tty else frame(_TTY_STREAM, message))
                await linger_close(stream)
                return
            try:
                await splice(stream, *result, stdin=stdin, detach_keys=keys, tty=tty)
            finally:
                self._finish(inst)
            await linger_close(stream)

        return Hijack(pump, multiplexed=not tty)

    async def _drain(
        self, inst: ExecInstance, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A detached exec: discard its output until it ends, then record its exit code."""
        try:
            with contextlib.suppress(OSError):
                if writer.can_write_eof():
                    writer.write_eof()
            while await reader.read(65536):
                pass
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._finish(inst)

    # -- resize / inspect

    async def resize(self, req: Request) -> Response:
        inst = self.get(req.params["id"])
        try:
            height = int(req.query_str("h") or "")
            width = int(req.query_str("w") or "")
        except ValueError:
            raise BadRequest("invalid resize: h and w must be integers") from None
        if height < 0 or width < 0:
            raise BadRequest("invalid resize: h and w must be non-negative")
        if not inst.running:
            raise Conflict(f"exec {inst.id} is not running")
        await self.engine.monitor(inst.container_id).exec_resize(inst.id, height, width)
        return Response(200, b"", "text/plain; charset=utf-8")

    async def inspect(self, req: Request) -> Response:
        inst = self.get(req.params["id"])
        if inst.running and inst.pid:
            self._finish(inst)
        return json_response(inst.inspect())


def register(router: Router, services: Services) -> None:
    """Add the exec endpoints to ``router``."""
    api = ExecAPI(services)
    # inspect's ExecIDs: the container's exec instances not ended yet (Docker
    # drops an exec from its container's list when it exits)
    services.engine.exec_ids = api.exec_ids
    router.add("POST", "/containers/{id}/exec", api.create)
    router.add("POST", "/exec/{id}/start", api.start)
    router.add("POST", "/exec/{id}/resize", api.resize)
    router.add("GET", "/exec/{id}/json", api.inspect)
