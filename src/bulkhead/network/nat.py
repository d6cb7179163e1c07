"""The network manager's NAT part: published ports of running containers and the firewall.

:class:`Nat` keeps bulkhead's nftables table (:mod:`bulkhead.network.firewall`)
equal to what exists: every bridge network of the store (its masquerade,
isolation, ``--internal``) and the published ports of every running container
(:mod:`bulkhead.network.ports`). It is told of changes by the manager's hooks
(a network up or down) and by the engine (:meth:`publish` at a start after the
container's veths are up, :meth:`unpublish` after its exit), and rewrites the
table whole each time.

A container's bindings (the host ports it got, ephemeral ones included) are
written to ``<exec_root>/ports/<id>.json`` while it runs: a daemon that starts
again (after a crash or a ``kill -9``) holds those ports again and restores
their rules (:meth:`restore`); files of containers that are no longer running
are dropped. A daemon that stops leaves the rules of running containers in
place (live restore) and deletes the table when no container runs.

The table is touched only by a daemon that has something to put in it, or
that put something there before (the marker ``<exec_root>/ports/.table``): a
daemon without bridge networks never runs ``nft``.

What DNAT cannot serve (``[::1]:8080``; the host's IPv6 addresses for a
container without IPv6 address) the daemon relays itself, with the userland
proxy :class:`~bulkhead.network.proxy.PortProxy` on the event loop
(:meth:`Nat.attach`): its listeners are the sockets that hold those ports
(:func:`~bulkhead.network.ports.proxy_target` says which). They are started
with the rules (:meth:`publish`, :meth:`restore`) and stopped before their
ports are released (:meth:`unpublish`, a disconnect, :meth:`shut_down`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from bulkhead.network import firewall
from bulkhead.network.ports import (
    Binding,
    PortAllocator,
    exposed_keys,
    proxy_target,
    requests,
    settings_ports,
    summary_ports,
)
from bulkhead.network.proxy import PortProxy

if TYPE_CHECKING:
    from bulkhead.network.manager import NetworkManager
    from bulkhead.network.store import Endpoint, Network

log = logging.getLogger("bulkhead.network")

OPT_MASQUERADE = "com.docker.network.bridge.enable_ip_masquerade"


class Published(msgspec.Struct, kw_only=True):
    """A running container's ports: where they go and what the host gave."""

    container_id: str
    bridge: str = ""
    ipv4: str = ""
    ipv6: str = ""
    #: every exposed/published port key (``80/tcp``), for inspect's ``Ports``
    keys: list[str] = msgspec.field(default_factory=list)
    bindings: list[Binding] = msgspec.field(default_factory=list)


