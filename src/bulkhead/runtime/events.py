"""``bulkhead-runtime events``: a container's resource use and OOM kills, as JSON lines.

runc prints one JSON object per line, each an *event*::

    {"type":"stats","id":"web","data":{"cpu":{...},"memory":{...},"pids":{...},...}}
    {"type":"oom","id":"web"}

``--stats`` prints a single ``stats`` event and exits. Without it the command
keeps watching: a ``stats`` event every ``--interval`` (a Go duration such as
``5s`` or ``250ms``) and an ``oom`` event as soon as the kernel reports an
OOM kill in the container's cgroup (:class:`bulkhead.cgroups.events.OOMWatcher`:
the kernel wakes us, nothing polls the counters). It ends, with status 0,
when the container's cgroup is gone.

One thread, one ``poll``: the wait for the next tick *is* the wait for OOM.
"""

from __future__ import annotations

import re
import sys
import time
from typing import TYPE_CHECKING

import msgspec

from bulkhead.errors import BulkheadError, CgroupError, SpecError, WrongState

if TYPE_CHECKING:
    from bulkhead.cgroups.events import OOMWatcher
    from bulkhead.runtime.container import Runtime

_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (``1m30s``, ``250ms``, ``5s``); SpecError when it is not one."""
    pos, total = 0, 0.0
    value = text.strip()
    if value in ("0", ""):
        raise SpecError(f"invalid --interval {text!r}: duration must be greater than 0")
    while pos < len(value):
        m = _DURATION_PART.match(value, pos)
        if m is None:
            raise SpecError(f"invalid --interval {text!r}: not a duration (e.g. 5s, 250ms)")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    if total <= 0:
        raise SpecError(f"invalid --interval {text!r}: duration must be greater than 0")
    return total


class Event(msgspec.Struct, omit_defaults=True):
    """One line of ``events`` output (runc's ``types.Event``)."""

    type: str
    id: str
    data: msgspec.Raw | None = None


def _emit(event: Event) -> None:
    sys.stdout.buffer.write(msgspec.json.encode(event) + b"\n")
    sys.stdout.flush()


def _stats_event(rt: Runtime, container_id: str) -> Event:
    stats = rt.stats(container_id)
    return Event("stats", container_id, msgspec.Raw(msgspec.json.encode(stats)))


def events(rt: Runtime, container_id: str, *, stats_only: bool, interval: str) -> int:
    """Run the ``events`` verb; returns the exit status."""
    period = parse_duration(interval)
    st = rt.load(container_id)
    if rt.status(st) == "stopped":
        raise WrongState(f"container with id {container_id} is not running")
    if stats_only:
        _emit(_stats_event(rt, container_id))
        return 0
    cg = rt.cgroup(st)
    if cg is None:
        raise WrongState(f"container {container_id} has no cgroup")
    watcher: OOMWatcher | None
    try:
        watcher = cg.oom_events()
    except CgroupError:
        watcher = None  # no memory controller: stats only, as runc does
    try:
        next_tick = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_tick:
                try:
                    _emit(_stats_event(rt, container_id))
                except BulkheadError:
                    if not cg.exists() or rt.status(st) == "stopped":
                        return 0  # it ended between two ticks
                    raise
                next_tick = now + period
            if watcher is None:
                time.sleep(max(0.0, next_tick - time.monotonic()))
                if not cg.exists():
                    return 0
                continue
            got = watcher.wait(max(0.0, next_tick - time.monotonic()))
            if got is None:
                return 0  # the cgroup is gone: the container was deleted
            for _ in range(got):
                _emit(Event("oom", container_id))
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    finally:
        if watcher is not None:
            watcher.close()
