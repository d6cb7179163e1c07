"""The embedded DNS resolver (bulkhead.network.dns) against a table of fake records.

Listeners on loopback addresses of the test process (127.0.0.1 for network
"front", 127.0.0.2 for "back"), clients sending from the loopback address
their container has (127.0.1.x), and a fake upstream resolver on
127.0.0.3:<port> in this process: no query ever leaves the machine.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.reversename
import dns.rrset
import pytest

from bulkhead.network import netns as netns_mod
from bulkhead.network.dns import TTL, DnsEndpoint, DnsError, DnsServer, DnsTable, parse_upstream

FRONT, BACK = "f" * 64, "b" * 64
WEB = "a" * 64
DB = "d" * 64
BOTH = "c" * 64
UPSTREAM = "127.0.0.3"
WEB_SRC = ("127.0.1.1", 0)  # a client socket with web's address


class FakeUpstream:
    """An "outside" resolver: outside.test has an address, big.test many; else NXDOMAIN.
    It speaks no EDNS: a UDP answer over 512 bytes goes out empty with TC.

    ``rcode``: answer every query so instead; ``silent``: answer nothing over UDP (a
    blackholed server); ``stray``: send a wrong answer (another id, then junk) first."""

    def __init__(
        self,
        rcode: dns.rcode.Rcode | None = None,
        silent: bool = False,
        stray: bool = False,
        outside: str = "192.0.2.7",
    ) -> None:
        self.queries: list[tuple[str, str]] = []  # (transport, name)
        self.port = 0
        self.outside = outside  # outside.test's address
        self.rcode, self.silent, self.stray = rcode, silent, stray
        self.held: list[tuple[Any, bytes, Any]] = []  # what a silent one did not answer

    def release(self) -> None:
        """A silent one answers what it holds, at last, and all that comes later."""
        self.silent = False
        for transport, data, addr in self.held:
            transport.sendto(self.reply(data, "udp"), addr)
        self.held.clear()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def reply(self, data: bytes, transport: str) -> bytes:
        q = dns.message.from_wire(data)
        name = q.question[0].name.to_text()
        self.queries.append((transport, name))
        r = dns.message.make_response(q)
        r.use_edns(False)  # no EDNS here: no OPT in its answers
        if self.rcode is not None:
            r.set_rcode(self.rcode)
        elif name == "outside.test.":
            r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", self.outside))
        elif name == "big.test.":
            addrs = [f"192.0.2.{i}" for i in range(1, 80)]
            r.answer.append(dns.rrset.from_text_list(name, 30, "IN", "A", addrs))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        wire = r.to_wire()
        if transport == "udp" and len(wire) > 512:
            r.answer.clear()
            r.flags |= dns.flags.TC
            wire = r.to_wire()
        return wire

    async def start(self, *, port: int = 0, netns: str | None = None) -> None:
        """Listen on UPSTREAM:``port`` (0: any free one), in the namespace file ``netns``
        (None: the test's own)."""
        loop = asyncio.get_running_loop()
        up = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                if up.silent:
                    up.queries.append(("udp", "?"))
                    up.held.append((self.t, data, addr))
                    return
                out = up.reply(data, "udp")
                if up.stray:  # another query's answer, then no DNS at all, then the answer
                    other = dns.message.from_wire(out)
                    other.id ^= 1
                    self.t.sendto(other.to_wire(), addr)
                    self.t.sendto(b"\xff" * 7, addr)
                self.t.sendto(out, addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            size = int.from_bytes(await reader.readexactly(2), "big")
            out = up.reply(await reader.readexactly(size), "tcp")
            writer.write(len(out).to_bytes(2, "big") + out)
            await writer.drain()
            writer.close()

        if netns is None:
            self._tcp = await asyncio.start_server(tcp, UPSTREAM, port)
            self.port = self._tcp.sockets[0].getsockname()[1]
            self._udp, _ = await loop.create_datagram_endpoint(
                Proto, local_addr=(UPSTREAM, self.port)
            )
            return

        def bound() -> tuple[socket.socket, socket.socket]:
            t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            t.bind((UPSTREAM, port))
            t.listen(16)
            u.bind((UPSTREAM, t.getsockname()[1]))
            return t, u

        t, u = netns_mod.run_in(netns, bound)
        self.port = t.getsockname()[1]
        self._tcp = await asyncio.start_server(tcp, sock=t)
        self._udp, _ = await loop.create_datagram_endpoint(Proto, sock=u)

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()


def ep(cid: str, name: str, ip: str, **kw: Any) -> DnsEndpoint:
    return DnsEndpoint(container_id=cid, name=name, addresses=(ip,), **kw)


class Env:
    def __init__(self, server: DnsServer, upstream: FakeUpstream) -> None:
        self.server, self.table, self.upstream = server, server.table, upstream
        self.port = server.listening(FRONT)[0][1]

    async def ask(
        self,
        name: str,
        rdtype: str = "A",
        *,
        net: str = "127.0.0.1",
        src: str = "127.0.1.1",
        tcp: bool = False,
    ) -> dns.message.Message:
        q = dns.message.make_query(name, rdtype)
        if tcp:
            return await dns.asyncquery.tcp(q, net, timeout=5, port=self.port, source=src)
        return await dns.asyncquery.udp(q, net, timeout=5, port=self.port, source=src)


def addrs(r: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


async def udp_wire(q: dns.message.Message, port: int, net: str = "127.0.0.1") -> bytes:
    """The raw answer to ``q`` over UDP (to see its size)."""
    loop = asyncio.get_running_loop()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    try:
        s.bind(WEB_SRC)  # the resolver answers containers: web's address
        s.connect((net, port))
        s.send(q.to_wire())
        return await asyncio.wait_for(loop.sock_recv(s, 65535), 5)
    finally:
        s.close()


def tcp_frame(q: dns.message.Message) -> bytes:
    wire = q.to_wire()
    return len(wire).to_bytes(2, "big") + wire


async def read_tcp(reader: asyncio.StreamReader) -> dns.message.Message:
    size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 5), "big")
    return dns.message.from_wire(await asyncio.wait_for(reader.readexactly(size), 5))


def run(
    body: Callable[[Env], Awaitable[None]],
    upstreams: tuple[str, ...] = (),
    *,
    others: tuple[FakeUpstream, ...] = (),
) -> None:
    """``body`` against the two networks' listeners; the default upstreams: ``upstreams``,
    else those of ``others`` (started here) then the well-behaved fake."""

    async def main() -> None:
        upstream = FakeUpstream()
        await upstream.start()
        for o in others:
            await o.start()
        table = DnsTable()
        default = (*(f"{UPSTREAM}:{o.port}" for o in others), f"{UPSTREAM}:{upstream.port}")
        server = DnsServer(table, upstreams or default, port=0, upstream_timeout=1)
        server.attach()
        try:
            for _ in range(20):  # a free port on both addresses, UDP and TCP
                server.port = 0
                with contextlib.suppress(DnsError):
                    server.listen(FRONT, "front", ["127.0.0.1"])
                    server.port = server.listening(FRONT)[0][1]
                    server.listen(BACK, "back", ["127.0.0.2"])
                    break
                server.stop(FRONT)
            else:
                raise AssertionError("no port free on 127.0.0.1 and 127.0.0.2")
            table.set_endpoint(
                FRONT,
                "front",
                ep(WEB, "web", "127.0.1.1", aliases=("www", "app"), hostname="webhost"),
            )
            table.set_endpoint(BACK, "back", ep(DB, "db", "127.0.2.1", aliases=("app",)))
            table.set_endpoint(FRONT, "front", ep(BOTH, "both", "127.0.1.9"))
            table.set_endpoint(BACK, "back", ep(BOTH, "both", "127.0.2.9"))
            await body(Env(server, upstream))
        finally:
            server.close()
            upstream.close()
            for o in others:
                o.close()

    asyncio.run(asyncio.wait_for(main(), 60))


def test_names_aliases_short_id_hostname_case_and_network_suffix() -> None:
    async def body(env: Env) -> None:
        for name in ("web", "WEB.", "www", "webhost", WEB[:12], "web.front", "Web.Front."):
            r = await env.ask(name)
            assert r.rcode() == dns.rcode.NOERROR and addrs(r) == ["127.0.1.1"], name
            assert r.answer[0].ttl == TTL == 600
            assert r.flags & dns.flags.AA
        r = await env.ask("web", "AAAA")  # known, no IPv6: NODATA
        assert r.rcode() == dns.rcode.NOERROR and r.answer == []
        assert env.upstream.queries == []  # all answered locally

    run(body)


def test_isolation_by_network() -> None:
    async def body(env: Env) -> None:
        r = await env.ask("db")  # web is on front only: db is not its to see
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert env.upstream.queries == [("udp", "db.")]  # forwarded, as any unknown name
        r = await env.ask("app")  # the alias on front is web's only
        assert addrs(r) == ["127.0.1.1"]
        # a link alias resolves for the linking container only
        env.table.set_endpoint(
            FRONT, "front", ep(BOTH, "both", "127.0.1.9", links=(("database", "db"),))
        )
        assert addrs(await env.ask("database", src="127.0.1.9")) == ["127.0.2.1"]
        assert addrs(await env.ask("Database.back.", src="127.0.1.9")) == ["127.0.2.1"]
        r = await env.ask("database.front", src="127.0.1.9")  # db is not on front
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert (await env.ask("database")).rcode() == dns.rcode.NXDOMAIN
        r = await env.ask("db", net="127.0.0.2", src="127.0.2.1")
        assert addrs(r) == ["127.0.2.1"]
        r = await env.ask("web", net="127.0.0.2", src="127.0.2.1")
        assert r.rcode() == dns.rcode.NXDOMAIN
        # a container on both networks sees both, whichever listener it asks
        r = await env.ask("db", src="127.0.1.9")
        assert addrs(r) == ["127.0.2.1"]
        r = await env.ask("app", src="127.0.1.9")
        assert addrs(r) == ["127.0.1.1", "127.0.2.1"]
        r = await env.ask("db.front", src="127.0.1.9")  # db is not on front
        assert r.rcode() == dns.rcode.NXDOMAIN
        # a client that is no container on the listener's network (the host, or a
        # container of another network asking this gateway) sees no records at all:
        # its queries go upstream
        before = len(env.upstream.queries)
        for name in ("web", "db"):
            assert (await env.ask(name, src="127.0.0.1")).rcode() == dns.rcode.NXDOMAIN
            r = await env.ask(name, src="127.0.2.1")  # db, on back, asking front's listener
            assert r.rcode() == dns.rcode.NXDOMAIN
        ptr = dns.reversename.from_address("127.0.1.1").to_text()
        assert (await env.ask(ptr, "PTR", src="127.0.2.1")).rcode() == dns.rcode.NXDOMAIN
        assert len(env.upstream.queries) == before + 5
        assert addrs(await env.ask("outside.test", src="127.0.0.1")) == ["192.0.2.7"]

    run(body)


def test_ptr_for_addresses_in_scope() -> None:
    async def body(env: Env) -> None:
        r = await env.ask(dns.reversename.from_address("127.0.1.1").to_text(), "PTR")
        assert addrs(r) == ["web.front."]
        r = await env.ask(dns.reversename.from_address("127.0.2.1").to_text(), "PTR")
        assert r.rcode() == dns.rcode.NXDOMAIN  # db's address, not in web's scope
        r = await env.ask(
            dns.reversename.from_address("127.0.2.1").to_text(), "PTR", src="127.0.1.9"
        )
        assert addrs(r) == ["db.back."]

    run(body)


def test_forwarding_and_container_upstreams() -> None:
    async def body(env: Env) -> None:
        r = await env.ask("outside.test")
        assert addrs(r) == ["192.0.2.7"]
        r = await env.ask("outside.test", tcp=True)
        assert addrs(r) == ["192.0.2.7"]
        assert env.upstream.queries == [("udp", "outside.test."), ("tcp", "outside.test.")]
        # a container whose --dns is an unreachable server: its upstream, not the default
        env.table.set_endpoint(
            FRONT, "front", ep(WEB, "web", "127.0.1.1", upstreams=("127.0.0.4:9",))
        )
        r = await env.ask("outside.test")
        assert r.rcode() == dns.rcode.SERVFAIL
        assert len(env.upstream.queries) == 2
        # its upstream list may name the resolver itself: never forwarded to ourselves
        env.table.set_endpoint(
            FRONT, "front", ep(WEB, "web", "127.0.1.1", upstreams=(f"127.0.0.1:{env.port}",))
        )
        assert (await env.ask("outside.test")).rcode() == dns.rcode.SERVFAIL

    run(body)


def _fresh_netns() -> int:
    """A new, empty network namespace (``lo`` up), held by an fd of this process: its
    path is ``/proc/self/fd/<fd>`` (no mount, gone when the fd and its sockets are)."""

    def make() -> int:
        from pyroute2 import IPRoute

        with IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
        return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)

    return netns_mod.run_in(None, make)


