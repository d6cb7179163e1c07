"""Volumes for real: the volume API under the docker CLI and docker-py, mounts in running containers.

Three layers, each on the real kernel:

- the volume endpoints, served by a small API server of their own (the
  system and volume routes over a VolumeStore), judged by the real
  ``docker volume`` commands and docker-py;
- resolve_mounts' OCI mounts run by bulkhead-runtime in busybox bundles:
  a named volume shared by two containers, ``-v`` binds read-only
  (recursively: a mount inside the bind is read-only too), ``--mount``
  tmpfs options, copy-up from the image, a volume with tmpfs driver options;
- whole containers through the daemon (the shared ``daemon`` fixture):
  ``docker run -v``, ``--mount``, ``--volumes-from``, ``rm -v``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.engine_fixtures import Daemon
from tests.integration.runtime_helpers import RuntimeCLI

from bulkhead.engine.mounts import apply_to_spec, resolve_mounts, rootfs_with_volumes
from bulkhead.engine.volumes import VolumeStore
from bulkhead.linux import mountinfo

DOCKER = shutil.which("docker")

_SERVER = """
import asyncio, sys
from pathlib import Path
from bulkhead.api.routes import Router
from bulkhead.api.server import APIServer
from bulkhead.api.system import SystemInfo, register
from bulkhead.api.volumes import register_store
from bulkhead.engine.volumes import VolumeStore

async def main() -> None:
    root, sock = Path(sys.argv[1]), sys.argv[2]
    router = Router()
    register(router, SystemInfo(root=root))
    register_store(router, VolumeStore(root / "volumes"))
    server = APIServer(router)
    await server.start_unix(sock)
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


class VolumeAPI:
    """A volume-only API server on a unix socket, and clients for it."""

    def __init__(self, root: Path, sock: str, proc: subprocess.Popen[str]) -> None:
        self.root = root
        self.socket = sock
        self.proc = proc
        self.config = root / "docker-config"

    def docker(self, *args: str) -> subprocess.CompletedProcess[str]:
        if DOCKER is None:
            pytest.skip("docker CLI not installed")
        env = dict(os.environ, DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(self.config))
        return subprocess.run(
            [DOCKER, *args], env=env, capture_output=True, text=True, timeout=60, check=False
        )

    def store(self) -> VolumeStore:
        """A second handle on the server's store (SQLite: both see the same rows)."""
        return VolumeStore(self.root / "volumes")


@pytest.fixture
def volume_api(tmp_path: Path) -> Iterator[VolumeAPI]:
    run_dir = Path(f"/run/bh-vt-{uuid.uuid4().hex[:8]}")
    run_dir.mkdir()
    sock = str(run_dir / "api.sock")
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(tmp_path), sock],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            proc.kill()
            raise RuntimeError(f"volume API server did not start: {proc.communicate()[1]}")
        api = VolumeAPI(tmp_path, sock, proc)
        yield api
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with contextlib.suppress(OSError):
            for m in mountinfo.read():
                if m.mountpoint.startswith(str(tmp_path)):
                    subprocess.run(["umount", "-l", m.mountpoint], check=False)
        shutil.rmtree(run_dir, ignore_errors=True)


# --- the volume API under the docker CLI ------------------------------------------


def test_docker_volume_create_inspect_ls_rm(volume_api: VolumeAPI) -> None:
    r = volume_api.docker("volume", "create", "--label", "team=a", "data")
    assert (r.returncode, r.stdout) == (0, "data\n"), r.stderr
    r = volume_api.docker("volume", "inspect", "data")
    assert r.returncode == 0, r.stderr
    [doc] = json.loads(r.stdout)
    assert doc["Name"] == "data" and doc["Driver"] == "local" and doc["Scope"] == "local"
    assert doc["Labels"] == {"team": "a"}
    assert doc["Mountpoint"] == str(volume_api.root / "volumes" / "data" / "_data")
    assert os.path.isdir(doc["Mountpoint"])
    r = volume_api.docker("volume", "inspect", "--format", "{{.Name}} {{.Driver}}", "data")
    assert r.stdout == "data local\n"

    anon = volume_api.docker("volume", "create").stdout.strip()
    assert len(anon) == 64 and all(c in "0123456789abcdef" for c in anon)
    r = volume_api.docker("volume", "ls", "-q")
    assert sorted(r.stdout.split()) == sorted(["data", anon])
    r = volume_api.docker("volume", "ls", "--format", "{{.Driver}}:{{.Name}}")
    assert "local:data" in r.stdout.split()
    r = volume_api.docker("volume", "ls", "-q", "--filter", "label=team=a")
    assert r.stdout.split() == ["data"]
    r = volume_api.docker("volume", "ls", "-q", "--filter", "name=dat")
    assert r.stdout.split() == ["data"]

    r = volume_api.docker("volume", "rm", "data", anon)
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == sorted(["data", anon])
    assert not (volume_api.root / "volumes" / "data").exists()
    assert volume_api.docker("volume", "ls", "-q").stdout == ""


