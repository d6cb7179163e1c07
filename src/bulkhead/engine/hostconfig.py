"""Docker's container-create request (``POST /containers/create``) as a checked :class:`CreateRequest`.

The body of ``POST /containers/create`` is a *ContainerCreateRequest*: the
container's **Config** (``Image``, ``Cmd``, ``Entrypoint``, ``Env``,
``Tty`` ...) at the top level, plus two nested objects:

*HostConfig*
    how the host runs it: resources (``Memory``, ``NanoCpus``,
    ``BlkioDeviceReadBps`` ...), security (``CapAdd``, ``Privileged``,
    ``SecurityOpt``), namespaces (``PidMode``, ``IpcMode``, ``NetworkMode``
    ...), storage (``Binds``, ``Mounts``, ``Tmpfs``, ``VolumesFrom``),
    ``LogConfig``, ``RestartPolicy``, ``AutoRemove``, ``Runtime``, ``Init``.
*NetworkingConfig*
    per-network endpoint settings (``EndpointsConfig``: ``IPAMConfig``,
    ``Aliases``, ``MacAddress``), used by the engine when it attaches the
    container at create.

The docker CLI sends every field (zeros, empty strings and ``null`` for what
the user did not set: ``tests/unit/data/create_requests`` holds what docker
28 and docker-py 7 really send); docker-py sends only what was asked. Both
mean the same: a zero value is "not set". :func:`parse_create_request` turns
either into a :class:`CreateRequest`: the normalised ``config`` and
``host_config`` dicts (what ``inspect`` shows back) and the
:class:`~bulkhead.engine.options.RunOptions` that
:func:`~bulkhead.engine.spec.build_spec` takes. Every error is an
:class:`InvalidRequest` (a :class:`~bulkhead.errors.SpecError`: HTTP 400)
whose message names the field (``invalid HostConfig.Memory: Minimum memory
limit allowed is 6MB``), with Docker's wording where Docker has one.

``Binds``, ``Mounts`` and ``VolumesFrom`` are checked for shape only and
passed on in ``host_config``: :func:`bulkhead.engine.mounts.resolve_mounts`
resolves them. ``Tmpfs`` becomes :attr:`RunOptions.tmpfs`.

The only host I/O here: ``stat`` of device paths (``Devices`` and the
``BlkioDevice*`` throttles name host devices by path; the cgroup needs their
numbers), the list of online CPUs, and ``/dev`` for ``Privileged``.
:func:`run_options` rebuilds the options from stored dicts (a daemon restart).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import signal as _signal
import stat
from typing import Any

import msgspec

from bulkhead.engine.options import (
    DeviceMapping,
    RunOptions,
    ThrottleDevice,
    TmpfsMount,
    Ulimit,
    WeightDevice,
    host_devices,
    parse_memory,
    parse_security_opt,
    parse_tmpfs,
    parse_ulimit,
    stat_device,
)
from bulkhead.engine.spec import normalize_capability
from bulkhead.errors import BulkheadError, SpecError

#: Docker's floor for ``--memory`` and ``--memory-reservation``.
MIN_MEMORY = 6 * 1024 * 1024

#: The largest CPU / memory node number a cpuset may name (Linux's NR_CPUS limit).
MAX_CPUSET_INDEX = 8191

#: Where the engine bind-mounts its init (tini) for ``--init``, as Docker's docker-init.
INIT_PATH = "/sbin/docker-init"

#: Restart policy names (``--restart``).
RESTART_POLICIES = frozenset({"", "no", "always", "unless-stopped", "on-failure"})

#: Logging drivers this engine has; "" is the daemon's default (json-file).
LOG_DRIVERS = frozenset({"", "json-file", "none"})

#: json-file options Docker knows (``--log-opt``); only the size ones act here.
JSON_FILE_LOG_OPTS = frozenset(
    {"max-size", "max-file", "compress", "labels", "labels-regex", "env", "env-regex", "tag"}
)

_NS_MODES = {
    "PidMode": frozenset({"", "host"}),
    "IpcMode": frozenset({"", "none", "private", "shareable", "host"}),
    "UTSMode": frozenset({"", "host"}),
    "UsernsMode": frozenset({"", "host"}),
    "CgroupnsMode": frozenset({"", "host", "private"}),
}
_CPUSET_RE = re.compile(r"^\d+(-\d+)?(,\d+(-\d+)?)*$")
#: a network name or id (Docker: ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``)
_NETWORK_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")
_PLATFORM_RE = re.compile(r"^[a-z0-9_]+(/[a-z0-9_]+(/[a-z0-9_.]+)?)?$")


class CreateRequest(msgspec.Struct, kw_only=True):
    """A checked ``POST /containers/create``.

    ``config`` is Docker's *Config* without ``HostConfig``/``NetworkingConfig``
    (``Cmd``/``Entrypoint`` as lists or None, ``Env`` a list, ``Labels`` a
    dict, ``Volumes`` a dict: only what the request said; the engine merges
    the image's defaults). ``host_config`` is Docker's *HostConfig* with
    Docker's defaults filled in (``NetworkMode`` "default" for none given: the
    engine makes it "bridge", or "none" for a daemon without the default
    bridge network; a network name is kept, the engine looks it up),
    ``RestartPolicy``, ``LogConfig``). ``options`` is what
    :func:`~bulkhead.engine.spec.build_spec` takes; ``options.init_path`` is
    :data:`INIT_PATH` when ``Init`` is set. ``log_max_size``/``log_max_files``
    are None where the daemon's defaults apply; ``log_driver`` "none" means no
    log file. ``warnings`` go back in the response's ``Warnings``.
    """

    image: str
    config: dict[str, Any]
    host_config: dict[str, Any]
    networking_config: dict[str, Any] = msgspec.field(default_factory=dict)
    options: RunOptions = msgspec.field(default_factory=RunOptions)
    platform: str | None = None
    name: str | None = None
    log_driver: str = "json-file"
    log_max_size: int | None = None
    log_max_files: int | None = None
    warnings: list[str] = msgspec.field(default_factory=list)

    @property
    def auto_remove(self) -> bool:
        """``--rm``: remove the container when it exits."""
        return bool(self.host_config.get("AutoRemove"))

    @property
    def runtime(self) -> str | None:
        """``--runtime``: the OCI runtime's name (None: the daemon's default)."""
        value = self.host_config.get("Runtime")
        return str(value) if value else None

    @property
    def console_size(self) -> tuple[int, int] | None:
        """``ConsoleSize`` (height, width) for a TTY, None when not given."""
        size = self.host_config.get("ConsoleSize")
        if isinstance(size, list) and len(size) == 2 and any(size):
            return int(size[0]), int(size[1])
        return None

    @property
    def stop_timeout(self) -> int | None:
        """``--stop-timeout`` in seconds (None: the default 10 s)."""
        value = self.config.get("StopTimeout")
        return int(value) if isinstance(value, int) else None


class InvalidRequest(SpecError):
    """A create request that does not follow Docker's API: HTTP 400, naming the field.

    ``str()`` is ``invalid <field>: <message>``; ``where`` is the field
    (``HostConfig.Memory``, ``Config.Env[2]``).
    """

    def __init__(self, message: str, where: str | None = None) -> None:
        self.where = where
        BulkheadError.__init__(self, f"invalid {where}: {message}" if where else message)


def _bad(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(message, field)


# --- typed field readers ---------------------------------------------------------


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _get_str(doc: dict[str, Any], key: str, field: str) -> str:
    value = doc.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _bad(field, f"expected a string, got {_type_name(value)}")
    return value


def _get_bool(doc: dict[str, Any], key: str, field: str) -> bool:
    value = doc.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(field, f"expected a boolean, got {_type_name(value)}")
    return value


def _get_int(doc: dict[str, Any], key: str, field: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise _bad(field, f"expected an integer, got {_type_name(value)} ({value!r})")
    return value


def _get_str_list(
    doc: dict[str, Any], key: str, field: str, *, scalar: bool = False
) -> list[str] | None:
    """A JSON array of strings (None when absent or null); ``scalar``: a lone string too."""
    value = doc.get(key)
    if value is None:
        return None
    if scalar and isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise _bad(field, f"expected an array of strings, got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _bad(f"{field}[{i}]", f"expected a string, got {_type_name(item)}")
    return list(value)


def _get_str_map(doc: dict[str, Any], key: str, field: str) -> dict[str, str]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(field, f"expected an object of strings, got {_type_name(value)}")
    for k, v in value.items():
        if not isinstance(v, str):
            raise _bad(f"{field}.{k}", f"expected a string, got {_type_name(v)}")
    return dict(value)


def _get_obj(doc: dict[str, Any], key: str, field: str) -> dict[str, Any]:
    value = doc.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _bad(field, f"expected an object, got {_type_name(value)}")
    return value


def _get_obj_list(doc: dict[str, Any], key: str, field: str) -> list[dict[str, Any]]:
    value = doc.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _bad(field, f"expected an array, got {_type_name(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, dict):
            raise _bad(f"{field}[{i}]", f"expected an object, got {_type_name(item)}")
    return list(value)


def _spec_error(field: str, exc: SpecError) -> InvalidRequest:
    message = str(exc)
    if exc.where and message.startswith(f"{exc.where}: "):
        message = message[len(exc.where) + 2 :]
    return _bad(field, message)


# --- small validators ---------------------------------------------------------------


def parse_signal(value: str | int, field: str = "signal") -> int:
    """Docker's ``signal.ParseSignal``: ``9``, ``KILL``, ``SIGKILL``, ``SIGRTMIN+3``."""
    text = str(value).strip()
    if text.isdigit():
        num = int(text)
        if 1 <= num <= _signal.SIGRTMAX:
            return num
        raise _bad(field, f"invalid signal: {value}")
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    m = re.fullmatch(r"SIGRTMIN\+(\d+)", name)
    if m:
        num = _signal.SIGRTMIN + int(m.group(1))
        if num <= _signal.SIGRTMAX:
            return num
    m = re.fullmatch(r"SIGRTMAX-(\d+)", name)
    if m:
        num = _signal.SIGRTMAX - int(m.group(1))
        if num >= _signal.SIGRTMIN:
            return num
    try:
        return int(_signal.Signals[name])
    except KeyError:
        raise _bad(field, f"invalid signal: {value}") from None


