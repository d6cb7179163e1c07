"""The runtime's operations on containers: create, start, kill, delete, exec ...

:class:`Runtime` is the library face of ``bulkhead-runtime``: each CLI verb
is one method call. A method works from the container's persisted facts
(:mod:`bulkhead.runtime.state`) and the kernel, never from memory of an
earlier call, because every CLI invocation is a fresh process.

The life of a container (runtime-spec runtime.md)::

    create ──► created ──start──► running ──(program exits)──► stopped ──delete──► gone
                  │                  │  ▲
                  │               pause│ │resume
                  │                  ▼  │
                  │                 paused
                  └──────────────delete (kills it)──────────────────────► gone
"""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import time
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from bulkhead import logs
from bulkhead.errors import (
    ContainerNotFound,
    SpecError,
    StartError,
    UnsupportedError,
    WrongState,
)
from bulkhead.runtime import hooks, sync
from bulkhead.runtime.plan import ContainerPlan, ProcessPlan, plan_namespaces, plan_process
from bulkhead.runtime.state import (
    DEFAULT_ROOT,
    ContainerState,
    StateStore,
    now_rfc3339,
    proc_start_time,
    status,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from bulkhead.cgroups import CgroupManager
    from bulkhead.oci.runtime_spec import Spec
    from bulkhead.runtime.init import ChildContext


class CreateOptions(msgspec.Struct, kw_only=True):
    """The flags of ``create`` (and ``run``)."""

    bundle: str = "."
    console_socket: str | None = None
    pid_file: str | None = None
    no_pivot: bool = False
    no_new_keyring: bool = False
    preserve_fds: int = 0


class Started(msgspec.Struct):
    """A container process just born: its pid, and the pty master when we hold it.

    ``channel`` (when asked for) is our end of the sync socket, kept open so
    that :meth:`Runtime.confirm_exec` can tell whether the process reached
    the user's program or why it did not.
    """

    pid: int
    console: int | None = None
    channel: socket.socket | None = None


class _HooksOnly(msgspec.Struct):
    """Only the ``hooks`` of a config.json: decoding it skims the rest of the document."""

    hooks: dict[str, Any] | None = None


_HOOKS_ONLY = msgspec.json.Decoder(_HooksOnly)


def has_hooks(config_json: bytes, kind: str) -> bool:
    """Whether a config.json has ``hooks.<kind>`` entries (a cheap look: nothing validated).

    Raises :class:`msgspec.DecodeError` for a document that is not JSON.
    """
    return bool((_HOOKS_ONLY.decode(config_json).hooks or {}).get(kind))


def signal_number(value: str | int) -> int:
    """A signal given as a number (``9``), a name (``KILL``) or a full name (``SIGKILL``)."""
    if isinstance(value, int):
        return value
    text = value.strip().upper()
    if text.isdigit():
        return int(text)
    name = text if text.startswith("SIG") else "SIG" + text
    try:
        return int(signal.Signals[name])
    except KeyError:
        if name.startswith("SIGRTMIN") or name.startswith("SIGRTMAX"):
            base = signal.SIGRTMIN if name.startswith("SIGRTMIN") else signal.SIGRTMAX
            rest = name[8:]
            return int(base) + (int(rest) if rest else 0)
        raise SpecError(f"unknown signal {value!r}") from None


def _write_pid_file(path: str, pid: int) -> None:
    """Write ``pid`` to ``path`` atomically, as runc does (no trailing newline)."""
    target = os.path.abspath(path)
    tmp = os.path.join(os.path.dirname(target), "." + os.path.basename(target) + ".tmp")
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, target)


def _listen_fds() -> int:
    """How many socket-activation fds (LISTEN_FDS) our caller passed us."""
    value = os.environ.get("LISTEN_FDS", "")
    return int(value) if value.isdigit() else 0


