"""Real clients driving an OCI runtime: Podman (through conmon) and containerd (through its shim).

Every test runs once per runtime binary in :data:`RUNTIMES` (``runc`` now,
``bulkhead-runtime`` as soon as its console script exists). Both engines are
fully isolated from anything else on the machine:

* **Podman**: its own ``containers.conf``, ``storage.conf`` and
  ``registries.conf`` (``CONTAINERS_CONF`` ...), storage root, run root,
  libpod tmp dir, file locks, events file, hooks dir and network config dir,
  all under one temporary directory; ``--network none``, ``--pull never``,
  images named in full (no short-name alias cache); cgroups only below
  ``/bulkhead/podman-test-<session>`` (``cgroup_manager = "cgroupfs"``).
  ``podman load`` runs in a private mount namespace in which ``/var/lib`` is
  an empty tmpfs and ``/var/tmp`` is ours: containers/image 5.23 otherwise
  creates ``/var/lib/containers/cache`` and unpacks archives in ``/var/tmp``.
* **containerd**: started here with its own ``config.toml`` (root, state, gRPC
  and ttrpc sockets, ``opt`` dir under a temporary directory, no CRI plugin,
  overlayfs snapshotter), ``TMPDIR`` of its own, a namespace of its own and
  ``ctr run --runc-root`` under the temporary directory; cgroups below
  ``/bulkhead/ctr-test-<session>/<id>``. It is stopped at the end. The one
  path that cannot be moved in containerd 1.6 is the shim socket directory
  ``/run/containerd/s`` (hashed names): our sockets are removed at teardown,
  and the directories too if this session created them and they are empty.

The runtime is handed to Podman as a tiny shell wrapper named like the
runtime (Podman keys behaviour such as ``--log-format=json`` on the runtime's
base name), which records every argv in ``argv-<name>.log`` and adds
``--root <ours>`` (Podman as root never passes ``--root``, so the runtime
would keep its state in ``/run/runc``). containerd's shim passes its own
``--root`` after the wrapper's, and the last one wins.

Set ``BULKHEAD_CONFORMANCE_RUNTIMES=runc`` (comma-separated) to choose the
runtimes, and ``BULKHEAD_CONFORMANCE_KEEP=1`` to print where the argv logs are.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.images import ImageArchive, build_busybox_archive
from tests.conftest import VENV_BIN

if os.geteuid() != 0:
    pytest.skip("conformance tests need root", allow_module_level=True)

RUNTIME_BINARIES: dict[str, Path] = {
    "runc": Path("/usr/sbin/runc"),
    "bulkhead-runtime": VENV_BIN / "bulkhead-runtime",
}
RUNTIMES = ["runc", "bulkhead-runtime"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
SESSION = uuid.uuid4().hex[:8]


# ------------------------------------------------------------------ runtimes


@dataclass(frozen=True)
class Runtime:
    """One runtime under test: its real binary and the logging wrapper the engines call."""

    name: str
    binary: Path
    wrapper: Path  # <dir>/<name>/<name>: same base name as the real binary
    argv_log: Path

    def argv_lines(self) -> list[str]:
        try:
            return self.argv_log.read_text().splitlines()
        except FileNotFoundError:
            return []

    def argv_tail(self, n: int = 12) -> str:
        return "\n".join(self.argv_lines()[-n:])


def write_wrapper(path: Path, binary: Path, argv_log: Path, root: Path | None) -> Path:
    """A /bin/sh wrapper that logs its argv (one ``[arg]`` per word) and execs ``binary``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    root_args = f' --root "{root}"' if root is not None else ""
    path.write_text(
        "#!/bin/sh\n"
        "# Written by tests/conformance/conftest.py: log argv, then exec the runtime.\n"
        f"{{ printf '%s' \"$(cat /proc/$PPID/comm 2>/dev/null):\"; "
        f'for a in "$@"; do printf \' [%s]\' "$a"; done; echo; }} >> "{argv_log}"\n'
        f'exec "{binary}"{root_args} "$@"\n'
    )
    path.chmod(0o755)
    return path


