"""``run``/``create`` flags → the Engine API's create body, exactly as the docker CLI builds it.

The body (``POST /containers/create``) is Docker's *ContainerCreateRequest*:
the container *Config* (image, command, environment, stdio wiring) with
``HostConfig`` (resources, mounts, namespaces, security) and
``NetworkingConfig`` inside it. Docker 28's client sends every HostConfig
field, zero or not, in Go's struct order; so does this module, so that the
daemon sees the same bytes whichever client made them (the unit tests
compare against bodies captured from the real ``docker`` binary).

What the client resolves itself, as docker does: ``-e NAME`` takes NAME
from the client's environment, ``--env-file``/``--label-file`` are read
here, a ``seccomp=FILE`` security option carries the file's (compacted)
JSON, sizes (``64m``, ``1g``) become bytes (binary units), ``--cpus`` becomes
``NanoCpus``, ``-v`` with a host path becomes a ``Binds`` entry and without
one an anonymous ``Volumes`` entry. The query string carries ``name`` and
``platform``; ``--pull`` stays on the client (pull before create).
"""

from __future__ import annotations

import os

from bulkhead.cli.flags import INT, LIST, STR, Command, Flag, FlagError, Parsed, UsageError

TYPE_CHECKING = False  # typing, dataclasses and fractions cost ~10 ms on every `run`
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

# --- the flags ------------------------------------------------------------------

