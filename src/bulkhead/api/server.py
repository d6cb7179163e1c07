"""The Engine API's HTTP/1.1 server: h11 on asyncio streams, on a unix socket.

Why this stack: Docker's attach and exec ``start`` end HTTP on the
connection (``Connection: Upgrade``, ``Upgrade: tcp``, then a raw or
8-byte-framed multiplexed stream in both directions, with half-close).
h11 is a sans-I/O HTTP/1.1 state machine: we own the socket, so handing the
raw reader/writer (and whatever bytes h11 had already buffered) to a handler
is a few lines, and nothing else runs per request: no middleware chain, no
per-request task, no thread. aiohttp could do it too, but is a far larger
import (start-up counts when the CLI spawns the daemon) and hides the
transport behind its own abstractions. h11 is already installed (httpx
depends on it).

The daemon never forks: it starts processes only with ``posix_spawn`` (or
subprocess without ``preexec_fn``), so handlers may push blocking work
(SQLite, pulls, tar) to threads with ``asyncio.to_thread``; this module
itself runs everything on the event loop.

Request bodies are read in full before the handler runs (limited by
``max_body``, 413 beyond it), except for handlers registered with
``stream_body=True`` (image load and import, archive uploads): those get
``Request.stream`` and read the body as it arrives, without a cap; what
they leave unread is discarded before the response goes out, so the
connection stays usable. A client that waits for ``100 Continue`` gets it
when the handler first reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from http import HTTPStatus

import h11

from bulkhead import __version__
from bulkhead.api.errors import BadRequest, status_for
from bulkhead.api.routes import (
    API_VERSION,
    BodyStream,
    Handler,
    Hijack,
    RawStream,
    Reply,
    Request,
    Response,
    Router,
    StreamResponse,
    error_response,
    parse_target,
)

log = logging.getLogger("bulkhead.api")

SERVER_HEADER = f"bulkhead/{__version__}"
_READ_SIZE = 65536
MAX_BODY = 64 * 1024 * 1024


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _common_headers() -> list[tuple[str, str]]:
    return [
        ("Api-Version", API_VERSION),
        ("Docker-Experimental", "false"),
        ("Ostype", "linux"),
        ("Server", SERVER_HEADER),
        ("Date", formatdate(usegmt=True)),
    ]


class APIServer:
    """Serves a :class:`Router` on asyncio streams (one h11 connection per client)."""

    def __init__(self, router: Router, *, max_body: int = MAX_BODY) -> None:
        self.router = router
        self.max_body = max_body
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    async def start_unix(self, path: str) -> asyncio.AbstractServer:
        self._server = await asyncio.start_unix_server(self.handle_connection, path=path)
        return self._server

    async def close(self) -> None:
        """Stop accepting, close idle and hijacked connections."""
        if self._server is not None:
            self._server.close()
        for writer in list(self._connections):
            writer.close()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def handle_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self._connections.add(writer)
        # 1 MiB of headers: X-Registry-Config (build) carries every credential.
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=1 << 20)
        try:
            while True:
                request = await self._read_head(conn, reader)
                if request is None:
                    return
                handler, failure = self._resolve(request)
                if handler is not None and self.router.streams_body(handler):
                    request.stream = BodyStream(self._body_reader(conn, reader, writer))
                else:
                    body = await self._read_body(conn, reader, writer)
                    if body is None:
                        return
                    request.body = body
                if handler is None:
                    assert failure is not None
                    reply = failure
                else:
                    reply = await self._call(handler, request)
                broken = False
                if request.stream is not None and not isinstance(reply, Hijack):
                    try:
                        await request.stream.discard()
                    except BadRequest:
                        broken = True  # the client stopped mid-body: answer, then close
                if isinstance(reply, Hijack):
                    await self._hijack(conn, request, reply, reader, writer)
                    return
                await self._send(conn, writer, request.method, reply, reader)
                if broken:
                    return
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.LocalProtocolError:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except h11.RemoteProtocolError as exc:
            await self._send_raw_error(conn, writer, exc.error_status_hint, str(exc))
        except Exception:
            log.error("connection failed:\n%s", traceback.format_exc())
        finally:
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_head(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> Request | None:
        """The next request's line and headers; ``None`` when the client is done."""
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(_READ_SIZE))
                continue
            if isinstance(event, h11.Request):
                break
            if isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                return None
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("latin-1")
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        return Request(
            method=event.method.decode("ascii"),
            path=event.target.decode("latin-1"),  # replaced by _resolve
            version=API_VERSION,
            query={},
            headers=headers,
        )

    async def _read_body(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """The whole body (up to ``max_body``; 413 and ``None`` beyond it)."""
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                self._continue(conn, writer)
                conn.receive_data(await reader.read(_READ_SIZE))
                continue
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > self.max_body:
                    await self._send_raw_error(conn, writer, 413, "request body too large")
                    return None
                continue
            if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                return bytes(body)
            if isinstance(event, h11.ConnectionClosed):
                return None

    @staticmethod
    def _continue(conn: h11.Connection, writer: asyncio.StreamWriter) -> None:
        """Answer ``Expect: 100-continue`` before waiting for the body."""
        if conn.they_are_waiting_for_100_continue:
            writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])) or b"")

    def _body_reader(
        self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> Callable[[], Awaitable[bytes]]:
        """The next-chunk function of a streamed body (``b""`` at its end)."""

        async def next_chunk() -> bytes:
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    raise BadRequest(f"incomplete request body: {exc}") from None
                if event is h11.NEED_DATA:
                    self._continue(conn, writer)
                    conn.receive_data(await reader.read(_READ_SIZE))
                    continue
                if isinstance(event, h11.Data):
                    if event.data:
                        return bytes(event.data)
                    continue
                if isinstance(event, h11.EndOfMessage) or event is h11.PAUSED:
                    return b""
                if isinstance(event, h11.ConnectionClosed):
                    raise BadRequest("incomplete request body: the client closed the connection")

        return next_chunk

    def _resolve(self, request: Request) -> tuple[Handler | None, Reply | None]:
        """The handler for ``request`` (its version, path, query and params filled in), or an error reply."""
        try:
            request.version, request.path, request.query = parse_target(request.path)
            handler, request.params = self.router.match(request.method, request.path)
        except Exception as exc:
            return None, self._error_reply(request, exc)
        return handler, None

    async def _call(self, handler: Handler, request: Request) -> Reply:
        try:
            return await handler(request)
        except Exception as exc:
            return self._error_reply(request, exc)

    @staticmethod
    def _error_reply(request: Request, exc: Exception) -> Response:
        status = status_for(exc)
        if status >= 500:
            log.error("%s %s failed:\n%s", request.method, request.path, traceback.format_exc())
        if status == 304:
            return Response(304, b"", None)
        return error_response(status, str(exc) or type(exc).__name__)

    async def _send(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        method: str,
        reply: Response | StreamResponse,
        reader: asyncio.StreamReader | None = None,
    ) -> None:
        headers = _common_headers()
        if reply.content_type:
            headers.append(("Content-Type", reply.content_type))
        headers.extend(reply.headers)
        if isinstance(reply, Response):
            no_body = method == "HEAD" or reply.status in (204, 304)
            if not no_body:
                headers.append(("Content-Length", str(len(reply.body))))
            elif method == "HEAD":
                headers.append(("Content-Length", "0"))
            out = (
                conn.send(
                    h11.Response(
                        status_code=reply.status, headers=headers, reason=_reason(reply.status)
                    )
                )
                or b""
            )
            if reply.body and not no_body:
                out += conn.send(h11.Data(data=reply.body)) or b""
            out += conn.send(h11.EndOfMessage()) or b""
            writer.write(out)
            await writer.drain()
            return
        # StreamResponse: chunked (h11 picks it for an HTTP/1.1 client without a length).
        writer.write(
            conn.send(
                h11.Response(
                    status_code=reply.status, headers=headers, reason=_reason(reply.status)
                )
            )
            or b""
        )
        await writer.drain()

        async def pump() -> None:
            try:
                async for chunk in reply.chunks:
                    if chunk and method != "HEAD":
                        writer.write(conn.send(h11.Data(data=chunk)) or b"")
                        await writer.drain()
            finally:
                aclose = getattr(reply.chunks, "aclose", None)
                if aclose is not None:
                    await aclose()

        if reader is None:
            await pump()
        else:
            await self._pump_while_connected(conn, reader, pump())
        writer.write(conn.send(h11.EndOfMessage()) or b"")
        await writer.drain()

    @staticmethod
    async def _pump_while_connected(
        conn: h11.Connection, reader: asyncio.StreamReader, pump: Awaitable[None]
    ) -> None:
        """Stream a response, stopping it when the client hangs up.

        A stream may stay silent for long (``logs --follow`` of a quiet
        container, ``events``): without watching the connection, the
        producer of a client that left (Ctrl-C) would keep running until it
        next writes. As Go's ``net/http`` does for dockerd, end-of-file on
        the request side cancels the response; bytes that arrive instead
        (a pipelined request) are kept for the next cycle.
        """
        sending = asyncio.ensure_future(pump)
        watching = asyncio.ensure_future(reader.read(_READ_SIZE))
        try:
            await asyncio.wait({sending, watching}, return_when=asyncio.FIRST_COMPLETED)
            if not sending.done():
                error = watching.exception()
                data = b"" if error is not None else watching.result()
                if not data:
                    sending.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sending
                    raise ConnectionResetError("the client closed the connection")
                conn.receive_data(data)
            await sending
        finally:
            for task in (sending, watching):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    async def _hijack(
        self,
        conn: h11.Connection,
        request: Request,
        reply: Hijack,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        # Headers written by hand, as Docker's hijack does: h11 would insist on
        # a framing for a 200, and the connection leaves HTTP here anyway.
        upgrade = "upgrade" in request.headers.get("connection", "").lower()
        lines = [
            "HTTP/1.1 101 UPGRADED" if upgrade else "HTTP/1.1 200 OK",
            f"Content-Type: {reply.content_type}",
        ]
        if upgrade:
            lines += ["Connection: Upgrade", "Upgrade: tcp"]
        lines += [f"{k}: {v}" for k, v in _common_headers()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        await writer.drain()
        pending, _closed = conn.trailing_data
        await reply.handler(RawStream(reader, writer, bytes(pending)))

    async def _send_raw_error(
        self, conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str
    ) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        reply = error_response(status, message)
        reply.headers.append(("Connection", "close"))
        with contextlib.suppress(Exception):
            await self._send(conn, writer, "GET", reply)
