"""The sealed exec trampoline that keeps the host's Python binary out of reach.

*CVE-2019-5736.* A container's init is a process of the runtime: until it
calls ``execve`` its ``/proc/self/exe`` is the runtime's own binary. runc's
2019 advisory showed two ways a malicious container could turn that into a
write to the host's binary: open ``/proc/<init pid>/exe`` from inside the
container and write through it once the binary is no longer running, or
give the image an entrypoint that is a script starting with
``#!/proc/self/exe``: while the kernel executes that script on behalf of
the init, ``/proc/self/exe`` still means the *runtime's* binary, so the
runtime runs again, now as the container's program, and can open its own
executable. For bulkhead that binary is the Python interpreter
(``sys.executable``: a small ELF that links libpython).

The first path is closed by keeping the init *non-dumpable* while it is in
the container's namespaces (:func:`bulkhead.linux.process.set_dumpable`):
other processes cannot open ``/proc/<pid>/exe`` of a non-dumpable process
(unless they hold CAP_SYS_PTRACE over it, which is why runc refused its dmz
for such containers). The second path is what this module closes.

*The trampoline* (runc 1.2's "runc-dmz", opencontainers/runc#3987, later
dropped upstream for its limitations in favour of an overlayfs copy): the
init does not exec the user's program itself. It execs a tiny static
program held in a *sealed memfd*, and that program execs the user's
program. While the kernel resolves the user's program (and any ``#!``
interpreter it names) ``/proc/self/exe`` is therefore the memfd, and a
sealed memfd cannot be written (F_SEAL_WRITE: EPERM; while it runs, also
ETXTBSY), grown, shrunk or unsealed. Executing ``/proc/self/exe`` from
there just runs the trampoline again.

There is no compiler on the machines bulkhead runs on, so the trampoline is
written here as machine code: a 176-byte ELF64 header with two program
headers (one read+execute PT_LOAD that maps the whole file, and a
PT_GNU_STACK that keeps the stack non-executable) followed by the code
below, about 300 bytes per architecture. Each instruction is listed with
its bytes; the listing assembles with GNU ``as`` to exactly these bytes
(``tests/integration/test_dmz.py`` checks it when binutils is installed).
x86_64 runs natively here; aarch64 was checked under qemu-user (same
tests), not on hardware. Other machines: :func:`available` is False and the
init execs directly.

*The argument convention.* The trampoline is called as::

    argv = ["bulkhead-dmz", PATH, ARGV0, ARG1, ...]    envp = the program's

and does ``execve(PATH, &argv[2], envp)``: the program sees exactly
``[ARGV0, ARG1, ...]`` and the environment unchanged. PATH is separate from
ARGV0 because the init resolves the executable itself (through the
container's PATH) while ``argv[0]`` stays what the config said (runc-dmz
instead replaced argv[0] with the resolved path). If ``execve`` fails the
trampoline writes ``bulkhead-dmz: exec PATH failed: errno N`` to stderr
and exits 127 for ENOENT, 126 for anything else, as shells do. With fewer
than three arguments it prints its usage and exits 127: this also ends the
``#!/proc/self/exe`` game, because the kernel runs an interpreter with
``[interpreter, script, original argv[1:]...]``, one argument shorter on
every round.

*What changes for the program.* The trampoline is an ordinary file (no
setuid bit, no file capabilities), and so is the user's program from the
kernel's point of view: the capability sets after the second ``execve`` are
the ones a direct ``execve`` would give (bounding, inheritable and ambient
sets carry through an ordinary exec unchanged, and the permitted set is
recomputed from them), which the tests check for a non-root user and a
program with file capabilities (runc#4125). Things that *do* see the extra
exec: an SELinux or AppArmor exec transition (``/proc/self/attr/exec``)
happens when the init execs the trampoline, so the new domain must be
allowed to execute the user's program; a seccomp filter loaded before the
exec must allow ``execveat`` and ``write`` as well as ``execve`` and
``exit_group``; and ``/proc/<pid>/cmdline`` shows the trampoline's
arguments for the few microseconds it lives.

Parent side: :func:`sealed_trampoline` once per runtime process (it returns
a close-on-exec fd), :func:`prepare` for the argument arrays. Child side:
:func:`exec_prepared` or :func:`exec_through`, which end in
``execveat(fd, "", argv, envp, AT_EMPTY_PATH)`` and return only by raising.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Sequence
from typing import NoReturn

from bulkhead.linux.libc import MACHINE
from bulkhead.linux.process import (
    AT_EMPTY_PATH,
    MFD_ALLOW_SEALING,
    MFD_CLOEXEC,
    MFD_EXEC,
    CStringArray,
    c_string_array,
    execveat,
)

#: The trampoline's own argv[0], and the memfd's name (``/memfd:bulkhead-dmz``).
TRAMPOLINE_NAME = "bulkhead-dmz"

#: The seals a trampoline memfd carries: no writes, no size change, no more seal changes.
SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
#: Also sealed when the kernel knows it (Linux >= 6.3): no chmod of the exec bits.
F_SEAL_EXEC = 0x0020

# One instruction (or label, or string) per entry: its bytes in hex, and its
# GNU assembler source. Labels have no bytes.
_Listing = tuple[tuple[str, str], ...]


def _ascii(text: str) -> tuple[str, str]:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return text.encode("ascii").hex(), f'.ascii "{escaped}"'


# x86_64, Intel syntax (GNU as: `.intel_syntax noprefix`). On entry the
# stack holds argc, argv[0..argc-1], NULL, envp[..], NULL. Syscalls take
# rax = number, rdi, rsi, rdx = arguments, and clobber rcx and r11.
_X86_64_CODE: _Listing = (
    ("", "_start:"),
    ("488b0c24", "mov rcx, [rsp]"),  # rcx = argc ; stack: argc, argv[], NULL, envp[]
    ("4883f903", "cmp rcx, 3"),  # we need at least: our own name, PATH, ARGV0
    ("0f8299000000", "jb .Lusage"),
    ("488b7c2410", "mov rdi, [rsp+16]"),  # rdi = argv[1]: the program to run
    ("488d742418", "lea rsi, [rsp+24]"),  # rsi = &argv[2]: its argv, from its argv[0] on
    ("488d54cc10", "lea rdx, [rsp+rcx*8+16]"),  # rdx = &argv[argc+1]: envp, right after argv's NULL
    ("b83b000000", "mov eax, 59"),  # execve(path, argv, envp)
    ("0f05", "syscall"),
    ("f7d8", "neg eax"),  # only reached on failure: rax = -errno
    ("89c3", "mov ebx, eax"),  # ebx = errno (syscall preserves rbx)
    ("488d359d000000", "lea rsi, [rip+.Lmsg_exec]"),  # write(2, "bulkhead-dmz: exec ")
    ("ba13000000", "mov edx, 19"),
    ("e886000000", "call .Lwrite2"),
    ("488b742410", "mov rsi, [rsp+16]"),  # write(2, path, strlen(path))
    ("31d2", "xor edx, edx"),
    ("", ".Lstrlen:"),
    ("803c1600", "cmp byte ptr [rsi+rdx], 0"),
    ("7405", "je .Lstrlen_done"),
    ("48ffc2", "inc rdx"),
    ("ebf5", "jmp .Lstrlen"),
    ("", ".Lstrlen_done:"),
    ("e86f000000", "call .Lwrite2"),
    ("488d3588000000", "lea rsi, [rip+.Lmsg_errno]"),  # write(2, " failed: errno ")
    ("ba0f000000", "mov edx, 15"),
    ("e85e000000", "call .Lwrite2"),
    ("4883ec20", "sub rsp, 32"),  # a 32-byte buffer for the decimal errno and "\n"
    ("488d74241f", "lea rsi, [rsp+31]"),
    ("c6060a", "mov byte ptr [rsi], 10"),  # '\n' in the last byte
    ("89d8", "mov eax, ebx"),
    ("b90a000000", "mov ecx, 10"),
    ("", ".Ldigit:"),  # digits from the right: eax /= 10, edx = remainder
    ("31d2", "xor edx, edx"),
    ("f7f1", "div ecx"),
    ("80c230", "add dl, 48"),  # '0' + remainder
    ("48ffce", "dec rsi"),
    ("8816", "mov [rsi], dl"),
    ("85c0", "test eax, eax"),
    ("75f0", "jnz .Ldigit"),
    ("488d542420", "lea rdx, [rsp+32]"),  # length = end of buffer - first digit
    ("4829f2", "sub rdx, rsi"),
    ("e82e000000", "call .Lwrite2"),
    ("bf7e000000", "mov edi, 126"),  # exit status: 126 "cannot execute" ...
    ("83fb02", "cmp ebx, 2"),
    ("7505", "jne .Lexit"),
    ("bf7f000000", "mov edi, 127"),  # ... or 127 for ENOENT, as shells do
    ("", ".Lexit:"),
    ("b8e7000000", "mov eax, 231"),  # exit_group(edi)
    ("0f05", "syscall"),
    ("", ".Lusage:"),
    ("488d3540000000", "lea rsi, [rip+.Lmsg_usage]"),  # argc < 3: print the usage, exit 127
    ("ba36000000", "mov edx, 54"),
    ("e807000000", "call .Lwrite2"),
    ("bf7f000000", "mov edi, 127"),
    ("ebe1", "jmp .Lexit"),
    ("", ".Lwrite2:"),  # write(2, rsi, rdx); clobbers rax, rdi, rcx, r11
    ("bf02000000", "mov edi, 2"),
    ("b801000000", "mov eax, 1"),
    ("0f05", "syscall"),
    ("c3", "ret"),
    ("", ".Lmsg_exec:"),
    _ascii("bulkhead-dmz: exec "),
    ("", ".Lmsg_errno:"),
    _ascii(" failed: errno "),
    ("", ".Lmsg_usage:"),
    _ascii("bulkhead-dmz: usage: bulkhead-dmz PATH ARGV0 [ARG...]\n"),
)

# aarch64 (GNU as). On entry sp points at argc, as above. Syscalls take
# x8 = number, x0..x5 = arguments, return in x0 and preserve the rest; sp
# must stay 16-byte aligned whenever it is used as a base register.
_AARCH64_CODE: _Listing = (
    ("", "_start:"),
    ("e90340f9", "ldr x9, [sp]"),  # x9 = argc ; stack: argc, argv[], NULL, envp[]
    ("3f0d00f1", "cmp x9, #3"),  # we need at least: our own name, PATH, ARGV0
    ("63050054", "b.lo .Lusage"),
    ("e00b40f9", "ldr x0, [sp, #16]"),  # x0 = argv[1]: the program to run
    ("e1630091", "add x1, sp, #24"),  # x1 = &argv[2]: its argv, from its argv[0] on
    ("e26f298b", "add x2, sp, x9, lsl #3"),  # x2 = sp + 8*argc ...
    ("42400091", "add x2, x2, #16"),  # ... + 16 = &argv[argc+1]: envp, right after argv's NULL
    ("a81b80d2", "mov x8, #221"),  # execve(path, argv, envp)
    ("010000d4", "svc #0"),
    ("f303004b", "neg w19, w0"),  # on failure only: w19 = errno = -x0
    ("81050010", "adr x1, .Lmsg_exec"),  # write(2, "bulkhead-dmz: exec ")
    ("620280d2", "mov x2, #19"),
    ("26000094", "bl .Lwrite2"),
    ("e10b40f9", "ldr x1, [sp, #16]"),  # write(2, path, strlen(path))
    ("020080d2", "mov x2, #0"),
    ("", ".Lstrlen:"),
    ("23686238", "ldrb w3, [x1, x2]"),
    ("63000034", "cbz w3, .Lstrlen_done"),
    ("42040091", "add x2, x2, #1"),
    ("fdffff17", "b .Lstrlen"),
    ("", ".Lstrlen_done:"),
    ("1f000094", "bl .Lwrite2"),
    ("c1040070", "adr x1, .Lmsg_errno"),  # write(2, " failed: errno ")
    ("e20180d2", "mov x2, #15"),
    ("1c000094", "bl .Lwrite2"),
    ("ff8300d1", "sub sp, sp, #32"),  # a 32-byte buffer for the decimal errno and "\n"
    ("e17f0091", "add x1, sp, #31"),
    ("43018052", "mov w3, #10"),  # '\n' in the last byte
    ("23000039", "strb w3, [x1]"),
    ("e403132a", "mov w4, w19"),
    ("45018052", "mov w5, #10"),
    ("", ".Ldigit:"),  # digits from the right: w6 = w4 / 10, w7 = w4 % 10
    ("8608c51a", "udiv w6, w4, w5"),
    ("c790051b", "msub w7, w6, w5, w4"),
    ("e7c00011", "add w7, w7, #48"),  # '0' + remainder
    ("210400d1", "sub x1, x1, #1"),
    ("27000039", "strb w7, [x1]"),
    ("e403062a", "mov w4, w6"),
    ("44ffff35", "cbnz w4, .Ldigit"),
    ("e2830091", "add x2, sp, #32"),  # length = end of buffer - first digit
    ("420001cb", "sub x2, x2, x1"),
    ("0c000094", "bl .Lwrite2"),
    ("c00f80d2", "mov x0, #126"),  # exit status: 126 "cannot execute" ...
    ("7f0a0071", "cmp w19, #2"),
    ("41000054", "b.ne .Lexit"),
    ("e00f80d2", "mov x0, #127"),  # ... or 127 for ENOENT, as shells do
    ("", ".Lexit:"),
    ("c80b80d2", "mov x8, #94"),  # exit_group(x0)
    ("010000d4", "svc #0"),
    ("", ".Lusage:"),
    ("21020050", "adr x1, .Lmsg_usage"),  # argc < 3: print the usage, exit 127
    ("c20680d2", "mov x2, #54"),
    ("03000094", "bl .Lwrite2"),
    ("e00f80d2", "mov x0, #127"),
    ("faffff17", "b .Lexit"),
    ("", ".Lwrite2:"),  # write(2, x1, x2); clobbers x0, x8
    ("400080d2", "mov x0, #2"),
    ("080880d2", "mov x8, #64"),
    ("010000d4", "svc #0"),
    ("c0035fd6", "ret"),
    ("", ".Lmsg_exec:"),
    _ascii("bulkhead-dmz: exec "),
    ("", ".Lmsg_errno:"),
    _ascii(" failed: errno "),
    ("", ".Lmsg_usage:"),
    _ascii("bulkhead-dmz: usage: bulkhead-dmz PATH ARGV0 [ARG...]\n"),
)

#: machine (platform.machine()) -> (ELF e_machine, code listing, page alignment)
_ARCHES: dict[str, tuple[int, _Listing, int]] = {
    "x86_64": (62, _X86_64_CODE, 0x1000),  # EM_X86_64
    "aarch64": (183, _AARCH64_CODE, 0x10000),  # EM_AARCH64; 64 KiB covers every page size
}

_BASE = 0x400000  # where the file is mapped; the entry point follows the headers
_EHDR_SIZE = 64
_PHDR_SIZE = 56
_PT_LOAD = 1
_PT_GNU_STACK = 0x6474E551
_PF_X, _PF_W, _PF_R = 1, 2, 4


def supported_machines() -> list[str]:
    """The machines (``platform.machine()`` names) there is a trampoline for."""
    return list(_ARCHES)


def assembly(machine: str = MACHINE) -> str:
    """The trampoline's source for GNU ``as`` (used to check the bytes against it)."""
    lines = [text for _, text in _ARCHES[machine][1]]
    if machine == "x86_64":
        lines.insert(0, ".intel_syntax noprefix")
    return "\n".join(lines) + "\n"


