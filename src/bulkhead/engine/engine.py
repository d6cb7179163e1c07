"""The engine: containers with a lifecycle, as the Docker Engine API sees them.

Lifecycle (Docker's states, :mod:`bulkhead.engine.containers`)::

    create ──► created ──start──► running ──exit──► exited ──start──► running ...
                  │                  │ stop = stop signal, timeout, SIGKILL
                  └──────────────────┴──remove──► (gone)

*create*
    look the image up, unpack it into committed snapshots, prepare the
    container's writable snapshot (key ``container-<id>``), mount it, resolve
    volumes and binds (copy-up happens here), build the OCI spec
    (:func:`bulkhead.engine.spec.build_spec`), write the bundle, then record
    the container. The row is written last: a daemon killed half-way leaves
    files with no row, which :meth:`Engine.start_up` collects. The root stays
    mounted for the start that usually follows (an unmount costs an RCU grace
    period, ~5 ms) and is unmounted when the container exits.
*remove*
    the row and the volume/image references go first (waiters are told),
    the files (mount, snapshot, runtime and monitor state) right after, in a
    thread: :meth:`Engine.settle` waits for them.
*monitor*
    every started container has one (:mod:`bulkhead.engine.monitor`), forked
    by the zygote, not by this process (the daemon has threads and never
    forks). It runs the OCI runtime's create, waits for the ``start`` order,
    owns the container's stdio and log, records the exit in ``exit.json`` and
    exits. The engine watches each monitor through a *pidfd* (readable when
    the process ends) and then records the exit. An AutoRemove (``--rm``)
    container's exit is taken as soon as ``exit.json`` appears (inotify):
    its removal starts while the monitor still deletes the runtime container
    and lets its clients drain; the files (and any new monitor for that id)
    wait for the monitor's end.
*attach before start*
    ``docker run`` attaches, then starts. :meth:`Engine.attach_monitor`
    spawns the monitor (the runtime's create) early, so an attach
    connection exists before the process runs and misses no output;
    :meth:`Engine.start` then only sends ``start``.
*live restore*
    monitors outlive the daemon. :meth:`Engine.start_up` adopts the live
    ones, records the exits that happened meanwhile, and removes what a
    killed daemon left half-made.
*network hooks*
    :meth:`Engine._network_namespace` (at create: which namespace the spec
    names), :meth:`Engine._prepare_network` (at every start, before the
    runtime create: where a bridge driver makes the namespace and its veth)
    and :meth:`Engine._release_network` (after exit and at remove), served by
    :class:`bulkhead.network.manager.NetworkManager` (``self.network``).
    ``none`` is a fresh empty namespace made by the runtime and ``host`` none
    at all; a bridge network's container joins ``<exec_root>/netns/<id>``,
    which the manager makes at every start (veth, address, routes) and
    removes at the exit. Its addresses are taken at create (or ``network
    connect``) and kept until the container is removed.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import errno
import json
import logging
import os
import select
import shutil
import signal as signal_mod
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

import msgspec

from bulkhead.engine import bundle, health
from bulkhead.engine.containers import (
    STATUSES,
    ZERO_TIME,
    Container,
    ContainerStore,
    check_name,
    new_container_id,
    now_rfc3339,
    parse_rfc3339,
    random_name,
)
from bulkhead.engine.events import EventBus
from bulkhead.engine.options import RunOptions, host_devices, stat_device
from bulkhead.engine.runtimes import BUILTIN, Runtimes
from bulkhead.errors import (
    BulkheadError,
    ContainerError,
    ContainerNotRunning,
    ContainerRunning,
    NoSuchContainer,
    NoSuchNetwork,
    SpecError,
    WrongState,
)
from bulkhead.units import human_duration

if TYPE_CHECKING:
    from bulkhead.engine.context import DaemonConfig
    from bulkhead.engine.monitor import MonitorClient
    from bulkhead.engine.stats import Sampler as StatsSampler
    from bulkhead.engine.volumes import VolumeStore
    from bulkhead.images.store import Image, ImageStore

log = logging.getLogger("bulkhead.engine")

#: Docker's default ``docker stop`` timeout (seconds).
DEFAULT_STOP_TIMEOUT = 10
#: How long a SIGKILLed container may take to be reported gone.
KILL_GRACE = 30.0
#: How long a daemon starting up lets a removed container's finishing monitor end by itself.
STRAY_FINISH_WAIT = 10.0


class CreateRequestLike(Protocol):
    """What :meth:`Engine.create` needs of ``bulkhead.engine.hostconfig.CreateRequest``."""

    config: dict[str, Any]
    host_config: dict[str, Any]
    options: RunOptions


def parse_signal(value: str | int) -> int:
    """``SIGTERM``, ``TERM``, ``term``, ``15`` -> 15; 400 ``Invalid signal: x`` otherwise."""
    if isinstance(value, int):
        num = value
    else:
        text = value.strip()
        if text.isdigit():
            num = int(text)
        else:
            name = text.upper()
            if not name.startswith("SIG"):
                name = "SIG" + name
            try:
                num = int(signal_mod.Signals[name])
            except KeyError:
                if name.startswith("SIGRTMIN+") and name[9:].isdigit():
                    num = signal_mod.SIGRTMIN + int(name[9:])
                elif name.startswith("SIGRTMAX-") and name[9:].isdigit():
                    num = signal_mod.SIGRTMAX - int(name[9:])
                else:
                    raise SpecError(f"Invalid signal: {value}") from None
    if not 0 < num <= signal_mod.SIGRTMAX:
        raise SpecError(f"Invalid signal: {value}")
    return num


def _merge_env(image_env: list[str] | None, env: list[str] | None) -> list[str]:
    merged: dict[str, str] = {}
    for entry in [*(image_env or []), *(env or [])]:
        key = entry.partition("=")[0]
        merged[key] = entry
    return list(merged.values())


def merged_config(image: Image, config: dict[str, Any], hostname: str) -> dict[str, Any]:
    """Docker's container ``Config``: the request's, with the image's defaults filled in."""
    img = dict(image.config.get("config") or {})
    out = dict(config)
    out["Hostname"] = hostname
    out.setdefault("Domainname", "")
    out["Env"] = _merge_env(img.get("Env"), config.get("Env"))
    if not config.get("Entrypoint") and config.get("Entrypoint") != []:
        out["Entrypoint"] = img.get("Entrypoint")
        if not config.get("Cmd"):
            out["Cmd"] = img.get("Cmd")
    elif config.get("Entrypoint") == []:
        out["Entrypoint"] = None
    for key in ("WorkingDir", "User", "StopSignal", "OnBuild", "Shell"):
        if not out.get(key) and img.get(key):
            out[key] = img[key]
    hc = health.merge_healthcheck(config.get("Healthcheck"), img.get("Healthcheck"))
    if hc is not None:
        out["Healthcheck"] = hc
    labels = dict(img.get("Labels") or {})
    labels.update(config.get("Labels") or {})
    out["Labels"] = labels
    for key in ("ExposedPorts", "Volumes"):
        both = dict(img.get(key) or {})
        both.update(config.get(key) or {})
        out[key] = both or None
    for key, default in (
        ("User", ""),
        ("AttachStdin", False),
        ("AttachStdout", False),
        ("AttachStderr", False),
        ("Tty", False),
        ("OpenStdin", False),
        ("StdinOnce", False),
        ("WorkingDir", ""),
    ):
        out.setdefault(key, default)
    return out


#: HostConfig keys whose ``container:<ref>`` mode joins another container's namespace.
_JOINABLE = (
    ("PidMode", "pid", "pid"),
    ("IpcMode", "ipc", "ipc"),
    ("UTSMode", "uts", "uts"),
    ("CgroupnsMode", "cgroup", "cgroup"),
    ("NetworkMode", "network", "net"),
)


