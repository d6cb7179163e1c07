"""Loading compiled seccomp filters into forked children and watching the kernel enforce them.

Each test compiles in the pytest process (as the runtime's parent does),
forks, and in the child sets no_new_privs, loads the filter with
:func:`bulkhead.linux.seccomp.load_filter`, makes system calls and writes
what it saw to a pipe. The pytest process itself never loads a filter.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import platform
import resource
import select
import signal
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import bulkhead.oci
from bulkhead.linux import seccomp
from bulkhead.linux.libc import LIBC
from bulkhead.linux.seccomp import CompiledFilter, compile_filter

pytestmark = pytest.mark.skipif(not seccomp.available(), reason="libseccomp is not installed")

# Docker's default profile as the package ships it (a copy of the project's reference data).
PROFILE = Path(bulkhead.oci.__file__).parent / "data" / "docker-default-seccomp.json"

PR_SET_NO_NEW_PRIVS = 38


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
    flags: list[str] | None = None
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[Rule] | None = field(default_factory=list)


# --------------------------------------------------------------------------
# helpers


def nr(name: str) -> int:
    number = int(seccomp._libseccomp().seccomp_syscall_resolve_name(name.encode()))
    assert number >= 0, name
    return number


def raw(number: int, *args: int) -> tuple[int, int]:
    """Make system call ``number``; return (result, errno)."""
    ctypes.set_errno(0)
    result = LIBC.syscall(ctypes.c_long(number), *(ctypes.c_ulong(a % 2**64) for a in args))
    return int(result), ctypes.get_errno()


def set_no_new_privs() -> None:
    z = ctypes.c_ulong(0)
    assert LIBC.prctl(PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), z, z, z) == 0


def in_child(
    compiled: CompiledFilter,
    body: Callable[[int | None], str],
    *,
    no_new_privs: bool = True,
    before: Callable[[], None] | None = None,
) -> tuple[int, str]:
    """Fork; in the child load ``compiled`` and run ``body``; return (wait status, its output)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        out = "nothing"
        try:
            os.close(r)
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGSYS would dump core
            if before is not None:
                before()
            if no_new_privs:
                set_no_new_privs()
            listener = seccomp.load_filter(compiled)
            out = body(listener)
            code = 0
        except BaseException as exc:
            out = f"{type(exc).__name__}: {exc} [errno={getattr(exc, 'errno', None)}]"
        finally:
            try:
                os.write(w, out.encode())
            finally:
                os._exit(code)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 65536):
        chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    return status, b"".join(chunks).decode()


def ok(status_out: tuple[int, str]) -> str:
    status, out = status_out
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, out
    return out


# --------------------------------------------------------------------------
# ERRNO


def test_mkdir_gets_eperm(tmp_path: Path) -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO")]))
    target = tmp_path / "dir"

    def body(_: int | None) -> str:
        try:
            os.mkdir(target)
        except OSError as exc:
            return str(exc.errno)
        return "created"

    assert ok(in_child(compiled, body)) == str(errno.EPERM)
    assert not target.exists()


def test_errno_ret(tmp_path: Path) -> None:
    rule = Rule(["mkdir", "mkdirat"], "SCMP_ACT_ERRNO", errno_ret=errno.EROFS)
    compiled = compile_filter(Seccomp(syscalls=[rule]))

    def body(_: int | None) -> str:
        try:
            os.mkdir(tmp_path / "dir")
        except OSError as exc:
            return str(exc.errno)
        return "created"

    assert ok(in_child(compiled, body)) == str(errno.EROFS)


def test_load_returns_none_without_notify() -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["getppid"], "SCMP_ACT_ERRNO")]))
    assert ok(in_child(compiled, lambda listener: repr(listener))) == "None"


# --------------------------------------------------------------------------
# argument conditions, each operator, through the real kernel

OP_CASES = [
    ("SCMP_CMP_NE", 5, None, {5: False, 0: True}),
    ("SCMP_CMP_LT", 5, None, {4: True, 5: False}),
    ("SCMP_CMP_LE", 5, None, {5: True, 6: False}),
    ("SCMP_CMP_EQ", 5, None, {5: True, 6: False}),
    ("SCMP_CMP_GE", 5, None, {5: True, 4: False}),
    ("SCMP_CMP_GT", 5, None, {6: True, 5: False}),
    ("SCMP_CMP_MASKED_EQ", 0xF0, 0x10, {0x1F: True, 0x2F: False}),
]


