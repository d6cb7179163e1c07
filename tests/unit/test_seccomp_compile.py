"""Compiling seccomp sections with libseccomp (no root needed, nothing is loaded).

The programs are checked by *running* them: a small classic-BPF interpreter
below evaluates a compiled program on a synthetic ``struct seccomp_data``, so
the tests say what the kernel would answer for a call without installing
anything.
"""

from __future__ import annotations

import errno
import json
import logging
import platform
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import bulkhead.oci
from bulkhead.errors import SeccompError
from bulkhead.linux import seccomp
from bulkhead.linux.seccomp import (
    ACT_ALLOW,
    ACT_ERRNO,
    ACT_KILL_PROCESS,
    ACT_KILL_THREAD,
    ACT_LOG,
    ACT_NOTIFY,
    ACT_TRACE,
    ACT_TRAP,
    FLAG_LOG,
    FLAG_SPEC_ALLOW,
    FLAG_WAIT_KILLABLE_RECV,
    CompiledFilter,
    compile_filter,
)

# Docker's default profile as the package ships it (a copy of the project's reference data).
PROFILE = Path(bulkhead.oci.__file__).parent / "data" / "docker-default-seccomp.json"

pytestmark = pytest.mark.skipif(not seccomp.available(), reason="libseccomp is not installed")

DOCKER_CAPS = {
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
}


# --------------------------------------------------------------------------
# inputs: small dataclasses with the attributes of bulkhead.oci.runtime_spec


@dataclass
class Arg:
    index: int
    value: int
    op: str
    value_two: int | None = None


@dataclass
class Rule:
    names: list[str]
    action: str
    errno_ret: int | None = None
    args: list[Arg] | None = None


@dataclass
class Seccomp:
    default_action: str = "SCMP_ACT_ALLOW"
    default_errno_ret: int | None = None
    architectures: list[str] | None = None
    flags: list[str] | None = field(default_factory=list)
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[Rule] | None = None


# --------------------------------------------------------------------------
# a classic BPF interpreter for the opcodes libseccomp and our stub emit

AUDIT_ARCH_X86_64 = 0xC000003E
AUDIT_ARCH_I386 = 0x40000003
AUDIT_ARCH_AARCH64 = 0xC00000B7
X32_BIT = 0x40000000


def native_audit_arch() -> int:
    return {"x86_64": AUDIT_ARCH_X86_64, "aarch64": AUDIT_ARCH_AARCH64}[platform.machine()]


def run_bpf(program: bytes, nr: int, arch: int | None = None, args: tuple[int, ...] = ()) -> int:
    """The action ``program`` returns for syscall ``nr`` on ``arch`` with ``args``."""
    arch = native_audit_arch() if arch is None else arch
    full = (*args, *([0] * (6 - len(args))))
    data = struct.pack("=IIQ6Q", nr & 0xFFFFFFFF, arch, 0, *full)
    insns = seccomp.decode_program(program)
    a = 0
    pc = 0
    for _ in range(100_000):
        code, jt, jf, k = insns[pc]
        pc += 1
        if code == 0x20:  # ld [k]
            (a,) = struct.unpack_from("=I", data, k)
        elif code == 0x54:  # and #k
            a &= k
        elif code == 0x05:  # ja k
            pc += k
        elif code in (0x15, 0x25, 0x35, 0x45):  # jeq, jgt, jge, jset
            cond = {
                0x15: a == k,
                0x25: a > k,
                0x35: a >= k,
                0x45: bool(a & k),
            }[code]
            pc += jt if cond else jf
        elif code == 0x06:  # ret #k
            return k
        else:
            raise AssertionError(f"opcode {code:#x} not handled by the test interpreter")
    raise AssertionError("program did not return")


def nr(name: str) -> int:
    """The native number of syscall ``name`` (libseccomp's table)."""
    number = seccomp._libseccomp().seccomp_syscall_resolve_name(name.encode())
    assert number >= 0, name
    return int(number)


def nr_on(arch: str, name: str) -> int:
    lib = seccomp._libseccomp()
    return int(
        lib.seccomp_syscall_resolve_name_arch(
            lib.seccomp_arch_resolve_name(arch.encode()), name.encode()
        )
    )


# --------------------------------------------------------------------------
# basics


