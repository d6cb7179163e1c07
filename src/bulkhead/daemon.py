"""``bulkhead daemon``: the daemon that serves the Docker Engine API.

It serves :mod:`bulkhead.api` on a unix socket (default
``/run/bulkhead/bulkhead.sock``, mode 0660) with its persistent state under
the data root (default ``/var/lib/bulkhead``) and its run-time state under
the exec root (default ``/run/bulkhead``); see
:mod:`bulkhead.engine.context` for the layout.

Settings come from flags over ``/etc/bulkhead/daemon.json`` (Docker's
``daemon.json`` keys: ``data-root``, ``exec-root``, ``hosts``,
``default-runtime``, ``runtimes`` (``{"runc": {"path": "/usr/sbin/runc"}}``),
``log-opts`` (``max-size``, ``max-file``), ``insecure-registries``,
``registry-mirrors``, ``storage-driver``, ``debug``, ``bridge``: the default
bridge network's interface, ``bh0``, or ``none`` for no default bridge
network, as dockerd's ``--bridge``; ``dns``: the nameservers of containers
without ``--dns``, also the embedded resolver's upstreams; ``dns-search`` and
``dns-opts``: the search domains and resolver options of containers without
``--dns-search`` / ``--dns-option``; ``bip``, ``fixed-cidr`` and
``default-address-pools`` (``[{"base": "10.10.0.0/16", "size": 24}]``): the
default bridge network's address, its containers' range and the subnets of
networks created without one, as dockerd's; ``userland-proxy``: false to
publish ports with DNAT alone, as dockerd's). An unknown key or a
value of the wrong type is an error naming the file and the key, as dockerd
does.

A socket file left by a dead daemon is removed; when another daemon answers
on it, this one refuses to start (exit 1). SIGTERM and SIGINT stop it
cleanly and remove its socket; containers keep running (each has its own
monitor), and the next daemon finds them again.

The process is asyncio with worker threads for blocking work (SQLite,
unpacking, pulls), so it never forks: containers are started by the monitor
zygote, a separate single-threaded process (:mod:`bulkhead.engine.zygote`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import stat
import sys
from pathlib import Path
from typing import Any

from bulkhead.engine.context import (
    DEFAULT_CONFIG_FILE,
    DEFAULT_EXEC_ROOT,
    DEFAULT_ROOT,
    DEFAULT_SOCKET,
    DaemonConfig,
    Services,
)
from bulkhead.errors import BulkheadError, SpecError

SOCKET_MODE = 0o660

log = logging.getLogger("bulkhead.daemon")


class DaemonRunning(Exception):
    """Another daemon answers on the socket."""


class ConfigError(SpecError):
    """``daemon.json`` or a flag says something the daemon cannot use."""


def socket_answers(path: str, timeout: float = 1.0) -> bool:
    """Whether something serves HTTP on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: bulkhead\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/")
        except OSError:
            return False


