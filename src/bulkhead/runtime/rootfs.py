"""The container's root filesystem: planned by the runtime, built by the container's init.

Vocabulary
----------
*rootfs*
    The directory (``root.path`` of config.json, relative to the bundle or
    absolute) that becomes the container's ``/``.
*spec mounts*
    ``mounts[]`` of config.json, performed in order on top of the rootfs:
    fresh filesystems (``proc``, ``sysfs``, ``tmpfs``, ``devpts``, ``mqueue``,
    ``cgroup``, ``overlay`` ...) and *bind mounts* of host paths. A
    *destination* is always a path inside the container; it is resolved with
    :func:`~bulkhead.runtime.securejoin.secure_join` at the moment of the
    mount (an earlier mount may have changed what it means), so a symlink in
    the image can never point a mount at the host.
*device nodes*
    The character devices every container gets (``/dev/null``, ``zero``,
    ``full``, ``random``, ``urandom``, ``tty``), plus ``linux.devices``:
    made with mknod(2), or -- in a user namespace, where mknod is refused --
    bind-mounted from the host onto an empty file. Skipped when ``/dev`` is a
    bind mount of the host's ``/dev`` (runc's rule).
*pivot_root*
    Making the rootfs the root mount of the container's mount namespace. The
    ``pivot_root(".", ".")`` trick (from LXC, used by runc) stacks the old
    root on top of the new one; after making it ``rslave`` (so nothing that
    follows propagates to the host) it is lazily unmounted, leaving no path
    back. ``--no-pivot`` uses ``MS_MOVE`` + chroot(2) instead, for ramdisk
    roots where pivot_root is impossible; it is weaker (the host's root is
    still in the mount namespace), so the host's procfs and sysfs are
    unmounted first, as runc does.
*masked paths*
    Paths hidden from the container: files get ``/dev/null`` bound over
    them, directories an empty read-only tmpfs (``/proc/kcore``,
    ``/sys/firmware`` ...).
*readonly paths*
    Paths bind-mounted onto themselves and remounted read-only
    (``/proc/sys``, ``/proc/sysrq-trigger`` ...).
*rootfs propagation*
    ``linux.rootfsPropagation``: what mount propagation the container's ``/``
    has (``rslave`` semantics by default: host mounts appear inside, nothing
    goes out).

Parent and child
----------------
:func:`plan_rootfs` runs in the runtime before fork and turns the spec into a
:class:`RootfsPlan` of plain data, rejecting bad input with
:class:`~bulkhead.errors.SpecError` naming the JSON path. The container's
init then calls, inside its new mount namespace and in this order:

1. :func:`prepare_rootfs`   propagation of ``/``, rootfs bind, spec mounts, ``/dev``
2. (createRuntime hooks, createContainer hooks: the old root is still visible)
3. :func:`enter_rootfs`     pivot_root (or move + chroot) into the rootfs
4. :func:`bind_console`     only with a terminal: the pty slave onto ``/dev/console``
5. :func:`finalize_rootfs`  read-only remounts, masked/readonly paths, propagation, umask

These only make system calls and raise :class:`OSError` (with the path) or
:class:`~bulkhead.errors.StartError` naming the mount. Everything they use is
imported when this module is, so nothing needs the host's filesystem after
the pivot.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

import msgspec

from bulkhead.errors import SpecError, StartError
from bulkhead.linux import mountinfo, namespaces
from bulkhead.linux.mount import (
    AT_EMPTY_PATH,
    AT_RECURSIVE,
    MNT_DETACH,
    MOUNT_ATTR_IDMAP,
    MOUNT_ATTR_RDONLY,
    MOVE_MOUNT_F_EMPTY_PATH,
    MOVE_MOUNT_T_EMPTY_PATH,
    MS_ATIME_FLAGS,
    MS_BIND,
    MS_LOCK_FLAGS,
    MS_MOVE,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_UNBINDABLE,
    OPEN_TREE_CLONE,
    PROC_SUPER_MAGIC,
    PROPAGATION_FLAGS,
    filesystem_type,
    make_propagation,
    mount,
    mount_flags_of,
    mount_setattr,
    move_mount,
    open_tree,
    parse_mount_options,
    pivot_root,
    umount2,
)
from bulkhead.linux.mountinfo import MountInfo as MountInfo
from bulkhead.runtime.securejoin import open_in_root, secure_join

if TYPE_CHECKING:
    from bulkhead.oci.runtime_spec import LinuxDevice, Mount, Spec

#: nosuid, nodev, noexec: what the runtime's own helper mounts get
DEFAULT_MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC

#: (path, type, major, minor) of the device nodes every container gets (mode 0666, root-owned)
DEFAULT_DEVICES: tuple[tuple[str, str, int, int], ...] = (
    ("/dev/null", "c", 1, 3),
    ("/dev/zero", "c", 1, 5),
    ("/dev/full", "c", 1, 7),
    ("/dev/random", "c", 1, 8),
    ("/dev/urandom", "c", 1, 9),
    ("/dev/tty", "c", 5, 0),
)

#: the files under /proc that may be mounted over (what lxcfs emulates)
ALLOWED_PROC_DESTINATIONS = frozenset(
    {
        "/proc/cpuinfo",
        "/proc/diskstats",
        "/proc/meminfo",
        "/proc/stat",
        "/proc/swaps",
        "/proc/uptime",
        "/proc/loadavg",
        "/proc/slabinfo",
        "/proc/net/dev",
        "/proc/sys/kernel/ns_last_pid",
        "/proc/sys/crypto/fips_enabled",
    }
)

CGROUP_ROOT = "/sys/fs/cgroup"

IdMap = list[tuple[int, int, int]]
MountKind = Literal["bind", "proc", "sysfs", "tmpfs", "cgroup", "fs"]


# =========================================================================== the plan


class IdmapPlan(msgspec.Struct):
    """How to make an idmapped bind mount.

    ``uid_map``/``gid_map`` are ``(container id, host id, size)`` triples
    written to a throwaway user namespace whose mapping the mount then
    uses; ``userns_path`` names an existing user namespace instead (a
    container that joins one). ``recursive`` is ``ridmap``.
    """

    uid_map: IdMap
    gid_map: IdMap
    userns_path: str | None = None
    recursive: bool = False


class CgroupHierarchy(msgspec.Struct):
    """One cgroup hierarchy to show under a ``cgroup`` mount's destination.

    ``name``        directory under the destination (``"cpu,cpuacct"``, ``"systemd"``, ``"unified"``)
    ``fstype``      ``"cgroup"`` (v1) or ``"cgroup2"``
    ``options``     data for a fresh mount (``"cpu,cpuacct"``, ``"name=systemd"``, ``""``)
    ``mountpoint``  where the host has the hierarchy mounted
    ``root``        which cgroup of the hierarchy that host mount shows (mountinfo's root)
    ``source``      the host directory to bind without a cgroup namespace
    ``key``         the hierarchy's controllers as /proc/self/cgroup names them (``""``: v2)
    """

    name: str
    fstype: str
    options: str
    mountpoint: str
    root: str
    source: str
    key: str


class CgroupMount(msgspec.Struct):
    """What a ``type: cgroup`` mount becomes.

    v1: a tmpfs at the destination holding one mount per hierarchy --
    fresh ``cgroup`` mounts in a cgroup namespace (the kernel shows the
    namespace's root), binds of the container's own cgroup directories
    otherwise -- plus ``cpu -> cpu,cpuacct`` style ``symlinks``.
    v2: one ``cgroup2`` mount, or a bind of the container's cgroup.
    """

    version: int
    cgroupns: bool
    hierarchies: list[CgroupHierarchy]
    symlinks: list[tuple[str, str]] = msgspec.field(default_factory=list)


class MountPlan(msgspec.Struct):
    """One spec mount, resolved to mount(2) arguments.

    ``index`` is the position in ``mounts[]`` (for error messages);
    ``destination`` is absolute and lexically clean, still to be resolved
    inside the rootfs at mount time. ``flags``/``cleared``/``data``/
    ``propagation``/``attr_set``/``attr_clr`` are
    :class:`~bulkhead.linux.mount.MountOptions`. ``mount_fd`` is a detached
    idmapped mount made by :func:`open_idmapped_mounts` in the runtime.
    """

    index: int
    kind: MountKind
    destination: str
    source: str
    fstype: str
    flags: int = 0
    cleared: int = 0
    data: str = ""
    propagation: tuple[int, ...] = ()
    attr_set: int = 0
    attr_clr: int = 0
    source_is_dir: bool = True
    tmpcopyup: bool = False
    idmap: IdmapPlan | None = None
    cgroup: CgroupMount | None = None
    mount_fd: int | None = None

    @property
    def where(self) -> str:
        return f"$.mounts[{self.index}]"


class DeviceNode(msgspec.Struct):
    """A device node to create: ``kind`` is ``c`` (character), ``b`` (block) or ``p`` (FIFO)."""

    path: str
    kind: str
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0

    @property
    def file_type(self) -> int:
        return {"c": stat.S_IFCHR, "b": stat.S_IFBLK, "p": stat.S_IFIFO}[self.kind]


class RootfsPlan(msgspec.Struct):
    """Everything the container's init does to its filesystem, as plain data.

    ``root_propagation`` is applied to ``/`` first (``rslave`` unless
    ``linux.rootfsPropagation`` asks for another, taken recursively);
    ``rootfs_propagation`` (0: none) to the container's ``/`` at the end.
    ``setup_dev`` is false when ``/dev`` is a bind mount; ``bind_devices``
    when device nodes must be bind-mounted (user namespace).
    ``host_pseudo_mounts`` are the host's procfs/sysfs mounts hidden before
    ``--no-pivot``'s chroot. ``readonly_remounts`` and ``root_fd`` are
    filled in by the child: the tmpfs (and ``/dev``) mounts asked to be
    read-only, mounted writable until :func:`finalize_rootfs` has no more to
    create in them; and the fd through which the rootfs is reached.
    """

    rootfs: str
    readonly: bool = False
    no_pivot: bool = False
    userns: bool = False
    mounts: list[MountPlan] = msgspec.field(default_factory=list)
    setup_dev: bool = True
    devices: list[DeviceNode] = msgspec.field(default_factory=list)
    bind_devices: bool = False
    masked_paths: list[str] = msgspec.field(default_factory=list)
    readonly_paths: list[str] = msgspec.field(default_factory=list)
    root_propagation: int = MS_SLAVE | MS_REC
    rootfs_propagation: int = 0
    mount_label: str = ""
    host_pseudo_mounts: list[str] = msgspec.field(default_factory=list)
    #: (st_dev, st_ino) of the rootfs directory, to recognise it from the child
    rootfs_id: tuple[int, int] = (0, 0)
    readonly_remounts: list[tuple[str, int]] = msgspec.field(default_factory=list)
    #: (child) an fd of the rootfs mount, from prepare_rootfs until enter_rootfs
    root_fd: int | None = None


# =========================================================================== planning (parent)


def read_mountinfo(path: str = "/proc/self/mountinfo") -> list[MountInfo]:
    """Parse a mountinfo file into :class:`MountInfo` records (octal escapes decoded)."""
    return mountinfo.read(path)


def _v1_controllers() -> set[str]:
    try:
        with open("/proc/cgroups") as f:
            return {line.split()[0] for line in f if line and not line.startswith("#")}
    except OSError:
        return set()


def plan_cgroup_mount(
    cgroup_path: str, cgroupns: bool, mounts: list[MountInfo] | None = None
) -> CgroupMount:
    """The hierarchies a ``cgroup`` mount shows, from the host's mount table.

    A host whose ``/sys/fs/cgroup`` is a ``cgroup2`` mount is *unified*
    (v2 only). Otherwise every v1 hierarchy mounted under ``/sys/fs/cgroup``
    is shown, and on a *hybrid* host the ``cgroup2`` mount under it too
    (``unified``). ``cgroup_path`` is the container's cgroup, relative to
    each hierarchy's mount point.
    """
    infos = read_mountinfo() if mounts is None else mounts
    rel = cgroup_path.strip("/")
    for info in infos:
        if info.fstype == "cgroup2" and info.mountpoint == CGROUP_ROOT:
            source = posixpath.join(CGROUP_ROOT, rel) if rel else CGROUP_ROOT
            h = CgroupHierarchy("", "cgroup2", "", CGROUP_ROOT, info.root, source, "")
            return CgroupMount(version=2, cgroupns=cgroupns, hierarchies=[h])
    controllers = _v1_controllers()
    candidates = [i for i in infos if i.mountpoint.startswith(CGROUP_ROOT + "/")]
    if not any(i.fstype == "cgroup" for i in candidates):
        candidates = infos
    seen: set[frozenset[str]] = set()
    hierarchies: list[CgroupHierarchy] = []
    for info in candidates:
        if info.fstype == "cgroup":
            opts = [
                o
                for o in info.super_options.split(",")
                if o in controllers or o.startswith("name=")
            ]
            if not opts:
                continue
        elif info.fstype == "cgroup2" and info.mountpoint.startswith(CGROUP_ROOT + "/"):
            opts = []
        else:
            continue
        key = frozenset(opts)
        if key in seen:
            continue
        seen.add(key)
        name = posixpath.basename(info.mountpoint)
        source = posixpath.join(info.mountpoint, rel) if rel else info.mountpoint
        hierarchies.append(
            CgroupHierarchy(
                name=name,
                fstype=info.fstype,
                options=",".join(opts),
                mountpoint=info.mountpoint,
                root=info.root,
                source=source,
                key=",".join(opts),
            )
        )
    symlinks = []
    for h in hierarchies:
        if h.fstype == "cgroup" and "," in h.name:
            symlinks += [(part, h.name) for part in h.name.split(",") if part != h.name]
    return CgroupMount(version=1, cgroupns=cgroupns, hierarchies=hierarchies, symlinks=symlinks)


def check_proc_destination(kind: str, destination: str, source: str) -> str | None:
    """Why a mount may not go to ``destination`` (a clean container path), or None.

    Only a fresh ``proc`` (or a bind of a procfs) may cover ``/proc``, and
    nothing may be mounted below it except the few files lxcfs emulates:
    a container must not be able to hide the masks on /proc.
    """
    if destination == "/proc":
        if kind == "proc":
            return None
        if kind == "bind":
            try:
                if filesystem_type(source) == PROC_SUPER_MAGIC:
                    return None
            except OSError:
                pass
        return f"{destination!r} cannot be mounted because it is not of type proc"
    if destination.startswith("/proc/") and destination not in ALLOWED_PROC_DESTINATIONS:
        return f"{destination!r} cannot be mounted because it is inside /proc"
    return None


def _clean_container_path(path: str) -> str:
    return posixpath.normpath("/" + path.lstrip("/"))


_SPECIAL_KINDS: dict[str, MountKind] = {
    "proc": "proc",
    "sysfs": "sysfs",
    "tmpfs": "tmpfs",
    "cgroup": "cgroup",
}


def _plan_mount(
    index: int,
    m: Mount,
    bundle: str | os.PathLike[str],
    *,
    userns: bool,
    userns_path: str | None,
    uid_map: IdMap,
    gid_map: IdMap,
    cgroup_path: str,
    cgroupns: bool,
    mountinfo: list[MountInfo] | None,
) -> MountPlan:
    where = f"$.mounts[{index}]"
    for name in ("destination", "source", "type"):
        value = getattr(m, name)
        if value and "\0" in value:
            raise SpecError("must not contain a NUL byte", where=f"{where}.{name}")
    if not m.destination:
        raise SpecError("mount destination must not be empty", where=f"{where}.destination")
    dest = _clean_container_path(m.destination)
    if dest == "/":
        raise SpecError("cannot mount over the container's /", where=f"{where}.destination")
    opts = parse_mount_options(m.options)
    flags = opts.flags
    fstype = m.type or ""
    if fstype == "bind":
        flags |= MS_BIND
    kind: MountKind
    if flags & MS_BIND:
        kind = "bind"
    elif fstype in _SPECIAL_KINDS:
        kind = _SPECIAL_KINDS[fstype]
    elif fstype:
        kind = "fs"
    else:
        raise SpecError("a mount that is not a bind mount needs a type", where=f"{where}.type")
    source = m.source or ""
    source_is_dir = True
    if kind == "bind":
        if not source:
            raise SpecError("a bind mount needs a source", where=f"{where}.source")
        if not source.startswith("/"):
            source = os.path.join(os.fspath(bundle), source)
        try:
            source_is_dir = stat.S_ISDIR(os.stat(source).st_mode)
        except OSError as exc:
            raise SpecError(
                f"bind mount source {source!r} cannot be used: {exc.strerror}",
                where=f"{where}.source",
            ) from None
    elif not source:
        source = fstype
    problem = check_proc_destination(kind, dest, source)
    if problem:
        raise SpecError(problem, where=f"{where}.destination")
    idmap = None
    if opts.idmap or m.uid_mappings or m.gid_mappings:
        if kind != "bind":
            raise SpecError("idmapped mounts are only supported for bind mounts", where=where)
        if m.uid_mappings or m.gid_mappings:
            idmap = IdmapPlan(
                uid_map=[(x.container_id, x.host_id, x.size) for x in m.uid_mappings or []],
                gid_map=[(x.container_id, x.host_id, x.size) for x in m.gid_mappings or []],
            )
        elif userns_path:
            idmap = IdmapPlan([], [], userns_path=userns_path)
        elif userns and uid_map and gid_map:
            idmap = IdmapPlan(list(uid_map), list(gid_map))
        else:
            raise SpecError(
                "idmap without uidMappings/gidMappings needs the container's user namespace",
                where=where,
            )
        idmap.recursive = opts.idmap == "ridmap"
    cgroup = None
    if kind == "cgroup":
        cgroup = plan_cgroup_mount(cgroup_path, cgroupns, mountinfo)
    return MountPlan(
        index=index,
        kind=kind,
        destination=dest,
        source=source,
        fstype=fstype if kind != "bind" else "",
        flags=flags,
        cleared=opts.cleared,
        data=opts.data,
        propagation=opts.propagation,
        attr_set=opts.attr_set,
        attr_clr=opts.attr_clr,
        source_is_dir=source_is_dir,
        tmpcopyup=opts.tmpcopyup,
        idmap=idmap,
        cgroup=cgroup,
    )


def _plan_device(index: int, d: LinuxDevice) -> DeviceNode:
    where = f"$.linux.devices[{index}]"
    if not d.path.startswith("/") or "\0" in d.path:
        raise SpecError(f"device path {d.path!r} must be absolute", where=f"{where}.path")
    kind = {"c": "c", "u": "c", "b": "b", "p": "p"}.get(d.type)
    if kind is None:
        raise SpecError(f"unknown device type {d.type!r} (c, b, u or p)", where=f"{where}.type")
    if kind != "p" and (d.major is None or d.minor is None):
        raise SpecError("major and minor are required for this device type", where=where)
    mode = 0o666 if d.file_mode is None else d.file_mode & 0o7777
    return DeviceNode(
        path=_clean_container_path(d.path),
        kind=kind,
        major=d.major or 0,
        minor=d.minor or 0,
        mode=mode,
        uid=d.uid or 0,
        gid=d.gid or 0,
    )


def plan_rootfs(
    spec: Spec,
    bundle: str | os.PathLike[str],
    *,
    no_pivot: bool,
    userns: bool,
    cgroup_path: str,
    cgroupns: bool,
) -> RootfsPlan:
    """Work out, before fork, everything the init does to the container's filesystem.

    ``bundle`` resolves a relative ``root.path`` and relative bind sources;
    ``userns`` says the container runs in a user namespace (devices are then
    bind-mounted); ``cgroup_path`` is the container's cgroup (relative to
    each hierarchy) and ``cgroupns`` whether it gets a cgroup namespace.
    Raises :class:`SpecError` with the JSON path of what is wrong.
    """
    if spec.root is None or not spec.root.path:
        raise SpecError("root.path is required", where="$.root.path")
    root = spec.root.path
    if not root.startswith("/"):
        root = os.path.join(os.fspath(bundle), root)
    root = os.path.realpath(root)
    if not os.path.isdir(root):
        raise SpecError(f"rootfs {root} does not exist or is not a directory", where="$.root.path")
    if root == "/":
        raise SpecError("the host's / cannot be a container's rootfs", where="$.root.path")
    linux = spec.linux
    st = os.stat(root)
    plan = RootfsPlan(
        rootfs=root,
        rootfs_id=(st.st_dev, st.st_ino),
        readonly=bool(spec.root.readonly),
        no_pivot=no_pivot,
        userns=userns,
        bind_devices=userns,
    )
    userns_path = None
    uid_map: IdMap = []
    gid_map: IdMap = []
    if linux is None or not any(ns.type == "mount" for ns in linux.namespaces or []):
        # Without one, the mounts below (and "/" becoming rslave) would happen on the host.
        raise SpecError(
            "a container with a root filesystem needs a mount namespace",
            where="$.linux.namespaces",
        )
    if linux is not None:
        for ns in linux.namespaces or []:
            if ns.type == "user" and ns.path:
                userns_path = ns.path
        uid_map = [(x.container_id, x.host_id, x.size) for x in linux.uid_mappings or []]
        gid_map = [(x.container_id, x.host_id, x.size) for x in linux.gid_mappings or []]
        if linux.rootfs_propagation:
            prop = PROPAGATION_FLAGS.get(linux.rootfs_propagation)
            if prop is None:
                raise SpecError(
                    f"rootfsPropagation {linux.rootfs_propagation!r} is not supported",
                    where="$.linux.rootfsPropagation",
                )
            if no_pivot and prop & MS_PRIVATE:
                raise SpecError(
                    "rootfsPropagation of [r]private is not safe without pivot_root",
                    where="$.linux.rootfsPropagation",
                )
            plan.root_propagation = prop | MS_REC
            plan.rootfs_propagation = prop
        for camel, paths, target in (
            ("maskedPaths", linux.masked_paths, plan.masked_paths),
            ("readonlyPaths", linux.readonly_paths, plan.readonly_paths),
        ):
            for i, p in enumerate(paths or []):
                if not p.startswith("/") or "\0" in p:
                    raise SpecError(
                        f"{p!r} must be an absolute path", where=f"$.linux.{camel}[{i}]"
                    )
                target.append(posixpath.normpath(p))
        plan.mount_label = linux.mount_label or ""
    mountinfo = None
    if any((m.type or "") == "cgroup" for m in spec.mounts or []):
        mountinfo = read_mountinfo()
    for i, m in enumerate(spec.mounts or []):
        plan.mounts.append(
            _plan_mount(
                i,
                m,
                bundle,
                userns=userns,
                userns_path=userns_path,
                uid_map=uid_map,
                gid_map=gid_map,
                cgroup_path=cgroup_path,
                cgroupns=cgroupns,
                mountinfo=mountinfo,
            )
        )
    plan.setup_dev = not any(m.kind == "bind" and m.destination == "/dev" for m in plan.mounts)
    spec_devices = [_plan_device(i, d) for i, d in enumerate(linux.devices or [])] if linux else []
    spec_paths = {d.path for d in spec_devices}
    plan.devices = [
        DeviceNode(path, kind, major, minor)
        for path, kind, major, minor in DEFAULT_DEVICES
        if path not in spec_paths
    ]
    plan.devices += [d for d in spec_devices if d.path != "/dev/ptmx"]
    if no_pivot:
        plan.host_pseudo_mounts = [
            i.mountpoint
            for i in read_mountinfo()
            if i.fstype in ("proc", "sysfs")
            and i.root == "/"
            and not (i.mountpoint == root or i.mountpoint.startswith(root + "/"))
        ]
    return plan


# =========================================================================== idmapped mounts


def userns_fd_with_maps(uid_map: IdMap, gid_map: IdMap) -> int:
    """An fd of a new, empty user namespace with these id maps (for ``MOUNT_ATTR_IDMAP``).

    A helper process unshares the namespace and waits; we write its maps
    through /proc and open its ``ns/user``. The helper reports its pid as
    /proc sees it, so this also works from inside a new pid namespace.
    """
    ready_r, ready_w = os.pipe()
    done_r, done_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the helper
        code = 1
        try:
            os.close(ready_r)
            os.close(done_w)
            namespaces.unshare(namespaces.CLONE_NEWUSER)
            os.write(ready_w, os.readlink("/proc/self").encode())
            os.read(done_r, 1)
            code = 0
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(done_r)
    try:
        proc_pid = os.read(ready_r, 64).decode()
        if not proc_pid:
            raise OSError(errno.ECHILD, "user namespace helper failed")
        base = f"/proc/{proc_pid}"
        for name, mapping in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(f"{base}/{name}", "wb") as f:
                f.write(namespaces.format_id_map(mapping))
        return os.open(f"{base}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(done_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def _open_idmapped(m: MountPlan) -> int:
    assert m.idmap is not None
    if m.idmap.userns_path:
        userns = os.open(m.idmap.userns_path, os.O_RDONLY | os.O_CLOEXEC)
    else:
        userns = userns_fd_with_maps(m.idmap.uid_map, m.idmap.gid_map)
    try:
        tree = open_tree(m.source, OPEN_TREE_CLONE | (AT_RECURSIVE if m.flags & MS_REC else 0))
        try:
            mount_setattr(
                "",
                MOUNT_ATTR_IDMAP,
                userns_fd=userns,
                recursive=m.idmap.recursive,
                dirfd=tree,
                flags=AT_EMPTY_PATH,
            )
        except BaseException:
            os.close(tree)
            raise
        return tree
    finally:
        os.close(userns)


def open_idmapped_mounts(plan: RootfsPlan) -> None:
    """Make the detached idmapped mounts of ``plan`` now, in the runtime (before fork).

    Needed when the container has a user namespace: only a process
    privileged over the source's filesystem may idmap a mount, which the
    init no longer is. The fds (``MountPlan.mount_fd``) are inherited
    through fork; the runtime closes its copies with :func:`close_mount_fds`
    once the init is running. Without a user namespace the init makes them
    itself if this was not called.
    """
    for m in plan.mounts:
        if m.idmap is not None and m.mount_fd is None:
            try:
                m.mount_fd = _open_idmapped(m)
            except OSError as exc:
                close_mount_fds(plan)
                raise StartError(
                    f"cannot make idmapped mount of {m.source!r} ({m.where}): {exc.strerror}",
                    step="idmap",
                    errno=exc.errno,
                ) from exc


def close_mount_fds(plan: RootfsPlan) -> None:
    """Close the mount fds :func:`open_idmapped_mounts` made (runtime side, after fork)."""
    for m in plan.mounts:
        if m.mount_fd is not None:
            try:
                os.close(m.mount_fd)
            except OSError:
                pass
            m.mount_fd = None


# =========================================================================== building (child)


class _Root:
    """The rootfs being built, and how to name a path in it for mount(2)."""

    def __init__(self, plan: RootfsPlan) -> None:
        self.plan = plan
        #: mount onto /proc/self/fd/N of an O_PATH fd: exactly the inode we resolved
        self.procfd = os.path.isdir("/proc/self/fd")
        #: how the rootfs is named: /proc/self/fd/<root_fd> once it is mounted
        self.path = plan.rootfs

    @contextmanager
    def at(
        self, destination: str, create: Literal["dir", "file"] | None = None
    ) -> Iterator[tuple[str, str, int]]:
        """``(target for mount(2), resolved host path, O_PATH fd)`` of a container path."""
        fd, resolved = open_in_root(self.path, destination, create=create)
        try:
            yield (f"/proc/self/fd/{fd}" if self.procfd else resolved), resolved, fd
        finally:
            os.close(fd)

    def container_path(self, resolved: str) -> str:
        rel = os.path.relpath(resolved, self.path)
        return "/" if rel == "." else "/" + rel


def _failure(m: MountPlan, exc: OSError) -> StartError:
    what = exc.strerror or str(exc)
    if exc.filename and not str(exc.filename).startswith("/proc/self/fd/"):
        what += f": {exc.filename}"
    return StartError(
        f"error mounting {m.source!r} ({m.fstype or 'bind'}) to rootfs at "
        f"{m.destination!r} ({m.where}): {what}",
        step=f"mount {m.destination}",
        errno=exc.errno,
    )


def prepare_rootfs(plan: RootfsPlan) -> None:
    """Build the container's filesystem tree under the rootfs (child, new mount namespace).

    1. ``/`` gets ``plan.root_propagation`` (``rslave``), so nothing we mount
       reaches the host; if that left it shared, the rootfs's parent mount
       becomes private.
    2. The rootfs is bind-mounted onto itself (pivot_root needs a mount).
    3. Every spec mount, in order, its destination resolved inside the rootfs.
    4. Unless ``/dev`` is a bind mount: device nodes, ``/dev/ptmx``, the
       ``/dev/fd``, ``stdin`` ... symlinks.
    """
    root = _Root(plan)
    make_propagation("/", plan.root_propagation)
    if plan.root_propagation & (MS_SHARED | MS_UNBINDABLE):
        # As runc 1.1, only a shared parent is made private (an unbindable
        # one too: it could not be bound onto itself). After an ``rslave``
        # / nothing is shared, and the rootfs keeps its slave link to the
        # host (rootfsPropagation ``rslave`` sees host mounts).
        _make_parent_mount_private(plan.rootfs, must=True)
    _mount_rootfs(root)
    for m in plan.mounts:
        try:
            _mount_one(root, m)
        except OSError as exc:
            raise _failure(m, exc) from exc
    if plan.setup_dev:
        _setup_dev(root)


def _make_parent_mount_private(path: str, *, must: bool) -> None:
    """Make the mount ``path`` is on private (walking up until mount(2) stops saying EINVAL).

    pivot_root refuses a new root whose parent mount is shared, and a bind
    under a shared parent would propagate. After ``/`` became ``rslave`` no
    mount is shared any more, so unless the rootfs propagation asked for
    ``shared`` a path the user namespace cannot reach (``EACCES``) is fine.
    """
    while True:
        try:
            make_propagation(path, MS_PRIVATE)
            return
        except OSError as exc:
            if exc.errno == errno.EACCES and not must:
                return
            if exc.errno != errno.EINVAL or path == "/":
                raise
        path = os.path.dirname(path)


def _open_rootfs(plan: RootfsPlan) -> int:
    """An O_PATH fd of the rootfs directory, as seen in this mount namespace.

    In a user namespace the rootfs path may not be reachable (a directory
    above it is closed to the mapped root). Then the init must have been
    started with the rootfs as its working directory (the runtime chdirs
    there before unsharing the user namespace); unshare(CLONE_NEWNS) carried
    the working directory into the new mount namespace.
    """
    try:
        fd = os.open(plan.rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except PermissionError:
        fd = os.open(".", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    st = os.fstat(fd)
    if plan.rootfs_id != (0, 0) and (st.st_dev, st.st_ino) != plan.rootfs_id:
        os.close(fd)
        raise StartError(
            f"rootfs {plan.rootfs} cannot be reached from the container's user namespace "
            "(a directory above it is not searchable by the mapped root, and the init's "
            "working directory is not the rootfs)",
            step="rootfs",
            errno=errno.EACCES,
        )
    return fd


def _mount_rootfs(root: _Root) -> None:
    """Bind the rootfs onto itself (recursively): pivot_root needs the new root to be a mount.

    With /proc available this is open_tree(OPEN_TREE_CLONE|AT_RECURSIVE) +
    move_mount onto the directory, which leaves us an fd of the new mount:
    every later path in the rootfs is ``/proc/self/fd/<that fd>/...``, which
    works even where the rootfs's own path is not reachable.
    """
    plan = root.plan
    if not root.procfd:
        mount(plan.rootfs, plan.rootfs, None, MS_BIND | MS_REC)
        return
    below = _open_rootfs(plan)
    try:
        tree = open_tree("", OPEN_TREE_CLONE | AT_RECURSIVE | AT_EMPTY_PATH, dirfd=below)
        try:
            move_mount(
                tree, "", to_dirfd=below, flags=MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH
            )
        except BaseException:
            os.close(tree)
            raise
    finally:
        os.close(below)
    plan.root_fd = tree
    root.path = f"/proc/self/fd/{tree}"


def _check_proc(root: _Root, m: MountPlan, resolved: str) -> None:
    problem = check_proc_destination(m.kind, root.container_path(resolved), m.source)
    if problem:
        raise StartError(f"{problem} ({m.where})", step=f"mount {m.destination}")


def _mount_one(root: _Root, m: MountPlan) -> None:
    if m.kind == "bind":
        _mount_bind(root, m)
    elif m.kind in ("proc", "sysfs"):
        _mount_pseudo(root, m)
    elif m.kind == "tmpfs":
        _mount_tmpfs(root, m)
    elif m.kind == "cgroup":
        _mount_cgroup(root, m)
    else:
        with root.at(m.destination, "dir") as (target, resolved, _):
            _check_proc(root, m, resolved)
            mount(m.source, target, m.fstype, m.flags, m.data)
        _after_mount(root, m, m.destination)


def _after_mount(root: _Root, m: MountPlan, destination: str) -> None:
    """Propagation changes, then recursive mount attributes, on the new mount."""
    if m.propagation:
        with root.at(destination) as (target, _, _):
            for prop in m.propagation:
                make_propagation(target, prop)
    if m.attr_set or m.attr_clr:
        with root.at(destination) as (target, _, _):
            mount_setattr(target, m.attr_set, m.attr_clr, recursive=True)


def _mount_bind(root: _Root, m: MountPlan, source: str | None = None) -> None:
    source = source or m.source
    create: Literal["dir", "file"] = "dir" if m.source_is_dir else "file"
    with root.at(m.destination, create) as (target, resolved, target_fd):
        _check_proc(root, m, resolved)
        if m.idmap is not None:
            fd = m.mount_fd
            if fd is None:
                if root.plan.userns:
                    raise StartError(
                        f"idmapped mount {m.where} was not prepared by the runtime "
                        "(open_idmapped_mounts) and cannot be made inside a user namespace",
                        step=f"mount {m.destination}",
                    )
                fd = _open_idmapped(m)
            try:
                # move_mount(2) does not follow /proc/self/fd magic links: give it the fd
                move_mount(
                    fd,
                    "",
                    to_dirfd=target_fd,
                    flags=MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
                )
            finally:
                os.close(fd)
                m.mount_fd = None
        else:
            mount(source, target, None, MS_BIND | (m.flags & MS_REC))
    _bind_remount(root, m, source)
    _after_mount(root, m, m.destination)


def _bind_remount(root: _Root, m: MountPlan, source: str) -> None:
    """Apply a bind mount's flags (ro, nosuid ...): a bind mount ignores them at first.

    If the kernel refuses (``EPERM``: the source has flags locked by a user
    namespace), retry with the source's locked flags kept, unless the
    options explicitly asked to clear one of them.
    """
    if not (m.flags & ~(MS_BIND | MS_REC | MS_REMOUNT) or m.cleared):
        return
    flags = m.flags | MS_BIND | MS_REMOUNT
    with root.at(m.destination) as (target, _, _):
        try:
            mount(None, target, None, flags)
        except PermissionError:
            locked = mount_flags_of(source) & MS_LOCK_FLAGS
            if locked & m.cleared:
                raise
            if m.flags & MS_ATIME_FLAGS and m.flags & MS_ATIME_FLAGS != locked & MS_ATIME_FLAGS:
                raise
            mount(None, target, None, flags | locked)


def _mount_pseudo(root: _Root, m: MountPlan) -> None:
    """proc and sysfs: only on a real directory of the rootfs, never through a symlink."""
    lexical = os.path.join(root.path, m.destination.lstrip("/"))
    try:
        st = os.lstat(lexical)
        if not stat.S_ISDIR(st.st_mode):
            raise StartError(
                f"filesystem {m.fstype!r} must be mounted on an ordinary directory "
                f"({m.destination}, {m.where})",
                step=f"mount {m.destination}",
            )
    except FileNotFoundError:
        pass
    with root.at(m.destination, "dir") as (target, resolved, _):
        if resolved != os.path.normpath(lexical):
            raise StartError(
                f"filesystem {m.fstype!r} cannot be mounted through a symlink "
                f"({m.destination}, {m.where})",
                step=f"mount {m.destination}",
            )
        _check_proc(root, m, resolved)
        try:
            mount(m.source, target, m.fstype, m.flags, m.data)
        except PermissionError:
            if m.kind != "sysfs" or not root.plan.userns:
                raise
            fallback = True
        else:
            fallback = False
    if fallback:
        # In a user namespace without its own network namespace sysfs cannot
        # be mounted: show the host's /sys instead, read-only if asked (runc).
        bind = MountPlan(
            index=m.index,
            kind="bind",
            destination=m.destination,
            source="/sys",
            fstype="",
            flags=m.flags | MS_BIND | MS_REC,
            cleared=m.cleared,
            propagation=m.propagation,
            attr_set=m.attr_set | (MOUNT_ATTR_RDONLY if m.flags & MS_RDONLY else 0),
            attr_clr=m.attr_clr,
        )
        _mount_bind(root, bind)
        return
    _after_mount(root, m, m.destination)


def _mount_tmpfs(root: _Root, m: MountPlan) -> None:
    """A tmpfs: writable until finalize_rootfs (it may still get files); keeps the dir's mode."""
    data = m.data
    existing = secure_join(root.path, m.destination)
    try:
        mode = stat.S_IMODE(os.stat(existing).st_mode)
        data = f"mode={mode:04o}" + ("," + data if data else "")
    except FileNotFoundError:
        pass
    with root.at(m.destination, "dir") as (target, resolved, _):
        _check_proc(root, m, resolved)
        below = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if m.tmpcopyup else -1
        try:
            mount(m.source, target, "tmpfs", m.flags & ~MS_RDONLY, data)
            if m.tmpcopyup:
                with root.at(m.destination) as (new_target, _, _):
                    top = os.open(new_target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        copy_tree(below, top)
                    finally:
                        os.close(top)
        finally:
            if below >= 0:
                os.close(below)
        if m.flags & MS_RDONLY:
            root.plan.readonly_remounts.append((root.container_path(resolved), m.flags))
    _after_mount(root, m, m.destination)


def copy_tree(src_dir: int, dst_dir: int) -> None:
    """Copy a directory's contents (``tmpcopyup``), keeping types, owners, modes and times."""
    with os.scandir(src_dir) as entries:
        for entry in entries:
            name = entry.name
            st = entry.stat(follow_symlinks=False)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(name, 0o700, dir_fd=dst_dir)
                s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src_dir)
                d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dst_dir)
                try:
                    copy_tree(s, d)
                finally:
                    os.close(s)
                    os.close(d)
            elif stat.S_ISREG(st.st_mode):
                s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src_dir)
                d = os.open(
                    name,
                    os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                    0o600,
                    dir_fd=dst_dir,
                )
                try:
                    while os.sendfile(d, s, None, 1 << 20) > 0:
                        pass
                finally:
                    os.close(s)
                    os.close(d)
            elif stat.S_ISLNK(st.st_mode):
                os.symlink(os.readlink(name, dir_fd=src_dir), name, dir_fd=dst_dir)
            else:
                os.mknod(name, st.st_mode, st.st_rdev, dir_fd=dst_dir)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst_dir, follow_symlinks=False)
            if not stat.S_ISLNK(st.st_mode):
                os.chmod(name, mode, dir_fd=dst_dir)
            os.utime(
                name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst_dir, follow_symlinks=False
            )


