"""The daemon's HTTP layer, judged by the real ``docker`` CLI, docker-py and raw HTTP."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.engine_fixtures import kill_processes_of

from bulkhead import __version__

DOCKER = shutil.which("docker")


def _http(sock: str, raw: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(sock)
        s.sendall(raw)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _get(sock: str, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    out = _http(sock, f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    head, _, body = out.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return status, headers, body


def _daemon_cmd(sock: Path, root: Path, exec_root: Path) -> list[str]:
    return [
        sys.executable, "-m", "bulkhead.daemon", "--socket", str(sock), "--root", str(root),
        "--exec-root", str(exec_root),
    ]  # fmt: skip


@pytest.fixture
def exec_root() -> Iterator[Path]:
    """A short exec root of the test's own; the zygote a daemon starts there is killed after."""
    path = Path(tempfile.mkdtemp(prefix="bh-", dir="/run"))
    try:
        yield path
    finally:
        left = kill_processes_of(path)
        shutil.rmtree(path, ignore_errors=True)
        assert not left, f"processes of the exec root {path} survived SIGKILL: {left}"


def _start(sock: Path, root: Path, exec_root: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        _daemon_cmd(sock, root, exec_root),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"daemon exited: {proc.communicate()[1].decode()}")
        if sock.exists():
            try:
                _get(str(sock), "/_ping")
                return proc
            except OSError:
                pass
        time.sleep(0.02)
    proc.kill()
    raise RuntimeError("daemon did not answer within 10 s")


@pytest.fixture
def daemon(tmp_path: Path, exec_root: Path) -> Iterator[str]:
    sock, root = tmp_path / "run" / "bulkhead.sock", tmp_path / "root"
    proc = _start(sock, root, exec_root)
    try:
        yield str(sock)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.communicate()
        sock.unlink(missing_ok=True)


def _docker(sock: str, *args: str) -> subprocess.CompletedProcess[str]:
    if DOCKER is None:
        pytest.skip("docker CLI not installed")
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG="/nonexistent-bulkhead")
    return subprocess.run(
        [DOCKER, *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


def test_docker_version(daemon: str) -> None:
    r = _docker(daemon, "version")
    assert r.returncode == 0, r.stderr
    assert "Server: bulkhead" in r.stdout
    assert f"Version:          {__version__}" in r.stdout.split("Server:")[1]
    r = _docker(daemon, "version", "--format", "{{json .Server}}")
    server = json.loads(r.stdout)
    assert server["ApiVersion"] == "1.56" and server["MinAPIVersion"] == "1.24"


def test_docker_info(daemon: str) -> None:
    r = _docker(daemon, "info", "--format", "{{json .}}")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["NCPU"] == os.cpu_count()
    assert info["MemTotal"] > 0
    assert info["KernelVersion"] == os.uname().release
    assert info["CgroupDriver"] == "cgroupfs"
    assert info["CgroupVersion"] in ("1", "2")
    assert info["ServerVersion"] == __version__
    assert info["DockerRootDir"].endswith("/root")
    r = _docker(daemon, "info")
    assert r.returncode == 0, r.stderr
    assert "Cgroup Driver: cgroupfs" in r.stdout
    assert f"Server Version: {__version__}" in r.stdout


def test_docker_ps_empty(daemon: str) -> None:
    r = _docker(daemon, "ps", "-a", "--filter", "status=running")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [
        "CONTAINER",
        "ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]


def test_docker_py(daemon: str) -> None:
    docker = pytest.importorskip("docker")
    client = docker.DockerClient(base_url=f"unix://{daemon}", version="auto")
    try:
        assert client.ping() is True
        version = client.version()
        assert version["Version"] == __version__
        assert version["Components"][0]["Name"] == "Engine"
        assert client.containers.list(all=True) == []
        with pytest.raises(docker.errors.NotFound):
            client.api._result(client.api._get(client.api._url("/nowhere")), json=True)
    finally:
        client.close()


def test_raw_ping_head_and_get(daemon: str) -> None:
    status, headers, body = _get(daemon, "/_ping", "HEAD")
    assert status == 200 and body == b""
    assert headers["api-version"] == "1.56"
    assert headers["docker-experimental"] == "false"
    assert headers["ostype"] == "linux"
    assert headers["builder-version"] == "1"
    assert headers["pragma"] == "no-cache"
    assert "no-cache" in headers["cache-control"]
    status, headers, body = _get(daemon, "/v1.24/_ping")
    assert (status, body) == (200, b"OK")


def test_raw_versions_and_errors(daemon: str) -> None:
    for v in ("1.24", "1.41", "1.50", "1.56"):
        status, _, body = _get(daemon, f"/v{v}/version")
        assert status == 200 and json.loads(body)["ApiVersion"] == "1.56"
    status, headers, body = _get(daemon, "/v1.57/version")
    assert status == 400 and headers["content-type"] == "application/json"
    assert json.loads(body) == {
        "message": "client version 1.57 is too new. Maximum supported API version is 1.56"
    }
    status, _, body = _get(daemon, "/v1.50/no/such/route")
    assert (status, json.loads(body)) == (404, {"message": "page not found"})
    status, _, body = _get(daemon, "/containers/json?filters=%7Bbad")
    assert status == 400 and "invalid filter" in json.loads(body)["message"]


def test_socket_mode_refuse_second_and_clean_shutdown(tmp_path: Path, exec_root: Path) -> None:
    sock, root = tmp_path / "bulkhead.sock", tmp_path / "root"
    sock.write_bytes(b"")  # not a socket: refused
    r = subprocess.run(
        _daemon_cmd(sock, root, exec_root),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert r.returncode == 1 and "not a socket" in r.stderr
    sock.unlink()
    # A stale socket (nobody listening) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()
    proc = _start(sock, root, exec_root)
    try:
        assert oct(sock.stat().st_mode & 0o777) == oct(0o660)
        r = subprocess.run(
            _daemon_cmd(sock, root, exec_root),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert r.returncode == 1 and "already serving" in r.stderr
        assert _get(str(sock), "/_ping")[0] == 200  # the first one still serves
        proc.terminate()
        assert proc.wait(10) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()
    proc = _start(sock, root, exec_root)  # and SIGINT
    try:
        proc.send_signal(2)
        assert proc.wait(10) == 0
        assert not sock.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()
