"""Requests, responses and the routing table of the Engine API.

The engine fills a :class:`Router` with handlers::

    router = Router()

    @router.get("/containers/{id}/json")
    async def inspect(req: Request) -> Response:
        c = engine.get(req.params["id"])          # raises ContainerNotFound -> 404
        return json_response(c.inspect(size=req.query_bool("size")))

    @router.post("/containers/{id}/attach")
    async def attach(req: Request) -> Response:
        async def pump(stream: RawStream) -> None: ...
        return Hijack(pump, multiplexed=True)

Patterns are matched on the path with the ``/vX.Y`` prefix removed (the
requested version is in ``Request.version``). ``{name}`` matches one path
segment, ``{name:path}`` one or more (image names hold slashes:
``/images/{name:path}/json``). Handlers are ``async`` and return a
:class:`Response`, a :class:`StreamResponse` (chunked, for pull progress,
logs ``--follow``, events) or a :class:`Hijack`; they raise errors from
:mod:`bulkhead.errors` or :mod:`bulkhead.api.errors`.

A request body is read in full before the handler runs (``Request.body``,
capped by the server), unless the handler was registered with
``stream_body=True`` (image load and import, ``PUT .../archive``): then
``Request.stream`` is a :class:`BodyStream` the handler reads as it goes,
with no size cap, and whatever it leaves unread is discarded after it
returns::

    @router.post("/images/load", stream_body=True)
    async def load(req: Request) -> Response:
        async for chunk in req.body_stream():
            spool.write(chunk)
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from bulkhead.api.errors import BadRequest, NotFound

API_VERSION = "1.56"
MIN_API_VERSION = "1.24"

_VERSION_PREFIX = re.compile(r"^/v(\d+)\.(\d+)(?=/)")


def parse_version(text: str) -> tuple[int, int]:
    """``"1.41"`` as ``(1, 41)``; :class:`BadRequest` for anything else."""
    major, sep, minor = text.partition(".")
    if not sep or not major.isdigit() or not minor.isdigit():
        raise BadRequest(f"invalid API version {text!r}")
    return int(major), int(minor)


_MAX = parse_version(API_VERSION)
_MIN = parse_version(MIN_API_VERSION)


def split_version(path: str) -> tuple[str, str]:
    """``("1.41", "/containers/json")`` for ``/v1.41/containers/json``.

    Without a prefix the version is :data:`API_VERSION`. A version above it
    or below :data:`MIN_API_VERSION` is a :class:`BadRequest` with Docker's
    wording.
    """
    m = _VERSION_PREFIX.match(path)
    if m is None:
        return API_VERSION, path
    version = (int(m.group(1)), int(m.group(2)))
    text = f"{version[0]}.{version[1]}"
    if version > _MAX:
        raise BadRequest(
            f"client version {text} is too new. Maximum supported API version is {API_VERSION}"
        )
    if version < _MIN:
        raise BadRequest(
            f"client version {text} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )
    return text, path[m.end() :]


_TRUE = frozenset({"1", "true", "True", "TRUE", "t", "T"})
_FALSE = frozenset({"0", "false", "False", "FALSE", "f", "F"})


class BodyStream:
    """A request body read as it arrives (for handlers registered with ``stream_body``).

    ``next_chunk`` gives the next piece of the body, ``b""`` at its end;
    the server builds one over its HTTP parser. :meth:`of` makes one from
    bytes (tests, or a handler called directly).
    """

    def __init__(self, next_chunk: Callable[[], Awaitable[bytes]]) -> None:
        self._next = next_chunk
        self._buffer = b""
        self._done = False
        self.received = 0  # bytes handed out so far

    @classmethod
    def of(cls, chunks: bytes | Iterable[bytes]) -> BodyStream:
        pieces = [chunks] if isinstance(chunks, bytes) else list(chunks)

        async def next_chunk() -> bytes:
            while pieces:
                piece = pieces.pop(0)
                if piece:
                    return piece
            return b""

        return cls(next_chunk)

    @property
    def at_end(self) -> bool:
        """Whether the whole body has been read."""
        return self._done and not self._buffer

    async def _fill(self) -> bytes:
        if self._buffer:
            data, self._buffer = self._buffer, b""
            return data
        if self._done:
            return b""
        data = await self._next()
        if not data:
            self._done = True
        return data

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest when ``n < 0``); ``b""`` at the end of the body."""
        if n < 0:
            parts = []
            while data := await self._fill():
                parts.append(data)
            out = b"".join(parts)
        else:
            out = await self._fill()
            if len(out) > n:
                out, self._buffer = out[:n], out[n:]
        self.received += len(out)
        return out

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        while data := await self._fill():
            self.received += len(data)
            yield data

    async def discard(self) -> int:
        """Read and drop the rest of the body; return how many bytes that was."""
        dropped = 0
        while data := await self._fill():
            dropped += len(data)
        return dropped


