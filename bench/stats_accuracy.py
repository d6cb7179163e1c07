#!/usr/bin/env python3
"""How right is ``docker stats``' CPU % on bulkhead? CPU hogs at ``--cpus 0.5`` and ``1.0``.

For each limit a busybox hog (``sh -c 'while :; do :; done'``) runs on a
fresh daemon (temporary roots, as the integration tests make them). Each
round measures one window of ``--window`` seconds three ways:

``api``
    two ``GET /containers/{id}/stats?stream=false&one-shot=true`` samples at
    the window's ends, put through the docker CLI's formula
    (``Δtotal_usage / Δsystem_cpu_usage * online_cpus * 100``): what any
    Docker client computes from our documents.
``cgroup``
    the container's own CPU time over the same window (``cpuacct.usage`` on
    v1, ``cpu.stat usage_usec`` on v2), read directly, per second of wall
    time: the truth the API must agree with.
``docker``
    the stock ``docker stats --no-stream`` figure once per round (its own
    1-second window, so noisier).

The ideal is 50% and 100%; on a loaded host the hog may get less than its
quota (other work competes), which ``host idle`` (idle CPUs during the
window) shows: then ``api`` must still match ``cgroup``. Prints one line
per round and saves everything under bench/results/.

Needs root. ``.venv/bin/python bench/stats_accuracy.py [--window 5] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import REPO, host_info, save_result

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

HOG = ["sh", "-c", "while :; do :; done"]
#: Held shared, as a test session does: the sessions' cgroup leak check then waits for us.
SESSIONS_LOCK = "/run/bulkhead-test-sessions.lock"


def cgroup_cpu_ns(cgroup_parent: str, cid: str) -> int:
    from bulkhead.cgroups import detect

    rel = f"{cgroup_parent.strip('/')}/{cid}"
    if detect().version == 2:
        text = Path(f"/sys/fs/cgroup/{rel}/cpu.stat").read_text()
        return int(dict(line.split() for line in text.splitlines())["usage_usec"]) * 1000
    return int(Path(f"/sys/fs/cgroup/cpuacct/{rel}/cpuacct.usage").read_text())


def idle_ticks() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:8]]
    return fields[3] + fields[4], sum(fields)


def one_shot(client: Any, cid: str) -> dict[str, Any]:
    resp = client.request("GET", f"/containers/{cid}/stats", query={"stream": 0, "one-shot": 1})
    doc: dict[str, Any] = json.loads(resp.read())
    return doc


def measure(
    daemon: Any, client: Any, cpus: str, rounds: int, window: float
) -> list[dict[str, Any]]:
    from bulkhead.cli.stats import cpu_percent
    from bulkhead.engine.stats import chain

    r = daemon.docker("run", "-d", "--cpus", cpus, "busybox", *HOG)
    if r.returncode != 0:
        raise RuntimeError(f"docker run failed: {r.stderr}")
    cid = r.stdout.strip()
    out = []
    try:
        time.sleep(1.0)
        for n in range(rounds):
            i0, a0 = idle_ticks()
            first = one_shot(client, cid)
            cg0, t0 = cgroup_cpu_ns(daemon.cgroup_parent, cid), time.monotonic()
            time.sleep(window)
            second = chain(one_shot(client, cid), first)
            cg1, t1 = cgroup_cpu_ns(daemon.cgroup_parent, cid), time.monotonic()
            i1, a1 = idle_ticks()
            row = json.loads(
                daemon.docker("stats", "--no-stream", "--format", "{{json .}}", cid).stdout
            )
            thr0, thr1 = (
                first["cpu_stats"]["throttling_data"],
                second["cpu_stats"]["throttling_data"],
            )
            periods = thr1["periods"] - thr0["periods"]
            result = {
                "cpus": float(cpus),
                "round": n,
                "window_s": t1 - t0,
                "api_percent": cpu_percent(second),
                "cgroup_percent": (cg1 - cg0) / ((t1 - t0) * 1e9) * 100,
                "docker_cli_percent": float(row["CPUPerc"].rstrip("%")),
                "host_idle_cpus": (i1 - i0) / max(a1 - a0, 1) * (os.cpu_count() or 1),
                "throttled_fraction": (thr1["throttled_periods"] - thr0["throttled_periods"])
                / periods
                if periods
                else 0.0,
            }
            out.append(result)
            print(
                f"--cpus {cpus:>4} round {n}: api {result['api_percent']:6.2f}%  "
                f"cgroup {result['cgroup_percent']:6.2f}%  "
                f"docker stats {result['docker_cli_percent']:6.2f}%  "
                f"(ideal {float(cpus) * 100:.0f}%; host idle {result['host_idle_cpus']:.2f} CPUs, "
                f"throttled in {result['throttled_fraction'] * 100:.0f}% of periods)",
                flush=True,
            )
    finally:
        daemon.docker("rm", "-f", cid)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--window", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpus", default="0.5,1.0", help="comma-separated --cpus values")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root", file=sys.stderr)
        return 2

    from tests.integration.engine_fixtures import Daemon, busybox_image_store

    from bulkhead.cli.client import Client

    lock = open(SESSIONS_LOCK, "a")  # noqa: SIM115 - held for the whole run
    fcntl.flock(lock, fcntl.LOCK_SH)
    work = Path(tempfile.mkdtemp(prefix="bh-stats-bench-"))
    exec_root = Path(tempfile.mkdtemp(prefix="bh-", dir="/run"))
    daemon = None
    results: list[dict[str, Any]] = []
    problems: list[str] = []
    try:
        images = busybox_image_store(work)
        root = work / "daemon" / "root"
        root.mkdir(parents=True)
        shutil.copytree(images, root / "images", symlinks=True)
        daemon = Daemon(root, exec_root)
        daemon._clients = []
        daemon.start()
        client = Client(daemon.socket)
        for cpus in args.cpus.split(","):
            results += measure(daemon, client, cpus.strip(), args.rounds, args.window)
    finally:
        if daemon is not None:
            problems = daemon.cleanup()
        shutil.rmtree(exec_root, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        lock.close()
    for cpus in sorted({r["cpus"] for r in results}):
        mine = [r for r in results if r["cpus"] == cpus]
        api = statistics.median(r["api_percent"] for r in mine)
        diff = max(abs(r["api_percent"] - r["cgroup_percent"]) for r in mine)
        print(
            f"--cpus {cpus}: median api {api:.2f}% (ideal {cpus * 100:.0f}%), "
            f"largest |api - cgroup| {diff:.2f} points"
        )
    if problems:
        print("clean-up problems: " + "; ".join(problems))
    path = save_result(
        args.out,
        "stats_accuracy",
        {"host": host_info(), "window_s": args.window, "results": results, "problems": problems},
    )
    print(f"saved {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
