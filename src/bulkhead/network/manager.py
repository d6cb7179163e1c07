"""What the engine and the API call: networks, endpoints, the sandbox of a container.

The daemon holds one :class:`NetworkManager`. Its small API:

- :meth:`NetworkManager.start_up` (daemon start): the pre-defined networks
  ``bridge`` (unless the daemon runs with ``bridge: none``), ``host`` and
  ``none``; the bridges of every bridge network made again (they do not
  survive a reboot; a daemon restart finds them and keeps them). Only this,
  :meth:`create_network` and a container's start make interfaces: looking
  networks up never does.
- :meth:`create_network`, :meth:`remove_network`, :meth:`prune`,
  :meth:`get`, :meth:`networks`, :meth:`network_doc` (``/networks``).
- :meth:`attach` (container create, ``network connect``): an endpoint and
  its addresses, persisted; :meth:`detach` (``disconnect``) frees them;
  :meth:`forget_container` (container removal) frees all of a container's.
- :meth:`up` (every container start): the container's namespace
  ``<exec_root>/netns/<id>`` and one veth per endpoint; :meth:`down`
  (exit, removal) takes them away again. :meth:`connect_live` /
  :meth:`disconnect_live` do the same for one endpoint of a running container.
- :meth:`settings`: inspect's ``NetworkSettings``.

Extension points for the NAT and DNS parts (called in worker threads, after
the change): ``on_endpoint_up`` / ``on_endpoint_down`` (``(network,
endpoint)``), ``on_network_up`` / ``on_network_down`` (``(network)``). An
exception in a hook is logged, never raised into the engine.

Safety: with ``BULKHEAD_FORBID_NETNS=<inode>`` in its environment (the test
suite sets it to the inode of its own, the host's, network namespace) the
manager refuses to create any interface while the daemon runs in that
namespace. (``/proc/1/ns/net`` cannot be read on every host, so the suite
names the namespace rather than the manager guessing it.)
"""

from __future__ import annotations

import builtins
import contextlib
import ipaddress
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyroute2.netlink.exceptions import NetlinkError

from bulkhead.errors import (
    NetworkConflict,
    NetworkError,
    NetworkForbidden,
    NoSuchNetwork,
    SpecError,
    UnsupportedError,
)
from bulkhead.network import bridge, ipam, netns
from bulkhead.network.store import Endpoint, Network, NetworkStore, Pool, new_id

if TYPE_CHECKING:
    from bulkhead.engine.events import EventBus

log = logging.getLogger("bulkhead.network")

#: the default bridge network's Linux bridge (Docker's is docker0)
DEFAULT_BRIDGE = "bh0"
PREDEFINED = ("bridge", "host", "none")
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_MTU = "com.docker.network.driver.mtu"
OPT_ENABLE_IPV4 = "com.docker.network.enable_ipv4"
OPT_ENABLE_IPV6 = "com.docker.network.enable_ipv6"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$")

NetworkHook = Callable[[Network], None]
EndpointHook = Callable[[Network, Endpoint], None]


def _now() -> str:
    """Docker's ``Created``: RFC 3339 with nanoseconds, trailing zeros dropped (Go's)."""
    from bulkhead.engine.containers import now_rfc3339

    return now_rfc3339()


def _prefix(pools: list[Pool], address: str) -> int:
    if not address:
        return 0
    addr = ipaddress.ip_address(address)
    for p in pools:
        net = ipaddress.ip_network(p.subnet)
        if addr.version == net.version and addr in net:
            return net.prefixlen
    return 0


def _bool_option(options: dict[str, str], key: str, field: bool | None, default: bool) -> bool:
    """moby's createNetwork: the request's field wins (and the driver option of the same
    meaning is dropped), else the option (Go's strconv.ParseBool), else ``default``."""
    if field is not None:
        options.pop(key, None)
        return field
    if key not in options:
        return default
    value = options[key]
    if value in ("1", "t", "T", "TRUE", "true", "True"):
        return True
    if value in ("0", "f", "F", "FALSE", "false", "False"):
        return False
    raise SpecError(f'driver-opt "{key}" is not a valid bool')


def _pool(net: Network, version: int) -> Pool | None:
    for p in net.pools:
        if ipaddress.ip_network(p.subnet).version == version:
            return p
    return None