def test_import_does_not_load_libseccomp() -> None:
    import subprocess
    import sys

    code = (
        "import sys, bulkhead.linux.seccomp as s;"
        "print(any('libseccomp' in l for l in open('/proc/self/maps')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_compiled_filter_is_plain_data() -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["getppid"], "SCMP_ACT_ERRNO")]))
    assert isinstance(compiled, CompiledFilter)
    assert isinstance(compiled.program, bytes)
    assert len(compiled.program) % 8 == 0
    assert compiled.instructions == len(compiled.program) // 8
    assert compiled.flags == 0
    assert compiled.notify is False
    assert compiled.listener_path is None


def test_errno_rule_defaults_to_eperm() -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["getppid"], "SCMP_ACT_ERRNO")]))
    assert run_bpf(compiled.program, nr("getppid")) == ACT_ERRNO | errno.EPERM
    assert run_bpf(compiled.program, nr("getpid")) == ACT_ALLOW


def test_errno_ret_is_used() -> None:
    rule = Rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", errno_ret=errno.EROFS)
    compiled = compile_filter(Seccomp(syscalls=[rule]))
    assert run_bpf(compiled.program, nr("mkdirat")) == ACT_ERRNO | errno.EROFS


def test_default_errno_ret() -> None:
    compiled = compile_filter(
        Seccomp(
            default_action="SCMP_ACT_ERRNO",
            default_errno_ret=errno.ENXIO,
            syscalls=[Rule(["getpid"], "SCMP_ACT_ALLOW")],
        )
    )
    assert run_bpf(compiled.program, nr("getppid")) == ACT_ERRNO | errno.ENXIO
    assert run_bpf(compiled.program, nr("getpid")) == ACT_ALLOW
    plain = compile_filter(Seccomp(default_action="SCMP_ACT_ERRNO"))
    assert run_bpf(plain.program, nr("getppid")) == ACT_ERRNO | errno.EPERM


@pytest.mark.parametrize(
    ("action", "errno_ret", "expected"),
    [
        ("SCMP_ACT_KILL", None, ACT_KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", None, ACT_KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", None, ACT_KILL_PROCESS),
        ("SCMP_ACT_TRAP", None, ACT_TRAP),
        ("SCMP_ACT_ERRNO", 13, ACT_ERRNO | 13),
        ("SCMP_ACT_TRACE", None, ACT_TRACE | errno.EPERM),
        ("SCMP_ACT_TRACE", 1234, ACT_TRACE | 1234),
        ("SCMP_ACT_LOG", None, ACT_LOG),
        ("SCMP_ACT_NOTIFY", None, ACT_NOTIFY),
    ],
)
def test_every_action_as_a_rule(action: str, errno_ret: int | None, expected: int) -> None:
    spec = Seccomp(
        syscalls=[Rule(["getppid"], action, errno_ret=errno_ret)], listener_path="/run/agent.sock"
    )
    compiled = compile_filter(spec)
    assert run_bpf(compiled.program, nr("getppid")) == expected
    assert run_bpf(compiled.program, nr("getpid")) == ACT_ALLOW
    assert compiled.notify is (action == "SCMP_ACT_NOTIFY")