def prepare_socket_path(path: str) -> None:
    """Create the socket's directory; remove a stale socket; refuse a live one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonRunning(f"{path} exists and is not a socket")
    if socket_answers(path):
        raise DaemonRunning(f"another daemon is already serving on {path}")
    os.unlink(path)


# --- configuration -----------------------------------------------------------------

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3}


def parse_log_size(value: str, where: str) -> int:
    """Docker's ``max-size`` (``10m``, ``100k``, ``1g``; decimal units as Docker's json-file)."""
    text = value.strip().lower()
    digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text[len(digits) :]
    if not digits or unit not in _SIZE_UNITS:
        raise ConfigError(f"invalid size {value!r} (e.g. 10m, 500k)", where=where)
    try:
        size = int(float(digits) * _SIZE_UNITS[unit])
    except ValueError:
        raise ConfigError(f"invalid size {value!r}", where=where) from None
    if size < 0:
        raise ConfigError(f"invalid size {value!r}: negative", where=where)
    return size


def parse_log_files(value: str, where: str) -> int:
    if not value.strip().isdigit() or int(value) < 1:
        raise ConfigError(f"invalid max-file {value!r}: a number >= 1", where=where)
    return int(value)


_KNOWN_KEYS = {
    "data-root",
    "exec-root",
    "hosts",
    "default-runtime",
    "runtimes",
    "log-driver",
    "log-opts",
    "insecure-registries",
    "registry-mirrors",
    "storage-driver",
    "debug",
    "live-restore",
    "cgroup-parent",
    "bridge",
    "bip",
    "fixed-cidr",
    "default-address-pools",
    "dns",
    "dns-search",
    "dns-opts",
    "userland-proxy",
}


def _expect(value: Any, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise ConfigError(f"expected {names}, got {json.dumps(value)}", where=where)
    return value


def apply_config_file(config: DaemonConfig, path: str, *, required: bool) -> None:
    """Read ``daemon.json`` at ``path`` into ``config``; a missing file is fine unless ``required``."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except FileNotFoundError:
        if required:
            raise ConfigError("no such file", where=path) from None
        return
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read: {exc}", where=path) from None
    _expect(doc, dict, path)
    unknown = sorted(set(doc) - _KNOWN_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s): {', '.join(unknown)}", where=path)
    if "data-root" in doc:
        config.root = Path(_expect(doc["data-root"], str, f"{path}: data-root"))
    if "exec-root" in doc:
        config.exec_root = Path(_expect(doc["exec-root"], str, f"{path}: exec-root"))
    if "hosts" in doc:
        hosts = _expect(doc["hosts"], list, f"{path}: hosts")
        unix = [h for h in hosts if isinstance(h, str) and h.startswith("unix://")]
        if len(unix) != len(hosts) or len(unix) != 1:
            raise ConfigError("exactly one unix:// socket is supported", where=f"{path}: hosts")
        config.socket = unix[0].removeprefix("unix://")
    if "default-runtime" in doc:
        config.default_runtime = _expect(doc["default-runtime"], str, f"{path}: default-runtime")
    for name, entry in _expect(doc.get("runtimes", {}), dict, f"{path}: runtimes").items():
        where = f"{path}: runtimes.{name}"
        entry = _expect(entry, dict, where)
        config.runtimes[name] = _expect(entry.get("path"), str, f"{where}.path")
    if "log-driver" in doc and doc["log-driver"] != "json-file":
        raise ConfigError(
            f"log driver {doc['log-driver']!r} is not supported (json-file only)",
            where=f"{path}: log-driver",
        )
    opts = _expect(doc.get("log-opts", {}), dict, f"{path}: log-opts")
    for key, value in opts.items():
        where = f"{path}: log-opts.{key}"
        _expect(value, str, where)
        if key == "max-size":
            config.log_max_size = parse_log_size(value, where)
        elif key == "max-file":
            config.log_max_files = parse_log_files(value, where)
        else:
            raise ConfigError("unknown log option (max-size, max-file)", where=where)
    if "insecure-registries" in doc:
        regs = _expect(doc["insecure-registries"], list, f"{path}: insecure-registries")
        config.insecure_registries = [_expect(r, str, f"{path}: insecure-registries") for r in regs]
    if "registry-mirrors" in doc:
        mirrors = _expect(doc["registry-mirrors"], list, f"{path}: registry-mirrors")
        config.registry_mirrors = [_expect(m, str, f"{path}: registry-mirrors") for m in mirrors]
    if "storage-driver" in doc:
        driver = _expect(doc["storage-driver"], str, f"{path}: storage-driver")
        config.snapshotter = _snapshotter_name(driver, f"{path}: storage-driver")
    if "cgroup-parent" in doc:
        config.cgroup_parent = _cgroup_parent(
            _expect(doc["cgroup-parent"], str, f"{path}: cgroup-parent"), f"{path}: cgroup-parent"
        )
    if "debug" in doc:
        config.debug = _expect(doc["debug"], bool, f"{path}: debug")
    if "bridge" in doc:
        config.bridge = _bridge_name(_expect(doc["bridge"], str, f"{path}: bridge"), path)
    if "bip" in doc:
        config.bip = _bip(_expect(doc["bip"], str, f"{path}: bip"), f"{path}: bip")
    if "fixed-cidr" in doc:
        where = f"{path}: fixed-cidr"
        config.fixed_cidr = _fixed_cidr(_expect(doc["fixed-cidr"], str, where), where)
    if "default-address-pools" in doc:
        where = f"{path}: default-address-pools"
        pools = []
        for i, entry in enumerate(_expect(doc["default-address-pools"], list, where)):
            entry = _expect(entry, dict, f"{where}[{i}]")
            unknown = sorted(set(entry) - {"base", "size"})
            if unknown:
                raise ConfigError(f"unknown key(s): {', '.join(unknown)}", where=f"{where}[{i}]")
            base = _expect(entry.get("base"), str, f"{where}[{i}].base")
            size = _expect(entry.get("size"), int, f"{where}[{i}].size")
            pools.append(_address_pool(base, size, f"{where}[{i}]"))
        config.default_address_pools = pools
    if "dns" in doc:
        servers = _expect(doc["dns"], list, f"{path}: dns")
        config.dns = [_nameserver(_expect(s, str, f"{path}: dns"), f"{path}: dns") for s in servers]
    if "dns-search" in doc:
        where = f"{path}: dns-search"
        domains = _expect(doc["dns-search"], list, where)
        config.dns_search = [_search_domain(_expect(d, str, where), where) for d in domains]
    if "userland-proxy" in doc:
        config.userland_proxy = _expect(doc["userland-proxy"], bool, f"{path}: userland-proxy")
    if "dns-opts" in doc:
        where = f"{path}: dns-opts"
        config.dns_options = [_expect(o, str, where) for o in _expect(doc["dns-opts"], list, where)]