def _own_cgroups() -> dict[frozenset[str], str]:
    """This process's cgroups, by hierarchy controllers (frozenset(): the v2 one)."""
    out: dict[frozenset[str], str] = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            out[frozenset(c for c in controllers.split(",") if c)] = path
    return out


def _cgroup_source(h: CgroupHierarchy) -> str:
    """The host directory of the container's cgroup in hierarchy ``h``.

    The planned one if it exists; otherwise where /proc/self/cgroup says this
    process is (a hierarchy the cgroup manager does not use), as runc does.
    """
    if os.path.isdir(h.source):
        return h.source
    own = _own_cgroups().get(frozenset(c for c in h.key.split(",") if c))
    if own is None:
        return h.source
    rel = posixpath.relpath(own, h.root)
    if rel.startswith(".."):
        return h.mountpoint
    return posixpath.normpath(posixpath.join(h.mountpoint, rel))


def _mount_cgroup(root: _Root, m: MountPlan) -> None:
    cg = m.cgroup
    assert cg is not None
    base = MountPlan(
        index=m.index,
        kind="fs",
        destination=m.destination,
        source="",
        fstype="",
        flags=m.flags & ~(MS_BIND | MS_REC | MS_REMOUNT),
        cleared=m.cleared,
        propagation=m.propagation,
    )
    if cg.version == 2:
        _mount_cgroup_hierarchy(root, base, m.destination, cg.hierarchies[0], cg.cgroupns)
        return
    with root.at(m.destination, "dir") as (target, resolved, _):
        _check_proc(root, m, resolved)
        mount("tmpfs", target, "tmpfs", DEFAULT_MOUNT_FLAGS, "mode=755")
    _after_mount(root, base, m.destination)
    with root.at(m.destination) as (target, _, _):
        # The hierarchies go into the tmpfs just mounted (empty, ours alone): resolved
        # from an fd of it, one name each, rather than from the rootfs's top every time.
        inner = root
        if root.procfd:
            inner = _Root(root.plan)
            inner.path = target
        for h in cg.hierarchies:
            where = h.name if inner is not root else posixpath.join(m.destination, h.name)
            _mount_cgroup_hierarchy(inner, base, where, h, cg.cgroupns)
    with root.at(m.destination) as (target, _, _):
        dir_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for link, to in cg.symlinks:
                try:
                    os.symlink(to, link, dir_fd=dir_fd)
                except FileExistsError:
                    pass
        finally:
            os.close(dir_fd)
        if m.flags & MS_RDONLY:
            mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | DEFAULT_MOUNT_FLAGS)