def test_docker_volume_errors(volume_api: VolumeAPI) -> None:
    r = volume_api.docker("volume", "inspect", "nope")
    assert r.returncode == 1 and "no such volume" in r.stderr
    r = volume_api.docker("volume", "rm", "nope")
    assert r.returncode == 1 and "get nope: no such volume" in r.stderr
    assert volume_api.docker("volume", "rm", "-f", "nope").returncode == 0
    r = volume_api.docker("volume", "create", "bad/name")
    assert r.returncode == 1
    assert '"bad/name" includes invalid characters for a local volume name' in r.stderr
    r = volume_api.docker("volume", "create", "--opt", "size=1g", "q")
    assert r.returncode == 1
    r = volume_api.docker("volume", "create", "-d", "nfs", "remote")
    assert r.returncode == 1 and 'plugin "nfs" not found' in r.stderr
    r = volume_api.docker("volume", "ls", "--filter", "bogus=1")
    assert r.returncode == 1 and "invalid filter 'bogus'" in r.stderr


def test_docker_volume_in_use_and_prune(volume_api: VolumeAPI) -> None:
    for name in ("used", "named"):
        assert volume_api.docker("volume", "create", name).returncode == 0
    store = volume_api.store()
    anon = store.create(anonymous=True).name
    (Path(store.mountpoint(anon)) / "blob").write_bytes(b"\0" * 4096)
    store.use("used", "c" * 64)

    r = volume_api.docker("volume", "rm", "used")
    assert r.returncode == 1 and f"remove used: volume is in use - [{'c' * 64}]" in r.stderr
    r = volume_api.docker("volume", "rm", "-f", "used")
    assert r.returncode == 1 and "volume is in use" in r.stderr  # as Docker: force is no override
    r = volume_api.docker("volume", "ls", "-q", "--filter", "dangling=true")
    assert sorted(r.stdout.split()) == sorted(["named", anon])

    r = volume_api.docker("volume", "prune", "-f")  # anonymous ones only
    assert r.returncode == 0, r.stderr
    assert anon in r.stdout and "named" not in r.stdout and "4.096kB" in r.stdout
    r = volume_api.docker("volume", "prune", "-f", "--all")
    assert "named" in r.stdout and "used" not in r.stdout
    assert volume_api.docker("volume", "ls", "-q").stdout.split() == ["used"]
    store.release_container("c" * 64)
    assert volume_api.docker("volume", "rm", "used").returncode == 0
    store.close()


def test_cluster_volume_update_is_a_503(volume_api: VolumeAPI) -> None:
    import socket

    assert volume_api.docker("volume", "create", "local1").returncode == 0

    def put(name: str) -> tuple[int, dict[str, Any]]:
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(volume_api.socket)
            s.sendall(
                f"PUT /v1.45/volumes/{name}?version=1 HTTP/1.1\r\nHost: x\r\n"
                "Content-Type: application/json\r\nContent-Length: 2\r\n"
                "Connection: close\r\n\r\n{}".encode()
            )
            raw = b""
            while chunk := s.recv(65536):
                raw += chunk
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), json.loads(body)

    status, doc = put("local1")
    assert status == 503 and "not a swarm manager" in doc["message"]
    assert put("missing") == (404, {"message": "get missing: no such volume"})


def test_docker_py_volumes(volume_api: VolumeAPI) -> None:
    import docker  # type: ignore[import-untyped]

    client = docker.DockerClient(base_url=f"unix://{volume_api.socket}", timeout=30)
    try:
        vol = client.volumes.create(
            "pyvol", driver="local", labels={"k": "v"},
            driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"},
        )  # fmt: skip
        assert vol.name == "pyvol"
        got = client.volumes.get("pyvol")
        assert got.attrs["Labels"] == {"k": "v"}
        assert got.attrs["Options"] == {"type": "tmpfs", "device": "tmpfs", "o": "size=1m"}
        assert [v.name for v in client.volumes.list(filters={"label": "k=v"})] == ["pyvol"]
        with pytest.raises(docker.errors.NotFound):
            client.volumes.get("nope")
        with pytest.raises(docker.errors.APIError) as exc:
            client.volumes.create("x")
        assert exc.value.status_code == 400
        assert client.volumes.prune(filters={"all": "true"})["VolumesDeleted"] == ["pyvol"]
        # API 1.41 clients pruned every unused volume, named ones included
        old = docker.APIClient(base_url=f"unix://{volume_api.socket}", version="1.41", timeout=30)
        old.create_volume("oldstyle")
        assert old.prune_volumes()["VolumesDeleted"] == ["oldstyle"]
        old.close()
    finally:
        client.close()


