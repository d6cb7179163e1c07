#!/usr/bin/env python3
"""Start-up benchmark: ``<runtime> --root <tmp> run <id>`` of busybox ``true``, crun vs runc vs bulkhead-runtime.

Every runtime runs the same bundle (``bulkhead.devtools.busybox.make_bundle``:
the default spec, so new mount/pid/ipc/uts/network namespaces, terminal
false) with ``linux.cgroupsPath = /bulkhead/bench/<id>`` and a fresh id per
run. Runs alternate round-robin (the order rotates every round) after a few
warm-up rounds; the wall time of the whole command is measured. Prints
medians, p90 and ratios to crun and runc; saves JSON under bench/results/.

It also measures ``python -X importtime -c 'import bulkhead.runtime.cli'`` and
the wall time of ``bulkhead-runtime --version``.

crun 1.8 refuses this machine's hybrid cgroup layout while the hugetlb
controller sits on the cgroup2 mount. When crun is benchmarked and
``/sys/fs/cgroup/hugetlb`` is not mounted, this script mounts hugetlb as a v1
hierarchy there for the duration of the benchmark (all runtimes then see the
same layout), says so, and restores the layout at the end unless
``--keep-hugetlb-mount``. See bench/README.md.

Usage (as root): ``.venv/bin/python bench/runtime_start.py [--runs 30] [--runtimes crun,runc,bulkhead-runtime]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = REPO / ".venv" / "bin"
PYTHON = VENV_BIN / "python"
sys.path.insert(0, str(REPO / "src"))

from bulkhead.devtools.busybox import build_rootfs, make_bundle  # noqa: E402

RUNTIMES: dict[str, Path] = {
    "crun": Path("/usr/bin/crun"),
    "runc": Path("/usr/sbin/runc"),
    "bulkhead-runtime": VENV_BIN / "bulkhead-runtime",
}
CGROUP_ROOT = Path("/sys/fs/cgroup")
CGROUP_PARENT = "/bulkhead/bench"
HUGETLB_V1 = CGROUP_ROOT / "hugetlb"


# ---------------------------------------------------------------- statistics


def percentile(samples: list[float], q: float) -> float:
    """Linear-interpolation percentile (``q`` in 0..100), as numpy's default."""
    xs = sorted(samples)
    if len(xs) == 1:
        return xs[0]
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "n": len(samples),
        "median_ms": statistics.median(samples) * 1e3,
        "p90_ms": percentile(samples, 90) * 1e3,
        "mean_ms": statistics.fmean(samples) * 1e3,
        "min_ms": min(samples) * 1e3,
        "max_ms": max(samples) * 1e3,
        "stdev_ms": (statistics.stdev(samples) if len(samples) > 1 else 0.0) * 1e3,
    }


# ---------------------------------------------------------------- cgroups


def cgroup_dirs(path: str) -> list[Path]:
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
    return left


