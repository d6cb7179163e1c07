"""100 containers started and removed in parallel leave nothing behind.

Clients in a thread pool (docker-py, each thread its own connection) drive
the daemon through the Engine API with a mix of lifecycles:

- ``run --rm``: ``AutoRemove``, the container removes itself when it exits;
- ``run`` then ``rm -v``: an anonymous volume, waited for, removed with it;
- ``run -d`` then ``exec -d`` then ``rm -f``: killed while it runs, with an exec;
- ``run -d`` then ``rm -f`` at once, while it has barely started;
- ``create`` then ``rm``: never started;

each on the built-in runtime and runc in turn (when installed).

Then every kind of leak is looked for, each against what the daemon had
before the burst (one container run and removed first: the image is
unpacked, the zygote and its spare monitor are up):

- *containers*: the engine's list (``GET /containers/json?all=1``) and the
  rows of ``containers.db``, image uses in ``images.db``, volumes;
- *mounts*: no mount under the data root or the exec root (rootfs overlays,
  volume mounts);
- *cgroups*: no cgroup under the daemon's cgroup parent, in any hierarchy;
- *processes*: no process in a container cgroup or root (inits, exec'd
  processes), no ``bh-monitor``, the zygote counts no monitor, and nothing but the
  daemon, the zygote and its spare monitor names the roots;
- *files*: ``containers/`` empty (bundles, logs), the exec root's monitor
  and exec state gone, the OCI runtime's state directory empty, the
  snapshots back to the image's unpacked layers.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.engine_fixtures import Daemon

from bulkhead.linux import mountinfo

COUNT = 100
WORKERS = 8
#: what an idle exec root holds: the API and zygote sockets, the zygote's files, empty dirs
EXEC_ROOT_ENTRIES = {"bulkhead.sock", "zygote.sock", "zygote.pid", "zygote.lock", "zygote.log"}
EXEC_ROOT_DIRS = {"runtime", "execs"}


def _run_rm(api: Any, i: int, runtime: str | None) -> None:
    host = api.create_host_config(auto_remove=True, runtime=runtime)
    c = api.create_container("busybox", ["true"], host_config=host)
    api.start(c)
    with contextlib.suppress(Exception):  # gone already: the wait answers 404
        api.wait(c, timeout=120, condition="removed")


def _run_then_rm_v(api: Any, i: int, runtime: str | None) -> None:
    c = api.create_container(
        "busybox",
        ["sh", "-c", "echo hi > /data/f"],
        volumes=["/data"],
        name=f"leak-{i}",
        host_config=api.create_host_config(runtime=runtime),
    )
    api.start(c)
    assert api.wait(c, timeout=120)["StatusCode"] == 0
    api.remove_container(c, v=True)


def _detached_exec_rm_f(api: Any, i: int, runtime: str | None) -> None:
    c = api.create_container(
        "busybox",
        ["sleep", "300"],
        labels={"leak": str(i)},
        host_config=api.create_host_config(runtime=runtime),
    )
    api.start(c)
    e = api.exec_create(c, ["sleep", "300"])
    api.exec_start(e, detach=True)
    api.remove_container(c, force=True)


def _rm_f_at_once(api: Any, i: int, runtime: str | None) -> None:
    host = api.create_host_config(runtime=runtime)
    c = api.create_container("busybox", ["sleep", "300"], host_config=host)
    api.start(c)
    api.remove_container(c, force=True)


def _created_only(api: Any, i: int, runtime: str | None) -> None:
    host = api.create_host_config(runtime=runtime)
    c = api.create_container("busybox", ["true"], host_config=host)
    api.remove_container(c)


LIFECYCLES: list[Callable[[Any, int, str | None], None]] = [
    _run_rm,
    _run_then_rm_v,
    _detached_exec_rm_f,
    _rm_f_at_once,
    _created_only,
]
#: the OCI runtimes the containers take turns on (None: the daemon's default, built in),
#: runc where installed (its own state directory to leave empty). Not crun: crun 1.8
#: refuses the engine's ociVersion 1.2.0 ("unknown version specified").
RUNTIMES: list[str | None] = [None] + [r for r in ("runc",) if shutil.which(r)]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _cgroups_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return ""


def _root_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _cgroup_parent_dirs(parent: str) -> list[Path]:
    """The cgroup parent's directory in every mounted hierarchy (v1 and v2)."""
    rel = parent.strip("/")
    out = []
    for m in mountinfo.read():
        if m.fstype in ("cgroup", "cgroup2"):
            d = Path(m.mountpoint) / rel
            if d.is_dir():
                out.append(d)
    return out


