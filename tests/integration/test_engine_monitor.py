"""The container monitor and its zygote, on busybox bundles, with both runtimes.

``bulkhead`` is the runtime library driven in the monitor's process; ``runc``
is Debian's runc binary. Every test checks that nothing is left behind: the
runtime's state, the container's cgroup (the ``cgroup_parent`` fixture) and
the monitor's processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from tests.integration.engine_fixtures import _processes_mentioning

from bulkhead.engine import zygote
from bulkhead.engine.monitor import (
    MONITOR_LOOP,
    MonitorBadRequest,
    MonitorClient,
    MonitorConfig,
    MonitorError,
    MonitorNotRunning,
    ProcessNotFound,
    loop_binary,
)
from bulkhead.engine.zygote import ZygoteClient
from bulkhead.runtime.state import proc_start_time

RUNC = shutil.which("runc")
RUNTIMES = [
    "bulkhead",
    pytest.param("runc", marks=pytest.mark.skipif(RUNC is None, reason="runc is not installed")),
]
#: ... and bulkhead's own CLI, driven as a runc-compatible binary
RUNTIME_CLI = str(Path(sys.executable).with_name("bulkhead-runtime"))
RUNTIMES_AND_CLI = [*RUNTIMES, "bulkhead-runtime"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie or a vanished process does not)."""
    return proc_start_time(pid) is not None


def demux(data: bytes) -> dict[int, bytes]:
    """Split Docker's 8-byte frames into {stream: bytes}."""
    out: dict[int, bytes] = {1: b"", 2: b""}
    while data:
        assert len(data) >= 8, data
        stream, size = struct.unpack(">BxxxI", data[:8])
        out[stream] += data[8 : 8 + size]
        data = data[8 + size :]
    return out


def log_entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


