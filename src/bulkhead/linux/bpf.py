"""bpf(2): loading eBPF programs and attaching them to cgroups.

bulkhead needs one kind: a ``BPF_PROG_TYPE_CGROUP_DEVICE`` program, which is
how cgroup v2 decides which device nodes a cgroup may open or create (v1
had the ``devices`` controller's files). The program is compiled by
:mod:`bulkhead.cgroups.devicefilter`; here it is only loaded, attached,
listed and detached.

An attached program stays attached while the cgroup exists, even after every
file descriptor of it is closed; removing the cgroup releases it. With
``BPF_F_ALLOW_MULTI`` several programs may be attached to one cgroup (and
its ancestors'); a device access must then pass all of them.
"""

from __future__ import annotations

import ctypes
import errno
import struct

from bulkhead.linux.libc import LIBC, MACHINE, check

# bpf(2) commands (enum bpf_cmd in linux/bpf.h)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16

BPF_PROG_TYPE_CGROUP_DEVICE = 15  # enum bpf_prog_type
BPF_CGROUP_DEVICE = 6  # enum bpf_attach_type
BPF_F_ALLOW_MULTI = 2  # attach flag

#: Size of the ``union bpf_attr`` we pass (the kernel zero-fills what we omit).
_ATTR_SIZE = 128

#: bpf's system call number per architecture (glibc has no wrapper).
_NUMBERS = {"x86_64": 321, "aarch64": 280}

#: How often a ``BPF_PROG_LOAD`` the verifier gave up with EAGAIN is repeated.
#: Since Linux 4.20 the verifier stops when a signal is pending for the
#: caller (a SIGCHLD in a busy daemon, say) and returns EAGAIN; the signal is
#: delivered on the way out, so the next try normally goes through. libbpf
#: tries 5 times; cilium/ebpf (runc's) without a limit.
PROG_LOAD_ATTEMPTS = 50


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    nr = _NUMBERS.get(MACHINE)
    if nr is None:
        raise OSError(errno.ENOSYS, f"bpf: not known on {MACHINE}")
    args = (ctypes.c_long(nr), ctypes.c_long(cmd), ctypes.byref(attr), ctypes.c_long(len(attr)))
    return check(LIBC.syscall(*args), "bpf")


def _addr(buf: ctypes.Array[ctypes.c_char] | ctypes.Array[ctypes.c_uint32]) -> int:
    return ctypes.addressof(buf)


def prog_load(prog_type: int, insns: bytes, license: str = "Apache-2.0", name: str = "") -> int:
    """Load a program (``insns``: 8-byte ``struct bpf_insn`` each); return its fd.

    A load the verifier broke off for a pending signal (EAGAIN) is repeated
    (up to :data:`PROG_LOAD_ATTEMPTS` times). When the verifier refuses the
    program, the load is repeated with the verifier's log on, and the log's
    last lines become part of the OSError's message.
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())

    def load(log: ctypes.Array[ctypes.c_char] | None) -> int:
        attr = ctypes.create_string_buffer(_ATTR_SIZE)
        struct.pack_into(
            "<IIQQIIQ",
            attr,
            0,
            prog_type,
            len(insns) // 8,
            _addr(code),
            _addr(lic),
            1 if log is not None else 0,
            len(log) if log is not None else 0,
            _addr(log) if log is not None else 0,
        )
        struct.pack_into("16s", attr, 48, name.encode()[:15])  # prog_name
        for _ in range(PROG_LOAD_ATTEMPTS - 1):
            try:
                return _bpf(BPF_PROG_LOAD, attr)
            except OSError as exc:
                if exc.errno != errno.EAGAIN:
                    raise
        return _bpf(BPF_PROG_LOAD, attr)

    try:
        return load(None)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EINVAL):
            raise
        log = ctypes.create_string_buffer(1 << 16)
        try:
            return load(log)  # (loaded after all: take it)
        except OSError:
            pass
        lines = log.value.decode(errors="replace").strip().splitlines()[-3:]
        raise OSError(exc.errno, f"{exc.strerror} (verifier: {' | '.join(lines)})") from None


def prog_attach(target_fd: int, prog_fd: int, attach_type: int, flags: int = 0) -> None:
    """Attach program ``prog_fd`` to the cgroup open as ``target_fd``."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIII", attr, 0, target_fd, prog_fd, attach_type, flags)
    _bpf(BPF_PROG_ATTACH, attr)


def prog_detach(target_fd: int, prog_fd: int, attach_type: int) -> None:
    """Detach program ``prog_fd`` from the cgroup open as ``target_fd``."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<III", attr, 0, target_fd, prog_fd, attach_type)
    _bpf(BPF_PROG_DETACH, attr)


def prog_query(target_fd: int, attach_type: int, room: int = 64) -> list[int]:
    """The ids of the programs attached (directly) to the cgroup open as ``target_fd``."""
    ids = (ctypes.c_uint32 * room)()
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIIIQI", attr, 0, target_fd, attach_type, 0, 0, _addr(ids), room)
    _bpf(BPF_PROG_QUERY, attr)
    (count,) = struct.unpack_from("<I", attr, 24)
    return list(ids[: min(count, room)])


def prog_get_fd_by_id(prog_id: int) -> int:
    """A new fd for the loaded program ``prog_id``."""
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<I", attr, 0, prog_id)
    return _bpf(BPF_PROG_GET_FD_BY_ID, attr)