def _online_cpus(path: str = "/sys/devices/system/cpu/online") -> set[int] | None:
    try:
        with open(path, encoding="ascii") as f:
            return _cpuset_members(f.read().strip())
    except (OSError, ValueError):
        return None


def _cpuset_members(text: str) -> set[int]:
    out: set[int] = set()
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def _check_cpuset(value: str, field: str, online: set[int] | None) -> None:
    if not _CPUSET_RE.match(value):
        raise _bad(field, f"invalid format: {value!r} (e.g. 0-3 or 0,1)")
    for part in value.split(","):
        lo, _, hi = part.partition("-")
        if hi and int(hi) < int(lo):
            raise _bad(field, f"invalid range {part!r}")
        if int(hi or lo) > MAX_CPUSET_INDEX:
            raise _bad(field, f"{part!r} is beyond any CPU or memory node")
    if online is not None:
        missing = sorted(_cpuset_members(value) - online)
        if missing:
            raise _bad(
                field,
                f"Requested CPUs are not available - requested {value}, available: "
                + ",".join(str(c) for c in sorted(online)),
            )


def _device_numbers(path: str, field: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _bad(field, f"stat {path}: {exc.strerror}") from None
    if not (stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode)):
        raise _bad(field, f"{path} is not a device")
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def _throttles(doc: dict[str, Any], key: str) -> list[ThrottleDevice]:
    field = f"HostConfig.{key}"
    out: list[ThrottleDevice] = []
    for i, item in enumerate(_get_obj_list(doc, key, field)):
        path = _get_str(item, "Path", f"{field}[{i}].Path")
        rate = _get_int(item, "Rate", f"{field}[{i}].Rate") or 0
        if rate < 0:
            raise _bad(f"{field}[{i}].Rate", f"must be positive: {rate}")
        major, minor = _device_numbers(path, f"{field}[{i}].Path")
        out.append(ThrottleDevice(major, minor, rate))
    return out