def _mount_cgroup_hierarchy(
    root: _Root, base: MountPlan, destination: str, h: CgroupHierarchy, cgroupns: bool
) -> None:
    if cgroupns:
        flags = base.flags | DEFAULT_MOUNT_FLAGS
        with root.at(destination, "dir") as (target, _, _):
            mount("cgroup", target, h.fstype, flags, h.options)
        _after_mount(root, base, destination)
        return
    bind = MountPlan(
        index=base.index,
        kind="bind",
        destination=destination,
        source=_cgroup_source(h),
        fstype="",
        flags=base.flags | MS_BIND | MS_REC,
        cleared=base.cleared,
        propagation=base.propagation,
    )
    _mount_bind(root, bind)


# --------------------------------------------------------------------------- /dev


def _setup_dev(root: _Root) -> None:
    plan = root.plan
    for dev in plan.devices:
        try:
            _make_device(root, dev)
        except OSError as exc:
            raise StartError(
                f"error creating device node {dev.path}: {exc.strerror}",
                step=f"device {dev.path}",
                errno=exc.errno,
            ) from exc
    fd, _ = open_in_root(root.path, "/dev", create="dir")
    dev_fd = os.open(
        f"/proc/self/fd/{fd}" if root.procfd else secure_join(root.path, "/dev"),
        os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
    )
    os.close(fd)
    try:
        try:
            os.unlink("ptmx", dir_fd=dev_fd)
        except FileNotFoundError:
            pass
        os.symlink("pts/ptmx", "ptmx", dir_fd=dev_fd)
        links = [
            ("/proc/self/fd", "fd"),
            ("/proc/self/fd/0", "stdin"),
            ("/proc/self/fd/1", "stdout"),
            ("/proc/self/fd/2", "stderr"),
        ]
        if os.path.exists("/proc/kcore"):
            links.append(("/proc/kcore", "core"))
        for to, name in links:
            try:
                os.symlink(to, name, dir_fd=dev_fd)
            except FileExistsError:
                pass
    finally:
        os.close(dev_fd)


