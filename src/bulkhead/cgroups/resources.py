"""The shape of ``linux.resources`` that the cgroup managers read, and checks on it.

The managers take the runtime-spec model (``bulkhead.oci.runtime_spec.
LinuxResources``) but only read it, so they are typed against the
structural :class:`Resources` protocol below: any object with these
attributes will do (the unit tests use small dataclasses). Every attribute
is optional: ``None`` means "leave this setting as it is", which is what
``update`` relies on.

The checks (:func:`need_int` ...) run before any file is written, so that
a bad value leaves the cgroup unchanged. A value the kernel or host cannot
take raises :class:`~bulkhead.errors.CgroupError` whose message starts with
the spec field (``linux.resources.memory.limit: ...``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from bulkhead.errors import CgroupError

PREFIX = "linux.resources"


class MemoryResources(Protocol):
    """``linux.resources.memory``: bytes, -1 for no limit."""

    @property
    def limit(self) -> int | None: ...
    @property
    def reservation(self) -> int | None: ...
    @property
    def swap(self) -> int | None: ...
    @property
    def kernel(self) -> int | None: ...
    @property
    def kernel_tcp(self) -> int | None: ...
    @property
    def swappiness(self) -> int | None: ...
    @property
    def disable_oom_killer(self) -> bool | None: ...
    @property
    def use_hierarchy(self) -> bool | None: ...
    @property
    def check_before_update(self) -> bool | None: ...


class CPUResources(Protocol):
    """``linux.resources.cpu``: shares, CFS quota/period/burst (µs), cpuset lists, idle."""

    @property
    def shares(self) -> int | None: ...
    @property
    def quota(self) -> int | None: ...
    @property
    def burst(self) -> int | None: ...
    @property
    def period(self) -> int | None: ...
    @property
    def realtime_runtime(self) -> int | None: ...
    @property
    def realtime_period(self) -> int | None: ...
    @property
    def cpus(self) -> str | None: ...
    @property
    def mems(self) -> str | None: ...
    @property
    def idle(self) -> int | None: ...


class PidsResources(Protocol):
    """``linux.resources.pids``: the most tasks the cgroup may hold."""

    @property
    def limit(self) -> int | None: ...


class WeightDevice(Protocol):
    """One entry of ``blockIO.weightDevice``."""

    @property
    def major(self) -> int: ...
    @property
    def minor(self) -> int: ...
    @property
    def weight(self) -> int | None: ...
    @property
    def leaf_weight(self) -> int | None: ...


class ThrottleDevice(Protocol):
    """One entry of a ``blockIO.throttle*Device`` list: a rate for one block device."""

    @property
    def major(self) -> int: ...
    @property
    def minor(self) -> int: ...
    @property
    def rate(self) -> int: ...


class BlockIOResources(Protocol):
    """``linux.resources.blockIO``: proportional weights and absolute throttles."""

    @property
    def weight(self) -> int | None: ...
    @property
    def leaf_weight(self) -> int | None: ...
    @property
    def weight_device(self) -> Sequence[WeightDevice] | None: ...
    @property
    def throttle_read_bps_device(self) -> Sequence[ThrottleDevice] | None: ...
    @property
    def throttle_write_bps_device(self) -> Sequence[ThrottleDevice] | None: ...
    @property
    def throttle_read_iops_device(self) -> Sequence[ThrottleDevice] | None: ...
    @property
    def throttle_write_iops_device(self) -> Sequence[ThrottleDevice] | None: ...


class HugepageLimit(Protocol):
    """One entry of ``hugepageLimits``: ``pageSize`` like ``2MB``, ``limit`` in bytes."""

    @property
    def page_size(self) -> str: ...
    @property
    def limit(self) -> int: ...


class DeviceRule(Protocol):
    """One entry of ``linux.resources.devices``: allow or deny access to device nodes.

    ``type`` is ``a`` (all), ``c`` (char) or ``b`` (block); ``major``/``minor``
    ``None`` (or -1) mean any; ``access`` is a subset of ``rwm`` (read,
    write, mknod).
    """

    @property
    def allow(self) -> bool: ...
    @property
    def type(self) -> str | None: ...
    @property
    def major(self) -> int | None: ...
    @property
    def minor(self) -> int | None: ...
    @property
    def access(self) -> str | None: ...


class InterfacePriority(Protocol):
    """One entry of ``network.priorities``: a network interface and its priority."""

    @property
    def name(self) -> str: ...
    @property
    def priority(self) -> int: ...


class NetworkResources(Protocol):
    """``linux.resources.network`` (net_cls class id, net_prio priorities)."""

    @property
    def class_id(self) -> int | None: ...
    @property
    def priorities(self) -> Sequence[InterfacePriority] | None: ...


class RdmaLimit(Protocol):
    """One value of ``linux.resources.rdma`` (keyed by device name): None means "leave it"."""

    @property
    def hca_handles(self) -> int | None: ...
    @property
    def hca_objects(self) -> int | None: ...


class Resources(Protocol):
    """``linux.resources`` as the cgroup managers read it."""

    @property
    def devices(self) -> Sequence[DeviceRule] | None: ...
    @property
    def memory(self) -> MemoryResources | None: ...
    @property
    def cpu(self) -> CPUResources | None: ...
    @property
    def pids(self) -> PidsResources | None: ...
    @property
    def block_io(self) -> BlockIOResources | None: ...
    @property
    def hugepage_limits(self) -> Sequence[HugepageLimit] | None: ...
    @property
    def network(self) -> NetworkResources | None: ...
    @property
    def rdma(self) -> Mapping[str, RdmaLimit] | None: ...
    @property
    def unified(self) -> Mapping[str, str] | None: ...


def need_int(value: object, field: str) -> int:
    """``value`` if it is a whole number (not a bool), else a CgroupError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise CgroupError(f"{field}: {value!r} is not an integer")
    return value


