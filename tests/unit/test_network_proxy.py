"""The userland proxy (:mod:`bulkhead.network.proxy`) with real sockets on loopback.

The listeners are IPv6 (``::1``, or ``::`` for the reply-address check), the
targets IPv4 servers on ``127.0.0.1`` run by the test: the IPv6-to-IPv4 relay
the daemon makes for a container without IPv6 address. ``start``/``stop`` are
called from worker threads, as the daemon's network code does.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bulkhead.network.proxy import PortProxy

TIMEOUT = 20


def _held(proto: str, host: str = "::1") -> socket.socket:
    """A socket as :class:`~bulkhead.network.ports.PortAllocator` holds a port: bound only."""
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    if kind == socket.SOCK_STREAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    return s


def _run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, TIMEOUT))


@contextlib.asynccontextmanager
async def _tcp_server(
    handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        await server.wait_closed()


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.write_eof()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def _proxied(
    proto: str, target_port: int, host: str = "::1", **kw: Any
) -> AsyncIterator[tuple[PortProxy, int]]:
    proxy = PortProxy(**kw)
    proxy.attach()
    held = _held(proto, host)
    try:
        await asyncio.to_thread(proxy.start, "c1", held, ("127.0.0.1", target_port))
        assert proxy.serving("c1") == [(host, held.getsockname()[1], proto)]
        yield proxy, int(held.getsockname()[1])
    finally:
        await asyncio.to_thread(proxy.stop, "c1")
        held.close()
    assert proxy.serving() == []


async def _poll(cond: Callable[[], bool]) -> None:
    for _ in range(200):
        if cond():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not reached")


def test_tcp_echo_both_ways_with_backpressure() -> None:
    async def main() -> None:
        async with _tcp_server(_echo) as port, _proxied("tcp", port) as (proxy, pport):
            reader, writer = await asyncio.open_connection("::1", pport)
            payload = bytes(range(256)) * 16384  # 4 MiB: more than any socket buffer
            writer.write(payload)
            got = bytearray()
            # read while writing: the relay never holds more than a chunk per direction
            drain = asyncio.ensure_future(writer.drain())
            while len(got) < len(payload):
                got += await reader.read(1 << 20)
            await drain
            assert bytes(got) == payload
            assert proxy.counts("c1") == (1, 0)
            writer.close()
            await _poll(lambda: proxy.counts("c1") == (0, 0))

    _run(main())


def test_tcp_half_close_passes_the_fin_and_the_answer_back() -> None:
    async def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()  # until the client's FIN
        writer.write(b"got %d bytes" % len(data))
        await writer.drain()
        writer.close()

    async def main() -> None:
        async with _tcp_server(count) as port, _proxied("tcp", port) as (_, pport):
            reader, writer = await asyncio.open_connection("::1", pport)
            writer.write(b"x" * 100000)
            writer.write_eof()  # half-close: the answer still comes
            assert await reader.read() == b"got 100000 bytes"
            writer.close()

    _run(main())


def test_tcp_target_refusing_resets_the_client() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = int(s.getsockname()[1])  # nothing listens there

    async def main() -> None:
        async with _proxied("tcp", closed) as (proxy, pport):
            reader, writer = await asyncio.open_connection("::1", pport)
            writer.write(b"hello")
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
            writer.close()
            await _poll(lambda: proxy.counts("c1") == (0, 0))

    _run(main())


def test_tcp_a_slow_reader_slows_its_writer() -> None:
    """Backpressure: a target that reads nothing stops the client's writes after what the
    socket buffers (and asyncio's 64 KiB high-water mark) hold, not after all it sends."""
    release = asyncio.Event()

    async def sleeper(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        async with _tcp_server(sleeper) as port, _proxied("tcp", port) as (_, pport):
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as c:
                c.setblocking(False)
                await loop.sock_connect(c, ("::1", pport))
                chunk, sent, stalled = b"x" * 65536, 0, 0
                while sent < (256 << 20) and stalled < 50:
                    try:
                        sent += c.send(chunk)
                        stalled = 0
                    except BlockingIOError:
                        stalled += 1  # give the proxy its turn to read, if it would
                        await asyncio.sleep(0.01)
                assert sent < (128 << 20), f"{sent} bytes taken from a client nobody reads"
            release.set()

    _run(main())


def test_tcp_a_reset_on_one_side_resets_the_other() -> None:
    seen: list[bytes | str] = []

    async def watch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readexactly(1))  # the session is up
        try:
            seen.append(await reader.read())
        except ConnectionResetError:
            seen.append("reset")
        writer.close()

    async def main() -> None:
        async with _tcp_server(watch) as port, _proxied("tcp", port) as (proxy, pport):
            c = socket.create_connection(("::1", pport))
            c.sendall(b"x")
            await _poll(lambda: bool(seen))
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()  # an RST
            await _poll(lambda: len(seen) == 2)
            assert seen == [b"x", "reset"]
            await _poll(lambda: proxy.counts("c1") == (0, 0))

    _run(main())


def test_stop_on_the_loop_itself() -> None:
    async def main() -> None:
        async with _tcp_server(_echo) as port:
            proxy = PortProxy()
            proxy.attach()
            held = _held("tcp")
            proxy.start("c1", held, ("127.0.0.1", port))
            reader, writer = await asyncio.open_connection("::1", held.getsockname()[1])
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            proxy.stop("c1")  # from the loop's own thread: no waiting, nothing left
            assert proxy.serving() == [] and proxy.counts("c1") == (0, 0)
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
            writer.close()
            held.close()

    _run(main())


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_no_socket_left_behind() -> None:
    """Sessions that ended, sessions open at the stop, flows: every socket closed."""

    async def main() -> None:
        transport, uport = await _udp_echo()
        try:
            async with _tcp_server(_echo) as port:
                before = _fds()
                async with _proxied("tcp", port) as (proxy, pport):
                    for _ in range(20):  # ended by the client
                        reader, writer = await asyncio.open_connection("::1", pport)
                        writer.write(b"x")
                        assert await reader.readexactly(1) == b"x"
                        writer.close()
                        await writer.wait_closed()
                    await _poll(lambda: proxy.counts("c1") == (0, 0))
                    opened = [await asyncio.open_connection("::1", pport) for _ in range(5)]
                    await _poll(lambda: proxy.counts("c1") == (5, 0))
                # stopped with 5 sessions open
                for _, writer in opened:
                    writer.close()
                await _poll(lambda: _fds() <= before)
                async with _proxied("udp", uport, udp_timeout=60) as (proxy, pport):
                    for i in range(5):
                        assert await _ask(pport, b"%d" % i) == b"echo:%d from 127.0.0.1" % i
                    assert proxy.counts("c1") == (0, 5)
                # the flows' sockets went with the stop (a transport closes its socket on the
                # loop's next turn: polled, not asserted at once — it failed so under load)
                await _poll(lambda: _fds() <= before)
        finally:
            transport.close()

    _run(main())


def test_stop_closes_the_sessions() -> None:
    async def main() -> None:
        async with _tcp_server(_echo) as port, _proxied("tcp", port) as (proxy, pport):
            reader, writer = await asyncio.open_connection("::1", pport)
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            await asyncio.to_thread(proxy.stop, "c1")
            assert proxy.counts("c1") == (0, 0) and proxy.serving() == []
            with contextlib.suppress(ConnectionResetError):
                assert await reader.read() == b""
            writer.close()

    _run(main())


class _UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.transport.sendto(b"echo:" + data + b" from " + str(addr[0]).encode(), addr)


async def _udp_echo() -> tuple[asyncio.DatagramTransport, int]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        _UdpEcho, local_addr=("127.0.0.1", 0)
    )
    return transport, int(transport.get_extra_info("sockname")[1])


