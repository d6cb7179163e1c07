"""The engine driven directly (no HTTP): create, start, stop, kill, wait, remove, recovery.

Each test builds an :class:`~bulkhead.engine.engine.Engine` on the roots of a
``daemon_factory`` daemon that is not started (fresh data root with the
offline busybox image, short exec root under /run); the factory's clean-up
kills the zygote and monitors, deletes runtime containers and unmounts what
is left, and fails the test on leaks. The daemon-restart tests run the real
daemon and kill it with SIGKILL while containers run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from tests.integration.engine_fixtures import Daemon, _mounts_under

from bulkhead.engine.containers import parse_rfc3339
from bulkhead.engine.context import DaemonConfig
from bulkhead.engine.engine import Engine
from bulkhead.engine.hostconfig import parse_create_request
from bulkhead.errors import (
    ContainerNotRunning,
    ContainerRunning,
    NameConflict,
    NoSuchContainer,
    SpecError,
)

T = TypeVar("T")


def make_engine(d: Daemon) -> Engine:
    from bulkhead.engine.volumes import VolumeStore
    from bulkhead.images.store import ImageStore
    from bulkhead.snapshots import open_snapshotter

    config = DaemonConfig(root=d.root, exec_root=d.exec_root, socket=d.socket)
    config.cgroup_parent = d.cgroup_parent  # the fixture removes it and reports leaks under it
    config.bridge = "none"  # the host's namespace: no default bridge network
    # BULKHEAD_TEST_RUNTIME=runc runs them with another default runtime
    config.default_runtime = os.environ.get("BULKHEAD_TEST_RUNTIME", "bulkhead")
    images = ImageStore(config.images_root)
    # BULKHEAD_TEST_SNAPSHOTTER=vfs runs these tests on the copying snapshotter
    snap = open_snapshotter(
        os.environ.get("BULKHEAD_TEST_SNAPSHOTTER", "auto"), str(config.snapshots_root)
    )
    return Engine(config, images, snap, VolumeStore(config.volumes_root))


def request(cmd: list[str], **host_config: Any) -> Any:
    body: dict[str, Any] = {"Image": "busybox", "Cmd": cmd}
    config_keys = {k: host_config.pop(k) for k in list(host_config) if k in ("Tty", "StopTimeout")}
    body.update(config_keys)
    body["HostConfig"] = host_config
    return parse_create_request(body)


@pytest.fixture
def engine_roots(daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(start=False)
    return d


def run(engine_factory: Callable[[], Engine], body: Callable[[Engine], Awaitable[T]]) -> T:
    """Run ``body(engine)`` on a fresh event loop, then shut the engine down."""

    async def main() -> T:
        engine = engine_factory()
        try:
            return await body(engine)
        finally:
            await engine.shut_down()

    return asyncio.run(main())


def read_log(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


@pytest.fixture(params=["bulkhead", "runc"])
def runtime(request: pytest.FixtureRequest) -> Iterator[str]:
    yield str(request.param)


def test_lifecycle_exit_code_log_and_remove(engine_roots: Daemon, runtime: str) -> None:
    async def body(engine: Engine) -> None:
        cid, warnings = await engine.create(
            request(["sh", "-c", "echo out; echo err >&2; exit 3"], Runtime=runtime), name="life"
        )
        assert len(cid) == 64 and warnings == []
        info = engine.inspect("life")
        assert info["State"]["Status"] == "created"
        assert info["Name"] == "/life"
        assert info["Path"] == "sh" and info["Args"] == ["-c", "echo out; echo err >&2; exit 3"]
        assert info["HostConfig"]["Runtime"] == runtime
        assert info["Config"]["Env"][0].startswith("PATH=")
        # a created container keeps its root mounted for its start
        assert _mounts_under(engine.paths(cid).rootfs)
        assert [c["Id"] for c in engine.list(all=True)] == [cid]
        assert engine.list() == []
        waiter = asyncio.ensure_future(engine.wait(cid, "next-exit"))
        assert await engine.start(cid[:12]) is True
        code, err = await asyncio.wait_for(waiter, 30)
        assert (code, err) == (3, None)
        info = engine.inspect(cid)
        assert info["State"]["Status"] == "exited"
        assert info["State"]["ExitCode"] == 3
        assert info["State"]["Running"] is False
        assert parse_rfc3339(info["State"]["FinishedAt"]) >= parse_rfc3339(
            info["State"]["StartedAt"]
        )
        lines = read_log(info["LogPath"])
        assert {(entry["stream"], entry["log"]) for entry in lines} == {
            ("stdout", "out\n"),
            ("stderr", "err\n"),
        }
        # stopped: rootfs unmounted
        assert not _mounts_under(engine.paths(cid).rootfs)
        summary = engine.list(all=True)[0]
        assert summary["State"] == "exited"
        assert summary["Status"].startswith("Exited (3) ")
        assert summary["Names"] == ["/life"]
        # a second start runs it again
        assert await engine.start("life")
        assert await asyncio.wait_for(engine.wait("life"), 30) == (3, None)
        assert len(read_log(info["LogPath"])) == 4
        await engine.remove("life")
        with pytest.raises(NoSuchContainer, match="No such container: life"):
            engine.inspect("life")
        await engine.settle()  # the files go right after the record
        assert not engine.paths(cid).dir.exists()
        assert not any(i.name == f"container-{cid}" for i in engine.snapshotter.walk())

    run(lambda: make_engine(engine_roots), body)


def test_stop_escalates_to_sigkill_and_init_forwards(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        # PID 1 ignores SIGTERM (no handler): stop waits its timeout, then SIGKILL -> 137
        a, _ = await engine.create(request(["sleep", "100"]), name="plain")
        await engine.start(a)
        assert engine.inspect(a)["State"]["Running"] is True
        assert engine.inspect(a)["State"]["Pid"] > 0
        t0 = time.monotonic()
        assert await engine.stop(a, timeout=1) is True
        took = time.monotonic() - t0
        assert 0.9 < took < 10
        assert engine.inspect(a)["State"]["ExitCode"] == 137
        assert await engine.stop(a) is False  # not running: Docker's 304
        # --init: tini forwards SIGTERM to sleep, which dies of it -> 143, quickly
        b, _ = await engine.create(request(["sleep", "100"], Init=True), name="tini")
        await engine.start(b)
        info = engine.inspect(b)
        assert info["Path"] == "sleep"
        assert engine.list()[0]["Command"] == "/sbin/docker-init -- sleep 100"
        # tini sets up its signal handling before it forks the command: wait for the child
        init_pid = info["State"]["Pid"]
        children = Path(f"/proc/{init_pid}/task/{init_pid}/children")
        for _ in range(200):
            if children.read_text().strip():
                break
            await asyncio.sleep(0.01)
        t0 = time.monotonic()
        await engine.stop(b, timeout=20)
        assert time.monotonic() - t0 < 5
        assert engine.inspect(b)["State"]["ExitCode"] == 143
        for ref in (a, b):
            await engine.remove(ref)

    run(lambda: make_engine(engine_roots), body)


def test_conflicts_kill_and_force_remove(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(request(["sleep", "100"]), name="busy")
        with pytest.raises(NameConflict, match='The container name "/busy" is already in use'):
            await engine.create(request(["true"]), name="busy")
        with pytest.raises(ContainerNotRunning):
            await engine.kill(cid, "TERM")
        await engine.start(cid)
        assert await engine.start(cid) is False  # already running: Docker's 304
        with pytest.raises(ContainerRunning, match="stop the container before removing"):
            await engine.remove(cid)
        with pytest.raises(SpecError, match="Invalid signal: NOPE"):
            await engine.kill(cid, "NOPE")
        await engine.kill(cid, "SIGKILL")
        assert await asyncio.wait_for(engine.wait(cid), 30) == (137, None)
        await engine.start(cid)
        await engine.remove(cid, force=True)
        assert engine.list(all=True) == []
        # renames and random names
        other, _ = await engine.create(request(["true"]))
        name = engine.get(other).name
        assert "_" in name
        engine.rename(other, "renamed")
        assert engine.inspect("renamed")["Id"] == other
        with pytest.raises(NoSuchContainer):
            engine.get(name)
        await engine.remove("renamed")

    run(lambda: make_engine(engine_roots), body)


def test_auto_remove_and_wait_removed(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(request(["sh", "-c", "exit 7"], AutoRemove=True))
        waiter = asyncio.ensure_future(engine.wait(cid, "removed"))
        await asyncio.sleep(0)
        await engine.start(cid)
        assert await asyncio.wait_for(waiter, 30) == (7, None)
        with pytest.raises(NoSuchContainer):
            engine.get(cid)
        await engine.settle()
        assert not engine.paths(cid).dir.exists()

    run(lambda: make_engine(engine_roots), body)


@pytest.mark.parametrize("loop", ["c-loop", "python-loop"])
def test_auto_remove_starts_while_the_monitor_finishes(
    engine_roots: Daemon, loop: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The removal starts once the exit is recorded; the files wait for the monitor's end."""
    if loop == "python-loop":
        monkeypatch.setenv("BULKHEAD_MONITOR_LOOP", "python")
    else:
        monkeypatch.delenv("BULKHEAD_MONITOR_LOOP", raising=False)
    size = 700_000  # more than the socket holds, less than what pauses the output

    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(
            request(["sh", "-c", f"head -c {size} /dev/zero; exit 5"], AutoRemove=True)
        )
        client = await engine.attach_monitor(cid)
        assert client is not None
        reader, writer = await client.attach(False, True, False)  # and read nothing yet
        monitor = client.info()
        assert monitor is not None
        waiter = asyncio.ensure_future(engine.wait(cid, "removed"))
        await asyncio.sleep(0)
        await engine.start(cid)
        assert await asyncio.wait_for(waiter, 30) == (5, None)
        with pytest.raises(NoSuchContainer):
            engine.get(cid)
        # the monitor still waits for its client to take the output: it and its files stay
        assert Path(f"/proc/{monitor.monitor_pid}").exists()
        assert (engine.state_dir(cid) / "exit.json").exists()
        settled = asyncio.ensure_future(engine.settle())
        await asyncio.sleep(0.2)
        assert not settled.done()
        assert engine.paths(cid).dir.exists()
        got = 0
        while chunk := await asyncio.wait_for(reader.read(1 << 16), 30):
            got += len(chunk)
        writer.close()
        assert got > size  # all of it, in frames
        await asyncio.wait_for(settled, 30)
        assert not engine.state_dir(cid).exists()
        assert not engine.paths(cid).dir.exists()
        assert not (engine.runtime_root(engine.config.default_runtime) / cid).exists()

    run(lambda: make_engine(engine_roots), body)


