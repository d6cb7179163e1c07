"""Restart policies under faults, through the real daemon and the stock ``docker`` CLI.

A crash-looping container backs off as moby's restartmanager does (100 ms
doubling, so a handful of restarts in 12 s, and an idle daemon meanwhile);
a daemon killed with SIGKILL while containers restart, or while a fast
writer's log rotates, comes back to the same containers: the policies go
on, ``RestartCount`` counts each restart once, each container has one
monitor and one process, and the log stays bounded and valid.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.engine_fixtures import Daemon


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


def _poll(what: Callable[[], bool], timeout: float = 30, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message or "timed out"
        time.sleep(0.05)


def _inspect(daemon: Daemon, ref: str) -> dict[str, object]:
    doc = json.loads(ok(daemon.docker("inspect", ref)))[0]
    assert isinstance(doc, dict)
    return doc


def _state(daemon: Daemon, ref: str) -> dict[str, object]:
    state = _inspect(daemon, ref)["State"]
    assert isinstance(state, dict)
    return state


def _restart_count(daemon: Daemon, ref: str) -> int:
    count = _inspect(daemon, ref)["RestartCount"]
    assert isinstance(count, int)
    return count


def _cpu_seconds(pid: int, *, children: bool = False) -> float:
    """utime + stime of a process (/proc/PID/stat), in seconds; with its reaped children's."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(x) for x in fields[11 : 15 if children else 13])
    return ticks / os.sysconf("SC_CLK_TCK")


def _zygote_cpu(daemon: Daemon) -> dict[int, float]:
    """The CPU seconds of the daemon's monitor zygote(s), with their reaped children's."""
    sock = str(daemon.exec_root / "zygote.sock").encode()
    out = {}
    for pid, argv in _argvs().items():
        if b"bulkhead.engine.zygote" in argv and sock in argv:
            with contextlib.suppress(OSError):  # one that just went (its daemonizing parent)
                out[pid] = _cpu_seconds(pid, children=True)
    return out


def _argvs() -> dict[int, list[bytes]]:
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if argv:
            out[int(pid)] = argv
    return out


def _monitors(cid: str) -> list[int]:
    return [
        pid
        for pid, argv in _argvs().items()
        if argv[0].endswith(b"bh-monitor") and cid.encode() in argv
    ]


def _processes(*argv: str) -> list[int]:
    want = [a.encode() for a in argv]
    return [pid for pid, got in _argvs().items() if got == want]


def test_a_crash_looping_container_backs_off_and_the_daemon_stays_idle(daemon: Daemon) -> None:
    """--restart always of ``exit 1``: moby's schedule (100 ms doubling), a few restarts in 12 s."""
    assert daemon.proc is not None
    t0 = time.time()
    cpu0 = _cpu_seconds(daemon.proc.pid)
    cid = ok(daemon.docker("run", "-d", "--restart", "always", "busybox", "sh", "-c", "exit 1"))
    cid = cid.strip()
    zcpu0 = _zygote_cpu(daemon)  # it forks the monitors and the runtime's helpers
    time.sleep(12)  # no polling: the daemon's CPU time is its own
    cpu = _cpu_seconds(daemon.proc.pid) - cpu0
    zcpu = {z: t - zcpu0[z] for z, t in _zygote_cpu(daemon).items() if z in zcpu0}
    t1 = time.time()
    count = _restart_count(daemon, cid)
    starts = ok(
        daemon.docker(
            "events",
            "--since",
            f"{t0:.3f}",
            "--until",
            f"{t1:.3f}",
            "--filter",
            f"container={cid}",
            "--filter",
            "event=start",
            "--format",
            "{{.TimeNano}}",
        )
    ).split()
    times = [int(x) / 1e9 for x in starts]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    ok(daemon.docker("rm", "-f", cid))
    print(
        f"\nrestarts in {t1 - t0:.1f} s: {count}; times between starts: "
        f"{', '.join(f'{g:.2f}' for g in gaps)} s; daemon CPU {cpu:.2f} s "
        f"({100 * cpu / (t1 - t0):.0f}% of one CPU); the monitor zygote and its reaped "
        f"children {sum(zcpu.values()):.2f} s"
    )
    # 0.1 + 0.2 + 0.4 + 0.8 + 1.6 + 3.2 = 6.3 s, + 6.4 = 12.7 s: at most 6-7 restarts in 12 s
    assert 4 <= count <= 8, count
    assert len(times) in (count, count + 1)  # the user's start, and each restart that happened
    for k, gap in enumerate(gaps):  # each wait at least the back-off (the run itself is ~0)
        assert gap >= 0.9 * 0.1 * 2**k, (k, gaps)
    assert cpu < 0.5 * (t1 - t0), f"the daemon used {cpu:.2f} s of CPU in {t1 - t0:.1f} s"