async def _ask(port: int, data: bytes, timeout: float = 5) -> bytes | None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
        c.setblocking(False)
        # connected: a reply from another address than ::1 would not be received
        c.connect(("::1", port))
        c.send(data)
        try:
            return await asyncio.wait_for(loop.sock_recv(c, 65535), timeout)
        except TimeoutError:
            return None


def test_udp_echo_one_flow_per_client_from_the_address_asked() -> None:
    async def main() -> None:
        transport, port = await _udp_echo()
        try:
            # bound to [::] (as a HostIp "" binding): the reply leaves from ::1 (IPV6_PKTINFO)
            async with _proxied("udp", port, host="::") as (proxy, pport):
                assert await _ask(pport, b"a") == b"echo:a from 127.0.0.1"
                assert await _ask(pport, b"b") == b"echo:b from 127.0.0.1"
                assert proxy.counts("c1") == (0, 2)  # two client ports, two flows
        finally:
            transport.close()

    _run(main())


def test_udp_idle_flows_expire_and_are_bounded() -> None:
    async def main() -> None:
        transport, port = await _udp_echo()
        try:
            async with _proxied("udp", port, udp_timeout=0.5, max_udp_flows=1) as (proxy, pport):
                loop = asyncio.get_running_loop()
                with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
                    c.setblocking(False)
                    c.connect(("::1", pport))
                    c.send(b"1")
                    assert await loop.sock_recv(c, 100) == b"echo:1 from 127.0.0.1"
                    assert proxy.counts("c1") == (0, 1)
                    # the bound: another client is not served while this flow lives
                    assert await _ask(pport, b"other", timeout=0.3) is None
                    c.send(b"2")  # the same flow
                    assert await loop.sock_recv(c, 100) == b"echo:2 from 127.0.0.1"
                await _poll(lambda: proxy.counts("c1") == (0, 0))  # idle: expired
                assert await _ask(pport, b"3") == b"echo:3 from 127.0.0.1"
        finally:
            transport.close()

    _run(main())


def test_sctp_and_unattached() -> None:
    proxy = PortProxy()
    assert not proxy.attached
    with _held("udp") as s, pytest.raises(RuntimeError, match="not attached"):
        proxy.start("c1", s, ("127.0.0.1", 1))
    proxy.stop("c1")  # nothing to stop: fine
    try:
        sctp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_SCTP)
    except OSError:
        return
    with sctp, pytest.raises(ValueError, match="TCP and UDP"):
        proxy.start("c1", sctp, ("127.0.0.1", 1))