def _nameserver(value: str, where: str) -> str:
    """``dns``: an IP address (as dockerd's; a port is not allowed)."""
    import ipaddress

    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{value} is not an ip address", where=where) from None
    return value


_DOMAIN_LABEL = r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"{_DOMAIN_LABEL}(\.{_DOMAIN_LABEL})*\.?")


def _flag_bool(value: str) -> bool:
    """A boolean flag's value as dockerd's (``--userland-proxy=false``)."""
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise argparse.ArgumentTypeError(f"invalid boolean value {value!r} (true or false)")


def _search_domain(value: str, where: str) -> str:
    """``dns-search``: a domain name (moby's ``ValidateDNSSearch``), or ``.`` for none."""
    if value == "." or (len(value) <= 255 and _DOMAIN.fullmatch(value)):
        return value
    raise ConfigError(f"{value} is not a valid domain", where=where)


def _bip(value: str, where: str) -> str:
    """``bip``: the default bridge's IPv4 address with its prefix (``10.9.0.1/24``), not
    the subnet's network or broadcast address."""
    import ipaddress

    try:
        iface = ipaddress.IPv4Interface(value)
    except ValueError:
        raise ConfigError(f"invalid bip {value!r}: an IPv4 address/prefix", where=where) from None
    net = iface.network
    if "/" not in value or (
        net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address)
    ):
        raise ConfigError(
            f"invalid bip {value!r}: a host address of its subnet with its prefix "
            "(e.g. 10.9.0.1/24)",
            where=where,
        )
    return value


def _fixed_cidr(value: str, where: str) -> str:
    """``fixed-cidr``: an IPv4 subnet (host bits ignored, as dockerd's)."""
    import ipaddress

    try:
        ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise ConfigError(f"invalid fixed-cidr {value!r}: an IPv4 CIDR", where=where) from None
    if "/" not in value:
        raise ConfigError(f"invalid fixed-cidr {value!r}: an IPv4 CIDR", where=where)
    return value


