"""``update``: new resource limits for a running container, from flags or a JSON file.

runc's flags map onto the runtime-spec ``linux.resources`` fields; a
``--resources FILE`` (``-`` for stdin) gives the whole ``LinuxResources``
document instead. Sizes accept the suffixes ``docker`` does (``512m``, ``1g``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from bulkhead.errors import SpecError

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


def parse_size(flag: str, text: str) -> int:
    """A byte count like ``512m``; ``-1`` means unlimited."""
    value = text.strip().lower()
    if value == "-1":
        return -1
    num = value.rstrip("kmgtb")
    unit = value[len(num) :]
    try:
        n = float(num)
    except ValueError:
        raise SpecError(f"invalid value {text!r} for --{flag}: not a size") from None
    if unit not in _UNITS or n < 0:
        raise SpecError(f"invalid value {text!r} for --{flag}: not a size")
    return int(n * _UNITS[unit])


def _int(flag: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"invalid value {text!r} for --{flag}: not an integer") from None


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
            return msgspec.json.decode(data, type=LinuxResources)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            raise SpecError(f"--resources {args.resources}: {exc}") from None
    doc: dict[str, Any] = {}
    mem: dict[str, Any] = {}
    cpu: dict[str, Any] = {}

    def flag(name: str) -> str | None:
        value: str | None = getattr(args, name.replace("-", "_"))
        return value

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
    return msgspec.convert(doc, type=LinuxResources)
