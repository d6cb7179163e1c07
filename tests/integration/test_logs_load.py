"""Logs under load: rotation bounds the json-file log of a container writing as fast as it can,
and ``docker logs -f`` follows a log across many rotations without losing or repeating a line.

The writer is busybox ``awk`` printing numbered lines of a fixed width; the
line numbers let the tests check that nothing was dropped or repeated. The
rates (what the container reached, what ``bh-monitor`` turned into log)
are printed for the notes (``pytest -s``), never asserted: performance
belongs in bench/.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from pathlib import Path

from tests.integration.engine_fixtures import DOCKER, Daemon

from bulkhead.engine.jsonlog import parse_time

#: a numbered line: 12 digits, a space, PAD zeros, a newline
PAD = 100
LINE_LEN = 12 + 1 + PAD + 1
LINE = re.compile(rf"(\d{{12}}) 0{{{PAD}}}\n")


def _writer(count: int | None = None, *, batch: int = 0, pause_us: int = 0) -> str:
    """An awk program printing numbered lines (forever, or ``count`` of them).

    With ``batch``, it flushes and sleeps ``pause_us`` after each ``batch``
    lines: a steady rate that a follower can keep up with.
    """
    limit = f"i<={count}" if count else ""
    body = 'printf "%012d %s\\n", i, p'
    if batch:
        body += f'; if (i % {batch} == 0) {{ fflush(); system("usleep {pause_us}") }}'
    return f"awk 'BEGIN{{p=sprintf(\"%0{PAD}d\",0); for(i=1;{limit};i++) {{ {body} }} }}'"


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, r.stderr
    return r.stdout


def _log_names(log: Path) -> list[str]:
    prefix = log.name
    return [n for n in os.listdir(log.parent) if n == prefix or n.startswith(prefix + ".")]


def _monitor_cpu(cid: str) -> float:
    """CPU seconds (user + system) used so far by the container's ``bh-monitor``."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if argv[0].endswith(b"bh-monitor") and cid.encode() in argv:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError):
            continue
    raise AssertionError(f"no bh-monitor for {cid}")


def _kept(log: Path) -> list[dict[str, str]]:
    """The entries of the kept files, oldest first."""
    names = sorted(_log_names(log), key=lambda n: -int(n.rsplit(".", 1)[1]) if n != log.name else 0)
    out = []
    for name in names:
        for raw in (log.parent / name).read_bytes().splitlines():
            out.append(json.loads(raw))
    return out


def _numbers(messages: list[str]) -> list[int]:
    """The line numbers of complete messages; all but the last must be complete lines."""
    numbers: list[int] = []
    for k, text in enumerate(messages):
        m = LINE.fullmatch(text)
        if m is None:  # the writer was killed mid-line: only the very last message
            assert k == len(messages) - 1, f"message {k} of {len(messages)} is torn: {text!r}"
            assert f"{numbers[-1] + 1:012d} {'0' * PAD}\n".startswith(text), text
            continue
        numbers.append(int(m.group(1)))
    return numbers


