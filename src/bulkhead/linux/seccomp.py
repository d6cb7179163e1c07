"""seccomp: compiling a runtime-spec syscall filter to BPF, and loading it.

*seccomp* ("secure computing") lets a process install a **filter** the kernel
runs on every system call the process (and every child it later forks or
execs) makes. The filter is a small **classic BPF** program: it reads the
call's ``struct seccomp_data`` (syscall number ``nr``, architecture ``arch``,
instruction pointer, the six ``args``) and returns an **action**:

===================  =====================================================
action               what the kernel does with the call
===================  =====================================================
``SCMP_ACT_ALLOW``   runs it
``SCMP_ACT_ERRNO``   skips it and returns ``-errnoRet`` (``EPERM`` if unset)
``SCMP_ACT_KILL``    kills the calling thread (``SCMP_ACT_KILL_THREAD``)
``..._KILL_PROCESS`` kills the whole process with ``SIGSYS``
``SCMP_ACT_TRAP``    skips it and sends the thread a catchable ``SIGSYS``
``SCMP_ACT_TRACE``   stops for a ptrace tracer (``errnoRet`` is its message);
                     without a tracer the call fails with ``ENOSYS``
``SCMP_ACT_LOG``     runs it and writes an audit record
``SCMP_ACT_NOTIFY``  blocks the caller and queues the call on a **listener**
                     file descriptor, whose holder (a *seccomp agent* that
                     receives it over ``listenerPath``) decides the result
===================  =====================================================

The runtime spec's ``linux.seccomp`` section describes a filter as data: a
**default action**, extra **architectures** (``SCMP_ARCH_X86`` lets the
32-bit syscall table through on an x86_64 host; every other arch gets the
"bad arch" action, a kill), **rules** (syscall names, an action and optional
**argument conditions** ``args[index] op value``) and **flags** for
seccomp(2). Writing the BPF by hand is error-prone (each architecture has its
own syscall numbers, x32 shares x86_64's arch token, 64-bit arguments are
compared as two 32-bit halves), so like runc, crun and youki we let
**libseccomp** compile it, loaded through ctypes.

The work is split around ``fork`` (*plan in the parent, execute in the
child*, see DESIGN.md):

:func:`compile_filter`  in the parent: validate the section (every bad value is a
                        :class:`~bulkhead.errors.SeccompError` naming its field),
                        build the libseccomp filter, export the BPF program as
                        plain bytes into a :class:`CompiledFilter`.
:func:`load_filter`     in the child, between fork and exec: one seccomp(2) call
                        over those bytes. No libseccomp, nothing that can lock.

These behaviours are runc's, kept on purpose so profiles mean the same here:

* **Unknown syscall names are skipped** (logged at debug level): a profile
  written for a newer kernel must still work on an older libseccomp.
* A rule whose action equals the default action is dropped (libseccomp
  refuses it). ``errnoRet`` is part of the action: ``ERRNO(EPERM)`` and
  ``ERRNO(ENOSYS)`` differ.
* Conditions of one rule are ANDed, except that when two test the *same*
  argument each condition becomes a rule of its own, so they are ORed.
* No ``flags`` member at all (``None``, not ``[]``) means
  ``SECCOMP_FILTER_FLAG_SPEC_ALLOW`` where the kernel has it. ``TSYNC`` is
  accepted and not passed (the loading child has one thread).
* ``SCMP_ACT_NOTIFY`` may not be the default action nor apply to the calls
  the init needs to hand the listener over (:data:`NOTIFY_FORBIDDEN`).
* Above 32 rules, libseccomp's binary-tree layout is used: a search over
  syscall numbers instead of one comparison per rule on every call.
* **The -ENOSYS stub.** With a denying default action, a syscall newer than
  every syscall the profile names would get the default errno (``EPERM``),
  and programs (glibc's ``clone3``/``faccessat2`` fallbacks ...) take that as
  "forbidden" rather than "not implemented, use the old call". So, as runc's
  ``patchbpf`` does, a short prefix is put before libseccomp's program that
  returns ``ENOSYS`` for any syscall number above the largest one the profile
  names, for each architecture listed in ``architectures``.

The feature probes (:func:`supported_flags`, :func:`supported_actions` ...)
serve the runtime's ``features`` verb: they ask the running kernel, the way
runc's ``seccomp.SupportedFlags`` does.

Importing this module is cheap: libseccomp is only opened on the first
compile or probe that needs it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import struct
import sys
from collections.abc import Sequence
from typing import NamedTuple, Protocol

from bulkhead.errors import SeccompError
from bulkhead.linux.libc import syscall

# --------------------------------------------------------------------------
# the input: what compile_filter reads (bulkhead.oci.runtime_spec's models fit)


class SeccompArgSpec(Protocol):
    """One argument condition: ``args[index] op value`` (``value_two`` for ``MASKED_EQ``)."""

    @property
    def index(self) -> int: ...
    @property
    def value(self) -> int: ...
    @property
    def value_two(self) -> int | None: ...
    @property
    def op(self) -> str: ...


class SeccompSyscallSpec(Protocol):
    """One rule: ``action`` for the syscalls ``names`` whose ``args`` all match."""

    @property
    def names(self) -> Sequence[str]: ...
    @property
    def action(self) -> str: ...
    @property
    def errno_ret(self) -> int | None: ...
    @property
    def args(self) -> Sequence[SeccompArgSpec] | None: ...


class SeccompSpec(Protocol):
    """The ``linux.seccomp`` section of a config.json."""

    @property
    def default_action(self) -> str: ...
    @property
    def default_errno_ret(self) -> int | None: ...
    @property
    def architectures(self) -> Sequence[str] | None: ...
    @property
    def flags(self) -> Sequence[str] | None: ...
    @property
    def listener_path(self) -> str | None: ...
    @property
    def listener_metadata(self) -> str | None: ...
    @property
    def syscalls(self) -> Sequence[SeccompSyscallSpec] | None: ...


# --------------------------------------------------------------------------
# the vocabulary: actions, operators, architectures, flags

#: Action values, shared by libseccomp (``SCMP_ACT_*``) and the kernel
#: (``SECCOMP_RET_*``). ERRNO and TRACE carry 16 bits of data (the errno, the
#: tracer's message) in their low half.
ACT_KILL_PROCESS = 0x8000_0000
ACT_KILL_THREAD = 0x0000_0000
ACT_TRAP = 0x0003_0000
ACT_ERRNO = 0x0005_0000
ACT_NOTIFY = 0x7FC0_0000
ACT_TRACE = 0x7FF0_0000
ACT_LOG = 0x7FFC_0000
ACT_ALLOW = 0x7FFF_0000

#: runtime-spec action name -> action value (data bits 0)
ACTIONS: dict[str, int] = {
    "SCMP_ACT_KILL": ACT_KILL_THREAD,
    "SCMP_ACT_KILL_PROCESS": ACT_KILL_PROCESS,
    "SCMP_ACT_KILL_THREAD": ACT_KILL_THREAD,
    "SCMP_ACT_TRAP": ACT_TRAP,
    "SCMP_ACT_ERRNO": ACT_ERRNO,
    "SCMP_ACT_TRACE": ACT_TRACE,
    "SCMP_ACT_ALLOW": ACT_ALLOW,
    "SCMP_ACT_LOG": ACT_LOG,
    "SCMP_ACT_NOTIFY": ACT_NOTIFY,
}

#: libseccomp refuses ERRNO data >= MAX_ERRNO (4095): it would read as a pointer.
MAX_ERRNO = 4095

#: runtime-spec operator name -> libseccomp ``enum scmp_compare``
OPERATORS: dict[str, int] = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}

#: runtime-spec architecture name -> libseccomp's name for it (resolved to an
#: arch *token*, mostly the kernel's ``AUDIT_ARCH_*`` value, by
#: ``seccomp_arch_resolve_name``). The last four need libseccomp >= 2.6.
ARCHITECTURES: dict[str, str] = {
    "SCMP_ARCH_X86": "x86",
    "SCMP_ARCH_X86_64": "x86_64",
    "SCMP_ARCH_X32": "x32",
    "SCMP_ARCH_ARM": "arm",
    "SCMP_ARCH_AARCH64": "aarch64",
    "SCMP_ARCH_MIPS": "mips",
    "SCMP_ARCH_MIPS64": "mips64",
    "SCMP_ARCH_MIPS64N32": "mips64n32",
    "SCMP_ARCH_MIPSEL": "mipsel",
    "SCMP_ARCH_MIPSEL64": "mipsel64",
    "SCMP_ARCH_MIPSEL64N32": "mipsel64n32",
    "SCMP_ARCH_PPC": "ppc",
    "SCMP_ARCH_PPC64": "ppc64",
    "SCMP_ARCH_PPC64LE": "ppc64le",
    "SCMP_ARCH_S390": "s390",
    "SCMP_ARCH_S390X": "s390x",
    "SCMP_ARCH_PARISC": "parisc",
    "SCMP_ARCH_PARISC64": "parisc64",
    "SCMP_ARCH_RISCV64": "riscv64",
    "SCMP_ARCH_LOONGARCH64": "loongarch64",
    "SCMP_ARCH_M68K": "m68k",
    "SCMP_ARCH_SH": "sh",
    "SCMP_ARCH_SHEB": "sheb",
}

# seccomp(2) operations and SECCOMP_SET_MODE_FILTER flags (linux/seccomp.h)
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_ACTION_AVAIL = 2
FLAG_TSYNC = 1 << 0
FLAG_LOG = 1 << 1
FLAG_SPEC_ALLOW = 1 << 2
FLAG_NEW_LISTENER = 1 << 3
FLAG_TSYNC_ESRCH = 1 << 4
FLAG_WAIT_KILLABLE_RECV = 1 << 5

#: The flags the runtime spec lets a config.json ask for.
#:
#: ``TSYNC`` (apply to every thread) is accepted but never passed: the child
#: that loads the filter is single-threaded, and the kernel refuses TSYNC
#: together with ``NEW_LISTENER`` (runc ignores it the same way).
#: ``LOG`` audits every action but ALLOW. ``SPEC_ALLOW`` keeps the speculative
#: store bypass mitigation off (seccomp would otherwise force it on).
#: ``WAIT_KILLABLE_RECV`` makes a notified caller wait killably once the agent
#: has received the notification; it only means something with a listener.
FLAGS: dict[str, int] = {
    "SECCOMP_FILTER_FLAG_TSYNC": FLAG_TSYNC,
    "SECCOMP_FILTER_FLAG_LOG": FLAG_LOG,
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW": FLAG_SPEC_ALLOW,
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": FLAG_WAIT_KILLABLE_RECV,
}

#: Syscalls a NOTIFY rule may not name: the container's init makes them after
#: loading the filter to hand the listener fd to the runtime, so a notified
#: one would wait forever for an agent that has not got the fd yet (runc
#: refuses ``write`` for the same reason; bulkhead's init uses ``sendmsg``).
NOTIFY_FORBIDDEN = frozenset({"write", "sendmsg"})

#: Linux passes at most six syscall arguments.
MAX_ARGS = 6

#: The kernel refuses a BPF program longer than this (BPF_MAXINSNS).
MAX_INSTRUCTIONS = 4096

#: runc turns on libseccomp's binary-tree optimisation above this many rules.
_OPTIMIZE_ABOVE = 32

# libseccomp filter attributes (enum scmp_filter_attr)
_ATTR_CTL_NNP = 3
_ATTR_CTL_TSYNC = 4
_ATTR_CTL_LOG = 6
_ATTR_CTL_SSB = 7
_ATTR_CTL_OPTIMIZE = 8

_NR_SCMP_ERROR = -1

#: The exported program: an array of ``struct sock_filter`` in host byte
#: order, ``{u16 code; u8 jt; u8 jf; u32 k}``.
_INSN = struct.Struct("=HBBI")


# --------------------------------------------------------------------------
# the output


class CompiledFilter(NamedTuple):
    """A filter ready to load: plain bytes and numbers, safe to carry over fork.

    A NamedTuple (immutable, picklable, and free to define at import time).

    ``program``   the BPF program, ``len(program) // 8`` instructions
    ``flags``     what to pass to seccomp(2) (``NEW_LISTENER`` is added by
                  :func:`load_filter` when ``notify`` is set)
    ``notify``    some rule uses ``SCMP_ACT_NOTIFY``: loading returns a listener
                  fd the runtime must send to ``listener_path``
    ``unknown_syscalls``  names libseccomp's syscall tables lack; their rules were skipped
    """

    program: bytes
    flags: int = 0
    notify: bool = False
    listener_path: str | None = None
    listener_metadata: str | None = None
    unknown_syscalls: tuple[str, ...] = ()

    @property
    def instructions(self) -> int:
        """The number of BPF instructions in :attr:`program`."""
        return len(self.program) // _INSN.size


# --------------------------------------------------------------------------
# libseccomp, through ctypes, opened on first use


class _ArgCmp(ctypes.Structure):
    """``struct scmp_arg_cmp``: one argument condition as libseccomp takes it."""

    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


@functools.cache
def _libseccomp() -> ctypes.CDLL:
    """Open libseccomp.so.2 and declare the prototypes we call."""
    try:
        lib = ctypes.CDLL("libseccomp.so.2")
    except OSError as exc:
        raise SeccompError(
            f"libseccomp.so.2 cannot be loaded ({exc}); install libseccomp2"
        ) from None
    vp, u32, cint, cp = ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_char_p
    protos: dict[str, tuple[object, list[object]]] = {
        "seccomp_init": (vp, [u32]),
        "seccomp_release": (None, [vp]),
        "seccomp_arch_add": (cint, [vp, u32]),
        "seccomp_arch_native": (u32, []),
        "seccomp_arch_resolve_name": (u32, [cp]),
        "seccomp_syscall_resolve_name": (cint, [cp]),
        "seccomp_syscall_resolve_name_arch": (cint, [u32, cp]),
        "seccomp_rule_add_array": (
            cint,
            [vp, u32, cint, ctypes.c_uint, ctypes.POINTER(_ArgCmp)],
        ),
        "seccomp_attr_set": (cint, [vp, cint, u32]),
        "seccomp_export_bpf": (cint, [vp, cint]),
        "seccomp_api_get": (ctypes.c_uint, []),
        "seccomp_version": (ctypes.POINTER(_Version), []),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    return lib


def available() -> bool:
    """Whether libseccomp can be loaded here (``features`` reports ``enabled``)."""
    try:
        _libseccomp()
    except SeccompError:
        return False
    return True


def libseccomp_version() -> tuple[int, int, int] | None:
    """libseccomp's (major, minor, micro) version, or None when it is missing."""
    if not available():
        return None
    v = _libseccomp().seccomp_version().contents
    return (v.major, v.minor, v.micro)