CREATE_FLAGS: list[Flag] = [
    Flag("add-host", kind=LIST, help="Add a custom host-to-IP mapping (host:ip)"),
    Flag("attach", "a", LIST, "Attach to STDIN, STDOUT or STDERR"),
    Flag("blkio-weight", kind=INT, help="Block IO (relative weight), between 10 and 1000"),
    Flag("blkio-weight-device", kind=LIST, help="Block IO weight (relative device weight)"),
    Flag("cap-add", kind=LIST, help="Add Linux capabilities"),
    Flag("cap-drop", kind=LIST, help="Drop Linux capabilities"),
    Flag("cgroup-parent", kind=STR, help="Optional parent cgroup for the container"),
    Flag("cgroupns", kind=STR, help="Cgroup namespace to use (host|private)"),
    Flag("cidfile", kind=STR, help="Write the container ID to the file"),
    Flag("cpu-period", kind=INT, help="Limit CPU CFS (Completely Fair Scheduler) period"),
    Flag("cpu-quota", kind=INT, help="Limit CPU CFS (Completely Fair Scheduler) quota"),
    Flag("cpu-rt-period", kind=INT, help="Limit CPU real-time period in microseconds"),
    Flag("cpu-rt-runtime", kind=INT, help="Limit CPU real-time runtime in microseconds"),
    Flag("cpu-shares", "c", INT, "CPU shares (relative weight)"),
    Flag("cpus", kind=STR, help="Number of CPUs"),
    Flag("cpuset-cpus", kind=STR, help="CPUs in which to allow execution (0-3, 0,1)"),
    Flag("cpuset-mems", kind=STR, help="MEMs in which to allow execution (0-3, 0,1)"),
    Flag("device", kind=LIST, help="Add a host device to the container"),
    Flag("device-cgroup-rule", kind=LIST, help="Add a rule to the cgroup allowed devices list"),
    Flag("device-read-bps", kind=LIST, help="Limit read rate (bytes per second) from a device"),
    Flag("device-read-iops", kind=LIST, help="Limit read rate (IO per second) from a device"),
    Flag("device-write-bps", kind=LIST, help="Limit write rate (bytes per second) to a device"),
    Flag("device-write-iops", kind=LIST, help="Limit write rate (IO per second) to a device"),
    Flag("dns", kind=LIST, help="Set custom DNS servers"),
    Flag("dns-option", kind=LIST, help="Set DNS options"),
    Flag("dns-search", kind=LIST, help="Set custom DNS search domains"),
    Flag("domainname", kind=STR, help="Container NIS domain name"),
    Flag("entrypoint", kind=STR, help="Overwrite the default ENTRYPOINT of the image"),
    Flag("env", "e", LIST, "Set environment variables"),
    Flag("env-file", kind=LIST, help="Read in a file of environment variables"),
    Flag("expose", kind=LIST, help="Expose a port or a range of ports"),
    Flag("group-add", kind=LIST, help="Add additional groups to join"),
    Flag("health-cmd", kind=STR, help="Command to run to check health"),
    Flag(
        "health-interval", kind=STR, help="Time between running the check (ms|s|m|h) (default 0s)"
    ),
    Flag(
        "health-on-failure",
        kind=STR,
        help="Action to take once the container turns unhealthy (none, kill, restart, stop); "
        "sets the label bulkhead.health-on-failure",
    ),
    Flag("health-retries", kind=INT, help="Consecutive failures needed to report unhealthy"),
    Flag(
        "health-start-interval",
        kind=STR,
        help="Time between running the check during the start period (ms|s|m|h) (default 0s)",
    ),
    Flag(
        "health-start-period",
        kind=STR,
        help="Start period for the container to initialize before starting health-retries "
        "countdown (ms|s|m|h) (default 0s)",
    ),
    Flag(
        "health-timeout",
        kind=STR,
        help="Maximum time to allow one check to run (ms|s|m|h) (default 0s)",
    ),
    Flag("hostname", "h", STR, "Container host name"),
    Flag("init", help="Run an init inside the container that forwards signals and reaps processes"),
    Flag("interactive", "i", help="Keep STDIN open even if not attached"),
    Flag("ipc", kind=STR, help="IPC mode to use"),
    Flag("label", "l", LIST, "Set meta data on a container"),
    Flag("label-file", kind=LIST, help="Read in a line delimited file of labels"),
    Flag("link", kind=LIST, help="Add link to another container"),
    Flag("log-driver", kind=STR, help="Logging driver for the container"),
    Flag("log-opt", kind=LIST, help="Log driver options"),
    Flag("memory", "m", STR, "Memory limit"),
    Flag("memory-reservation", kind=STR, help="Memory soft limit"),
    Flag("memory-swap", kind=STR, help="Swap limit equal to memory plus swap: '-1' for unlimited"),
    Flag("memory-swappiness", kind=INT, default=-1, help="Tune container memory swappiness"),
    Flag("mount", kind=LIST, help="Attach a filesystem mount to the container"),
    Flag("name", kind=STR, help="Assign a name to the container"),
    Flag("network", kind=STR, help="Connect a container to a network"),
    Flag("net", kind=STR, help="Connect a container to a network (alias of --network)"),
    Flag("network-alias", kind=LIST, help="Add network-scoped alias for the container"),
    Flag("net-alias", kind=LIST, help="Add network-scoped alias (alias of --network-alias)"),
    Flag("ip", kind=STR, help="IPv4 address (e.g., 172.30.100.104)"),
    Flag("ip6", kind=STR, help="IPv6 address (e.g., 2001:db8::33)"),
    Flag("mac-address", kind=STR, help="Container MAC address (e.g., 92:d0:c6:0a:29:33)"),
    Flag("no-healthcheck", help="Disable any container-specified HEALTHCHECK"),
    Flag("oom-kill-disable", help="Disable OOM Killer"),
    Flag("oom-score-adj", kind=INT, help="Tune host's OOM preferences (-1000 to 1000)"),
    Flag("pid", kind=STR, help="PID namespace to use"),
    Flag("pids-limit", kind=INT, help="Tune container pids limit (set -1 for unlimited)"),
    Flag("platform", kind=STR, help="Set platform if server is multi-platform capable"),
    Flag("privileged", help="Give extended privileges to this container"),
    Flag("publish", "p", LIST, "Publish a container's port(s) to the host"),
    Flag("publish-all", "P", help="Publish all exposed ports to random ports"),
    Flag(
        "pull",
        kind=STR,
        default="missing",
        help='Pull image before running ("always", "missing", "never")',
    ),
    Flag("quiet", "q", help="Suppress the pull output"),
    Flag("read-only", help="Mount the container's root filesystem as read only"),
    Flag("restart", kind=STR, default="no", help="Restart policy to apply when a container exits"),
    Flag(
        "rm",
        help="Automatically remove the container and its associated anonymous volumes when it exits",
    ),
    Flag("runtime", kind=STR, help="Runtime to use for this container"),
    Flag("security-opt", kind=LIST, help="Security Options"),
    Flag("shm-size", kind=STR, help="Size of /dev/shm"),
    Flag("stop-signal", kind=STR, help="Signal to stop the container"),
    Flag("stop-timeout", kind=INT, help="Timeout (in seconds) to stop a container"),
    Flag("sysctl", kind=LIST, help="Sysctl options"),
    Flag("tmpfs", kind=LIST, help="Mount a tmpfs directory"),
    Flag("tty", "t", help="Allocate a pseudo-TTY"),
    Flag("ulimit", kind=LIST, help="Ulimit options"),
    Flag("user", "u", STR, "Username or UID (format: <name|uid>[:<group|gid>])"),
    Flag("userns", kind=STR, help="User namespace to use"),
    Flag("uts", kind=STR, help="UTS namespace to use"),
    Flag("volume", "v", LIST, "Bind mount a volume"),
    Flag("volumes-from", kind=LIST, help="Mount volumes from the specified container(s)"),
    Flag("workdir", "w", STR, "Working directory inside the container"),
]

RUN_FLAGS: list[Flag] = [
    *CREATE_FLAGS,
    Flag("detach", "d", help="Run container in background and print container ID"),
    Flag("detach-keys", kind=STR, help="Override the key sequence for detaching a container"),
    Flag("sig-proxy", default=True, help="Proxy received signals to the process"),
]

CREATE_COMMAND = Command(
    "create",
    "create [OPTIONS] IMAGE [COMMAND] [ARG...]",
    CREATE_FLAGS,
    interspersed=False,
    summary="Create a new container",
)
RUN_COMMAND = Command(
    "run",
    "run [OPTIONS] IMAGE [COMMAND] [ARG...]",
    RUN_FLAGS,
    interspersed=False,
    summary="Create and run a new container from an image",
)


# --- value parsers (docker's opts package) ---------------------------------------


def bad_value(flag: str, value: str, why: str) -> FlagError:
    return FlagError(f'invalid argument "{value}" for "{flag}" flag: {why}')


