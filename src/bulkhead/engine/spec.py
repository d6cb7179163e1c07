"""Image config + Docker run options -> an OCI runtime spec (config.json) with Docker's defaults.

:func:`build_spec` is what moby's ``daemon/oci_linux.go`` does for ``docker
run``, written as one pure function: the 14 default capabilities, the masked
and read-only ``/proc`` and ``/sys`` paths, Docker's default mounts, the
devices cgroup that denies everything but the standard nodes, the default
seccomp profile rendered for the container's capabilities, RLIMIT_NOFILE
1024:524288 (capped at the host's hard limit), and every option of
:class:`~bulkhead.engine.options.RunOptions` on top.

The only I/O: reading ``/etc/passwd`` and ``/etc/group`` inside ``rootfs``
(resolved inside it, symlinks never leave it), the seccomp profile file, and
the host's RLIMIT_NOFILE hard limit when the caller does not pass one.
"""

from __future__ import annotations

import os
import platform
import resource
from collections.abc import Mapping
from typing import Any

from bulkhead.engine.options import (
    CPU_PERIOD,
    RunOptions,
    ThrottleDevice,
    parse_cpus,
    parse_security_opt,
)
from bulkhead.errors import SpecError
from bulkhead.oci import defaults as oci_defaults
from bulkhead.oci.image_spec import ImageConfig
from bulkhead.oci.runtime_spec import CAPABILITIES
from bulkhead.oci.seccomp_profile import load_profile, render_profile

OCI_VERSION = "1.2.0"

#: Docker's default capabilities (moby ``oci/caps.DefaultCapabilities``).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

#: Every capability the kernel knows, in number order (the runtime spec's list).
ALL_CAPABILITIES = CAPABILITIES

#: Docker's masked paths: runc's defaults (moby ``oci/defaults.go`` has the same list) plus
#: powercap, which later Docker releases mask.
DEFAULT_MASKED_PATHS = (*oci_defaults.DEFAULT_MASKED_PATHS, "/sys/devices/virtual/powercap")

#: Docker's read-only paths (the same as runc's).
DEFAULT_READONLY_PATHS = tuple(oci_defaults.DEFAULT_READONLY_PATHS)

#: The devices cgroup of an unprivileged container (moby ``oci/defaults.go``).
DEFAULT_DEVICE_RULES: tuple[dict[str, Any], ...] = (
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # zero
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # null
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # urandom
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # random
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # tty
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},  # console
    {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},  # fuse
)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_SHM_SIZE = 64 * 1024 * 1024
DEFAULT_NOFILE_SOFT = 1024
DEFAULT_NOFILE_HARD = 524288
RLIM_INFINITY = 2**64 - 1
#: Docker refuses a memory limit below this.
MIN_MEMORY = 6 * 1024 * 1024

#: Where Docker's default seccomp profile is looked for when the caller passes none:
#: ``$BULKHEAD_SECCOMP_PROFILE``, then the copy shipped in the package (oci/data/).
SECCOMP_PROFILE_CANDIDATES = (
    os.environ.get("BULKHEAD_SECCOMP_PROFILE", ""),
    os.path.join(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "oci",
        "data",
        "docker-default-seccomp.json",
    ),
)

_profile_cache: dict[str, dict[str, Any]] = {}


def default_seccomp_profile() -> dict[str, Any]:
    """Docker's default profile (unrendered), read once per process."""
    for candidate in SECCOMP_PROFILE_CANDIDATES:
        if candidate and os.path.isfile(candidate):
            path = os.path.normpath(candidate)
            if path not in _profile_cache:
                _profile_cache[path] = load_profile(path)
            return _profile_cache[path]
    raise SpecError("Docker's default seccomp profile was not found", where="--security-opt")


_NS_OPTIONS = {
    "pid": "--pid",
    "ipc": "--ipc",
    "uts": "--uts",
    "user": "--userns",
    "cgroup": "--cgroupns",
    "network": "--network",
}