class NetworkManager:
    """See the module docstring. ``default_bridge``: ``"none"`` disables the ``bridge`` network.

    dockerd's options of the default bridge network: ``bip`` (``10.9.0.1/24``:
    the bridge's address, the gateway, and its subnet), ``fixed_cidr`` (the
    range its containers' addresses come from; the subnet too without ``bip``);
    ``address_pools``: ``default-address-pools`` as (base, size), where
    networks without a subnet get theirs (Docker's when None). A changed ``bip``
    or ``fixed_cidr`` applies at the next start, the stopped containers of the
    default network re-addressed (unless a running container still uses it).
    """

    def __init__(
        self,
        root: Path,
        exec_root: Path,
        *,
        default_bridge: str = "",
        events: EventBus | None = None,
        bip: str = "",
        fixed_cidr: str = "",
        address_pools: builtins.list[tuple[str, int]] | None = None,
    ) -> None:
        self.bip = bip
        self.fixed_cidr = fixed_cidr
        self.address_pools = list(address_pools or [])
        self.store = NetworkStore(root)
        self.exec_root = Path(exec_root)
        self.default_bridge = default_bridge or DEFAULT_BRIDGE
        self.bridge_enabled = default_bridge != "none"
        self.events = events
        self.on_endpoint_up: list[EndpointHook] = []
        self.on_endpoint_down: list[EndpointHook] = []
        self.on_network_up: list[NetworkHook] = []
        self.on_network_down: list[NetworkHook] = []
        self._predefined_done = False
        from bulkhead.network.nat import Nat

        #: published ports and bulkhead's nftables table (:mod:`bulkhead.network.nat`)
        self.nat = Nat(self, self.exec_root)

    # -- helpers -----------------------------------------------------------------

    def ns_path(self, container_id: str) -> Path:
        """The container's network namespace file."""
        return self.exec_root / "netns" / container_id

    def _emit(self, action: str, net: Network, **extra: str) -> None:
        if self.events is not None:
            attrs = {"name": net.name, "type": net.driver}
            attrs.update(extra)
            self.events.emit("network", action, net.id, attrs)

    def _hooks(self, hooks: builtins.list[Any], *args: Any) -> None:
        for hook in list(hooks):
            try:
                hook(*args)
            except Exception:
                log.exception("network hook %r failed", hook)

    @staticmethod
    def _guard() -> None:
        """Refuse to touch the host's namespace when the tests say so (see module docstring)."""
        forbidden = os.environ.get("BULKHEAD_FORBID_NETNS", "")
        if not forbidden.isdigit():
            return
        if os.stat("/proc/thread-self/ns/net").st_ino == int(forbidden):
            raise UnsupportedError(
                "refusing to create network interfaces in the host's network namespace "
                "(BULKHEAD_FORBID_NETNS): run the daemon in a namespace of its own"
            )

    # -- start-up ------------------------------------------------------------------

    def ensure_predefined(self) -> None:
        """Records of ``bridge`` (when enabled), ``host`` and ``none`` (no interfaces made)."""
        if self._predefined_done:
            return
        with self.store.tx() as db:
            names = {n.name for n in self.store.networks()}
            if "none" not in names:
                self.store.add_network(
                    db, Network(id=new_id(), name="none", driver="null", created=_now(),
                                predefined=True),
                )  # fmt: skip
            if "host" not in names:
                self.store.add_network(
                    db, Network(id=new_id(), name="host", driver="host", created=_now(),
                                predefined=True),
                )  # fmt: skip
        if self.bridge_enabled and self.store.find("bridge") is None:
            wanted = self._default_bridge_pool()
            self._create(
                "bridge",
                predefined=True,
                up=False,
                pools=[wanted] if wanted is not None else [],
                options={
                    "com.docker.network.bridge.default_bridge": "true",
                    "com.docker.network.bridge.enable_icc": "true",
                    "com.docker.network.bridge.enable_ip_masquerade": "true",
                    "com.docker.network.bridge.host_binding_ipv4": "0.0.0.0",
                    OPT_BRIDGE_NAME: self.default_bridge,
                    OPT_MTU: "1500",
                },
            )
        self._predefined_done = True

    def start_up(self) -> None:
        """Daemon start: the pre-defined networks, then every bridge network's bridge (the
        removals a killed daemon left half-done are finished)."""
        self.ensure_predefined()
        self._apply_bridge_options()
        for net in self.store.networks():
            if net.removing:
                try:
                    self._guard()
                    self._finish_removal(net)
                except Exception:
                    log.exception("could not finish the removal of network %s", net.name)
                continue
            if net.driver != "bridge" or (net.name == "bridge" and not self.bridge_enabled):
                continue
            try:
                self._bridge_up(net)
            except Exception:
                log.exception("could not set up the bridge of network %s", net.name)
        self._replug()
        self.nat.restore()

    def _replug(self) -> None:
        """Daemon start: plug in again the endpoints of containers whose namespace lives on
        (live restore) that have no veth: a daemon killed during a ``network connect`` (or
        a start) recorded them and died before their veth was made, or it went since."""
        for container_id in sorted({ep.container_id for ep in self.store.endpoints()}):
            if not self.is_live(container_id):
                continue  # stopped: the engine's start-up clears what is left
            for ep in self.store.endpoints(container_id=container_id):
                if ep.host_ifname and bridge.link_exists(ep.host_ifname):
                    continue
                net = self.store.find(ep.network_id)
                if net is None or net.removing:
                    continue
                log.info("plugging %s into network %s again", container_id[:12], net.name)
                ep.host_ifname = ep.ifname = ""
                try:
                    self.connect_live(container_id, ep)
                except Exception:
                    log.exception("could not plug %s into %s", container_id[:12], net.name)

    def shut_down(self) -> None:
        """Daemon stop: the bridges no running container uses go (with their addresses).

        A bridge a running container still uses stays (live restore: the
        container keeps its network while the daemon is away); a bridge that
        was there before its network (``foreign``) only loses our gateway
        addresses. :meth:`start_up` makes them again, from the store.
        """
        busy = {
            ep.network_id
            for ep in self.store.endpoints()
            if ep.host_ifname and self.is_live(ep.container_id)
        }
        for net in self.store.networks():
            if net.driver != "bridge" or net.id in busy or not net.bridge or net.removing:
                continue
            if net.name == "bridge" and not self.bridge_enabled:
                continue
            try:
                self._guard()
                if not self._owns_bridge(net):
                    bridge.remove_addresses(net.bridge, self._gateway_addresses(net))
                else:
                    bridge.delete_link(net.bridge)
                    self._mark_made(net.id, False)
            except Exception:
                log.exception("could not remove the bridge of network %s", net.name)

    def _default_bridge_pool(self) -> Pool | None:
        """The default bridge network's IPv4 pool as ``bip``/``fixed_cidr`` ask (None: the
        daemon chooses, from the address pools)."""
        if self.bip:
            iface = ipaddress.ip_interface(self.bip)
            fixed = (
                str(ipaddress.ip_network(self.fixed_cidr, strict=False)) if self.fixed_cidr else ""
            )
            return Pool(subnet=str(iface.network), gateway=str(iface.ip), ip_range=fixed)
        if self.fixed_cidr:
            fixed_net = ipaddress.ip_network(self.fixed_cidr, strict=False)
            return Pool(
                subnet=str(fixed_net),
                gateway=str(fixed_net.network_address + 1),
                ip_range=str(fixed_net),
            )
        return None

    def _apply_bridge_options(self) -> None:
        """Daemon start: a ``bip``/``fixed_cidr`` that changed since the default bridge
        network was made applies now (dockerd makes that network anew at each start).

        Its stopped containers' endpoints get addresses of the new subnet (the
        default network has no static ones); while a running container (live
        restore) uses it, the old configuration stays, with a warning. A subnet
        that overlaps another network stops the daemon's start (409).
        """
        wanted = self._default_bridge_pool()
        net = self.store.find("bridge") if self.bridge_enabled else None
        if wanted is None or net is None:
            return
        current = _pool(net, 4)
        if current is not None and (current.subnet, current.gateway, current.ip_range) == (
            wanted.subnet,
            wanted.gateway,
            wanted.ip_range,
        ):
            return
        if self.active_endpoints(net.id):
            log.warning(
                "the default bridge network keeps %s: running containers use it (bip and "
                "fixed-cidr apply once they stopped, at the daemon's next start)",
                current.subnet if current else "no subnet",
            )
            return
        self._guard()
        old_gateways = self._gateway_addresses(net)
        with self.store.tx() as db:
            taken = [
                ipaddress.ip_network(p.subnet)
                for n in self.store.networks()
                if n.id != net.id
                for p in n.pools
            ]
            (pool4,) = ipam.check_pools([wanted], taken)
            net.pools = [pool4] + [p for p in net.pools if ":" in p.subnet]
            self.store.put_network(db, net)
            self.store.clear_allocations(db, net.id)
            for p in net.pools:
                if p.gateway:
                    self.store.allocate(db, net.id, p.gateway, "gateway")
            for ep in self.store.endpoints(network_id=net.id):
                derived = ep.mac == ipam.mac_for(ep.ipv4) if ep.ipv4 else False
                ep.ipv4 = ipam.allocate(self.store, db, net.id, pool4, ep.container_id)
                if ep.ipv6 and (pool6 := _pool(net, 6)) is not None:
                    ep.ipv6 = ipam.allocate(self.store, db, net.id, pool6, ep.container_id)
                if derived:
                    ep.mac = ipam.mac_for(ep.ipv4)
                self.store.put_endpoint(db, ep)
        log.info("the default bridge network now has subnet %s", pool4.subnet)
        if net.bridge and not net.foreign_bridge:
            bridge.remove_addresses(net.bridge, old_gateways)

    @staticmethod
    def _gateway_addresses(net: Network) -> builtins.list[bridge.Address]:
        return [
            bridge.Address(p.gateway, ipaddress.ip_network(p.subnet).prefixlen)
            for p in net.pools
            if p.gateway
        ]

    def _bridge_up(self, net: Network) -> bool:
        """The network's bridge up (made when missing); True when made here."""
        self._guard()
        addresses = self._gateway_addresses(net)
        try:
            created = bridge.ensure_bridge(net.bridge, addresses, net.mtu)
        except bridge.NotABridge as exc:
            raise NetworkConflict(str(exc)) from None
        if created:
            self._mark_made(net.id, True)
        self._hooks(self.on_network_up, net)
        return created

    def _mark_made(self, network_id: str, made: bool) -> None:
        """Record that bulkhead made (or deleted) the network's bridge: only a bridge it made
        is ever deleted (a bridge the user made, e.g. ``bridge: br0``, is not bulkhead's)."""
        with self.store.tx() as db:
            current = self.store.find(network_id)
            if current is not None and current.bridge_made != made:
                current.bridge_made = made
                self.store.put_network(db, current)

    @staticmethod
    def _owns_bridge(net: Network) -> bool:
        return net.bridge_made and not net.foreign_bridge

    # -- networks --------------------------------------------------------------------

    def get(self, ref: str) -> Network:
        """A network by id, name or id prefix; 404 ``network x not found``."""
        self.ensure_predefined()
        return self.store.get(ref)

    def find(self, ref: str) -> Network | None:
        self.ensure_predefined()
        return self.store.find(ref)

    def networks(self) -> builtins.list[Network]:
        self.ensure_predefined()
        return [n for n in self.store.networks() if not n.removing]

    def active_endpoints(self, network_id: str) -> builtins.list[Endpoint]:
        """The endpoints of ``network_id`` that are plugged in (running containers')."""
        return [e for e in self.store.endpoints(network_id=network_id) if e.host_ifname]

    def create_network(
        self,
        name: str,
        *,
        driver: str = "bridge",
        internal: bool = False,
        enable_ipv6: bool | None = None,
        enable_ipv4: bool | None = None,
        attachable: bool = False,
        pools: builtins.list[Pool] | None = None,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        ipam_driver: str = "default",
        ipam_options: dict[str, str] | None = None,
    ) -> Network:
        """``POST /networks/create``: a bridge network, its bridge up; a ``create`` event.

        ``enable_ipv4``/``enable_ipv6`` None: not in the request, the driver
        options ``com.docker.network.enable_ipv4``/``enable_ipv6`` decide (moby's
        order; an explicit field drops the option). IPv6-only networks
        (``EnableIPv4: false``) are refused, not silently given IPv4.
        """
        self.ensure_predefined()
        if not name:
            raise SpecError("network name must not be empty", where="Name")
        if not _NAME_RE.match(name):
            raise SpecError(
                f"invalid network name {name!r}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed",
                where="Name",
            )
        if name in PREDEFINED:  # moby's PredefinedNetworkError (its trailing space too)
            raise NetworkForbidden(f"operation is not permitted on predefined {name} network ")
        driver = driver or "bridge"
        if driver in ("host", "null"):
            raise NetworkForbidden(f'only one instance of "{driver}" network is allowed')
        if driver != "bridge":
            raise NoSuchNetwork(f'plugin "{driver}" not found')
        if ipam_driver not in ("", "default"):
            raise NoSuchNetwork(f'plugin "{ipam_driver}" not found')
        options = dict(options or {})
        ipv4 = _bool_option(options, OPT_ENABLE_IPV4, enable_ipv4, True)
        ipv6 = _bool_option(options, OPT_ENABLE_IPV6, enable_ipv6, False)
        if not ipv4:
            raise UnsupportedError(
                "IPv6-only networks (EnableIPv4 false) are not supported by bulkhead"
            )
        net = self._create(
            name,
            internal=internal,
            enable_ipv6=ipv6,
            attachable=attachable,
            pools=pools or [],
            options=options,
            labels=labels or {},
            ipam_options=ipam_options,
        )
        return net

    def _create(
        self,
        name: str,
        *,
        predefined: bool = False,
        internal: bool = False,
        enable_ipv6: bool = False,
        attachable: bool = False,
        pools: builtins.list[Pool] | None = None,
        options: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        up: bool = True,
        ipam_options: dict[str, str] | None = None,
    ) -> Network:
        options = dict(options or {})
        net_id = new_id()
        bridge_name = options.get(OPT_BRIDGE_NAME) or f"br-{net_id[:12]}"
        if len(bridge_name) > 15:
            raise SpecError(f"bridge name {bridge_name!r} is longer than 15 characters")
        # a bridge of that name already there is someone else's: never deleted (recorded with
        # the network, so that a daemon killed right after the create still knows it)
        existed = up and bridge.link_exists(bridge_name)
        mtu = 0
        if options.get(OPT_MTU):
            try:
                mtu = int(options[OPT_MTU])
            except ValueError:
                raise SpecError(f"invalid MTU {options[OPT_MTU]!r}", where=OPT_MTU) from None
            if not 68 <= mtu <= 65535:
                raise SpecError(f"invalid MTU {mtu}: must be 68..65535", where=OPT_MTU)
        with self.store.tx() as db:
            others = self.store.networks()
            if any(n.name == name for n in others):
                raise NetworkConflict(f"network with name {name} already exists")
            if any(n.bridge == bridge_name for n in others):
                raise NetworkConflict(f"bridge name {bridge_name} is used by another network")
            taken = [ipaddress.ip_network(p.subnet) for n in others for p in n.pools]
            checked = ipam.check_pools(list(pools or []), taken)
            if not any(ipaddress.ip_network(p.subnet).version == 4 for p in checked):
                subnet = ipam.choose_subnet(
                    taken + [ipaddress.ip_network(p.subnet) for p in checked],
                    ipam.routed_subnets(),
                    self.address_pools or None,
                )
                checked.insert(
                    0, Pool(subnet=str(subnet), gateway=str(subnet.network_address + 1), auto=True)
                )
            has_v6 = any(ipaddress.ip_network(p.subnet).version == 6 for p in checked)
            if enable_ipv6 and not has_v6:
                v6 = ipam.ula_subnet()
                checked.append(Pool(subnet=str(v6), gateway=str(v6.network_address + 1), auto=True))
            enable_ipv6 = enable_ipv6 or has_v6
            net = Network(
                id=net_id,
                name=name,
                driver="bridge",
                created=_now(),
                internal=internal,
                enable_ipv6=enable_ipv6,
                attachable=attachable,
                pools=checked,
                options=options,
                labels=dict(labels or {}),
                bridge=bridge_name,
                mtu=mtu,
                predefined=predefined,
                ipam_options=None if ipam_options is None else dict(ipam_options),
                foreign_bridge=existed,
            )
            self.store.add_network(db, net)
            for p in checked:
                if p.gateway:
                    self.store.allocate(db, net.id, p.gateway, "gateway")
                for address in sorted(set(p.aux.values()) - {p.gateway}):
                    self.store.allocate(db, net.id, address, "aux")
        if not up:  # a pre-defined network's record: its bridge comes with the daemon's start
            return net
        try:
            self._bridge_up(net)
        except BaseException:
            if not existed:
                with contextlib.suppress(Exception):
                    bridge.delete_link(net.bridge)
            with self.store.tx() as db:
                self.store.remove_network(db, net.id)
            raise
        self._emit("create", net)
        return net

    def remove_network(self, ref: str, names: dict[str, str] | None = None) -> None:
        """``DELETE /networks/{id}``: 403 pre-defined, 409 with active endpoints; ``destroy``.

        *Active* endpoints are the running containers' (``Containers`` of
        inspect). As Docker, a network only stopped containers are attached to
        is removed: their endpoints stay, naming the network that is gone, and
        their next start fails (``network <id> not found``) until they are
        disconnected from it. ``names``: container id -> name, for the message.

        Crash-safe and race-free: one transaction checks for active endpoints
        and marks the network ``removing`` (an endpoint that comes up later is
        refused, :meth:`connect_live`); the bridge goes; a second transaction
        drops the record. A daemon killed in between finishes it at its start.
        """
        net = self.get(ref)
        if net.predefined or net.name in PREDEFINED:
            raise NetworkForbidden(f"{net.name} is a pre-defined network and cannot be removed")
        with self.store.tx() as db:
            current = self.store.find(net.id)
            if current is None or current.removing:
                raise NoSuchNetwork(f"network {ref} not found")
            net = current
            active = [e for e in self.store.endpoints(network_id=net.id) if e.host_ifname]
            if active:
                listed = ", ".join(
                    f'name:"{(names or {}).get(e.container_id, e.container_id[:12])}" '
                    f'id:"{e.id[:12]}"'
                    for e in active
                )
                raise NetworkConflict(
                    f"error while removing network: network {net.name} has active endpoints "
                    f"({listed})"
                )
            self._guard()
            net.removing = True
            self.store.put_network(db, net)
        self._finish_removal(net)

    def _finish_removal(self, net: Network) -> None:
        """The second half of :meth:`remove_network`: hooks, bridge, record, event."""
        self._hooks(self.on_network_down, net)
        if self._owns_bridge(net):
            bridge.delete_link(net.bridge)
        else:  # someone else's bridge: only the gateway addresses go
            bridge.remove_addresses(net.bridge, self._gateway_addresses(net))
        with self.store.tx() as db:
            self.store.remove_network(db, net.id)
        self._emit("destroy", net)

    def prune(self, filters: dict[str, builtins.list[str]] | None = None) -> builtins.list[str]:
        """Remove the user-defined networks without endpoints (``label``/``until`` filters)."""
        filters = filters or {}
        for key in filters:
            if key not in ("label", "label!", "until"):
                raise SpecError(f"invalid filter '{key}'")
        limits = _until_limits(filters.get("until"))  # a bad value: 400 before any removal
        deleted = []
        for net in self.networks():
            if net.predefined or net.name in PREDEFINED or net.removing:
                continue
            if not match_labels(net, filters) or not _before_until(net, limits):
                continue
            if self.active_endpoints(net.id):  # as Docker: stopped containers do not count
                continue
            with contextlib.suppress(NetworkConflict, NoSuchNetwork):
                self.remove_network(net.id)
                deleted.append(net.name)
        return deleted

    # -- endpoints ---------------------------------------------------------------------

    def attach(
        self,
        container_id: str,
        net: Network,
        *,
        ipv4: str = "",
        ipv6: str = "",
        aliases: builtins.list[str] | None = None,
        mac: str = "",
        name: str = "",
        gw_priority: int = 0,
        links: builtins.list[str] | None = None,
    ) -> Endpoint:
        """Record ``container_id`` on ``net`` with its addresses (one transaction).

        409 when already connected or an address is taken, 400 for an address
        outside the subnets or options the default bridge refuses (as Docker).
        ``name``: the container's, for the messages (Docker's endpoint name).
        """
        if net.driver == "host":
            raise SpecError(
                "cannot connect container to host network - container must be created in "
                "host network mode"
            )
        if net.driver == "null":
            raise SpecError(
                "container cannot be connected to multiple networks with one of the networks "
                "in private (none) mode"
            )
        if net.driver != "bridge":
            raise SpecError(f"container cannot be connected to network {net.name} ({net.driver})")
        if net.name == "bridge":
            if ipv4 or ipv6:
                raise SpecError(
                    "user specified IP address is supported on user defined networks only"
                )
            if aliases:
                raise SpecError(
                    "network-scoped alias is supported only for containers in user defined networks"
                )
            if links:
                raise SpecError("links are only supported for user-defined networks")
        with self.store.tx() as db:
            current = self.store.find(net.id)  # not removed since the caller looked it up
            if current is None or current.removing:
                raise NoSuchNetwork(f"network {net.id} not found")
            for ep in self.store.endpoints(container_id=container_id):
                if ep.network_id == net.id:
                    raise NetworkConflict(
                        f"endpoint with name {name or container_id[:12]} already exists in "
                        f"network {net.name}"
                    )
            seq = max((e.seq for e in self.store.endpoints(container_id=container_id)), default=0)
            _check_static(net, ipv4, 4)
            _check_static(net, ipv6, 6)
            addr4 = addr6 = ""
            pool4 = _pool(net, 4)
            if pool4 is not None:
                addr4 = ipam.allocate(self.store, db, net.id, pool4, container_id, ipv4)
            elif ipv4:
                raise SpecError(f"invalid address {ipv4}: the network has no IPv4 subnet")
            pool6 = _pool(net, 6)
            if pool6 is not None and net.enable_ipv6:
                addr6 = ipam.allocate(self.store, db, net.id, pool6, container_id, ipv6)
            elif ipv6:
                raise SpecError(f"invalid address {ipv6}: the network has no IPv6 subnet")
            if mac:
                try:
                    parts = [int(x, 16) for x in mac.split(":")]
                except ValueError:
                    parts = []
                if len(parts) != 6 or any(not 0 <= x <= 255 for x in parts):
                    raise SpecError(f"invalid MAC address {mac!r}", where="MacAddress")
            ep = Endpoint(
                id=new_id(),
                network_id=net.id,
                container_id=container_id,
                ipv4=addr4,
                ipv6=addr6,
                mac=mac.lower() or ipam.mac_for(addr4),
                aliases=list(aliases or []),
                static_ipv4=ipv4,
                static_ipv6=ipv6,
                seq=seq + 1,
                network_name=net.name,
                gw_priority=gw_priority,
                links=list(links or []),
            )
            self.store.put_endpoint(db, ep)
        return ep

    def endpoints(self, container_id: str) -> builtins.list[Endpoint]:
        return self.store.endpoints(container_id=container_id)

    def detach(self, container_id: str, net: Network, *, running: bool = True) -> Endpoint:
        """Forget ``container_id``'s endpoint on ``net`` (its addresses freed); 404 if none
        (moby's words, which differ for a ``running`` container and a stopped one)."""
        for ep in self.store.endpoints(container_id=container_id, network_id=net.id):
            if ep.host_ifname:
                self.disconnect_live(container_id, ep)
            with self.store.tx() as db:
                self.store.remove_endpoint(db, ep)
            return ep
        the = "" if running else "the "
        raise NoSuchNetwork(f"container {container_id} is not connected to {the}network {net.name}")

    def detach_gone(self, container_id: str, ref: str) -> Endpoint:
        """Disconnect a container from a network that was removed since it stopped (Docker
        allows it, by the name the network had or its id); 404 if it has no such endpoint."""
        for ep in self.store.endpoints(container_id=container_id):
            if self.store.find(ep.network_id) is not None:
                continue
            if ref and (ref == ep.network_name or ep.network_id.startswith(ref)):
                with self.store.tx() as db:
                    self.store.remove_endpoint(db, ep)
                return ep
        raise NoSuchNetwork(f"network {ref} not found")

    def forget_container(self, container_id: str) -> None:
        """Container removal: its interfaces (if any are left), endpoints and addresses go."""
        if self.store.endpoints(container_id=container_id) or self.is_live(container_id):
            self.down(container_id, quiet=True)
        with self.store.tx() as db:
            for ep in self.store.endpoints(container_id=container_id):
                self.store.remove_endpoint(db, ep)

    def collect(self, known: set[str]) -> builtins.list[str]:
        """Daemon start: forget endpoints and namespaces of containers not in ``known`` (a
        daemon killed during a create leaves them); the container ids collected."""
        gone = {ep.container_id for ep in self.store.endpoints()} - known
        ns_dir = self.exec_root / "netns"
        if ns_dir.is_dir():
            gone |= {p.name for p in ns_dir.iterdir()} - known
        for cid in sorted(gone):
            log.info("forgetting the endpoints of the half-made container %s", cid[:12])
            self.forget_container(cid)
        return sorted(gone)

    # -- the sandbox ----------------------------------------------------------------------

    def has_endpoints(self, container_id: str) -> bool:
        return bool(self.store.endpoints(container_id=container_id))

    def up(self, container_id: str, *, empty_ok: bool = False) -> None:
        """Container start: its namespace and a veth per endpoint (what a last run left, gone).

        ``empty_ok``: make the namespace (a loopback only) even without endpoints.
        """
        eps = self.store.endpoints(container_id=container_id)
        if not eps and not empty_ok:
            return
        self.down(container_id, quiet=True)
        self._guard()
        path = self.ns_path(container_id)
        netns.create(path, loopback=not eps)  # else lo comes up with the first endpoint
        try:
            for ep in eps:
                self.connect_live(container_id, ep)
        except BaseException:
            self.down(container_id)  # the hooks undo what the endpoints up so far did
            raise

    def connect_live(self, container_id: str, ep: Endpoint) -> Endpoint:
        """Plug ``ep`` into the container's namespace (which must exist); an event, the hooks.

        The endpoint is recorded active (its veth's name) in the transaction
        that checks its network is still there, before any interface is made:
        a removal of the network either saw it active and refused, or had begun
        and this refuses (``network <id> not found``, as Docker's start). Its
        failure leaves it inactive again.
        """
        self._guard()
        with self.store.tx() as db:
            net = self.store.find(ep.network_id)
            if net is None or net.removing:
                raise NoSuchNetwork(f"network {ep.network_id} not found")
            live = [
                e
                for e in self.store.endpoints(container_id=container_id)
                if e.host_ifname and e.id != ep.id
            ]
            used = {e.ifname for e in live}
            n = 0
            while f"eth{n}" in used:
                n += 1
            ep.host_ifname, ep.ifname = bridge.new_veth_name(), f"eth{n}"
            self.store.put_endpoint(db, ep)
        try:
            return self._plug(container_id, ep, net)
        except BaseException:
            ep.host_ifname = ep.ifname = ""
            with self.store.tx() as db:
                if self.store.endpoints(container_id=container_id, network_id=ep.network_id):
                    self.store.put_endpoint(db, ep)
            raise

    def _plug(
        self,
        container_id: str,
        ep: Endpoint,
        net: Network,
    ) -> Endpoint:
        if not bridge.link_exists(net.bridge):
            self._bridge_up(net)
        best = self._gateway_endpoint(container_id, (ep, net))
        default_route = best is not None and best[0].id == ep.id
        pool4, pool6 = _pool(net, 4), _pool(net, 6)
        spec = bridge.EndpointSpec(
            bridge=net.bridge,
            host_ifname=ep.host_ifname,
            ifname=ep.ifname,
            mac=ep.mac,
            ipv4=bridge.Address(ep.ipv4, _prefix(net.pools, ep.ipv4)) if ep.ipv4 else None,
            ipv6=bridge.Address(ep.ipv6, _prefix(net.pools, ep.ipv6)) if ep.ipv6 else None,
            gateway4=pool4.gateway if pool4 else "",
            gateway6=pool6.gateway if pool6 and ep.ipv6 else "",
            default_route=default_route,
            mtu=net.mtu,
        )
        try:
            bridge.add_endpoint(str(self.ns_path(container_id)), spec)
        except bridge.NotABridge as exc:
            raise NetworkConflict(f"network {net.name}: {exc}") from None
        except NetlinkError as exc:
            raise NetworkError(
                f"network {net.name}: could not plug the container in: {exc.args[-1]}"
            ) from None
        self._emit("connect", net, container=container_id)
        self._hooks(self.on_endpoint_up, net, ep)
        return ep

    def disconnect_live(self, container_id: str, ep: Endpoint) -> None:
        """Unplug ``ep`` (delete its veth); the endpoint and its addresses stay.

        When it carried the default route, another endpoint of a network with
        an outside route (not ``--internal``), the first connected, takes it over
        (Docker's sandbox picks a new gateway endpoint too).
        """
        net = self.store.find(ep.network_id)
        if ep.host_ifname:
            self._guard()
            bridge.delete_link(ep.host_ifname)
        ep.host_ifname = ep.ifname = ""
        with self.store.tx() as db:
            if self.store.endpoints(container_id=container_id, network_id=ep.network_id):
                self.store.put_endpoint(db, ep)
        if net is not None:
            self._emit("disconnect", net, container=container_id)
            self._hooks(self.on_endpoint_down, net, ep)
        if net is not None and not net.internal and self.is_live(container_id):
            self._reroute(container_id)

    def _reroute(self, container_id: str) -> None:
        best = self._gateway_endpoint(container_id)
        if best is None:
            return
        ep, net = best
        pool4, pool6 = _pool(net, 4), _pool(net, 6)
        try:
            bridge.set_default_routes(
                str(self.ns_path(container_id)),
                ep.ifname,
                pool4.gateway if pool4 and ep.ipv4 else "",
                pool6.gateway if pool6 and ep.ipv6 else "",
            )
        except (OSError, NetlinkError):
            log.exception("could not route %s via %s", container_id[:12], net.name)

    def _gateway_endpoint(
        self, container_id: str, extra: tuple[Endpoint, Network] | None = None
    ) -> tuple[Endpoint, Network] | None:
        """The container's *gateway endpoint*, the one its default routes go through, by
        libnetwork's order: a network with an outside route (not ``--internal``), then one
        with both IPv4 and IPv6 gateways, then the highest ``GwPriority``, then the network
        name, alphabetically. Among the plugged-in endpoints, and ``extra`` (one coming up).
        """
        found = [] if extra is None else [extra]
        for ep in self.store.endpoints(container_id=container_id):
            if not ep.host_ifname or (extra is not None and ep.id == extra[0].id):
                continue
            net = self.store.find(ep.network_id)
            if net is not None:
                found.append((ep, net))
        if not found:
            return None

        def order(item: tuple[Endpoint, Network]) -> tuple[bool, bool, int, str]:
            ep, net = item
            pool4, pool6 = _pool(net, 4), _pool(net, 6)
            dual = bool(pool4 and pool4.gateway and ep.ipv4 and pool6 and pool6.gateway and ep.ipv6)
            return (net.internal, not dual, -ep.gw_priority, net.name)

        best = min(found, key=order)
        return None if best[1].internal else best

    def down(self, container_id: str, *, quiet: bool = False, shared: bool = False) -> None:
        """Container exit/removal: the namespace goes, and its veths with it; the addresses stay.

        The container's processes are gone: unmounting the namespace file drops
        its last reference and the kernel deletes the namespace and the veth
        pairs in it by itself, a moment later (deleting each veth here would
        cost an RCU grace period, ~20 ms, on the container's way out).
        ``quiet``: no ``disconnect`` events or hooks (a stale sandbox cleared).
        ``shared``: running containers joined the namespace (``--network
        container:``) and keep it alive: the veths are deleted here (as Docker
        takes a stopped container's interfaces away, they keep only ``lo``).
        """
        unplugged = [e for e in self.store.endpoints(container_id=container_id) if e.host_ifname]
        for ep in unplugged:
            if shared:
                self._guard()
                bridge.delete_link(ep.host_ifname)
            ep.host_ifname = ep.ifname = ""
        if unplugged:
            with self.store.tx() as db:
                for ep in unplugged:
                    self.store.put_endpoint(db, ep)
        # the hooks run once every endpoint is down: none of them sees a container still
        # plugged into its other networks (nor redoes its DNS redirect on the way out)
        for ep in unplugged:
            net = self.store.find(ep.network_id)
            if net is not None and not quiet:
                self._emit("disconnect", net, container=container_id)
                self._hooks(self.on_endpoint_down, net, ep)
        netns.remove(self.ns_path(container_id))

    def is_live(self, container_id: str) -> bool:
        return netns.is_bound(self.ns_path(container_id))

    # -- views ----------------------------------------------------------------------------

    def endpoint_doc(
        self, net: Network, ep: Endpoint, name: str, hostname: str = ""
    ) -> dict[str, Any]:
        """A ``Networks.<name>`` entry of inspect (Docker's EndpointSettings); ``DNSNames``:
        the name, aliases, short id and hostname, each once (what the resolver answers)."""
        pool4, pool6 = _pool(net, 4), _pool(net, 6)
        ipam_config = None
        if ep.static_ipv4 or ep.static_ipv6:
            ipam_config = {"IPv4Address": ep.static_ipv4, "IPv6Address": ep.static_ipv6}
        user_defined = net.name != "bridge"
        dns_names = None
        if user_defined:
            dns_names = list(dict.fromkeys(n for n in (name, *ep.aliases, ep.container_id[:12],
                                                       hostname) if n))  # fmt: skip
        return {
            "IPAMConfig": ipam_config,
            "Links": list(ep.links) or None,
            "Aliases": list(ep.aliases) or None,
            "MacAddress": ep.mac,
            "DriverOpts": None,
            "GwPriority": ep.gw_priority,
            "NetworkID": net.id,
            "EndpointID": ep.id,
            "Gateway": pool4.gateway if pool4 and ep.ipv4 else "",
            "IPAddress": ep.ipv4,
            "IPPrefixLen": _prefix(net.pools, ep.ipv4),
            "IPv6Gateway": pool6.gateway if pool6 and ep.ipv6 else "",
            "GlobalIPv6Address": ep.ipv6,
            "GlobalIPv6PrefixLen": _prefix(net.pools, ep.ipv6),
            "DNSNames": dns_names,
        }

    def settings(
        self, container_id: str, name: str, hostname: str = ""
    ) -> dict[str, dict[str, Any]]:
        """``Networks`` of inspect for a container on bridge networks: name -> endpoint."""
        out: dict[str, dict[str, Any]] = {}
        for ep in self.store.endpoints(container_id=container_id):
            net = self.store.find(ep.network_id)
            if net is not None:
                out[net.name] = self.endpoint_doc(net, ep, name, hostname)
            elif ep.network_name:  # removed while the container was stopped (Docker keeps it)
                out[ep.network_name] = _gone_endpoint_doc(ep)
        return out

    def network_doc(
        self,
        net: Network,
        containers: dict[str, str] | None = None,
        *,
        verbose: bool = True,
        status: bool = False,
    ) -> dict[str, Any]:
        """Docker's ``Network`` document; ``containers``: id -> name of the containers to
        list in ``Containers`` (those with an active endpoint: running); ``status``: the
        inspect's ``Status.IPAM.Subnets`` (addresses in use and left, per subnet)."""
        config = []
        for p in net.pools:
            entry: dict[str, Any] = {"Subnet": p.subnet}
            if p.ip_range:
                entry["IPRange"] = p.ip_range
            if p.gateway:
                entry["Gateway"] = p.gateway
            if p.aux:
                entry["AuxiliaryAddresses"] = dict(p.aux)
            config.append(entry)
        attached: dict[str, Any] = {}
        if containers is not None:
            for ep in self.store.endpoints(network_id=net.id):
                # Docker lists the active endpoints: the running containers'
                if ep.container_id not in containers or not ep.host_ifname:
                    continue
                attached[ep.container_id] = {
                    "Name": containers[ep.container_id],
                    "EndpointID": ep.id,
                    "MacAddress": ep.mac,
                    "IPv4Address": f"{ep.ipv4}/{_prefix(net.pools, ep.ipv4)}" if ep.ipv4 else "",
                    "IPv6Address": f"{ep.ipv6}/{_prefix(net.pools, ep.ipv6)}" if ep.ipv6 else "",
                }
        doc: dict[str, Any] = {
            "Name": net.name,
            "Id": net.id,
            "Created": net.created,
            "Scope": net.scope,
            "Driver": net.driver,
            # Docker 28: true for host and none too (no IPv6-only networks here)
            "EnableIPv4": True,
            "EnableIPv6": net.enable_ipv6,
            # Config: null without a subnet (host, none), as Docker 28
            "IPAM": {"Driver": "default", "Options": net.ipam_options, "Config": config or None},
            "Internal": net.internal,
            "Attachable": net.attachable,
            "Ingress": False,
            "ConfigFrom": {"Network": ""},
            "ConfigOnly": False,
            "Containers": attached,
            "Options": dict(net.options),
            "Labels": dict(net.labels),
        }
        if status:
            taken = [ipaddress.ip_address(a) for a in self.store.addresses(net.id)]
            doc["Status"] = {
                "IPAM": {"Subnets": {p.subnet: _subnet_status(p, taken) for p in net.pools}}
            }
        return doc


