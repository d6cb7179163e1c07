"""Docker's container statistics (``GET /containers/{id}/stats``) from the cgroup's counters.

A *sample* is one reading of a container's cgroup (:meth:`CgroupManager.stats
<bulkhead.cgroups.manager.CgroupManager.stats>`), of the host's CPU time and
of the container's network interfaces, turned into Docker's
``ContainerStatsResponse`` as moby builds it (``daemon/stats_unix.go``). The
words of that document:

*cpu_stats* / *precpu_stats*
    CPU time the container used so far (``cpu_usage.total_usage``, ns; split
    into ``usage_in_kernelmode``/``usage_in_usermode``; per CPU on cgroup v1)
    and what the whole host used (``system_cpu_usage``: the first seven
    fields of the ``cpu`` line of ``/proc/stat``, clock ticks turned into ns
    as moby does) with the number of ``online_cpus``. ``precpu_stats`` is the
    previous sample's ``cpu_stats``: a client's CPU % is
    ``Δtotal_usage / Δsystem_cpu_usage * online_cpus * 100``
    (:func:`cpu_percent`, the docker CLI's ``calculateCPUPercentUnix``).
*memory_stats*
    ``usage`` (the cgroup's charge), ``limit`` (the host's memory when the
    cgroup has none), ``stats`` (a fixed set of ``memory.stat`` keys, which
    differ between v1 and v2); v1 adds ``max_usage`` and ``failcnt``, v2's
    ``failcnt`` counts OOM events. The CLI shows ``usage`` minus the page
    cache it could drop (v1 ``total_inactive_file``, v2 ``inactive_file``).
*blkio_stats*
    bytes (``io_service_bytes_recursive``) and operations per device and
    direction; on v2 only the bytes, with lower-case ``read``/``write``.
*networks*
    per interface of the container's network namespace
    (``/proc/<init pid>/net/dev``), the loopback left out as libnetwork does;
    absent for ``--network host`` (the host's interfaces are not the
    container's) and for containers without interfaces (``none``).
*empty stats*
    what Docker answers for a container that is not running: ``name``,
    ``id`` and zeroes.

Everything here is plain file reading (no threads, no subprocesses); the API
runs a sample in a worker thread.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bulkhead.cgroups.manager import CgroupManager
    from bulkhead.cgroups.stats import Stats

#: Go's zero ``time.Time`` as ``encoding/json`` writes it (``preread`` of a first sample).
ZERO_TIME = "0001-01-01T00:00:00Z"

#: Linux's ``USER_HZ``: ``/proc/stat`` counts in these ticks (moby hard-codes it too).
CLOCK_TICKS = 100
_NS = 1_000_000_000

#: The ``memory.stat`` keys moby reports on cgroup v1 (containerd's ``MemoryStat``).
V1_MEMORY_KEYS = (
    "cache",
    "rss",
    "rss_huge",
    "mapped_file",
    "dirty",
    "writeback",
    "pgpgin",
    "pgpgout",
    "pgfault",
    "pgmajfault",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "hierarchical_memory_limit",
    "hierarchical_memsw_limit",
    "total_cache",
    "total_rss",
    "total_rss_huge",
    "total_mapped_file",
    "total_dirty",
    "total_writeback",
    "total_pgpgin",
    "total_pgpgout",
    "total_pgfault",
    "total_pgmajfault",
    "total_inactive_anon",
    "total_active_anon",
    "total_inactive_file",
    "total_active_file",
    "total_unevictable",
)

#: The ``memory.stat`` keys moby reports on cgroup v2.
V2_MEMORY_KEYS = (
    "anon",
    "file",
    "kernel_stack",
    "slab",
    "sock",
    "shmem",
    "file_mapped",
    "file_dirty",
    "file_writeback",
    "anon_thp",
    "inactive_anon",
    "active_anon",
    "inactive_file",
    "active_file",
    "unevictable",
    "slab_reclaimable",
    "slab_unreclaimable",
    "pgfault",
    "pgmajfault",
    "workingset_refault",
    "workingset_activate",
    "workingset_nodereclaim",
    "pgrefill",
    "pgscan",
    "pgsteal",
    "pgactivate",
    "pgdeactivate",
    "pglazyfree",
    "pglazyfreed",
    "thp_fault_alloc",
    "thp_collapse_alloc",
)

#: The block I/O lists of Docker's ``blkio_stats``, in its order.
BLKIO_KEYS = (
    "io_service_bytes_recursive",
    "io_serviced_recursive",
    "io_queue_recursive",
    "io_service_time_recursive",
    "io_wait_time_recursive",
    "io_merged_recursive",
    "io_time_recursive",
    "sectors_recursive",
)

#: ``/proc/net/dev``'s columns after the interface name, as Docker names the ones it reports.
_NET_COLUMNS = {
    0: "rx_bytes",
    1: "rx_packets",
    2: "rx_errors",
    3: "rx_dropped",
    8: "tx_bytes",
    9: "tx_packets",
    10: "tx_errors",
    11: "tx_dropped",
}
_NET_ORDER = (
    "rx_bytes",
    "rx_packets",
    "rx_errors",
    "rx_dropped",
    "tx_bytes",
    "tx_packets",
    "tx_errors",
    "tx_dropped",
)


# --- the host ---------------------------------------------------------------------


def parse_proc_stat(text: str) -> tuple[int, int]:
    """``(system_cpu_usage in ns, online CPUs)`` from ``/proc/stat``, as moby computes them.

    The ``cpu`` line's first seven fields (user, nice, system, idle, iowait,
    irq, softirq; steal and guest are left out) in clock ticks, times 10⁹ /
    :data:`CLOCK_TICKS`; the CPUs are the ``cpuN`` lines.
    """
    usage = 0
    cpus = 0
    for line in text.splitlines():
        if len(line) < 4 or not line.startswith("cpu"):
            break  # the cpu lines come first
        if line[3] == " ":
            fields = line.split()
            if len(fields) < 8:
                raise ValueError("invalid number of cpu fields in /proc/stat")
            ticks = sum(int(v) for v in fields[1:8])
            usage = ticks * _NS // CLOCK_TICKS
        elif line[3].isdigit():
            cpus += 1
    return usage, cpus


def system_cpu_usage() -> tuple[int, int]:
    """The host's CPU time (ns) and online CPUs, now (:func:`parse_proc_stat`)."""
    with open("/proc/stat", encoding="ascii") as f:
        return parse_proc_stat(f.read())


