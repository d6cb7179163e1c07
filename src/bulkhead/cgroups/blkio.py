"""Block I/O: the v1 ``blkio`` controller and its v2 successor ``io``.

``linux.resources.blockIO`` has two kinds of settings:

weights (proportional)
    ``weight`` (10..1000) for every device, ``weightDevice`` per device.
    They need an I/O scheduler that honours them (BFQ, or CFQ on old
    kernels): v1 ``blkio.weight`` or ``blkio.bfq.weight``; v2
    ``io.bfq.weight`` (same scale) or else ``io.weight`` (1..10000, converted
    as runc does: ``1 + (weight - 10) * 9999 // 990``). A host without such a
    file cannot apply a weight: CgroupError.
throttles (absolute)
    bytes or operations per second, per device (``major:minor``), read and
    write separately: v1 ``blkio.throttle.{read,write}_{bps,iops}_device``
    (one ``"8:0 1048576"`` line per write; rate 0 removes the rule), v2
    ``io.max`` (``"8:0 rbps=1048576"``; ``max`` removes it).

Every device is checked before anything is written: it must exist
(``/sys/dev/block/<major>:<minor>``), be a whole disk (the kernel keeps
I/O rules per disk, and refuses a partition with ENODEV), and, for a
per-device weight through a BFQ file, use the BFQ scheduler. The kernel
has the last word all the same (iocost for per-device ``io.weight`` ...);
what it refuses during an update is undone (:func:`.fs.apply_writes`).

Statistics come from ``blkio.throttle.io_service_bytes_recursive`` and
``..._serviced_recursive`` on v1 and ``io.stat`` on v2.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Sequence
from typing import NamedTuple

from bulkhead.cgroups import fs
from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import (
    PREFIX,
    BlockIOResources,
    ThrottleDevice,
    dev_key,
    need_int,
    need_range,
)
from bulkhead.cgroups.stats import Blkio, BlkioEntry
from bulkhead.errors import CgroupError

F = f"{PREFIX}.blockIO"
WEIGHT_MIN, WEIGHT_MAX = 10, 1000

#: Where the kernel lists block devices by number (a setting for the tests).
SYS_DEV_BLOCK = "/sys/dev/block"


def check_device(key: str, field: str, bfq_field: str | None = None) -> None:
    """Refuse a ``major:minor`` that is no block device here, a partition, or not on BFQ.

    ``bfq_field``: the entry sets a per-device weight through a BFQ file; a
    device on another scheduler is then an error naming that field.
    """
    where = f"{SYS_DEV_BLOCK}/{key}"
    if not fs.exists(where):
        raise CgroupError(f"{field}: no block device {key} on this host (see {SYS_DEV_BLOCK})")
    if fs.exists(f"{where}/partition"):
        disk = (fs.read_opt(os.path.join(os.path.realpath(where), "..", "dev")) or "").strip()
        raise CgroupError(
            f"{field}: {key} is a partition; the kernel keeps I/O limits and weights per "
            f"whole disk" + (f" (its disk is {disk})" if disk else "")
        )
    if bfq_field is not None:
        sched = fs.read_opt(f"{where}/queue/scheduler")
        if sched is not None and "[bfq]" not in sched:
            raise CgroupError(
                f"{bfq_field}: device {key} does not use the BFQ I/O scheduler "
                f"(it has: {sched.strip()}), and per-device weights need it "
                f"({where}/queue/scheduler)"
            )


def weight_to_io_weight(weight: int) -> int:
    """v1 blkio weight (10..1000) to v2 ``io.weight`` (1..10000), runc's formula."""
    if weight == 0:
        return 0
    return 1 + (weight - 10) * 9999 // 990


def _weight(value: object, field: str) -> int:
    return need_range(value, field, WEIGHT_MIN, WEIGHT_MAX)