def test_restarted_engine_lets_a_finishing_monitor_end_before_the_files_go(
    engine_roots: Daemon,
) -> None:
    """A monitor that recorded the exit while no engine watched: adopted, not raced."""
    size = 700_000  # more than the socket holds, less than what pauses the output

    async def main() -> None:
        engine = make_engine(engine_roots)
        cid, _ = await engine.create(
            request(["sh", "-c", f"sleep 0.3; head -c {size} /dev/zero; exit 5"], AutoRemove=True)
        )
        client = await engine.attach_monitor(cid)
        assert client is not None
        reader, writer = await client.attach(False, True, False)  # and read nothing yet
        monitor = client.info()
        assert monitor is not None
        await engine.start(cid)
        await engine.shut_down()  # the daemon goes away; the container runs on
        deadline = time.monotonic() + 30
        while client.exit_status() is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        engine = make_engine(engine_roots)
        try:
            await engine.start_up()
            waited = 0.0
            while engine.store.ids():
                assert waited < 30
                await asyncio.sleep(0.01)
                waited += 0.01
            # removed, but the monitor still waits for its client: its files stay
            await asyncio.sleep(0.3)
            assert Path(f"/proc/{monitor.monitor_pid}").exists()
            assert (engine.state_dir(cid) / "exit.json").exists()
            got = 0
            while chunk := await asyncio.wait_for(reader.read(1 << 16), 30):
                got += len(chunk)
            writer.close()
            assert got > size
            await asyncio.wait_for(engine.settle(), 30)
            assert not engine.state_dir(cid).exists()
            assert not engine.paths(cid).dir.exists()
            assert not (engine.runtime_root(engine.config.default_runtime) / cid).exists()
        finally:
            await engine.shut_down()

    asyncio.run(main())