def _valid_perms(perms: str) -> bool:
    return (
        bool(perms)
        and len(perms) <= 3
        and set(perms) <= set("rwm")
        and len(set(perms)) == len(perms)
    )


# --- the request --------------------------------------------------------------------


def parse_create_request(
    body: Any, *, name: str | None = None, platform: str | None = None, stat_devices: bool = True
) -> CreateRequest:
    """Check a ``POST /containers/create`` body (decoded JSON) and build its :class:`CreateRequest`.

    ``name`` and ``platform`` are the query parameters. ``stat_devices``
    False skips the host lookups of ``Devices`` (unit tests of other hosts).
    """
    if not isinstance(body, dict):
        raise InvalidRequest("invalid JSON body: expected a ContainerCreateRequest object")
    config = {k: v for k, v in body.items() if k not in ("HostConfig", "NetworkingConfig")}
    host_config = dict(_get_obj(body, "HostConfig", "HostConfig"))
    networking = dict(_get_obj(body, "NetworkingConfig", "NetworkingConfig"))
    if platform:
        if not _PLATFORM_RE.match(platform):
            raise InvalidRequest(f"invalid platform {platform!r}: expected os[/arch[/variant]]")
        if platform.split("/")[0] != "linux":
            raise InvalidRequest(f"invalid platform {platform!r}: only linux containers run here")
    image = _get_str(config, "Image", "Config.Image")
    if not image:
        raise InvalidRequest("invalid Config.Image: no image given (Config.Image is empty)")

    warnings: list[str] = []
    config = _normalize_config(config)
    host_config = _normalize_host_config(host_config, warnings)
    options = run_options(config, host_config, stat_devices=stat_devices)
    _check_conflicts(config, host_config)
    warnings.extend(resource_warnings(options))
    log_driver, max_size, max_files = _log_config(host_config)
    return CreateRequest(
        image=image,
        config=config,
        host_config=host_config,
        networking_config=networking,
        options=options,
        platform=platform or None,
        name=name or None,
        log_driver=log_driver or "json-file",
        log_max_size=max_size,
        log_max_files=max_files,
        warnings=warnings,
    )


def _normalize_config(config: dict[str, Any]) -> dict[str, Any]:
    out = dict(config)
    for key in ("Hostname", "Domainname", "User", "WorkingDir", "StopSignal", "MacAddress"):
        out[key] = _get_str(config, key, f"Config.{key}")
    for key in ("AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce"):
        out[key] = _get_bool(config, key, f"Config.{key}")
    out["Env"] = _get_str_list(config, "Env", "Config.Env") or []
    for i, entry in enumerate(out["Env"]):
        if not entry or entry.startswith("="):
            raise _bad(f"Config.Env[{i}]", f"invalid environment variable: {entry!r}")
    out["Cmd"] = _get_str_list(config, "Cmd", "Config.Cmd", scalar=True)
    entrypoint = _get_str_list(config, "Entrypoint", "Config.Entrypoint", scalar=True)
    if entrypoint == [""]:
        entrypoint = []  # `--entrypoint ""`: no entrypoint (and not the image's Cmd)
    out["Entrypoint"] = entrypoint
    out["Labels"] = _get_str_map(config, "Labels", "Config.Labels")
    for key in ("Volumes", "ExposedPorts"):
        value = _get_obj(config, key, f"Config.{key}")
        for path in value:
            if key == "Volumes" and not path.startswith("/"):
                raise _bad(f"Config.Volumes.{path}", "the mount point must be an absolute path")
            if key == "ExposedPorts":
                _check_port_spec(path, f"Config.ExposedPorts.{path}")
        out[key] = dict(value)
    _check_healthcheck(config)
    if out["WorkingDir"] and not out["WorkingDir"].startswith("/"):
        raise _bad(
            "Config.WorkingDir",
            f"the working directory '{out['WorkingDir']}' is invalid, it needs to be an absolute path",
        )
    if out["StopSignal"]:
        parse_signal(out["StopSignal"], "Config.StopSignal")
    timeout = _get_int(config, "StopTimeout", "Config.StopTimeout")
    if timeout is not None:
        if timeout < -1:
            raise _bad("Config.StopTimeout", f"must be -1 (no timeout) or more: {timeout}")
        out["StopTimeout"] = timeout
    if out["Hostname"]:
        host = out["Hostname"]
        if len(host) > 253 or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
            raise _bad("Config.Hostname", f"invalid hostname format: {host}")
    return out


