"""The container monitor: one small process per running container (conmon's job).

The daemon never forks (it has threads), and a container must outlive the
daemon (live restore). So between them sits the *monitor*, forked by the
zygote (:mod:`bulkhead.engine.zygote`) for each container. It is
single-threaded: one ``selectors`` loop, no asyncio, no threads.

What the monitor does, in order:

1. becomes a *child subreaper* (``PR_SET_CHILD_SUBREAPER``): the container's
   init (and every ``exec``'d process), orphaned when the runtime's
   intermediate processes exit, is reparented to it, so it can ``waitpid``
   for their exit status;
2. makes the container's stdio: pipes (stdin only with ``-i``, else
   ``/dev/null``), or a pseudo-terminal whose master the runtime hands over
   (``--console-socket`` for a runc-compatible binary, ``hold_console`` for
   the in-process runtime);
3. ``create`` through the runtime: the init waits at ``exec.fifo``. A
   runc-compatible binary is run as a command; bulkhead's own runtime is
   called as a library in a short-lived forked *helper* (see
   :func:`_in_helper`: the pages it touches die with it, the monitor stays
   small);
4. writes ``monitor.json`` {monitor_pid, monitor_start, init_pid}, listens on
   ``ctl.sock`` and ``attach.sock`` and replies to its spawner;
5. waits for ``{"op":"start"}`` on ``ctl.sock`` (so that an attach made
   between create and start misses no output), then ``start`` (for the
   in-process runtime without poststart hooks: the monitor writes
   ``exec.fifo`` itself);
6. copies every chunk of output to the json-file log
   (:class:`~bulkhead.engine.jsonlog.JsonLogWriter`) and to every attached
   client, and attached clients' input to the container's stdin;
7. when the init exits: drains the output, reads the cgroup's ``oom_kill``
   counter, writes ``exit.json`` {exit_code, oom_killed, finished_at, error}
   atomically, ``delete --force``\\ s the runtime container, closes the
   clients (gracefully: see :class:`_Conn`) and exits.

Steps 5 to 7 are a long, mostly idle wait, and a Python process costs ~20
MiB of RSS (~2.5 MiB of its own) for it; conmon, in C, about 2 MiB (0.4
PSS). So once step 4 is done the monitor *hands over*
(:func:`_hand_over`): it execve()s ``bh-monitor`` (``monitor_loop.c``,
built next to this module by ``make``), which keeps the pid, the fds, the
container's init as its child and the subreaper flag, and runs steps 5 to 7
with the same protocols, files and log format. With the in-process runtime
the hand-over comes earlier, while the helper still creates the container
(the exec's ~2 ms then cost nothing): ``bh-monitor`` reads the helper's
answer and does the rest of step 4 (``monitor.json``, the reply, the OOM
baseline). A spare monitor (see the zygote) has done what needs no
container (:func:`monitor_prologue`) before its request comes. What needs the runtime in
Python it asks the zygote for, which forks a helper from its warm state:
an *exec session* per ``exec`` (:func:`serve_exec`: the client's connection
is passed over with SCM_RIGHTS; it owns the exec's stdio and
``exec/<id>.json`` and listens at :func:`exec_socket_path` for
``exec_resize``) and the runtime's ``delete`` at the end
(:func:`serve_delete`). Without the binary (or with
``BULKHEAD_MONITOR_LOOP=python``) the Python loop below serves, the same way.

Signals: SIGTERM, SIGINT and SIGQUIT sent to the monitor go to the
container's init (as conmon does); the monitor stays to record the exit.
The container starts with every signal at its default disposition.

Protocols (all on unix sockets under the monitor's *state dir*,
``<exec_root>/<id>/``):

``ctl.sock``
    one JSON line request, one JSON line reply: ``start``, ``kill``
    {signal, all}, ``resize`` {height, width}, ``exec`` {exec_id, process
    (OCI process JSON), tty, stdin, kill_after (seconds, optional: the
    process is SIGKILLed then, daemon or not)}, ``exec_resize`` {exec_id, height,
    width}, ``ping``. Errors are ``{"error": message, "kind": kind}`` with
    kind ``not_found`` (exit 127), ``not_executable`` (126),
    ``bad_request``, ``not_running`` or ``runtime``. After an ``exec``
    reply ``{"pid": N}`` the same connection is the exec's stream: output as
    Docker's 8-byte frames (raw with a tty), input is the exec's stdin
    (half-close = EOF); ``exec/<exec_id>.json`` {pid, exit_code} is written
    before the stream closes.
``attach.sock``
    the client sends one JSON line {stdin, stdout, stderr}; the monitor
    answers one line ``{"ok": true, "tty": bool}`` once the client is
    registered (no output after it is missed), then output (8-byte frames,
    raw with a tty) flows to the client and the client's bytes to the
    container's stdin. With ``stdin_once`` the client's half-close closes
    the container's stdin. Closed after the container exited and its output
    was drained.

The client side, used by the engine in the daemon, is :class:`MonitorClient`
(asyncio) together with :class:`~bulkhead.engine.zygote.ZygoteClient`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import os
import re
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec

from bulkhead.errors import ContainerError, ContainerNotRunning

if TYPE_CHECKING:
    from bulkhead.engine.jsonlog import LogPosition

# ---------------------------------------------------------------------- shared models


class MonitorConfig(msgspec.Struct, kw_only=True):
    """What a monitor needs to know about its container.

    ``runtime``: ``"bulkhead"`` is the in-process runtime library; anything
    else is the path (or PATH name) of a runc-compatible binary (runc, crun,
    bulkhead-runtime). ``state_dir`` is ``<exec_root>/<id>``; ``log_path``
    None means no log. ``log_max_size`` in bytes, 0 = unlimited.
    """

    container_id: str
    bundle: str
    runtime: str = "bulkhead"
    runtime_root: str
    state_dir: str
    log_path: str | None = None
    log_max_size: int = 0
    log_max_files: int = 1
    tty: bool = False
    stdin_open: bool = False
    stdin_once: bool = False


class ExitStatus(msgspec.Struct, kw_only=True):
    """``exit.json``: how the container's init ended (exit code 128+N for signal N)."""

    exit_code: int
    oom_killed: bool = False
    #: RFC 3339 with nanoseconds, UTC
    finished_at: str = ""
    #: why the monitor could not observe a normal exit ("" when it did)
    error: str = ""


class ExecStatus(msgspec.Struct, kw_only=True):
    """``exec/<exec_id>.json``: how an exec'd process ended."""

    pid: int
    exit_code: int
    #: killed by the monitor at the exec's ``kill_after`` (a healthcheck probe's timeout)
    timed_out: bool = False


class MonitorInfo(msgspec.Struct, kw_only=True):
    """``monitor.json``: who the monitor is (pid + start time, against pid reuse)."""

    monitor_pid: int
    monitor_start: int = 0
    init_pid: int = 0


class MonitorError(ContainerError):
    """The monitor (or the runtime it drives) refused or failed an operation.

    ``kind`` is the wire's error kind; ``exit_code`` what ``docker run``
    exits with for it (125: the engine's failure; 126/127 as a shell).
    """

    exit_code = 125
    kind = "runtime"

    def __init__(self, message: str, kind: str | None = None) -> None:
        if kind is not None:
            self.kind = kind
        super().__init__(message)


class ProcessNotFound(MonitorError):
    """The container's (or exec's) program does not exist (Docker's exit code 127)."""

    exit_code = 127
    kind = "not_found"


class ProcessNotExecutable(MonitorError):
    """The program exists but cannot be executed (Docker's exit code 126)."""

    exit_code = 126
    kind = "not_executable"


class MonitorBadRequest(MonitorError):
    """A request the monitor does not understand, or that does not fit the container."""

    kind = "bad_request"


class MonitorNotRunning(MonitorError, ContainerNotRunning):
    """The container (or its monitor) is not running."""

    kind = "not_running"


_KINDS: dict[str, type[MonitorError]] = {
    "not_found": ProcessNotFound,
    "not_executable": ProcessNotExecutable,
    "bad_request": MonitorBadRequest,
    "not_running": MonitorNotRunning,
}


def error_from_reply(reply: dict[str, Any]) -> MonitorError:
    """The exception for an ``{"error", "kind"}`` reply."""
    kind = str(reply.get("kind") or "runtime")
    message = str(reply.get("error") or "monitor error")
    cls = _KINDS.get(kind) or classify_runtime_message(message)
    return cls(message, kind)


def classify_runtime_message(message: str) -> type[MonitorError]:
    """Docker's reading of a runtime's start error: 127 for a missing program, 126 for denied."""
    low = message.lower()
    if "executable file not found" in low or "no such file or directory" in low:
        return ProcessNotFound
    if "permission denied" in low or "exec format error" in low or "is a directory" in low:
        return ProcessNotExecutable
    return MonitorError


