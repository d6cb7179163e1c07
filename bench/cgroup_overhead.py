#!/usr/bin/env python3
"""What a container's cgroup costs a start: bulkhead in-process, in the runtime, and vs crun/runc.

Issue 3 ("Speed"): creating, configuring and removing a container's cgroups
should add under 2 ms to a start on this machine. The parts:

1. **In-process** (``--iterations``, >= 200): bulkhead's cgroup work for one
   container, phase by phase, with a realistic ``linux.resources`` (memory
   limit and swap, cpu shares/quota/period/cpus, pids limit, blkio weight,
   Docker's default device rules): ``new_manager(path)``, ``create()``,
   ``apply(resources, initial=True)``, ``add_pid(pid)`` of a short-lived
   child, ``destroy()``. Each iteration waits ``--gap-ms`` without any
   migration, then does it twice: the first ``add_pid`` is *cold* (the
   kernel's cgroup-migration lock has been idle, so taking it waits for an
   RCU grace period), the second, a fresh process into a fresh cgroup
   moments later, is *warm*. Totals are given for both; then ``apply``
   without resources (the default device rules only) against ``apply``
   with them, the in-process counterpart of part 4.
1c. **The primer** (``--primer-iterations`` per row): the runtime's
   ``_start_cgroup_primer`` emulated: a forked child moves itself into the
   new cgroup, and ``--primer-leads`` ms later a fresh process is moved in
   and timed: how much lead the primer needs to hide the cold wait.
2. **Profile** (``--profile-iterations``): the same with every file
   operation of ``bulkhead.cgroups.fs`` counted and timed, per phase; and
   (``--first-use-runs``) what a fresh process pays once: importing
   ``bulkhead.cgroups`` and the v1 manager, and ``detect()``.
3. **In the runtime** (``--insitu-runs``): ``bulkhead-runtime run`` with its
   cgroup calls wrapped by timers (same process, same code): imports,
   create, apply, the primer's fork, the init's ``add_pid`` (which overlaps
   the init's own setup, ``init.wait_in_cgroup``) and destroy.
4. **Side by side** (``--runs``, >= 30 each): crun, runc and
   bulkhead-runtime run the same busybox ``true`` bundle with and without
   ``linux.resources``, round-robin; the difference of medians (with a
   bootstrap interval) is each runtime's cgroup-configuration cost.

Then the verdict line. crun 1.8 needs the hugetlb controller on a v1
hierarchy on this project's hybrid hosts: for part 4 only, the benchmark
mounts it and restores the layout afterwards (bench/benchlib.py, shared
with runtime_start.py; see bench/README.md).

Usage (as root): ``.venv/bin/python bench/cgroup_overhead.py [--iterations 200] [--runs 60]``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchlib import (
    CGROUP_ROOT,
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
    percentile,
    remove_cgroup,
    round_robin,
    run_once,
    save_result,
    select_runtimes,
    summary,
    version_of,
    works,
)

CGROUP_PARENT = "/bulkhead/bench-cgroups"
TARGET_MS = 2.0
CHILD_BINARY = "/bin/cat"
PHASES = ("new", "create", "apply", "add_pid", "destroy")

#: moby's oci.DefaultLinuxSpec: what `docker run` puts in linux.resources.devices.
DOCKER_DEVICES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},  # /dev/zero
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},  # /dev/null
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},  # /dev/urandom
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},  # /dev/random
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},  # /dev/tty
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},  # /dev/console
    {"allow": False, "type": "c", "major": 10, "minor": 229, "access": "rwm"},  # /dev/fuse
]


def host_cpus() -> str:
    """The CPUs this process may use, in the kernel's list format (``0-1``)."""
    from bulkhead.cgroups.resources import format_id_list

    return format_id_list(set(os.sched_getaffinity(0)))


def realistic_resources() -> dict[str, Any]:
    """``docker run -m 512m --memory-swap 1g --cpu-shares 512 --cpus 0.5 --cpuset-cpus <all>
    --pids-limit 1024 --blkio-weight 500``'s ``linux.resources``."""
    return {
        "devices": DOCKER_DEVICES,
        "memory": {"limit": 512 << 20, "swap": 1 << 30},
        "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": host_cpus()},
        "pids": {"limit": 1024},
        "blockIO": {"weight": 500},
    }


def with_resources(template: dict[str, Any], resources: dict[str, Any] | None) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(json.dumps(template))
    if resources is None:
        spec["linux"].pop("resources", None)
    else:
        spec["linux"]["resources"] = resources
    return spec


def ms(seconds: float) -> float:
    return seconds * 1e3


# ---------------------------------------------------------------- 1. in-process