def build_spec(
    image_config: ImageConfig,
    opts: RunOptions,
    *,
    rootfs: str,
    container_id: str,
    hostname_default: str | None = None,
    host_rlimit_nofile_hard: int | None = None,
    namespaces: dict[str, str] | None = None,
    cgroup_v2: bool | None = None,
    seccomp_profile: Mapping[str, Any] | None = None,
    arch: str | None = None,
    kernel_release: str | None = None,
    apparmor_enabled: bool = False,
) -> dict[str, Any]:
    """The config.json document (plain JSON data) for a container of ``image_config``.

    ``rootfs`` is the container's root filesystem (read for /etc/passwd and
    /etc/group); ``namespaces`` maps a namespace type (``pid``, ``ipc``,
    ``uts``, ``network``, ``cgroup``, ``user``) to the path of one to join,
    which a ``container:<id>`` mode requires. ``hostname_default`` defaults to
    the first 12 characters of ``container_id``. ``seccomp_profile`` is
    Docker's default profile as data (:func:`default_seccomp_profile`
    when None). ``apparmor_enabled`` (the host has AppArmor) sets Docker's
    ``docker-default`` profile or ``--security-opt apparmor=``; without it
    AppArmor options are ignored, as Docker does. Errors are :class:`SpecError` naming the option.
    """
    cfg = image_config.config
    ns_paths = dict(namespaces or {})
    sec = parse_security_opt(opts.security_opt)

    caps = _capabilities(opts)
    args = _args(cfg.entrypoint if cfg else None, cfg.cmd if cfg else None, opts)
    uts_host = opts.uts_mode == "host" or opts.network_mode == "host"
    hostname = opts.hostname or hostname_default or container_id[:12]
    env = _env(cfg.env if cfg else None, opts, hostname)
    uid, gid, additional = _user(rootfs, opts.user or (cfg.user if cfg else None) or "", opts)

    process: dict[str, Any] = {
        "terminal": opts.tty,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env,
        "cwd": opts.workdir or (cfg.working_dir if cfg else None) or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": _rlimits(opts, host_rlimit_nofile_hard),
        "noNewPrivileges": sec.no_new_privileges,
    }
    if additional:
        process["user"]["additionalGids"] = additional
    if opts.oom_score_adj is not None:
        if not -1000 <= opts.oom_score_adj <= 1000:
            raise SpecError(
                f"invalid value {opts.oom_score_adj}, range is -1000 to 1000",
                where="--oom-score-adj",
            )
        process["oomScoreAdj"] = opts.oom_score_adj
    if not process["cwd"].startswith("/"):
        raise SpecError(f"the working directory {process['cwd']!r} is not absolute", where="-w")
    if apparmor_enabled and not opts.privileged:
        aa = sec.apparmor or "docker-default"
        if aa != "unconfined":
            process["apparmorProfile"] = aa

    ns_list = _namespaces(opts, ns_paths, cgroup_v2)
    linux: dict[str, Any] = {
        "namespaces": ns_list,
        "resources": _resources(opts),
        "cgroupsPath": f"/bulkhead/{container_id}",
    }
    if opts.privileged or sec.systempaths_unconfined:
        pass
    else:
        linux["maskedPaths"] = list(DEFAULT_MASKED_PATHS)
        linux["readonlyPaths"] = list(DEFAULT_READONLY_PATHS)
    if opts.sysctls:
        linux["sysctl"] = dict(opts.sysctls)
    devices = _devices(opts)
    if devices:
        linux["devices"] = devices
    seccomp = _seccomp(sec.seccomp, opts, caps, seccomp_profile, arch, kernel_release)
    if seccomp is not None:
        linux["seccomp"] = seccomp
    if any(ns["type"] == "user" and "path" not in ns for ns in ns_list):
        linux["uidMappings"] = [
            {"containerID": c, "hostID": h, "size": s} for c, h, s in opts.uid_maps
        ]
        linux["gidMappings"] = [
            {"containerID": c, "hostID": h, "size": s} for c, h, s in opts.gid_maps
        ]

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": opts.read_only},
        "mounts": _mounts(opts),
        "linux": linux,
    }
    if not uts_host:
        spec["hostname"] = hostname
        if opts.domainname:
            spec["domainname"] = opts.domainname
    annotations = dict(cfg.labels or {}) if cfg else {}
    annotations.update(opts.labels)
    if annotations:
        spec["annotations"] = annotations
    return spec