def selected_runtimes() -> list[str]:
    chosen = os.environ.get("BULKHEAD_CONFORMANCE_RUNTIMES")
    if not chosen:
        return RUNTIMES
    return [r.strip() for r in chosen.split(",") if r.strip()]


@pytest.fixture(scope="session")
def conformance_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("conformance")


@pytest.fixture(scope="session")
def busybox_image(conformance_dir: Path) -> ImageArchive:
    """The offline busybox image archive, built once per session."""
    return build_busybox_archive(conformance_dir / "image")


@pytest.fixture(params=RUNTIMES)
def runtime_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name not in selected_runtimes():
        pytest.skip(f"{name} not selected by BULKHEAD_CONFORMANCE_RUNTIMES")
    binary = RUNTIME_BINARIES[name]
    if not (binary.exists() and os.access(binary, os.X_OK)):
        pytest.skip(f"{binary} does not exist yet")
    return name


# ------------------------------------------------------------------ host hygiene


def mounts_under(prefix: Path) -> list[str]:
    """Mount points at or below ``prefix`` in this mount namespace, deepest last."""
    out = []
    pref = str(prefix).rstrip("/")
    with open("/proc/self/mountinfo") as f:
        for line in f:
            mp = line.split()[4].replace("\\040", " ")
            if mp == pref or mp.startswith(pref + "/"):
                out.append(mp)
    return out


def unmount_all_under(prefix: Path) -> list[str]:
    """Unmount everything at or below ``prefix`` (deepest first); return what was mounted."""
    found = mounts_under(prefix)
    for mp in sorted(set(found), key=lambda p: (-p.count("/"), p)):
        for _ in range(8):  # stacked mounts on one point need several calls
            if mp not in mounts_under(prefix):
                break
            r = subprocess.run(["umount", "-n", mp], capture_output=True, check=False)
            if r.returncode != 0:
                subprocess.run(["umount", "-n", "-l", mp], capture_output=True, check=False)
    return found


def cgroup_dirs(path: str) -> list[Path]:
    """The directories of cgroup ``path`` in every mounted hierarchy (existing ones only)."""
    out = []
    rel = path.strip("/")
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        d = hierarchy / rel
        if d.is_dir():
            out.append(d)
    return out


def cgroup_pids(path: str) -> set[int]:
    pids: set[int] = set()
    for top in cgroup_dirs(path):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in procs.read_text().split())
    return pids


def remove_cgroup_tree(path: str, *, keep_top: bool = False) -> list[str]:
    """rmdir cgroup ``path`` and everything below it in every hierarchy; return what existed."""
    existed = []
    for top in cgroup_dirs(path):
        subs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts))
        for d in [*subs, *([] if keep_top else [top])]:
            existed.append(str(d))
            for _ in range(50):
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
    return existed


def processes_mentioning(token: str) -> list[int]:
    """PIDs whose command line contains ``token`` (our unique temporary path)."""
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ")
        except OSError:
            continue
        if token.encode() in cmdline:
            out.append(int(entry))
    return out


