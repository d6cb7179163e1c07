"""Process attributes a container's init sets on itself: prctl(2) and friends.

Most of what makes a process "containerised" beyond namespaces is a handful
of per-process attributes, each set by one system call. They are inherited
by children and (mostly) survive ``execve``, so the container's init sets
them on itself just before it becomes the user's program:

``no_new_privs``      once set, ``execve`` can never grant privileges again:
                      setuid/setgid bits and file capabilities are ignored.
                      It cannot be unset, and it lets an unprivileged process
                      load a seccomp filter (runtime-spec
                      ``process.noNewPrivileges``).
``dumpable``          whether the process may be core-dumped and, more
                      importantly, ptraced or have its ``/proc/<pid>/*``
                      files (``exe``, ``mem``, ``fd/``...) opened by
                      processes of the same uid. The runtime makes itself
                      *non-dumpable* while it is inside a container's
                      namespaces so a process of the container cannot reach
                      the host binary through ``/proc/<pid>/exe``
                      (CVE-2019-5736). ``execve`` resets it.
``child subreaper``   orphaned descendants are re-parented to the nearest
                      subreaper instead of PID 1, so a supervisor (the
                      engine's per-container monitor) can reap them.
``pdeathsig``         the signal this process gets when its parent thread
                      dies. Cleared by ``execve`` of a setuid binary and by
                      changes of credentials.
``name``              the 15-character ``comm`` shown by ps(1) and in
                      ``/proc/<pid>/comm``.
``session keyring``   the kernel keyring (see keyrings(7)) that holds
                      secrets for a login session. A container gets a fresh
                      one so it cannot read the host's.
``personality``       the execution domain: ``LINUX`` or ``LINUX32`` (uname
                      reports ``i686`` and the address space is 32-bit
                      sized), runtime-spec ``linux.personality``.
``io priority``       the I/O scheduling class (real-time, best-effort,
                      idle) and level, runtime-spec ``process.ioPriority``.
``scheduler``         the CPU scheduling policy (SCHED_OTHER, SCHED_FIFO,
                      SCHED_DEADLINE ...) with its parameters, runtime-spec
                      ``process.scheduler``, set with sched_setattr(2).
``oom_score_adj``     -1000 .. 1000, added to the OOM killer's score of the
                      process; lowering it needs CAP_SYS_RESOURCE.
``securebits``        flags that turn off the special treatment of uid 0
                      (see capabilities(7)); listed here for completeness.

and the system calls that end the child's life as Python:
``close_range`` (mark every fd close-on-exec in one call), ``memfd_create``
(an anonymous file in memory) and ``execveat``/``fexecve`` (execute a file
given by descriptor, which is how the sealed trampoline of
:mod:`bulkhead.linux.dmz` is run).

*Parent side, child side.* Functions that translate runtime-spec names
(``ioprio_value``, ``sched_attr``, ``personality_number``,
``prepare_exec_args``) raise :class:`~bulkhead.errors.SpecError` and are
meant to run before ``fork``. The setters are meant to run in the forked
child: they make one or two system calls, import nothing and take no locks.
They also accept the spec's names directly (so a caller may pass the plan's
strings straight through), at the cost of a dictionary lookup.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterable, Sequence
from typing import NoReturn

from bulkhead.errors import SpecError
from bulkhead.linux.libc import LIBC, MACHINE, check, syscall
from bulkhead.linux.libc import syscall_number as _syscall_number

# --------------------------------------------------------------------------
# prctl(2)

PR_SET_PDEATHSIG = 1
PR_GET_PDEATHSIG = 2
PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
PR_GET_KEEPCAPS = 7
PR_SET_KEEPCAPS = 8
PR_SET_NAME = 15
PR_GET_NAME = 16
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_GET_SECUREBITS = 27
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
PR_SET_NO_NEW_PRIVS = 38
PR_GET_NO_NEW_PRIVS = 39
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_LOWER = 3
PR_CAP_AMBIENT_CLEAR_ALL = 4

#: Values of the dumpable attribute (``/proc/sys/fs/suid_dumpable`` uses the same).
SUID_DUMP_DISABLE = 0
SUID_DUMP_USER = 1
SUID_DUMP_ROOT = 2

# Securebits (linux/securebits.h). Each flag has a *_LOCKED companion that,
# once set, forbids changing it again.
SECBIT_NOROOT = 1 << 0
"""uid 0 gets no capabilities from ``execve`` just for being uid 0."""
SECBIT_NOROOT_LOCKED = 1 << 1
SECBIT_NO_SETUID_FIXUP = 1 << 2
"""Changing uids between 0 and non-0 does not adjust the capability sets."""
SECBIT_NO_SETUID_FIXUP_LOCKED = 1 << 3
SECBIT_KEEP_CAPS = 1 << 4
"""The permitted set survives a switch of every uid from 0 to non-0 (PR_SET_KEEPCAPS)."""
SECBIT_KEEP_CAPS_LOCKED = 1 << 5
SECBIT_NO_CAP_AMBIENT_RAISE = 1 << 6
"""No capability may be raised into the ambient set."""
SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED = 1 << 7

# A private function object (LIBC["prctl"] is not cached, unlike LIBC.prctl),
# so the argument types set here do not leak to other users of LIBC.
_prctl = LIBC["prctl"]
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    """Call prctl(2) with integer arguments; return its result or raise OSError."""
    return check(_prctl(option, arg2, arg3, arg4, arg5), "prctl")


def set_no_new_privs() -> None:
    """Set ``no_new_privs``: from now on no ``execve`` can grant privileges. Irreversible."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def get_no_new_privs() -> bool:
    """Whether ``no_new_privs`` is set (also ``NoNewPrivs:`` in /proc/<pid>/status)."""
    return bool(prctl(PR_GET_NO_NEW_PRIVS))