def _debug(message: str, *args: object) -> None:
    """Log at debug level, without importing :mod:`logging` (milliseconds) ourselves.

    If nothing has imported logging, nothing can have configured a handler,
    and a debug record would go nowhere anyway.
    """
    logging = sys.modules.get("logging")
    if logging is not None:
        logging.getLogger(__name__).debug(message, *args)


# --------------------------------------------------------------------------
# validation: everything is checked before libseccomp sees anything


def _action_value(name: str, errno_ret: int | None, where: str) -> int:
    """The action value for runtime-spec action ``name`` with its errnoRet."""
    try:
        base = ACTIONS[name]
    except KeyError:
        raise SeccompError(
            f"{where}: unknown action {name!r} (known: {', '.join(ACTIONS)})"
        ) from None
    if base == ACT_ERRNO:
        value = errno.EPERM if errno_ret is None else errno_ret
        if not 0 <= value < MAX_ERRNO:
            raise SeccompError(f"{where}: errnoRet {value} is not an errno (0-{MAX_ERRNO - 1})")
        return base | value
    if base == ACT_TRACE:
        # runc's default trace message is EPERM too.
        value = errno.EPERM if errno_ret is None else errno_ret
        if not 0 <= value <= 0xFFFF:
            raise SeccompError(f"{where}: errnoRet {value} does not fit SCMP_ACT_TRACE's 16 bits")
        return base | value
    if errno_ret is not None:
        # runtime-spec: "When the action doesn't support an errno, the runtime
        # MUST print and error and fail."
        raise SeccompError(
            f"{where}: errnoRet {errno_ret} is set but action {name} takes none "
            "(only SCMP_ACT_ERRNO and SCMP_ACT_TRACE do)"
        )
    return base


