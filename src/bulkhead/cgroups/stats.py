"""What a cgroup has used: the numbers ``runc events --stats`` reports.

The structures mirror runc's ``types.Stats`` field for field, and encode to
the same JSON (``msgspec.json.encode(stats)``), so tools that read runc's
events read ours. Units: bytes for memory, nanoseconds for CPU time.
"No limit" reads as :data:`UNLIMITED` (2**64-1) for memory on v2 (v1
reports the kernel's page-rounded ``LONG_MAX``), and as 0 for pids, as
runc reports them.

memory
    ``usage`` is the cgroup's charge now, ``max`` its peak, ``failcnt`` how
    often it hit the limit; ``swap`` is memory+swap (v1's ``memsw``, v2
    computed the same way); ``cache`` the page cache; ``raw`` the whole
    ``memory.stat``.
cpu
    ``usage.total`` CPU time used, split per CPU (v1 only) and into user and
    kernel time; ``throttling`` counts CFS periods and the periods in which
    the quota ran out.
pids
    tasks now in the cgroup and the limit.
blkio
    bytes and operations per device and direction (``Read``, ``Write``).
hugetlb
    per huge page size (``2MB``): usage, peak (v1), times the limit was hit.
"""

from __future__ import annotations

import msgspec

#: How "no limit" reads on cgroup v2 (runc's math.MaxUint64).
UNLIMITED = 2**64 - 1


class MemoryEntry(msgspec.Struct, kw_only=True):
    """Usage, peak, limit and limit hits of one kind of memory."""

    limit: int = 0
    usage: int = 0
    max: int = 0
    failcnt: int = 0


class Memory(msgspec.Struct, kw_only=True, rename="camel"):
    """Memory use of a cgroup."""

    cache: int = 0
    usage: MemoryEntry = msgspec.field(default_factory=MemoryEntry)
    swap: MemoryEntry = msgspec.field(default_factory=MemoryEntry)
    kernel: MemoryEntry = msgspec.field(default_factory=MemoryEntry)
    kernel_tcp: MemoryEntry = msgspec.field(default_factory=MemoryEntry, name="kernelTCP")
    raw: dict[str, int] = {}


class CpuUsage(msgspec.Struct, kw_only=True):
    """CPU time used, in nanoseconds."""

    total: int = 0
    percpu: list[int] = []
    percpu_kernel: list[int] = []
    percpu_user: list[int] = []
    kernel: int = 0
    user: int = 0


class Throttling(msgspec.Struct, kw_only=True, rename="camel"):
    """CFS bandwidth control: periods elapsed, periods throttled, time throttled (ns)."""

    periods: int = 0
    throttled_periods: int = 0
    throttled_time: int = 0


class Cpu(msgspec.Struct, kw_only=True):
    """CPU use of a cgroup."""

    usage: CpuUsage = msgspec.field(default_factory=CpuUsage)
    throttling: Throttling = msgspec.field(default_factory=Throttling)


class Pids(msgspec.Struct, kw_only=True):
    """Tasks in the cgroup now, and the limit (0: none)."""

    current: int = 0
    limit: int = 0


class BlkioEntry(msgspec.Struct, kw_only=True):
    """One counter of one block device: ``op`` is ``Read``, ``Write``, ``Sync`` ... ``Total``."""

    major: int
    minor: int
    op: str
    value: int


class Blkio(msgspec.Struct, kw_only=True, rename="camel", omit_defaults=True):
    """Block I/O counters, recursive over the cgroup's sub-tree."""

    io_service_bytes_recursive: list[BlkioEntry] = []
    io_serviced_recursive: list[BlkioEntry] = []


class Hugetlb(msgspec.Struct, kw_only=True):
    """Use of one huge page size, in bytes."""

    usage: int = 0
    max: int = 0
    failcnt: int = 0


class Stats(msgspec.Struct, kw_only=True):
    """Everything :meth:`CgroupManager.stats` reports about a container's cgroup."""

    cpu: Cpu = msgspec.field(default_factory=Cpu)
    memory: Memory = msgspec.field(default_factory=Memory)
    pids: Pids = msgspec.field(default_factory=Pids)
    blkio: Blkio = msgspec.field(default_factory=Blkio)
    hugetlb: dict[str, Hugetlb] = {}
