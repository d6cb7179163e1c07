"""The container side: what runs after fork, until exec.

This is the code DESIGN.md asks to be *tiny, plain and syscall-only*. It
walks through a :class:`~bulkhead.runtime.plan.ContainerPlan` computed by the
parent, one named step at a time. A failing step is reported to the parent
as ``error <step> <errno> <message>`` over the sync socket and the process
ends with ``os._exit`` -- it never returns into the runtime's own code.

Two processes run here, as in runc's ``nsexec``:

*stage 1*  joins namespaces given by path, creates the user namespace (the
           parent writes its id maps), then creates every other new
           namespace but the cgroup one. ``pid`` and ``time`` namespaces
           only apply to children, so it forks once more and exits.
*init*     (PID 1 of a new pid namespace) is moved into the container's
           cgroup by the parent while it starts to work (it waits for that
           to be done before it creates the cgroup namespace, forks or
           execs: :func:`wait_in_cgroup`), builds the root filesystem, lets
           the parent run the createRuntime hooks, pivots into the new root,
           sets up the console, sysctls, user, capabilities and seccomp, tells
           the parent it is ready, waits on ``exec.fifo`` until ``start``,
           and execs the user's program through the sealed trampoline
           (:mod:`bulkhead.linux.dmz`).

``exec`` uses the same two stages with every namespace joined by path and
no root filesystem work. A container with nothing to join, no user
namespace, no time offsets and no hooks skips stage 1: the runtime forks
the init into a new pid namespace itself and the init creates the other
namespaces first (:func:`direct_init`).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import stat
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from bulkhead.errors import ExecutableNotFound, StartError
from bulkhead.linux import capabilities, namespaces, process
from bulkhead.runtime import sync

if TYPE_CHECKING:
    from bulkhead.runtime.plan import ContainerPlan, ProcessPlan


class ChildContext:
    """The file descriptors a forked child works with."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        fifo_fd: int | None = None,
        console_sock: socket.socket | None = None,
        dmz_fd: int | None = None,
        keep_fds: int = 0,
    ) -> None:
        self.sock = sock
        self.fifo_fd = fifo_fd
        self.console_sock = console_sock
        self.dmz_fd = dmz_fd
        #: fds 3 .. 3+keep_fds-1 are passed to the container (LISTEN_FDS + --preserve-fds)
        self.keep_fds = keep_fds
        self.step = "start"
        #: the OCI state (JSON) to hand to hooks run from inside the container
        self.hook_state = b""
        #: the parent's "placed" is still to be read (late placement: see container_init)
        self.placement_pending = False
        #: the v1 ``tasks`` files (opened by the parent, on the host) we write ourselves
        #: into once placed (the runtime's _self_placement); empty: the parent moves us
        self.cgroup_fds: list[int] = []

    def own_fds(self) -> set[int]:
        fds = {self.sock.fileno()}
        for fd in (self.fifo_fd, self.dmz_fd, *self.cgroup_fds):
            if fd is not None:
                fds.add(fd)
        if self.console_sock is not None:
            fds.add(self.console_sock.fileno())
        return fds


def run_child(ctx: ChildContext, body: Callable[[ChildContext], None]) -> NoReturn:
    """Run ``body`` in a forked child; report any failure and never return."""
    code = 1
    try:
        _forget_parent_signal_handlers()
        body(ctx)
        code = 0
    except BaseException as exc:
        sync.send_error(ctx.sock, ctx.step, exc)
    finally:
        os._exit(code)


def _forget_parent_signal_handlers() -> None:
    """Drop the runtime's Python signal handlers and wakeup fd, inherited by fork.

    ``run`` relays every signal through a wakeup pipe; in the container's
    processes those handlers would swallow signals (a SIGTERM to a waiting
    init must kill it) and write into a pipe that is closed there.
    """
    signal.set_wakeup_fd(-1)
    for sig in signal.valid_signals():
        try:
            if callable(signal.getsignal(sig)):
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def preload(plan: ContainerPlan) -> None:
    """Import, in the parent before fork, every module the child will need.

    After ``pivot_root`` the host's Python library is out of reach, and an
    import in the child would also be paid on the container's critical
    path. Modules only some containers need (the terminal's) are imported
    only for those, so the others do not pay for them.
    """
    if plan.process.terminal:
        import fcntl  # noqa: F401
        import struct  # noqa: F401
        import termios  # noqa: F401
    if plan.rootfs is not None:
        from bulkhead.runtime import rootfs  # noqa: F401
    if plan.create_container_hooks or plan.start_container_hooks:
        import subprocess  # noqa: F401  (hooks run after pivot_root)

        from bulkhead.runtime import hooks  # noqa: F401
    if plan.process.seccomp is not None:
        from bulkhead.linux import seccomp  # noqa: F401