class Harness:
    """Spawns monitors through one zygote in a short exec root; cleans up after itself."""

    def __init__(self, exec_root: Path, make_bundle: Any, cgroup_parent: str, tmp: Path) -> None:
        self.exec_root = exec_root
        self.make_bundle = make_bundle
        self.cgroup_parent = cgroup_parent
        self.tmp = tmp
        self.zygote = ZygoteClient(exec_root)
        self.configs: list[MonitorConfig] = []
        self.loop = "c-loop"

    def runtime_root(self, runtime: str) -> str:
        return str(self.exec_root / "runtime" / runtime)

    def config(
        self,
        args: list[str],
        runtime: str,
        *,
        tty: bool = False,
        stdin: bool = False,
        stdin_once: bool = False,
        linux: dict[str, Any] | None = None,
        log_max_size: int = 0,
    ) -> MonitorConfig:
        cid = "m-" + uuid.uuid4().hex[:10]
        lx = dict(linux or {})
        lx["cgroupsPath"] = f"{self.cgroup_parent}/{cid}"
        bundle = self.make_bundle(args, terminal=tty, config={"linux": lx})
        cfg = MonitorConfig(
            container_id=cid,
            bundle=str(bundle),
            runtime={"bulkhead": "bulkhead", "bulkhead-runtime": RUNTIME_CLI}.get(
                runtime, str(RUNC)
            ),
            runtime_root=self.runtime_root(runtime),
            state_dir=str(self.exec_root / cid),
            log_path=str(self.tmp / f"{cid}-json.log"),
            log_max_size=log_max_size,
            log_max_files=3,
            tty=tty,
            stdin_open=stdin,
            stdin_once=stdin_once,
        )
        self.configs.append(cfg)
        return cfg

    async def spawn(self, cfg: MonitorConfig) -> MonitorClient:
        await self.zygote.ensure_running()
        await self.zygote.spawn(cfg)
        return MonitorClient(cfg.state_dir)

    def wait_exit(self, cfg: MonitorConfig, timeout: float = 15.0) -> None:
        """Until the monitor has exited (exit.json written, runtime container deleted)."""
        client = MonitorClient(cfg.state_dir)
        info = client.info()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if client.exit_status() is not None and (info is None or not alive(info.monitor_pid)):
                return
            time.sleep(0.01)
        raise AssertionError(f"monitor of {cfg.container_id} did not exit")

    def assert_clean(self, cfg: MonitorConfig) -> None:
        """The container left nothing: no runtime state, no process."""
        self.wait_exit(cfg)
        info = MonitorClient(cfg.state_dir).info()
        assert info is not None
        assert not alive(info.init_pid)
        assert not os.path.exists(os.path.join(cfg.runtime_root, cfg.container_id))
        for name in ("ctl.sock", "attach.sock"):
            assert not os.path.exists(os.path.join(cfg.state_dir, name))

    def cleanup(self) -> None:
        for cfg in self.configs:
            info = MonitorClient(cfg.state_dir).info()
            if info is not None and alive(info.init_pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(info.init_pid, signal.SIGKILL)
            if info is not None:
                deadline = time.monotonic() + 10
                while alive(info.monitor_pid) and time.monotonic() < deadline:
                    time.sleep(0.01)
                if alive(info.monitor_pid):
                    os.kill(info.monitor_pid, signal.SIGKILL)
            root = cfg.runtime_root
            if os.path.isdir(os.path.join(root, cfg.container_id)):
                binary = RUNC if "runc" in root else None
                if binary:
                    subprocess.run([binary, "--root", root, "delete", "--force", cfg.container_id])
                else:
                    from bulkhead.runtime.container import Runtime

                    with contextlib.suppress(Exception):
                        Runtime(root).delete(cfg.container_id, force=True)
        self.zygote.stop()


@pytest.fixture(params=["c-loop", "python-loop"])
def harness(
    request: pytest.FixtureRequest,
    make_bundle: Any,
    cgroup_parent: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Harness]:
    """Every monitor test twice: monitors that hand over to ``bh-monitor``, and the Python loop.

    The zygote (started by the test) passes our environment on to its monitors:
    ``BULKHEAD_MONITOR_LOOP=python`` keeps them in Python.
    """
    if request.param == "python-loop":
        monkeypatch.setenv("BULKHEAD_MONITOR_LOOP", "python")
    else:
        monkeypatch.delenv("BULKHEAD_MONITOR_LOOP", raising=False)
        if loop_binary() is None:
            pytest.fail(f"{MONITOR_LOOP} is not built: `make deps` builds it")
    exec_root = Path(tempfile.mkdtemp(prefix="bh-", dir="/run"))
    h = Harness(exec_root, make_bundle, cgroup_parent, tmp_path)
    h.loop = request.param
    try:
        yield h
    finally:
        h.cleanup()
        shutil.rmtree(exec_root, ignore_errors=True)


async def read_all(reader: asyncio.StreamReader, timeout: float = 15.0) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


@pytest.mark.parametrize("runtime", RUNTIMES_AND_CLI)
def test_output_goes_to_log_and_attach_and_exit_code_is_recorded(
    harness: Harness, runtime: str
) -> None:
    cfg = harness.config(
        ["sh", "-c", "echo hello; echo oops >&2; read x; echo got $x; exit 3"],
        runtime,
        stdin=True,
        stdin_once=True,
    )

    async def go() -> bytes:
        client = await harness.spawn(cfg)
        info = client.info()
        assert info is not None and info.init_pid > 0 and client.alive()
        reader, writer = await client.attach(stdin=True, stdout=True, stderr=True)
        await client.start()
        writer.write(b"abc\n")
        writer.write_eof()
        return await read_all(reader)

    streams = demux(asyncio.run(go()))
    assert streams[1] == b"hello\ngot abc\n"
    assert streams[2] == b"oops\n"
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None
    assert status.exit_code == 3 and not status.oom_killed and status.error == ""
    assert status.finished_at.endswith("Z") and "T" in status.finished_at
    entries = log_entries(Path(str(cfg.log_path)))
    assert [(e["stream"], e["log"]) for e in entries if e["stream"] == "stdout"] == [
        ("stdout", "hello\n"),
        ("stdout", "got abc\n"),
    ]
    assert [e["log"] for e in entries if e["stream"] == "stderr"] == ["oops\n"]
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_attach_between_create_and_start_misses_nothing_and_filters_streams(
    harness: Harness, runtime: str
) -> None:
    cfg = harness.config(["sh", "-c", "echo one; echo two >&2; echo three"], runtime)

    async def go() -> tuple[bytes, bytes, bytes]:
        client = await harness.spawn(cfg)
        both = await client.attach(stdin=False, stdout=True, stderr=True)
        out = await client.attach(stdin=False, stdout=True, stderr=False)
        err = await client.attach(stdin=False, stdout=False, stderr=True)
        await client.start()
        return await asyncio.gather(read_all(both[0]), read_all(out[0]), read_all(err[0]))

    both, out, err = asyncio.run(go())
    assert demux(both) == {1: b"one\nthree\n", 2: b"two\n"}
    assert demux(out) == {1: b"one\nthree\n", 2: b""}
    assert demux(err) == {1: b"", 2: b"two\n"}
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES_AND_CLI)
def test_terminal_is_raw_resizable_and_logged_as_stdout(harness: Harness, runtime: str) -> None:
    cfg = harness.config(
        ["sh", "-c", "read x; stty size; echo got $x"], runtime, tty=True, stdin=True
    )

    async def go() -> bytes:
        client = await harness.spawn(cfg)
        reader, writer = await client.attach(stdin=True, stdout=True, stderr=True)
        await client.resize(31, 101)
        await client.start()
        writer.write(b"abc\r")
        return await read_all(reader)

    data = asyncio.run(go())
    assert b"31 101" in data
    assert b"got abc" in data
    assert not data.startswith(b"\x01\x00\x00\x00")  # raw, not framed
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None and status.exit_code == 0
    entries = log_entries(Path(str(cfg.log_path)))
    assert {e["stream"] for e in entries} == {"stdout"}
    assert "got abc" in "".join(e["log"] for e in entries)
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_kill_records_128_plus_signal(harness: Harness, runtime: str) -> None:
    cfg = harness.config(["sleep", "100"], runtime)

    async def go() -> None:
        client = await harness.spawn(cfg)
        await client.start()
        assert (await client.ping())["started"] is True
        await client.kill(signal.SIGKILL)

    asyncio.run(go())
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None and status.exit_code == 137
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_kill_before_start_ends_the_created_container(harness: Harness, runtime: str) -> None:
    cfg = harness.config(["echo", "never"], runtime)

    async def go() -> None:
        client = await harness.spawn(cfg)
        await client.kill(signal.SIGKILL)

    asyncio.run(go())
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None and status.exit_code == 137
    assert log_entries(Path(str(cfg.log_path))) == []
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES_AND_CLI)
def test_exec_streams_frames_takes_stdin_and_records_its_exit_code(
    harness: Harness, runtime: str
) -> None:
    cfg = harness.config(["sleep", "100"], runtime)
    process = {
        "args": ["sh", "-c", "echo out; echo err >&2; cat; exit 5"],
        "env": ["PATH=/bin:/usr/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
    }

    async def go() -> tuple[int, bytes, MonitorClient]:
        client = await harness.spawn(cfg)
        await client.start()
        pid, reader, writer = await client.exec("e1", process, tty=False, stdin=True)
        writer.write(b"piped\n")
        writer.write_eof()
        data = await read_all(reader)
        writer.close()
        # The log holds the container's output only, not the exec's.
        await client.kill(signal.SIGKILL)
        return pid, data, client

    pid, data, client = asyncio.run(go())
    assert demux(data) == {1: b"out\npiped\n", 2: b"err\n"}
    status = client.exec_status("e1")
    assert status is not None and status.exit_code == 5 and status.pid == pid
    harness.wait_exit(cfg)
    assert log_entries(Path(str(cfg.log_path))) == []
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exec_with_a_terminal_is_raw(harness: Harness, runtime: str) -> None:
    cfg = harness.config(["sleep", "100"], runtime)
    process = {
        "args": ["sh", "-c", "stty size; tty; exit 2"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
        "consoleSize": {"height": 20, "width": 70},
    }

    async def go() -> tuple[bytes, MonitorClient]:
        client = await harness.spawn(cfg)
        await client.start()
        _, reader, writer = await client.exec("tty1", process, tty=True, stdin=False)
        data = await read_all(reader)
        writer.close()
        await client.kill(signal.SIGKILL)
        return data, client

    data, client = asyncio.run(go())
    assert b"20 70" in data and b"/dev/pts/" in data
    status = client.exec_status("tty1")
    assert status is not None and status.exit_code == 2
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES_AND_CLI)
def test_missing_programs_are_not_found_errors(harness: Harness, runtime: str) -> None:
    bad = harness.config(["/no/such/program"], runtime)

    async def create_bad() -> None:
        await harness.spawn(bad)

    with pytest.raises(ProcessNotFound) as info:
        asyncio.run(create_bad())
    assert info.value.exit_code == 127
    assert "/no/such/program" in str(info.value)
    assert not os.path.exists(os.path.join(bad.runtime_root, bad.container_id))
    assert not os.path.exists(os.path.join(bad.state_dir, "ctl.sock"))

    cfg = harness.config(["sleep", "100"], runtime)

    async def exec_bad() -> MonitorClient:
        client = await harness.spawn(cfg)
        await client.start()
        with pytest.raises(ProcessNotFound):
            await client.exec(
                "bad",
                {
                    "args": ["nosuchcmd"],
                    "env": ["PATH=/bin"],
                    "cwd": "/",
                    "user": {"uid": 0, "gid": 0},
                },
                tty=False,
                stdin=False,
            )
        # The monitor is still there.
        assert (await client.ping())["ok"] is True
        await client.kill(signal.SIGKILL)
        return client

    asyncio.run(exec_bad())
    harness.assert_clean(cfg)


def test_ctl_refuses_bad_requests(harness: Harness) -> None:
    cfg = harness.config(["sleep", "100"], "bulkhead")

    async def go() -> None:
        client = await harness.spawn(cfg)
        with pytest.raises(MonitorBadRequest, match="unknown op"):
            await client.call({"op": "dance"})
        with pytest.raises(MonitorBadRequest, match="no terminal"):
            await client.resize(10, 10)
        with pytest.raises(MonitorNotRunning):
            await client.exec(
                "x", {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}}, False, False
            )
        await client.start()
        with pytest.raises(MonitorBadRequest, match="already started"):
            await client.start()
        with pytest.raises(MonitorBadRequest, match="invalid exec_id"):
            await client.exec("../x", {"args": ["true"]}, False, False)
        await client.kill(signal.SIGKILL)

    asyncio.run(go())
    harness.wait_exit(cfg)

    async def after() -> None:
        with pytest.raises(MonitorNotRunning):
            await MonitorClient(cfg.state_dir).start()

    asyncio.run(after())
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_oom_kill_is_flagged(harness: Harness, runtime: str) -> None:
    limit = 16 * 1024 * 1024
    cfg = harness.config(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"],
        runtime,
        linux={"resources": {"memory": {"limit": limit, "swap": limit}}},
    )

    async def go() -> None:
        client = await harness.spawn(cfg)
        await client.start()

    asyncio.run(go())
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None
    assert status.oom_killed is True and status.exit_code == 137
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_not_oom_killed_without_a_limit_hit(harness: Harness, runtime: str) -> None:
    cfg = harness.config(
        ["dd", "if=/dev/zero", "of=/dev/null", "bs=1M", "count=1"],
        runtime,
        linux={"resources": {"memory": {"limit": 64 << 20}}},
    )

    async def go() -> None:
        client = await harness.spawn(cfg)
        await client.start()

    asyncio.run(go())
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None and status.exit_code == 0 and status.oom_killed is False
    harness.assert_clean(cfg)