def _run_then_close(
    body: Callable[[Env], Awaitable[None]], upstream: FakeUpstream, fd: int
) -> None:
    """:func:`run` ``body``; then close ``upstream`` (in the namespace) and the namespace's fd."""

    async def closing(env: Env) -> None:
        try:
            await body(env)
        finally:
            upstream.close()

    try:
        run(closing)
    finally:
        os.close(fd)


def test_own_loopback_upstreams_are_asked_inside_the_containers_namespace() -> None:
    """A container's own-loopback upstream (``--dns 127.0.0.1``) is asked from a socket
    made in its network namespace, over UDP and TCP (a truncated answer again over TCP
    there); the same address in the daemon's namespace is not asked; 127.0.0.11 never
    (in a container it leads back to the resolver)."""
    fd = _fresh_netns()
    path = f"/proc/self/fd/{fd}"
    mine = FakeUpstream(outside="192.0.2.99")  # the container's own, on its loopback

    async def body(env: Env) -> None:
        await mine.start(port=env.upstream.port, netns=path)  # the daemon-side fake's too
        made: list[tuple[str, int]] = []
        real = env.server.socket_in

        def counting(ns: str, family: int, kind: int) -> socket.socket:
            made.append((ns, kind))
            return real(ns, family, kind)

        env.server.socket_in = counting
        env.server.netns_path = {WEB: path}.get  # type: ignore[assignment]
        there = f"{UPSTREAM}:{env.upstream.port}"
        env.table.set_endpoint(
            FRONT,
            "front",
            ep(
                WEB,
                "web",
                "127.0.1.1",
                upstreams=("127.0.0.11", there),
                in_container=("127.0.0.11", there),
            ),
        )
        threads = threading.active_count()
        assert addrs(await env.ask("outside.test")) == ["192.0.2.99"]
        assert addrs(await env.ask("outside.test", tcp=True)) == ["192.0.2.99"]
        # truncated by it over UDP below the client's EDNS size: asked again over TCP
        q = dns.message.make_query("big.test", "A", use_edns=0, payload=4096)
        big = await dns.asyncquery.udp(q, "127.0.0.1", timeout=5, port=env.port, source=WEB_SRC[0])
        assert len(addrs(big)) == 79 and not big.flags & dns.flags.TC
        assert mine.queries == [
            ("udp", "outside.test."),
            ("tcp", "outside.test."),
            ("udp", "big.test."),
            ("tcp", "big.test."),
        ]
        assert env.upstream.queries == []  # the daemon's namespace: not asked
        # one socket per exchange, all in its namespace; 127.0.0.11 never asked
        assert made == [(path, socket.SOCK_DGRAM), (path, socket.SOCK_STREAM)] * 2
        assert threading.active_count() == threads  # no thread left in there
        # a client that is no container (the host): the defaults, from the daemon's side
        assert addrs(await env.ask("outside.test", src="127.0.1.77")) == ["192.0.2.7"]
        # without a namespace to go to (no netns_path), its own upstream is not asked
        env.server.netns_path = None
        assert (await env.ask("outside.test")).rcode() == dns.rcode.SERVFAIL
        assert len(mine.queries) == 4 and len(made) == 4

    _run_then_close(body, mine, fd)


