"""Linux capabilities: names and numbers, the five sets, and how to set them.

Root's power is split into about forty *capabilities* (CAP_CHOWN,
CAP_NET_ADMIN, CAP_SYS_ADMIN ...), each a bit number (capabilities(7)).
Every thread carries five sets of them, as bitmasks:

``bounding``     the upper limit: a capability dropped from it can never be
                 gained again, not even by executing a setuid-root or
                 file-capability program. Only dropped, one at a time, with
                 ``prctl(PR_CAPBSET_DROP)``.
``permitted``    what the thread may use: it may turn these on in its
                 effective set, and never add to them.
``effective``    what the kernel actually checks when the thread acts.
``inheritable``  kept across ``execve`` and granted to programs whose *file*
                 inheritable set names them too (rarely useful: the runtime
                 spec and runc now leave it empty by default).
``ambient``      kept across ``execve`` of ordinary programs, for non-root
                 users: a capability here is in the new program's permitted
                 and effective sets. It must be both permitted and
                 inheritable to be raised.

The runtime-spec gives the five sets as lists of names
(``process.capabilities``). :func:`capability_sets_from_spec` turns them
into a :class:`CapabilitySets` of integer masks *in the parent*, before
fork; the child then only makes system calls with those integers.

The order matters (it is runc's ``finalizeNamespace``)::

    drop_bounding(sets.bounding)      # 1. needs CAP_SETPCAP: do it while still root
    set_keep_caps(True)               # 2. keep the permitted set across ...
    os.setgroups / setresgid / setresuid   # 3. ... the switch to the container's user
    set_keep_caps(False)              # 4.
    capset(sets.effective, sets.permitted, sets.inheritable)   # 5.
    failed = set_ambient(sets.ambient)   # 6. last: a uid switch clears the ambient set;
                                      #    report `failed` (not raisable) as runc warns

Why: when every uid of a thread goes from 0 to non-0, the kernel empties
its permitted, effective and ambient sets, unless *keepcaps* is on (then
only effective and ambient are emptied). So the permitted set must survive
step 3 with keepcaps, be narrowed and re-armed with capset (which may turn
on effective bits within permitted without any privilege), and the ambient
set, which requires permitted and inheritable, comes last. Dropping from
the bounding set needs CAP_SETPCAP in the effective set, so it comes first.

Names the running kernel does not know (numbers above
``/proc/sys/kernel/cap_last_cap``) are ignored with a warning, as runc does;
names nobody knows are a :class:`~bulkhead.errors.SpecError`.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterable
from typing import NamedTuple

from bulkhead import logs
from bulkhead.errors import SpecError
from bulkhead.linux.libc import LIBC, check

#: Every capability name with its number, as in linux/capability.h.
CAPABILITIES: dict[str, int] = {
    "CAP_CHOWN": 0,
    "CAP_DAC_OVERRIDE": 1,
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_FOWNER": 3,
    "CAP_FSETID": 4,
    "CAP_KILL": 5,
    "CAP_SETGID": 6,
    "CAP_SETUID": 7,
    "CAP_SETPCAP": 8,
    "CAP_LINUX_IMMUTABLE": 9,
    "CAP_NET_BIND_SERVICE": 10,
    "CAP_NET_BROADCAST": 11,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_IPC_LOCK": 14,
    "CAP_IPC_OWNER": 15,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_PACCT": 20,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_SYS_TTY_CONFIG": 26,
    "CAP_MKNOD": 27,
    "CAP_LEASE": 28,
    "CAP_AUDIT_WRITE": 29,
    "CAP_AUDIT_CONTROL": 30,
    "CAP_SETFCAP": 31,
    "CAP_MAC_OVERRIDE": 32,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_WAKE_ALARM": 35,
    "CAP_BLOCK_SUSPEND": 36,
    "CAP_AUDIT_READ": 37,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
    "CAP_CHECKPOINT_RESTORE": 40,
}

#: Number -> name.
CAPABILITY_NAMES: dict[int, str] = {v: k for k, v in CAPABILITIES.items()}

#: The highest capability number this module knows.
CAP_LAST_KNOWN = max(CAPABILITIES.values())

_last_cap: int | None = None


def last_cap() -> int:
    """The highest capability number the running kernel knows.

    Read once from ``/proc/sys/kernel/cap_last_cap`` and cached, so a
    forked child that calls it after ``pivot_root`` gets the parent's
    answer. Falls back to :data:`CAP_LAST_KNOWN` when /proc cannot be read.
    """
    global _last_cap
    if _last_cap is None:
        try:
            with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
                _last_cap = int(f.read())
        except (OSError, ValueError):
            _last_cap = CAP_LAST_KNOWN
    return _last_cap


def capability_number(name: str, where: str | None = None) -> int:
    """The number of capability ``name`` (``"CAP_NET_RAW"`` -> 13); SpecError if unknown."""
    try:
        return CAPABILITIES[name]
    except KeyError:
        raise SpecError(f"unknown capability {name!r}", where=where) from None


def mask_of(names: Iterable[str], where: str | None = None) -> int:
    """The bitmask of capability ``names`` (every name must be known to this module)."""
    mask = 0
    for name in names:
        mask |= 1 << capability_number(name, where)
    return mask


def names_of(mask: int) -> list[str]:
    """The names of the capabilities in ``mask``, in number order (unknown bits as ``CAP_<n>``)."""
    return [
        CAPABILITY_NAMES.get(bit, f"CAP_{bit}")
        for bit in range(mask.bit_length())
        if mask >> bit & 1
    ]


def all_capabilities(last: int | None = None) -> int:
    """The mask of every capability the kernel knows (what root starts with)."""
    top = last_cap() if last is None else last
    return (1 << (top + 1)) - 1


class CapabilitySets(NamedTuple):
    """The five capability sets of a process, each an integer bitmask (bit n = capability n)."""

    bounding: int = 0
    effective: int = 0
    inheritable: int = 0
    permitted: int = 0
    ambient: int = 0

    def to_spec(self) -> dict[str, list[str]]:
        """The sets as runtime-spec lists of names."""
        return {
            "bounding": names_of(self.bounding),
            "effective": names_of(self.effective),
            "inheritable": names_of(self.inheritable),
            "permitted": names_of(self.permitted),
            "ambient": names_of(self.ambient),
        }


def capability_sets_from_spec(
    *,
    bounding: Iterable[str] = (),
    effective: Iterable[str] = (),
    inheritable: Iterable[str] = (),
    permitted: Iterable[str] = (),
    ambient: Iterable[str] = (),
    last: int | None = None,
    where: str = "$.process.capabilities",
) -> CapabilitySets:
    """Turn the runtime-spec's lists of names into masks (parent side).

    A name this module does not know raises :class:`SpecError` naming it and
    the list it is in. A name the running kernel does not know (its number
    is above ``last``, by default :func:`last_cap`) is left out, with one
    warning listing all such names, as runc does, so a config written for a
    newer kernel still runs. Calling this also caches :func:`last_cap` for
    the child.
    """
    top = last_cap() if last is None else last
    ignored: list[str] = []

    def convert(kind: str, names: Iterable[str]) -> int:
        mask = 0
        for i, name in enumerate(names):
            number = capability_number(name, f"{where}.{kind}[{i}]")
            if number > top:
                if name not in ignored:
                    ignored.append(name)
                continue
            mask |= 1 << number
        return mask

    sets = CapabilitySets(
        bounding=convert("bounding", bounding),
        effective=convert("effective", effective),
        inheritable=convert("inheritable", inheritable),
        permitted=convert("permitted", permitted),
        ambient=convert("ambient", ambient),
    )
    if ignored:
        logs.warning(
            __name__,
            "ignoring capabilities the running kernel does not know "
            f"(cap_last_cap={top}): {', '.join(ignored)}",
        )
    return sets


# --------------------------------------------------------------------------
# reading the current sets


def parse_status(text: str) -> CapabilitySets:
    """The five sets from the ``Cap*:`` lines of a ``/proc/<pid>/status`` file."""
    fields = {"CapBnd": 0, "CapEff": 0, "CapInh": 0, "CapPrm": 0, "CapAmb": 0}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in fields:
            fields[key] = int(value.strip(), 16)
    return CapabilitySets(
        bounding=fields["CapBnd"],
        effective=fields["CapEff"],
        inheritable=fields["CapInh"],
        permitted=fields["CapPrm"],
        ambient=fields["CapAmb"],
    )


def current(pid: int | str = "self") -> CapabilitySets:
    """The capability sets of process ``pid`` (default: the caller), from /proc."""
    with open(f"/proc/{pid}/status", encoding="utf-8") as f:
        return parse_status(f.read())


# --------------------------------------------------------------------------
# setting them (child side: syscalls only)

PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_IS_SET = 1
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

#: capset(2) header version for 64-bit masks, passed as two 32-bit words.
_LINUX_CAPABILITY_VERSION_3 = 0x20080522

_prctl = LIBC["prctl"]  # a private function object: argtypes do not leak to LIBC.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


_CapDataPair = _CapData * 2

_capset = LIBC["capset"]
_capset.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_capset.restype = ctypes.c_int
_capget = LIBC["capget"]
_capget.argtypes = [ctypes.POINTER(_CapHeader), ctypes.POINTER(_CapData)]
_capget.restype = ctypes.c_int

_LOW = 0xFFFFFFFF


def drop_bounding(keep: int, last: int | None = None) -> None:
    """Drop every capability not in ``keep`` from the bounding set.

    One ``prctl(PR_CAPBSET_DROP, n)`` per capability 0 .. ``last`` (default
    :func:`last_cap`, cached by the parent) that is not in ``keep``.
    Needs CAP_SETPCAP in the effective set: call it before changing user.
    """
    top = last_cap() if last is None else last
    for cap in range(top + 1):
        if not keep >> cap & 1 and _prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) == -1:
            check(-1, f"prctl(PR_CAPBSET_DROP, {CAPABILITY_NAMES.get(cap, cap)})")


def in_bounding(cap: int) -> bool:
    """Whether capability number ``cap`` is in the caller's bounding set."""
    return bool(check(_prctl(PR_CAPBSET_READ, cap, 0, 0, 0), "prctl(PR_CAPBSET_READ)"))