def test_volume_with_tmpfs_options_is_mounted_while_used(volume_api: VolumeAPI) -> None:
    r = volume_api.docker(
        "volume", "create", "--opt", "type=tmpfs", "--opt", "device=tmpfs",
        "--opt", "o=size=2m,mode=1770", "scratch",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    store = volume_api.store()
    mountpoint = store.mountpoint("scratch")
    assert not _mounted(mountpoint)
    store.use("scratch", "c" * 64)
    [m] = [m for m in mountinfo.read() if m.mountpoint == mountpoint]
    assert (
        m.fstype == "tmpfs" and "size=2048k" in m.super_options and "mode=1770" in m.super_options
    )
    store.use("scratch", "d" * 64)
    store.release("scratch", "c" * 64)
    assert _mounted(mountpoint)  # still used by the second container
    store.release("scratch", "d" * 64)
    assert not _mounted(mountpoint)
    assert volume_api.docker("volume", "rm", "scratch").returncode == 0
    store.close()


def _mounted(path: str) -> bool:
    return any(m.mountpoint == path for m in mountinfo.read())


# --- resolve_mounts' mounts in real containers (bulkhead-runtime) -------------------


@pytest.fixture
def vstore(tmp_path: Path) -> Iterator[VolumeStore]:
    store = VolumeStore(tmp_path / "volumes")
    yield store
    for vol in store.volumes():
        if _mounted(vol.mountpoint):
            subprocess.run(["umount", "-l", vol.mountpoint], check=False)
    store.close()


RunIn = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_in(
    make_bundle: Callable[..., Path], rt: RuntimeCLI, vstore: VolumeStore
) -> Iterator[RunIn]:
    """``run_in(args, host_config, volumes=None) -> CompletedProcess``: one container, mounts applied."""
    cids: list[str] = []

    def run(
        args: list[str], host_config: dict[str, Any], volumes: dict[str, Any] | None = None
    ) -> subprocess.CompletedProcess[str]:
        bundle = make_bundle(args)
        cid = "t-" + uuid.uuid4().hex[:10]
        resolved = resolve_mounts(host_config, volumes, cid, str(bundle / "rootfs"), vstore)
        cids.append(cid)
        spec = json.loads((bundle / "config.json").read_text())
        apply_to_spec(spec, resolved)
        (bundle / "config.json").write_text(json.dumps(spec))
        rt.created.append(cid)
        return rt("run", "--bundle", str(bundle), cid, check=False)

    yield run
    for cid in cids:
        vstore.release_container(cid)


def test_named_volume_shared_by_two_containers(run_in: RunIn, vstore: VolumeStore) -> None:
    r = run_in(["sh", "-c", "echo hello > /data/greeting"], {"Binds": ["shared:/data"]})
    assert r.returncode == 0, r.stderr
    r = run_in(["cat", "/data/greeting"], {"Binds": ["shared:/data:ro"]})
    assert (r.returncode, r.stdout) == (0, "hello\n"), r.stderr
    assert (Path(vstore.mountpoint("shared")) / "greeting").read_text() == "hello\n"


def test_bind_read_only_is_recursive(run_in: RunIn, tmp_path: Path) -> None:
    host = tmp_path / "host"
    (host / "inner").mkdir(parents=True)
    (host / "file").write_text("host data\n")
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(host / "inner")], check=True
    )
    try:
        script = (
            "cat /h/file; "
            "touch /h/new 2>/dev/null && echo top-writable || echo top-ro; "
            "touch /h/inner/new 2>/dev/null && echo inner-writable || echo inner-ro; "
            "touch /w/new && echo w-writable"
        )
        r = run_in(["sh", "-c", script], {"Binds": [f"{host}:/h:ro", f"{tmp_path / 'rw'}:/w"]})
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[:4] == ["host data", "top-ro", "inner-ro", "w-writable"]
        assert (tmp_path / "rw" / "new").exists()  # -v made the missing host directory
        assert not (host / "new").exists()
    finally:
        subprocess.run(["umount", str(host / "inner")], check=False)


