"""A container's directory and OCI bundle: what the runtime is handed.

Layout under ``<data root>/containers/<id>/`` (:class:`ContainerPaths`)::

    bundle/config.json      the OCI runtime spec (written atomically)
    bundle/rootfs/          mount point of the container's writable snapshot
    <id>-json.log           the json-file log (the monitor writes it; .1 .2 ... rotated)
    hostname hosts resolv.conf
                            bind-mounted over the container's /etc files

*rootfs mount*
    the snapshotter describes the root as mounts (overlay of the image's
    layers plus an upper dir, or a vfs bind); :func:`mount_rootfs` performs
    them at ``bundle/rootfs``. It is mounted at create (to read /etc/passwd
    and copy up volume content) and stays mounted until the container exits;
    ``docker cp``/``export`` of a stopped container mount it for the call.
*etc files*
    ``/etc/hostname``, ``/etc/hosts`` and ``/etc/resolv.conf`` are files of
    the container's directory bind-mounted into it, so the engine can
    rewrite them in place (:mod:`bulkhead.network.hosts` and
    :mod:`bulkhead.network.resolvconf` write them as Docker does).
*init*
    ``--init`` runs Debian's statically linked ``tini`` (Docker's
    ``docker-init`` is tini too), bind-mounted read-only at
    ``/sbin/docker-init``, as the container's PID 1 in front of the command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bulkhead.errors import SpecError
from bulkhead.linux import mountinfo
from bulkhead.network import hosts as hostsfile
from bulkhead.network import resolvconf
from bulkhead.snapshots.mount import mount_all, unmount_all

#: The init ``--init`` runs: Debian's static tini (package ``tini``).
TINI_STATIC = "/usr/bin/tini-static"
#: Where Docker puts its init in the container.
INIT_PATH = "/sbin/docker-init"


@dataclass(frozen=True)
class ContainerPaths:
    """Every path of one container under the data root's ``containers/``."""

    root: Path  # <data root>/containers
    container_id: str

    @property
    def dir(self) -> Path:
        return self.root / self.container_id

    @property
    def bundle(self) -> Path:
        return self.dir / "bundle"

    @property
    def rootfs(self) -> Path:
        return self.bundle / "rootfs"

    @property
    def config_json(self) -> Path:
        return self.bundle / "config.json"

    @property
    def log(self) -> Path:
        return self.dir / f"{self.container_id}-json.log"

    @property
    def hostname(self) -> Path:
        return self.dir / "hostname"

    @property
    def hosts(self) -> Path:
        return self.dir / "hosts"

    @property
    def resolv_conf(self) -> Path:
        return self.dir / "resolv.conf"