EXIT_FILE = "exit.json"
INFO_FILE = "monitor.json"
#: the monitor's :class:`MonitorConfig`, for the processes the zygote forks on its behalf
#: (exec sessions, the runtime delete) once the monitor runs as ``bh-monitor``
CONFIG_FILE = "monitor-config.json"
#: the zygote's socket, in the exec root (the parent of every state dir)
ZYGOTE_SOCK = "zygote.sock"
#: The monitor's steady state in C (``monitor_loop.c``), built next to this module by
#: ``make``: after its set-up the monitor execve()s it (see :func:`_hand_over`).
MONITOR_LOOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bh-monitor")
CTL_SOCK = "ctl.sock"
ATTACH_SOCK = "attach.sock"
_EXEC_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed stream frame: [stream, 0, 0, 0, big-endian length] + data."""
    return struct.pack(">BxxxI", stream, len(data)) + data


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file and rename (readers see all or nothing)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _proc_start(pid: int) -> int | None:
    from bulkhead.runtime.state import proc_start_time

    return proc_start_time(pid)


# ---------------------------------------------------------------------- client (daemon side)


class MonitorClient:
    """Talk to the monitor of one container (``state_dir`` = ``<exec_root>/<id>``)."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = os.fspath(state_dir)
        self.ctl_path = os.path.join(self.state_dir, CTL_SOCK)
        self.attach_path = os.path.join(self.state_dir, ATTACH_SOCK)

    async def _open(self, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            return await asyncio.open_unix_connection(path, limit=1 << 20)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise MonitorNotRunning(
                f"the container's monitor does not answer at {path}: {exc.strerror}"
            ) from None

    async def _request(
        self, request: dict[str, Any], timeout: float | None = 60.0
    ) -> tuple[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await self._open(self.ctl_path)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        except BaseException:
            writer.close()
            raise
        if not line:
            writer.close()
            raise MonitorNotRunning("the container's monitor closed the connection")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            writer.close()
            raise MonitorError(f"unexpected reply from the monitor: {line!r}")
        if "error" in reply:
            writer.close()
            raise error_from_reply(reply)
        return reply, reader, writer

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        """One request, one reply (raises :class:`MonitorError` for an error reply)."""
        reply, _, writer = await self._request(request)
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return reply

    async def ping(self) -> dict[str, Any]:
        return await self.call({"op": "ping"})

    async def start(self) -> None:
        """Release the created container (its program starts)."""
        await self.call({"op": "start"})

    async def kill(self, sig: int, all: bool = False) -> None:
        """Send ``sig`` to the init (``all``: to every process of the container)."""
        await self.call({"op": "kill", "signal": int(sig), "all": bool(all)})

    async def resize(self, height: int, width: int) -> None:
        """Set the container's terminal size."""
        await self.call({"op": "resize", "height": int(height), "width": int(width)})

    async def attach(
        self, stdin: bool, stdout: bool, stderr: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Attach to the container's stdio; output (frames, raw with a tty) comes on the reader.

        Returns once the monitor registered the client: no output after
        that is missed. Write stdin to the writer (``write_eof`` = EOF).
        """
        reader, writer, _ = await self.attach_at(stdin, stdout, stderr)
        return reader, writer

    async def attach_at(
        self, stdin: bool, stdout: bool, stderr: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, LogPosition | None]:
        """:meth:`attach`, and where the json-file log was when the client was registered.

        Everything before that position reached the log but not this client;
        everything after it comes on the reader (``logs=1&stream=1``
        replays up to it: no line twice). None without a log.
        """
        from bulkhead.engine.jsonlog import LogPosition

        reader, writer = await self._open(self.attach_path)
        try:
            writer.write(
                json.dumps({"stdin": stdin, "stdout": stdout, "stderr": stderr}).encode() + b"\n"
            )
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), 30)
        except BaseException:
            writer.close()
            raise
        if not line:
            writer.close()
            raise MonitorNotRunning("the container's monitor closed the attach connection")
        reply = json.loads(line)
        if "error" in reply:
            writer.close()
            raise error_from_reply(reply)
        mark = reply.get("log")
        position = None
        if isinstance(mark, list) and len(mark) == 2 and all(isinstance(x, int) for x in mark):
            position = LogPosition(mark[0], mark[1])
        return reader, writer, position

    async def exec(
        self,
        exec_id: str,
        process: dict[str, Any],
        tty: bool,
        stdin: bool,
        kill_after: float | None = None,
    ) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
        """Start ``process`` (OCI process JSON) in the container; its stream is returned.

        The reader carries its output (8-byte frames, raw with a tty) and
        ends when it exited; :meth:`exec_status` then has its exit code.
        ``kill_after``: the exec session SIGKILLs the process that many
        seconds after it started (``timed_out`` in its status), whether or
        not this daemon is still there to ask.
        """
        from bulkhead.engine.zygote import ZygoteClient

        # bh-monitor hands an exec to the zygote of our exec root: make sure one runs
        # (a look at zygote.pid and its command line when it does).
        await ZygoteClient(os.path.dirname(self.state_dir)).ensure_running()
        request: dict[str, Any] = {
            "op": "exec", "exec_id": exec_id, "process": process, "tty": tty, "stdin": stdin
        }  # fmt: skip
        if kill_after is not None:
            request["kill_after"] = float(kill_after)
        reply, reader, writer = await self._request(request)
        return int(reply["pid"]), reader, writer

    async def exec_resize(self, exec_id: str, height: int, width: int) -> None:
        """Set an exec's terminal size (its session's socket, or the Python monitor's ctl)."""
        request = {"op": "exec_resize", "exec_id": exec_id, "height": int(height)}
        request["width"] = int(width)
        session = exec_socket_path(self.state_dir, exec_id)
        if _EXEC_ID.match(exec_id) and os.path.exists(session):
            try:
                reader, writer = await self._open(session)
                try:
                    writer.write(json.dumps(request).encode() + b"\n")
                    await writer.drain()
                    line = await asyncio.wait_for(reader.readline(), 60)
                finally:
                    writer.close()
            except (ConnectionError, MonitorNotRunning):  # the session ended meanwhile
                line = b""
            if not line:
                raise MonitorNotRunning(f"no running exec {exec_id!r}")
            reply = json.loads(line)
            if isinstance(reply, dict) and "error" in reply:
                raise error_from_reply(reply)
            return
        await self.call(request)

    def exit_status(self) -> ExitStatus | None:
        """``exit.json``, once the container has exited (None before)."""
        try:
            with open(os.path.join(self.state_dir, EXIT_FILE), "rb") as f:
                return msgspec.json.decode(f.read(), type=ExitStatus)
        except FileNotFoundError:
            return None

    def exec_status(self, exec_id: str) -> ExecStatus | None:
        """``exec/<exec_id>.json``, once that exec'd process has exited (None before)."""
        if not _EXEC_ID.match(exec_id):
            return None
        try:
            with open(os.path.join(self.state_dir, "exec", exec_id + ".json"), "rb") as f:
                return msgspec.json.decode(f.read(), type=ExecStatus)
        except FileNotFoundError:
            return None

    def info(self) -> MonitorInfo | None:
        """``monitor.json`` (None when the monitor never got that far)."""
        try:
            with open(os.path.join(self.state_dir, INFO_FILE), "rb") as f:
                return msgspec.json.decode(f.read(), type=MonitorInfo)
        except (FileNotFoundError, msgspec.DecodeError):
            return None

    def alive(self) -> bool:
        """Whether the monitor of ``monitor.json`` runs (its pid with the same start time)."""
        info = self.info()
        if info is None or info.monitor_pid <= 0:
            return False
        now = _proc_start(info.monitor_pid)
        return now is not None and (info.monitor_start == 0 or now == info.monitor_start)


# ---------------------------------------------------------------------- runtimes (monitor side)


def _nothing() -> None:
    pass


@contextlib.contextmanager
def _as_stdio(fds: tuple[int, int, int]) -> Iterator[None]:
    """Make ``fds`` our fds 0/1/2 for the duration: the in-process runtime's children inherit them."""
    saved = [os.dup(i) for i in (0, 1, 2)]
    try:
        for i, fd in enumerate(fds):
            os.dup2(fd, i)
        yield
    finally:
        for i, fd in enumerate(saved):
            os.dup2(fd, i)
            os.close(fd)


class _Backend:
    """How the monitor drives one OCI runtime."""

    def create(
        self, stdio: tuple[int, int, int], tty: bool, meanwhile: Callable[[], None] = _nothing
    ) -> tuple[int, int | None]:
        """Create the container: (init pid, pty master when ``tty``).

        ``meanwhile`` (which must not raise) is the monitor's own set-up: it
        runs while the runtime works when the runtime works in another process.
        """
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def kill(self, sig: int, all_processes: bool) -> None:
        raise NotImplementedError

    def exec(
        self, exec_id: str, process: dict[str, Any], stdio: tuple[int, int, int], tty: bool
    ) -> tuple[int, int | None]:
        raise NotImplementedError

    def delete(self) -> None:
        raise NotImplementedError


def _map_runtime_error(exc: Exception) -> MonitorError:
    from bulkhead import errors as e

    text = str(exc)
    if isinstance(exc, MonitorError):
        return exc
    if isinstance(exc, e.ExecutableNotFound):
        return ProcessNotFound(text)
    if isinstance(exc, e.ExecutableNotRunnable) or (
        isinstance(exc, e.StartError) and exc.errno == errno.EACCES
    ):
        return ProcessNotExecutable(text)
    if isinstance(exc, e.StartError):
        return classify_runtime_message(text)(text)
    if isinstance(exc, e.WrongState | e.ContainerNotFound):
        return MonitorNotRunning(text)
    if isinstance(exc, e.SpecError):
        return MonitorBadRequest(text)
    return MonitorError(text or type(exc).__name__)


def _in_helper(
    work: Callable[[], tuple[dict[str, Any], list[int]]],
    meanwhile: Callable[[], None] = _nothing,
) -> tuple[dict[str, Any], list[int]]:
    """Run ``work`` in a forked, short-lived child; return its result (a JSON dict, fds).

    Why: a runtime operation touches thousands of the zygote's objects
    (specs, plans, the runtime's code), and every page it touches -- if only
    to change a reference count -- becomes a private copy in the process
    that does it. Done in a throw-away child, those copies die with it and
    the long-lived monitor stays small (what ``runc`` as a separate binary
    gives for free). Processes the child starts and leaves (the container's
    init, an exec'd process) are reparented to the monitor, the subreaper.
    Errors come back as ``{"error", "kind"}`` and are raised here.
    ``meanwhile`` runs here while the child works.
    """
    pid, ours = _start_helper(work)
    return _helper_answer(pid, ours, meanwhile)


def _start_helper(
    work: Callable[[], tuple[dict[str, Any], list[int]]],
) -> tuple[int, socket.socket]:
    """:func:`_in_helper`'s fork: (the helper's pid, our end of the socket it answers on)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 0
        try:
            signal.set_wakeup_fd(-1)
            ours.close()
            _send_helper_result(theirs, work)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


def _send_helper_result(
    sock: socket.socket, work: Callable[[], tuple[dict[str, Any], list[int]]]
) -> None:
    """In a helper: run ``work``, send its (JSON dict, fds), or its error as the runtime's kind."""
    try:
        doc, fds = work()
    except Exception as exc:
        err = _map_runtime_error(exc)
        doc, fds = {"error": str(err), "kind": err.kind}, []
    socket.send_fds(sock, [json.dumps(doc).encode()], fds)


def _helper_answer(
    pid: int, ours: socket.socket, meanwhile: Callable[[], None]
) -> tuple[dict[str, Any], list[int]]:
    """The monitor's half of a helper's work: ``meanwhile``, then the helper's answer."""
    msg = b""
    fds: list[int] = []
    try:
        meanwhile()
        msg, fds, _, _ = socket.recv_fds(ours, 1 << 20, 4)
    finally:
        ours.close()
        if not msg:
            # It died without an answer: collect it now. Otherwise it is exiting
            # (tearing down its copy of the address space takes 1-2 ms): the
            # monitor's reaper (waitpid(-1) on SIGCHLD) collects it meanwhile.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    if not msg:
        raise MonitorError("the runtime helper process failed (see monitor.log)")
    doc = json.loads(msg)
    if "error" in doc:
        for fd in fds:
            os.close(fd)
        raise error_from_reply(doc)
    return doc, fds


def _create_work(
    cfg: MonitorConfig, stdio: tuple[int, int, int], tty: bool
) -> tuple[dict[str, Any], list[int]]:
    """The in-process runtime's ``create``, as a helper runs it: (answer, [pty master])."""
    from bulkhead.runtime.container import CreateOptions, Runtime, has_hooks

    rt = Runtime(cfg.runtime_root)
    with _as_stdio(stdio):
        started = rt.create(cfg.container_id, CreateOptions(bundle=cfg.bundle), hold_console=tty)
    with open(os.path.join(rt.store.dir(cfg.container_id), "config.json"), "rb") as f:
        poststart = has_hooks(f.read(), "poststart")  # then start needs the runtime
    doc = {"pid": started.pid, "fifo": "" if poststart else rt.store.fifo(cfg.container_id)}
    return doc, [] if started.console is None else [started.console]


#: A Docker-default ``config.json`` (set by the zygote) that a spare helper warms up on.
WARM_SPEC = b""


def _warm_helper() -> None:
    """Run the create path's pure parts once, in a spare helper, before it has a container.

    A forked process pays a page fault for every page it first writes, and
    CPython writes to every object it touches (reference counts): a fresh
    helper spends most of its ~7 ms before the container's first fork in
    such faults. Done while the spare waits, the real create finds those
    pages already its own. Only decoding and planning, nothing on disk nor
    in the kernel, and no cache filled (the host's cgroup layout is read
    again for the real create); best effort.
    """
    if not WARM_SPEC:
        return
    try:
        from bulkhead.cgroups import layout as cg_layout
        from bulkhead.cgroups import new_manager
        from bulkhead.oci.runtime_spec import decode_spec, validate_spec
        from bulkhead.runtime.plan import ContainerPlan, plan_namespaces, plan_process

        spec = decode_spec(WARM_SPEC)
        validate_spec(spec)
        if spec.process is not None:
            plan = ContainerPlan(process=plan_process(spec.process))
            plan_namespaces(spec, plan)
        if spec.linux is not None and spec.linux.seccomp is not None:
            from bulkhead.linux.seccomp import compile_filter

            compile_filter(spec.linux.seccomp)
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            mountinfo = f.read()
        with open("/proc/self/cgroup", encoding="utf-8", errors="surrogateescape") as f:
            own = f.read()
        new_manager("/bulkhead-warm/x", layout=cg_layout.layout_from_text(mountinfo, own))
    except Exception as exc:
        print(f"monitor: spare helper warm-up skipped: {exc}", file=sys.stderr)


def fork_spare_helper() -> tuple[int, socket.socket] | None:
    """Fork, in a spare monitor, the helper that will create its container; warm it up.

    The helper (see :func:`_in_helper`) is forked and warmed up
    (:func:`_warm_helper`) while the spare monitor waits for a request; the
    monitor then sends it ``{"config", "tty"}`` and the container's stdio
    (SCM_RIGHTS) and gets the answer as from :func:`_in_helper`. While it
    waits, the helper dies with the spare monitor (PR_SET_PDEATHSIG) or at
    EOF. Returns (pid, our end), or None when it cannot fork.
    """
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    parent = os.getpid()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        ours.close()
        theirs.close()
        return None
    if pid == 0:  # pragma: no cover (the child)
        code = 0
        try:
            from bulkhead.linux import process as lxprocess

            ours.close()
            lxprocess.set_pdeathsig(signal.SIGKILL)
            if os.getppid() != parent:
                os._exit(0)
            _warm_helper()
            msg, fds, _, _ = socket.recv_fds(theirs, 1 << 20, 3)
            if not msg or len(fds) != 3:
                os._exit(0)
            lxprocess.set_pdeathsig(0)

            def create() -> tuple[dict[str, Any], list[int]]:
                req = json.loads(msg)
                cfg = msgspec.convert(req["config"], type=MonitorConfig)
                return _create_work(cfg, (fds[0], fds[1], fds[2]), bool(req["tty"]))

            _send_helper_result(theirs, create)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    theirs.close()
    return pid, ours


class _InProcess(_Backend):
    """bulkhead's own runtime, as a library, run in the monitor's forked helpers (:func:`_in_helper`)."""

    def __init__(self, cfg: MonitorConfig, spare: tuple[int, socket.socket] | None = None) -> None:
        self.cfg = cfg
        #: a helper forked in advance (:func:`fork_spare_helper`), used for the create
        self.spare = spare
        #: the created container's exec.fifo, when ``start`` may just write it (no poststart hooks)
        self.fifo = ""

    def _rt(self) -> Any:
        from bulkhead.runtime.container import Runtime

        return Runtime(self.cfg.runtime_root)

    def create(
        self, stdio: tuple[int, int, int], tty: bool, meanwhile: Callable[[], None] = _nothing
    ) -> tuple[int, int | None]:
        return self.create_end(self.create_begin(stdio, tty), meanwhile)

    def create_begin(self, stdio: tuple[int, int, int], tty: bool) -> tuple[int, socket.socket]:
        """Have a helper start the runtime's create: (its pid, the socket it answers on).

        The answer is ``{"pid", "fifo"}`` and the pty master (SCM_RIGHTS),
        or ``{"error", "kind"}``: :meth:`create_end` reads it (or
        ``bh-monitor``, after an early hand-over).
        """
        if self.spare is not None:
            pid, sock = self.spare
            self.spare = None
            request = {"config": msgspec.to_builtins(self.cfg), "tty": tty}
            try:
                socket.send_fds(sock, [json.dumps(request).encode()], list(stdio))
            except OSError:
                sock.close()  # it is gone: the reaper collects it; fork one below
            else:
                return pid, sock
        return _start_helper(lambda: _create_work(self.cfg, stdio, tty))

    def create_end(
        self, helper: tuple[int, socket.socket], meanwhile: Callable[[], None] = _nothing
    ) -> tuple[int, int | None]:
        doc, fds = _helper_answer(helper[0], helper[1], meanwhile)
        self.fifo = str(doc.get("fifo") or "")
        return int(doc["pid"]), fds[0] if fds else None

    def start(self) -> None:
        """Release the init: write ``exec.fifo`` as the runtime's ``start`` does.

        Done here directly (a fraction of a millisecond) when the container
        has no poststart hooks, else by the runtime in a helper. The init
        waits on the fifo's read end: no reader (ENXIO) or no fifo means it
        is gone.
        """
        if not self.fifo:
            _in_helper(lambda: (self._rt().start(self.cfg.container_id) or {}, []))
            return
        try:
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                raise MonitorNotRunning("cannot start a container that has stopped") from None
            raise MonitorError(f"start: {self.fifo}: {exc.strerror}") from None
        try:
            os.unlink(self.fifo)
            os.write(fd, b"0")
        finally:
            os.close(fd)
        self.fifo = ""

    def kill(self, sig: int, all_processes: bool) -> None:
        _in_helper(
            lambda: (
                self._rt().kill(self.cfg.container_id, sig, all_processes=all_processes) or {},
                [],
            )
        )

    def exec(
        self, exec_id: str, process: dict[str, Any], stdio: tuple[int, int, int], tty: bool
    ) -> tuple[int, int | None]:
        def work() -> tuple[dict[str, Any], list[int]]:
            from bulkhead.oci.runtime_spec import Process, validate_process
            from bulkhead.runtime.plan import plan_process

            try:
                proc = msgspec.convert(dict(process, terminal=tty), type=Process)
            except msgspec.ValidationError as exc:
                raise MonitorBadRequest(f"exec process: {exc}") from None
            validate_process(proc)
            plan = plan_process(proc)
            rt = self._rt()
            spec = rt.spec_of(self.cfg.container_id)
            if spec.linux is not None and spec.linux.seccomp is not None:
                from bulkhead.linux.seccomp import compile_filter

                plan.seccomp = compile_filter(spec.linux.seccomp)
            with _as_stdio(stdio):
                started = rt.exec(self.cfg.container_id, plan, hold_console=tty)
            return {"pid": started.pid}, [] if started.console is None else [started.console]

        doc, fds = _in_helper(work)
        return int(doc["pid"]), fds[0] if fds else None

    def delete(self) -> None:
        # The monitor's last act: no need to keep its pages clean.
        self._rt().delete(self.cfg.container_id, force=True)


class _Binary(_Backend):
    """A runc-compatible binary (runc, crun, bulkhead-runtime), one command per verb."""

    def __init__(self, cfg: MonitorConfig) -> None:
        import shutil

        self.cfg = cfg
        path = cfg.runtime if "/" in cfg.runtime else shutil.which(cfg.runtime)
        if not path or not os.access(path, os.X_OK):
            raise MonitorBadRequest(f"runtime {cfg.runtime!r}: no such executable")
        self.path = path
        self.log = os.path.join(cfg.state_dir, "runtime.log")

    def _run(self, args: list[str], stdio: tuple[int, int, int] | None = None) -> None:
        """Run the runtime with ``args``; raise the :class:`MonitorError` for its complaint.

        Started with ``subprocess`` (vfork + exec, every signal back to its
        default) rather than glibc's posix_spawn, which would leave its
        internal signals 32 and 33 ignored in the runtime and the container.
        """
        import subprocess

        argv = [self.path, "--root", self.cfg.runtime_root, "--log", self.log]
        argv += ["--log-format", "json", *args]
        with contextlib.suppress(FileNotFoundError):
            os.truncate(self.log, 0)
        io: dict[str, Any] = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL}
        io["stderr"] = subprocess.DEVNULL
        if stdio is not None:
            io = {"stdin": stdio[0], "stdout": stdio[1], "stderr": stdio[2]}
        proc = subprocess.Popen(argv, close_fds=True, restore_signals=True, **io)
        code = proc.wait()
        if code != 0:
            message = self._last_error() or f"{os.path.basename(self.path)} {args[0]}: exit {code}"
            raise classify_runtime_message(message)(message)

    def _last_error(self) -> str:
        try:
            with open(self.log, "rb") as f:
                lines = f.read().splitlines()
        except OSError:
            return ""
        for raw in reversed(lines):
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("level") in ("error", "fatal"):
                return str(doc.get("msg", ""))
        return ""

    def _console(self, listener: socket.socket | None) -> int | None:
        if listener is None:
            return None
        listener.settimeout(10)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            _, fds, _, _ = socket.recv_fds(conn, 1024, 1)
        if not fds:
            raise MonitorError("the runtime sent no terminal on the console socket")
        return fds[0]

    def _listener(self, name: str) -> tuple[socket.socket, str]:
        path = os.path.join(self.cfg.state_dir, name)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.bind(path)
        s.listen(1)
        return s, path

    def create(
        self, stdio: tuple[int, int, int], tty: bool, meanwhile: Callable[[], None] = _nothing
    ) -> tuple[int, int | None]:
        meanwhile()
        pid_file = os.path.join(self.cfg.state_dir, "init.pid")
        args = ["create", "--bundle", self.cfg.bundle, "--pid-file", pid_file]
        listener = None
        try:
            if tty:
                listener, path = self._listener("pty.sock")
                args += ["--console-socket", path]
            self._run([*args, self.cfg.container_id], stdio)
            with open(pid_file) as f:
                pid = int(f.read().strip())
            return pid, self._console(listener)
        finally:
            if listener is not None:
                listener.close()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.cfg.state_dir, "pty.sock"))

    def start(self) -> None:
        self._run(["start", self.cfg.container_id])

    def kill(self, sig: int, all_processes: bool) -> None:
        try:
            self._run(
                ["kill", *(["--all"] if all_processes else []), self.cfg.container_id, str(sig)]
            )
        except MonitorError as exc:
            if "not running" in str(exc) or "process already finished" in str(exc):
                raise MonitorNotRunning(str(exc)) from None
            raise

    def exec(
        self, exec_id: str, process: dict[str, Any], stdio: tuple[int, int, int], tty: bool
    ) -> tuple[int, int | None]:
        exec_dir = os.path.join(self.cfg.state_dir, "exec")
        proc_file = os.path.join(exec_dir, exec_id + ".process.json")
        pid_file = os.path.join(exec_dir, exec_id + ".pid")
        write_atomic(proc_file, json.dumps(dict(process, terminal=tty)).encode())
        args = ["exec", "--process", proc_file, "--detach", "--pid-file", pid_file]
        listener = None
        try:
            if tty:
                listener, path = self._listener(f"x{exec_id[:8]}.sock")
                args += ["--console-socket", path]
            self._run([*args, self.cfg.container_id], stdio)
            with open(pid_file) as f:
                pid = int(f.read().strip())
            return pid, self._console(listener)
        finally:
            if listener is not None:
                with contextlib.suppress(OSError):
                    os.unlink(listener.getsockname())
                listener.close()
            for leftover in (proc_file, pid_file):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leftover)

    def delete(self) -> None:
        self._run(["delete", "--force", self.cfg.container_id])