def _explain(
    device: str, weight: bool = False, iocost: bool = False
) -> Callable[[OSError], str | None]:
    """Say what the kernel's ENODEV, or EOPNOTSUPP on a per-device ``weight``, means.

    ``iocost``: the write went to v2's ``io.weight``, which the iocost
    controller serves (it also takes per-device weights once enabled).
    """

    def explain(exc: OSError) -> str | None:
        if exc.errno == errno.ENODEV:
            return f"no block device {device} on this host (see /sys/dev/block)"
        if exc.errno == errno.EOPNOTSUPP and weight:
            return (
                f"device {device} does not weight I/O per cgroup: per-device weights need "
                f"the BFQ I/O scheduler on it (/sys/dev/block/{device}/queue/scheduler)"
                + (" or iocost enabled for it (io.cost.qos)" if iocost else "")
            )
        return None

    return explain


class _Throttle(NamedTuple):
    field: str  # the spec field, for messages
    device: str  # "major:minor"
    v1_file: str  # blkio.throttle.<this>
    v2_key: str  # the key in an io.max line
    rate: int  # per second; 0 removes the rule


def _throttles(bio: BlockIOResources) -> list[_Throttle]:
    """Every throttle rule of ``bio``, checked."""
    lists: tuple[tuple[Sequence[ThrottleDevice] | None, str, str, str], ...] = (
        (bio.throttle_read_bps_device, "throttleReadBpsDevice", "read_bps_device", "rbps"),
        (bio.throttle_write_bps_device, "throttleWriteBpsDevice", "write_bps_device", "wbps"),
        (bio.throttle_read_iops_device, "throttleReadIOPSDevice", "read_iops_device", "riops"),
        (bio.throttle_write_iops_device, "throttleWriteIOPSDevice", "write_iops_device", "wiops"),
    )
    out: list[_Throttle] = []
    for entries, name, v1_file, v2_key in lists:
        for i, dev in enumerate(entries or ()):
            field = f"{F}.{name}[{i}]"
            key = dev_key(dev.major, dev.minor, field)
            rate = need_int(dev.rate, f"{field}.rate")
            if rate < 0:
                raise CgroupError(f"{field}.rate: {rate} is negative")
            check_device(key, field)
            out.append(_Throttle(field, key, v1_file, v2_key, rate))
    return out


def plan_v1(bio: BlockIOResources | None, d: str) -> list[Write]:
    """The writes that apply ``bio`` to the v1 blkio cgroup ``d``."""
    if bio is None:
        return []
    writes: list[Write] = []
    weight_file = next(
        (f for f in (f"{d}/blkio.weight", f"{d}/blkio.bfq.weight") if fs.exists(f)), None
    )
    prefix = weight_file[: -len("weight")] if weight_file else None

    def need_weight_file(field: str) -> str:
        if prefix is None:
            raise CgroupError(
                f"{field}: this kernel's blkio controller has no weight file "
                "(no CFQ or BFQ I/O scheduler), so weights cannot be applied"
            )
        return prefix

    if bio.weight:
        w = _weight(bio.weight, f"{F}.weight")
        writes.append(Write(need_weight_file(f"{F}.weight") + "weight", str(w), f"{F}.weight"))

    def need_leaf(field: str, name: str) -> str:
        path = f"{d}/{name}"
        if fs.exists(d) and not fs.exists(path):
            raise CgroupError(
                f"{field}: this kernel has no {name}: leaf weights were a feature of the CFQ "
                "I/O scheduler, which Linux 5.0 removed"
            )
        return path

    if bio.leaf_weight:
        w = _weight(bio.leaf_weight, f"{F}.leafWeight")
        path = need_leaf(f"{F}.leafWeight", "blkio.leaf_weight")
        writes.append(Write(path, str(w), f"{F}.leafWeight"))
    for i, dev in enumerate(bio.weight_device or ()):
        field = f"{F}.weightDevice[{i}]"
        key = dev_key(dev.major, dev.minor, field)
        if dev.weight or dev.leaf_weight:
            on_bfq = bool(dev.weight) and prefix == f"{d}/blkio.bfq."
            check_device(key, field, f"{field}.weight" if on_bfq else None)
        if dev.weight:
            w = _weight(dev.weight, f"{field}.weight")
            writes.append(
                Write(
                    need_weight_file(field) + "weight_device",
                    f"{key} {w}",
                    f"{field}.weight",
                    explain=_explain(key, weight=True),
                )
            )
        if dev.leaf_weight:
            w = _weight(dev.leaf_weight, f"{field}.leafWeight")
            writes.append(
                Write(
                    need_leaf(f"{field}.leafWeight", "blkio.leaf_weight_device"),
                    f"{key} {w}",
                    f"{field}.leafWeight",
                    explain=_explain(key, weight=True),
                )
            )
    for t in _throttles(bio):
        path = f"{d}/blkio.throttle.{t.v1_file}"
        writes.append(Write(path, f"{t.device} {t.rate}", t.field, explain=_explain(t.device)))
    return writes