def test_mount_tmpfs_options_in_the_container(run_in: RunIn) -> None:
    r = run_in(
        ["sh", "-c", "grep ' /t ' /proc/self/mounts; stat -c %a /t"],
        {"Mounts": [{"Type": "tmpfs", "Target": "/t",
                     "TmpfsOptions": {"SizeBytes": 3 << 20, "Mode": 0o1770}}]},
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    line, mode = r.stdout.splitlines()
    assert "tmpfs" in line and "size=3072k" in line and "noexec" in line and "nosuid" in line
    assert mode == "1770"


def test_copy_up_from_the_image(run_in: RunIn, vstore: VolumeStore) -> None:
    r = run_in(["sh", "-c", "ls /etc/passwd && echo ok"], {"Binds": ["etc:/etc"]})
    assert r.returncode == 0 and r.stdout.endswith("ok\n"), r.stderr
    etc = Path(vstore.mountpoint("etc"))
    assert (etc / "passwd").is_file()
    # the second container finds the volume populated and does not copy again
    (etc / "marker").write_text("kept")
    os.unlink(etc / "passwd")
    r = run_in(["sh", "-c", "ls /etc"], {"Binds": ["etc:/etc"]})
    assert "marker" in r.stdout.split() and "passwd" not in r.stdout.split()
    # nocopy: an empty volume stays empty
    r = run_in(["ls", "-A", "/etc"], {"Binds": ["bare:/etc:nocopy"]})
    assert (r.returncode, r.stdout) == (0, "")


def test_image_volume_is_an_anonymous_volume(run_in: RunIn, vstore: VolumeStore) -> None:
    r = run_in(
        ["sh", "-c", "echo x > /cache/f && grep ' /cache ' /proc/self/mounts"], {}, {"/cache": {}}
    )
    assert r.returncode == 0, r.stderr
    [vol] = vstore.volumes()
    assert vol.anonymous and (Path(vol.mountpoint) / "f").read_text() == "x\n"


def test_volume_with_tmpfs_driver_options_in_a_container(
    run_in: RunIn, vstore: VolumeStore
) -> None:
    vstore.create("fast", driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    r = run_in(["sh", "-c", "grep ' /fast ' /proc/self/mounts"], {"Binds": ["fast:/fast"]})
    assert r.returncode == 0 and "tmpfs" in r.stdout and "size=1024k" in r.stdout, r.stderr


# --- whole containers through the daemon --------------------------------------------


def _ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def _start(daemon: Daemon, cid: str) -> subprocess.CompletedProcess[str]:
    """Start ``cid``, wait for it: its exit code and output, the output read from its log.

    Not from ``start -a``: the attach stream misses a short container's
    output now and then (an attach race of the engine, on the board);
    these tests are about volumes.
    """
    _ok(daemon.docker("start", cid))
    code = int(_ok(daemon.docker("wait", cid)).strip())
    logs = daemon.docker("logs", cid)
    return subprocess.CompletedProcess(["start", cid], code, logs.stdout, logs.stderr)


def _run(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker run --rm ARGS`` as :func:`_start` reads output; ``rm -v`` after, as ``--rm`` does."""
    r = daemon.docker("create", *args)
    if r.returncode != 0:
        return r
    cid = r.stdout.strip()
    try:
        return _start(daemon, cid)
    finally:
        _ok(daemon.docker("rm", "-v", cid))


def _volume_names(daemon: Daemon) -> list[str]:
    return sorted(_ok(daemon.docker("volume", "ls", "-q")).split())


def test_container_writes_a_named_volume_and_another_reads_it(daemon: Daemon) -> None:
    _ok(_run(daemon, "-v", "data:/data", "busybox",
                      "sh", "-c", "echo written by the first > /data/note"))  # fmt: skip
    assert _volume_names(daemon) == ["data"]  # made on first use, kept after --rm
    out = _ok(_run(daemon, "-v", "data:/srv:ro", "busybox", "cat", "/srv/note"))
    assert out == "written by the first\n"
    r = _run(daemon, "-v", "data:/srv:ro", "busybox", "touch", "/srv/x")
    assert r.returncode == 1 and "Read-only file system" in r.stderr


def test_bind_mount_read_only_and_inspect(daemon: Daemon, tmp_path: Path) -> None:
    host = tmp_path / "share"
    host.mkdir()
    (host / "in").write_text("from the host\n")
    cid = _ok(daemon.docker("create", "-v", f"{host}:/share:ro", "busybox",
                            "sh", "-c", "cat /share/in; touch /share/out"))  # fmt: skip
    cid = cid.strip()
    [doc] = json.loads(_ok(daemon.docker("inspect", cid)))
    assert doc["Mounts"] == [
        {"Type": "bind", "Source": str(host), "Destination": "/share", "Mode": "ro",
         "RW": False, "Propagation": "rprivate"}
    ]  # fmt: skip
    assert doc["HostConfig"]["Binds"] == [f"{host}:/share:ro"]
    r = _start(daemon, cid)
    assert r.stdout == "from the host\n" and "Read-only file system" in r.stderr
    assert not (host / "out").exists()
    _ok(daemon.docker("rm", cid))


def test_volumes_from(daemon: Daemon, tmp_path: Path) -> None:
    host = tmp_path / "h"
    host.mkdir()
    _ok(daemon.docker("create", "--name", "store", "-v", "vf:/data", "-v", f"{host}:/h",
                      "busybox", "true"))  # fmt: skip
    out = _ok(_run(daemon, "--volumes-from", "store", "busybox",
                            "sh", "-c", "echo a > /data/a && echo b > /h/b && cat /data/a"))  # fmt: skip
    assert out == "a\n" and (host / "b").read_text() == "b\n"
    r = _run(daemon, "--volumes-from", "store:ro", "busybox",
                      "sh", "-c", "cat /data/a; touch /data/c")  # fmt: skip
    assert r.stdout == "a\n" and r.returncode == 1 and "Read-only file system" in r.stderr
    cid = _ok(daemon.docker("create", "--volumes-from", "store:ro", "busybox", "true")).strip()
    [doc] = json.loads(_ok(daemon.docker("inspect", cid)))
    assert sorted((m["Destination"], m["RW"]) for m in doc["Mounts"]) == [
        ("/data", False), ("/h", False)
    ]  # fmt: skip
    r = daemon.docker("run", "--rm", "--volumes-from", "nosuch", "busybox", "true")
    assert r.returncode == 125 and "No such container: nosuch" in r.stderr
    # the volume is in use by both containers until they are removed
    r = daemon.docker("volume", "rm", "vf")
    assert r.returncode == 1 and "volume is in use" in r.stderr
    _ok(daemon.docker("rm", cid, "store"))
    _ok(daemon.docker("volume", "rm", "vf"))


def test_anonymous_volumes_copy_up_and_rm_v(daemon: Daemon) -> None:
    # -v /dst is an anonymous volume (the CLI sends it in Config.Volumes); -v name:/etc copies up
    cid = _ok(daemon.docker("create", "-v", "/scratch", "-v", "etcvol:/etc", "busybox",
                            "sh", "-c", "ls /etc/passwd && echo kept > /scratch/f"))  # fmt: skip
    cid = cid.strip()
    [doc] = json.loads(_ok(daemon.docker("inspect", cid)))
    mounts = {m["Destination"]: m for m in doc["Mounts"]}
    anon = mounts["/scratch"]["Name"]
    assert len(anon) == 64 and mounts["/scratch"]["Type"] == "volume"
    assert mounts["/etc"]["Name"] == "etcvol" and mounts["/etc"]["Mode"] == "z"
    assert _ok(_start(daemon, cid)) == "/etc/passwd\n"
    [vol] = json.loads(_ok(daemon.docker("volume", "inspect", anon)))
    assert vol["Labels"] == {"com.docker.volume.anonymous": ""}
    assert (Path(mounts["/etc"]["Source"]) / "passwd").is_file()  # copied up at create
    _ok(daemon.docker("rm", "-v", cid))
    assert _volume_names(daemon) == ["etcvol"]  # rm -v drops anonymous volumes only
    # --rm drops them too
    _ok(daemon.docker("run", "--rm", "-v", "/tmpdata", "busybox", "true"))
    assert _volume_names(daemon) == ["etcvol"]


def test_mount_flag(daemon: Daemon, tmp_path: Path) -> None:
    out = _ok(_run(
        daemon,
        "--mount", "type=volume,src=mv,dst=/var,volume-nocopy",
        "--mount", "type=tmpfs,dst=/t,tmpfs-size=2m",
        "busybox", "sh", "-c", "ls -A /var | wc -l; grep ' /t ' /proc/mounts",
    ))  # fmt: skip
    count, tmpfs = out.splitlines()
    assert count.strip() == "0" and "size=2048k" in tmpfs
    out = _ok(_run(daemon, "--mount", "type=volume,src=mv2,dst=/var",
                            "busybox", "ls", "/var"))  # fmt: skip
    image_var = _ok(_run(daemon, "busybox", "ls", "/var"))
    assert out == image_var and out.split()  # copied up: the image's /var, not empty
    # volume-opt: a volume made on first use with the local driver's options
    out = _ok(_run(daemon, "--mount",
                   "type=volume,src=optvol,dst=/o,volume-opt=type=tmpfs,volume-opt=device=tmpfs,"
                   "volume-label=made=here",
                   "busybox", "sh", "-c", "grep ' /o ' /proc/mounts | cut -d' ' -f3"))  # fmt: skip
    assert out == "tmpfs\n"
    [vol] = json.loads(_ok(daemon.docker("volume", "inspect", "optvol")))
    assert vol["Options"] == {"type": "tmpfs", "device": "tmpfs"}
    assert vol["Labels"] == {"made": "here"}
    missing = tmp_path / "missing"
    r = daemon.docker(
        "run", "--rm", "--mount", f"type=bind,src={missing},dst=/m", "busybox", "true"
    )
    assert r.returncode == 125
    assert f'invalid mount config for type "bind": bind source path does not exist: {missing}' in (
        r.stderr
    )
    assert not missing.exists()


def test_bad_volume_options_are_400s(daemon: Daemon) -> None:
    r = daemon.docker("run", "--rm", "-v", "bad/name:/x", "busybox", "true")
    assert r.returncode == 125 and "includes invalid characters for a local volume name" in r.stderr
    r = daemon.docker("run", "--rm", "-v", "a1:/d", "-v", "a2:/d", "busybox", "true")
    assert r.returncode == 125 and "Duplicate mount point: /d" in r.stderr
    r = daemon.docker("run", "--rm", "-v", "/h:/d:bogus", "busybox", "true")
    assert r.returncode == 125 and "invalid mode: bogus" in r.stderr
    # nothing was left behind by the refused creates
    assert _volume_names(daemon) == []
    assert _ok(daemon.docker("ps", "-aq")) == ""


def test_docker_py_volumes_in_containers(daemon: Daemon, tmp_path: Path) -> None:
    client = daemon.client()
    client.containers.run(
        "busybox", ["sh", "-c", "echo py > /v/f"], volumes={"pyv": {"bind": "/v", "mode": "rw"}},
        remove=True,
    )  # fmt: skip
    out = client.containers.run("busybox", ["cat", "/v/f"], volumes=["pyv:/v:ro"], remove=True)
    assert out == b"py\n"
    assert client.volumes.get("pyv").attrs["Name"] == "pyv"
    from docker.types import Mount  # type: ignore[import-untyped]

    out = client.containers.run(
        "busybox",
        ["sh", "-c", "ls -A /var | wc -l; grep ' /t ' /proc/mounts | cut -d' ' -f3"],
        mounts=[
            Mount("/var", "pym", type="volume", no_copy=True, labels={"via": "docker-py"}),
            Mount("/t", None, type="tmpfs", tmpfs_size=1 << 20),
        ],
        remove=True,
    )
    assert out.split() == [b"0", b"tmpfs"]
    assert client.volumes.get("pym").attrs["Labels"] == {"via": "docker-py"}


def test_image_volume_copied_up_into_an_anonymous_volume(daemon: Daemon) -> None:
    _ok(daemon.docker("run", "--name", "base", "busybox",
                      "sh", "-c", "mkdir /data && echo baked > /data/f && chown 1000:1000 /data"))  # fmt: skip
    _ok(daemon.docker("commit", "-c", "VOLUME /data", "base", "volimg"))
    _ok(daemon.docker("rm", "base"))
    cid = _ok(daemon.docker("create", "volimg", "sh", "-c", "cat /data/f; stat -c %u /data"))
    cid = cid.strip()
    assert _ok(_start(daemon, cid)) == "baked\n1000\n"
    [doc] = json.loads(_ok(daemon.docker("inspect", cid)))
    [mount] = doc["Mounts"]
    assert mount["Type"] == "volume" and mount["Destination"] == "/data" and mount["Mode"] == ""
    assert (Path(mount["Source"]) / "f").read_text() == "baked\n"
    assert os.stat(mount["Source"]).st_uid == 1000  # the directory's owner comes along
    # a -v at the same destination replaces the image volume
    out = _ok(_run(daemon, "-v", "mine:/data", "volimg", "cat", "/data/f"))
    assert out == "baked\n"  # ...and is copied up the same way
    assert _volume_names(daemon) == sorted([mount["Name"], "mine"])
    _ok(daemon.docker("rm", "-v", cid))
    assert _volume_names(daemon) == ["mine"]


def test_bind_a_single_file_and_a_bind_volume(daemon: Daemon, tmp_path: Path) -> None:
    host_file = tmp_path / "conf"
    host_file.write_text("setting=1\n")
    out = _ok(_run(daemon, "-v", f"{host_file}:/etc/app.conf:ro", "busybox",
                            "cat", "/etc/app.conf"))  # fmt: skip
    assert out == "setting=1\n"
    # the local driver's bind option: a volume whose data is a host directory
    shared = tmp_path / "shared"
    shared.mkdir()
    _ok(daemon.docker("volume", "create", "--opt", "type=none", "--opt", "o=bind",
                      "--opt", f"device={shared}", "hostdir"))  # fmt: skip
    _ok(daemon.docker("run", "--rm", "-v", "hostdir:/out", "busybox",
                      "sh", "-c", "echo through the volume > /out/f"))  # fmt: skip
    assert (shared / "f").read_text() == "through the volume\n"
    [vol] = json.loads(_ok(daemon.docker("volume", "inspect", "hostdir")))
    assert not any(m.mountpoint == vol["Mountpoint"] for m in mountinfo.read())  # released
    _ok(daemon.docker("volume", "rm", "hostdir"))
    assert (shared / "f").exists()  # removing the volume leaves the bound directory alone


def test_volume_references_survive_a_daemon_restart(daemon: Daemon) -> None:
    _ok(daemon.docker("create", "--name", "holder", "-v", "kept:/k", "busybox", "true"))
    daemon.restart(kill=True)
    r = daemon.docker("volume", "rm", "kept")
    assert r.returncode == 1 and "volume is in use" in r.stderr
    assert _ok(daemon.docker("volume", "ls", "-q", "--filter", "dangling=true")) == ""
    _ok(daemon.docker("rm", "holder"))
    _ok(daemon.docker("volume", "rm", "kept"))


def test_volume_with_options_is_mounted_again_when_the_store_opens(tmp_path: Path) -> None:
    """After a reboot the tmpfs of a volume a container holds is gone: the store mounts it again."""
    store = VolumeStore(tmp_path / "v")
    store.create("fast", driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    store.create("idle", driver_opts={"type": "tmpfs", "device": "tmpfs", "o": "size=1m"})
    mountpoint = store.use("fast", "c" * 64)
    store.close()
    subprocess.run(["umount", mountpoint], check=True)  # what a reboot does
    store = VolumeStore(tmp_path / "v")
    try:
        assert _mounted(mountpoint)
        assert not _mounted(store.mountpoint("idle"))  # nobody uses it: not mounted
    finally:
        store.release_container("c" * 64)
        assert not _mounted(mountpoint)
        store.close()


def test_start_up_drops_what_a_half_made_container_held(daemon: Daemon) -> None:
    """A daemon killed during create leaves references (and an anonymous volume) with no container."""
    _ok(daemon.docker("create", "--name", "real", "-v", "realvol:/r", "busybox", "true"))
    daemon.stop(kill=True)
    store = VolumeStore(daemon.root / "volumes")
    ghost = "9" * 64
    store.use(store.create(anonymous=True).name, ghost)
    store.use("realvol", ghost)
    store.close()
    daemon.start()
    assert _volume_names(daemon) == ["realvol"]
    r = daemon.docker("volume", "rm", "realvol")
    real = _ok(daemon.docker("inspect", "-f", "{{.Id}}", "real")).strip()
    assert r.returncode == 1 and f"volume is in use - [{real}]" in r.stderr  # the ghost's ref gone
    _ok(daemon.docker("rm", "real"))


def test_rootfs_with_volumes_for_docker_cp(tmp_path: Path) -> None:
    """A private view of the rootfs with the volumes in it; nothing shows elsewhere."""
    rootfs = tmp_path / "c" / "rootfs"
    rootfs.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(rootfs)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(rootfs)], check=True)
        (rootfs / "etc").mkdir()
        (rootfs / "sneaky").symlink_to("/../../../../../../..")  # points at the host's / outside
        vol = tmp_path / "vol"
        vol.mkdir()
        (vol / "in-volume").write_text("v\n")
        ro = tmp_path / "ro"
        ro.mkdir()
        conf = tmp_path / "app.conf"
        conf.write_text("c\n")
        points = [
            {"Type": "volume", "Name": "v", "Source": str(vol), "Destination": "/data", "RW": True},
            {"Type": "bind", "Source": str(ro), "Destination": "/sneaky/ro", "RW": False},
            {"Type": "bind", "Source": str(conf), "Destination": "/etc/app.conf", "RW": True},
            {"Type": "tmpfs", "Source": "", "Destination": "/t", "RW": True},
        ]
        before = {m.mountpoint for m in mountinfo.read()}
        with rootfs_with_volumes(str(rootfs), points) as view:
            assert view != str(rootfs) and Path(view).parent == rootfs.parent
            assert (Path(view) / "data" / "in-volume").read_text() == "v\n"
            (Path(view) / "data" / "from-cp").write_text("cp\n")
            assert (Path(view) / "etc" / "app.conf").read_text() == "c\n"
            with pytest.raises(OSError) as exc:
                (Path(view) / "ro" / "x").write_text("no")  # where /sneaky/ro resolves
            assert exc.value.errno == 30  # EROFS
            added = {m.mountpoint for m in mountinfo.read()} - before
            # only the view and what is inside it; the shared rootfs got nothing
            assert added and all(p == view or p.startswith(view + "/") for p in added)
            assert os.path.join(view, "ro") in added  # the symlink resolved inside the view
            assert not (Path(view) / "t").exists()
        assert (vol / "from-cp").read_text() == "cp\n"
        assert {m.mountpoint for m in mountinfo.read()} == before
        assert not Path(view).exists()
        assert not Path("/ro").exists()
        # the mount points were made in the rootfs, as the runtime would
        assert (rootfs / "data").is_dir() and (rootfs / "etc" / "app.conf").is_file()
        with rootfs_with_volumes(str(rootfs), points[3:]) as same:
            assert same == str(rootfs)  # nothing to mount: the rootfs itself
    finally:
        subprocess.run(["umount", "-l", str(rootfs)], check=False)


def test_docker_cp_reads_and_writes_volumes(daemon: Daemon, tmp_path: Path) -> None:
    """``docker cp`` under a volume goes to the volume, not to the image layer below it."""
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "host-file").write_text("from a ro bind\n")
    src = tmp_path / "upload.txt"
    src.write_text("uploaded\n")
    cid = _ok(daemon.docker("create", "-v", "cpvol:/data", "-v", f"{ro}:/ro:ro", "busybox",
                            "sh", "-c", "cat /data/upload.txt; echo made > /data/made"))  # fmt: skip
    cid = cid.strip()
    _ok(daemon.docker("cp", str(src), f"{cid}:/data/"))  # a created, never started container
    [vol] = json.loads(_ok(daemon.docker("volume", "inspect", "cpvol")))
    assert (Path(vol["Mountpoint"]) / "upload.txt").read_text() == "uploaded\n"
    assert _ok(_start(daemon, cid)) == "uploaded\n"
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    _ok(daemon.docker("cp", f"{cid}:/data/made", str(out_dir)))  # a stopped container
    assert (out_dir / "made").read_text() == "made\n"
    _ok(daemon.docker("cp", f"{cid}:/ro/host-file", str(out_dir)))
    assert (out_dir / "host-file").read_text() == "from a ro bind\n"
    r = daemon.docker("cp", str(src), f"{cid}:/ro/")
    assert r.returncode != 0 and not (ro / "upload.txt").exists()
    # a running container: the copy lands in the volume it has mounted
    runner = _ok(daemon.docker("run", "-d", "-v", "cpvol:/data", "busybox", "sleep", "30")).strip()
    try:
        (tmp_path / "live.txt").write_text("live\n")
        _ok(daemon.docker("cp", str(tmp_path / "live.txt"), f"{runner}:/data/live.txt"))
        assert (Path(vol["Mountpoint"]) / "live.txt").read_text() == "live\n"
        added = [m.mountpoint for m in mountinfo.read() if "/.view-" in m.mountpoint]
        assert added == []  # the view is gone after the copy
    finally:
        daemon.docker("rm", "-f", runner)
    _ok(daemon.docker("rm", cid))


def test_a_volume_that_cannot_be_mounted(daemon: Daemon) -> None:
    """The kernel refuses the volume's device: a clear error, no container, no reference left.

    Exit 127, as with Docker: the docker CLI turns a daemon error that says
    "no such file or directory" into 127.
    """
    _ok(daemon.docker("volume", "create", "--opt", "type=ext4",
                      "--opt", "device=/dev/bulkhead-no-such-device", "broken"))  # fmt: skip
    r = daemon.docker("run", "--rm", "-v", "broken:/x", "busybox", "true")
    assert r.returncode == 127
    assert "failed to mount local volume: mount /dev/bulkhead-no-such-device:" in r.stderr
    assert "no such file or directory" in r.stderr
    assert _ok(daemon.docker("ps", "-aq")) == ""
    assert _ok(daemon.docker("volume", "ls", "-q", "--filter", "dangling=true")).split() == [
        "broken"
    ]
    _ok(daemon.docker("volume", "rm", "broken"))


@pytest.mark.parametrize("runtime", ["bulkhead", "runc", "bulkhead-runtime"])
def test_mounts_under_each_runtime(daemon: Daemon, tmp_path: Path, runtime: str) -> None:
    """The mount options resolve_mounts writes (rbind, rro, rprivate, tmpfs data) suit every runtime."""
    if runtime == "runc" and shutil.which("runc") is None:
        pytest.skip("runc not installed")
    host = tmp_path / "h"
    (host / "sub").mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(host / "sub")], check=True
    )
    try:
        script = (
            "echo v > /v/f && cat /v/f; "
            "touch /h/x 2>/dev/null || echo h-ro; touch /h/sub/x 2>/dev/null || echo sub-ro; "
            "grep ' /t ' /proc/mounts | cut -d' ' -f4"
        )
        r = _run(daemon, "--runtime", runtime, "-v", "rtvol:/v", "-v", f"{host}:/h:ro",
                 "--mount", "type=tmpfs,dst=/t,tmpfs-mode=0700", "busybox", "sh", "-c", script)  # fmt: skip
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert lines[:3] == ["v", "h-ro", "sub-ro"]
        assert "mode=700" in lines[3] and "noexec" in lines[3]
    finally:
        subprocess.run(["umount", "-l", str(host / "sub")], check=False)
