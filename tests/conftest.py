"""Fixtures shared by every test suite.

``busybox_rootfs``  one offline busybox root filesystem per test session (read it, do not write it)
``make_bundle``     a factory of OCI bundles in the test's own temporary directory
``runtime_root``    a fresh ``--root`` directory for bulkhead-runtime state

Every session, as root, also checks that it leaves no cgroup behind under
``/bulkhead`` (the subtree all our cgroups live in): a cgroup a test created
and did not remove fails the session, and the ``/bulkhead`` parents the
session itself created are removed at the end. So does a monitor zygote
still running after its test's exec root was removed. The checks are skipped
when another test session runs at the same time (their containers are not ours).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkhead.devtools import busybox

VENV_BIN = Path(__file__).resolve().parent.parent / ".venv" / "bin"

# Safety: no daemon or engine of the tests may create a network interface in the
# host's network namespace, the one this test process runs in (bulkhead.network.manager
# refuses to while its own namespace has this inode; /proc/1/ns is not readable here).
os.environ["BULKHEAD_FORBID_NETNS"] = str(os.stat("/proc/self/ns/net").st_ino)


def is_root() -> bool:
    return os.geteuid() == 0


needs_root = pytest.mark.skipif(not is_root(), reason="needs root")


def _our_cgroup_roots() -> list[Path]:
    """``/bulkhead`` in every cgroup hierarchy of this host (existing or not)."""
    from bulkhead.cgroups import new_manager

    return sorted({Path(d) for d in new_manager("/bulkhead").paths().values()})


@pytest.fixture(scope="session", autouse=True)
def no_leaked_cgroups() -> Iterator[None]:
    """Fail the session if it leaves a cgroup under /bulkhead; remove the parents it made."""
    if not is_root():
        yield
        return
    import fcntl

    # Every session holds this lock shared; the check runs only when no other
    # session is running (the exclusive lock is free): another session's
    # containers are not this one's leaks, and removing a cgroup another
    # session's runtime has just made would break that session's start.
    lock = open(SESSIONS_LOCK, "a")  # noqa: SIM115 - held for the whole session
    fcntl.flock(lock, fcntl.LOCK_SH)
    roots = _our_cgroup_roots()
    before = {r: {c.name for c in r.iterdir() if c.is_dir()} for r in roots if r.is_dir()}
    zygotes_before = _default_zygotes()
    try:
        yield
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("\nno_leaked_cgroups: another test session is running: cgroup check skipped")
            return
        _check_default_zygotes(zygotes_before)
        _check_orphan_zygotes()
        _check_cgroups(roots, before)
    finally:
        lock.close()


SESSIONS_LOCK = "/run/bulkhead-test-sessions.lock"


def _host_network() -> dict[str, Any]:
    """What the tests must leave as it was in the host's network namespace (read-only looks)."""
    import json
    import subprocess

    def run(*argv: str) -> str:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    links = sorted(link["ifname"] for link in json.loads(run("ip", "-j", "link") or "[]"))
    tables = json.loads(run("nft", "-j", "list", "tables") or '{"nftables": []}')["nftables"]
    sysctls = {}
    for name in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"):
        with contextlib.suppress(OSError):
            sysctls[name] = Path("/proc/sys", name).read_text().strip()
    return {
        "links": links,
        "nft tables": sorted(
            f"{t['table']['family']} {t['table']['name']}" for t in tables if "table" in t
        ),
        "sysctls": sysctls,
    }


@pytest.fixture(scope="session", autouse=True)
def host_network_untouched() -> Iterator[None]:
    """Fail the session if the host's network namespace gained a link, an nft table or a sysctl change.

    Network tests run their daemons in namespaces of their own (see
    tests/integration/engine_fixtures.py); nothing may reach the host's.
    """
    if not is_root():
        yield
        return
    before = _host_network()
    yield
    after = _host_network()
    assert after == before, f"the test session changed the host's network: {before} -> {after}"