class _Rule(NamedTuple):
    """One syscall name's rule, validated: what seccomp_rule_add_array needs."""

    name: str
    action: int
    #: (index, operator, datum_a, datum_b)
    conditions: tuple[tuple[int, int, int, int], ...]
    where: str


def _conditions(
    args: Sequence[SeccompArgSpec] | None, where: str
) -> tuple[tuple[int, int, int, int], ...]:
    out = []
    for i, arg in enumerate(args or ()):
        at = f"{where}.args[{i}]"
        if not 0 <= arg.index < MAX_ARGS:
            raise SeccompError(f"{at}.index: {arg.index} is not a syscall argument (0-5)")
        try:
            op = OPERATORS[arg.op]
        except KeyError:
            raise SeccompError(
                f"{at}.op: unknown operator {arg.op!r} (known: {', '.join(OPERATORS)})"
            ) from None
        value_two = arg.value_two or 0
        for label, v in (("value", arg.value), ("valueTwo", value_two)):
            if not 0 <= v < 2**64:
                raise SeccompError(f"{at}.{label}: {v} is not a 64-bit unsigned value")
        out.append((arg.index, op, arg.value, value_two))
    return tuple(out)


def _flag_bits(seccomp: SeccompSpec) -> tuple[int, list[str]]:
    """The seccomp(2) flag bits asked for, and their names (validated)."""
    if seccomp.flags is None:
        # runc: no "flags" at all (not even []) means SPEC_ALLOW where the kernel has it.
        names = ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"] if _kernel_flag_ok(FLAG_SPEC_ALLOW) else []
    else:
        names = list(seccomp.flags)
    bits = 0
    for i, name in enumerate(names):
        try:
            bit = FLAGS[name]
        except KeyError:
            raise SeccompError(
                f"linux.seccomp.flags[{i}]: unknown flag {name!r} (known: {', '.join(FLAGS)})"
            ) from None
        if not _kernel_flag_ok(bit):
            raise SeccompError(f"linux.seccomp.flags[{i}]: {name} is not supported by this kernel")
        bits |= bit
    return bits, names