def code(machine: str = MACHINE) -> bytes:
    """The trampoline's machine code (what follows the ELF headers)."""
    return bytes.fromhex("".join(hexed for hexed, _ in _ARCHES[machine][1]))


def elf_image(machine: str = MACHINE) -> bytes:
    """The complete static ELF64 executable of the trampoline for ``machine``.

    Layout: ELF header (64 bytes), two program headers (56 bytes each),
    then the code, where the entry point is. The PT_LOAD header maps the
    whole file read+execute at 0x400000; PT_GNU_STACK asks for a stack
    that is not executable. No sections, no interpreter, no libc.
    """
    e_machine, _, align = _ARCHES[machine]
    body = code(machine)
    headers = _EHDR_SIZE + 2 * _PHDR_SIZE
    size = headers + len(body)
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)  # 64-bit, little-endian, v1, SysV
    ehdr = ident + struct.pack(
        "<HHIQQQIHHHHHH",
        2,  # e_type: ET_EXEC
        e_machine,
        1,  # e_version
        _BASE + headers,  # e_entry
        _EHDR_SIZE,  # e_phoff
        0,  # e_shoff: no section headers
        0,  # e_flags
        _EHDR_SIZE,  # e_ehsize
        _PHDR_SIZE,  # e_phentsize
        2,  # e_phnum
        0,  # e_shentsize
        0,  # e_shnum
        0,  # e_shstrndx
    )
    # p_type, p_flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz, p_align
    load = struct.pack("<IIQQQQQQ", _PT_LOAD, _PF_R | _PF_X, 0, _BASE, _BASE, size, size, align)
    stack = struct.pack("<IIQQQQQQ", _PT_GNU_STACK, _PF_R | _PF_W, 0, 0, 0, 0, 0, 16)
    return ehdr + load + stack + body