_U64 = (1 << 64) - 1


def _subnet_status(pool: Pool, taken: builtins.list[ipam.IPAddress]) -> dict[str, int]:
    """moby's ``SubnetStatus``: ``IPsInUse`` the addresses taken or reserved in the subnet
    (its network address, the IPv4 broadcast, the gateway, the endpoints'),
    ``DynamicIPsAvailable`` those of the range left for dynamic allocation; both
    saturating at 2^64-1."""
    subnet = ipaddress.ip_network(pool.subnet)
    used = {a for a in taken if a.version == subnet.version and a in subnet}
    used.add(subnet.network_address)
    if subnet.version == 4 and subnet.prefixlen < 31:
        used.add(subnet.broadcast_address)
    rng = ipaddress.ip_network(pool.ip_range) if pool.ip_range else subnet
    left = rng.num_addresses - sum(1 for a in used if a in rng)
    return {"IPsInUse": min(len(used), _U64), "DynamicIPsAvailable": min(max(left, 0), _U64)}


def _check_static(net: Network, address: str, version: int) -> None:
    """moby's validateEndpointIPAddress: a static address needs a subnet the user
    configured (not one the daemon chose), and must lie in one of them."""
    if not address:
        return
    try:
        addr = ipaddress.ip_address(address.strip())
    except ValueError:
        family = "IPv4" if version == 4 else "IPv6"
        raise SpecError(f"invalid {family} address: {address}") from None
    static = [
        ipaddress.ip_network(p.subnet)
        for p in net.pools
        if not p.auto and ipaddress.ip_network(p.subnet).version == version
    ]
    if not static:
        reason = (
            "user specified IP address is supported only when connecting to networks with "
            "user configured subnets"
        )
    elif not any(addr in s for s in static):
        reason = f"no configured subnet or ip-range contain the IP address {address}"
    else:
        return
    raise SpecError(f"invalid endpoint settings:\n{reason}")