@pytest.mark.parametrize(
    ("action", "errno_ret", "expected"),
    [
        ("SCMP_ACT_KILL", None, ACT_KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", None, ACT_KILL_PROCESS),
        ("SCMP_ACT_KILL_THREAD", None, ACT_KILL_THREAD),
        ("SCMP_ACT_TRAP", None, ACT_TRAP),
        ("SCMP_ACT_ERRNO", None, ACT_ERRNO | errno.EPERM),
        ("SCMP_ACT_TRACE", 7, ACT_TRACE | 7),
        ("SCMP_ACT_ALLOW", None, ACT_ALLOW),
        ("SCMP_ACT_LOG", None, ACT_LOG),
    ],
)
def test_every_action_as_the_default(action: str, errno_ret: int | None, expected: int) -> None:
    allow = "SCMP_ACT_LOG" if action == "SCMP_ACT_ALLOW" else "SCMP_ACT_ALLOW"
    spec = Seccomp(
        default_action=action,
        default_errno_ret=errno_ret,
        syscalls=[Rule(["getpid"], allow)],
    )
    compiled = compile_filter(spec)
    assert run_bpf(compiled.program, nr("getppid")) == expected
    assert run_bpf(compiled.program, nr("getpid")) == ACTIONS_BY_NAME[allow]


ACTIONS_BY_NAME = seccomp.ACTIONS


def test_rule_with_the_default_action_is_skipped() -> None:
    # libseccomp refuses such a rule; runc drops it silently.
    spec = Seccomp(
        default_action="SCMP_ACT_ERRNO",
        syscalls=[
            Rule(["getppid"], "SCMP_ACT_ERRNO"),  # == default
            Rule(["getpid"], "SCMP_ACT_ERRNO", errno_ret=errno.EXDEV),  # differs by errno
            Rule(["gettid"], "SCMP_ACT_ALLOW"),
        ],
    )
    compiled = compile_filter(spec)
    assert run_bpf(compiled.program, nr("getppid")) == ACT_ERRNO | errno.EPERM
    assert run_bpf(compiled.program, nr("getpid")) == ACT_ERRNO | errno.EXDEV
    assert run_bpf(compiled.program, nr("gettid")) == ACT_ALLOW


def test_unknown_syscalls_are_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="bulkhead.linux.seccomp")
    spec = Seccomp(syscalls=[Rule(["no_such_call", "getppid", "also_not_real"], "SCMP_ACT_ERRNO")])
    compiled = compile_filter(spec)
    assert compiled.unknown_syscalls == ("no_such_call", "also_not_real")
    assert run_bpf(compiled.program, nr("getppid")) == ACT_ERRNO | errno.EPERM
    assert "no_such_call" in caplog.text
    assert "also_not_real" in caplog.text


def test_syscall_of_another_arch_only_is_accepted() -> None:
    # socketcall exists on x86 but not x86_64: libseccomp gives it a pseudo
    # number and applies the rule where it exists.
    spec = Seccomp(
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        syscalls=[Rule(["socketcall"], "SCMP_ACT_ERRNO", errno_ret=errno.EXDEV)],
    )
    if platform.machine() != "x86_64":
        pytest.skip("x86 specific")
    compiled = compile_filter(spec)
    x86_socketcall = nr_on("x86", "socketcall")
    assert run_bpf(compiled.program, x86_socketcall, AUDIT_ARCH_I386) == ACT_ERRNO | errno.EXDEV
    assert run_bpf(compiled.program, nr("getpid"), AUDIT_ARCH_I386) == ACT_ALLOW


# --------------------------------------------------------------------------
# argument conditions

OP_CASES = [
    # op, value, value_two, {arg: matches?}
    ("SCMP_CMP_NE", 5, None, {5: False, 0: True, 6: True}),
    ("SCMP_CMP_LT", 5, None, {4: True, 5: False, 6: False}),
    ("SCMP_CMP_LE", 5, None, {4: True, 5: True, 6: False}),
    ("SCMP_CMP_EQ", 5, None, {5: True, 4: False, 2**32 + 5: False}),
    ("SCMP_CMP_GE", 5, None, {4: False, 5: True, 2**40: True}),
    ("SCMP_CMP_GT", 5, None, {5: False, 6: True, 2**63: True}),
    ("SCMP_CMP_MASKED_EQ", 0xF0, 0x10, {0x1F: True, 0x10: True, 0x2F: False, 0x0F: False}),
]


@pytest.mark.parametrize(("op", "value", "value_two", "cases"), OP_CASES)
def test_every_operator(op: str, value: int, value_two: int | None, cases: dict[int, bool]) -> None:
    rule = Rule(["getpriority"], "SCMP_ACT_ERRNO", errno.EXDEV, [Arg(1, value, op, value_two)])
    compiled = compile_filter(Seccomp(syscalls=[rule]))
    for arg, matches in cases.items():
        got = run_bpf(compiled.program, nr("getpriority"), args=(0, arg))
        assert got == (ACT_ERRNO | errno.EXDEV if matches else ACT_ALLOW), (op, arg)


def test_conditions_on_different_arguments_are_anded() -> None:
    rule = Rule(
        ["getpriority"],
        "SCMP_ACT_ERRNO",
        errno.EXDEV,
        [Arg(0, 0, "SCMP_CMP_EQ"), Arg(1, 5, "SCMP_CMP_EQ")],
    )
    program = compile_filter(Seccomp(syscalls=[rule])).program
    assert run_bpf(program, nr("getpriority"), args=(0, 5)) == ACT_ERRNO | errno.EXDEV
    assert run_bpf(program, nr("getpriority"), args=(1, 5)) == ACT_ALLOW
    assert run_bpf(program, nr("getpriority"), args=(0, 6)) == ACT_ALLOW