def _make_device(root: _Root, dev: DeviceNode) -> None:
    parent, name = posixpath.split(dev.path)
    fd, _ = open_in_root(root.path, parent, create="dir")
    try:
        parent_fd = os.open(
            f"/proc/self/fd/{fd}" if root.procfd else secure_join(root.path, parent),
            os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC,
        )
    finally:
        os.close(fd)
    try:
        if not root.plan.bind_devices:
            try:
                os.mknod(
                    name,
                    dev.mode | dev.file_type,
                    os.makedev(dev.major, dev.minor),
                    dir_fd=parent_fd,
                )
            except FileExistsError:
                return
            except PermissionError:
                pass
            else:
                os.chmod(name, dev.mode, dir_fd=parent_fd)
                os.chown(name, dev.uid, dev.gid, dir_fd=parent_fd, follow_symlinks=False)
                return
        _bind_device(root, parent_fd, name, dev)
    finally:
        os.close(parent_fd)


def _bind_device(root: _Root, parent_fd: int, name: str, dev: DeviceNode) -> None:
    """Bind the host's node at the same path onto an empty file (user namespaces)."""
    try:
        os.close(
            os.open(
                name,
                os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o644,
                dir_fd=parent_fd,
            )
        )
    except FileExistsError:
        pass
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "device destination is a symlink", dev.path)
        target = f"/proc/self/fd/{fd}" if root.procfd else secure_join(root.path, dev.path)
        mount(dev.path, target, None, MS_BIND)
    finally:
        os.close(fd)