# --- process -------------------------------------------------------------------


def normalize_capability(cap: str, option: str) -> str:
    """``net_admin``, ``NET_ADMIN``, ``cap_net_admin`` -> ``CAP_NET_ADMIN``; ``ALL`` stays."""
    name = cap.strip().upper()
    if name == "ALL":
        return name
    if not name.startswith("CAP_"):
        name = "CAP_" + name
    if name not in ALL_CAPABILITIES:
        raise SpecError(f"unknown capability: {cap!r}", where=option)
    return name


def _capabilities(opts: RunOptions) -> list[str]:
    """moby's ``caps.TweakCapabilities``: adds win over drops, ALL in either."""
    adds = [normalize_capability(c, "--cap-add") for c in opts.cap_add]
    drops = [normalize_capability(c, "--cap-drop") for c in opts.cap_drop]
    if opts.privileged or "ALL" in adds:
        return list(ALL_CAPABILITIES)
    base: list[str] = [] if "ALL" in drops else list(DEFAULT_CAPABILITIES)
    caps = [c for c in base if c not in drops or c in adds]
    caps.extend(c for c in adds if c not in caps)
    return caps


def _args(
    image_entrypoint: list[str] | None, image_cmd: list[str] | None, opts: RunOptions
) -> list[str]:
    """Docker's rule: ``--entrypoint`` replaces the image's and resets its Cmd."""
    if opts.entrypoint is not None:
        entrypoint = list(opts.entrypoint)
        cmd = list(opts.cmd or [])
    else:
        entrypoint = list(image_entrypoint or [])
        cmd = list(opts.cmd) if opts.cmd is not None else list(image_cmd or [])
    args = entrypoint + cmd
    if not args:
        raise SpecError("no command specified", where="--entrypoint")
    if opts.init:
        if not opts.init_path:
            raise SpecError("--init needs the init binary's path (init_path)", where="--init")
        args = [opts.init_path, "--", *args]
    return args


def _env(image_env: list[str] | None, opts: RunOptions, hostname: str) -> list[str]:
    merged: dict[str, str] = {}
    order: list[str] = []

    def put(entry: str) -> None:
        key, _, _ = entry.partition("=")
        if not key:
            raise SpecError(f"invalid environment variable: {entry!r}", where="-e")
        if key not in merged:
            order.append(key)
        merged[key] = entry

    put(f"PATH={DEFAULT_PATH}")
    put(f"HOSTNAME={hostname}")
    if opts.tty:
        put("TERM=xterm")
    for entry in image_env or ():
        put(entry)
    for entry in opts.env:
        put(entry)
    return [merged[k] for k in order]


def _rlimits(opts: RunOptions, host_hard: int | None) -> list[dict[str, Any]]:
    if host_hard is None:
        host_hard = host_nofile_hard()
    hard = DEFAULT_NOFILE_HARD if host_hard < 0 else min(DEFAULT_NOFILE_HARD, host_hard)
    limits: dict[str, tuple[int, int]] = {"nofile": (min(DEFAULT_NOFILE_SOFT, hard), hard)}
    for ul in opts.ulimits:
        limits[ul.name] = (ul.soft, ul.hard)
    return [
        {
            "type": "RLIMIT_" + name.upper(),
            "soft": RLIM_INFINITY if soft == -1 else soft,
            "hard": RLIM_INFINITY if hard_ == -1 else hard_,
        }
        for name, (soft, hard_) in limits.items()
    ]


