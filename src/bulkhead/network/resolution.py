"""Name resolution for containers: the embedded resolver and the files, kept current.

:class:`NameService` ties :mod:`bulkhead.network.dns` and the etc-file
writers (:mod:`bulkhead.network.hosts`, :mod:`bulkhead.network.resolvconf`)
to the network manager's hooks (:class:`bulkhead.network.manager.NetworkManager`):

- a *user-defined* network (a bridge network other than the default
  ``bridge``) coming up (create, daemon start) gets its resolver listener on
  its gateway addresses; going down (``network rm``, daemon stop) closes it;
- an endpoint coming up (start, ``network connect``) adds the container's
  records on that network (so the other containers resolve it at once),
  appends its ``<ip>\\t<hostname>`` lines to its /etc/hosts (and, on the
  default bridge, the legacy ``--link`` lines) and rewrites its resolv.conf:
  ``nameserver 127.0.0.11`` when it is on a user network (Docker's address,
  redirected inside the container's namespace to the resolver on the
  gateway of its first user network: :mod:`bulkhead.network.dnsredirect`),
  else the host's nameservers as for the default bridge;
- an endpoint going down (stop, ``network disconnect``) undoes that.

A container's *external servers* (what its queries for other names are
forwarded to) are computed as Docker does for its resolv.conf: its
``--dns``, else the daemon's ``dns`` option, else the daemon's own
resolv.conf nameservers. A resolv.conf the user edited is left alone (its
``.hash``), as Docker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bulkhead.network import dnsredirect, resolvconf
from bulkhead.network import hosts as hostsfile
from bulkhead.network.dns import DnsEndpoint, DnsServer, DnsTable

log = logging.getLogger("bulkhead.network.dns")

#: resolv.conf takes at most three nameservers (glibc's MAXNS).
MAX_NAMESERVERS = 3

#: ``redirect(ns_path, gateway, port)``: point the namespace's 127.0.0.11:53 at the resolver.
Redirect = Callable[[str, str, int], None]


def _install_redirect(ns_path: str, gateway: str, port: int) -> None:
    dnsredirect.install(ns_path, gateway, port=port)


@dataclass(frozen=True)
class ContainerNames:
    """What the service needs to know of a container (the engine supplies it)."""

    id: str
    name: str
    hostname: str
    domainname: str
    hosts_path: str
    resolv_conf_path: str
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    #: legacy links: (linked container's name, alias)
    links: tuple[tuple[str, str], ...] = ()


def user_defined(net: Any) -> bool:
    """A network with an embedded resolver: a bridge network other than ``bridge``."""
    return bool(net.driver == "bridge" and net.name != "bridge")


def gateways(net: Any) -> list[str]:
    """The network's gateway addresses, IPv4 first."""
    out = [p.gateway for p in net.pools if p.gateway]
    return sorted(out, key=lambda a: ipaddress.ip_address(a).version)


def _endpoint_link(link: str) -> tuple[str, str]:
    """An endpoint's ``name:alias`` link (stored so by the engine) as (alias, name)."""
    name, _, alias = link.partition(":")
    return alias or name, name