_BINARY = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def ram_in_bytes(text: str) -> int:
    """go-units' RAMInBytes: ``64m``, ``1.5g``, ``512KiB``, ``100`` (binary multiples)."""
    sep = max((text.rfind(c) for c in "0123456789. "), default=-1)
    if sep == -1:
        raise ValueError(f"invalid size: '{text}'")
    if text[sep] != " ":
        num, sfx = text[: sep + 1], text[sep + 1 :]
    else:
        num, sfx = text[:sep], text[sep + 1 :]
    try:
        size = float(num)
    except ValueError:
        raise ValueError(f'strconv.ParseFloat: parsing "{num}": invalid syntax') from None
    if size < 0:
        raise ValueError(f"invalid size: '{text}'")
    if not sfx:
        return int(size)
    low = sfx.lower()
    if len(low) > 3:
        raise ValueError(f"invalid suffix: '{low}'")
    if low[0] == "b":
        if len(low) > 1:
            raise ValueError(f"invalid suffix: '{low}'")
        return int(size)
    mul = _BINARY.get(low[0])
    if mul is None or (len(low) == 2 and low[1] != "b") or (len(low) == 3 and low[1:] != "ib"):
        raise ValueError(f"invalid suffix: '{low}'")
    return int(size * mul)


def mem_flag(parsed: Parsed, name: str, label: str) -> int:
    value = parsed[name]
    if not value:
        return 0
    try:
        return ram_in_bytes(value)
    except ValueError as exc:
        raise bad_value(label, value, str(exc)) from None


def nano_cpus(text: str) -> int:
    """``--cpus 1.5`` → 1500000000 (docker refuses more than 9 decimals)."""
    from fractions import Fraction  # only when --cpus is given

    try:
        value = Fraction(text) * 1_000_000_000
    except (ValueError, ZeroDivisionError):
        raise bad_value(
            "--cpus", text, "failed to parse " + text + " as a rational number"
        ) from None
    if value.denominator != 1:
        raise bad_value("--cpus", text, "value is too precise")
    return int(value)


_GO_UNITS = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,
    "\u03bcs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
}