def children(n: int) -> list[subprocess.Popen[bytes]]:
    """Start ``n`` short-lived processes (``cat`` reading a pipe) to move into cgroups.

    Spawned (vfork + exec), not forked: a forked copy of this interpreter
    would make our own next writes to memory copy-on-write faults, which
    the phases measured right after would pay for.
    """
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(n):
            procs.append(
                subprocess.Popen(
                    [CHILD_BINARY],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
    except BaseException:
        release(procs)
        raise
    return procs


def release(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """Let the children exit (end of their input) and reap them."""
    for p in procs:
        if p.stdin is not None:
            p.stdin.close()
    for p in procs:
        p.wait()


class Phase:
    """The name of the phase now running, for the profile's file-operation hooks."""

    now = "-"


def one_container(
    path: str, resources: Any, pid: int, label: str = ""
) -> tuple[Any, dict[str, float]]:
    """new_manager, create, apply, add_pid of bulkhead's cgroup code; (manager, seconds per phase).

    ``label`` (cold, warm) names the add_pid phase for the profile.
    """
    from bulkhead.cgroups import new_manager

    pc = time.perf_counter
    Phase.now = "new"
    t0 = pc()
    cg = new_manager(path)
    Phase.now = "create"
    t1 = pc()
    cg.create()
    Phase.now = "apply"
    t2 = pc()
    cg.apply(resources, initial=True)
    Phase.now = f"add_pid {label}".strip()
    t3 = pc()
    cg.add_pid(pid)
    t4 = pc()
    Phase.now = "-"
    return cg, {"new": t1 - t0, "create": t2 - t1, "apply": t3 - t2, "add_pid": t4 - t3}


def iteration(i: int, resources: Any, gap: float) -> dict[str, Any]:
    """One cold and one warm container's cgroup, ``gap`` seconds after the last migration."""
    time.sleep(gap)
    procs = children(2)
    managers = []
    out: dict[str, Any] = {}
    try:
        t_cold_added = 0.0
        for label, pid in (("cold", procs[0].pid), ("warm", procs[1].pid)):
            cg, phases = one_container(f"{CGROUP_PARENT}/ip{i}-{label}", resources, pid, label)
            managers.append((label, cg))
            out[label] = phases
            if label == "cold":
                t_cold_added = time.perf_counter()
            else:
                # how long after the cold migration the warm one started
                out["warm_after_ms"] = ms(time.perf_counter() - phases["add_pid"] - t_cold_added)
    finally:
        release(procs)
        for label, cg in managers:
            Phase.now = "destroy"
            t = time.perf_counter()
            cg.destroy()
            out[label]["destroy"] = time.perf_counter() - t
            Phase.now = "-"
    for label in ("cold", "warm"):
        out[label]["total"] = sum(out[label][p] for p in PHASES)
    return out


def run_inprocess(resources: Any, iterations: int, gap: float, warmup: int) -> dict[str, Any]:
    for i in range(warmup):
        iteration(-1 - i, resources, gap)
    samples: dict[str, dict[str, list[float]]] = {
        "cold": defaultdict(list),
        "warm": defaultdict(list),
    }
    warm_after = []
    for i in range(iterations):
        rec = iteration(i, resources, gap)
        for label in ("cold", "warm"):
            for k, v in rec[label].items():
                samples[label][k].append(v)
        warm_after.append(rec["warm_after_ms"])
    return {"samples": samples, "warm_after_ms": warm_after}


def print_inprocess(res: dict[str, Any]) -> dict[str, Any]:
    s = res["samples"]
    stats: dict[str, Any] = {}
    print(f"{'phase':<26} {'n':>4} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} {'max ms':>8}")

    def row(label: str, xs: list[float]) -> None:
        st = summary(xs)
        stats[label] = st
        print(
            f"{label:<26} {st['n']:>4.0f} {st['median_ms']:>10.3f} {st['p90_ms']:>8.3f} "
            f"{st['min_ms']:>8.3f} {st['max_ms']:>8.3f}"
        )

    for p in PHASES:
        if p == "add_pid":
            row("add_pid cold", s["cold"]["add_pid"])
            row("add_pid warm", s["warm"]["add_pid"])
        else:
            row(p, s["cold"][p] + s["warm"][p])
    row("total, warm add_pid", s["warm"]["total"])
    row("total, cold add_pid", s["cold"]["total"])
    no_add = [t - a for t, a in zip(s["warm"]["total"], s["warm"]["add_pid"], strict=True)]
    no_add += [t - a for t, a in zip(s["cold"]["total"], s["cold"]["add_pid"], strict=True)]
    row("total without add_pid", no_add)
    wa = res["warm_after_ms"]
    print(
        f"(warm: a fresh process into a fresh cgroup, {statistics.median(wa):.1f} ms after "
        "the cold migration; phases other than add_pid pool both containers)"
    )
    return stats


def run_apply_variants(resources: Any, iterations: int) -> dict[str, Any]:
    """``apply(None, initial=True)`` (the default device rules only) vs the full resources.

    The in-process counterpart of part 4's with/without difference: fresh
    cgroups, the two variants alternating, no process moved.
    """
    from bulkhead.cgroups import new_manager

    samples: dict[str, list[float]] = {"without": [], "with": []}
    for i in range(iterations):
        for variant in ("without", "with") if i % 2 else ("with", "without"):
            cg = new_manager(f"{CGROUP_PARENT}/apply{i}-{variant}")
            cg.create()
            try:
                t = time.perf_counter()
                cg.apply(resources if variant == "with" else None, initial=True)
                samples[variant].append(time.perf_counter() - t)
            finally:
                cg.destroy()
    diff = statistics.median(samples["with"]) - statistics.median(samples["without"])
    lo, hi = bootstrap_diff(samples["with"], samples["without"])
    return {
        "without": summary(samples["without"]),
        "with": summary(samples["with"]),
        "diff_ms": ms(diff),
        "ci95_ms": [ms(lo), ms(hi)],
    }


def print_apply_variants(r: dict[str, Any]) -> None:
    w, wo = r["with"], r["without"]
    print(
        f"apply without linux.resources (default device rules only): median {wo['median_ms']:.3f}"
        f" ms; with them: {w['median_ms']:.3f} ms; difference {r['diff_ms']:+.3f} ms "
        f"(95% CI {r['ci95_ms'][0]:+.3f} .. {r['ci95_ms'][1]:+.3f}; n={w['n']:.0f} each)"
    )


# ---------------------------------------------------------------- 1c. the primer


def spin_until(t: float) -> None:
    while time.perf_counter() < t:
        pass


def primed_iteration(
    i: int, resources: Any, gap: float, lead: float, one_hierarchy: bool
) -> dict[str, float]:
    """The runtime's primer, emulated: after create+apply, fork a child that moves itself into
    the cgroup (all hierarchies, as ``_start_cgroup_primer``, or only the first one); ``lead``
    seconds later, time the ``add_pid`` of a fresh process."""
    from bulkhead.cgroups import fs, new_manager

    time.sleep(gap)
    procs = children(1)
    cg = new_manager(f"{CGROUP_PARENT}/primed{i}")
    try:
        cg.create()
        cg.apply(resources, initial=True)
        first = f"{next(iter(cg.paths().values()))}/cgroup.procs"
        t0 = time.perf_counter()
        primer = os.fork()
        if primer == 0:  # pragma: no cover - child
            code = 0
            try:
                if one_hierarchy:
                    fs.write(first, "0")
                else:
                    cg.add_pid(0)
            except BaseException:
                code = 1
            os._exit(code)
        forked = time.perf_counter() - t0
        spin_until(t0 + lead)
        t1 = time.perf_counter()
        cg.add_pid(procs[0].pid)
        added = time.perf_counter() - t1
        os.waitpid(primer, 0)
    finally:
        release(procs)
        cg.destroy()
    return {"fork": forked, "add_pid": added}


def run_primer(
    resources: Any, iterations: int, gap: float, leads_ms: Sequence[float]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    k = 0
    for lead in leads_ms:
        for one in (False, True):
            key = f"{lead:g} {'one' if one else 'all'}"
            recs = []
            for _ in range(iterations):
                recs.append(primed_iteration(k, resources, gap, lead / 1e3, one))
                k += 1
            out[key] = {
                "lead_ms": lead,
                "primer_writes": "first hierarchy" if one else "every hierarchy",
                "add_pid": summary([r["add_pid"] for r in recs]),
                "fork": summary([r["fork"] for r in recs]),
            }
    return out


def print_primer(res: dict[str, Any]) -> None:
    print(
        f"{'lead ms':>7}  {'primer moves itself in':<22} {'n':>3} {'add_pid median':>14} "
        f"{'p90':>7} {'max':>7}  {'fork ms':>7}"
    )
    for r in res.values():
        a, f = r["add_pid"], r["fork"]
        print(
            f"{r['lead_ms']:>7g}  {r['primer_writes']:<22} {a['n']:>3.0f} {a['median_ms']:>14.3f} "
            f"{a['p90_ms']:>7.3f} {a['max_ms']:>7.3f}  {f['median_ms']:>7.3f}"
        )


# ---------------------------------------------------------------- 2. profile


def hierarchy_of(path: str) -> str:
    """``memory`` for /sys/fs/cgroup/memory/...; the path itself otherwise."""
    prefix = f"{CGROUP_ROOT}/"
    if not path.startswith(prefix):
        return path
    return path[len(prefix) :].split("/", 1)[0]


@contextlib.contextmanager
def fs_hooks(ops: list[tuple[str, str, str, str, float]]) -> Iterator[None]:
    """Time every call of ``bulkhead.cgroups.fs``'s file operations, per :class:`Phase`."""
    from bulkhead.cgroups import fs

    names = ("write", "read", "exists", "mkdir", "rmdir")
    saved = {n: getattr(fs, n) for n in names}

    def hook(name: str, orig: Callable[..., Any]) -> Callable[..., Any]:
        def timed(path: str, *args: Any) -> Any:
            t = time.perf_counter()
            try:
                return orig(path, *args)
            finally:
                dt = time.perf_counter() - t
                base = os.path.basename(path) if name not in ("mkdir", "rmdir") else ""
                ops.append((Phase.now, name, hierarchy_of(path), base, dt))

        return timed

    for n in names:
        setattr(fs, n, hook(n, saved[n]))
    try:
        yield
    finally:
        for n, f in saved.items():
            setattr(fs, n, f)


def run_profile(resources: Any, iterations: int, gap: float) -> dict[str, Any]:
    ops: list[tuple[str, str, str, str, float]] = []
    phase_time: dict[str, float] = defaultdict(float)
    with fs_hooks(ops):
        for i in range(iterations):
            rec = iteration(10_000 + i, resources, gap)
            for label in ("cold", "warm"):
                for p in PHASES:
                    key = f"add_pid {label}" if p == "add_pid" else p
                    phase_time[key] += rec[label][p]
    # Per container: two containers per iteration, except add_pid (one cold, one warm).
    per: dict[str, dict[str, Any]] = {}
    for key in ("new", "create", "apply", "add_pid cold", "add_pid warm", "destroy"):
        n = iterations if key.startswith("add_pid") else 2 * iterations
        mine = [o for o in ops if o[0] == key]
        counts = Counter(o[1] for o in mine)
        op_time = sum(o[4] for o in mine)
        by_file: dict[str, float] = defaultdict(float)
        for o in mine:
            by_file[f"{o[1]} {o[2]}/{o[3]}".rstrip("/")] += o[4]
        per[key] = {
            "ms_per_container": ms(phase_time[key] / n),
            "file_ops_ms_per_container": ms(op_time / n),
            "ops_per_container": {k: v / n for k, v in sorted(counts.items())},
            "heaviest_ops_ms_per_container": [
                (f, ms(t / n)) for f, t in sorted(by_file.items(), key=lambda kv: -kv[1])[:6]
            ],
        }
    return per


def print_profile(per: dict[str, Any]) -> None:
    print(f"{'phase':<14} {'ms':>7} {'in file ops':>11}  operations per container")
    for key, p in per.items():
        ops = ", ".join(f"{n:.3g} {op}" for op, n in p["ops_per_container"].items()) or "none"
        print(
            f"{key:<14} {p['ms_per_container']:>7.3f} {p['file_ops_ms_per_container']:>11.3f}  {ops}"
        )
        heavy = "; ".join(f"{f} {t:.3f}" for f, t in p["heaviest_ops_ms_per_container"][:4])
        if heavy:
            print(f"{'':<14} heaviest (ms): {heavy}")


FIRST_USE = r"""
import sys, time
import bulkhead.runtime.container  # what a start has imported when it makes the cgroup
pc = time.perf_counter
t0 = pc()
import bulkhead.cgroups
t1 = pc()
bulkhead.cgroups.detect()
t2 = pc()
import bulkhead.cgroups.v1
t3 = pc()
bulkhead.cgroups.new_manager(sys.argv[1])
t4 = pc()
bulkhead.cgroups.new_manager(sys.argv[1])
t5 = pc()
print(t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)
"""
FIRST_USE_STEPS = (
    "import bulkhead.cgroups",
    "detect()",
    "import bulkhead.cgroups.v1 (+ controllers)",
    "first new_manager (after those)",
    "second new_manager",
)


def first_use(n: int) -> dict[str, Any]:
    """What a fresh process pays once before its first cgroup: imports and ``detect()``.

    Measured after importing ``bulkhead.runtime.container`` (the runtime has
    it loaded by then), so only the cgroup package's own modules count;
    ``python -X importtime`` gives their self times (median of ``n``).
    """
    rows = []
    self_us: dict[str, list[int]] = defaultdict(list)
    for _ in range(n):
        out = subprocess.run(
            [str(PYTHON), "-c", FIRST_USE, f"{CGROUP_PARENT}/first-use"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        rows.append([float(x) for x in out])
        proc = subprocess.run(
            [str(PYTHON), "-X", "importtime", "-c", FIRST_USE, f"{CGROUP_PARENT}/first-use"],
            capture_output=True,
            text=True,
            check=True,
        )
        seen = False
        for line in proc.stderr.splitlines():
            parts = line.split("|")
            if len(parts) != 3:
                continue
            name = parts[2].strip()
            if name == "bulkhead.runtime.container":
                seen = True  # what follows is imported for the cgroups
                continue
            if seen:
                with contextlib.suppress(ValueError):
                    self_us[name].append(int(parts[0].split(":")[1]))
    steps = {label: summary([r[k] for r in rows]) for k, label in enumerate(FIRST_USE_STEPS)}
    once = [sum(r[:4]) for r in rows]
    modules = sorted(
        ((name, statistics.median(us) / 1e3) for name, us in self_us.items()),
        key=lambda kv: -kv[1],
    )
    return {"steps": steps, "once": summary(once), "modules_self_ms": modules}


def print_first_use(fu: dict[str, Any]) -> None:
    print(f"{'once per process':<44} {'median ms':>10} {'p90 ms':>8}")
    for label, st in fu["steps"].items():
        print(f"{label:<44} {st['median_ms']:>10.3f} {st['p90_ms']:>8.3f}")
    print(
        f"{'sum of the first four':<44} {fu['once']['median_ms']:>10.3f} {fu['once']['p90_ms']:>8.3f}"
    )
    mods = fu["modules_self_ms"]
    total = sum(t for _, t in mods)
    print(
        f"  {len(mods)} modules imported for the cgroups, {total:.2f} ms of self time "
        "(-X importtime, medians): "
        + ", ".join(f"{n.removeprefix('bulkhead.cgroups.')} {t:.2f}" for n, t in mods[:8])
    )


# ---------------------------------------------------------------- 3. in the runtime

# bulkhead-runtime's own code, with timers around its cgroup calls. Every record
# goes straight to a file (the primer child exits with os._exit, and so does the CLI).
INSITU_DRIVER = r"""
import os, sys, time
pc = time.perf_counter
_fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
def rec(name, t0, t1):
    os.write(_fd, f"{name} {os.getpid()} {t0!r} {t1!r}\n".encode())
rec("driver", pc(), pc())
import bulkhead.runtime.container as container
t0 = pc()
import bulkhead.cgroups as cgroups
rec("import_cgroups", t0, pc())

def timed(name, f):
    def wrapper(*args, **kw):
        t = pc()
        try:
            return f(*args, **kw)
        finally:
            rec(name, t, pc())
    return wrapper

_new = cgroups.new_manager
def new_manager(*args, **kw):
    t = pc()
    m = _new(*args, **kw)
    rec("new", t, pc())
    cls = type(m)
    if not getattr(cls, "_bench_timed", False):
        for name in ("create", "apply", "add_pid", "destroy"):
            setattr(cls, name, timed(name, getattr(cls, name)))
        cls._bench_timed = True
    return m
cgroups.new_manager = new_manager
if hasattr(container, "_start_cgroup_primer"):
    container._start_cgroup_primer = timed("primer_fork", container._start_cgroup_primer)
from bulkhead.runtime.cli import main
main(sys.argv[2:])
"""


def insitu_once(bundle: Path, template: dict[str, Any], root: Path, work: Path) -> dict[str, Any]:
    cid = f"bench-insitu-{uuid.uuid4().hex[:12]}"
    cgroups_path = f"{CGROUP_PARENT}/{cid}"
    spec = json.loads(json.dumps(template))
    spec["linux"]["cgroupsPath"] = cgroups_path
    (bundle / "config.json").write_text(json.dumps(spec))
    records = work / f"{cid}.rec"
    t_spawn = time.perf_counter()
    proc = subprocess.run(
        [str(PYTHON), "-c", INSITU_DRIVER, str(records), "--root", str(root), "run", cid],
        cwd=bundle,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        timeout=60,
        check=False,
    )
    t_end = time.perf_counter()
    if remove_cgroup(cgroups_path):
        print(f"  (in-situ run left {cgroups_path} behind; removed)")
    if proc.returncode != 0:
        raise RuntimeError(f"instrumented run failed: {proc.stderr.decode(errors='replace')}")
    main_pid = 0
    ev: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for line in records.read_text().splitlines():
        name, pid, a, b = line.split()
        if name == "driver":
            main_pid = int(pid)
            continue
        if name == "add_pid" and int(pid) != main_pid:
            name = "primer_add_pid"
        ev[name].append((float(a), float(b)))
    records.unlink()

    def dur(name: str) -> float:
        return sum(b - a for a, b in ev.get(name, []))

    out: dict[str, Any] = {
        "wall": t_end - t_spawn,
        **{n: dur(n) for n in ("import_cgroups", "create", "apply", "primer_fork", "destroy")},
        "new": dur("new"),
        "new_first": (ev["new"][0][1] - ev["new"][0][0]) if ev.get("new") else 0.0,
        "add_pid": dur("add_pid"),
        "primer_add_pid": dur("primer_add_pid"),
    }
    if ev.get("primer_fork") and ev.get("add_pid"):
        fork_start = ev["primer_fork"][0][0]
        add_start = ev["add_pid"][0][0]
        out["lead"] = add_start - fork_start  # primer forked -> the init's migration begins
        if ev.get("primer_add_pid"):
            out["primer_done_after_init_add_start"] = ev["primer_add_pid"][0][1] - add_start
    if ev.get("create"):
        out["cgroup_work_starts_at"] = ev["create"][0][0] - t_spawn
    # Serial work of the runtime process. The init's add_pid is not in it: the
    # init works on its namespaces and mounts meanwhile (init.wait_in_cgroup).
    out["serial"] = sum(
        out[k] for k in ("import_cgroups", "new", "create", "apply", "primer_fork", "destroy")
    )
    out["with_add_pid"] = out["serial"] + out["add_pid"]
    return out


def run_insitu(
    bundle: Path, template: dict[str, Any], work: Path, runs: int, gap: float
) -> list[dict[str, Any]]:
    root = work / "state-insitu"
    root.mkdir(exist_ok=True)
    insitu_once(bundle, template, root, work)  # warm-up (page cache, .pyc)
    out = []
    for _ in range(runs):
        time.sleep(gap)
        out.append(insitu_once(bundle, template, root, work))
    return out


def print_insitu(runs: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [
        ("import_cgroups", "import bulkhead.cgroups"),
        ("new", "new_manager (all calls)"),
        ("new_first", "  of which the first"),
        ("create", "create"),
        ("apply", "apply"),
        ("primer_fork", "fork the primer"),
        ("lead", "primer fork -> init add_pid"),
        ("primer_add_pid", "primer's add_pid (its own)"),
        ("add_pid", "init add_pid"),
        ("destroy", "destroy (in delete)"),
        ("serial", "sum without init add_pid"),
        ("with_add_pid", "sum with init add_pid"),
        ("wall", "whole `run` (instrumented)"),
    ]
    stats: dict[str, Any] = {}
    print(f"{'step':<30} {'n':>3} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
    for key, label in keys:
        xs = [r[key] for r in runs if key in r]
        if not xs:
            continue
        st = summary(xs)
        stats[key] = st
        print(
            f"{label:<30} {st['n']:>3.0f} {st['median_ms']:>10.3f} {st['p90_ms']:>8.3f} "
            f"{st['min_ms']:>8.3f}"
        )
    waited = [
        r["primer_done_after_init_add_start"]
        for r in runs
        if "primer_done_after_init_add_start" in r
    ]
    if waited:
        late = sum(1 for x in waited if x > 0)
        print(
            f"(the primer's migration was still running when the init's began in {late} of "
            f"{len(waited)} runs. Sums: import + new_manager + create + apply + primer fork + "
            "destroy, which the runtime does one after the other, and that plus the init's "
            "add_pid, which overlaps the init's own namespace and mount work)"
        )
    return stats


# ---------------------------------------------------------------- 4. side by side


def bootstrap_diff(
    a: Sequence[float], b: Sequence[float], n: int = 2000, seed: int = 1
) -> tuple[float, float]:
    """95% bootstrap interval of median(a) - median(b)."""
    rng = random.Random(seed)
    diffs = sorted(
        statistics.median(rng.choices(a, k=len(a))) - statistics.median(rng.choices(b, k=len(b)))
        for _ in range(n)
    )
    return percentile(diffs, 2.5), percentile(diffs, 97.5)


def run_side_by_side(
    args: argparse.Namespace,
    present: list[str],
    bundle: Path,
    template: dict[str, Any],
    resources: dict[str, Any],
    work: Path,
    result: dict[str, Any],
) -> dict[str, Any] | None:
    variants = {
        "without": with_resources(template, None),
        "with": with_resources(template, resources),
    }
    subjects: list[Subject] = []
    for name in present:
        root = work / f"state-{name}"
        root.mkdir(exist_ok=True)
        for v, spec in variants.items():
            subjects.append(Subject(f"{name} {v}", RUNTIMES[name], root, spec))
    result["versions"] = {n: version_of(RUNTIMES[n]) for n in present}
    need_hugetlb = "crun" in present
    ctx = (
        hugetlb_on_v1(args.keep_hugetlb_mount, CGROUP_PARENT)
        if need_hugetlb
        else contextlib.nullcontext()
    )
    pause = args.pause_ms / 1e3

    def run(s: Subject) -> None:
        if pause:
            time.sleep(pause)
        run_once(s, bundle, template, 60, CGROUP_PARENT)

    with ctx as mounted:
        result["hugetlb_v1_mounted_by_benchmark"] = bool(mounted)
        result["hugetlb_v1_mounted"] = is_mountpoint(HUGETLB_V1)
        result["hierarchies_in_side_by_side"] = sorted(p.name for p in CGROUP_ROOT.iterdir())
        errors = {s.name: works(s, bundle, template, CGROUP_PARENT) for s in subjects}
        if "blockIO" in resources and any(
            n.endswith(" with") and e and "blkio" in e for n, e in errors.items()
        ):
            # crun 1.8 writes blkio.weight only, which a host whose disks use BFQ
            # lacks (it has blkio.bfq.weight): compare the rest on equal terms.
            bad = [n for n, e in errors.items() if n.endswith(" with") and e and "blkio" in e]
            print(
                f"NOTE: {', '.join(bad)} cannot set blockIO.weight here ({errors[bad[0]]}); "
                "the side-by-side runs without blockIO for every runtime"
            )
            resources = {k: v for k, v in resources.items() if k != "blockIO"}
            for s in subjects:
                if s.name.endswith(" with"):
                    s.template = with_resources(template, resources)
                    errors[s.name] = works(s, bundle, template, CGROUP_PARENT)
        result["side_by_side_resources"] = resources
        usable = []
        for s in subjects:
            err = errors[s.name]
            if err:
                print(f"skipping {s.name}: it cannot run the bundle: {err}")
                result.setdefault("unusable", {})[s.name] = err
            else:
                usable.append(s)
        if not usable:
            print("no runtime could run the bundle", file=sys.stderr)
            return None
        print(
            f"{len(usable)} runtime/variant pairs x {args.runs} runs (+{args.warmup} warm-up "
            f"rounds), round-robin, pause {args.pause_ms:g} ms",
            flush=True,
        )
        round_robin(usable, args.runs, args.warmup, run)
        remove_cgroup(CGROUP_PARENT)

    stats = {s.name: summary(s.samples) for s in usable if s.samples}
    by_name = {s.name: s for s in usable}
    print()
    print(f"{'runtime':<18} {'resources':<10} {'n':>3} {'median ms':>10} {'p90 ms':>8} "
          f"{'min ms':>8} {'x crun':>7} {'x runc':>7}")  # fmt: skip
    for s in usable:
        st = stats.get(s.name)
        name, variant = s.name.rsplit(" ", 1)
        if st is None:
            print(f"{name:<18} {variant:<10} all {len(s.failures)} runs failed: {s.failures[:1]}")
            continue
        for ref in ("crun", "runc"):
            ref_st = stats.get(f"{ref} {variant}")
            if ref_st:
                st[f"ratio_to_{ref}"] = st["median_ms"] / ref_st["median_ms"]
        ratio = {
            ref: (f"{st[f'ratio_to_{ref}']:.2f}" if f"ratio_to_{ref}" in st else "-")
            for ref in ("crun", "runc")
        }
        print(
            f"{name:<18} {variant:<10} {st['n']:>3.0f} {st['median_ms']:>10.2f} "
            f"{st['p90_ms']:>8.2f} {st['min_ms']:>8.2f} {ratio['crun']:>7} {ratio['runc']:>7}"
        )
        if s.failures:
            print(f"  {len(s.failures)} failed runs, e.g. {s.failures[0]}")
        if s.leaked_cgroups:
            print(f"  {s.leaked_cgroups} runs left their cgroup behind (removed)")

    costs: dict[str, Any] = {}
    print()
    print("cgroup-configuration cost = median(with resources) - median(without):")
    for name in present:
        w, wo = by_name.get(f"{name} with"), by_name.get(f"{name} without")
        if not (w and wo and w.samples and wo.samples):
            continue
        diff = statistics.median(w.samples) - statistics.median(wo.samples)
        lo, hi = bootstrap_diff(w.samples, wo.samples)
        costs[name] = {"diff_ms": ms(diff), "ci95_ms": [ms(lo), ms(hi)]}
    for name, c in costs.items():
        ratios = []
        for ref in ("crun", "runc"):
            if ref in costs and ref != name and costs[ref]["diff_ms"] > 0.05:
                r = c["diff_ms"] / costs[ref]["diff_ms"]
                c[f"ratio_to_{ref}"] = r
                ratios.append(f"{r:.2f} x {ref}")
        print(
            f"  {name:<18} {c['diff_ms']:+7.2f} ms  (95% CI {c['ci95_ms'][0]:+.2f} .. "
            f"{c['ci95_ms'][1]:+.2f})  {', '.join(ratios)}"
        )
    return {
        "subjects": {
            s.name: {
                "binary": str(s.binary),
                "stats": stats.get(s.name),
                "samples_ms": [ms(x) for x in s.samples],
                "failures": s.failures,
                "leaked_cgroups": s.leaked_cgroups,
            }
            for s in usable
        },
        "configuration_cost": costs,
    }


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--iterations", type=int, default=200, help="in-process iterations (>= 200)")
    ap.add_argument(
        "--gap-ms", type=float, default=100, help="idle time before each cold migration"
    )
    ap.add_argument("--primer-iterations", type=int, default=15, help="per lead and variant")
    ap.add_argument("--primer-leads", default="0,5,10,15,20", help="ms, comma-separated")
    ap.add_argument("--profile-iterations", type=int, default=30)
    ap.add_argument("--first-use-runs", type=int, default=10)
    ap.add_argument("--insitu-runs", type=int, default=20)
    ap.add_argument("--runs", type=int, default=60, help="side-by-side runs per pair (>= 30)")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first")
    ap.add_argument("--pause-ms", type=float, default=0, help="sleep before each side-by-side run")
    ap.add_argument(
        "--runtimes",
        default=",".join(RUNTIMES),
        help="comma-separated subset of " + ", ".join(RUNTIMES) + " (empty: skip part 4)",
    )
    ap.add_argument("--keep-hugetlb-mount", action="store_true")
    ap.add_argument("--tmp", default=None, help="directory for bundles and state (default: /tmp)")
    ap.add_argument("--out", default=str(HERE / "results"), help="where the JSON goes")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("cgroup_overhead.py needs root", file=sys.stderr)
        return 2
    present = select_runtimes(ap, args.runtimes)

    from bulkhead.cgroups import detect
    from bulkhead.oci.runtime_spec import decode_spec

    work = Path(tempfile.mkdtemp(prefix="bulkhead-bench-cg-", dir=args.tmp))
    layout = detect()
    resources_doc = realistic_resources()
    result: dict[str, Any] = {
        "benchmark": "cgroup_overhead",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "cgroup_mode": layout.mode,
        "hierarchies": [m.mountpoint for m in layout.v1_mounts()]
        + ([layout.unified.mountpoint] if layout.unified else []),
        "cgroups_path": f"{CGROUP_PARENT}/<id>",
        "resources": resources_doc,
        "tmp": str(work),
        "args": vars(args),
    }
    gap = args.gap_ms / 1e3
    result["bytecode"] = fresh_bytecode()
    try:
        bundle, template = busybox_bundle(work, ["true"])
        spec_with = with_resources(template, resources_doc)
        resources = decode_spec(json.dumps(spec_with).encode()).linux.resources  # type: ignore[union-attr]

        print(
            f"cgroup {layout.mode} layout, {len(result['hierarchies'])} hierarchies; "
            f"cgroups under {CGROUP_PARENT}"
        )
        if args.iterations:
            print(f"\n== 1. in-process: bulkhead.cgroups, {args.iterations} iterations "
                  f"(cold = {args.gap_ms:g} ms without migrations before)")  # fmt: skip
            inproc = run_inprocess(resources, args.iterations, gap, warmup=3)
            result["inprocess"] = {
                "stats": print_inprocess(inproc),
                "samples_ms": {
                    label: {k: [ms(x) for x in v] for k, v in d.items()}
                    for label, d in inproc["samples"].items()
                },
                "warm_after_ms": inproc["warm_after_ms"],
            }
            av = run_apply_variants(resources, args.iterations)
            print_apply_variants(av)
            result["inprocess"]["apply_variants"] = av

        if args.primer_iterations:
            leads = [float(x) for x in args.primer_leads.split(",") if x.strip()]
            print(f"\n== 1c. the primer: add_pid of a fresh process <lead> ms after a primer was "
                  f"forked ({args.primer_iterations} per row, cold)")  # fmt: skip
            primer = run_primer(resources, args.primer_iterations, gap, leads)
            print_primer(primer)
            result["primer"] = primer
            remove_cgroup(CGROUP_PARENT)

        if args.profile_iterations:
            print(f"\n== 2. profile: file operations of bulkhead.cgroups.fs, per container "
                  f"({args.profile_iterations} iterations, timers on)")  # fmt: skip
            per = run_profile(resources, args.profile_iterations, gap)
            print_profile(per)
            result["profile"] = per
        if args.first_use_runs:
            print(f"\n== 2b. once per process (fresh interpreter, {args.first_use_runs} runs)")
            fu = first_use(args.first_use_runs)
            result["first_use"] = fu
            print_first_use(fu)
        remove_cgroup(CGROUP_PARENT)

        if args.insitu_runs:
            print(f"\n== 3. in the runtime: `bulkhead-runtime run` with timers around its cgroup "
                  f"calls, {args.insitu_runs} runs, {args.gap_ms:g} ms apart")  # fmt: skip
            try:
                insitu = run_insitu(bundle, spec_with, work, args.insitu_runs, gap)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                print(f"skipped: {exc}")
                result["insitu_error"] = str(exc)
            else:
                result["insitu"] = {
                    "stats": print_insitu(insitu),
                    "runs_ms": [{k: ms(v) for k, v in r.items()} for r in insitu],
                }
            remove_cgroup(CGROUP_PARENT)

        if present:
            print("\n== 4. side by side: busybox `true`, with and without linux.resources")
            side = run_side_by_side(args, present, bundle, template, resources_doc, work, result)
            if side is not None:
                result["side_by_side"] = side

        # ------------------------------------------------------------ verdict
        print()
        if "inprocess" in result:
            st = result["inprocess"]["stats"]
            x = st["total, warm add_pid"]["median_ms"]
            print(
                f"bulkhead cgroup create+configure+remove: {x:.2f} ms (target < {TARGET_MS:g} ms)"
                f" -- {'met' if x < TARGET_MS else 'NOT met'} in-process"
            )
            print(
                f"  = median of new_manager + create + apply + add_pid (warm) + destroy, "
                f"p90 {st['total, warm add_pid']['p90_ms']:.2f} ms; with a cold add_pid "
                f"{st['total, cold add_pid']['median_ms']:.2f} ms"
            )
            result["verdict"] = {"total_ms": x, "target_ms": TARGET_MS, "met": x < TARGET_MS}
        if "insitu" in result and "serial" in result["insitu"]["stats"]:
            ins = result["insitu"]["stats"]

            def med(*keys: str) -> float:
                return float(sum(ins[k]["median_ms"] for k in keys if k in ins))

            print(
                f"  in bulkhead-runtime itself: {ins['serial']['median_ms']:.2f} ms median "
                f"(p90 {ins['serial']['p90_ms']:.2f}) of serial cgroup work; medians: imports + "
                f"detect {med('import_cgroups', 'new'):.2f}, create+apply+destroy "
                f"{med('create', 'apply', 'destroy'):.2f}, primer fork "
                f"{med('primer_fork'):.2f}; and the init's add_pid {med('add_pid'):.2f} "
                "(overlapping the init's own setup)"
            )
        side = result.get("side_by_side")
        if side:
            costs = side["configuration_cost"]
            print(
                "  configuring linux.resources (with - without), medians: "
                + ", ".join(f"{n} {c['diff_ms']:+.2f} ms" for n, c in costs.items())
            )

        out = save_result(args.out, "cgroup_overhead", result)
        print(f"\nsaved {out}")
        return 0
    finally:
        remove_cgroup(CGROUP_PARENT)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