class Nat:
    """See the module docstring. Thread-safe (the daemon calls it from worker threads)."""

    def __init__(self, manager: NetworkManager, exec_root: Path, *, nft: str = "nft") -> None:
        self.manager = manager
        self.dir = Path(exec_root) / "ports"
        self.nft = nft
        self.ports = PortAllocator()
        #: the userland proxy of the ports DNAT cannot serve (:mod:`bulkhead.network.proxy`)
        self.proxy = PortProxy()
        self._published: dict[str, Published] = {}
        self._lock = threading.RLock()
        manager.on_network_up.append(self._on_network_up)
        manager.on_network_down.append(self._on_network_down)
        manager.on_endpoint_down.append(self._on_endpoint_down)

    def attach(self, loop: Any = None) -> None:
        """Run the userland proxy on the daemon's event loop (call from the loop, before
        :meth:`restore`). Without it, ``[::1]`` and IPv6-to-IPv4 ports are held, not served."""
        if self.ports.userland_proxy:
            self.proxy.attach(loop)

    def disable_userland_proxy(self) -> None:
        """dockerd's ``userland-proxy: false`` (call before :meth:`attach`): DNAT alone,
        so no ``[::1]`` and no IPv6 host address for an IPv4-only container."""
        self.ports.userland_proxy = False

    # -- the table -------------------------------------------------------------------

    def state(self, *, exclude: str = "") -> firewall.FirewallState:
        """What the table must hold now (``exclude``: a network id being removed)."""
        nets = []
        for net in self.manager.store.networks():
            if net.driver != "bridge" or not net.bridge or net.id == exclude:
                continue
            if net.name == "bridge" and not self.manager.bridge_enabled:
                continue
            nets.append(
                firewall.NetworkRules(
                    bridge=net.bridge,
                    subnets=tuple(p.subnet for p in net.pools),
                    internal=net.internal,
                    masquerade=net.options.get(OPT_MASQUERADE, "true").lower() != "false",
                )
            )
        bridges = {n.bridge for n in nets}
        rules = []
        for p in self._published.values():
            if p.bridge not in bridges:
                continue
            for b in p.bindings:
                cip = p.ipv6 if ":" in b.host_ip else p.ipv4
                if b.host_ip == "::1":
                    cip = ""  # no route_localnet for IPv6: the proxy's (see module docstring)
                if cip:
                    rules.append(
                        firewall.PortRule(
                            proto=b.proto,
                            host_ip=b.host_ip,
                            host_port=b.host_port,
                            container_ip=cip,
                            container_port=b.container_port,
                            bridge=p.bridge,
                        )
                    )
        return firewall.FirewallState(networks=tuple(nets), ports=tuple(rules))

    @property
    def _marker(self) -> Path:
        return self.dir / ".table"

    def sync(self, *, exclude: str = "") -> None:
        """Rewrite the table from :meth:`state` (delete it when empty)."""
        with self._lock:
            state = self.state(exclude=exclude)
            self._apply(state)

    def _apply(self, state: firewall.FirewallState) -> None:
        if state.empty and not self._marker.exists():
            return  # never touched the table: nothing to delete
        if not state.empty:
            self.manager._guard()
            self.dir.mkdir(parents=True, exist_ok=True)
            self._marker.touch()
        firewall.apply(state, nft=self.nft)
        if state.empty:
            self._marker.unlink(missing_ok=True)

    def _on_network_up(self, net: Network) -> None:
        self.sync()

    def _on_network_down(self, net: Network) -> None:
        self.sync(exclude=net.id)

    def _on_endpoint_down(self, net: Network, ep: Endpoint) -> None:
        """``network disconnect`` of the network that carries a running container's ports:
        they go with it (as Docker's), the host ports are free again."""
        with self._lock:
            pub = self._published.get(ep.container_id)
            if pub is None or pub.bridge != net.bridge or not pub.bindings:
                return
            self._release(ep.container_id)
            ips = [ip for ip in (pub.ipv4, pub.ipv6) if ip]
            pub.bindings, pub.bridge, pub.ipv4, pub.ipv6 = [], "", "", ""
            self._save(pub)
            self.sync()
            flush_conntrack(ips)

    # -- published ports -------------------------------------------------------------

    def publish(
        self,
        container_id: str,
        exposed: Iterable[str],
        port_bindings: Mapping[str, Any] | None,
        publish_all: bool,
    ) -> None:
        """At a start, the veths up: hold the host ports and add their rules (all or nothing).

        Raises :class:`~bulkhead.network.ports.PortAllocationError` (nothing held, nothing
        changed) when a port is allocated or in use.
        """
        exposed = list(exposed)
        reqs = requests(exposed, port_bindings, publish_all)
        keys = exposed_keys(exposed, port_bindings)
        if not keys and not reqs:  # the common case: nothing to hold, write or sync
            self.unpublish(container_id)
            return
        pub = Published(container_id=container_id, keys=keys)
        # the ports go to the first endpoint (by connection order) of a network that has
        # an outside (Docker: the gateway endpoint); an internal-only container has none
        for ep in sorted(
            self.manager.store.endpoints(container_id=container_id), key=lambda e: e.seq
        ):
            net = self.manager.store.find(ep.network_id)
            if net is not None and not net.internal and net.bridge:
                pub.bridge, pub.ipv4, pub.ipv6 = net.bridge, ep.ipv4, ep.ipv6
                break
        with self._lock:
            self._release(container_id)
            if reqs and pub.bridge:
                ips = [ip for ip in (pub.ipv4, pub.ipv6) if ip]
                pub.bindings = self.ports.allocate(container_id, reqs, ips)
            self._published[container_id] = pub
            try:
                self._save(pub)
                if pub.bindings:
                    self.sync()
                    self._start_proxies(pub)
            except BaseException:
                self._forget(container_id)
                raise

    def unpublish(self, container_id: str) -> None:
        """After the exit: the rules go and the host ports are free again."""
        with self._lock:
            pub = self._published.get(container_id)
            self._forget(container_id)
            if pub is not None and pub.bindings:
                self.sync()
                flush_conntrack([ip for ip in (pub.ipv4, pub.ipv6) if ip])

    def _release(self, container_id: str) -> None:
        """The proxy stopped, then the sockets closed: the host ports are free again."""
        with contextlib.suppress(Exception):
            self.proxy.stop(container_id)
        self.ports.release(container_id)

    def _start_proxies(self, pub: Published) -> None:
        """Serve the bindings DNAT cannot with the userland proxy (when attached)."""
        if not self.proxy.attached:
            return
        for b, sock in self.ports.held(pub.container_id):
            cip = proxy_target(b, pub.ipv4, pub.ipv6)
            if cip and sock is not None:
                self.proxy.start(pub.container_id, sock, (cip, b.container_port))

    def _forget(self, container_id: str) -> None:
        self._release(container_id)
        self._published.pop(container_id, None)
        with contextlib.suppress(FileNotFoundError):
            (self.dir / f"{container_id}.json").unlink()

    def _save(self, pub: Published) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.dir / f"{pub.container_id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(msgspec.json.encode(pub))
        os.replace(tmp, path)

    def restore(self) -> None:
        """Daemon start: hold again the ports of containers still running, restore the table."""
        with self._lock:
            if self.dir.is_dir():
                for path in sorted(self.dir.glob("*.json")):
                    try:
                        pub = msgspec.json.decode(path.read_bytes(), type=Published)
                    except (OSError, msgspec.DecodeError):
                        path.unlink(missing_ok=True)
                        continue
                    if not self.manager.is_live(pub.container_id):
                        path.unlink(missing_ok=True)
                        continue
                    ips = [ip for ip in (pub.ipv4, pub.ipv6) if ip]
                    for err in self.ports.restore(pub.container_id, pub.bindings, ips):
                        log.warning("container %s: %s", pub.container_id[:12], err)
                    self._published[pub.container_id] = pub
            try:
                self.sync()
            except Exception:
                log.exception("restoring the firewall rules")
            for pub in self._published.values():
                try:
                    self._start_proxies(pub)
                except Exception:
                    log.exception("container %s: the userland proxy", pub.container_id[:12])

    def shut_down(self) -> None:
        """Daemon stop: the rules of running containers stay; no container, no table."""
        with self._lock:
            live = {ep.container_id for ep in self.manager.store.endpoints()}
            if not any(self.manager.is_live(cid) for cid in live):
                with contextlib.suppress(Exception):
                    if self._marker.exists():
                        firewall.apply(firewall.FirewallState(), nft=self.nft)
                        self._marker.unlink(missing_ok=True)
            with contextlib.suppress(Exception):
                self.proxy.close()
            self.ports.close()

    # -- views ---------------------------------------------------------------------------

    def settings_ports(self, container_id: str) -> dict[str, list[dict[str, str]] | None]:
        """Inspect's ``NetworkSettings.Ports`` of a running container ({} otherwise)."""
        pub = self._published.get(container_id)
        return settings_ports(pub.keys, pub.bindings) if pub else {}

    def summary_ports(self, container_id: str) -> list[dict[str, Any]]:
        """``ps``' ``Ports`` of a running container ([] otherwise)."""
        pub = self._published.get(container_id)
        return summary_ports(pub.keys, pub.bindings) if pub else []


