#!/usr/bin/env python3
"""Network benchmark: what a bridge network costs a container start, and what it carries.

Every engine runs inside a network namespace this benchmark creates
(``bh-t-<random>``, one per engine, deleted at the end), so no bridge, veth,
address or firewall rule ever appears in the host's root namespace; the
root namespace's links (``ip -j link``) and ``nft list tables`` are compared
before and after (and the rest of bench/engine_run.py's host-state check).
The engines, their private roots and their clean-up are bench/engine_run.py's
(read its docstring), each started with ``nsenter --net=/run/netns/<ns>``:

``bulkhead``
    the daemon in its namespace with its default bridge network (``bh0``),
    driven by bulkhead's CLI and by the stock docker 28.2 CLI;
``podman``
    every ``podman`` command under ``nsenter --net=``: its network backend
    (CNI here; netavark likewise) makes its bridge (``cni-podman0``) and its
    iptables rules in the namespace podman runs in;
``dockerd``
    Debian's dockerd 20.10 in its namespace, this time with its default
    bridge (``docker0``), iptables rules and ``ip_forward`` (all of the
    namespace's own), no userland proxy.

Part 1, the cost of networking: ``<cli> run --rm --network=bridge busybox true``
against ``<cli> run --rm --network=none busybox true``, every (engine, mode)
alternating with the order rotating each round, ``--runs`` (>= 20) each after
warm-up rounds. Printed: the medians, the networking cost (median bridge -
median none, and the median of the per-round differences) and each engine's
cost divided by bulkhead's. Target: bulkhead's networking adds less time than
podman's and dockerd's.

``--gap`` (0.5 s) of pause before each run: a container's network namespace
and the veth in it are destroyed by the kernel *after* its engine has
answered (``cleanup_net`` in a kernel worker, holding the RTNL lock through
RCU grace periods), so back to back, a run that needs that lock (creating a
veth) waits for the previous engine's tear-down: each engine's bridge run
would pay for whichever engine ran before it (with ``--gap 0`` at load ~4,
bulkhead's measured cost rose from ~30 ms, alone or with a gap, to ~85 ms).
The pause lets each run start on a settled kernel, the same for every
engine; ``--gap 0`` measures back to back.

``--user-network`` adds a third mode, ``--network=bhbench``: a user-defined
network each engine creates first (names served by its embedded DNS: for
bulkhead the resolver on the gateway and the 127.0.0.11 redirect in each
container), reported as its own table (median minus ``none``).

Part 2, throughput with iperf3 (Debian's ``iperf3``), bulkhead only, TCP,
``--iperf-seconds`` per test, ``--iperf-rounds`` rounds with the scenarios
alternating, the median in Gbit/s and its ratio to loopback:

``loopback``
    the baseline: server and client in the daemon's namespace, 127.0.0.1;
``container -> container``
    a client container to the server container's address, both on the
    default bridge network (veth → bridge → veth);
``namespace -> container``
    the namespace to the container's address (veth, no NAT);
``published, ns address``
    the namespace to the published port on its own address (``10.253.0.1``,
    one end of a veth pair the benchmark adds): DNAT in nftables' output hook;
``published, 127.0.0.1``
    the same on ``127.0.0.1:5201`` (DNAT plus ``route_localnet``);
``published, [::1] proxy``
    the same on ``[::1]:5201``: the daemon's userland proxy
    (:mod:`bulkhead.network.proxy`) to the container's IPv4 address.

iperf3 is not in busybox, so the host's ``/usr/bin/iperf3`` runs in the
containers: the binary and every library ``ldd`` names (the dynamic loader
included) are bind-mounted read-only one by one into ``/opt/iperf3`` of a
busybox container, which runs ``/opt/iperf3/ld-linux-x86-64.so.2
--library-path /opt/iperf3 /opt/iperf3/iperf3 ...``: the container's process,
mount and network namespaces are the engine's, only the file comes from the
host. The namespace's end (loopback, client of the published port) runs the
host binary under ``nsenter --net=``.

Traffic flows only between that namespace and its containers. Needs root;
``make bench-network`` installs the packages (TEST_DEBS: podman, iperf3, ...;
docker.io as for bench-engine) and runs it.

Usage: ``.venv/bin/python bench/network.py [--runs 25] [--gap 0.5]
[--engines bulkhead,docker-bulkhead,podman,dockerd] [--iperf-rounds 3 --iperf-seconds 5]
[--skip-start|--skip-iperf]``
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import HERE, fresh_bytecode, host_info, save_result, summary
from engine_run import (
    DOCKER_CLI,
    DOCKERD,
    IMAGE,
    PODMAN,
    TEST_SESSIONS_LOCK,
    Bulkhead,
    Client,
    Dockerd,
    Engine,
    Podman,
    compare_state,
    fmt_load,
    forbid_root_netns,
    git_state,
    host_state,
    make_image,
    private_client_env,
    remove_host_leftovers,
    remove_stale_cgroup_parents,
    unmount_under,
    wait_for_quiet,
)

IPERF3 = Path("/usr/bin/iperf3")
ENGINES = ("bulkhead", "docker-bulkhead", "podman", "dockerd")
MODES = ("none", "bridge")
#: ``--user-network``: the third mode, a user-defined network each engine makes first
USER_NETWORK = "bhbench"
USER_SUBNET = "10.254.0.0/24"
NS_ADDR = "10.253.0.1"
IPERF_PORT = 5201
LOOP_PORT = 5202
#: Created on the host by podman's CNI host-local IPAM (/var/lib/cni/networks/podman) and
#: its result cache: removed at the end when absent before.
CNI_STATE = Path("/var/lib/cni")


# ---------------------------------------------------------------- the host's root namespace


def root_netns() -> dict[str, Any]:
    """The root namespace's links (name, kind, MAC, MTU) and nft tables."""
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True,
                                      check=True).stdout or "[]")  # fmt: skip
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=False)
    return {
        "links": sorted(
            f"{x['ifname']} {x.get('link_type', '')} {x.get('address', '')} mtu {x.get('mtu')}"
            for x in links
        ),
        "nft tables": sorted(tables.stdout.splitlines()),
    }


