#!/usr/bin/env python3
"""Engine benchmark: ``run --rm busybox true`` and 20 detached containers, bulkhead vs podman vs dockerd.

Every engine runs the same image: the offline busybox image
(``python -m bulkhead.images.busybox``), written once as a docker-archive
with :func:`bulkhead.images.archive.save` and loaded with ``podman load`` /
``docker load`` (bulkhead's daemon reads the image store directly). Each
engine gets its own state under a fresh temporary directory, so nothing on
the host is read or changed:

``bulkhead``
    ``python -m bulkhead.daemon`` on a temporary data root, exec root and
    unix socket, driven by bulkhead's own CLI (``.venv/bin/bulkhead``) and,
    as a second subject, by the stock ``docker`` 28.2 CLI (the same daemon:
    the difference is the client's start-up). Its daemon.json says
    ``"bridge": "none"``: no default bridge network (no ``bh0``) in the host's
    namespace.
``podman``
    ``podman --root/--runroot/--tmpdir/--network-config-dir <tmp>`` with
    ``CONTAINERS_CONF`` pointing at a temporary containers.conf (the
    MACHINE-NOTES step: ``default_ulimits`` within this host's hard limits,
    and runc: crun 1.8 refuses this hybrid cgroup host), ``cgroupfs``,
    no events log.
``dockerd``
    Debian's ``dockerd`` 20.10 (package ``docker.io``), started here with its
    own ``--data-root``, ``--exec-root``, ``-H unix://<tmp>``, ``--pidfile``,
    a private ``--config-file`` (its trust key inside the temp dir) and
    ``--iptables=false --ip6tables=false --bridge=none --ip-forward=false``:
    no firewall rules, no docker0, no sysctl change. Its containerd is its
    own: dockerd's managed mode (a child containerd under the exec root);
    when a system containerd answers on /run/containerd/containerd.sock
    (where dockerd would otherwise attach), the benchmark starts a private
    containerd itself and passes ``--containerd``. Driven by the 28.2
    ``docker`` client at /usr/local/bin (Debian's 20.10 client in /usr/bin is
    not used).

Scenarios, measured side by side with the engines alternating (the order
rotates every round), after warm-up rounds:

1. ``<cli> run --rm --network=none busybox true``: wall time of the whole
   command, ``--runs`` (>= 20) times per engine.
2. 20 detached containers: the wall time of 20 sequential
   ``<cli> run -d --network=none --name … busybox sleep 1000`` (each returns
   once its container runs; all 20 are then checked to be running), then of
   one ``<cli> rm -f <the 20>``; ``--detached-rounds`` rounds per engine.

Prints median/p90/min and the ratio of each engine's median to bulkhead's
(targets: podman >= 3x and dockerd >= 5x bulkhead's time for scenario 1;
20 detached starts <= 1.5 s), saves every sample as JSON under
bench/results/.

Clean-up: every container is removed, the daemons stopped, their left-over
processes (those naming the temp dirs) killed by PID, everything mounted
under the temp dirs unmounted and the dirs removed; the directories dockerd
and containerd create on the host (/run/docker/plugins, /run/containerd/s)
are removed when they did not exist before. The host state is compared
before and after: ``nft list ruleset``, ``iptables-legacy-save``, network
namespaces, links, ``net.ipv4.ip_forward``, new top-level cgroups, and
dockerd/containerd/conmon/podman processes; any difference is printed.

Needs root. ``make bench-engine`` installs the packages (TEST_DEBS: podman,
docker.io, runc, ...) and runs it.

Usage: ``.venv/bin/python bench/engine_run.py [--runs 25] [--engines bulkhead,docker-bulkhead,podman,dockerd]``
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import HERE, PYTHON, VENV_BIN, fresh_bytecode, host_info, save_result, summary

DOCKER_CLI = Path("/usr/local/bin/docker")  # the 28.2 client (API 1.50, negotiates down)
DOCKERD = Path("/usr/sbin/dockerd")
CONTAINERD = Path("/usr/bin/containerd")
PODMAN = Path("/usr/bin/podman")
BULKHEAD_CLI = VENV_BIN / "bulkhead"
RUNTIME_CLI = VENV_BIN / "bulkhead-runtime"
SYSTEM_CONTAINERD_SOCK = Path("/run/containerd/containerd.sock")
IMAGE = "busybox"
DETACHED = 20
ENGINES = ("bulkhead", "docker-bulkhead", "podman", "dockerd")
#: Host paths that the peers create when absent (removed again when they were absent before).
HOST_DIRS = (
    Path("/run/docker/plugins"),
    Path("/run/docker"),
    Path("/run/containerd/s"),
    Path("/run/containerd"),
)
HOST_FILES = (Path("/etc/docker/key.json"),)
#: Top-level cgroups the engines create (docker: /docker/<id>, podman with cgroupfs:
#: /libpod_parent, bulkhead: /bulkhead, its own subtree), removed when new and empty at the end.
PEER_CGROUPS = ("docker", "libpod_parent", "bulkhead")
#: The cgroup parent of the bulkhead daemon's containers (Docker's "cgroup-parent"): inside
#: bulkhead's own subtree, named for this run; removed at the end.
BULKHEAD_CGROUP_PARENT = f"bulkhead/bench-{os.getpid()}"
#: Test sessions hold this lock shared and sweep /bulkhead for leaks only when they get it
#: exclusively (tests/conftest.py): the benchmark holds it shared while its daemon runs.
TEST_SESSIONS_LOCK = "/run/bulkhead-test-sessions.lock"
CGROUP_ROOT = Path("/sys/fs/cgroup")


# ---------------------------------------------------------------- processes, mounts, host state


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def processes_mentioning(*texts: str) -> list[int]:
    """PIDs (not ours) whose command line names one of ``texts`` (our temp dirs)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me:
            line = cmdline(int(entry))
            if any(t in line for t in texts):
                found.append(int(entry))
    return found