def parse_meminfo_total(text: str) -> int:
    """``MemTotal`` of ``/proc/meminfo`` in bytes (0 if missing)."""
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            fields = line.split()
            value = int(fields[1])
            return value * 1024 if len(fields) > 2 and fields[2] == "kB" else value
    return 0


_machine_memory: int | None = None


def machine_memory() -> int:
    """The host's memory in bytes (read once per process: it does not change)."""
    global _machine_memory
    if _machine_memory is None:
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                _machine_memory = parse_meminfo_total(f.read())
        except OSError:
            _machine_memory = 0
    return _machine_memory


def parse_net_dev(text: str) -> dict[str, dict[str, int]]:
    """Docker's ``networks`` from a ``/proc/<pid>/net/dev``: per interface, ``lo`` left out."""
    out: dict[str, dict[str, int]] = {}
    for line in text.splitlines()[2:]:  # two header lines
        name, sep, rest = line.partition(":")
        name = name.strip()
        if not sep or not name or name == "lo":
            continue
        values = rest.split()
        if len(values) < 16:
            continue
        try:
            counters = {key: int(values[i]) for i, key in _NET_COLUMNS.items()}
        except ValueError:
            continue
        out[name] = {key: counters[key] for key in _NET_ORDER}
    return out


def network_stats(pid: int) -> dict[str, dict[str, int]]:
    """The interfaces of process ``pid``'s network namespace ({} when it is gone)."""
    try:
        with open(f"/proc/{pid}/net/dev", encoding="ascii", errors="replace") as f:
            return parse_net_dev(f.read())
    except OSError:
        return {}


# --- formatting -------------------------------------------------------------------


def rfc3339_nano(ns: int) -> str:
    """Go's ``time.RFC3339Nano`` in UTC: ``2025-01-16T13:55:22.165243637Z`` (zeros trimmed)."""
    seconds, frac = divmod(ns, _NS)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    digits = f"{frac:09d}".rstrip("0")
    return f"{head}.{digits}Z" if digits else f"{head}Z"


