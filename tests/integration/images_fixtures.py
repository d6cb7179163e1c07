"""The daemon the images API tests drive: the real one, or a stand-in serving images only.

``images_daemon`` is a :class:`~tests.integration.engine_fixtures.Daemon`
(``.docker(...)``, ``.client()``, ``.root``, ``.socket``) with busybox:latest
in its store. With ``BULKHEAD_IMAGES_STANDIN=1`` it runs
``tests/integration/images_server.py`` (system and image endpoints over an
image store and a vfs snapshotter, no engine) instead of the daemon: what
the image endpoints need, without the container engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.engine_fixtures import Daemon, _http_ping, busybox_image_store

SERVER = Path(__file__).with_name("images_server.py")
STANDIN = os.environ.get("BULKHEAD_IMAGES_STANDIN") == "1"


class StandInDaemon(Daemon):
    """:class:`Daemon` running the images-only stand-in server."""

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        cmd = [sys.executable, str(SERVER), "--socket", self.socket, "--root", str(self.root)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}:\n{self.log()}")
            if _http_ping(self.socket):
                return
            time.sleep(0.02)
        raise RuntimeError(f"server did not answer within 20 s:\n{self.log()}")


@pytest.fixture
def images_daemon_factory(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, daemon_factory: Any
) -> Iterator[Callable[[], Daemon]]:
    """``make() -> Daemon``: a started daemon with busybox:latest (stand-in: see the module doc)."""
    if not STANDIN:
        yield daemon_factory
        return
    made: list[Daemon] = []
    images = busybox_image_store(tmp_path_factory.getbasetemp())

    def make() -> Daemon:
        base = tmp_path / f"images-daemon{len(made)}"
        root = base / "root"
        root.mkdir(parents=True)
        shutil.copytree(images, root / "images", symlinks=True)
        d = StandInDaemon(root, Path(tempfile.mkdtemp(prefix="bh-", dir="/run")))
        d._clients = []
        made.append(d)
        d.start()
        return d

    try:
        yield make
    finally:
        for d in made:
            d.cleanup()
            shutil.rmtree(d.exec_root, ignore_errors=True)


@pytest.fixture
def images_daemon(images_daemon_factory: Callable[[], Daemon]) -> Daemon:
    return images_daemon_factory()
