"""Reading and writing cgroup files, the cheap way.

A cgroup is a directory; its *control files* (``memory.max``,
``cgroup.procs`` ...) are read and written whole, one value per
``write(2)``. Everything here is a plain ``os.open``/``os.read``/
``os.write``: no buffering layers, no subprocesses, no globbing. A container
start pays for each of these calls, so they stay few.

:class:`Write` is one planned write. Controllers turn ``linux.resources``
into a list of them (validating as they go, before anything is written),
and :func:`apply_writes` carries the list out, turning a kernel refusal
into a :class:`~bulkhead.errors.CgroupError` that names the spec field.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable, Iterable, Iterator

from bulkhead.errors import CgroupError

_WRITE_FLAGS = os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_CLOEXEC


def write(path: str, value: str) -> None:
    """Write ``value`` to the control file ``path`` in one ``write(2)``."""
    fd = os.open(path, _WRITE_FLAGS)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def read(path: str) -> str:
    """The whole content of the control file ``path``."""
    fd = os.open(path, _READ_FLAGS)
    try:
        data = os.read(fd, 65536)
        if len(data) < 4096:
            return data.decode()
        chunks = [data]
        while data:
            data = os.read(fd, 65536)
            chunks.append(data)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_opt(path: str) -> str | None:
    """Like :func:`read`, but ``None`` when the file does not exist."""
    try:
        return read(path)
    except FileNotFoundError:
        return None


def read_int(path: str, max_value: int | None = None) -> int | None:
    """A file holding one number; ``max`` reads as ``max_value``; ``None`` when absent."""
    text = read_opt(path)
    if text is None:
        return None
    return parse_int(text.strip(), path, max_value)


def parse_int(text: str, where: str, max_value: int | None = None) -> int:
    """One number of a control file (``max`` is ``max_value``, if given)."""
    if text == "max" and max_value is not None:
        return max_value
    try:
        return int(text)
    except ValueError:
        raise CgroupError(f"{where}: unexpected content {text!r}") from None


def read_keyed(path: str) -> dict[str, int]:
    """A *flat keyed* file (``key value`` per line, as ``memory.stat``); ``{}`` when absent."""
    text = read_opt(path)
    out: dict[str, int] = {}
    if text is None:
        return out
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        try:
            out[key] = int(value)
        except ValueError:
            continue
    return out


def exists(path: str) -> bool:
    """Whether ``path`` exists (one ``stat``)."""
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def mkdir(path: str) -> bool:
    """Create the cgroup ``path``; True if it was new, False if it was there."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        return False
    return True


def rmdir(path: str) -> None:
    """Remove the (empty) cgroup ``path``: its control files go with it."""
    os.rmdir(path)


def makedirs(top: str, rel: str) -> list[str]:
    """Create ``top/rel`` and the missing cgroups above it; return the new ones.

    ``top`` (a hierarchy's mountpoint) must exist. Another process may remove
    an empty parent between our ``mkdir`` calls (our ``/bulkhead`` is shared
    by every container); we then start again, a few times.
    """
    parts = [p for p in rel.split("/") if p]
    if len(parts) > 1:
        # Usually only the leaf is missing (the parents are shared): one mkdir, not one
        # per level (each a few microseconds of cgroup_mutex, times ten hierarchies).
        try:
            return [f"{top}/{'/'.join(parts)}"] if mkdir(f"{top}/{'/'.join(parts)}") else []
        except FileNotFoundError:
            pass
    for _attempt in range(5):
        created: list[str] = []
        path = top
        try:
            for part in parts:
                path = f"{path}/{part}"
                if mkdir(path):
                    created.append(path)
        except FileNotFoundError:
            continue
        return created
    raise CgroupError(f"cannot create {top}/{rel}: a parent keeps disappearing")


def subdirs(path: str) -> list[str]:
    """The child cgroups of ``path`` (directories only)."""
    try:
        with os.scandir(path) as it:
            return [e.path for e in it if e.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return []


def walk_up(path: str) -> Iterator[str]:
    """``path`` and every cgroup below it, children before parents."""
    for child in subdirs(path):
        yield from walk_up(child)
    yield path


def remove_tree(path: str, deadline: float) -> list[str]:
    """Remove the cgroup ``path`` and everything below it, leaf first.

    A cgroup whose last process is still exiting refuses ``rmdir`` with
    EBUSY for a moment; we retry with short, growing sleeps until
    ``deadline`` (a :func:`time.monotonic` time). Returns the paths that are still there (empty on success).
    A missing ``path`` is success.
    """
    try:
        rmdir(path)  # the common case: a leaf with no processes left
        return []
    except FileNotFoundError:
        return []
    except OSError as exc:
        if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EEXIST):
            raise
    delay = 0.0005
    while True:
        left = []
        for p in walk_up(path):
            try:
                rmdir(p)
            except FileNotFoundError:
                pass
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                left.append(p)
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def read_procs(path: str, recursive: bool = True) -> list[int]:
    """The processes in cgroup ``path`` (``cgroup.procs``), and below it when ``recursive``."""
    out: list[int] = []
    dirs: Iterable[str] = walk_up(path) if recursive else (path,)
    for d in dirs:
        text = read_opt(f"{d}/cgroup.procs")
        if text:
            out.extend(int(line) for line in text.split())
    return out


