"""The daemon's embedded DNS resolver for user-defined networks.

Vocabulary:

*listener*
    a UDP socket and a TCP socket on ``<gateway>:53`` of one user-defined
    network, in the daemon's network namespace, where the network's bridge
    carries that address. Containers on the network find it through
    Docker's ``nameserver 127.0.0.11`` in their resolv.conf, which a
    redirect in their namespace leads to the gateway of their first user
    network (:mod:`bulkhead.network.dnsredirect`; should it fail,
    ``nameserver <gateway>``). The default ``bridge`` network has none, as
    in Docker: its containers use the host's nameservers directly.
*record*
    what a container endpoint contributes (:class:`DnsEndpoint`): its name,
    its ``--network-alias`` aliases, its short id and hostname, and its
    addresses on that network. Names are matched case-insensitively, with or
    without the trailing dot, and also as ``<name>.<network name>``. A
    container's legacy ``--link name:alias`` makes ``alias`` resolve to
    ``name`` for that container alone (Docker's links on user networks).
*scope*
    the networks whose records a query may see: those of the container that
    sent it (found by its source address on the listener's network), none
    for any other client (the host, or a container of another network that
    sends its query to this gateway, an address of the host it can reach):
    its queries are forwarded, as on the listener's network. A container on
    another network is therefore NXDOMAIN (or whatever the upstreams say) —
    the isolation Docker gives, whose resolver no other container reaches.
*answers*
    A/AAAA with every address of the matching endpoints (shuffled, TTL 600
    as Docker's ``respTTL``); a name we know without an address of the asked
    family gets an empty NOERROR answer (NODATA), and so does MX of a name we
    know (a mail client then takes its address: RFC 5321's implicit MX); PTR
    of an address in scope gives ``<container name>.<network name>.``. Other
    types (TXT, SRV, ANY, ...) are forwarded whatever the name, as Docker's
    resolver does.
*upstreams*
    every other query is forwarded to the querying container's *external
    servers* (its ``--dns``, else the daemon's ``dns`` option, else the
    daemon's own resolv.conf nameservers, loopback ones included since the
    daemon shares the host's namespace), tried in order (at most three, as
    Docker's ``maxExtDNS``), each with a timeout. UDP queries go upstream over UDP, TCP ones over TCP; an
    upstream's truncated UDP answer (TC) is asked again of it over TCP when
    the client takes more than the upstream does (no EDNS there, or a
    smaller buffer), so that it gets the answer whole; else the truncated
    answer goes to the client, which retries over TCP (as Docker's).
    An upstream that answers SERVFAIL or REFUSED, does not answer in time or
    cannot be reached passes the query to the next one (Docker's resolver);
    a stray datagram (another id or question, or no DNS message) is not its
    answer and is ignored. When no upstream answers, or there is none, the
    answer is SERVFAIL; so it is for a container whose networks are all
    ``--internal`` (nothing leaves an internal network, as Docker's). A
    container whose resolv.conf sets its own ``ndots`` gets an empty answer
    for a single-label A/AAAA name that is none of ours, not forwarded (as
    Docker: its search domains are tried instead).
*where an upstream is asked*
    from the daemon's namespace, all but one kind: a loopback address of the
    container's own (its ``--dns 127.0.0.1``, where it or a ``--network
    container:`` sidecar runs a DNS server; not the host file's loopback
    servers, nor the daemon's ``dns`` option) is asked from a socket made in
    the container's network namespace (:attr:`DnsEndpoint.in_container`),
    as Docker's resolver asks its non-host-loopback servers from the
    container's namespace. Only the socket is made there, by a short-lived
    thread that enters the namespace and ends (:func:`socket_in`); the
    exchange runs on the event loop, and the socket is closed on every path.
    ``127.0.0.11`` is never an upstream: in a container it leads back here.
*truncation*
    an answer larger than the client's limit over UDP (512 bytes, or its
    EDNS payload size) keeps the records that fit and has TC set (miekg's
    ``Truncate``, as Docker): a client that retries over TCP gets it whole,
    one that does not (musl before 1.2.4) still gets addresses.
*malformed queries*
    a datagram too short for a DNS header, or a response, gets no answer; a
    header followed by anything that does not parse gets FORMERR (as
    Docker's miekg/dns server answers), as does a query with other than one
    question; another opcode gets NOTIMP.
*bounds*
    at most :data:`MAX_PER_CLIENT` UDP queries of one client in flight
    (Docker's bound, which is per container as its resolvers are) and
    :data:`MAX_CONCURRENT` in all; more are dropped (the client retries), so
    that a container whose queries hang on a dead upstream does not starve
    the others. At most :data:`MAX_TCP_CLIENTS` TCP connections
    (more are closed at once), each dropped after :data:`TCP_IDLE_TIMEOUT`
    seconds without a query, or when it does not read its answers.

Why listeners on the gateways: Docker runs a resolver socket *inside*
every container's namespace (and forwards from there); podman's
aardvark-dns listens on each network's gateway: one listener per network,
created with the network and living in the daemon's namespace, nothing per
container but a record. bulkhead listens as aardvark-dns does and keeps
Docker's 127.0.0.11 through the redirect. What differs from Docker:
queries for non-loopback upstreams leave from the daemon's namespace, not
the container's (the same servers, but an upstream sees the daemon's
address as the source, not the container's).

Threads: the listeners live on the daemon's event loop; the table of
records is guarded by a lock, since the engine changes it from worker
threads (:meth:`DnsServer.listen` and :meth:`DnsServer.stop` hand their
work to the loop and wait for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import random
import socket
import struct
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from bulkhead.errors import BulkheadError
from bulkhead.network.onloop import call_on_loop

log = logging.getLogger(__name__)

#: Docker's TTL for the names it answers.
TTL = 600
#: the query types we answer for our own names (PTR aside); others are forwarded
_OWN_TYPES = frozenset((dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.MX))
#: How many upstreams a query tries (Docker's ``maxExtDNS``).
MAX_UPSTREAMS = 3
#: Seconds an upstream has to answer.
UPSTREAM_TIMEOUT = 4.0
#: UDP queries of one client in flight at once (Docker's ``maxConcurrent``, per container).
MAX_PER_CLIENT = 1024
#: UDP queries in flight at once, all clients; more are dropped (the client retries).
MAX_CONCURRENT = 4096
#: Seconds a TCP client may stay idle between queries (or take to read an answer).
TCP_IDLE_TIMEOUT = 10.0
#: TCP connections at once; more are closed as soon as accepted.
MAX_TCP_CLIENTS = 256
DNS_PORT = 53

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
#: (address, port, namespace file to ask it in, or None: the daemon's)
Upstream = tuple[str, int, str | None]

#: Docker's resolver address: never an upstream (inside a container it leads back here).
RESOLVER_IP = ipaddress.ip_address("127.0.0.11")


class DnsError(BulkheadError):
    """A listener that cannot be opened (the address or port is taken)."""


@dataclass(frozen=True)
class DnsEndpoint:
    """A container's records on one network."""

    container_id: str
    name: str
    addresses: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    hostname: str = ""
    #: the external servers for this container's queries (``[ip|host][:port]``); None:
    #: the daemon's defaults; empty: none usable (its queries for other names fail)
    upstreams: tuple[str, ...] | None = None
    #: those of ``upstreams`` asked from inside the container's own network namespace
    #: (its own loopback servers, e.g. ``--dns 127.0.0.1``); the others are asked from
    #: the daemon's
    in_container: tuple[str, ...] = ()
    #: legacy ``--link name:alias``: (alias, name), resolved for this container only
    links: tuple[tuple[str, str], ...] = ()
    #: its resolv.conf has an ``ndots`` option of the host's or the user's (not only
    #: the resolver's ``ndots:0``): a single-label A/AAAA name that is none of ours is
    #: then answered empty rather than forwarded (Docker's ``NdotsSet``)
    ndots_set: bool = False

    def names(self) -> frozenset[str]:
        """The names it answers to, lowercase and without the trailing dot."""
        return self._names

    # computed once (a lookup looks at every endpoint of the networks in scope)
    @cached_property
    def _names(self) -> frozenset[str]:
        out = {self.name, self.container_id[:12], *self.aliases}
        if self.hostname:
            out.add(self.hostname)
        return frozenset(n.lower().rstrip(".") for n in out if n)

    @cached_property
    def ips(self) -> frozenset[Address]:
        """Its addresses, parsed."""
        out: set[Address] = set()
        for a in self.addresses:
            with contextlib.suppress(ValueError):
                out.add(_norm(a))
        return frozenset(out)