# --------------------------------------------------------------------------
# parent side

_available: bool | None = None


def available() -> bool:
    """Whether the trampoline can be used here: a known machine, and a kernel
    that creates, seals and executes memfds (probed once, then cached)."""
    global _available
    if _available is None:
        if MACHINE not in _ARCHES:
            _available = False
        else:
            try:
                os.close(sealed_trampoline())
                _available = True
            except OSError:
                _available = False
    return _available


def trampoline_if_available() -> int | None:
    """:func:`sealed_trampoline`, or None where it cannot be used (:func:`available`).

    The first call probes with the trampoline it returns, instead of making
    one to probe and another to use.
    """
    global _available
    if _available is False or MACHINE not in _ARCHES:
        return None
    try:
        fd = sealed_trampoline()
    except OSError:
        if _available is None:
            _available = False
            return None
        raise
    _available = True
    return fd


def _memfd() -> int:
    # MFD_EXEC says "this memfd is meant to be executed": without it, Linux >=
    # 6.3 with vm.memfd_noexec=1 would make it non-executable. Older kernels
    # reject the unknown flag with EINVAL.
    try:
        return os.memfd_create(TRAMPOLINE_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC)
    except OSError as exc:
        if exc.errno != 22:  # EINVAL
            raise
        return os.memfd_create(TRAMPOLINE_NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING)