def test_own_loopback_upstream_sockets_closed_on_timeout_and_cancellation() -> None:
    """A silent upstream in the container's namespace: the query times out (SERVFAIL) or
    is cancelled, and no socket of the exchange is left open."""
    fd = _fresh_netns()
    path = f"/proc/self/fd/{fd}"
    silent = FakeUpstream(silent=True)

    def sockets() -> int:
        n = 0
        for f in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/self/fd/{f}").startswith("socket:")
        return n

    async def body(env: Env) -> None:
        await silent.start(netns=path)
        env.server.netns_path = {WEB: path}.get  # type: ignore[assignment]
        there = f"{UPSTREAM}:{silent.port}"
        env.table.set_endpoint(
            FRONT, "front", ep(WEB, "web", "127.0.1.1", upstreams=(there,), in_container=(there,))
        )
        before = sockets()
        q = dns.message.make_query("outside.test", "A")
        out = await env.server.answer(FRONT, "127.0.1.1", q.to_wire(), tcp=False)
        assert out is not None and dns.message.from_wire(out).rcode() == dns.rcode.SERVFAIL
        assert sockets() == before
        task = asyncio.ensure_future(env.server.answer(FRONT, "127.0.1.1", q.to_wire(), tcp=False))
        for _ in range(500):  # until the upstream holds it
            if len(silent.held) == 2:
                break
            await asyncio.sleep(0.01)
        assert len(silent.held) == 2
        assert sockets() == before + 1
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        assert sockets() == before

    _run_then_close(body, silent, fd)


