"""The bridge driver: a Linux bridge per network, a veth pair per endpoint (pyroute2).

*bridge*
    a virtual switch in the daemon's network namespace, named by the
    network's ``com.docker.network.bridge.name`` option (``bh0`` for the
    default ``bridge`` network, ``br-<12 hex of the id>`` otherwise),
    holding the gateway address(es) of its subnets.
*veth pair*
    two linked interfaces: the host side (``veth`` + 7 hex) is a port of
    the bridge, the peer moves into the container's namespace
    (:mod:`bulkhead.network.netns`) is made there as ``eth0`` (``eth1``...)
    with its MAC and MTU, then gets its address and (for the first network
    with a gateway) the default route. Deleting either side deletes both, and
    so does the end of the container's namespace.
*ip_forward*
    the bridge forwards between its ports by itself; routing between a
    bridge and other interfaces needs ``net.ipv4.ip_forward=1`` in the
    daemon's namespace, set when a bridge is made (as dockerd does on the
    host; in the tests that namespace is the test's own).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from bulkhead.network import netns

#: IFA_F_NODAD: an IPv6 address usable at once (no duplicate address detection)
IFA_F_NODAD = 0x02
DEFAULT_MTU = 1500


@dataclass
class Address:
    """An address with its prefix length, e.g. ``Address("172.17.0.2", 16)``."""

    address: str
    prefixlen: int

    @property
    def family(self) -> int:
        return 10 if ":" in self.address else 2


def _lookup(ipr: IPRoute, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def _add_addr(ipr: IPRoute, index: int, a: Address) -> None:
    kw: dict[str, object] = {}
    if a.family == 10:
        kw["flags"] = IFA_F_NODAD
    try:
        ipr.addr("add", index=index, address=a.address, prefixlen=a.prefixlen, **kw)
    except NetlinkError as exc:
        if exc.code != 17:  # EEXIST: already there
            raise


def random_mac() -> str:
    """A random unicast, locally administered MAC address."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFE) | 0x02
    return ":".join(f"{o:02x}" for o in octets)


class NotABridge(Exception):
    """An interface of that name exists and is not a bridge (it is never touched)."""


def _check_bridge(ipr: IPRoute, index: int, name: str) -> None:
    (link,) = ipr.get_links(index)
    info = link.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    if kind != "bridge":
        raise NotABridge(f"interface {name} exists and is not a bridge ({kind or 'none'})")


def ensure_bridge(name: str, addresses: list[Address], mtu: int = 0) -> bool:
    """The bridge ``name`` exists, is up, holds ``addresses`` and the MTU; ip_forward on.

    True when it was made here. An existing interface of that name that is not
    a bridge raises :class:`NotABridge` before anything changes.
    """
    created = False
    with IPRoute() as ipr:
        idx = _lookup(ipr, name)
        if idx is not None:
            _check_bridge(ipr, idx, name)
        if idx is None:
            created = True
            try:
                # A MAC of its own (as Docker's): else the bridge takes its ports' lowest one,
                # and it changes when a container joins or leaves; a neighbour's cached entry
                # for the gateway then points at a MAC that is gone (seconds of lost traffic).
                ipr.link("add", ifname=name, kind="bridge", address=random_mac())
            except NetlinkError as exc:
                if exc.code != 17:
                    raise
            idx = _lookup(ipr, name)
            assert idx is not None
        ipr.link("set", index=idx, mtu=mtu or DEFAULT_MTU)
        if any(a.family == 10 for a in addresses):
            _sysctl(f"net/ipv6/conf/{name}/disable_ipv6", "0")
        for a in addresses:
            _add_addr(ipr, idx, a)
        ipr.link("set", index=idx, state="up")
    _sysctl("net/ipv4/ip_forward", "1")
    if any(a.family == 10 for a in addresses):
        _sysctl("net/ipv6/conf/all/forwarding", "1")
    return created


def delete_link(name: str) -> None:
    """Delete an interface of the daemon's namespace (a bridge, a veth); fine when gone."""
    with IPRoute() as ipr:
        idx = _lookup(ipr, name)
        if idx is not None:
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=idx)


def remove_addresses(name: str, addresses: list[Address]) -> None:
    """Take ``addresses`` off interface ``name`` (fine when it or they are gone)."""
    with IPRoute() as ipr:
        idx = _lookup(ipr, name)
        if idx is None:
            return
        for a in addresses:
            with contextlib.suppress(NetlinkError):
                ipr.addr("del", index=idx, address=a.address, prefixlen=a.prefixlen)


def link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return _lookup(ipr, name) is not None


def new_veth_name() -> str:
    return "veth" + secrets.token_hex(4)[:7]