def test_rotation_bounds_the_log_of_a_container_writing_as_fast_as_it_can(daemon: Daemon) -> None:
    """max-size=1m max-file=3: at every sample the files hold <= 3 MiB (+ one line); none lost."""
    max_size, max_files = 1024 * 1024, 3
    raw = daemon.docker("run", "--rm", "busybox", "sh", "-c", f"time {_writer(400_000)} >/dev/null")
    ok(raw)
    m = re.search(r"real\s+(\d+)m\s*([\d.]+)s", raw.stderr)
    assert m, raw.stderr
    devnull_rate = 400_000 * LINE_LEN / (int(m.group(1)) * 60 + float(m.group(2)) or 1e-3)
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
            _writer(),
        )
    ).strip()
    log = Path(ok(daemon.docker("inspect", "-f", "{{.LogPath}}", cid)).strip())
    bound = max_size * max_files + 2 * LINE_LEN  # one line's slack (its JSON is < 2 lines)
    samples, worst = 0, 0
    cpu0 = _monitor_cpu(cid)
    deadline = time.monotonic() + 4
    try:
        while time.monotonic() < deadline:
            total = 0
            for name in _log_names(log):
                assert name in (log.name, f"{log.name}.1", f"{log.name}.2"), name
                with contextlib.suppress(FileNotFoundError):
                    st = os.stat(log.parent / name)
                    total += st.st_size
            assert total <= bound, f"the log files hold {total} bytes > {bound}"
            worst = max(worst, total)
            samples += 1
            time.sleep(0.002)
        cpu = _monitor_cpu(cid) - cpu0
    finally:
        ok(daemon.docker("kill", cid))
    ok(daemon.docker("wait", cid))
    entries = _kept(log)
    total = sum((log.parent / n).stat().st_size for n in _log_names(log))
    assert total <= bound
    assert {e["stream"] for e in entries} == {"stdout"}
    numbers = _numbers([e["log"] for e in entries])
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # none lost in the window
    # the oldest were rotated away, many times over
    json_len = len(json.dumps(entries[-2], separators=(",", ":"))) + 1
    rotations = numbers[-1] * json_len // max_size
    assert rotations > 20, numbers[-1]
    # what bh-monitor turned into log: the container's rate, the pipe holding it back if needed
    started = ok(daemon.docker("inspect", "-f", "{{.State.StartedAt}}", cid)).strip()
    span = (parse_time(entries[-1]["time"]) - parse_time(started)) / 1e9
    rate = numbers[-1] * LINE_LEN / span
    print(
        f"\nwriter to /dev/null: {devnull_rate / 1e6:.0f} MB/s; through bh-monitor: "
        f"{rate / 1e6:.0f} MB/s of output ({rate * json_len / LINE_LEN / 1e6:.0f} MB/s of "
        f"json-file), {numbers[-1] * LINE_LEN / 1e6:.0f} MB in {span:.1f} s, ~{rotations} "
        f"rotations; {samples} samples of the files, largest {worst} bytes <= {bound}; "
        f"bh-monitor used {cpu:.2f} s of CPU in {span:.1f} s: "
        f"{numbers[-1] * LINE_LEN / 1e6 / max(cpu, 0.01):.0f} MB of output per CPU second"
    )
    # docker logs reads the kept window back, in order
    out = ok(daemon.docker("logs", cid))
    assert out.count("\n") == len(numbers) and out.startswith(f"{numbers[0]:012d} ")
    ok(daemon.docker("rm", cid))


def test_logs_follow_across_rotations_loses_and_repeats_nothing(daemon: Daemon) -> None:
    """``docker logs -f`` of a writer at a followable rate across ~20 rotations: exactly 1..N."""
    count = 120_000  # 14 MB of output, 22 MB of json-file: 21 files of 1 MiB
    writer = _writer(count, batch=1000, pause_us=5000)
    script = f"while [ ! -e /tmp/go ]; do usleep 10000; done; {writer}"
    cid = ok(
        daemon.docker(
            "run",
            "-d",
            "--log-opt",
            "max-size=1m",
            "--log-opt",
            "max-file=3",  # the follower may be up to 2 files behind (a loaded machine)
            "busybox",
            "sh",
            "-c",
            script,
        )
    ).strip()
    out_path = Path(daemon.root.parent / "followed.txt")
    assert DOCKER is not None
    with open(out_path, "wb") as out:
        follower = subprocess.Popen(
            [DOCKER, "logs", "-f", cid], stdout=out, stderr=subprocess.PIPE, env=daemon.env()
        )
    try:
        time.sleep(0.5)  # the follower is in (its request reaches the daemon)
        t0 = time.monotonic()
        ok(daemon.docker("exec", cid, "touch", "/tmp/go"))
        ok(daemon.docker("wait", cid))
        took = time.monotonic() - t0
        _, err = follower.communicate(timeout=60)
        assert follower.returncode == 0, err
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    data = out_path.read_bytes()
    lines = data.decode().splitlines(keepends=True)
    numbers = [int(m.group(1)) for m in map(LINE.fullmatch, lines) if m]
    assert len(numbers) == len(lines)
    assert numbers == list(range(1, count + 1))
    log = Path(ok(daemon.docker("inspect", "-f", "{{.LogPath}}", cid)).strip())
    assert _numbers([e["log"] for e in _kept(log)])[-1] == count
    print(f"\nfollowed {count * LINE_LEN / 1e6:.0f} MB at {count * LINE_LEN / took / 1e6:.1f} MB/s")
    ok(daemon.docker("rm", cid))


def test_non_blocking_mode_is_taken_and_drops_nothing(daemon: Daemon) -> None:
    """``--log-opt mode=non-blocking``: Docker may drop lines then; the monitor never does."""
    out = daemon.docker(
        "run",
        "--name",
        "nb",
        "--log-opt",
        "mode=non-blocking",
        "--log-opt",
        "max-buffer-size=64k",
        "busybox",
        "seq",
        "1",
        "200000",
    )
    assert ok(out).split() == [str(n) for n in range(1, 200_001)]
    assert ok(daemon.docker("logs", "nb")).split() == [str(n) for n in range(1, 200_001)]
    bad = daemon.docker("run", "--rm", "--log-opt", "mode=lossy", "busybox", "true")
    assert bad.returncode != 0 and "logging mode not supported: lossy" in bad.stderr
    ok(daemon.docker("rm", "nb"))