def kill_pids(pids: set[int] | list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def wait_gone(pids: set[int] | list[int], timeout: float = 5) -> None:
    end = time.monotonic() + timeout
    left = set(pids)
    while left and time.monotonic() < end:
        left = {p for p in left if Path(f"/proc/{p}").exists()}
        if left:
            time.sleep(0.05)


def private_var_namespace(var_tmp: Path) -> Callable[[], None]:
    """A ``preexec_fn``: a private mount namespace with an empty ``/var/lib`` and our ``/var/tmp``."""
    from bulkhead.linux.mount import MS_BIND, MS_NODEV, MS_NOSUID, MS_PRIVATE, MS_REC, mount
    from bulkhead.linux.namespaces import CLONE_NEWNS, unshare

    def setup() -> None:
        unshare(CLONE_NEWNS)
        mount(None, "/", None, MS_REC | MS_PRIVATE)
        mount("bulkhead-test", "/var/lib", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64m")
        mount(str(var_tmp), "/var/tmp", None, MS_BIND)

    return setup


# ------------------------------------------------------------------ Podman

PODMAN = shutil.which("podman") or "/usr/bin/podman"


@dataclass
class PodmanEnv:
    """One isolated Podman installation in ``base``."""

    base: Path
    image: ImageArchive
    cgroup_parent: str = f"/bulkhead/podman-test-{SESSION}"
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    default_runtime: Runtime | None = None

    @property
    def graphroot(self) -> Path:
        return self.base / "root"

    @property
    def runroot(self) -> Path:
        return self.base / "runroot"

    @property
    def tmpdir(self) -> Path:
        return self.base / "libpod-tmp"

    @property
    def scratch(self) -> Path:
        return self.base / "tmp"

    @property
    def runtime_root(self) -> Path:
        return self.base / "runtime-root"

    def setup(self) -> None:
        for d in (
            self.graphroot,
            self.runroot,
            self.tmpdir,
            self.scratch,
            self.runtime_root,
            self.base / "hooks",
            self.base / "networks",
            self.base / "bin",
        ):
            d.mkdir(parents=True, exist_ok=True)
        for name, binary in RUNTIME_BINARIES.items():
            wrapper = self.base / "bin" / name / name
            log = self.base / f"argv-{name}.log"
            write_wrapper(wrapper, binary, log, self.runtime_root / name)
            self.runtimes[name] = Runtime(name, binary, wrapper, log)
        self.default_runtime = self.runtimes["runc"]
        b = self.base
        (b / "containers.conf").write_text(
            f"""\
# Written by tests/conformance/conftest.py for one test session.
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "none"
log_driver = "k8s-file"

[network]
network_backend = "cni"
network_config_dir = "{b}/networks"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{b}/events.log"
tmp_dir = "{self.tmpdir}"
lock_type = "file"
hooks_dir = ["{b}/hooks"]
image_copy_tmp_dir = "{self.scratch}"
static_dir = "{self.graphroot}/libpod"
volume_path = "{self.graphroot}/volumes"
runtime = "{self.default_runtime.wrapper}"
# Podman gives --log-format=json/--log only to runtimes it knows by name.
runtime_supports_json = ["crun", "runc", "kata", "runsc", "youki", "krun", "bulkhead-runtime"]
"""
        )
        (b / "storage.conf").write_text(
            f"""\
[storage]
driver = "overlay"
graphroot = "{self.graphroot}"
runroot = "{self.runroot}"
"""
        )
        (b / "registries.conf").write_text("unqualified-search-registries = []\n")
        self.load_image()

    @property
    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("CONTAINERS_", "CONTAINER_", "REGISTRY_AUTH", "DOCKER_"))
        }
        env.update(
            CONTAINERS_CONF=str(self.base / "containers.conf"),
            CONTAINERS_STORAGE_CONF=str(self.base / "storage.conf"),
            CONTAINERS_REGISTRIES_CONF=str(self.base / "registries.conf"),
            TMPDIR=str(self.scratch),
        )
        return env

    def argv(self, *args: str, runtime: Runtime | None = None) -> list[str]:
        rt = runtime or self.default_runtime
        assert rt is not None
        return [
            PODMAN,
            "--root",
            str(self.graphroot),
            "--runroot",
            str(self.runroot),
            "--tmpdir",
            str(self.tmpdir),
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
            "--storage-driver",
            "overlay",
            "--runtime",
            str(rt.wrapper),
            *args,
        ]

    def __call__(
        self,
        *args: str,
        runtime: Runtime | None = None,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
        preexec_fn: Callable[[], None] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = self.argv(*args, runtime=runtime)
        proc = subprocess.run(
            cmd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
            preexec_fn=preexec_fn,
        )
        if check and proc.returncode != 0:
            rt = runtime or self.default_runtime
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                f"stderr: {proc.stderr}\nruntime argv (last lines):\n"
                f"{rt.argv_tail() if rt else ''}"
            )
        return proc

    def run_args(self, *args: str, name: str | None = None) -> list[str]:
        """``run`` options every test uses: no network, no pull, our cgroup parent."""
        out = ["--network", "none", "--pull", "never", f"--cgroup-parent={self.cgroup_parent}"]
        if name:
            out += ["--name", name]
        return [*out, *args]

    def load_image(self) -> None:
        self(
            "load",
            "-i",
            str(self.image.path),
            preexec_fn=private_var_namespace(self.scratch),
        )
        out = self("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
        assert self.image.reference in out, out

    def container_ids(self) -> list[str]:
        proc = self("ps", "-a", "-q", "--no-trunc", check=False)
        return proc.stdout.split()

    def remove_all_containers(self) -> None:
        for cid in self.container_ids():
            self("rm", "--force", "--time", "0", cid, check=False)

    def reset_after_test(self) -> list[str]:
        """Remove every container; return what leaked (container cgroups, extra mounts)."""
        self.remove_all_containers()
        leaked = []
        for top in cgroup_dirs(self.cgroup_parent):
            for d in top.glob("libpod-*"):
                leaked.append(f"cgroup {d}")
        # The overlay driver keeps its home bind-mounted on itself; anything else is a container's.
        home = str(self.graphroot / "overlay")
        extra = [m for m in mounts_under(self.base) if m != home]
        leaked += [f"mount {m}" for m in extra]
        for m in sorted(set(extra), key=lambda p: -p.count("/")):
            subprocess.run(["umount", "-n", "-l", m], capture_output=True, check=False)
        for d in (self.runtime_root / name for name in self.runtimes):
            if d.is_dir():
                leaked += [f"runtime state {p}" for p in d.iterdir()]
        if leaked:
            kill_pids(cgroup_pids(self.cgroup_parent) - {os.getpid()})
            remove_cgroup_tree(self.cgroup_parent, keep_top=True)
            for d in (self.runtime_root / name for name in self.runtimes):
                if d.is_dir():
                    for p in d.iterdir():
                        shutil.rmtree(p, ignore_errors=True)
        return leaked

    def teardown(self) -> None:
        try:
            if self.default_runtime is not None and (self.base / "containers.conf").exists():
                self.remove_all_containers()
        finally:
            ours = set(processes_mentioning(str(self.base)))  # conmon, podman cleanup
            ours |= cgroup_pids(self.cgroup_parent)
            ours.discard(os.getpid())
            kill_pids(ours)
            wait_gone(ours)
            unmount_all_under(self.base)
            remove_cgroup_tree(self.cgroup_parent)
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def podman_env(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: ImageArchive
) -> Iterator[PodmanEnv]:
    if not Path(PODMAN).exists() or shutil.which("conmon") is None:
        pytest.skip("podman and conmon are not installed (apt install podman)")
    env = PodmanEnv(base=tmp_path_factory.mktemp("podman"), image=busybox_image)
    try:
        env.setup()
        yield env
    finally:
        if os.environ.get("BULKHEAD_CONFORMANCE_KEEP"):
            for rt in env.runtimes.values():
                keep = Path(f"/tmp/bulkhead-conformance-podman-{rt.name}.argv.log")
                with contextlib.suppress(OSError):
                    shutil.copy(rt.argv_log, keep)
        env.teardown()


@dataclass
class PodmanForTest:
    """The session's Podman, bound to one runtime for one test."""

    env: PodmanEnv
    runtime: Runtime

    def __call__(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("runtime", self.runtime)
        return self.env(*args, **kw)

    def run(
        self, *args: str, name: str | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """``podman run <isolation options> [--name NAME] ARGS...``."""
        return self("run", *self.env.run_args(*args, name=name), **kw)

    def argv(self, *args: str) -> list[str]:
        return self.env.argv(*args, runtime=self.runtime)

    @property
    def image(self) -> str:
        return self.env.image.reference


@pytest.fixture
def podman(podman_env: PodmanEnv, runtime_name: str) -> Iterator[PodmanForTest]:
    """Podman with ``--runtime <runtime_name>``; every container is removed afterwards."""
    p = PodmanForTest(podman_env, podman_env.runtimes[runtime_name])
    yield p
    leaked = podman_env.reset_after_test()
    assert not leaked, f"leaked after the test: {leaked}"


# ------------------------------------------------------------------ containerd

CONTAINERD = shutil.which("containerd") or "/usr/bin/containerd"
CTR = shutil.which("ctr") or "/usr/bin/ctr"
SHIM_SOCKET_DIR = Path("/run/containerd/s")


@dataclass
class ContainerdEnv:
    """A containerd of our own in ``base``, and ``ctr`` pointed at it."""

    base: Path
    image: ImageArchive
    namespace: str = f"bulkhead-test-{SESSION}"
    cgroup_parent: str = f"/bulkhead/ctr-test-{SESSION}"
    proc: subprocess.Popen[bytes] | None = None
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    task_ids: set[str] = field(default_factory=set)
    created_run_dirs: list[Path] = field(default_factory=list)

    @property
    def address(self) -> Path:
        return self.base / "containerd.sock"

    @property
    def runc_root(self) -> Path:
        return self.base / "runc-root"

    @property
    def fifo_dir(self) -> Path:
        return self.base / "fifo"

    @property
    def scratch(self) -> Path:
        return self.base / "tmp"

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}
        env["TMPDIR"] = str(self.scratch)
        return env

    def setup(self) -> None:
        b = self.base
        for sub in ("root", "state", "opt", "tmp", "fifo", "runc-root", "runc-root-v1", "bin"):
            (b / sub).mkdir(parents=True, exist_ok=True)
        for name, binary in RUNTIME_BINARIES.items():
            argv_log = b / f"argv-{name}.log"
            # The shim always passes --root (from --runc-root): no root of ours here.
            wrapper = write_wrapper(b / "bin" / name / name, binary, argv_log, None)
            self.runtimes[name] = Runtime(name, binary, wrapper, argv_log)
        (b / "config.toml").write_text(
            f"""\
# Written by tests/conformance/conftest.py for one test session.
version = 2
root = "{b}/root"
state = "{b}/state"
plugin_dir = ""
disabled_plugins = [
  "io.containerd.grpc.v1.cri",
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{self.address}"

[ttrpc]
  address = "{self.address}.ttrpc"

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{b}/opt"
  [plugins."io.containerd.runtime.v1.linux"]
    runtime_root = "{b}/runc-root-v1"
"""
        )
        for d in (SHIM_SOCKET_DIR.parent, SHIM_SOCKET_DIR):
            if not d.exists():
                self.created_run_dirs.append(d)
        with open(b / "containerd.log", "wb") as log:
            self.proc = subprocess.Popen(
                [CONTAINERD, "--config", str(b / "config.toml")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        end = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"containerd exited {self.proc.returncode}:\n{self.log_tail()}"
                )
            if self.address.exists() and self.ctr("version", check=False).returncode == 0:
                break
            if time.monotonic() > end:
                raise AssertionError(f"containerd did not come up:\n{self.log_tail()}")
            time.sleep(0.05)
        self.ctr("images", "import", str(self.image.path))
        out = self.ctr("images", "ls", "-q").stdout.split()
        assert self.image.reference in out, out

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join((self.base / "containerd.log").read_text().splitlines()[-n:])
        except OSError:
            return ""

    def ctr_argv(self, *args: str) -> list[str]:
        return [CTR, "--address", str(self.address), "--namespace", self.namespace, *args]

    def ctr(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 120,
        input: str | None = None,
        runtime: Runtime | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = self.ctr_argv(*args)
        proc = subprocess.run(
            cmd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout: {proc.stdout}\n"
                f"stderr: {proc.stderr}\nruntime argv (last lines):\n"
                f"{runtime.argv_tail() if runtime else ''}\ncontainerd log:\n{self.log_tail(10)}"
            )
        return proc

    def run_args(self, runtime: Runtime, cid: str) -> list[str]:
        """``ctr run`` options: our runtime binary and state root, FIFOs and cgroup."""
        self.task_ids.add(cid)
        return [
            "--runc-binary",
            str(runtime.wrapper),
            "--runc-root",
            str(self.runc_root),
            "--fifo-dir",
            str(self.fifo_dir),
            "--cgroup",
            f"{self.cgroup_parent}/{cid}",
        ]

    def remove_container(self, cid: str) -> None:
        self.ctr("tasks", "kill", "--all", "--signal", "SIGKILL", cid, check=False)
        for _ in range(100):
            proc = self.ctr("tasks", "delete", "--force", cid, check=False)
            if proc.returncode == 0 or "not found" in proc.stderr:
                break
            time.sleep(0.05)
        self.ctr("containers", "delete", cid, check=False)

    def shim_socket(self, cid: str) -> Path:
        """Where containerd 1.6 puts a task's shim socket (runtime/v2/shim.SocketAddress)."""
        digest = hashlib.sha256(os.path.join(self.address, self.namespace, cid).encode())
        return SHIM_SOCKET_DIR / digest.hexdigest()

    def reset_after_test(self, ids: list[str]) -> list[str]:
        leaked = []
        for cid in ids:
            self.remove_container(cid)
            if cgroup_dirs(f"{self.cgroup_parent}/{cid}"):
                leaked.append(f"cgroup {self.cgroup_parent}/{cid}")
                kill_pids(cgroup_pids(f"{self.cgroup_parent}/{cid}"))
                remove_cgroup_tree(f"{self.cgroup_parent}/{cid}")
        known = {str(self.base / "root" / "io.containerd.snapshotter.v1.overlayfs")}
        extra = [m for m in mounts_under(self.base) if m not in known]
        leaked += [f"mount {m}" for m in extra]
        for m in sorted(set(extra), key=lambda p: -p.count("/")):
            subprocess.run(["umount", "-n", "-l", m], capture_output=True, check=False)
        return leaked

    def teardown(self) -> None:
        try:
            if self.proc is not None and self.proc.poll() is None:
                for cid in sorted(self.task_ids):
                    self.remove_container(cid)
                self.ctr("images", "rm", self.image.reference, check=False)
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=10)
            # Shims (their command line names our socket) and anything left in our cgroups.
            ours = set(processes_mentioning(str(self.base)))
            ours |= cgroup_pids(self.cgroup_parent)
            ours.discard(os.getpid())
            kill_pids(ours)
            wait_gone(ours)
            unmount_all_under(self.base)
            remove_cgroup_tree(self.cgroup_parent)
            for cid in self.task_ids:
                with contextlib.suppress(FileNotFoundError):
                    self.shim_socket(cid).unlink()
            for d in reversed(self.created_run_dirs):
                with contextlib.suppress(OSError):
                    d.rmdir()  # only when empty
            shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture(scope="session")
def containerd_env(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: ImageArchive
) -> Iterator[ContainerdEnv]:
    if not (Path(CONTAINERD).exists() and Path(CTR).exists()):
        pytest.skip("containerd is not installed (apt install containerd)")
    if not shutil.which("containerd-shim-runc-v2"):
        pytest.skip("containerd-shim-runc-v2 is not installed")
    env = ContainerdEnv(base=tmp_path_factory.mktemp("containerd"), image=busybox_image)
    try:
        env.setup()
        yield env
    finally:
        if os.environ.get("BULKHEAD_CONFORMANCE_KEEP"):
            for rt in env.runtimes.values():
                keep = Path(f"/tmp/bulkhead-conformance-containerd-{rt.name}.argv.log")
                with contextlib.suppress(OSError):
                    shutil.copy(rt.argv_log, keep)
        env.teardown()


@dataclass
class CtrForTest:
    """The session's containerd, bound to one runtime for one test."""

    env: ContainerdEnv
    runtime: Runtime
    ids: list[str] = field(default_factory=list)

    def new_id(self) -> str:
        cid = f"{self.runtime.name[:4]}-{uuid.uuid4().hex[:10]}"
        self.ids.append(cid)
        return cid

    def __call__(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        kw.setdefault("runtime", self.runtime)
        return self.env.ctr(*args, **kw)

    def run_options(self, cid: str, *options: str) -> list[str]:
        """``run [options] <runtime options> IMAGE ID``: append the command."""
        return [
            "run",
            *options,
            *self.env.run_args(self.runtime, cid),
            self.env.image.reference,
            cid,
        ]

    def run(
        self, cid: str, *options: str, cmd: list[str], **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """``ctr run [options] ... IMAGE ID CMD...``."""
        return self(*self.run_options(cid, *options), *cmd, **kw)

    def exec_options(self, cid: str, exec_id: str, *options: str) -> list[str]:
        """``tasks exec [options] --fifo-dir F --exec-id E ID``: append the command."""
        return ["tasks", "exec", *options, "--fifo-dir", str(self.env.fifo_dir),
                "--exec-id", exec_id, cid]  # fmt: skip

    def exec(
        self, cid: str, exec_id: str, *cmd: str, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        """``ctr tasks exec ... ID CMD...`` in a running task."""
        return self(*self.exec_options(cid, exec_id), *cmd, **kw)


@pytest.fixture
def ctr(containerd_env: ContainerdEnv, runtime_name: str) -> Iterator[CtrForTest]:
    """``ctr`` with ``--runc-binary <runtime_name>``; every container is removed afterwards."""
    c = CtrForTest(containerd_env, containerd_env.runtimes[runtime_name])
    yield c
    leaked = containerd_env.reset_after_test(c.ids)
    assert not leaked, f"leaked after the test: {leaked}"


# ------------------------------------------------------------------ pseudo-terminals


@dataclass
class PtyProcess:
    """A process whose stdin/stdout/stderr are the slave side of a new pseudo-terminal."""

    pid: int
    fd: int
    buf: bytes = b""

    @classmethod
    def spawn(
        cls, argv: list[str], env: dict[str, str], rows: int = 0, cols: int = 0
    ) -> PtyProcess:
        import fcntl
        import pty
        import struct
        import termios

        pid, fd = pty.fork()
        if pid == 0:  # child: exec at once (no Python-level cleanup in the fork)
            try:
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        if rows and cols:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        return cls(pid, fd)

    def read_until(self, token: bytes, timeout: float = 30) -> bool:
        import select

        end = time.monotonic() + timeout
        while token not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return False
            ready, _, _ = select.select([self.fd], [], [], min(left, 0.2))
            if ready:
                try:
                    data = os.read(self.fd, 4096)
                except OSError:  # EIO: the other side is closed
                    return token in self.buf
                if not data:
                    return token in self.buf
                self.buf += data
        return True

    def write(self, data: bytes) -> None:
        os.write(self.fd, data)

    def wait(self, timeout: float = 30) -> int:
        """Drain the terminal until the process exits; return its exit code."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.read_until(b"\0never\0", timeout=0.2)
                return os.waitstatus_to_exitcode(status)
            self.read_until(b"\0never\0", timeout=0.1)
        self.kill()
        raise AssertionError(f"pty process did not exit; output so far: {self.text!r}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)

    @property
    def text(self) -> str:
        return self.buf.decode(errors="replace")


@pytest.fixture
def spawn_pty() -> Iterator[Callable[..., PtyProcess]]:
    """``spawn_pty(argv, env, rows=0, cols=0)``; the processes are killed afterwards."""
    spawned: list[PtyProcess] = []

    def spawn(argv: list[str], env: dict[str, str], rows: int = 0, cols: int = 0) -> PtyProcess:
        p = PtyProcess.spawn(argv, env, rows, cols)
        spawned.append(p)
        return p

    yield spawn
    for p in spawned:
        with contextlib.suppress(ChildProcessError):
            if os.waitpid(p.pid, os.WNOHANG)[0] == 0:
                p.kill()
        p.close()
