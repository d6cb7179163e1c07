"""System endpoints: ``/_ping``, ``/version``, ``/info`` (and an empty ``/containers/json``).

``/info`` reports real host figures; counts of containers and images are
zero until the engine plugs its stores in (:class:`SystemInfo` callbacks).
"""

from __future__ import annotations

import os
import platform
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bulkhead import __version__
from bulkhead.api.routes import (
    API_VERSION,
    MIN_API_VERSION,
    Request,
    Response,
    Router,
    json_response,
)

_ARCH = {
    "x86_64": "amd64",
    "aarch64": "arm64",
    "armv7l": "arm",
    "ppc64le": "ppc64le",
    "s390x": "s390x",
}
_PING_HEADERS = [
    ("Builder-Version", "1"),
    ("Cache-Control", "no-cache, no-store, must-revalidate"),
    ("Pragma", "no-cache"),
    ("Swarm", "inactive"),
]


def go_arch() -> str:
    """The machine's architecture in Go's (and Docker's) words."""
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def _os_release() -> tuple[str, str]:
    pretty, version = "Linux", ""
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return pretty, version
    for line in text.splitlines():
        key, _, value = line.partition("=")
        value = value.strip().strip('"')
        if key == "PRETTY_NAME":
            pretty = value
        elif key == "VERSION_ID":
            version = value
    return pretty, version


def _mem_total() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _cgroup_version() -> str:
    try:
        from bulkhead.cgroups import detect

        return str(detect().version)
    except Exception:
        return "2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "1"


def _daemon_id(root: Path) -> str:
    path = root / "engine-id"
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        pass
    ident = str(uuid.uuid4())
    try:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(ident + "\n", encoding="ascii")
    except OSError:
        pass
    return ident


_DEFAULT_REGISTRY_CONFIG: dict[str, Any] = {
    "InsecureRegistryCIDRs": ["::1/128", "127.0.0.0/8"],
    "IndexConfigs": {
        "docker.io": {"Name": "docker.io", "Mirrors": [], "Secure": True, "Official": True}
    },
    "Mirrors": [],
}