def kill_pids(pids: Sequence[int], sig: int = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def mountpoints() -> list[str]:
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            points.append(point.encode().decode("unicode_escape"))
    return points


def mounts_under(*roots: Path) -> list[str]:
    """Mount points at or under ``roots``, deepest first."""
    prefixes = [str(r) for r in roots]
    points = [
        p for p in mountpoints() if any(p == pre or p.startswith(pre + "/") for pre in prefixes)
    ]
    return sorted(set(points), key=lambda p: -p.count("/"))


def unmount_under(*roots: Path) -> list[str]:
    """Unmount everything at or under ``roots`` (lazily when busy); return what was mounted."""
    found = mounts_under(*roots)
    for point in found:
        proc = subprocess.run(["umount", "-n", point], capture_output=True, check=False)
        if proc.returncode != 0:
            subprocess.run(["umount", "-n", "-l", point], capture_output=True, check=False)
    return found


def _out(argv: list[str]) -> str:
    if not shutil.which(argv[0]):
        return f"({argv[0]} not installed)"
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    return proc.stdout + (f"[exit {proc.returncode}] {proc.stderr}" if proc.returncode else "")


def peer_processes() -> list[str]:
    """``pid name`` of every dockerd, containerd(-shim), conmon and podman process."""
    names = ("dockerd", "containerd", "containerd-shim", "containerd-shim-runc-v2", "conmon")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        state = stat[stat.rindex(")") + 2 :].split(" ", 1)[0]
        # A zombie is only an exit status its parent (often PID 1) has yet to collect.
        if state != "Z" and (comm in names or comm == "podman"):
            found.append(f"{entry} {cmdline(int(entry))[:100].strip()}")
    return sorted(found)


def top_cgroups() -> list[str]:
    out = []
    for h in sorted(CGROUP_ROOT.iterdir()):
        with contextlib.suppress(OSError):
            out += [f"{h.name}/{d.name}" for d in h.iterdir() if d.is_dir()]
    return sorted(out)


def host_state() -> dict[str, Any]:
    """What the benchmark must leave as it found it."""
    with contextlib.suppress(OSError):
        forward = Path("/proc/sys/net/ipv4/ip_forward").read_text().strip()
    return {
        "nft list ruleset": _out(["nft", "list", "ruleset"]),
        "iptables-legacy-save": "\n".join(
            line for line in _out(["iptables-legacy-save"]).splitlines() if not line.startswith("#")
        ),
        "ip netns": _out(["ip", "netns", "list"]),
        "links": sorted(
            line.split(":")[1].strip().split("@")[0]
            for line in _out(["ip", "-o", "link"]).splitlines()
            if ":" in line
        ),
        "net.ipv4.ip_forward": forward,
        "top-level cgroups": top_cgroups(),
        "peer processes": peer_processes(),
        "host paths": sorted(str(p) for p in (*HOST_DIRS, *HOST_FILES) if p.exists()),
    }


def compare_state(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    diffs = []
    for key, was in before.items():
        now = after.get(key)
        if now == was:
            continue
        if isinstance(was, list) and isinstance(now, list):
            added = sorted(set(now) - set(was))
            gone = sorted(set(was) - set(now))
            diffs.append(f"{key}: added {added}, gone {gone}")
        else:
            diffs.append(f"{key}: was {was!r}, now {now!r}")
    return diffs


def forbid_root_netns() -> None:
    """Have every bulkhead daemon started from here refuse to make an interface or nft table
    in this (the host's) network namespace: ``BULKHEAD_FORBID_NETNS``, as the tests do."""
    os.environ["BULKHEAD_FORBID_NETNS"] = str(os.stat("/proc/self/ns/net").st_ino)


def remove_stale_cgroup_parents() -> None:
    """Empty ``/bulkhead/bench-<pid>`` parents of earlier runs that were killed (SIGKILL)."""
    for stale in sorted(CGROUP_ROOT.glob("*/bulkhead/bench-*")):
        pid = stale.name.removeprefix("bench-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            with contextlib.suppress(OSError):  # not empty: a container still in it
                stale.rmdir()


def remove_host_leftovers(before: dict[str, Any]) -> list[str]:
    """Remove what the peers created on the host that was absent before: empty dirs, key file."""
    existed = set(before["host paths"])
    removed = []
    for f in HOST_FILES:
        if str(f) not in existed and f.exists():
            f.unlink()
            removed.append(str(f))
    for d in HOST_DIRS:  # children listed before parents
        if str(d) not in existed and d.is_dir():
            try:
                d.rmdir()  # only when empty: another containerd may be using it
                removed.append(str(d))
            except OSError:
                pass
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):  # our run's cgroup parent, everywhere
        ours = hierarchy / BULKHEAD_CGROUP_PARENT
        if not ours.is_dir():
            continue
        for d in sorted((p for p in ours.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            ours.rmdir()
            removed.append(str(ours))
    was = set(before["top-level cgroups"])
    for name in top_cgroups():
        h, _, top = name.partition("/")
        if name in was or top not in PEER_CGROUPS:
            continue
        base = CGROUP_ROOT / h / top
        for d in sorted((p for p in base.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            base.rmdir()
            removed.append(str(base))
    return removed


# ---------------------------------------------------------------- HTTP ping


def ping(sock: Path, timeout: float = 2.0) -> bool:
    """Whether an Engine API answers ``GET /_ping`` with 200 on the unix socket ``sock``."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(sock))
            s.sendall(b"GET /_ping HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            return s.recv(16).startswith(b"HTTP/1.1 200")
        except OSError:
            return False


def wait_for(
    check: Callable[[], bool], what: str, timeout: float, proc: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not answer within {timeout:g} s")


# ---------------------------------------------------------------- engines


@dataclass
class Client:
    """One thing to time: a CLI (argv prefix and environment) against one engine."""

    key: str
    label: str
    base: list[str]
    env: dict[str, str]
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    detached: list[dict[str, Any]] = field(default_factory=list)
    #: The floor: ``--version`` (no daemon) and ``ps -q`` (one API round trip), wall seconds.
    floor: dict[str, list[float]] = field(default_factory=dict)
    #: The Engine API socket (bulkhead, dockerd): the API phases are timed there as well.
    api_socket: Path | None = None
    #: The API phases of ``run --rm true`` (see :func:`api_run_once`), one dict per run.
    phases: list[dict[str, float]] = field(default_factory=list)
    api_failures: list[str] = field(default_factory=list)
    #: ``rm -f`` as Docker means it (SIGKILL at once): podman's waits for its stop timeout first.
    rm_force: tuple[str, ...] = ("rm", "-f")

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.base, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def timed(self, *args: str, timeout: float = 120) -> tuple[float, str | None]:
        """Wall time of ``<cli> args`` and None, or the error (exit status, last stderr line)."""
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                [*self.base, *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return time.perf_counter() - t0, f"timed out after {timeout:g} s"
        elapsed = time.perf_counter() - t0
        if proc.returncode == 0:
            return elapsed, None
        lines = proc.stderr.decode(errors="replace").strip().splitlines()
        return elapsed, f"exit {proc.returncode}: {lines[-1] if lines else ''}"

    def container_ids(self, all_: bool = True) -> list[str]:
        proc = self.run("ps", "-q", "--no-trunc", *(["-a"] if all_ else []))
        return proc.stdout.split() if proc.returncode == 0 else []

    def running_count(self) -> int:
        proc = self.run("ps", "-q", "--filter", "status=running")
        return len(proc.stdout.split()) if proc.returncode == 0 else -1

    def remove_all(self) -> None:
        ids = self.container_ids()
        if ids:
            self.run(*self.rm_force, *ids)


class Engine:
    """A daemon (or daemonless engine) with its own state; :meth:`start` returns its clients."""

    name = ""

    def __init__(self, work: Path, archive: Path, env: dict[str, str]) -> None:
        self.work = work / self.name
        self.work.mkdir()
        self.archive = archive
        self.env = env
        self.versions: dict[str, str] = {}
        #: A network namespace (its name under /run/netns) the engine runs in, with its bridge
        #: networks (bench/network.py); None: the host's, where it makes no network at all.
        self.netns: str | None = None

    def enter(self) -> list[str]:
        """The argv prefix that runs the engine's daemon (or podman) in :attr:`netns`."""
        return ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []

    def start(self) -> list[Client]:
        raise NotImplementedError

    def stop(self) -> list[str]:
        """Stop everything; return what had to be forced."""
        raise NotImplementedError

    def dirs(self) -> list[Path]:
        return [self.work]

    def reap(self) -> list[str]:
        """Kill left-over processes naming our dirs (by PID), unmount under them."""
        problems = []
        texts = [str(d) for d in self.dirs()]
        pids = processes_mentioning(*texts)
        if pids:
            problems.append(
                f"{self.name}: killed left-over processes "
                + ", ".join(f"{p} ({cmdline(p)[:80]})" for p in pids)
            )
            kill_pids(pids)
            deadline = time.monotonic() + 5
            while processes_mentioning(*texts) and time.monotonic() < deadline:
                time.sleep(0.05)
        left = unmount_under(*self.dirs())
        if left:
            problems.append(f"{self.name}: unmounted {len(left)} left-over mount(s): {left[:4]}")
        return problems


class Bulkhead(Engine):
    """``python -m bulkhead.daemon`` on temporary roots; the bulkhead CLI and docker 28.2 drive it."""

    name = "bulkhead"

    def __init__(self, work: Path, archive: Path, env: dict[str, str], image_store: Path) -> None:
        super().__init__(work, archive, env)
        self.root = self.work / "root"
        # Short: unix socket paths must stay < 108 bytes (monitor sockets live here).
        self.exec_root = Path(tempfile.mkdtemp(prefix="bhb-", dir="/run"))
        self.sock = self.exec_root / "bulkhead.sock"
        self.image_store = image_store
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.work / "daemon.log"

    def dirs(self) -> list[Path]:
        return [self.work, self.exec_root]

    def start(self) -> list[Client]:
        self.root.mkdir()
        shutil.copytree(self.image_store, self.root / "images", symlinks=True)
        config = self.work / "daemon.json"
        host = f"unix://{self.sock}"
        cmd = [
            *self.enter(), str(PYTHON), "-m", "bulkhead.daemon", "--host", host, "--data-root", str(self.root),
            "--exec-root", str(self.exec_root), "--config-file", str(config),
        ]  # fmt: skip
        # Our containers' cgroups in a subtree of /bulkhead of our own (test sessions leave
        # /bulkhead alone while we hold their lock); a daemon without Docker's
        # "cgroup-parent" key refuses it: then without.
        # In the host's namespace: no default bridge network (no bh0 on the host).
        bridge = {} if self.netns else {"bridge": "none"}
        for settings in ({"cgroup-parent": f"/{BULKHEAD_CGROUP_PARENT}"}, {}):
            config.write_text(json.dumps(settings | bridge) + "\n")
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
                )
            try:
                wait_for(lambda: ping(self.sock), "the bulkhead daemon", 30, self.proc)
            except RuntimeError as exc:
                if settings and self.proc.poll() is not None and "cgroup-parent" in tail(self.log):
                    print(
                        "NOTE: this bulkhead daemon takes no cgroup-parent: its containers' "
                        "cgroups are under /bulkhead, where a test session ending meanwhile "
                        "would count them as its leaks"
                    )
                    continue
                raise RuntimeError(f"{exc}: {tail(self.log)}") from None
            self.versions["bulkhead cgroup parent"] = settings.get("cgroup-parent", "/bulkhead")
            break
        env = dict(self.env, DOCKER_HOST=host, BULKHEAD_HOST=host)
        env.pop("BULKHEAD_AUTOSTART", None)
        clients = [
            Client(
                "docker-bulkhead",
                "docker 28.2 CLI -> bulkhead",
                [str(DOCKER_CLI)],
                env,
                api_socket=self.sock,
            )
        ]
        if BULKHEAD_CLI.exists():
            clients.insert(
                0,
                Client(
                    "bulkhead",
                    "bulkhead CLI -> bulkhead",
                    [str(BULKHEAD_CLI)],
                    env,
                    api_socket=self.sock,
                ),
            )
        else:
            print(f"NOTE: {BULKHEAD_CLI} does not exist (yet): bulkhead's CLI is not measured")
        self.versions["bulkhead"] = "git " + version_line(
            ["git", "-C", str(HERE.parent), "rev-parse", "--short", "HEAD"]
        )
        return clients

    def stop(self) -> list[str]:
        problems: list[str] = []
        if self.proc is not None and self.proc.poll() is None:
            # Containers outlive the daemon (live restore): remove them through it first.
            env = dict(self.env, DOCKER_HOST=f"unix://{self.sock}")
            c = Client("cleanup", "", [str(DOCKER_CLI)], env)
            with contextlib.suppress(subprocess.TimeoutExpired):
                ids = c.container_ids()
                if ids:
                    problems.append(f"bulkhead: {len(ids)} container(s) left, removed")
                    c.run("rm", "-f", *ids, timeout=60)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                problems.append("bulkhead: the daemon ignored SIGTERM for 30 s (killed)")
                self.proc.kill()
                self.proc.wait()
        # Runtime containers left in the exec root: each runtime's own delete --force.
        runtime_base = self.exec_root / "runtime"
        if runtime_base.is_dir():
            for rt_dir in sorted(p for p in runtime_base.iterdir() if p.is_dir()):
                binary = (
                    str(RUNTIME_CLI)
                    if rt_dir.name in ("bulkhead", "bulkhead-runtime")
                    else shutil.which(rt_dir.name) or str(RUNTIME_CLI)
                )
                for state in sorted(p for p in rt_dir.iterdir() if p.is_dir()):
                    problems.append(f"bulkhead: runtime container {state.name} left, deleted")
                    subprocess.run(
                        [binary, "--root", str(rt_dir), "delete", "--force", state.name],
                        capture_output=True,
                        timeout=30,
                        check=False,
                    )
        # The zygote and its monitors survive the daemon on purpose; they are ours.
        zygote = [p for p in processes_mentioning(str(self.exec_root))]
        kill_pids(zygote, signal.SIGTERM)
        deadline = time.monotonic() + 3
        while processes_mentioning(str(self.exec_root)) and time.monotonic() < deadline:
            time.sleep(0.05)
        problems += self.reap()
        shutil.rmtree(self.exec_root, ignore_errors=True)
        return problems


class Podman(Engine):
    """Podman with all its state in the temp dir and a private containers.conf."""

    name = "podman"

    def __init__(self, work: Path, archive: Path, env: dict[str, str]) -> None:
        super().__init__(work, archive, env)
        # podman refuses a run root longer than 50 characters: keep it short.
        self.run_root = Path(tempfile.mkdtemp(prefix="bhp-", dir="/tmp"))

    def dirs(self) -> list[Path]:
        return [self.work, self.run_root]

    def start(self) -> list[Client]:
        conf = self.work / "containers.conf"
        # MACHINE-NOTES: podman 4.3 fails until the default ulimits fit under this host's hard
        # limits (root lacks CAP_SYS_RESOURCE); crun 1.8 refuses the hybrid cgroup layout.
        conf.write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'runtime = "runc"\n'
            'cgroup_manager = "cgroupfs"\n'
            'events_logger = "none"\n'
        )
        env = dict(self.env, CONTAINERS_CONF=str(conf))
        base = [
            *self.enter(), str(PODMAN), "--root", str(self.work / "root"), "--runroot", str(self.run_root / "run"),
            "--tmpdir", str(self.run_root / "tmp"), "--storage-driver", "overlay",
            "--network-config-dir", str(self.work / "net"),
        ]  # fmt: skip
        client = Client("podman", "podman", base, env, rm_force=("rm", "-f", "-t", "0"))
        proc = client.run("load", "-q", "-i", str(self.archive))
        if proc.returncode != 0:
            raise RuntimeError(f"podman load: {proc.stderr.strip()}")
        self.versions["podman"] = version_line([str(PODMAN), "--version"])
        info = client.run(
            "info", "--format", "{{.Host.OCIRuntime.Name}} {{.Host.OCIRuntime.Version}}"
        )
        self.versions["podman runtime"] = (
            info.stdout.strip().splitlines()[0] if info.stdout else "?"
        )
        client.label = f"podman {self.versions['podman'].split()[-1]} (runc)"
        self.client = client
        return [client]

    def stop(self) -> list[str]:
        problems = []
        client = getattr(self, "client", None)
        if client is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                ids = client.container_ids()
                if ids:
                    problems.append(f"podman: {len(ids)} container(s) left, removed")
                    client.run("rm", "-f", "-t", "0", *ids, timeout=60)
        problems += self.reap()
        shutil.rmtree(self.run_root, ignore_errors=True)
        return problems


class Dockerd(Engine):
    """Debian's dockerd 20.10 with private roots, no firewall, no bridge; its own containerd."""

    name = "dockerd"

    def __init__(self, work: Path, archive: Path, env: dict[str, str]) -> None:
        super().__init__(work, archive, env)
        # Short: containerd's socket and the shims' paths live under the exec root.
        self.exec_root = Path(tempfile.mkdtemp(prefix="bhd-", dir="/tmp"))
        self.sock = self.exec_root / "docker.sock"
        self.pidfile = self.exec_root / "docker.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        self.containerd: subprocess.Popen[bytes] | None = None
        self.log = self.work / "dockerd.log"

    def dirs(self) -> list[Path]:
        return [self.work, self.exec_root]

    def start(self) -> list[Client]:
        config = self.work / "daemon.json"
        # The trust key would otherwise go to /etc/docker/key.json.
        config.write_text(json.dumps({"deprecated-key-path": str(self.work / "key.json")}) + "\n")
        cmd = [
            *self.enter(), str(DOCKERD), "--data-root", str(self.work / "data"), "--exec-root",
            str(self.exec_root / "x"), "-H", f"unix://{self.sock}", "--pidfile", str(self.pidfile),
            "--config-file", str(config), "--userland-proxy=false",
            "--storage-driver", "overlay2", "--log-level", "warn",
        ]  # fmt: skip
        if not self.netns:  # the host's namespace: no firewall rules, no docker0, no sysctl
            cmd += ["--iptables=false", "--ip6tables=false", "--bridge=none"]
            cmd += ["--ip-forward=false", "--ip-masq=false"]
        if SYSTEM_CONTAINERD_SOCK.exists():
            # dockerd attaches to a system containerd when that socket exists; use our own.
            cmd += ["--containerd", str(self.start_containerd())]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            wait_for(lambda: ping(self.sock), "dockerd", 60, self.proc)
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {tail(self.log)}") from None
        env = dict(self.env, DOCKER_HOST=f"unix://{self.sock}")
        client = Client(
            "dockerd", "docker 28.2 CLI -> dockerd", [str(DOCKER_CLI)], env, api_socket=self.sock
        )
        proc = client.run("load", "-q", "-i", str(self.archive))
        if proc.returncode != 0:
            raise RuntimeError(f"docker load: {proc.stderr.strip()}")
        ver = client.run("version", "--format", "{{.Server.Version}} (API {{.Server.APIVersion}})")
        self.versions["dockerd"] = ver.stdout.strip()
        self.versions["docker client"] = version_line([str(DOCKER_CLI), "--version"])
        client.label = f"docker 28.2 -> dockerd {ver.stdout.split('+')[0].split(' ')[0]}"
        self.client = client
        return [client]

    def start_containerd(self) -> Path:
        state = self.exec_root / "ctd"
        sock = state / "containerd.sock"
        toml = self.work / "containerd.toml"
        toml.write_text(
            "version = 2\n"
            f'root = "{self.work / "containerd"}"\n'
            f'state = "{state}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            "[grpc]\n"
            f'  address = "{sock}"\n'
        )
        with open(self.work / "containerd.log", "ab") as log:
            self.containerd = subprocess.Popen(
                [str(CONTAINERD), "--config", str(toml)],
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(sock.exists, "containerd", 30, self.containerd)
        print("NOTE: a system containerd is running: dockerd gets a private containerd instead")
        return sock

    def stop(self) -> list[str]:
        problems = []
        client = getattr(self, "client", None)
        if client is not None and self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                ids = client.container_ids()
                if ids:
                    problems.append(f"dockerd: {len(ids)} container(s) left, removed")
                    client.run("rm", "-f", *ids, timeout=60)
        for proc, what in ((self.proc, "dockerd"), (self.containerd, "containerd")):
            if proc is None or proc.poll() is not None:
                continue
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                problems.append(f"{what} ignored SIGTERM for 30 s (killed)")
                proc.kill()
                proc.wait()
        # dockerd stops its managed containerd (a child, named by our exec root) on exit.
        deadline = time.monotonic() + 10
        while processes_mentioning(str(self.exec_root)) and time.monotonic() < deadline:
            time.sleep(0.1)
        problems += self.reap()
        shutil.rmtree(self.exec_root, ignore_errors=True)
        return problems


def version_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unavailable: {exc}"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else f"exit {proc.returncode}"


def tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------- scenarios


def run_args(tty_free_cmd: Sequence[str]) -> list[str]:
    return ["run", "--rm", "--network=none", IMAGE, *tty_free_cmd]


def rotating(clients: Sequence[Client], rounds: int) -> Iterator[tuple[int, Client]]:
    """(round, client) for ``rounds`` rounds; the order rotates every round."""
    clients = list(clients)
    for rnd in range(rounds):
        k = rnd % len(clients)
        for c in clients[k:] + clients[:k]:
            yield rnd, c


FLOOR = {"--version": ("--version",), "ps -q": ("ps", "-q")}


def scenario_floor(clients: Sequence[Client], runs: int) -> None:
    """What any command of each CLI costs: start-up alone, and start-up plus one API call."""
    for _, c in rotating(clients, runs):
        for what, argv in FLOOR.items():
            elapsed, err = c.timed(*argv)
            if err is None:
                c.floor.setdefault(what, []).append(elapsed)


# ---------------------------------------------------------------- the API phases

API = "/v1.41"  # dockerd 20.10's version; bulkhead serves every version up to its own
CREATE_BODY = json.dumps(
    {
        "Image": IMAGE,
        "Cmd": ["true"],
        "AttachStdout": True,
        "AttachStderr": True,
        "HostConfig": {"NetworkMode": "none", "AutoRemove": True},
    }
).encode()
PHASES = ("create", "attach", "start", "exited", "removed")


def _request(
    sock: Path, method: str, path: str, body: bytes = b"", upgrade: bool = False
) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(str(sock))
    head = f"{method} {API}{path} HTTP/1.1\r\nHost: bench\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    head += "Connection: Upgrade\r\nUpgrade: tcp\r\n" if upgrade else "Connection: close\r\n"
    s.sendall(head.encode() + b"\r\n" + body)
    return s


def _read_head(s: socket.socket) -> tuple[int, bytes]:
    """Read up to the end of the response head: (status, what came after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError(f"connection closed in the response head: {buf[:200]!r}")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), rest


def _read_to_eof(s: socket.socket, got: bytes = b"") -> bytes:
    chunks = [got]
    while chunk := s.recv(65536):
        chunks.append(chunk)
    s.close()
    return b"".join(chunks)


def api_run_once(sock: Path) -> dict[str, float]:
    """``run --rm busybox true`` as the docker CLI does it, on raw HTTP, each phase timed (ms).

    create; attach (hijacked, before start, so no output is missed); wait
    for ``condition=removed`` (sent before start, as the CLI does); start;
    then the attach stream's end (the container exited and its output is
    drained) and the wait's answer (the container is removed: ``AutoRemove``).
    The phases are the intervals between those points.
    """
    t = [time.perf_counter()]
    s = _request(sock, "POST", "/containers/create", CREATE_BODY)
    status, rest = _read_head(s)
    reply = _read_to_eof(s, rest)
    if status != 201:
        raise RuntimeError(f"create: {status} {reply[:200]!r}")
    cid = json.loads(reply[reply.index(b"{") : reply.rindex(b"}") + 1])["Id"]
    t.append(time.perf_counter())
    attach = _request(
        sock, "POST", f"/containers/{cid}/attach?stream=1&stdout=1&stderr=1", upgrade=True
    )
    status, rest = _read_head(attach)
    if status not in (101, 200):
        raise RuntimeError(f"attach: {status} {_read_to_eof(attach, rest)[:200]!r}")
    t.append(time.perf_counter())
    wait = _request(sock, "POST", f"/containers/{cid}/wait?condition=removed")
    s = _request(sock, "POST", f"/containers/{cid}/start")
    status, rest = _read_head(s)
    _read_to_eof(s, rest)
    if status != 204:
        raise RuntimeError(f"start: {status}")
    t.append(time.perf_counter())
    _read_to_eof(attach, rest)
    t.append(time.perf_counter())
    status, rest = _read_head(wait)
    reply = _read_to_eof(wait, rest)
    if status != 200 or b'"StatusCode":0' not in reply.replace(b" ", b""):
        raise RuntimeError(f"wait: {status} {reply[:200]!r}")
    t.append(time.perf_counter())
    out = {name: (t[i + 1] - t[i]) * 1e3 for i, name in enumerate(PHASES)}
    out["total"] = (t[-1] - t[0]) * 1e3
    return out


def scenario_api(clients: Sequence[Client], runs: int) -> list[Client]:
    """The API phases on each distinct daemon socket, alternating; returns the clients used."""
    by_socket: dict[Path, Client] = {}
    for c in clients:
        if c.api_socket is not None and c.api_socket not in by_socket:
            by_socket[c.api_socket] = c
    used = list(by_socket.values())
    for _, c in rotating(used, runs + 1):
        assert c.api_socket is not None
        try:
            c.phases.append(api_run_once(c.api_socket))
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            c.api_failures.append(str(exc))
    for c in used:
        c.phases = c.phases[1:]  # the first round is a warm-up
    return used


def scenario_run_rm(clients: Sequence[Client], runs: int, warmup: int) -> None:
    for rnd, c in rotating(clients, warmup + runs):
        elapsed, err = c.timed(*run_args(["true"]))
        if rnd < warmup:
            if err:
                c.failures.append(f"warm-up: {err}")
            continue
        if err:
            c.failures.append(err)
        else:
            c.samples.append(elapsed)


def detached_round(c: Client, n: int, rnd: int) -> dict[str, Any]:
    """Start ``n`` detached ``sleep 1000`` containers one after the other, check, remove them."""
    names = [f"bench-{rnd}-{i}" for i in range(n)]
    errors = []
    t0 = time.perf_counter()
    for name in names:
        _, err = c.timed("run", "-d", "--network=none", "--name", name, IMAGE, "sleep", "1000")
        if err:
            errors.append(f"{name}: {err}")
    started = time.perf_counter() - t0
    running = c.running_count()
    t1 = time.perf_counter()
    _, rm_err = c.timed(*c.rm_force, *names)
    removed = time.perf_counter() - t1
    left = c.container_ids()
    if rm_err:
        errors.append(f"rm -f: {rm_err}")
    if left:
        errors.append(f"{len(left)} container(s) left after rm -f")
        c.remove_all()
    return {
        "start_s": started,
        "running": running,
        "rm_s": removed,
        "errors": errors,
        "ok": not errors and running == n,
    }


def scenario_detached(clients: Sequence[Client], rounds: int, n: int) -> None:
    for rnd, c in rotating(clients, rounds):
        result = detached_round(c, n, rnd)
        c.detached.append(result)
        status = "ok" if result["ok"] else f"FAILED {result['errors'][:2]}"
        print(
            f"  {c.key:<16} round {rnd}: {n} started in {result['start_s']:.2f} s "
            f"({result['running']} running), rm -f {result['rm_s']:.2f} s  {status}",
            flush=True,
        )


# ---------------------------------------------------------------- report


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "-"


def report(clients: Sequence[Client], result: dict[str, Any], n_detached: int) -> list[str]:
    """Print the tables; return the verdict lines."""
    verdicts = []
    ref = next((c for c in clients if c.key == "bulkhead" and c.samples), None)
    ref = ref or next((c for c in clients if c.key == "docker-bulkhead" and c.samples), None)
    print()
    print("run --rm --network=none busybox true (wall time of the CLI command)")
    print(
        f"{'engine':<36} {'n':>3} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'/ bulkhead':>11}"
    )
    stats: dict[str, dict[str, float]] = {}
    for c in clients:
        if not c.samples:
            print(f"{c.label:<36} all runs failed: {c.failures[:1]}")
            continue
        st = summary(c.samples)
        stats[c.key] = st
        ratio = st["median_ms"] / summary(ref.samples)["median_ms"] if ref else None
        st["ratio_to_bulkhead"] = ratio if ratio is not None else float("nan")
        print(
            f"{c.label:<36} {st['n']:>3.0f} {st['median_ms']:>10.1f} {st['p90_ms']:>8.1f} "
            f"{st['min_ms']:>8.1f} {fmt_ratio(ratio):>11}"
        )
        if c.failures:
            print(f"  {len(c.failures)} failed runs, e.g. {c.failures[0]}")
    if ref is not None:
        print(f"(ratios: each median / the median of {ref.label})")
        for key, target in (("podman", 3.0), ("dockerd", 5.0)):
            if key in stats:
                r = stats[key]["ratio_to_bulkhead"]
                verdicts.append(
                    f"{key} / bulkhead = {r:.2f}x (target >= {target:g}x): "
                    + ("met" if r >= target else "NOT met")
                )
    det: dict[str, dict[str, float]] = {}
    result["summary"] = {"run_rm": stats, "detached": det}
    if any(c.detached for c in clients):
        verdicts += report_detached(clients, ref, det, n_detached)
    if any(c.floor for c in clients):
        result["summary"]["floor_ms"] = report_floor(clients)
    return verdicts


def report_detached(
    clients: Sequence[Client], ref: Client | None, det: dict[str, dict[str, float]], n_detached: int
) -> list[str]:
    verdicts = []
    print()
    print(f"{n_detached} detached `run -d busybox sleep 1000` one after the other, then one rm -f")
    print(
        f"{'engine':<36} {'rounds':>6} {'start med s':>11} {'p90 s':>7} {'min s':>7} "
        f"{'per ctr ms':>10} {'rm -f med s':>11} {'/ bulkhead':>11}"
    )
    for c in clients:
        ok = [r for r in c.detached if r["ok"]]
        if not ok:
            if c.detached:
                print(f"{c.label:<36} all rounds failed: {c.detached[0]['errors'][:1]}")
            continue
        st = summary([r["start_s"] for r in ok], scale=1.0)
        rm = summary([r["rm_s"] for r in ok], scale=1.0)
        det[c.key] = {"start": st["median_ms"], "rm": rm["median_ms"]}
        refd = det.get(ref.key) if ref else None
        ratio = st["median_ms"] / refd["start"] if refd else None
        print(
            f"{c.label:<36} {len(ok):>6} {st['median_ms']:>11.2f} {st['p90_ms']:>7.2f} "
            f"{st['min_ms']:>7.2f} {st['median_ms'] / n_detached * 1e3:>10.1f} "
            f"{rm['median_ms']:>11.2f} {fmt_ratio(ratio):>11}"
        )
        failed = len(c.detached) - len(ok)
        if failed:
            print(f"  {failed} failed rounds, e.g. {next(r for r in c.detached if not r['ok'])}")
    if ref is not None and ref.key in det and n_detached == DETACHED:
        s = det[ref.key]["start"]
        verdicts.append(
            f"{ref.label}: {n_detached} detached in {s:.3f} s (target <= 1.5 s): "
            + ("met" if s <= 1.5 else "NOT met")
        )
    return verdicts


def report_floor(clients: Sequence[Client]) -> dict[str, dict[str, float]]:
    print()
    print("the floor: the CLI's start-up (--version) and one API call (ps -q, no containers)")
    print(f"{'engine':<36} {'--version med ms':>16} {'ps -q med ms':>13}")
    floor: dict[str, dict[str, float]] = {}
    for c in clients:
        floor[c.key] = {w: summary(xs)["median_ms"] for w, xs in c.floor.items() if xs}
        cells = [f"{floor[c.key][w]:.1f}" if w in floor[c.key] else "failed" for w in FLOOR]
        print(f"{c.label:<36} {cells[0]:>16} {cells[1]:>13}")
    return floor


def fmt_load(load: Sequence[float]) -> str:
    return "/".join(f"{x:.2f}" for x in load)


def report_api(clients: Sequence[Client], result: dict[str, Any]) -> None:
    """The API phases of ``run --rm true`` per daemon, medians in ms (no CLI involved)."""
    rows = [c for c in clients if c.phases]
    if not rows:
        return
    print()
    print(
        "the same run --rm through the Engine API on raw HTTP (no CLI), median ms per phase: "
        "create | attach | start (204) | exited (attach EOF) | removed (wait) | total"
    )
    cols = (*PHASES, "total")
    print(f"{'daemon':<36} {'n':>3} " + " ".join(f"{c:>8}" for c in cols))
    out: dict[str, dict[str, float]] = {}
    for c in rows:
        med = {k: summary([p[k] / 1e3 for p in c.phases])["median_ms"] for k in cols}
        out[c.label.split("-> ")[-1]] = med
        name = c.label.split("-> ")[-1]
        print(f"{name:<36} {len(c.phases):>3} " + " ".join(f"{med[k]:>8.1f}" for k in cols))
    for c in clients:
        if c.api_failures:
            print(f"  {c.label}: {len(c.api_failures)} failed, e.g. {c.api_failures[0]}")
    result.setdefault("summary", {})["api_phases_ms"] = out
    result["api_phases_samples_ms"] = {c.label: c.phases for c in rows}
    result["api_failures"] = {c.label: c.api_failures for c in clients if c.api_failures}


# ---------------------------------------------------------------- main


def make_image(work: Path) -> tuple[Path, Path]:
    """The offline busybox image in an image store, and the same image as a docker-archive."""
    store = work / "images"
    subprocess.run(
        [str(PYTHON), "-m", "bulkhead.images.busybox", "--store", str(store)],
        check=True,
        capture_output=True,
    )
    from bulkhead.images.archive import save
    from bulkhead.images.store import ImageStore

    archive = work / "busybox.tar"
    save(ImageStore(store), [f"{IMAGE}:latest"], archive)
    return store, archive


def git_state() -> dict[str, Any]:
    """The commit measured, and the files of src/ that differ from it (work in progress)."""
    repo = str(HERE.parent)
    head = version_line(["git", "-C", repo, "rev-parse", "--short", "HEAD"])
    proc = subprocess.run(
        ["git", "-C", repo, "status", "--porcelain", "--", "src"],
        capture_output=True,
        text=True,
        check=False,
    )
    dirty = [line[3:] for line in proc.stdout.splitlines()]
    if dirty:
        print(f"NOTE: src/ differs from {head} (measured as it is): {', '.join(dirty[:6])}")
    return {"head": head, "dirty_src": dirty}


def wait_for_quiet(limit: float, max_wait: float) -> None:
    """Sleep until the 1-minute load average is below ``limit`` (other sessions' tests)."""
    deadline = time.monotonic() + max_wait
    told = False
    while os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        if not told:
            print(
                f"waiting for the load average ({fmt_load(os.getloadavg())}) to drop below {limit:g}"
            )
            told = True
        time.sleep(5)
    if os.getloadavg()[0] >= limit:
        print(f"NOTE: the load average is still {fmt_load(os.getloadavg())}: measuring anyway")


def private_client_env(work: Path) -> dict[str, str]:
    """The clients' environment: their own configuration (docker CLI, podman's auth lookup)
    empty and private under ``work``, and no variable pointing them at another daemon."""
    (work / "docker-config").mkdir()
    (work / "docker-config" / "config.json").write_text("{}\n")
    env = dict(os.environ, DOCKER_CONFIG=str(work / "docker-config"))
    for var in ("DOCKER_HOST", "BULKHEAD_HOST", "BULKHEAD_AUTOSTART", "CONTAINERS_CONF"):
        env.pop(var, None)
    return env


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=25, help="measured runs per engine (>= 20)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first")
    ap.add_argument("--detached", type=int, default=DETACHED, help="containers per round")
    ap.add_argument("--detached-rounds", type=int, default=3, help="rounds per engine (0: skip)")
    ap.add_argument("--floor-runs", type=int, default=10, help="--version / ps -q runs (0: skip)")
    ap.add_argument("--api-runs", type=int, default=10, help="API phase runs (0: skip)")
    ap.add_argument(
        "--wait-load",
        type=float,
        default=0.0,
        help="first wait (up to --wait-max s) until the 1-minute load average is below this",
    )
    ap.add_argument("--wait-max", type=float, default=600.0)
    ap.add_argument("--engines", default=",".join(ENGINES), help="subset of " + ",".join(ENGINES))
    ap.add_argument("--out", default=str(HERE / "results"), help="where the JSON goes")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("engine_run.py needs root", file=sys.stderr)
        return 2
    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in wanted if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engines {unknown}; known: {', '.join(ENGINES)}")
    for binary in (DOCKER_CLI, *( [DOCKERD] if "dockerd" in wanted else []),
                   *([PODMAN] if "podman" in wanted else [])):  # fmt: skip
        if not binary.exists():
            print(f"{binary} is missing: `make test-deps` installs it", file=sys.stderr)
            return 2
    first_docker = shutil.which("docker")
    if first_docker != str(DOCKER_CLI):
        print(f"NOTE: `docker` on PATH is {first_docker}, not {DOCKER_CLI}; using {DOCKER_CLI}")

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the clean-up below

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    if args.wait_load > 0:
        wait_for_quiet(args.wait_load, args.wait_max)
    forbid_root_netns()
    sessions_lock = open(TEST_SESSIONS_LOCK, "a")  # noqa: SIM115 - held until we exit
    fcntl.flock(sessions_lock, fcntl.LOCK_SH)
    remove_stale_cgroup_parents()
    before = host_state()
    bytecode = fresh_bytecode()
    work = Path(tempfile.mkdtemp(prefix="bhe-", dir="/tmp"))
    env = private_client_env(work)
    result: dict[str, Any] = {
        "benchmark": "engine_run",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "runs_per_engine": args.runs,
        "warmup_rounds": args.warmup,
        "detached": args.detached,
        "detached_rounds": args.detached_rounds,
        "bytecode": bytecode,
        "docker_on_path": first_docker,
        "loadavg_before": os.getloadavg(),
        "git": git_state(),
    }
    engines: list[Engine] = []
    problems: list[str] = []
    clients: list[Client] = []
    try:
        store, archive = make_image(work)
        makers: dict[str, Callable[[], Engine]] = {
            "bulkhead": lambda: Bulkhead(work, archive, env, store),
            "podman": lambda: Podman(work, archive, env),
            "dockerd": lambda: Dockerd(work, archive, env),
        }
        for name, make in makers.items():
            if name == "bulkhead" and not {"bulkhead", "docker-bulkhead"} & set(wanted):
                continue
            if name != "bulkhead" and name not in wanted:
                continue
            engine = make()
            engines.append(engine)
            try:
                got = engine.start()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"skipping {name}: {exc}", flush=True)
                result.setdefault("unusable", {})[name] = str(exc)
                continue
            clients += [c for c in got if c.key in wanted]
        result["versions"] = {k: v for e in engines for k, v in e.versions.items()}
        usable = []
        for c in clients:
            _, err = c.timed(*run_args(["true"]))
            if err:
                print(f"skipping {c.label}: {err}", flush=True)
                result.setdefault("unusable", {})[c.key] = err
            else:
                usable.append(c)
        if not usable:
            print("no engine could run busybox", file=sys.stderr)
            return 1
        print(
            f"{len(usable)} engines x {args.runs} runs (+{args.warmup} warm-up rounds), "
            f"alternating: {', '.join(c.key for c in usable)}",
            flush=True,
        )
        scenario_run_rm(usable, args.runs, args.warmup)
        if args.floor_runs > 0:
            scenario_floor(usable, args.floor_runs)
        api_clients = scenario_api(usable, args.api_runs) if args.api_runs > 0 else []
        if args.detached_rounds > 0 and args.detached > 0:
            print(
                f"\n{args.detached} detached containers x {args.detached_rounds} rounds per engine"
            )
            scenario_detached(usable, args.detached_rounds, args.detached)
        verdicts = report(usable, result, args.detached)
        report_api(api_clients, result)
        result["loadavg_after"] = os.getloadavg()
        print(
            f"\nload average before {fmt_load(result['loadavg_before'])}, "
            f"after {fmt_load(result['loadavg_after'])} (2 vCPU: other work on the machine "
            "slows every engine; the alternating order shares it out)"
        )
        result["verdicts"] = verdicts
        result["clients"] = {
            c.key: {
                "label": c.label,
                "argv": c.base,
                "samples_ms": [x * 1e3 for x in c.samples],
                "failures": c.failures,
                "detached": c.detached,
                "floor_ms": {w: [x * 1e3 for x in xs] for w, xs in c.floor.items()},
            }
            for c in usable
        }
        print()
        for line in verdicts:
            print(line)
    finally:
        for engine in reversed(engines):
            try:
                problems += engine.stop()
            except Exception as exc:  # clean-up goes on for the others
                problems.append(f"{engine.name}: stop failed: {exc!r}")
        problems += [f"unmounted {p}" for p in unmount_under(work)]
        shutil.rmtree(work, ignore_errors=True)
        removed = remove_host_leftovers(before)
        # Exited shims and monitors may wait a moment for their parent (PID 1) to reap them.
        deadline = time.monotonic() + 10
        while True:
            after = host_state()
            diffs = compare_state(before, after)
            if not diffs or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        result["cleanup"] = {"forced": problems, "removed_host_paths": removed, "host_diff": diffs}
        print()
        if removed:
            print(f"removed what the engines made on the host: {removed}")
        for p in problems:
            print(f"clean-up: {p}")
        if diffs:
            print(
                "WARNING: the host differs from before the benchmark (other sessions' work "
                "shows up here too: see the command lines):",
                file=sys.stderr,
            )
            for d in diffs:
                print(f"  {d}", file=sys.stderr)
        else:
            print(
                "host state as before: nft ruleset, iptables-legacy, netns, links, ip_forward, "
                "top-level cgroups, peer processes, /run/docker, /run/containerd, /etc/docker/key.json"
            )
    out = save_result(args.out, "engine_run", result)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