def make_netns() -> str:
    """A fresh network namespace ``bh-t-<random>`` with its loopback up."""
    name = f"bh-t-{os.urandom(4).hex()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    in_netns(name, "ip", "link", "set", "lo", "up", check=True)
    return name


def in_netns(ns: str, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nsenter", f"--net=/run/netns/{ns}", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        check=check,
    )


# ---------------------------------------------------------------- part 1: start cost


@dataclass
class Subject:
    """One CLI against one engine, in one network mode."""

    client: Client
    mode: str
    samples: list[float] = field(default_factory=list)
    by_round: dict[int, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def argv(self) -> list[str]:
        return ["run", "--rm", f"--network={self.mode}", IMAGE, "true"]


def rotating(items: Sequence[Subject], rounds: int) -> Iterator[tuple[int, Subject]]:
    for rnd in range(rounds):
        k = rnd % len(items)
        for s in [*items[k:], *items[:k]]:
            yield rnd, s


def measure_start(
    subjects: Sequence[Subject], runs: int, warmup: int, gap: float = 0.0
) -> list[float]:
    """Alternate every subject, ``gap`` seconds of pause before each run (see the module
    docstring); return the 1-minute load average sampled each round."""
    loads = []
    last = -1
    for rnd, s in rotating(subjects, warmup + runs):
        if rnd != last:
            loads.append(os.getloadavg()[0])
            last = rnd
        if gap > 0:
            time.sleep(gap)
        elapsed, err = s.client.timed(*s.argv())
        if rnd < warmup:
            continue
        if err:
            s.failures.append(err)
        else:
            s.samples.append(elapsed)
            s.by_round[rnd] = elapsed
    return loads


def report_start(subjects: Sequence[Subject], result: dict[str, Any]) -> list[str]:
    by_key: dict[str, dict[str, Subject]] = {}
    for s in subjects:
        by_key.setdefault(s.client.key, {})[s.mode] = s
    print()
    print("run --rm --network=none|bridge busybox true (wall time of the CLI command), ms")
    print(
        f"{'engine':<34} {'n':>3} {'none med':>9} {'bridge med':>10} {'bridge p90':>10} "
        f"{'cost':>7} {'paired':>7} {'cost / bulkhead':>15}"
    )
    rows: dict[str, dict[str, float]] = {}
    user_rows: dict[str, dict[str, float]] = {}
    for key, modes in by_key.items():
        none, bridge = modes["none"], modes["bridge"]
        if not none.samples or not bridge.samples:
            failed = none.failures[:1] or bridge.failures[:1]
            print(f"{none.client.label:<34} failed: {failed}")
            continue
        sn, sb = summary(none.samples), summary(bridge.samples)
        paired = [
            bridge.by_round[r] - none.by_round[r] for r in bridge.by_round if r in none.by_round
        ]
        user = modes.get(USER_NETWORK)
        if user is not None and user.samples:
            su = summary(user.samples)
            user_paired = [
                user.by_round[r] - none.by_round[r] for r in user.by_round if r in none.by_round
            ]
            user_rows[key] = {
                "user_median_ms": su["median_ms"],
                "user_cost_ms": su["median_ms"] - sn["median_ms"],
                "user_paired_cost_ms": statistics.median(user_paired) * 1e3,
            }
        rows[key] = {
            "n": min(sn["n"], sb["n"]),
            "none_median_ms": sn["median_ms"],
            "bridge_median_ms": sb["median_ms"],
            "bridge_p90_ms": sb["p90_ms"],
            "none_p90_ms": sn["p90_ms"],
            "cost_ms": sb["median_ms"] - sn["median_ms"],
            "paired_cost_ms": statistics.median(paired) * 1e3 if paired else float("nan"),
        }
    ref = rows.get("bulkhead") or rows.get("docker-bulkhead")
    for key, r in rows.items():
        ratio = r["cost_ms"] / ref["cost_ms"] if ref and ref["cost_ms"] > 0 else float("nan")
        r["cost_ratio_to_bulkhead"] = ratio
        label = by_key[key]["none"].client.label
        print(
            f"{label:<34} {r['n']:>3.0f} {r['none_median_ms']:>9.1f} {r['bridge_median_ms']:>10.1f} "
            f"{r['bridge_p90_ms']:>10.1f} {r['cost_ms']:>7.1f} {r['paired_cost_ms']:>7.1f} "
            f"{ratio:>14.2f}x"
        )
        for mode, s in by_key[key].items():
            if s.failures:
                print(f"  {mode}: {len(s.failures)} failed runs, e.g. {s.failures[0]}")
    print(
        "(cost: median bridge - median none; paired: median of the per-round differences; "
        "cost / bulkhead: the cost over bulkhead CLI's)"
    )
    result.setdefault("summary", {})["start"] = rows
    if user_rows:
        print(f"\n--network={USER_NETWORK} (a user-defined network with its names), ms")
        print(f"{'engine':<34} {'median':>9} {'cost':>7} {'paired':>7} {'cost / bulkhead':>15}")
        uref = user_rows.get("bulkhead") or user_rows.get("docker-bulkhead")
        for key, u in user_rows.items():
            ratio = u["user_cost_ms"] / uref["user_cost_ms"] if uref else float("nan")
            u["user_cost_ratio_to_bulkhead"] = ratio
            print(
                f"{by_key[key]['none'].client.label:<34} {u['user_median_ms']:>9.1f} "
                f"{u['user_cost_ms']:>7.1f} {u['user_paired_cost_ms']:>7.1f} {ratio:>14.2f}x"
            )
        print("(cost: median user-network - median none)")
        result["summary"]["start_user_network"] = user_rows
    verdicts = []
    if ref is not None:
        for key in ("podman", "dockerd"):
            if key in rows:
                met = ref["cost_ms"] < rows[key]["cost_ms"]
                verdicts.append(
                    f"bulkhead's networking cost {ref['cost_ms']:.1f} ms < {key}'s "
                    f"{rows[key]['cost_ms']:.1f} ms: " + ("met" if met else "NOT met")
                )
    return verdicts


# ---------------------------------------------------------------- part 2: iperf3


def iperf_mounts() -> list[str]:
    """``-v host:/opt/iperf3/<name>:ro`` for iperf3 and every library ``ldd`` names."""
    out = subprocess.run(["ldd", str(IPERF3)], capture_output=True, text=True, check=True).stdout
    files = {"iperf3": IPERF3}
    for line in out.splitlines():
        parts = line.split()
        path = next((p for p in parts if p.startswith("/")), None)
        if path is None:  # linux-vdso.so.1
            continue
        name = parts[0] if "=>" in parts else Path(path).name
        files[Path(name).name] = Path(path)
    loader = next((n for n in files if n.startswith("ld-linux")), None)
    if loader is None:
        raise RuntimeError(f"no dynamic loader in `ldd {IPERF3}`: {out}")
    args = []
    for name, file in files.items():
        args += ["-v", f"{os.path.realpath(file)}:/opt/iperf3/{name}:ro"]
    return [*args, "--entrypoint", f"/opt/iperf3/{loader}"]


IPERF_IN_CTR = ["--library-path", "/opt/iperf3", "/opt/iperf3/iperf3"]


def gbits(report: str) -> float:
    doc = json.loads(report)
    if "error" in doc:
        raise RuntimeError(f"iperf3: {doc['error']}")
    return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e9


def wait_listening(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} is not listening after 30 s")


def measure_iperf(
    c: Client, ns: str, work: Path, rounds: int, seconds: int, result: dict[str, Any]
) -> dict[str, list[float]]:
    """The scenarios of part 2 (see the module docstring), alternating; Gbit/s samples."""
    mounts = iperf_mounts()
    in_netns(ns, "ip", "link", "add", "bnch0", "type", "veth", "peer", "name", "bnch1", check=True)
    in_netns(ns, "ip", "addr", "add", f"{NS_ADDR}/24", "dev", "bnch0", check=True)
    for link in ("bnch0", "bnch1"):
        in_netns(ns, "ip", "link", "set", link, "up", check=True)
    server = c.run(
        "run", "-d", "--name", "iperf-server", "-p", f"{IPERF_PORT}:{IPERF_PORT}", *mounts,
        IMAGE, *IPERF_IN_CTR, "-s", "-p", str(IPERF_PORT), "--forceflush",
    )  # fmt: skip
    if server.returncode != 0:
        raise RuntimeError(f"iperf3 server container: {server.stderr.strip()}")
    loop_log = work / "iperf-loopback.log"
    with open(loop_log, "wb") as log:
        loop = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{ns}", str(IPERF3), "-s", "-p", str(LOOP_PORT), "-B",
             "127.0.0.1", "--forceflush"],
            stdout=log, stderr=log, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_listening(lambda: "listening" in c.run("logs", "iperf-server").stdout, "the server")
        wait_listening(lambda: "listening" in loop_log.read_text(), "the loopback server")
        ip = c.run(
            "inspect", "-f", "{{.NetworkSettings.Networks.bridge.IPAddress}}", "iperf-server"
        ).stdout.strip()
        result["iperf_server_ip"] = ip
        host_client = ["nsenter", f"--net=/run/netns/{ns}", str(IPERF3)]
        opts = ["-t", str(seconds), "-J"]
        scenarios: dict[str, list[str]] = {
            "loopback": [*host_client, "-c", "127.0.0.1", "-p", str(LOOP_PORT), *opts],
            "container -> container": [
                *c.base,
                "run",
                "--rm",
                *mounts,
                IMAGE,
                *IPERF_IN_CTR,
                "-c",
                ip,
                "-p",
                str(IPERF_PORT),
                *opts,
            ],
            "namespace -> container": [*host_client, "-c", ip, "-p", str(IPERF_PORT), *opts],
            "published, ns address": [*host_client, "-c", NS_ADDR, "-p", str(IPERF_PORT), *opts],
            "published, 127.0.0.1": [*host_client, "-c", "127.0.0.1", "-p", str(IPERF_PORT), *opts],
            "published, [::1] proxy": [*host_client, "-c", "::1", "-p", str(IPERF_PORT), *opts],
        }
        samples: dict[str, list[float]] = {k: [] for k in scenarios}
        errors: dict[str, list[str]] = {}
        names = list(scenarios)
        for rnd in range(rounds):
            k = rnd % len(names)
            for name in [*names[k:], *names[:k]]:
                proc = subprocess.run(
                    scenarios[name], env=c.env, capture_output=True, text=True,
                    timeout=seconds + 60, check=False,
                )  # fmt: skip
                try:
                    samples[name].append(gbits(proc.stdout))
                except (ValueError, KeyError, RuntimeError) as exc:
                    errors.setdefault(name, []).append(f"{exc}; {proc.stderr.strip()[-200:]}")
                print(
                    f"  round {rnd} {name:<24} "
                    + (f"{samples[name][-1]:6.2f} Gbit/s" if not errors.get(name) else "failed"),
                    flush=True,
                )
        result["iperf_errors"] = errors
        return samples
    finally:
        loop.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            loop.wait(10)
        if loop.poll() is None:
            loop.kill()
            loop.wait()
        c.run("rm", "-f", "iperf-server")