# =========================================================================== entering


def enter_rootfs(plan: RootfsPlan) -> None:
    """Make the rootfs the container's ``/`` (child, after prepare_rootfs and the hooks).

    pivot_root(".", ".") from inside the rootfs, then the old root (now
    stacked on top) is made ``rslave`` and lazily unmounted; or, with
    ``no_pivot``, the host's procfs/sysfs are hidden, the rootfs is moved
    onto ``/`` and chroot'ed into. Then fds 0-2 pointing at the host's
    ``/dev/null`` are reopened on the container's.
    """
    new_root = plan.root_fd
    if new_root is None:
        new_root = os.open(plan.rootfs, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    plan.root_fd = None
    try:
        os.fchdir(new_root)
        if plan.no_pivot:
            _move_root(plan)
        else:
            _pivot_root()
    finally:
        os.close(new_root)
    if plan.setup_dev:
        _reopen_dev_null()


def _pivot_root() -> None:
    """pivot_root(".", ".") with the working directory at the new root."""
    old_root = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    try:
        pivot_root(".", ".")
        # "." is now the old root, stacked on the new one; fchdir to be sure.
        os.fchdir(old_root)
        make_propagation(".", MS_SLAVE | MS_REC)
        umount2(".", MNT_DETACH)
    finally:
        os.close(old_root)
    os.chdir("/")


def _move_root(plan: RootfsPlan) -> None:
    for path in plan.host_pseudo_mounts:
        try:
            make_propagation(path, MS_SLAVE | MS_REC)
        except FileNotFoundError:
            continue  # under one we already unmounted
        try:
            umount2(path, MNT_DETACH)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EPERM):
                raise
            mount("tmpfs", path, "tmpfs", 0, None)
    mount(".", "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def _reopen_dev_null() -> None:
    null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    try:
        rdev = os.fstat(null).st_rdev
        for fd in (0, 1, 2):
            try:
                st = os.fstat(fd)
            except OSError:
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev:
                os.dup2(null, fd)
    finally:
        os.close(null)


def bind_console(pty_slave_path: str) -> None:
    """Bind the container's pty slave onto ``/dev/console`` (child, after enter_rootfs).

    ``/dev/console`` is created as an empty file if missing; a symlink there
    is refused, so the bind cannot be redirected elsewhere.
    """
    try:
        os.close(
            os.open(
                "/dev/console",
                os.O_CREAT | os.O_EXCL | os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
            )
        )
    except FileExistsError:
        pass
    fd = os.open("/dev/console", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise StartError("/dev/console is a symlink", step="console", errno=errno.ELOOP)
        target = f"/proc/self/fd/{fd}" if os.path.isdir("/proc/self/fd") else "/dev/console"
        mount(pty_slave_path, target, None, MS_BIND)
    finally:
        os.close(fd)


# =========================================================================== finalizing


def finalize_rootfs(plan: RootfsPlan) -> None:
    """The read-only parts, once nothing more is created (child, inside the container).

    1. tmpfs mounts (and ``/dev``) that asked for ``ro`` become read-only;
    2. a ``root.readonly`` rootfs is remounted read-only (keeping the locked
       nosuid/nodev/noexec/atime flags it has);
    3. ``readonlyPaths`` are bound onto themselves and remounted read-only;
    4. ``maskedPaths`` get ``/dev/null`` (files) or an empty read-only tmpfs
       (directories) over them; missing paths are skipped in 3 and 4;
    5. ``/`` gets ``rootfsPropagation``, if one was given;
    6. the umask becomes 022 (a process.user.umask is applied later).
    """
    for path, flags in plan.readonly_remounts:
        _remount_readonly(path, flags)
    if plan.readonly:
        _step("readonly-rootfs", "/", _set_readonly)
    for path in plan.readonly_paths:
        _step("readonly-path", path, _readonly_path)
    if plan.masked_paths:
        null = _open_dev_null()
        try:
            for path in plan.masked_paths:
                _step("masked-path", path, lambda p: _mask_path(p, null))
        finally:
            os.close(null)
    if plan.rootfs_propagation:
        _step("rootfs-propagation", "/", lambda p: make_propagation(p, plan.rootfs_propagation))
    os.umask(0o022)


def _step(step: str, path: str, action: Callable[[str], None]) -> None:
    try:
        action(path)
    except OSError as exc:
        raise StartError(
            f"{step} {path}: {exc.strerror or exc}", step=step, errno=exc.errno
        ) from exc


def _remount_readonly(path: str, flags: int) -> None:
    """Remount ``path`` read-only; EBUSY is retried a few times (runc)."""
    flags |= MS_REMOUNT | MS_BIND | MS_RDONLY
    for attempt in range(5):
        try:
            mount(None, path, None, flags)
            return
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt == 4:
                raise StartError(
                    f"remounting {path} read-only: {exc.strerror}",
                    step="readonly-remount",
                    errno=exc.errno,
                ) from exc
            time.sleep(0.1)


def _set_readonly(path: str) -> None:
    locked = mount_flags_of(path) & MS_LOCK_FLAGS
    mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | locked)


def _readonly_path(path: str) -> None:
    try:
        mount(path, path, None, MS_BIND | MS_REC)
    except FileNotFoundError:
        return
    locked = mount_flags_of(path) & MS_LOCK_FLAGS
    mount(path, path, None, locked | MS_BIND | MS_REMOUNT | MS_RDONLY)


def _open_dev_null() -> int:
    """An O_PATH fd of the container's /dev/null, checked to really be the null device."""
    fd = os.open("/dev/null", os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    st = os.fstat(fd)
    if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
        os.close(fd)
        raise StartError(
            "/dev/null is not the null device (1:3); refusing to mask paths with it",
            step="masked-path",
        )
    return fd


def _mask_path(path: str, null_fd: int) -> None:
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return
    if stat.S_ISDIR(st.st_mode):
        mount("tmpfs", path, "tmpfs", MS_RDONLY, None)
        return
    source = f"/proc/self/fd/{null_fd}" if os.path.isdir("/proc/self/fd") else "/dev/null"
    mount(source, path, None, MS_BIND)