@pytest.mark.parametrize(("op", "value", "value_two", "cases"), OP_CASES)
def test_getpriority_with_each_operator(
    op: str, value: int, value_two: int | None, cases: dict[int, bool]
) -> None:
    # getpriority(PRIO_PROCESS, who): EXDEV can only come from the filter
    rule = Rule(["getpriority"], "SCMP_ACT_ERRNO", errno.EXDEV, [Arg(1, value, op, value_two)])
    compiled = compile_filter(Seccomp(syscalls=[rule]))
    whos = list(cases)

    def body(_: int | None) -> str:
        return ",".join(str(raw(nr("getpriority"), 0, who)[1] == errno.EXDEV) for who in whos)

    got = ok(in_child(compiled, body)).split(",")
    assert got == [str(cases[who]) for who in whos]


def test_personality_argument() -> None:
    rule = Rule(["personality"], "SCMP_ACT_ERRNO", errno.EXDEV, [Arg(0, 8, "SCMP_CMP_EQ")])
    compiled = compile_filter(Seccomp(syscalls=[rule]))

    def body(_: int | None) -> str:
        query = raw(nr("personality"), 0xFFFFFFFF)
        refused = raw(nr("personality"), 8)
        return f"{query[0] >= 0} {refused[1]}"

    assert ok(in_child(compiled, body)) == f"True {errno.EXDEV}"


def test_same_argument_conditions_are_ored() -> None:
    rule = Rule(
        ["getpriority"],
        "SCMP_ACT_ERRNO",
        errno.EXDEV,
        [Arg(1, 5, "SCMP_CMP_EQ"), Arg(1, 7, "SCMP_CMP_EQ")],
    )
    compiled = compile_filter(Seccomp(syscalls=[rule]))

    def body(_: int | None) -> str:
        return ",".join(str(raw(nr("getpriority"), 0, who)[1]) for who in (5, 6, 7))

    five, six, seven = ok(in_child(compiled, body)).split(",")
    assert five == seven == str(errno.EXDEV)
    assert six != str(errno.EXDEV)


# --------------------------------------------------------------------------
# the other actions


@pytest.mark.parametrize(
    "action", ["SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"]
)
def test_kill_ends_the_child_with_sigsys(action: str) -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["getppid"], action)]))
    status, out = in_child(compiled, lambda _: str(raw(nr("getppid"))))
    assert os.WIFSIGNALED(status), out
    assert os.WTERMSIG(status) == signal.SIGSYS


def test_kill_process_as_default_action() -> None:
    # Python needs many syscalls; allow those and kill on anything else.
    compiled = compile_filter(
        Seccomp(
            default_action="SCMP_ACT_KILL_PROCESS",
            syscalls=[Rule(["getppid"], "SCMP_ACT_KILL_PROCESS")],
        )
    )
    status, _ = in_child(compiled, lambda _: "unreachable")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGSYS


def test_trap_sends_a_catchable_sigsys() -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["getppid"], "SCMP_ACT_TRAP")]))
    caught: list[int] = []

    def install() -> None:
        signal.signal(signal.SIGSYS, lambda signum, frame: caught.append(signum))

    def body(_: int | None) -> str:
        raw(nr("getppid"))
        for _ in range(3):  # let the Python-level handler run
            pass
        return str(caught)

    assert ok(in_child(compiled, body, before=install)) == f"[{int(signal.SIGSYS)}]"


def test_log_lets_the_call_through() -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["getppid"], "SCMP_ACT_LOG")]))
    parent = os.getpid()
    assert ok(in_child(compiled, lambda _: str(raw(nr("getppid"))))) == str((parent, 0))


def test_trace_without_a_tracer_is_enosys() -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["getppid"], "SCMP_ACT_TRACE", errno_ret=42)]))
    assert ok(in_child(compiled, lambda _: str(raw(nr("getppid"))))) == str((-1, errno.ENOSYS))


def test_flags_are_accepted_by_the_kernel() -> None:
    flags = seccomp.supported_flags()
    compiled = compile_filter(Seccomp(flags=flags, syscalls=[Rule(["getppid"], "SCMP_ACT_ERRNO")]))
    assert ok(in_child(compiled, lambda _: str(raw(nr("getppid"))[1]))) == str(errno.EPERM)


def test_without_no_new_privs_or_cap_sys_admin_loading_is_refused() -> None:
    compiled = compile_filter(Seccomp(syscalls=[Rule(["getppid"], "SCMP_ACT_ERRNO")]))

    def drop_privileges() -> None:
        if os.geteuid() == 0:
            os.setresuid(65534, 65534, 65534)  # all capabilities go with uid 0

    status, out = in_child(compiled, lambda _: "loaded", no_new_privs=False, before=drop_privileges)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 1
    assert "PermissionError" in out and f"errno={errno.EACCES}" in out


