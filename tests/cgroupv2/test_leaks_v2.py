"""Containers started and removed in parallel leave nothing on a cgroup-v2-only kernel.

The VM lane's short version of ``tests/integration/test_engine_leaks.py``
(the same lifecycles and the same checks, 10 containers instead of 100: each
costs seconds under software emulation): on cgroup v2 a cgroup with a
process left in it cannot be removed, so a leaked process and a leaked cgroup
go together, and the daemon's cgroup parent must be empty afterwards.
"""

from __future__ import annotations

from typing import Any

from tests.integration.engine_fixtures import Daemon
from tests.integration.test_engine_leaks import burst_and_check


def test_parallel_containers_leave_nothing_on_cgroup_v2(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    burst_and_check(d, count=10, workers=4, timeout=240)