def test_exit_files_report_exit_json(tmp_path: Path) -> None:
    """The inotify watch behind the early AutoRemove: exit.json renamed in, or already there."""
    from bulkhead.engine.engine import _ExitFiles
    from bulkhead.engine.monitor import write_atomic

    async def main() -> list[str]:
        seen: list[str] = []
        got = asyncio.Event()

        def on_exit(cid: str) -> None:
            seen.append(cid)
            got.set()

        files = _ExitFiles(on_exit)
        for name in ("a", "b", "c", "d"):
            (tmp_path / name).mkdir()
        write_atomic(str(tmp_path / "b" / "exit.json"), b"{}")
        files.add("a", str(tmp_path / "a"))
        files.add("b", str(tmp_path / "b"))  # already there: reported at once
        files.add("c", str(tmp_path / "c"))
        files.add("d", str(tmp_path / "d"))
        assert seen == ["b"]
        files.discard("c")
        (tmp_path / "d" / "other.json").write_text("{}")
        write_atomic(str(tmp_path / "c" / "exit.json"), b"{}")  # no longer watched
        got.clear()
        write_atomic(str(tmp_path / "a" / "exit.json"), b"{}")
        await asyncio.wait_for(got.wait(), 10)
        write_atomic(str(tmp_path / "a" / "exit.json"), b"{}")  # once per add
        (tmp_path / "d" / "other.json").unlink()
        os.rmdir(tmp_path / "d")  # the watch goes with its dir
        await asyncio.sleep(0.1)
        assert files.wd_of.keys() == set()
        files.close()
        return seen

    assert asyncio.run(main()) == ["b", "a"]


def test_start_mounts_a_root_unmounted_since_create(engine_roots: Daemon) -> None:
    """A fresh container's spawn skips the clean-up and mount, unless its root is gone."""

    async def body(engine: Engine) -> None:
        from bulkhead.engine import bundle

        cid, _ = await engine.create(request(["sh", "-c", "cat /etc/hostname; exit 5"]))
        rootfs = engine.paths(cid).rootfs
        assert os.path.ismount(rootfs)
        bundle.unmount_rootfs(rootfs)  # behind the engine's back
        assert not os.path.ismount(rootfs)
        await engine.start(cid)
        assert await asyncio.wait_for(engine.wait(cid, "not-running"), 30) == (5, None)
        assert [e["log"] for e in read_log(engine.get(cid).log_path)] == [cid[:12] + "\n"]
        await engine.remove(cid)
        await engine.settle()

    run(lambda: make_engine(engine_roots), body)