def need_range(value: object, field: str, low: int, high: int, what: str = "") -> int:
    """A whole number in ``[low, high]``."""
    n = need_int(value, field)
    if not low <= n <= high:
        extra = f" ({what})" if what else ""
        raise CgroupError(f"{field}: {n} is out of range {low}..{high}{extra}")
    return n


def need_limit(value: object, field: str) -> int:
    """A byte or count limit: a positive number, or -1 for no limit."""
    n = need_int(value, field)
    if n < -1 or n == 0:
        raise CgroupError(f"{field}: {n} is not a valid limit (a positive number, or -1 for none)")
    return n


def parse_id_list(text: object, field: str) -> set[int]:
    """A kernel *list format* (``0-3,8,10-11``) as a set; CgroupError if malformed."""
    if not isinstance(text, str):
        raise CgroupError(f"{field}: {text!r} is not a string")
    out: set[int] = set()
    stripped = text.strip()
    if not stripped:
        return out
    for part in stripped.split(","):
        lo, dash, hi = part.strip().partition("-")
        try:
            a = int(lo)
            b = int(hi) if dash else a
        except ValueError:
            raise CgroupError(
                f"{field}: {text!r} is not a list such as 0-3,5 (bad item {part!r})"
            ) from None
        if a < 0 or b < a:
            raise CgroupError(f"{field}: {text!r} has a bad range {part!r}")
        out.update(range(a, b + 1))
    return out


def format_id_list(ids: set[int]) -> str:
    """A set of ids in the kernel's list format (``0-3,8``)."""
    ranges: list[list[int]] = []
    for n in sorted(ids):
        if ranges and n == ranges[-1][1] + 1:
            ranges[-1][1] = n
        else:
            ranges.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


def dev_key(major: object, minor: object, field: str) -> str:
    """``major:minor`` of a block device entry, checked."""
    ma = need_int(major, f"{field}.major")
    mi = need_int(minor, f"{field}.minor")
    if ma < 0 or mi < 0:
        raise CgroupError(f"{field}: device {ma}:{mi} is not a valid major:minor")
    return f"{ma}:{mi}"
