"""Fixtures shared by every test suite.

``busybox_rootfs``  one offline busybox root filesystem per test session (read it, do not write it)
``make_bundle``     a factory of OCI bundles in the test's own temporary directory
``runtime_root``    a fresh ``--root`` directory for bulkhead-runtime state
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkhead.devtools import busybox

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem shared by the session's tests (treat as read-only)."""
    return busybox.build_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: Path) -> BundleFactory:
    """Return ``make(args, *, terminal=False, config=None, own_rootfs=False) -> bundle``.

    By default the bundle's ``root.path`` points at a fresh copy of the
    session's busybox rootfs, so each test may write to it.
    """
    counter = iter(range(1000))

    def make(
        args: list[str] | None = None,
        *,
        terminal: bool = False,
        config: dict[str, Any] | None = None,
    ) -> Path:
        n = next(counter)
        bundle = tmp_path / f"bundle{n}"
        rootfs = bundle / "rootfs"
        bundle.mkdir()
        shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
        busybox.make_bundle(bundle, args, terminal=terminal, rootfs=rootfs, config=config)
        # A relative root.path, as runc spec writes it.
        import json

        spec = json.loads((bundle / "config.json").read_text())
        spec["root"]["path"] = "rootfs"
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
        return bundle

    return make


@pytest.fixture
def runtime_root(tmp_path: Path) -> Iterator[Path]:
    """A fresh state directory for ``bulkhead-runtime --root``."""
    root = tmp_path / "runtime-root"
    root.mkdir()
    yield root