def set_keep_caps(on: bool) -> None:
    """PR_SET_KEEPCAPS: keep the permitted set when every uid switches from 0 to non-0."""
    check(_prctl(PR_SET_KEEPCAPS, 1 if on else 0, 0, 0, 0), "prctl(PR_SET_KEEPCAPS)")


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """Set the calling thread's effective, permitted and inheritable sets (capset(2)).

    Permitted may only shrink; effective must lie within the new permitted;
    inheritable may grow only within the old permitted (or with CAP_SETPCAP)
    and never beyond the bounding set. EPERM otherwise.
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapDataPair(
        _CapData(effective & _LOW, permitted & _LOW, inheritable & _LOW),
        _CapData(effective >> 32 & _LOW, permitted >> 32 & _LOW, inheritable >> 32 & _LOW),
    )
    check(_capset(ctypes.byref(header), data), "capset")


def capget() -> tuple[int, int, int]:
    """The calling thread's (effective, permitted, inheritable) sets (capget(2))."""
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = _CapDataPair()
    check(_capget(ctypes.byref(header), data), "capget")
    lo, hi = data[0], data[1]
    return (
        lo.effective | hi.effective << 32,
        lo.permitted | hi.permitted << 32,
        lo.inheritable | hi.inheritable << 32,
    )


def set_ambient(mask: int, last: int | None = None, *, strict: bool = False) -> int:
    """Make the ambient set ``mask``: clear it, then raise each capability in turn.

    A capability can only be raised if it is already in both the permitted
    and the inheritable sets. runc (>= 1.2) warns about each one that cannot
    be raised and carries on, because specs written by ``runc spec`` list
    ambient capabilities without inheritable ones; so does this function: it
    returns the mask of the capabilities it could *not* raise (0 when all
    went well) for the caller to report. With ``strict=True`` the first such
    failure raises OSError naming the capability instead.

    Call it last, after :func:`capset`: changing uid clears the ambient set.
    """
    if _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) == -1:
        if not mask:
            return 0  # a kernel without ambient capabilities (< 4.3) has nothing to clear
        if not strict:
            return mask
        check(-1, "prctl(PR_CAP_AMBIENT_CLEAR_ALL)")
    top = last_cap() if last is None else last
    failed = 0
    for cap in range(mask.bit_length()):
        if not mask >> cap & 1:
            continue
        if cap > top or _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) == -1:
            if strict:
                check(-1, f"prctl(PR_CAP_AMBIENT_RAISE, {CAPABILITY_NAMES.get(cap, cap)})")
            failed |= 1 << cap
    return failed
