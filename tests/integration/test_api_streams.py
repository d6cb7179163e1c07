"""Streamed responses end when their client leaves, even when the stream is silent."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.engine_fixtures import DOCKER, Daemon


def _open_files(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            out.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return out


def _wait_for(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_logs_follow_of_a_quiet_container_stops_when_the_client_leaves(daemon: Daemon) -> None:
    r = daemon.docker("run", "-d", "--name", "quiet", "busybox", "sh", "-c", "echo once; sleep 300")
    assert r.returncode == 0, r.stderr
    log_path = json.loads(daemon.docker("inspect", "quiet").stdout)[0]["LogPath"]
    assert daemon.proc is not None
    pid = daemon.proc.pid
    assert DOCKER is not None
    follower = subprocess.Popen(
        [DOCKER, "logs", "-f", "quiet"], env=daemon.env(), stdout=subprocess.PIPE
    )
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline() == b"once\n"
        assert _wait_for(lambda: log_path in _open_files(pid)), "the daemon is not following"
        follower.send_signal(signal.SIGINT)  # Ctrl-C
        follower.wait(10)
        # The daemon notices the closed connection and stops following the log.
        assert _wait_for(lambda: log_path not in _open_files(pid)), "still following the log"
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    # The daemon still serves, and a new follower still works.
    r = daemon.docker("logs", "quiet")
    assert r.stdout == "once\n"
    assert Path(log_path).exists()
    daemon.docker("rm", "-f", "quiet")


def test_binary_stdin_round_trips_through_cat(daemon: Daemon) -> None:
    """Piped stdin is data: ctrl-p ctrl-q inside it do not detach (no TTY)."""
    data = os.urandom(300_000) + b"\x10\x11" + os.urandom(1000)
    assert DOCKER is not None
    for argv in ([DOCKER], [str(Path(sys.executable).with_name("bulkhead"))]):
        r = subprocess.run(
            [*argv, "run", "-i", "--rm", "busybox", "cat"],
            input=data,
            capture_output=True,
            env=daemon.env(),
            timeout=60,
            check=False,
        )
        assert r.returncode == 0, r.stderr
        assert len(r.stdout) == len(data) and r.stdout == data


def test_attach_with_logs_and_stream_repeats_no_line(daemon: Daemon) -> None:
    # A counter printing every 5 ms: an attach with logs=1&stream=1 replays the log up to
    # the moment its live stream began, then streams; no line twice, none skipped.
    client = daemon.client()
    try:
        c = client.containers.run(
            "busybox",
            ["sh", "-c", "i=0; while [ $i -lt 100000 ]; do echo $i; i=$((i+1)); usleep 5000; done"],
            detach=True,
            name="counter",
        )
        time.sleep(0.3)  # some lines in the log before the attach
        for _ in range(3):
            stream = client.api.attach(c.id, stdout=True, stderr=True, stream=True, logs=True)
            got = b""
            deadline = time.monotonic() + 0.6
            for chunk in stream:
                got += chunk
                if time.monotonic() > deadline:
                    break
            stream.close()
            lines = [int(x) for x in got.decode().split("\n")[:-1]]
            assert lines[0] == 0, lines[:5]
            repeated = [b for a, b in itertools.pairwise(lines) if b != a + 1]
            assert not repeated, f"not one after another: {repeated[:10]}"
        c.remove(force=True)
    finally:
        client.close()