def plan_v2(bio: BlockIOResources | None, d: str) -> list[Write]:
    """The writes that apply ``bio`` to the v2 cgroup ``d`` (``io.*`` files)."""
    if bio is None:
        return []
    writes: list[Write] = []
    bfq = fs.exists(f"{d}/io.bfq.weight")
    if bio.leaf_weight:
        raise CgroupError(f"{F}.leafWeight: cgroup v2 has no leaf weights")
    if bio.weight:
        w = _weight(bio.weight, f"{F}.weight")
        if bfq:
            writes.append(Write(f"{d}/io.bfq.weight", str(w), f"{F}.weight"))
        else:
            writes.append(Write(f"{d}/io.weight", str(weight_to_io_weight(w)), f"{F}.weight"))
    for i, dev in enumerate(bio.weight_device or ()):
        field = f"{F}.weightDevice[{i}]"
        key = dev_key(dev.major, dev.minor, field)
        if dev.leaf_weight:
            raise CgroupError(f"{field}.leafWeight: cgroup v2 has no leaf weights")
        if dev.weight:
            w = _weight(dev.weight, f"{field}.weight")
            check_device(key, field, f"{field}.weight" if bfq else None)
            explain = _explain(key, weight=True, iocost=not bfq)
            if bfq:
                value = f"{key} {w}"
                writes.append(
                    Write(f"{d}/io.bfq.weight", value, f"{field}.weight", explain=explain)
                )
            else:
                value = f"{key} {weight_to_io_weight(w)}"
                writes.append(Write(f"{d}/io.weight", value, f"{field}.weight", explain=explain))
    for t in _throttles(bio):
        value = f"{t.device} {t.v2_key}={t.rate if t.rate else 'max'}"
        writes.append(Write(f"{d}/io.max", value, t.field, explain=_explain(t.device)))
    return writes


def _v1_entries(path: str) -> list[BlkioEntry]:
    out: list[BlkioEntry] = []
    for line in (fs.read_opt(path) or "").splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue  # the "Total N" line
        major, _, minor = parts[0].partition(":")
        try:
            out.append(
                BlkioEntry(major=int(major), minor=int(minor), op=parts[1], value=int(parts[2]))
            )
        except ValueError:
            continue
    return out


def stats_v1(d: str) -> Blkio:
    """I/O counters of the v1 blkio cgroup ``d``."""
    return Blkio(
        io_service_bytes_recursive=_v1_entries(f"{d}/blkio.throttle.io_service_bytes_recursive"),
        io_serviced_recursive=_v1_entries(f"{d}/blkio.throttle.io_serviced_recursive"),
    )


def stats_v2(d: str) -> Blkio:
    """I/O counters of the v2 cgroup ``d`` from ``io.stat``, in v1's shape."""
    out = Blkio()
    for line in (fs.read_opt(f"{d}/io.stat") or "").splitlines():
        dev, *pairs = line.split()
        major, _, minor = dev.partition(":")
        try:
            ma, mi = int(major), int(minor)
            values = dict((k, int(v)) for k, _, v in (p.partition("=") for p in pairs))
        except ValueError:
            continue
        for key, op, target in (
            ("rbytes", "Read", out.io_service_bytes_recursive),
            ("wbytes", "Write", out.io_service_bytes_recursive),
            ("rios", "Read", out.io_serviced_recursive),
            ("wios", "Write", out.io_serviced_recursive),
        ):
            if key in values:
                target.append(BlkioEntry(major=ma, minor=mi, op=op, value=values[key]))
    return out