def _address_pool(base: str, size: int, where: str) -> tuple[str, int]:
    """One ``default-address-pools`` entry: an IPv4 ``base`` cut in subnets of ``size``."""
    import ipaddress

    try:
        net = ipaddress.ip_network(base)
    except ValueError:
        raise ConfigError(f"invalid base pool {base!r}: a CIDR", where=where) from None
    if net.version != 4:
        raise ConfigError(
            f"IPv6 default address pools are not supported ({base}): --ipv6 networks get a "
            "unique local /64",
            where=where,
        )
    if not net.prefixlen <= size <= 32:
        raise ConfigError(
            f"invalid pool size {size} for base {base}: between {net.prefixlen} and 32",
            where=where,
        )
    return str(net), size


def _check_bridge_options(config: DaemonConfig) -> None:
    """``fixed-cidr`` inside ``bip``'s subnet (dockerd's rule)."""
    import ipaddress

    if config.bip and config.fixed_cidr:
        subnet = ipaddress.IPv4Interface(config.bip).network
        fixed = ipaddress.IPv4Network(config.fixed_cidr, strict=False)
        if not fixed.subnet_of(subnet):
            raise ConfigError(
                f"fixed-cidr {config.fixed_cidr} is not within the bip subnet {subnet}",
                where="fixed-cidr",
            )


def _bridge_name(value: str, where: str) -> str:
    """``bridge``: ``none`` or an interface name (at most 15 characters)."""
    if value != "none" and (len(value) > 15 or "/" in value or not value.isprintable()):
        raise ConfigError(f"{where}: invalid bridge name {value!r}")
    return value


def _cgroup_parent(value: str, where: str) -> str:
    """An absolute cgroup path (``/bulkhead``); systemd slices are not supported (cgroupfs driver)."""
    if not value.startswith("/") or value.endswith(".slice") or ".." in value.split("/"):
        raise ConfigError(
            f"invalid cgroup parent {value!r}: an absolute cgroupfs path such as /bulkhead",
            where=where,
        )
    return value.rstrip("/") or "/"


def _snapshotter_name(driver: str, where: str) -> str:
    names = {"overlay": "overlay", "overlay2": "overlay", "overlayfs": "overlay", "vfs": "vfs"}
    if driver not in names:
        raise ConfigError(f"unknown storage driver {driver!r} (overlay2, vfs)", where=where)
    return names[driver]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bulkhead daemon", description="Serve the Docker Engine API on a unix socket."
    )
    parser.add_argument("--host", "-H", help=f"unix socket (default {DEFAULT_SOCKET})")
    parser.add_argument("--socket", dest="host", help=argparse.SUPPRESS)
    parser.add_argument("--data-root", "--root", dest="root", help=f"default {DEFAULT_ROOT}")
    parser.add_argument("--exec-root", help=f"default {DEFAULT_EXEC_ROOT}")
    parser.add_argument("--config-file", help=f"default {DEFAULT_CONFIG_FILE}")
    parser.add_argument("--default-runtime", help="bulkhead (built in), runc, crun, or added")
    parser.add_argument(
        "--add-runtime", action="append", default=[], metavar="NAME=PATH", help="a runc-like binary"
    )
    parser.add_argument("--log-opt", action="append", default=[], metavar="max-size=|max-file=")
    parser.add_argument("--insecure-registry", action="append", default=[])
    parser.add_argument("--storage-driver", help="overlay2 or vfs")
    parser.add_argument("--cgroup-parent", help="cgroup of the containers' cgroups (/bulkhead)")
    parser.add_argument("--debug", "-D", action="store_true", help="debug logging")
    parser.add_argument(
        "--bridge", "-b", help="the default bridge network's interface (bh0), or none"
    )
    parser.add_argument("--bip", help="the default bridge's address and prefix (10.9.0.1/24)")
    parser.add_argument("--fixed-cidr", help="IPv4 range of the default bridge's containers")
    parser.add_argument(
        "--default-address-pool",
        action="append",
        default=[],
        metavar="base=CIDR,size=N",
        help="where networks without a subnet get theirs",
    )
    parser.add_argument(
        "--dns", action="append", default=[], help="DNS server for the containers to use"
    )
    parser.add_argument(
        "--userland-proxy",
        type=_flag_bool,
        nargs="?",
        const=True,
        default=None,
        metavar="true|false",
        help="relay [::1] and IPv6-to-IPv4 published ports (default true)",
    )
    parser.add_argument(
        "--dns-search", action="append", default=[], help="DNS search domain for the containers"
    )
    parser.add_argument(
        "--dns-opt", action="append", default=[], help="DNS option for the containers"
    )
    return parser