def test_conditions_on_the_same_argument_are_ored_as_runc_does() -> None:
    rule = Rule(
        ["getpriority"],
        "SCMP_ACT_ERRNO",
        errno.EXDEV,
        [Arg(1, 5, "SCMP_CMP_EQ"), Arg(1, 7, "SCMP_CMP_EQ"), Arg(0, 1, "SCMP_CMP_EQ")],
    )
    program = compile_filter(Seccomp(syscalls=[rule])).program
    exdev = ACT_ERRNO | errno.EXDEV
    assert run_bpf(program, nr("getpriority"), args=(0, 5)) == exdev
    assert run_bpf(program, nr("getpriority"), args=(0, 7)) == exdev
    assert run_bpf(program, nr("getpriority"), args=(1, 6)) == exdev  # the arg-0 condition alone
    assert run_bpf(program, nr("getpriority"), args=(0, 6)) == ACT_ALLOW


def test_value_two_none_means_zero() -> None:
    rule = Rule(["personality"], "SCMP_ACT_ERRNO", None, [Arg(0, 0xFF, "SCMP_CMP_MASKED_EQ")])
    program = compile_filter(Seccomp(syscalls=[rule])).program
    assert run_bpf(program, nr("personality"), args=(0x100,)) == ACT_ERRNO | errno.EPERM
    assert run_bpf(program, nr("personality"), args=(0x101,)) == ACT_ALLOW


# --------------------------------------------------------------------------
# architectures


def test_architectures() -> None:
    if platform.machine() != "x86_64":
        pytest.skip("x86 specific")
    spec = Seccomp(
        default_action="SCMP_ACT_ERRNO",
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        syscalls=[Rule(["getppid"], "SCMP_ACT_ALLOW")],
    )
    program = compile_filter(spec).program
    assert run_bpf(program, nr_on("x86", "getppid"), AUDIT_ARCH_I386) == ACT_ALLOW
    assert run_bpf(program, nr_on("x32", "getppid"), AUDIT_ARCH_X86_64) == ACT_ALLOW
    # an architecture not in the filter is killed (libseccomp's bad-arch action)
    assert run_bpf(program, 0, AUDIT_ARCH_AARCH64) == ACT_KILL_THREAD
    only_native = compile_filter(Seccomp(syscalls=[Rule(["getppid"], "SCMP_ACT_ERRNO")])).program
    assert run_bpf(only_native, nr_on("x86", "getppid"), AUDIT_ARCH_I386) == ACT_KILL_THREAD


@pytest.mark.parametrize(
    "arch",
    [
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_RISCV64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_MIPSEL64N32",
    ],
)
def test_foreign_architectures_compile(arch: str) -> None:
    # little-endian ones: they can share a filter with a little-endian host
    spec = Seccomp(architectures=[arch], syscalls=[Rule(["getppid"], "SCMP_ACT_ERRNO")])
    assert compile_filter(spec).instructions > 0


def test_architecture_of_the_other_byte_order() -> None:
    if platform.machine() not in ("x86_64", "aarch64"):
        pytest.skip("little-endian host assumed")
    spec = Seccomp(architectures=["SCMP_ARCH_S390X"])
    with pytest.raises(SeccompError, match="SCMP_ARCH_S390X cannot share a filter"):
        compile_filter(spec)


# --------------------------------------------------------------------------
# flags


def test_flags_absent_means_spec_allow_as_runc() -> None:
    compiled = compile_filter(Seccomp(flags=None))
    expected = (
        FLAG_SPEC_ALLOW if "SECCOMP_FILTER_FLAG_SPEC_ALLOW" in seccomp.supported_flags() else 0
    )
    assert compiled.flags == expected
    assert compile_filter(Seccomp(flags=[])).flags == 0