@dataclass(slots=True)
class Request:
    """One API request: its body read in full, or (``stream_body`` handlers) as a stream."""

    method: str
    path: str  # without the version prefix and the query string
    version: str  # the API version the client asked for ("1.56" without a prefix)
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names; repeated headers joined with ", "
    body: bytes = b""
    params: dict[str, str] = field(default_factory=dict)
    stream: BodyStream | None = None  # set for handlers registered with stream_body=True

    def body_stream(self) -> BodyStream:
        """The body as a :class:`BodyStream` (from ``body`` when it was read in full)."""
        if self.stream is None:
            self.stream = BodyStream.of(self.body)
        return self.stream

    def version_at_least(self, version: str) -> bool:
        """Whether the client asked for ``version`` or later (behaviour that changed)."""
        return parse_version(self.version) >= parse_version(version)

    def query_str(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else default

    def query_bool(self, name: str, default: bool = False) -> bool:
        """Docker's booleans (Go's ``strconv.ParseBool``): ``1``/``true``, ``0``/``false``.

        An empty value (``?all=``) is ``default``, as in Docker.
        """
        values = self.query.get(name)
        if not values or values[-1] == "":
            return default
        value = values[-1]
        if value in _TRUE:
            return True
        if value in _FALSE:
            return False
        raise BadRequest(f"invalid boolean value {value!r} for query parameter {name!r}")

    def query_int(self, name: str, default: int | None = None) -> int | None:
        value = self.query_str(name)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            raise BadRequest(
                f"invalid integer value {value!r} for query parameter {name!r}"
            ) from None

    def filters(self) -> dict[str, list[str]]:
        """The ``filters`` parameter: ``{"label": ["a=b"]}``.

        Docker accepts both ``{"key": ["v"]}`` and the older
        ``{"key": {"v": true}}``; both come back as lists.
        """
        raw = self.query_str("filters")
        if not raw:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise BadRequest(f"invalid filter: {exc}") from None
        if not isinstance(doc, dict):
            raise BadRequest("invalid filter: not a JSON object")
        out: dict[str, list[str]] = {}
        for key, value in doc.items():
            if isinstance(value, dict):
                out[key] = [str(k) for k, v in value.items() if v]
            elif isinstance(value, list):
                out[key] = [str(v) for v in value]
            elif isinstance(value, str):
                out[key] = [value]
            else:
                raise BadRequest(f"invalid filter {key!r}")
        return out

    def json(self) -> Any:
        """The body as JSON (``None`` when empty); :class:`BadRequest` when malformed."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise BadRequest(f"invalid JSON: {exc}") from None


def bool_field(body: dict[str, Any], field: str) -> bool:
    """``body[field]`` as a JSON boolean (False when absent); :class:`BadRequest` otherwise."""
    value = body.get(field)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"invalid {field}: expected a boolean, got {value!r}")
    return value


def str_map(body: dict[str, Any], field: str) -> dict[str, str]:
    """``body[field]`` as a string-to-string map (``Labels``, ``Options``...): {} when absent,
    :class:`BadRequest` naming the field when it is anything else."""
    value = body.get(field)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise BadRequest(f"invalid {field}: must be an object of strings")
    return dict(value)


@dataclass(slots=True)
class Response:
    """A complete response: status, body and extra headers."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


@dataclass(slots=True)
class StreamResponse:
    """A response whose body is produced as it goes (chunked transfer encoding)."""

    chunks: AsyncIterator[bytes]
    status: int = 200
    content_type: str | None = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


class RawStream:
    """The connection after a hijack: bytes in both directions, no HTTP any more.

    ``read`` first returns what the HTTP parser had already buffered.
    """

    def __init__(self, reader: Any, writer: Any, pending: bytes = b"") -> None:
        self._reader = reader
        self._writer = writer
        self._pending = pending

    async def read(self, n: int = 65536) -> bytes:
        """Up to ``n`` bytes; ``b""`` at end of stream (the client closed its side)."""
        if self._pending:
            head, self._pending = self._pending[:n], self._pending[n:]
            return head
        data: bytes = await self._reader.read(n)
        return data

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def write_frame(self, stream: int, data: bytes) -> None:
        """``data`` with Docker's 8-byte multiplexed header (stream 0 stdin, 1 stdout, 2 stderr)."""
        await self.write(frame(stream, data))

    def close_write(self) -> None:
        """Half-close: the client sees the end of output and may still send."""
        if self._writer.can_write_eof():
            self._writer.write_eof()


STDIN, STDOUT, STDERR, SYSTEMERR = 0, 1, 2, 3
_FRAME = struct.Struct(">BxxxI")


def frame(stream: int, data: bytes) -> bytes:
    """Docker's multiplexed frame: stream type, three zero bytes, big-endian uint32 length."""
    return _FRAME.pack(stream, len(data)) + data


def parse_frame_header(header: bytes) -> tuple[int, int]:
    """``(stream, length)`` of an 8-byte frame header."""
    stream, length = _FRAME.unpack(header)
    return int(stream), int(length)


HijackHandler = Callable[[RawStream], Awaitable[None]]


@dataclass(slots=True)
class Hijack:
    """Take the connection over after the response headers (attach, exec start).

    The server answers ``101 UPGRADED`` (``Connection: Upgrade``,
    ``Upgrade: tcp``) when the client asked to upgrade, else ``200 OK``, with
    the content type of a raw (TTY) or multiplexed stream, then awaits
    ``handler`` with the :class:`RawStream` and closes the connection when it
    returns.
    """

    handler: HijackHandler
    multiplexed: bool = True

    @property
    def content_type(self) -> str:
        if self.multiplexed:
            return "application/vnd.docker.multiplexed-stream"
        return "application/vnd.docker.raw-stream"


Reply = Response | StreamResponse | Hijack
Handler = Callable[[Request], Awaitable[Reply]]

_PARAM = re.compile(r"\{(\w+)(?::(path))?\}")


def _compile(pattern: str) -> re.Pattern[str]:
    out, pos = ["^"], 0
    for m in _PARAM.finditer(pattern):
        out.append(re.escape(pattern[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>{'.+' if m.group(2) else '[^/]+'})")
        pos = m.end()
    out.append(re.escape(pattern[pos:]) + "$")
    return re.compile("".join(out))


class Router:
    """Routes by method and path: static paths in a dict, patterns in order of registration."""

    def __init__(self) -> None:
        self._static: dict[tuple[str, str], Handler] = {}
        self._patterns: dict[str, list[tuple[re.Pattern[str], Handler]]] = {}
        self._streaming: set[Handler] = set()

    def add(
        self, method: str, pattern: str, handler: Handler, *, stream_body: bool = False
    ) -> None:
        """Route ``method pattern`` to ``handler``; ``stream_body``: see the module doc."""
        method = method.upper()
        if "{" not in pattern:
            self._static[method, pattern] = handler
        else:
            self._patterns.setdefault(method, []).append((_compile(pattern), handler))
        if stream_body:
            self._streaming.add(handler)

    def streams_body(self, handler: Handler) -> bool:
        """Whether ``handler`` reads its request body as a stream."""
        return handler in self._streaming

    def route(
        self, method: str, pattern: str, *, stream_body: bool = False
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.add(method, pattern, handler, stream_body=stream_body)
            return handler

        return register

    def get(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("GET", pattern)

    def post(self, pattern: str, *, stream_body: bool = False) -> Callable[[Handler], Handler]:
        return self.route("POST", pattern, stream_body=stream_body)

    def put(self, pattern: str, *, stream_body: bool = False) -> Callable[[Handler], Handler]:
        return self.route("PUT", pattern, stream_body=stream_body)

    def delete(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("DELETE", pattern)

    def head(self, pattern: str) -> Callable[[Handler], Handler]:
        return self.route("HEAD", pattern)

    def match(self, method: str, path: str) -> tuple[Handler, dict[str, str]]:
        """The handler and path parameters; :class:`NotFound` ``page not found`` otherwise.

        A ``HEAD`` without a handler of its own uses the ``GET`` one.
        """
        for m in (method, "GET") if method == "HEAD" else (method,):
            handler = self._static.get((m, path))
            if handler is not None:
                return handler, {}
            for regex, handler in self._patterns.get(m, ()):
                found = regex.match(path)
                if found is not None:
                    return handler, {k: unquote(v) for k, v in found.groupdict().items()}
        raise NotFound("page not found")


def parse_target(target: str) -> tuple[str, str, dict[str, list[str]]]:
    """Split a request target into ``(version, path, query)``."""
    raw_path, _, raw_query = target.partition("?")
    version, path = split_version(raw_path)
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
    query = parse_qs(raw_query, keep_blank_values=True) if raw_query else {}
    return version, path, query


def json_response(
    doc: Any, status: int = 200, headers: list[tuple[str, str]] | None = None
) -> Response:
    """``doc`` as a JSON response (a trailing newline, as Docker's encoder writes)."""
    body = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    return Response(status, body, "application/json", headers or [])


def error_response(status: int, message: str) -> Response:
    """Docker's error shape: ``{"message": ...}``."""
    return json_response({"message": message}, status)
