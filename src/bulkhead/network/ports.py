"""Published ports: what a container asks for, which host ports it gets, and holding them.

Vocabulary
----------
- A *port key* is Docker's ``80/tcp``: a container port (or range ``8000-8010``)
  and a protocol (``tcp``, ``udp``, ``sctp``; ``tcp`` when omitted).
- *Exposed* ports (``EXPOSE`` in the image, ``--expose``) are only declared;
  *published* ports (``-p``, ``HostConfig.PortBindings``) are reachable on the
  host. ``-P`` (``PublishAllPorts``) publishes every exposed port on an
  *ephemeral* host port, chosen, as moby's port allocator does, from the
  kernel's ``net.ipv4.ip_local_port_range`` (32768-60999 by default).
- A *binding* is one published port: ``host_ip:host_port/proto`` →
  ``container_port``. ``HostIp`` ``""`` means every address: as Docker's
  (userland proxy on), one binding ``0.0.0.0`` for the container's IPv4
  address and one ``::`` for its IPv6 address — or, when it has none, also
  for its IPv4 address (relayed by :mod:`bulkhead.network.proxy`), if the
  host has IPv6 at all (moby's ``IsV6Listenable``: ``[::1]`` can listen).
  Both get the same host port (ephemeral ones included). An IPv6 ``HostIp``
  of a container without IPv6 address is likewise relayed to its IPv4 one.

Holding a host port
-------------------
The daemon binds a socket to each published ``host_ip:host_port`` (in its
own network namespace) and keeps it open for as long as the container runs,
as Docker 28 does: no other program can take the port meanwhile, and one that
already holds it makes the start fail ("address already in use"). Traffic
mostly never reaches these sockets (the DNAT of
:mod:`bulkhead.network.firewall` turns it to the container first; such a TCP
socket is bound but never listens); the sockets of the bindings DNAT cannot
serve (``[::1]``, IPv6 to an IPv4-only container: see :func:`proxy_target`)
become the listeners of the userland proxy (:mod:`bulkhead.network.proxy`).
A port another container of this daemon holds fails with Docker's "Bind for
0.0.0.0:8080 failed: port is already allocated".
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from bulkhead.errors import BulkheadError

PROTOCOLS = ("tcp", "udp", "sctp")

#: moby's portallocator fallback when ``ip_local_port_range`` cannot be read.
DEFAULT_EPHEMERAL = (49153, 60999)


class PortAllocationError(BulkheadError):
    """A host port that cannot be had (allocated to another container, or in use)."""


class Request(msgspec.Struct, frozen=True):
    """One binding asked for: ``host_port`` ``0`` = ephemeral, ``host_port_end`` for a range."""

    proto: str
    container_port: int
    host_ip: str = ""
    host_port: int = 0
    host_port_end: int = 0


class Binding(msgspec.Struct, frozen=True):
    """One port actually published (what inspect's ``NetworkSettings.Ports`` shows)."""

    proto: str
    container_port: int
    host_ip: str
    host_port: int

    @property
    def key(self) -> str:
        return f"{self.container_port}/{self.proto}"


def _int_range(text: str, what: str) -> tuple[int, int]:
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise PortAllocationError(f"invalid {what}: {text!r}") from None
    if not (0 < a <= 65535 and 0 < b <= 65535) or b < a:
        raise PortAllocationError(f"invalid {what}: {text!r}")
    return a, b


def parse_key(key: str) -> tuple[int, int, str]:
    """``8000-8010/udp`` → ``(8000, 8010, "udp")``."""
    port, _, proto = key.partition("/")
    proto = proto.lower() or "tcp"
    if proto not in PROTOCOLS:
        raise PortAllocationError(f"invalid proto: {proto!r}")
    lo, hi = _int_range(port, "containerPort")
    return lo, hi, proto


def requests(
    exposed: Iterable[str], port_bindings: Mapping[str, Any] | None, publish_all: bool
) -> list[Request]:
    """The bindings a container asks for, from ``Config.ExposedPorts`` and ``HostConfig``.

    ``-P`` adds an ephemeral binding for each exposed port that ``-p`` does not bind.
    """
    out: list[Request] = []
    bound: set[tuple[int, str]] = set()
    for key, bindings in (port_bindings or {}).items():
        lo, hi, proto = parse_key(key)
        for b in bindings or [{}]:
            host_ip = str((b or {}).get("HostIp") or "")
            host_port = str((b or {}).get("HostPort") or "")
            if host_ip:
                try:
                    addr = ipaddress.ip_address(host_ip.strip("[]"))
                except ValueError:
                    raise PortAllocationError(f"invalid IP address: {host_ip}") from None
                # an IPv4-mapped IPv6 address is the IPv4 one (moby's To4)
                mapped = getattr(addr, "ipv4_mapped", None)
                host_ip = str(mapped or addr)
            hp, hp_end = _int_range(host_port, "hostPort") if host_port else (0, 0)
            for i, cport in enumerate(range(lo, hi + 1)):
                if hp and hi > lo:  # range to range: one to one (the CLI splits these already)
                    if hp_end - hp != hi - lo:
                        raise PortAllocationError(
                            f"invalid ranges specified for container and host Ports: {key} and {host_port}"
                        )
                    out.append(Request(proto, cport, host_ip, hp + i, hp + i))
                else:
                    out.append(Request(proto, cport, host_ip, hp, hp_end if hp_end != hp else 0))
                bound.add((cport, proto))
    if publish_all:
        for key in exposed:
            lo, hi, proto = parse_key(key)
            for cport in range(lo, hi + 1):
                if (cport, proto) not in bound:
                    out.append(Request(proto, cport))
    return out


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's range for ephemeral ports (moby's portallocator reads the same file)."""
    try:
        with open(path) as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _overlaps(a: str, b: str) -> bool:
    """Whether two host addresses of the same family collide (one of them any)."""
    if _family(a) != _family(b):
        return False
    return (
        a == b or ipaddress.ip_address(a).is_unspecified or ipaddress.ip_address(b).is_unspecified
    )


class _Held(msgspec.Struct):
    owner: str
    binding: Binding
    sock: socket.socket | None


class PortAllocator:
    """The host ports this daemon holds, each by a bound socket, per owner (a container id)."""

    def __init__(
        self,
        ephemeral: tuple[int, int] | None = None,
        *,
        ipv6: bool | None = None,
        userland_proxy: bool = True,
    ) -> None:
        self._held: list[_Held] = []
        #: dockerd's ``userland-proxy``: off, nothing is relayed across families, so an
        #: IPv4-only container gets no IPv6 binding (and refuses an IPv6 host address)
        self.userland_proxy = userland_proxy
        self._ephemeral = ephemeral
        self._next_ephemeral = 0
        #: whether the host has IPv6 (None: ask :func:`v6_listenable` at each allocation)
        self._v6_listenable = ipv6

    def _taken_by_us(self, proto: str, ip: str, port: int) -> bool:
        return any(
            h.binding.proto == proto
            and h.binding.host_port == port
            and _overlaps(h.binding.host_ip, ip)
            for h in self._held
        )

    @staticmethod
    def _bind(proto: str, ip: str, port: int) -> socket.socket | None:
        fam = _family(ip)
        kind, ipproto = {
            "tcp": (socket.SOCK_STREAM, 0),
            "udp": (socket.SOCK_DGRAM, 0),
            "sctp": (socket.SOCK_STREAM, socket.IPPROTO_SCTP),
        }[proto]
        try:
            s = socket.socket(fam, kind, ipproto)
        except OSError:
            if proto == "sctp":  # no sctp module: nothing to hold the port with
                return None
            raise
        try:
            if fam == socket.AF_INET6:
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if kind == socket.SOCK_STREAM:
                # as a listening server would: a TIME_WAIT of an old connection is no conflict
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port))
        except OSError:
            s.close()
            raise
        return s

    def _take(self, owner: str, proto: str, ip: str, port: int, cport: int, cip: str) -> _Held:
        if self._taken_by_us(proto, ip, port):
            raise PortAllocationError(
                f"Bind for {_hostport(ip, port)} failed: port is already allocated"
            )
        try:
            s = self._bind(proto, ip, port)
        except OSError as exc:
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise PortAllocationError(
                f"failed to bind host port for {_hostport(ip, port)}:{_hostport(cip, cport)}/{proto}: {why}"
            ) from None
        held = _Held(owner, Binding(proto, cport, ip, port), s)
        self._held.append(held)
        return held

    def allocate(
        self, owner: str, reqs: Iterable[Request], container_ips: Iterable[str]
    ) -> list[Binding]:
        """Bind every request for ``owner``, all or nothing (a failure releases this call's ports).

        ``container_ips``: the container's addresses; a request for every address
        (``HostIp`` ``""``) binds ``0.0.0.0`` for an IPv4 container address and
        ``::`` for an IPv6 one, or for the IPv4 one when there is no IPv6 one
        (see the module docstring), both on one host port.
        """
        cips = list(container_ips)
        cip4 = next((c for c in cips if _family(c) == socket.AF_INET), "")
        cip6 = next((c for c in cips if _family(c) == socket.AF_INET6), "")
        got: list[_Held] = []
        try:
            for r in reqs:
                targets: list[tuple[str, str]] = []
                if r.host_ip:
                    # an IPv6 host address of an IPv4-only container: proxied to its IPv4
                    v4 = _family(r.host_ip) == socket.AF_INET
                    cip = cip4 if v4 else cip6 or (cip4 if self.userland_proxy else "")
                    if not cip:
                        raise PortAllocationError(
                            f"no container address of the family of host address {r.host_ip}"
                            + ("" if v4 or self.userland_proxy else " (userland-proxy is off)")
                        )
                    targets.append((r.host_ip, cip))
                else:
                    if cip4:
                        targets.append(("0.0.0.0", cip4))
                    if cip6 or (cip4 and self.userland_proxy and self._v6()):
                        targets.append(("::", cip6 or cip4))
                if targets:
                    got.extend(self._take_group(owner, r, targets))
        except BaseException:
            for h in got:
                self._drop(h)
            raise
        return [h.binding for h in got]

    def _v6(self) -> bool:
        if self._v6_listenable is None:
            return v6_listenable()
        return self._v6_listenable

    def _take_all(
        self, owner: str, r: Request, targets: list[tuple[str, str]], port: int
    ) -> list[_Held]:
        got: list[_Held] = []
        try:
            for ip, cip in targets:
                got.append(self._take(owner, r.proto, ip, port, r.container_port, cip))
        except BaseException:
            for h in got:
                self._drop(h)
            raise
        return got

    def _take_group(self, owner: str, r: Request, targets: list[tuple[str, str]]) -> list[_Held]:
        """One request's bindings (one per host address), all on the same host port."""
        if r.host_port and not r.host_port_end:
            return self._take_all(owner, r, targets, r.host_port)
        ip = targets[0][0]
        if r.host_port:  # a host range for one container port: the first free one
            candidates: Iterable[int] = range(r.host_port, r.host_port_end + 1)
            what = f"{_hostport(ip, r.host_port)}-{r.host_port_end}"
        else:
            lo, hi = self._ephemeral or ephemeral_range()
            start = min(max(self._next_ephemeral, lo), hi)
            candidates = [*range(start, hi + 1), *range(lo, start)]
            what = f"{_hostport(ip, 0)}"
        last: PortAllocationError | None = None
        for port in candidates:
            try:
                held = self._take_all(owner, r, targets, port)
            except PortAllocationError as exc:
                last = exc
                continue
            if not r.host_port:
                self._next_ephemeral = port + 1
            return held
        if r.host_port:
            raise PortAllocationError(
                f"Bind for {what} failed: port is already allocated"
            ) from last
        raise PortAllocationError("no free host port for an ephemeral binding") from last

    def restore(
        self, owner: str, bindings: Iterable[Binding], container_ips: Iterable[str]
    ) -> list[str]:
        """Hold again the ports of a running container (a daemon restart); the errors, if any."""
        errors: list[str] = []
        cips = list(container_ips)
        for b in bindings:
            cip = next((c for c in cips if _family(c) == _family(b.host_ip)), "")
            try:
                self._take(owner, b.proto, b.host_ip, b.host_port, b.container_port, cip)
            except PortAllocationError as exc:
                errors.append(str(exc))
        return errors

    def _drop(self, held: _Held) -> None:
        with contextlib.suppress(ValueError):
            self._held.remove(held)
        if held.sock is not None:
            held.sock.close()

    def release(self, owner: str) -> None:
        """Close every socket ``owner`` holds: its ports are free again."""
        for h in [h for h in self._held if h.owner == owner]:
            self._drop(h)

    def bindings(self, owner: str) -> list[Binding]:
        return [h.binding for h in self._held if h.owner == owner]

    def held(self, owner: str) -> list[tuple[Binding, socket.socket | None]]:
        """``owner``'s bindings and the sockets holding them (None: SCTP without sctp)."""
        return [(h.binding, h.sock) for h in self._held if h.owner == owner]

    def close(self) -> None:
        for h in list(self._held):
            self._drop(h)


def v6_listenable() -> bool:
    """Whether this network namespace has IPv6 (moby's ``IsV6Listenable``: ``[::1]`` listens)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
            s.listen(1)
    except OSError:
        return False
    return True


def proxy_target(binding: Binding, ipv4: str, ipv6: str) -> str:
    """The container address the userland proxy relays ``binding`` to ("": none).

    Docker's userland proxy serves every binding, but the DNAT of
    :mod:`bulkhead.network.firewall` takes every connection it can; the proxy
    serves what it cannot: an IPv6 host address of a container without IPv6
    address (to its IPv4 one: NAT cannot change the family), and ``[::1]``
    (IPv6 has no ``route_localnet``) of a binding ``::`` or ``::1``. A
    specific IPv4 host address, ``0.0.0.0`` (``127.0.0.1`` is DNATed), and
    SCTP are never proxied.
    """
    if binding.proto not in ("tcp", "udp") or _family(binding.host_ip) != socket.AF_INET6:
        return ""
    if not ipv6:
        return ipv4
    if ipaddress.ip_address(binding.host_ip) in (
        ipaddress.IPv6Address("::"),
        ipaddress.IPv6Address("::1"),
    ):
        return ipv6
    return ""


def _hostport(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# --- what the API shows ------------------------------------------------------------------


def exposed_keys(exposed: Iterable[str], port_bindings: Mapping[str, Any] | None) -> list[str]:
    """Every container port key of a container (exposed or published), ranges expanded."""
    keys: set[tuple[int, str]] = set()
    for key in [*exposed, *(port_bindings or {})]:
        try:
            lo, hi, proto = parse_key(key)
        except PortAllocationError:
            continue
        keys.update((p, proto) for p in range(lo, hi + 1))
    return [f"{p}/{proto}" for p, proto in sorted(keys, key=lambda k: (k[0], k[1]))]


def settings_ports(
    keys: Iterable[str], bindings: Iterable[Binding]
) -> dict[str, list[dict[str, str]] | None]:
    """``NetworkSettings.Ports``: ``{"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}], "443/tcp": null}``."""
    out: dict[str, list[dict[str, str]] | None] = {k: None for k in keys}
    for b in bindings:
        entries = out.get(b.key) or []
        entries.append({"HostIp": b.host_ip, "HostPort": str(b.host_port)})
        out[b.key] = entries
    return out


def summary_ports(keys: Iterable[str], bindings: Iterable[Binding]) -> list[dict[str, Any]]:
    """``GET /containers/json``'s ``Ports``: one entry per binding, one per unpublished port."""
    out: list[dict[str, Any]] = []
    published = set()
    for b in bindings:
        out.append(
            {
                "IP": b.host_ip,
                "PrivatePort": b.container_port,
                "PublicPort": b.host_port,
                "Type": b.proto,
            }
        )
        published.add(b.key)
    for k in keys:
        if k not in published:
            port, _, proto = k.partition("/")
            out.append({"PrivatePort": int(port), "Type": proto})
    return out