# --------------------------------------------------------------------------
# stage 1


def stage1(ctx: ChildContext, plan: ContainerPlan, init: Callable[[ChildContext], None]) -> None:
    """Enter or create the namespaces, then fork the process that runs ``init``."""
    ctx.step = "set-non-dumpable"
    process.set_dumpable(False)
    if plan.rootfs is not None:
        # Reach the rootfs while we are still the host's root: once in a new
        # user namespace, a 0700 directory above it may be closed to us.
        ctx.step = "chdir-rootfs"
        os.chdir(plan.rootfs.rootfs)
    for kind, path in plan.join_namespaces:
        ctx.step = f"join-{kind}-namespace"
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            namespaces.setns(fd, 0)
        finally:
            os.close(fd)
    flags = plan.new_namespaces
    if flags & namespaces.CLONE_NEWUSER:
        ctx.step = "unshare-user-namespace"
        namespaces.unshare(namespaces.CLONE_NEWUSER)
        sync.send(ctx.sock, "idmap")
        ctx.step = "wait-for-id-maps"
        sync.expect(ctx.sock, "go")
        flags &= ~namespaces.CLONE_NEWUSER
    if plan.joins("user") or plan.has_new("user"):
        ctx.step = "become-root-in-user-namespace"
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
    # The cgroup namespace waits for the init, once it is in its cgroup.
    flags &= ~namespaces.CLONE_NEWCGROUP
    if flags:
        ctx.step = "unshare-namespaces"
        namespaces.unshare(flags)
    if plan.time_offsets:
        ctx.step = "set-time-offsets"
        namespaces.write_time_offsets(plan.time_offsets)
    ctx.step = "fork-init"
    pid = os.fork()
    if pid == 0:
        run_child(ctx, init)
    sync.send(ctx.sock, "pid", pid)


def direct_init(ctx: ChildContext, plan: ContainerPlan) -> None:
    """The init forked by the runtime itself (no stage 1): already PID 1 of its pid namespace.

    It does stage 1's part first -- non-dumpable, into the rootfs, the other
    new namespaces but the cgroup one -- then goes on as :func:`container_init`.
    Used only without namespaces to join, a user namespace or time offsets
    (``bulkhead.runtime.container._init_without_stage1``).
    """
    ctx.step = "set-non-dumpable"
    process.set_dumpable(False)
    if plan.rootfs is not None:
        ctx.step = "chdir-rootfs"
        os.chdir(plan.rootfs.rootfs)
    flags = plan.new_namespaces & ~(namespaces.CLONE_NEWCGROUP | namespaces.CLONE_NEWPID)
    if flags:
        ctx.step = "unshare-namespaces"
        namespaces.unshare(flags)
    container_init(ctx, plan)


def wait_in_cgroup(ctx: ChildContext, plan: ContainerPlan | None = None) -> None:
    """Wait until the parent has moved us into the container's cgroup.

    The parent does that (one write per hierarchy, the first of which waits
    for an RCU grace period: milliseconds) while we work on the namespaces
    and mounts, so it costs a start nothing -- or, with ``ctx.cgroup_tasks``,
    we were born in the cgroup2 directory and join the v1 hierarchies here,
    once the parent has applied the resources (no grace period to wait for). What must not happen outside
    the cgroup waits here: a new cgroup namespace (its root is the cgroup
    we are in when it is made), any fork (hooks), and the user's program.
    Without hooks nor a new cgroup namespace the wait comes last, just
    before the ready message (:func:`_placed_now`): the move then overlaps
    pivot_root and the process set-up too.
    """
    ctx.step = "wait-for-cgroup"
    sync.expect(ctx.sock, "placed")
    if ctx.cgroup_fds:
        # Self-placement: "0" moves this thread (the only one) without the global lock.
        ctx.step = "join-cgroup"
        for fd in ctx.cgroup_fds:
            os.write(fd, b"0")
        for fd in ctx.cgroup_fds:
            os.close(fd)
        ctx.cgroup_fds = []
    if plan is not None and plan.has_new("cgroup"):
        ctx.step = "unshare-cgroup-namespace"
        namespaces.unshare(namespaces.CLONE_NEWCGROUP)


