"""Docker's run options as data, and parsers for the string syntaxes the CLI and API share.

:class:`RunOptions` carries ``docker run``'s options under Docker's names
(``cap_add``, ``memory_swap``, ``pid_mode`` ...), already parsed: sizes in
bytes, ulimits as :class:`Ulimit`, devices as :class:`DeviceMapping`.
Namespace modes (``pid_mode``, ``ipc_mode`` ...) are ``"host"``,
``"private"``, ``"shareable"`` or ``"container:<id>"``; the caller resolves a
``container:`` mode into a namespace path it passes to
:func:`bulkhead.engine.spec.build_spec`.

Every parser raises :class:`bulkhead.errors.SpecError` whose ``where`` is the
option's Docker name (``--memory``, ``--ulimit`` ...).
"""

from __future__ import annotations

import os
import re
import stat

import msgspec

from bulkhead.errors import SpecError

#: Docker's CFS period when ``--cpus`` is given (microseconds).
CPU_PERIOD = 100_000

#: Docker's tmpfs defaults, before the user's options.
TMPFS_DEFAULT_OPTIONS = ("noexec", "nosuid", "nodev")

#: RLIMIT names ``--ulimit`` accepts (go-units' ``ulimitNameMapping``).
ULIMIT_NAMES = frozenset(
    {
        "core",
        "cpu",
        "data",
        "fsize",
        "locks",
        "memlock",
        "msgqueue",
        "nice",
        "nofile",
        "nproc",
        "rss",
        "rtprio",
        "rttime",
        "sigpending",
        "stack",
    }
)


class Ulimit(msgspec.Struct, frozen=True):
    """One ``--ulimit name=soft[:hard]``; -1 is unlimited."""

    name: str
    soft: int
    hard: int


class DeviceMapping(msgspec.Struct, kw_only=True):
    """One ``--device host[:container][:perms]``.

    ``type``/``major``/``minor`` (and ``file_mode``, ``uid``, ``gid``) describe
    the host node; :func:`stat_device` fills them in (the only I/O here).
    """

    path_on_host: str
    path_in_container: str
    permissions: str = "rwm"
    type: str | None = None
    major: int | None = None
    minor: int | None = None
    file_mode: int | None = None
    uid: int | None = None
    gid: int | None = None


class ThrottleDevice(msgspec.Struct, frozen=True):
    """One ``--device-read-bps /dev/sda:1mb`` (and the other three) by device numbers."""

    major: int
    minor: int
    rate: int


class WeightDevice(msgspec.Struct, frozen=True):
    """One ``--blkio-weight-device`` entry by device numbers."""

    major: int
    minor: int
    weight: int


class TmpfsMount(msgspec.Struct, frozen=True):
    """One ``--tmpfs /dest[:options]``; ``options`` already merged with Docker's defaults."""

    destination: str
    options: tuple[str, ...]


class SecurityOptions(msgspec.Struct, kw_only=True):
    """What ``--security-opt`` entries say, together."""

    seccomp: str | None = None  # None: default profile; "unconfined"; else a file path
    no_new_privileges: bool = False
    apparmor: str | None = None
    label: list[str] = msgspec.field(default_factory=list)
    systempaths_unconfined: bool = False


class RunOptions(msgspec.Struct, kw_only=True):
    """``docker run``'s options, parsed, under Docker's names.

    ``entrypoint`` None is the image's, ``[]`` none; ``cmd`` None is the
    image's. ``env`` already includes ``--env-file`` entries. Sizes are bytes,
    ``memory_swap`` -1 is unlimited, ``cpus`` is a float (``--cpus 1.5``).
    """

    env: list[str] = msgspec.field(default_factory=list)
    workdir: str | None = None
    user: str | None = None
    group_add: list[str] = msgspec.field(default_factory=list)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    hostname: str | None = None
    domainname: str | None = None
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    read_only: bool = False
    privileged: bool = False
    cap_add: list[str] = msgspec.field(default_factory=list)
    cap_drop: list[str] = msgspec.field(default_factory=list)
    security_opt: list[str] = msgspec.field(default_factory=list)
    ulimits: list[Ulimit] = msgspec.field(default_factory=list)
    sysctls: dict[str, str] = msgspec.field(default_factory=dict)
    memory: int | None = None
    memory_reservation: int | None = None
    memory_swap: int | None = None
    memory_swappiness: int | None = None
    oom_kill_disable: bool = False
    oom_score_adj: int | None = None
    cpus: float | None = None
    cpu_shares: int | None = None
    cpu_quota: int | None = None
    cpu_period: int | None = None
    cpuset_cpus: str | None = None
    cpuset_mems: str | None = None
    pids_limit: int | None = None
    blkio_weight: int | None = None
    blkio_weight_device: list[WeightDevice] = msgspec.field(default_factory=list)
    devices: list[DeviceMapping] = msgspec.field(default_factory=list)
    device_read_bps: list[ThrottleDevice] = msgspec.field(default_factory=list)
    device_write_bps: list[ThrottleDevice] = msgspec.field(default_factory=list)
    device_read_iops: list[ThrottleDevice] = msgspec.field(default_factory=list)
    device_write_iops: list[ThrottleDevice] = msgspec.field(default_factory=list)
    shm_size: int | None = None
    tmpfs: list[TmpfsMount] = msgspec.field(default_factory=list)
    init: bool = False
    init_path: str | None = None
    tty: bool = False
    stdin_open: bool = False
    stop_signal: str | None = None
    network_mode: str = "none"
    pid_mode: str | None = None
    ipc_mode: str | None = None
    uts_mode: str | None = None
    userns_mode: str | None = None
    cgroupns_mode: str | None = None
    uid_maps: list[tuple[int, int, int]] = msgspec.field(default_factory=list)
    gid_maps: list[tuple[int, int, int]] = msgspec.field(default_factory=list)