def backend_for(cfg: MonitorConfig, spare: tuple[int, socket.socket] | None = None) -> _Backend:
    """The backend of ``cfg.runtime``; ``spare`` (a helper forked in advance) serves the in-process one."""
    if cfg.runtime == "bulkhead":
        return _InProcess(cfg, spare)
    if spare is not None:
        spare[1].close()  # EOF: it exits, and the reaper collects it
    return _Binary(cfg)


# ---------------------------------------------------------------------- the event loop


_Callback = Callable[[], None]


class _Reactor:
    """A minimal select loop: read and write callbacks per fd."""

    def __init__(self) -> None:
        self.sel = selectors.DefaultSelector()
        self.readers: dict[int, _Callback] = {}
        self.writers: dict[int, _Callback] = {}

    def _update(self, fd: int) -> None:
        events = (selectors.EVENT_READ if fd in self.readers else 0) | (
            selectors.EVENT_WRITE if fd in self.writers else 0
        )
        try:
            self.sel.get_key(fd)
            registered = True
        except KeyError:
            registered = False
        if not events:
            if registered:
                self.sel.unregister(fd)
        elif registered:
            self.sel.modify(fd, events)
        else:
            self.sel.register(fd, events)

    def add_reader(self, fd: int, cb: _Callback) -> None:
        self.readers[fd] = cb
        self._update(fd)

    def remove_reader(self, fd: int) -> None:
        if self.readers.pop(fd, None) is not None:
            self._update(fd)

    def add_writer(self, fd: int, cb: _Callback) -> None:
        self.writers[fd] = cb
        self._update(fd)

    def remove_writer(self, fd: int) -> None:
        if self.writers.pop(fd, None) is not None:
            self._update(fd)

    def forget(self, fd: int) -> None:
        self.readers.pop(fd, None)
        self.writers.pop(fd, None)
        self._update(fd)

    def run_once(self, timeout: float | None) -> None:
        for key, events in self.sel.select(timeout):
            fd = key.fd
            for mask, table in (
                (selectors.EVENT_READ, self.readers),
                (selectors.EVENT_WRITE, self.writers),
            ):
                cb = table.get(fd) if events & mask else None
                if cb is None:
                    continue
                try:
                    cb()
                except Exception:
                    # One misbehaving client or pipe must not take the container down
                    # with the monitor: note it, stop watching that fd, go on.
                    traceback.print_exc()
                    self.forget(fd)


