"""Staying with a container's process: ``run`` and ``exec`` without ``--detach``.

In the foreground the runtime behaves like the program it started: it
forwards the signals it receives to that process, relays the terminal when
the process has one (the pty master stays with us, our own terminal goes raw)
and exits with the process's exit status (128+N when killed by signal N).

To be able to wait for a process it did not fork itself (the container's
init is born from an intermediate child), the runtime makes itself a *child
subreaper* first: orphans of its descendants are reparented to it.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING

from bulkhead.errors import SpecError
from bulkhead.linux import process as lxprocess

if TYPE_CHECKING:
    from bulkhead.runtime.container import CreateOptions, Runtime
    from bulkhead.runtime.flags import Namespace
    from bulkhead.runtime.plan import ProcessPlan

#: Signals not forwarded: the ones we need ourselves.
_KEEP = {
    signal.SIGCHLD,
    signal.SIGWINCH,
    signal.SIGURG,
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
}


class SignalRelay:
    """Catch signals through a wakeup pipe so a select loop can handle them."""

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.old_wakeup = signal.set_wakeup_fd(self.w)
        self.saved: dict[int, object] = {}
        for sig in signal.valid_signals():
            if sig in _KEEP and sig not in (signal.SIGCHLD, signal.SIGWINCH):
                continue
            try:
                self.saved[sig] = signal.signal(sig, _noop)
            except (OSError, ValueError):
                pass

    def pending(self) -> list[int]:
        try:
            data = os.read(self.r, 512)
        except BlockingIOError:
            return []
        return list(data)

    def close(self) -> None:
        for sig, old in self.saved.items():
            with contextlib.suppress(OSError, ValueError, TypeError):
                signal.signal(sig, old)  # type: ignore[arg-type]
        signal.set_wakeup_fd(self.old_wakeup)
        os.close(self.r)
        os.close(self.w)


def _noop(signum: int, frame: object) -> None:
    pass


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[None]:
    """Put terminal ``fd`` in raw mode for the duration (if it is a terminal)."""
    if not os.isatty(fd):
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _copy_winsize(src: int, dst: int) -> None:
    import termios  # only with a terminal: its import costs milliseconds

    with contextlib.suppress(OSError):
        size = fcntl.ioctl(src, termios.TIOCGWINSZ, b"\0" * 8)
        fcntl.ioctl(dst, termios.TIOCSWINSZ, size)


def wait_process(pid: int, relay: SignalRelay, console: int | None = None) -> int:
    """Forward signals to ``pid``, relay the console, and return its exit code."""
    fds = [relay.r]
    stdin_open = console is not None
    if console is not None:
        fds.append(console)
        if stdin_open:
            fds.append(0)
        _copy_winsize(0, console)
    exit_code: int | None = None
    while exit_code is None or console is not None:
        try:
            ready, _, _ = select.select(fds, [], [], None if exit_code is None else 0.2)
        except InterruptedError:
            continue
        if not ready and exit_code is not None:
            break
        if relay.r in ready:
            for sig in relay.pending():
                if sig == signal.SIGCHLD:
                    code = _reap_all(pid)
                    if code is not None:
                        exit_code = code
                elif sig == signal.SIGWINCH:
                    if console is not None:
                        _copy_winsize(0, console)
                elif exit_code is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
        if console is not None and console in ready:
            try:
                data = os.read(console, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                data = b""
            if not data:
                fds.remove(console)
                os.close(console)
                console = None
                if 0 in fds:
                    fds.remove(0)
            else:
                _write_all(1, data)
        if console is not None and 0 in ready:
            data = os.read(0, 65536)
            if not data:
                fds.remove(0)
            else:
                _write_all(console, data)
        if exit_code is None:
            code = _reap_all(pid)
            if code is not None:
                exit_code = code
    return exit_code


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _reap_all(pid: int) -> int | None:
    """Reap every exited child; return ``pid``'s exit code if it was among them."""
    result = None
    while True:
        try:
            got, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return result
        if got == 0:
            return result
        if got == pid:
            result = os.waitstatus_to_exitcode(status)
            if result < 0:
                result = 128 - result


def run(rt: Runtime, container_id: str, opts: CreateOptions, *, detach: bool, keep: bool) -> int:
    """``run``: create and start the container, then (unless detached) wait for it."""
    if detach:
        rt.create(container_id, opts)
        try:
            rt.start(container_id)
        except BaseException:
            with contextlib.suppress(Exception):
                rt.delete(container_id, force=True)
            raise
        return 0
    lxprocess.set_child_subreaper(True)
    relay = SignalRelay()
    try:
        started = rt.create(
            container_id, opts, hold_console=not opts.console_socket, watch_start=True
        )
        try:
            rt.start(container_id)
            rt.confirm_exec(started)
            if started.console is not None:
                with raw_terminal(0):
                    code = wait_process(started.pid, relay, started.console)
            else:
                code = wait_process(started.pid, relay)
        finally:
            if not keep:
                with contextlib.suppress(Exception):
                    rt.delete(container_id, force=True)
    finally:
        relay.close()
    return code