#: runs 1..5 fail (exit 1); the 6th stays up. The count lives in the container's own files.
FLAKY = (
    "n=$(cat /n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /n; echo run $n; "
    "[ $n -ge 6 ] && exec sleep 7331; exit 1"
)


def _runs(daemon: Daemon, cid: str) -> list[str]:
    return ok(daemon.docker("logs", cid)).splitlines()


def test_daemon_killed_while_a_container_restarts_goes_on_counting_each_restart_once(
    daemon: Daemon,
) -> None:
    cid = ok(daemon.docker("run", "-d", "--restart", "always", "busybox", "sh", "-c", FLAKY))
    cid = cid.strip()
    for seen in ("run 2", "run 4"):  # once just after an exit, once later in the back-off

        def reached(seen: str = seen) -> bool:
            return seen in _runs(daemon, cid)

        _poll(reached, message=f"no {seen}")
        daemon.restart(kill=True)
    _poll(lambda: _runs(daemon, cid)[-1:] == ["run 6"], message="the policy did not go on")
    _poll(lambda: _state(daemon, cid)["Running"] is True)
    assert _runs(daemon, cid) == [f"run {n}" for n in range(1, 7)]  # each run once
    state = _state(daemon, cid)
    assert (state["Status"], state["Restarting"]) == ("running", False)
    assert _restart_count(daemon, cid) == 5  # five restarts: none lost, none counted twice
    # one monitor, one container process, and it is the one the daemon knows
    assert len(_monitors(cid)) == 1
    assert _processes("sleep", "7331") == [state["Pid"]]
    time.sleep(1)
    assert _restart_count(daemon, cid) == 5 and len(_processes("sleep", "7331")) == 1
    ok(daemon.docker("rm", "-f", cid))
    _poll(lambda: not _monitors(cid) and not _processes("sleep", "7331"), message="orphans")


def test_on_failure_limit_survives_daemon_kills(daemon: Daemon) -> None:
    """on-failure:3 killed mid-way goes on to exactly 3 restarts, then stays down."""
    script = "echo run; exit 2"
    cid = ok(daemon.docker("run", "-d", "--restart", "on-failure:3", "busybox", "sh", "-c", script))
    cid = cid.strip()
    _poll(lambda: len(_runs(daemon, cid)) >= 2)
    daemon.restart(kill=True)  # during the back-off before the 2nd restart, or about then
    _poll(lambda: _state(daemon, cid)["Status"] == "exited" and len(_runs(daemon, cid)) == 4)
    daemon.restart(kill=True)  # and once it gave up: it stays down
    time.sleep(1)
    state = _state(daemon, cid)
    assert (state["Status"], state["ExitCode"]) == ("exited", 2)
    assert _restart_count(daemon, cid) == 3 and len(_runs(daemon, cid)) == 4
    # a start by the user begins the count again (as Docker's does)
    ok(daemon.docker("start", cid))
    _poll(lambda: len(_runs(daemon, cid)) == 8 and _state(daemon, cid)["Status"] == "exited")
    assert _restart_count(daemon, cid) == 3
    ok(daemon.docker("rm", cid))