# --- parsers -------------------------------------------------------------------

_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?) ?([kKmMgGtTpP])?[iI]?[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_memory(value: str, option: str = "--memory") -> int:
    """Docker's ``RAMInBytes``: ``512m``, ``1g``, ``1.5GiB``, ``1024`` (bytes); units are 1024s."""
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise SpecError(f"invalid size: {value!r}", where=option)
    unit = (m.group(2) or "").lower()
    return int(float(m.group(1)) * _UNITS[unit])


def parse_ulimit(value: str) -> Ulimit:
    """``nofile=1024:2048`` or ``nproc=512`` (hard = soft); -1 is unlimited."""
    name, sep, limits = value.partition("=")
    if not sep or not name:
        raise SpecError(f"invalid ulimit argument: {value!r}", where="--ulimit")
    if name not in ULIMIT_NAMES:
        raise SpecError(f"invalid ulimit type: {name!r}", where="--ulimit")
    soft_s, _, hard_s = limits.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if hard_s else soft
    except ValueError:
        raise SpecError(f"invalid ulimit value: {limits!r}", where="--ulimit") from None
    for v in (soft, hard):
        if v < -1:
            raise SpecError(f"invalid ulimit value: {limits!r}", where="--ulimit")
    if hard != -1 and (soft == -1 or soft > hard):
        raise SpecError(
            f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}",
            where="--ulimit",
        )
    return Ulimit(name, soft, hard)


def _valid_perms(p: str) -> bool:
    return bool(p) and len(p) <= 3 and all(c in "rwm" for c in p) and len(set(p)) == len(p)


def parse_device(value: str) -> DeviceMapping:
    """``/dev/sda``, ``/dev/sda:/dev/xvda``, ``/dev/sda:rw``, ``/dev/sda:/dev/xvda:rwm``."""
    parts = value.split(":")
    perms = "rwm"
    if len(parts) == 1:
        src = dst = parts[0]
    elif len(parts) == 2:
        src = parts[0]
        if _valid_perms(parts[1]):
            dst, perms = src, parts[1]
        else:
            dst = parts[1]
    elif len(parts) == 3:
        src, dst, perms = parts
        if not _valid_perms(perms):
            raise SpecError(f"invalid device mode: {perms!r}", where="--device")
    else:
        raise SpecError(f"invalid device specification: {value!r}", where="--device")
    if not src.startswith("/") or not dst.startswith("/"):
        raise SpecError(f"invalid device specification: {value!r}", where="--device")
    return DeviceMapping(path_on_host=src, path_in_container=dst, permissions=perms)


def stat_device(dev: DeviceMapping) -> DeviceMapping:
    """``dev`` with type, numbers, mode and owner from the host node (follows symlinks)."""
    try:
        st = os.stat(dev.path_on_host)
    except OSError as exc:
        raise SpecError(
            f"error gathering device information: {dev.path_on_host}: {exc.strerror}",
            where="--device",
        ) from None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise SpecError(f"{dev.path_on_host} is not a device node", where="--device")
    return msgspec.structs.replace(
        dev,
        type=kind,
        major=os.major(st.st_rdev),
        minor=os.minor(st.st_rdev),
        file_mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
    )


_TMPFS_FLAG_PAIRS = {
    "exec": "noexec",
    "noexec": "exec",
    "suid": "nosuid",
    "nosuid": "suid",
    "dev": "nodev",
    "nodev": "dev",
    "rw": "ro",
    "ro": "rw",
}
_TMPFS_KEYS = {"size", "mode", "uid", "gid", "nr_inodes", "nr_blocks", "mpol", "huge", "tmpcopyup"}
_TMPFS_FLAGS = {
    *_TMPFS_FLAG_PAIRS,
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "sync",
    "async",
    "dirsync",
    "mand",
    "nomand",
    "tmpcopyup",
    "notmpcopyup",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
}