# --------------------------------------------------------------------------
# the container's init


def container_init(ctx: ChildContext, plan: ContainerPlan) -> None:
    """PID 1 of the container: from fresh namespaces to the user's program."""
    from bulkhead.runtime import rootfs

    proc = plan.process
    if plan.has_new("cgroup"):
        wait_in_cgroup(ctx, plan)  # the cgroup mounts need the namespace
    ctx.step = "setsid"
    os.setsid()
    if plan.hostname is not None:
        ctx.step = "sethostname"
        socket.sethostname(plan.hostname)
    if plan.domainname is not None:
        ctx.step = "setdomainname"
        with open("/proc/sys/kernel/domainname", "w") as f:
            f.write(plan.domainname)
    if not plan.no_new_keyring:
        ctx.step = "join-session-keyring"
        process.join_session_keyring(
            plan.keyring_name, user_namespace=plan.has_new("user") or plan.joins("user")
        )
    if plan.rootfs is not None:
        ctx.step = "prepare-rootfs"
        rootfs.prepare_rootfs(plan.rootfs)
    if plan.hooks:
        # The parent runs prestart/createRuntime hooks now: they see us in our cgroup.
        if not plan.has_new("cgroup"):
            wait_in_cgroup(ctx)
        ctx.step = "createRuntime-hooks"
        sync.send(ctx.sock, "hooks")
        fields = sync.expect(ctx.sock, "go")
        ctx.hook_state = fields[0].encode() if fields else b""
    elif not plan.has_new("cgroup"):
        # Late placement: no hook to run, so nothing before the ready message needs
        # the cgroup (no fork, no exec, no cgroup namespace): the parent's move of
        # this process (which waits for an RCU grace period, milliseconds) overlaps
        # pivot_root and the process set-up, and finish_process reads "placed".
        ctx.placement_pending = True
    if plan.create_container_hooks:
        ctx.step = "createContainer-hooks"
        _run_hooks_in_container(ctx, plan.create_container_hooks, "creating")
    if plan.rootfs is not None:
        ctx.step = "pivot-root"
        rootfs.enter_rootfs(plan.rootfs)
        # As runc: a missing working directory is created (inside the new
        # root, before it may turn read-only).
        ctx.step = "create-cwd"
        os.makedirs(proc.cwd, 0o755, exist_ok=True)
    if proc.terminal:
        ctx.step = "console"
        slave = setup_console(ctx, proc)
        if plan.rootfs is not None:
            rootfs.bind_console(slave)
    # Sysctls go in before readonlyPaths (usually /proc/sys) turn read-only.
    for key, value in plan.sysctl.items():
        ctx.step = f"sysctl {key}"
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)
    if plan.rootfs is not None:
        ctx.step = "finalize-rootfs"
        rootfs.finalize_rootfs(plan.rootfs)
    if plan.personality is not None:
        ctx.step = "personality"
        process.set_personality(plan.personality)
    finish_process(ctx, proc, plan.start_container_hooks)


# --------------------------------------------------------------------------
# the last steps of every container process (init and exec)


def setup_console(ctx: ChildContext, proc: ProcessPlan) -> str:
    """Create the container's pty, send its master to the console socket, make it our tty."""
    import fcntl  # imported by preload() before fork: no module can be found after pivot_root
    import struct
    import termios

    master, slave = os.openpty()
    slave_path = os.ttyname(slave)
    if proc.console_size is not None:
        rows, cols = proc.console_size
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    if ctx.console_sock is not None:
        socket.send_fds(ctx.console_sock, [b"/dev/ptmx"], [master])
        ctx.console_sock.close()
        ctx.console_sock = None
    os.close(master)
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    if slave > 2:
        os.close(slave)
    return slave_path


