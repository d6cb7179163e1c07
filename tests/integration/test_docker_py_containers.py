"""docker-py (7.x) driving the daemon's container and exec endpoints, as users' scripts do.

Also the hijacked streams at the byte level: attach before start sees all
output, the 8-byte multiplexed frames, raw TTY streams, detach keys, and a
wait registered before start.
"""

from __future__ import annotations

import base64
import datetime
import io
import json
import os
import socket
import struct
import tarfile
import time
from typing import Any

import pytest
from tests.integration.engine_fixtures import Daemon

docker = pytest.importorskip("docker")

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


@pytest.fixture
def daemon(daemon_factory: Any) -> Daemon:
    """The shared fixture's daemon; ``BULKHEAD_TEST_RUNTIME=runc`` (or crun,
    bulkhead-runtime) runs every container of this file on that runtime."""
    runtime = os.environ.get("BULKHEAD_TEST_RUNTIME")
    made: Daemon = daemon_factory(["--default-runtime", runtime] if runtime else None)
    return made


def read_frames(sock: Any, timeout: float = 10) -> list[tuple[int, bytes]]:
    """Every multiplexed frame until the daemon closes the stream."""
    return parse_frames(_read_all(sock, timeout))


def _read_all(sock: Any, timeout: float) -> bytes:
    s = getattr(sock, "_sock", sock)
    s.settimeout(timeout)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return out
        out += chunk