def sealed_trampoline() -> int:
    """Create the trampoline as a sealed, close-on-exec memfd and return its fd.

    Parent side, once per runtime process (a few microseconds; the caller
    owns and closes the fd). The memfd holds :func:`elf_image`, and carries
    :data:`SEALS` (plus F_SEAL_EXEC where the kernel has it), so nobody,
    root included, can change a byte of it.
    """
    image = elf_image()
    fd = _memfd()
    try:
        view = memoryview(image)
        while view:
            view = view[os.write(fd, view) :]
        try:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS | F_SEAL_EXEC)
        except OSError as exc:
            if exc.errno != 22:  # EINVAL: a kernel before F_SEAL_EXEC
                raise
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    except BaseException:
        os.close(fd)
        raise
    return fd


class PreparedExec:
    """The trampoline's argv and envp as C arrays, built before fork.

    ``argv`` is ``["bulkhead-dmz", <PATH>, ARGV0, ...]`` with the PATH slot
    left empty: the child fills it in once it has resolved the executable.
    """

    __slots__ = ("argv", "envp")

    def __init__(self, argv: Sequence[str | bytes], envp: Sequence[str | bytes]) -> None:
        if not argv:
            raise ValueError("the program's argv must not be empty")
        self.argv: CStringArray = c_string_array(argv, extra=2)
        self.argv[0] = TRAMPOLINE_NAME.encode()
        self.envp: CStringArray = c_string_array(envp)