def test_flags_are_passed_tsync_is_not() -> None:
    if set(seccomp.supported_flags()) != set(seccomp.known_flags()):
        pytest.skip("kernel lacks some seccomp flags")
    compiled = compile_filter(
        Seccomp(
            flags=[
                "SECCOMP_FILTER_FLAG_TSYNC",
                "SECCOMP_FILTER_FLAG_LOG",
                "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            ]
        )
    )
    assert compiled.flags == FLAG_LOG | FLAG_SPEC_ALLOW


def test_wait_killable_recv_needs_a_listener() -> None:
    if "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" not in seccomp.supported_flags():
        pytest.skip("kernel < 5.19")
    flags = ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    without = compile_filter(Seccomp(flags=flags, syscalls=[Rule(["getppid"], "SCMP_ACT_ERRNO")]))
    assert without.flags == 0
    with_notify = compile_filter(
        Seccomp(flags=flags, listener_path="/x", syscalls=[Rule(["getppid"], "SCMP_ACT_NOTIFY")])
    )
    assert with_notify.flags == FLAG_WAIT_KILLABLE_RECV
    assert with_notify.notify


def test_listener_fields_are_kept() -> None:
    compiled = compile_filter(
        Seccomp(
            listener_path="/run/agent.sock",
            listener_metadata="hello",
            syscalls=[Rule(["getppid"], "SCMP_ACT_NOTIFY")],
        )
    )
    assert compiled.notify
    assert compiled.listener_path == "/run/agent.sock"
    assert compiled.listener_metadata == "hello"


# --------------------------------------------------------------------------
# the -ENOSYS stub


def test_enosys_for_syscalls_newer_than_the_profile() -> None:
    native = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}[platform.machine()]
    spec = Seccomp(
        default_action="SCMP_ACT_ERRNO",
        architectures=[native],
        syscalls=[Rule(["getppid", "getpid"], "SCMP_ACT_ALLOW")],
    )
    program = compile_filter(spec).program
    top = max(nr("getppid"), nr("getpid"))
    assert run_bpf(program, top + 1) == ACT_ERRNO | errno.ENOSYS
    assert run_bpf(program, 1000) == ACT_ERRNO | errno.ENOSYS
    assert run_bpf(program, top) == ACT_ALLOW
    below = next(n for n in range(top) if n not in (nr("getppid"), nr("getpid")))
    assert run_bpf(program, below) == ACT_ERRNO | errno.EPERM


def test_no_stub_when_the_default_lets_calls_through_or_is_enosys() -> None:
    for default, errno_ret in [
        ("SCMP_ACT_ALLOW", None),
        ("SCMP_ACT_LOG", None),
        ("SCMP_ACT_TRACE", None),
        ("SCMP_ACT_ERRNO", errno.ENOSYS),
    ]:
        spec = Seccomp(
            default_action=default,
            default_errno_ret=errno_ret,
            architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
            syscalls=[Rule(["getppid"], "SCMP_ACT_KILL")],
        )
        program = compile_filter(spec).program
        assert run_bpf(program, 1000) == seccomp._action_value(default, errno_ret, "x")
    # no architectures listed: no stub either (runc only stubs the listed ones)
    program = compile_filter(Seccomp(default_action="SCMP_ACT_ERRNO")).program
    assert run_bpf(program, 1000) == ACT_ERRNO | errno.EPERM


def test_stub_x86_64_and_x32_are_told_apart() -> None:
    if platform.machine() != "x86_64":
        pytest.skip("x86 specific")
    spec = Seccomp(
        default_action="SCMP_ACT_KILL_PROCESS",
        architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_X86"],
        syscalls=[Rule(["getppid", "futex_waitv"], "SCMP_ACT_ALLOW")],
    )
    program = compile_filter(spec).program
    x32_top = nr_on("x32", "futex_waitv")
    assert x32_top & X32_BIT
    assert run_bpf(program, nr("futex_waitv") + 1) == ACT_ERRNO | errno.ENOSYS
    assert run_bpf(program, x32_top + 1) == ACT_ERRNO | errno.ENOSYS
    assert run_bpf(program, x32_top) == ACT_ALLOW
    assert (
        run_bpf(program, nr_on("x86", "futex_waitv") + 1, AUDIT_ARCH_I386)
        == ACT_ERRNO | errno.ENOSYS
    )
    # below the top, not allowed: the default
    assert run_bpf(program, nr("getpid")) == ACT_KILL_PROCESS
    assert run_bpf(program, nr_on("x32", "getpid"), AUDIT_ARCH_X86_64) == ACT_KILL_PROCESS