# --------------------------------------------------------------------------
# compile


def compile_filter(seccomp: SeccompSpec) -> CompiledFilter:
    """Compile a ``linux.seccomp`` section into a loadable :class:`CompiledFilter`.

    Runs in the parent, before fork: every error (unknown action, operator,
    architecture or flag, argument index above 5, an errno out of range, a
    NOTIFY rule without ``listenerPath``) is a :class:`SeccompError` whose
    message names the field and the value.
    """
    key = _encoded(seccomp)
    if key is not None:
        hit = _by_encoding.get(key)
        if hit is not None:
            return hit
    compiled = _compile(seccomp)
    if key is not None:
        while len(_by_encoding) >= _CACHE_SIZE:
            del _by_encoding[next(iter(_by_encoding))]
        _by_encoding[key] = compiled
    return compiled


def _encoded(seccomp: SeccompSpec) -> bytes | None:
    """The section as JSON (msgspec models): a cache key found without validating it again.

    Validating Docker's profile (~350 rules, each checked and named) costs
    ~1 ms before the cache of :func:`_compile` can even be asked; the same
    bytes validate and compile the same way, so this key skips that work.
    """
    try:
        import msgspec

        return msgspec.json.encode(seccomp)
    except Exception:  # not a model msgspec knows: no shortcut
        return None