def _zygote_monitors(exec_root: Path) -> int:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(str(exec_root / "zygote.sock"))
        s.sendall(b'{"op": "ping"}\n')
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return int(json.loads(data)["monitors"])


def _snapshot_dirs(root: Path) -> set[str]:
    return {p.name for d in (root / "snapshots").iterdir() for p in (d / "snapshots").iterdir()}


def leaks(daemon: Daemon, baseline_snapshots: set[str]) -> list[str]:
    """Every leak found now (an empty list: none)."""
    root, exec_root = daemon.root.resolve(), daemon.exec_root.resolve()
    found: list[str] = []
    # containers: the engine's list, the state rows, image uses, volumes
    api = daemon.client().api
    left = api.containers(all=True)
    if left:
        found.append(f"engine lists {[c['Id'][:12] for c in left]}")
    with contextlib.closing(
        sqlite3.connect(f"file:{root / 'containers.db'}?mode=ro", uri=True)
    ) as db:
        rows = db.execute("SELECT count(*) FROM containers").fetchone()[0]
    if rows:
        found.append(f"containers.db has {rows} rows")
    with contextlib.closing(
        sqlite3.connect(f"file:{root / 'images' / 'images.db'}?mode=ro", uri=True)
    ) as db:
        uses = db.execute("SELECT image, user FROM uses").fetchall()
    if uses:
        found.append(f"images.db still records uses {uses}")
    volumes = api.volumes().get("Volumes") or []
    if volumes:
        found.append(f"volumes left: {[v['Name'] for v in volumes]}")
    # mounts
    prefixes = (str(root) + "/", str(exec_root) + "/")
    mounts = [m.mountpoint for m in mountinfo.read() if m.mountpoint.startswith(prefixes)]
    if mounts:
        found.append(f"mounts left: {mounts}")
    # cgroups
    for d in _cgroup_parent_dirs(daemon.cgroup_parent):
        subs = [p for p in d.iterdir() if p.is_dir()]
        if subs:
            found.append(f"cgroups left under {d}: {[p.name for p in subs]}")
    # processes
    daemon_pid = daemon.proc.pid if daemon.proc is not None else -1
    zygote_pid = int((exec_root / "zygote.pid").read_text().split()[0])
    zygote_cmd = _cmdline(zygote_pid)
    helpers = []
    for pid in _pids():
        if pid in (daemon_pid, zygote_pid, os.getpid()):
            continue
        cmd = _cmdline(pid)
        if daemon.cgroup_parent + "/" in _cgroups_of(pid):
            found.append(f"process {pid} ({cmd!r}) is in a container cgroup")
        elif _root_of(pid).startswith(prefixes):
            found.append(f"process {pid} ({cmd!r}) runs in a container's root {_root_of(pid)}")
        elif "bh-monitor" in cmd and str(exec_root) in cmd:
            found.append(f"monitor process {pid} ({cmd!r}) left")
        elif cmd == zygote_cmd:
            helpers.append(pid)  # the spare monitor and its helper, forked ahead of need
        elif str(exec_root) in cmd or str(root) in cmd:
            found.append(f"process {pid} ({cmd!r}) names the daemon's roots")
    if len(helpers) > 2:
        found.append(f"zygote forks beyond its spare monitor: {helpers}")
    monitors = _zygote_monitors(exec_root)
    if monitors:
        found.append(f"the zygote still counts {monitors} monitors")
    # files
    bundles = sorted(p.name for p in (root / "containers").iterdir())
    if bundles:
        found.append(f"container directories left: {bundles[:5]} ({len(bundles)})")
    extra = sorted(
        p.name
        for p in exec_root.iterdir()
        if p.name not in EXEC_ROOT_ENTRIES and not (p.name in EXEC_ROOT_DIRS and p.is_dir())
    )
    if extra:
        found.append(f"exec root entries left: {extra[:5]} ({len(extra)})")
    for name in EXEC_ROOT_DIRS:
        d = exec_root / name
        inner = (
            sorted(str(p.relative_to(d)) for p in d.rglob("*") if not p.is_dir())
            if d.is_dir()
            else []
        )
        state_dirs = [p for p in d.glob("*/*")] if d.is_dir() else []
        if inner or state_dirs:
            found.append(f"{name}/ state left: {(inner + [str(s) for s in state_dirs])[:5]}")
    snaps = _snapshot_dirs(root)
    if snaps != baseline_snapshots:
        found.append(f"snapshots left: {sorted(snaps - baseline_snapshots)}")
    return found


def test_100_containers_in_parallel_leave_nothing(daemon: Daemon) -> None:
    burst_and_check(daemon, COUNT, WORKERS)