def lookup_executable(proc: ProcessPlan) -> str:
    """The path of ``args[0]`` in the container: as given if it has a slash, else via PATH."""
    name = proc.args[0]
    if "/" in name:
        candidates = [name if name.startswith("/") else os.path.join(proc.cwd, name)]
    else:
        candidates = [os.path.join(d or ".", name) for d in proc.path_env.split(":")]
    for path in candidates:
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return path
        if "/" in name:
            # It exists but cannot be executed: a shell's 126, not 127.
            raise StartError(f'exec: "{name}": permission denied', errno=errno.EACCES)
    if "/" in name:
        raise ExecutableNotFound(f'exec: "{name}": stat {name}: no such file or directory', errno=2)
    raise ExecutableNotFound(f'exec: "{name}": executable file not found in $PATH', errno=2)


def _home_of(uid: int) -> str:
    try:
        with open("/etc/passwd", "rb") as f:
            for line in f:
                parts = line.split(b":")
                if len(parts) >= 6 and parts[2].isdigit() and int(parts[2]) == uid:
                    return parts[5].decode("utf-8", "surrogateescape") or "/"
    except OSError:
        pass
    return "/"


def _chdir_checked(cwd: str) -> None:
    """chdir into ``cwd`` and make sure it is inside the container's root (CVE-2024-21626)."""
    os.chdir(cwd)
    try:
        here = os.getcwd()
    except FileNotFoundError:
        raise StartError(
            f"current working directory {cwd} is outside of the container's root"
        ) from None
    if not here.startswith("/"):
        raise StartError(f"current working directory {cwd} is outside of the container's root")


def _close_other_fds(ctx: ChildContext) -> None:
    """Close every fd except stdio, the passed-through ones and our own (CLOEXEC) fds."""
    first = 3 + ctx.keep_fds
    keep = sorted(fd for fd in ctx.own_fds() if fd >= first)
    for fd in keep:
        os.set_inheritable(fd, False)
    start = first
    for fd in keep:
        if fd > start:
            os.closerange(start, fd)
        start = fd + 1
    os.closerange(start, 1 << 20)
    for fd in range(3, first):
        os.set_inheritable(fd, True)


def finish_process(
    ctx: ChildContext, proc: ProcessPlan, start_hooks: list[object] | None = None
) -> None:
    """Everything between a ready environment and exec: creds, limits, seccomp, exec."""
    import resource

    ctx.step = "close-fds"
    _close_other_fds(ctx)
    if proc.oom_score_adj is not None:
        ctx.step = "oom-score-adj"
        process.set_oom_score_adj(proc.oom_score_adj)
    for res, soft, hard in proc.rlimits:
        ctx.step = "setrlimit"
        resource.setrlimit(res, (soft, hard))
    if proc.io_priority is not None:
        ctx.step = "ioprio"
        process.set_ioprio(*proc.io_priority)
    if proc.scheduler is not None:
        ctx.step = "scheduler"
        s = proc.scheduler
        process.set_scheduler(
            s.policy,
            s.nice or 0,
            s.priority or 0,
            s.flags or [],
            s.runtime or 0,
            s.deadline or 0,
            s.period or 0,
        )
    if proc.apparmor_profile:
        ctx.step = "apparmor"
        with open("/proc/self/attr/apparmor/exec", "w") as f:
            f.write(f"exec {proc.apparmor_profile}")
    if proc.selinux_label:
        ctx.step = "selinux"
        with open("/proc/self/attr/exec", "w") as f:
            f.write(proc.selinux_label)
    ctx.step = "lookup-executable"
    path = lookup_executable(proc)
    env = list(proc.env)
    if not any(e.startswith("HOME=") for e in env):
        env.append("HOME=" + _home_of(proc.uid))
    if proc.seccomp is not None and not proc.no_new_privileges:
        # Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: do it
        # before the capabilities are dropped (runc's order).
        ctx.step = "seccomp"
        _load_seccomp(ctx, proc)
    caps = proc.capabilities
    if caps is not None:
        ctx.step = "drop-bounding-capabilities"
        capabilities.drop_bounding(caps.bounding)
        capabilities.set_keep_caps(True)
    cwd_done = False
    ctx.step = "chdir"
    try:
        _chdir_checked(proc.cwd)
        cwd_done = True
    except PermissionError:
        pass
    ctx.step = "setgroups"
    try:
        os.setgroups(proc.additional_gids)
    except PermissionError:
        # In a user namespace where setgroups is denied, only no groups are allowed.
        if proc.additional_gids:
            raise
    ctx.step = "setgid"
    os.setresgid(proc.gid, proc.gid, proc.gid)
    ctx.step = "setuid"
    os.setresuid(proc.uid, proc.uid, proc.uid)
    if caps is not None:
        ctx.step = "set-capabilities"
        capabilities.set_keep_caps(False)
        capabilities.capset(caps.effective, caps.permitted, caps.inheritable)
        capabilities.set_ambient(caps.ambient)
    if not cwd_done:
        ctx.step = "chdir"
        _chdir_checked(proc.cwd)
    if proc.umask is not None:
        os.umask(proc.umask)
    if proc.no_new_privileges:
        ctx.step = "no-new-privileges"
        process.set_no_new_privs()
    if proc.seccomp is not None and proc.no_new_privileges and proc.seccomp.notify:
        # The listener must reach the parent while it still listens.
        ctx.step = "seccomp"
        _load_seccomp(ctx, proc)
    _placed_now(ctx)
    ctx.step = "ready"
    sync.send(ctx.sock, "ready")
    if ctx.fifo_fd is not None:
        ctx.step = "wait-for-start"
        _wait_for_start(ctx.fifo_fd)
        if start_hooks:
            ctx.step = "startContainer-hooks"
            _run_hooks_in_container(ctx, start_hooks, "created")
    if proc.seccomp is not None and proc.no_new_privileges and not proc.seccomp.notify:
        # As late as possible: fewer calls for the profile to allow.
        ctx.step = "seccomp"
        _load_seccomp(ctx, proc)
    ctx.step = "exec"
    _restore_signals()
    if ctx.dmz_fd is not None:
        from bulkhead.linux import dmz

        dmz.exec_through(ctx.dmz_fd, path, proc.args, env)
    os.execve(path, proc.args, dict(e.split("=", 1) for e in env if "=" in e))