def set_dumpable(dumpable: bool) -> None:
    """Make the process dumpable (1) or not (0); see the module docstring for why it matters."""
    prctl(PR_SET_DUMPABLE, SUID_DUMP_USER if dumpable else SUID_DUMP_DISABLE)


def get_dumpable() -> int:
    """The dumpable attribute: 0 (no), 1 (yes) or 2 (only root may dump or trace)."""
    return prctl(PR_GET_DUMPABLE)


def set_child_subreaper(on: bool) -> None:
    """Become (or stop being) the reaper of orphaned descendants."""
    prctl(PR_SET_CHILD_SUBREAPER, 1 if on else 0)


def get_child_subreaper() -> bool:
    """Whether this process is a child subreaper."""
    value = ctypes.c_int(0)
    prctl(PR_GET_CHILD_SUBREAPER, ctypes.addressof(value))
    return bool(value.value)


def set_pdeathsig(sig: int) -> None:
    """Ask for signal ``sig`` (0: none) when the parent *thread* that forked us dies."""
    prctl(PR_SET_PDEATHSIG, int(sig))


def get_pdeathsig() -> int:
    """The parent-death signal, 0 when none is set."""
    value = ctypes.c_int(0)
    prctl(PR_GET_PDEATHSIG, ctypes.addressof(value))
    return value.value


def set_name(name: str | bytes) -> None:
    """Set the thread's ``comm`` (what ps shows); the kernel keeps the first 15 bytes."""
    raw = name.encode("utf-8", "surrogateescape") if isinstance(name, str) else name
    buf = ctypes.create_string_buffer(raw[:15], 16)
    prctl(PR_SET_NAME, ctypes.addressof(buf))


def get_name() -> str:
    """The thread's ``comm``."""
    buf = ctypes.create_string_buffer(16)
    prctl(PR_GET_NAME, ctypes.addressof(buf))
    return buf.value.decode("utf-8", "surrogateescape")


def set_securebits(bits: int) -> None:
    """Set the securebits (needs CAP_SETPCAP); see the SECBIT_* constants."""
    prctl(PR_SET_SECUREBITS, bits)


def get_securebits() -> int:
    """The current securebits."""
    return prctl(PR_GET_SECUREBITS)


# --------------------------------------------------------------------------
# keyrings (keyctl(2), keyrings(7))

KEYCTL_GET_KEYRING_ID = 0
KEYCTL_JOIN_SESSION_KEYRING = 1
KEYCTL_SETPERM = 5
KEYCTL_DESCRIBE = 6

#: Special key ids that name "my" keyrings.
KEY_SPEC_THREAD_KEYRING = -1
KEY_SPEC_PROCESS_KEYRING = -2
KEY_SPEC_SESSION_KEYRING = -3