def load_config(argv: list[str] | None = None) -> DaemonConfig:
    """Flags over ``daemon.json`` over defaults."""
    args = build_parser().parse_args(argv)
    config = DaemonConfig()
    apply_config_file(
        config, args.config_file or DEFAULT_CONFIG_FILE, required=args.config_file is not None
    )
    if args.host:
        if "://" in args.host and not args.host.startswith("unix://"):
            raise ConfigError(f"only unix:// sockets are supported: {args.host}", where="--host")
        config.socket = args.host.removeprefix("unix://")
    if args.root:
        config.root = Path(args.root)
    if args.exec_root:
        config.exec_root = Path(args.exec_root)
    for entry in args.add_runtime:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"expected NAME=PATH, got {entry!r}", where="--add-runtime")
        config.runtimes[name] = path
    if args.default_runtime:
        config.default_runtime = args.default_runtime
    for entry in args.log_opt:
        key, sep, value = entry.partition("=")
        if key == "max-size" and sep:
            config.log_max_size = parse_log_size(value, "--log-opt max-size")
        elif key == "max-file" and sep:
            config.log_max_files = parse_log_files(value, "--log-opt max-file")
        else:
            raise ConfigError(f"unknown log option {entry!r} (max-size, max-file)", "--log-opt")
    config.insecure_registries += args.insecure_registry
    if args.storage_driver:
        config.snapshotter = _snapshotter_name(args.storage_driver, "--storage-driver")
    if args.cgroup_parent:
        config.cgroup_parent = _cgroup_parent(args.cgroup_parent, "--cgroup-parent")
    config.debug = config.debug or args.debug
    if args.bridge:
        config.bridge = _bridge_name(args.bridge, "--bridge")
    if args.bip:
        config.bip = _bip(args.bip, "--bip")
    if args.fixed_cidr:
        config.fixed_cidr = _fixed_cidr(args.fixed_cidr, "--fixed-cidr")
    if args.default_address_pool:
        pools = []
        for entry in args.default_address_pool:
            fields = dict(part.partition("=")[::2] for part in entry.split(","))
            if set(fields) != {"base", "size"} or not fields["size"].isdigit():
                raise ConfigError(
                    f"expected base=CIDR,size=N, got {entry!r}", where="--default-address-pool"
                )
            pools.append(
                _address_pool(fields["base"], int(fields["size"]), "--default-address-pool")
            )
        config.default_address_pools = pools
    _check_bridge_options(config)
    if args.dns:
        config.dns = [_nameserver(s, "--dns") for s in args.dns]
    if args.userland_proxy is not None:
        config.userland_proxy = args.userland_proxy
    if args.dns_search:
        config.dns_search = [_search_domain(d, "--dns-search") for d in args.dns_search]
    if args.dns_opt:
        config.dns_options = list(args.dns_opt)
    from bulkhead.engine.runtimes import Runtimes

    try:  # the built-in runtime, runc, crun, bulkhead-runtime, and the configured ones
        Runtimes(config.default_runtime, config.runtimes)
    except SpecError as exc:
        raise ConfigError(str(exc), where="default-runtime") from None
    return config


# --- services ------------------------------------------------------------------------


