"""The API's routing table, version prefixes, query parsing, error mapping and hijack."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bulkhead import errors
from bulkhead.api.errors import BadRequest, NotFound, status_for
from bulkhead.api.routes import (
    BodyStream,
    Hijack,
    RawStream,
    Request,
    Response,
    Router,
    StreamResponse,
    frame,
    json_response,
    parse_frame_header,
    parse_target,
    split_version,
)
from bulkhead.api.server import APIServer


async def _ok(req: Request) -> Response:
    return json_response({"params": req.params})


def test_static_and_parameter_routes() -> None:
    r = Router()
    r.get("/containers/json")(_ok)
    r.get("/containers/{id}/json")(_ok)
    r.get("/images/{name:path}/json")(_ok)
    r.post("/containers/{id}/start")(_ok)
    assert r.match("GET", "/containers/json")[1] == {}
    assert r.match("GET", "/containers/abc123/json")[1] == {"id": "abc123"}
    assert r.match("GET", "/images/library/busybox:latest/json")[1] == {
        "name": "library/busybox:latest"
    }
    assert r.match("GET", "/images/a%2Fb/json")[1] == {"name": "a/b"}
    assert r.match("POST", "/containers/x/start")[1] == {"id": "x"}
    # HEAD falls back to GET
    assert r.match("HEAD", "/containers/json")[0] is _ok
    with pytest.raises(NotFound, match="page not found"):
        r.match("GET", "/containers/a/b/json")
    with pytest.raises(NotFound):
        r.match("DELETE", "/containers/x/start")


def test_version_prefixes() -> None:
    assert split_version("/v1.24/_ping") == ("1.24", "/_ping")
    assert split_version("/v1.56/containers/json") == ("1.56", "/containers/json")
    assert split_version("/_ping") == ("1.56", "/_ping")
    with pytest.raises(BadRequest) as exc:
        split_version("/v1.57/version")
    assert str(exc.value) == (
        "client version 1.57 is too new. Maximum supported API version is 1.56"
    )
    with pytest.raises(BadRequest, match="too old"):
        split_version("/v1.12/version")
    version, path, query = parse_target("/v1.41/containers/json?all=1&filters=%7B%7D")
    assert (version, path, query) == ("1.41", "/containers/json", {"all": ["1"], "filters": ["{}"]})
    assert parse_target("/v1.41/containers/json/")[1] == "/containers/json"


def _req(query: str) -> Request:
    return Request("GET", "/x", "1.56", parse_target("/x?" + query)[2], {})


def test_query_parsing() -> None:
    req = _req("all=1&size=true&quiet=0&stream=false&empty=&limit=5")
    assert req.query_bool("all") is True
    assert req.query_bool("size") is True
    assert req.query_bool("quiet", True) is False
    assert req.query_bool("stream", True) is False
    assert req.query_bool("empty", True) is True
    assert req.query_bool("missing") is False
    assert req.query_int("limit") == 5
    with pytest.raises(BadRequest):
        _req("all=maybe").query_bool("all")
    with pytest.raises(BadRequest):
        _req("limit=x").query_int("limit")
    filt = json.dumps({"label": ["a=b"], "status": {"running": True, "exited": False}})
    req = Request("GET", "/x", "1.56", {"filters": [filt]}, {})
    assert req.filters() == {"label": ["a=b"], "status": ["running"]}
    with pytest.raises(BadRequest, match="invalid filter"):
        Request("GET", "/x", "1.56", {"filters": ["{nope"]}, {}).filters()
    assert Request("GET", "/x", "1.41", {}, {}).version_at_least("1.40")
    assert not Request("GET", "/x", "1.41", {}, {}).version_at_least("1.44")


def test_error_status_mapping() -> None:
    assert status_for(errors.ContainerNotFound("x")) == 404
    assert status_for(errors.ImageNotFound("x")) == 404
    assert status_for(errors.ContainerExists("x")) == 409
    assert status_for(errors.WrongState("x")) == 409
    assert status_for(errors.ImageInUse("x")) == 409
    assert status_for(errors.SpecError("x")) == 400
    assert status_for(errors.InvalidReference("x")) == 400
    assert status_for(errors.AuthenticationError("x")) == 401
    assert status_for(errors.RegistryUnavailable("x")) == 503
    assert status_for(BadRequest("x")) == 400
    assert status_for(RuntimeError("x")) == 500


def test_frame_header() -> None:
    assert frame(1, b"hi") == b"\x01\x00\x00\x00\x00\x00\x00\x02hi"
    assert parse_frame_header(frame(2, b"x" * 300)[:8]) == (2, 300)


async def _serve(router: Router, path: str, max_body: int | None = None) -> APIServer:
    server = APIServer(router) if max_body is None else APIServer(router, max_body=max_body)
    await server.start_unix(path)
    return server


async def _http(path: str, raw: bytes, until: bytes | None = None) -> bytes:
    """The server's answer to ``raw``: up to EOF, or up to ``until`` on a kept-alive connection."""
    reader, writer = await asyncio.open_unix_connection(path)
    writer.write(raw)
    await writer.drain()
    if until is None:
        data = await asyncio.wait_for(reader.read(), 10)
    else:
        data = await asyncio.wait_for(reader.readuntil(until), 10)
    writer.close()
    return data