def test_missing_command_keeps_the_container_with_127(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(request(["/no/such/binary"]))
        early = await engine.attach_monitor(cid)
        assert early is None  # the runtime's create failed; start reports it
        with pytest.raises(Exception) as exc:
            await engine.start(cid)
        assert getattr(exc.value, "exit_code", None) == 127
        info = engine.inspect(cid)
        assert info["State"]["Status"] == "created"
        assert info["State"]["ExitCode"] == 127
        assert info["State"]["Error"]
        await engine.remove(cid)

    run(lambda: make_engine(engine_roots), body)


def test_attach_before_start_sees_all_output(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(request(["echo", "hello"]))
        client = await engine.attach_monitor(cid)
        assert client is not None
        assert engine.inspect(cid)["State"]["Status"] == "created"
        reader, writer = await client.attach(False, True, True)
        await engine.start(cid)
        data = await asyncio.wait_for(reader.read(), 30)
        writer.close()
        assert data == b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"
        assert await asyncio.wait_for(engine.wait(cid), 30) == (0, None)
        await engine.remove(cid)

    run(lambda: make_engine(engine_roots), body)


def test_restarted_engine_adopts_running_and_records_exits(engine_roots: Daemon) -> None:
    """Live restore: monitors outlive the engine; a new one finds running and exited containers."""

    async def first(engine: Engine) -> tuple[str, str, str]:
        running, _ = await engine.create(request(["sleep", "100"]), name="keeps")
        quick, _ = await engine.create(request(["sh", "-c", "sleep 1; exit 5"]), name="quick")
        vanish, _ = await engine.create(request(["sleep", "100"]), name="vanish")
        for c in (running, quick, vanish):
            await engine.start(c)
        return running, quick, vanish

    running, quick, vanish = run(lambda: make_engine(engine_roots), first)
    # while no engine watches: "quick" exits by itself, "vanish" loses its monitor
    monitor = json.loads((engine_roots.exec_root / vanish / "monitor.json").read_text())
    orphan = int(monitor["init_pid"])
    os.kill(int(monitor["monitor_pid"]), signal.SIGKILL)
    time.sleep(2)

    async def second(engine: Engine) -> None:
        await engine.start_up()
        assert engine.inspect("keeps")["State"]["Running"] is True
        q = engine.inspect("quick")["State"]
        assert (q["Status"], q["ExitCode"]) == ("exited", 5)
        v = engine.inspect("vanish")["State"]
        assert (v["Status"], v["ExitCode"]) == ("exited", 255)
        assert v["Error"]
        # its orphaned init does not run on unseen: the runtime container was deleted
        for _ in range(100):
            if (
                not Path(f"/proc/{orphan}").exists()
                or "Z" in Path(f"/proc/{orphan}/stat").read_text().split(")")[-1][:3]
            ):
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"the init {orphan} of a vanished monitor still runs")
        # the adopted container is watched: stop sees its exit
        await engine.stop("keeps", timeout=0)
        assert engine.inspect("keeps")["State"]["ExitCode"] == 137
        for c in (running, quick, vanish):
            await engine.remove(c, force=True)
        # the orphaned init of "vanish" is killed with the runtime container
        assert engine.list(all=True) == []

    run(lambda: make_engine(engine_roots), second)


_KILLED_CREATE = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    sys.path.insert(0, {tests!r})
    from tests.integration.test_engine_lifecycle import make_engine, request
    from tests.integration.engine_fixtures import Daemon
    from pathlib import Path
    from bulkhead.engine.containers import ContainerStore

    def die(self, container):  # the daemon is SIGKILLed right before the row is written
        os.kill(os.getpid(), signal.SIGKILL)

    ContainerStore.add = die
    d = Daemon(Path({root!r}), Path({exec_root!r}))
    engine = make_engine(d)
    asyncio.run(engine.create(request(["true"], Binds=[]), name="ghost"))
    """
)


def test_killed_during_create_leaves_no_ghost(engine_roots: Daemon) -> None:
    script = _KILLED_CREATE.format(
        tests=str(Path(__file__).resolve().parents[2]),
        root=str(engine_roots.root),
        exec_root=str(engine_roots.exec_root),
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    containers = engine_roots.root / "containers"
    assert [p.name for p in containers.iterdir()], "the create got as far as its files"

    async def body(engine: Engine) -> None:
        await engine.start_up()
        assert engine.list(all=True) == []
        assert list(containers.iterdir()) == []
        assert not [i for i in engine.snapshotter.walk() if i.name.startswith("container-")]
        assert not _mounts_under(containers)
        for image in engine.images.list():
            assert engine.images.users(image) == []
        # the name is free again
        cid, _ = await engine.create(request(["true"]), name="ghost")
        await engine.remove(cid)

    run(lambda: make_engine(engine_roots), body)


def test_unknown_runtime_and_bad_name(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(request(["true"], CgroupParent="/bulkhead/parent-test"))
        spec = json.loads(engine.paths(cid).config_json.read_text())
        assert spec["linux"]["cgroupsPath"] == f"/bulkhead/parent-test/{cid}"
        await engine.remove(cid)
        await engine.settle()
        with pytest.raises(SpecError, match="unknown or invalid runtime name: nope"):
            await engine.create(request(["true"], Runtime="nope"))
        with pytest.raises(SpecError, match=r"Invalid container name \(-x\)"):
            await engine.create(request(["true"]), name="-x")
        # --platform: the local image must be for it (Docker's 404; the CLI then pulls)
        from bulkhead.errors import ImageNotFound
        from bulkhead.oci.image_spec import format_platform, host_platform

        body = {"Image": "busybox", "Cmd": ["true"]}
        with pytest.raises(ImageNotFound, match=r"does not provide the specified platform"):
            await engine.create(parse_create_request(body, platform="linux/s390x"))
        here = format_platform(host_platform())
        cid, _ = await engine.create(parse_create_request(body, platform=here))
        await engine.remove(cid)
        await engine.settle()
        # an rlimit above the host's hard limit: a clear 400 at create, naming the option
        import resource

        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        if hard != resource.RLIM_INFINITY and os.geteuid() == 0:
            big = [{"Name": "nofile", "Soft": hard * 10, "Hard": hard * 10}]
            with pytest.raises(SpecError, match=f"--ulimit nofile=.*host's hard limit {hard}"):
                await engine.create(request(["true"], Ulimits=big))
        ok, _ = await engine.create(
            request(
                ["sh", "-c", "ulimit -n"], Ulimits=[{"Name": "nofile", "Soft": 1000, "Hard": 2000}]
            )
        )
        await engine.start(ok)
        assert await asyncio.wait_for(engine.wait(ok), 30) == (0, None)
        assert [e["log"] for e in read_log(engine.inspect(ok)["LogPath"])] == ["1000\n"]
        await engine.remove(ok)
        await engine.settle()
        # failures half-way through a create are undone: dirs, snapshot, mounts, volumes
        with pytest.raises(SpecError, match="bind source path does not exist"):
            await engine.create(
                request(
                    ["true"],
                    Binds=["named:/n"],
                    Mounts=[{"Type": "bind", "Source": "/no/such/dir", "Target": "/x"}],
                )
            )
        with pytest.raises(SpecError, match="no command specified"):
            await engine.create(
                parse_create_request({"Image": "busybox", "Entrypoint": [""], "Cmd": []})
            )
        assert engine.list(all=True) == []
        assert list((engine_roots.root / "containers").iterdir()) == []
        assert not [i for i in engine.snapshotter.walk() if i.name.startswith("container-")]
        assert not _mounts_under(engine_roots.root)
        assert engine.volumes is not None
        for v in engine.volumes.list({}):
            engine.volumes.remove(v["Name"])  # no reference left: not "in use"

    run(lambda: make_engine(engine_roots), body)


def test_daemon_killed_while_containers_run(daemon: Daemon) -> None:
    """kill -9 the real daemon: after a restart its containers are found and can be managed."""
    r = daemon.docker("run", "-d", "--name", "survivor", "busybox", "sleep", "100")
    assert r.returncode == 0, r.stderr
    r = daemon.docker("run", "-d", "--name", "short", "busybox", "sh", "-c", "sleep 1; exit 4")
    assert r.returncode == 0, r.stderr
    r = daemon.docker(
        "run", "-d", "-i", "--name", "reader", "busybox", "sh", "-c", "read x; echo got $x"
    )
    assert r.returncode == 0, r.stderr
    daemon.stop(kill=True)
    time.sleep(2)
    daemon.start()
    r = daemon.docker("inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", "survivor", "short")
    assert r.stdout.split("\n")[:2] == ["running 0", "exited 4"], r.stderr
    r = daemon.docker("exec", "survivor", "echo", "still here")
    assert (r.returncode, r.stdout) == (0, "still here\n"), r.stderr
    r = daemon.docker("attach", "reader", input="hello\n", timeout=30)
    assert (r.returncode, r.stdout) == (0, "got hello\n"), r.stderr
    daemon.restart()  # a graceful stop leaves it running too (live restore)
    r = daemon.docker("inspect", "-f", "{{.State.Status}}", "survivor")
    assert r.stdout.strip() == "running", r.stderr
    r = daemon.docker("stop", "-t", "0", "survivor")
    assert r.returncode == 0, r.stderr
    r = daemon.docker("rm", "survivor", "short", "reader")
    assert r.returncode == 0, r.stderr
    r = daemon.docker("ps", "-aq")
    assert r.stdout.strip() == ""


async def collect(chunks: Any) -> bytes:
    out = b""
    async for chunk in chunks:
        out += chunk
    return out


def untar(data: bytes) -> dict[str, bytes | None]:
    """name -> content (None for what is not a regular file)."""
    import io
    import tarfile

    out: dict[str, bytes | None] = {}
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar:
            f = tar.extractfile(m) if m.isreg() else None
            out[m.name] = f.read() if f is not None else None
    return out


def test_cp_diff_export_commit(engine_roots: Daemon) -> None:
    import io
    import tarfile

    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(
            request(["sh", "-c", "echo hi > /new.txt; rm /bin/vi; echo x >> /etc/passwd"])
        )
        await engine.start(cid)
        assert await asyncio.wait_for(engine.wait(cid), 30) == (0, None)
        changes = {(c["Path"], c["Kind"]) for c in await engine.changes(cid)}
        assert {("/new.txt", 1), ("/bin/vi", 2), ("/etc/passwd", 0), ("/etc", 0)} <= changes
        # docker cp out of a stopped container (the rootfs is mounted for the call only)
        stat_, chunks = await engine.archive_get(cid, "/new.txt")
        assert stat_["name"] == "new.txt" and stat_["size"] == 3
        assert untar(await collect(chunks)) == {"new.txt": b"hi\n"}
        etc = await engine.archive_stat(cid, "/etc")
        assert etc["mode"] & (1 << 31)  # Go's ModeDir
        with pytest.raises(NoSuchContainer, match="Could not find the file /nope"):
            await engine.archive_stat(cid, "/nope")
        # docker cp into it: a tar unpacked into /tmp, names cannot escape
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            data = b"payload"
            ti = tarfile.TarInfo("dir/file.txt")
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
            evil = tarfile.TarInfo("../../../../escape.txt")
            evil.size = 1
            t.addfile(evil, io.BytesIO(b"!"))
        await engine.archive_put(cid, "/tmp", buf.getvalue())
        # a symlink in the container where the tar has a directory is replaced, not followed
        outside = Path(engine.config.root) / "outside"
        outside.mkdir(mode=0o700)
        link_tar = io.BytesIO()
        with tarfile.open(fileobj=link_tar, mode="w") as t:
            sym = tarfile.TarInfo("evil")
            sym.type = tarfile.SYMTYPE
            sym.linkname = str(outside)
            t.addfile(sym)
        await engine.archive_put(cid, "/tmp", link_tar.getvalue())
        dir_tar = io.BytesIO()
        with tarfile.open(fileobj=dir_tar, mode="w") as t:
            d = tarfile.TarInfo("evil")
            d.type = tarfile.DIRTYPE
            d.mode = 0o777
            t.addfile(d)
            f = tarfile.TarInfo("evil/x")
            f.size = 1
            t.addfile(f, io.BytesIO(b"x"))
        await engine.archive_put(cid, "/tmp", dir_tar.getvalue())
        assert outside.stat().st_mode & 0o777 == 0o700
        assert list(outside.iterdir()) == []
        assert (await engine.archive_stat(cid, "/tmp/evil"))["mode"] & (1 << 31)
        assert not _mounts_under(engine.paths(cid).rootfs)
        _, chunks = await engine.archive_get(cid, "/tmp/dir/file.txt")
        assert untar(await collect(chunks)) == {"file.txt": b"payload"}
        assert not Path("/escape.txt").exists()
        assert (await engine.archive_stat(cid, "/tmp/escape.txt"))["size"] == 1  # clamped
        # export: the whole filesystem
        names = set(untar(await collect(await engine.export(cid))))
        assert {"new.txt", "bin/busybox", "tmp/dir/file.txt"} <= names
        assert "bin/vi" not in names
        # commit: a new image with the changes, which runs
        image_id = await engine.commit(cid, "committed", "v1", comment="c", author="me")
        img = engine.images.get("committed:v1")
        assert img.id == image_id
        assert img.config["history"][-1]["comment"] == "c"
        assert len(img.diff_ids) == 2
        other, _ = await engine.create(
            parse_create_request({"Image": "committed:v1", "Cmd": ["cat", "/new.txt"]})
        )
        await engine.start(other)
        assert await asyncio.wait_for(engine.wait(other), 30) == (0, None)
        lines = read_log(engine.inspect(other)["LogPath"])
        assert [entry["log"] for entry in lines] == ["hi\n"]
        for ref in (cid, other):
            await engine.remove(ref)

    run(lambda: make_engine(engine_roots), body)


def test_volumes_binds_and_etc_files(engine_roots: Daemon, tmp_path: Path) -> None:
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    (host_dir / "in.txt").write_text("from host\n")

    async def body(engine: Engine) -> None:
        writer, _ = await engine.create(
            request(
                ["sh", "-c", "echo shared > /data/f; cat /host/in.txt; touch /host/x || echo ro"],
                Binds=["vol1:/data", f"{host_dir}:/host:ro"],
                ExtraHosts=["db:10.9.8.7"],
            )
        )
        info = engine.inspect(writer)
        kinds = {m["Destination"]: m["Type"] for m in info["Mounts"]}
        assert kinds == {"/data": "volume", "/host": "bind"}
        await engine.start(writer)
        assert await asyncio.wait_for(engine.wait(writer), 30) == (0, None)
        out = [e["log"] for e in read_log(info["LogPath"]) if e["stream"] == "stdout"]
        assert out == ["from host\n", "ro\n"]  # touch failed on the read-only bind
        reader, _ = await engine.create(
            parse_create_request(
                {
                    "Image": "busybox",
                    "Hostname": "box",
                    "Cmd": ["sh", "-c", "cat /data/f; hostname; cat /etc/hostname"],
                    "HostConfig": {"Binds": ["vol1:/data"]},
                }
            )
        )
        await engine.start(reader)
        assert await asyncio.wait_for(engine.wait(reader), 30) == (0, None)
        out = [e["log"] for e in read_log(engine.inspect(reader)["LogPath"])]
        assert out == ["shared\n", "box\n", "box\n"]
        # docker cp reads the volume, not the image layer below it
        _, chunks = await engine.archive_get(reader, "/data/f")
        assert untar(await collect(chunks)) == {"f": b"shared\n"}

        def by_volume(v: str) -> list[str]:
            return sorted(x["Id"] for x in engine.list(all=True, filters={"volume": [v]}))

        assert by_volume("vol1") == sorted([writer, reader])
        assert by_volume("/data") == sorted([writer, reader])
        assert by_volume(str(host_dir)) == [writer]  # a bind, by its source
        assert by_volume("/host") == [writer]
        hosts = Path(engine.inspect(writer)["HostsPath"]).read_text()
        assert "10.9.8.7\tdb\n" in hosts
        from bulkhead.errors import VolumeInUse

        assert engine.volumes is not None
        with pytest.raises(VolumeInUse):
            engine.volumes.remove("vol1")
        for ref in (writer, reader):
            await engine.remove(ref)
        engine.volumes.remove("vol1")

    run(lambda: make_engine(engine_roots), body)


def test_restart_policies(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        flaky, _ = await engine.create(
            request(
                ["sh", "-c", "exit 1"],
                RestartPolicy={"Name": "on-failure", "MaximumRetryCount": 2},
            )
        )
        await engine.start(flaky)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c = engine.get(flaky)
            if c.restart_count == 2 and c.state.status == "exited":
                break
            await asyncio.sleep(0.05)
        c = engine.get(flaky)
        assert (c.restart_count, c.state.status, c.state.exit_code) == (2, "exited", 1)
        await asyncio.sleep(0.5)
        assert engine.get(flaky).restart_count == 2  # the limit holds
        always, _ = await engine.create(request(["sleep", "100"], RestartPolicy={"Name": "always"}))
        await engine.start(always)
        await engine.kill(always, "KILL")  # a kill is not a stop: it comes back
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c = engine.get(always)
            if c.restart_count == 1 and c.state.running:
                break
            await asyncio.sleep(0.05)
        assert engine.get(always).state.running
        await engine.stop(always, timeout=0)  # a stop is final
        await asyncio.sleep(0.5)
        c = engine.get(always)
        assert (c.state.status, c.restart_count) == ("exited", 1)
        for ref in (flaky, always):
            await engine.remove(ref)

    run(lambda: make_engine(engine_roots), body)


def test_engine_killed_between_start_and_record_adopts(engine_roots: Daemon) -> None:
    """A monitor started by a daemon that died before writing "running" is adopted as running."""

    async def first(engine: Engine) -> str:
        cid, _ = await engine.create(request(["sleep", "100"]))
        client = await engine.attach_monitor(cid)
        assert client is not None
        await client.start()  # as if the daemon died right after the start order

        def forget(x: Any) -> None:
            x.state.monitor_pid = 0

        engine.store.update(cid, forget)
        return cid

    cid = run(lambda: make_engine(engine_roots), first)

    async def second(engine: Engine) -> None:
        await engine.start_up()
        state = engine.inspect(cid)["State"]
        assert state["Status"] == "running" and state["Pid"] > 0
        await engine.remove(cid, force=True)

    run(lambda: make_engine(engine_roots), second)


def test_list_filters_and_zygote_restart(engine_roots: Daemon) -> None:
    from bulkhead.engine.zygote import ZygoteClient

    async def body(engine: Engine) -> None:
        a, _ = await engine.create(
            parse_create_request(
                {"Image": "busybox", "Cmd": ["true"], "Labels": {"tier": "web", "x": "1"}}
            ),
            name="fa",
        )
        b, _ = await engine.create(request(["sh", "-c", "exit 2"]), name="fb")
        c, _ = await engine.create(request(["true"]), name="fc")
        await engine.start(b)
        await asyncio.wait_for(engine.wait(b), 30)

        def names(**filters: list[str]) -> list[str]:
            return [s["Names"][0] for s in engine.list(all=True, filters=filters)]

        assert names() == ["/fc", "/fb", "/fa"]
        assert names(before=["fc"]) == ["/fb", "/fa"]
        assert names(since=["fa"]) == ["/fc", "/fb"]
        assert names(label=["tier=web"]) == ["/fa"]
        assert names(label=["tier=db"]) == []
        assert names(label=["x"]) == ["/fa"]
        assert names(status=["exited"]) == ["/fb"]
        assert names(status=["created"]) == ["/fc", "/fa"]
        assert names(exited=["2"]) == ["/fb"]
        assert names(name=["f[ab]"]) == ["/fb", "/fa"]
        assert names(id=[a[:10]]) == ["/fa"]
        assert names(ancestor=["busybox"]) == ["/fc", "/fb", "/fa"]
        assert names(ancestor=["busybox:nope"]) == []
        # ps without -a: running only; with a status filter: every container
        assert engine.list() == []
        assert [s["Names"][0] for s in engine.list(filters={"status": ["exited"]})] == ["/fb"]
        assert [s["Names"][0] for s in engine.list(limit=1)] == ["/fc"]
        with pytest.raises(SpecError, match="invalid filter 'status=nope'"):
            engine.list(filters={"status": ["nope"]})
        with pytest.raises(SpecError, match="invalid filter 'bogus'"):
            engine.list(filters={"bogus": ["1"]})
        # the zygote dies: the next start spawns a new one
        ZygoteClient(engine.config.exec_root).stop()
        await engine.start(c)
        assert await asyncio.wait_for(engine.wait(c), 30) == (0, None)
        for ref in (a, b, c):
            await engine.remove(ref)

    run(lambda: make_engine(engine_roots), body)


def test_join_another_containers_pid_namespace(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        host, _ = await engine.create(request(["sleep", "100"]), name="nshost")
        await engine.start(host)
        guest, _ = await engine.create(
            request(["sh", "-c", "cat /proc/1/cmdline | tr '\\0' ' '"], PidMode="container:nshost")
        )
        await engine.start(guest)
        assert await asyncio.wait_for(engine.wait(guest), 30) == (0, None)
        # the host restarts (new pid): the guest follows it at its next start
        await engine.stop(host, timeout=0)
        await engine.start(host)
        await engine.start(guest)
        assert await asyncio.wait_for(engine.wait(guest), 30) == (0, None)
        logs = [e["log"] for e in read_log(engine.inspect(guest)["LogPath"])]
        assert logs == ["sleep 100 ", "sleep 100 "]
        await engine.stop(host, timeout=0)
        with pytest.raises(ContainerNotRunning, match="non running container"):
            await engine.start(guest)
        for ref in (guest, host):
            await engine.remove(ref, force=True)

    run(lambda: make_engine(engine_roots), body)


def test_remove_a_created_container_with_an_early_monitor(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(request(["sleep", "100"]))
        client = await engine.attach_monitor(cid)
        assert client is not None
        info = client.info()
        assert info is not None and info.init_pid > 0
        assert engine.inspect(cid)["State"]["Status"] == "created"
        await engine.remove(cid)  # not running: no force needed; the monitor goes too
        await engine.settle()
        for _ in range(100):
            if not Path(f"/proc/{info.monitor_pid}").exists():
                break
            await asyncio.sleep(0.05)
        assert (
            not Path(f"/proc/{info.init_pid}/cmdline").exists()
            or not Path(f"/proc/{info.init_pid}/cmdline").read_bytes()
        )
        assert not (engine_roots.exec_root / cid).exists()

    run(lambda: make_engine(engine_roots), body)


def test_twenty_at_once(engine_roots: Daemon) -> None:
    """Concurrent creates, starts, stops and removes: every container accounted for."""

    async def body(engine: Engine) -> None:
        async def one(i: int) -> str:
            cid, _ = await engine.create(request(["sleep", "100"]), name=f"many{i}")
            await engine.start(cid)
            return cid

        t0 = time.monotonic()
        ids = await asyncio.gather(*(one(i) for i in range(20)))
        started = time.monotonic() - t0
        assert len(engine.list()) == 20, started
        pids = {engine.inspect(c)["State"]["Pid"] for c in ids}
        assert len(pids) == 20 and 0 not in pids
        await asyncio.gather(*(engine.stop(c, timeout=0) for c in ids))
        assert {engine.inspect(c)["State"]["ExitCode"] for c in ids} == {137}
        await asyncio.gather(*(engine.remove(c) for c in ids))
        assert engine.list(all=True) == []
        await engine.settle()
        assert not _mounts_under(engine.config.containers_root)
        assert list(engine.config.containers_root.iterdir()) == []

    run(lambda: make_engine(engine_roots), body)


def test_prune_stopped_containers(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        gone, _ = await engine.create(request(["true"]))
        kept, _ = await engine.create(
            parse_create_request({"Image": "busybox", "Cmd": ["true"], "Labels": {"keep": "1"}})
        )
        live, _ = await engine.create(request(["sleep", "100"]))
        await engine.start(live)
        with pytest.raises(SpecError, match="invalid filter 'nope'"):
            await engine.prune({"nope": ["1"]})
        assert (await engine.prune({"until": ["1h"]}))["ContainersDeleted"] is None
        report = await engine.prune({"label!": ["keep"]})
        assert report["ContainersDeleted"] == [gone]
        assert {c["Id"] for c in engine.list(all=True)} == {kept, live}
        await engine.remove(live, force=True)
        await engine.remove(kept)

    run(lambda: make_engine(engine_roots), body)


def test_daemon_killed_during_creates_leaves_no_ghost(daemon: Daemon) -> None:
    """SIGKILL the daemon while creates are in flight: afterwards every container is whole or gone.

    The kill comes at growing delays so that some rounds catch creates half-way.
    """
    import shutil as _shutil

    docker = _shutil.which("docker")
    if docker is None:
        pytest.skip("docker CLI not installed")
    # the first round's kill lands in the image's unpack (a half-unpacked snapshot);
    # the later ones in creates proper
    survived = []
    for delay in (0.2, 0.0, 0.05, 0.1, 0.15, 0.2, 0.3):
        if delay == 0.0:  # after the unpack round: unpack once for good
            r = daemon.docker("create", "--name", "warm", "busybox", "true")
            assert r.returncode == 0, r.stderr
            assert daemon.docker("rm", "warm").returncode == 0
            continue
        procs = [
            subprocess.Popen(
                [docker, "create", "-v", f"vol{i}:/data", "busybox", "true"],
                env=daemon.env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            for i in range(10)
        ]
        time.sleep(delay)
        daemon.stop(kill=True)
        for p in procs:
            p.communicate(timeout=60)
        daemon.start()
        r = daemon.docker("ps", "-aq", "--no-trunc")
        assert r.returncode == 0, r.stderr
        ids = set(r.stdout.split())
        survived.append(len(ids))
        dirs = {p.name for p in (daemon.root / "containers").iterdir()}
        assert dirs == ids  # no directory without its container, no container without files
        for cid in ids:
            r = daemon.docker("start", "-a", cid)
            assert r.returncode == 0, r.stderr
        if ids:
            r = daemon.docker("rm", *ids)
            assert r.returncode == 0, r.stderr
        r = daemon.docker("volume", "prune", "-af")
        assert r.returncode == 0, r.stderr
    print(f"creates that survived the kill, per round: {survived}")
    daemon.stop()
    assert list((daemon.root / "containers").iterdir()) == []
    assert not _mounts_under(daemon.root)


def test_restart_policies_at_daemon_start(engine_roots: Daemon) -> None:
    """always comes back when the daemon starts, even after a stop; unless-stopped does not."""

    async def first(engine: Engine) -> tuple[str, str]:
        a, _ = await engine.create(request(["sleep", "100"], RestartPolicy={"Name": "always"}))
        u, _ = await engine.create(
            request(["sleep", "100"], RestartPolicy={"Name": "unless-stopped"})
        )
        for c in (a, u):
            await engine.start(c)
            await engine.stop(c, timeout=0)
        return a, u

    a, u = run(lambda: make_engine(engine_roots), first)

    async def second(engine: Engine) -> None:
        await engine.start_up()
        for _ in range(200):
            if engine.get(a).state.running:
                break
            await asyncio.sleep(0.05)
        assert engine.get(a).state.running
        assert engine.get(u).state.status == "exited"
        for c in (a, u):
            await engine.remove(c, force=True)

    run(lambda: make_engine(engine_roots), second)


def test_log_options_reach_the_monitor(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(
            request(
                [
                    "sh",
                    "-c",
                    "i=0; while [ $i -lt 200 ]; do echo line-$i-xxxxxxxxxxxxxxxx; i=$((i+1)); done",
                ],
                LogConfig={"Type": "json-file", "Config": {"max-size": "1k", "max-file": "2"}},
            )
        )
        c = engine.get(cid)
        assert (c.log_max_size, c.log_max_files) == (1024, 2)
        await engine.start(cid)
        assert await asyncio.wait_for(engine.wait(cid), 30) == (0, None)
        log_path = Path(engine.inspect(cid)["LogPath"])
        files = sorted(p.name for p in log_path.parent.glob(log_path.name + "*"))
        assert files == [log_path.name, log_path.name + ".1"]  # rotated, two files kept
        assert log_path.stat().st_size <= 1024 + 200
        quiet, _ = await engine.create(
            request(["echo", "nothing kept"], LogConfig={"Type": "none", "Config": {}})
        )
        assert engine.inspect(quiet)["LogPath"] == ""
        await engine.start(quiet)
        assert await asyncio.wait_for(engine.wait(quiet), 30) == (0, None)
        for ref in (cid, quiet):
            await engine.remove(ref)

    run(lambda: make_engine(engine_roots), body)


def test_oom_kill_is_recorded(engine_roots: Daemon) -> None:
    async def body(engine: Engine) -> None:
        cid, _ = await engine.create(
            request(
                ["sh", "-c", "x=a; while true; do x=$x$x; done"],
                Memory=16 * 1024 * 1024,
                MemorySwap=16 * 1024 * 1024,
            )
        )
        await engine.start(cid)
        code, _ = await asyncio.wait_for(engine.wait(cid), 60)
        state = engine.inspect(cid)["State"]
        assert state["OOMKilled"] is True, state
        assert code == state["ExitCode"] != 0
        await engine.remove(cid)

    run(lambda: make_engine(engine_roots), body)


def test_parallel_creates_unpack_an_image_once(engine_roots: Daemon) -> None:
    import threading

    async def body(engine: Engine) -> None:
        inside = 0
        most = 0
        guard = threading.Lock()
        unpack = engine.images.unpack

        def counting(image: Any, snapshotter: Any) -> str:
            nonlocal inside, most
            with guard:
                inside += 1
                most = max(most, inside)
            try:
                time.sleep(0.05)  # widen the window
                return unpack(image, snapshotter)
            finally:
                with guard:
                    inside -= 1

        engine.images.unpack = counting  # type: ignore[method-assign]
        ids = await asyncio.gather(*(engine.create(request(["true"])) for _ in range(6)))
        assert most == 1
        snaps = [i for i in engine.snapshotter.walk() if str(i.name).startswith("extract-")]
        assert snaps == []
        for cid, _ in ids:
            await engine.remove(cid)

    run(lambda: make_engine(engine_roots), body)