def open_snapshotter(config: DaemonConfig) -> Any:
    """The snapshotter the config names, or overlay when the data root supports it, else vfs."""
    from bulkhead.snapshots import overlay, vfs

    base = config.snapshots_root
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    name = config.snapshotter
    if not name:
        reason = overlay.supported(base)
        name = "overlay" if reason is None else "vfs"
        if reason is not None:
            log.warning("overlay snapshots unavailable (%s): using vfs", reason)
    config.snapshotter = name
    if name == "overlay":
        return overlay.OverlaySnapshotter(base / "overlay")
    return vfs.VfsSnapshotter(base / "vfs")


def open_services(config: DaemonConfig) -> Services:
    """Open the stores and build the engine (does not start anything yet)."""
    from bulkhead.api.system import SystemInfo
    from bulkhead.engine.engine import Engine
    from bulkhead.engine.volumes import VolumeStore
    from bulkhead.images.store import ImageStore

    config.root.mkdir(parents=True, exist_ok=True, mode=0o711)
    config.exec_root.mkdir(parents=True, exist_ok=True, mode=0o711)
    images = ImageStore(config.images_root)
    snapshotter = open_snapshotter(config)
    volumes = VolumeStore(config.volumes_root)
    engine = Engine(config=config, images=images, snapshotter=snapshotter, volumes=volumes)
    volumes.on_event = lambda action, name, attributes: engine.events.emit(
        "volume", action, name, attributes
    )
    info = SystemInfo(
        root=config.root,
        driver="overlay2" if config.snapshotter == "overlay" else "vfs",
        default_runtime=config.default_runtime,
    )
    services = Services(
        config=config,
        images=images,
        snapshotter=snapshotter,
        volumes=volumes,
        engine=engine,
        info=info,
    )
    _plug_counters(services)
    return services


def _plug_counters(services: Services) -> None:
    """``/info``'s counts, runtimes and registry settings from the live services."""
    engine, images = services.engine, services.images

    def containers() -> dict[str, int]:
        counts = {"running": 0, "paused": 0, "stopped": 0}
        for c in engine.list(all=True):
            state = c.get("State", "")
            key = "running" if state == "running" else "paused" if state == "paused" else "stopped"
            counts[key] += 1
        return counts

    services.info.containers = containers
    services.info.images = lambda: len(images.list())
    services.info.runtimes = engine.runtimes.info()
    from bulkhead.api.images import registry_info

    services.info.registry = registry_info(
        services.config.insecure_registries, services.config.registry_mirrors
    )


def build_router(services: Services) -> Any:
    """The daemon's routing table: system, then containers (stats, top), exec, images, volumes,
    events, disk."""
    from bulkhead.api import (
        containers,
        disk,
        events,
        exec,
        images,
        networks,
        stats,
        system,
        volumes,
    )
    from bulkhead.api.routes import Router

    router = Router()
    system.register(router, services.info)
    for module in (containers, stats, exec, images, volumes, networks, events, disk):
        module.register(router, services)
    return router


async def serve(config: DaemonConfig) -> None:
    """Run until SIGTERM or SIGINT."""
    from bulkhead.api.server import APIServer

    prepare_socket_path(config.socket)
    services = open_services(config)
    await services.engine.start_up()
    server = APIServer(build_router(services))
    await server.start_unix(config.socket)
    os.chmod(config.socket, SOCKET_MODE)
    ours = os.stat(config.socket).st_ino
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info(
        "bulkhead daemon listening on %s (data root %s, exec root %s, runtime %s, snapshots %s)",
        config.socket,
        config.root,
        config.exec_root,
        config.default_runtime,
        config.snapshotter,
    )
    try:
        await stop.wait()
    finally:
        await server.close()
        with contextlib.suppress(OSError):
            if os.stat(config.socket).st_ino == ours:
                os.unlink(config.socket)
        await services.engine.shut_down()
        services.images.close()


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(argv)
    except ConfigError as exc:
        print(f"bulkhead daemon: {exc}", file=sys.stderr)
        return 1
    logging.basicConfig(
        level=logging.DEBUG if config.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(config))
    except (DaemonRunning, BulkheadError, OSError) as exc:
        print(f"bulkhead daemon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