def report_iperf(samples: dict[str, list[float]], seconds: int, result: dict[str, Any]) -> None:
    print()
    print(f"iperf3 TCP throughput, {seconds} s per test, bulkhead (median of the rounds)")
    print(f"{'path':<26} {'n':>3} {'Gbit/s':>8} {'min':>7} {'max':>7} {'/ loopback':>11}")
    base = statistics.median(samples["loopback"]) if samples.get("loopback") else None
    rows = {}
    for name, xs in samples.items():
        if not xs:
            print(f"{name:<26} failed")
            continue
        med = statistics.median(xs)
        ratio = med / base if base else float("nan")
        rows[name] = {"n": len(xs), "gbit_s": med, "min": min(xs), "max": max(xs), "ratio": ratio}
        print(
            f"{name:<26} {len(xs):>3} {med:>8.2f} {min(xs):>7.2f} {max(xs):>7.2f} {ratio:>10.2f}x"
        )
    result.setdefault("summary", {})["iperf3"] = rows


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=25, help="measured runs per engine and mode")
    ap.add_argument("--warmup", type=int, default=3, help="unmeasured rounds first")
    ap.add_argument("--engines", default=",".join(ENGINES), help="subset of " + ",".join(ENGINES))
    ap.add_argument(
        "--gap", type=float, default=0.5, help="pause before each run of part 1 (s; 0: none)"
    )
    ap.add_argument("--iperf-rounds", type=int, default=3)
    ap.add_argument("--iperf-seconds", type=int, default=5)
    ap.add_argument("--skip-start", action="store_true", help="no part 1")
    ap.add_argument("--skip-iperf", action="store_true", help="no part 2")
    ap.add_argument("--wait-load", type=float, default=0.0, help="wait for a load below this")
    ap.add_argument("--wait-max", type=float, default=600.0)
    ap.add_argument("--out", default=str(HERE / "results"), help="where the JSON goes")
    ap.add_argument(
        "--user-network",
        action="store_true",
        help=f"also --network={USER_NETWORK}, a user-defined network (embedded DNS) per engine",
    )
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("network.py needs root", file=sys.stderr)
        return 2
    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in wanted if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engines {unknown}; known: {', '.join(ENGINES)}")
    if args.skip_start:
        wanted = ["bulkhead"]
    needed = [DOCKER_CLI, *([IPERF3] if not args.skip_iperf else [])]
    needed += [DOCKERD] if "dockerd" in wanted else []
    needed += [PODMAN] if "podman" in wanted else []
    for binary in needed:
        if not binary.exists():
            print(f"{binary} is missing: `make bench-network` installs it", file=sys.stderr)
            return 2

    def terminate(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)
    if args.wait_load > 0:
        wait_for_quiet(args.wait_load, args.wait_max)
    forbid_root_netns()  # the daemons make their networks in their own namespaces only
    sessions_lock = open(TEST_SESSIONS_LOCK, "a")  # noqa: SIM115 - held until we exit
    fcntl.flock(sessions_lock, fcntl.LOCK_SH)
    remove_stale_cgroup_parents()
    before = host_state()
    root_before = root_netns()
    cni_existed = CNI_STATE.exists()
    bytecode = fresh_bytecode()
    work = Path(tempfile.mkdtemp(prefix="bhn-", dir="/tmp"))
    env = private_client_env(work)
    result: dict[str, Any] = {
        "benchmark": "network",
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": host_info(),
        "runs": args.runs,
        "warmup_rounds": args.warmup,
        "bytecode": bytecode,
        "loadavg_before": os.getloadavg(),
        "git": git_state(),
    }
    namespaces: list[str] = []
    engines: list[Engine] = []
    problems: list[str] = []
    try:
        store, archive = make_image(work)
        makers: dict[str, Callable[[], Engine]] = {
            "bulkhead": lambda: Bulkhead(work, archive, env, store),
            "podman": lambda: Podman(work, archive, env),
            "dockerd": lambda: Dockerd(work, archive, env),
        }
        clients: list[Client] = []
        bulkhead_ns = ""
        for name, make in makers.items():
            if name == "bulkhead" and not {"bulkhead", "docker-bulkhead"} & set(wanted):
                continue
            if name != "bulkhead" and name not in wanted:
                continue
            engine = make()
            engine.netns = make_netns()
            namespaces.append(engine.netns)
            engines.append(engine)
            if name == "bulkhead":
                bulkhead_ns = engine.netns
            try:
                got = engine.start()
            except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                print(f"skipping {name}: {exc}", flush=True)
                result.setdefault("unusable", {})[name] = str(exc)
                continue
            clients += [c for c in got if c.key in wanted or (args.skip_start and c.key == name)]
        result["versions"] = {k: v for e in engines for k, v in e.versions.items()}
        result["namespaces"] = {e.name: e.netns for e in engines}
        subjects = []
        modes = MODES + ((USER_NETWORK,) if args.user_network else ())
        for c in clients if args.user_network else []:
            # bulkhead's two CLIs share a daemon: the second create says "already exists"
            c.timed("network", "create", "--subnet", USER_SUBNET, USER_NETWORK)
        for c in clients:
            for mode in modes:
                s = Subject(c, mode)
                _, err = c.timed(*s.argv())
                if err:
                    print(f"skipping {c.label} --network={mode}: {err}", flush=True)
                    result.setdefault("unusable", {})[f"{c.key} {mode}"] = err
                else:
                    subjects.append(s)
        verdicts: list[str] = []
        if not args.skip_start and subjects:
            print(
                f"{len(subjects)} (engine, network) pairs x {args.runs} runs "
                f"(+{args.warmup} warm-up rounds), alternating, {args.gap:g} s apart",
                flush=True,
            )
            loads = measure_start(subjects, args.runs, args.warmup, args.gap)
            result["gap_s"] = args.gap
            result["loadavg_during_start"] = loads
            verdicts += report_start(subjects, result)
            print(
                f"load average (1 min) during part 1: min {min(loads):.2f}, "
                f"median {statistics.median(loads):.2f}, max {max(loads):.2f}"
            )
            result["start_samples_ms"] = {
                f"{s.client.key} {s.mode}": [x * 1e3 for x in s.samples] for s in subjects
            }
        bh = next((c for c in clients if c.key == "bulkhead"), None)
        bh = bh or next((c for c in clients if c.key == "docker-bulkhead"), None)
        if not args.skip_iperf and bh is not None:
            print(f"\niperf3: {args.iperf_rounds} rounds x {args.iperf_seconds} s, bulkhead")
            load0 = os.getloadavg()
            samples = measure_iperf(
                bh, bulkhead_ns, work, args.iperf_rounds, args.iperf_seconds, result
            )
            report_iperf(samples, args.iperf_seconds, result)
            result["iperf3_samples_gbit_s"] = samples
            result["loadavg_iperf"] = [load0, os.getloadavg()]
            print(
                f"load average before/after part 2: {fmt_load(load0)} / {fmt_load(os.getloadavg())}"
            )
        result["loadavg_after"] = os.getloadavg()
        print(
            f"\nload average before {fmt_load(result['loadavg_before'])}, "
            f"after {fmt_load(result['loadavg_after'])} (2 vCPU, shared)"
        )
        result["verdicts"] = verdicts
        for line in verdicts:
            print(line)
    finally:
        for engine in reversed(engines):
            try:
                problems += engine.stop()
            except Exception as exc:  # clean-up goes on for the others
                problems.append(f"{engine.name}: stop failed: {exc!r}")
        for ns in namespaces:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True, check=False)
        problems += [f"unmounted {p}" for p in unmount_under(work)]
        shutil.rmtree(work, ignore_errors=True)
        removed = remove_host_leftovers(before)
        if not cni_existed and CNI_STATE.exists():
            shutil.rmtree(CNI_STATE, ignore_errors=True)
            removed.append(str(CNI_STATE))
        deadline = time.monotonic() + 10
        while True:
            diffs = compare_state(before, host_state())
            root_diffs = compare_state(root_before, root_netns())
            if not (diffs or root_diffs) or time.monotonic() >= deadline:
                break
            time.sleep(0.5)
        result["cleanup"] = {
            "forced": problems,
            "removed_host_paths": removed,
            "host_diff": diffs,
            "root_netns_diff": root_diffs,
        }
        print()
        if removed:
            print(f"removed what the engines made on the host: {removed}")
        for p in problems:
            print(f"clean-up: {p}")
        if root_diffs:
            print("WARNING: the root network namespace changed:", file=sys.stderr)
            for d in root_diffs:
                print(f"  {d}", file=sys.stderr)
        else:
            print("root network namespace as before: ip -j link, nft list tables")
        if diffs:
            print("WARNING: the host differs from before (other sessions' work shows up too):")
            for d in diffs:
                print(f"  {d}")
        else:
            print("host state as before (engine_run's check: nft, iptables, netns, links, ...)")
    out = save_result(args.out, "network", result)
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
