"""The monitor zygote: one long-lived process that forks a monitor per container.

Why a zygote: the daemon must not fork (it runs threads), and a fresh
``python`` per container would pay the interpreter's start-up and the
runtime's imports every time and keep its own copy of every page. The
zygote imports the runtime library and the monitor once, calls
``gc.freeze()`` (so the collector never writes to those objects' pages) and
then ``fork``\\ s: each monitor shares the zygote's pages copy-on-write and
costs only what it dirties.

::

    python -m bulkhead.engine.zygote --socket <exec_root>/zygote.sock [--daemonize]

It is single-threaded (a ``selectors`` loop), ``setsid``\\ s so that it
survives its spawner (the daemon), writes its pid to ``zygote.pid`` next to
the socket and reaps the monitors it forked.

It exits on SIGTERM, and by itself when its socket is no longer there (the
exec root removed: nothing can reach it again); monitors keep running.

Protocol (one JSON line each way): ``{"op": "spawn", "config":
<MonitorConfig>}`` → ``{"monitor_pid", "init_pid"}`` (written by the new
monitor once the container is *created*) or ``{"error", "kind"}``;
``{"op": "ping"}`` → ``{"ok": true, "pid": N}``.

:class:`ZygoteClient` is the daemon's side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import gc
import json
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

from bulkhead.engine.monitor import MonitorConfig, MonitorError, error_from_reply

ZYGOTE_SOCK = "zygote.sock"
#: seconds of quiet after which the zygote forks the next request's monitor in advance
_SPARE_DELAY = 0.02
#: seconds after a spawn before that spare: its container's create, start and (``run --rm
#: true``) exit come in this window, and the spare's fork and warm-up would compete with
#: them for the CPUs. The end of a container (its runtime delete done) ends the wait.
_SPARE_HOLD = 0.04
ZYGOTE_PID = "zygote.pid"
#: seconds between an idle zygote's checks that its socket is still there. A zygote
#: whose socket was removed (its exec root deleted, say) can never be reached again:
#: it exits, as on SIGTERM; the monitors it forked keep running.
REACHABLE_CHECK = 2.0


class Spawned(msgspec.Struct, kw_only=True):
    """A monitor just forked, and its container's init (waiting for ``start``)."""

    monitor_pid: int
    init_pid: int


#: What a daemon's environment may hold that must not reach containers (the in-process
#: runtime passes LISTEN_FDS on, as runc does) nor confuse the zygote (NOTIFY_SOCKET).
_DROP_ENV = ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "NOTIFY_SOCKET")


def zygote_environ() -> dict[str, str]:
    """The zygote's environment: the caller's, minus socket activation and sd_notify."""
    return {k: v for k, v in os.environ.items() if k not in _DROP_ENV}