def test_stub_with_x86_64_only_leaves_x32_calls_to_libseccomp() -> None:
    if platform.machine() != "x86_64":
        pytest.skip("x86 specific")
    spec = Seccomp(
        default_action="SCMP_ACT_ERRNO",
        architectures=["SCMP_ARCH_X86_64"],
        syscalls=[Rule(["getppid"], "SCMP_ACT_ALLOW")],
    )
    program = compile_filter(spec).program
    assert run_bpf(program, nr("getppid") + 1) == ACT_ERRNO | errno.ENOSYS
    # an x32 call is not an x86_64 call above the top: libseccomp's bad-arch action
    assert run_bpf(program, X32_BIT | 39) != ACT_ERRNO | errno.ENOSYS


# --------------------------------------------------------------------------
# bad input: SeccompError naming the field and the value


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (Seccomp(default_action="SCMP_ACT_BOGUS"), ["defaultAction", "SCMP_ACT_BOGUS"]),
        (
            Seccomp(syscalls=[Rule(["getpid"], "SCMP_ACT_MAYBE")]),
            ["syscalls[0].action", "SCMP_ACT_MAYBE"],
        ),
        (
            Seccomp(
                syscalls=[Rule(["getpid"], "SCMP_ACT_ERRNO", args=[Arg(0, 1, "SCMP_CMP_ABOUT")])]
            ),
            ["syscalls[0].args[0].op", "SCMP_CMP_ABOUT"],
        ),
        (
            Seccomp(syscalls=[Rule(["getpid"], "SCMP_ACT_ERRNO", args=[Arg(6, 1, "SCMP_CMP_EQ")])]),
            ["syscalls[0].args[0].index", "6"],
        ),
        (
            Seccomp(
                syscalls=[Rule(["getpid"], "SCMP_ACT_ERRNO", args=[Arg(-1, 1, "SCMP_CMP_EQ")])]
            ),
            ["args[0].index", "-1"],
        ),
        (
            Seccomp(
                syscalls=[Rule(["getpid"], "SCMP_ACT_ERRNO", args=[Arg(0, 2**64, "SCMP_CMP_EQ")])]
            ),
            ["args[0].value", str(2**64)],
        ),
        (
            Seccomp(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_PDP11"]),
            ["architectures[1]", "SCMP_ARCH_PDP11"],
        ),
        (Seccomp(flags=["SECCOMP_FILTER_FLAG_FAST"]), ["flags[0]", "SECCOMP_FILTER_FLAG_FAST"]),
        (
            Seccomp(syscalls=[Rule(["getpid"], "SCMP_ACT_ERRNO", errno_ret=4095)]),
            ["syscalls[0].action", "4095"],
        ),
        (
            Seccomp(syscalls=[Rule(["getpid"], "SCMP_ACT_TRACE", errno_ret=70000)]),
            ["syscalls[0].action", "70000"],
        ),
        (
            Seccomp(syscalls=[Rule(["getpid"], "SCMP_ACT_KILL", errno_ret=1)]),
            ["syscalls[0].action", "errnoRet", "SCMP_ACT_KILL"],
        ),
        (
            Seccomp(default_action="SCMP_ACT_ALLOW", default_errno_ret=1),
            ["defaultAction", "errnoRet"],
        ),
        (
            Seccomp(default_action="SCMP_ACT_NOTIFY", listener_path="/x"),
            ["defaultAction", "SCMP_ACT_NOTIFY"],
        ),
        (
            Seccomp(syscalls=[Rule(["getpid"], "SCMP_ACT_NOTIFY")]),
            ["listenerPath", "SCMP_ACT_NOTIFY"],
        ),
        (
            Seccomp(listener_path="/x", syscalls=[Rule(["getpid", "write"], "SCMP_ACT_NOTIFY")]),
            ["syscalls[0].names[1]", "write"],
        ),
        (Seccomp(syscalls=[Rule(["getpid", ""], "SCMP_ACT_ERRNO")]), ["syscalls[0].names[1]"]),
    ],
)
def test_bad_input(spec: Seccomp, words: list[str]) -> None:
    with pytest.raises(SeccompError) as info:
        compile_filter(spec)
    for word in words:
        assert word in str(info.value)