#: Backpressure (as Docker's attach): when a client has this much output queued, the monitor
#: stops reading the process's output (which then blocks on write) until the queue is back
#: under ``_LOW_WATER``. The log gets every byte either way.
_HIGH_WATER = 1 << 20
_LOW_WATER = 256 << 10
#: A safety net only (backpressure keeps queues near ``_HIGH_WATER``): a client this far
#: behind is dropped.
_MAX_CLIENT_BUFFER = 64 << 20
#: How long output is drained after the process exited (descendants may hold the pipes).
_DRAIN_SECONDS = 2.0
#: How long a closing connection waits for its client to close too (see :class:`_Conn`).
_LINGER = 5.0


class _Conn:
    """A client socket with an output buffer, read by callback.

    Closing is graceful (a *lingering close*): once the output is flushed the
    monitor shuts its sending side down (the client reads EOF after the
    last byte) and then discards whatever the client still sends until the
    client closes too, for at most ``_LINGER`` seconds. Closing a unix
    socket with unread input instead makes the kernel report ECONNRESET to
    the client, which may then drop output it had received but not yet
    read (asyncio's StreamReader raises before returning buffered data).
    """

    def __init__(
        self,
        mon: Monitor,
        sock: socket.socket,
        on_data: Callable[[bytes], None],
        on_eof: Callable[[], None],
    ) -> None:
        self.mon = mon
        self.sock = sock
        sock.setblocking(False)
        self.fd = sock.fileno()
        self.out = bytearray()
        self.on_data = on_data
        self.on_eof = on_eof
        self.closed = False
        #: no more output will be queued; close once flushed
        self.closing = False
        #: our side is shut down; waiting for the client's EOF (monotonic deadline)
        self.linger_until = 0.0
        self.reading = True
        mon.reactor.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if not data:
            self.reading = False
            self.mon.reactor.remove_reader(self.fd)
            if self.linger_until:
                self.close()
            elif not self.closing:
                self.on_eof()
            return
        if not self.closing:
            self.on_data(data)

    def send(self, data: bytes) -> None:
        if self.closed or self.closing:
            return
        if not self.out:
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                n = 0
            except OSError:
                self.close()
                return
            data = data[n:]
            if not data:
                return
            self.mon.reactor.add_writer(self.fd, self._writable)
        self.out += data
        if len(self.out) > _MAX_CLIENT_BUFFER:
            self.close()

    def _writable(self) -> None:
        try:
            n = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        before = len(self.out)
        del self.out[:n]
        if before >= _LOW_WATER > len(self.out):
            self.mon.output_drained()
        if not self.out:
            self.mon.reactor.remove_writer(self.fd)
            if self.closing:
                self._shutdown()

    def close_after_flush(self) -> None:
        """No more output: flush what is queued, then close gracefully."""
        if self.closed or self.closing:
            return
        self.closing = True
        if not self.out:
            self._shutdown()

    def _shutdown(self) -> None:
        if not self.reading:
            self.close()  # the client is done sending: nothing can be left unread
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.linger_until = time.monotonic() + _LINGER
        self.mon.lingering.add(self)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.mon.reactor.forget(self.fd)
        with contextlib.suppress(OSError):
            for _ in range(64):  # whatever arrived meanwhile (unread input means RST), bounded
                if not self.sock.recv(65536):
                    break
        self.sock.close()
        self.mon.conns.discard(self)
        self.mon.lingering.discard(self)
        self.out.clear()
        self.mon.output_drained()