def test_ndots_of_the_user_keeps_single_label_names_inside() -> None:
    async def body(env: Env) -> None:
        assert (await env.ask("single")).rcode() == dns.rcode.NXDOMAIN  # forwarded
        assert env.upstream.queries == [("udp", "single.")]
        env.table.set_endpoint(FRONT, "front", ep(WEB, "web", "127.0.1.1", ndots_set=True))
        for rdtype in ("A", "AAAA"):
            r = await env.ask("single.", rdtype)
            assert r.rcode() == dns.rcode.NOERROR and r.answer == []
        assert addrs(await env.ask("both")) == ["127.0.1.9"]  # ours still answered
        assert addrs(await env.ask("outside.test")) == ["192.0.2.7"]  # two labels: out
        assert (await env.ask("single", "MX")).rcode() == dns.rcode.NXDOMAIN
        assert env.upstream.queries[1:] == [("udp", "outside.test."), ("udp", "single.")]

    run(body)


def test_internal_networks_forward_nothing() -> None:
    async def body(env: Env) -> None:
        env.server.listen(BACK, "back", ["127.0.0.2"], internal=True)
        r = await env.ask("outside.test", net="127.0.0.2", src="127.0.2.1")
        assert r.rcode() == dns.rcode.SERVFAIL  # db is on the internal network only
        assert addrs(await env.ask("db", net="127.0.0.2", src="127.0.2.1")) == ["127.0.2.1"]
        r = await env.ask("outside.test", net="127.0.0.2", src="127.0.2.9")
        assert addrs(r) == ["192.0.2.7"]  # "both" has a way out through front
        r = await env.ask("outside.test", net="127.0.0.2", src="127.0.0.1")
        assert r.rcode() == dns.rcode.SERVFAIL  # no container: the listener's is internal
        assert env.upstream.queries == [("udp", "outside.test.")]

    run(body)