def exec_from_cli(rt: Runtime, args: Namespace) -> int:
    """``exec``: build the process from the flags (or --process) and run it."""
    proc = process_plan_from_cli(rt, args)
    if proc.terminal and args.detach and not args.console_socket:
        raise SpecError(
            "cannot allocate tty if bulkhead-runtime will detach without setting console socket"
        )
    hold = proc.terminal and not args.console_socket
    if args.detach:
        started = rt.exec(args.container_id, proc, console_socket=args.console_socket)
        if args.pid_file:
            from bulkhead.runtime.container import _write_pid_file

            _write_pid_file(args.pid_file, started.pid)
        return 0
    lxprocess.set_child_subreaper(True)
    relay = SignalRelay()
    try:
        started = rt.exec(
            args.container_id,
            proc,
            console_socket=args.console_socket,
            hold_console=hold,
            watch_start=True,
        )
        rt.confirm_exec(started)
        if args.pid_file:
            from bulkhead.runtime.container import _write_pid_file

            _write_pid_file(args.pid_file, started.pid)
        if started.console is not None:
            with raw_terminal(0):
                return wait_process(started.pid, relay, started.console)
        return wait_process(started.pid, relay)
    finally:
        relay.close()


def process_plan_from_cli(rt: Runtime, args: Namespace) -> ProcessPlan:
    """The exec'd process: --process FILE, or the container's process with the flags applied."""
    import msgspec

    from bulkhead.oci.runtime_spec import Process
    from bulkhead.runtime.container import _listen_fds
    from bulkhead.runtime.plan import plan_process

    rt.load(args.container_id)  # "container does not exist" before anything else
    spec = rt.spec_of(args.container_id)
    if args.process:
        try:
            with open(args.process, "rb") as f:
                proc_spec = msgspec.json.decode(f.read(), type=Process)
        except OSError as exc:
            raise SpecError(f"process file {args.process}: {exc.strerror}") from None
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise SpecError(f"process file {args.process}: {exc}") from None
    else:
        if not args.command:
            raise SpecError("exec: no command given (use ARGS or --process)")
        base = spec.process
        if base is None:
            raise SpecError("container has no process to take defaults from")
        proc_spec = msgspec.structs.replace(base, args=list(args.command), terminal=args.tty)
        if args.cwd:
            proc_spec = msgspec.structs.replace(proc_spec, cwd=args.cwd)
        if args.env:
            proc_spec = msgspec.structs.replace(
                proc_spec, env=list(base.env or []) + list(args.env)
            )
        if args.user:
            uid_s, _, gid_s = args.user.partition(":")
            try:
                uid = int(uid_s)
                gid = int(gid_s) if gid_s else 0
            except ValueError:
                raise SpecError(f"--user {args.user!r}: expected uid[:gid] as numbers") from None
            user = msgspec.structs.replace(proc_spec.user, uid=uid, gid=gid)
            proc_spec = msgspec.structs.replace(proc_spec, user=user)
        if args.additional_gids:
            try:
                gids = [int(g) for g in args.additional_gids]
            except ValueError:
                raise SpecError(f"--additional-gids {args.additional_gids}: not numbers") from None
            user = msgspec.structs.replace(proc_spec.user, additional_gids=gids)
            proc_spec = msgspec.structs.replace(proc_spec, user=user)
        if args.no_new_privs:
            proc_spec = msgspec.structs.replace(proc_spec, no_new_privileges=True)
        if args.apparmor:
            proc_spec = msgspec.structs.replace(proc_spec, apparmor_profile=args.apparmor)
        if args.process_label:
            proc_spec = msgspec.structs.replace(proc_spec, selinux_label=args.process_label)
        if args.cap and proc_spec.capabilities is not None:
            c = proc_spec.capabilities
            caps = msgspec.structs.replace(
                c,
                bounding=list(c.bounding or []) + args.cap,
                effective=list(c.effective or []) + args.cap,
                permitted=list(c.permitted or []) + args.cap,
                ambient=(list(c.ambient or []) + args.cap) if c.inheritable else c.ambient,
            )
            proc_spec = msgspec.structs.replace(proc_spec, capabilities=caps)
    plan = plan_process(proc_spec)
    plan.preserve_fds = _listen_fds() + args.preserve_fds
    if spec.linux is not None and spec.linux.seccomp is not None:
        from bulkhead.linux.seccomp import compile_filter

        plan.seccomp = compile_filter(spec.linux.seccomp)
    return plan


def stdout_is_tty() -> bool:
    return sys.stdout.isatty()