class _Sink:
    """A pipe we write to (a process's stdin), buffered, closed on request after flushing."""

    def __init__(self, mon: Monitor, fd: int) -> None:
        self.mon = mon
        self.fd = fd
        os.set_blocking(fd, False)
        self.out = bytearray()
        self.eof = False
        self.closed = False

    def write(self, data: bytes) -> None:
        if self.closed or self.eof:
            return
        self.out += data
        self._flush()

    def _flush(self) -> None:
        while self.out:
            try:
                n = os.write(self.fd, self.out)
            except BlockingIOError:
                self.mon.reactor.add_writer(self.fd, self._flush)
                return
            except OSError:
                self.close()
                return
            del self.out[:n]
        self.mon.reactor.remove_writer(self.fd)
        if self.eof:
            self.close()

    def close_after_flush(self) -> None:
        self.eof = True
        if not self.out:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.mon.reactor.forget(self.fd)
        os.close(self.fd)


class _Source:
    """A pipe or pty master we read a process's output from."""

    def __init__(
        self, mon: Monitor, fd: int, stream: int, on_data: Callable[[int, bytes], None]
    ) -> None:
        self.mon = mon
        self.fd = fd
        self.stream = stream
        self.on_data = on_data
        self.open = True
        self.paused = False
        os.set_blocking(fd, False)
        mon.reactor.add_reader(fd, self._readable)

    def pause(self) -> None:
        """Stop reading: the process blocks once the pipe is full (backpressure)."""
        if self.open and not self.paused:
            self.paused = True
            self.mon.reactor.remove_reader(self.fd)

    def resume(self) -> None:
        if self.open and self.paused:
            self.paused = False
            self.mon.reactor.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno != errno.EIO:  # EIO: a pty whose slave side is all closed
                raise
            data = b""
        if data:
            self.on_data(self.stream, data)
        else:
            self.close()

    def drain(self) -> None:
        """Read what is there now without waiting (the process is gone)."""
        while self.open:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                self.on_data(self.stream, data)
            else:
                self.close()

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        self.mon.reactor.forget(self.fd)
        os.close(self.fd)
        self.mon.on_source_closed(self)


class _Attach:
    """An attached client of the container's stdio."""

    def __init__(self, mon: Monitor, sock: socket.socket) -> None:
        self.mon = mon
        self.header = bytearray()
        self.registered = False
        self.stdin = self.stdout = self.stderr = False
        self.conn = _Conn(mon, sock, self._data, self._eof)
        mon.conns.add(self.conn)

    def _data(self, data: bytes) -> None:
        if not self.registered:
            self.header += data
            nl = self.header.find(b"\n")
            if nl < 0:
                if len(self.header) > 65536:
                    self.conn.close()
                return
            try:
                opts = json.loads(bytes(self.header[:nl]))
                if not isinstance(opts, dict):
                    raise ValueError("not an object")
            except ValueError as exc:
                self.conn.send(_reply({"error": f"attach: {exc}", "kind": "bad_request"}))
                self.conn.close_after_flush()
                return
            rest = bytes(self.header[nl + 1 :])
            self.header.clear()
            self.stdin = bool(opts.get("stdin"))
            self.stdout = bool(opts.get("stdout", True))
            self.stderr = bool(opts.get("stderr", True))
            self.registered = True
            self.mon.attached.append(self)
            answer: dict[str, Any] = {"ok": True, "tty": self.mon.cfg.tty}
            if self.mon.log is not None:  # where the log is now: see MonitorClient.attach
                with contextlib.suppress(OSError):
                    answer["log"] = list(self.mon.log.position())
            self.conn.send(_reply(answer))
            if self.mon.exited:
                # Nothing more will come: close once this reply went out.
                self.conn.close_after_flush()
            data = rest
            if not data:
                return
        if self.stdin and self.mon.stdin is not None:
            self.mon.stdin.write(data)

    def _eof(self) -> None:
        if self.registered and self.stdin and self.mon.cfg.stdin_once and self.mon.stdin:
            self.mon.stdin.close_after_flush()

    def deliver(self, stream: int, data: bytes) -> None:
        if (stream == 1 and self.stdout) or (stream == 2 and self.stderr):
            self.conn.send(data if self.mon.cfg.tty else frame(stream, data))


class _Exec:
    """A process started by ``exec``, and the ctl connection that became its stream."""

    def __init__(self, mon: Monitor, exec_id: str, conn: _Conn, tty: bool) -> None:
        self.mon = mon
        self.exec_id = exec_id
        self.conn = conn
        self.tty = tty
        self.pid = 0
        self.master: int | None = None
        self.sources: list[_Source] = []
        self.stdin: _Sink | None = None
        self.exit_code: int | None = None
        self.deadline: float | None = None
        #: when to SIGKILL the process (the request's ``kill_after``; monotonic)
        self.kill_at: float | None = None
        self.timed_out = False
        self.done = False

    def output(self, stream: int, data: bytes) -> None:
        self.conn.send(data if self.tty else frame(stream, data))
        if not self.conn.closed and len(self.conn.out) >= _HIGH_WATER:
            for src in self.sources:
                src.pause()

    def input(self, data: bytes) -> None:
        if self.stdin is not None:
            self.stdin.write(data)

    def input_eof(self) -> None:
        if self.stdin is not None:
            self.stdin.close_after_flush()

    def maybe_finish(self, force: bool = False) -> None:
        if self.done or self.exit_code is None:
            return
        if any(s.open and not s.paused for s in self.sources) and not force:
            return  # a paused output has a bounded rest (the process is gone): drained below
        self.done = True
        for s in self.sources:
            s.drain()
            s.close()
        if self.stdin is not None:
            self.stdin.close()
        if self.master is not None:
            os.close(self.master)
            self.master = None
        status = ExecStatus(pid=self.pid, exit_code=self.exit_code, timed_out=self.timed_out)
        with contextlib.suppress(OSError):
            write_atomic(
                os.path.join(self.mon.exec_dir, self.exec_id + ".json"),
                msgspec.json.encode(status),
            )
        self.conn.close_after_flush()
        self.mon.execs.pop(self.exec_id, None)
        self.mon.exec_done = True


