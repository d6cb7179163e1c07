#!/usr/bin/env python3
"""Memory per container monitor: bulkhead's monitor vs Podman's conmon vs containerd's shim.

Each engine keeps one process per running container between the engine and
the container's init: bulkhead's monitor (forked by its zygote), Podman's
``conmon`` (C), containerd's ``containerd-shim-runc-v2`` (Go). This runs N
(default 20) detached ``busybox sleep`` containers with each and reads every
such process's ``/proc/<pid>/smaps_rollup``:

*RSS*  resident pages, shared ones counted in full;
*PSS*  shared pages divided among the processes sharing them (what N
       monitors really cost together is the sum of their PSS);
*USS*  private pages only (``Private_Clean + Private_Dirty``): what one more
       container adds.

Subjects:

``bulkhead``       monitors driving bulkhead's runtime in-process, spawned
                   through :class:`~bulkhead.engine.zygote.ZygoteClient` (no
                   daemon needed); the zygote (one per host) is reported too.
``bulkhead-runc``  the same monitors driving Debian's runc.
``podman``         ``podman run -d --network=none busybox sleep 1000`` with all
                   of Podman's state in a temp dir (containers.conf: cgroupfs,
                   runc, default_ulimits within this host's limits; see
                   MACHINE-NOTES); the conmon PID from ``podman inspect``.
``containerd``     a private containerd (own root/state/socket, CRI off),
                   ``ctr run -d`` with ``--cgroup`` under ``/bulkhead``; the shim
                   is the parent of each task's init.

The image is the offline busybox image (``bulkhead.images.busybox``), saved
as a docker-archive for ``podman load`` / ``ctr images import``; bulkhead's
monitors run bundles on a busybox rootfs (the monitor does not care where a
bundle comes from). Everything is removed at the end (containers, daemons,
cgroups below ``/bulkhead/bench-mem-*``, temp dirs, containerd's shim
sockets under /run/containerd/s that were not there before).

Usage: ``.venv/bin/python bench/monitor_memory.py [--count 20] [--subjects bulkhead,bulkhead-runc,podman,containerd]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchlib import HERE, host_info, remove_cgroup, save_result

PODMAN = Path("/usr/bin/podman")
CONTAINERD = Path("/usr/bin/containerd")
CTR = Path("/usr/bin/ctr")
RUNC = Path("/usr/sbin/runc")
SHIM_DIR = Path("/run/containerd/s")
SUBJECTS = ("bulkhead", "bulkhead-runc", "podman", "containerd")


def smaps(pid: int) -> dict[str, int]:
    """RSS, PSS and USS of ``pid`` in KiB (from smaps_rollup)."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return {
        "rss": fields.get("Rss", 0),
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def processes_mentioning(*texts: str) -> list[int]:
    me = os.getpid()
    return [
        int(e)
        for e in os.listdir("/proc")
        if e.isdigit() and int(e) != me and any(t in cmdline(int(e)) for t in texts)
    ]


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def unmount_under(*roots: Path) -> None:
    from bulkhead.linux import mountinfo

    texts = [str(r) + "/" for r in roots]
    points = [
        m.mountpoint for m in mountinfo.read() if any(m.mountpoint.startswith(t) for t in texts)
    ]
    for mp in sorted(points, key=lambda p: -p.count("/")):
        subprocess.run(["umount", "-l", mp], capture_output=True, check=False)


def run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 120) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv[:6])} ...: exit {proc.returncode}: {proc.stderr.strip()}"
        )
    return proc.stdout


