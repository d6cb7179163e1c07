"""What the runtime remembers about a container between its invocations.

Every verb of ``bulkhead-runtime`` is a fresh process, so a container's
facts live on disk under the runtime's root directory (``--root``, default
``/run/bulkhead-runtime``), one directory per container::

    <root>/<id>/state.json    the facts below, replaced atomically
    <root>/<id>/config.json   the bundle's configuration as it was at create
    <root>/<id>/exec.fifo     exists while the container is *created*: its init
                              waits on it until ``start`` writes one byte

The container's *status* is never stored: it is worked out from those facts
and the kernel each time it is asked (see :func:`status`), so it is right even
after the process that created the container is gone:

``creating``  state.json says so and the creating runtime process is alive
``created``   init is alive and exec.fifo still exists
``running``   init is alive and has been released
``paused``    running, and its cgroup is frozen
``stopped``   init is gone (or the creating process died half-way)
"""

from __future__ import annotations

import os
import time

import msgspec

from bulkhead.errors import ContainerExists, ContainerNotFound, InvalidContainerId
from bulkhead.oci.state import rfc3339_nano

DEFAULT_ROOT = "/run/bulkhead-runtime"

# runc's rule: ^[\w+-\.]+$ (the class holds the range '+'..'.', i.e. + , - .)
_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_+,-.")
_ID_MAX = 1024


class ContainerState(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The persisted facts of one container (``state.json``)."""

    id: str
    bundle: str
    rootfs: str
    created: str
    #: host pid of the container's init; 0 while still being created
    pid: int = 0
    #: start time of that pid (field 22 of /proc/<pid>/stat), to detect pid reuse
    pid_start: int = 0
    #: pid and start time of the runtime process creating the container
    creator_pid: int = 0
    creator_start: int = 0
    #: the cgroup path (relative to each hierarchy's root) the container lives in
    cgroup_path: str = ""
    owner: str = ""
    annotations: dict[str, str] = {}
    #: namespace paths of the container (type -> /proc/<pid>/ns/<x> or a joined path)
    namespaces: dict[str, str] = {}
    #: set by ``run``/``create`` with --no-new-keyring etc.: how to treat exec
    rootless: bool = False


def validate_id(container_id: str) -> None:
    """Raise :class:`InvalidContainerId` unless ``container_id`` is one runc would accept."""
    if (
        not container_id
        or len(container_id) > _ID_MAX
        or container_id in (".", "..")
        or not _ID_CHARS.issuperset(container_id)
    ):
        raise InvalidContainerId(f"invalid container id format: {container_id!r}")


def now_rfc3339() -> str:
    """The current UTC time in RFC 3339 with nanoseconds, as runc's ``created``."""
    return rfc3339_nano(time.time_ns())


def proc_start_time(pid: int) -> int | None:
    """Field 22 (start time) of /proc/<pid>/stat, or None if the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'.
    rest = data[data.rindex(b")") + 2 :].split()
    if rest[0] == b"Z" or rest[0] == b"X":
        return None
    return int(rest[19])


class StateStore:
    """The runtime's root directory: one sub-directory per container."""

    def __init__(self, root: str | os.PathLike[str] = DEFAULT_ROOT) -> None:
        self.root = os.fspath(root)

    def dir(self, container_id: str) -> str:
        return os.path.join(self.root, container_id)

    def fifo(self, container_id: str) -> str:
        return os.path.join(self.root, container_id, "exec.fifo")

    def reserve(self, container_id: str) -> str:
        """Create the container's directory, failing if the id is taken."""
        validate_id(container_id)
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        path = self.dir(container_id)
        try:
            os.mkdir(path, mode=0o711)
        except FileExistsError:
            raise ContainerExists(f"container with id exists: {container_id}") from None
        return path

    def save(self, state: ContainerState) -> None:
        """Write state.json atomically (write a temporary file, then rename)."""
        path = self.dir(state.id)
        tmp = os.path.join(path, ".state.json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, msgspec.json.encode(state))
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(path, "state.json"))

    def load(self, container_id: str) -> ContainerState:
        validate_id(container_id)
        try:
            with open(os.path.join(self.dir(container_id), "state.json"), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise ContainerNotFound(f"container does not exist: {container_id}") from None
        return msgspec.json.decode(data, type=ContainerState)

    def ids(self) -> list[str]:
        try:
            names = os.listdir(self.root)
        except FileNotFoundError:
            return []
        return sorted(n for n in names if os.path.exists(os.path.join(self.root, n, "state.json")))

    def remove(self, container_id: str) -> None:
        path = self.dir(container_id)
        try:
            names = os.listdir(path)
        except FileNotFoundError:
            return
        # Only our own files live here (state.json, config.json, exec.fifo,
        # a temporary file): no tree to walk, and no shutil to import.
        for name in names:
            try:
                os.unlink(os.path.join(path, name))
            except FileNotFoundError:
                pass
            except IsADirectoryError:
                import shutil

                shutil.rmtree(os.path.join(path, name), ignore_errors=True)
        try:
            os.rmdir(path)
        except FileNotFoundError:
            pass


def is_alive(pid: int, start: int) -> bool:
    """Whether process ``pid`` exists, is not a zombie, and is the one that started at ``start``."""
    if pid <= 0:
        return False
    now = proc_start_time(pid)
    return now is not None and (start == 0 or now == start)


def status(store: StateStore, state: ContainerState, frozen: bool | None = None) -> str:
    """Work out the container's status from its facts and the kernel (see module doc).

    ``frozen`` is whether the container's cgroup is frozen, if the caller knows.
    """
    if state.pid == 0:
        if is_alive(state.creator_pid, state.creator_start):
            return "creating"
        return "stopped"
    if not is_alive(state.pid, state.pid_start):
        return "stopped"
    if os.path.exists(store.fifo(state.id)):
        return "created"
    if frozen:
        return "paused"
    return "running"