class Write:
    """One planned write of ``value`` to the control file ``path``.

    ``field`` names the spec field it carries out
    (``linux.resources.memory.limit``) for error messages.
    ``retry_on_einval``: if the kernel says EINVAL, try again once after the
    other writes of the plan (related files such as ``cpu.cfs_period_us`` and
    ``cpu.cfs_quota_us`` constrain each other, so the right order depends on
    the old values). ``explain`` may turn the kernel's error into a better
    sentence (it returns None to keep the default).
    """

    __slots__ = ("explain", "field", "path", "retry_on_einval", "value")

    def __init__(
        self,
        path: str,
        value: str,
        field: str,
        retry_on_einval: bool = False,
        explain: Callable[[OSError], str | None] | None = None,
    ) -> None:
        self.path = path
        self.value = value
        self.field = field
        self.retry_on_einval = retry_on_einval
        self.explain = explain

    def __repr__(self) -> str:
        return f"Write({self.path!r}, {self.value!r}, {self.field!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Write):
            return NotImplemented
        return (self.path, self.value, self.field) == (other.path, other.value, other.field)

    __hash__ = None  # type: ignore[assignment]


def apply_writes(
    writes: Iterable[Write], *, undo: bool = False, then: Callable[[], None] | None = None
) -> None:
    """Carry out planned writes in order; raise :class:`CgroupError` on the first refusal.

    ``undo=True`` (an ``update`` of a running container) makes the plan all
    or nothing: every file is read first (a file this kernel lacks is an
    error before anything is written), and when the kernel refuses a write
    half-way, what was already written is put back as it was (see
    :func:`restore_writes`). The error then says so. A new cgroup needs
    none of this: the runtime removes it when its first apply fails.
    ``then`` runs after the last write, as part of the plan: when it raises
    CgroupError the writes are undone too (v2's device program).
    """
    plan = list(writes)
    saved = snapshot(plan) if undo else None
    done: list[Write] = []
    deferred: list[Write] = []
    try:
        for w in plan:
            try:
                write(w.path, w.value)
            except OSError as exc:
                if w.retry_on_einval and exc.errno == errno.EINVAL:
                    deferred.append(w)
                    continue
                raise write_error(w, exc) from exc
            done.append(w)
        for w in deferred:
            try:
                write(w.path, w.value)
            except OSError as exc:
                raise write_error(w, exc) from exc
            done.append(w)
        if then is not None:
            then()
    except CgroupError as err:
        if saved is None or not done:
            raise
        failed = restore_writes(done, saved)
        if failed:
            raise CgroupError(
                f"{err}; putting back what this update had already written failed too "
                f"({'; '.join(failed)}): the cgroup is partly updated"
            ) from err.__cause__
        raise CgroupError(
            f"{err} (the {len(done)} earlier write(s) of this update were undone)"
        ) from err.__cause__


# ------------------------------------------------------------------ undoing writes
#
# Most control files hold one value, and writing back what was read restores
# it. Some are tables edited one line per write: what was read is the whole
# table, and restoring means writing back the old line of each key (device)
# this update touched, or the line that removes the key's rule when there
# was none. The v1 devices files are write-only: their state is devices.list.

#: Table files: the line that removes a key's setting (``{key}`` filled in).
_TABLES: dict[str, str] = {
    "blkio.throttle.read_bps_device": "{key} 0",
    "blkio.throttle.write_bps_device": "{key} 0",
    "blkio.throttle.read_iops_device": "{key} 0",
    "blkio.throttle.write_iops_device": "{key} 0",
    "blkio.weight_device": "{key} 0",
    "blkio.bfq.weight_device": "{key} 0",
    "blkio.leaf_weight_device": "{key} 0",
    "io.max": "{key} rbps=max wbps=max riops=max wiops=max",
    "io.weight": "{key} default",
    "io.bfq.weight": "{key} default",
    "rdma.max": "{key} hca_handle=max hca_object=max",
    "net_prio.ifpriomap": "{key} 0",
}