def parse_tmpfs(value: str) -> TmpfsMount:
    """``/run`` or ``/run:rw,size=64m``; Docker's ``noexec,nosuid,nodev`` go first
    unless the user's options say otherwise (``exec`` drops ``noexec``)."""
    dest, _, raw = value.partition(":")
    if not dest.startswith("/"):
        raise SpecError(f"invalid mount path {dest!r}: must be absolute", where="--tmpfs")
    if os.path.normpath(dest) == "/":
        raise SpecError("invalid mount path '/'", where="--tmpfs")
    user: list[str] = []
    for opt in filter(None, raw.split(",")):
        key, eq, val = opt.partition("=")
        if eq:
            if key not in _TMPFS_KEYS or not val:
                raise SpecError(f"invalid tmpfs option {opt!r}", where="--tmpfs")
            if key == "size":
                opt = f"size={parse_memory(val, '--tmpfs')}"
        elif opt not in _TMPFS_FLAGS:
            raise SpecError(f"invalid tmpfs option {opt!r}", where="--tmpfs")
        user.append(opt)
    merged = [
        o for o in TMPFS_DEFAULT_OPTIONS if _TMPFS_FLAG_PAIRS[o] not in user and o not in user
    ]
    merged.extend(o for o in user if o not in merged)
    return TmpfsMount(os.path.normpath(dest), tuple(merged))


def parse_security_opt(values: list[str]) -> SecurityOptions:
    """``seccomp=unconfined|FILE``, ``no-new-privileges[=true|false]``, ``apparmor=P``,
    ``label=...``, ``systempaths=unconfined`` (``:`` accepted for ``=`` as Docker does)."""
    out = SecurityOptions()
    for opt in values:
        if opt in ("no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"):
            out.no_new_privileges = True
            continue
        if opt in ("no-new-privileges=false", "no-new-privileges:false"):
            out.no_new_privileges = False
            continue
        key, sep, val = opt.partition("=")
        if not sep:
            key, sep, val = opt.partition(":")
        if not sep:
            raise SpecError(f"invalid --security-opt: {opt!r}", where="--security-opt")
        if key == "seccomp":
            if not val:
                raise SpecError(f"invalid --security-opt: {opt!r}", where="--security-opt")
            out.seccomp = val
        elif key == "apparmor":
            out.apparmor = val
        elif key == "label":
            out.label.append(val)
        elif key == "systempaths" and val == "unconfined":
            out.systempaths_unconfined = True
        elif key == "no-new-privileges":
            raise SpecError(f"invalid --security-opt 2: {opt!r}", where="--security-opt")
        else:
            raise SpecError(f"invalid --security-opt: {opt!r}", where="--security-opt")
    return out


def parse_cpus(value: str | float) -> tuple[int, int]:
    """``--cpus 1.5`` -> (quota, period) = (150000, 100000), as Docker's NanoCPUs."""
    try:
        cpus = float(value)
    except ValueError:
        raise SpecError(f"failed to parse {value!r} as a rational number", where="--cpus") from None
    if not cpus > 0 or cpus != cpus or cpus == float("inf"):
        raise SpecError(f"range of CPUs is from 0.01 to the host's CPUs: {value}", where="--cpus")
    nano = round(cpus * 1e9)
    quota = nano * CPU_PERIOD // 1_000_000_000
    if quota < 1000:
        raise SpecError(f"range of CPUs is from 0.01 to the host's CPUs: {value}", where="--cpus")
    return quota, CPU_PERIOD


#: What runc's ``devices.HostDevices`` skips under /dev (``--privileged``).
_HOST_DEV_SKIP_DIRS = frozenset({"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"})


def host_devices(root: str = "/dev") -> list[DeviceMapping]:
    """Every device node under ``root`` (not following symlinks), as ``--privileged`` adds them.

    The caller puts them in :attr:`RunOptions.devices` of a privileged container.
    """
    out: list[DeviceMapping] = []
    stack = [root]
    while stack:
        current = stack.pop()
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError:
            continue
        for entry in entries:
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode):
                if entry.name not in _HOST_DEV_SKIP_DIRS:
                    stack.append(entry.path)
                continue
            if entry.name == "console":
                continue
            if stat.S_ISCHR(st.st_mode):
                kind = "c"
            elif stat.S_ISBLK(st.st_mode):
                kind = "b"
            else:
                continue
            out.append(
                DeviceMapping(
                    path_on_host=entry.path,
                    path_in_container=entry.path,
                    type=kind,
                    major=os.major(st.st_rdev),
                    minor=os.minor(st.st_rdev),
                    file_mode=stat.S_IMODE(st.st_mode),
                    uid=st.st_uid,
                    gid=st.st_gid,
                )
            )
    return out