def test_no_upstream_is_servfail() -> None:
    async def body(env: Env) -> None:
        r = await env.ask("outside.test")
        assert r.rcode() == dns.rcode.SERVFAIL
        assert env.upstream.queries == []

    run(body, upstreams=("not-an-address",))


def test_big_answers_truncated_over_udp_whole_over_tcp() -> None:
    async def body(env: Env) -> None:
        for i in range(60):
            env.table.set_endpoint(
                FRONT, "front", ep(f"{i:064x}", f"w{i}", f"127.0.3.{i + 1}", aliases=("pool",))
            )
        q = dns.message.make_query("pool", "A")
        wire = await udp_wire(q, env.port)
        r = dns.message.from_wire(wire)
        # as many as fit in 512 bytes, with TC (miekg's Truncate): a client without a
        # TCP retry (musl before 1.2.4) still gets addresses
        assert len(wire) <= 512 and r.flags & dns.flags.TC and r.id == q.id
        assert 20 < len(addrs(r)) < 60 and set(addrs(r)) <= {f"127.0.3.{i}" for i in range(1, 61)}
        assert r.question == q.question
        r = await env.ask("pool", tcp=True)
        assert len(addrs(r)) == 60 and not r.flags & dns.flags.TC
        # an EDNS client with a big buffer gets it over UDP
        q = dns.message.make_query("pool", "A", use_edns=0, payload=4096)
        r = await dns.asyncquery.udp(q, "127.0.0.1", timeout=5, port=env.port, source=WEB_SRC[0])
        assert len(addrs(r)) == 60
        # the upstream's truncated answer is asked again over TCP: an EDNS client gets it
        # whole over UDP, though the upstream speaks no EDNS
        q = dns.message.make_query("big.test", "A", use_edns=0, payload=4096)
        r = await dns.asyncquery.udp(q, "127.0.0.1", timeout=5, port=env.port, source=WEB_SRC[0])
        assert len(addrs(r)) == 79 and not r.flags & dns.flags.TC
        assert env.upstream.queries[-2:] == [("udp", "big.test."), ("tcp", "big.test.")]
        r = await env.ask("big.test")  # a 512-byte client: the upstream's TC, it retries
        assert r.flags & dns.flags.TC and addrs(r) == []
        assert env.upstream.queries[-1] == ("udp", "big.test.")
        r = await env.ask("big.test", tcp=True)
        assert len(addrs(r)) == 79
        assert env.upstream.queries[-1] == ("tcp", "big.test.")

    run(body)