def host_nofile_hard() -> int:
    """This process's RLIMIT_NOFILE hard limit (-1 when unlimited)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return -1 if hard == resource.RLIM_INFINITY else hard


# --- user ----------------------------------------------------------------------


def _read_db(rootfs: str, path: str) -> list[list[str]]:
    """The lines of ``/etc/passwd``/``/etc/group`` inside ``rootfs``, split on ``:``."""
    from bulkhead.runtime.securejoin import secure_join

    try:
        resolved = secure_join(rootfs, path)
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return []
    with os.fdopen(fd, "rb") as f:
        text = f.read(4 << 20).decode("utf-8", "replace")
    return [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]


def _user(rootfs: str, user: str, opts: RunOptions) -> tuple[int, int, list[int]]:
    """Resolve ``uid``, ``name``, ``uid:gid``, ``name:group`` as runc's ``user.GetExecUser``."""
    name, _, group = user.partition(":")
    passwd = _read_db(rootfs, "/etc/passwd")
    groups = _read_db(rootfs, "/etc/group")
    uid, gid, username = 0, 0, "root"
    if name:
        entry = next((e for e in passwd if len(e) >= 4 and e[0] == name), None)
        if entry is None and name.isdigit():
            entry = next((e for e in passwd if len(e) >= 4 and e[2] == name), None)
            uid = int(name)
            if entry is not None:
                gid, username = _int(entry[3], "-u"), entry[0]
            else:
                username = ""
        elif entry is None:
            raise SpecError(f"unable to find user {name}: no matching entries in passwd file", "-u")
        else:
            uid, gid, username = _int(entry[2], "-u"), _int(entry[3], "-u"), entry[0]
    else:
        entry = next((e for e in passwd if len(e) >= 4 and e[0] == "root"), None)
        if entry is not None:
            uid, gid = _int(entry[2], "-u"), _int(entry[3], "-u")
    if group:
        gid = _group_id(groups, group, "-u")
    additional: list[int] = []
    if username:
        for g in groups:
            if len(g) >= 4 and username in g[3].split(","):
                g_id = _int(g[2], "-u")
                if g_id != gid and g_id not in additional:
                    additional.append(g_id)
    for extra in opts.group_add:
        g_id = _group_id(groups, extra, "--group-add")
        if g_id not in additional:
            additional.append(g_id)
    if uid > 2**31 - 1 or gid > 2**31 - 1:
        raise SpecError(f"user {user!r} is out of range", where="-u")
    return uid, gid, additional


def _group_id(groups: list[list[str]], group: str, option: str) -> int:
    entry = next((g for g in groups if len(g) >= 3 and g[0] == group), None)
    if entry is not None:
        return _int(entry[2], option)
    if group.isdigit():
        return int(group)
    raise SpecError(f"unable to find group {group}: no matching entries in group file", option)


def _int(value: str, option: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise SpecError(f"malformed id {value!r} in the rootfs's user database", option) from None


# --- mounts, namespaces, devices -------------------------------------------------


def _mounts(opts: RunOptions) -> list[dict[str, Any]]:
    sys_ro = [] if opts.privileged else ["ro"]
    mounts: list[dict[str, Any]] = [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": [*(sys_ro or ["rw"]), "nosuid", "noexec", "nodev"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*(sys_ro or ["rw"]), "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
    ]  # fmt: skip
    ipc = opts.ipc_mode or "private"
    if ipc == "host":
        mounts.append(
            {
                "destination": "/dev/shm",
                "type": "bind",
                "source": "/dev/shm",
                "options": ["rbind", "nosuid", "noexec", "nodev"],
            }
        )
    elif not ipc.startswith("container:") and ipc != "none":
        size = opts.shm_size if opts.shm_size is not None else DEFAULT_SHM_SIZE
        if size <= 0:
            raise SpecError("SHM size can not be less than 0", where="--shm-size")
        mounts.append(
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={size}"],
            }
        )
    taken = {m["destination"] for m in mounts}
    for t in opts.tmpfs:
        if t.destination in taken:
            mounts = [m for m in mounts if m["destination"] != t.destination]
        mounts.append(
            {"destination": t.destination, "type": "tmpfs", "source": "tmpfs",
             "options": list(t.options)}
        )  # fmt: skip
    return mounts