@dataclass
class SystemInfo:
    """What the system endpoints report; the engine replaces the counters."""

    root: Path
    driver: str = "overlayfs"
    default_runtime: str = "bulkhead-runtime"
    containers: Callable[[], dict[str, int]] = field(
        default=lambda: {"running": 0, "paused": 0, "stopped": 0}
    )
    images: Callable[[], int] = field(default=lambda: 0)
    #: ``Runtimes`` (name -> {"path": ...}) and ``RegistryConfig``, from the daemon's settings.
    runtimes: dict[str, dict[str, str]] = field(
        default_factory=lambda: {"bulkhead-runtime": {"path": "bulkhead-runtime"}}
    )
    registry: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)

    def version_doc(self) -> dict[str, Any]:
        uname = os.uname()
        details = {
            "ApiVersion": API_VERSION,
            "Arch": go_arch(),
            "BuildTime": "",
            "Experimental": "false",
            "GitCommit": "",
            "GoVersion": "n/a",
            "KernelVersion": uname.release,
            "MinAPIVersion": MIN_API_VERSION,
            "Os": "linux",
        }
        return {
            "Platform": {"Name": f"bulkhead {__version__}"},
            "Components": [{"Name": "Engine", "Version": __version__, "Details": details}],
            "Version": __version__,
            "ApiVersion": API_VERSION,
            "MinAPIVersion": MIN_API_VERSION,
            "GitCommit": "",
            "GoVersion": "n/a",
            "Os": "linux",
            "Arch": go_arch(),
            "KernelVersion": uname.release,
            "BuildTime": "",
        }

    def info_doc(self) -> dict[str, Any]:
        uname = os.uname()
        counts = self.containers()
        pretty, os_version = _os_release()
        cgroup_version = _cgroup_version()
        return {
            "ID": _daemon_id(self.root),
            "Containers": sum(counts.values()),
            "ContainersRunning": counts.get("running", 0),
            "ContainersPaused": counts.get("paused", 0),
            "ContainersStopped": counts.get("stopped", 0),
            "Images": self.images(),
            "Driver": self.driver,
            "DriverStatus": [["Backing Filesystem", "extfs"], ["Supports d_type", "true"]],
            "DockerRootDir": str(self.root),
            "Plugins": {
                "Volume": ["local"],
                "Network": ["host", "null"],
                "Authorization": None,
                "Log": ["json-file"],
            },
            "MemoryLimit": True,
            "SwapLimit": os.path.exists("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
            or cgroup_version == "2",
            "CpuCfsPeriod": True,
            "CpuCfsQuota": True,
            "CPUShares": True,
            "CPUSet": True,
            "PidsLimit": True,
            "OomKillDisable": cgroup_version == "1",
            "IPv4Forwarding": _read_flag("/proc/sys/net/ipv4/ip_forward"),
            "Debug": False,
            "NFd": _count_fds(),
            "NGoroutines": 1,
            "SystemTime": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime())
            + time.strftime("%z", time.localtime())[:3]
            + ":"
            + time.strftime("%z", time.localtime())[3:],
            "LoggingDriver": "json-file",
            "CgroupDriver": "cgroupfs",
            "CgroupVersion": cgroup_version,
            "NEventsListener": 0,
            "KernelVersion": uname.release,
            "OperatingSystem": pretty,
            "OSVersion": os_version,
            "OSType": "linux",
            "Architecture": uname.machine,
            "NCPU": os.cpu_count() or 1,
            "MemTotal": _mem_total(),
            "IndexServerAddress": "https://index.docker.io/v1/",
            "RegistryConfig": self.registry or _DEFAULT_REGISTRY_CONFIG,
            "GenericResources": None,
            "HttpProxy": os.environ.get("HTTP_PROXY", ""),
            "HttpsProxy": os.environ.get("HTTPS_PROXY", ""),
            "NoProxy": os.environ.get("NO_PROXY", ""),
            "Name": socket.gethostname(),
            "Labels": [],
            "ExperimentalBuild": False,
            "ServerVersion": __version__,
            "Runtimes": self.runtimes,
            "DefaultRuntime": self.default_runtime,
            "Swarm": {
                "NodeID": "",
                "NodeAddr": "",
                "LocalNodeState": "inactive",
                "ControlAvailable": False,
                "Error": "",
                "RemoteManagers": None,
            },
            "LiveRestoreEnabled": True,
            "Isolation": "",
            "InitBinary": "",
            "ContainerdCommit": {"ID": ""},
            "RuncCommit": {"ID": ""},
            "InitCommit": {"ID": ""},
            "SecurityOptions": ["name=seccomp,profile=builtin"]
            + (["name=cgroupns"] if cgroup_version == "2" else []),
            "CDISpecDirs": [],
            "Warnings": [],
        }


def _read_flag(path: str) -> bool:
    try:
        return Path(path).read_text(encoding="ascii").strip() == "1"
    except OSError:
        return False


def _count_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def register(router: Router, info: SystemInfo) -> None:
    """Add the system endpoints to ``router``."""

    async def ping(req: Request) -> Response:
        return Response(200, b"OK", "text/plain; charset=utf-8", list(_PING_HEADERS))

    async def version(req: Request) -> Response:
        return json_response(info.version_doc())

    async def system_info(req: Request) -> Response:
        return json_response(info.info_doc())

    async def containers_list(req: Request) -> Response:
        req.filters()  # a malformed filter is a 400 even while the list is empty
        req.query_bool("all")
        return json_response([])

    router.add("GET", "/_ping", ping)
    router.add("HEAD", "/_ping", ping)
    router.add("GET", "/version", version)
    router.add("GET", "/info", system_info)
    router.add("GET", "/containers/json", containers_list)
