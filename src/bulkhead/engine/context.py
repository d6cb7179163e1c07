"""What a running daemon is made of: its configuration and the stores it serves.

*data root* (``--root``, default ``/var/lib/bulkhead``)
    persistent state: ``images/`` (the image store), ``snapshots/<driver>/``
    (the snapshotter), ``containers.db`` and ``containers/<id>/`` (the
    engine's containers), ``volumes/`` (named volumes).
*exec root* (``--exec-root``, default ``/run/bulkhead``)
    state that dies with the machine: the API socket, the monitor zygote's
    socket, the OCI runtime's state (``runtime/``) and each running
    container's monitor directory (``<id>/``). Kept short: unix socket
    paths must fit in 108 bytes.

:class:`DaemonConfig` is what ``/etc/bulkhead/daemon.json`` and the
daemon's flags say (Docker's ``daemon.json`` keys where they exist);
:class:`Services` holds the live objects every API module registers
handlers against.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulkhead.api.system import SystemInfo
    from bulkhead.engine.engine import Engine
    from bulkhead.engine.volumes import VolumeStore
    from bulkhead.images.store import ImageStore

DEFAULT_ROOT = "/var/lib/bulkhead"
DEFAULT_EXEC_ROOT = "/run/bulkhead"
DEFAULT_SOCKET = "/run/bulkhead/bulkhead.sock"
DEFAULT_CONFIG_FILE = "/etc/bulkhead/daemon.json"

#: Docker's json-file defaults are unbounded; bulkhead rotates by default (10 MB, 3 files).
DEFAULT_LOG_MAX_SIZE = 10 * 1000 * 1000
DEFAULT_LOG_MAX_FILES = 3


@dataclass
class DaemonConfig:
    """The daemon's settings (flags over ``daemon.json`` over these defaults).

    ``runtimes`` maps a runtime name (``HostConfig.Runtime``, ``--runtime``)
    to the path of a runc-compatible binary; the name ``bulkhead`` is the
    built-in runtime, driven in-process by the monitor.
    """

    root: Path = Path(DEFAULT_ROOT)
    exec_root: Path = Path(DEFAULT_EXEC_ROOT)
    socket: str = DEFAULT_SOCKET
    default_runtime: str = "bulkhead"
    runtimes: dict[str, str] = field(default_factory=dict)
    log_max_size: int = DEFAULT_LOG_MAX_SIZE
    log_max_files: int = DEFAULT_LOG_MAX_FILES
    insecure_registries: list[str] = field(default_factory=list)
    registry_mirrors: list[str] = field(default_factory=list)
    snapshotter: str = ""  # "" = overlay when the data root supports it, else vfs
    cgroup_parent: str = "/bulkhead"  # containers' cgroups: <cgroup_parent>/<id>
    #: the default ``bridge`` network's Linux bridge (``bh0`` when empty); ``none``: no
    #: default bridge network, ``run`` without ``--network`` gets ``none`` (dockerd's --bridge)
    bridge: str = ""
    #: dockerd's ``bip`` (the default bridge's address and subnet, ``10.9.0.1/24``) and
    #: ``fixed-cidr`` (the range its containers' addresses come from)
    bip: str = ""
    fixed_cidr: str = ""
    #: dockerd's ``default-address-pools``: (base, size) where networks without a subnet
    #: get one (Docker's 172.17-31.0.0/16 and 192.168.0.0/16 in /20s when empty)
    default_address_pools: list[tuple[str, int]] = field(default_factory=list)
    #: dockerd's ``dns``: the nameservers of containers without ``--dns`` (written into
    #: their resolv.conf, and the upstreams of the embedded resolver on user networks)
    dns: list[str] = field(default_factory=list)
    #: dockerd's ``dns-search`` / ``dns-opts``: for containers without ``--dns-search`` /
    #: ``--dns-option``
    dns_search: list[str] = field(default_factory=list)
    #: dockerd's ``userland-proxy``: relay what DNAT cannot serve (``[::1]``, the host's
    #: IPv6 addresses for an IPv4-only container); off, those are not published
    userland_proxy: bool = True
    dns_options: list[str] = field(default_factory=list)
    debug: bool = False

    @property
    def images_root(self) -> Path:
        return self.root / "images"

    @property
    def snapshots_root(self) -> Path:
        return self.root / "snapshots"

    @property
    def containers_root(self) -> Path:
        return self.root / "containers"

    @property
    def volumes_root(self) -> Path:
        return self.root / "volumes"

    @property
    def runtime_root(self) -> Path:
        """The OCI runtime's ``--root`` (its state directory)."""
        return self.exec_root / "runtime"


@dataclass
class Services:
    """The daemon's live objects; API modules take this in ``register(router, services)``."""

    config: DaemonConfig
    images: ImageStore
    snapshotter: Any  # a bulkhead.snapshots.Snapshotter
    volumes: VolumeStore
    engine: Engine
    info: SystemInfo