def _reply(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode() + b"\n"


def _pipe() -> tuple[int, int]:
    return os.pipe2(os.O_CLOEXEC)


def _set_winsize(fd: int, height: int, width: int) -> None:
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


def _memory_cgroup(pid: int) -> str | None:
    """The directory of ``pid``'s memory cgroup (v1 ``memory`` hierarchy, else the v2 one)."""
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v2: str | None = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return "/sys/fs/cgroup/memory" + path
        if controllers == "":
            v2 = path
    if v2 is not None and os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return "/sys/fs/cgroup" + v2
    return None


def oom_kill_count(cgroup_dir: str | None) -> int:
    """The ``oom_kill`` counter of a memory cgroup (v1 ``memory.oom_control``, v2 ``memory.events``)."""
    if not cgroup_dir:
        return 0
    for name in ("memory.oom_control", "memory.events"):
        try:
            with open(os.path.join(cgroup_dir, name)) as f:
                for line in f:
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            continue
    return 0


class Monitor:
    """The monitor of one container, in its own process (see the module docstring)."""

    def __init__(
        self, cfg: MonitorConfig, spare_helper: tuple[int, socket.socket] | None = None
    ) -> None:
        self.cfg = cfg
        self.spare_helper = spare_helper
        self.reactor = _Reactor()
        self.conns: set[_Conn] = set()
        self.lingering: set[_Conn] = set()
        self.attached: list[_Attach] = []
        self.execs: dict[str, _Exec] = {}
        self.exec_dir = os.path.join(cfg.state_dir, "exec")
        self.sources: list[_Source] = []
        self.stdin: _Sink | None = None
        self.master: int | None = None
        self.log: Any = None
        self.backend: _Backend | None = None
        self.init_pid = 0
        self.started = False
        self.exited = False
        self.exit_code: int | None = None
        self.exit_deadline = 0.0
        self.memory_cgroup: str | None = None
        self.oom_base = 0
        self.error = ""
        self.listeners: list[socket.socket] = []
        self.monitor_start = 0
        self.sig_r = -1
        #: an exec session (:func:`serve_exec`): one exec, no container of its own
        self.session = False
        self.exec_done = False
        #: (``bh-monitor``, the spawner's connection): hand over while the runtime creates
        #: (:func:`_hand_over`, the in-process runtime), bh-monitor replies
        self.early: tuple[str, socket.socket] | None = None
        self.hand_over_failed = ""

    # -- set-up -------------------------------------------------------------

    def setup(self) -> tuple[int, int]:
        """Create the container and start listening; returns (monitor pid, init pid).

        The monitor's own preparations (:meth:`_prepare`) run while the
        runtime creates the container, in the runtime's helper process.
        """
        cfg = self.cfg
        self.backend = backend_for(cfg, self.spare_helper)
        self.spare_helper = None
        null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        ours: list[int] = []
        theirs: list[int] = [null]
        prepared: list[BaseException | None] = []

        def meanwhile() -> None:
            try:
                self._prepare()
                prepared.append(None)
            except BaseException as exc:
                prepared.append(exc)

        try:
            if cfg.tty:
                stdio = (null, null, null)
            else:
                if cfg.stdin_open:
                    r, w = _pipe()
                    ours.append(w)
                    theirs.append(r)
                    stdin_fd, stdin_w = r, w
                else:
                    stdin_fd, stdin_w = null, -1
                out_r, out_w = _pipe()
                err_r, err_w = _pipe()
                ours += [out_r, err_r]
                theirs += [out_w, err_w]
                stdio = (stdin_fd, out_w, err_w)
            if self.early is not None and isinstance(self.backend, _InProcess):
                helper = self.backend.create_begin(stdio, cfg.tty)
                meanwhile()
                if prepared[0] is None:
                    try:  # returns only when the exec failed
                        _hand_over(self, self.early[0], (helper[1], self.early[1], ours))
                    except Exception as exc:
                        self.hand_over_failed = f"{exc}"
                pid, master = self.backend.create_end(helper)
            else:
                pid, master = self.backend.create(stdio, cfg.tty, meanwhile)
        except BaseException:
            for fd in ours:
                os.close(fd)
            self._close_listeners()
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        try:
            if not prepared:  # the runtime failed before it could run meanwhile
                meanwhile()
            if prepared[0] is not None:
                raise prepared[0]
            self.init_pid = pid
            if cfg.tty:
                assert master is not None
                self.master = master
                self.sources.append(_Source(self, os.dup(master), 1, self._output))
                if cfg.stdin_open:
                    self.stdin = _Sink(self, os.dup(master))
            else:
                if cfg.stdin_open:
                    self.stdin = _Sink(self, stdin_w)
                self.sources.append(_Source(self, out_r, 1, self._output))
                self.sources.append(_Source(self, err_r, 2, self._output))
            me = os.getpid()
            info = MonitorInfo(monitor_pid=me, monitor_start=self.monitor_start, init_pid=pid)
            write_atomic(os.path.join(cfg.state_dir, INFO_FILE), msgspec.json.encode(info))
        except BaseException:
            # Created but not served: take the container down again, leave nothing.
            self._close_listeners()
            with contextlib.suppress(Exception):
                self.backend.delete()
            self._reap()
            raise
        return me, pid

    def _prepare(self) -> None:
        """What needs no container: state and log files, the listening sockets."""
        cfg = self.cfg
        os.makedirs(self.exec_dir, exist_ok=True)
        for name in (EXIT_FILE, INFO_FILE):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(cfg.state_dir, name))
        for name in os.listdir(self.exec_dir):  # a previous run's execs: forgotten, as Docker does
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(self.exec_dir, name))
        if cfg.log_path:
            from bulkhead.engine.jsonlog import JsonLogWriter

            self.log = JsonLogWriter(cfg.log_path, cfg.log_max_size, cfg.log_max_files)
        # Bound now, accepted once the loop runs: the spawner learns of them from our reply.
        for name, cb in ((CTL_SOCK, self._accept_ctl), (ATTACH_SOCK, self._accept_attach)):
            path = os.path.join(cfg.state_dir, name)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
            self.listeners.append(s)
            s.bind(path)
            s.listen(64)
            s.setblocking(False)
            self.reactor.add_reader(s.fileno(), lambda s=s, cb=cb: cb(s))  # type: ignore[misc]
        me = os.getpid()
        self.monitor_start = _proc_start(me) or 0

    def _close_listeners(self) -> None:
        """Undo the listening part of :meth:`_prepare` (set-up failed)."""
        for listener in self.listeners:
            self.reactor.forget(listener.fileno())
            listener.close()
        if self.listeners:
            for name in (CTL_SOCK, ATTACH_SOCK):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(self.cfg.state_dir, name))
        self.listeners.clear()

    def note_oom_base(self) -> None:
        """Read the memory cgroup's ``oom_kill`` count, before the container may start."""
        self.memory_cgroup = _memory_cgroup(self.init_pid)
        self.oom_base = oom_kill_count(self.memory_cgroup)

    # -- output -------------------------------------------------------------

    def _output(self, stream: int, data: bytes) -> None:
        if self.log is not None:
            try:
                self.log.write(stream, data)
            except OSError as exc:
                self.error = self.error or f"log: {exc}"
        if any(a.conn.closed for a in self.attached):
            self.attached = [a for a in self.attached if not a.conn.closed]
        for a in self.attached:
            a.deliver(stream, data)
        if any(len(a.conn.out) >= _HIGH_WATER for a in self.attached):
            for src in self.sources:
                src.pause()

    def output_drained(self) -> None:
        """A client's queue went down (or it went away): resume reading where it is due."""
        if any(src.paused for src in self.sources) and not any(
            len(a.conn.out) >= _LOW_WATER for a in self.attached if not a.conn.closed
        ):
            for src in self.sources:
                src.resume()
        for ex in self.execs.values():
            if ex.conn.closed or len(ex.conn.out) < _LOW_WATER:
                for src in ex.sources:
                    src.resume()

    def on_source_closed(self, src: _Source) -> None:
        if self.log is not None and src in self.sources:
            with contextlib.suppress(OSError):
                self.log.flush(src.stream)
        for ex in list(self.execs.values()):
            if src in ex.sources:
                ex.maybe_finish()

    # -- connections --------------------------------------------------------

    def _accept_ctl(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        except OSError:  # EMFILE and the like: the connection waits in the backlog
            traceback.print_exc()
            return
        self.serve_ctl(sock)

    def serve_ctl(self, sock: socket.socket, received: bytes = b"") -> None:
        """Serve one ctl connection; ``received``: what was already read from it."""
        buf = bytearray()
        holder: dict[str, Any] = {}

        def on_data(data: bytes) -> None:
            ex = holder.get("exec")
            if ex is not None:
                ex.input(data)
                return
            buf.extend(data)
            nl = buf.find(b"\n")
            if nl < 0:
                if len(buf) > (4 << 20):
                    conn.close()
                return
            line, rest = bytes(buf[:nl]), bytes(buf[nl + 1 :])
            buf.clear()
            self._request(conn, line, holder)
            ex = holder.get("exec")
            if ex is not None and rest:
                ex.input(rest)

        def on_eof() -> None:
            ex = holder.get("exec")
            if ex is not None:
                ex.input_eof()
            elif not buf:
                conn.close_after_flush()

        conn = _Conn(self, sock, on_data, on_eof)
        self.conns.add(conn)
        if received:
            on_data(received)

    def _accept_attach(self, listener: socket.socket) -> None:
        try:
            sock, _ = listener.accept()
        except BlockingIOError:
            return
        except OSError:  # EMFILE and the like: the connection waits in the backlog
            traceback.print_exc()
            return
        _Attach(self, sock)

    def _request(self, conn: _Conn, line: bytes, holder: dict[str, Any]) -> None:
        try:
            req = json.loads(line)
            if not isinstance(req, dict):
                raise MonitorBadRequest("a request is a JSON object")
            op = req.get("op")
            if op == "exec" and not (self.session and (self.execs or self.exec_done)):
                holder["exec"] = self._exec(conn, req)
                return
            handlers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
                "ping": self._op_ping,
                "exec_resize": self._op_exec_resize,
            }
            if not self.session:
                handlers |= {
                    "start": self._op_start,
                    "kill": self._op_kill,
                    "resize": self._op_resize,
                }
            handler = handlers.get(str(op))
            if handler is None:
                raise MonitorBadRequest(f"unknown op {op!r}")
            reply = handler(req)
        except ValueError as exc:
            reply = {"error": f"bad request: {exc}", "kind": "bad_request"}
        except MonitorError as exc:
            reply = {"error": str(exc), "kind": exc.kind}
        except Exception as exc:  # the monitor must survive any one request
            reply = {"error": f"{type(exc).__name__}: {exc}", "kind": "runtime"}
        conn.send(_reply(reply))
        conn.close_after_flush()

    def _op_ping(self, req: dict[str, Any]) -> dict[str, Any]:
        return {
            "ok": True,
            "monitor_pid": os.getpid(),
            "init_pid": self.init_pid,
            "started": self.started,
            "exited": self.exited,
        }

    def _op_start(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.exited:
            raise MonitorNotRunning("the container has exited")
        if self.started:
            raise MonitorBadRequest("the container is already started")
        assert self.backend is not None
        self.backend.start()
        self.started = True
        return {"ok": True}

    def _op_kill(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.exited:
            raise MonitorNotRunning("the container is not running")
        sig = req.get("signal", signal.SIGTERM)
        if not isinstance(sig, int) or not 0 < sig < 65:
            raise MonitorBadRequest(f"invalid signal {sig!r}")
        if not req.get("all") and self.init_pid:
            # The init is our child and not yet reaped: its pid cannot have been reused,
            # so signal it directly, as the runtime's kill would.
            try:
                os.kill(self.init_pid, sig)
            except ProcessLookupError:
                raise MonitorNotRunning("the container is not running") from None
            return {"ok": True}
        assert self.backend is not None
        self.backend.kill(sig, True)
        return {"ok": True}

    def _size(self, req: dict[str, Any]) -> tuple[int, int]:
        h, w = req.get("height"), req.get("width")
        if (
            not isinstance(h, int)
            or not isinstance(w, int)
            or not (0 <= h < 65536 and 0 <= w < 65536)
        ):
            raise MonitorBadRequest(f"invalid terminal size {h!r}x{w!r}")
        return h, w

    def _op_resize(self, req: dict[str, Any]) -> dict[str, Any]:
        h, w = self._size(req)
        if self.master is None:
            raise MonitorBadRequest("the container has no terminal")
        _set_winsize(self.master, h, w)
        return {"ok": True}

    def _op_exec_resize(self, req: dict[str, Any]) -> dict[str, Any]:
        h, w = self._size(req)
        ex = self.execs.get(str(req.get("exec_id")))
        if ex is None:
            raise MonitorNotRunning(f"no running exec {req.get('exec_id')!r}")
        if ex.master is None:
            raise MonitorBadRequest("the exec has no terminal")
        _set_winsize(ex.master, h, w)
        return {"ok": True}

    def _exec(self, conn: _Conn, req: dict[str, Any]) -> _Exec | None:
        try:
            exec_id = req.get("exec_id")
            if not isinstance(exec_id, str) or not _EXEC_ID.match(exec_id):
                raise MonitorBadRequest(f"invalid exec_id {exec_id!r}")
            if exec_id in self.execs:
                raise MonitorBadRequest(f"exec {exec_id} is already running")
            process = req.get("process")
            if not isinstance(process, dict):
                raise MonitorBadRequest("exec: process must be an OCI process object")
            if self.exited or not self.started:
                raise MonitorNotRunning(f"container {self.cfg.container_id} is not running")
            tty = bool(req.get("tty"))
            want_stdin = bool(req.get("stdin"))
            ex = _Exec(self, exec_id, conn, tty)
            assert self.backend is not None
            null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
            ours: list[int] = []
            theirs = [null]
            try:
                if tty:
                    stdio = (null, null, null)
                else:
                    if want_stdin:
                        r, w = _pipe()
                        ours.append(w)
                        theirs.append(r)
                        stdin_fd = r
                    else:
                        stdin_fd, w = null, -1
                    out_r, out_w = _pipe()
                    err_r, err_w = _pipe()
                    ours += [out_r, err_r]
                    theirs += [out_w, err_w]
                    stdio = (stdin_fd, out_w, err_w)
                pid, master = self.backend.exec(exec_id, process, stdio, tty)
            except BaseException:
                for fd in ours:
                    os.close(fd)
                raise
            finally:
                for fd in theirs:
                    os.close(fd)
        except MonitorError as exc:
            conn.send(_reply({"error": str(exc), "kind": exc.kind}))
            conn.close_after_flush()
            return None
        except Exception as exc:
            conn.send(_reply({"error": f"{type(exc).__name__}: {exc}", "kind": "runtime"}))
            conn.close_after_flush()
            return None
        ex.pid = pid
        kill_after = req.get("kill_after")
        if isinstance(kill_after, int | float) and not isinstance(kill_after, bool):
            ex.kill_at = time.monotonic() + max(0.0, float(kill_after))
        self.execs[exec_id] = ex
        if tty:
            assert master is not None
            ex.master = master
            ex.sources.append(_Source(self, os.dup(master), 1, ex.output))
            if want_stdin:
                ex.stdin = _Sink(self, os.dup(master))
        else:
            if want_stdin:
                ex.stdin = _Sink(self, w)
            ex.sources.append(_Source(self, out_r, 1, ex.output))
            ex.sources.append(_Source(self, err_r, 2, ex.output))
        conn.send(_reply({"pid": pid}))
        # Reap now: the process may be gone already (its SIGCHLD came while we were busy).
        self._reap()
        return ex

    # -- children -----------------------------------------------------------

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            if code < 0:
                code = 128 - code
            if pid == self.init_pid and not self.exited:
                self.exited = True
                self.exit_code = code
                self.exit_deadline = time.monotonic() + _DRAIN_SECONDS
                continue
            for ex in self.execs.values():
                if ex.pid == pid and ex.exit_code is None:
                    ex.exit_code = code
                    ex.deadline = time.monotonic() + _DRAIN_SECONDS
                    ex.maybe_finish()
                    break

    def _signals(self) -> None:
        received = bytearray()
        try:
            while chunk := os.read(self.sig_r, 512):
                received += chunk
        except BlockingIOError:
            pass
        for sig in set(received) & _FORWARDED:
            # As conmon: a signal meant to end the monitor goes to the container
            # instead; the monitor stays to record how it ended.
            if self.init_pid and not self.exited:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.init_pid, sig)
        self._reap()

    # -- the loop -----------------------------------------------------------

    def _exec_deadlines(self) -> list[float]:
        """When the loop must wake up for execs (drain ends, ``kill_after``) and lingering clients."""
        out = [ex.deadline for ex in self.execs.values() if ex.deadline is not None]
        out += [ex.kill_at for ex in self.execs.values() if ex.kill_at is not None]
        out += [c.linger_until for c in self.lingering]
        return out

    def _exec_timers(self) -> None:
        """Act on the deadlines of :meth:`_exec_deadlines` that have come."""
        now = time.monotonic()
        for ex in list(self.execs.values()):
            if ex.kill_at is not None and now >= ex.kill_at:
                ex.kill_at = None
                if ex.exit_code is None:  # not reaped yet: the pid is still this process
                    ex.timed_out = True
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(ex.pid, signal.SIGKILL)
            if ex.deadline is not None and now >= ex.deadline:
                ex.maybe_finish(force=True)
        for conn in [c for c in self.lingering if now >= c.linger_until]:
            conn.close()

    def run(self) -> int:
        """Serve until the container exited and everything is written; the process's exit code."""
        self.reactor.add_reader(self.sig_r, self._signals)
        self._reap()
        while True:
            now = time.monotonic()
            if self.exited and (
                # every output closed, or what is left waits on a client (backpressure) and
                # finish() drains it, or descendants outside the container hold the pipes
                all(not s.open or s.paused for s in self.sources) or now >= self.exit_deadline
            ):
                break
            timeout: float | None = None
            deadlines = self._exec_deadlines()
            if self.exited:
                deadlines.append(self.exit_deadline)
            if deadlines:
                timeout = max(0.0, min(deadlines) - now)
            self.reactor.run_once(timeout)
            self._exec_timers()
        self.finish()
        return 0

    def finish(self, error: str = "") -> None:
        """The init has exited (or the monitor failed): record it, delete, close everything."""
        for s in self.sources:
            s.drain()
            s.close()
        for ex in list(self.execs.values()):
            if ex.exit_code is None:
                ex.exit_code = 137
            ex.maybe_finish(force=True)
        if self.log is not None:
            with contextlib.suppress(OSError):
                self.log.close()
        oom = oom_kill_count(self.memory_cgroup) > self.oom_base
        from bulkhead.oci.state import rfc3339_nano

        status = ExitStatus(
            exit_code=self.exit_code if self.exit_code is not None else 255,
            oom_killed=oom,
            finished_at=rfc3339_nano(time.time_ns()),
            error=error or self.error,
        )
        write_atomic(os.path.join(self.cfg.state_dir, EXIT_FILE), msgspec.json.encode(status))
        if self.stdin is not None:
            self.stdin.close()
        for listener in self.listeners:
            self.reactor.forget(listener.fileno())
            listener.close()
        for name in (CTL_SOCK, ATTACH_SOCK):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self.cfg.state_dir, name))
        # Clients get their EOF now (the exit is recorded), while the runtime deletes.
        for conn in list(self.conns):
            conn.close_after_flush()
        if self.backend is not None:
            try:
                self.backend.delete()
            except Exception as exc:
                print(f"monitor: delete: {exc}", file=sys.stderr)
        self._reap()
        # Clients get all the output, however slowly they read: the wait ends
        # _LINGER seconds after the last progress.
        deadline = time.monotonic() + _LINGER
        pending = sum(len(c.out) for c in self.conns)
        while self.conns and time.monotonic() < deadline:
            self.reactor.run_once(0.1)
            now_pending = sum(len(c.out) for c in self.conns)
            if now_pending < pending:
                deadline = time.monotonic() + _LINGER
            pending = now_pending
        for conn in list(self.conns):
            conn.close()
        if self.master is not None:
            os.close(self.master)
            self.master = None


