"""``update``: new resource limits for a running container, from flags or a JSON file.

runc's flags map onto the runtime-spec ``linux.resources`` fields; a
``--resources FILE`` (``-`` for stdin) gives the whole ``LinuxResources``
document instead. Sizes accept the suffixes ``docker`` does (``512m``, ``1g``).

A value that is no number, or out of the spec's range, is a
:class:`~bulkhead.errors.SpecError` whose one line names the spec field and
the flag (``linux.resources.memory.limit (--memory): '-5' is not a size
...``), raised before the container is looked at. What only the host can
judge (CPUs that exist, a limit below the usage ...) is the cgroup
manager's to refuse, with the field first as well.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from bulkhead.errors import SpecError, UnsupportedError

if TYPE_CHECKING:
    from bulkhead.runtime.flags import Namespace

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
}


PREFIX = "linux.resources"

#: Each flag and the spec field it sets (its path below ``linux.resources``).
FLAG_FIELDS = {
    "memory": "memory.limit",
    "memory-reservation": "memory.reservation",
    "memory-swap": "memory.swap",
    "kernel-memory": "memory.kernel",
    "kernel-memory-tcp": "memory.kernelTCP",
    "cpu-period": "cpu.period",
    "cpu-quota": "cpu.quota",
    "cpu-share": "cpu.shares",
    "cpu-rt-period": "cpu.realtimePeriod",
    "cpu-rt-runtime": "cpu.realtimeRuntime",
    "cpu-burst": "cpu.burst",
    "cpu-idle": "cpu.idle",
    "cpuset-cpus": "cpu.cpus",
    "cpuset-mems": "cpu.mems",
    "pids-limit": "pids.limit",
    "blkio-weight": "blockIO.weight",
}


def _where(flag: str) -> str:
    return f"{PREFIX}.{FLAG_FIELDS[flag]} (--{flag})" if flag in FLAG_FIELDS else f"--{flag}"


def parse_size(flag: str, text: str) -> int:
    """A byte count like ``512m``; ``-1`` means unlimited."""
    value = text.strip().lower()
    if value == "-1":
        return -1
    num = value.rstrip("kmgtb")
    unit = value[len(num) :]
    why = (
        f"{text!r} is not a size (a number of bytes with an optional k, m, g or t suffix, "
        "or -1 for no limit)"
    )
    try:
        n = float(num)
    except ValueError:
        raise SpecError(why, _where(flag)) from None
    if unit not in _UNITS or not n >= 0 or n * _UNITS[unit] >= 2**63:
        raise SpecError(why, _where(flag))
    return int(n * _UNITS[unit])


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{text!r} is not an integer", _where(flag)) from None


_AT = re.compile(r"^(?P<why>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)


def _validation_error(exc: msgspec.ValidationError, doc: Any, source: str | None) -> SpecError:
    """msgspec's "Expected `int` >= 0 - at `$.cpu.shares`" as a line naming the spec field."""
    m = _AT.match(str(exc))
    why = m.group("why") if m else str(exc)
    path = (m.group("path") if m else None) or ""
    keys = [k for k in re.split(r"\.|\[(\d+)\]", path) if k]
    value: Any = doc
    for key in keys:
        try:
            value = value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError, TypeError, ValueError):
            value = None
            break
    field = PREFIX + path
    flag = next((f for f, p in FLAG_FIELDS.items() if "." + p == path), None)
    where = f"{field} (--{flag})" if source is None and flag else field
    if source is not None:
        where = f"--resources {source}: {field}"
    shown = f"{value!r}: " if value is not None and not isinstance(value, dict | list) else ""
    return SpecError(f"{shown}{why.rstrip('.')}", where)


def resources_from_cli(args: Namespace) -> Any:
    """The ``LinuxResources`` that ``update``'s flags (or --resources) describe."""
    from bulkhead.oci.runtime_spec import LinuxResources

    if args.resources:
        try:
            data = (
                sys.stdin.buffer.read()
                if args.resources == "-"
                else Path(args.resources).read_bytes()
            )
        except OSError as exc:
            raise SpecError(f"--resources {args.resources}: {exc.strerror}") from None
        try:
            raw = msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise SpecError(f"--resources {args.resources}: {exc}") from None
        try:
            return msgspec.convert(raw, type=LinuxResources)
        except msgspec.ValidationError as exc:
            raise _validation_error(exc, raw, args.resources) from None
    doc: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    cpu: dict[str, Any] = {}

    def flag(name: str) -> str | None:
        value: str | None = getattr(args, name.replace("-", "_"))
        return value

    for name in ("l3-cache-schema", "mem-bw-schema"):
        if flag(name):
            # linux.intelRdt, not linux.resources: runc refuses it where RDT is off
            raise UnsupportedError(
                f"--{name}: Intel RDT (linux.intelRdt) is not supported by bulkhead"
            )

    for name, key in (
        ("memory", "limit"),
        ("memory-reservation", "reservation"),
        ("memory-swap", "swap"),
        ("kernel-memory", "kernel"),
        ("kernel-memory-tcp", "kernelTCP"),
    ):
        v = flag(name)
        if v is not None:
            mem[key] = parse_size(name, v)
    for name, key in (
        ("cpu-period", "period"),
        ("cpu-quota", "quota"),
        ("cpu-share", "shares"),
        ("cpu-rt-period", "realtimePeriod"),
        ("cpu-rt-runtime", "realtimeRuntime"),
        ("cpu-burst", "burst"),
        ("cpu-idle", "idle"),
    ):
        v = flag(name)
        if v is not None:
            cpu[key] = _int(name, v)
    for name, key in (("cpuset-cpus", "cpus"), ("cpuset-mems", "mems")):
        v = flag(name)
        if v is not None:
            cpu[key] = v
    if mem:
        doc["memory"] = mem
    if cpu:
        doc["cpu"] = cpu
    v = flag("pids-limit")
    if v is not None:
        doc["pids"] = {"limit": _int("pids-limit", v)}
    v = flag("blkio-weight")
    if v is not None:
        doc["blockIO"] = {"weight": _int("blkio-weight", v)}
    try:
        return msgspec.convert(doc, type=LinuxResources)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, doc, None) from None