def _compile(seccomp: SeccompSpec) -> CompiledFilter:
    where = "linux.seccomp"
    default = _action_value(
        seccomp.default_action, seccomp.default_errno_ret, f"{where}.defaultAction"
    )
    if default == ACT_NOTIFY:
        raise SeccompError(f"{where}.defaultAction: SCMP_ACT_NOTIFY cannot be the default action")

    archs: list[str] = []
    for i, arch in enumerate(seccomp.architectures or ()):
        if arch not in ARCHITECTURES:
            raise SeccompError(
                f"{where}.architectures[{i}]: unknown architecture {arch!r} "
                f"(known: {', '.join(ARCHITECTURES)})"
            )
        archs.append(arch)

    rules: list[_Rule] = []
    notify = False
    for i, call in enumerate(seccomp.syscalls or ()):
        at = f"{where}.syscalls[{i}]"
        action = _action_value(call.action, call.errno_ret, f"{at}.action")
        conditions = _conditions(call.args, at)
        for j, name in enumerate(call.names):
            if not name:
                raise SeccompError(f"{at}.names[{j}]: an empty string is not a syscall name")
            if action == ACT_NOTIFY:
                notify = True
                if name in NOTIFY_FORBIDDEN:
                    raise SeccompError(
                        f"{at}.names[{j}]: SCMP_ACT_NOTIFY cannot be used for {name!r} "
                        "(the container's init needs it to hand over the listener)"
                    )
            rules.append(_Rule(name, action, conditions, f"{at}.names[{j}]"))
    if notify and not seccomp.listener_path:
        raise SeccompError(f"{where}.listenerPath: must be set when SCMP_ACT_NOTIFY is used")

    flags, flag_names = _flag_bits(seccomp)
    plan = _Plan(
        default=default,
        archs=tuple(archs),
        rules=tuple(rules),
        flags=flags,
        flag_names=tuple(flag_names),
        notify=notify,
        listener_path=seccomp.listener_path or None,
        listener_metadata=seccomp.listener_metadata or None,
    )
    compiled = _cache.get(plan)
    if compiled is None:
        compiled = _build(plan)
        while len(_cache) >= _CACHE_SIZE:
            del _cache[next(iter(_cache))]
        _cache[plan] = compiled
    return compiled


class _Plan(NamedTuple):
    """A validated seccomp section: everything the compiled program depends on."""

    default: int
    archs: tuple[str, ...]
    rules: tuple[_Rule, ...]
    flags: int
    flag_names: tuple[str, ...]
    notify: bool
    listener_path: str | None
    listener_metadata: str | None


#: Compiling Docker's default profile takes libseccomp ~15 ms, and a host
#: runs many containers with the same few profiles: a process that starts
#: many (the engine's helper) compiles each distinct one once.
_CACHE_SIZE = 16
_cache: dict[_Plan, CompiledFilter] = {}
#: the same, keyed by the section's JSON (see _encoded)
_by_encoding: dict[bytes, CompiledFilter] = {}