#: Tables whose keys are names rather than ``major:minor``.
_NAMED_KEYS = frozenset({"rdma.max", "net_prio.ifpriomap"})

_DEVICES_FILES = frozenset({"devices.allow", "devices.deny"})


def _state_file(path: str) -> str:
    """The file whose content is the state that a write to ``path`` changes."""
    if os.path.basename(path) in _DEVICES_FILES:
        return os.path.join(os.path.dirname(path), "devices.list")
    return path


def snapshot(writes: list[Write]) -> dict[str, str | None]:
    """What every file the plan writes holds now (``None``: cannot be read back).

    A missing file is a :class:`CgroupError` naming the first field that
    needs it: nothing has been written yet.
    """
    saved: dict[str, str | None] = {}
    for w in writes:
        src = _state_file(w.path)
        if src in saved:
            continue
        try:
            saved[src] = read(src)
        except FileNotFoundError as exc:
            raise write_error(w, exc) from exc
        except OSError:
            saved[src] = None  # write-only (memory.reclaim ...): an action, not a setting
    return saved


def _table_key(name: str, value: str) -> str:
    first = value.split(None, 1)[0] if value.strip() else ""
    if name in _NAMED_KEYS or ":" in first:
        return first
    return "default"  # io.weight "200": the default weight, read back as "default 100"


def _undo_plan(done: list[Write], saved: dict[str, str | None]) -> list[tuple[str, str]]:
    """The writes that put back each file ``done`` changed, last changed first."""
    order: list[str] = []
    touched: dict[str, list[str]] = {}
    for w in done:
        src = _state_file(w.path)
        if src in order:
            order.remove(src)
        order.append(src)
        name = os.path.basename(w.path)
        if name in _TABLES:
            keys = touched.setdefault(src, [])
            key = _table_key(name, w.value)
            if key not in keys:
                keys.append(key)
    out: list[tuple[str, str]] = []
    for src in reversed(order):
        old = saved.get(src)
        if old is None:
            continue
        name = os.path.basename(src)
        d = os.path.dirname(src)
        if name == "devices.list":
            out.append((f"{d}/devices.deny", "a"))
            for line in old.splitlines():
                if line.strip():
                    out.append((f"{d}/devices.allow", "a" if line.startswith("a ") else line))
        elif name in _TABLES:
            rows = {ln.split(None, 1)[0]: ln for ln in old.splitlines() if ln.strip()}
            for key in touched.get(src, []):
                out.append((src, rows.get(key) or _TABLES[name].format(key=key)))
        elif name == "memory.oom_control":
            flag = next(
                (ln.split()[1] for ln in old.splitlines() if ln.startswith("oom_kill_disable ")),
                "0",
            )
            out.append((src, flag))
        else:
            lines = old.rstrip("\n").split("\n")
            for line in lines if len(lines) > 1 else [lines[0] or "\n"]:
                out.append((src, line))
    return out


def restore_writes(done: list[Write], saved: dict[str, str | None]) -> list[str]:
    """Put back what ``done`` changed (see :func:`snapshot`); return what could not be.

    A write refused with EINVAL is tried again after the others (limits that
    constrain each other, such as memory and memory+swap on v1).
    """
    undo = _undo_plan(done, saved)
    failed: list[tuple[str, str, OSError]] = []
    for path, value in undo:
        try:
            write(path, value)
        except OSError as exc:
            failed.append((path, value, exc))
    still: list[str] = []
    for path, value, first in failed:
        error = first
        if first.errno == errno.EINVAL:
            try:
                write(path, value)
                continue
            except OSError as again:
                error = again
        still.append(f"{os.path.basename(path)} = {value!r}: {error.strerror}")
    return still


def write_error(w: Write, exc: OSError) -> CgroupError:
    """The :class:`CgroupError` for a write the kernel refused."""
    why = w.explain(exc) if w.explain is not None else None
    if why is None:
        name = os.path.basename(w.path)
        if exc.errno == errno.ENOENT and not exists(os.path.dirname(w.path)):
            why = "the cgroup does not exist (not created yet, or removed)"
        elif exc.errno == errno.ENOENT:
            why = f"this kernel or cgroup has no {name} (controller not enabled, or feature not built in)"
        elif exc.errno == errno.EINVAL:
            why = f"the kernel refused {w.value!r} for {name} (invalid or out of range)"
        elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            why = f"not permitted to write {name} ({exc.strerror})"
        else:
            why = f"writing {w.value!r} to {name}: {exc.strerror}"
    return CgroupError(f"{w.field}: {why} [{w.path}]")
