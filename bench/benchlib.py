"""What the benchmarks under bench/ share: statistics, the runtimes, bundles, cgroup clean-up,
and the temporary hugetlb v1 mount that crun 1.8 needs on this project's hybrid hosts.

Import it before anything from ``bulkhead``: it puts ``src/`` on ``sys.path``
(so the scripts also run from a checkout whose venv lacks the package).
See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

RUNTIMES: dict[str, Path] = {
    "crun": Path("/usr/bin/crun"),
    "runc": Path("/usr/sbin/runc"),
    "bulkhead-runtime": VENV_BIN / "bulkhead-runtime",
}
CGROUP_ROOT = Path("/sys/fs/cgroup")
HUGETLB_V1 = CGROUP_ROOT / "hugetlb"


# ---------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (``q`` in 0..100), as numpy's default."""
    xs = sorted(samples)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(samples: Sequence[float], scale: float = 1e3) -> dict[str, float]:
    """n, median, p90, mean, min, max, stdev of ``samples`` (seconds), in ms (``scale``)."""
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples) * scale,
        "p90_ms": percentile(samples, 90) * scale,
        "mean_ms": statistics.fmean(samples) * scale,
        "min_ms": min(samples) * scale,
        "max_ms": max(samples) * scale,
        "stdev_ms": (statistics.stdev(samples) if len(samples) > 1 else 0.0) * scale,
    }


def utc_stamp() -> str:
    """``20261123T101500Z``: the time part of a results file name."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def save_result(out_dir: str | Path, name: str, result: dict[str, Any]) -> Path:
    """Write ``result`` as ``<out_dir>/<name>-<stamp>.json`` and return the path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}-{utc_stamp()}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def select_runtimes(ap: argparse.ArgumentParser, text: str) -> list[str]:
    """The runtimes a comma-separated ``--runtimes`` names that are installed (say which are not)."""
    wanted = [r.strip() for r in text.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in RUNTIMES]
    if unknown:
        ap.error(f"unknown runtimes: {unknown}")
    present = [r for r in wanted if RUNTIMES[r].exists()]
    for r in wanted:
        if r not in present:
            print(f"skipping {r}: {RUNTIMES[r]} does not exist")
    return present


# ---------------------------------------------------------------- cgroups


def cgroup_dirs(path: str) -> list[Path]:
    """The directories of cgroup ``path`` (absolute, as a cgroupsPath) in every hierarchy."""
    rel = path.strip("/")
    return [h / rel for h in sorted(CGROUP_ROOT.iterdir()) if (h / rel).is_dir()]


def remove_cgroup(path: str) -> list[str]:
    """rmdir cgroup ``path`` (and below) in every hierarchy; return what was left over."""
    left = []
    for top in cgroup_dirs(path):
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            left.append(str(d))
            with contextlib.suppress(OSError):
                d.rmdir()
        left.append(str(top))
        with contextlib.suppress(OSError):
            top.rmdir()
        # and the parents of ``path`` (``/bulkhead``) once nothing else is in them
        parent = top.parent
        for _ in range(len(Path(path.strip("/")).parts) - 1):
            with contextlib.suppress(OSError):
                parent.rmdir()
            parent = parent.parent
    return left


def is_mountpoint(path: Path) -> bool:
    from bulkhead.linux import mountinfo

    return any(m.mountpoint == str(path) for m in mountinfo.read())