def _build(plan: _Plan) -> CompiledFilter:
    """Have libseccomp compile ``plan`` and export the program (plus our stub)."""
    default, archs, rules, flags = plan.default, plan.archs, plan.rules, plan.flags
    notify = plan.notify
    lib = _libseccomp()
    tokens: list[int] = []
    for i, arch in enumerate(archs):
        token = lib.seccomp_arch_resolve_name(ARCHITECTURES[arch].encode())
        if token == 0:
            version = ".".join(map(str, libseccomp_version() or ()))
            raise SeccompError(
                f"linux.seccomp.architectures[{i}]: {arch} is not supported by libseccomp {version}"
            )
        tokens.append(token)

    ctx = lib.seccomp_init(default)
    if not ctx:
        raise SeccompError(f"seccomp_init: libseccomp refused default action {default:#x}")
    try:
        for token, arch in zip(tokens, archs, strict=True):
            rc = lib.seccomp_arch_add(ctx, token)
            if rc == -errno.EDOM:
                raise SeccompError(
                    f"linux.seccomp.architectures: {arch} cannot share a filter with "
                    "this host's architecture (their byte orders differ)"
                )
            if rc < 0 and rc != -errno.EEXIST:  # the native arch is already there
                raise SeccompError(f"seccomp_arch_add({arch}): {os.strerror(-rc)}")
        _set_attributes(lib, ctx, plan.flag_names, len(rules))

        numbers: dict[str, int] = {}
        unknown: list[str] = []
        for rule in rules:
            nr = numbers.get(rule.name)
            if nr is None:
                nr = numbers[rule.name] = lib.seccomp_syscall_resolve_name(rule.name.encode())
                if nr == _NR_SCMP_ERROR:
                    unknown.append(rule.name)
                    _debug("unknown seccomp syscall %r ignored", rule.name)
            if nr == _NR_SCMP_ERROR or rule.action == default:
                # Unknown: assume this kernel lacks it (runc). Same action as
                # the default: redundant, and libseccomp refuses it.
                continue
            _add_rule(lib, ctx, rule, nr)

        program = _export(lib, ctx)
    finally:
        lib.seccomp_release(ctx)

    stub = _enosys_stub(default, tokens, [r.name for r in rules])
    program = stub + program
    if len(program) // _INSN.size > MAX_INSTRUCTIONS:
        raise SeccompError(
            f"linux.seccomp: the compiled filter has {len(program) // _INSN.size} "
            f"instructions, more than the kernel's limit of {MAX_INSTRUCTIONS}"
        )

    load_flags = flags & ~FLAG_TSYNC
    if not notify and load_flags & FLAG_WAIT_KILLABLE_RECV:
        _debug("seccomp: WAIT_KILLABLE_RECV dropped: no SCMP_ACT_NOTIFY rule")
        load_flags &= ~FLAG_WAIT_KILLABLE_RECV
    return CompiledFilter(
        program=program,
        flags=load_flags,
        notify=notify,
        listener_path=plan.listener_path,
        listener_metadata=plan.listener_metadata,
        unknown_syscalls=tuple(unknown),
    )


def _set_attributes(lib: ctypes.CDLL, ctx: int, flag_names: Sequence[str], n_rules: int) -> None:
    """Mirror the flags onto libseccomp's filter attributes.

    They only steer ``seccomp_load``, which we do not call (the loader passes
    the flags itself), so a libseccomp too old for one is not an error.
    """
    attrs = [(_ATTR_CTL_NNP, 0)]  # no_new_privs is the runtime's business
    attr_of = {
        "SECCOMP_FILTER_FLAG_TSYNC": _ATTR_CTL_TSYNC,
        "SECCOMP_FILTER_FLAG_LOG": _ATTR_CTL_LOG,
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW": _ATTR_CTL_SSB,
    }
    attrs += [(attr_of[n], 1) for n in flag_names if n in attr_of]
    if n_rules > _OPTIMIZE_ABOVE:
        # A binary search over syscall numbers instead of a linear scan (runc).
        attrs.append((_ATTR_CTL_OPTIMIZE, 2))
    for attr, value in attrs:
        rc = lib.seccomp_attr_set(ctx, attr, value)
        if rc < 0:
            _debug("seccomp_attr_set(%d, %d): %s", attr, value, os.strerror(-rc))