_SPAWNER = """
import asyncio, sys, json
from bulkhead.engine.monitor import MonitorConfig, MonitorClient
from bulkhead.engine.zygote import ZygoteClient
from bulkhead.runtime.state import proc_start_time
from tests.integration.engine_fixtures import _processes_mentioning

async def main():
    cfg = MonitorConfig(**json.loads(sys.argv[1]))
    z = ZygoteClient(sys.argv[2])
    await z.ensure_running()
    spawned = await z.spawn(cfg)
    await MonitorClient(cfg.state_dir).start()
    print(json.dumps({"monitor": spawned.monitor_pid, "init": spawned.init_pid}), flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_monitor_survives_its_spawner_and_the_zygote(harness: Harness, runtime: str) -> None:
    import msgspec

    cfg = harness.config(
        ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done"], runtime
    )
    spawner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _SPAWNER,
            msgspec.json.encode(cfg).decode(),
            str(harness.exec_root),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert spawner.stdout is not None
        pids = json.loads(spawner.stdout.readline())
    finally:
        spawner.kill()
        spawner.wait()
    zygote_pid = harness.zygote.pid()
    assert zygote_pid is not None
    os.kill(zygote_pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(zygote_pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    log = Path(str(cfg.log_path))
    before = len(log_entries(log))
    time.sleep(0.4)
    assert alive(pids["monitor"]) and alive(pids["init"])
    assert len(log_entries(log)) > before  # still copying output
    client = MonitorClient(cfg.state_dir)
    assert client.alive()

    async def stop() -> None:
        await client.kill(signal.SIGKILL, all=True)

    asyncio.run(stop())
    harness.wait_exit(cfg)
    status = client.exit_status()
    assert status is not None and status.exit_code == 137
    harness.assert_clean(cfg)
    assert not client.alive()


def test_log_rotation_through_the_monitor(harness: Harness) -> None:
    cfg = harness.config(
        ["sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done"],
        "bulkhead",
        log_max_size=2000,
    )

    async def go() -> None:
        client = await harness.spawn(cfg)
        await client.start()

    asyncio.run(go())
    harness.wait_exit(cfg)
    log = Path(str(cfg.log_path))
    files = [log.with_name(log.name + ".2"), log.with_name(log.name + ".1"), log]
    assert all(f.exists() for f in files)
    assert not log.with_name(log.name + ".3").exists()
    assert all(f.stat().st_size <= 2000 for f in files)
    lines = [e["log"] for f in files for e in log_entries(f)]
    assert lines[-1] == "line-199\n"
    # Oldest messages rotated away, the rest in order.
    numbers = [int(line.split("-")[1]) for line in lines]
    assert numbers == list(range(numbers[0], 200))


def test_one_zygote_per_exec_root(harness: Harness) -> None:
    async def go() -> list[int]:
        return list(await asyncio.gather(*(harness.zygote.ensure_running() for _ in range(3))))

    pids = asyncio.run(go())
    assert len(set(pids)) == 1
    # A second zygote on the same exec root steps aside, leaving the first one serving.
    second = subprocess.run(
        [
            sys.executable,
            "-m",
            "bulkhead.engine.zygote",
            "--socket",
            str(harness.zygote.socket_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 0
    assert "another zygote" in second.stderr
    assert asyncio.run(harness.zygote.ping()) == pids[0]


def test_socket_activation_variables_do_not_reach_containers(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LISTEN_FDS", "2")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    cfg = harness.config(["sh", "-c", "echo fds:$LISTEN_FDS; ls /proc/self/fd"], "bulkhead")

    async def go() -> bytes:
        client = await harness.spawn(cfg)
        reader, _ = await client.attach(stdin=False, stdout=True, stderr=True)
        await client.start()
        return await read_all(reader)

    out = demux(asyncio.run(go()))[1].decode()
    assert "fds:\n" in out
    assert sorted(out.split("\n", 1)[1].split()) == ["0", "1", "2", "3"]  # 3: ls's own dir fd
    harness.assert_clean(cfg)


def test_zygote_keeps_none_of_its_spawners_fds(harness: Harness) -> None:
    r, w = os.pipe()
    os.set_inheritable(w, True)
    try:
        pid = asyncio.run(harness.zygote.ensure_running())
        os.close(w)
        w = -1
        # Had the zygote inherited the write end, this read would block: EOF instead.
        os.set_blocking(r, False)
        assert os.read(r, 1) == b""
        # The zygote may be forking its spare monitor just now, with short-lived pipes of its
        # own: an inherited pipe stays, so look until a listing shows none (or give up).
        deadline = time.monotonic() + 10
        while True:
            stray = _fd_targets(pid) - _own_pipes(pid)
            stray_pipes = {t for t in stray if t.startswith("pipe:")}
            if not stray_pipes or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert not stray_pipes
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _fd_links(pid: int) -> list[str]:
    """What each of the process's open fds points at; an fd closed while we look is skipped."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return links


