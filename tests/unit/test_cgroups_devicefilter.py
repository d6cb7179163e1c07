"""The cgroup v2 device filter: v1's rule semantics emulated, compiled to eBPF, interpreted.

The programs are run here by :func:`devicefilter.run`, a small interpreter
of the opcodes the compiler emits; the kernel runs them in the cgroup v2
lane (tests/cgroupv2).
"""

from __future__ import annotations

import struct

import pytest

from bulkhead.cgroups import devicefilter, devices
from bulkhead.cgroups.devices import DEFAULT_RULES, Rule
from bulkhead.errors import CgroupError
from bulkhead.oci.runtime_spec import LinuxDeviceCgroup

DENY_ALL = Rule(False, "a")
ALLOW_ALL = Rule(True, "a")


def test_emulate_deny_all_then_exceptions_merge_and_shrink() -> None:
    allow, exc = devicefilter.emulate(
        [
            ALLOW_ALL,
            Rule(True, "c", 1, 3, "rw"),  # agrees with the default: nothing to record
            DENY_ALL,  # clears everything
            Rule(True, "c", 1, 3, "r"),
            Rule(True, "c", 1, 3, "w"),  # merged into the same exception
            Rule(True, "b", 8, None, "rwm"),
            Rule(False, "b", 8, None, "rw"),  # takes r and w away: m is left
            Rule(True, "c", 5, 1, "m"),
            Rule(False, "c", 5, 1, "m"),  # nothing left: dropped
            Rule(False, "c", None, None, "rwm"),  # not the same key as c 1:3: no effect
        ]
    )
    assert allow is False
    assert exc == [Rule(True, "c", 1, 3, "rw"), Rule(True, "b", 8, None, "m")]


def test_emulate_allow_all_with_denials() -> None:
    allow, exc = devicefilter.emulate([ALLOW_ALL, Rule(False, "b", 8, 0, "w")])
    assert allow is True
    assert exc == [Rule(False, "b", 8, 0, "w")]


def run(rules: list[Rule], kind: str, major: int, minor: int, access: str) -> bool:
    return devicefilter.run(devicefilter.compile_rules(rules), kind, major, minor, access)


def test_program_deny_by_default() -> None:
    rules = [DENY_ALL, Rule(True, "c", 1, 3, "rw"), Rule(True, "b", None, None, "m")]
    assert run(rules, "c", 1, 3, "r")
    assert run(rules, "c", 1, 3, "rw")
    assert not run(rules, "c", 1, 3, "m")  # not in the exception's access
    assert not run(rules, "c", 1, 3, "rwm")  # all of it must be
    assert not run(rules, "c", 1, 5, "r")
    assert not run(rules, "b", 1, 3, "r")  # the type must match too
    assert run(rules, "b", 8, 0, "m")  # wildcard major and minor
    assert run(rules, "b", 259, 7, "m")
    assert not run(rules, "b", 8, 0, "r")


def test_program_allow_by_default_denies_on_overlap() -> None:
    rules = [ALLOW_ALL, Rule(False, "b", 8, None, "w")]
    assert run(rules, "b", 8, 0, "r")
    assert not run(rules, "b", 8, 0, "w")
    assert not run(rules, "b", 8, 16, "rw")  # overlapping access: denied, as v1 does
    assert run(rules, "b", 9, 0, "w")
    assert run(rules, "c", 8, 0, "w")


def test_program_of_the_default_rules() -> None:
    program = devices.plan_v2([LinuxDeviceCgroup(allow=False, access="rwm")])
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 2), (10, 200)):
        assert devicefilter.run(program, "c", major, minor, "rw")
    assert devicefilter.run(program, "c", 136, 4, "rw")  # /dev/pts/4
    assert devicefilter.run(program, "c", 4, 1, "m")  # mknod of anything ...
    assert devicefilter.run(program, "b", 8, 0, "m")
    assert not devicefilter.run(program, "c", 4, 1, "r")  # ... but not opening it
    assert not devicefilter.run(program, "b", 8, 0, "r")
    assert not devicefilter.run(program, "c", 10, 229, "rw")  # /dev/fuse
    assert not devicefilter.run(program, "c", 1, 1, "r")  # /dev/mem
    # the same answer as emulating the list v1 gets
    checked = [DENY_ALL, DENY_ALL, *DEFAULT_RULES]
    assert program == devicefilter.compile_rules(checked)


def test_program_privileged_allows_everything() -> None:
    program = devices.plan_v2([LinuxDeviceCgroup(allow=True, access="rwm")])
    assert devicefilter.run(program, "b", 8, 0, "rwm")
    assert devicefilter.run(program, "c", 1, 1, "rw")


def test_program_spec_rules_come_before_the_default_rules() -> None:
    spec = [
        LinuxDeviceCgroup(allow=False, access="rwm"),
        LinuxDeviceCgroup(allow=True, type="c", major=10, minor=229, access="rwm"),
        LinuxDeviceCgroup(allow=False, type="c", major=10, minor=229, access="m"),
    ]
    program = devices.plan_v2(spec)
    assert devicefilter.run(program, "c", 10, 229, "rw")
    assert devicefilter.run(program, "c", 10, 229, "m")  # the default "c *:* m" still allows it


def test_program_shape() -> None:
    program = devicefilter.compile_rules([DENY_ALL])
    assert len(program) % 8 == 0
    # the last two instructions: r0 = 0 (deny), exit
    assert struct.unpack_from("<BBhi", program, len(program) - 16) == (0xB4, 0, 0, 0)
    assert struct.unpack_from("<BBhi", program, len(program) - 8)[0] == 0x95
    # numbers no device has cannot fit an immediate: such an exception never matches
    huge = devicefilter.compile_rules([DENY_ALL, Rule(True, "c", 1 << 31, 0, "r")])
    assert huge == program


def test_bad_rules_are_refused_before_anything() -> None:
    with pytest.raises(CgroupError, match=r"devices\[1\]\.type: 'x'"):
        devices.plan_v2([LinuxDeviceCgroup(allow=True), LinuxDeviceCgroup(allow=True, type="x")])