class _Watch:
    """One monitor watched through its pidfd."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid = pid
        self.fd = fd
        #: resolved when the monitor process is gone (an AutoRemove container's files wait)
        self.gone: asyncio.Future[None] | None = None


class _ExitFiles:
    """Where monitors record exits: inotify on state dirs, ``exit.json`` renamed into place.

    A monitor writes ``exit.json`` and then still deletes the runtime
    container (the zygote forks a helper for it) and lets its clients drain
    before it exits. An AutoRemove container need not wait for that: its
    removal starts when the exit is recorded, and only its files wait for the
    monitor's end. One inotify instance for the engine; ``on_exit(container
    id)`` is called once per :meth:`add`. Without inotify, nothing is
    reported (the pidfd still is).
    """

    _IN_MOVED_TO = 0x080
    _IN_Q_OVERFLOW = 0x4000
    _IN_IGNORED = 0x8000
    _IN_ONLYDIR = 0x01000000
    _EVENT = struct.Struct("iIII")

    def __init__(self, on_exit: Callable[[str], None]) -> None:
        self.on_exit = on_exit
        self.fd = -1
        self.by_wd: dict[int, str] = {}
        self.wd_of: dict[str, int] = {}
        self.dirs: dict[str, str] = {}

    def _open(self) -> bool:
        if self.fd >= 0:
            return True
        try:
            from bulkhead.linux.libc import LIBC

            fd = int(LIBC.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        except (OSError, AttributeError):
            return False
        if fd < 0:
            return False
        self.fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)
        return True

    def add(self, container_id: str, state_dir: str) -> None:
        """Report ``exit.json`` in ``state_dir`` (also when it is already there)."""
        self.discard(container_id)
        if not self._open():
            return
        from bulkhead.linux.libc import LIBC

        wd = int(
            LIBC.inotify_add_watch(
                self.fd, os.fsencode(state_dir), self._IN_MOVED_TO | self._IN_ONLYDIR
            )
        )
        if wd < 0:
            return
        self.by_wd[wd] = container_id
        self.wd_of[container_id] = wd
        self.dirs[container_id] = state_dir
        if os.path.exists(os.path.join(state_dir, "exit.json")):
            self._fire(container_id)

    def discard(self, container_id: str) -> None:
        wd = self.wd_of.pop(container_id, None)
        self.dirs.pop(container_id, None)
        if wd is None:
            return
        self.by_wd.pop(wd, None)
        from bulkhead.linux.libc import LIBC

        LIBC.inotify_rm_watch(self.fd, wd)

    def _fire(self, container_id: str) -> None:
        self.discard(container_id)
        self.on_exit(container_id)

    def _readable(self) -> None:
        data = b""
        try:
            while chunk := os.read(self.fd, 65536):
                data += chunk
        except BlockingIOError:
            pass
        except OSError:
            return
        size = self._EVENT.size
        pos = 0
        while pos + size <= len(data):
            wd, mask, _, length = self._EVENT.unpack_from(data, pos)
            name = data[pos + size : pos + size + length].split(b"\0", 1)[0]
            pos += size + length
            if mask & self._IN_Q_OVERFLOW:  # events were lost: look at every dir
                for cid, d in list(self.dirs.items()):
                    if os.path.exists(os.path.join(d, "exit.json")):
                        self._fire(cid)
                continue
            owner = self.by_wd.get(wd)
            if owner is None:
                continue
            if mask & self._IN_IGNORED:  # the dir went away
                self.by_wd.pop(wd, None)
                if self.wd_of.get(owner) == wd:
                    del self.wd_of[owner]
                    self.dirs.pop(owner, None)
            elif name == b"exit.json":
                self._fire(owner)

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        self.by_wd.clear()
        self.wd_of.clear()
        self.dirs.clear()


class Engine:
    """Containers of one daemon; see the module docstring.

    Built by the daemon as ``Engine(config, images, snapshotter, volumes)``.
    Every method taking ``ref`` accepts a full id, a name or an id prefix.
    Errors are :mod:`bulkhead.errors` classes the API maps to Docker's
    statuses (NoSuchContainer 404, NameConflict/ContainerRunning/
    ContainerNotRunning 409, SpecError 400).
    """

    def __init__(
        self,
        config: DaemonConfig,
        images: ImageStore,
        snapshotter: Any,
        volumes: VolumeStore | None = None,
    ) -> None:
        self.config = config
        self.images = images
        self.snapshotter = snapshotter
        self.volumes = volumes
        config.root.mkdir(parents=True, exist_ok=True)
        config.containers_root.mkdir(parents=True, exist_ok=True)
        self.store = ContainerStore(config.root)
        self.runtimes = Runtimes(config.default_runtime, config.runtimes)
        self._zygote: Any = None
        self._zygote_ok = False  # ensure_running answered once (spawn retries on OSError)
        self._watches: dict[str, _Watch] = {}
        self._exit_files = _ExitFiles(self._exit_recorded)
        self._exit_futures: dict[str, asyncio.Future[tuple[int, str | None]]] = {}
        self._removed_futures: dict[str, asyncio.Future[tuple[int, str | None]]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._creating: set[str] = set()
        #: created by this daemon and never spawned: clean state, rootfs still mounted
        #: (the spawn skips _prepare_spawn's clean-up and mount check for those)
        self._fresh: set[str] = set()
        self._stopping: set[str] = set()  # stop/remove in progress: no restart policy
        #: restart policies: the back-off of each container (moby's restartmanager keeps it in
        #: memory too), and the generation of its pending restart (a newer one voids an older)
        self._backoff: dict[str, float] = {}
        self._restart_gen: dict[str, int] = {}
        self._cleanups: set[asyncio.Future[None]] = set()  # files of removed containers
        self._unpack_locks: dict[str, threading.Lock] = {}
        self._unpack_locks_guard = threading.Lock()
        #: set by the exec API: container id -> its exec instances' ids (inspect's ExecIDs)
        self.exec_ids: Callable[[str], builtins.list[str]] | None = None
        #: what happened, for ``GET /events`` (see :mod:`bulkhead.engine.events`)
        self.events = EventBus()
        #: the healthcheck probes of running containers (:mod:`bulkhead.engine.health`)
        self.health = health.HealthMonitor(self)
        from bulkhead.network.manager import NetworkManager

        #: networks, endpoints and the containers' network namespaces (:mod:`bulkhead.network`)
        self.network = NetworkManager(
            config.root,
            config.exec_root,
            default_bridge=getattr(config, "bridge", ""),
            events=self.events,
            bip=getattr(config, "bip", ""),
            fixed_cidr=getattr(config, "fixed_cidr", ""),
            address_pools=getattr(config, "default_address_pools", None),
        )
        from bulkhead.network.resolution import NameService

        #: the embedded resolver of user networks and the containers' /etc/hosts and
        #: resolv.conf, kept current through the manager's hooks
        self.names = NameService(
            self.network, self._container_names, default_dns=getattr(config, "dns", [])
        )
        self.names.install()

    def emit(self, c: Container, action: str, **extra: str) -> None:
        """A ``container`` event for ``c``: Docker's attributes (image, name, labels) plus ``extra``."""
        attributes = dict(c.config.get("Labels") or {})
        attributes["image"] = c.config.get("Image") or c.image_ref or c.image
        attributes["name"] = c.name
        attributes.update(extra)
        self.events.emit("container", action, c.id, attributes)

    @property
    def driver(self) -> str:
        return os.path.basename(str(getattr(self.snapshotter, "root", "overlay"))) or "overlay"

    # -- small helpers ----------------------------------------------------------

    def paths(self, container_id: str) -> bundle.ContainerPaths:
        return bundle.ContainerPaths(self.config.containers_root, container_id)

    def state_dir(self, container_id: str) -> Path:
        """The monitor's directory for this container (exec root)."""
        return self.config.exec_root / container_id

    def runtime_root(self, runtime_name: str) -> Path:
        return self.config.runtime_root / runtime_name

    def _lock(self, container_id: str) -> asyncio.Lock:
        lock = self._locks.get(container_id)
        if lock is None:
            lock = self._locks[container_id] = asyncio.Lock()
        return lock

    def _exit_future(self, container_id: str) -> asyncio.Future[tuple[int, str | None]]:
        fut = self._exit_futures.get(container_id)
        if fut is None or fut.done():
            fut = self._exit_futures[container_id] = asyncio.get_running_loop().create_future()
        return fut

    def _removed_future(self, container_id: str) -> asyncio.Future[tuple[int, str | None]]:
        fut = self._removed_futures.get(container_id)
        if fut is None:
            fut = self._removed_futures[container_id] = asyncio.get_running_loop().create_future()
        return fut

    def _spawn_task(self, coro: Awaitable[Any]) -> None:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("engine task failed", exc_info=task.exception())

    def _zygote_client(self) -> Any:
        if self._zygote is None:
            from bulkhead.engine.zygote import ZygoteClient

            self._zygote = ZygoteClient(self.config.exec_root)
        return self._zygote

    def _monitor_client(self, container_id: str) -> MonitorClient:
        from bulkhead.engine.monitor import MonitorClient

        return MonitorClient(self.state_dir(container_id))

    # -- lookups ----------------------------------------------------------------

    def get(self, ref: str) -> Container:
        """A container by id, name or id prefix; NoSuchContainer (404) otherwise."""
        return self.store.get(ref)

    def monitor(self, ref: str) -> MonitorClient:
        """The monitor client of a running container (ContainerNotRunning otherwise)."""
        c = self.get(ref)
        if not c.state.running:
            raise ContainerNotRunning(f"Container {c.id} is not running")
        return self._monitor_client(c.id)

    # -- stats and top (see bulkhead.engine.stats and bulkhead.engine.top) -------------

    def stats_sampler(self, c: Container) -> StatsSampler | None:
        """What takes ``c``'s stats samples; None when it is not running (or restarting)."""
        if not c.state.running or c.state.restarting or not c.state.pid:
            return None
        from bulkhead.cgroups import new_manager
        from bulkhead.engine.stats import Sampler

        mode = str(c.host_config.get("NetworkMode") or "none")
        return Sampler(
            new_manager(self._cgroups_path(c.id, c.host_config)),
            name="/" + c.name,
            container_id=c.id,
            pid=c.state.pid,
            networks=mode != "host" and not c.config.get("NetworkDisabled"),
        )

    async def top(self, ref: str, ps_args: str | None = None) -> dict[str, Any]:
        """Docker's ``ContainerTopResponse``: ``ps`` rows of ``ref``'s processes; a ``top`` event."""
        from bulkhead.cgroups import new_manager
        from bulkhead.engine import top

        ps_args = ps_args or top.DEFAULT_PS_ARGS
        try:
            top.validate_ps_args(ps_args)
        except ValueError as exc:
            raise SpecError(str(exc)) from None
        c = self.get(ref)
        if not c.state.running:
            raise ContainerNotRunning(f"container {c.id} is not running")
        if c.state.restarting:
            raise ContainerNotRunning(
                f"Container {c.id} is restarting, wait until the container is running"
            )
        manager = new_manager(self._cgroups_path(c.id, c.host_config))
        pids = await asyncio.to_thread(manager.pids)
        output = await asyncio.to_thread(top.run_ps, ps_args, pids)
        result = top.parse_ps_output(output, set(pids))
        self.emit(c, "top")
        return result

    # -- create -------------------------------------------------------------------

    async def create(
        self, req: CreateRequestLike, name: str | None = None
    ) -> tuple[str, builtins.list[str]]:
        """Create a container; return (id, warnings). See the module docstring."""
        if name is None:
            name = getattr(req, "name", None) or None
        if name:
            name = check_name(name)
            self.store.check_name_free(name)
        else:
            name = random_name(lambda n: self.store.name_in_use(n) is not None)
        config = dict(req.config or {})
        host_config = dict(req.host_config or {})
        image_ref = str(getattr(req, "image", "") or config.get("Image") or "")
        if not image_ref:
            raise SpecError("No image was specified", where="Config.Image")
        cid = new_container_id()
        warnings: builtins.list[str] = list(getattr(req, "warnings", None) or [])
        self._creating.add(cid)
        try:
            # One thread hop for the image look-up and the work (each hop costs the
            # loop a wake-up, ~0.5 ms on a busy 2-vCPU machine).
            c = await asyncio.to_thread(
                self._create_from_request, req, cid, name, image_ref, config, host_config,
                warnings,
            )  # fmt: skip
        finally:
            self._creating.discard(cid)
        self._fresh.add(c.id)
        self.emit(c, "create")
        log.info("created container %s (%s) from %s", cid[:12], name, image_ref)
        return c.id, warnings

    def _create_from_request(
        self,
        req: CreateRequestLike,
        cid: str,
        name: str,
        image_ref: str,
        config: dict[str, Any],
        host_config: dict[str, Any],
        warnings: builtins.list[str],
    ) -> Container:
        """:meth:`create`'s work, in a thread: the image, the checks, then :meth:`_create_sync`."""
        image = self.images.get(image_ref)
        platform = getattr(req, "platform", None)
        if platform:
            _check_platform(image, image_ref, str(platform))
        runtime_name, _ = self.runtimes.resolve(host_config.get("Runtime") or None)
        host_config["Runtime"] = runtime_name
        opts = msgspec.structs.replace(req.options)
        log_opts: tuple[str, int | None, int | None] = (
            str(getattr(req, "log_driver", "json-file")),
            getattr(req, "log_max_size", None),
            getattr(req, "log_max_files", None),
        )
        self._resolve_network_mode(host_config, opts)
        networking = dict(getattr(req, "networking_config", None) or {})
        return self._create_sync(
            cid, name, image, image_ref, config, host_config, opts, runtime_name, log_opts,
            networking,
        )  # fmt: skip

    def _create_sync(
        self,
        cid: str,
        name: str,
        image: Image,
        image_ref: str,
        config: dict[str, Any],
        host_config: dict[str, Any],
        opts: RunOptions,
        runtime_name: str,
        log_opts: tuple[str, int | None, int | None],
        networking: dict[str, Any] | None = None,
    ) -> Container:
        from bulkhead.engine.spec import build_spec
        from bulkhead.oci.image_spec import parse_image_config

        paths = self.paths(cid)
        key = f"container-{cid}"
        undo: builtins.list[Callable[[], object]] = []
        try:
            with self._unpack_lock(image.id):  # one unpack per image; the others reuse it
                parent = self.images.unpack(image, self.snapshotter)
            bundle.make_dirs(paths)
            undo.append(lambda: bundle.remove_dir(paths))
            self.snapshotter.prepare(key, parent=parent)
            undo.insert(0, lambda: self.snapshotter.remove(key))
            bundle.mount_rootfs(self.snapshotter, key, paths.rootfs)
            undo.insert(0, lambda: bundle.unmount_rootfs(paths.rootfs))

            network_mode = opts.network_mode or "none"
            hostname = bundle.container_hostname(network_mode, opts.uts_mode, opts.hostname, cid)
            merged = merged_config(image, config, hostname)
            if opts.privileged:
                have = {d.path_in_container for d in opts.devices}
                opts.devices = [d for d in host_devices() if d.path_in_container not in have] + [
                    d for d in opts.devices
                ]
            opts.devices = [stat_device(d) if d.type is None else d for d in opts.devices]
            extra: builtins.list[dict[str, Any]] = []
            if opts.init:
                opts.init_path = bundle.INIT_PATH
                extra.append(bundle.init_mount())
            if opts.stop_signal is None and merged.get("StopSignal"):
                opts.stop_signal = str(merged["StopSignal"])

            _check_ulimits(opts)
            image_config = parse_image_config(json.dumps(image.config).encode())
            spec = build_spec(
                image_config,
                opts,
                rootfs=str(paths.rootfs),
                container_id=cid,
                hostname_default=hostname,
                namespaces=self._namespaces(cid, host_config),
            )
            spec["linux"]["cgroupsPath"] = self._cgroups_path(cid, host_config)
            spec["ociVersion"] = self.runtimes.spec_version(runtime_name, spec["ociVersion"])
            # volumes, binds, --volumes-from (copy-up reads the mounted rootfs)
            resolved = None
            vmounts: Any = None
            if self.volumes is not None:
                with contextlib.suppress(ImportError):  # the volumes helper lands separately
                    from bulkhead.engine import mounts as vmounts
            if vmounts is not None and self.volumes is not None:
                resolved = vmounts.resolve_mounts(
                    host_config,
                    merged.get("Volumes") or {},
                    cid,
                    str(paths.rootfs),
                    self.volumes,
                    self.store.get,
                )
                vs = self.volumes
                undo.insert(0, lambda: vs.release_container(cid, remove_anonymous=True))
                vmounts.apply_to_spec(spec, resolved)
            user_dests = {os.path.normpath(m["destination"]) for m in spec["mounts"]}
            # --network container:X uses X's hostname, hosts and resolv.conf (Docker's)
            etc_paths = paths
            if network_mode.startswith("container:"):
                etc_paths = self.paths(self.get(network_mode.split(":", 1)[1]).id)
            etc = [
                m
                for m in bundle.etc_mounts(etc_paths, opts.read_only)
                if m["destination"] not in user_dests
            ]
            spec["mounts"] = bundle.merge_mounts(spec["mounts"], [], etc, extra)
            self._normalize_links(name, host_config)
            if etc_paths is paths:
                bundle.write_etc_files(
                    paths,
                    hostname=hostname,
                    network_mode=network_mode,
                    host_config=host_config,
                    host_gateway=self._host_gateway(),
                    default_dns=getattr(self.config, "dns", []),
                    default_dns_search=self.config.dns_search,
                    default_dns_options=self.config.dns_options,
                )
            bundle.write_config(paths, spec)
            # The root stays mounted for the start that usually follows (an
            # unmount costs ~5 ms of RCU grace period); exit unmounts it.

            args = list(spec["process"]["args"])
            if opts.init:
                args = args[2:]  # [init, "--", cmd...]
            log_driver, log_max_size, log_max_files = log_opts
            if (host_config.get("LogConfig") or {}).get("Type") == "none":
                log_driver = "none"
            log_path = "" if log_driver == "none" else str(paths.log)
            host_config.setdefault("LogConfig", {"Type": "json-file", "Config": {}})
            c = Container(
                id=cid,
                name=name,
                created=now_rfc3339(),
                path=args[0] if args else "",
                args=args[1:],
                image=image.id,
                image_ref=image_ref,
                config=merged,
                host_config=host_config,
                runtime=runtime_name,
                driver=self.driver,
                snapshot_key=key,
                log_path=log_path,
                log_max_size=log_max_size,
                log_max_files=log_max_files,
                auto_remove=bool(host_config.get("AutoRemove")),
                mount_points=list(resolved.mount_points) if resolved is not None else [],
                volumes=list(resolved.volumes_used) if resolved is not None else [],
                hostname_path=str(etc_paths.hostname),
                hosts_path=str(etc_paths.hosts),
                resolv_conf_path=str(etc_paths.resolv_conf),
            )
            self.images.register_use(image, cid)
            undo.insert(0, lambda: self.images.unregister_use(image, cid))
            undo.insert(0, lambda: self.network.forget_container(cid))
            self._attach_networks(cid, host_config, networking, name)
            self.store.add(c)  # the commit point
            return c
        except BaseException:
            for step in undo:
                try:
                    step()
                except Exception:  # pragma: no cover - best effort
                    log.exception("undoing a failed create of %s", cid)
            raise

    def _unpack_lock(self, image_id: str) -> threading.Lock:
        """A lock per image: parallel creates of a new image unpack it once, not N times."""
        with self._unpack_locks_guard:
            lock = self._unpack_locks.get(image_id)
            if lock is None:
                lock = self._unpack_locks[image_id] = threading.Lock()
            return lock

    def _namespaces(self, container_id: str, host_config: dict[str, Any]) -> dict[str, str]:
        """The namespace paths a container joins, prepared before its spec is written.

        ``container:<ref>`` modes (``--pid``, ``--ipc``, ``--uts``,
        ``--cgroupns``, ``--network``) join that running container's
        namespaces through ``/proc/<its pid>/ns/<kind>``; they are resolved
        again at every start (the other container's pid changes when it
        restarts). Networking's hook is :meth:`_network_namespace`.
        """
        out: dict[str, str] = {}
        for key, kind, proc_name in _JOINABLE:
            mode = str(host_config.get(key) or "")
            if mode.startswith("container:"):
                other = self.get(mode.split(":", 1)[1])
                if other.id == container_id:
                    raise SpecError(f"cannot join own {kind} namespace", where=f"HostConfig.{key}")
                if not other.state.running or not other.state.pid:
                    raise ContainerNotRunning(
                        f"cannot join {kind} namespace of a non running container: {other.id}"
                    )
                out[kind] = f"/proc/{other.state.pid}/ns/{proc_name}"
                if kind == "network" and not host_config.get("UTSMode"):
                    # Docker: --network container:X shares X's hostname (UTS) too
                    out.setdefault("uts", f"/proc/{other.state.pid}/ns/uts")
        network = self._network_namespace(
            container_id, str(host_config.get("NetworkMode") or "none")
        )
        if network is not None:
            out["network"] = network
        return out

    def _cgroups_path(self, container_id: str, host_config: dict[str, Any]) -> str:
        """``<parent>/<id>``: ``HostConfig.CgroupParent``, else the daemon's ``cgroup-parent``
        (default ``/bulkhead``), as Docker's cgroupfs driver names them."""
        parent = str(host_config.get("CgroupParent") or self.config.cgroup_parent or "").strip()
        if not parent:
            parent = "/bulkhead"
        if ".." in parent.split("/"):
            raise SpecError(f"invalid cgroup parent {parent!r}", where="HostConfig.CgroupParent")
        return "/" + "/".join(p for p in [*parent.split("/"), container_id] if p)

    def _resolve_network_mode(self, host_config: dict[str, Any], opts: RunOptions) -> None:
        """``default`` is ``bridge`` (``none`` when the daemon runs with ``bridge: none``);
        a network name must exist (400 ``network x not found``: a 404 at create would make
        the docker CLI pull the image).
        """
        mode = str(host_config.get("NetworkMode") or "default")
        if mode == "default":
            mode = "bridge" if self.network.bridge_enabled else "none"
        if mode not in ("none", "host") and not mode.startswith("container:"):
            net = self.network.find(mode)
            if net is None:
                raise SpecError(f"network {mode} not found")
            mode = {"host": "host", "null": "none"}.get(net.driver, mode)
        host_config["NetworkMode"] = mode
        opts.network_mode = mode

    def _attach_networks(
        self,
        cid: str,
        host_config: dict[str, Any],
        networking: dict[str, Any] | None,
        name: str = "",
    ) -> None:
        """At create: an endpoint (addresses, aliases) on ``NetworkMode``'s network and on
        every other network of ``NetworkingConfig.EndpointsConfig``."""
        mode = str(host_config.get("NetworkMode") or "none")
        if mode in ("none", "host") or mode.startswith("container:"):
            return
        configs = dict((networking or {}).get("EndpointsConfig") or {})
        primary = self.network.get(mode)
        cfg: dict[str, Any] = {}
        for key in (mode, primary.name, primary.id, "default"):  # the CLI's key: "default"
            cfg = configs.pop(key, None) or cfg
        self._attach_one(cid, primary, cfg, name)
        for ref, other_cfg in configs.items():
            other = self.network.find(ref)
            if other is None:
                raise SpecError(f"network {ref} not found")
            self._attach_one(cid, other, other_cfg or {}, name)

    def _attach_one(self, cid: str, net: Any, cfg: dict[str, Any], name: str = "") -> Any:
        if not isinstance(cfg, dict):
            raise SpecError("expected an object", where=f"EndpointsConfig.{net.name}")
        ipam_cfg = cfg.get("IPAMConfig") or {}
        priority = cfg.get("GwPriority") or 0
        if not isinstance(priority, int) or isinstance(priority, bool):
            raise SpecError("expected an integer", where=f"EndpointsConfig.{net.name}.GwPriority")
        links = self._endpoint_links(cfg.get("Links"), f"EndpointsConfig.{net.name}.Links")
        return self.network.attach(
            cid,
            net,
            ipv4=str(ipam_cfg.get("IPv4Address") or ""),
            ipv6=str(ipam_cfg.get("IPv6Address") or ""),
            aliases=[str(a) for a in (cfg.get("Aliases") or [])],
            mac=str(cfg.get("MacAddress") or ""),
            name=name,
            gw_priority=priority,
            links=links,
        )

    def _endpoint_links(self, value: Any, where: str) -> list[str]:
        """``EndpointSettings.Links`` (``network connect --link db:alias``) as
        ``name:alias``, each naming an existing container (400 otherwise, as Docker)."""
        from bulkhead.engine.hostconfig import parse_link

        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SpecError("expected a list of name:alias strings", where=where)
        return [
            f"{self._linked_container(target).name}:{alias}"
            for target, alias in (parse_link(link, where) for link in value)
        ]

    def _linked_container(self, target: str) -> Container:
        """The container a link names; 400, not 404: a 404 makes the docker CLI pull
        the image (moby's reason too)."""
        try:
            return self.store.get(target)
        except NoSuchContainer:
            raise SpecError(
                f"could not get container for {target}: No such container: {target}"
            ) from None

    def _network_namespace(self, container_id: str, network_mode: str) -> str | None:
        """The network hook: the path of a namespace prepared for ``container_id``, or None.

        ``none`` gets a fresh empty namespace from the runtime and ``host``
        none at all (build_spec handles both): None. A bridge network's
        container joins ``<exec_root>/netns/<id>``, made by
        :meth:`_prepare_network` at every start.
        """
        if network_mode.startswith("container:"):
            return None  # joined in _namespaces
        if network_mode in ("none", "host", "default", ""):
            return None
        net = self.network.get(network_mode)
        if net.driver != "bridge":
            return None
        return str(self.network.ns_path(container_id))

    def _container_names(self, ref: str) -> Any:
        """What the name service needs of a container (None when there is none)."""
        from bulkhead.engine.hostconfig import parse_link
        from bulkhead.network.resolution import ContainerNames

        try:
            c = self.store.get(ref)
        except BulkheadError:
            return None
        hc = c.host_config
        return ContainerNames(
            id=c.id,
            name=c.name,
            hostname=str(c.config.get("Hostname") or c.id[:12]),
            domainname=str(c.config.get("Domainname") or ""),
            hosts_path=c.hosts_path,
            resolv_conf_path=c.resolv_conf_path,
            dns=tuple(hc.get("Dns") or ()),
            dns_search=tuple(hc.get("DnsSearch") or self.config.dns_search),
            dns_options=tuple(hc.get("DnsOptions") or self.config.dns_options),
            links=tuple(parse_link(link) for link in hc.get("Links") or ()),
        )

    def _host_gateway(self) -> str | None:
        """``--add-host name:host-gateway``: the default bridge's gateway (Docker's)."""
        net = self.network.find("bridge") if self.network.bridge_enabled else None
        for pool in net.pools if net is not None else []:
            if pool.gateway:
                return str(pool.gateway)
        return None

    def _normalize_links(self, name: str, host_config: dict[str, Any]) -> None:
        """``--link db:alias`` → ``/db:/<name>/alias`` (Docker's form); the linked
        container must exist (400)."""
        from bulkhead.engine.hostconfig import parse_link

        links = host_config.get("Links") or []
        out = []
        for link in links:
            target, alias = parse_link(link)
            out.append(f"/{self._linked_container(target).name}:/{name}/{alias}")
        host_config["Links"] = out or None

    def _check_links(self, c: Container) -> None:
        """A linked container must be running when ``c`` starts (Docker's 409)."""
        from bulkhead.engine.hostconfig import parse_link

        for link in c.host_config.get("Links") or ():
            target, alias = parse_link(link)
            try:
                child = self.store.get(target)
            except NoSuchContainer:
                child = None
            if child is None or not child.state.running:
                raise ContainerNotRunning(
                    f"Cannot link to a non running container: /{target} AS /{c.name}/{alias}"
                )

    def _prepare_network(self, c: Container) -> None:
        """Hook: set up the container's network before its runtime create (every start).

        Nothing to do for ``none``, ``host`` and ``container:``. On bridge
        networks: the namespace ``<exec_root>/netns/<id>`` (named in
        config.json since the create), a veth pair per endpoint, addresses
        (the ones taken at create), routes (:meth:`NetworkManager.up`).
        :meth:`_release_network` undoes it.
        """
        self._check_links(c)
        try:
            if self.network.has_endpoints(c.id):
                self.network.up(c.id)
                try:
                    self._publish_ports(c)
                except BaseException:
                    self.network.down(c.id, quiet=True)
                    raise
            elif _bridge_mode(str(c.host_config.get("NetworkMode") or "none")):
                # on a bridge network and disconnected from every network since (that
                # network maybe removed meanwhile): the namespace its spec names, with only
                # a loopback (as Docker's container without networks)
                self.network.up(c.id, empty_ok=True)
        except NoSuchNetwork as exc:
            # a network removed while the container was stopped (Docker's words at start)
            raise NoSuchNetwork(f"failed to set up container networking: {exc}") from None

    def _publish_ports(self, c: Container) -> None:
        """The container's published ports: host ports held, their nft rules in (or a 500
        naming the port, as Docker's "driver failed programming external connectivity")."""
        from bulkhead.network.ports import PortAllocationError

        endpoint = next(iter(self.network.endpoints(c.id)), None)
        try:
            self.network.nat.publish(
                c.id,
                list(c.config.get("ExposedPorts") or {}),
                c.host_config.get("PortBindings") or {},
                bool(c.host_config.get("PublishAllPorts")),
            )
        except PortAllocationError as exc:
            raise PortAllocationError(
                f"driver failed programming external connectivity on endpoint {c.name} "
                f"({endpoint.id if endpoint else ''}): {exc}"
            ) from None

    def _release_network(self, c: Container) -> None:
        """Hook: tear down what :meth:`_prepare_network` made (after exit, and at remove)."""
        self.network.nat.unpublish(c.id)
        if self.network.has_endpoints(c.id) or self.network.is_live(c.id):
            self.network.down(c.id, shared=self._network_joined(c))

    def _network_joined(self, c: Container) -> bool:
        """Whether a running container joined ``c``'s network namespace (``--network
        container:``): it keeps the namespace alive after ``c`` is gone."""
        for other in self.store.list():
            mode = str(other.host_config.get("NetworkMode") or "")
            if other.id == c.id or not other.state.running or not mode.startswith("container:"):
                continue
            try:
                if self.store.get(mode.split(":", 1)[1]).id == c.id:
                    return True
            except BulkheadError:
                continue
        return False

    async def network_connect(
        self, network_ref: str, container_ref: str, endpoint_config: dict[str, Any] | None = None
    ) -> None:
        """``POST /networks/{id}/connect``: an endpoint now, plugged in at once when running."""
        net = await asyncio.to_thread(self.network.get, network_ref)
        c = self.get(container_ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.state.status in ("removing", "dead"):
                raise SpecError(_removal_message(c.id))
            mode = str(c.host_config.get("NetworkMode") or "none")
            if mode == "host" or mode.startswith("container:"):
                raise SpecError(
                    "container sharing network namespace with another container or host "
                    "cannot be connected to any other network"
                )
            if mode == "none" or net.driver == "null":
                raise SpecError(
                    "container cannot be connected to multiple networks with one of the "
                    "networks in private (none) mode"
                )
            if not c.state.running and any(
                e.network_id == net.id for e in self.network.endpoints(c.id)
            ):
                return  # moby: a stopped container connected again keeps its config, no error
            ep = await asyncio.to_thread(self._attach_one, c.id, net, endpoint_config or {}, c.name)
            if c.state.running and self.network.is_live(c.id):
                try:
                    await asyncio.to_thread(self.network.connect_live, c.id, ep)
                except BaseException:
                    await asyncio.to_thread(self.network.detach, c.id, net)
                    raise

    async def network_disconnect(
        self, network_ref: str, container_ref: str, force: bool = False
    ) -> None:
        """``POST /networks/{id}/disconnect``: the endpoint goes (unplugged at once).

        As Docker: a stopped container (or, with ``force``, any) is disconnected
        from a network removed since by the name the network had; a container in
        host mode cannot leave ``host``.
        """
        c = self.get(container_ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.state.status in ("removing", "dead"):
                raise SpecError(_removal_message(c.id))
            net = await asyncio.to_thread(self.network.find, network_ref)
            if net is None:
                if c.state.running and not force:
                    raise NoSuchNetwork(f"network {network_ref} not found")
                await asyncio.to_thread(self.network.detach_gone, c.id, network_ref)
                return
            mode = str(c.host_config.get("NetworkMode") or "none")
            if net.driver == "host" and mode == "host":
                raise SpecError(
                    "cannot disconnect container from host network - container was created "
                    "in host network mode"
                )
            running = c.state.running
            try:
                await asyncio.to_thread(lambda: self.network.detach(c.id, net, running=running))
            except NoSuchNetwork:
                if running:
                    raise
                # a network of that name removed and made again since: Docker keys the
                # container's networks by name, and disconnects it from the old one
                try:
                    await asyncio.to_thread(self.network.detach_gone, c.id, net.name)
                except NoSuchNetwork:
                    pass
                else:
                    return
                raise

    def _refresh_namespaces(self, c: Container) -> None:
        """Point config.json at the current pids of the containers whose namespaces ``c`` joins."""
        if not any(
            str(c.host_config.get(k) or "").startswith("container:") for k, _, _ in _JOINABLE
        ):
            return
        paths = self.paths(c.id)
        spec = json.loads(paths.config_json.read_text())
        joined = self._namespaces(c.id, c.host_config)
        for ns in spec.get("linux", {}).get("namespaces", []):
            if ns.get("type") in joined:
                ns["path"] = joined[ns["type"]]
        bundle.write_config(paths, spec)

    # -- monitors ------------------------------------------------------------------

    def _monitor_config(self, c: Container) -> Any:
        from bulkhead.engine.monitor import MonitorConfig

        _, runtime = self.runtimes.resolve(c.runtime)
        max_size = self.config.log_max_size if c.log_max_size is None else c.log_max_size
        max_files = self.config.log_max_files if c.log_max_files is None else c.log_max_files
        return MonitorConfig(
            container_id=c.id,
            bundle=str(self.paths(c.id).bundle),
            runtime=runtime,
            runtime_root=str(self.runtime_root(c.runtime)),
            state_dir=str(self.state_dir(c.id)),
            log_path=c.log_path or None,
            log_max_size=max_size,
            log_max_files=max_files,
            tty=bool(c.config.get("Tty")),
            stdin_open=bool(c.config.get("OpenStdin")),
            stdin_once=bool(c.config.get("StdinOnce")),
        )

    def _monitor_live(self, c: Container) -> bool:
        if not c.state.monitor_pid:
            return False
        client = self._monitor_client(c.id)
        return bool(client.alive()) and client.exit_status() is None

    async def _ensure_monitor(self, c: Container) -> MonitorClient:
        """The container's live monitor, spawned (runtime create, no start) if it has none."""
        if self._monitor_live(c):
            return self._monitor_client(c.id)
        old = self._watches.get(c.id)
        if old is not None and old.gone is not None:
            # The exit is recorded, the monitor still deletes the runtime container:
            # a create with the same id must not race that delete.
            await asyncio.shield(old.gone)
        cfg = self._monitor_config(c)
        state_dir = self.state_dir(c.id)
        paths = self.paths(c.id)
        if c.id in self._fresh and os.path.ismount(paths.rootfs):
            # Just created here, never spawned: no monitor or runtime state to clear and
            # the root still mounted (an overlay: ismount sees it); the hooks remain.
            self._fresh.discard(c.id)
            self._refresh_namespaces(c)
            mode = str(c.host_config.get("NetworkMode") or "none")
            if mode not in ("none", "host") and not mode.startswith("container:"):
                await asyncio.to_thread(self._prepare_network, c)
        else:
            self._fresh.discard(c.id)
            await asyncio.to_thread(self._prepare_spawn, c, state_dir, paths)
        zygote = self._zygote_client()
        try:
            if not self._zygote_ok:
                await zygote.ensure_running()
                self._zygote_ok = True
            try:
                spawned = await zygote.spawn(cfg)
            except OSError:  # the zygote died since: start a new one, once
                await zygote.ensure_running()
                spawned = await zygote.spawn(cfg)
        except BaseException:
            await asyncio.to_thread(bundle.unmount_rootfs, paths.rootfs)
            raise
        monitor_pid = int(spawned.monitor_pid)

        def mark(x: Container) -> None:
            x.state.monitor_pid = monitor_pid
            x.state.pid = int(getattr(spawned, "init_pid", 0) or 0)

        self.store.update(c.id, mark)
        self._watch(c.id, monitor_pid, c.auto_remove)
        return self._monitor_client(c.id)

    def _prepare_spawn(self, c: Container, state_dir: Path, paths: bundle.ContainerPaths) -> None:
        self._refresh_namespaces(c)
        self._prepare_network(c)
        shutil.rmtree(state_dir, ignore_errors=True)
        self._delete_runtime_state(c.runtime, c.id)
        bundle.mount_rootfs(self.snapshotter, c.snapshot_key, paths.rootfs)

    def _watch(self, container_id: str, monitor_pid: int, auto_remove: bool = False) -> None:
        """Call :meth:`_on_monitor_exit` when the monitor process ends (pidfd readable).

        ``auto_remove``: also as soon as the monitor recorded the exit
        (:class:`_ExitFiles`), for the removal to start while it finishes.
        """
        old = self._watches.pop(container_id, None)
        if old is not None:
            self._unwatch_fd(old)
        self._exit_files.discard(container_id)
        try:
            fd = os.pidfd_open(monitor_pid)
        except ProcessLookupError:
            self._spawn_task(self._on_monitor_exit(container_id, monitor_pid))
            return
        w = _Watch(monitor_pid, fd)
        self._watches[container_id] = w
        loop = asyncio.get_running_loop()
        loop.add_reader(fd, self._pidfd_readable, container_id, w)
        if auto_remove:
            w.gone = loop.create_future()
            self._exit_files.add(container_id, str(self.state_dir(container_id)))

    def _unwatch_fd(self, w: _Watch) -> None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(w.fd)
        with contextlib.suppress(OSError):
            os.close(w.fd)
        w.fd = -1

    def _pidfd_readable(self, container_id: str, w: _Watch) -> None:
        self._unwatch_fd(w)
        if self._watches.get(container_id) is w:
            del self._watches[container_id]
            self._exit_files.discard(container_id)
        if w.gone is not None and not w.gone.done():
            w.gone.set_result(None)
        self._spawn_task(self._on_monitor_exit(container_id, w.pid))

    def _exit_recorded(self, container_id: str) -> None:
        """An AutoRemove container's monitor wrote ``exit.json`` and is finishing."""
        w = self._watches.get(container_id)
        if w is not None:
            self._spawn_task(self._on_monitor_exit(container_id, w.pid, finishing=True))

    async def _on_monitor_exit(
        self, container_id: str, monitor_pid: int, finishing: bool = False
    ) -> None:
        """Record a monitor's end: the exit status, the unmount, waiters, ``--rm``.

        ``finishing``: the monitor recorded the exit and still runs (the
        runtime's delete, its clients' last output). Only a running
        AutoRemove container's exit is taken then, to remove it: the files
        wait for the monitor's end (:meth:`remove`); all else is left to the
        monitor's end.
        """
        client = self._monitor_client(container_id)
        status = client.exit_status()
        if status is None and finishing:
            return
        if status is None:
            code, error, oom = (
                255,
                "the container's monitor exited without recording an exit status",
                False,
            )
            finished = now_rfc3339()
        else:
            code = int(status.exit_code)
            error = str(getattr(status, "error", "") or "")
            oom = bool(getattr(status, "oom_killed", False))
            finished = str(getattr(status, "finished_at", "") or now_rfc3339())
        async with self._lock(container_id):
            try:
                c = self.store.get(container_id)
            except NoSuchContainer:
                return
            if c.state.monitor_pid not in (0, monitor_pid):
                return  # a newer monitor already took over
            if finishing and not (
                c.auto_remove
                and c.state.monitor_pid == monitor_pid
                and (c.state.running or c.state.status in ("running", "paused", "restarting"))
            ):
                return
            if status is None:  # the monitor vanished: its container must not run on unseen
                await asyncio.to_thread(self._delete_runtime_state, c.runtime, c.id)

            died = restart = False

            def record(x: Container) -> None:
                nonlocal died, restart
                was_running = x.state.running or x.state.status in (
                    "running",
                    "paused",
                    "restarting",
                )
                died = was_running
                x.state.running = False
                x.state.paused = False
                x.state.restarting = False
                x.state.pid = 0
                x.state.monitor_pid = 0
                if was_running:
                    x.state.status = "exited"
                    x.state.exit_code = code
                    x.state.error = error
                    x.state.oom_killed = oom
                    x.state.finished_at = finished
                    # The policy's decision goes with the exit, in one transaction: a daemon
                    # killed right after finds it restarting (and counted) or not at all.
                    restart = container_id not in self._stopping and self._restart_wanted(x)
                    if restart:
                        x.state.status = "restarting"
                        x.state.restarting = True
                        x.restart_count += 1
                elif x.state.status != "removing":
                    # a monitor spawned for an early attach, killed before start
                    x.state.error = error

            c = self.store.update(container_id, record)
            self.health.stop(container_id)
            if died:
                self._emit_exit(c, code, oom)
            if not (c.auto_remove and c.state.status == "exited"):  # remove() unmounts those
                await asyncio.to_thread(self._after_exit, c)
        fut = self._exit_futures.pop(container_id, None)
        if fut is not None and not fut.done():
            fut.set_result((c.state.exit_code, c.state.error or None))
        log.info("container %s exited with %s", container_id[:12], c.state.exit_code)
        if c.auto_remove and c.state.status == "exited":
            with contextlib.suppress(NoSuchContainer):
                await self.remove(container_id, force=True, volumes=True)
        elif restart:
            ran = parse_rfc3339(c.state.finished_at) - parse_rfc3339(c.state.started_at)
            self._schedule_restart(container_id, self._next_backoff(container_id, ran))

    def _emit_volumes(self, c: Container, action: str) -> None:
        """A volume ``mount`` (at start) or ``unmount`` (at exit) per volume of ``c``, as moby."""
        for m in c.mount_points:
            if m.get("Type") != "volume" or not m.get("Name"):
                continue
            attributes = {"driver": str(m.get("Driver") or "local"), "container": c.id}
            if action == "mount":
                attributes["destination"] = str(m.get("Destination") or "")
                attributes["read/write"] = "true" if m.get("RW", True) else "false"
                attributes["propagation"] = str(m.get("Propagation") or "")
            self.events.emit("volume", action, str(m["Name"]), attributes)

    def _emit_exit(self, c: Container, code: int, oom: bool) -> None:
        """Docker's events of an exit: ``oom`` (killed by its memory limit), the volumes'
        ``unmount``, then ``die``."""
        if oom:
            self.emit(c, "oom")
        self._emit_volumes(c, "unmount")
        ran = parse_rfc3339(c.state.finished_at) - parse_rfc3339(c.state.started_at)
        self.emit(c, "die", exitCode=str(code), execDuration=str(max(int(ran), 0)))

    def _after_exit(self, c: Container) -> None:
        self._release_network(c)
        with contextlib.suppress(OSError, BulkheadError):
            bundle.unmount_rootfs(self.paths(c.id).rootfs)

    # -- start / stop ----------------------------------------------------------------

    async def attach_monitor(self, ref: str) -> MonitorClient | None:
        """The monitor to attach to before (or after) start; spawns it for a stopped container.

        None when the monitor could not be spawned (the runtime's create
        failed, e.g. the command does not exist): :meth:`start` then reports
        that error, and the attach stream has nothing to carry.
        """
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.state.status in ("removing", "dead"):
                raise ContainerError(f"container {c.id} is marked for removal")
            try:
                return await self._ensure_monitor(c)
            except BulkheadError as exc:
                log.info("early monitor for %s failed: %s", c.id[:12], exc)
                return None

    async def start(self, ref: str, *, policy: bool = False) -> bool:
        """Start a container; False when it was already running (Docker's 304).

        A start by the user (not ``policy``, the restart policy's) begins the
        count of restarts and the back-off afresh, as Docker's does.
        """
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.state.running:
                return False
            if c.state.status in ("removing", "dead"):
                raise ContainerError(
                    f"container {c.id} is marked for removal and cannot be started"
                )
            self._exit_future(c.id)  # waiters from now on see this run's exit
            try:
                client = await self._ensure_monitor(c)
                await self._initial_size(c, client)
                started_at = now_rfc3339()
                try:
                    await client.start()
                except BaseException:
                    with contextlib.suppress(Exception):
                        await client.kill(signal_mod.SIGKILL, True)
                    raise
            except BulkheadError as exc:
                self._record_start_failure(c.id, exc)
                # the published ports now, not when the monitor's exit is collected: a
                # start that failed changed nothing (the rest goes with that exit)
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self.network.nat.unpublish, c.id)
                if c.auto_remove:  # Docker removes a --rm container that failed to start
                    self._spawn_task(self._remove_quietly(c.id))
                raise
            c = self.get(c.id)
            pid = c.state.pid

            if not policy:
                self._backoff.pop(c.id, None)

            def running(x: Container) -> None:
                x.manually_stopped = False
                if not policy:
                    x.restart_count = 0
                x.state.status = "running"
                x.state.running = True
                x.state.paused = False
                x.state.restarting = False
                x.state.oom_killed = False
                x.state.dead = False
                x.state.exit_code = 0
                x.state.error = ""
                x.state.pid = pid
                x.state.started_at = started_at
                x.state.finished_at = ZERO_TIME

            c = self.store.update(c.id, running)
            self._emit_volumes(c, "mount")
            self.emit(c, "start")
            self.health.on_start(c.id)
        log.info("started container %s", c.id[:12])
        return True

    async def _initial_size(self, c: Container, client: MonitorClient) -> None:
        """A TTY starts at the client's size (``ConsoleSize``), as Docker does."""
        size = c.host_config.get("ConsoleSize") or [0, 0]
        if c.config.get("Tty") and len(size) == 2 and size[0] and size[1]:
            with contextlib.suppress(BulkheadError, OSError):
                await client.resize(int(size[0]), int(size[1]))

    async def _remove_quietly(self, container_id: str) -> None:
        with contextlib.suppress(NoSuchContainer):
            await self.remove(container_id, force=True, volumes=True)

    def _record_start_failure(self, container_id: str, exc: BulkheadError) -> None:
        """Docker keeps a container that failed to start, with exit code 126/127/128 and the error."""
        code = int(getattr(exc, "exit_code", 0) or 0)
        if code not in (126, 127):
            code = 128

        def failed(x: Container) -> None:
            x.state.exit_code = code
            x.state.error = str(exc)

        with contextlib.suppress(NoSuchContainer):
            self.store.update(container_id, failed)
        fut = self._exit_futures.pop(container_id, None)
        if fut is not None and not fut.done():
            fut.set_result((code, str(exc)))

    async def kill(self, ref: str, signal: str | int = "SIGKILL") -> None:
        """Send ``signal`` to the container's process; 409 when it is not running."""
        sig = parse_signal(signal)
        c = self.get(ref)
        if not c.state.running:
            raise ContainerNotRunning(f"Container {c.id} is not running")
        self.emit(c, "kill", signal=str(sig))
        await self._monitor_client(c.id).kill(sig, sig == signal_mod.SIGKILL)
        await self._thaw_after_kill(c.id, sig)

    async def stop(self, ref: str, timeout: int | None = None, signal: str | None = None) -> bool:
        """Stop signal, up to ``timeout`` seconds, then SIGKILL; False if it was not running."""
        c = self.get(ref)
        if not c.state.running:
            if c.state.restarting:  # cancels the pending restart
                self._set_manually_stopped(c.id, True)
                return True
            return False
        sig = parse_signal(signal or c.config.get("StopSignal") or "SIGTERM")
        if timeout is None:
            st = c.config.get("StopTimeout")
            timeout = int(st) if st is not None else DEFAULT_STOP_TIMEOUT
        self._set_manually_stopped(c.id, True)
        self._stopping.add(c.id)
        try:
            await self._stop_running(c, sig, timeout)
        finally:
            self._stopping.discard(c.id)
        with contextlib.suppress(NoSuchContainer):
            self.emit(self.get(c.id), "stop")
        return True

    def _set_manually_stopped(self, container_id: str, value: bool) -> None:
        def mark(x: Container) -> None:
            x.manually_stopped = value
            if value and x.state.restarting:
                x.state.restarting = False
                x.state.status = "exited"

        with contextlib.suppress(NoSuchContainer):
            self.store.update(container_id, mark)

    async def _stop_running(self, c: Container, sig: int, timeout: int) -> None:
        fut = self._exit_future(c.id)
        if not self._monitor_live(c) and c.state.monitor_pid == 0:
            return
        client = self._monitor_client(c.id)
        if c.state.running:
            self.emit(c, "kill", signal=str(sig))
        with contextlib.suppress(Exception):
            await client.kill(sig, False)
        await self._thaw_after_kill(c.id, sig)
        try:
            if timeout < 0:
                await asyncio.shield(fut)
            else:
                await asyncio.wait_for(asyncio.shield(fut), timeout)
            return
        except TimeoutError:
            log.info("container %s did not stop in %ss: SIGKILL", c.id[:12], timeout)
        if sig != signal_mod.SIGKILL:
            self.emit(c, "kill", signal=str(int(signal_mod.SIGKILL)))
        with contextlib.suppress(Exception):
            await client.kill(signal_mod.SIGKILL, True)
        await self._thaw_after_kill(c.id, signal_mod.SIGKILL)
        try:
            await asyncio.wait_for(asyncio.shield(fut), KILL_GRACE)
        except TimeoutError:
            raise ContainerError(
                f"container {c.id} did not exit {KILL_GRACE:.0f}s after SIGKILL"
            ) from None

    # -- pause / unpause / update ------------------------------------------------------

    async def pause(self, ref: str) -> None:
        """Freeze every process of a running container (the runtime's ``pause``).

        The state becomes ``paused`` (``State.Paused``, ``Up ... (Paused)``)
        and stays so across a daemon restart. Docker's 409s: not running,
        already paused, restarting.
        """
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            self._check_pausable(c)
            await asyncio.to_thread(self._runtime_verb, c, "pause")
            self.store.update(c.id, _mark_paused)
        log.info("paused container %s", c.id[:12])
        self.emit(c, "pause")

    async def unpause(self, ref: str) -> None:
        """Thaw a paused container (the runtime's ``resume``); 409 when it is not paused."""
        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if not c.state.paused:
                raise WrongState(f"Container {c.id} is not paused")
            await asyncio.to_thread(self._runtime_verb, c, "resume")
            self.store.update(c.id, _mark_unpaused)
        log.info("unpaused container %s", c.id[:12])
        self.emit(c, "unpause")

    @staticmethod
    def _check_pausable(c: Container) -> None:
        if not c.state.running:
            raise ContainerNotRunning(f"Container {c.id} is not running")
        if c.state.paused:
            raise WrongState(f"Container {c.id} is already paused")
        if c.state.restarting:
            raise WrongState(f"Container {c.id} is restarting, wait until the container is running")

    async def _thaw_after_kill(self, container_id: str, sig: int) -> None:
        """moby's kill: a signal that ends the container thaws a paused one after it is sent.

        That is SIGKILL, the container's ``StopSignal``, or any signal when
        the container has no ``StopSignal`` (moby ``killWithSignal``). A
        frozen process does not see the signal until it is thawed.
        """
        try:
            c = self.get(container_id)
        except NoSuchContainer:
            return
        if not c.state.paused:
            return
        stop_signal = c.config.get("StopSignal")
        if stop_signal and sig != signal_mod.SIGKILL:
            with contextlib.suppress(SpecError):
                if parse_signal(stop_signal) != sig:
                    return
        try:
            await asyncio.to_thread(self._runtime_verb, c, "resume")
        except BulkheadError as exc:
            log.warning("cannot unpause container %s after a kill: %s", c.id[:12], exc)
            return
        with contextlib.suppress(NoSuchContainer):
            self.store.update(c.id, _mark_unpaused)
        self.emit(c, "unpause")

    def _runtime_verb(
        self, c: Container, verb: str, resources: dict[str, Any] | None = None
    ) -> None:
        """The OCI runtime's ``pause``, ``resume`` or ``update`` on ``c`` (sync: in a thread).

        The built-in runtime is called as a library (these verbs only write
        cgroup files: nothing forks); a runc-compatible binary is run as
        ``<runtime> --root <root> <verb> <id>`` (``update --resources -``
        with the OCI ``LinuxResources`` JSON on stdin). Its refusal becomes a
        :class:`ContainerError` with the runtime's own words; a container
        that is gone meanwhile is :class:`ContainerNotRunning`.
        """
        root = self.runtime_root(c.runtime)
        _, runtime = self.runtimes.resolve(c.runtime)
        if runtime == BUILTIN:
            from bulkhead.runtime.container import Runtime

            rt = Runtime(str(root))
            try:
                if verb == "update":
                    from bulkhead.oci.runtime_spec import LinuxResources

                    rt.update(c.id, msgspec.convert(resources or {}, type=LinuxResources))
                else:
                    getattr(rt, verb)(c.id)
            except (BulkheadError, OSError) as exc:
                if not self._runtime_has(c):
                    raise ContainerNotRunning(f"Container {c.id} is not running") from None
                raise RuntimeRefused(c.id, verb, str(exc)) from exc
            return
        cmd = [runtime, "--root", str(root), verb]
        data = None
        if verb == "update":
            cmd += ["--resources", "-"]
            data = json.dumps(resources or {}).encode()
        cmd.append(c.id)
        try:
            done = subprocess.run(cmd, input=data, capture_output=True, timeout=60, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise RuntimeRefused(c.id, verb, str(exc)) from None
        if done.returncode != 0:
            if not self._runtime_has(c):
                raise ContainerNotRunning(f"Container {c.id} is not running")
            why = done.stderr.decode(errors="replace").strip().splitlines()
            text = why[-1] if why else f"{os.path.basename(runtime)} exited {done.returncode}"
            raise RuntimeRefused(c.id, verb, _runtime_words(text))

    def _runtime_paused(self, c: Container) -> bool | None:
        """Is ``c`` frozen, by its OCI runtime's ``state``? None when that cannot be told."""
        root = self.runtime_root(c.runtime)
        try:
            _, runtime = self.runtimes.resolve(c.runtime)
        except SpecError:
            return None
        if runtime == BUILTIN:
            from bulkhead.runtime.container import Runtime

            try:
                status = str(Runtime(str(root)).state(c.id).get("status") or "")
            except (BulkheadError, OSError):
                return None
        else:
            try:
                done = subprocess.run(
                    [runtime, "--root", str(root), "state", c.id],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )
                status = str(json.loads(done.stdout or b"{}").get("status") or "")
            except (OSError, subprocess.SubprocessError, ValueError, AttributeError):
                return None
        if status == "paused":
            return True
        if status in ("running", "created"):
            return False
        return None

    def _runtime_has(self, c: Container) -> bool:
        """Does the container's process still run (its runtime state names a live init)?"""
        c = self.get(c.id)
        return bool(c.state.running and c.state.pid and os.path.exists(f"/proc/{c.state.pid}"))

    async def update(self, ref: str, body: Any) -> builtins.list[str]:
        """``POST /containers/{id}/update``: new resources / restart policy; the warnings.

        See :mod:`bulkhead.engine.update`: a running (or paused) container's
        cgroup is updated first (all or nothing), then the ``HostConfig`` and
        ``config.json`` are stored; a stopped one only gets the latter.
        """
        from bulkhead.engine.update import merge_into_spec, plan_update

        c = self.get(ref)
        async with self._lock(c.id):
            c = self.get(c.id)
            if c.state.status in ("removing", "dead"):
                raise ContainerError(
                    f"Cannot update container {c.id}: container is marked for removal and "
                    'cannot be "update"'
                )
            plan = plan_update(c.id, c.config, c.host_config, body)
            # running or paused; or created with its runtime container made (an early
            # attach): its cgroup exists already and the start would not look at config.json
            live = not c.state.restarting and (c.state.running or self._monitor_live(c))
            if plan.resources is not None and live:
                try:
                    await asyncio.to_thread(self._runtime_verb, c, "update", plan.resources)
                except RuntimeRefused as exc:
                    raise _update_error(c.id, exc) from None
            if plan.resources is not None:
                resources = plan.resources

                def respec() -> None:
                    paths = self.paths(c.id)
                    spec = json.loads(paths.config_json.read_text())
                    bundle.write_config(paths, merge_into_spec(spec, resources))

                await asyncio.to_thread(respec)
            host_config = plan.host_config

            def store(x: Container) -> None:
                x.host_config = host_config

            c = self.store.update(c.id, store)
        log.info("updated container %s: %s", c.id[:12], ", ".join(plan.changed) or "nothing")
        self.emit(c, "update")
        return list(plan.warnings)

    async def restart(
        self,
        ref: str,
        timeout: int | None = None,
        signal: str | None = None,
        *,
        policy: bool = False,
    ) -> None:
        """Stop (if running), then start; ``policy``: the daemon's own restart (see :meth:`start`)."""
        c = self.get(ref)
        await self.stop(c.id, timeout, signal)
        await self.start(c.id, policy=policy)
        self.emit(self.get(c.id), "restart")

    async def wait(self, ref: str, condition: str = "not-running") -> tuple[int, str | None]:
        """Docker's wait: (exit code, error or None) when ``condition`` is met."""
        if condition in ("", None):
            condition = "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise SpecError(f"invalid condition: {condition!r}", where="condition")
        c = self.get(ref)
        if condition == "removed":
            fut = self._removed_future(c.id)
            return await asyncio.shield(fut)
        if condition == "not-running" and not c.state.running and not self._monitor_live(c):
            return c.state.exit_code, c.state.error or None
        fut = self._exit_future(c.id)
        return await asyncio.shield(fut)

    # -- remove / rename -------------------------------------------------------------

    async def remove(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        """Remove a container (``force`` kills a running one first)."""
        c = self.get(ref)
        if c.state.paused and not force:
            raise ContainerRunning(
                f'cannot remove container "/{c.name}": container is paused and must be '
                "unpaused first"
            )
        if c.state.running and not force:
            raise ContainerRunning(
                f'cannot remove container "/{c.name}": container is running: '
                "stop the container before removing or force remove"
            )
        if c.state.running or self._monitor_live(c):
            self._stopping.add(c.id)
            try:
                await self._stop_running(c, signal_mod.SIGKILL, 0)
            finally:
                self._stopping.discard(c.id)
        async with self._lock(c.id):
            try:
                c = self.get(c.id)
            except NoSuchContainer:
                return
            if c.state.running:
                raise ContainerRunning(
                    f'cannot remove container "/{c.name}": container is running: '
                    "stop the container before removing or force remove"
                )

            def removing(x: Container) -> None:
                x.state.status = "removing"

            self.store.update(c.id, removing)
            await asyncio.to_thread(self._forget_sync, c, volumes or c.auto_remove)
            self.emit(c, "destroy")
        # The files go after the waiters are told (Docker's "removed" means the record is
        # gone; a daemon killed meanwhile collects them in start_up, as half-made ones),
        # and after the monitor's end (it may still be deleting the runtime container).
        w = self._watches.get(c.id)
        gone = w.gone if w is not None and w.gone is not None and not w.gone.done() else None
        cleanup = asyncio.ensure_future(self._remove_files_after(c, gone))
        self._cleanups.add(cleanup)
        cleanup.add_done_callback(self._cleanup_done)
        self._locks.pop(c.id, None)
        self._fresh.discard(c.id)
        fut = self._removed_future(c.id)
        if not fut.done():
            fut.set_result((c.state.exit_code, c.state.error or None))
        self._removed_futures.pop(c.id, None)
        exit_fut = self._exit_futures.pop(c.id, None)
        if exit_fut is not None and not exit_fut.done():
            exit_fut.set_result((c.state.exit_code, c.state.error or None))
        log.info("removed container %s", c.id[:12])

    def _forget_sync(self, c: Container, remove_anonymous: bool) -> None:
        """The records: the container's row, its volume and image references."""
        if self.volumes is not None:
            self.volumes.release_container(c.id, remove_anonymous=remove_anonymous)
        with contextlib.suppress(BulkheadError):
            self.images.unregister_use(c.image, c.id)
        self.network.forget_container(c.id)
        self.store.remove(c.id)

    async def _remove_files_after(self, c: Container, gone: asyncio.Future[None] | None) -> None:
        if gone is not None:
            await asyncio.shield(gone)
        await asyncio.to_thread(self._remove_files, c)

    def _remove_files(self, c: Container) -> None:
        """The files of a forgotten container: rootfs mount, snapshot, runtime and monitor state."""
        paths = self.paths(c.id)
        self._release_network(c)
        bundle.unmount_rootfs(paths.rootfs)
        with contextlib.suppress(BulkheadError):
            self.snapshotter.remove(c.snapshot_key)
        self._delete_runtime_state(c.runtime, c.id)
        shutil.rmtree(self.state_dir(c.id), ignore_errors=True)
        bundle.remove_dir(paths)

    def _cleanup_done(self, task: asyncio.Future[None]) -> None:
        self._cleanups.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("removing a container's files failed", exc_info=task.exception())

    async def settle(self) -> None:
        """Wait until the files of removed containers are gone (tests, shut_down)."""
        while self._cleanups:
            await asyncio.gather(*list(self._cleanups), return_exceptions=True)

    async def prune(self, filters: dict[str, builtins.list[str]] | None = None) -> dict[str, Any]:
        """``POST /containers/prune``: remove every stopped container (filters ``until``,
        ``label``, ``label!``); Docker's ``{"ContainersDeleted", "SpaceReclaimed"}``."""
        filters = {k: list(v) for k, v in (filters or {}).items() if v}
        for key in filters:
            if key not in ("until", "label", "label!"):
                raise SpecError(f"invalid filter '{key}'")
        until = None
        if filters.get("until"):
            until = _parse_until(filters["until"][0])
        deleted: builtins.list[str] = []
        reclaimed = 0
        for c in self.store.list():
            if c.state.running or c.state.restarting or c.state.status in ("removing", "paused"):
                continue
            if until is not None and parse_rfc3339(c.created) >= until:
                continue
            labels = c.config.get("Labels") or {}
            if not all(_label_match(labels, v) for v in filters.get("label", [])):
                continue
            if any(_label_match(labels, v) for v in filters.get("label!", [])):
                continue
            rw, _ = self._sizes(c)
            try:
                await self.remove(c.id)
            except (NoSuchContainer, ContainerRunning):
                continue
            deleted.append(c.id)
            reclaimed += rw
        # Docker: one "prune" event for the whole run, with the bytes reclaimed.
        self.events.emit("container", "prune", "", {"reclaimed": str(reclaimed)})
        return {"ContainersDeleted": deleted or None, "SpaceReclaimed": reclaimed}

    def rename(self, ref: str, new_name: str) -> None:
        """Give a container a new name (409 when taken, 400 when invalid or unchanged)."""
        c = self.get(ref)
        renamed = self.store.rename(c.id, new_name)
        self.emit(renamed, "rename", oldName="/" + c.name)

    def _delete_runtime_state(self, runtime_name: str, container_id: str) -> None:
        """Delete what the OCI runtime still knows of ``container_id`` (fine when nothing)."""
        root = self.runtime_root(runtime_name)
        if not (root / container_id).exists():
            return
        try:
            _, runtime = self.runtimes.resolve(runtime_name)
        except SpecError:
            return
        if runtime == BUILTIN:
            from bulkhead.runtime.container import Runtime

            with contextlib.suppress(Exception):
                Runtime(str(root)).delete(container_id, force=True)
        else:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(
                    [runtime, "--root", str(root), "delete", "--force", container_id],
                    capture_output=True,
                    timeout=30,
                    check=False,
                )

    # -- views -------------------------------------------------------------------------

    def inspect(self, ref: str, size: bool = False) -> dict[str, Any]:
        """Docker's ``ContainerInspectResponse`` of one container."""
        c = self.get(ref)
        s = c.state
        paths = self.paths(c.id)
        out: dict[str, Any] = {
            "Id": c.id,
            "Created": c.created,
            "Path": c.path,
            "Args": list(c.args),
            "State": {
                "Status": s.status,
                "Running": s.running,
                "Paused": s.paused,
                "Restarting": s.restarting,
                "OOMKilled": s.oom_killed,
                "Dead": s.dead,
                "Pid": s.pid if s.running else 0,
                "ExitCode": s.exit_code,
                "Error": s.error,
                "StartedAt": s.started_at,
                "FinishedAt": s.finished_at,
                **({"Health": health.render(s.health)} if s.health is not None else {}),
            },
            "Image": c.image,
            "ResolvConfPath": c.resolv_conf_path,
            "HostnamePath": c.hostname_path,
            "HostsPath": c.hosts_path,
            "LogPath": c.log_path,
            "Name": "/" + c.name,
            "RestartCount": c.restart_count,
            "Driver": c.driver,
            "Platform": c.platform,
            "MountLabel": "",
            "ProcessLabel": "",
            "AppArmorProfile": "",
            "ExecIDs": (self.exec_ids(c.id) or None) if self.exec_ids is not None else None,
            "HostConfig": c.host_config,
            "GraphDriver": {
                "Name": c.driver,
                "Data": {"MergedDir": str(paths.rootfs)},
            },
            "Mounts": list(c.mount_points),
            "Config": c.config,
            "NetworkSettings": self._network_settings(c),
        }
        if size:
            rw, rootfs = self._sizes(c)
            out["SizeRw"] = rw
            out["SizeRootFs"] = rootfs
        return out

    def _network_settings(self, c: Container) -> dict[str, Any]:
        mode = str(c.host_config.get("NetworkMode") or "none")
        networks = self.network.settings(c.id, c.name, str(c.config.get("Hostname") or ""))
        if networks:
            top = networks.get("bridge") or {}
            live = c.state.running and self.network.is_live(c.id)
            return {
                "Bridge": "",
                "SandboxID": c.id if live else "",
                "SandboxKey": str(self.network.ns_path(c.id)) if live else "",
                "HairpinMode": False,
                "LinkLocalIPv6Address": "",
                "LinkLocalIPv6PrefixLen": 0,
                "Ports": self.network.nat.settings_ports(c.id) if live else {},
                "SecondaryIPAddresses": None,
                "SecondaryIPv6Addresses": None,
                "EndpointID": top.get("EndpointID", ""),
                "Gateway": top.get("Gateway", ""),
                "GlobalIPv6Address": top.get("GlobalIPv6Address", ""),
                "GlobalIPv6PrefixLen": top.get("GlobalIPv6PrefixLen", 0),
                "IPAddress": top.get("IPAddress", ""),
                "IPPrefixLen": top.get("IPPrefixLen", 0),
                "IPv6Gateway": top.get("IPv6Gateway", ""),
                "MacAddress": top.get("MacAddress", ""),
                "Networks": networks,
            }
        from bulkhead.network.manager import empty_endpoint_doc

        endpoint = empty_endpoint_doc()
        if mode in ("none", "host"):
            predefined = self.network.find(mode)
            endpoint["NetworkID"] = predefined.id if predefined is not None else ""
        return {
            "Bridge": "",
            "SandboxID": "",
            "SandboxKey": "",
            "HairpinMode": False,
            "LinkLocalIPv6Address": "",
            "LinkLocalIPv6PrefixLen": 0,
            "Ports": {},
            "SecondaryIPAddresses": None,
            "SecondaryIPv6Addresses": None,
            "EndpointID": "",
            "Gateway": "",
            "GlobalIPv6Address": "",
            "GlobalIPv6PrefixLen": 0,
            "IPAddress": "",
            "IPPrefixLen": 0,
            "IPv6Gateway": "",
            "MacAddress": "",
            # none/host/container:X show their mode; a bridge network's container
            # disconnected from everything shows no network, as Docker
            "Networks": {mode: endpoint}
            if mode in ("none", "host", "default") or mode.startswith("container:")
            else {},
        }

    def _sizes(self, c: Container) -> tuple[int, int]:
        rw = 0
        with contextlib.suppress(Exception):
            rw = int(self.snapshotter.usage(c.snapshot_key).size)
        image_size = 0
        with contextlib.suppress(Exception):
            image_size = int(self.images.get(c.image).size)
        return rw, rw + image_size

    def port(self, ref: str) -> dict[str, Any]:
        """Published ports of a running container: ``{"80/tcp": [{"HostIp", "HostPort"}]}``."""
        c = self.get(ref)
        if not c.state.running:
            return {}
        return {k: v for k, v in self.network.nat.settings_ports(c.id).items() if v}

    def list(
        self,
        all: bool = False,
        limit: int = -1,
        size: bool = False,
        filters: dict[str, builtins.list[str]] | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Docker's ``GET /containers/json``: ContainerSummary entries, newest first."""
        containers = self.store.list()
        rank = {c.id: i for i, c in enumerate(containers)}
        filters = {k: list(v) for k, v in (filters or {}).items() if v}
        _check_filters(filters)
        # Docker: without -a only running ones, unless -n or a status/exited filter asks
        if not all and limit <= 0 and "status" not in filters and "exited" not in filters:
            containers = [c for c in containers if c.state.running]
        containers = [c for c in containers if self._matches(c, filters, rank)]
        if limit > 0:
            containers = containers[:limit]
        return [self._summary(c, size) for c in containers]

    def _matches(
        self, c: Container, filters: dict[str, builtins.list[str]], rank: dict[str, int]
    ) -> bool:
        """Does ``c`` pass every filter? ``rank``: position in creation order, newest 0."""
        for key, values in filters.items():
            if key == "id":
                if not any(c.id.startswith(v) for v in values):
                    return False
            elif key == "name":
                import re

                if not any(re.search(v.lstrip("/"), c.name) for v in values):
                    return False
            elif key == "label":
                labels = c.config.get("Labels") or {}
                for v in values:
                    k, eq, want = v.partition("=")
                    if k not in labels or (eq and labels[k] != want):
                        return False
            elif key == "status":
                for v in values:
                    if v not in (
                        "created",
                        "restarting",
                        "running",
                        "removing",
                        "paused",
                        "exited",
                        "dead",
                    ):
                        raise SpecError(f"invalid filter 'status={v}'")
                if c.state.status not in values:
                    return False
            elif key == "exited":
                if c.state.status != "exited":
                    return False
                try:
                    codes = {int(v) for v in values}
                except ValueError:
                    raise SpecError(f"invalid filter 'exited={values}'") from None
                if c.state.exit_code not in codes:
                    return False
            elif key == "ancestor":
                if not any(self._has_ancestor(c, v) for v in values):
                    return False
            elif key in ("before", "since"):
                for v in values:
                    other = self.get(v)
                    if other.id not in rank:
                        return False
                    if key == "before" and not rank[c.id] > rank[other.id]:
                        return False
                    if key == "since" and not rank[c.id] < rank[other.id]:
                        return False
            elif key == "volume":
                # Docker's keys: the volume name (or a bind's source) and the destination
                names = {m.get("Name") or m.get("Source") for m in c.mount_points} | {
                    m.get("Destination") for m in c.mount_points
                }
                if not any(v in names for v in values):
                    return False
            elif key == "health":
                if health.filter_status(c) not in values:
                    return False
            elif key == "network":
                # Docker's keys: a connected network's name or id (or the mode: none, host)
                keys = {str(c.host_config.get("NetworkMode") or "none")}
                for ep in self.network.endpoints(c.id):
                    net = self.network.store.find(ep.network_id)
                    if net is not None:
                        keys |= {net.name, net.id}
                if not any(v in keys for v in values):
                    return False
            elif key in ("publish", "expose"):
                # Docker's: a published (host) port or an exposed (container) port of the
                # running container's Ports, ``80``, ``8080/udp``, ``8000-8010/tcp``
                ports = self.network.nat.summary_ports(c.id) if c.state.running else []
                if key == "publish":
                    have = {f"{p['PublicPort']}/{p['Type']}" for p in ports if p.get("PublicPort")}
                else:
                    have = {f"{p['PrivatePort']}/{p['Type']}" for p in ports}
                if not have & _port_filter(key, values):
                    return False
            elif key in ("isolation", "is-task"):
                pass
            else:
                raise SpecError(f"invalid filter '{key}'")
        return True

    def _has_ancestor(self, c: Container, ref: str) -> bool:
        if ref in (c.image, c.image_ref) or c.image.removeprefix("sha256:").startswith(
            ref.removeprefix("sha256:")
        ):
            return True
        try:
            return self.images.get(ref).id == c.image
        except BulkheadError:
            return False

    def _summary(self, c: Container, size: bool) -> dict[str, Any]:
        cmd = " ".join([c.path, *c.args]).strip()
        if c.host_config.get("Init"):
            cmd = " ".join(["/sbin/docker-init", "--", cmd])
        mode = str(c.host_config.get("NetworkMode") or "none")
        out: dict[str, Any] = {
            "Id": c.id,
            "Names": ["/" + c.name],
            "Image": c.image_ref or c.image,
            "ImageID": c.image,
            "Command": cmd,
            "Created": int(parse_rfc3339(c.created)),
            "Ports": self.network.nat.summary_ports(c.id) if c.state.running else [],
            "Labels": c.config.get("Labels") or {},
            "State": c.state.status,
            "Status": self._status_text(c),
            "HostConfig": {"NetworkMode": mode},
            "NetworkSettings": {"Networks": self._network_settings(c)["Networks"]},
            "Mounts": list(c.mount_points),
            "Health": health.summary(c),
        }
        if size:
            rw, rootfs = self._sizes(c)
            out["SizeRw"] = rw
            out["SizeRootFs"] = rootfs
        return out

    @staticmethod
    def _status_text(c: Container) -> str:
        """``docker ps``'s STATUS column: ``Up 2 minutes``, ``Exited (0) 3 seconds ago``."""
        s = c.state
        now = time.time()
        if s.running:
            text = "Up " + human_duration(now - parse_rfc3339(s.started_at))
            return text + " (Paused)" if s.paused else text + health.status_suffix(c)
        if s.restarting:
            ago = human_duration(now - parse_rfc3339(s.finished_at))
            return f"Restarting ({s.exit_code}) {ago} ago"
        if s.status == "removing":
            return "Removal In Progress"
        if s.status == "dead":
            return "Dead"
        if s.status == "created" or s.finished_at == ZERO_TIME:
            return "Created"
        return f"Exited ({s.exit_code}) {human_duration(now - parse_rfc3339(s.finished_at))} ago"

    # -- recovery --------------------------------------------------------------------------

    async def start_up(self) -> None:
        """After a daemon (re)start: adopt live monitors, record missed exits, collect leftovers."""
        self.config.exec_root.mkdir(parents=True, exist_ok=True)
        self.names.attach()  # before the networks come up: their resolvers listen
        if not self.config.userland_proxy:
            self.network.nat.disable_userland_proxy()
        self.network.nat.attach()  # the userland proxy: before the ports are restored
        await asyncio.to_thread(self.network.start_up)
        await asyncio.to_thread(self.names.restore)  # the names of containers still running
        await asyncio.to_thread(self._collect_half_made)
        for c in self.store.list():
            if c.state.status == "removing":
                with contextlib.suppress(Exception):
                    await self.remove(c.id, force=True)
                continue
            client = self._monitor_client(c.id)
            info = client.info()
            if info is not None and client.alive():
                # Also one that recorded the exit and is finishing (the runtime's delete):
                # its exit is taken when it ends (or, AutoRemove, at once), so that neither
                # a restart nor the removal of the files races that delete.
                await self._adopt(c, client, info.monitor_pid, info.init_pid)
                continue
            if c.state.monitor_pid or c.state.running:
                await self._on_monitor_exit(c.id, c.state.monitor_pid)
            elif c.auto_remove and c.state.status == "exited":
                with contextlib.suppress(NoSuchContainer):
                    await self.remove(c.id, force=True, volumes=True)
            else:
                await asyncio.to_thread(self._after_exit, c)
        for c in self.store.list():  # Docker restarts these when the daemon starts
            if c.state.running or c.id in self._restart_gen:
                continue
            if c.state.restarting:
                # the previous daemon died during its back-off (the restart is counted): now
                self._schedule_restart(c.id, 0.0)
            elif self._restart_wanted(c, on_daemon_start=True):
                self._store_restarting(c.id)  # the daemon's start, not a restart: not counted
                self._schedule_restart(c.id, 0.0)
        # a cold zygote takes ~0.2 s (imports, the default seccomp compile): start it now,
        # so that the first run after the daemon starts does not wait for it
        self._spawn_task(self._warm_zygote())

    async def _warm_zygote(self) -> None:
        try:
            await self._zygote_client().ensure_running()
            self._zygote_ok = True
        except (BulkheadError, OSError) as exc:  # the first spawn will try again and report
            log.warning("the monitor zygote did not start: %s", exc)

    async def _adopt(
        self, c: Container, client: MonitorClient, monitor_pid: int, init_pid: int
    ) -> None:
        """Watch a monitor that outlived the previous daemon; trust its own word on ``started``."""
        started = c.state.running
        if client.exit_status() is None:
            with contextlib.suppress(BulkheadError, OSError, ValueError):
                started = bool((await client.ping()).get("started"))
        # a paused container stays paused; the runtime's word wins over the record
        # (the daemon may have died between the freeze and its record)
        frozen = await asyncio.to_thread(self._runtime_paused, c) if started else None

        def adopt(x: Container) -> None:
            x.state.monitor_pid = monitor_pid
            if started and not x.state.running:  # the daemon died between start and record
                x.state.status = "running"
                x.state.running = True
                x.state.pid = init_pid
                if x.state.started_at == ZERO_TIME or x.state.restarting:
                    x.state.started_at = now_rfc3339()
                x.state.restarting = False
                x.state.finished_at = ZERO_TIME
            if frozen is True:
                _mark_paused(x)
            elif frozen is False:
                _mark_unpaused(x)

        self.store.update(c.id, adopt)
        self._watch(c.id, monitor_pid, c.auto_remove)
        self.health.resume(c.id)

    # -- restart policies ----------------------------------------------------------

    def _restart_wanted(self, c: Container, *, on_daemon_start: bool = False) -> bool:
        """Docker's restart policies: ``no``, ``always``, ``unless-stopped``, ``on-failure[:N]``."""
        if c.auto_remove or c.state.status in ("removing", "dead", "created"):
            return False
        policy = c.host_config.get("RestartPolicy") or {}
        name = str(policy.get("Name") or "no")
        if name == "always":
            return not c.manually_stopped or on_daemon_start
        if name == "unless-stopped":
            return not c.manually_stopped
        if name == "on-failure" and not on_daemon_start:
            limit = int(policy.get("MaximumRetryCount") or 0)
            return c.state.exit_code != 0 and (limit == 0 or c.restart_count < limit)
        return False

    def _next_backoff(self, container_id: str, ran: float) -> float:
        """The wait before the next restart: moby's restartmanager, exactly.

        100 ms, doubled at each restart up to 1 minute; back to 100 ms after a
        run of 10 s or more. Kept in memory, per container, as moby does (a
        daemon restart or a start by the user begins again at 100 ms).
        """
        timeout = 0.0 if ran >= 10 else self._backoff.get(container_id, 0.0)
        timeout = 0.1 if timeout == 0 else min(timeout * 2, 60.0)
        self._backoff[container_id] = timeout
        return timeout

    def _store_restarting(self, container_id: str) -> None:
        def restarting(x: Container) -> None:
            x.state.status = "restarting"
            x.state.restarting = True

        with contextlib.suppress(NoSuchContainer):
            self.store.update(container_id, restarting)

    def _schedule_restart(self, container_id: str, delay: float) -> None:
        """Start a ``restarting`` container after ``delay``; voids any restart pending before."""
        gen = self._restart_gen.get(container_id, 0) + 1
        self._restart_gen[container_id] = gen
        self._spawn_task(self._restart_later(container_id, delay, gen))

    async def _restart_later(self, container_id: str, delay: float, gen: int) -> None:
        """The pending restart ``gen``: unless stopped, removed or superseded meanwhile."""
        try:
            await asyncio.sleep(delay)
            c = self.get(container_id)
            if not c.state.restarting or self._restart_gen.get(container_id) != gen:
                return
            await self.start(container_id, policy=True)
        except NoSuchContainer:
            self._backoff.pop(container_id, None)
            return
        except BulkheadError as exc:
            log.warning("restarting %s failed: %s", container_id[:12], exc)

            def failed(x: Container) -> None:
                x.state.status = "exited"
                x.state.restarting = False

            with contextlib.suppress(NoSuchContainer):
                self.store.update(container_id, failed)
        finally:
            if self._restart_gen.get(container_id) == gen:
                del self._restart_gen[container_id]

    def _collect_half_made(self) -> None:
        """What a daemon killed during create (or remove) left: dirs, snapshots, refs, state."""
        known = self.store.ids()
        root = self.config.containers_root
        for entry in sorted(os.listdir(root)) if root.is_dir() else []:
            if len(entry) == 64 and entry not in known:
                log.info("removing the half-made container directory %s", entry[:12])
                with contextlib.suppress(Exception):
                    bundle.remove_dir(self.paths(entry))
        with contextlib.suppress(Exception):
            for info in list(self.snapshotter.walk()):
                name = str(info.name)
                kind = str(getattr(info.kind, "value", info.kind))
                half_unpacked = name.startswith("extract-") and kind == "active"
                if (name.startswith("container-") and name[10:] not in known) or half_unpacked:
                    with contextlib.suppress(Exception):
                        self.snapshotter.remove(name)
        if self.volumes is not None:
            with contextlib.suppress(Exception):
                self.volumes.reconcile(known)
        try:  # endpoints (addresses) and namespaces of containers that were never recorded
            self.network.collect(known)
        except Exception:
            log.exception("collecting the endpoints of half-made containers failed")
        with contextlib.suppress(Exception):
            for image in self.images.list():
                for user in self.images.users(image):
                    if len(user) == 64 and user not in known:
                        self.images.unregister_use(image, user)
        # blobs and unpacked layers no image needs (a daemon killed between an image's
        # removal and its garbage collection, or during a pull)
        try:
            freed = self.images.collect(self.snapshotter)
        except Exception:
            log.exception("collecting unused image blobs and layers failed")
        else:
            if freed:
                log.info("collected %d bytes of image data no image needs", freed)
        exec_root = self.config.exec_root
        for entry in sorted(os.listdir(exec_root)) if exec_root.is_dir() else []:
            if len(entry) == 64 and entry not in known:
                self._kill_stray_monitor(entry)
                shutil.rmtree(exec_root / entry, ignore_errors=True)
        runtime_root = self.config.runtime_root
        if runtime_root.is_dir():
            for rt in sorted(os.listdir(runtime_root)):
                for entry in sorted(os.listdir(runtime_root / rt)):
                    if len(entry) == 64 and entry not in known:
                        self._delete_runtime_state(rt, entry)

    def _kill_stray_monitor(self, container_id: str) -> None:
        client = self._monitor_client(container_id)
        try:
            alive = bool(client.alive())
        except Exception:
            alive = False
        if not alive:
            return
        try:
            info = json.loads((self.state_dir(container_id) / "monitor.json").read_text())
            fd = os.pidfd_open(int(info["monitor_pid"]))
        except (OSError, ValueError, KeyError):
            return
        try:
            if client.exit_status() is not None:
                # It recorded the exit and is finishing (an AutoRemove container removed
                # meanwhile): it deletes the runtime container; let it, rather than race it.
                select.select([fd], [], [], STRAY_FINISH_WAIT)
            signal_mod.pidfd_send_signal(fd, signal_mod.SIGKILL)
        except OSError:
            pass
        finally:
            os.close(fd)

    async def shut_down(self) -> None:
        """Stop watching; containers and their monitors keep running (live restore)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.settle(), 30)
        for cleanup in list(self._cleanups):  # still waiting for a monitor: start_up collects
            cleanup.cancel()
        for w in list(self._watches.values()):
            self._unwatch_fd(w)
        self._watches.clear()
        self._exit_files.close()
        self.health.close()
        self.names.close()
        for task in list(self._tasks):
            task.cancel()
        for fut in [*self._exit_futures.values(), *self._removed_futures.values()]:
            if not fut.done():
                fut.cancel()
        await asyncio.to_thread(self._remove_cgroup_parent)
        await asyncio.to_thread(self.network.nat.shut_down)
        await asyncio.to_thread(self.network.shut_down)

    def _remove_cgroup_parent(self) -> None:
        """Remove the containers' cgroup parent (``/bulkhead``...) in every hierarchy, if empty.

        Only the part at and below a top-level ``bulkhead`` is ours to remove
        (a configured parent such as ``/system.slice`` is not); a parent that
        still holds a container (live restore) stays. Another daemon creating
        a container there meanwhile is fine: the cgroup layer re-creates a
        parent that vanished under it (:func:`bulkhead.cgroups.fs.makedirs`).
        """
        from bulkhead.cgroups import new_manager

        parts = [p for p in self.config.cgroup_parent.split("/") if p]
        if not parts or parts[0] != "bulkhead":
            return
        while parts:
            try:
                dirs = new_manager("/" + "/".join(parts)).paths().values()
            except BulkheadError:
                return
            for path in dirs:
                with contextlib.suppress(OSError):
                    os.rmdir(path)
            parts.pop()

    # -- the container's files (cp, export, diff, commit) -------------------------------------

    @contextlib.contextmanager
    def rootfs_mounted(self, ref: str) -> Iterator[str]:
        """The container's root filesystem mounted for a ``with`` block (sync: call in a thread).

        A running container's root is already mounted and stays so; a stopped
        one's is mounted for the block and unmounted after it.
        """
        c = self.get(ref)
        paths = self.paths(c.id)
        was = bundle.is_mounted(paths.rootfs)
        if not was:
            bundle.mount_rootfs(self.snapshotter, c.snapshot_key, paths.rootfs)
        try:
            yield str(paths.rootfs)
        finally:
            if not was and not self.get(c.id).state.running:
                bundle.unmount_rootfs(paths.rootfs)

    # cp, diff, export, commit: the rootfs mounted for the time of the call
    async def changes(self, ref: str) -> builtins.list[dict[str, Any]]:
        """``docker diff``: ``[{"Path": "/x", "Kind": 0|1|2}]`` (modified, added, deleted)."""
        from bulkhead.engine import filesystem

        c = self.get(ref)
        return await asyncio.to_thread(filesystem.changes, self.snapshotter, c.snapshot_key)

    async def export(self, ref: str) -> AsyncIterator[bytes]:
        """``docker export``: the container's filesystem as a tar, in chunks."""
        from bulkhead.images.archive import export_filesystem

        c = self.get(ref)

        def write(out: BinaryIO) -> None:
            with self.rootfs_mounted(c.id) as rootfs:
                export_filesystem(rootfs, out)

        chunks = await self._spooled(write)
        self.emit(c, "export")
        return chunks

    async def archive_stat(self, ref: str, path: str) -> dict[str, Any]:
        """``HEAD /containers/{id}/archive``: Docker's ContainerPathStat (404 when missing)."""
        from bulkhead.engine import chrooted

        c = self.get(ref)

        def stat_it() -> dict[str, Any]:
            with self._cp_view(c) as view:
                return chrooted.run("stat", view, path, c.id)

        return await asyncio.to_thread(stat_it)

    async def archive_get(self, ref: str, path: str) -> tuple[dict[str, Any], AsyncIterator[bytes]]:
        """``GET /containers/{id}/archive``: (path stat, the tar of ``path`` in chunks)."""
        from bulkhead.engine import chrooted

        c = self.get(ref)
        found: dict[str, Any] = {}

        def write(out: BinaryIO) -> None:
            with self._cp_view(c) as view:
                found.update(chrooted.run("get", view, path, c.id, stdout=out))

        chunks = await self._spooled(write)
        self.emit(c, "archive-path")
        return found, chunks

    async def archive_put(
        self,
        ref: str,
        path: str,
        body: AsyncIterator[bytes] | bytes,
        *,
        no_overwrite_dir_non_dir: bool = False,
        copy_uid_gid: bool = False,
    ) -> None:
        """``PUT /containers/{id}/archive``: unpack a tar into directory ``path``.

        The file work of the three archive endpoints is done chrooted into the
        container's view (:mod:`bulkhead.engine.chrooted`): a running container
        cannot turn a path into a way out between its resolution and its use.
        """
        from bulkhead.engine import chrooted

        c = self.get(ref)
        if c.host_config.get("ReadonlyRootfs"):
            raise SpecError("container rootfs is marked read-only")
        with tempfile.TemporaryFile() as tmp:
            if isinstance(body, bytes | bytearray):
                tmp.write(body)
            else:
                async for chunk in body:
                    await asyncio.to_thread(tmp.write, chunk)
            tmp.seek(0)

            def unpack() -> None:
                with self._cp_view(c) as view:
                    chrooted.run(
                        "put",
                        view,
                        path,
                        c.id,
                        stdin=tmp,
                        no_overwrite_dir_non_dir=no_overwrite_dir_non_dir,
                    )

            await asyncio.to_thread(unpack)
        self.emit(c, "extract-to-dir")

    async def commit(
        self,
        ref: str,
        repo: str | None = None,
        tag: str | None = None,
        comment: str = "",
        author: str = "",
        changes: builtins.list[str] | None = None,
        pause: bool = True,
        config: dict[str, Any] | None = None,
    ) -> str:
        """``docker commit``: a new image of the container's changes; returns its id.

        ``pause`` (Docker's default): a running container is frozen while its
        writable layer is read, so that the image is one moment of it (no
        file half-written), and thawed after, whether the commit worked or
        not (with ``pause``/``unpause`` events, as moby's). A container
        already paused stays paused; ``pause=False`` reads it as it runs.
        """
        c = self.get(ref)
        froze = False
        if pause and c.state.running and not c.state.paused:
            try:
                await self.pause(c.id)
                froze = True
            except BulkheadError as exc:  # moby commits anyway
                log.warning("commit of %s: cannot pause it: %s", c.id[:12], exc)
        try:
            return await self._commit(c, repo, tag, comment, author, changes, config)
        finally:
            if froze:
                try:
                    await self.unpause(c.id)
                except (ContainerNotRunning, NoSuchContainer, WrongState):
                    pass  # it exited, or someone unpaused it meanwhile
                except BulkheadError as exc:
                    log.error("commit of %s: cannot unpause it: %s", c.id[:12], exc)

    async def _commit(
        self,
        c: Container,
        repo: str | None,
        tag: str | None,
        comment: str,
        author: str,
        changes: builtins.list[str] | None,
        config: dict[str, Any] | None,
    ) -> str:
        from bulkhead.engine import filesystem

        created_by = " ".join([c.path, *c.args]).strip()
        image_id: str = await asyncio.to_thread(
            filesystem.commit_image,
            self.images,
            self.snapshotter,
            key=c.snapshot_key,
            image_id=c.image,
            container_config=c.config,
            container_id=c.id,
            created_by=created_by,
            repo=repo or None,
            tag=tag or None,
            comment=comment,
            author=author,
            changes_=changes or (),
            config_override=config,
        )
        image_ref = ""
        if repo:
            from bulkhead.images.reference import parse_reference

            image_ref = parse_reference(f"{repo}:{tag}" if tag else repo).familiar()
            attributes: dict[str, str] = {}
            with contextlib.suppress(BulkheadError):
                config = self.images.get(image_id).config.get("config") or {}
                attributes.update({str(k): str(v) for k, v in (config.get("Labels") or {}).items()})
            attributes["name"] = image_ref
            self.events.emit("image", "tag", image_id, attributes)
        self.emit(c, "commit", comment=comment, imageID=image_id, imageRef=image_ref)
        return image_id

    @contextlib.contextmanager
    def _cp_view(self, c: Container) -> Iterator[str]:
        """The rootfs with the container's volumes and binds in it (``docker cp`` sees them)."""
        from bulkhead.engine.mounts import rootfs_with_volumes

        with (
            self.rootfs_mounted(c.id) as rootfs,
            rootfs_with_volumes(rootfs, list(c.mount_points)) as view,
        ):
            yield view

    async def _spooled(self, write: Callable[[BinaryIO], None]) -> AsyncIterator[bytes]:
        """Run ``write(file)`` in a thread into a temporary file; return its chunks (async)."""
        tmp = tempfile.TemporaryFile()  # noqa: SIM115 - closed by the iterator
        try:
            await asyncio.to_thread(write, tmp)
            tmp.seek(0)
        except BaseException:
            tmp.close()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    data = await asyncio.to_thread(tmp.read, 1 << 20)
                    if not data:
                        return
                    yield data
            finally:
                tmp.close()

        return chunks()


def _bridge_mode(mode: str) -> bool:
    """A ``NetworkMode`` naming a bridge network (create maps the host and null drivers'
    networks to ``host`` and ``none``)."""
    return mode not in ("none", "host", "default", "") and not mode.startswith("container:")


def _removal_message(container_id: str) -> str:
    return (
        f"Container {container_id} is marked for removal and cannot be connected or "
        "disconnected to the network"
    )


def _mark_paused(x: Container) -> None:
    x.state.paused = True
    x.state.status = "paused"


def _mark_unpaused(x: Container) -> None:
    x.state.paused = False
    if x.state.running:
        x.state.status = "running"


def _runtime_words(text: str) -> str:
    """runc's ``time="..." level=error msg="..."`` line: just the message."""
    import re

    m = re.search(r'msg="((?:[^"\\]|\\.)*)"', text)
    return m.group(1).replace('\\"', '"') if m else text


class RuntimeRefused(ContainerError):
    """The OCI runtime refused ``pause``/``resume``/``update``; ``reason`` is its word."""

    def __init__(self, container_id: str, verb: str, reason: str) -> None:
        super().__init__(f"cannot {verb} container {container_id}: {reason}")
        self.reason = reason


#: How runtimes say that a memory limit is below what the container uses (EBUSY).
_BUSY_WORDS = ("device or resource busy", "the cgroup uses more", "current usage")


def _update_error(container_id: str, exc: RuntimeRefused) -> BulkheadError:
    """A refused cgroup write: 409 when the kernel said busy (usage above the new limit),
    else 400 (a value this host cannot take: CPUs it lacks, a controller it has not)."""
    from bulkhead.engine.update import UpdateConflict

    text = exc.reason
    busy = any(w in text.lower() for w in _BUSY_WORDS)
    cause: BaseException | None = exc
    while cause is not None and not busy:
        busy = isinstance(cause, OSError) and cause.errno == errno.EBUSY
        cause = cause.__cause__
    message = f"Cannot update container {container_id}: {text}"
    if busy:
        return UpdateConflict(message)
    return SpecError(message)


def _port_filter(key: str, values: builtins.list[str]) -> set[str]:
    """moby's ``portOp``: ``80``, ``80/udp``, ``8000-8010/tcp`` → port keys."""
    out: set[str] = set()
    for value in values:
        if ":" in value:
            raise SpecError(f"filter for '{key}' should not contain ':': {value}")
        port, _, proto = value.partition("/")
        lo, sep, hi = port.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()) or int(hi or lo) < int(lo):
            raise SpecError(f"error while looking up for {key} {value}: invalid port {port!r}")
        out |= {f"{p}/{proto or 'tcp'}" for p in range(int(lo), int(hi or lo) + 1)}
    return out


_LIST_FILTERS = frozenset(
    {"id", "name", "label", "status", "exited", "ancestor", "before", "since", "volume",
     "network", "publish", "expose", "health", "isolation", "is-task"}
)  # fmt: skip


def _check_platform(image: Image, ref: str, wanted: str) -> None:
    """``--platform``: the local image must be for that platform (Docker's 404 otherwise,
    after which the CLI pulls the right one)."""
    from bulkhead.errors import ImageNotFound
    from bulkhead.oci.image_spec import Platform, parse_platform, platform_matches

    try:
        want = parse_platform(wanted)
    except ValueError as exc:
        raise SpecError(str(exc), where="platform") from None
    cfg = image.config
    have = Platform(
        architecture=str(cfg.get("architecture") or ""),
        os=str(cfg.get("os") or ""),
        variant=cfg.get("variant") or None,
    )
    if not platform_matches(want, have):
        raise ImageNotFound(
            f"image with reference {ref} was found but does not provide the specified "
            f"platform ({wanted})"
        )


def _has_cap_sys_resource() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> 24 & 1)
    except (OSError, ValueError):
        pass
    return False


def _check_ulimits(opts: RunOptions) -> None:
    """``--ulimit`` above the host's hard limit cannot be set without CAP_SYS_RESOURCE:
    say so at create, naming the option (the runtime would only say EPERM at start)."""
    import resource

    if not opts.ulimits or _has_cap_sys_resource():
        return
    for ul in opts.ulimits:
        res = getattr(resource, "RLIMIT_" + ul.name.upper(), None)
        if res is None:
            continue
        host_hard = resource.getrlimit(res)[1]
        if host_hard == resource.RLIM_INFINITY:
            continue
        for value in (ul.soft, ul.hard):
            if value == -1 or value > host_hard:
                shown = "unlimited" if value == -1 else str(value)
                raise SpecError(
                    f"invalid --ulimit {ul.name}={_limit_text(ul.soft)}:{_limit_text(ul.hard)}: "
                    f"{shown} is above the host's hard limit {host_hard} "
                    "(raising it needs CAP_SYS_RESOURCE)",
                    where="HostConfig.Ulimits",
                )


def _limit_text(value: int) -> str:
    return "-1" if value == -1 else str(value)


def _label_match(labels: dict[str, str], want: str) -> bool:
    key, eq, value = want.partition("=")
    return key in labels and (not eq or labels[key] == value)


def _parse_until(value: str) -> float:
    """Docker's ``until``: a Unix timestamp, an RFC 3339 time or a duration (``10m``, ``1h30m``)."""
    import re

    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    m = re.fullmatch(r"((\d+(\.\d+)?)(h|m|s|ms))+", text)
    if m:
        total = 0.0
        for num, _, unit in re.findall(r"(\d+(\.\d+)?)(h|m|s|ms)", text):
            total += float(num) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
        return time.time() - total
    try:
        return parse_rfc3339(text)
    except ValueError:
        pass
    try:  # Docker's shorter forms (2006-01-02, 2006-01-02T15:04:05): the daemon's local time
        import datetime

        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SpecError(f"invalid filter 'until={value}'") from None


def _check_filters(filters: dict[str, list[str]]) -> None:
    """Docker's 400s for ``GET /containers/json`` filters, before any container is looked at."""
    for key, values in filters.items():
        if key not in _LIST_FILTERS:
            raise SpecError(f"invalid filter '{key}'")
        if key == "status":
            for v in values:
                if v not in STATUSES:
                    raise SpecError(f"invalid filter 'status={v}'")
        if key == "exited":
            for v in values:
                if not v.lstrip("-").isdigit():
                    raise SpecError(f"invalid filter 'exited={v}'")
        if key == "health":
            for v in values:
                if v not in health.FILTER_VALUES:
                    raise SpecError(f"Unrecognised filter value for health: {v}")