@dataclass
class _Network:
    name: str
    endpoints: dict[str, DnsEndpoint] = field(default_factory=dict)
    internal: bool = False


class DnsTable:
    """Every user network's records; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._networks: dict[str, _Network] = {}

    def set_network(self, network_id: str, name: str, internal: bool = False) -> None:
        with self._lock:
            net = self._networks.setdefault(network_id, _Network(name))
            net.name = name
            net.internal = internal

    def drop_network(self, network_id: str) -> None:
        with self._lock:
            self._networks.pop(network_id, None)

    def set_endpoint(self, network_id: str, network_name: str, ep: DnsEndpoint) -> None:
        """Add or replace the container's records on a network."""
        with self._lock:
            net = self._networks.setdefault(network_id, _Network(network_name))
            net.endpoints[ep.container_id] = ep

    def remove_endpoint(self, network_id: str, container_id: str) -> None:
        with self._lock:
            net = self._networks.get(network_id)
            if net is not None:
                net.endpoints.pop(container_id, None)

    def remove_container(self, container_id: str) -> None:
        with self._lock:
            for net in self._networks.values():
                net.endpoints.pop(container_id, None)

    # -- lookups (the listener's side) ----------------------------------------------

    def _client(self, network_id: str, client: str) -> DnsEndpoint | None:
        net = self._networks.get(network_id)
        if net is None:
            return None
        try:
            addr = _norm(client)
        except ValueError:
            return None
        for ep in net.endpoints.values():
            if addr in ep.ips:
                return ep
        return None

    def _scope(self, network_id: str, client: str) -> list[_Network]:
        """The networks the querying container is on; none for a client that is no
        container on the listener's network (a gateway is an address of the host, which
        a container of another network reaches too: it must not learn this one's names)."""
        me = self._client(network_id, client)
        if me is None:
            return []
        return [n for n in self._networks.values() if me.container_id in n.endpoints]

    def lookup(self, network_id: str, client: str, qname: str) -> list[str] | None:
        """The addresses of ``qname`` as seen by ``client``; None when no record matches."""
        name = qname.lower().rstrip(".")
        with self._lock:
            scope = self._scope(network_id, client)
            me = self._client(network_id, client)
            # the client's links on every network in scope (its run --link, and each
            # network's connect --link), whichever listener it asked
            links = {
                a.lower(): n.lower()
                for net in scope
                for mine in [net.endpoints.get(me.container_id) if me else None]
                for a, n in (mine.links if mine else ())
            }
            found: list[str] | None = None
            for net in scope:
                suffix = "." + net.name.lower()
                names = [name]
                if name.endswith(suffix):
                    names.append(name[: -len(suffix)])  # <name>.<network>
                # a link's alias stands for the linked container's name (Docker's aliases)
                candidates = names + [links[n] for n in names if n in links]
                for ep in net.endpoints.values():
                    if any(c in ep.names() for c in candidates):
                        found = found if found is not None else []
                        found.extend(a for a in ep.addresses if a not in found)
            return found

    def reverse(self, network_id: str, client: str, address: str) -> str | None:
        """``<container name>.<network name>`` of an address in scope, or None."""
        try:
            want = _norm(address)
        except ValueError:
            return None
        with self._lock:
            for net in self._scope(network_id, client):
                for ep in net.endpoints.values():
                    if want in ep.ips:
                        return f"{ep.name}.{net.name}"
        return None

    def may_forward(self, network_id: str, client: str) -> bool:
        """Queries are forwarded only for a client with a way out: one on at least
        one network that is not ``--internal`` (Docker's resolver without proxyDNS);
        any other client, unless the listener's network is internal."""
        with self._lock:
            scope = self._scope(network_id, client)
            if not scope:
                net = self._networks.get(network_id)
                scope = [net] if net is not None else []
            return not scope or any(not n.internal for n in scope)

    def ndots_set(self, network_id: str, client: str) -> bool:
        with self._lock:
            me = self._client(network_id, client)
            return me is not None and me.ndots_set

    def upstreams(self, network_id: str, client: str) -> tuple[str, ...] | None:
        """The querying container's external servers (None: not a container)."""
        with self._lock:
            me = self._client(network_id, client)
            return None if me is None else me.upstreams

    def asker(self, network_id: str, client: str) -> DnsEndpoint | None:
        """The querying container's record on the listener's network (None: not a container)."""
        with self._lock:
            return self._client(network_id, client)