def _normalize_host_config(hc: dict[str, Any], warnings: list[str]) -> dict[str, Any]:
    out = dict(hc)
    # storage: shape only here, resolve_mounts does the rest
    binds = _get_str_list(hc, "Binds", "HostConfig.Binds") or []
    for i, bind in enumerate(binds):
        if not bind or bind.count(":") > 2:
            raise _bad(f"HostConfig.Binds[{i}]", f"invalid volume specification: '{bind}'")
    out["Binds"] = binds or None
    mounts = _get_obj_list(hc, "Mounts", "HostConfig.Mounts")
    for i, m in enumerate(mounts):
        kind = _get_str(m, "Type", f"HostConfig.Mounts[{i}].Type")
        if kind not in ("bind", "volume", "tmpfs"):
            raise _bad(f"HostConfig.Mounts[{i}].Type", f"mount type unknown: {kind!r}")
        target = _get_str(m, "Target", f"HostConfig.Mounts[{i}].Target")
        if not target:
            raise _bad(f"HostConfig.Mounts[{i}].Target", "Target must not be empty")
        if not target.startswith("/"):
            raise _bad(
                f"HostConfig.Mounts[{i}].Target",
                f"invalid mount path: '{target}' mount path must be absolute",
            )
    if mounts:
        out["Mounts"] = mounts
    out["VolumesFrom"] = _get_str_list(hc, "VolumesFrom", "HostConfig.VolumesFrom") or None
    out["Tmpfs"] = _get_str_map(hc, "Tmpfs", "HostConfig.Tmpfs")

    # networking: none, host, container:<name>, or a network's name ("default": the
    # engine's default, bridge); the engine looks the network up (404 when missing)
    mode = _get_str(hc, "NetworkMode", "HostConfig.NetworkMode") or "default"
    if not mode.startswith("container:") and not _NETWORK_NAME_RE.match(mode):
        raise _bad("HostConfig.NetworkMode", f"invalid network mode {mode!r}")
    out["NetworkMode"] = mode
    for port, bindings in _get_obj(hc, "PortBindings", "HostConfig.PortBindings").items():
        field = f"HostConfig.PortBindings.{port}"
        _check_port_spec(port, field)
        for i, binding in enumerate(bindings or []):
            if not isinstance(binding, dict):
                raise _bad(f"{field}[{i}]", "expected an object {HostIp, HostPort}")
            host_port = _get_str(binding, "HostPort", f"{field}[{i}].HostPort")
            if host_port and not _PORT_RANGE_RE.match(host_port):
                raise _bad(f"{field}[{i}].HostPort", f"invalid port specification: {host_port!r}")
            host_ip = _get_str(binding, "HostIp", f"{field}[{i}].HostIp")
            if host_ip:
                try:
                    ipaddress.ip_address(host_ip.strip("[]"))
                except ValueError:
                    raise _bad(f"{field}[{i}].HostIp", f"invalid IP address: {host_ip}") from None
    if mode in ("host", "none") and (
        _get_obj(hc, "PortBindings", "HostConfig.PortBindings")
        or _get_bool(hc, "PublishAllPorts", "HostConfig.PublishAllPorts")
    ):
        warnings.append(f"Published ports are discarded when using {mode} network mode")

    restart = _get_obj(hc, "RestartPolicy", "HostConfig.RestartPolicy")
    rname = _get_str(restart, "Name", "HostConfig.RestartPolicy.Name")
    retries = (
        _get_int(restart, "MaximumRetryCount", "HostConfig.RestartPolicy.MaximumRetryCount") or 0
    )
    if rname not in RESTART_POLICIES:
        raise _bad("HostConfig.RestartPolicy.Name", f"invalid restart policy {rname!r}")
    if retries and rname != "on-failure":
        raise _bad(
            "HostConfig.RestartPolicy.MaximumRetryCount",
            "maximum retry count can only be used with 'on-failure'",
        )
    if retries < 0:
        raise _bad(
            "HostConfig.RestartPolicy.MaximumRetryCount", "maximum retry count cannot be negative"
        )
    out["RestartPolicy"] = {"Name": rname or "no", "MaximumRetryCount": retries}
    out["AutoRemove"] = _get_bool(hc, "AutoRemove", "HostConfig.AutoRemove")
    if out["AutoRemove"] and rname not in ("", "no"):
        raise _bad(
            "HostConfig.AutoRemove", "can't create 'AutoRemove' container with restart policy"
        )

    log = _get_obj(hc, "LogConfig", "HostConfig.LogConfig")
    out["LogConfig"] = {
        "Type": _get_str(log, "Type", "HostConfig.LogConfig.Type") or "json-file",
        "Config": _get_str_map(log, "Config", "HostConfig.LogConfig.Config"),
    }
    for key in ("Runtime", "Isolation", "CgroupParent"):
        out[key] = _get_str(hc, key, f"HostConfig.{key}")
    parent = out["CgroupParent"]
    if parent and (".." in parent.split("/") or "\x00" in parent or not parent.strip("/")):
        raise _bad("HostConfig.CgroupParent", f"invalid cgroup parent {parent!r}")
    if out["Isolation"] not in ("", "default"):
        raise _bad("HostConfig.Isolation", f"invalid isolation {out['Isolation']!r} on linux")
    if not out["Runtime"]:
        out.pop("Runtime")
    size = hc.get("ConsoleSize")
    if size is not None and (
        not isinstance(size, list)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise _bad("HostConfig.ConsoleSize", "expected [height, width]")
    for key, what in (
        ("CpuCount", "CPU count. Count"),
        ("CpuPercent", "CPU percent. Percent"),
        ("IOMaximumIOps", "maximum IOps. Maximum IOps"),
        ("IOMaximumBandwidth", "maximum IO bandwidth. Maximum IO bandwidth"),
    ):
        if _get_int(hc, key, f"HostConfig.{key}"):  # Windows-only resources
            warnings.append(f"linux does not support {what} discarded.")
            out[key] = 0
    for key in ("KernelMemory", "KernelMemoryTCP"):
        if _get_int(hc, key, f"HostConfig.{key}"):  # removed from the kernel's cgroup v2
            warnings.append(
                "Specifying a kernel memory limit is deprecated and will be removed in a "
                "future release; the limit is ignored."
            )
            out[key] = 0
    for i, link in enumerate(_get_str_list(hc, "Links", "HostConfig.Links") or []):
        parse_link(link, f"HostConfig.Links[{i}]")
    for key in ("DeviceCgroupRules", "DeviceRequests"):
        if hc.get(key):
            raise _bad(f"HostConfig.{key}", "not supported by this engine")
    _check_dns(hc)
    for key in ("CpuRealtimePeriod", "CpuRealtimeRuntime"):
        if _get_int(hc, key, f"HostConfig.{key}"):
            raise _bad(f"HostConfig.{key}", "realtime scheduling is not supported by this engine")
    return out


def parse_link(link: str, field: str = "HostConfig.Links") -> tuple[str, str]:
    """``--link name[:alias]`` (or the stored ``/name:/container/alias``) → (name, alias)."""
    parts = link.split(":")
    name = parts[0].lstrip("/")
    alias = parts[1].rsplit("/", 1)[-1] if len(parts) == 2 else name
    if len(parts) > 2 or not name or not alias:
        raise _bad(field, f"invalid link {link!r}: bad format for links (name:alias)")
    return name, alias


def _check_dns(hc: dict[str, Any]) -> None:
    """``--dns`` must be IP addresses, ``--add-host`` ``name:ip`` (or ``host-gateway``)."""
    import ipaddress

    from bulkhead.network.hosts import HOST_GATEWAY, parse_extra_host

    for i, server in enumerate(_get_str_list(hc, "Dns", "HostConfig.Dns") or []):
        try:
            ipaddress.ip_address(server.partition("%")[0])
        except ValueError:
            raise _bad(f"HostConfig.Dns[{i}]", f"bad nameserver address {server}") from None
    for key in ("DnsSearch", "DnsOptions"):
        _get_str_list(hc, key, f"HostConfig.{key}")
    for i, entry in enumerate(_get_str_list(hc, "ExtraHosts", "HostConfig.ExtraHosts") or []):
        try:
            parse_extra_host(entry, host_gateway="0.0.0.0" if HOST_GATEWAY in entry else None)
        except SpecError as e:
            raise _bad(f"HostConfig.ExtraHosts[{i}]", str(e)) from None


_PORT_RANGE_RE = re.compile(r"^(\d{1,5})(-(\d{1,5}))?$")

#: Docker's smallest healthcheck durations (nanoseconds in the API).
_MIN_HEALTH_DURATION = 1_000_000


def _check_port_spec(spec: str, field: str) -> None:
    """``80``, ``80/tcp``, ``8000-8010/udp`` (Docker's nat.ParsePortSpec for a container port)."""
    port, _, proto = spec.partition("/")
    m = _PORT_RANGE_RE.match(port)
    if (
        m is None
        or proto not in ("", "tcp", "udp", "sctp")
        or not all(1 <= int(p) <= 65535 for p in (m.group(1), m.group(3)) if p)
        or (m.group(3) and int(m.group(3)) < int(m.group(1)))
    ):
        raise _bad(field, f"invalid port specification: {spec!r}")


def _check_healthcheck(config: dict[str, Any]) -> None:
    """moby's ``validateHealthCheck``: durations 0 or at least 1 ms, retries not negative."""
    hc = _get_obj(config, "Healthcheck", "Config.Healthcheck")
    for key in ("Interval", "Timeout", "StartPeriod", "StartInterval"):
        value = _get_int(hc, key, f"Config.Healthcheck.{key}") or 0
        if value and value < _MIN_HEALTH_DURATION:
            raise _bad(f"Config.Healthcheck.{key}", f"{key} in Healthcheck cannot be less than 1ms")
    retries = _get_int(hc, "Retries", "Config.Healthcheck.Retries") or 0
    if retries < 0:
        raise _bad("Config.Healthcheck.Retries", "Retries in Healthcheck cannot be negative")
    test = hc.get("Test")
    if test is not None and not (isinstance(test, list) and all(isinstance(t, str) for t in test)):
        raise _bad("Config.Healthcheck.Test", "expected an array of strings")
    from bulkhead.engine.health import ON_FAILURE_ACTIONS, ON_FAILURE_LABEL

    labels = config.get("Labels") or {}
    action = labels.get(ON_FAILURE_LABEL) if isinstance(labels, dict) else None
    if action is not None and str(action).strip().lower() not in ON_FAILURE_ACTIONS:
        raise _bad(
            f"Config.Labels.{ON_FAILURE_LABEL}",
            f"{action!r} is not an action on an unhealthy container "
            f"(one of {', '.join(ON_FAILURE_ACTIONS)})",
        )


def _check_conflicts(config: dict[str, Any], hc: dict[str, Any]) -> None:
    """Options that contradict a namespace shared with the host or another container
    (moby's ``runconfig`` conflict errors)."""
    network = str(hc.get("NetworkMode") or "")
    if config.get("Hostname") and hc.get("UTSMode") == "host":
        raise _bad("Config.Hostname", "conflicting options: hostname and the UTS mode")
    if hc.get("Links") and (network == "host" or network.startswith("container:")):
        kind = "host type networking" if network == "host" else "container type network"
        raise _bad(
            "HostConfig.Links",
            f"conflicting options: {kind} can't be used with links. "
            "This would result in undefined behavior",
        )
    if not network.startswith("container:"):
        return
    if config.get("Hostname"):
        raise _bad("Config.Hostname", "conflicting options: hostname and the network mode")
    if hc.get("Dns") or hc.get("DnsSearch") or hc.get("DnsOptions"):
        raise _bad("HostConfig.Dns", "conflicting options: dns and the network mode")
    if hc.get("ExtraHosts"):
        raise _bad(
            "HostConfig.ExtraHosts",
            "conflicting options: custom host-to-IP mapping and the network mode",
        )
    if hc.get("PortBindings") or hc.get("PublishAllPorts"):
        raise _bad(
            "HostConfig.PortBindings",
            "conflicting options: port publishing and the container type network mode",
        )
    if config.get("ExposedPorts"):
        raise _bad(
            "Config.ExposedPorts",
            "conflicting options: port exposing and the container type network mode",
        )


#: Present when the memory cgroup accounts swap (v1 ``memory.memsw.*``).
_MEMSW_FILE = "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes"


def resource_warnings(opts: RunOptions, *, memsw_file: str = _MEMSW_FILE) -> list[str]:
    """Docker's create warnings for resource options the host honours only in part."""
    out: list[str] = []
    if opts.oom_kill_disable and not opts.memory:
        out.append(
            "OOM killer is disabled for the container, but no memory limit is set, "
            "this can result in the system running out of resources."
        )
    cgroup_v1 = os.path.isdir("/sys/fs/cgroup/memory")
    if cgroup_v1 and opts.memory_swap not in (None, -1) and not os.path.exists(memsw_file):
        out.append(
            "Your kernel does not support swap limit capabilities or the cgroup is not "
            "mounted. Memory limited without swap."
        )
    return out


def _log_config(hc: dict[str, Any]) -> tuple[str, int | None, int | None]:
    log = hc["LogConfig"]
    driver = log["Type"]
    if driver not in LOG_DRIVERS:
        raise _bad(
            "HostConfig.LogConfig.Type",
            f"logging driver {driver!r} is not supported (json-file, none)",
        )
    opts: dict[str, str] = log["Config"]
    if driver == "none" and opts:
        raise _bad("HostConfig.LogConfig.Config", "the none logging driver takes no options")
    max_size: int | None = None
    max_files: int | None = None
    # Docker's options of every driver (moby logger.ValidateLogOpts). Both modes are taken;
    # the log is always written as Docker's default "blocking" mode writes it: a container
    # that writes faster than its log is slowed by its pipe, no line is ever dropped.
    mode = opts.get("mode", "")
    if mode not in ("", "blocking", "non-blocking"):
        raise _bad("HostConfig.LogConfig.Config.mode", f"logging mode not supported: {mode}")
    if "max-buffer-size" in opts:
        if mode != "non-blocking":
            raise _bad(
                "HostConfig.LogConfig.Config.max-buffer-size",
                "max-buffer-size option is only supported with 'mode=non-blocking'",
            )
        try:
            parse_memory(opts["max-buffer-size"], "max-buffer-size")
        except SpecError as exc:
            raise _spec_error("HostConfig.LogConfig.Config.max-buffer-size", exc) from None
    for key, value in opts.items():
        if key in ("mode", "max-buffer-size"):
            continue
        if key not in JSON_FILE_LOG_OPTS:
            raise _bad(
                f"HostConfig.LogConfig.Config.{key}",
                f"unknown log opt '{key}' for json-file log driver",
            )
        if key == "max-size":
            if value == "-1":
                max_size = 0
                continue
            try:
                max_size = parse_memory(value, "max-size")
            except SpecError as exc:
                raise _spec_error("HostConfig.LogConfig.Config.max-size", exc) from None
        elif key == "max-file":
            try:
                max_files = int(value)
            except ValueError:
                max_files = 0
            if max_files < 1:
                raise _bad(
                    "HostConfig.LogConfig.Config.max-file",
                    f"max-file cannot be less than 1: {value!r}",
                )
    if max_files is not None and max_files > 1 and max_size is None:
        raise _bad(
            "HostConfig.LogConfig.Config.max-file", "max-file can only be used with max-size"
        )
    return driver, max_size, max_files


def run_options(
    config: dict[str, Any], host_config: dict[str, Any], *, stat_devices: bool = True
) -> RunOptions:
    """The :class:`RunOptions` a normalised ``config`` and ``host_config`` say.

    The engine calls this again on a stored container (after a daemon
    restart); the fields are those :func:`parse_create_request` checked.
    """
    hc = host_config
    opts = RunOptions()
    opts.env = list(config.get("Env") or [])
    opts.workdir = config.get("WorkingDir") or None
    opts.user = config.get("User") or None
    opts.entrypoint = config.get("Entrypoint")
    opts.cmd = config.get("Cmd")
    opts.hostname = config.get("Hostname") or None
    opts.domainname = config.get("Domainname") or None
    opts.labels = dict(config.get("Labels") or {})
    opts.tty = bool(config.get("Tty"))
    opts.stdin_open = bool(config.get("OpenStdin"))
    opts.stop_signal = config.get("StopSignal") or None

    opts.group_add = _get_str_list(hc, "GroupAdd", "HostConfig.GroupAdd") or []
    opts.read_only = _get_bool(hc, "ReadonlyRootfs", "HostConfig.ReadonlyRootfs")
    opts.privileged = _get_bool(hc, "Privileged", "HostConfig.Privileged")
    opts.init = _get_bool(hc, "Init", "HostConfig.Init")
    if opts.init:
        opts.init_path = INIT_PATH
    for key, attr in (("CapAdd", "cap_add"), ("CapDrop", "cap_drop")):
        caps = _get_str_list(hc, key, f"HostConfig.{key}") or []
        try:
            setattr(opts, attr, [normalize_capability(c, key) for c in caps])
        except SpecError as exc:
            raise _spec_error(f"HostConfig.{key}", exc) from None
    opts.security_opt = _get_str_list(hc, "SecurityOpt", "HostConfig.SecurityOpt") or []
    try:
        sec = parse_security_opt(opts.security_opt)
    except SpecError as exc:
        raise _spec_error("HostConfig.SecurityOpt", exc) from None
    if sec.seccomp not in (None, "unconfined", "builtin") and sec.seccomp.lstrip().startswith("{"):
        try:
            profile = json.loads(sec.seccomp)
        except ValueError as exc:
            raise _bad(
                "HostConfig.SecurityOpt", f"seccomp profile is not valid JSON: {exc}"
            ) from None
        if not isinstance(profile, dict):
            raise _bad("HostConfig.SecurityOpt", "seccomp profile must be a JSON object")
    opts.sysctls = _get_str_map(hc, "Sysctls", "HostConfig.Sysctls")
    for key in opts.sysctls:
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", key):
            raise _bad(f"HostConfig.Sysctls.{key}", "invalid sysctl name")

    ulimits: list[Ulimit] = []
    for i, item in enumerate(_get_obj_list(hc, "Ulimits", "HostConfig.Ulimits")):
        field = f"HostConfig.Ulimits[{i}]"
        uname = _get_str(item, "Name", f"{field}.Name")
        soft = _get_int(item, "Soft", f"{field}.Soft")
        hard = _get_int(item, "Hard", f"{field}.Hard")
        soft = 0 if soft is None else soft
        hard = soft if hard is None else hard
        try:
            ulimits.append(parse_ulimit(f"{uname}={soft}:{hard}"))
        except SpecError as exc:
            raise _spec_error(field, exc) from None
    opts.ulimits = ulimits

    _memory(hc, opts)
    _cpu(hc, opts)

    pids = _get_int(hc, "PidsLimit", "HostConfig.PidsLimit")
    opts.pids_limit = None if not pids else (-1 if pids < 0 else pids)
    weight = _get_int(hc, "BlkioWeight", "HostConfig.BlkioWeight") or 0
    if weight and not 10 <= weight <= 1000:
        raise _bad("HostConfig.BlkioWeight", f"Range of blkio weight is from 10 to 1000: {weight}")
    opts.blkio_weight = weight or None
    weights: list[WeightDevice] = []
    for i, item in enumerate(
        _get_obj_list(hc, "BlkioWeightDevice", "HostConfig.BlkioWeightDevice")
    ):
        field = f"HostConfig.BlkioWeightDevice[{i}]"
        w = _get_int(item, "Weight", f"{field}.Weight") or 0
        if not 10 <= w <= 1000:
            raise _bad(f"{field}.Weight", f"Range of blkio weight is from 10 to 1000: {w}")
        major, minor = _device_numbers(_get_str(item, "Path", f"{field}.Path"), f"{field}.Path")
        weights.append(WeightDevice(major, minor, w))
    opts.blkio_weight_device = weights
    opts.device_read_bps = _throttles(hc, "BlkioDeviceReadBps")
    opts.device_write_bps = _throttles(hc, "BlkioDeviceWriteBps")
    opts.device_read_iops = _throttles(hc, "BlkioDeviceReadIOps")
    opts.device_write_iops = _throttles(hc, "BlkioDeviceWriteIOps")

    devices: list[DeviceMapping] = []
    for i, item in enumerate(_get_obj_list(hc, "Devices", "HostConfig.Devices")):
        field = f"HostConfig.Devices[{i}]"
        src = _get_str(item, "PathOnHost", f"{field}.PathOnHost")
        dst = _get_str(item, "PathInContainer", f"{field}.PathInContainer") or src
        perms = _get_str(item, "CgroupPermissions", f"{field}.CgroupPermissions") or "rwm"
        if not src.startswith("/"):
            raise _bad(f"{field}.PathOnHost", f"invalid device path {src!r}: must be absolute")
        if not dst.startswith("/"):
            raise _bad(f"{field}.PathInContainer", f"invalid device path {dst!r}: must be absolute")
        if not _valid_perms(perms):
            raise _bad(f"{field}.CgroupPermissions", f"invalid device mode: {perms}")
        dev = DeviceMapping(path_on_host=src, path_in_container=dst, permissions=perms)
        if stat_devices:
            try:
                dev = stat_device(dev)
            except SpecError as exc:
                raise _spec_error(f"{field}.PathOnHost", exc) from None
        devices.append(dev)
    if opts.privileged and stat_devices:
        taken = {d.path_in_container for d in devices}
        devices = [d for d in host_devices() if d.path_in_container not in taken] + devices
    opts.devices = devices

    shm = _get_int(hc, "ShmSize", "HostConfig.ShmSize") or 0
    if shm < 0:
        raise _bad("HostConfig.ShmSize", "SHM size can not be less than 0")
    opts.shm_size = shm or None
    tmpfs: list[TmpfsMount] = []
    for dest, raw in _get_str_map(hc, "Tmpfs", "HostConfig.Tmpfs").items():
        try:
            tmpfs.append(parse_tmpfs(f"{dest}:{raw}" if raw else dest))
        except SpecError as exc:
            raise _spec_error(f"HostConfig.Tmpfs.{dest}", exc) from None
    opts.tmpfs = tmpfs

    # "default" and network names: the engine resolves them at create
    opts.network_mode = _get_str(hc, "NetworkMode", "HostConfig.NetworkMode") or "default"
    for key, attr in (
        ("PidMode", "pid_mode"),
        ("IpcMode", "ipc_mode"),
        ("UTSMode", "uts_mode"),
        ("UsernsMode", "userns_mode"),
        ("CgroupnsMode", "cgroupns_mode"),
    ):
        mode = _get_str(hc, key, f"HostConfig.{key}")
        container_ok = key in ("PidMode", "IpcMode")
        if mode not in _NS_MODES[key] and not (
            container_ok and mode.startswith("container:") and len(mode) > 10
        ):
            allowed = sorted(m for m in _NS_MODES[key] if m)
            if container_ok:
                allowed.append("container:<name|id>")
            raise _bad(f"HostConfig.{key}", f"invalid mode {mode!r} (use {', '.join(allowed)})")
        setattr(opts, attr, mode or None)
    _check_sysctls(opts)
    return opts


#: IPC-namespaced sysctls (moby ``opts.ValidateSysctl``); ``fs.mqueue.*`` too.
_IPC_SYSCTLS = frozenset(
    {
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    }
)
_UTS_SYSCTLS = frozenset({"kernel.domainname", "kernel.hostname"})


def _check_sysctls(opts: RunOptions) -> None:
    """Only sysctls of a namespace the container owns, as Docker allows."""
    for key in opts.sysctls:
        field = f"HostConfig.Sysctls.{key}"
        name = key.replace("/", ".")
        if name in _IPC_SYSCTLS or name.startswith("fs.mqueue."):
            if opts.ipc_mode == "host" or (opts.ipc_mode or "").startswith("container:"):
                raise _bad(field, f"sysctl {key!r} is not allowed in host IPC namespace")
        elif name.startswith("net."):
            if opts.network_mode == "host":
                raise _bad(field, f"sysctl {key!r} is not allowed in host network namespace")
        elif name in _UTS_SYSCTLS:
            if opts.uts_mode == "host" or opts.network_mode == "host":
                raise _bad(field, f"sysctl {key!r} is not allowed in host UTS namespace")
            raise _bad(field, f"sysctl {key!r} is not allowed: use --hostname/--domainname")
        else:
            raise _bad(
                field,
                f"sysctl {key!r} is not allowed: it is not namespaced "
                "(kernel.msg*, kernel.sem, kernel.shm*, fs.mqueue.*, net.* are)",
            )


def _memory(hc: dict[str, Any], opts: RunOptions) -> None:
    memory = _get_int(hc, "Memory", "HostConfig.Memory") or 0
    reservation = _get_int(hc, "MemoryReservation", "HostConfig.MemoryReservation") or 0
    swap = _get_int(hc, "MemorySwap", "HostConfig.MemorySwap") or 0
    swappiness = _get_int(hc, "MemorySwappiness", "HostConfig.MemorySwappiness")
    if memory < 0:
        raise _bad("HostConfig.Memory", f"memory limit cannot be negative: {memory}")
    if 0 < memory < MIN_MEMORY:
        raise _bad("HostConfig.Memory", "Minimum memory limit allowed is 6MB")
    if reservation < 0:
        raise _bad("HostConfig.MemoryReservation", f"cannot be negative: {reservation}")
    if 0 < reservation < MIN_MEMORY:
        raise _bad("HostConfig.MemoryReservation", "Minimum memory reservation allowed is 6MB")
    if memory and reservation and memory < reservation:
        raise _bad(
            "HostConfig.MemoryReservation",
            "Minimum memory limit can not be less than memory reservation limit, see usage",
        )
    if swap > 0 and not memory:
        raise _bad(
            "HostConfig.MemorySwap",
            "You should always set the Memory limit when using Memoryswap limit, see usage",
        )
    if swap > 0 and swap < memory:
        raise _bad(
            "HostConfig.MemorySwap",
            "Minimum memoryswap limit should be larger than memory limit, see usage",
        )
    if swap < -1:
        raise _bad("HostConfig.MemorySwap", f"invalid value {swap}: -1 (unlimited) or a size")
    if swappiness is not None and swappiness != -1 and not 0 <= swappiness <= 100:
        raise _bad(
            "HostConfig.MemorySwappiness",
            f"Invalid value: {swappiness}, valid memory swappiness range is 0-100",
        )
    opts.memory = memory or None
    opts.memory_reservation = reservation or None
    opts.memory_swap = swap or None
    opts.memory_swappiness = None if swappiness in (None, -1) else swappiness
    opts.oom_kill_disable = _get_bool(hc, "OomKillDisable", "HostConfig.OomKillDisable")
    adj = _get_int(hc, "OomScoreAdj", "HostConfig.OomScoreAdj") or 0
    if not -1000 <= adj <= 1000:
        raise _bad(
            "HostConfig.OomScoreAdj",
            f"Invalid value {adj}, range for oom score adj is [-1000, 1000]",
        )
    opts.oom_score_adj = adj or None


def _cpu(hc: dict[str, Any], opts: RunOptions) -> None:
    nano = _get_int(hc, "NanoCpus", "HostConfig.NanoCpus") or 0
    period = _get_int(hc, "CpuPeriod", "HostConfig.CpuPeriod") or 0
    quota = _get_int(hc, "CpuQuota", "HostConfig.CpuQuota") or 0
    shares = _get_int(hc, "CpuShares", "HostConfig.CpuShares") or 0
    if nano and period:
        raise _bad(
            "HostConfig.NanoCpus",
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        )
    if nano and quota:
        raise _bad(
            "HostConfig.NanoCpus", "Conflicting options: Nano CPUs and CPU Quota cannot both be set"
        )
    ncpu = os.cpu_count() or 1
    if nano < 0 or nano > ncpu * 1_000_000_000 or 0 < nano < 10_000_000:
        raise _bad(
            "HostConfig.NanoCpus",
            f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available",
        )
    if period and not 1000 <= period <= 1_000_000:
        raise _bad(
            "HostConfig.CpuPeriod",
            "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)",
        )
    if quota and quota != -1 and quota < 1000:
        raise _bad("HostConfig.CpuQuota", "CPU cfs quota can not be less than 1ms (i.e. 1000)")
    if shares < 0:
        raise _bad("HostConfig.CpuShares", f"cannot be negative: {shares}")
    opts.cpus = nano / 1e9 if nano else None
    opts.cpu_period = period or None
    opts.cpu_quota = quota or None
    opts.cpu_shares = shares or None
    online = _online_cpus()
    for key, attr in (("CpusetCpus", "cpuset_cpus"), ("CpusetMems", "cpuset_mems")):
        value = _get_str(hc, key, f"HostConfig.{key}")
        if value:
            _check_cpuset(value, f"HostConfig.{key}", online if key == "CpusetCpus" else None)
        setattr(opts, attr, value or None)