def wait_for(check: Callable[[], bool], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up in {timeout:.0f} s")
        time.sleep(0.05)


# ---------------------------------------------------------------- subjects


class Measured:
    def __init__(self, name: str, label: str) -> None:
        self.name = name
        self.label = label
        self.per_container: list[dict[str, int]] = []
        #: one-per-host helpers (bulkhead's zygote), not per container
        self.shared: dict[str, dict[str, int]] = {}
        self.start_s = 0.0


def bench_bulkhead(work: Path, n: int, runtime: str, cgroup_parent: str) -> Measured:
    from bulkhead.devtools.busybox import build_rootfs, make_bundle
    from bulkhead.engine.monitor import MonitorClient, MonitorConfig
    from bulkhead.engine.zygote import ZygoteClient

    label = (
        "bulkhead monitor (in-process runtime)"
        if runtime == "bulkhead"
        else "bulkhead monitor (runc)"
    )
    m = Measured("bulkhead" if runtime == "bulkhead" else "bulkhead-runc", label)
    exec_root = Path(tempfile.mkdtemp(prefix="bh-mem-", dir="/run"))
    rootfs = build_rootfs(work / "rootfs")
    zygote = ZygoteClient(exec_root)
    configs: list[MonitorConfig] = []
    try:

        async def go() -> list[int]:
            await zygote.ensure_running()
            pids = []
            t0 = time.monotonic()
            for i in range(n):
                cid = f"mem-{uuid.uuid4().hex[:8]}"
                bundle = make_bundle(
                    work / f"bundle{i}",
                    ["sleep", "1000"],
                    rootfs=rootfs,
                    config={
                        "root": {"path": str(rootfs), "readonly": True},
                        "linux": {"cgroupsPath": f"{cgroup_parent}/{cid}"},
                    },
                )
                cfg = MonitorConfig(
                    container_id=cid,
                    bundle=str(bundle),
                    runtime=runtime,
                    runtime_root=str(exec_root / "runtime" / Path(runtime).name),
                    state_dir=str(exec_root / cid),
                    log_path=str(work / f"{cid}-json.log"),
                )
                configs.append(cfg)
                spawned = await zygote.spawn(cfg)
                await MonitorClient(cfg.state_dir).start()
                pids.append(spawned.monitor_pid)
            m.start_s = time.monotonic() - t0
            return pids

        pids = asyncio.run(go())
        time.sleep(1.0)
        m.per_container = [smaps(p) for p in pids]
        zpid = zygote.pid()
        if zpid:
            m.shared["zygote"] = smaps(zpid)
    finally:

        async def stop() -> None:
            for cfg in configs:
                with contextlib.suppress(Exception):
                    await MonitorClient(cfg.state_dir).kill(signal.SIGKILL, all=True)

        asyncio.run(stop())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(
            MonitorClient(c.state_dir).alive() for c in configs
        ):
            time.sleep(0.05)
        zygote.stop()
        kill_pids(processes_mentioning(str(exec_root)))
        shutil.rmtree(exec_root, ignore_errors=True)
    return m


def bench_podman(work: Path, n: int, archive: Path, cgroup_parent: str) -> Measured:
    m = Measured("podman", "podman conmon")
    run_root = Path(tempfile.mkdtemp(prefix="bhm-", dir="/tmp"))  # podman: run root <= 50 chars
    conf = work / "containers.conf"
    conf.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "none"\n'
    )
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    base = [
        str(PODMAN), "--root", str(work / "root"), "--runroot", str(run_root / "run"),
        "--tmpdir", str(run_root / "tmp"), "--storage-driver", "overlay",
        "--network-config-dir", str(work / "net"),
    ]  # fmt: skip
    ids: list[str] = []
    try:
        run([*base, "load", "-q", "-i", str(archive)], env)
        m.label = (
            "podman "
            + run([str(PODMAN), "--version"]).split()[-1]
            + " conmon "
            + (run(["conmon", "--version"]).split()[2] if shutil.which("conmon") else "?")
        )
        t0 = time.monotonic()
        for _ in range(n):
            out = run(
                [*base, "run", "-d", "--network=none", f"--cgroup-parent={cgroup_parent}",
                 "busybox", "sleep", "1000"],
                env,
            )  # fmt: skip
            ids.append(out.strip().splitlines()[-1])
        m.start_s = time.monotonic() - t0
        time.sleep(1.0)
        for cid in ids:
            pid = int(run([*base, "inspect", "--format", "{{.State.ConmonPid}}", cid], env))
            m.per_container.append(smaps(pid))
    finally:
        if ids:
            subprocess.run([*base, "rm", "-f", "-t", "0", *ids], env=env, capture_output=True)
        kill_pids(processes_mentioning(str(work), str(run_root)))
        time.sleep(0.2)
        unmount_under(work, run_root)
        shutil.rmtree(run_root, ignore_errors=True)
    return m