@contextlib.contextmanager
def hugetlb_on_v1(keep: bool, cgroup_parent: str) -> Iterator[bool]:
    """Mount hugetlb as a v1 hierarchy at /sys/fs/cgroup/hugetlb if absent; undo afterwards.

    Yields whether this call mounted it. ``cgroup_parent`` is the benchmark's
    cgroup parent (``/bulkhead/bench``): the restore removes it from the
    hugetlb hierarchy before unmounting.
    """
    if is_mountpoint(HUGETLB_V1):
        yield False
        return
    created_dir = not HUGETLB_V1.exists()
    HUGETLB_V1.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["mount", "-n", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(HUGETLB_V1)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        if created_dir:
            HUGETLB_V1.rmdir()
        raise SystemExit(f"could not mount hugetlb at {HUGETLB_V1}: {proc.stderr.strip()}")
    print(
        f"NOTE: mounted the hugetlb controller as a cgroup v1 hierarchy at {HUGETLB_V1} "
        "(crun 1.8 refuses hybrid mode while hugetlb is on cgroup2); all runtimes run on this "
        "layout" + ("; it stays mounted (--keep-hugetlb-mount)" if keep else "; undone at the end"),
        flush=True,
    )
    try:
        yield True
    finally:
        if not keep:
            restore_hugetlb(created_dir, cgroup_parent)


def hugetlb_hierarchy_id() -> int | None:
    """The hierarchy hugetlb is bound to (0 = cgroup2) according to /proc/cgroups."""
    with open("/proc/cgroups") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == "hugetlb":
                return int(fields[1])
    return None


#: How long the restore waits for cgroups that other processes made in the temporary hierarchy.
RESTORE_WAIT = 120.0


def _remove_orphans(top: Path) -> list[Path]:
    """Remove the cgroups under ``top`` that nobody uses any more; return those still in use.

    While hugetlb is mounted as a v1 hierarchy, any bulkhead process that
    starts (other sessions' tests too) puts its cgroups there as well, and
    one whose layout was read before the mount does not remove them on
    delete. A cgroup here with no process whose path no other v1 hierarchy
    has is such an orphan: it exists only because of the benchmark's mount.
    """
    others = [
        h
        for h in CGROUP_ROOT.iterdir()
        if h != HUGETLB_V1 and h.name != "unified" and h.is_dir() and is_mountpoint(h)
    ]
    busy = []
    for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        rel = d.relative_to(HUGETLB_V1)
        try:
            empty = not (d / "cgroup.procs").read_text().strip()
        except OSError:
            continue  # gone meanwhile
        if empty and not any((h / rel).is_dir() for h in others):
            with contextlib.suppress(OSError):
                d.rmdir()
                continue
        busy.append(d)
    return busy


def restore_hugetlb(created_dir: bool, cgroup_parent: str) -> None:
    """Unmount our hugetlb v1 hierarchy and wait until the controller is back on cgroup2.

    A v1 hierarchy is only destroyed when it is unmounted without children, and
    removed cgroups linger as "dying" children for a moment; so remove ours
    (and the orphans others left there, :func:`_remove_orphans`), wait up to
    :data:`RESTORE_WAIT` for cgroups still in use, unmount, and if the
    hierarchy survives, mount it again and retry.
    """
    deadline = time.monotonic() + RESTORE_WAIT
    told = False
    while True:
        if is_mountpoint(HUGETLB_V1):
            remove_cgroup(cgroup_parent)
            busy = _remove_orphans(HUGETLB_V1)
            with contextlib.suppress(OSError):
                (HUGETLB_V1 / "bulkhead").rmdir()
            busy = [p for p in busy if p.exists()]
            if busy:
                if time.monotonic() >= deadline:
                    print(
                        f"WARNING: {HUGETLB_V1} still has cgroups in use by other processes "
                        f"({[str(p.relative_to(HUGETLB_V1)) for p in busy][:5]}); leaving it "
                        "mounted: once they are gone, remove them and `umount` it to put "
                        "hugetlb back on cgroup2",
                        file=sys.stderr,
                    )
                    return
                if not told:
                    print(
                        f"NOTE: waiting for {len(busy)} cgroup(s) that other processes made in "
                        f"{HUGETLB_V1} meanwhile (up to {RESTORE_WAIT:g} s)",
                        flush=True,
                    )
                    told = True
                time.sleep(1)
                continue
            subprocess.run(["umount", "-n", str(HUGETLB_V1)], check=False)
        for _ in range(20):
            if hugetlb_hierarchy_id() == 0:
                break
            time.sleep(0.1)
        if hugetlb_hierarchy_id() == 0 or time.monotonic() >= deadline:
            break
        # Still bound to the (unmounted) v1 hierarchy: mount it again to finish the job.
        HUGETLB_V1.mkdir(exist_ok=True)
        subprocess.run(
            ["mount", "-n", "-t", "cgroup", "-o", "hugetlb", "cgroup", str(HUGETLB_V1)],
            check=False,
        )
        time.sleep(0.5)
    if created_dir and not is_mountpoint(HUGETLB_V1):
        with contextlib.suppress(OSError):
            HUGETLB_V1.rmdir()
    if hugetlb_hierarchy_id() == 0:
        print(f"NOTE: unmounted {HUGETLB_V1}; hugetlb is back on cgroup2", flush=True)
    else:
        print(
            f"WARNING: hugetlb is still on a v1 hierarchy (see /proc/cgroups); "
            f"mount it at {HUGETLB_V1}, remove its cgroups and unmount it",
            file=sys.stderr,
        )


# ---------------------------------------------------------------- bundles and runs


def busybox_bundle(work: Path, args: Sequence[str] = ("true",)) -> tuple[Path, dict[str, Any]]:
    """A busybox bundle in ``work/bundle`` (rootfs in ``work/rootfs``) and its config as a dict.

    The config is ``bulkhead.devtools.busybox.make_bundle``'s default spec
    with ``ociVersion`` 1.0.2-dev: crun 1.8 accepts only 1.0.x ("unknown
    version specified"), and runc 1.1 writes 1.0.2-dev itself. Every
    runtime gets the same spec.
    """
    from bulkhead.devtools.busybox import build_rootfs, make_bundle

    rootfs = build_rootfs(work / "rootfs")
    bundle = make_bundle(work / "bundle", list(args), terminal=False, rootfs=rootfs)
    template: dict[str, Any] = json.loads((bundle / "config.json").read_text())
    template["ociVersion"] = "1.0.2-dev"
    return bundle, template


@dataclass
class Subject:
    """One thing to time: a runtime binary, its state root, and the spec it runs."""

    name: str
    binary: Path
    root: Path
    template: dict[str, Any] | None = None  # None: the benchmark's common template
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    leaked_cgroups: int = 0

    def scratch(self) -> Subject:
        """A copy with no samples (for warm-up and probe runs)."""
        return Subject(self.name, self.binary, self.root, self.template)


def write_config(bundle: Path, cgroups_path: str, template: dict[str, Any]) -> None:
    spec = json.loads(json.dumps(template))
    spec["linux"]["cgroupsPath"] = cgroups_path
    (bundle / "config.json").write_text(json.dumps(spec))


def run_once(
    subject: Subject,
    bundle: Path,
    template: dict[str, Any],
    timeout: float,
    cgroup_parent: str,
) -> None:
    """``<runtime> --root <root> run <fresh id>`` in ``bundle``; add its wall time to the samples.

    The container's cgroup is ``<cgroup_parent>/<id>``; it must be gone
    afterwards (a left-over is counted and removed).
    """
    spec = subject.template if subject.template is not None else template
    cid = f"bench-{subject.name[:4]}-{uuid.uuid4().hex[:12]}"
    cgroups_path = f"{cgroup_parent}/{cid}"
    write_config(bundle, cgroups_path, spec)
    cmd = [str(subject.binary), "--root", str(subject.root), "run", cid]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd,
        cwd=bundle,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=timeout,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode == 0:
        subject.samples.append(elapsed)
    else:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        subject.failures.append(f"exit {proc.returncode}: {err[-1] if err else ''}")
        # A failed run may leave its state behind.
        subprocess.run(
            [str(subject.binary), "--root", str(subject.root), "delete", "--force", cid],
            capture_output=True,
            check=False,
            timeout=timeout,
        )
    if cgroup_dirs(cgroups_path):
        subject.leaked_cgroups += 1
        remove_cgroup(cgroups_path)


def works(
    subject: Subject, bundle: Path, template: dict[str, Any], cgroup_parent: str
) -> str | None:
    """Run once; return the error if the runtime cannot run the bundle at all."""
    probe = subject.scratch()
    run_once(probe, bundle, template, 60, cgroup_parent)
    return probe.failures[0] if probe.failures else None


def round_robin(
    subjects: Sequence[Subject],
    runs: int,
    warmup: int,
    run: Callable[[Subject], None],
) -> None:
    """``warmup`` unmeasured rounds, then ``runs`` measured ones; the order rotates every round.

    ``run(subject)`` adds one sample to ``subject``; warm-up runs go to a
    scratch copy (only their left-over cgroups are counted).
    """
    subjects = list(subjects)
    for rnd in range(warmup + runs):
        k = rnd % len(subjects)
        for s in subjects[k:] + subjects[:k]:
            if rnd < warmup:
                scratch = s.scratch()
                run(scratch)
                s.leaked_cgroups += scratch.leaked_cgroups
            else:
                run(s)


def version_of(binary: Path) -> str:
    try:
        proc = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        return f"unavailable: {exc}"
    return proc.stdout.splitlines()[0] if proc.stdout else proc.stderr.strip()


def host_info() -> dict[str, Any]:
    return {
        "kernel": platform.release(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def fresh_bytecode() -> dict[str, Any]:
    """Compile stale bytecode of src/ (as ``make deps`` does) and let children write their own.

    With ``PYTHONDONTWRITEBYTECODE=1`` in the environment (this project's
    sessions set it) a module edited since its ``.pyc`` was written is
    compiled again by every process that imports it, several ms each: a
    bulkhead-runtime start would pay for it on every run, unlike an
    installed copy. So compile what is stale now, and drop the variable for
    the processes the benchmark starts (so a file edited meanwhile is
    compiled once, not on every run).
    """
    proc = subprocess.run(
        [str(PYTHON), "-m", "compileall", str(REPO / "src")],
        capture_output=True,
        text=True,
        check=False,
    )
    compiled = [
        line.split(" ", 1)[1].strip("'. ")
        for line in proc.stdout.splitlines()
        if line.startswith("Compiling ")
    ]
    dont_write = os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    if compiled or dont_write:
        print(
            f"NOTE: compiled {len(compiled)} stale .pyc file(s) under src/"
            + ("; PYTHONDONTWRITEBYTECODE dropped for the processes started" if dont_write else ""),
            flush=True,
        )
    return {"compiled": compiled, "dropped_PYTHONDONTWRITEBYTECODE": bool(dont_write)}