def test_architecture_this_libseccomp_lacks() -> None:
    if "SCMP_ARCH_LOONGARCH64" in seccomp.supported_archs():
        pytest.skip("libseccomp >= 2.6 knows loongarch64")
    with pytest.raises(
        SeccompError,
        match=r"architectures\[0\]: SCMP_ARCH_LOONGARCH64 is not supported by libseccomp",
    ):
        compile_filter(Seccomp(architectures=["SCMP_ARCH_LOONGARCH64"]))


def test_unsupported_flag_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seccomp, "_kernel_flag_ok", lambda bit: bit != FLAG_LOG)
    with pytest.raises(SeccompError, match=r"flags\[1\]: SECCOMP_FILTER_FLAG_LOG is not supported"):
        compile_filter(Seccomp(flags=["SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_LOG"]))


# --------------------------------------------------------------------------
# features


def test_features() -> None:
    assert seccomp.known_flags() == [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    ]
    assert set(seccomp.supported_flags()) <= set(seccomp.known_flags())
    # every kernel since 4.17 has these three
    assert {
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    } <= set(seccomp.supported_flags())
    actions = seccomp.supported_actions()
    assert {"SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL", "SCMP_ACT_TRAP"} <= set(actions)
    assert set(actions) <= set(seccomp.ACTIONS)
    assert seccomp.supported_operators() == list(seccomp.OPERATORS)
    assert {"SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_AARCH64"} <= set(
        seccomp.supported_archs()
    )
    version = seccomp.libseccomp_version()
    assert version is not None and version >= (2, 5, 0)


def test_kernel_action_probe_says_no_to_nonsense() -> None:
    assert seccomp._kernel_action_ok(ACT_ALLOW)
    assert not seccomp._kernel_action_ok(0x1234_0000)


def test_kernel_flag_probe_says_no_to_nonsense() -> None:
    assert not seccomp._kernel_flag_ok(1 << 20)


# --------------------------------------------------------------------------
# the real models and Docker's default profile


def _docker_profile(caps: set[str] = DOCKER_CAPS) -> dict[str, object]:
    from bulkhead.oci.seccomp_profile import docker_default_profile

    return docker_default_profile(caps, platform.machine(), path=PROFILE)


def test_compile_from_a_real_config_json() -> None:
    runtime_spec = pytest.importorskip("bulkhead.oci.runtime_spec")
    from bulkhead.oci.defaults import default_spec

    config = default_spec()
    config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": errno.ENXIO,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "listenerPath": "/run/agent.sock",
        "listenerMetadata": "meta",
        "syscalls": [
            {"names": ["getppid", "getpid"], "action": "SCMP_ACT_ALLOW"},
            {
                "names": ["getpriority"],
                "action": "SCMP_ACT_ERRNO",
                "errnoRet": errno.EXDEV,
                "args": [{"index": 1, "value": 0xF0, "valueTwo": 0x10, "op": "SCMP_CMP_MASKED_EQ"}],
            },
            {"names": ["gettid"], "action": "SCMP_ACT_NOTIFY"},
        ],
    }
    spec = runtime_spec.decode_spec(json.dumps(config).encode())
    compiled = compile_filter(spec.linux.seccomp)
    assert compiled.notify
    assert compiled.listener_path == "/run/agent.sock"
    assert compiled.listener_metadata == "meta"
    assert compiled.flags == FLAG_SPEC_ALLOW
    program = compiled.program
    assert run_bpf(program, nr("getpid")) == ACT_ALLOW
    assert run_bpf(program, nr("gettid")) == ACT_NOTIFY
    assert run_bpf(program, nr("getpriority"), args=(0, 0x1F)) == ACT_ERRNO | errno.EXDEV
    assert run_bpf(program, nr("getpriority"), args=(0, 0x2F)) == ACT_ERRNO | errno.ENXIO