# A key's permission mask has four bytes, for the *possessor* (a process
# that has the key in one of its keyrings), the key's *user* (uid), *group*
# and *other*; each byte holds these bits:
KEY_VIEW = 0x01
KEY_READ = 0x02
KEY_WRITE = 0x04
KEY_SEARCH = 0x08
KEY_LINK = 0x10
KEY_SETATTR = 0x20
KEY_ALL = 0x3F
KEY_POS_SHIFT = 24
KEY_USR_SHIFT = 16
KEY_GRP_SHIFT = 8
KEY_OTH_SHIFT = 0
KEY_USR_SEARCH = KEY_SEARCH << KEY_USR_SHIFT  # 0x00080000
KEY_OTH_SEARCH = KEY_SEARCH << KEY_OTH_SHIFT  # 0x00000008


def keyctl(cmd: int, *args: object) -> int:
    """Call keyctl(2); return its result or raise OSError."""
    return syscall("keyctl", cmd, *args)


def join_session_keyring(name: str | None, *, user_namespace: bool = False) -> int | None:
    """Give the process a new (or the named) session keyring; return its serial number.

    Without this the container would share the session keyring the runtime
    was started in, and could read the secrets in it. ``name=None`` creates
    a fresh anonymous keyring (``_ses``); a name joins the keyring of that
    name, creating it if needed (runc uses ``_ses.<container id>``).

    As runc does, the keyring's permission mask is then read
    (KEYCTL_DESCRIBE) and widened with *search* permission, for the key's
    user, or for *other* when the container has its own user namespace (its
    uid 0 is not the key's owner). A kernel built without keyrings (ENOSYS)
    is not an error: the result is then ``None``.
    """
    raw = None if name is None else name.encode("utf-8", "surrogateescape")
    try:
        serial = keyctl(KEYCTL_JOIN_SESSION_KEYRING, raw)
    except OSError as exc:
        if exc.errno == 38:  # ENOSYS
            return None
        raise
    if serial == 0:  # the named keyring is already our session keyring
        serial = keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
    extra = KEY_OTH_SEARCH if user_namespace else KEY_USR_SEARCH
    keyctl(KEYCTL_SETPERM, serial, keyring_permissions(serial) | extra)
    return serial


def keyring_permissions(serial: int) -> int:
    """The permission mask of key ``serial`` (``KEY_SPEC_*`` ids work too)."""
    return int(describe_key(serial).split(";")[3], 16)


def describe_key(serial: int) -> str:
    """KEYCTL_DESCRIBE: ``"type;uid;gid;perm;description"`` of key ``serial``."""
    buf = ctypes.create_string_buffer(512)
    size = keyctl(KEYCTL_DESCRIBE, serial, buf, len(buf))
    if size > len(buf):
        buf = ctypes.create_string_buffer(size)
        keyctl(KEYCTL_DESCRIBE, serial, buf, len(buf))
    return buf.value.decode("utf-8", "surrogateescape")


# --------------------------------------------------------------------------
# personality(2)

PER_LINUX = 0x0000
PER_LINUX32 = 0x0008

#: runtime-spec ``linux.personality.domain`` -> persona number
PERSONALITIES: dict[str, int] = {"LINUX": PER_LINUX, "LINUX32": PER_LINUX32}


def personality_number(domain: str, where: str = "$.linux.personality.domain") -> int:
    """The persona number of a runtime-spec execution domain (parent side)."""
    try:
        return PERSONALITIES[domain]
    except KeyError:
        raise SpecError(
            f"unsupported personality domain {domain!r} (expected LINUX or LINUX32)", where=where
        ) from None


def set_personality(domain: str | int) -> None:
    """Set the execution domain (``"LINUX"``, ``"LINUX32"`` or a PER_* number)."""
    value = PERSONALITIES[domain] if isinstance(domain, str) else domain
    syscall("personality", value)


def get_personality() -> int:
    """The current persona (``personality(0xffffffff)`` only reads it)."""
    return syscall("personality", 0xFFFFFFFF)


# --------------------------------------------------------------------------
# I/O priority (ioprio_set(2))

IOPRIO_CLASS_NONE = 0
IOPRIO_CLASS_RT = 1
IOPRIO_CLASS_BE = 2
IOPRIO_CLASS_IDLE = 3
IOPRIO_CLASS_SHIFT = 13
IOPRIO_WHO_PROCESS = 1