def test_server_errors_stream_and_keepalive() -> None:
    router = Router()

    @router.get("/containers/{id}/json")
    async def inspect(req: Request) -> Response:
        raise errors.ContainerNotFound(f"No such container: {req.params['id']}")

    @router.get("/boom")
    async def boom(req: Request) -> Response:
        raise RuntimeError("kaput")

    @router.post("/echo")
    async def echo(req: Request) -> Response:
        return json_response(req.json())

    @router.get("/events")
    async def events(req: Request) -> StreamResponse:
        async def gen() -> AsyncIterator[bytes]:
            for i in range(3):
                yield json.dumps({"n": i}).encode() + b"\n"

        return StreamResponse(gen())

    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            sock = str(Path(d) / "api.sock")
            server = await _serve(router, sock)
            try:
                out = await _http(
                    sock,
                    b"GET /v1.44/containers/abc/json HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n"
                    b'{"a":1}'
                    b"GET /boom HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"GET /events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                )
                assert out.startswith(b"HTTP/1.1 404 Not Found\r\n")
                assert b'{"message":"No such container: abc"}' in out
                assert b"HTTP/1.1 200 OK\r\n" in out and b'{"a":1}\n' in out
                assert b"HTTP/1.1 500 Internal Server Error" in out
                assert b'{"message":"kaput"}' in out
                assert b"Transfer-Encoding: chunked" in out
                assert b'{"n": 2}' in out
                bad = await _http(
                    sock,
                    b"POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 3\r\n\r\n{x}",
                )
                assert b"HTTP/1.1 400" in bad and b"invalid JSON" in bad
            finally:
                await server.close()

    asyncio.run(main())


def test_hijack_echo_multiplexed() -> None:
    router = Router()

    @router.post("/containers/{id}/attach")
    async def attach(req: Request) -> Hijack:
        async def pump(stream: RawStream) -> None:
            while data := await stream.read():
                await stream.write_frame(1, data)
            await stream.write_frame(2, b"bye")
            stream.close_write()

        return Hijack(pump, multiplexed=True)

    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            sock = str(Path(d) / "api.sock")
            server = await _serve(router, sock)
            try:
                reader, writer = await asyncio.open_unix_connection(sock)
                # Bytes sent right behind the headers must reach the handler too.
                writer.write(
                    b"POST /v1.50/containers/c1/attach?stream=1&stdin=1 HTTP/1.1\r\n"
                    b"Host: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
                    b"Content-Length: 0\r\n\r\nhello"
                )
                await writer.drain()
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 101 UPGRADED\r\n")
                assert b"Content-Type: application/vnd.docker.multiplexed-stream" in head
                assert b"Upgrade: tcp" in head
                got = b""
                while len(got) < 5:
                    stream, length = parse_frame_header(await reader.readexactly(8))
                    assert stream == 1
                    got += await reader.readexactly(length)
                assert got == b"hello"
                writer.write(b" world")
                await writer.drain()
                stream, length = parse_frame_header(await reader.readexactly(8))
                assert (stream, await reader.readexactly(length)) == (1, b" world")
                writer.write_eof()
                stream, length = parse_frame_header(await reader.readexactly(8))
                assert (stream, await reader.readexactly(length)) == (2, b"bye")
                assert await reader.read() == b""
                writer.close()
            finally:
                await server.close()

    asyncio.run(main())