def test_docker_default_profile_compiles_and_means_what_docker_means() -> None:
    runtime_spec = pytest.importorskip("bulkhead.oci.runtime_spec")
    import msgspec

    model = msgspec.convert(_docker_profile(), runtime_spec.LinuxSeccomp)
    compiled = compile_filter(model)
    assert 0 < compiled.instructions <= seccomp.MAX_INSTRUCTIONS
    p = compiled.program
    eperm, enosys = ACT_ERRNO | errno.EPERM, ACT_ERRNO | errno.ENOSYS
    assert run_bpf(p, nr("read")) == ACT_ALLOW
    assert run_bpf(p, nr("mount")) == eperm  # needs CAP_SYS_ADMIN
    assert run_bpf(p, nr("clone3")) == enosys  # so glibc falls back to clone
    assert run_bpf(p, nr("personality"), args=(0,)) == ACT_ALLOW
    assert run_bpf(p, nr("personality"), args=(0xFFFFFFFF,)) == ACT_ALLOW
    assert run_bpf(p, nr("personality"), args=(1,)) == eperm
    clone_newns = 0x00020000
    assert run_bpf(p, nr("clone"), args=(0x11,)) == ACT_ALLOW
    assert run_bpf(p, nr("clone"), args=(clone_newns,)) == eperm
    assert run_bpf(p, 1000) == enosys  # a syscall from the future
    if platform.machine() == "x86_64":
        assert run_bpf(p, nr_on("x86", "socketcall"), AUDIT_ARCH_I386) == ACT_ALLOW
        assert run_bpf(p, nr("arch_prctl")) == ACT_ALLOW


def test_docker_profile_with_sys_admin_allows_mount() -> None:
    runtime_spec = pytest.importorskip("bulkhead.oci.runtime_spec")
    import msgspec

    model = msgspec.convert(
        _docker_profile(DOCKER_CAPS | {"CAP_SYS_ADMIN"}), runtime_spec.LinuxSeccomp
    )
    p = compile_filter(model).program
    assert run_bpf(p, nr("mount")) == ACT_ALLOW
    assert run_bpf(p, nr("clone3")) == ACT_ALLOW
    assert run_bpf(p, nr("clone"), args=(0x00020000,)) == ACT_ALLOW


def test_compile_time_of_docker_default_profile(capsys: pytest.CaptureFixture[str]) -> None:
    """Measure: run with ``-s`` to see the figure."""
    runtime_spec = pytest.importorskip("bulkhead.oci.runtime_spec")
    import msgspec

    model = msgspec.convert(_docker_profile(), runtime_spec.LinuxSeccomp)
    compile_filter(model)  # libseccomp loaded, kernel probed
    cold, warm = [], []
    for _ in range(10):
        seccomp._cache.clear()
        seccomp._by_encoding.clear()
        t0 = time.perf_counter()
        compiled = compile_filter(model)
        t1 = time.perf_counter()
        compile_filter(model)
        t2 = time.perf_counter()
        cold.append(t1 - t0)
        warm.append(t2 - t1)
    cold.sort()
    warm.sort()
    with capsys.disabled():
        print(
            f"\ncompile_filter(Docker default profile): {compiled.instructions} instructions, "
            f"uncached median {cold[5] * 1e3:.1f} ms (min {cold[0] * 1e3:.1f}), "
            f"cached median {warm[5] * 1e3:.2f} ms"
        )
    assert cold[0] < 1.0


def test_an_equal_section_is_found_without_validating_it_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each create decodes config.json afresh: an equal section hits the cache by its JSON."""
    runtime_spec = pytest.importorskip("bulkhead.oci.runtime_spec")
    import msgspec

    first = compile_filter(msgspec.convert(_docker_profile(), runtime_spec.LinuxSeccomp))

    def no_compile(_section: object) -> CompiledFilter:
        raise AssertionError("validated and compiled again")

    monkeypatch.setattr(seccomp, "_compile", no_compile)
    again = msgspec.convert(_docker_profile(), runtime_spec.LinuxSeccomp)
    assert compile_filter(again) is first
    other = msgspec.convert(
        _docker_profile(DOCKER_CAPS | {"CAP_SYS_ADMIN"}), runtime_spec.LinuxSeccomp
    )
    with pytest.raises(AssertionError, match="compiled again"):
        compile_filter(other)


def test_a_bad_section_is_refused_every_time() -> None:
    runtime_spec = pytest.importorskip("bulkhead.oci.runtime_spec")
    import msgspec

    bad = msgspec.convert(
        {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "NOPE"}]},
        runtime_spec.LinuxSeccomp,
    )
    for _ in range(2):
        with pytest.raises(SeccompError, match="NOPE"):
            compile_filter(bad)