def _namespaces(
    opts: RunOptions, paths: dict[str, str], cgroup_v2: bool | None
) -> list[dict[str, str]]:
    if cgroup_v2 is None:
        cgroup_v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    modes = {
        "mount": "private",
        "network": {"none": "private", "host": "host", "default": "private"}.get(
            opts.network_mode, opts.network_mode
        ),
        "uts": opts.uts_mode or "private",
        "pid": opts.pid_mode or "private",
        "ipc": opts.ipc_mode or "private",
        "cgroup": opts.cgroupns_mode or ("private" if cgroup_v2 else "host"),
        "user": opts.userns_mode or "host",
    }
    if opts.network_mode.startswith("container:"):
        modes["uts"] = "host" if opts.uts_mode == "host" else opts.network_mode
    out: list[dict[str, str]] = []
    for kind in ("mount", "network", "uts", "pid", "ipc", "cgroup", "user"):
        mode = modes[kind]
        option = _NS_OPTIONS.get(kind, kind)
        if mode == "host":
            continue
        if kind in paths:
            out.append({"type": kind, "path": paths[kind]})
        elif mode.startswith("container:"):
            raise SpecError(f"{mode!r} needs the namespace path of that container", where=option)
        elif mode in ("private", "shareable", "none", ""):
            if kind == "user" and not (opts.uid_maps and opts.gid_maps):
                raise SpecError("a private user namespace needs uid and gid maps", where=option)
            out.append({"type": kind})
        else:
            raise SpecError(f"invalid mode {mode!r}", where=option)
    return out


def _devices(opts: RunOptions) -> list[dict[str, Any]]:
    out = []
    for d in opts.devices:
        if d.type is None or d.major is None or d.minor is None:
            raise SpecError(f"device {d.path_on_host} was not looked up", where="--device")
        entry: dict[str, Any] = {
            "path": d.path_in_container,
            "type": d.type,
            "major": d.major,
            "minor": d.minor,
        }
        if d.file_mode is not None:
            entry["fileMode"] = d.file_mode
        if d.uid is not None:
            entry["uid"] = d.uid
        if d.gid is not None:
            entry["gid"] = d.gid
        out.append(entry)
    return out


# --- resources -------------------------------------------------------------------


def _throttle(devs: list[ThrottleDevice]) -> list[dict[str, int]]:
    return [{"major": d.major, "minor": d.minor, "rate": d.rate} for d in devs]


def update_resources(opts: RunOptions) -> dict[str, Any]:
    """The ``linux.resources`` of ``opts`` without device rules: what ``docker update``
    applies to a running container (:mod:`bulkhead.engine.update`)."""
    res = _resources(opts)
    res.pop("devices", None)
    return res


