"""The ``/containers`` endpoints of the Engine API, on :class:`bulkhead.engine.engine.Engine`.

Vocabulary:

*attach*
    ``POST /containers/{id}/attach``: the client takes over the connection
    (a *hijack*: ``101 UPGRADED`` when it asked with ``Upgrade: tcp``) and
    gets the container's output while its bytes go to the container's
    stdin. With a TTY the stream is *raw* (the terminal's bytes); without
    one it is *multiplexed*: every chunk has Docker's 8-byte header
    (stream 1 stdout, 2 stderr, then a big-endian length). The container's
    monitor already speaks both forms on its ``attach.sock``, so the API
    only splices bytes between the two sockets.
*attach before start*
    ``docker run`` attaches to a created container, then starts it. The
    attach connects to the monitor (spawned by
    :meth:`~bulkhead.engine.engine.Engine.attach_monitor`, the container
    still "created") *before* answering, so nothing the program writes
    after ``start`` is missed.
*detach keys*
    a key sequence on stdin (``ctrl-p,ctrl-q`` by default, ``detachKeys=``)
    that ends the attach and leaves the container running.
*half-close* and *lingering close*
    a client ends its stdin by shutting down its write side: without a
    TTY that becomes the container's stdin EOF and output goes on; with a
    TTY it ends the attach (Docker's rule). When the output is over the
    daemon half-closes too, then discards what the client still sends until
    it closes (:func:`linger_close`): closing a socket with unread input
    would make the kernel reset the connection and lose output in flight.
*logs*
    ``GET /containers/{id}/logs`` reads the json-file log the monitor
    writes (:func:`bulkhead.engine.jsonlog.follow_logs`); ``follow`` goes
    on until the container stops.
*wait*
    ``POST /containers/{id}/wait`` answers its headers at once (the client
    then knows the wait is registered, and starts the container) and its
    body ``{"StatusCode": n}`` when the condition is met.

Every handler raises :mod:`bulkhead.errors` classes; the server maps them
to Docker's statuses (404 no such container, 409 conflicts, 400 bad input).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from bulkhead.api.errors import APIError, BadRequest
from bulkhead.api.routes import (
    Hijack,
    RawStream,
    Request,
    Response,
    Router,
    StreamResponse,
    frame,
    json_response,
)
from bulkhead.engine.hostconfig import parse_create_request
from bulkhead.errors import BulkheadError

if TYPE_CHECKING:
    from bulkhead.engine.context import Services
    from bulkhead.engine.engine import Engine
    from bulkhead.engine.jsonlog import LogPosition

log = logging.getLogger("bulkhead.api.containers")

#: Docker's default detach sequence: ctrl-p, ctrl-q.
DEFAULT_DETACH_KEYS = b"\x10\x11"

_CTRL_SPECIAL = {"@": 0, "[": 27, "\\": 28, "]": 29, "^": 30, "_": 31}

_READ = 65536

#: How long a finished hijacked stream waits for the client to close (see linger_close).
LINGER_TIMEOUT = 5.0

#: Pause between the hijack's response head and the replayed log (``logs=1``).
REPLAY_DELAY = 0.02


# --- detach keys and stream splicing ---------------------------------------------------


def parse_detach_keys(text: str | None) -> bytes:
    """Docker's ``--detach-keys`` syntax (``ctrl-p,ctrl-q``, ``a,ctrl-\\\\``) as bytes.

    ``None`` or ``""`` is the default sequence; a malformed one is a 400.
    """
    if not text:
        return DEFAULT_DETACH_KEYS
    out = bytearray()
    for part in text.split(","):
        if part.startswith("ctrl-") and len(part) == 6:
            c = part[5]
            if "a" <= c.lower() <= "z":
                out.append(ord(c.lower()) - ord("a") + 1)
                continue
            if c in _CTRL_SPECIAL:
                out.append(_CTRL_SPECIAL[c])
                continue
        elif len(part) == 1:
            out += part.encode()
            continue
        raise BadRequest(f"Invalid detach keys ({text}) provided: unknown character {part!r}")
    return bytes(out)


class DetachScanner:
    """Finds the detach sequence in stdin, holding back a partial match until it is decided."""

    def __init__(self, keys: bytes) -> None:
        self.keys = keys
        self._held = b""

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """``(bytes to forward, detach?)`` for the next stdin chunk."""
        if not self.keys:
            return data, False
        out = bytearray()
        for b in data:
            self._held += bytes([b])
            if self.keys.startswith(self._held):
                if self._held == self.keys:
                    self._held = b""
                    return bytes(out), True
                continue
            # not a prefix any more: the first held byte is plain input
            while self._held and not self.keys.startswith(self._held):
                out.append(self._held[0])
                self._held = self._held[1:]
        return bytes(out), False


async def splice(
    stream: RawStream,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *,
    stdin: bool,
    detach_keys: bytes = b"",
    tty: bool = False,
) -> None:
    """Pump the monitor's output to the client and the client's stdin to the monitor.

    Ends when the monitor closes (the process exited and its output is
    drained), when the client detaches or goes away. Without a TTY the
    client's half-close becomes the monitor's (stdin EOF) while output goes
    on; with one it ends an attach that has stdin, as Docker's does (a
    terminal's input has no end of file).
    """
    # Docker looks for the detach sequence only on a terminal's input: piped
    # stdin is data, and any two bytes may be ctrl-p ctrl-q.
    scanner = DetachScanner(detach_keys if stdin and tty else b"")

    async def output() -> None:
        while True:
            data = await reader.read(_READ)
            if not data:
                return
            await stream.write(data)

    async def input_() -> str:
        while True:
            data = await stream.read(_READ)
            if not data:
                if not stdin:
                    return "eof"  # the client sends nothing anyway (docker run -t)
                if tty:
                    return "closed"
                with contextlib.suppress(OSError, RuntimeError):
                    if writer.can_write_eof():
                        writer.write_eof()
                return "eof"
            if not stdin:
                continue
            data, detach = scanner.feed(data)
            if data:
                writer.write(data)
                await writer.drain()
            if detach:
                return "detach"

    out_task = asyncio.ensure_future(output())
    in_task = asyncio.ensure_future(input_())
    try:
        done, _ = await asyncio.wait({out_task, in_task}, return_when=asyncio.FIRST_COMPLETED)
        if (
            in_task in done
            and not in_task.cancelled()
            and in_task.exception() is None
            and in_task.result() == "eof"
        ):
            await out_task  # stdin ended; the output goes on until the process ends
    except (ConnectionError, OSError):
        pass
    finally:
        for task in (out_task, in_task):
            task.cancel()
        for task in (out_task, in_task):
            with contextlib.suppress(BaseException):
                await task
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def linger_close(stream: RawStream, timeout: float = LINGER_TIMEOUT) -> None:
    """End the output (half-close), then discard what the client still sends until it closes.

    Closing a unix socket with unread input makes the kernel reset the
    connection, and the client may then lose output it had not read yet
    (``docker run -i`` with stdin the container never read). The server
    closes the connection when the handler returns.
    """
    with contextlib.suppress(OSError, RuntimeError):
        stream.close_write()
    try:
        async with asyncio.timeout(timeout):
            while await stream.read(_READ):
                pass
    except (TimeoutError, OSError):
        pass


# --- query helpers ------------------------------------------------------------------------


def _timestamp(req: Request, name: str) -> float | None:
    """Docker's ``since``/``until``: seconds since the epoch, with optional fraction (0: none)."""
    value = req.query_str(name)
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        raise BadRequest(
            f"invalid value for {name}: {value!r} (seconds since the epoch, e.g. 1700000000.5)"
        ) from None
    return seconds if seconds > 0 else None