def prepare(argv: Sequence[str | bytes], envp: Sequence[str | bytes]) -> PreparedExec:
    """Build the trampoline's argument arrays for the program's ``argv`` and ``envp``."""
    return PreparedExec(argv, envp)


def trampoline_argv(path: str, argv: Sequence[str]) -> list[str]:
    """The trampoline's argv for running ``path`` with ``argv`` (the convention, as data)."""
    return [TRAMPOLINE_NAME, path, *argv]


# --------------------------------------------------------------------------
# child side


def exec_prepared(fd: int, path: str | bytes, prepared: PreparedExec) -> NoReturn:
    """Run ``path`` through the trampoline in memfd ``fd``. Returns only by raising OSError.

    An error here is the trampoline's own exec failing; a failure to exec
    ``path`` happens in the trampoline and shows as exit status 127/126.
    """
    prepared.argv[1] = path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")
    execveat(fd, b"", prepared.argv, prepared.envp, AT_EMPTY_PATH)


def exec_through(
    fd: int, path: str | bytes, argv: Sequence[str | bytes], envp: Sequence[str | bytes]
) -> NoReturn:
    """Like ``os.execve(path, argv, envp)``, but by way of the trampoline in memfd ``fd``.

    Builds the arrays on the spot; prefer :func:`prepare` before fork and
    :func:`exec_prepared` when argv and envp are known in the parent.
    """
    exec_prepared(fd, path, PreparedExec(argv, envp))
