"""``--init``: a real PID 1 (Docker's docker-init, tini) reaps orphans and forwards signals."""

from __future__ import annotations

import time

from tests.integration.engine_fixtures import Daemon

# The shell starts a background sleep and exits at once: the sleep is
# orphaned to PID 1. PID 1 is then `sleep 30` (exec): it never reaps.
ORPHAN_MAKER = 'sh -c "sleep 0.2 &"; exec sleep 30'


def _zombies(daemon: Daemon, name: str) -> list[str]:
    r = daemon.docker("exec", name, "ps", "-o", "stat,comm")
    assert r.returncode == 0, r.stderr
    return [line for line in r.stdout.splitlines()[1:] if line.split()[0].startswith("Z")]


def test_init_reaps_orphans_that_pid_1_would_leave_as_zombies(daemon: Daemon) -> None:
    for name, init in (("with-init", ["--init"]), ("without-init", [])):
        r = daemon.docker("run", "-d", "--name", name, *init, "busybox", "sh", "-c", ORPHAN_MAKER)
        assert r.returncode == 0, r.stderr
    time.sleep(1.5)  # the orphaned sleeps have ended
    assert _zombies(daemon, "with-init") == []
    assert len(_zombies(daemon, "without-init")) == 1  # the test can tell the difference
    t0 = time.monotonic()
    r = daemon.docker("stop", "-t", "10", "with-init")
    assert r.returncode == 0, r.stderr
    # tini forwarded SIGTERM to the sleep, which died of it: quick, and 143 (128 + 15)
    assert time.monotonic() - t0 < 5
    assert daemon.docker("inspect", "-f", "{{.State.ExitCode}}", "with-init").stdout == "143\n"
    daemon.docker("rm", "-f", "with-init", "without-init")