#: Signals the monitor passes on to the container's init (conmon's ``on_sig_exit``).
_FORWARDED = frozenset({int(signal.SIGTERM), int(signal.SIGINT), int(signal.SIGQUIT)})


def _noop(signum: int, frame: object) -> None:
    pass


def monitor_prologue() -> int:
    """What starts a monitor's life whatever its container: returns the signal pipe's read end.

    Its own session, the subreaper flag, the signal handlers (see the
    module docstring). A spare monitor does it before it has a container.
    """
    from bulkhead.linux import process as lxprocess

    os.setsid()
    lxprocess.set_child_subreaper(True)
    sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(sig_w)
    # Handlers, not SIG_IGN: an ignored signal stays ignored across exec, in the container.
    for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGPIPE, *_FORWARDED):
        signal.signal(sig, _noop)
    return sig_r


def serve(
    cfg: MonitorConfig,
    reply: socket.socket,
    spare_helper: tuple[int, socket.socket] | None = None,
    sig_r: int = -1,
) -> int:
    """The monitor's life, in a fresh child of the zygote: set up, reply, run. Returns an exit code.

    ``reply`` is the spawner's connection: it gets ``{"monitor_pid",
    "init_pid"}`` or ``{"error", "kind"}``, then is closed. ``sig_r``: the
    :func:`monitor_prologue` already done (a spare monitor), else -1.
    """
    from bulkhead.linux import process as lxprocess

    if sig_r < 0:
        sig_r = monitor_prologue()
    with contextlib.suppress(OSError):
        lxprocess.set_name(f"bh-mon {cfg.container_id[:12]}")
    os.makedirs(cfg.state_dir, mode=0o711, exist_ok=True)
    # Our own stdio: nothing in, our complaints to monitor.log.
    null = os.open(os.devnull, os.O_RDWR)
    log_fd = os.open(
        os.path.join(cfg.state_dir, "monitor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
    )
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)
    mon = Monitor(cfg, spare_helper)
    mon.sig_r = sig_r
    binary = loop_binary()
    if binary is not None:
        mon.early = (binary, reply)
    try:
        monitor_pid, init_pid = mon.setup()
    except MonitorError as exc:
        _send_reply(reply, {"error": str(exc), "kind": exc.kind})
        return 1
    except Exception as exc:
        traceback.print_exc()
        _send_reply(reply, {"error": f"{type(exc).__name__}: {exc}", "kind": "runtime"})
        return 1
    _send_reply(reply, {"monitor_pid": monitor_pid, "init_pid": init_pid})
    mon.note_oom_base()  # the container starts only once the loop serves ctl.sock
    if mon.hand_over_failed:
        print(
            f"monitor: {binary}: {mon.hand_over_failed}: the Python loop serves instead",
            file=sys.stderr,
        )
    elif binary is not None:
        try:
            _hand_over(mon, binary)  # returns only when the exec failed
        except Exception as exc:
            print(f"monitor: {binary}: {exc}: the Python loop serves instead", file=sys.stderr)
    try:
        return mon.run()
    except BaseException as exc:
        traceback.print_exc()
        with contextlib.suppress(Exception):
            mon.finish(error=f"monitor failed: {type(exc).__name__}: {exc}")
        return 1