def atomic_write(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def make_dirs(paths: ContainerPaths) -> None:
    """The container's directory, its bundle and the (empty) rootfs mount point."""
    paths.dir.mkdir(mode=0o710, parents=True, exist_ok=True)
    paths.bundle.mkdir(mode=0o711, exist_ok=True)
    paths.rootfs.mkdir(mode=0o755, exist_ok=True)


def write_config(paths: ContainerPaths, spec: Mapping[str, Any]) -> None:
    """config.json, atomically."""
    atomic_write(paths.config_json, msgspec.json.encode(spec), 0o600)  # C speed: the seccomp
    # profile alone is thousands of JSON values


# --- /etc files ----------------------------------------------------------------


def resolv_conf_mode(network_mode: str, resolvers: Iterable[str] = ()) -> str:
    """How a network mode shapes resolv.conf (:mod:`bulkhead.network.resolvconf`):
    ``host`` for the host's namespace, ``internal`` when an embedded resolver
    serves the container (user-defined networks), else ``legacy``."""
    if network_mode == "host":
        return "host"
    return "internal" if list(resolvers) else "legacy"


def hosts_text(
    network_mode: str,
    extra_hosts: Iterable[str] = (),
    *,
    host_gateway: str | None = None,
    links: Iterable[hostsfile.Record] = (),
    own: Iterable[hostsfile.Record] = (),
    ipv6: bool = True,
) -> str:
    """The container's /etc/hosts (:mod:`bulkhead.network.hosts`): the host's for
    ``--network host`` without ``--add-host``, else Docker's defaults, the
    ``--add-host`` and ``--link`` records and the container's own addresses."""
    extra = [hostsfile.parse_extra_host(e, host_gateway) for e in extra_hosts]
    if network_mode == "host" and not extra:
        return hostsfile.host_copy()
    return hostsfile.build([*extra, *links, *own], ipv6=ipv6)


def container_hostname(
    network_mode: str, uts_mode: str | None, requested: str | None, cid: str
) -> str:
    """``--hostname``, or the host's name when the container shares the host's UTS
    namespace (``--network host`` / ``--uts host``), else the short id."""
    if requested:
        return requested
    if network_mode == "host" or uts_mode == "host":
        return socket.gethostname()
    return cid[:12]


def write_etc_files(
    paths: ContainerPaths,
    *,
    hostname: str,
    network_mode: str,
    host_config: Mapping[str, Any],
    resolvers: Iterable[str] = (),
    host_gateway: str | None = None,
    links: Iterable[hostsfile.Record] = (),
    own: Iterable[hostsfile.Record] = (),
    ipv6: bool = False,
    default_dns: Iterable[str] = (),
    default_dns_search: Iterable[str] = (),
    default_dns_options: Iterable[str] = (),
) -> list[resolvconf.ExtServer]:
    """hostname, hosts and resolv.conf in the container's directory; returns the
    embedded resolver's upstreams for this container (empty unless ``resolvers``).
    ``default_dns`` (``_search``, ``_options``): the daemon's ``dns`` (``dns-search``,
    ``dns-opts``) options, for a container without ``--dns`` (its own search, options)."""
    atomic_write(paths.hostname, (hostname + "\n").encode())
    atomic_write(
        paths.hosts,
        hosts_text(
            network_mode,
            host_config.get("ExtraHosts") or (),
            host_gateway=host_gateway,
            links=links,
            own=own,
        ).encode(),
    )
    resolvers = list(resolvers)
    rc = resolvconf.build(
        resolv_conf_mode(network_mode, resolvers),
        dns=host_config.get("Dns") or list(default_dns),
        dns_search=host_config.get("DnsSearch") or list(default_dns_search),
        dns_options=host_config.get("DnsOptions") or list(default_dns_options),
        resolvers=resolvers,
        ipv6=ipv6,
    )
    resolvconf.write(paths.resolv_conf, rc.generate())
    return list(rc.ext_servers)


def etc_mounts(paths: ContainerPaths, read_only: bool) -> list[dict[str, Any]]:
    """The bind mounts of the three /etc files (read-only with ``--read-only``, as Docker)."""
    mode = "ro" if read_only else "rw"
    return [
        {
            "destination": dest,
            "type": "bind",
            "source": str(src),
            "options": ["rbind", "rprivate", mode],
        }
        for dest, src in (
            ("/etc/resolv.conf", paths.resolv_conf),
            ("/etc/hostname", paths.hostname),
            ("/etc/hosts", paths.hosts),
        )
    ]


def init_mount(tini: str = TINI_STATIC) -> dict[str, Any]:
    """The read-only bind of the static tini at /sbin/docker-init (``--init``)."""
    if not os.path.isfile(tini):
        raise SpecError(
            f"the init binary {tini} is missing: install Debian's tini package", where="--init"
        )
    return {
        "destination": INIT_PATH,
        "type": "bind",
        "source": tini,
        "options": ["bind", "ro", "nosuid", "nodev"],
    }


def merge_mounts(
    defaults: list[dict[str, Any]],
    user: list[dict[str, Any]],
    etc: list[dict[str, Any]],
    extra: Iterable[dict[str, Any]] = (),
) -> list[dict[str, Any]]:
    """Docker's order: the default mounts a user mount does not replace, then every
    container mount sorted by destination depth (a parent before its children)."""
    user_dests = {os.path.normpath(m["destination"]) for m in user}
    kept = [m for m in defaults if os.path.normpath(m["destination"]) not in user_dests]
    own = [m for m in etc if m["destination"] not in user_dests]
    own.extend(user)
    own.extend(m for m in extra if m["destination"] not in user_dests)
    own.sort(key=lambda m: len(Path(os.path.normpath(m["destination"])).parts))
    return kept + own


# --- the root filesystem ---------------------------------------------------------


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """Is something mounted exactly at ``path``?"""
    target = os.path.realpath(path)
    return any(m.mountpoint == target for m in mountinfo.read())


def mount_rootfs(snapshotter: Any, key: str, rootfs: str | os.PathLike[str]) -> None:
    """Mount the snapshot ``key`` at ``rootfs`` (nothing when already mounted)."""
    if is_mounted(rootfs):
        return
    os.makedirs(rootfs, exist_ok=True)
    mount_all(snapshotter.mounts(key), str(rootfs))


def unmount_rootfs(rootfs: str | os.PathLike[str]) -> None:
    """Unmount whatever is stacked at ``rootfs`` (fine when nothing is)."""
    if os.path.isdir(rootfs):
        unmount_all(str(rootfs))


def remove_dir(paths: ContainerPaths) -> None:
    """Delete the container's directory, after making sure its rootfs is unmounted."""
    unmount_rootfs(paths.rootfs)
    if paths.rootfs.is_dir() and is_mounted(paths.rootfs):
        raise SpecError(f"{paths.rootfs} is still mounted; not deleting the container's directory")
    shutil.rmtree(paths.dir, ignore_errors=True)
