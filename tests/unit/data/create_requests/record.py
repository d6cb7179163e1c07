"""Record what a Docker client sends to ``POST /containers/create``: the fixtures beside this file.

Usage (no daemon needed; nothing leaves the machine)::

    .venv/bin/python tests/unit/data/create_requests/record.py NAME -- \\
        docker run --pull never -d --memory 64m busybox true

It serves a throw-away unix socket that answers ``/_ping`` and ``/version``
like a daemon and every other request with 404 "No such image" (so the CLI
stops right after its create), points ``DOCKER_HOST`` at it, runs the
command, and writes ``NAME.json`` here: ``{"command", "target", "body"}``.
For docker-py, run a script that uses ``docker.DockerClient(base_url=
os.environ["DOCKER_HOST"])``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def _response(status: str, body: bytes, head: bool = False) -> bytes:
    headers = (
        f"HTTP/1.1 {status}\r\nApi-Version: 1.50\r\nOstype: linux\r\n"
        f"Content-Type: application/json\r\nContent-Length: {0 if head else len(body)}\r\n\r\n"
    )
    return headers.encode() + (b"" if head else body)


async def _serve(path: str, seen: list[dict[str, Any]]) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
                method, target, _ = head[0].split(" ", 2)
                fields = dict(line.split(":", 1) for line in head[1:] if ":" in line)
                length = int(fields.get("Content-Length", fields.get("content-length", "0")))
                body = await reader.readexactly(length) if length else b""
                if "/containers/create" in target:
                    seen.append({"target": target, "body": json.loads(body)})
                if target.endswith("/_ping"):
                    writer.write(_response("200 OK", b"OK", head=method == "HEAD"))
                elif target.endswith("/version"):
                    doc = {"ApiVersion": "1.50", "MinAPIVersion": "1.24", "Os": "linux"}
                    writer.write(_response("200 OK", json.dumps(doc).encode()))
                else:
                    message = json.dumps({"message": "No such image: recorded"}).encode()
                    writer.write(_response("404 Not Found", message))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    return await asyncio.start_unix_server(handle, path=path)


async def record(name: str, command: list[str]) -> Path:
    seen: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bh-rec-") as tmp:
        sock = os.path.join(tmp, "d.sock")
        server = await _serve(sock, seen)
        env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
        )
        await proc.wait()
        server.close()
    if not seen:
        raise SystemExit(f"{command[0]} sent no POST /containers/create")
    out = HERE / f"{name}.json"
    out.write_text(json.dumps({"command": " ".join(command), **seen[0]}, indent=1) + "\n")
    return out


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print(__doc__, file=sys.stderr)
        return 2
    print(asyncio.run(record(argv[0], argv[2:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