def test_malformed_queries_are_ignored() -> None:
    async def body(env: Env) -> None:
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.bind(WEB_SRC)
            s.connect(("127.0.0.1", env.port))
            for junk in (b"", b"\x00", b"\x00" * 11):  # no header: no answer
                s.send(junk)
            response = dns.message.make_response(dns.message.make_query("web", "A"))
            s.send(response.to_wire())  # a response is no query: ignored too
            # a header and garbage: FORMERR with its id (as miekg/dns answers)
            s.send(b"\x12\x34\x01\x00" + b"garbage that is no DNS message at all")
            reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(s, 4096), 5))
            assert reply.id == 0x1234 and reply.rcode() == dns.rcode.FORMERR
            assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RD
            # the listener still answers (and sent nothing back for the rest)
            q = dns.message.make_query("web", "A")
            s.send(q.to_wire())
            reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(s, 4096), 5))
            assert reply.id == q.id and addrs(reply) == ["127.0.1.1"]
        finally:
            s.close()
        # a TCP client sending junk loses its connection; others are unaffected
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port, local_addr=WEB_SRC)
        writer.write(b"\x00\x05hello")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # a header and junk over TCP: FORMERR, and the connection serves the next query
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port, local_addr=WEB_SRC)
        junk = b"\x43\x21\x01\x00" + b"\xff" * 20
        q = dns.message.make_query("web", "A")
        writer.write(len(junk).to_bytes(2, "big") + junk + tcp_frame(q))
        await writer.drain()
        assert (await read_tcp(reader)).rcode() == dns.rcode.FORMERR
        assert addrs(await read_tcp(reader)) == ["127.0.1.1"]
        writer.close()
        assert addrs(await env.ask("web", tcp=True)) == ["127.0.1.1"]
        # two questions: FORMERR
        q = dns.message.make_query("web", "A")
        q.question.append(q.question[0])
        r = await dns.asyncquery.udp(q, "127.0.0.1", timeout=5, port=env.port, source=WEB_SRC[0])
        assert r.rcode() == dns.rcode.FORMERR

    run(body)


def test_records_change_at_once_and_stop_closes() -> None:
    async def body(env: Env) -> None:
        env.table.set_endpoint(FRONT, "front", ep(DB, "db", "127.0.1.2"))  # connect
        assert addrs(await env.ask("db")) == ["127.0.1.2"]
        env.table.remove_endpoint(FRONT, DB)  # disconnect
        assert (await env.ask("db")).rcode() == dns.rcode.NXDOMAIN
        env.table.remove_container(WEB)
        assert (await env.ask("web", src="127.0.1.9")).rcode() == dns.rcode.NXDOMAIN
        # a listener's address taken: a clear error
        with pytest.raises(DnsError, match=r"cannot listen for DNS on 127\.0\.0\.2"):
            env.server.listen("other", "other", ["127.0.0.2"])
        env.server.stop(BACK)
        assert env.server.listening(BACK) == []
        env.server.listen("other", "other", ["127.0.0.2"])  # the address is free again
        before = env.server.listening("other")
        env.server.listen("other", "other", ["127.0.0.2"])  # the bridge made again: kept
        assert env.server.listening("other") == before
        # stop/listen from a worker thread (the engine's side) wait for the loop
        await asyncio.to_thread(env.server.stop, "other")
        assert env.server.listening("other") == []

    run(body)


def test_parse_upstream() -> None:
    assert parse_upstream("10.0.0.1") == ("10.0.0.1", 53)
    assert parse_upstream("10.0.0.1:5353") == ("10.0.0.1", 5353)
    assert parse_upstream("fd00::1") == ("fd00::1", 53)
    assert parse_upstream("[fd00::1]:5353") == ("fd00::1", 5353)
    with pytest.raises(ValueError):
        parse_upstream("dns.example")


