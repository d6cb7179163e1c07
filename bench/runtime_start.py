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
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    HERE,
    HUGETLB_V1,
    PYTHON,
    RUNTIMES,
    Subject,
    busybox_bundle,
    fresh_bytecode,
    host_info,
    hugetlb_on_v1,
    is_mountpoint,
    remove_cgroup,
    round_robin,
    run_once,
    save_result,
    select_runtimes,
    summary,
    version_of,
    works,
)

CGROUP_PARENT = "/bulkhead/bench"


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

    present = select_runtimes(ap, args.runtimes)

    bytecode = fresh_bytecode()
    work = Path(tempfile.mkdtemp(prefix="bulkhead-bench-", dir=args.tmp))
    result: dict[str, Any] = {
        "benchmark": "runtime_start",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "command": "<runtime> --root <tmp> run <id>  (cwd = bundle, busybox `true`)",
        "cgroups_path": f"{CGROUP_PARENT}/<id>",
        "tmp": str(work),
        "runs_per_runtime": args.runs,
        "warmup_rounds": args.warmup,
        "bytecode": bytecode,
    }
    try:
        bundle, template = busybox_bundle(work, ["true"])
        subjects = []
        for name in present:
            root = work / f"state-{name}"
            root.mkdir()
            subjects.append(Subject(name, RUNTIMES[name], root))
        result["versions"] = {s.name: version_of(s.binary) for s in subjects}

        need_hugetlb = any(s.name == "crun" for s in subjects)
        hugetlb_ctx = (
            hugetlb_on_v1(args.keep_hugetlb_mount, CGROUP_PARENT)
            if need_hugetlb
            else contextlib.nullcontext()
        )
        with hugetlb_ctx as mounted_hugetlb:
            result["hugetlb_v1_mounted_by_benchmark"] = bool(mounted_hugetlb)
            result["hugetlb_v1_mounted"] = is_mountpoint(HUGETLB_V1)
            usable = []
            for s in subjects:
                err = works(s, bundle, template, CGROUP_PARENT)
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
            round_robin(
                usable,
                args.runs,
                args.warmup,
                lambda s: run_once(s, bundle, template, 60, CGROUP_PARENT),
            )
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

        out = save_result(args.out, "runtime_start", result)
        print(f"\nsaved {out}")
        return 0
    finally:
        remove_cgroup(CGROUP_PARENT)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