def flush_conntrack(ips: list[str]) -> int:
    """Forget the UDP and SCTP connections (conntrack entries) to and from ``ips``.

    A published UDP port's DNAT lives on in conntrack for as long as its client
    keeps sending (30 s, 120 s once answered): without this, a container that
    replaces another on the same host port would not get the traffic of a
    client that sends from the same source port (a syslog forwarder, a DNS
    client), which would still go to the old address. TCP connections end with
    their container. Best effort; returns how many entries went.
    """
    import socket

    from pyroute2 import Conntrack
    from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

    gone = 0
    try:
        ct = Conntrack()
    except Exception:
        log.debug("no conntrack netlink socket", exc_info=True)
        return 0
    try:
        for ip in ips:
            family = socket.AF_INET6 if ":" in ip else socket.AF_INET
            for proto in (socket.IPPROTO_UDP, socket.IPPROTO_SCTP):
                for key in ("tuple_orig", "tuple_reply"):
                    flt = NFCTAttrTuple(family=family, proto=proto, saddr=ip)
                    for entry in list(ct.dump_entries(**{key: flt})):
                        with contextlib.suppress(Exception):
                            ct.delete(entry)
                            gone += 1
    except Exception:
        log.warning("flushing the conntrack entries of %s", ips, exc_info=True)
    finally:
        ct.close()
    return gone