def is_mountpoint(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


@contextlib.contextmanager
def hugetlb_on_v1(keep: bool) -> Iterator[bool]:
    """Mount hugetlb as a v1 hierarchy at /sys/fs/cgroup/hugetlb if absent; undo afterwards."""
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
            restore_hugetlb(created_dir)


def hugetlb_hierarchy_id() -> int | None:
    """The hierarchy hugetlb is bound to (0 = cgroup2) according to /proc/cgroups."""
    with open("/proc/cgroups") as f:
        for line in f:
            fields = line.split()
            if fields and fields[0] == "hugetlb":
                return int(fields[1])
    return None


def restore_hugetlb(created_dir: bool) -> None:
    """Unmount our hugetlb v1 hierarchy and wait until the controller is back on cgroup2.

    A v1 hierarchy is only destroyed when it is unmounted without children, and
    removed cgroups linger as "dying" children for a moment; so remove ours,
    unmount, and if the hierarchy survives, mount it again and retry.
    """
    for _attempt in range(10):
        if is_mountpoint(HUGETLB_V1):
            remove_cgroup(CGROUP_PARENT)
            with contextlib.suppress(OSError):
                (HUGETLB_V1 / "bulkhead").rmdir()
            others = [p.name for p in HUGETLB_V1.iterdir() if p.is_dir()]
            if others:
                print(
                    f"WARNING: {HUGETLB_V1} has cgroups that are not ours ({others}); "
                    "leaving it mounted: remove them, then `umount` it to put hugetlb back "
                    "on cgroup2",
                    file=sys.stderr,
                )
                return
            subprocess.run(["umount", "-n", str(HUGETLB_V1)], check=False)
        for _ in range(20):
            if hugetlb_hierarchy_id() == 0:
                break
            time.sleep(0.1)
        if hugetlb_hierarchy_id() == 0:
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


# ---------------------------------------------------------------- runs


@dataclass
class Subject:
    name: str
    binary: Path
    root: Path
    samples: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    leaked_cgroups: int = 0


def write_config(bundle: Path, cid: str, template: dict[str, Any]) -> None:
    spec = json.loads(json.dumps(template))
    spec["linux"]["cgroupsPath"] = f"{CGROUP_PARENT}/{cid}"
    (bundle / "config.json").write_text(json.dumps(spec))


def run_once(subject: Subject, bundle: Path, template: dict[str, Any], timeout: float) -> None:
    cid = f"bench-{subject.name[:4]}-{uuid.uuid4().hex[:12]}"
    write_config(bundle, cid, template)
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
    if cgroup_dirs(f"{CGROUP_PARENT}/{cid}"):
        subject.leaked_cgroups += 1
        remove_cgroup(f"{CGROUP_PARENT}/{cid}")


def works(subject: Subject, bundle: Path, template: dict[str, Any]) -> str | None:
    """Run once; return the error if the runtime cannot run the bundle at all."""
    probe = Subject(subject.name, subject.binary, subject.root)
    run_once(probe, bundle, template, timeout=60)
    return probe.failures[0] if probe.failures else None


def timed_command(argv: list[str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        out.append(time.perf_counter() - t0)
    return out


IMPORTTIME = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)")


def import_time(module: str, n: int) -> dict[str, Any]:
    """``python -X importtime -c 'import MODULE'``: cumulative µs of MODULE, heaviest imports."""
    cumulative = []
    heaviest: dict[str, int] = {}
    for _ in range(n):
        proc = subprocess.run(
            [str(PYTHON), "-X", "importtime", "-c", f"import {module}"],
            capture_output=True,
            text=True,
            check=True,
        )
        for line in proc.stderr.splitlines():
            m = IMPORTTIME.match(line)
            if not m:
                continue
            self_us, cum_us, _, name = int(m[1]), int(m[2]), m[3], m[4]
            if name == module:
                cumulative.append(cum_us)
            heaviest[name] = min(heaviest.get(name, self_us), self_us)
    top = sorted(heaviest.items(), key=lambda kv: -kv[1])[:10]
    return {
        "module": module,
        "cumulative_ms_median": statistics.median(cumulative) / 1e3 if cumulative else None,
        "cumulative_ms_samples": [c / 1e3 for c in cumulative],
        "heaviest_self_ms": [(name, us / 1e3) for name, us in top],
    }


def version_of(binary: Path) -> str:
    try:
        proc = subprocess.run(
            [str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        return f"unavailable: {exc}"
    return proc.stdout.splitlines()[0] if proc.stdout else proc.stderr.strip()


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=30, help="measured runs per runtime (>= 30)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first")
    ap.add_argument(
        "--runtimes",
        default=",".join(RUNTIMES),
        help="comma-separated subset of " + ", ".join(RUNTIMES),
    )
    ap.add_argument(
        "--keep-hugetlb-mount",
        action="store_true",
        help="leave hugetlb mounted as a v1 hierarchy afterwards",
    )
    ap.add_argument("--tmp", default=None, help="directory for bundles and state (default: /tmp)")
    ap.add_argument("--out", default=str(HERE / "results"), help="where the JSON goes")
    ap.add_argument("--version-runs", type=int, default=20)
    ap.add_argument("--import-runs", type=int, default=10)
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("runtime_start.py needs root", file=sys.stderr)
        return 2

    wanted = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    unknown = [r for r in wanted if r not in RUNTIMES]
    if unknown:
        ap.error(f"unknown runtimes: {unknown}")
    present = [r for r in wanted if RUNTIMES[r].exists()]
    for r in wanted:
        if r not in present:
            print(f"skipping {r}: {RUNTIMES[r]} does not exist")

    work = Path(tempfile.mkdtemp(prefix="bulkhead-bench-", dir=args.tmp))
    result: dict[str, Any] = {
        "benchmark": "runtime_start",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": {
            "kernel": platform.release(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "command": "<runtime> --root <tmp> run <id>  (cwd = bundle, busybox `true`)",
        "cgroups_path": f"{CGROUP_PARENT}/<id>",
        "tmp": str(work),
        "runs_per_runtime": args.runs,
        "warmup_rounds": args.warmup,
    }
    try:
        rootfs = build_rootfs(work / "rootfs")
        bundle = make_bundle(work / "bundle", ["true"], terminal=False, rootfs=rootfs)
        template = json.loads((bundle / "config.json").read_text())
        # crun 1.8 accepts only ociVersion 1.0.x ("unknown version specified"); runc 1.1
        # writes 1.0.2-dev itself. The same spec goes to every runtime.
        template["ociVersion"] = "1.0.2-dev"
        subjects = []
        for name in present:
            root = work / f"state-{name}"
            root.mkdir()
            subjects.append(Subject(name, RUNTIMES[name], root))
        result["versions"] = {s.name: version_of(s.binary) for s in subjects}

        need_hugetlb = any(s.name == "crun" for s in subjects)
        hugetlb_ctx = (
            hugetlb_on_v1(args.keep_hugetlb_mount) if need_hugetlb else contextlib.nullcontext()
        )
        with hugetlb_ctx as mounted_hugetlb:
            result["hugetlb_v1_mounted_by_benchmark"] = bool(mounted_hugetlb)
            result["hugetlb_v1_mounted"] = is_mountpoint(HUGETLB_V1)
            usable = []
            for s in subjects:
                err = works(s, bundle, template)
                if err:
                    print(f"skipping {s.name}: it cannot run the bundle: {err}")
                    result.setdefault("unusable", {})[s.name] = err
                else:
                    usable.append(s)
            if not usable:
                print("no runtime could run the bundle", file=sys.stderr)
                return 1
            print(
                f"{len(usable)} runtimes x {args.runs} runs (+{args.warmup} warm-up rounds), "
                f"round-robin: {', '.join(s.name for s in usable)}",
                flush=True,
            )
            for rnd in range(args.warmup + args.runs):
                order = usable[rnd % len(usable) :] + usable[: rnd % len(usable)]
                for s in order:
                    if rnd < args.warmup:
                        scratch = Subject(s.name, s.binary, s.root)
                        run_once(scratch, bundle, template, timeout=60)
                        s.leaked_cgroups += scratch.leaked_cgroups
                    else:
                        run_once(s, bundle, template, timeout=60)
            remove_cgroup(CGROUP_PARENT)

        stats = {s.name: summary(s.samples) for s in usable if s.samples}
        print()
        print(f"{'runtime':<18} {'n':>3} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}"
              f" {'x crun':>7} {'x runc':>7}")  # fmt: skip
        for s in usable:
            st = stats.get(s.name)
            if st is None:
                print(f"{s.name:<18} all {len(s.failures)} runs failed: {s.failures[:1]}")
                continue
            for ref in ("crun", "runc"):
                if ref in stats:
                    st[f"ratio_to_{ref}"] = st["median_ms"] / stats[ref]["median_ms"]
            ratio = {
                ref: (f"{st[f'ratio_to_{ref}']:.2f}" if f"ratio_to_{ref}" in st else "-")
                for ref in ("crun", "runc")
            }
            print(
                f"{s.name:<18} {st['n']:>3.0f} {st['median_ms']:>10.2f} {st['p90_ms']:>8.2f} "
                f"{st['min_ms']:>8.2f} {ratio['crun']:>7} {ratio['runc']:>7}"
            )
            if s.failures:
                print(f"  {len(s.failures)} failed runs, e.g. {s.failures[0]}")
            if s.leaked_cgroups:
                print(f"  {s.leaked_cgroups} runs left their cgroup behind (removed)")
        result["runtimes"] = {
            s.name: {
                "binary": str(s.binary),
                "stats": stats.get(s.name),
                "samples_ms": [x * 1e3 for x in s.samples],
                "failures": s.failures,
                "leaked_cgroups": s.leaked_cgroups,
            }
            for s in usable
        }

        # Start-up costs of the Python entry point itself.
        print()
        imp = import_time("bulkhead.runtime.cli", args.import_runs)
        result["import_time"] = imp
        if imp["cumulative_ms_median"] is not None:
            print(
                f"import bulkhead.runtime.cli: {imp['cumulative_ms_median']:.1f} ms cumulative "
                f"(median of {len(imp['cumulative_ms_samples'])}, python -X importtime)"
            )
            heavy = ", ".join(f"{n} {ms:.1f}" for n, ms in imp["heaviest_self_ms"][:6])
            print(f"  heaviest self times (ms): {heavy}")
        versions = {}
        for label, cmd in (
            ("python -c pass", [str(PYTHON), "-c", "pass"]),
            ("bulkhead-runtime --version", [str(RUNTIMES["bulkhead-runtime"]), "--version"]),
            ("runc --version", [str(RUNTIMES["runc"]), "--version"]),
            ("crun --version", [str(RUNTIMES["crun"]), "--version"]),
        ):
            if not Path(cmd[0]).exists():
                continue
            samples = timed_command(cmd, args.version_runs)
            versions[label] = summary(samples)
            print(
                f"{label:<28} median {versions[label]['median_ms']:6.2f} ms, "
                f"p90 {versions[label]['p90_ms']:6.2f} ms (n={len(samples)})"
            )
        result["startup_commands"] = versions

        out_dir = Path(args.out)
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"runtime_start-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"\nsaved {out}")
        return 0
    finally:
        remove_cgroup(CGROUP_PARENT)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
