"""``python -m bulkhead.daemon [--socket PATH] [--root DIR]``: the bulkhead daemon.

Serves the Docker Engine API (:mod:`bulkhead.api`) on a unix socket
(default ``/run/bulkhead/bulkhead.sock``, mode 0660) with its state under
``--root`` (default ``/var/lib/bulkhead``). A socket file left by a dead
daemon is removed; when another daemon answers on it, this one refuses to
start (exit 1). SIGTERM and SIGINT stop it cleanly and remove its socket.

The process stays single-threaded: it will spawn the runtime for
containers as fresh processes, and forking from a process with threads is
unsafe (another thread may hold a lock the child then never sees released).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import stat
import sys
from pathlib import Path

from bulkhead.api import build_router
from bulkhead.api.server import APIServer

DEFAULT_SOCKET = "/run/bulkhead/bulkhead.sock"
DEFAULT_ROOT = "/var/lib/bulkhead"
SOCKET_MODE = 0o660

log = logging.getLogger("bulkhead.daemon")


class DaemonRunning(Exception):
    """Another daemon answers on the socket."""


def socket_answers(path: str, timeout: float = 1.0) -> bool:
    """Whether something serves HTTP on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(path)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: bulkhead\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/")
        except OSError:
            return False


def prepare_socket_path(path: str) -> None:
    """Create the socket's directory; remove a stale socket; refuse a live one."""
    Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise DaemonRunning(f"{path} exists and is not a socket")
    if socket_answers(path):
        raise DaemonRunning(f"another daemon is already serving on {path}")
    os.unlink(path)


async def serve(socket_path: str, root: Path) -> None:
    """Run until SIGTERM or SIGINT."""
    root.mkdir(parents=True, exist_ok=True, mode=0o711)
    prepare_socket_path(socket_path)
    server = APIServer(build_router(root))
    await server.start_unix(socket_path)
    os.chmod(socket_path, SOCKET_MODE)
    ours = os.stat(socket_path).st_ino
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("bulkhead daemon listening on %s (root %s)", socket_path, root)
    try:
        await stop.wait()
    finally:
        await server.close()
        with contextlib.suppress(OSError):
            if os.stat(socket_path).st_ino == ours:
                os.unlink(socket_path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bulkhead daemon", description=__doc__.split("\n")[0])
    parser.add_argument("--socket", "-H", default=DEFAULT_SOCKET, help="unix socket path")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="state directory")
    parser.add_argument("--debug", "-D", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    socket_path = args.socket.removeprefix("unix://")
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        asyncio.run(serve(socket_path, Path(args.root)))
    except DaemonRunning as exc:
        print(f"bulkhead daemon: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"bulkhead daemon: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
