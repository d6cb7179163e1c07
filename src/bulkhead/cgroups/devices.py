"""The devices controller: which device nodes a container may open or create.

The spec's ``linux.resources.devices`` is an ordered list of rules, each
*allow* or *deny*, for a ``type`` (``c`` char, ``b`` block, ``a`` all), a
``major``/``minor`` number (absent or -1: any) and an ``access`` made of
``r`` (read), ``w`` (write), ``m`` (mknod).

v1 (``devices.allow``, ``devices.deny``, ``devices.list``): bulkhead writes,
as runc does, ``a`` to ``devices.deny`` first (nothing allowed), then each
rule in order to ``devices.allow`` or ``devices.deny`` (one
``"c 1:3 rwm"`` per write), then the standard device nodes every container
gets (:data:`DEFAULT_RULES`, runc's list: ``/dev/null``, ``zero``, ``full``,
``random``, ``urandom``, ``tty``, ``ptmx``, ``/dev/pts/*``, ``/dev/net/tun``,
and ``mknod`` of anything). A host without a devices hierarchy is refused
outright: it would leave every device open.

v2 has no devices files: the same rules become an eBPF program of type
``BPF_PROG_TYPE_CGROUP_DEVICE`` (:func:`plan_v2`, :mod:`.devicefilter`)
that the manager attaches to the cgroup; the kernel runs it at each open or
mknod of a device node and denies what it does not allow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, DeviceRule, need_int
from bulkhead.errors import CgroupError

F = f"{PREFIX}.devices"


class Rule(NamedTuple):
    """A device rule of bulkhead's own (same attributes as the spec's)."""

    allow: bool
    type: str | None = "a"
    major: int | None = None
    minor: int | None = None
    access: str | None = "rwm"


#: What runc allows every container, after the spec's own rules.
DEFAULT_RULES: tuple[Rule, ...] = (
    Rule(True, "c", None, None, "m"),  # mknod of any char device ...
    Rule(True, "b", None, None, "m"),  # ... and any block device (opening them is another matter)
    Rule(True, "c", 1, 3, "rwm"),  # /dev/null
    Rule(True, "c", 1, 8, "rwm"),  # /dev/random
    Rule(True, "c", 1, 7, "rwm"),  # /dev/full
    Rule(True, "c", 5, 0, "rwm"),  # /dev/tty
    Rule(True, "c", 1, 5, "rwm"),  # /dev/zero
    Rule(True, "c", 1, 9, "rwm"),  # /dev/urandom
    Rule(True, "c", 136, None, "rwm"),  # /dev/pts/*
    Rule(True, "c", 5, 2, "rwm"),  # /dev/ptmx
    Rule(True, "c", 10, 200, "rwm"),  # /dev/net/tun
)


def normalize(rule: DeviceRule, field: str) -> Rule:
    """``rule`` checked, with ``None`` for "any" major/minor and ``rwm`` for no access given."""
    kind = rule.type or "a"
    if kind not in ("a", "b", "c"):
        raise CgroupError(f"{field}.type: {kind!r} is not a, b or c")
    access = rule.access or "rwm"
    if not set(access) <= set("rwm") or len(set(access)) != len(access):
        raise CgroupError(f"{field}.access: {access!r} is not a combination of r, w and m")
    numbers: list[int | None] = []
    for name, value in (("major", rule.major), ("minor", rule.minor)):
        if value is None or value == -1:
            numbers.append(None)
            continue
        n = need_int(value, f"{field}.{name}")
        if n < 0:
            raise CgroupError(f"{field}.{name}: {n} is not a device number")
        numbers.append(n)
    return Rule(bool(rule.allow), kind, numbers[0], numbers[1], access)


def rule_text(rule: DeviceRule, field: str) -> str:
    """A rule as the kernel reads it: ``"c 1:3 rwm"``; ``*`` for any number."""
    r = normalize(rule, field)
    if r.type == "a":
        return "a"
    major = "*" if r.major is None else r.major
    minor = "*" if r.minor is None else r.minor
    return f"{r.type} {major}:{minor} {r.access}"


def plan_v1(rules: Sequence[DeviceRule], d: str) -> list[Write]:
    """Deny everything, then the spec's rules in order, then :data:`DEFAULT_RULES`."""
    writes = [Write(f"{d}/devices.deny", "a", F)]
    for i, rule in enumerate(rules):
        field = f"{F}[{i}]"
        name = "devices.allow" if rule.allow else "devices.deny"
        writes.append(Write(f"{d}/{name}", rule_text(rule, field), field))
    for rule in DEFAULT_RULES:
        writes.append(Write(f"{d}/devices.allow", rule_text(rule, F), f"{F} (default rules)"))
    return writes


def plan_v2(rules: Sequence[DeviceRule]) -> bytes:
    """The eBPF program (``BPF_PROG_TYPE_CGROUP_DEVICE``) for the rules, as v1 would apply them.

    The same list as :func:`plan_v1` writes (deny everything, the spec's
    rules, :data:`DEFAULT_RULES`) goes through :mod:`.devicefilter`'s
    emulation of the v1 kernel's rule handling, so both versions let a
    container open the same devices.
    """
    from bulkhead.cgroups import devicefilter

    checked = [Rule(False, "a")]
    checked += [normalize(rule, f"{F}[{i}]") for i, rule in enumerate(rules)]
    checked += DEFAULT_RULES
    return devicefilter.compile_rules(checked)
