"""The userland proxy: published ports that DNAT cannot serve, relayed by the daemon.

Most connections to a published port never reach the daemon: the DNAT of
:mod:`bulkhead.network.firewall` rewrites them to the container in the kernel.
Two kinds cannot be rewritten, and Docker serves them with its *userland
proxy* (``docker-proxy``, one process per published port, on by default):

- ``[::1]:8080``: IPv6 has no ``route_localnet``, so a packet with the
  loopback source ``::1`` may never leave by the bridge, DNAT or not;
- the host's IPv6 addresses when the container has no IPv6 address (the
  default ``bridge`` network): NAT cannot turn an IPv6 connection into an
  IPv4 one (Docker: ``-p 8080:80`` publishes ``0.0.0.0:8080`` *and*
  ``[::]:8080``, the latter "proxied to the container's IPv4 address").

This module is that proxy, inside the daemon: no process and no thread per
port or connection, everything runs on the daemon's event loop.

Vocabulary
----------
- A *listener* is the host socket of one binding (``[::]:8080/tcp``):
  the very socket :class:`~bulkhead.network.ports.PortAllocator` binds to hold
  the port (so "port already in use" is decided once, there), made to
  ``listen()`` (TCP) or read (UDP) here. The allocator owns it and closes it
  after :meth:`PortProxy.stop`.
- The *target* is ``container_ip:container_port``.
- A TCP *session* is one accepted client connection and the daemon's own
  connection to the target (two asyncio transports, no task once started);
  bytes are *spliced* both ways, a side that cannot write fast enough (its
  transport's queue above asyncio's high-water mark, 64 KiB) pausing the
  reading of the other (*backpressure*: a slow reader slows its writer
  instead of filling the daemon's memory). A
  *half-close* (one side's ``shutdown(SHUT_WR)``, a FIN) is passed on as a
  FIN to the other side, whose answer keeps flowing until it closes too. An
  error on either side (a reset, a refused target) closes both; a target
  that refuses makes the client's connection reset.
- A UDP *flow* is the datagrams of one client address (``ip, port``): it gets
  a socket of its own connected to the target, so that the container's
  answers come back to that client, from the address it sent to
  (``IPV6_PKTINFO``). A flow with no datagram either way for
  :data:`UDP_IDLE_TIMEOUT` seconds (docker-proxy's ``UDPConnTrackTimeout``,
  90 s) is closed; a listener has at most :data:`MAX_UDP_FLOWS` flows
  (datagrams of further clients are dropped until one expires).
- SCTP is not proxied (neither DNAT nor the daemon relays ``[::1]`` for
  SCTP): its port is only held.

What the container sees: a proxied connection comes from the bridge's
gateway address (the daemon's own socket), not from the client — as with
docker-proxy. DNAT keeps the client's address; that is why the proxy takes
only what DNAT cannot.

Threads: :meth:`PortProxy.start` and :meth:`PortProxy.stop` are called from
the daemon's worker threads (the network code runs in ``asyncio.to_thread``)
and hand their work to the loop, waiting for it, as
:class:`bulkhead.network.dns.DnsServer` does. A stopped daemon closes every
listener and session; the daemon that starts again proxies the ports of the
containers still running (:meth:`bulkhead.network.nat.Nat.restore`).
Connections that were open meanwhile are lost (docker-proxy, a process of its
own, would keep them).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable
from typing import Any

from bulkhead.network.onloop import call_on_loop

log = logging.getLogger("bulkhead.network")

#: docker-proxy's ``UDPConnTrackTimeout``: a UDP flow idle this long is closed.
UDP_IDLE_TIMEOUT = 90.0
#: UDP flows (client addresses) per listener.
MAX_UDP_FLOWS = 1024
#: TCP sessions per listener (further clients are accepted and closed at once).
MAX_TCP_SESSIONS = 4096
#: How long a connection to the target may take.
CONNECT_TIMEOUT = 30.0
#: Accepts or datagrams taken per readiness callback before the loop runs others.
BURST = 64
#: listen() backlog of a TCP listener.
BACKLOG = 1024

_IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_IPV6_PKTINFO = getattr(socket, "IPV6_PKTINFO", 50)
_IPV6_RECVPKTINFO = getattr(socket, "IPV6_RECVPKTINFO", 49)
_CMSG_SPACE = socket.CMSG_SPACE(24)

Target = tuple[str, int]


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class _Flow:
    """One UDP client of a listener: its socket to the target and when it last spoke."""

    __slots__ = ("client", "last", "pktinfo", "sock", "timer")

    def __init__(self, client: Any, sock: socket.socket, pktinfo: tuple[int, int, bytes] | None):
        self.client = client
        self.sock = sock
        #: the ancillary data that makes a reply leave from the address the client sent to
        self.pktinfo = pktinfo
        self.last = 0.0
        self.timer: asyncio.TimerHandle | None = None


class _Listener:
    """One proxied binding: its host socket, its target and what it carries now."""

    def __init__(self, owner: str, sock: socket.socket, target: Target) -> None:
        self.owner = owner
        self.sock = sock
        self.target = target
        self.tcp = sock.type == socket.SOCK_STREAM
        self.sessions: set[_Session] = set()
        self.flows: dict[Any, _Flow] = {}
        self.paused: asyncio.TimerHandle | None = None

    @property
    def address(self) -> tuple[str, int, str]:
        host, port = self.sock.getsockname()[:2]
        return host, port, "tcp" if self.tcp else "udp"


class PortProxy:
    """See the module docstring. ``udp_timeout`` and ``max_udp_flows`` are for tests."""

    def __init__(
        self,
        *,
        udp_timeout: float = UDP_IDLE_TIMEOUT,
        max_udp_flows: int = MAX_UDP_FLOWS,
        max_tcp_sessions: int = MAX_TCP_SESSIONS,
    ) -> None:
        self.udp_timeout = udp_timeout
        self.max_udp_flows = max_udp_flows
        self.max_tcp_sessions = max_tcp_sessions
        self._loop: asyncio.AbstractEventLoop | None = None
        self._listeners: dict[str, list[_Listener]] = {}

    # -- lifecycle ------------------------------------------------------------------

    def attach(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Serve on the daemon's event loop (call from the loop, before ports are restored)."""
        self._loop = loop or asyncio.get_running_loop()

    @property
    def attached(self) -> bool:
        return self._loop is not None and not self._loop.is_closed()

    def _on_loop(self, fn: Callable[[], Any]) -> Any:
        return call_on_loop(self._loop, fn, what="the port proxy", timeout=60)

    def serving(self, owner: str | None = None) -> list[tuple[str, int, str]]:
        """(address, port, "tcp"|"udp") of the listeners of ``owner`` (of all: None)."""
        out: list[tuple[str, int, str]] = []
        for o, lsts in list(self._listeners.items()):
            if owner is None or o == owner:
                out.extend(lst.address for lst in lsts)
        return out

    def counts(self, owner: str) -> tuple[int, int]:
        """(TCP sessions, UDP flows) open now for ``owner`` (tests, diagnostics)."""
        lsts = self._listeners.get(owner, [])
        return sum(len(x.sessions) for x in lsts), sum(len(x.flows) for x in lsts)

    def start(self, owner: str, listener: socket.socket, target: Target) -> None:
        """Relay what arrives on ``listener`` (bound, TCP or UDP) to ``target``."""
        if listener.type not in (socket.SOCK_STREAM, socket.SOCK_DGRAM) or (
            listener.proto not in (0, socket.IPPROTO_TCP, socket.IPPROTO_UDP)
        ):
            raise ValueError("only TCP and UDP ports are proxied")
        if not self.attached:
            raise RuntimeError("the port proxy is not attached to an event loop")
        lst = _Listener(owner, listener, (target[0], int(target[1])))
        listener.setblocking(False)
        if lst.tcp:
            listener.listen(BACKLOG)
        else:
            fam = listener.family
            if fam == socket.AF_INET6:
                listener.setsockopt(socket.IPPROTO_IPV6, _IPV6_RECVPKTINFO, 1)
            else:
                listener.setsockopt(socket.IPPROTO_IP, _IP_PKTINFO, 1)
        self._on_loop(lambda: self._serve(lst))

    def stop(self, owner: str) -> None:
        """Stop relaying ``owner``'s ports: sessions and flows closed (the listener
        sockets stay open: their owner closes them)."""
        if owner not in self._listeners:
            return
        if not self.attached:
            self._listeners.pop(owner, None)
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:  # on the loop itself: closed now, gone at its next turn
            self._stop_now(owner)
            return
        self._on_loop(lambda: self._stop(owner))

    def close(self) -> None:
        """Daemon stop: every owner stopped."""
        for owner in list(self._listeners):
            self.stop(owner)

    def _serve(self, lst: _Listener) -> None:
        assert self._loop is not None
        self._listeners.setdefault(lst.owner, []).append(lst)
        if lst.tcp:
            self._loop.add_reader(lst.sock.fileno(), self._on_accept, lst)
        else:
            self._loop.add_reader(lst.sock.fileno(), self._on_datagram, lst)

    def _stop_now(self, owner: str) -> list[asyncio.Task[None]]:
        """Listeners unregistered, flows closed, sessions aborted; their setup tasks."""
        assert self._loop is not None
        tasks: list[asyncio.Task[None]] = []
        for lst in self._listeners.pop(owner, []):
            if lst.paused is not None:
                lst.paused.cancel()
            with contextlib.suppress(ValueError, OSError):
                self._loop.remove_reader(lst.sock.fileno())
            for flow in list(lst.flows.values()):
                self._close_flow(lst, flow)
            for sess in list(lst.sessions):
                if sess.task is not None and not sess.task.done():
                    tasks.append(sess.task)
                sess.abort()
        return tasks

    async def _stop(self, owner: str) -> None:
        tasks = self._stop_now(owner)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0)  # the aborted transports close their sockets

    def _pause(self, lst: _Listener, callback: Callable[[_Listener], None]) -> None:
        """Out of file descriptors: stop reading the listener for a moment (a
        level-triggered reader would spin)."""
        assert self._loop is not None
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(lst.sock.fileno())

        def resume() -> None:
            lst.paused = None
            if lst in self._listeners.get(lst.owner, []):
                assert self._loop is not None
                self._loop.add_reader(lst.sock.fileno(), callback, lst)

        lst.paused = self._loop.call_later(0.1, resume)

    # -- TCP ------------------------------------------------------------------------

    def _on_accept(self, lst: _Listener) -> None:
        assert self._loop is not None
        for _ in range(BURST):
            try:
                conn, _peer = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("port proxy %s: %s", lst.address, exc)
                    self._pause(lst, self._on_accept)
                return
            if len(lst.sessions) >= self.max_tcp_sessions:
                _reset(conn)
                continue
            conn.setblocking(False)
            sess = _Session(lst.sessions.discard)
            lst.sessions.add(sess)
            sess.task = self._loop.create_task(self._connect(lst, sess, conn))

    async def _connect(self, lst: _Listener, sess: _Session, conn: socket.socket) -> None:
        """A session's start: the target connected, then the two transports."""
        assert self._loop is not None
        loop = self._loop
        upstream = socket.socket(_family(lst.target[0]), socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    await loop.sock_connect(upstream, lst.target)
            except (OSError, TimeoutError):
                upstream.close()
                _reset(conn)  # the target refused: so does the published port
                sess.done()
                return
            # the client's side first: it is not read until the target's side is there
            await loop.connect_accepted_socket(lambda: sess.client, conn)
            await loop.create_connection(lambda: sess.upstream, sock=upstream)
        except BaseException as exc:
            if sess.client.transport is None:
                conn.close()
            if sess.upstream.transport is None:
                upstream.close()
            sess.abort()
            sess.done()
            if not isinstance(exc, OSError):
                raise

    # -- UDP ------------------------------------------------------------------------

    def _on_datagram(self, lst: _Listener) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for _ in range(BURST):
            try:
                data, anc, _flags, client = lst.sock.recvmsg(65535, _CMSG_SPACE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            flow = lst.flows.get(client)
            if flow is None:
                if len(lst.flows) >= self.max_udp_flows:
                    continue  # at the bound: dropped, as a full conntrack table would
                try:
                    flow = self._open_flow(lst, client, _reply_pktinfo(lst.sock.family, anc))
                except OSError as exc:
                    log.warning("port proxy %s: %s", lst.address, exc)
                    if exc.errno in (errno.EMFILE, errno.ENFILE):
                        self._pause(lst, self._on_datagram)
                        return
                    continue
            flow.last = now
            with contextlib.suppress(OSError):  # full, or an earlier datagram refused
                flow.sock.send(data)

    def _open_flow(
        self, lst: _Listener, client: Any, pktinfo: tuple[int, int, bytes] | None
    ) -> _Flow:
        assert self._loop is not None
        s = socket.socket(_family(lst.target[0]), socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        try:
            s.connect(lst.target)
        except OSError:
            s.close()
            raise
        flow = _Flow(client, s, pktinfo)
        lst.flows[client] = flow
        self._loop.add_reader(s.fileno(), self._on_reply, lst, flow)
        flow.timer = self._loop.call_later(self.udp_timeout, self._expire, lst, flow)
        return flow

    def _on_reply(self, lst: _Listener, flow: _Flow) -> None:
        assert self._loop is not None
        flow.last = self._loop.time()
        anc = [flow.pktinfo] if flow.pktinfo is not None else []
        for _ in range(BURST):
            try:
                data = flow.sock.recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # ECONNREFUSED: nothing listens in the container (yet)
                return
            with contextlib.suppress(OSError):
                lst.sock.sendmsg([data], anc, 0, flow.client)

    def _expire(self, lst: _Listener, flow: _Flow) -> None:
        assert self._loop is not None
        idle = self._loop.time() - flow.last
        if idle < self.udp_timeout:
            flow.timer = self._loop.call_later(self.udp_timeout - idle, self._expire, lst, flow)
            return
        self._close_flow(lst, flow)

    def _close_flow(self, lst: _Listener, flow: _Flow) -> None:
        assert self._loop is not None
        if flow.timer is not None:
            flow.timer.cancel()
        if lst.flows.get(flow.client) is flow:
            del lst.flows[flow.client]
        with contextlib.suppress(ValueError, OSError):
            self._loop.remove_reader(flow.sock.fileno())
        flow.sock.close()


# --- helpers --------------------------------------------------------------------------------


class _Half(asyncio.Protocol):
    """One side of a TCP session: what it reads is written to the other side.

    Backpressure: when the other side's transport has too much to write
    (``pause_writing``), this side stops reading until it drained. A FIN read
    (``eof_received``) becomes a FIN written after what is queued; the
    transport stays open for the other direction."""

    def __init__(self, session: _Session) -> None:
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.other: _Half | None = None
        self.eof = False
        self.lost = False

    def _peer(self) -> asyncio.Transport:
        assert self.other is not None and self.other.transport is not None
        return self.other.transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.other is None or self.other.transport is None:
            transport.pause_reading()  # nowhere to write yet
        else:
            self.other.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self._peer().write(data)

    def eof_received(self) -> bool:
        self.eof = True
        peer = self._peer()
        if peer.can_write_eof():
            peer.write_eof()
        assert self.other is not None
        if self.other.eof:
            self.session.close()
        return True  # half-closed: keep writing the other direction

    def pause_writing(self) -> None:
        self._peer().pause_reading()

    def resume_writing(self) -> None:
        self._peer().resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.session.lost(self, exc)


class _Session:
    """A proxied TCP connection: the client's side, the target's side, their start."""

    def __init__(self, on_done: Callable[[_Session], None]) -> None:
        self.client = _Half(self)
        self.upstream = _Half(self)
        self.client.other, self.upstream.other = self.upstream, self.client
        self.task: asyncio.Task[None] | None = None
        self._on_done: Callable[[_Session], None] | None = on_done

    def close(self) -> None:
        """Both sides sent their FIN: close both once their queues are written."""
        for half in (self.client, self.upstream):
            if half.transport is not None:
                half.transport.close()

    def abort(self, *, reset: bool = False) -> None:
        """Both sides closed at once (``reset``: with an RST); the start cancelled."""
        if self.task is not None and not self.task.done() and self.task is not _current():
            self.task.cancel()
        for half in (self.client, self.upstream):
            if half.transport is not None and not half.lost:
                if reset:
                    _linger0(half.transport)
                half.transport.abort()
        self._maybe_done()

    def lost(self, half: _Half, exc: Exception | None) -> None:
        other = half.other
        assert other is not None
        if other.transport is not None and not other.lost:
            if exc is not None:  # an error (a reset) on one side: the other is reset
                _linger0(other.transport)
                other.transport.abort()
            else:
                other.transport.close()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if all(h.transport is None or h.lost for h in (self.client, self.upstream)):
            self.done()

    def done(self) -> None:
        if self._on_done is not None:
            self._on_done(self)
            self._on_done = None


def _current() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _linger0(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)


_LINGER0 = b"\x01\x00\x00\x00\x00\x00\x00\x00"


def _reset(s: socket.socket) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0): the peer sees ECONNRESET."""
    with contextlib.suppress(OSError):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
    s.close()


def _reply_pktinfo(
    family: int, ancdata: list[tuple[int, int, bytes]]
) -> tuple[int, int, bytes] | None:
    """The ancillary data that sends a reply from the address a datagram was sent to."""
    for level, kind, data in ancdata:
        if family == socket.AF_INET6 and level == socket.IPPROTO_IPV6 and kind == _IPV6_PKTINFO:
            return (level, kind, bytes(data[:20]))  # in6_pktinfo: address, ifindex
        if family == socket.AF_INET and level == socket.IPPROTO_IP and kind == _IP_PKTINFO:
            # in_pktinfo: ifindex, spec_dst, addr; reply from addr (the destination)
            return (level, kind, b"\x00\x00\x00\x00" + bytes(data[8:12]) + b"\x00\x00\x00\x00")
    return None