def burst_and_check(daemon: Daemon, count: int, workers: int, timeout: float = 120) -> None:
    """``count`` containers through ``workers`` clients, then :func:`leaks` finds nothing.

    ``timeout`` bounds each API call and (a quarter of it) the waits for the
    last events and the last files (the emulated VM lane is slow).
    """
    # warm up: the image unpacked, the zygote up; what stays from here on is the baseline
    r = daemon.docker("run", "--rm", "busybox", "true", timeout=timeout)
    assert r.returncode == 0, r
    deadline = time.monotonic() + timeout / 4
    while len(_snapshot_dirs(daemon.root)) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    baseline_snapshots = _snapshot_dirs(daemon.root)
    assert len(baseline_snapshots) == 1  # busybox's one unpacked layer

    import docker  # type: ignore[import-untyped]

    clients: list[Any] = []

    def work(i: int) -> None:
        api = docker.APIClient(base_url=daemon.host, timeout=timeout, version="1.45")
        clients.append(api)
        runtime = RUNTIMES[(i // len(LIFECYCLES)) % len(RUNTIMES)]
        LIFECYCLES[i % len(LIFECYCLES)](api, i, runtime)
        api.close()

    # the events, live (the daemon's history keeps fewer than 100 containers make)
    stream = daemon.client().api.events(decode=True, filters={"type": ["container"]})
    actions: dict[str, int] = {}

    def count_events() -> None:
        with contextlib.suppress(Exception):  # the stream closed under it
            for event in stream:
                action = event["Action"].split(":")[0]
                actions[action] = actions.get(action, 0) + 1

    counter = threading.Thread(target=count_events, daemon=True)
    counter.start()

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda i: _capture(work, i), range(count)))
    burst = time.monotonic() - started
    errors = [f"#{i} ({LIFECYCLES[i % len(LIFECYCLES)].__name__}): {e}" for i, e in results if e]
    assert not errors, errors[:5]
    for runtime in RUNTIMES[1:]:  # it did run some: its state directory is there (to be empty)
        assert (daemon.exec_root / "runtime" / str(runtime)).is_dir(), runtime
    # the mix really ran: every container created and destroyed, all but the
    # created-only ones started, one exec in each of the exec'd ones
    deadline = time.monotonic() + timeout / 4
    while actions.get("destroy", 0) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    stream.close()
    counter.join(10)
    per_kind = count // len(LIFECYCLES)
    assert actions.get("create") == count and actions.get("destroy") == count, actions
    assert actions.get("start") == count - per_kind, actions
    assert actions.get("exec_start") == per_kind, actions

    # removal's last files go after its answer: poll until clean, then report what stays
    deadline = time.monotonic() + timeout / 2
    found = leaks(daemon, baseline_snapshots)
    while found and time.monotonic() < deadline:
        time.sleep(0.2)
        found = leaks(daemon, baseline_snapshots)
    settle = time.monotonic() - started - burst
    print(f"{count} containers: burst {burst:.1f} s, clean {settle:.1f} s later")
    assert not found, "leaked: " + "; ".join(found)


def _capture(work: Callable[[int], None], i: int) -> tuple[int, str | None]:
    try:
        work(i)
    except Exception as exc:  # reported with the lifecycle that failed
        return i, f"{type(exc).__name__}: {exc}"
    return i, None


def test_the_leak_check_sees_each_kind_of_leak(daemon: Daemon) -> None:
    """What :func:`leaks` reports for a container left running with an exec and a volume."""
    r = daemon.docker("run", "--rm", "busybox", "true")
    assert r.returncode == 0, r
    deadline = time.monotonic() + 30
    while len(_snapshot_dirs(daemon.root)) != 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    baseline = _snapshot_dirs(daemon.root)
    r = daemon.docker("run", "-d", "--name", "kept", "-v", "/data", "busybox", "sleep", "300")
    assert r.returncode == 0, r
    assert daemon.docker("exec", "-d", "kept", "sleep", "300").returncode == 0
    found = "\n".join(leaks(daemon, baseline))
    for kind in (
        "engine lists",
        "containers.db has 1 rows",
        "images.db still records uses",
        "volumes left",
        "mounts left",
        "cgroups left under",
        "is in a container cgroup",
        "monitor process",
        "the zygote still counts",
        "zygote forks beyond its spare monitor",
        "container directories left",
        "exec root entries left",
        "runtime/ state left",
        "snapshots left",
    ):
        assert kind in found, (kind, found)
    assert daemon.docker("rm", "-f", "-v", "kept").returncode == 0
    deadline = time.monotonic() + 60
    while (found_list := leaks(daemon, baseline)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not found_list
