"""A stand-in daemon serving only the system and image endpoints (for the images API tests).

``python tests/integration/images_server.py --socket S --root R [--insecure-registry H]``
builds :class:`~bulkhead.engine.context.Services` with just an image store
and a vfs snapshotter (no engine, no volumes), registers
:mod:`bulkhead.api.system` and :mod:`bulkhead.api.images` on a router and
serves it until SIGTERM. Its command line is the same shape as the daemon's,
so :class:`tests.integration.engine_fixtures.Daemon` drives it unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any, cast


async def serve(socket_path: str, root: Path, insecure: list[str]) -> None:
    from bulkhead.api import images, system
    from bulkhead.api.routes import Router
    from bulkhead.api.server import APIServer
    from bulkhead.api.system import SystemInfo
    from bulkhead.engine.context import DaemonConfig, Services
    from bulkhead.images.store import ImageStore
    from bulkhead.snapshots.vfs import VfsSnapshotter

    config = DaemonConfig(root=root, socket=socket_path, insecure_registries=insecure)
    store = ImageStore(config.images_root)
    info = SystemInfo(root=root)
    info.images = lambda: len(store.list())
    snapshotter: Any = VfsSnapshotter(config.snapshots_root / "vfs")
    services = Services(
        config=config,
        images=store,
        snapshotter=snapshotter,
        volumes=cast(Any, None),
        engine=cast(Any, None),
        info=info,
    )
    router = Router()
    system.register(router, info)
    images.register(router, services)
    server = APIServer(router)
    Path(socket_path).parent.mkdir(parents=True, exist_ok=True)
    await server.start_unix(socket_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.close()
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--insecure-registry", action="append", default=[])
    args, _unknown = parser.parse_known_args()
    asyncio.run(serve(args.socket, Path(args.root), args.insecure_registry))


if __name__ == "__main__":
    main()