def _add_rule(lib: ctypes.CDLL, ctx: int, rule: _Rule, nr: int) -> None:
    """Add ``rule`` for syscall number ``nr``.

    Conditions in one rule are ANDed. When two conditions test the same
    argument, runc instead adds one rule per condition (so they are ORed);
    we do the same, so that profiles mean what they mean under runc.
    """
    conds = rule.conditions
    indexes = [c[0] for c in conds]
    if len(set(indexes)) < len(indexes):
        groups: list[tuple[tuple[int, int, int, int], ...]] = [(c,) for c in conds]
    else:
        groups = [conds]
    for group in groups:
        array = (_ArgCmp * len(group))(*(_ArgCmp(*c) for c in group)) if group else None
        rc = lib.seccomp_rule_add_array(ctx, rule.action, nr, len(group), array)
        if rc < 0:
            raise SeccompError(
                f"{rule.where}: libseccomp refused the rule for {rule.name!r}: {os.strerror(-rc)}"
            )


def _export(lib: ctypes.CDLL, ctx: int) -> bytes:
    """Have libseccomp generate the BPF program and return its bytes."""
    fd = os.memfd_create("bulkhead-seccomp", os.MFD_CLOEXEC)
    try:
        rc = lib.seccomp_export_bpf(ctx, fd)
        if rc < 0:
            raise SeccompError(f"seccomp_export_bpf: {os.strerror(-rc)}")
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# the -ENOSYS stub (runc's patchbpf, written our own way)

# classic BPF opcodes (linux/filter.h)
_LD_W_ABS = 0x20  # A = seccomp_data[k] (32 bits)
_JEQ_K = 0x15
_JGT_K = 0x25
_JSET_K = 0x45
_JA = 0x05
_RET_K = 0x06
_OFF_NR = 0  # offsetof(struct seccomp_data, nr)
_OFF_ARCH = 4  # offsetof(struct seccomp_data, arch)

_AUDIT_ARCH_X86_64 = 0xC000_003E
_X32_SYSCALL_BIT = 0x4000_0000


def _insn(code: int, k: int = 0, jt: int = 0, jf: int = 0) -> bytes:
    return _INSN.pack(code, jt, jf, k)


def _enosys_stub(default: int, tokens: Sequence[int], names: Sequence[str]) -> bytes:
    """The prefix that answers ENOSYS to syscalls newer than the profile.

    For each architecture in ``architectures`` (as runc: not the implicit
    native one) it finds the largest syscall number the profile names, and
    emits one self-contained block; blocks for other architectures fall
    through, and the last one falls into libseccomp's program (which reloads
    what it needs)::

        ld  [arch]
        jeq ARCH, 0, <next block>
        ld  [nr]
        jgt MAX, 0, <next block>
        ret ERRNO(ENOSYS)

    x86_64 and x32 share an arch token and differ by bit 30 of ``nr``, so
    their block tests that bit first. No stub is made when the default lets
    calls through anyway (ALLOW, LOG, TRACE) or already answers ENOSYS.
    """
    if (default & 0xFFFF_0000) in (ACT_ALLOW, ACT_LOG, ACT_TRACE):
        return b""
    if default == ACT_ERRNO | errno.ENOSYS:
        return b""
    lib = _libseccomp()
    unique = sorted(set(names))
    # audit arch -> {mode: largest nr}; mode is the token (x86_64 vs x32)
    largest: dict[int, dict[int, int]] = {}
    x32_token = lib.seccomp_arch_resolve_name(b"x32")
    for token in dict.fromkeys(tokens):
        top = max(
            (lib.seccomp_syscall_resolve_name_arch(token, n.encode()) for n in unique),
            default=0,
        )
        if top <= 0:
            _debug("seccomp: no syscall of the profile exists on arch %#x", token)
            continue
        audit = _AUDIT_ARCH_X86_64 if token == x32_token else token
        largest.setdefault(audit, {})[token] = top

    ret_enosys = _insn(_RET_K, ACT_ERRNO | errno.ENOSYS)
    blocks: list[bytes] = []
    s390 = {lib.seccomp_arch_resolve_name(b"s390"), lib.seccomp_arch_resolve_name(b"s390x")}
    for audit in sorted(largest):
        modes = largest[audit]
        if audit == _AUDIT_ARCH_X86_64:
            top64 = modes.get(_AUDIT_ARCH_X86_64)
            top32 = modes.get(x32_token)
            body = [
                _insn(_LD_W_ABS, _OFF_NR),
                # x32 call? -> its check; else the x86_64 check
                _insn(_JSET_K, _X32_SYSCALL_BIT, jt=1, jf=0),
                _insn(_JGT_K, top64, jt=1, jf=2) if top64 else _insn(_JA, 2),
                _insn(_JGT_K, top32, jt=0, jf=1) if top32 else _insn(_JA, 1),
                ret_enosys,
            ]
        else:
            (top,) = modes.values()
            body = [_insn(_LD_W_ABS, _OFF_NR)]
            if audit in s390:
                # s390 multiplexes big syscall numbers through nr 0 (setup(2)).
                body.append(_insn(_JEQ_K, 0, jt=1, jf=0))
            body += [_insn(_JGT_K, top, jt=0, jf=1), ret_enosys]
        head = [_insn(_LD_W_ABS, _OFF_ARCH), _insn(_JEQ_K, audit, jt=0, jf=len(body))]
        blocks.append(b"".join(head + body))
    return b"".join(blocks)


