"""Device rules for cgroup v2: an eBPF program, and attaching it to a cgroup.

cgroup v1's ``devices`` controller keeps, per cgroup, a *default* (allow or
deny everything) and a list of *exceptions*; rules written to
``devices.allow``/``devices.deny`` edit that state (see
:func:`emulate`). cgroup v2 has no such files: a program of type
``BPF_PROG_TYPE_CGROUP_DEVICE`` attached to the cgroup is asked about every
open or mknod of a device node, gets ``{access_type, major, minor}`` and
returns 1 (allow) or 0 (deny). runc compiles its rules the same way.

So that a container sees the same devices on either version, the spec's
rules are first run through :func:`emulate`, which applies them the way the
v1 kernel would, and the resulting state becomes the program
(:func:`compile_state`):

deny by default
    For each exception: if type, major and minor match (``None`` matches
    any) and the requested access is a subset of the exception's, return 1.
    Otherwise return 0.
allow by default (only after an ``a`` allow rule)
    For each exception: if type, major and minor match and the requested
    access overlaps the exception's, return 0. Otherwise return 1.

The program reads the context into registers once: r2 = device type
(``BPF_DEVCG_DEV_BLOCK`` 1, ``_CHAR`` 2: the low 16 bits of
``access_type``), r3 = requested access (``BPF_DEVCG_ACC_MKNOD`` 1,
``_READ`` 2, ``_WRITE`` 4: the high 16 bits), r4 = major, r5 = minor.

:func:`attach` puts a program on a cgroup in place of the ones there: the
new one is attached first (``BPF_F_ALLOW_MULTI``; while both are attached
an access must pass both, so the switch never opens a gap), then the old
ones are detached.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Iterable

from bulkhead.cgroups.devices import Rule
from bulkhead.cgroups.resources import PREFIX
from bulkhead.errors import CgroupError

_TYPES = {"b": 1, "c": 2}
_ACCESS = {"m": 1, "r": 2, "w": 4}
_ALL_ACCESS = 7

# eBPF opcodes (linux/bpf_common.h, linux/bpf.h)
_LDX_W = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
_AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
_RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
_MOV32_K = 0xB4  # BPF_ALU | BPF_MOV | BPF_K
_MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K
_JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X
_EXIT = 0x95  # BPF_JMP | BPF_EXIT


def _bits(access: str | None) -> int:
    return sum(_ACCESS[c] for c in set(access or "rwm"))


def _letters(bits: int) -> str:
    return "".join(c for c in "rwm" if bits & _ACCESS[c])


def emulate(rules: Iterable[Rule]) -> tuple[bool, list[Rule]]:
    """The v1 devices state after ``rules``: (allow by default?, exceptions).

    As the v1 kernel does it: an ``a`` rule sets the default and clears the
    exceptions; a rule against the default adds an exception (merging access
    into one for the same type, major and minor); a rule agreeing with the
    default takes its access away from the exception for exactly that type,
    major and minor (dropping it when none is left). Exceptions have
    ``allow`` set to the opposite of the default.
    """
    default_allow = True  # a fresh cgroup under the root: everything allowed
    exceptions: dict[tuple[str, int | None, int | None], int] = {}
    for rule in rules:
        kind = rule.type or "a"
        if kind == "a":
            default_allow = rule.allow
            exceptions = {}
            continue
        key = (kind, rule.major, rule.minor)
        bits = _bits(rule.access)
        if rule.allow != default_allow:
            exceptions[key] = exceptions.get(key, 0) | bits
        elif key in exceptions:
            left = exceptions[key] & ~bits
            if left:
                exceptions[key] = left
            else:
                del exceptions[key]
    return default_allow, [
        Rule(not default_allow, kind, major, minor, _letters(bits))
        for (kind, major, minor), bits in exceptions.items()
    ]


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    """One ``struct bpf_insn`` (little-endian: x86_64 and aarch64)."""
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


_PROLOGUE = b"".join(
    (
        _insn(_LDX_W, dst=2, src=1, off=0),  # r2 = ctx->access_type
        _insn(_AND32_K, dst=2, imm=0xFFFF),  #      & 0xffff: the device type
        _insn(_LDX_W, dst=3, src=1, off=0),  # r3 = ctx->access_type
        _insn(_RSH32_K, dst=3, imm=16),  #      >> 16: the access asked for
        _insn(_LDX_W, dst=4, src=1, off=4),  # r4 = ctx->major
        _insn(_LDX_W, dst=5, src=1, off=8),  # r5 = ctx->minor
    )
)


def _block(exc: Rule, overlap: bool) -> bytes:
    """Return ``exc.allow`` when the device matches ``exc``, else fall through to the next."""
    if any(n is not None and n > 0x7FFFFFFF for n in (exc.major, exc.minor)):
        return b""  # no device has such a number (and it would not fit an immediate)
    # each test is (opcode, dst, src, imm): "jump to the next block if"
    tests: list[tuple[int, ...]] = [(_JNE_K, 2, 0, _TYPES[exc.type or "a"])]
    if exc.major is not None:
        tests.append((_JNE_K, 4, 0, exc.major))
    if exc.minor is not None:
        tests.append((_JNE_K, 5, 0, exc.minor))
    bits = _bits(exc.access)
    check_access = bits != _ALL_ACCESS
    tail = [_insn(_MOV32_K, dst=0, imm=1 if exc.allow else 0), _insn(_EXIT)]
    n_access = 3 if check_access else 0
    out: list[bytes] = []
    for i, (code, dst, src, imm) in enumerate(tests):
        skip = (len(tests) - i - 1) + n_access + len(tail)
        out.append(_insn(code, dst=dst, src=src, off=skip, imm=imm))
    if check_access:
        out.append(_insn(_MOV32_X, dst=1, src=3))  # r1 = access asked for
        out.append(_insn(_AND32_K, dst=1, imm=bits))  # r1 &= the exception's access
        if overlap:  # deny if any asked-for access is in the exception
            out.append(_insn(_JEQ_K, dst=1, off=len(tail), imm=0))
        else:  # allow only if all of it is
            out.append(_insn(_JNE_X, dst=1, src=3, off=len(tail)))
    return b"".join(out + tail)


def compile_state(default_allow: bool, exceptions: Iterable[Rule]) -> bytes:
    """The program for an emulated v1 state (see the module's docstring)."""
    body = b"".join(_block(exc, overlap=default_allow) for exc in exceptions)
    end = _insn(_MOV32_K, dst=0, imm=1 if default_allow else 0) + _insn(_EXIT)
    return _PROLOGUE + body + end


def compile_rules(rules: Iterable[Rule]) -> bytes:
    """The program that does what ``rules`` (checked, in order) would do on v1."""
    return compile_state(*emulate(rules))


def run(program: bytes, kind: str, major: int, minor: int, access: str) -> bool:
    """Interpret ``program`` for one device access (for tests; only our opcodes).

    ``kind`` is ``b`` or ``c``, ``access`` a subset of ``rwm``.
    """
    ctx = [(_bits(access) << 16) | _TYPES[kind], major, minor]
    regs = [0] * 11
    pc = 0
    n = len(program) // 8
    while pc < n:
        code, regs_byte, off, imm = struct.unpack_from("<BBhi", program, pc * 8)
        dst, src = regs_byte & 0xF, regs_byte >> 4
        pc += 1
        if code == _LDX_W:
            assert src == 1 and off % 4 == 0
            regs[dst] = ctx[off // 4]
        elif code == _AND32_K:
            regs[dst] &= imm & 0xFFFFFFFF
        elif code == _RSH32_K:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == _MOV32_K:
            regs[dst] = imm & 0xFFFFFFFF
        elif code == _MOV32_X:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code in (_JEQ_K, _JNE_K, _JNE_X):
            other = regs[src] if code == _JNE_X else imm & 0xFFFFFFFF
            if (regs[dst] == other) == (code == _JEQ_K):
                pc += off
        elif code == _EXIT:
            assert regs[0] in (0, 1)
            return regs[0] == 1
        else:
            raise ValueError(f"opcode {code:#x} at {pc - 1}")
    raise ValueError("the program runs off its end")


def attach(d: str, program: bytes) -> None:
    """Make ``program`` the device program of the cgroup ``d`` (see the module's docstring)."""
    from bulkhead.linux import bpf

    field = f"{PREFIX}.devices"
    try:
        dirfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise CgroupError(f"{field}: cannot open cgroup {d}: {exc.strerror}") from exc
    try:
        try:
            old = bpf.prog_query(dirfd, bpf.BPF_CGROUP_DEVICE)
            prog = bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, program, name="bulkhead_dev")
            try:
                bpf.prog_attach(dirfd, prog, bpf.BPF_CGROUP_DEVICE, bpf.BPF_F_ALLOW_MULTI)
            finally:
                os.close(prog)
        except OSError as exc:
            raise CgroupError(
                f"{field}: cannot attach the device filter (eBPF) to {d}: {exc.strerror}"
            ) from exc
        for prog_id in old:
            try:
                fd = bpf.prog_get_fd_by_id(prog_id)
            except OSError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # gone meanwhile
                raise CgroupError(
                    f"{field}: cannot detach the old device filter of {d}: {exc.strerror}"
                ) from exc
            try:
                bpf.prog_detach(dirfd, fd, bpf.BPF_CGROUP_DEVICE)
            except OSError as exc:
                if exc.errno != errno.ENOENT:
                    raise CgroupError(
                        f"{field}: cannot detach the old device filter of {d}: {exc.strerror}"
                    ) from exc
            finally:
                os.close(fd)
    finally:
        os.close(dirfd)


def attached(d: str) -> list[int]:
    """The ids of the device programs attached to the cgroup ``d`` (for tests and debugging)."""
    from bulkhead.linux import bpf

    dirfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return bpf.prog_query(dirfd, bpf.BPF_CGROUP_DEVICE)
    finally:
        os.close(dirfd)