def test_hijack_without_upgrade_and_upgrade_refused() -> None:
    router = Router()

    @router.post("/exec/{id}/start")
    async def start(req: Request) -> Response | Hijack:
        if req.params["id"] == "missing":
            raise errors.ContainerNotFound("No such exec instance: missing")
        assert req.json() == {"Detach": False, "Tty": True}

        async def pump(stream: RawStream) -> None:
            await stream.write(req.body)  # raw: as a TTY session would

        return Hijack(pump, multiplexed=False)

    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            sock = str(Path(d) / "api.sock")
            server = await _serve(router, sock)
            try:
                payload = b'{"Detach":false,"Tty":true}'
                head = (
                    b"POST /v1.50/exec/%s/start HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: %d\r\n"
                )
                # No Upgrade asked: 200 OK, then the raw stream, then close.
                out = await _http(sock, head % (b"e1", len(payload)) + b"\r\n" + payload)
                assert out.startswith(b"HTTP/1.1 200 OK\r\n")
                assert b"Content-Type: application/vnd.docker.raw-stream" in out
                assert out.endswith(b"\r\n\r\n" + payload)
                # Upgrade asked but refused by an error: a normal JSON error.
                out = await _http(
                    sock,
                    head % (b"missing", len(payload))
                    + b"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
                    + payload,
                    until=b"}\n",
                )
                assert out.startswith(b"HTTP/1.1 404 Not Found\r\n")
                assert out.endswith(b'{"message":"No such exec instance: missing"}\n')
            finally:
                await server.close()

    asyncio.run(main())


def test_body_stream_reads() -> None:
    async def main() -> None:
        body = BodyStream.of([b"abc", b"", b"defgh"])
        assert await body.read(2) == b"ab"
        assert await body.read(10) == b"c"
        assert [c async for c in body] == [b"defgh"]
        assert await body.read() == b"" and body.at_end and body.received == 8
        assert await BodyStream.of(b"xyz").read() == b"xyz"
        assert await BodyStream.of([b"a", b"b"]).discard() == 2

    asyncio.run(main())


def test_streamed_request_bodies() -> None:
    """Handlers with stream_body get the body as it arrives, past the buffered cap."""
    router = Router()
    seen: list[int] = []

    @router.post("/images/load", stream_body=True)
    async def load(req: Request) -> Response:
        assert req.stream is not None and req.body == b""
        total = 0
        async for chunk in req.body_stream():
            total += len(chunk)
        seen.append(total)
        return json_response({"bytes": total})

    @router.put("/containers/{id}/archive", stream_body=True)
    async def put_archive(req: Request) -> Response:
        assert req.stream is not None
        head = await req.stream.read(4)  # the rest is left unread: the server drains it
        if req.params["id"] == "missing":
            raise errors.ContainerNotFound("No such container: missing")
        return json_response({"head": head.decode()})

    @router.post("/echo")
    async def echo(req: Request) -> Response:
        return json_response({"len": len(req.body)})

    async def main() -> None:
        with tempfile.TemporaryDirectory() as d:
            sock = str(Path(d) / "api.sock")
            server = await _serve(router, sock, max_body=1000)
            try:
                big = b"x" * 300_000
                out = await _http(
                    sock,
                    b"POST /v1.50/images/load?quiet=1 HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: %d\r\n\r\n"
                    % len(big)
                    + big
                    # chunked, as the docker CLI sends a tar from a pipe
                    + b"POST /images/load HTTP/1.1\r\nHost: x\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                    # half read, then an error: the rest is drained, the connection goes on
                     + b"PUT /containers/missing/archive?path=/ HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 5000\r\n\r\n"
                    + b"y"
                    * 5000
                    + b"PUT /containers/c1/archive?path=/ HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 5000\r\n\r\n"
                    + b"z" * 5000
                    # the buffered cap still holds for the others
                    + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789"
                    + b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n"
                    + b"e" * 2000,
                )
                assert seen == [300_000, 11]
                assert b'{"bytes":300000}' in out and b'{"bytes":11}' in out
                assert b"404 Not Found" in out and b"No such container: missing" in out
                assert b'{"head":"zzzz"}' in out
                assert b'{"len":10}' in out
                assert out.count(b"HTTP/1.1 ") == 6
                assert b"HTTP/1.1 413" in out and b"request body too large" in out
                # Expect: 100-continue is answered before the body is read.
                reader, writer = await asyncio.open_unix_connection(sock)
                writer.write(
                    b"POST /images/load HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                    b"Expect: 100-continue\r\nContent-Length: 3\r\n\r\n"
                )
                await writer.drain()
                interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                assert interim.startswith(b"HTTP/1.1 100 ")
                writer.write(b"abc")
                await writer.drain()
                rest = await asyncio.wait_for(reader.read(), 10)
                assert rest.startswith(b"HTTP/1.1 200 OK") and b'{"bytes":3}' in rest
                writer.close()
                # A client that goes away mid-body: the handler sees a clear error.
                reader, writer = await asyncio.open_unix_connection(sock)
                writer.write(
                    b"POST /images/load HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc"
                )
                await writer.drain()
                writer.write_eof()
                rest = await asyncio.wait_for(reader.read(), 10)
                assert b"400 Bad Request" in rest and b"incomplete request body" in rest
                writer.close()
            finally:
                await server.close()

    asyncio.run(main())
