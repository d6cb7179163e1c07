"""The embedded DNS resolver (bulkhead.network.dns) against a table of fake records.

Listeners on loopback addresses of the test process (127.0.0.1 for network
"front", 127.0.0.2 for "back"), clients sending from the loopback address
their container has (127.0.1.x), and a fake upstream resolver on
127.0.0.3:<port> in this process: no query ever leaves the machine.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.reversename
import dns.rrset
import pytest

from bulkhead.network.dns import TTL, DnsEndpoint, DnsError, DnsServer, DnsTable, parse_upstream

FRONT, BACK = "f" * 64, "b" * 64
WEB = "a" * 64
DB = "d" * 64
BOTH = "c" * 64
UPSTREAM = "127.0.0.3"


class FakeUpstream:
    """An "outside" resolver: outside.test has an address, big.test many; else NXDOMAIN."""

    def __init__(self) -> None:
        self.queries: list[tuple[str, str]] = []  # (transport, name)
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None

    def reply(self, data: bytes, transport: str) -> bytes:
        q = dns.message.from_wire(data)
        name = q.question[0].name.to_text()
        self.queries.append((transport, name))
        r = dns.message.make_response(q)
        if name == "outside.test.":
            r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "192.0.2.7"))
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

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        up = self

        class Proto(asyncio.DatagramProtocol):
            def connection_made(self, transport: Any) -> None:
                self.t = transport

            def datagram_received(self, data: bytes, addr: Any) -> None:
                self.t.sendto(up.reply(data, "udp"), addr)

        async def tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            size = int.from_bytes(await reader.readexactly(2), "big")
            out = up.reply(await reader.readexactly(size), "tcp")
            writer.write(len(out).to_bytes(2, "big") + out)
            await writer.drain()
            writer.close()

        self._tcp = await asyncio.start_server(tcp, UPSTREAM, 0)
        self.port = self._tcp.sockets[0].getsockname()[1]
        self._udp, _ = await loop.create_datagram_endpoint(Proto, local_addr=(UPSTREAM, self.port))

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


def run(body: Callable[[Env], Awaitable[None]], upstreams: tuple[str, ...] = ()) -> None:
    async def main() -> None:
        upstream = FakeUpstream()
        await upstream.start()
        table = DnsTable()
        server = DnsServer(
            table, upstreams or (f"{UPSTREAM}:{upstream.port}",), port=0, upstream_timeout=1
        )
        server.attach()
        try:
            server.listen(FRONT, "front", ["127.0.0.1"])
            port = server.listening(FRONT)[0][1]
            server.port = port
            server.listen(BACK, "back", ["127.0.0.2"])
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
        # a client that is no container (the host) sees the listener's network only
        r = await env.ask("db", src="127.0.0.1")
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert addrs(await env.ask("web", src="127.0.0.1")) == ["127.0.1.1"]

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


def test_internal_networks_forward_nothing() -> None:
    async def body(env: Env) -> None:
        env.server.listen(BACK, "back", ["127.0.0.2"], internal=True)
        r = await env.ask("outside.test", net="127.0.0.2", src="127.0.2.1")
        assert r.rcode() == dns.rcode.SERVFAIL  # db is on the internal network only
        assert addrs(await env.ask("db", net="127.0.0.2", src="127.0.2.1")) == ["127.0.2.1"]
        r = await env.ask("outside.test", net="127.0.0.2", src="127.0.2.9")
        assert addrs(r) == ["192.0.2.7"]  # "both" has a way out through front
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
        r = await env.ask("pool")
        assert r.flags & dns.flags.TC and r.answer == []
        r = await env.ask("pool", tcp=True)
        assert len(addrs(r)) == 60 and not r.flags & dns.flags.TC
        # an EDNS client with a big buffer gets it over UDP
        q = dns.message.make_query("pool", "A", use_edns=0, payload=4096)
        r = await dns.asyncquery.udp(q, "127.0.0.1", timeout=5, port=env.port)
        assert len(addrs(r)) == 60
        # the upstream's truncated answer too: the client's TCP retry goes upstream by TCP
        r = await env.ask("big.test")
        assert r.flags & dns.flags.TC
        r = await env.ask("big.test", tcp=True)
        assert len(addrs(r)) == 79

    run(body)


def test_malformed_queries_are_ignored() -> None:
    async def body(env: Env) -> None:
        loop = asyncio.get_running_loop()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", env.port))
            for junk in (b"", b"\x00", b"garbage that is no DNS message at all"):
                s.send(junk)
            response = dns.message.make_response(dns.message.make_query("web", "A"))
            s.send(response.to_wire())  # a response is no query: ignored too
            # the listener still answers (and sent nothing back for the junk)
            q = dns.message.make_query("web", "A")
            s.send(q.to_wire())
            reply = dns.message.from_wire(await asyncio.wait_for(loop.sock_recv(s, 4096), 5))
            assert reply.id == q.id and addrs(reply) == ["127.0.1.1"]
        finally:
            s.close()
        # a TCP client sending junk loses its connection; others are unaffected
        reader, writer = await asyncio.open_connection("127.0.0.1", env.port)
        writer.write(b"\x00\x05hello")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert addrs(await env.ask("web", tcp=True)) == ["127.0.1.1"]
        # two questions: FORMERR
        q = dns.message.make_query("web", "A")
        q.question.append(q.question[0])
        r = await dns.asyncquery.udp(q, "127.0.0.1", timeout=5, port=env.port)
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