def _resources(opts: RunOptions) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if opts.privileged:
        res["devices"] = [{"allow": True, "access": "rwm"}]
    else:
        rules = [dict(r) for r in DEFAULT_DEVICE_RULES]
        for d in opts.devices:
            rules.append(
                {"allow": True, "type": d.type, "major": d.major, "minor": d.minor,
                 "access": d.permissions}
            )  # fmt: skip
        res["devices"] = rules

    mem: dict[str, Any] = {}
    if opts.memory is not None and opts.memory > 0:
        if opts.memory < MIN_MEMORY:
            raise SpecError("Minimum memory limit allowed is 6MB", where="--memory")
        mem["limit"] = opts.memory
    if opts.memory_swap is not None and opts.memory_swap != 0:
        if opts.memory_swap != -1:
            if not mem.get("limit"):
                raise SpecError(
                    "You should always set the Memory limit when using Memoryswap limit",
                    where="--memory-swap",
                )
            if opts.memory_swap < mem["limit"]:
                raise SpecError(
                    "Minimum memoryswap limit should be larger than memory limit",
                    where="--memory-swap",
                )
        mem["swap"] = opts.memory_swap
    elif "limit" in mem:
        mem["swap"] = 2 * mem["limit"]
    if opts.memory_reservation:
        if "limit" in mem and opts.memory_reservation > mem["limit"]:
            raise SpecError(
                "Minimum memory limit can not be less than memory reservation limit",
                where="--memory-reservation",
            )
        mem["reservation"] = opts.memory_reservation
    if opts.memory_swappiness is not None:
        if not 0 <= opts.memory_swappiness <= 100:
            raise SpecError("valid memory swappiness range is 0-100", where="--memory-swappiness")
        mem["swappiness"] = opts.memory_swappiness
    if opts.oom_kill_disable:
        mem["disableOOMKiller"] = True
    if mem:
        res["memory"] = mem

    cpu: dict[str, Any] = {}
    if opts.cpus is not None:
        if opts.cpu_quota or opts.cpu_period:
            raise SpecError(
                "Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set",
                where="--cpus",
            )
        cpu["quota"], cpu["period"] = parse_cpus(opts.cpus)
    if opts.cpu_shares:
        if opts.cpu_shares < 0:
            raise SpecError("invalid CPU shares", where="--cpu-shares")
        cpu["shares"] = opts.cpu_shares
    if opts.cpu_period:
        if not 1000 <= opts.cpu_period <= 1_000_000:
            raise SpecError(
                "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s",
                where="--cpu-period",
            )
        cpu["period"] = opts.cpu_period
    if opts.cpu_quota:
        if 0 < opts.cpu_quota < 1000:
            raise SpecError("CPU cfs quota can not be less than 1ms (i.e. 1000)", "--cpu-quota")
        cpu["quota"] = opts.cpu_quota
        cpu.setdefault("period", CPU_PERIOD)
    if opts.cpuset_cpus:
        cpu["cpus"] = opts.cpuset_cpus
    if opts.cpuset_mems:
        cpu["mems"] = opts.cpuset_mems
    if cpu:
        res["cpu"] = cpu

    if opts.pids_limit is not None and opts.pids_limit != 0:
        res["pids"] = {"limit": -1 if opts.pids_limit < 0 else opts.pids_limit}

    blkio: dict[str, Any] = {}
    if opts.blkio_weight:
        if not 10 <= opts.blkio_weight <= 1000:
            raise SpecError("range of blkio weight is from 10 to 1000", where="--blkio-weight")
        blkio["weight"] = opts.blkio_weight
    if opts.blkio_weight_device:
        blkio["weightDevice"] = [
            {"major": d.major, "minor": d.minor, "weight": d.weight}
            for d in opts.blkio_weight_device
        ]
    for key, devs in (
        ("throttleReadBpsDevice", opts.device_read_bps),
        ("throttleWriteBpsDevice", opts.device_write_bps),
        ("throttleReadIOPSDevice", opts.device_read_iops),
        ("throttleWriteIOPSDevice", opts.device_write_iops),
    ):
        if devs:
            blkio[key] = _throttle(devs)
    if blkio:
        res["blockIO"] = blkio
    return res


# --- seccomp ---------------------------------------------------------------------


def _seccomp(
    setting: str | None,
    opts: RunOptions,
    caps: list[str],
    profile: Mapping[str, Any] | None,
    arch: str | None,
    kernel_release: str | None,
) -> dict[str, Any] | None:
    if opts.privileged or setting == "unconfined":
        return None
    machine = arch or platform.machine()
    if setting is not None:
        return render_profile(_custom_profile(setting), caps, machine, kernel_release)
    if profile is None:
        profile = default_seccomp_profile()
    return render_profile(profile, caps, machine, kernel_release)


def _custom_profile(setting: str) -> dict[str, Any]:
    """``--security-opt seccomp=...``: the docker CLI sends the file's JSON content, others a path."""
    if not setting.lstrip().startswith("{"):
        return load_profile(setting)
    import json

    try:
        data = json.loads(setting)
    except ValueError as exc:
        raise SpecError(f"invalid seccomp profile JSON: {exc}", where="--security-opt") from None
    if not isinstance(data, dict):
        raise SpecError("a seccomp profile must be a JSON object", where="--security-opt")
    return data