class Runtime:
    """An OCI runtime whose containers' state lives under ``root``."""

    def __init__(
        self, root: str | os.PathLike[str] = DEFAULT_ROOT, *, systemd_cgroup: bool = False
    ) -> None:
        if systemd_cgroup:
            raise UnsupportedError(
                "--systemd-cgroup: the systemd cgroup driver is not supported "
                "(no systemd on this host); use the cgroupfs driver (drop the flag)"
            )
        self.store = StateStore(root)

    # ------------------------------------------------------------------ helpers

    def load(self, container_id: str) -> ContainerState:
        return self.store.load(container_id)

    def spec_of(self, container_id: str) -> Spec:
        from bulkhead.oci.runtime_spec import decode_spec

        path = os.path.join(self.store.dir(container_id), "config.json")
        with open(path, "rb") as f:
            return decode_spec(f.read(), path)

    def cgroup(self, st: ContainerState) -> CgroupManager | None:
        if not st.cgroup_path:
            return None
        from bulkhead.cgroups import new_manager

        return new_manager(st.cgroup_path)

    def status(self, st: ContainerState) -> str:
        now = status(self.store, st)
        if now == "running":
            cg = self.cgroup(st)
            if cg is not None and cg.exists() and cg.state() == "FROZEN":
                return "paused"
        return now

    def hook_state(self, st: ContainerState, status_text: str, pid: int | None = None) -> bytes:
        return hooks.state_json(
            container_id=st.id,
            status=status_text,
            pid=st.pid if pid is None else pid,
            bundle=st.bundle,
            annotations=st.annotations,
        )

    # ------------------------------------------------------------------ create

    def create(
        self,
        container_id: str,
        opts: CreateOptions,
        *,
        hold_console: bool = False,
        watch_start: bool = False,
    ) -> Started:
        """Create the container: its init ends up waiting for ``start`` (status *created*).

        With ``hold_console`` (``run`` in the foreground with a terminal) the
        pty master comes back to us instead of going to a console socket.
        With ``watch_start`` the sync channel comes back too, for
        :meth:`confirm_exec` after :meth:`start`.
        """
        from bulkhead.oci.runtime_spec import load_spec, validate_spec

        bundle = os.path.abspath(opts.bundle)
        if not os.path.isdir(bundle):
            raise SpecError(f"bundle directory {bundle} does not exist")
        spec = load_spec(os.path.join(bundle, "config.json"))
        validate_spec(spec)
        if spec.process is None:
            raise SpecError("process is required to create a container", where="$.process")
        if spec.root is None or not spec.root.path:
            raise SpecError("root.path is required", where="$.root.path")
        if spec.process.terminal and not opts.console_socket and not hold_console:
            raise SpecError(
                "cannot allocate tty if bulkhead-runtime will detach without setting console socket"
            )
        if not spec.process.terminal and opts.console_socket:
            raise SpecError("cannot use console socket if the container does not have a terminal")
        rootfs = spec.root.path
        if not os.path.isabs(rootfs):
            rootfs = os.path.join(bundle, rootfs)
        if not os.path.isdir(rootfs):
            raise SpecError(
                f"rootfs {rootfs} does not exist or is not a directory", where="$.root.path"
            )

        self.store.reserve(container_id)
        logs.debug(__name__, f"container {container_id}: bundle {bundle}, rootfs {rootfs}")
        me = os.getpid()
        st = ContainerState(
            id=container_id,
            bundle=bundle,
            rootfs=rootfs,
            created=now_rfc3339(),
            creator_pid=me,
            creator_start=proc_start_time(me) or 0,
            annotations=dict(spec.annotations or {}),
        )
        cg: CgroupManager | None = None
        launched: Started | None = None
        primer = 0
        try:
            st.cgroup_path = _cgroup_path(spec, st.id)
            plan = self._plan_container(spec, st, opts)
            # The cgroup's directories, then, unless the init joins the cgroup by itself
            # (_self_placement), the primer at once: see _start_cgroup_primer. Its
            # resources are applied after the first fork.
            cg = self._make_cgroup(st)
            own = _self_placement(spec, plan, cg)
            if own is None:
                primer = _start_cgroup_primer(cg)
            self.store.save(st)
            with open(os.path.join(bundle, "config.json"), "rb") as src:
                config = src.read()
            with open(os.path.join(self.store.dir(container_id), "config.json"), "wb") as dst:
                dst.write(config)
            handed, primer = primer, 0  # _launch reaps it, whatever happens
            launched = self._launch(
                spec, st, plan, cg, opts, hold_console, watch_start, handed, own
            )
            st.pid = launched.pid
            st.pid_start = proc_start_time(launched.pid) or 0
            st.creator_pid = st.creator_start = 0
            self.store.save(st)
            if opts.pid_file:
                _write_pid_file(opts.pid_file, launched.pid)
        except BaseException:
            if primer:
                _kill_and_reap(primer)
            if launched is not None:
                _kill_and_reap(launched.pid)
                sync.close_quietly(launched.console, launched.channel)
            if cg is not None:
                _destroy_cgroup(cg)
            self.store.remove(container_id)
            raise
        return launched

    def _plan_container(self, spec: Spec, st: ContainerState, opts: CreateOptions) -> ContainerPlan:
        assert spec.process is not None
        proc = plan_process(spec.process)
        proc.preserve_fds = _listen_fds() + opts.preserve_fds
        if _listen_fds():
            proc.env += [f"LISTEN_FDS={_listen_fds()}", "LISTEN_PID=1"]
        linux = spec.linux
        plan = ContainerPlan(
            process=proc, no_new_keyring=opts.no_new_keyring, keyring_name=f"_ses.{st.id}"
        )
        plan_namespaces(spec, plan)
        if linux is not None:
            if linux.seccomp is not None:
                from bulkhead.linux.seccomp import compile_filter

                proc.seccomp = compile_filter(linux.seccomp)
            plan.sysctl = dict(linux.sysctl or {})
            if linux.personality is not None:
                plan.personality = linux.personality.domain
        plan.hostname = spec.hostname
        plan.domainname = spec.domainname
        _check_lsm(proc)
        if spec.hooks is not None:
            plan.hooks = True
            plan.create_container_hooks = list(spec.hooks.create_container or [])
            plan.start_container_hooks = list(spec.hooks.start_container or [])
        from bulkhead.runtime import rootfs

        plan.rootfs = rootfs.plan_rootfs(
            spec,
            st.bundle,
            no_pivot=opts.no_pivot,
            userns=plan.has_new("user") or plan.joins("user"),
            cgroup_path=st.cgroup_path,
            cgroupns=plan.has_new("cgroup"),
        )
        return plan

    def _make_cgroup(self, st: ContainerState) -> CgroupManager:
        from bulkhead.cgroups import new_manager

        cg = new_manager(st.cgroup_path)
        try:
            cg.create()
        except BaseException:
            _destroy_cgroup(cg)
            raise
        return cg

    def _apply_cgroup(self, spec: Spec, cg: CgroupManager) -> None:
        # Always applied, even without resources: the default device rules.
        resources = spec.linux.resources if spec.linux is not None else None
        cg.apply(resources, initial=True)

    def _launch(
        self,
        spec: Spec,
        st: ContainerState,
        plan: ContainerPlan,
        cg: CgroupManager,
        opts: CreateOptions,
        hold_console: bool,
        watch_start: bool,
        primer: int = 0,
        own: tuple[list[str], str | None] | None = None,
    ) -> Started:
        """Fork the container's processes and walk them to *created*.

        The container's cgroup ``cg`` exists; its resources (and the device
        rules) are applied right after the first fork, while the child
        unshares and forks the init, and before the init is moved into it
        (the init waits for ``placed`` before it may fork or exec).
        ``primer`` is the pid of :func:`_start_cgroup_primer`'s child, reaped
        here once the init is in its cgroup. With ``own`` (see
        :func:`_self_placement`) the init is born in the cgroup2 directory
        and joins the v1 hierarchies itself once told ``placed``.
        """
        from bulkhead.linux import dmz
        from bulkhead.runtime import init

        fifo = self.store.fifo(st.id)
        os.mkfifo(fifo, 0o622)
        fifo_fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        console_parent, console_child = _console_sockets(
            plan.process, opts.console_socket, hold_console
        )
        dmz_fd = dmz.trampoline_if_available()
        parent, child = sync.channel()
        ctx = init.ChildContext(
            child,
            fifo_fd=fifo_fd,
            console_sock=console_child,
            dmz_fd=dmz_fd,
            keep_fds=plan.process.preserve_fds,
        )
        direct = _init_without_stage1(spec, plan)
        init_pid = 0
        stage1 = 0
        if direct:
            if own is not None:
                try:
                    ctx.cgroup_fds = _open_for_writing(own[0])
                    init_pid = _fork_init(ctx, plan, parent, console_parent, cgroup2=own[1])
                except OSError as exc:  # no clone3 into a cgroup here: we place the init
                    logs.debug(__name__, f"container {st.id}: the parent places the init: {exc}")
                    own = None
                finally:
                    sync.close_quietly(*ctx.cgroup_fds)
                    ctx.cgroup_fds = []
            if not init_pid:
                init_pid = _fork_init(ctx, plan, parent, console_parent)
        else:
            stage1 = _fork_stage1(
                ctx, plan, lambda c: init.container_init(c, plan), parent, console_parent
            )
        handed_over = False

        def placed(pid: int) -> None:
            # The init goes on with its namespaces and mounts meanwhile
            # (init.wait_in_cgroup). The primer is reaped after the init is told:
            # the init cannot fork before our next answer ("go" to its "hooks") nor
            # exec before create returns, and the primer's exit takes a while.
            nonlocal primer
            if own is None:
                cg.add_pid(pid)
            sync.send_unless_gone(parent, "placed")
            if primer:
                _reap(primer)
                primer = 0
            logs.debug(__name__, f"container {st.id}: init is pid {pid}")

        try:
            sync.close_quietly(child, fifo_fd, dmz_fd, console_child)
            self._apply_cgroup(spec, cg)
            logs.debug(__name__, f"container {st.id}: cgroup {st.cgroup_path}")
            if direct:
                placed(init_pid)
            while True:
                kind, fields, fds = sync.recv_with_fds(parent)
                if kind == "seccomp-listener":
                    _send_seccomp_listener(
                        spec, fds, self.hook_state(st, "creating", init_pid), init_pid
                    )
                    sync.send(parent, "go")
                    continue
                sync.close_quietly(*fds)
                if kind == "idmap":
                    from bulkhead.linux.namespaces import write_id_maps

                    write_id_maps(stage1, plan.uid_map, plan.gid_map)
                    sync.send_unless_gone(parent, "go")
                elif kind == "pid":
                    init_pid = int(fields[0])
                    placed(init_pid)
                    _reap(stage1)
                    stage1 = 0
                elif kind == "hooks":
                    state = self.hook_state(st, "creating", init_pid)
                    if spec.hooks is not None:
                        hooks.run_hooks(spec.hooks.prestart, state, "prestart")
                        hooks.run_hooks(spec.hooks.create_runtime, state, "createRuntime")
                    sync.send_unless_gone(parent, "go", state.decode())
                elif kind == "ready":
                    logs.debug(__name__, f"container {st.id}: init ready, waiting for start")
                    break
                elif kind == "error":
                    sync.raise_error(fields)
                else:
                    raise StartError(
                        "container init exited unexpectedly during setup"
                        if kind == "eof"
                        else f"unexpected message from container init: {kind}"
                    )
            console = None
            if console_parent is not None and hold_console:
                console = _receive_console(console_parent)
            started = Started(init_pid, console, parent if watch_start else None)
            handed_over = watch_start
            return started
        except BaseException:
            if init_pid:
                _kill_and_reap(init_pid)
            raise
        finally:
            if stage1:
                _kill_and_reap(stage1)
            if primer:
                _kill_and_reap(primer)
            sync.close_quietly(None if handed_over else parent, console_parent)

    def confirm_exec(self, started: Started) -> None:
        """After ``start``: wait until the process has exec'd the user's program.

        Its end of the channel closes on exec (close-on-exec); what fails
        before that (a startContainer hook, the last seccomp step, execve
        itself) arrives as an error instead, and is raised here, as runc's
        ``run`` reports it.
        """
        if started.channel is None:
            return
        try:
            kind, fields = sync.recv(started.channel)
        finally:
            started.channel.close()
            started.channel = None
        if kind == "error":
            sync.raise_error(fields)

    # ------------------------------------------------------------------ start

    def start(self, container_id: str) -> None:
        """Release a *created* container's init: it execs the user's program."""
        st = self.load(container_id)
        now = self.status(st)
        if now != "created":
            if now == "stopped":
                raise WrongState("cannot start a container that has stopped")
            raise WrongState("cannot start an already running container")
        spec = self.spec_of(container_id)
        fifo = self.store.fifo(container_id)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                raise WrongState("cannot start a container that has stopped") from None
            raise
        try:
            os.unlink(fifo)
            os.write(fd, b"0")
            logs.debug(__name__, f"container {container_id}: started")
        finally:
            os.close(fd)
        if spec.hooks is not None and spec.hooks.poststart:
            hooks.run_hooks_logged(
                spec.hooks.poststart, self.hook_state(st, "running"), "poststart"
            )

    # ------------------------------------------------------------------ state / list

    def state(self, container_id: str) -> dict[str, Any]:
        """runc's ``state`` document."""
        st = self.load(container_id)
        return self._state_doc(st)

    def _state_doc(self, st: ContainerState) -> dict[str, Any]:
        now = self.status(st)
        doc: dict[str, Any] = {
            "ociVersion": "1.2.0",
            "id": st.id,
            "pid": st.pid if now not in ("stopped",) else 0,
            "status": now,
            "bundle": st.bundle,
            "rootfs": st.rootfs,
            "created": st.created,
        }
        if st.annotations:
            doc["annotations"] = st.annotations
        doc["owner"] = _owner(self.store.dir(st.id))
        return doc

    def list_containers(self) -> list[dict[str, Any]]:
        out = []
        for cid in self.store.ids():
            try:
                out.append(self._state_doc(self.load(cid)))
            except (ContainerNotFound, OSError, ValueError):
                continue
        return out

    # ------------------------------------------------------------------ kill / delete

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        st = self.load(container_id)
        now = self.status(st)
        if now == "stopped" or now == "creating":
            raise WrongState("container not running")
        if all_processes:
            cg = self.cgroup(st)
            if cg is not None and cg.exists():
                cg.kill_all(sig)
                if now == "paused" and sig == signal.SIGKILL:
                    cg.thaw()
                return
        try:
            os.kill(st.pid, sig)
        except ProcessLookupError:
            raise WrongState("container not running") from None

    def delete(self, container_id: str, *, force: bool = False) -> None:
        try:
            st = self.load(container_id)
        except ContainerNotFound:
            # An aborted create may leave a directory without state.json.
            d = self.store.dir(container_id)
            if os.path.exists(d):
                self.store.remove(container_id)
            if force:
                return
            raise
        now = self.status(st)
        if now in ("running", "paused", "creating") and not force:
            raise WrongState(f"cannot delete container {container_id} that is not stopped: {now}")
        cg = self.cgroup(st)
        if now != "stopped":
            if cg is not None and cg.exists():
                cg.kill_all(signal.SIGKILL)
                if now == "paused":
                    cg.thaw()
            if st.pid:
                try:
                    os.kill(st.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                _wait_gone(st.pid, st.pid_start)
        self._destroy(st, cg)
        logs.debug(__name__, f"container {container_id}: deleted")

    def _destroy(self, st: ContainerState, cg: CgroupManager | None) -> None:
        if cg is not None:
            _destroy_cgroup(cg)
        poststop = self._poststop_hooks(st.id)
        self.store.remove(st.id)
        if poststop:
            hooks.run_hooks_logged(poststop, self.hook_state(st, "stopped"), "poststop")

    def _poststop_hooks(self, container_id: str) -> list[Any]:
        """The container's poststop hooks ([] when none, or its config.json is unreadable)."""
        path = os.path.join(self.store.dir(container_id), "config.json")
        try:
            with open(path, "rb") as f:
                raw = f.read()
            if not has_hooks(raw, "poststop"):
                return []  # the usual case: no need to decode the whole spec
            from bulkhead.oci.runtime_spec import decode_spec

            spec = decode_spec(raw, path)
        except (OSError, SpecError, msgspec.DecodeError):
            return []
        return list(spec.hooks.poststop or []) if spec.hooks is not None else []

    # ------------------------------------------------------------------ exec

    def exec(
        self,
        container_id: str,
        proc: ProcessPlan,
        *,
        console_socket: str | None = None,
        hold_console: bool = False,
        watch_start: bool = False,
    ) -> Started:
        """Start ``proc`` inside the running container; return its pid.

        ``watch_start``: keep the channel for :meth:`confirm_exec`.
        """
        from bulkhead.runtime import init

        st = self.load(container_id)
        now = self.status(st)
        if now == "stopped":
            raise WrongState("cannot exec in a stopped container")
        if now == "paused":
            raise WrongState("cannot exec in a paused container")
        spec = self.spec_of(container_id)
        plan = ContainerPlan(process=proc)
        kinds = [ns.type for ns in (spec.linux.namespaces if spec.linux else None) or []]
        from bulkhead.linux.namespaces import JOIN_ORDER, ns_path

        plan.join_namespaces = [(k, ns_path(st.pid, k)) for k in JOIN_ORDER if k in kinds]
        _check_lsm(proc)
        console_parent, console_child = _console_sockets(proc, console_socket, hold_console)
        from bulkhead.linux import dmz

        dmz_fd = dmz.trampoline_if_available()
        parent, child = sync.channel()
        ctx = init.ChildContext(
            child, console_sock=console_child, dmz_fd=dmz_fd, keep_fds=proc.preserve_fds
        )
        cg = self.cgroup(st)
        stage1 = _fork_stage1(ctx, plan, lambda c: init.exec_child(c, proc), parent, console_parent)
        pid = 0
        handed_over = False
        try:
            sync.close_quietly(child, dmz_fd, console_child)
            fields = sync.expect(parent, "pid")
            pid = int(fields[0])
            if cg is not None and cg.exists():
                cg.add_pid(pid)
            sync.send_unless_gone(parent, "placed")
            _reap(stage1)
            stage1 = 0
            while True:
                kind, fields, fds = sync.recv_with_fds(parent)
                if kind != "seccomp-listener":
                    sync.close_quietly(*fds)
                    break
                _send_seccomp_listener(spec, fds, self.hook_state(st, "running"), pid)
                sync.send(parent, "go")
            if kind == "error":
                sync.raise_error(fields)
            if kind != "ready":
                raise StartError(
                    "the exec'd process ended during setup"
                    if kind == "eof"
                    else f"unexpected message from the exec'd process: {kind}"
                )
            console = None
            if console_parent is not None and hold_console:
                console = _receive_console(console_parent)
            started = Started(pid, console, parent if watch_start else None)
            handed_over = watch_start
            return started
        except BaseException:
            if pid:
                _kill_and_reap(pid)
            raise
        finally:
            if stage1:
                _kill_and_reap(stage1)
            sync.close_quietly(None if handed_over else parent, console_parent)

    # ------------------------------------------------------------------ cgroup verbs

    def _running_cgroup(
        self, container_id: str, *, allow_created: bool = True
    ) -> tuple[ContainerState, CgroupManager]:
        st = self.load(container_id)
        now = self.status(st)
        if now == "stopped":
            raise WrongState("container not running")
        cg = self.cgroup(st)
        if cg is None or not cg.exists():
            raise WrongState(f"container {container_id} has no cgroup")
        return st, cg

    def pause(self, container_id: str) -> None:
        st, cg = self._running_cgroup(container_id)
        if self.status(st) not in ("running", "created"):
            raise WrongState(f"container not running or created: {self.status(st)}")
        cg.freeze()

    def resume(self, container_id: str) -> None:
        st, cg = self._running_cgroup(container_id)
        if self.status(st) != "paused":
            raise WrongState("container not paused")
        cg.thaw()

    def pids(self, container_id: str) -> list[int]:
        st = self.load(container_id)
        cg = self.cgroup(st)
        if cg is None or not cg.exists():
            return []
        return cg.pids()

    def update(self, container_id: str, resources: Any) -> None:
        _, cg = self._running_cgroup(container_id)
        cg.apply(resources)

    def stats(self, container_id: str) -> Any:
        _, cg = self._running_cgroup(container_id)
        return cg.stats()


# ---------------------------------------------------------------------- helpers


def _cgroup_path(spec: Spec, container_id: str) -> str:
    path = spec.linux.cgroups_path if spec.linux is not None else None
    return path or f"/bulkhead/{container_id}"


def _fork_stage1(
    ctx: ChildContext,
    plan: ContainerPlan,
    body: Callable[[ChildContext], None],
    parent: socket.socket,
    console_parent: socket.socket | None,
) -> int:
    """Fork stage 1 (:func:`bulkhead.runtime.init.stage1`), whose child runs ``body``.

    The child never returns here: it closes our ends of the sockets, walks
    the namespaces and ends in exec or ``os._exit``. Returns its pid.
    """
    from bulkhead.runtime import init

    init.preload(plan)
    init.flush_std()
    pid = os.fork()
    if pid == 0:
        parent.close()
        if console_parent is not None:
            console_parent.close()
        init.run_child(ctx, lambda c: init.stage1(c, plan, body))
    return pid


def _init_without_stage1(spec: Spec, plan: ContainerPlan) -> bool:
    """Whether the container's init can be forked by us directly, without stage 1.

    Stage 1 exists to enter namespaces given by path, to create a user
    namespace (we write its id maps) and time offsets, all of which must
    precede the init's fork, and to make the new pid namespace apply to the
    init only. Without those, we unshare the pid namespace ourselves (it
    applies to our *next* child only: the init, PID 1 there) and the init
    unshares the others itself: one fork less. Not with hooks either: this
    process runs prestart/createRuntime (and, in ``run``, poststart and
    poststop) hooks, which must not start in the container's pid namespace.
    """
    return (
        not plan.join_namespaces
        and not plan.has_new("user")
        and not plan.has_new("time")
        and not plan.time_offsets
        and plan.has_new("pid")
        and spec.hooks is None
    )


def _self_placement(
    spec: Spec, plan: ContainerPlan, cg: CgroupManager
) -> tuple[list[str], str | None] | None:
    """The v1 ``tasks`` files and cgroup2 directory for the init to join its cgroup itself.

    Why: the parent's ``cgroup.procs`` write waits for an RCU grace period
    (see :meth:`~bulkhead.cgroups.v1.V1Manager.self_placement`), which was
    the longest single wait of a create. The init is forked with clone3
    into the cgroup2 directory of a hybrid host, and writes ``0`` to each v1
    hierarchy's ``tasks`` once the parent has applied the resources (its
    ``placed``): no grace period anywhere. Only for an init we fork directly
    (no user namespace; the ``tasks`` files are opened here, on the host,
    and written through after pivot_root)
    and on a v1 host; on a cgroup2-only host the parent still moves the
    init, after the limits are written (a child born there would be charged
    for its first pages against a memory limit not yet set). None: the
    parent places the init (:meth:`CgroupManager.add_pid`).
    """
    from bulkhead.cgroups.v1 import V1Manager

    if not isinstance(cg, V1Manager) or not _init_without_stage1(spec, plan):
        return None
    return cg.self_placement()


def _open_for_writing(paths: list[str]) -> list[int]:
    """``paths`` opened write-only (close-on-exec), all or none."""
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_WRONLY | os.O_CLOEXEC))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _fork_init(
    ctx: ChildContext,
    plan: ContainerPlan,
    parent: socket.socket,
    console_parent: socket.socket | None,
    *,
    cgroup2: str | None = None,
) -> int:
    """Fork the container's init directly (see :func:`_init_without_stage1`); its pid.

    We unshare the pid namespace for our children: the next one, the init,
    is PID 1 of a new one. Then we set our children's pid namespace back to
    our own (setns), so that whatever we start later (and a library caller
    of :class:`Runtime`) is unaffected. With ``cgroup2`` the init is forked
    by clone3 instead, into that cgroup2 directory and a new pid namespace
    in one call (OSError when the kernel cannot: nothing was forked).
    """
    from bulkhead.linux import namespaces
    from bulkhead.runtime import init

    init.preload(plan)
    init.flush_std()
    if cgroup2 is not None:
        from bulkhead.linux import process

        fd = os.open(cgroup2, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            pid = process.fork_into_cgroup(fd, namespaces.CLONE_NEWPID)
            if pid == 0:
                os.close(fd)
                _run_init(ctx, plan, parent, console_parent)
        finally:
            os.close(fd)
        return pid
    own = os.open("/proc/self/ns/pid", os.O_RDONLY | os.O_CLOEXEC)
    try:
        namespaces.unshare(namespaces.CLONE_NEWPID)
        try:
            pid = os.fork()
            if pid == 0:
                os.close(own)
                _run_init(ctx, plan, parent, console_parent)
        finally:
            namespaces.setns(own, namespaces.CLONE_NEWPID)
    finally:
        os.close(own)
    return pid


def _run_init(
    ctx: ChildContext,
    plan: ContainerPlan,
    parent: socket.socket,
    console_parent: socket.socket | None,
) -> NoReturn:
    """The forked init (child side of :func:`_fork_init`): never returns."""
    from bulkhead.runtime import init

    parent.close()
    if console_parent is not None:
        console_parent.close()
    init.run_child(ctx, lambda c: init.direct_init(c, plan))


def _start_cgroup_primer(cg: CgroupManager) -> int:
    """Start a throwaway process that moves itself into ``cg``; return its pid (0: none).

    Why: the kernel serialises every move of a process between cgroups with
    one lock (``cgroup_threadgroup_rwsem``, shared by every hierarchy), and
    taking it for writing first waits for an RCU grace period -- 5 to 35 ms
    on these machines, the largest single cost of a start. After a move the
    lock stays cheap for about one grace period. The primer pays that wait
    while we plan and fork, so the init's own move, a little later, does not.
    It is started as soon as the cgroup's directories exist: a mkdir of a
    cgroup would wait behind it (cgroup_mutex), the resource writes do not.

    It is ``/bin/sh`` started with posix_spawn (vfork and exec: forking this
    interpreter instead would turn our next milliseconds of work into
    copy-on-write faults), its stdio on /dev/null, writing ``0`` (itself)
    into one hierarchy's ``cgroup.procs`` of the container's own cgroup,
    then exiting. :meth:`Runtime._launch` reaps it before the init may fork
    or exec, so it is never counted among the container's processes.
    """
    procs = next(iter(cg.paths().values()), None)
    if procs is None:
        return 0
    try:
        return os.posix_spawn(
            "/bin/sh",
            ["sh", "-c", 'echo 0 > "$1"', "sh", procs + "/cgroup.procs"],
            {"PATH": "/usr/bin:/bin"},
            file_actions=[(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)],
        )
    except OSError:
        return 0


def _send_seccomp_listener(spec: Spec, fds: list[int], state: bytes, pid: int) -> None:
    """Hand a seccomp listener fd to the agent at ``linux.seccomp.listenerPath``.

    runtime-spec (config-linux.md, seccomp): one connection per container
    process, a *container process state* document, and the fd (SCM_RIGHTS),
    named ``seccompFd`` in ``fds``. Failing to deliver it fails the start.
    """
    try:
        if len(fds) != 1:
            raise StartError("seccomp: the init sent no listener fd")
        seccomp = spec.linux.seccomp if spec.linux is not None else None
        path = seccomp.listener_path if seccomp is not None else None
        if not path:
            raise StartError("seccomp: a listener fd but no linux.seccomp.listenerPath")
        doc: dict[str, Any] = {
            "ociVersion": "1.2.0",
            "fds": ["seccompFd"],
            "pid": pid,
            "metadata": (seccomp.listener_metadata if seccomp is not None else None) or "",
            "state": msgspec.json.decode(state),
        }
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as agent:
                agent.connect(path)
                socket.send_fds(agent, [msgspec.json.encode(doc)], fds)
        except OSError as exc:
            raise StartError(
                f"seccomp: cannot send the listener to {path}: {exc.strerror}",
                errno=exc.errno,
            ) from None
    finally:
        sync.close_quietly(*fds)


def _check_lsm(proc: ProcessPlan) -> None:
    """Refuse an AppArmor profile or SELinux label this kernel cannot apply."""
    if proc.apparmor_profile and not os.path.exists("/sys/kernel/security/apparmor"):
        raise UnsupportedError(
            f"apparmor profile {proc.apparmor_profile!r} requested, but AppArmor is not enabled on this host"
        )
    if proc.selinux_label:
        try:
            with open("/sys/kernel/security/lsm") as f:
                enabled = "selinux" in f.read()
        except OSError:
            enabled = False
        if not enabled or not os.path.exists("/sys/fs/selinux/enforce"):
            raise UnsupportedError(
                f"selinux label {proc.selinux_label!r} requested, but SELinux is not enabled on this host"
            )


def _console_sockets(
    proc: ProcessPlan, console_socket: str | None, hold_console: bool
) -> tuple[socket.socket | None, socket.socket | None]:
    """(our end, the child's end) of where the container's pty master goes."""
    if not proc.terminal:
        return None, None
    if console_socket:
        try:
            st = os.stat(console_socket)
        except OSError as exc:
            raise SpecError(f"console socket {console_socket}: {exc.strerror}") from None
        if not stat.S_ISSOCK(st.st_mode):
            raise SpecError(f"console socket {console_socket} is not a unix socket")
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(console_socket)
        return None, s
    if hold_console:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        return ours, theirs
    raise SpecError("cannot allocate tty without a console socket")


def _receive_console(sock: socket.socket) -> int:
    _, fds, _, _ = socket.recv_fds(sock, 1024, 1)
    if not fds:
        raise StartError("container did not send its console")
    return fds[0]


def _reap(pid: int) -> int:
    """Wait for our child ``pid``; return its exit status as a shell would."""
    while True:
        try:
            _, status_ = os.waitpid(pid, 0)
        except ChildProcessError:
            return 0
        except InterruptedError:
            continue
        return os.waitstatus_to_exitcode(status_) if status_ >= 0 else 0


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _wait_gone(pid: int, start: int, timeout: float = 10.0) -> None:
    from bulkhead.runtime.state import is_alive

    deadline = time.monotonic() + timeout
    delay = 0.0005
    while is_alive(pid, start) and time.monotonic() < deadline:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def _destroy_cgroup(cg: CgroupManager) -> None:
    from bulkhead.errors import CgroupError

    try:
        cg.destroy()
    except (OSError, CgroupError):
        pass


def _owner(path: str) -> str:
    try:
        uid = os.stat(path).st_uid
    except OSError:
        return ""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return "#" + str(uid)