#: runtime-spec ``process.ioPriority.class`` -> class number
IOPRIO_CLASSES: dict[str, int] = {
    "IOPRIO_CLASS_RT": IOPRIO_CLASS_RT,
    "IOPRIO_CLASS_BE": IOPRIO_CLASS_BE,
    "IOPRIO_CLASS_IDLE": IOPRIO_CLASS_IDLE,
}

# System calls libc.py does not list (yet); only read back values in tests.
_EXTRA_SYSCALLS: dict[str, dict[str, int]] = {
    "x86_64": {"ioprio_get": 252, "sched_getattr": 315},
    "aarch64": {"ioprio_get": 31, "sched_getattr": 275},
}


def ioprio_value(io_class: str | int, priority: int, where: str = "$.process.ioPriority") -> int:
    """The ``ioprio`` word for a class and a level 0 (highest) .. 7 (parent side)."""
    if isinstance(io_class, str):
        try:
            io_class = IOPRIO_CLASSES[io_class]
        except KeyError:
            raise SpecError(
                f"unknown I/O priority class {io_class!r}", where=f"{where}.class"
            ) from None
    if not 0 <= priority <= 7:
        raise SpecError(f"priority {priority} is not in 0..7", where=f"{where}.priority")
    return (io_class << IOPRIO_CLASS_SHIFT) | priority


def set_ioprio(io_class: str | int, priority: int) -> None:
    """Set the I/O class (``"IOPRIO_CLASS_BE"`` or a number) and level of this process.

    The real-time class needs CAP_SYS_ADMIN; the kernel checks the level.
    """
    cls = IOPRIO_CLASSES[io_class] if isinstance(io_class, str) else io_class
    syscall("ioprio_set", IOPRIO_WHO_PROCESS, 0, (cls << IOPRIO_CLASS_SHIFT) | priority)


def get_ioprio() -> tuple[int, int]:
    """This process's (class, level); class 0 means "none", derived from the nice value."""
    nr = _EXTRA_SYSCALLS[MACHINE]["ioprio_get"]
    value = check(
        LIBC.syscall(ctypes.c_long(nr), ctypes.c_long(IOPRIO_WHO_PROCESS), ctypes.c_long(0)),
        "ioprio_get",
    )
    return value >> IOPRIO_CLASS_SHIFT, value & ((1 << IOPRIO_CLASS_SHIFT) - 1)


# --------------------------------------------------------------------------
# CPU scheduling (sched_setattr(2))

SCHED_OTHER = 0
SCHED_FIFO = 1
SCHED_RR = 2
SCHED_BATCH = 3
SCHED_IDLE = 5
SCHED_DEADLINE = 6

#: runtime-spec ``process.scheduler.policy`` -> policy number
SCHED_POLICIES: dict[str, int] = {
    "SCHED_OTHER": SCHED_OTHER,
    "SCHED_FIFO": SCHED_FIFO,
    "SCHED_RR": SCHED_RR,
    "SCHED_BATCH": SCHED_BATCH,
    "SCHED_ISO": 4,  # reserved by the kernel, never implemented: EINVAL
    "SCHED_IDLE": SCHED_IDLE,
    "SCHED_DEADLINE": SCHED_DEADLINE,
}

#: runtime-spec ``process.scheduler.flags`` -> bit
SCHED_FLAGS: dict[str, int] = {
    "SCHED_FLAG_RESET_ON_FORK": 0x01,
    "SCHED_FLAG_RECLAIM": 0x02,
    "SCHED_FLAG_DL_OVERRUN": 0x04,
    "SCHED_FLAG_KEEP_POLICY": 0x08,
    "SCHED_FLAG_KEEP_PARAMS": 0x10,
    "SCHED_FLAG_UTIL_CLAMP_MIN": 0x20,
    "SCHED_FLAG_UTIL_CLAMP_MAX": 0x40,
}


class SchedAttr(ctypes.Structure):
    """``struct sched_attr`` (the 48-byte SCHED_ATTR_SIZE_VER0 layout).

    ``sched_nice`` applies to SCHED_OTHER and SCHED_BATCH, ``sched_priority``
    (1..99) to SCHED_FIFO and SCHED_RR, and runtime <= deadline <= period
    (nanoseconds) to SCHED_DEADLINE.
    """

    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
    ]