def decode_program(program: bytes) -> list[tuple[int, int, int, int]]:
    """The instructions of a BPF program as ``(code, jt, jf, k)`` tuples (for tests, dumps)."""
    return [_INSN.unpack_from(program, off) for off in range(0, len(program), _INSN.size)]


# --------------------------------------------------------------------------
# load (in the child)


class _SockFprog(ctypes.Structure):
    """``struct sock_fprog``: the length (in instructions) and address of a program.

    ``filter`` is declared ``char *`` so that a bytes object can be assigned
    to it directly: ctypes then points it at the object's own buffer (and
    keeps the object alive) without copying.
    """

    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def load_filter(compiled: CompiledFilter) -> int | None:
    """Install ``compiled`` on the calling process; return the listener fd if any.

    Runs in the child between fork and exec: one seccomp(2) system call over
    the program's bytes, nothing else (no libseccomp, no locks). The caller
    must have set no_new_privs or hold CAP_SYS_ADMIN, or the kernel answers
    EACCES. Errors are :class:`OSError` carrying the kernel's errno.

    With ``compiled.notify`` the kernel also creates the notification
    listener and returns its fd (close-on-exec); the caller hands it to the
    runtime, which sends it to ``listenerPath``.
    """
    program = compiled.program
    flags = compiled.flags | (FLAG_NEW_LISTENER if compiled.notify else 0)
    prog = _SockFprog(len(program) // _INSN.size, program)
    fd = syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, ctypes.byref(prog))
    return fd if compiled.notify else None


# --------------------------------------------------------------------------
# what this host supports (for `features`)


@functools.cache
def _kernel_flag_ok(bit: int) -> bool:
    """Ask the kernel whether it knows SECCOMP_SET_MODE_FILTER flag ``bit``.

    The probe passes a NULL program: a kernel that accepts the flags goes on
    to copy the program and fails with EFAULT, one that does not fails with
    EINVAL first. Nothing is installed either way, so probing is safe in any
    process. WAIT_KILLABLE_RECV is only valid with NEW_LISTENER, so the
    probe adds that.
    """
    flags = bit | (FLAG_NEW_LISTENER if bit & FLAG_WAIT_KILLABLE_RECV else 0)
    try:
        syscall("seccomp", SECCOMP_SET_MODE_FILTER, flags, None)
    except OSError as exc:
        return exc.errno == errno.EFAULT
    return False  # pragma: no cover - a NULL program cannot load


def known_flags() -> list[str]:
    """The runtime-spec seccomp flags bulkhead understands."""
    return list(FLAGS)


def supported_flags() -> list[str]:
    """The known flags this kernel accepts (runc's ``seccomp.SupportedFlags``)."""
    return [name for name, bit in FLAGS.items() if _kernel_flag_ok(bit)]


@functools.cache
def _kernel_action_ok(action: int) -> bool:
    """seccomp(SECCOMP_GET_ACTION_AVAIL): does the kernel implement ``action``?"""
    value = ctypes.c_uint32(action)
    try:
        syscall("seccomp", SECCOMP_GET_ACTION_AVAIL, 0, ctypes.byref(value))
    except OSError:
        return False
    return True


#: libseccomp API level that each action needs (seccomp_api_get)
_ACTION_API = {ACT_KILL_PROCESS: 3, ACT_LOG: 3, ACT_NOTIFY: 5}


def supported_actions() -> list[str]:
    """The actions both libseccomp and the running kernel implement."""
    if not available():
        return []
    api = _libseccomp().seccomp_api_get()
    return [
        name
        for name, action in ACTIONS.items()
        if _kernel_action_ok(action) and api >= _ACTION_API.get(action, 1)
    ]


def supported_operators() -> list[str]:
    """The argument operators (libseccomp has had all seven since 2.0)."""
    return list(OPERATORS) if available() else []


def supported_archs() -> list[str]:
    """The runtime-spec architectures this libseccomp can build filters for."""
    if not available():
        return []
    lib = _libseccomp()
    return [
        spec for spec, name in ARCHITECTURES.items() if lib.seccomp_arch_resolve_name(name.encode())
    ]