def wait_for_log(c: Any, text: bytes, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in c.logs():
        assert time.monotonic() < deadline, c.logs()
        time.sleep(0.05)


def hijack(daemon: Daemon, target: str) -> tuple[socket.socket, bytes, bytes]:
    """POST ``target`` asking for an upgrade: (socket, response head, bytes already past it)."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket)
    s.sendall(
        f"POST {target} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n"
        "Content-Length: 0\r\n\r\n".encode()
    )
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return s, head, rest


def parse_frames(raw: bytes) -> list[tuple[int, bytes]]:
    frames = []
    while raw:
        assert len(raw) >= 8, raw
        stream, length = struct.unpack(">BxxxI", raw[:8])
        frames.append((stream, raw[8 : 8 + length]))
        raw = raw[8 + length :]
    return frames


def test_run_returns_output_and_raises_on_failure(daemon: Daemon) -> None:
    client = daemon.client()
    assert client.containers.run("busybox", "echo hi", remove=True) == b"hi\n"
    with pytest.raises(docker.errors.ContainerError) as info:
        client.containers.run("busybox", ["sh", "-c", "echo oops >&2; exit 2"], remove=True)
    assert info.value.exit_status == 2
    assert b"oops" in info.value.stderr
    with pytest.raises(docker.errors.ImageNotFound):  # create only: no pull from outside
        client.containers.create("nosuchimage:1", "true")
    assert client.containers.list(all=True) == []


def test_detached_container_lifecycle(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run(
        "busybox",
        ["sh", "-c", "trap 'exit 0' TERM; echo up; while :; do sleep 0.1; done"],
        detach=True,
        name="pyc",
        labels={"role": "test"},
        environment={"K": "V"},
    )
    c.reload()
    assert c.status == "running"
    assert c.name == "pyc"
    assert c.labels == {"role": "test"}
    assert "K=V" in c.attrs["Config"]["Env"]
    assert [x.id for x in client.containers.list(filters={"label": "role=test"})] == [c.id]
    assert client.containers.get("pyc").id == c.id
    deadline = time.monotonic() + 5
    while b"up" not in c.logs() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert c.logs() == b"up\n"
    c.stop(timeout=5)
    assert c.wait() == {"StatusCode": 0}
    c.reload()
    assert c.status == "exited"
    c.rename("pyc2")
    c.reload()
    assert c.name == "pyc2"
    c.remove()
    with pytest.raises(docker.errors.NotFound):
        client.containers.get("pyc2")


def test_bad_create_is_a_400_naming_the_field(daemon: Daemon) -> None:
    client = daemon.client()
    with pytest.raises(docker.errors.APIError) as info:
        client.containers.create("busybox", "true", mem_limit="1k")
    assert info.value.status_code == 400
    assert "HostConfig.Memory" in str(info.value)
    with pytest.raises(docker.errors.APIError) as info:
        client.api.create_container("busybox", "true", host_config={"CpuPeriod": 5})
    assert info.value.status_code == 400
    assert "HostConfig.CpuPeriod" in str(info.value)
    with pytest.raises(docker.errors.APIError) as info:
        client.containers.create("busybox", "true", name="x y")
    assert info.value.status_code == 400


def test_exec_run(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", "sleep 60", detach=True)
    code, out = c.exec_run(["sh", "-c", "echo out; echo err >&2; exit 3"], demux=True)
    assert code == 3
    assert out == (b"out\n", b"err\n")
    code, out = c.exec_run("id -u", user="nobody")
    assert (code, out) == (0, b"65534\n")
    code, out = c.exec_run("nosuchcommand")
    assert code == 127
    code, out = c.exec_run("tty", tty=True)
    assert code == 0 and out.startswith(b"/dev/pts/")
    exec_id = client.api.exec_create(c.id, ["sh", "-c", "sleep 0.3; exit 9"])["Id"]
    client.api.exec_start(exec_id, detach=True)
    info = client.api.exec_inspect(exec_id)
    assert info["Running"] is True and info["Pid"] > 0
    c.reload()
    assert c.attrs["ExecIDs"] == [exec_id]
    deadline = time.monotonic() + 10
    while client.api.exec_inspect(exec_id)["Running"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 9
    c.reload()
    assert c.attrs["ExecIDs"] is None
    with pytest.raises(docker.errors.NotFound):
        client.api.exec_inspect("0" * 64)
    c.kill()
    c.wait()
    with pytest.raises(docker.errors.APIError) as err:
        c.exec_run("true")
    assert err.value.status_code == 409


def test_attach_before_start_sees_everything_multiplexed(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.create("busybox", ["sh", "-c", "echo first; echo second >&2; echo third"])
    sock = client.api.attach_socket(c.id, params={"stdout": 1, "stderr": 1, "stream": 1})
    c.start()
    frames = read_frames(sock)
    sock.close()
    assert b"".join(d for s, d in frames if s == 1) == b"first\nthird\n"
    assert b"".join(d for s, d in frames if s == 2) == b"second\n"
    assert c.wait()["StatusCode"] == 0
    # logs=1 replays the log; stream=0 ends there
    s, head, rest = hijack(daemon, f"/v1.45/containers/{c.id}/attach?stdout=1&stderr=1&logs=1")
    frames = parse_frames(rest + _read_all(s, 10))
    s.close()
    assert head.startswith(b"HTTP/1.1 101")
    assert sorted(frames) == [(1, b"first\n"), (1, b"third\n"), (2, b"second\n")]


def test_attach_stdin_and_detach_keys_with_a_tty(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", "cat", detach=True, tty=True, stdin_open=True)
    sock = client.api.attach_socket(
        c.id, params={"stdin": 1, "stdout": 1, "stream": 1, "detachKeys": "ctrl-x,x"}
    )
    raw = sock._sock
    raw.settimeout(10)
    raw.sendall(b"hello\n")
    out = b""
    while out.count(b"hello") < 2:  # the terminal's echo, then cat's copy
        chunk = raw.recv(4096)
        assert chunk, out
        out += chunk
    assert b"hello" in out  # raw stream: no frame headers
    assert not out.startswith(b"\x01\x00\x00\x00")
    raw.sendall(b"\x18x")  # ctrl-x, x: detach
    rest = _read_all(sock, 10)
    sock.close()
    assert b"\x18" not in rest
    c.reload()
    assert c.status == "running"  # detaching leaves it running
    c.kill()


def test_wait_registered_before_start_and_conditions(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.create("busybox", ["sh", "-c", "exit 4"])
    # docker's own flow: wait(next-exit) first, then start
    base = client.api.base_url
    resp = client.api._post(
        f"{base}/containers/{c.id}/wait", params={"condition": "next-exit"}, stream=True
    )
    assert resp.status_code == 200
    c.start()
    assert resp.json() == {"StatusCode": 4}
    assert c.wait(condition="not-running") == {"StatusCode": 4}
    with pytest.raises(docker.errors.APIError) as info:
        c.wait(condition="sometime")
    assert info.value.status_code == 400
    with pytest.raises(docker.errors.NotFound):
        client.api.wait("nosuchcontainer")


def test_logs_stream_follow_and_options(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run(
        "busybox",
        ["sh", "-c", "for i in 1 2 3; do echo $i; echo e$i >&2; sleep 0.2; done"],
        detach=True,
    )
    lines = list(c.logs(stream=True, follow=True))
    assert b"".join(lines).split() == [b"1", b"e1", b"2", b"e2", b"3", b"e3"]
    assert c.logs(stderr=False) == b"1\n2\n3\n"
    assert c.logs(stdout=False) == b"e1\ne2\ne3\n"
    assert c.logs(tail=1, stderr=False) == b"3\n"
    future = datetime.datetime.now() + datetime.timedelta(hours=1)
    assert c.logs(since=future) == b""
    assert c.logs(until=datetime.datetime(2000, 1, 1)) == b""
    assert c.logs(since=datetime.datetime(2000, 1, 1), stderr=False) == b"1\n2\n3\n"
    stamped = c.logs(timestamps=True, stderr=False).split(b"\n")[0]
    assert stamped.endswith(b" 1") and stamped[:2] == b"20"
    with pytest.raises(docker.errors.APIError) as info:
        client.api.logs(c.id, stdout=False, stderr=False)
    assert info.value.status_code == 400


def test_tty_logs_are_raw(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", ["echo", "tty-out"], tty=True, detach=True)
    c.wait()
    assert c.logs() == b"tty-out\r\n"


def test_kill_restart_remove_force(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run(
        "busybox",
        ["sh", "-c", "trap 'exit 5' HUP; echo ready; while :; do sleep 0.1; done"],
        detach=True,
    )
    wait_for_log(c, b"ready")  # PID 1 ignores SIGHUP until the trap is set
    c.kill(signal="SIGHUP")
    assert c.wait()["StatusCode"] == 5
    c.restart(timeout=1)
    c.reload()
    assert c.status == "running"
    with pytest.raises(docker.errors.APIError) as info:
        c.remove()
    assert info.value.status_code == 409
    c.remove(force=True)
    assert client.containers.list(all=True) == []


def test_resize_and_prune(daemon: Daemon) -> None:
    client = daemon.client()
    script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; stty size"
    c = client.containers.run("busybox", ["sh", "-c", script], tty=True, detach=True)
    c.resize(height=33, width=111)
    c.exec_run("touch /tmp/go")
    c.wait()
    assert c.logs().strip() == b"33 111"
    stopped = client.containers.run("busybox", "true", detach=True)
    stopped.wait()
    result = client.containers.prune()
    assert set(result["ContainersDeleted"]) == {c.id, stopped.id}
    assert client.containers.list(all=True) == []


def test_put_get_archive_export_diff_commit(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", "sleep 60", detach=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        data = b"payload\n"
        info = tarfile.TarInfo("note.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    assert c.put_archive("/tmp", buf.getvalue())
    stream, stat = c.get_archive("/tmp/note.txt")
    assert stat["name"] == "note.txt" and stat["size"] == 8
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        member = tar.extractfile("note.txt")
        assert member is not None and member.read() == b"payload\n"
    with pytest.raises(docker.errors.NotFound):
        c.get_archive("/no/such/path")
    # HEAD: the stat header only (docker cp asks it of the destination, often "/")
    resp = client.api.head(client.api._url("/containers/{0}/archive", c.id), params={"path": "/"})
    assert resp.status_code == 200 and resp.content == b""
    stat = json.loads(base64.b64decode(resp.headers["X-Docker-Container-Path-Stat"]))
    assert stat["name"] == "/" and stat["mode"] & 0o20000000000  # os.ModeDir
    assert {"Path": "/tmp/note.txt", "Kind": 1} in c.diff()
    exported = b"".join(c.export())
    with tarfile.open(fileobj=io.BytesIO(exported)) as tar:
        assert any(m.name.lstrip("./") == "tmp/note.txt" for m in tar.getmembers())
    image = c.commit(repository="pysnap", tag="v1")
    out = client.containers.run(image.id, "cat /tmp/note.txt", remove=True)
    assert out == b"payload\n"
    c.kill()


def test_raw_socket_upgrade_answers_101(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.create("busybox", ["echo", "raw"])
    s, head, rest = hijack(daemon, f"/v1.45/containers/{c.id}/attach?stream=1&stdout=1&stderr=1")
    assert head.startswith(b"HTTP/1.1 101")
    assert b"application/vnd.docker.multiplexed-stream" in head
    c.start()
    frames = parse_frames(rest + _read_all(s, 10))
    s.close()
    assert frames == [(1, b"raw\n")]


def test_docker_py_attach_with_logs_replays_them(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", ["sh", "-c", "echo one; echo two >&2"], detach=True)
    c.wait()
    for _ in range(5):  # the replay waits for docker-py to finish reading the response head
        assert c.attach(stdout=True, stderr=True, stream=False, logs=True) == b"one\ntwo\n"
    assert c.attach(stdout=True, stderr=False, stream=False, logs=True) == b"one\n"


def test_exec_goes_on_when_its_client_leaves(daemon: Daemon) -> None:
    client = daemon.client()
    c = client.containers.run("busybox", "sleep 60", detach=True)
    # a TTY exec with stdin: the client's leaving ends the attach at once (Docker's rule)
    exec_id = client.api.exec_create(
        c.id, ["sh", "-c", "sleep 1; touch /tmp/done"], stdin=True, tty=True
    )["Id"]
    sock = client.api.exec_start(exec_id, socket=True, tty=True)
    time.sleep(0.3)
    sock.close()  # the client goes away; the process does not
    time.sleep(0.2)
    assert client.api.exec_inspect(exec_id)["Running"] is True
    deadline = time.monotonic() + 10
    while client.api.exec_inspect(exec_id)["Running"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.api.exec_inspect(exec_id)["ExitCode"] == 0
    assert c.exec_run("ls /tmp/done").exit_code == 0
    c.kill()
