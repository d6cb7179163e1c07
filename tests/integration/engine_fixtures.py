"""A bulkhead daemon for a test: fresh roots, the offline busybox image, and a full clean-up.

Use the ``daemon`` fixture (registered in ``tests/integration/conftest.py``)::

    def test_run(daemon: Daemon) -> None:
        r = daemon.docker("run", "--rm", "busybox", "echo", "hi")
        assert r.stdout == "hi\\n"

The daemon runs as ``python -m bulkhead.daemon`` with its data root under
pytest's ``tmp_path`` and its exec root as a short directory under ``/run``
(unix socket paths must fit in 108 bytes). The clean-up, run even when the
test fails, stops the daemon, deletes every runtime container left in the
exec root (through each runtime's own ``delete --force``), kills the monitor
zygote and monitors it started (by PID, checked against their command line),
unmounts everything under both roots and removes them; it then asserts that
no mount and no process of the test is left.

Networks: a daemon of ``daemon_factory()`` runs in the host's network
namespace with ``bridge: none`` (no default bridge network: ``run`` without
``--network`` gets ``none``) and must never create an interface there.
``daemon_factory(netns=True)`` runs the daemon (``nsenter --net=``) in a
network namespace of the test's own, ``bh-t-<random>``, with Docker's default
bridge network; ``daemon.in_netns(*argv)`` runs a command in that namespace.
Its teardown checks that the host got no bridge or veth, then deletes the
namespace (and everything in it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkhead.linux import mountinfo

DOCKER = shutil.which("docker")
RUNTIME_CLI = str(Path(sys.executable).with_name("bulkhead-runtime"))
_BUSYBOX_CACHE: dict[str, Path] = {}


def _http_ping(sock: str) -> bool:
    import socket

    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(2)
        try:
            s.connect(sock)
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
        except OSError:
            return False


def busybox_image_store(cache_dir: Path) -> Path:
    """An image store holding busybox:latest, built once per session and copied per test."""
    key = str(cache_dir)
    if key not in _BUSYBOX_CACHE:
        store = cache_dir / "busybox-images"
        subprocess.run(
            [sys.executable, "-m", "bulkhead.images.busybox", "--store", str(store)],
            check=True,
            capture_output=True,
        )
        _BUSYBOX_CACHE[key] = store
    return _BUSYBOX_CACHE[key]


class Daemon:
    """One daemon process and its roots; see the module docstring."""

    def __init__(
        self,
        root: Path,
        exec_root: Path,
        extra_args: list[str] | None = None,
        netns: str | None = None,
    ) -> None:
        self.netns = netns
        self.root = root
        self.exec_root = exec_root
        self.socket = str(exec_root / "bulkhead.sock")
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = root.parent / "daemon.log"
        # Each daemon's containers live under a cgroup parent of their own,
        # so that a leak is this daemon's, and other sessions are not touched.
        self.cgroup_parent = f"/bulkhead/t-{os.urandom(4).hex()}"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def env(self) -> dict[str, str]:
        """The environment for a client of this daemon (docker CLI, docker-py, bulkhead)."""
        return dict(
            os.environ,
            DOCKER_HOST=self.host,
            BULKHEAD_HOST=self.host,
            DOCKER_CONFIG=str(self.root.parent / "docker-config"),
        )

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        enter = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        cmd = [
            *enter,
            sys.executable,
            "-m",
            "bulkhead.daemon",
            "--host",
            self.host,
            "--data-root",
            str(self.root),
            "--exec-root",
            str(self.exec_root),
            "--config-file",
            str(self.config_file()),
            *self.extra_args,
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it
        try:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=log, start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
            if _http_ping(self.socket):
                return
            time.sleep(0.02)
        raise RuntimeError(f"daemon did not answer within 20 s:\n{self.log()}")

    def config_file(self) -> Path:
        path = self.root.parent / "daemon.json"
        if not path.exists():
            doc: dict[str, Any] = {"cgroup-parent": self.cgroup_parent}
            if not self.netns:
                doc["bridge"] = "none"  # never a bridge in the host's namespace
            path.write_text(json.dumps(doc) + "\n")
        return path

    def in_netns(
        self, *argv: str, timeout: float = 30, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the daemon's network namespace (``nsenter --net=``)."""
        assert self.netns, "a daemon_factory(netns=True) daemon"
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.netns}", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def links(self) -> list[dict[str, Any]]:
        """``ip -j link`` of the daemon's namespace."""
        out = self.in_netns("ip", "-j", "link", check=True).stdout
        links: list[dict[str, Any]] = json.loads(out or "[]")
        return links

    def stop(self, *, kill: bool = False, timeout: float = 20) -> None:
        """Stop the daemon (SIGTERM, or SIGKILL with ``kill``); containers stay running."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def restart(self, *, kill: bool = False) -> None:
        self.stop(kill=kill)
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""

    def docker(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``docker`` CLI against this daemon."""
        if DOCKER is None:
            pytest.skip("docker CLI not installed")
        return subprocess.run(
            [DOCKER, *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def bulkhead(
        self, *args: str, input: str | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run bulkhead's own CLI against this daemon."""
        exe = str(Path(sys.executable).with_name("bulkhead"))
        return subprocess.run(
            [exe, *args],
            env=self.env(),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def client(self) -> Any:
        """A docker-py client of this daemon (closed by the fixture)."""
        import docker  # type: ignore[import-untyped]

        c = docker.DockerClient(base_url=self.host, timeout=60)
        self._clients.append(c)
        return c

    _clients: list[Any]

    # -- clean-up ---------------------------------------------------------------

    def cleanup(self) -> list[str]:
        """Stop everything this daemon started; return what had to be forced (leaks)."""
        problems: list[str] = []
        for c in getattr(self, "_clients", []):
            with contextlib.suppress(Exception):
                c.close()
        graceful = self.proc is not None and self.proc.poll() is None
        # A container still ending at the stop (its monitor deleting its cgroup) keeps the parent
        # legitimately: it is only a leak when no monitor was alive as the daemon stopped.
        quiet = not _monitor_pids(self.exec_root)
        self.stop()
        if graceful and quiet:
            problems += _cgroup_parent_left(self.cgroup_parent)
        runtime_base = self.exec_root / "runtime"
        if runtime_base.is_dir():
            for rt_dir in sorted(runtime_base.iterdir()):
                binary = _runtime_binary(rt_dir.name)
                for state in sorted(p for p in rt_dir.iterdir() if p.is_dir()):
                    subprocess.run(
                        [binary, "--root", str(rt_dir), "delete", "--force", state.name],
                        capture_output=True,
                        timeout=30,
                        check=False,
                    )
        # The zygote and the monitors it forked outlive the daemon on purpose (live
        # restore); a loaded 2-CPU machine can take a while to see them all go.
        for pid in _monitor_pids(self.exec_root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in kill_processes_of(self.exec_root):
            problems.append(
                f"process {pid} ({_cmdline(pid)!r}, state {_state(pid)}) survived SIGKILL for 20 s"
            )
        for mount_point in _mounts_under(self.root, self.exec_root):
            subprocess.run(["umount", "-l", mount_point], capture_output=True, check=False)
        problems += _remove_cgroup_parent(self.cgroup_parent)
        return problems


def _cgroup_parent_left(parent: str) -> list[str]:
    """A daemon stopped with no container left must remove its (empty) cgroup parent."""
    from bulkhead.cgroups import new_manager

    problems = []
    for path in sorted({Path(d) for d in new_manager(parent).paths().values()}):
        if path.is_dir() and not any(p.is_dir() for p in path.iterdir()):
            problems.append(f"the stopped daemon left its empty cgroup parent {path}")
    return problems


def _remove_cgroup_parent(parent: str) -> list[str]:
    """Remove the daemon's cgroup parent; name each container cgroup still under it (a leak)."""
    from bulkhead.cgroups import new_manager

    problems = []
    for path in sorted({Path(d) for d in new_manager(parent).paths().values()}):
        if not path.is_dir():
            continue
        for child in sorted(path.glob("**/"), key=lambda p: -len(p.parts)):
            if child != path:
                problems.append(f"cgroup {child} left behind")
            with contextlib.suppress(OSError):
                child.rmdir()
    return problems


def _runtime_binary(name: str) -> str:
    if name == "bulkhead":
        return RUNTIME_CLI
    return shutil.which(name) or RUNTIME_CLI


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _state(pid: int) -> str:
    """The process's state letter and wait channel (R, S, D: uninterruptible, Z: zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        wchan = Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return "gone"
    return f"{stat.rpartition(')')[2].split()[0]} in {wchan or '-'}"


def _processes_mentioning(text: str) -> list[int]:
    """PIDs whose command line names ``text`` (our zygote and daemon pass the exec root)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and text in _cmdline(int(entry)):
            found.append(int(entry))
    return found


def _holds_files_below(pid: int, root: str) -> bool:
    """Whether ``pid`` has a file below ``root`` open, or its working directory there."""
    below = root.rstrip("/") + "/"
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    links = [f"/proc/{pid}/fd/{n}" for n in names] + [f"/proc/{pid}/cwd"]
    for link in links:
        try:
            if os.readlink(link).startswith(below):
                return True
        except OSError:
            continue
    return False


def processes_of(exec_root: Path) -> list[int]:
    """What a daemon of ``exec_root`` started: its zygote, monitors, the daemon itself.

    By command line (they name the exec root), and by open files: a process
    in the middle of its ``execve`` shows an empty command line for a moment,
    but already holds the log the daemon gave it (``zygote.log``).
    """
    me = os.getpid()
    root = str(exec_root)
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        if root in _cmdline(pid) or _holds_files_below(pid, root):
            found.append(pid)
    return found


def kill_processes_of(exec_root: Path, timeout: float = 20.0) -> list[int]:
    """SIGKILL :func:`processes_of` ``exec_root`` until two looks in a row find none.

    Killed again on every round: a zygote its daemon was still starting (it
    daemonizes with a fork) may appear after the first. Returns what is left
    after ``timeout`` seconds (nothing, unless a process is stuck in the kernel).
    """
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 2 and time.monotonic() < deadline:
        pids = processes_of(exec_root)
        quiet = 0 if pids else quiet + 1
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    return processes_of(exec_root)


def _monitor_pids(exec_root: Path) -> list[int]:
    """Monitor PIDs from ``<exec_root>/<id>/monitor.json`` still alive with a Python cmdline."""
    pids = []
    for doc in exec_root.glob("*/monitor.json"):
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            pid = int(json.loads(doc.read_text())["monitor_pid"])
            if "python" in _cmdline(pid) or "bulkhead" in _cmdline(pid):
                pids.append(pid)
    return pids


def _mounts_under(*roots: Path) -> list[str]:
    prefixes = [str(r.resolve()) + "/" for r in roots] + [str(r.resolve()) for r in roots]
    points = [
        m.mountpoint
        for m in mountinfo.read()
        if any(m.mountpoint == p or m.mountpoint.startswith(p) for p in prefixes)
    ]
    return sorted(set(points), key=lambda p: -p.count("/"))


#: interface names bulkhead creates: they must never appear in the host's namespace
_OUR_LINK_PREFIXES = ("bh0", "br-", "veth", "bhp")


def host_links() -> set[str]:
    """Names of the links of the host's (this process's) network namespace."""
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout
    return {str(link["ifname"]) for link in json.loads(out or "[]")}


def make_netns() -> str:
    """A fresh network namespace ``bh-t-<random>`` with its loopback up."""
    name = f"bh-t-{os.urandom(4).hex()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    subprocess.run(
        ["nsenter", f"--net=/run/netns/{name}", "ip", "link", "set", "lo", "up"],
        check=True,
        capture_output=True,
    )
    return name


def delete_netns(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)


@pytest.fixture
def daemon_factory(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """``daemon_factory(extra_args=[...], start=True, netns=False) -> Daemon``; all cleaned up
    afterwards. ``netns=True``: in a network namespace of its own (see the module docstring)."""
    made: list[tuple[Daemon, Path]] = []
    namespaces: list[str] = []
    images = busybox_image_store(tmp_path_factory.getbasetemp())
    links_before = host_links()

    def make(
        extra_args: list[str] | None = None, *, start: bool = True, netns: bool = False
    ) -> Daemon:
        base = tmp_path / f"daemon{len(made)}"
        base.mkdir()
        root = base / "root"
        root.mkdir()
        shutil.copytree(images, root / "images", symlinks=True)
        exec_root = Path(tempfile.mkdtemp(prefix="bh-", dir="/run"))
        name = None
        if netns:
            name = make_netns()
            namespaces.append(name)
        d = Daemon(root, exec_root, extra_args, netns=name)
        d._clients = []
        made.append((d, exec_root))
        if start:
            d.start()
        return d

    try:
        yield make
    finally:
        problems: list[str] = []
        try:
            for d, exec_root in made:
                problems += d.cleanup()
                left = _mounts_under(d.root, exec_root)
                if left:
                    problems.append(f"mounts left: {left}")
                shutil.rmtree(exec_root, ignore_errors=True)
            new = sorted(n for n in host_links() - links_before if n.startswith(_OUR_LINK_PREFIXES))
            if new:
                problems.append(f"links made in the host's network namespace: {new}")
        finally:
            for name in namespaces:
                delete_netns(name)
    assert not problems, "daemon test leaked: " + "; ".join(problems)


@pytest.fixture
def daemon(daemon_factory: Any) -> Daemon:
    """A started daemon on fresh roots with busybox:latest (see :class:`Daemon`)."""
    d: Daemon = daemon_factory()
    return d