@dataclass
class EndpointSpec:
    """What :func:`add_endpoint` sets up for one endpoint."""

    bridge: str
    host_ifname: str
    ifname: str
    mac: str
    ipv4: Address | None
    ipv6: Address | None
    gateway4: str
    gateway6: str
    default_route: bool
    mtu: int = 0


def add_endpoint(ns_path: str, spec: EndpointSpec) -> None:
    """A veth pair: host side on ``spec.bridge``, peer made in ``ns_path`` as ``spec.ifname``.

    The peer is created in the container's namespace with its name, MAC and
    MTU in the same request (moving and renaming an interface afterwards
    costs an RCU grace period each, ~20 ms); then, inside, the loopback, the
    addresses, the link and the routes.
    """
    mtu = spec.mtu or DEFAULT_MTU
    with IPRoute() as ipr:
        bridge_idx = _lookup(ipr, spec.bridge)
        if bridge_idx is None:
            raise NotABridge(f"bridge {spec.bridge} does not exist")
        _check_bridge(ipr, bridge_idx, spec.bridge)
        fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            ipr.link(
                "add",
                ifname=spec.host_ifname,
                kind="veth",
                mtu=mtu,
                master=bridge_idx,
                peer={"ifname": spec.ifname, "net_ns_fd": fd, "address": spec.mac, "mtu": mtu},
            )
        finally:
            os.close(fd)
        try:
            host_idx = _lookup(ipr, spec.host_ifname)
            assert host_idx is not None
            # hairpin: the bridge may send a frame back out of the port it came in by, for a
            # container that reaches its own published port by a host address (the DNAT
            # sends it back where it came from), as Docker without its proxy and podman do
            ipr.brport("set", index=host_idx, mode=1)
            ipr.link("set", index=host_idx, state="up")
        except BaseException:
            with contextlib.suppress(NetlinkError):
                ipr.link("del", ifname=spec.host_ifname)
            raise

    def inside() -> None:
        if spec.ipv6 is not None:
            _sysctl("net/ipv6/conf/all/disable_ipv6", "0")
            _sysctl("net/ipv6/conf/default/disable_ipv6", "0")
        with IPRoute() as ipr:
            lo = _lookup(ipr, "lo")
            if lo is not None:
                ipr.link("set", index=lo, state="up")
            idx = _lookup(ipr, spec.ifname)
            assert idx is not None
            for a in (spec.ipv4, spec.ipv6):
                if a is not None:
                    _add_addr(ipr, idx, a)
            ipr.link("set", index=idx, state="up")
            if spec.default_route and spec.gateway4:
                ipr.route("replace", dst="0.0.0.0/0", gateway=spec.gateway4, oif=idx)
            if spec.default_route and spec.gateway6 and spec.ipv6 is not None:
                ipr.route("replace", dst="::/0", gateway=spec.gateway6, oif=idx, family=10)
            elif spec.default_route:  # the gateway endpoint has no IPv6: no IPv6 default
                with contextlib.suppress(NetlinkError):
                    ipr.route("del", dst="::/0", family=10)

    try:
        netns.run_in(ns_path, inside)
    except BaseException:
        delete_link(spec.host_ifname)
        raise


def set_default_routes(ns_path: str, ifname: str, gateway4: str, gateway6: str) -> None:
    """Inside the namespace at ``ns_path``: the default routes via ``ifname`` (the gateway
    endpoint's interface); a family without a gateway there loses its default route."""

    def inside() -> None:
        with IPRoute() as ipr:
            idx = _lookup(ipr, ifname)
            if idx is None:
                return
            for family, dst, gateway in ((2, "0.0.0.0/0", gateway4), (10, "::/0", gateway6)):
                if gateway:
                    ipr.route("replace", dst=dst, gateway=gateway, oif=idx, family=family)
                else:
                    with contextlib.suppress(NetlinkError):
                        ipr.route("del", dst=dst, family=family)

    netns.run_in(ns_path, inside)


def remove_in_netns(ns_path: str, ifname: str) -> None:
    """Delete interface ``ifname`` inside the namespace at ``ns_path`` (its veth peer goes too)."""

    def inside() -> None:
        with IPRoute() as ipr:
            idx = _lookup(ipr, ifname)
            if idx is not None:
                with contextlib.suppress(NetlinkError):
                    ipr.link("del", index=idx)

    netns.run_in(ns_path, inside)


def _sysctl(name: str, value: str) -> None:
    """Write ``/proc/sys/<name>`` of the calling thread's network namespace."""
    with contextlib.suppress(OSError), open(f"/proc/sys/{name}", "w") as f:
        f.write(value)
