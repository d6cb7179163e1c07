from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.registry_fixtures import (  # noqa: F401
    cutting_proxy,
    registry,
    registry_factory,
)
from tests.integration.runtime_helpers import RuntimeCLI, cgroup_dirs

if os.geteuid() != 0:
    pytest.skip("integration tests need root", allow_module_level=True)


@pytest.fixture
def cid() -> str:
    """A fresh container id."""
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture
def rt(runtime_root: Path, cgroup_parent: str) -> Iterator[RuntimeCLI]:
    """bulkhead-runtime with its own --root; every container is deleted afterwards.

    It depends on ``cgroup_parent`` so that its clean-up runs first and the
    parent's leak check sees what the runtime's ``delete`` left behind.
    """
    cli = RuntimeCLI(runtime_root)
    yield cli
    cli.cleanup()


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A cgroup parent of our own: containers below it must be gone afterwards."""
    parent = f"/bulkhead/test-{uuid.uuid4().hex[:8]}"
    yield parent
    leaked = []
    for d in cgroup_dirs(parent):
        for sub in sorted(d.glob("*/"), key=lambda p: -len(p.parts)):
            leaked.append(sub)
            try:
                sub.rmdir()
            except OSError:
                pass
        try:
            d.rmdir()
        except OSError:
            pass
    assert not leaked, f"container cgroups leaked: {leaked}"


@pytest.fixture
def bundle(make_bundle, cgroup_parent, cid):
    """``bundle(args, terminal=False, **config)``: a busybox bundle whose cgroup is ours."""

    def make(args=None, *, terminal=False, linux=None, **config):
        linux = dict(linux or {})
        linux.setdefault("cgroupsPath", f"{cgroup_parent}/{cid}")
        return make_bundle(args, terminal=terminal, config={"linux": linux, **config})

    return make


from tests.integration.engine_fixtures import daemon, daemon_factory  # noqa: E402, F401