def bench_containerd(work: Path, n: int, archive: Path, cgroup_parent: str) -> Measured:
    m = Measured("containerd", "containerd-shim-runc-v2")
    state = Path(tempfile.mkdtemp(prefix="bhc-", dir="/tmp"))
    sock = state / "containerd.sock"
    toml = work / "containerd.toml"
    toml.write_text(
        "version = 2\n"
        f'root = "{work / "containerd"}"\n'
        f'state = "{state / "state"}"\n'
        'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
        "[grpc]\n"
        f'  address = "{sock}"\n'
    )
    shims_before = set(os.listdir(SHIM_DIR)) if SHIM_DIR.is_dir() else None
    log = open(work / "containerd.log", "ab")  # noqa: SIM115 (closed in finally)
    daemon = subprocess.Popen(
        [str(CONTAINERD), "--config", str(toml)],
        stdout=log,
        stderr=log,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    ctr = [str(CTR), "--address", str(sock), "--namespace", "bench"]
    ids: list[str] = []
    try:
        wait_for(sock.exists, "containerd", 30)
        m.label = "containerd " + run([str(CONTAINERD), "--version"]).split()[2] + " shim-runc-v2"
        run([*ctr, "images", "import", "--no-unpack", str(archive)])
        ref = "docker.io/library/busybox:latest"
        t0 = time.monotonic()
        for i in range(n):
            cid = f"mem{i}"
            run(
                [*ctr, "run", "-d", "--cgroup", f"{cgroup_parent}/{cid}", ref, cid, "sleep", "1000"]
            )
            ids.append(cid)
        m.start_s = time.monotonic() - t0
        time.sleep(1.0)
        tasks = run([*ctr, "tasks", "ls"]).splitlines()[1:]
        for line in tasks:
            _, pid, _ = line.split(None, 2)
            m.per_container.append(smaps(ppid(int(pid))))
        m.shared["containerd"] = smaps(daemon.pid)
    finally:
        for cid in ids:
            subprocess.run([*ctr, "tasks", "kill", "-s", "SIGKILL", cid], capture_output=True)
        time.sleep(0.5)
        for cid in ids:
            subprocess.run([*ctr, "tasks", "rm", "-f", cid], capture_output=True)
            subprocess.run([*ctr, "containers", "rm", cid], capture_output=True)
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(20)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        kill_pids(processes_mentioning(str(work), str(state)))
        time.sleep(0.2)
        unmount_under(work, state)
        shutil.rmtree(state, ignore_errors=True)
        if SHIM_DIR.is_dir():
            for name in set(os.listdir(SHIM_DIR)) - (shims_before or set()):
                with contextlib.suppress(OSError):
                    (SHIM_DIR / name).unlink()
            if shims_before is None:
                with contextlib.suppress(OSError):
                    SHIM_DIR.rmdir()
                    SHIM_DIR.parent.rmdir()
    return m


# ---------------------------------------------------------------- report


def med(values: list[int]) -> float:
    return statistics.median(values) / 1024 if values else 0.0


def report(results: list[Measured], n: int) -> list[dict[str, Any]]:
    rows = []
    print(f"\nper-container monitor process, {n} sleeping busybox containers (MiB, median)")
    head = (
        f"{'subject':<44} {'n':>3} {'RSS':>7} {'PSS':>7} {'USS':>7} {'PSS sum':>8} {'start N':>8}"
    )
    print(head)
    print("-" * len(head))
    for m in results:
        pc = m.per_container
        pss_sum = sum(x["pss"] for x in pc) / 1024
        row = {
            "subject": m.name,
            "label": m.label,
            "n": len(pc),
            "rss_mib": med([x["rss"] for x in pc]),
            "pss_mib": med([x["pss"] for x in pc]),
            "uss_mib": med([x["uss"] for x in pc]),
            "pss_sum_mib": pss_sum,
            "start_all_s": m.start_s,
            "samples_kib": pc,
            "shared": m.shared,
        }
        rows.append(row)
        print(
            f"{m.label:<44} {len(pc):>3} {row['rss_mib']:>7.2f} {row['pss_mib']:>7.2f} "
            f"{row['uss_mib']:>7.2f} {pss_sum:>8.1f} {m.start_s:>7.2f}s"
        )
        for name, s in m.shared.items():
            print(
                f"{'  + ' + name + ' (one per host)':<44} {1:>3} {s['rss'] / 1024:>7.2f} "
                f"{s['pss'] / 1024:>7.2f} {s['uss'] / 1024:>7.2f}"
            )
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=20, help="containers per subject (default 20)")
    ap.add_argument("--subjects", default=",".join(SUBJECTS))
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2
    wanted = [s.strip() for s in args.subjects.split(",") if s.strip()]
    unknown = set(wanted) - set(SUBJECTS)
    if unknown:
        ap.error(f"unknown subjects: {sorted(unknown)}")
    need = {"bulkhead-runc": [RUNC], "podman": [PODMAN], "containerd": [CONTAINERD, CTR]}
    for s in list(wanted):
        missing = [str(p) for p in need.get(s, []) if not p.exists()]
        if missing:
            print(f"skipping {s}: {', '.join(missing)} not installed")
            wanted.remove(s)
    work = Path(tempfile.mkdtemp(prefix="bench-monitor-memory-"))
    cgroup_parent = f"/bulkhead/bench-mem-{uuid.uuid4().hex[:6]}"
    results: list[Measured] = []
    try:
        archive = work / "busybox.tar"
        if {"podman", "containerd"} & set(wanted):
            from bulkhead.images import archive as archive_mod
            from bulkhead.images.store import ImageStore

            store_dir = work / "images"
            subprocess.run(
                [sys.executable, "-m", "bulkhead.images.busybox", "--store", str(store_dir)],
                check=True,
                capture_output=True,
            )
            archive_mod.save(ImageStore(store_dir), ["busybox"], archive)
        for s in wanted:
            sub = work / s
            sub.mkdir()
            print(f"{s}: starting {args.count} containers ...", flush=True)
            if s == "bulkhead":
                results.append(bench_bulkhead(sub, args.count, "bulkhead", cgroup_parent))
            elif s == "bulkhead-runc":
                results.append(bench_bulkhead(sub, args.count, str(RUNC), cgroup_parent))
            elif s == "podman":
                results.append(bench_podman(sub, args.count, archive, cgroup_parent))
            elif s == "containerd":
                results.append(bench_containerd(sub, args.count, archive, cgroup_parent))
    finally:
        time.sleep(0.3)
        left = [p for p in remove_cgroup(cgroup_parent) if Path(p).exists()]
        if left:
            print(f"WARNING: cgroups left behind: {left[:5]}")
        unmount_under(work)
        shutil.rmtree(work, ignore_errors=True)
    rows = report(results, args.count)
    path = save_result(
        args.out, "monitor_memory", {"host": host_info(), "count": args.count, "subjects": rows}
    )
    print(f"\nsaved {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