def empty_endpoint_doc() -> dict[str, Any]:
    """A ``Networks.<name>`` entry with no operational data (Docker's EndpointSettings
    of a container not plugged in: ``none``/``host``, or a network removed meanwhile)."""
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


def _gone_endpoint_doc(ep: Endpoint) -> dict[str, Any]:
    """A ``Networks.<name>`` entry for an endpoint whose network was removed: its
    configuration, no operational data (what Docker shows of a stopped container)."""
    ipam_config = None
    if ep.static_ipv4 or ep.static_ipv6:
        ipam_config = {"IPv4Address": ep.static_ipv4, "IPv6Address": ep.static_ipv6}
    doc = empty_endpoint_doc()
    doc.update(
        IPAMConfig=ipam_config,
        Links=list(ep.links) or None,
        Aliases=list(ep.aliases) or None,
        GwPriority=ep.gw_priority,
        NetworkID=ep.network_id,
    )
    return doc


def match_labels(net: Network, filters: dict[str, builtins.list[str]]) -> bool:
    for v in filters.get("label", []):
        k, eq, want = v.partition("=")
        if k not in net.labels or (eq and net.labels[k] != want):
            return False
    for v in filters.get("label!", []):
        k, eq, want = v.partition("=")
        if k in net.labels and (not eq or net.labels[k] == want):
            return False
    return True


def _until_limits(values: builtins.list[str] | None) -> builtins.list[float]:
    """``until`` filter values as Unix times (Docker's forms: timestamps, RFC 3339, ``10m``)."""
    from bulkhead.engine.engine import _parse_until

    return [_parse_until(v) for v in values or []]


def _before_until(net: Network, limits: builtins.list[float]) -> bool:
    from bulkhead.engine.containers import parse_rfc3339

    created = parse_rfc3339(net.created)
    return all(created < limit for limit in limits)