def _fd_targets(pid: int) -> set[str]:
    return set(_fd_links(pid))


def _own_pipes(pid: int) -> set[str]:
    """The zygote's signal wakeup pipe (both ends): the only pipe it should hold."""
    pipes = [t for t in _fd_links(pid) if t.startswith("pipe:")]
    return {p for p in pipes if pipes.count(p) == 2}


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_container_starts_with_no_signal_ignored_or_blocked(harness: Harness, runtime: str) -> None:
    cfg = harness.config(["cat", "/proc/self/status"], runtime)

    async def go() -> bytes:
        client = await harness.spawn(cfg)
        reader, _ = await client.attach(stdin=False, stdout=True, stderr=True)
        await client.start()
        return await read_all(reader)

    status = demux(asyncio.run(go()))[1].decode()
    fields = dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)
    assert int(fields["SigIgn"], 16) == 0, fields["SigIgn"]
    assert int(fields["SigBlk"], 16) == 0, fields["SigBlk"]
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_sigterm_to_the_monitor_goes_to_the_container(harness: Harness, runtime: str) -> None:
    cfg = harness.config(
        ["sh", "-c", 'trap "echo bye; exit 7" TERM; echo ready; while true; do sleep 0.05; done'],
        runtime,
    )

    async def go() -> bytes:
        client = await harness.spawn(cfg)
        reader, _ = await client.attach(stdin=False, stdout=True, stderr=True)
        await client.start()
        first = await asyncio.wait_for(reader.readexactly(8 + len(b"ready\n")), 10)
        info = client.info()
        assert info is not None
        os.kill(info.monitor_pid, signal.SIGTERM)
        return first + await read_all(reader)

    assert demux(asyncio.run(go()))[1] == b"ready\nbye\n"
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None and status.exit_code == 7
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_lot_of_output_reaches_log_and_client_complete(harness: Harness, runtime: str) -> None:
    lines = 200_000
    cfg = harness.config(["sh", "-c", f"yes abcdefghij | head -n {lines}; echo end >&2"], runtime)

    async def go() -> tuple[bytes, float]:
        client = await harness.spawn(cfg)
        reader, _ = await client.attach(stdin=False, stdout=True, stderr=True)
        t0 = time.monotonic()
        await client.start()
        data = await read_all(reader, timeout=60)
        return data, time.monotonic() - t0

    data, took = asyncio.run(go())
    streams = demux(data)
    assert streams[1] == b"abcdefghij\n" * lines
    assert streams[2] == b"end\n"
    harness.wait_exit(cfg)
    entries = log_entries(Path(str(cfg.log_path)))
    assert len(entries) == lines + 1
    assert took < 30


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_clients_that_go_away_do_not_disturb_the_container(harness: Harness, runtime: str) -> None:
    cfg = harness.config(
        ["sh", "-c", "i=0; while [ $i -lt 30 ]; do echo $i; i=$((i+1)); sleep 0.05; done; exit 4"],
        runtime,
    )
    process = {
        "args": ["sh", "-c", "sleep 0.3; echo late; exit 9"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
    }

    async def go() -> MonitorClient:
        client = await harness.spawn(cfg)
        reader, writer = await client.attach(stdin=False, stdout=True, stderr=True)
        await client.start()
        await reader.readexactly(8)  # some output came: now hang up
        writer.close()
        _, _, ewriter = await client.exec("gone", process, tty=False, stdin=False)
        ewriter.close()
        return client

    client = asyncio.run(go())
    harness.wait_exit(cfg)
    status = client.exit_status()
    assert status is not None and status.exit_code == 4
    entries = log_entries(Path(str(cfg.log_path)))
    assert [e["log"] for e in entries] == [f"{i}\n" for i in range(30)]
    exec_status = client.exec_status("gone")
    assert exec_status is not None and exec_status.exit_code in (9, 137)
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_monitor_that_cannot_serve_takes_its_container_down(
    harness: Harness, runtime: str
) -> None:
    cfg = harness.config(["sleep", "100"], runtime)
    # Unix socket paths are limited to 108 bytes: ctl.sock cannot be bound here.
    long_dir = str(harness.exec_root / ("d" * 100))
    cfg = msgspec.structs.replace(cfg, state_dir=long_dir)

    async def go() -> None:
        await harness.spawn(cfg)

    with pytest.raises(MonitorError, match=r"too long|AF_UNIX path"):
        asyncio.run(go())
    assert not os.path.exists(os.path.join(cfg.runtime_root, cfg.container_id))
    assert not os.path.exists(os.path.join(long_dir, "monitor.json"))


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unread_input_does_not_reset_the_output(harness: Harness, runtime: str) -> None:
    """A container that ignores its stdin while the client floods it: the output still arrives.

    Closing a unix socket with unread input makes the kernel report
    ECONNRESET to the peer, whose asyncio reader then drops what it had
    buffered; the monitor closes gracefully instead.
    """
    cfg = harness.config(["echo", "hi"], runtime, stdin=True, stdin_once=True)

    async def go() -> bytes:
        client = await harness.spawn(cfg)
        reader, writer = await client.attach(stdin=True, stdout=True, stderr=True)
        await client.start()

        async def flood() -> None:
            with contextlib.suppress(OSError):
                for _ in range(300):
                    writer.write(b"\0" * 10_000)
                    await writer.drain()
                writer.write_eof()

        task = asyncio.ensure_future(flood())
        await asyncio.sleep(0.3)  # the container has exited, its output waits in our buffer
        try:
            return await read_all(reader)
        finally:
            writer.close()
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    for _ in range(3):
        assert demux(asyncio.run(go()))[1] == b"hi\n"
        harness.wait_exit(cfg)
        harness.assert_clean(cfg)
        cfg = harness.config(["echo", "hi"], runtime, stdin=True, stdin_once=True)


def test_zygote_has_dockers_default_seccomp_filter_compiled(harness: Harness) -> None:
    async def go() -> dict[str, Any]:
        await harness.zygote.ensure_running()
        return await harness.zygote._call({"op": "ping"}, 5.0)

    assert asyncio.run(go())["seccomp_filters_cached"] >= 1
    # Neither warm-up complained (zygote.log gets the zygote's stderr).
    log = (harness.exec_root / "zygote.log").read_text()
    assert "no warm seccomp" not in log and "warm-up skipped" not in log, log


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_exec_terminal_can_be_resized(harness: Harness, runtime: str) -> None:
    cfg = harness.config(["sleep", "100"], runtime)
    process = {
        "args": ["sh", "-c", "read x; stty size"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
    }

    async def go() -> bytes:
        client = await harness.spawn(cfg)
        await client.start()
        _, reader, writer = await client.exec("sized", process, tty=True, stdin=True)
        await client.exec_resize("sized", 40, 120)
        writer.write(b"go\r")
        data = await read_all(reader)
        writer.close()
        with pytest.raises(MonitorNotRunning):
            await client.exec_resize("sized", 10, 10)  # it has exited
        await client.kill(signal.SIGKILL)
        return data

    assert b"40 120" in asyncio.run(go())
    harness.assert_clean(cfg)


# runc 1.1 runs poststart hooks already at create: only bulkhead's two forms here.
@pytest.mark.parametrize("runtime", ["bulkhead", "bulkhead-runtime"])
def test_start_runs_poststart_hooks(harness: Harness, runtime: str, tmp_path: Path) -> None:
    marker = tmp_path / "poststart-ran"
    cfg = harness.config(["sleep", "100"], runtime)
    spec = json.loads(Path(cfg.bundle, "config.json").read_text())
    spec["hooks"] = {
        "poststart": [{"path": "/bin/sh", "args": ["sh", "-c", f"echo ran > {marker}"]}]
    }
    Path(cfg.bundle, "config.json").write_text(json.dumps(spec))

    async def go() -> None:
        client = await harness.spawn(cfg)
        assert not marker.exists()
        await client.start()
        assert marker.read_text() == "ran\n"
        with pytest.raises(MonitorBadRequest, match="already started"):
            await client.start()
        await client.kill(signal.SIGKILL)

    asyncio.run(go())
    harness.assert_clean(cfg)


def test_spawn_restarts_a_zygote_that_went_away(harness: Harness) -> None:
    first = asyncio.run(harness.zygote.ensure_running())
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(first) and time.monotonic() < deadline:
        time.sleep(0.01)
    cfg = harness.config(["echo", "again"], "bulkhead")

    async def go() -> bytes:
        await harness.zygote.spawn(cfg)  # no ensure_running first
        client = MonitorClient(cfg.state_dir)
        reader, _ = await client.attach(stdin=False, stdout=True, stderr=True)
        await client.start()
        return await read_all(reader)

    assert demux(asyncio.run(go()))[1] == b"again\n"
    second = harness.zygote.pid()
    assert second is not None and second != first
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_slow_attached_client_gets_everything(harness: Harness, runtime: str) -> None:
    """Backpressure, as Docker: a client that reads late slows the container, it loses nothing."""
    size = 24 * 1024 * 1024
    cfg = harness.config(["sh", "-c", f"yes 0123456789abcdef | head -c {size}"], runtime)

    async def go() -> int:
        client = await harness.spawn(cfg)
        reader, _ = await client.attach(stdin=False, stdout=True, stderr=False)
        await client.start()
        await asyncio.sleep(1.5)  # the container would be done long before: it must wait for us
        total = 0
        while True:
            header = await asyncio.wait_for(reader.read(8), 30)
            if not header:
                return total
            header += await reader.readexactly(8 - len(header)) if len(header) < 8 else b""
            n = struct.unpack(">BxxxI", header)[1]
            await reader.readexactly(n)
            total += n

    assert asyncio.run(go()) == size
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None and status.exit_code == 0
    harness.assert_clean(cfg)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_slow_exec_client_gets_everything(harness: Harness, runtime: str) -> None:
    size = 8 * 1024 * 1024
    cfg = harness.config(["sleep", "100"], runtime)
    process = {
        "args": ["sh", "-c", f"yes 0123456789abcdef | head -c {size}; exit 3"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0},
    }

    async def go() -> tuple[int, MonitorClient]:
        client = await harness.spawn(cfg)
        await client.start()
        _, reader, writer = await client.exec("big", process, tty=False, stdin=False)
        await asyncio.sleep(1.0)
        data = await read_all(reader, timeout=60)
        writer.close()
        await client.kill(signal.SIGKILL)
        return len(demux(data)[1]), client

    got, client = asyncio.run(go())
    assert got == size
    status = client.exec_status("big")
    assert status is not None and status.exit_code == 3
    harness.assert_clean(cfg)


def test_execs_leave_no_fds_in_the_monitor(harness: Harness) -> None:
    cfg = harness.config(["sleep", "100"], "bulkhead")
    process = {"args": ["true"], "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}}

    async def go() -> tuple[int, int]:
        client = await harness.spawn(cfg)
        await client.start()
        info = client.info()
        assert info is not None

        async def one(n: int, tty: bool) -> None:
            _, reader, writer = await client.exec(f"e{n}", process, tty=tty, stdin=True)
            await read_all(reader)
            writer.close()

        await one(0, True)
        await one(1, False)
        await asyncio.sleep(0.2)
        before = len(os.listdir(f"/proc/{info.monitor_pid}/fd"))
        for n in range(2, 12):
            await one(n, n % 2 == 0)
        await asyncio.sleep(0.2)
        after = len(os.listdir(f"/proc/{info.monitor_pid}/fd"))
        await client.kill(signal.SIGKILL)
        return before, after

    before, after = asyncio.run(go())
    assert after == before
    harness.assert_clean(cfg)


def test_a_slow_zygote_start_is_waited_for_not_failed(harness: Harness) -> None:
    # The answer timeout starts once the zygote has warmed up and forked: a cold start
    # (~0.2 s here, many seconds under TCG emulation) may take longer than that timeout.
    pid = asyncio.run(harness.zygote.ensure_running(timeout=0.05))
    assert pid == harness.zygote.pid()


def test_a_zygote_that_cannot_warm_up_in_time_is_killed_and_named(harness: Harness) -> None:
    harness.zygote.startup_limit = 0.01
    with pytest.raises(MonitorError, match=r"did not start within 0 s \(see .*zygote\.log\)"):
        asyncio.run(harness.zygote.ensure_running())
    assert harness.zygote.pid() is None


def _smaps_rollup(pid: int) -> dict[str, int]:
    """``/proc/PID/smaps_rollup`` in KiB: Rss, Pss, Private_Clean, Private_Dirty, ..."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        out[key] = int(rest.split()[0])
    return out


def test_the_monitor_becomes_bh_monitor_and_stays_small(harness: Harness) -> None:
    if harness.loop != "c-loop":
        pytest.skip("the hand-over to the C loop")
    cfg = harness.config(["sh", "-c", "echo up; sleep 100"], "bulkhead")

    async def go() -> tuple[int, bytes, int]:
        client = await harness.spawn(cfg)
        reader, _ = await client.attach(stdin=False, stdout=True, stderr=True)
        await client.start()
        first = await asyncio.wait_for(reader.readexactly(8 + 3), 10)
        info = client.info()
        assert info is not None
        pid, reader2, _ = await client.exec(
            "e1",
            {"args": ["echo", "from exec"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
            False,
            False,
        )
        exec_out = demux(await read_all(reader2))[1]
        assert exec_out == b"from exec\n"
        status = client.exec_status("e1")
        assert status is not None and status.exit_code == 0 and status.pid == pid
        return info.monitor_pid, first, pid

    monitor_pid, first, _ = asyncio.run(go())
    assert demux(first)[1] == b"up\n"
    assert os.path.realpath(f"/proc/{monitor_pid}/exe") == os.path.realpath(MONITOR_LOOP)
    mem = _smaps_rollup(monitor_pid)
    private = mem["Private_Clean"] + mem["Private_Dirty"]
    print(f"bh-monitor: Rss {mem['Rss']} KiB, Pss {mem['Pss']} KiB, private {private} KiB")
    assert mem["Rss"] < 4096 and private < 1024, mem

    async def stop() -> None:
        await MonitorClient(cfg.state_dir).kill(signal.SIGKILL)

    asyncio.run(stop())
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None and status.exit_code == 137
    harness.assert_clean(cfg)


@pytest.mark.parametrize("tty", [False, True])
def test_the_hand_over_happens_while_the_runtime_creates(harness: Harness, tty: bool) -> None:
    """In-process runtime: bh-monitor takes the helper's answer and replies to the spawner.

    So the spawner's reply comes from bh-monitor already; monitor.json names it
    (with its start time), the OOM baseline and the kill of every process go
    through the init's memory cgroup, the start through exec.fifo; with a
    terminal the pty master (from the helper) is output and input.
    """
    if harness.loop != "c-loop":
        pytest.skip("the hand-over to the C loop")
    script = "sleep 100 & read line; echo got $line; wait"
    cfg = harness.config(["sh", "-c", script], "bulkhead", tty=tty, stdin=True)

    async def go() -> bytes:
        await harness.zygote.ensure_running()
        spawned = await harness.zygote.spawn(cfg)
        exe = os.path.realpath(f"/proc/{spawned.monitor_pid}/exe")
        assert exe == os.path.realpath(MONITOR_LOOP)  # replied by bh-monitor
        client = MonitorClient(cfg.state_dir)
        info = client.info()
        assert info is not None
        assert (info.monitor_pid, info.init_pid) == (spawned.monitor_pid, spawned.init_pid)
        assert info.monitor_start == proc_start_time(info.monitor_pid)
        reader, writer = await client.attach(stdin=True, stdout=True, stderr=True)
        await client.start()
        writer.write(b"hello\n")
        await writer.drain()
        out = b""
        while b"got hello" not in out:
            chunk = await asyncio.wait_for(reader.read(4096), 10)
            assert chunk, out
            out += chunk
        await client.kill(signal.SIGKILL, all=True)  # the init and its background sleep
        out += await read_all(reader)
        return out

    out = asyncio.run(go())
    text = out if tty else demux(out)[1]
    assert b"got hello" in text
    harness.wait_exit(cfg)
    status = MonitorClient(cfg.state_dir).exit_status()
    assert status is not None and status.exit_code == 137
    harness.assert_clean(cfg)
    log = Path(cfg.state_dir, "monitor.log")
    assert "Python loop" not in (log.read_text() if log.exists() else "")


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{entry}/stat").read_text()
                if int(stat.rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry))
    return found


def test_zygote_whose_exec_root_is_removed_exits_and_leaves_the_next_one_alone() -> None:
    """Its socket gone, a zygote can never be reached: it exits, spare monitor (and helper) and all.

    The exec root made anew at the same path holds another zygote's socket and pid
    file: the old one's exit leaves them be.
    """
    exec_root = Path(tempfile.mkdtemp(prefix="bh-", dir="/run"))
    try:
        old = asyncio.run(ZygoteClient(exec_root).ensure_running())
        deadline = time.monotonic() + 30
        while not (spares := _children(old)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert spares, "the zygote forked no spare monitor"
        while (
            not (helpers := [h for s in spares for h in _children(s)])
            and time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert helpers, "the spare monitor forked no helper"
        spares += helpers
        shutil.rmtree(exec_root)
        exec_root.mkdir()
        new_client = ZygoteClient(exec_root)
        new = asyncio.run(new_client.ensure_running())
        assert new != old
        deadline = time.monotonic() + 5 * zygote.REACHABLE_CHECK + 10
        while any(map(alive, [old, *spares])) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(map(alive, [old, *spares])), "the unreachable zygote still runs"
        assert asyncio.run(new_client.ping()) == new
        assert new_client.pid() == new
    finally:
        for pid in _processes_mentioning(str(exec_root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(exec_root, ignore_errors=True)