async def until(check: Callable[[], bool], what: str, seconds: float = 10) -> None:
    """A bounded poll of the event loop (no fixed sleeps)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while not check():
        assert loop.time() < end, f"still not: {what}"
        await asyncio.sleep(0.02)


def test_upstream_servfail_or_refused_tries_the_next() -> None:
    """Docker's resolver: SERVFAIL and REFUSED pass the query to the next upstream;
    NXDOMAIN is an answer; nothing but failures: SERVFAIL."""
    failing = FakeUpstream(rcode=dns.rcode.SERVFAIL)
    refusing = FakeUpstream(rcode=dns.rcode.REFUSED)

    async def body(env: Env) -> None:
        assert addrs(await env.ask("outside.test")) == ["192.0.2.7"]
        assert failing.queries == refusing.queries == [("udp", "outside.test.")]
        assert env.upstream.queries == [("udp", "outside.test.")]
        assert (await env.ask("nowhere.test", tcp=True)).rcode() == dns.rcode.NXDOMAIN
        assert env.upstream.queries[-1] == ("tcp", "nowhere.test.")
        only_failing = tuple(f"{UPSTREAM}:{u.port}" for u in (failing, refusing))
        env.table.set_endpoint(FRONT, "front", ep(WEB, "web", "127.0.1.1", upstreams=only_failing))
        r = await env.ask("outside.test")
        assert r.rcode() == dns.rcode.SERVFAIL and r.flags & dns.flags.RA
        assert len(failing.queries) == len(refusing.queries) == 3

    run(body, others=(failing, refusing))


def test_stray_datagrams_are_not_the_upstreams_answer() -> None:
    """An answer with another id, or a datagram that is no DNS, from the upstream's
    address: ignored while the real answer is awaited (not a reason to give up on it)."""
    stray = FakeUpstream(stray=True)

    async def body(env: Env) -> None:
        r = await env.ask("outside.test")
        assert addrs(r) == ["192.0.2.7"]
        assert stray.queries == [("udp", "outside.test.")]
        assert env.upstream.queries == []  # the next upstream was not needed

    run(body, others=(stray,))


def test_aaaa_and_ipv6_ptr() -> None:
    async def body(env: Env) -> None:
        web = DnsEndpoint(container_id=WEB, name="web", addresses=("127.0.1.1", "fd00:0::5"))
        env.table.set_endpoint(FRONT, "front", web)
        r = await env.ask("web", "AAAA")
        assert addrs(r) == ["fd00::5"] and r.answer[0].ttl == TTL
        r = await env.ask(dns.reversename.from_address("fd00::5").to_text(), "PTR")
        assert addrs(r) == ["web.front."]
        r = await env.ask("web", "MX")  # a name of ours, MX: NOERROR, empty (implicit MX)
        assert r.rcode() == dns.rcode.NOERROR and r.answer == []
        assert env.upstream.queries == []
        # other types are the upstreams' business, even for our names (Docker's resolver)
        for kind in ("TXT", "SRV", "ANY"):
            r = await env.ask("web", kind)
            assert r.rcode() == dns.rcode.NXDOMAIN  # what the fake upstream says of "web"
        assert [name for _, name in env.upstream.queries] == ["web."] * 3

    run(body)


def test_tcp_several_queries_idle_timeout_and_connection_bound() -> None:
    async def body(env: Env) -> None:
        env.server.tcp_idle_timeout = 60  # none goes idle here however slow the machine
        env.server.max_tcp_clients = 2
        # three queries in one write, three answers in order on the same connection
        r1, w1 = await asyncio.open_connection("127.0.0.1", env.port, local_addr=WEB_SRC)
        qs = [dns.message.make_query(n, "A") for n in ("web", "outside.test", "www")]
        w1.write(b"".join(tcp_frame(q) for q in qs))
        answers = [await read_tcp(r1) for _ in qs]
        assert [a.id for a in answers] == [q.id for q in qs]
        assert [addrs(a) for a in answers] == [["127.0.1.1"], ["192.0.2.7"], ["127.0.1.1"]]
        r2, w2 = await asyncio.open_connection("127.0.0.1", env.port, local_addr=WEB_SRC)
        w2.write(tcp_frame(qs[0]))
        assert addrs(await read_tcp(r2)) == ["127.0.1.1"]
        # a third connection over the bound: closed at once
        r3, w3 = await asyncio.open_connection("127.0.0.1", env.port, local_addr=WEB_SRC)
        assert await asyncio.wait_for(r3.read(), 5) == b""
        w3.close()
        # the clients leave: their places are free again
        w1.close()
        w2.close()
        await until(lambda: env.server._tcp_clients == 0, "connections closed")
        # a connection idle for longer than the timeout is closed by the resolver
        env.server.tcp_idle_timeout = 0.5
        r4, w4 = await asyncio.open_connection("127.0.0.1", env.port, local_addr=WEB_SRC)
        w4.write(tcp_frame(qs[0]))
        assert addrs(await read_tcp(r4)) == ["127.0.1.1"]
        assert await asyncio.wait_for(r4.read(), 10) == b""
        w4.close()
        await until(lambda: env.server._tcp_clients == 0, "idle connection closed")
        assert addrs(await env.ask("web", tcp=True)) == ["127.0.1.1"]

    run(body)


def test_tcp_client_that_does_not_read_is_dropped() -> None:
    """Queries written, answers never read: once the answers fill the buffers the
    connection is dropped after the idle timeout, not held forever."""

    async def body(env: Env) -> None:
        env.server.tcp_idle_timeout = 2.0
        for i in range(60):
            env.table.set_endpoint(
                FRONT, "front", ep(f"{i:064x}", f"w{i}", f"127.0.3.{i + 1}", aliases=("pool",))
            )
        loop = asyncio.get_running_loop()
        for listener in env.server._listeners[FRONT]:  # accepted sockets inherit it
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.setblocking(False)
        s.bind(WEB_SRC)
        try:
            await loop.sock_connect(s, ("127.0.0.1", env.port))
            frames = b"".join(tcp_frame(dns.message.make_query("pool", "A")) for _ in range(400))
            await loop.sock_sendall(s, frames)  # ~400 kB of answers, more than the buffers
            await until(lambda: env.server._tcp_clients == 1, "the client accepted")
            await until(lambda: env.server._tcp_clients == 0, "the stuck client dropped")
        finally:
            s.close()
        assert addrs(await env.ask("web", tcp=True)) == ["127.0.1.1"]

    run(body)


def test_udp_bounds_on_queries_in_flight() -> None:
    """More queries at once than the bounds: the excess is dropped on arrival (a burst
    read in one go cannot overshoot); a client whose queries hang on a blackholed
    upstream takes no more than its share, so another container is still answered."""
    silent = FakeUpstream(silent=True)

    async def body(env: Env) -> None:
        env.server.max_concurrent = 10
        env.server.max_per_client = 4
        env.server.upstream_timeout = 60  # all stay in flight until released below
        socks = []
        try:
            for src, net in (("127.0.1.1", "127.0.0.1"), ("127.0.1.9", "127.0.0.1")):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((src, 0))
                for i in range(20):
                    q = dns.message.make_query(f"q{i}.outside.test", "A")
                    s.sendto(q.to_wire(), (net, env.port))
            await until(lambda: len(silent.queries) >= 8, "8 queries forwarded")
            assert env.server._inflight == 8
            assert env.server._inflight_of == {"127.0.1.1": 4, "127.0.1.9": 4}
            # db, on back, is answered meanwhile (its name, and a forwarded one)
            r = await env.ask("db", net="127.0.0.2", src="127.0.2.1")
            assert addrs(r) == ["127.0.2.1"]
            # the bound of all: 10, whoever asks
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.2.1", 0))
            for i in range(20):
                q = dns.message.make_query(f"d{i}.outside.test", "A")
                s.sendto(q.to_wire(), ("127.0.0.2", env.port))
            await until(lambda: len(silent.queries) >= 10, "10 queries forwarded")
            assert env.server._inflight == 10
            silent.release()
            await until(lambda: env.server._inflight == 0, "all answered")
            assert env.server._inflight_of == {}
        finally:
            for s in socks:
                s.close()

    run(body, others=(silent,))


def test_stress_200_concurrent_queries_one_upstream_blackholed() -> None:
    """200 queries at once (local names, forwarded ones over UDP and TCP) while the first
    upstream never answers: each is answered; no task, socket or count is left behind."""
    silent = FakeUpstream(silent=True)

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async def body(env: Env) -> None:
        before = fds()

        async def one(i: int) -> list[str]:
            name = ("web", "outside.test")[i % 2]
            src = ("127.0.1.1", "127.0.1.9")[i % 3 % 2]  # web, both
            return addrs(await env.ask(name, src=src, tcp=i % 5 == 0))

        results = await asyncio.gather(*(one(i) for i in range(200)))
        assert results == [(["127.0.1.1"], ["192.0.2.7"])[i % 2] for i in range(200)]
        await until(lambda: not env.server._tasks, "no task left")
        assert env.server._inflight == 0 and env.server._tcp_clients == 0
        assert env.server._inflight_of == {}
        await until(lambda: fds() <= before, "no socket left")

    run(body, others=(silent,))