def _norm(addr: str) -> Address:
    return ipaddress.ip_address(addr.partition("%")[0])


def parse_upstream(spec: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``fd00::1``, ``[fd00::1]:5353`` → (address, port)."""
    spec = spec.strip()
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") else DNS_PORT
    elif spec.count(":") == 1:
        host, _, p = spec.partition(":")
        port = int(p)
    else:
        host, port = spec, DNS_PORT
    ipaddress.ip_address(host.partition("%")[0])
    return host, port


# --- answering ---------------------------------------------------------------------------


def _max_udp_size(query: dns.message.Message) -> int:
    if query.edns >= 0 and query.payload:
        return max(512, min(int(query.payload), 65535))
    return 512


def _wire(response: dns.message.Message, limit: int | None) -> bytes:
    """``response`` as bytes within ``limit`` (UDP; None: TCP's 65535): whole, else its
    first answer records that fit, with TC set (miekg's ``Msg.Truncate``, which Docker uses)."""
    size = limit or 65535
    try:
        return response.to_wire(max_size=size)
    except dns.exception.TooBig:
        pass
    records = [(rrset, rd) for rrset in response.answer for rd in rrset]
    lo, hi = 0, len(records)  # the most answer records that fit: in [lo, hi]
    best = _truncated(response, []).to_wire(max_size=size)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            best = _truncated(response, records[:mid]).to_wire(max_size=size)
            lo = mid
        except dns.exception.TooBig:
            hi = mid - 1
    return best


def _truncated(
    response: dns.message.Message, records: list[tuple[dns.rrset.RRset, Any]]
) -> dns.message.Message:
    """``response`` with TC set, ``records`` as its answer and no other section."""
    r = dns.message.Message(id=response.id)
    r.flags = response.flags | dns.flags.TC
    if response.edns >= 0:
        r.use_edns(
            response.edns, response.ednsflags, response.payload, options=list(response.options)
        )
    r.set_rcode(response.rcode())
    r.question = list(response.question)
    for rrset, rd in records:
        r.find_rrset(
            r.answer, rrset.name, rrset.rdclass, rrset.rdtype, rrset.covers, create=True
        ).add(rd, rrset.ttl)
    return r


def _formerr(data: bytes) -> bytes | None:
    """FORMERR for a query whose header reads but whose body does not (miekg/dns's
    server answers so); None when there is no header, or it is a response's."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack("!HH", data[:4])
    if flags & dns.flags.QR:
        return None
    r = dns.message.Message(id=qid)
    r.flags = dns.flags.QR | (flags & dns.flags.RD)
    r.set_rcode(dns.rcode.FORMERR)
    return r.to_wire()


class DnsServer:
    """The listeners of every user network, answering from a :class:`DnsTable`.

    ``default_upstreams`` gives the external servers of a client that is no
    container we know (e.g. the host asking the gateway); containers carry
    their own in their records. ``port`` is 53 but for tests (0: any free port,
    the same for UDP and TCP). ``netns_path(container_id)`` is the path of a
    container's network namespace file, where its own-loopback upstreams are
    asked (:attr:`DnsEndpoint.in_container`; None: they are not asked at all).
    """

    def __init__(
        self,
        table: DnsTable,
        default_upstreams: Callable[[], Sequence[str]] | Sequence[str] = (),
        *,
        port: int = DNS_PORT,
        upstream_timeout: float = UPSTREAM_TIMEOUT,
        netns_path: Callable[[str], str] | None = None,
    ) -> None:
        self.table = table
        self._default_upstreams = default_upstreams
        self.netns_path = netns_path
        #: ``socket_in(ns_path, family, type)``: a non-blocking socket made in that
        #: network namespace (:func:`socket_in`; tests may count the calls)
        self.socket_in: Callable[[str, int, int], socket.socket] = socket_in
        self.port = port
        self.upstream_timeout = upstream_timeout
        self.tcp_idle_timeout = TCP_IDLE_TIMEOUT
        self.max_concurrent = MAX_CONCURRENT
        self.max_per_client = MAX_PER_CLIENT
        self.max_tcp_clients = MAX_TCP_CLIENTS
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: dict[str, list[socket.socket]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._inflight = 0  # UDP queries being answered
        self._inflight_of: dict[str, int] = {}  # the same, by client address
        self._tcp_clients = 0

    # -- lifecycle ------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Bind the server to the daemon's event loop (call from the loop)."""
        self._loop = loop or asyncio.get_running_loop()

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        return call_on_loop(self._loop, fn, what="the DNS server", timeout=30)

    def listening(self, network_id: str) -> list[tuple[str, int, str]]:
        """(address, port, "udp"|"tcp") of a network's listeners."""
        out = []
        for s in self._listeners.get(network_id, []):
            host, port = s.getsockname()[:2]
            out.append((host, port, "udp" if s.type == socket.SOCK_DGRAM else "tcp"))
        return out

    def listen(
        self,
        network_id: str,
        network_name: str,
        addresses: Iterable[str],
        *,
        internal: bool = False,
    ) -> None:
        """Open the network's listeners on ``addresses`` (its gateways); replaces old ones.
        On an ``internal`` network nothing is forwarded upstream."""
        self.table.set_network(network_id, network_name, internal)
        addresses = [a for a in addresses if a]
        have = {_norm(h) for h, _, _ in self.listening(network_id)}
        if have and have == {_norm(a) for a in addresses}:
            return  # already there (the bridge was only made again)
        if have:
            self._on_loop(lambda: self._close(network_id))
        socks: list[socket.socket] = []
        try:
            for addr in addresses:
                socks.extend(self._open(addr))
        except BaseException:
            for s in socks:
                s.close()
            raise
        self._on_loop(lambda: self._serve(network_id, socks))

    def stop(self, network_id: str, *, forget: bool = True) -> None:
        """Close a network's listeners (and drop its records unless ``forget`` is False)."""
        if forget:
            self.table.drop_network(network_id)
        if self._loop is not None and not self._loop.is_closed():
            self._on_loop(lambda: self._close(network_id))
        else:
            for s in self._listeners.pop(network_id, []):
                s.close()

    def close(self) -> None:
        """Close every listener (daemon stop); records stay."""
        for network_id in list(self._listeners):
            self.stop(network_id, forget=False)
        for task in list(self._tasks):
            task.cancel()

    def _open(self, addr: str) -> list[socket.socket]:
        ip = _norm(addr)
        family = socket.AF_INET if ip.version == 4 else socket.AF_INET6
        out: list[socket.socket] = []
        port = self.port
        try:
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                s = socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
                out.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                # the gateway may not be on the bridge yet (or the bridge is re-made)
                if family == socket.AF_INET:
                    s.setsockopt(socket.IPPROTO_IP, 15, 1)  # IP_FREEBIND
                else:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                    s.setsockopt(socket.IPPROTO_IPV6, 78, 1)  # IPV6_FREEBIND
                s.bind((str(ip), port))
                port = s.getsockname()[1]  # port 0 (tests): TCP takes UDP's
                if kind == socket.SOCK_STREAM:
                    s.listen(128)
        except OSError as e:
            for s in out:
                s.close()
            what = "in use" if e.errno == errno.EADDRINUSE else e.strerror
            raise DnsError(f"cannot listen for DNS on {addr}:{port}: {what}") from e
        return out

    def _serve(self, network_id: str, socks: list[socket.socket]) -> None:
        assert self._loop is not None
        self._close(network_id)
        self._listeners[network_id] = socks
        for s in socks:
            if s.type == socket.SOCK_DGRAM:
                self._loop.add_reader(s.fileno(), self._on_udp, network_id, s)
            else:
                self._loop.add_reader(s.fileno(), self._on_accept, network_id, s)

    def _close(self, network_id: str) -> None:
        assert self._loop is not None
        for s in self._listeners.pop(network_id, []):
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(s.fileno())
            s.close()

    def _spawn(self, coro: Any, done: Callable[[], None] | None = None) -> None:
        """Run ``coro`` as a task of ours; ``done`` when it ends, even cancelled unstarted."""
        assert self._loop is not None
        task = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        if done is not None:
            task.add_done_callback(lambda _: done())

    # -- UDP ------------------------------------------------------------------------

    def _on_udp(self, network_id: str, sock: socket.socket) -> None:
        for _ in range(64):  # a burst, then let the loop breathe
            try:
                data, peer = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            # counted here, not when the task starts: a burst cannot overshoot
            client = peer[0]
            mine = self._inflight_of.get(client, 0)
            if self._inflight >= self.max_concurrent or mine >= self.max_per_client:
                continue
            self._inflight += 1
            self._inflight_of[client] = mine + 1
            self._spawn(
                self._udp_query(network_id, sock, data, peer), partial(self._udp_done, client)
            )

    def _udp_done(self, client: str) -> None:
        self._inflight -= 1
        left = self._inflight_of.pop(client) - 1
        if left:
            self._inflight_of[client] = left

    async def _udp_query(
        self, network_id: str, sock: socket.socket, data: bytes, peer: Any
    ) -> None:
        try:
            out = await self.answer(network_id, peer[0], data, tcp=False)
            if out is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(out, peer)
        except Exception:  # pragma: no cover - never let a query kill the listener
            log.exception("DNS query from %s", peer[0])

    # -- TCP ------------------------------------------------------------------------

    def _on_accept(self, network_id: str, sock: socket.socket) -> None:
        try:
            conn, peer = sock.accept()
        except OSError:
            return
        if self._tcp_clients >= self.max_tcp_clients:
            conn.close()
            return
        conn.setblocking(False)
        self._tcp_clients += 1
        self._spawn(self._tcp_client(network_id, conn, peer), partial(self._tcp_done, conn))

    def _tcp_done(self, conn: socket.socket) -> None:
        self._tcp_clients -= 1
        conn.close()  # already, unless the task was cancelled before it started

    async def _tcp_client(self, network_id: str, conn: socket.socket, peer: Any) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=conn)
        except OSError:
            conn.close()
            return
        idle = self.tcp_idle_timeout
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), idle)
                    (size,) = struct.unpack("!H", head)
                    data = await asyncio.wait_for(reader.readexactly(size), idle)
                except (TimeoutError, asyncio.IncompleteReadError, OSError):
                    return
                out = await self.answer(network_id, peer[0], data, tcp=True)
                if out is None:
                    return  # no DNS header, or a response: drop the connection
                writer.write(struct.pack("!H", len(out)) + out)
                try:  # a client that does not read its answers is dropped
                    await asyncio.wait_for(writer.drain(), idle)
                except (TimeoutError, OSError):
                    writer.transport.abort()  # close() would wait for it to read them
                    return
        except Exception:  # pragma: no cover
            log.exception("DNS over TCP from %s", peer[0])
        finally:
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), idle)
            except Exception:
                writer.transport.abort()
            except asyncio.CancelledError:
                writer.transport.abort()
                raise

    # -- the answer -----------------------------------------------------------------

    async def answer(self, network_id: str, client: str, data: bytes, *, tcp: bool) -> bytes | None:
        """The reply to one query (wire format), or None to ignore it (no header, a response)."""
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return _formerr(data)
        if query.flags & dns.flags.QR:
            return None  # a response sent to us: not a query
        limit = None if tcp else _max_udp_size(query)
        if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
            r = dns.message.make_response(query)
            r.set_rcode(
                dns.rcode.NOTIMP if query.opcode() != dns.opcode.QUERY else dns.rcode.FORMERR
            )
            return _wire(r, limit)
        q = query.question[0]
        local = self._local(network_id, client, query, q)
        if local is not None:
            log.debug("%s asks %s: %s", client, q.name, dns.rcode.to_text(local.rcode()))
            return _wire(local, limit)
        if (
            q.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
            and len(q.name.labels) <= 2  # one label and the root
            and self.table.ndots_set(network_id, client)
        ):
            # Docker: with the user's ndots the client tries its search domains; a bare
            # single-label name is not sent out (NOERROR, no answer)
            r = dns.message.make_response(query)
            r.flags |= dns.flags.RA
            return _wire(r, limit)
        reply = await self._forward(network_id, client, query, limit)
        log.debug("%s asks %s: forwarded, %s", client, q.name, dns.rcode.to_text(reply.rcode()))
        return _wire(reply, limit)

    def _local(
        self, network_id: str, client: str, query: dns.message.Message, q: dns.rrset.RRset
    ) -> dns.message.Message | None:
        """Our own answer, or None when the name is none of ours."""
        if q.rdclass != dns.rdataclass.IN:
            return None
        text = q.name.to_text(omit_final_dot=True)
        if q.rdtype == dns.rdatatype.PTR:
            try:
                addr = dns.reversename.to_address(q.name)
            except Exception:
                return None
            target = self.table.reverse(network_id, client, addr)
            if target is None:
                return None
            r = dns.message.make_response(query)
            r.flags |= dns.flags.AA | dns.flags.RA
            r.answer.append(dns.rrset.from_text(q.name, TTL, "IN", "PTR", target + "."))
            return r
        if q.rdtype not in _OWN_TYPES:
            return None  # TXT, SRV, ANY...: forwarded, even for our names (Docker's)
        found = self.table.lookup(network_id, client, text)
        if found is None:
            return None
        r = dns.message.make_response(query)
        r.flags |= dns.flags.AA | dns.flags.RA
        version = {dns.rdatatype.A: 4, dns.rdatatype.AAAA: 6}.get(q.rdtype)
        if version is not None:
            addrs = [a for a in found if _norm(a).version == version]
            random.shuffle(addrs)
            if addrs:
                kind = "A" if version == 4 else "AAAA"
                r.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", kind, addrs))
        return r  # a name of ours without that type: NOERROR, no answer (NODATA)

    def _upstreams_for(self, network_id: str, client: str) -> list[Upstream]:
        """The upstreams to try for ``client``, in order: each with the namespace file it is
        asked in (None: the daemon's own, the ones the client's record does not mark)."""
        me = self.table.asker(network_id, client)
        if me is None or me.upstreams is None:
            d = self._default_upstreams
            mine = tuple(d() if callable(d) else d)
        else:
            mine = me.upstreams
        inside = set(me.in_container) if me is not None else set()
        own = {
            (_norm(h), p)
            for socks in self._listeners.values()
            for s in socks
            for h, p in [s.getsockname()[:2]]
        }
        out: list[Upstream] = []
        for spec in mine:
            try:
                host, port = parse_upstream(spec)
            except ValueError:
                continue
            netns: str | None = None
            if spec in inside:
                assert me is not None
                if self.netns_path is None or _norm(host) == RESOLVER_IP:
                    continue  # 127.0.0.11 in there leads back here: never an upstream
                netns = self.netns_path(me.container_id)
            elif (_norm(host), port) in own:
                continue  # never ourselves
            if (host, port, netns) not in out:
                out.append((host, port, netns))
        return out[:MAX_UPSTREAMS]

    async def _forward(
        self, network_id: str, client: str, query: dns.message.Message, limit: int | None
    ) -> dns.message.Message:
        """The first upstream's good answer (``limit``: the UDP client's, None over TCP)."""
        upstreams = self._upstreams_for(network_id, client)
        if not self.table.may_forward(network_id, client):
            upstreams = []
        for host, port, netns in upstreams:
            reply = await self._exchange(query, host, port, limit, netns)
            if reply is None:
                continue
            if reply.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                log.debug("upstream %s:%d: %s", host, port, dns.rcode.to_text(reply.rcode()))
                continue  # Docker's resolver: maybe the next one knows
            return reply
        r = dns.message.make_response(query)
        r.flags |= dns.flags.RA
        r.set_rcode(dns.rcode.SERVFAIL)
        return r

    async def _exchange(
        self,
        query: dns.message.Message,
        host: str,
        port: int,
        limit: int | None,
        netns: str | None = None,
    ) -> dns.message.Message | None:
        """One upstream's answer, or None (no answer in time, unreachable, not DNS). Over
        TCP when the client asked so (``limit`` None); over UDP else, and again over TCP
        when the upstream truncated its answer to less than the client takes. ``netns``:
        asked from a socket made in that network namespace (a container's own loopback)."""
        import dns.asyncquery

        timeout = self.upstream_timeout
        where = f"{host}:{port}" + (f" in {netns}" if netns else "")

        async def tcp() -> dns.message.Message:
            if netns is None:
                return await dns.asyncquery.tcp(query, host, timeout=timeout, port=port)
            return await self._exchange_in(netns, query, host, port, timeout, tcp=True)

        try:
            if limit is None:
                return await tcp()
            if netns is None:
                # ignore_*: a datagram from elsewhere, or with another id or question, or
                # that does not parse is not the answer (RFC 5452): wait for the real one
                reply = await dns.asyncquery.udp(
                    query,
                    host,
                    timeout=timeout,
                    port=port,
                    ignore_unexpected=True,
                    ignore_errors=True,
                )
            else:
                reply = await self._exchange_in(netns, query, host, port, timeout, tcp=False)
        except (dns.exception.DNSException, OSError, EOFError) as e:
            log.debug("upstream %s failed: %s", where, e)
            return None
        if not reply.flags & dns.flags.TC or limit <= _max_udp_size(reply):
            return reply  # whole, or truncated as the client would be: it retries over TCP
        try:  # truncated below the client's limit: the whole answer over TCP
            return await tcp()
        except (dns.exception.DNSException, OSError, EOFError) as e:
            log.debug("upstream %s over TCP failed: %s", where, e)
            return reply  # the truncated one: the client may retry over TCP itself

    async def _exchange_in(
        self,
        netns: str,
        query: dns.message.Message,
        host: str,
        port: int,
        timeout: float,
        *,
        tcp: bool,
    ) -> dns.message.Message:
        """Ask ``host:port`` from a socket made in the namespace at ``netns`` (Docker's
        resolver asks so from the container's namespace). Only the socket is made there,
        by a short-lived thread (:func:`socket_in`); the exchange runs on the loop, and
        the socket is closed on every path (answer, timeout, error, cancellation).
        Raises ``OSError`` (``TimeoutError`` too), ``EOFError`` or a DNS error."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if _norm(host).version == 6 else socket.AF_INET
        sock = self.socket_in(netns, family, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        wire = query.to_wire()
        try:
            async with asyncio.timeout(timeout):
                await loop.sock_connect(sock, (host, port))
                if tcp:
                    await loop.sock_sendall(sock, struct.pack("!H", len(wire)) + wire)
                    (size,) = struct.unpack("!H", await _recv_exactly(loop, sock, 2))
                    reply = dns.message.from_wire(await _recv_exactly(loop, sock, size))
                    if not query.is_response(reply):
                        raise EOFError("the upstream's answer is to another query")
                    return reply
                await loop.sock_sendall(sock, wire)
                while True:  # a connected socket: datagrams of that peer only
                    data = await loop.sock_recv(sock, 65535)
                    try:
                        reply = dns.message.from_wire(data)
                    except Exception:
                        continue  # not DNS: not the answer (as ignore_errors above)
                    if query.is_response(reply):
                        return reply
        finally:
            sock.close()


def socket_in(ns_path: str, family: int, kind: int) -> socket.socket:
    """A non-blocking socket made inside the network namespace at ``ns_path``: a
    short-lived thread enters the namespace, makes the socket and ends
    (:func:`bulkhead.network.netns.run_in`), so that no thread of the daemon stays in a
    container's namespace; the socket keeps its namespace for its life. Tiny work
    (a thread, ``setns``, ``socket``): done on the event loop."""
    from bulkhead.network import netns

    return netns.run_in(
        ns_path, lambda: socket.socket(family, kind | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    )


async def _recv_exactly(loop: asyncio.AbstractEventLoop, sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await loop.sock_recv(sock, n - len(buf))
        if not chunk:
            raise EOFError("the upstream closed the connection")
        buf += chunk
    return buf