def test_always_and_unless_stopped_after_a_stop_and_a_daemon_kill(daemon: Daemon) -> None:
    ids = {}
    for policy in ("always", "unless-stopped"):
        ids[policy] = ok(
            daemon.docker("run", "-d", "--restart", policy, "busybox", "sleep", "7332")
        ).strip()
        ok(daemon.docker("stop", "-t", "0", ids[policy]))
    running = ok(
        daemon.docker(
            "run", "-d", "--restart", "unless-stopped", "busybox", "sh", "-c", "sleep 7333"
        )
    )
    running = running.strip()
    daemon.restart(kill=True)
    _poll(lambda: _state(daemon, ids["always"])["Running"] is True, message="always not started")
    assert _state(daemon, ids["unless-stopped"])["Status"] == "exited"
    assert _state(daemon, running)["Running"] is True  # left running: adopted, not restarted
    for cid in (*ids.values(), running):
        assert _restart_count(daemon, cid) == 0
    assert len(_processes("sleep", "7332")) == 1 and len(_processes("sleep", "7333")) == 1
    for cid in (*ids.values(), running):
        ok(daemon.docker("rm", "-f", cid))


def test_daemon_killed_while_a_fast_writer_rotates_its_log(daemon: Daemon) -> None:
    """The monitor writes the log, not the daemon: rotation goes on, bounded, valid JSON."""
    writer = 'awk \'BEGIN{p=sprintf("%0100d",0); for(i=1;;i++) printf "%012d %s\\n", i, p}\''
    cid = ok(
        daemon.docker(
            "run",
            "-d",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=3",
            "busybox",
            "sh",
            "-c",
            writer,
        )
    ).strip()
    log = Path(ok(daemon.docker("inspect", "-f", "{{.LogPath}}", cid)).strip())
    monitor = _monitors(cid)
    assert len(monitor) == 1
    time.sleep(1)
    assert daemon.proc is not None
    daemon.stop(kill=True)
    bound = 3 * 1024 * 1024 + 256

    def files() -> list[Path]:
        return [log.parent / n for n in os.listdir(log.parent) if n.startswith(log.name)]

    def last_number() -> int:
        """The newest complete entry's number (the monitor may be mid-write or just rotated)."""
        for _ in range(200):
            for path in (log, log.parent / f"{log.name}.1"):
                with contextlib.suppress(FileNotFoundError):
                    data = path.read_bytes()
                    complete = data[: data.rfind(b"\n") + 1].splitlines()
                    if complete:
                        return int(json.loads(complete[-1])["log"][:12])
            time.sleep(0.01)
        raise AssertionError(f"no complete entry in {log} or its .1")

    before = last_number()
    for _ in range(100):  # the daemon is gone: the monitor goes on writing and rotating
        total = 0
        for p in files():
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                continue
        assert total <= bound
        time.sleep(0.01)
    assert last_number() > before + 10_000
    daemon.start()
    assert _monitors(cid) == monitor  # the same monitor: it never stopped
    ok(daemon.docker("kill", cid))
    ok(daemon.docker("wait", cid))
    names = sorted(files(), key=lambda p: -int(p.name.rsplit(".", 1)[1]) if p != log else 0)
    assert [p.name for p in names] == [f"{log.name}.2", f"{log.name}.1", log.name]
    assert sum(p.stat().st_size for p in names) <= bound
    messages = [json.loads(raw)["log"] for p in names for raw in p.read_bytes().splitlines()]
    numbers = [int(m[:12]) for m in messages if len(m) == 114]
    assert len(numbers) >= len(messages) - 1  # only the very last may be cut (the kill)
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    out = ok(daemon.docker("logs", cid))
    assert out.count("\n") == len(numbers) and out.startswith(f"{numbers[0]:012d} ")
    ok(daemon.docker("rm", cid))
