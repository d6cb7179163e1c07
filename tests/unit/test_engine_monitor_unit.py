"""The monitor's pieces that need no container: wire helpers, error mapping, the loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec
import pytest

from bulkhead.engine import monitor as m
from bulkhead.errors import ContainerError, ContainerNotRunning


def test_frame_is_dockers_multiplexing_header() -> None:
    assert m.frame(1, b"hi\n") == b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n"
    assert m.frame(2, b"") == b"\x02\x00\x00\x00\x00\x00\x00\x00"
    assert m.frame(1, b"x" * 70000)[4:8] == (70000).to_bytes(4, "big")


@pytest.mark.parametrize(
    ("message", "cls", "code"),
    [
        ('exec: "nosuch": executable file not found in $PATH', m.ProcessNotFound, 127),
        ("exec: /bin/x: no such file or directory", m.ProcessNotFound, 127),
        ('exec: "/etc": permission denied', m.ProcessNotExecutable, 126),
        ("exec format error", m.ProcessNotExecutable, 126),
        ("cgroup: cannot write memory.limit_in_bytes", m.MonitorError, 125),
    ],
)
def test_runtime_messages_map_to_dockers_exit_codes(
    message: str, cls: type[m.MonitorError], code: int
) -> None:
    got = m.classify_runtime_message(message)
    assert got is cls
    assert got(message).exit_code == code


def test_error_replies_become_container_errors() -> None:
    err = m.error_from_reply({"error": "no such thing", "kind": "not_found"})
    assert isinstance(err, m.ProcessNotFound) and isinstance(err, ContainerError)
    assert str(err) == "no such thing" and err.exit_code == 127
    gone = m.error_from_reply({"error": "stopped", "kind": "not_running"})
    assert isinstance(gone, ContainerNotRunning)
    odd = m.error_from_reply({"error": "?", "kind": "martian"})
    assert type(odd) is m.MonitorError and odd.kind == "martian"


def test_write_atomic_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "exit.json"
    m.write_atomic(str(target), b'{"exit_code":1}')
    m.write_atomic(str(target), msgspec.json.encode(m.ExitStatus(exit_code=3, oom_killed=True)))
    status = m.MonitorClient(tmp_path).exit_status()
    assert status == m.ExitStatus(exit_code=3, oom_killed=True)
    assert [p.name for p in tmp_path.iterdir()] == ["exit.json"]  # no temporary left


def test_client_reads_nothing_before_the_files_exist(tmp_path: Path) -> None:
    client = m.MonitorClient(tmp_path)
    assert client.exit_status() is None
    assert client.exec_status("e1") is None
    assert client.exec_status("../../etc/passwd") is None  # not a valid exec id
    assert client.info() is None
    assert client.alive() is False


def test_client_without_a_monitor_says_not_running(tmp_path: Path) -> None:
    with pytest.raises(m.MonitorNotRunning, match="does not answer"):
        asyncio.run(m.MonitorClient(tmp_path).start())


def test_alive_checks_pid_and_start_time(tmp_path: Path) -> None:
    me = os.getpid()
    start = m._proc_start(me)
    assert start is not None
    info = m.MonitorInfo(monitor_pid=me, monitor_start=start, init_pid=1)
    m.write_atomic(str(tmp_path / m.INFO_FILE), msgspec.json.encode(info))
    assert m.MonitorClient(tmp_path).alive()
    stale = m.MonitorInfo(monitor_pid=me, monitor_start=start + 1, init_pid=1)  # pid reused
    m.write_atomic(str(tmp_path / m.INFO_FILE), msgspec.json.encode(stale))
    assert not m.MonitorClient(tmp_path).alive()


def test_oom_kill_counter_of_v1_and_v2_files(tmp_path: Path) -> None:
    v1 = tmp_path / "v1"
    v1.mkdir()
    (v1 / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")
    assert m.oom_kill_count(str(v1)) == 2
    assert m.oom_kill_count(str(v2)) == 1
    assert m.oom_kill_count(str(tmp_path / "gone")) == 0
    assert m.oom_kill_count(None) == 0


def test_a_failing_callback_does_not_stop_the_loop() -> None:
    reactor = m._Reactor()
    bad_r, bad_w = os.pipe()
    good_r, good_w = os.pipe()
    seen: list[bytes] = []

    def explode() -> None:
        raise RuntimeError("boom")

    reactor.add_reader(bad_r, explode)
    reactor.add_reader(good_r, lambda: seen.append(os.read(good_r, 10)))
    try:
        os.write(bad_w, b"x")
        os.write(good_w, b"ok")
        reactor.run_once(1.0)
        assert seen == [b"ok"]
        assert bad_r not in reactor.readers  # dropped, not retried forever
        os.write(good_w, b"again")
        reactor.run_once(1.0)
        assert seen == [b"ok", b"again"]
    finally:
        for fd in (bad_r, bad_w, good_r, good_w):
            os.close(fd)
        reactor.sel.close()