def empty_cpu_stats() -> dict[str, Any]:
    """A ``cpu_stats`` with nothing measured (Go's zero ``CPUStats``)."""
    return {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }


def empty_stats(name: str, container_id: str) -> dict[str, Any]:
    """Docker's answer for a container that is not running: its name, its id, zeroes."""
    return {
        "name": name,
        "id": container_id,
        "os_type": "linux",
        "read": ZERO_TIME,
        "cpu_stats": empty_cpu_stats(),
        "memory_stats": {},
        "pids_stats": {},
        "blkio_stats": dict.fromkeys(BLKIO_KEYS),
        "num_procs": 0,
        "storage_stats": {},
        "preread": ZERO_TIME,
        "precpu_stats": empty_cpu_stats(),
    }


def cpu_stats(stats: Stats, version: int, system_usage: int, online_cpus: int) -> dict[str, Any]:
    """Docker's ``cpu_stats`` of one sample (per-CPU times only on cgroup v1)."""
    u = stats.cpu.usage
    usage: dict[str, Any] = {"total_usage": u.total}
    if version == 1 and u.percpu:
        usage["percpu_usage"] = list(u.percpu)
    usage["usage_in_kernelmode"] = u.kernel
    usage["usage_in_usermode"] = u.user
    out: dict[str, Any] = {"cpu_usage": usage}
    if system_usage:
        out["system_cpu_usage"] = system_usage
    if online_cpus:
        out["online_cpus"] = online_cpus
    t = stats.cpu.throttling
    out["throttling_data"] = {
        "periods": t.periods,
        "throttled_periods": t.throttled_periods,
        "throttled_time": t.throttled_time,
    }
    return out


def memory_stats(
    stats: Stats, version: int, host_memory: int, oom_events: int = 0
) -> dict[str, Any]:
    """Docker's ``memory_stats``; a limit above the host's memory is the host's memory."""
    m = stats.memory
    keys = V1_MEMORY_KEYS if version == 1 else V2_MEMORY_KEYS
    out: dict[str, Any] = {}
    if m.usage.usage:
        out["usage"] = m.usage.usage
    if version == 1 and m.usage.max:
        out["max_usage"] = m.usage.max
    out["stats"] = {k: m.raw.get(k, 0) for k in keys}
    failcnt = m.usage.failcnt if version == 1 else oom_events
    if failcnt:
        out["failcnt"] = failcnt
    limit = m.usage.limit
    if host_memory > 0 and limit > host_memory:
        limit = host_memory
    if limit:
        out["limit"] = limit
    return out


def blkio_stats(stats: Stats, version: int) -> dict[str, Any]:
    """Docker's ``blkio_stats``: v1's lists (empty ones ``[]``), v2's bytes only (else null)."""
    b = stats.blkio
    if version == 1:
        out: dict[str, Any] = {k: [] for k in BLKIO_KEYS}
        for key, entries in (
            ("io_service_bytes_recursive", b.io_service_bytes_recursive),
            ("io_serviced_recursive", b.io_serviced_recursive),
        ):
            out[key] = [
                {"major": e.major, "minor": e.minor, "op": e.op, "value": e.value} for e in entries
            ]
        return out
    out = dict.fromkeys(BLKIO_KEYS)
    # moby (containerd's io.stat): a read and a write entry per device, lower-case
    by_device: dict[tuple[int, int], dict[str, int]] = {}
    for e in b.io_service_bytes_recursive:
        by_device.setdefault((e.major, e.minor), {})[e.op.lower()] = e.value
    if by_device:
        out["io_service_bytes_recursive"] = [
            {"major": major, "minor": minor, "op": op, "value": values.get(op, 0)}
            for (major, minor), values in by_device.items()
            for op in ("read", "write")
        ]
    return out


def pids_stats(stats: Stats) -> dict[str, Any]:
    """Docker's ``pids_stats`` (``limit`` absent when there is none)."""
    out: dict[str, Any] = {}
    if stats.pids.current:
        out["current"] = stats.pids.current
    if stats.pids.limit:
        out["limit"] = stats.pids.limit
    return out