class NameService:
    """See the module docstring. ``containers(ref)`` (an id or a name) gives a container's
    :class:`ContainerNames` (None when unknown); ``default_dns`` is the
    daemon's ``dns`` option; ``port`` is 53 but for tests; ``redirect`` sets
    up 127.0.0.11 in a container's namespace (a fake in unit tests)."""

    def __init__(
        self,
        manager: Any,
        containers: Callable[[str], ContainerNames | None],
        *,
        default_dns: Sequence[str] = (),
        host_resolv_conf: str = resolvconf.HOST_RESOLV_CONF,
        port: int = 53,
        redirect: Redirect = _install_redirect,
    ) -> None:
        self.manager = manager
        self.redirect = redirect
        #: container id → (its namespace's inode, the gateway 127.0.0.11 leads to there)
        self._redirected: dict[str, tuple[int, str]] = {}
        self.containers = containers
        self.default_dns = tuple(default_dns)
        self.host_resolv_conf = host_resolv_conf
        self.table = DnsTable()
        self.server = DnsServer(
            self.table,
            self._default_upstreams,
            port=port,
            netns_path=lambda cid: str(self.manager.ns_path(cid)),
        )
        self._attached = False
        self._pending: dict[str, Any] = {}  # networks up before the loop was attached

    def install(self) -> None:
        """Subscribe to the manager's hooks."""
        self.manager.on_network_up.append(self.network_up)
        self.manager.on_network_down.append(self.network_down)
        self.manager.on_endpoint_up.append(self.endpoint_up)
        self.manager.on_endpoint_down.append(self.endpoint_down)

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Serve on the daemon's event loop (call from the loop, before networks come up)."""
        self.server.attach(loop)
        self._attached = True
        pending, self._pending = self._pending, {}
        for net in pending.values():
            self.network_up(net)

    def restore(self) -> None:
        """Daemon start: the records of the endpoints still plugged in (their containers
        kept running while no daemon was there; an exit found later removes them)."""
        done: set[str] = set()
        for ep in self.manager.store.endpoints():
            if not ep.host_ifname or ep.container_id in done:
                continue
            net = self.manager.find(ep.network_id)
            c = self.containers(ep.container_id)
            if net is None or not user_defined(net) or c is None:
                continue
            done.add(c.id)
            resolvers, ipv6 = self._resolvers(c.id, present=True)
            self._set_records(c, self._write_resolv_conf(c, resolvers, ipv6, write=False))

    def close(self) -> None:
        """Daemon stop: every listener closed."""
        if self._attached:
            self.server.close()

    def _default_upstreams(self) -> list[str]:
        return list(self.default_dns) or resolvconf.host_nameservers(self.host_resolv_conf)

    # -- networks ---------------------------------------------------------------------

    def network_up(self, net: Any) -> None:
        if not user_defined(net):
            return
        if not self._attached:
            self._pending[net.id] = net
            return
        self.server.listen(net.id, net.name, gateways(net), internal=bool(net.internal))

    def network_down(self, net: Any) -> None:
        self._pending.pop(net.id, None)
        if user_defined(net) and self._attached:
            self.server.stop(net.id)

    # -- endpoints ----------------------------------------------------------------------

    def endpoint_up(self, net: Any, ep: Any) -> None:
        c = self.containers(ep.container_id)
        if c is None:
            return
        resolvers, ipv6 = self._resolvers(c.id)
        rc = self._write_resolv_conf(c, resolvers, ipv6)
        if user_defined(net):
            self._set_records(c, rc)
        records: list[hostsfile.Record] = []
        if net.name == "bridge":
            records += self._link_records(c, net)
        records += hostsfile.own_records([ep.ipv4, ep.ipv6], c.hostname, c.domainname)
        with contextlib.suppress(OSError):
            hostsfile.add(c.hosts_path, records)

    def endpoint_down(self, net: Any, ep: Any) -> None:
        self.table.remove_endpoint(net.id, ep.container_id)
        c = self.containers(ep.container_id)
        if c is None:
            return
        resolvers, ipv6 = self._resolvers(c.id)
        self._write_resolv_conf(c, resolvers, ipv6)
        records = hostsfile.own_records([ep.ipv4, ep.ipv6], c.hostname, c.domainname)
        if net.name == "bridge":
            records += self._link_records(c, net)
        with contextlib.suppress(OSError):
            hostsfile.delete(c.hosts_path, records)

    def _live_user_networks(self, container_id: str) -> list[tuple[Any, Any]]:
        out = []
        for ep in self.manager.endpoints(container_id):
            if not ep.host_ifname:
                continue
            net = self.manager.find(ep.network_id)
            if net is not None and user_defined(net):
                out.append((net, ep))
        return out

    def _resolvers(self, container_id: str, *, present: bool = False) -> tuple[list[str], bool]:
        """The container's nameservers (``127.0.0.11`` on a user network, none
        otherwise), and whether any of its user networks gives it IPv6.

        127.0.0.11 leads to the resolver on the IPv4 gateway of the first user
        network the container is plugged into (redirected inside its namespace
        when that changes). A container whose user networks have no IPv4
        gateway gets their IPv6 gateways as nameservers instead. ``present``: the
        redirect is known to be in place (a running container the daemon finds again).
        """
        live = self._live_user_networks(container_id)
        if not live:
            self._redirected.pop(container_id, None)
        ipv6 = any(ep.ipv6 for _, ep in live)
        v4 = [gw for net, _ in live for gw in gateways(net) if ":" not in gw]
        if v4:
            try:
                self._redirect(container_id, v4[0], present=present)
                return [dnsredirect.RESOLVER_ADDRESS], ipv6
            except (dnsredirect.RedirectError, OSError) as exc:
                log.warning("%s; the container gets its gateways as nameservers", exc)
        resolvers: list[str] = []
        for net, _ in live:
            for gw in gateways(net)[:1]:
                if gw not in resolvers:
                    resolvers.append(gw)
        return resolvers[:MAX_NAMESERVERS], ipv6

    def _redirect(self, container_id: str, gateway: str, *, present: bool = False) -> None:
        """Make 127.0.0.11 lead to ``gateway`` in the container's namespace, once per
        namespace and gateway (a new start makes a new namespace, so a new inode)."""
        path = str(self.manager.ns_path(container_id))
        inode = os.stat(path).st_ino
        if self._redirected.get(container_id) == (inode, gateway):
            return
        if not present:
            self.redirect(path, gateway, self.server.port)
        self._redirected[container_id] = (inode, gateway)

    def _write_resolv_conf(
        self, c: ContainerNames, resolvers: list[str], ipv6: bool, *, write: bool = True
    ) -> resolvconf.ResolvConf:
        """Rewrite the container's resolv.conf (unless the user edited it, or not
        ``write``); returns what was made of it (its upstreams, its ndots)."""
        rc = resolvconf.build(
            "internal" if resolvers else "legacy",
            dns=c.dns or self.default_dns,
            dns_search=c.dns_search,
            dns_options=c.dns_options,
            resolvers=resolvers,
            ipv6=ipv6,
            host_path=self.host_resolv_conf,
        )
        if write and c.resolv_conf_path and not resolvconf.user_modified(c.resolv_conf_path):
            try:
                resolvconf.write(c.resolv_conf_path, rc.generate())
            except OSError:
                log.warning("could not write %s", c.resolv_conf_path)
        return rc

    def _set_records(self, c: ContainerNames, rc: resolvconf.ResolvConf) -> None:
        """The container's records on each user network it is plugged into: its names,
        its upstreams (a loopback ``--dns`` of its own is asked from inside its network
        namespace, the others from the daemon's: see :class:`resolvconf.ExtServer`;
        ``127.0.0.11`` never), and whether its resolv.conf has an ndots of the host's or
        the user's (Docker's ``NdotsSet``). Docker treats the daemon's ``dns`` like a
        container's ``--dns``; bulkhead asks its loopback addresses in the daemon's
        namespace, where they were configured."""
        upstreams = tuple(e.addr for e in rc.ext_servers if e.usable)
        # the daemon's own ``dns`` option names servers as the host sees them (its
        # loopback ones too); a container's ``--dns`` loopback is its own
        in_container = tuple(
            e.addr
            for e in rc.ext_servers
            if e.in_container and (c.dns or e.addr not in self.default_dns)
        )
        ndots_set = rc.ndots_from in ("host", "override")
        hostname = c.hostname if c.hostname != c.id[:12] else ""
        for net, ep in self._live_user_networks(c.id):
            self.table.set_endpoint(
                net.id,
                net.name,
                DnsEndpoint(
                    container_id=c.id,
                    name=c.name,
                    addresses=tuple(a for a in (ep.ipv4, ep.ipv6) if a),
                    aliases=tuple(ep.aliases),
                    hostname=hostname,
                    upstreams=upstreams,
                    in_container=in_container,
                    links=tuple((alias, name) for name, alias in c.links)
                    + tuple(_endpoint_link(link) for link in ep.links),
                    ndots_set=ndots_set,
                ),
            )

    def _link_records(self, c: ContainerNames, net: Any) -> list[hostsfile.Record]:
        """``--link name:alias`` lines: the linked container's addresses on ``net``
        (IPv4, then IPv6, as moby's sandbox options)."""
        out: list[hostsfile.Record] = []
        for name, alias in c.links:
            target = self.containers(name)
            if target is None:
                continue
            for ep in self.manager.endpoints(target.id):
                if ep.network_id != net.id:
                    continue
                for ip in (ep.ipv4, ep.ipv6):
                    if ip:
                        out.append(hostsfile.link_record(ip, alias, target.hostname, target.name))
        return out