# --------------------------------------------------------------------------
# NOTIFY: a listener fd and an agent answering for the kernel

SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100  # _IOWR('!', 0, struct seccomp_notif)
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101  # _IOWR('!', 1, struct seccomp_notif_resp)
SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
NOTIF = struct.Struct("=QII" + "IIQ6Q")  # id, pid, flags, seccomp_data
NOTIF_RESP = struct.Struct("=QqiI")  # id, val, error, flags


def _agent_answer(listener: int, *, error: int = 0, cont: bool = False) -> tuple[int, int]:
    """Receive one notification and answer it; return (pid, syscall nr) it was about."""
    ready, _, _ = select.select([listener], [], [], 10)
    assert ready, "no notification within 10 s"
    buf = bytearray(NOTIF.size)
    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_RECV, buf, True)
    notif_id, pid, _flags, number, *_ = NOTIF.unpack(buf)
    flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE if cont else 0
    resp = bytearray(NOTIF_RESP.pack(notif_id, 0, error, flags))
    fcntl.ioctl(listener, SECCOMP_IOCTL_NOTIF_SEND, resp, True)
    return pid, number


@pytest.mark.parametrize("wait_killable", [False, True])
def test_notify_returns_a_listener_the_agent_can_answer_on(wait_killable: bool) -> None:
    flags = []
    if wait_killable:
        if "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" not in seccomp.supported_flags():
            pytest.skip("kernel < 5.19")
        flags = ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    compiled = compile_filter(
        Seccomp(
            flags=flags,
            listener_path="/run/unused.sock",
            syscalls=[Rule(["getppid"], "SCMP_ACT_NOTIFY")],
        )
    )
    ours, theirs = socket.socketpair()

    def body(listener: int | None) -> str:
        assert listener is not None and listener >= 0
        target = os.readlink(f"/proc/self/fd/{listener}")
        socket.send_fds(theirs, [b"listener"], [listener])
        refused = raw(nr("getppid"))  # the agent answers EXDEV
        passed = raw(nr("getppid"))  # the agent lets it run
        return f"{target}|{refused}|{passed}"

    pid = os.getpid()
    status_out: list[tuple[int, str]] = []
    import threading

    # in_child blocks reading the child's pipe: run it beside the agent
    t = threading.Thread(target=lambda: status_out.append(in_child(compiled, body)))
    t.start()
    try:
        _, fds, _, _ = socket.recv_fds(ours, 100, 1)
        (listener,) = fds
        child, number = _agent_answer(listener, error=-errno.EXDEV)
        assert number == nr("getppid")
        assert child != pid
        _agent_answer(listener, cont=True)
    finally:
        t.join(20)
        ours.close()
        theirs.close()
    target, refused, passed = ok(status_out[0]).split("|")
    assert target == "anon_inode:seccomp notify"
    assert refused == str((-1, errno.EXDEV))
    assert passed == str((pid, 0))
    os.close(listener)


# --------------------------------------------------------------------------
# Docker's default profile, loaded


def test_docker_default_profile_in_a_child() -> None:
    runtime_spec = pytest.importorskip("bulkhead.oci.runtime_spec")
    import msgspec

    from bulkhead.oci.seccomp_profile import docker_default_profile

    caps = {"CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_KILL", "CAP_NET_BIND_SERVICE"}
    section = docker_default_profile(caps, platform.machine(), path=PROFILE)
    compiled = compile_filter(msgspec.convert(section, runtime_spec.LinuxSeccomp))

    def body(_: int | None) -> str:
        results = {
            "getppid": raw(nr("getppid"))[1],
            "mount": raw(nr("mount"), 0, 0, 0, 0, 0)[1],
            "unshare": raw(nr("unshare"), 0x00020000)[1],
            "clone3": raw(nr("clone3"), 0, 0)[1],
            "future": raw(1000)[1],
            "personality(1)": raw(nr("personality"), 1)[1],
        }
        return repr(results)

    got = ok(in_child(compiled, body))
    assert got == repr(
        {
            "getppid": 0,
            "mount": errno.EPERM,
            "unshare": errno.EPERM,
            "clone3": errno.ENOSYS,
            "future": errno.ENOSYS,
            "personality(1)": errno.EPERM,
        }
    )