def _zygotes() -> dict[int, str]:
    """Every monitor zygote (and monitor forked from one) running: pid -> its ``--socket``."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"bulkhead.engine.zygote" in argv and b"--socket" in argv[:-1]:
            found[int(entry)] = os.fsdecode(argv[argv.index(b"--socket") + 1])
    return found


def _default_zygotes() -> set[int]:
    """PIDs of monitor zygotes (and their monitors) serving the default exec root /run/bulkhead."""
    return {pid for pid, sock in _zygotes().items() if sock.startswith("/run/bulkhead/")}


def _kill(pids: Iterable[int]) -> None:
    import signal

    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _check_default_zygotes(before: set[int]) -> None:
    """Tests use exec roots of their own: a zygote new in /run/bulkhead is a test's leak."""
    new = _default_zygotes() - before
    _kill(new)
    assert not new, f"a test started a zygote in the default exec root /run/bulkhead: {new}"


def _orphan_zygotes() -> dict[int, str]:
    """Zygotes (and the monitors they forked) of a test exec root ``/run/bh-*`` now removed."""
    return {
        pid: sock
        for pid, sock in _zygotes().items()
        if sock.startswith("/run/bh-") and not os.path.exists(os.path.dirname(sock))
    }


def _check_orphan_zygotes() -> None:
    """A zygote outliving its test's exec root is a leak the test's clean-up missed.

    The zygote exits by itself within seconds once its socket is gone
    (``bulkhead.engine.zygote.REACHABLE_CHECK``): only one still there after
    that wait fails the session.
    """
    import time

    deadline = time.monotonic() + 15
    while (orphans := _orphan_zygotes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    _kill(orphans)
    assert not orphans, f"zygotes outlived their removed exec roots: {orphans}"


def _check_cgroups(roots: list[Path], before: dict[Path, set[str]]) -> None:
    leaked: list[str] = []
    for root in roots:
        if not root.is_dir():
            continue
        for child in sorted(c for c in root.iterdir() if c.is_dir()):
            if child.name in before.get(root, set()):
                continue
            leaked.append(str(child))
            for d in sorted(child.glob("**/"), key=lambda p: -len(p.parts)):
                try:
                    d.rmdir()
                except OSError:
                    pass
        if root not in before:
            try:
                root.rmdir()
            except OSError:
                pass
    assert not leaked, f"cgroups left behind by this test session: {leaked}"


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A busybox root filesystem shared by the session's tests (treat as read-only)."""
    return busybox.build_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


BundleFactory = Callable[..., Path]


@pytest.fixture
def make_bundle(tmp_path: Path, busybox_rootfs: Path) -> BundleFactory:
    """Return ``make(args, *, terminal=False, config=None, own_rootfs=False) -> bundle``.

    By default the bundle's ``root.path`` points at a fresh copy of the
    session's busybox rootfs, so each test may write to it.
    """
    counter = iter(range(1000))

    def make(
        args: list[str] | None = None,
        *,
        terminal: bool = False,
        config: dict[str, Any] | None = None,
    ) -> Path:
        n = next(counter)
        bundle = tmp_path / f"bundle{n}"
        rootfs = bundle / "rootfs"
        bundle.mkdir()
        shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
        busybox.make_bundle(bundle, args, terminal=terminal, rootfs=rootfs, config=config)
        # A relative root.path, as runc spec writes it.
        import json

        spec = json.loads((bundle / "config.json").read_text())
        spec["root"]["path"] = "rootfs"
        (bundle / "config.json").write_text(json.dumps(spec, indent=2))
        return bundle

    return make


@pytest.fixture
def runtime_root(tmp_path: Path) -> Iterator[Path]:
    """A fresh state directory for ``bulkhead-runtime --root``."""
    root = tmp_path / "runtime-root"
    root.mkdir()
    yield root