def _placed_now(ctx: ChildContext) -> None:
    """After a late placement: read the parent's "placed" before anything else of ours."""
    if ctx.placement_pending:
        wait_in_cgroup(ctx)
        ctx.placement_pending = False


def _load_seccomp(ctx: ChildContext, proc: ProcessPlan) -> None:
    from bulkhead.linux import seccomp

    assert proc.seccomp is not None
    listener = seccomp.load_filter(proc.seccomp)
    if listener is not None:
        _placed_now(ctx)  # our messages go in order: "placed" is read first
        # The parent forwards the listener fd to listenerPath; wait until it has.
        socket.send_fds(ctx.sock, [b"seccomp-listener"], [listener])
        os.close(listener)
        sync.expect(ctx.sock, "go")


def _wait_for_start(fifo_fd: int) -> None:
    """Block until ``start`` opens exec.fifo for writing and writes one byte.

    The fifo was opened read-only and non-blocking before the rootfs changed;
    poll(2) on such a reader stays quiet until a writer has come, so this
    needs neither /proc nor the fifo's path inside the container.
    """
    poller = select.poll()
    poller.register(fifo_fd, select.POLLIN)
    while True:
        events = poller.poll()
        if any(ev & (select.POLLIN | select.POLLHUP) for _, ev in events):
            break
    data = os.read(fifo_fd, 1)
    os.close(fifo_fd)
    if data != b"0":
        raise StartError("exec.fifo closed without a start")


def _restore_signals() -> None:
    """Undo what the Python runtime did to signals: the program gets the defaults."""
    for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _run_hooks_in_container(ctx: ChildContext, hooks: list[object], status: str) -> None:
    """Run createContainer/startContainer hooks from inside the container's namespaces."""
    from bulkhead.runtime import hooks as hooks_mod

    kind = "createContainer" if status == "creating" else "startContainer"
    hooks_mod.run_hooks(hooks, hooks_mod.with_status(ctx.hook_state, status), kind)


def exec_child(ctx: ChildContext, proc: ProcessPlan) -> None:
    """The process of ``exec``, once inside every namespace of the container."""
    wait_in_cgroup(ctx)
    if proc.terminal:
        ctx.step = "setsid"
        os.setsid()
        ctx.step = "console"
        setup_console(ctx, proc)
    finish_process(ctx, proc)


def flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