def sched_attr(
    policy: str | int,
    nice: int = 0,
    priority: int = 0,
    flags: Iterable[str] | int = 0,
    runtime: int = 0,
    deadline: int = 0,
    period: int = 0,
    *,
    where: str = "$.process.scheduler",
) -> SchedAttr:
    """Build a ``struct sched_attr`` from runtime-spec values (parent side).

    Names are checked here (SpecError); ranges are left to the kernel, which
    answers EINVAL.
    """
    if isinstance(policy, str):
        try:
            policy = SCHED_POLICIES[policy]
        except KeyError:
            raise SpecError(
                f"unknown scheduler policy {policy!r}", where=f"{where}.policy"
            ) from None
    if isinstance(flags, int):
        bits = flags
    else:
        bits = 0
        for i, name in enumerate(flags):
            try:
                bits |= SCHED_FLAGS[name]
            except KeyError:
                raise SpecError(
                    f"unknown scheduler flag {name!r}", where=f"{where}.flags[{i}]"
                ) from None
    return SchedAttr(
        ctypes.sizeof(SchedAttr), policy, bits, nice, priority, runtime, deadline, period
    )


def set_sched_attr(attr: SchedAttr) -> None:
    """sched_setattr(0, attr, 0): apply a prepared scheduling policy to this thread."""
    syscall("sched_setattr", 0, ctypes.byref(attr), 0)


def set_scheduler(
    policy: str | int,
    nice: int = 0,
    priority: int = 0,
    flags: Iterable[str] | int = 0,
    runtime: int = 0,
    deadline: int = 0,
    period: int = 0,
) -> None:
    """Set this thread's scheduling policy and parameters (runtime-spec ``process.scheduler``).

    Equivalent to ``set_sched_attr(sched_attr(...))``; prefer preparing the
    structure before fork when the values are known there.
    """
    set_sched_attr(sched_attr(policy, nice, priority, flags, runtime, deadline, period))


def get_sched_attr() -> SchedAttr:
    """sched_getattr(0, ...): this thread's scheduling policy and parameters."""
    attr = SchedAttr()
    nr = _EXTRA_SYSCALLS[MACHINE]["sched_getattr"]
    check(
        LIBC.syscall(
            ctypes.c_long(nr),
            ctypes.c_long(0),
            ctypes.byref(attr),
            ctypes.c_long(ctypes.sizeof(attr)),
            ctypes.c_long(0),
        ),
        "sched_getattr",
    )
    return attr


# --------------------------------------------------------------------------
# OOM score


