"""The cgroup v2 suite: runs only where ``/sys/fs/cgroup`` is cgroup2 (and as root).

This project's machines are cgroup v1 hybrids, so these tests run in the VM
lane, ``make test-cgroupv2`` (part of ``make test``), which boots one
cgroup-v2-only guest for them and the cgroup2 tests of
``tests/integration/test_rootfs.py``: ``../shared/vmtest/run-in-cgroup2-vm
--timeout 600 -- $PWD/.venv/bin/python -m pytest -q tests/cgroupv2 ...``
(about 2 minutes under software emulation, the daemon test included). Anywhere else every test here is
skipped. The guest is thrown away afterwards, so tests here may load kernel
modules (null_blk) and make device nodes; they must never run on a host.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bulkhead.cgroups import detect

HERE = Path(__file__).resolve().parent


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if detect().mode != "unified":
        return "/sys/fs/cgroup is not cgroup2 (run in the VM lane: make test-cgroupv2)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = _why_not()
    if why is None:
        return
    mark = pytest.mark.skip(reason=why)
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(mark)


from tests.integration.engine_fixtures import daemon, daemon_factory  # noqa: E402, F401