def go_duration_ns(text: str) -> int:
    """Go's ``time.ParseDuration`` in nanoseconds (``1m30s``, ``500ms``, ``1.5h``, ``0``),
    with its error messages."""
    quoted = '"' + text + '"'
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise ValueError(f"time: invalid duration {quoted}")
    total = 0
    while rest:
        i = 0
        while i < len(rest) and rest[i].isdigit():
            i += 1
        whole = rest[:i]
        frac = ""
        if i < len(rest) and rest[i] == ".":
            j = i + 1
            while j < len(rest) and rest[j].isdigit():
                j += 1
            frac = rest[i + 1 : j]
            i = j
        if not whole and not frac:
            raise ValueError(f"time: invalid duration {quoted}")
        rest = rest[i:]
        k = 0
        while k < len(rest) and not (rest[k].isdigit() or rest[k] == "."):
            k += 1
        unit, rest = rest[:k], rest[k:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {quoted}")
        mult = _GO_UNITS.get(unit)
        if mult is None:
            raise ValueError(f'time: unknown unit "{unit}" in duration {quoted}')
        total += int(whole or 0) * mult
        if frac:
            total += int(frac) * mult // 10 ** len(frac)
    return -total if negative else total


def healthcheck(v: Mapping[str, Any]) -> dict[str, Any] | None:
    """``--health-*`` and ``--no-healthcheck`` → ``Config.Healthcheck`` (docker's opts.go)."""
    durations: dict[str, int] = {}
    for flag in (
        "health-interval",
        "health-timeout",
        "health-start-period",
        "health-start-interval",
    ):
        text = v[flag]
        try:
            durations[flag] = go_duration_ns(text) if text else 0
        except ValueError as exc:
            raise bad_value("--" + flag, text, str(exc)) from None
    retries = int(v["health-retries"])
    have = bool(v["health-cmd"]) or retries != 0 or any(durations.values())
    if v["no-healthcheck"]:
        if have:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not have:
        return None
    for flag in ("health-interval", "health-timeout"):
        if durations[flag] < 0:
            raise UsageError(f"--{flag} cannot be negative")
    if retries < 0:
        raise UsageError("--health-retries cannot be negative")
    for flag in ("health-start-period", "health-start-interval"):
        if durations[flag] < 0:
            raise UsageError(f"--{flag} cannot be negative")
    out: dict[str, Any] = {}
    if v["health-cmd"]:
        out["Test"] = ["CMD-SHELL", v["health-cmd"]]
    for key, flag in (
        ("Interval", "health-interval"),
        ("Timeout", "health-timeout"),
        ("StartPeriod", "health-start-period"),
        ("StartInterval", "health-start-interval"),
    ):
        if durations[flag]:
            out[key] = durations[flag]
    if retries:
        out["Retries"] = retries
    return out


#: podman's ``--health-on-failure`` actions, carried in this label (the stock docker CLI
#: can set it with ``--label``)
HEALTH_ON_FAILURE_LABEL = "bulkhead.health-on-failure"
HEALTH_ON_FAILURE_ACTIONS = ("none", "kill", "restart", "stop")


def parse_env_file(path: str, environ: Mapping[str, str], *, labels: bool = False) -> list[str]:
    """Docker's env-file: ``K=V`` lines (kept verbatim), ``K`` alone taken from the
    environment (dropped when unset), blank and ``#`` lines ignored."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise UsageError(f"open {path}: {exc.strerror.lower() if exc.strerror else exc}") from None
    out: list[str] = []
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not key:
            raise UsageError(f"invalid env file ({path}): no variable name on line '{raw}'")
        if any(c.isspace() for c in key):
            raise UsageError(f"invalid env file ({path}): variable '{key}' contains whitespaces")
        if eq:
            out.append(f"{key}={value}")
        elif labels:
            out.append(key)
        elif key in environ:
            out.append(f"{key}={environ[key]}")
    return out


def env_list(values: list[str], environ: Mapping[str, str]) -> list[str]:
    """``-e`` values: NAME alone from the environment, one entry per name (the last wins)."""
    merged: dict[str, str] = {}
    for value in values:
        key, eq, _ = value.partition("=")
        if not key:
            raise bad_value("-e, --env", value, f"invalid environment variable: {value}")
        if not eq and key in environ:
            value = f"{key}={environ[key]}"
        merged[key] = value
    return list(merged.values())


_ULIMITS = {
    "as",
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


def parse_ulimit(text: str) -> dict[str, Any]:
    name, eq, limits = text.partition("=")
    if not eq:
        raise bad_value("--ulimit", text, f"invalid ulimit argument: {text}")
    if name not in _ULIMITS:
        raise bad_value("--ulimit", text, f"invalid ulimit type: {name}")
    soft_s, colon, hard_s = limits.partition(":")
    try:
        soft = int(soft_s)
        hard = int(hard_s) if colon else soft
    except ValueError:
        raise bad_value("--ulimit", text, f"invalid ulimit value: {limits}") from None
    if soft > hard:
        raise bad_value(
            "--ulimit",
            text,
            f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}",
        )
    return {"Name": name, "Hard": hard, "Soft": soft}


_SYSCTL_NAMES = {
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
}


def parse_sysctl(text: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq:
        raise bad_value("--sysctl", text, f"sysctl '{text}' is not allowed")
    if key in _SYSCTL_NAMES or key.startswith(("fs.mqueue.", "net.")):
        return key, value
    raise bad_value("--sysctl", text, f"sysctl '{text}' is not allowed")


def _valid_device_mode(mode: str) -> bool:
    return (
        bool(mode)
        and len(mode) <= 3
        and all(c in "rwm" for c in mode)
        and len(set(mode)) == len(mode)
    )


def parse_device(text: str) -> dict[str, str]:
    """``/dev/src[:/dev/dst][:rwm]`` → Docker's DeviceMapping."""
    parts = text.split(":")
    perms = "rwm"
    dst = ""
    if len(parts) > 3 or not parts[0]:
        raise UsageError(f"invalid device specification: {text}")
    if len(parts) == 3:
        perms = parts[2]
        dst = parts[1]
        if not _valid_device_mode(perms):
            raise UsageError(f"bad mode specified: {perms}")
    elif len(parts) == 2:
        if _valid_device_mode(parts[1]):
            perms = parts[1]
        else:
            dst = parts[1]
    src = parts[0]
    dst = dst or src
    if not dst.startswith("/"):
        raise UsageError(f"{text} is not an absolute path")
    return {"PathOnHost": src, "PathInContainer": dst, "CgroupPermissions": perms}


def parse_throttle(flag: str, text: str, *, bps: bool) -> dict[str, Any]:
    path, colon, rate_s = text.rpartition(":")
    if not colon or not path.startswith("/dev/"):
        raise bad_value(flag, text, f"bad format for device path: {text}")
    try:
        rate = ram_in_bytes(rate_s) if bps else int(rate_s)
        if rate < 0:
            raise ValueError
    except ValueError:
        kind = "<number>[<unit>]" if bps else "<number>"
        raise bad_value(
            flag,
            text,
            f"invalid rate for device: {text}. The correct format is <device-path>:{kind}."
            " Number must be a positive integer",
        ) from None
    return {"Path": path, "Rate": rate}


def parse_weight_device(text: str) -> dict[str, Any]:
    path, colon, weight_s = text.rpartition(":")
    if not colon or not path.startswith("/dev/"):
        raise bad_value("--blkio-weight-device", text, f"bad format: {text}")
    try:
        weight = int(weight_s)
    except ValueError:
        raise bad_value(
            "--blkio-weight-device", text, f"invalid weight for device: {text}"
        ) from None
    if weight and not 10 <= weight <= 1000:
        raise bad_value("--blkio-weight-device", text, f"invalid weight for device: {text}")
    return {"Path": path, "Weight": weight}


def normalize_cap(cap: str) -> str:
    cap = cap.strip().upper()
    if cap == "ALL":
        return cap
    return cap if cap.startswith("CAP_") else "CAP_" + cap


def parse_security_opts(values: list[str]) -> list[str] | None:
    if not values:
        return None
    out: list[str] = []
    for opt in values:
        key, eq, value = opt.partition("=")
        if not eq and key != "no-new-privileges":
            key, eq, value = opt.partition(":")
        if (not eq or not value) and key != "no-new-privileges":
            raise UsageError(f'Invalid --security-opt: "{opt}"')
        if key == "seccomp" and value not in ("unconfined", "builtin"):
            import json

            try:
                with open(value, encoding="utf-8") as fh:
                    profile = json.load(fh)
            except OSError as exc:
                raise UsageError(
                    f"opening seccomp profile ({value}) failed: {exc.strerror}"
                ) from None
            except ValueError as exc:
                raise UsageError(
                    f"compacting json for seccomp profile ({value}) failed: {exc}"
                ) from None
            opt = "seccomp=" + json.dumps(profile, separators=(",", ":"), ensure_ascii=False)
        out.append(opt)
    return out


def _bool_opt(key: str, value: str | None) -> bool:
    if value is None:
        return True
    low = value.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise UsageError(f"invalid value for {key}: {value}")


def parse_mount(text: str) -> dict[str, Any]:
    """``--mount type=...,src=...,dst=...`` → Docker's Mount object (as the CLI orders it)."""
    import csv

    fields = next(csv.reader([text]), []) if '"' in text else text.split(",")
    mtype = "volume"
    source = target = ""
    readonly = False
    consistency = ""
    bind: dict[str, Any] = {}
    volume: dict[str, Any] = {}
    driver: dict[str, Any] = {}
    volume_labels: dict[str, str] = {}
    volume_opts: dict[str, str] = {}
    tmpfs: dict[str, Any] = {}
    for item in fields:
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        val: str | None = value if eq else None
        if key == "type":
            mtype = value.lower()
        elif key in ("source", "src"):
            source = value
        elif key in ("target", "dst", "destination"):
            target = value
        elif key in ("readonly", "ro"):
            readonly = _bool_opt(key, val)
        elif key == "consistency":
            consistency = value
        elif key == "bind-propagation":
            bind["Propagation"] = value.lower()
        elif key == "bind-nonrecursive":
            bind["NonRecursive"] = _bool_opt(key, val)
        elif key == "volume-nocopy":
            volume["NoCopy"] = _bool_opt(key, val)
        elif key == "volume-label":
            k, _, v = value.partition("=")
            volume_labels[k] = v
        elif key == "volume-driver":
            driver["Name"] = value
        elif key == "volume-opt":
            k, _, v = value.partition("=")
            volume_opts[k] = v
        elif key == "volume-subpath":
            volume["Subpath"] = value
        elif key == "tmpfs-size":
            try:
                tmpfs["SizeBytes"] = ram_in_bytes(value)
            except ValueError as exc:
                raise bad_value(
                    "--mount", text, f"invalid value for {key}: {value} ({exc})"
                ) from None
        elif key == "tmpfs-mode":
            try:
                tmpfs["Mode"] = int(value, 8)
            except ValueError:
                raise bad_value("--mount", text, f"invalid value for {key}: {value}") from None
        else:
            raise bad_value("--mount", text, f"unexpected key '{key}' in '{item}'")
    if not target:
        raise bad_value("--mount", text, "target is required")
    if mtype not in ("volume", "bind", "tmpfs", "image", "npipe", "cluster"):
        pass  # the daemon names the error, as with docker
    mount: dict[str, Any] = {"Type": mtype}
    if source:
        mount["Source"] = source
    mount["Target"] = target
    if readonly:
        mount["ReadOnly"] = True
    if consistency:
        mount["Consistency"] = consistency
    if bind:
        if mtype != "bind":
            raise bad_value(
                "--mount", text, f"cannot mix 'bind-*' options with mount type '{mtype}'"
            )
        mount["BindOptions"] = bind
    if mtype == "volume":
        if volume_labels:
            volume["Labels"] = volume_labels
        if volume_opts:
            driver["Options"] = volume_opts
        ordered: dict[str, Any] = {}
        for k in ("NoCopy", "Labels", "Subpath"):
            if k in volume:
                ordered[k] = volume[k]
        ordered["DriverConfig"] = driver
        mount["VolumeOptions"] = ordered
    elif volume or volume_labels or volume_opts or driver:
        raise bad_value("--mount", text, f"cannot mix 'volume-*' options with mount type '{mtype}'")
    if tmpfs:
        if mtype != "tmpfs":
            raise bad_value(
                "--mount", text, f"cannot mix 'tmpfs-*' options with mount type '{mtype}'"
            )
        mount["TmpfsOptions"] = {k: tmpfs[k] for k in ("SizeBytes", "Mode") if k in tmpfs}
    return mount


_PROTOS = ("tcp", "udp", "sctp")


def _port_range(text: str) -> tuple[int, int] | None:
    """go-connections' ParsePortRange: ``80`` or ``8000-8010``, 0..65535; None if bad."""
    lo, sep, hi = text.partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        return None
    a, b = int(lo), int(hi) if sep else int(lo)
    if a > 65535 or b > 65535 or b < a:
        return None
    return a, b


def parse_publish(spec: str) -> list[tuple[str, dict[str, str]]]:
    """``-p [ip:][hostPort[-end]:]containerPort[-end][/proto]`` → (port key, binding) pairs.

    go-connections' ``nat.ParsePortSpec`` as the docker CLI uses it: a container
    range maps one to one onto a host range of the same length; one container port
    with a host range keeps the range (the daemon picks a free port in it).
    """
    parts = spec.split(":")
    container = parts[-1]
    if len(parts) == 1:
        ip, host = "", ""
    elif len(parts) == 2:
        ip, host = "", parts[0]
    else:
        ip, host = ":".join(parts[:-2]), parts[-2]
    container, _, proto = container.partition("/")
    proto = proto or "tcp"
    if ip.startswith("[") and ip.endswith("]"):
        ip = ip[1:-1]
    if ip:
        import ipaddress

        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise UsageError(f"invalid IP address: {ip}") from None
    if not container:
        raise UsageError(f"no port specified: {spec}<empty>")
    crange = _port_range(container)
    if crange is None:
        raise UsageError(f"invalid containerPort: {container}")
    hrange = (0, 0)
    if host:
        got = _port_range(host)
        if got is None:
            raise UsageError(f"invalid hostPort: {host}")
        hrange = got
    clen, hlen = crange[1] - crange[0], hrange[1] - hrange[0]
    if host and clen != hlen and clen != 0:
        raise UsageError(
            f"invalid ranges specified for container and host Ports: {container} and {host}"
        )
    proto = proto.lower()
    if proto not in _PROTOS:
        raise UsageError(f"invalid proto: {proto}")
    out = []
    for i in range(clen + 1):
        host_port = host
        if host and clen == hlen:
            host_port = str(hrange[0] + i)
        elif host and clen == 0 and hlen:
            host_port = f"{hrange[0]}-{hrange[1]}"
        out.append((f"{crange[0] + i}/{proto}", {"HostIp": ip, "HostPort": host_port}))
    return out


def parse_expose(spec: str) -> list[str]:
    """``--expose 80``, ``--expose 8000-8010/udp`` → port keys."""
    port, _, proto = spec.rpartition(":")[2].partition("/")
    got = _port_range(port)
    if got is None:
        raise UsageError(
            f"invalid range format for --expose: {spec}, error: invalid syntax: {port!r}"
        )
    return [f"{p}/{(proto or 'tcp').lower()}" for p in range(got[0], got[1] + 1)]


def split_volume(spec: str) -> tuple[str, str]:
    """``-v`` → (source, rest): no source for an anonymous volume (``-v /data``)."""
    parts = spec.split(":")
    if len(parts) == 1:
        return "", spec
    return parts[0], ":".join(parts[1:])


def _endpoint() -> dict[str, Any]:
    return {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": None,
        "MacAddress": "",
        "DriverOpts": None,
        "GwPriority": 0,
        "NetworkID": "",
        "EndpointID": "",
        "Gateway": "",
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": None,
    }


# --- the body -------------------------------------------------------------------


class CreatePlan:
    """What ``run``/``create`` send and do: the body, the query, and client-side choices."""

    def __init__(
        self,
        body: dict[str, Any],
        image: str,
        name: str = "",
        platform: str = "",
        pull: str = "missing",
        quiet: bool = False,
        cidfile: str = "",
        detach: bool = False,
        sig_proxy: bool = True,
        detach_keys: str = "",
        attach: list[str] | None = None,
    ) -> None:
        self.body = body
        self.image = image
        self.name = name
        self.platform = platform
        self.pull = pull
        self.quiet = quiet
        self.cidfile = cidfile
        self.detach = detach
        self.sig_proxy = sig_proxy
        self.detach_keys = detach_keys
        self.attach = attach if attach is not None else []

    @property
    def query(self) -> dict[str, Any]:
        q: dict[str, Any] = {}
        if self.name:
            q["name"] = self.name
        if self.platform:
            q["platform"] = self.platform
        return q


def _mode_check(
    flag: str, value: str, allowed: tuple[str, ...], what: str, container_ok: bool = False
) -> str:
    if value in allowed or (container_ok and value.startswith("container:") and value[10:]):
        return value
    raise UsageError(f"--{flag}: invalid {what} mode")


def build_create(
    parsed: Parsed,
    *,
    run: bool,
    environ: Mapping[str, str] | None = None,
    console_size: tuple[int, int] = (0, 0),
) -> CreatePlan:
    """The create body for ``parsed`` (``run`` or ``create`` flags, positionals IMAGE CMD...)."""
    env_map = os.environ if environ is None else environ
    v = parsed.values
    image, cmd = parsed.args[0], parsed.args[1:]
    detach = bool(v.get("detach")) if run else False

    streams = []
    for s in v["attach"]:
        low = s.lower()
        if low not in ("stdin", "stdout", "stderr"):
            raise bad_value("-a, --attach", s, "valid streams are STDIN, STDOUT and STDERR")
        streams.append(low)
    if detach and streams:
        raise UsageError("conflicting options: cannot specify both --attach and --detach")
    attach_stdin = "stdin" in streams or v["interactive"]
    attach_stdout = "stdout" in streams or not streams
    attach_stderr = "stderr" in streams or not streams
    if detach:
        attach_stdin = attach_stdout = attach_stderr = False
    open_stdin = bool(v["interactive"])
    stdin_once = open_stdin and attach_stdin

    env: list[str] = []
    for path in v["env-file"]:
        env += parse_env_file(path, env_map)
    env += env_list(v["env"], env_map)

    labels: dict[str, str] = {}
    for path in v["label-file"]:
        for line in parse_env_file(path, env_map, labels=True):
            k, _, val = line.partition("=")
            labels[k] = val
    for item in v["label"]:
        k, _, val = item.partition("=")
        labels[k] = val
    on_failure = v.get("health-on-failure") or ""
    if on_failure:
        if on_failure not in HEALTH_ON_FAILURE_ACTIONS:
            raise bad_value(
                "--health-on-failure",
                on_failure,
                "must be one of " + ", ".join(HEALTH_ON_FAILURE_ACTIONS),
            )
        labels[HEALTH_ON_FAILURE_LABEL] = on_failure
    health = healthcheck(v)

    binds: list[str] = []
    volumes: dict[str, Any] = {}
    for spec in v["volume"]:
        if not spec:
            continue
        source, rest = split_volume(spec)
        if not source:
            volumes[rest] = {}
            continue
        if source.startswith("."):
            source = os.path.abspath(source)
        binds.append(f"{source}:{rest}")

    mounts = [parse_mount(m) for m in v["mount"]]
    tmpfs: dict[str, str] = {}
    for t in v["tmpfs"]:
        dst, _, opts = t.partition(":")
        tmpfs[dst] = opts

    sysctls: dict[str, str] = {}
    for s in v["sysctl"]:
        k, val = parse_sysctl(s)
        sysctls[k] = val

    log_config: dict[str, str] = {}
    for opt in v["log-opt"]:
        k, _, val = opt.partition("=")
        log_config[k] = val

    port_bindings: dict[str, list[dict[str, str]]] = {}
    exposed: dict[str, dict[str, Any]] = {}
    for spec in v["publish"]:
        for key, binding in parse_publish(spec):
            port_bindings.setdefault(key, []).append(binding)
            exposed[key] = {}
    for spec in v["expose"]:
        for key in parse_expose(spec):
            exposed[key] = {}

    restart_name, _, retries = v["restart"].partition(":")
    try:
        max_retry = int(retries) if retries else 0
    except ValueError:
        raise UsageError(
            f"invalid restart policy format: maximum retry count must be an integer: {retries}"
        ) from None

    network = v["network"] or v["net"] or "default"
    if network in ("default", "bridge") or not (
        network in ("none", "host") or network.startswith("container:")
    ):
        endpoint = _endpoint()
        if v["ip"] or v["ip6"]:
            endpoint["IPAMConfig"] = {"IPv4Address": v["ip"], "IPv6Address": v["ip6"]}
        aliases = [*v["network-alias"], *v["net-alias"]]
        if aliases:
            endpoint["Aliases"] = aliases
        if v["mac-address"]:
            endpoint["MacAddress"] = v["mac-address"]
        endpoints: dict[str, Any] = {network: endpoint}
    else:
        endpoints = {}
        for flag in ("ip", "ip6", "mac-address"):
            if v[flag]:
                raise UsageError(f"--{flag} needs a bridge network (--network {network})")
        if v["network-alias"] or v["net-alias"]:
            raise UsageError("network-scoped aliases are only supported for user-defined networks")

    pid_mode = _mode_check("pid", v["pid"], ("", "host"), "PID", container_ok=True)
    uts_mode = _mode_check("uts", v["uts"], ("", "host"), "UTS")
    userns_mode = _mode_check("userns", v["userns"], ("", "host"), "USER")
    cgroupns_mode = _mode_check("cgroupns", v["cgroupns"], ("", "host", "private"), "CGROUP")

    oom_score_adj = v["oom-score-adj"]
    if not -1000 <= oom_score_adj <= 1000:
        raise UsageError(f"invalid value: {oom_score_adj}. Valid values are between -1000 and 1000")
    pull = v["pull"]
    if pull not in ("always", "missing", "never"):
        raise UsageError(
            f'invalid pull option: \'{pull}\': must be one of "always", "missing" or "never"'
        )
    swap = v["memory-swap"]
    memory_swap = -1 if swap == "-1" else mem_flag(parsed, "memory-swap", "--memory-swap")
    ulimits = sorted((parse_ulimit(u) for u in v["ulimit"]), key=lambda u: str(u["Name"]))

    host: dict[str, Any] = {
        "Binds": binds or None,
        "ContainerIDFile": v["cidfile"],
        "LogConfig": {"Type": v["log-driver"], "Config": log_config},
        "NetworkMode": network,
        "PortBindings": port_bindings,
        "RestartPolicy": {"Name": restart_name, "MaximumRetryCount": max_retry},
        "AutoRemove": bool(v["rm"]),
        "VolumeDriver": "",
        "VolumesFrom": list(v["volumes-from"]) or None,
        "ConsoleSize": [console_size[0], console_size[1]],
        "CapAdd": [normalize_cap(c) for c in v["cap-add"]] or None,
        "CapDrop": [normalize_cap(c) for c in v["cap-drop"]] or None,
        "CgroupnsMode": cgroupns_mode,
        "Dns": list(v["dns"]),
        "DnsOptions": list(v["dns-option"]),
        "DnsSearch": list(v["dns-search"]),
        "ExtraHosts": list(v["add-host"]) or None,
        "GroupAdd": list(v["group-add"]) or None,
        "IpcMode": v["ipc"],
        "Cgroup": "",
        "Links": list(v["link"]) or None,
        "OomScoreAdj": oom_score_adj,
        "PidMode": pid_mode,
        "Privileged": bool(v["privileged"]),
        "PublishAllPorts": bool(v["publish-all"]),
        "ReadonlyRootfs": bool(v["read-only"]),
        "SecurityOpt": parse_security_opts(v["security-opt"]),
        "UTSMode": uts_mode,
        "UsernsMode": userns_mode,
        "ShmSize": mem_flag(parsed, "shm-size", "--shm-size"),
    }
    if sysctls:
        host["Sysctls"] = sysctls
    if v["runtime"]:
        host["Runtime"] = v["runtime"]
    host.update(
        {
            "Isolation": "",
            "CpuShares": v["cpu-shares"],
            "Memory": mem_flag(parsed, "memory", "-m, --memory"),
            "NanoCpus": nano_cpus(v["cpus"]) if v["cpus"] else 0,
            "CgroupParent": v["cgroup-parent"],
            "BlkioWeight": v["blkio-weight"],
            "BlkioWeightDevice": [parse_weight_device(d) for d in v["blkio-weight-device"]],
            "BlkioDeviceReadBps": [
                parse_throttle("--device-read-bps", d, bps=True) for d in v["device-read-bps"]
            ],
            "BlkioDeviceWriteBps": [
                parse_throttle("--device-write-bps", d, bps=True) for d in v["device-write-bps"]
            ],
            "BlkioDeviceReadIOps": [
                parse_throttle("--device-read-iops", d, bps=False) for d in v["device-read-iops"]
            ],
            "BlkioDeviceWriteIOps": [
                parse_throttle("--device-write-iops", d, bps=False) for d in v["device-write-iops"]
            ],
            "CpuPeriod": v["cpu-period"],
            "CpuQuota": v["cpu-quota"],
            "CpuRealtimePeriod": v["cpu-rt-period"],
            "CpuRealtimeRuntime": v["cpu-rt-runtime"],
            "CpusetCpus": v["cpuset-cpus"],
            "CpusetMems": v["cpuset-mems"],
            "Devices": [parse_device(d) for d in v["device"]],
            "DeviceCgroupRules": list(v["device-cgroup-rule"]) or None,
            "DeviceRequests": None,
            "MemoryReservation": mem_flag(parsed, "memory-reservation", "--memory-reservation"),
            "MemorySwap": memory_swap,
            "MemorySwappiness": v["memory-swappiness"],
            "OomKillDisable": bool(v["oom-kill-disable"]),
            "PidsLimit": v["pids-limit"],
            "Ulimits": ulimits,
            "CpuCount": 0,
            "CpuPercent": 0,
            "IOMaximumIOps": 0,
            "IOMaximumBandwidth": 0,
        }
    )
    if mounts:
        host["Mounts"] = mounts
    host["MaskedPaths"] = None
    host["ReadonlyPaths"] = None
    if tmpfs:
        host["Tmpfs"] = tmpfs
    if parsed.was_set("init"):
        host["Init"] = bool(v["init"])

    body: dict[str, Any] = {
        "Hostname": v["hostname"],
        "Domainname": v["domainname"],
        "User": v["user"],
        "AttachStdin": attach_stdin,
        "AttachStdout": attach_stdout,
        "AttachStderr": attach_stderr,
        **({"ExposedPorts": exposed} if exposed else {}),
        "Tty": bool(v["tty"]),
        "OpenStdin": open_stdin,
        "StdinOnce": stdin_once,
        "Env": env or None,
        "Cmd": cmd or None,
        **({"Healthcheck": health} if health is not None else {}),
        "Image": image,
        "Volumes": volumes,
        "WorkingDir": v["workdir"],
        "Entrypoint": [v["entrypoint"]] if parsed.was_set("entrypoint") else None,
        "OnBuild": None,
        "Labels": labels,
    }
    if v["stop-signal"]:
        body["StopSignal"] = v["stop-signal"]
    if parsed.was_set("stop-timeout"):
        body["StopTimeout"] = v["stop-timeout"]
    body["HostConfig"] = host
    body["NetworkingConfig"] = {"EndpointsConfig": endpoints}
    return CreatePlan(
        body=body,
        image=image,
        name=v["name"],
        platform=v["platform"],
        pull=pull,
        quiet=bool(v["quiet"]),
        cidfile=v["cidfile"],
        detach=detach,
        sig_proxy=bool(v.get("sig-proxy", True)),
        detach_keys=str(v.get("detach-keys") or ""),
        attach=[
            s
            for s, on in (
                ("stdin", attach_stdin),
                ("stdout", attach_stdout),
                ("stderr", attach_stderr),
            )
            if on
        ],
    )