def set_oom_score_adj(value: int) -> None:
    """Write ``/proc/self/oom_score_adj`` (-1000 never kill .. 1000 kill first).

    Raising it is always allowed; lowering it below the lowest value set
    with CAP_SYS_RESOURCE needs that capability (EACCES otherwise).
    """
    fd = os.open("/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, b"%d" % value)
    finally:
        os.close(fd)


def get_oom_score_adj() -> int:
    """Read ``/proc/self/oom_score_adj``."""
    with open("/proc/self/oom_score_adj", "rb") as f:
        return int(f.read())


# --------------------------------------------------------------------------
# file descriptors and exec

CLOSE_RANGE_UNSHARE = 1 << 1
CLOSE_RANGE_CLOEXEC = 1 << 2

MFD_CLOEXEC = 0x0001
MFD_ALLOW_SEALING = 0x0002
MFD_HUGETLB = 0x0004
MFD_NOEXEC_SEAL = 0x0008
MFD_EXEC = 0x0010

AT_EMPTY_PATH = 0x1000
AT_SYMLINK_NOFOLLOW = 0x100

#: The largest fd number, as close_range(2) takes it (``~0U``).
MAX_FD = 0xFFFFFFFF


def close_range(first: int, last: int = MAX_FD, flags: int = 0) -> None:
    """Close (or with CLOSE_RANGE_CLOEXEC, mark close-on-exec) fds ``first`` .. ``last``.

    Marking instead of closing keeps the fds usable until the final
    ``execve``, and cannot fail halfway (Linux >= 5.11).
    """
    syscall("close_range", first, last, flags)


def memfd_create(name: str, flags: int = MFD_CLOEXEC) -> int:
    """Create an anonymous in-memory file; ``name`` shows as ``/memfd:<name>`` in /proc."""
    return os.memfd_create(name, flags)


#: A NULL-terminated array of C strings: what execve(2) takes as argv and envp.
CStringArray = ctypes.Array[ctypes.c_char_p]


def c_string_array(items: Sequence[str | bytes], extra: int = 0) -> CStringArray:
    """``items`` as a NULL-terminated ``char *[]`` with ``extra`` empty slots in front.

    The array keeps the encoded strings alive as long as it lives.
    """
    array = (ctypes.c_char_p * (extra + len(items) + 1))()
    for i, item in enumerate(items, extra):
        array[i] = item if isinstance(item, bytes) else item.encode("utf-8", "surrogateescape")
    return array


def prepare_exec_args(
    argv: Sequence[str | bytes], envp: Sequence[str | bytes]
) -> tuple[CStringArray, CStringArray]:
    """argv and envp as C arrays for :func:`execveat`/:func:`fexecve` (parent side)."""
    return c_string_array(argv), c_string_array(envp)


def execveat(
    dirfd: int,
    path: str | bytes,
    argv: CStringArray,
    envp: CStringArray,
    flags: int = 0,
) -> NoReturn:
    """execveat(2): execute ``path`` relative to ``dirfd`` (or, with AT_EMPTY_PATH and
    ``path=""``, the file ``dirfd`` itself). Returns only by raising OSError.

    ``argv`` and ``envp`` come from :func:`prepare_exec_args`.
    """
    raw = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
    syscall("execveat", dirfd, raw, argv, envp, flags)
    raise OSError(0, "execveat returned")  # not reached: success does not return


def fexecve(fd: int, argv: CStringArray, envp: CStringArray) -> NoReturn:
    """Execute the file open as ``fd`` (execveat with AT_EMPTY_PATH)."""
    execveat(fd, b"", argv, envp, AT_EMPTY_PATH)


# --------------------------------------------------------------------------
# clone3(2) into a cgroup

#: clone3 flag: the child starts in the cgroup2 directory given by ``clone_args.cgroup``.
CLONE_INTO_CGROUP = 0x200000000


class _CloneArgs(ctypes.Structure):
    """``struct clone_args`` (CLONE_ARGS_SIZE_VER2: 88 bytes, with ``cgroup``)."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in (
            "flags",
            "pidfd",
            "child_tid",
            "parent_tid",
            "exit_signal",
            "stack",
            "stack_size",
            "tls",
            "set_tid",
            "set_tid_size",
            "cgroup",
        )
    ]


#: libc for calls that must keep the GIL, as os.fork does around fork(2)
_LIBC_GIL = ctypes.PyDLL(None, use_errno=True)


def fork_into_cgroup(cgroup_fd: int, flags: int = 0) -> int:
    """``os.fork()`` whose child starts in the cgroup2 directory open as ``cgroup_fd``.

    clone3(2) with ``CLONE_INTO_CGROUP``: the child is born in that cgroup
    (the kernel takes only the read side of the global cgroup migration lock
    for it), where writing its pid to ``cgroup.procs`` afterwards would wait
    for an RCU grace period -- 5 to 30 ms on these machines. ``flags`` adds
    namespace flags (``CLONE_NEWPID``...). Python's own fork bookkeeping is
    done as ``os.fork`` does it (``PyOS_BeforeFork``, ``PyOS_AfterFork_*``:
    locks, the GIL's state, ``os.register_at_fork`` hooks); the calling
    process must be single-threaded. Returns 0 in the child, the child's pid
    in the parent; raises OSError when the kernel refuses (ENOSYS, E2BIG or
    EINVAL before Linux 5.7, EBADF, EOPNOTSUPP for a cgroup v1 directory).
    """
    args = _CloneArgs(
        flags=CLONE_INTO_CGROUP | flags, exit_signal=17, cgroup=cgroup_fd
    )  # 17: SIGCHLD
    func = _LIBC_GIL.syscall
    func.restype = ctypes.c_long
    api = ctypes.pythonapi
    api.PyOS_BeforeFork()
    pid = int(
        func(
            ctypes.c_long(_syscall_number("clone3")),
            ctypes.byref(args),
            ctypes.c_size_t(ctypes.sizeof(args)),
        )
    )
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3 into a cgroup: {os.strerror(err)}")
    return pid