class ZygoteClient:
    """The daemon's handle on the zygote of ``exec_root`` (``zygote.sock``, ``zygote.pid``)."""

    def __init__(self, exec_root: str | os.PathLike[str]) -> None:
        self.exec_root = os.fspath(exec_root)
        self.socket_path = os.path.join(self.exec_root, ZYGOTE_SOCK)
        self.pid_path = os.path.join(self.exec_root, ZYGOTE_PID)
        self._lock = asyncio.Lock()
        #: How long a starting zygote may take to import and warm up before it is killed.
        self.startup_limit = 120.0

    async def _call(self, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        reader, writer = await asyncio.open_unix_connection(self.socket_path, limit=1 << 20)
        try:
            writer.write(json.dumps(request).encode() + b"\n")
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), timeout)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        if not line:
            raise MonitorError("the monitor zygote closed the connection without a reply")
        reply = json.loads(line)
        if not isinstance(reply, dict):
            raise MonitorError(f"unexpected reply from the monitor zygote: {line!r}")
        if "error" in reply:
            raise error_from_reply(reply)
        return reply

    async def ping(self) -> int | None:
        """The zygote's pid, or None when nothing answers."""
        try:
            reply = await self._call({"op": "ping"}, 5.0)
        except (OSError, MonitorError, TimeoutError, ValueError):
            return None
        return int(reply.get("pid", 0)) or None

    async def ensure_running(self, timeout: float = 10.0) -> int:
        """Start the zygote (posix_spawn, daemonized) unless one runs; return its pid.

        The zygote of ``zygote.pid`` counts as running when that process is
        alive and is a zygote for this socket (its command line says so): no
        round trip. Otherwise it is asked (ping) and, when nothing answers,
        started. :meth:`spawn` also starts it when it finds it gone.
        """
        pid = self._running_pid()
        if pid is not None:
            return pid
        async with self._lock:
            pid = await self.ping()
            if pid is not None:
                return pid
            return await self._start(timeout)

    async def _start(self, timeout: float) -> int:
        os.makedirs(self.exec_root, mode=0o711, exist_ok=True)
        log = os.open(
            os.path.join(self.exec_root, "zygote.log"),
            os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
            0o640,
        )
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        try:
            child = os.posix_spawn(
                sys.executable,
                [
                    sys.executable,
                    "-m",
                    "bulkhead.engine.zygote",
                    "--socket",
                    self.socket_path,
                    "--daemonize",
                ],
                zygote_environ(),
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, null, 0),
                    (os.POSIX_SPAWN_DUP2, log, 1),
                    (os.POSIX_SPAWN_DUP2, log, 2),
                ],
                setsid=True,
            )
        finally:
            os.close(log)
            os.close(null)
        # The intermediate process imports and warms up (~0.2 s here, many seconds under
        # emulation or heavy load), forks the real zygote and exits: wait for it as long as
        # it lives (up to ``startup_limit``), then give the zygote ``timeout`` to answer.
        log_path = os.path.join(self.exec_root, "zygote.log")
        started = time.monotonic()
        status = None
        while time.monotonic() - started < self.startup_limit:
            done, status = os.waitpid(child, os.WNOHANG)
            if done:
                break
            await asyncio.sleep(0.005)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
            await asyncio.to_thread(os.waitpid, child, 0)
            raise MonitorError(
                f"the monitor zygote did not start within {self.startup_limit:.0f} s"
                f" (see {log_path})"
            )
        if status is not None and os.waitstatus_to_exitcode(status) != 0:
            raise MonitorError(
                "the monitor zygote did not start: it exited with"
                f" {os.waitstatus_to_exitcode(status)} (see {log_path})"
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = await self.ping()
            if pid is not None:
                return pid
            await asyncio.sleep(0.01)
        raise MonitorError(f"the monitor zygote did not start (see {log_path})")

    async def spawn(self, cfg: MonitorConfig, timeout: float = 120.0) -> Spawned:
        """Fork a monitor for ``cfg``; returns once the container is created.

        Raises :class:`~bulkhead.engine.monitor.MonitorError` (a
        ContainerError) with the runtime's message: ProcessNotFound (exit
        127), ProcessNotExecutable (126), MonitorBadRequest ...
        """
        request = {"op": "spawn", "config": msgspec.to_builtins(cfg)}
        try:
            reply = await self._call(request, timeout)
        except (FileNotFoundError, ConnectionRefusedError):
            # The zygote went away (killed, machine clean-up): start one and try again.
            async with self._lock:
                if await self.ping() is None:
                    await self._start(10.0)
            reply = await self._call(request, timeout)
        return Spawned(monitor_pid=int(reply["monitor_pid"]), init_pid=int(reply["init_pid"]))

    def pid(self) -> int | None:
        """The pid in ``zygote.pid`` if that process is alive."""
        try:
            with open(self.pid_path) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            return None
        from bulkhead.runtime.state import proc_start_time

        return pid if proc_start_time(pid) is not None else None

    def _running_pid(self) -> int | None:
        """``pid()``, if that process's command line is a zygote serving our socket."""
        pid = self.pid()
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return None
        if b"bulkhead.engine.zygote" in argv and os.fsencode(self.socket_path) in argv:
            return pid
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the zygote (SIGTERM, then SIGKILL); monitors it forked keep running."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            from bulkhead.runtime.state import proc_start_time

            while time.monotonic() < deadline:
                if proc_start_time(pid) is None:  # gone, or a zombie its reaper has yet to reap
                    break
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.01)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        for path in (self.socket_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


# ---------------------------------------------------------------------- the zygote process


def _preload() -> None:
    """Import what monitors and the runtime's forked children use, once, before any fork."""
    import fcntl  # noqa: F401
    import ipaddress  # noqa: F401
    import pkgutil
    import struct  # noqa: F401
    import subprocess  # noqa: F401
    import termios  # noqa: F401
    import urllib.parse  # noqa: F401

    import bulkhead.cgroups
    import bulkhead.engine.jsonlog
    import bulkhead.linux.dmz
    import bulkhead.linux.process
    import bulkhead.linux.seccomp
    import bulkhead.oci.defaults
    import bulkhead.oci.runtime_spec
    import bulkhead.oci.state
    import bulkhead.runtime.container
    import bulkhead.runtime.init
    import bulkhead.runtime.plan
    import bulkhead.runtime.rootfs
    import bulkhead.runtime.state

    # Every cgroup driver and controller module: the runtime imports them lazily,
    # which in a monitor would cost each one its own copy.
    for mod in pkgutil.iter_modules(bulkhead.cgroups.__path__, "bulkhead.cgroups."):
        with contextlib.suppress(ImportError):
            __import__(mod.name)


def _warm_seccomp() -> None:
    """Compile Docker's default seccomp profile once, here, for every monitor to inherit.

    :func:`bulkhead.linux.seccomp.compile_filter` caches compiled filters per
    process; compiled in the zygote before its first fork, the default
    profile (the one nearly every container uses) costs each container a
    cache look-up (~0.5 ms) instead of a libseccomp compile (15-40 ms).
    Best effort: any failure only means no warm cache.
    """
    try:
        from bulkhead.engine.options import RunOptions
        from bulkhead.engine.spec import build_spec
        from bulkhead.linux.seccomp import compile_filter
        from bulkhead.oci.image_spec import ImageConfig, RootFS
        from bulkhead.oci.runtime_spec import LinuxSeccomp

        doc = build_spec(
            ImageConfig(architecture="amd64", os="linux", rootfs=RootFS()),
            RunOptions(cmd=["true"]),
            rootfs="/nonexistent",
            container_id="0" * 64,
        )
        section = (doc.get("linux") or {}).get("seccomp")
        if section:
            # Decoded from JSON as the runtime decodes config.json: the same cache key.
            compile_filter(msgspec.json.decode(json.dumps(section).encode(), type=LinuxSeccomp))
        # msgspec builds a type's decoder on its first use (~4 ms for a whole Spec):
        # build the runtime's here, once, rather than in every monitor.
        from bulkhead.oci.runtime_spec import decode_spec, validate_spec
        from bulkhead.runtime.state import ContainerState

        warm = json.dumps(doc).encode()
        spec = decode_spec(warm)
        validate_spec(spec)
        from bulkhead.engine import monitor

        monitor.WARM_SPEC = warm
        if spec.process is not None:
            from bulkhead.runtime.plan import ContainerPlan, plan_namespaces, plan_process

            plan_namespaces(spec, ContainerPlan(process=plan_process(spec.process)))
        state = ContainerState(id="warm", bundle="/", rootfs="/", created="")
        msgspec.json.decode(msgspec.json.encode(state), type=ContainerState)
    except Exception as exc:
        print(f"bulkhead.engine.zygote: no warm seccomp cache: {exc}", file=sys.stderr)


def _warm_monitor() -> None:
    """Run the monitor's hot paths here a few times, before the first fork.

    CPython 3.11 rewrites a function's bytecode in place once it has run a
    few times (quickening, specialisation) and sets up caches on first use;
    done in the zygote, those writes land in pages every monitor shares
    instead of in each monitor's own copy (about 0.2 MiB less per monitor).
    Exercised on socketpairs, a pipe and a temporary directory; best effort.
    """
    try:
        _exercise_monitor()
    except Exception as exc:
        print(f"bulkhead.engine.zygote: monitor warm-up skipped: {exc}", file=sys.stderr)


def _exercise_monitor() -> None:
    import tempfile

    from bulkhead.engine import monitor as m
    from bulkhead.engine.jsonlog import JsonLogWriter

    with tempfile.TemporaryDirectory() as tmp:
        cfg = m.MonitorConfig(
            container_id="warm", bundle=tmp, runtime_root=tmp, state_dir=tmp, log_path=None
        )
        mon = m.Monitor(cfg)
        log = JsonLogWriter(os.path.join(tmp, "log"))
        for _ in range(20):
            a, b = socket.socketpair()
            got: list[bytes] = []
            conn = m._Conn(mon, a, got.append, lambda: None)
            mon.conns.add(conn)
            b.sendall(b'{"op": "ping"}\n')
            mon.reactor.run_once(0)
            conn.send(m.frame(1, b"x" * 100))
            conn.send(json.dumps({"ok": True}).encode() + b"\n")
            log.write(1, b"line\n" * 3)
            json.loads(b'{"op": "start", "signal": 9}')
            m.write_atomic(
                os.path.join(tmp, "f.json"), msgspec.json.encode(m.ExitStatus(exit_code=0))
            )
            conn.close_after_flush()
            b.close()
            mon.reactor.run_once(0)
            conn.close()
            # an attach client and a process's output
            c, d = socket.socketpair()
            att = m._Attach(mon, c)
            d.sendall(b'{"stdin": false, "stdout": true, "stderr": true}\n')
            mon.reactor.run_once(0)
            r, w = os.pipe()
            src = m._Source(mon, r, 1, mon._output)
            mon.sources.append(src)
            os.write(w, b"output\n")
            mon.reactor.run_once(0)
            os.close(w)
            mon.reactor.run_once(0)
            mon.sources.clear()
            mon.attached.clear()
            att.conn.close()
            d.close()
        log.close()
        mon.reactor.sel.close()


def _reset_signal_dispositions() -> None:
    """Start with every signal at its default, whatever the spawner left ignored.

    An ignored signal stays ignored across fork and exec, down to the
    containers: a daemon started from a background shell ignores SIGINT and
    SIGQUIT, and glibc's posix_spawn (how the daemon starts us) leaves its
    two internal real-time signals (32 and 33, which Python cannot name)
    ignored in the child. Docker's containers start with none ignored.
    """
    keep = {signal.SIGPIPE, signal.SIGXFSZ}  # Python's own; set back to default at exec
    for sig in signal.valid_signals():
        if sig not in keep and signal.getsignal(sig) == signal.SIG_IGN:
            with contextlib.suppress(OSError, ValueError):
                signal.signal(sig, signal.SIG_DFL)
    number = {"x86_64": 13, "aarch64": 134}.get(os.uname().machine)  # rt_sigaction
    if number is None:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    default = (ctypes.c_ulong * 4)()  # handler SIG_DFL, no flags, no restorer, empty mask
    for internal in (32, 33):
        libc.syscall(
            ctypes.c_long(number), ctypes.c_long(internal), default, None, ctypes.c_long(8)
        )


def _read_request(
    sock: socket.socket, timeout: float = 2.0
) -> tuple[dict[str, Any] | None, list[int]]:
    """One JSON line request and the fds that came with it (SCM_RIGHTS: ``exec``)."""
    sock.settimeout(timeout)
    buf = b""
    fds: list[int] = []
    try:
        while b"\n" not in buf:
            chunk, got, _, _ = socket.recv_fds(sock, 65536, 4)
            fds += got
            if not chunk:
                return None, fds
            buf += chunk
            if len(buf) > (4 << 20):
                return None, fds
    except OSError:
        return None, fds
    try:
        doc = json.loads(buf.split(b"\n", 1)[0])
    except ValueError:
        return None, fds
    return (doc if isinstance(doc, dict) else None), fds


def _answer(sock: socket.socket, doc: dict[str, Any]) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(json.dumps(doc).encode() + b"\n")
    sock.close()


def _noop(signum: int, frame: object) -> None:
    pass


def _file_id(path: str) -> tuple[int, int] | None:
    """``(st_dev, st_ino)`` of ``path``, or None when there is nothing there (or it
    cannot be looked at: a zygote that cannot see its socket treats it as gone)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class Zygote:
    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        #: ``_file_id`` of the socket we bound: a different one there is not ours
        self.socket_id: tuple[int, int] | None = None
        self.pid_path = os.path.join(os.path.dirname(socket_path), ZYGOTE_PID)
        self.children: set[int] = set()
        self.stopping = False
        self.lock_fd = -1
        #: the spare monitor (pid, our end of its socketpair), forked ahead of the next request
        self.spare: tuple[int, socket.socket] | None = None
        #: no spare before this time.monotonic() (see _SPARE_HOLD)
        self.spare_after = 0.0
        #: the helpers serving a ``delete`` (a container's end)
        self.deleting: set[int] = set()

    def serve(self) -> int:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.socket_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        listener.bind(self.socket_path)
        listener.listen(128)
        self.socket_id = _file_id(self.socket_path)
        sig_r, sig_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(sig_w)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _noop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        from bulkhead.engine.monitor import write_atomic

        write_atomic(self.pid_path, str(os.getpid()).encode())
        sel = selectors.DefaultSelector()
        sel.register(listener, selectors.EVENT_READ, "accept")
        sel.register(sig_r, selectors.EVENT_READ, "signal")
        gc.collect()
        gc.freeze()
        closing = (listener, sel, (sig_r, sig_w))
        next_check = time.monotonic() + REACHABLE_CHECK
        try:
            while not self.stopping:
                # The spare is forked once nothing has happened for a moment, and not
                # soon after a spawn (_SPARE_HOLD), so that its fork and warm-up do not
                # compete with the container just handed over; right after a delete
                # (that container's end) if nothing waits.
                spare_due = None
                if self.spare is None:
                    spare_due = time.monotonic() + max(
                        _SPARE_DELAY, self.spare_after - time.monotonic()
                    )
                    if self.spare_after < 0:  # a container just ended: now, if nothing waits
                        spare_due = 0.0
                wake = next_check if spare_due is None else min(next_check, spare_due)
                events = sel.select(max(0.0, wake - time.monotonic()))
                if time.monotonic() >= next_check:
                    next_check = time.monotonic() + REACHABLE_CHECK
                    if _file_id(self.socket_path) != self.socket_id:
                        print(
                            f"bulkhead.engine.zygote: {self.socket_path} is gone: exiting",
                            file=sys.stderr,
                        )
                        break
                # (not when only the check woke us early)
                if not events and spare_due is not None and time.monotonic() >= spare_due - 0.001:
                    self.spare_after = 0.0
                    self.spare = self._fork_spare(closing)
                for key, _ in events:
                    if key.data == "signal":
                        self._signals(sig_r)
                    else:
                        self._accept(listener, sel, (sig_r, sig_w))
        finally:
            self._drop_spare()
            listener.close()
            # only what is still ours: the exec root may have been made anew, with
            # another zygote's socket and pid file at the same paths
            if _file_id(self.socket_path) == self.socket_id:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.socket_path)
            with contextlib.suppress(OSError, ValueError):
                with open(self.pid_path) as f:
                    ours = int(f.read().strip()) == os.getpid()
                if ours:
                    os.unlink(self.pid_path)
        return 0

    def _signals(self, sig_r: int) -> None:
        try:
            data = os.read(sig_r, 512)
        except BlockingIOError:
            data = b""
        if signal.SIGTERM in data or signal.SIGINT in data:
            self.stopping = True
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            self.children.discard(pid)
            if pid in self.deleting:
                self.deleting.discard(pid)
                self.spare_after = -1.0
            if self.spare is not None and self.spare[0] == pid:
                self.spare[1].close()
                self.spare = None

    def _accept(
        self, listener: socket.socket, sel: selectors.BaseSelector, sig: tuple[int, int]
    ) -> None:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return
        req, fds = _read_request(conn)
        if req is None:
            for fd in fds:
                os.close(fd)
            _answer(
                conn, {"error": "bad request: one JSON object line expected", "kind": "bad_request"}
            )
            return
        op = req.get("op")
        if op in ("exec", "delete"):
            self._for_monitor(op, req, conn, fds, (listener, sel, sig))
            return
        for fd in fds:
            os.close(fd)
        if op == "ping":
            from bulkhead.linux import seccomp

            _answer(
                conn,
                {
                    "ok": True,
                    "pid": os.getpid(),
                    "monitors": len(self.children) - (self.spare is not None),
                    "seccomp_filters_cached": len(seccomp._cache),
                },
            )
            return
        if op != "spawn":
            _answer(conn, {"error": f"unknown op {op!r}", "kind": "bad_request"})
            return
        try:
            cfg = msgspec.convert(req.get("config"), type=MonitorConfig)
        except msgspec.ValidationError as exc:
            _answer(conn, {"error": f"bad monitor config: {exc}", "kind": "bad_request"})
            return
        self.spare_after = time.monotonic() + _SPARE_HOLD
        if self.spare is not None:
            _, handoff = self.spare
            self.spare = None
            try:
                socket.send_fds(handoff, [msgspec.json.encode(cfg)], [conn.fileno()])
            except OSError:
                pass  # it died meanwhile (the reaper collects it): fork one below
            else:
                handoff.close()
                conn.close()
                return
            handoff.close()

        def monitor() -> int:
            from bulkhead.engine.monitor import serve

            return serve(cfg, conn)

        self._fork_child((listener, sel, sig), monitor)
        conn.close()

    def _for_monitor(
        self,
        op: str,
        req: dict[str, Any],
        conn: socket.socket,
        fds: list[int],
        closing: tuple[socket.socket, selectors.BaseSelector, tuple[int, int]],
    ) -> None:
        """What ``bh-monitor`` (the C loop) asks: an exec session, or the runtime's delete.

        ``exec`` comes with the client's connection (SCM_RIGHTS) and the
        bytes the loop already read from it ("request" line, "rest" in hex);
        the session answers the client, not us. ``delete`` is answered on
        ``conn``. Either way a child forked from our warm state does the work.
        """
        from bulkhead.engine.monitor import load_config, serve_delete, serve_exec

        client: socket.socket | None = None
        try:
            cfg = load_config(str(req.get("state_dir")))
            if op == "exec":
                if len(fds) != 1:
                    raise ValueError("exec: one client connection expected")
                client = socket.socket(fileno=fds.pop())
                received = str(req.get("request", "")).encode() + b"\n"
                received += bytes.fromhex(str(req.get("rest", "")))
        except (OSError, ValueError, msgspec.ValidationError, msgspec.DecodeError) as exc:
            for fd in fds:
                os.close(fd)
            reply = {"error": f"{op}: {exc}", "kind": "bad_request"}
            if client is not None:
                _answer(client, reply)
            _answer(conn, reply)
            return

        def helper() -> int:
            if client is not None:
                conn.close()
                return serve_exec(cfg, client, received)
            return serve_delete(cfg, conn)

        pid = self._fork_child(closing, helper)
        if client is None:
            self.deleting.add(pid)
        conn.close()
        if client is not None:
            client.close()

    def _fork_child(
        self,
        closing: tuple[socket.socket, selectors.BaseSelector, tuple[int, int]],
        body: Callable[[], int],
    ) -> int:
        """Fork a child that drops the zygote's fds and signals, runs ``body``, exits with its code.

        Returns the child's pid (counted in :attr:`children`, reaped on SIGCHLD);
        raises :class:`OSError` when the fork fails.
        """
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                self._forget_zygote(*closing)
                code = body()
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        self.children.add(pid)
        return pid

    def _forget_zygote(
        self, listener: socket.socket, sel: selectors.BaseSelector, sig: tuple[int, int]
    ) -> None:
        """In a freshly forked monitor: drop the zygote's fds and signal handling."""
        sel.close()
        listener.close()
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
        signal.set_wakeup_fd(-1)
        os.close(sig[0])
        os.close(sig[1])
        for s in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(s, signal.SIG_DFL)

    def _fork_spare(
        self, closing: tuple[socket.socket, selectors.BaseSelector, tuple[int, int]]
    ) -> tuple[int, socket.socket] | None:
        """Fork the next request's monitor now, while nothing waits: a spawn then costs no fork.

        The spare waits on a socketpair for ``(MonitorConfig JSON, [the
        spawner's connection])`` and then serves exactly as a monitor forked
        on demand; at EOF (the zygote stopped or died) it just exits. Forked
        from the same frozen zygote, it holds the same preloaded state. It
        forks, in turn, the helper that will create its container, which
        warms up meanwhile (:func:`bulkhead.engine.monitor.fork_spare_helper`).
        """
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)

        def spare() -> int:
            ours.close()
            from bulkhead.engine.monitor import fork_spare_helper, monitor_prologue, serve

            helper = fork_spare_helper()
            sig_r = monitor_prologue()  # done now, while nothing waits
            msg, fds, _, _ = socket.recv_fds(theirs, 1 << 20, 1)
            theirs.close()
            if not msg or len(fds) != 1:
                return 0
            cfg = msgspec.json.decode(msg, type=MonitorConfig)
            return serve(cfg, socket.socket(fileno=fds[0]), helper, sig_r)

        try:
            pid = self._fork_child(closing, spare)
        except OSError as exc:
            print(f"bulkhead.engine.zygote: no spare monitor: {exc}", file=sys.stderr)
            ours.close()
            theirs.close()
            return None
        theirs.close()
        return pid, ours

    def _drop_spare(self) -> None:
        """Stop the spare monitor (it never served) and reap it."""
        if self.spare is None:
            return
        pid, handoff = self.spare
        self.spare = None
        handoff.close()  # EOF: it exits by itself; make sure, and reap it
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        self.children.discard(pid)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bulkhead.engine.zygote", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--socket", required=True, help="the unix socket to listen on")
    parser.add_argument(
        "--daemonize",
        action="store_true",
        help="fork, let the parent exit (no zombie for the spawner)",
    )
    args = parser.parse_args(argv)
    socket_path = os.path.abspath(args.socket)
    # Whatever the spawner let us inherit (its pipes, its sockets) must not live on in
    # the zygote and every monitor: a caller waiting for EOF on one would wait forever.
    from bulkhead.linux.process import close_range

    close_range(3)
    with contextlib.suppress(PermissionError):
        os.setsid()
    os.chdir("/")  # hold no mount busy
    _reset_signal_dispositions()
    for key in _DROP_ENV:
        os.environ.pop(key, None)
    _preload()
    _warm_seccomp()
    _warm_monitor()
    if args.daemonize and os.fork() != 0:
        os._exit(0)
    # One zygote per exec root: the lock is held for its life (monitors close their copy).
    lock_fd = os.open(
        os.path.join(os.path.dirname(socket_path), "zygote.lock"),
        os.O_RDWR | os.O_CREAT | os.O_CLOEXEC,
        0o600,
    )
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("bulkhead.engine.zygote: another zygote serves this exec root", file=sys.stderr)
        return 0
    zygote = Zygote(socket_path)
    zygote.lock_fd = lock_fd
    return zygote.serve()


if __name__ == "__main__":
    sys.exit(main())