def _tail(req: Request) -> int | None:
    value = req.query_str("tail")
    if value in (None, "", "all"):
        return None
    try:
        n = int(value)
    except ValueError:
        raise BadRequest(f"invalid value for tail: {value!r} (a number or all)") from None
    return n if n >= 0 else None


def _int_param(req: Request, name: str) -> int | None:
    value = req.query_str(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"invalid value for {name}: {value!r} (an integer)") from None


def _is_tty(config: dict[str, Any]) -> bool:
    return bool(config.get("Tty"))


# --- the endpoints ------------------------------------------------------------------------


class ContainersAPI:
    """The handlers, bound to one engine."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.engine: Engine = services.engine

    # -- create / lifecycle

    async def create(self, req: Request) -> Response:
        body = req.json()
        if body is None:
            raise BadRequest("invalid JSON body: a ContainerCreateRequest is required")
        name = req.query_str("name") or None
        platform = req.query_str("platform") or None
        # inline: ~50 µs (0.5 ms with --privileged's /dev scan), less than a thread hop
        creq = parse_create_request(body, name=name, platform=platform)
        cid, warnings = await self.engine.create(creq, name)
        return json_response({"Id": cid, "Warnings": list(warnings or [])}, 201)

    async def start(self, req: Request) -> Response:
        body = req.json()
        if body not in (None, {}):
            raise BadRequest(
                "starting container with non-empty request body was deprecated since API "
                "v1.22 and removed in v1.24"
            )
        started = await self.engine.start(req.params["id"])
        return Response(204 if started else 304, b"", None)

    async def stop(self, req: Request) -> Response:
        timeout = _int_param(req, "t")
        signal = req.query_str("signal") or None
        stopped = await self.engine.stop(req.params["id"], timeout=timeout, signal=signal)
        return Response(204 if stopped else 304, b"", None)

    async def kill(self, req: Request) -> Response:
        signal = req.query_str("signal") or "SIGKILL"
        await self.engine.kill(req.params["id"], signal)
        return Response(204, b"", None)

    async def restart(self, req: Request) -> Response:
        timeout = _int_param(req, "t")
        signal = req.query_str("signal") or None
        await self.engine.restart(req.params["id"], timeout=timeout, signal=signal)
        return Response(204, b"", None)

    async def pause(self, req: Request) -> Response:
        await self.engine.pause(req.params["id"])
        return Response(204, b"", None)

    async def unpause(self, req: Request) -> Response:
        await self.engine.unpause(req.params["id"])
        return Response(204, b"", None)

    async def update(self, req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise BadRequest("invalid JSON body: a ContainerUpdateRequest object is required")
        warnings = await self.engine.update(req.params["id"], body)
        return json_response({"Warnings": list(warnings)})

    async def wait(self, req: Request) -> StreamResponse:
        condition = req.query_str("condition") or "not-running"
        if condition not in ("not-running", "next-exit", "removed"):
            raise BadRequest(f"invalid condition: {condition!r} (not-running, next-exit, removed)")
        c = self.engine.get(req.params["id"])  # 404 before the headers go out
        task = asyncio.ensure_future(self.engine.wait(c.id, condition))
        await asyncio.sleep(0)  # the wait is registered before the client sees the headers

        async def body() -> AsyncIterator[bytes]:
            try:
                code, error = await task
            except BulkheadError as exc:
                code, error = -1, str(exc)
            finally:
                if not task.done():
                    task.cancel()
            doc: dict[str, Any] = {"StatusCode": code}
            if error:
                doc["Error"] = {"Message": error}
            yield json.dumps(doc).encode() + b"\n"

        return StreamResponse(body())

    async def remove(self, req: Request) -> Response:
        if req.query_bool("link"):
            raise BadRequest("links are not supported: there are no legacy links")
        await self.engine.remove(
            req.params["id"], force=req.query_bool("force"), volumes=req.query_bool("v")
        )
        return Response(204, b"", None)

    async def rename(self, req: Request) -> Response:
        name = req.query_str("name")
        if not name:
            raise BadRequest("invalid container name: a new name is required (name=)")
        self.engine.rename(req.params["id"], name)
        return Response(204, b"", None)

    # -- views

    async def list(self, req: Request) -> Response:
        limit = _int_param(req, "limit")
        rows = self.engine.list(
            all=req.query_bool("all"),
            limit=-1 if limit is None or limit <= 0 else limit,
            size=req.query_bool("size"),
            filters=req.filters(),
        )
        if not req.version_at_least("1.52"):  # ContainerSummary.Health came with API 1.52
            for row in rows:
                row.pop("Health", None)
        return json_response(rows)

    async def inspect(self, req: Request) -> Response:
        return json_response(self.engine.inspect(req.params["id"], size=req.query_bool("size")))

    # -- attach / resize / logs

    async def attach(self, req: Request) -> Hijack:
        engine = self.engine
        c = engine.get(req.params["id"])
        tty = _is_tty(c.config)
        want_stdin = req.query_bool("stdin")
        want_stdout = req.query_bool("stdout")
        want_stderr = req.query_bool("stderr")
        replay = req.query_bool("logs")
        live = req.query_bool("stream")
        keys = parse_detach_keys(req.query_str("detachKeys"))
        if c.state.paused:
            raise APIError(f"container {c.id} is paused, unpause the container before attach", 409)
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        # What the live stream carries must not be replayed too: the replay ends where
        # the log was when the monitor registered us (logs=1&stream=1).
        upto: LogPosition | None = None
        if live and c.state.status not in ("exited", "dead", "removing"):
            # Connect to the monitor now, before answering: a start that
            # follows this response cannot produce output we miss.
            client = await engine.attach_monitor(c.id)
            if client is not None:
                try:
                    reader, writer, upto = await client.attach_at(
                        want_stdin, want_stdout, want_stderr
                    )
                    conn = reader, writer
                except (BulkheadError, OSError) as exc:
                    # the container ended (or never began) meanwhile: nothing to stream
                    log.info("attach to %s: %s", c.id[:12], exc)
        log_path = c.log_path
        engine.emit(c, "attach")

        async def pump(stream: RawStream) -> None:
            try:
                if replay and log_path and (conn is None or upto is not None):
                    from bulkhead.engine.jsonlog import follow_logs

                    # Let the client finish reading the response head first:
                    # docker-py (http.client) reads it through a buffer and
                    # then reads the raw socket, losing whatever came along.
                    await asyncio.sleep(REPLAY_DELAY)
                    async for num, data in follow_logs(
                        log_path, stdout=want_stdout, stderr=want_stderr, upto=upto
                    ):
                        await stream.write(data if tty else frame(num, data))
                if conn is not None:
                    await splice(
                        stream, conn[0], conn[1], stdin=want_stdin, detach_keys=keys, tty=tty
                    )
                await linger_close(stream)
            finally:
                if conn is not None:
                    conn[1].close()

        return Hijack(pump, multiplexed=not tty)

    async def resize(self, req: Request) -> Response:
        height = _int_param(req, "h")
        width = _int_param(req, "w")
        if height is None or width is None or height < 0 or width < 0:
            raise BadRequest("invalid resize: h and w must be non-negative integers")
        client = self.engine.monitor(req.params["id"])
        await client.resize(height, width)
        self.engine.emit(
            self.engine.get(req.params["id"]), "resize", height=str(height), width=str(width)
        )
        return Response(200, b"", "text/plain; charset=utf-8")

    async def logs(self, req: Request) -> StreamResponse:
        engine = self.engine
        c = engine.get(req.params["id"])
        stdout = req.query_bool("stdout")
        stderr = req.query_bool("stderr")
        if not (stdout or stderr):
            raise BadRequest("Bad parameters: you must choose at least one stream")
        if not c.log_path:
            raise APIError("configured logging driver does not support reading", 501)
        since = _timestamp(req, "since")
        until = _timestamp(req, "until")
        tail = _tail(req)
        timestamps = req.query_bool("timestamps")
        follow = req.query_bool("follow") and c.state.running
        tty = _is_tty(c.config)
        log_path = c.log_path
        cid = c.id

        async def chunks() -> AsyncIterator[bytes]:
            from bulkhead.engine.jsonlog import follow_log_batches

            stop = asyncio.Event()
            watcher: asyncio.Future[Any] | None = None
            if follow:

                async def watch() -> None:
                    try:
                        await engine.wait(cid, "not-running")
                    finally:
                        stop.set()

                watcher = asyncio.ensure_future(watch())
            try:
                batches = follow_log_batches(
                    log_path,
                    since=since,
                    until=until,
                    tail=tail,
                    follow=follow,
                    stdout=stdout,
                    stderr=stderr,
                    timestamps=timestamps,
                    stop_event=stop,
                )
                async with contextlib.aclosing(batches):
                    async for batch in batches:  # one write per read of the log
                        if tty:
                            yield b"".join(data for _, data in batch)
                        else:
                            yield b"".join(frame(num, data) for num, data in batch)
            finally:
                if watcher is not None:
                    watcher.cancel()
                    with contextlib.suppress(BaseException):
                        await watcher

        content_type = (
            "application/vnd.docker.raw-stream"
            if tty
            else "application/vnd.docker.multiplexed-stream"
        )
        return StreamResponse(chunks(), content_type=content_type)

    # -- files: export, changes, archive (docker cp), commit

    async def export(self, req: Request) -> StreamResponse:
        chunks = await self.engine.export(req.params["id"])
        return StreamResponse(chunks, content_type="application/x-tar")

    async def changes(self, req: Request) -> Response:
        return json_response(list(await self.engine.changes(req.params["id"])))

    async def archive_get(self, req: Request) -> Response | StreamResponse:
        path = req.query_str("path")
        if not path:
            raise BadRequest("Bad parameters: path cannot be empty")
        if req.method == "HEAD":
            # a stat only: no tar of what may be the whole root filesystem
            stat = await self.engine.archive_stat(req.params["id"], path)
            return Response(200, b"", "application/x-tar", [_path_stat_header(stat)])
        stat, chunks = await self.engine.archive_get(req.params["id"], path)
        return StreamResponse(
            chunks, content_type="application/x-tar", headers=[_path_stat_header(stat)]
        )

    async def archive_put(self, req: Request) -> Response:
        path = req.query_str("path")
        if not path:
            raise BadRequest("Bad parameters: path cannot be empty")
        body: AsyncIterator[bytes] | bytes = (
            aiter(req.stream) if req.stream is not None else req.body
        )
        await self.engine.archive_put(
            req.params["id"],
            path,
            body,
            no_overwrite_dir_non_dir=req.query_bool("noOverwriteDirNonDir"),
            copy_uid_gid=req.query_bool("copyUIDGID"),
        )
        return Response(200, b"", None)

    async def commit(self, req: Request) -> Response:
        ref = req.query_str("container")
        if not ref:
            raise BadRequest("Bad parameters: container is required")
        config = req.json()
        if config is not None and not isinstance(config, dict):
            raise BadRequest("invalid JSON body: a container Config object is expected")
        image_id = await self.engine.commit(
            ref,
            repo=req.query_str("repo") or None,
            tag=req.query_str("tag") or None,
            comment=req.query_str("comment") or "",
            author=req.query_str("author") or "",
            changes=req.query.get("changes", []),
            pause=req.query_bool("pause", True),
            config=config or None,
        )
        return json_response({"Id": image_id}, 201)

    async def prune(self, req: Request) -> Response:
        return json_response(await self.engine.prune(req.filters()))


def _path_stat_header(stat: dict[str, Any]) -> tuple[str, str]:
    """Docker's ``X-Docker-Container-Path-Stat``: the path's stat as base64 JSON."""
    return ("X-Docker-Container-Path-Stat", base64.b64encode(json.dumps(stat).encode()).decode())


def register(router: Router, services: Services) -> None:
    """Add the ``/containers`` (and ``/commit``) endpoints to ``router``."""
    api = ContainersAPI(services)
    routes: list[tuple[str, str, Callable[[Request], Awaitable[Any]]]] = [
        ("POST", "/containers/create", api.create),
        ("GET", "/containers/json", api.list),
        ("POST", "/containers/prune", api.prune),
        ("GET", "/containers/{id}/json", api.inspect),
        ("POST", "/containers/{id}/start", api.start),
        ("POST", "/containers/{id}/stop", api.stop),
        ("POST", "/containers/{id}/kill", api.kill),
        ("POST", "/containers/{id}/restart", api.restart),
        ("POST", "/containers/{id}/wait", api.wait),
        ("POST", "/containers/{id}/pause", api.pause),
        ("POST", "/containers/{id}/unpause", api.unpause),
        ("POST", "/containers/{id}/update", api.update),
        ("POST", "/containers/{id}/attach", api.attach),
        ("POST", "/containers/{id}/resize", api.resize),
        ("GET", "/containers/{id}/logs", api.logs),
        ("POST", "/containers/{id}/rename", api.rename),
        ("DELETE", "/containers/{id}", api.remove),
        ("GET", "/containers/{id}/export", api.export),
        ("GET", "/containers/{id}/changes", api.changes),
        ("GET", "/containers/{id}/archive", api.archive_get),
        ("HEAD", "/containers/{id}/archive", api.archive_get),
        ("POST", "/commit", api.commit),
    ]
    for method, pattern, handler in routes:
        router.add(method, pattern, handler)
    router.add("PUT", "/containers/{id}/archive", api.archive_put, stream_body=True)


__all__ = ["ContainersAPI", "DetachScanner", "parse_detach_keys", "register", "splice"]