def stats_response(
    *,
    name: str,
    container_id: str,
    read_ns: int,
    stats: Stats,
    version: int,
    system_usage: int,
    online_cpus: int,
    host_memory: int,
    networks: dict[str, dict[str, int]] | None,
    oom_events: int = 0,
) -> dict[str, Any]:
    """One sample as Docker's ``ContainerStatsResponse`` (``pre*`` empty: see :func:`chain`)."""
    out: dict[str, Any] = {
        "name": name,
        "id": container_id,
        "os_type": "linux",
        "read": rfc3339_nano(read_ns),
        "cpu_stats": cpu_stats(stats, version, system_usage, online_cpus),
        "memory_stats": memory_stats(stats, version, host_memory, oom_events),
    }
    if networks:
        out["networks"] = networks
    out["pids_stats"] = pids_stats(stats)
    out["blkio_stats"] = blkio_stats(stats, version)
    out["num_procs"] = 0
    out["storage_stats"] = {}
    out["preread"] = ZERO_TIME
    out["precpu_stats"] = empty_cpu_stats()
    return out


def chain(sample: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
    """``sample`` with ``preread``/``precpu_stats`` from the ``previous`` one (if any)."""
    if previous is not None and previous.get("read", ZERO_TIME) != ZERO_TIME:
        sample["preread"] = previous["read"]
        sample["precpu_stats"] = previous["cpu_stats"]
    return sample


def cpu_percent(sample: dict[str, Any]) -> float:
    """The CPU % the docker CLI shows for ``sample`` (its ``calculateCPUPercentUnix``)."""
    cpu = sample.get("cpu_stats") or {}
    pre = sample.get("precpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    cpu_delta = float(usage.get("total_usage", 0)) - float(
        (pre.get("cpu_usage") or {}).get("total_usage", 0)
    )
    system_delta = float(cpu.get("system_cpu_usage", 0)) - float(pre.get("system_cpu_usage", 0))
    online = float(cpu.get("online_cpus", 0) or len(usage.get("percpu_usage", [])))
    if system_delta > 0 and cpu_delta > 0:
        return cpu_delta / system_delta * online * 100.0
    return 0.0


# --- sampling ---------------------------------------------------------------------


class Sampler:
    """Takes samples of one running container.

    ``pid`` is the container's init process (its network namespace);
    ``networks=False`` for ``--network host`` and ``NetworkDisabled``.
    """

    def __init__(
        self,
        manager: CgroupManager,
        *,
        name: str,
        container_id: str,
        pid: int,
        networks: bool = True,
    ) -> None:
        self.manager = manager
        self.name = name
        self.container_id = container_id
        self.pid = pid
        self.networks = networks

    def sample(self) -> dict[str, Any] | None:
        """One sample, or ``None`` when the cgroup is gone (the container stopped)."""
        from bulkhead.errors import BulkheadError

        try:
            if not self.manager.exists():
                return None
            stats = self.manager.stats()
        except BulkheadError:
            return None
        version = self.manager.version
        oom = 0
        if version == 2:
            oom = _oom_events(self.manager)
        try:
            system, cpus = system_cpu_usage()
        except (OSError, ValueError):
            system, cpus = 0, os.cpu_count() or 0
        return stats_response(
            name=self.name,
            container_id=self.container_id,
            read_ns=time.time_ns(),
            stats=stats,
            version=version,
            system_usage=system,
            online_cpus=cpus,
            host_memory=machine_memory(),
            networks=network_stats(self.pid) if self.networks and self.pid else None,
            oom_events=oom,
        )


def _oom_events(manager: CgroupManager) -> int:
    """v2's ``memory.events`` ``oom`` count (what moby reports as ``failcnt``)."""
    from bulkhead.cgroups import fs
    from bulkhead.errors import BulkheadError

    try:
        return fs.read_keyed(os.path.join(manager.path("memory"), "memory.events")).get("oom", 0)
    except (OSError, BulkheadError):
        return 0


__all__ = [
    "ZERO_TIME",
    "Sampler",
    "chain",
    "cpu_percent",
    "empty_stats",
    "machine_memory",
    "network_stats",
    "parse_meminfo_total",
    "parse_net_dev",
    "parse_proc_stat",
    "rfc3339_nano",
    "stats_response",
    "system_cpu_usage",
]