def _start_helper_process(cfg: MonitorConfig, name: str) -> None:
    """In a child the zygote forked for ``cfg``'s container: our own session, stderr, signals."""
    from bulkhead.linux import process as lxprocess

    os.setsid()
    with contextlib.suppress(OSError):
        lxprocess.set_name(name)
    null = os.open(os.devnull, os.O_RDWR)
    log_fd = os.open(
        os.path.join(cfg.state_dir, "monitor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640
    )
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)


def load_config(state_dir: str) -> MonitorConfig:
    """The :class:`MonitorConfig` a monitor handed over to ``bh-monitor`` left in ``state_dir``."""
    with open(os.path.join(state_dir, CONFIG_FILE), "rb") as f:
        return msgspec.json.decode(f.read(), type=MonitorConfig)


def serve_exec(cfg: MonitorConfig, sock: socket.socket, received: bytes) -> int:
    """An exec session: one ``exec`` of the container, served to the client on ``sock``.

    ``bh-monitor`` got the request on its ``ctl.sock`` and passed the
    connection (and the bytes it had read) to the zygote, which forked us.
    We are what the Python monitor is for an exec: the subreaper of the
    exec'd process, the owner of its stdio and its ``exec/<id>.json``; we
    also listen at :func:`exec_socket_path` for ``exec_resize``, and exit
    once the exec is done and its client has all of its output.
    """
    from bulkhead.linux import process as lxprocess

    _start_helper_process(cfg, f"bh-exec {cfg.container_id[:12]}")
    lxprocess.set_child_subreaper(True)
    sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(sig_w)
    for sig in (signal.SIGCHLD, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, _noop)
    mon = Monitor(cfg)
    mon.session = True
    mon.started = True
    mon.sig_r = sig_r
    mon.backend = backend_for(cfg)
    listener: socket.socket | None = None
    path = ""
    try:
        req = json.loads(received.split(b"\n", 1)[0])
        exec_id = str(req.get("exec_id")) if isinstance(req, dict) else ""
    except ValueError:
        exec_id = ""
    if _EXEC_ID.match(exec_id):
        path = exec_socket_path(cfg.state_dir, exec_id)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(path)
        listener.listen(16)
        listener.setblocking(False)
        mon.reactor.add_reader(listener.fileno(), lambda: mon._accept_ctl(listener))  # type: ignore[arg-type]
    mon.serve_ctl(sock, received)
    mon.reactor.add_reader(sig_r, mon._signals)
    try:
        while mon.execs or mon.conns:
            if listener is not None and not mon.execs:
                mon.reactor.forget(listener.fileno())
                listener.close()
                listener = None
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            now = time.monotonic()
            deadlines = mon._exec_deadlines()
            timeout = max(0.0, min(deadlines) - now) if deadlines else None
            mon.reactor.run_once(timeout)
            mon._exec_timers()
    finally:
        if listener is not None:
            listener.close()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    return 0


def serve_delete(cfg: MonitorConfig, sock: socket.socket) -> int:
    """Delete the exited container in its runtime (``bh-monitor``'s last request); reply on ``sock``."""
    _start_helper_process(cfg, f"bh-del {cfg.container_id[:12]}")
    try:
        backend_for(cfg).delete()
    except Exception as exc:
        _send_reply(sock, {"error": f"delete: {exc}", "kind": "runtime"})
        return 1
    _send_reply(sock, {"ok": True})
    return 0


def loop_binary() -> str | None:
    """The C loop to hand over to (``BULKHEAD_MONITOR_LOOP=python``: None, the Python loop)."""
    if os.environ.get("BULKHEAD_MONITOR_LOOP") == "python":
        return None
    return MONITOR_LOOP if os.access(MONITOR_LOOP, os.X_OK) else None


def exec_socket_path(state_dir: str, exec_id: str) -> str:
    """Where an exec session listens for ``exec_resize`` (short: unix socket paths are)."""
    return os.path.join(os.path.dirname(state_dir), "execs", exec_id[:24] + ".sock")


def _hand_over(
    mon: Monitor,
    binary: str,
    early: tuple[socket.socket, socket.socket, list[int]] | None = None,
) -> None:
    """Become ``bh-monitor``: the same process (pid, children, fds) running the C loop.

    The set-up (the runtime's create, the listening sockets, the reply to
    the spawner, the OOM baseline) is done; what is left is the long, idle
    steady state, which a Python process would spend ~20 MiB on. execve keeps
    the pid, the container's init as our child and our subreaper status; it
    drops everything Python. What the loop cannot do itself (an exec, the
    runtime's delete) it asks the zygote for, which forks a Python helper
    from its warm state (:func:`serve_exec`, :func:`serve_delete`).

    ``early`` (the in-process runtime): (the socket the runtime's helper
    will answer on, the spawner's connection, our ends of the container's
    stdio: [stdin (with ``-i``), stdout, stderr], [] with a tty). Then the
    hand-over happens while the helper still creates the container (the
    exec costs ~2 ms: the kernel tears down a zygote-sized address space),
    and ``bh-monitor`` reads the answer and does the rest of
    :meth:`Monitor.setup`, the reply and :meth:`Monitor.note_oom_base`
    (``--fd-helper`` in monitor_loop.c).
    """
    cfg = mon.cfg
    backend = mon.backend
    assert backend is not None
    keep: list[int] = []

    def fd(n: int) -> str:
        os.set_inheritable(n, True)
        keep.append(n)
        return str(n)

    ctl, attach = mon.listeners
    argv = [binary, "--id", cfg.container_id, "--state-dir", cfg.state_dir]
    if early is None:
        argv += ["--init-pid", str(mon.init_pid)]
    argv += ["--fd-ctl", fd(ctl.fileno()), "--fd-attach", fd(attach.fileno())]
    if early is not None:
        helper, reply, stdio = early
        argv += ["--fd-helper", fd(helper.fileno()), "--fd-reply", fd(reply.fileno())]
        argv += ["--monitor-start", str(mon.monitor_start)]
        if cfg.tty:
            argv += ["--stdin-open", str(int(cfg.stdin_open))]
        else:
            if cfg.stdin_open:
                argv += ["--fd-stdin", fd(stdio[0])]
            argv += ["--fd-out", fd(stdio[-2]), "--fd-err", fd(stdio[-1])]
    else:
        argv += ["--fd-out", fd(mon.sources[0].fd)]
        if len(mon.sources) > 1:
            argv += ["--fd-err", fd(mon.sources[1].fd)]
        if mon.stdin is not None:
            argv += ["--fd-stdin", fd(mon.stdin.fd)]
        if mon.master is not None:
            argv += ["--fd-master", fd(mon.master)]
    argv += ["--tty", str(int(cfg.tty)), "--stdin-once", str(int(cfg.stdin_once))]
    if cfg.log_path:
        argv += ["--log-path", cfg.log_path, "--log-max-size", str(cfg.log_max_size)]
        argv += ["--log-max-files", str(cfg.log_max_files)]
    if mon.memory_cgroup:
        argv += ["--oom-cgroup", mon.memory_cgroup, "--oom-base", str(mon.oom_base)]
    if isinstance(backend, _Binary):
        runtime = [backend.path, "--root", cfg.runtime_root]
        for arg in (*runtime, "start", cfg.container_id):
            argv += ["--start-arg", arg]
        for arg in (*runtime, "kill", "--all", cfg.container_id):
            argv += ["--kill-all-arg", arg]
    else:
        assert isinstance(backend, _InProcess)
        # early: the loop uses the answer's exec.fifo, else (poststart hooks) these
        cli = [sys.executable, "-m", "bulkhead.runtime.cli", "--root", cfg.runtime_root]
        if backend.fifo:
            argv += ["--start-fifo", backend.fifo]
        else:  # poststart hooks: the runtime's own start runs them
            for arg in (*cli, "start", cfg.container_id):
                argv += ["--start-arg", arg]
        if mon.memory_cgroup:
            argv += ["--cgroup-procs", os.path.join(mon.memory_cgroup, "cgroup.procs")]
        else:  # early: the loop uses the init's memory cgroup when it has one, else these
            for arg in (*cli, "kill", "--all", cfg.container_id):
                argv += ["--kill-all-arg", arg]
    zygote = os.path.join(os.path.dirname(cfg.state_dir), ZYGOTE_SOCK)
    argv += ["--zygote-socket", zygote]
    # The last resort when the zygote cannot delete the container at its exit: main() below.
    for arg in (sys.executable, "-m", "bulkhead.engine.monitor", "delete", cfg.state_dir):
        argv += ["--delete-arg", arg]
    write_atomic(os.path.join(cfg.state_dir, CONFIG_FILE), msgspec.json.encode(cfg))
    log = mon.log
    if log is not None:
        log.close()  # nothing written yet: the loop opens the file itself
        mon.log = None
    sys.stderr.flush()
    try:
        os.execv(binary, argv)
    except OSError:
        for n in keep:
            os.set_inheritable(n, False)
        if log is not None and cfg.log_path:  # the Python loop writes the log after all
            from bulkhead.engine.jsonlog import JsonLogWriter

            mon.log = JsonLogWriter(cfg.log_path, cfg.log_max_size, cfg.log_max_files)
        raise


def _send_reply(sock: socket.socket, doc: dict[str, Any]) -> None:
    try:
        sock.setblocking(True)
        sock.sendall(_reply(doc))
    except OSError:
        pass
    finally:
        sock.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m bulkhead.engine.monitor delete STATE_DIR``: ``bh-monitor``'s last resort.

    When the zygote is gone at the container's exit, ``bh-monitor`` execve()s
    this to delete the container in its runtime itself (slower: a cold
    Python start), so that nothing is left behind either way.
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "delete":
        print("usage: python -m bulkhead.engine.monitor delete STATE_DIR", file=sys.stderr)
        return 2
    try:
        backend_for(load_config(args[1])).delete()
    except Exception as exc:
        print(f"monitor: delete {args[1]}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
