"""linux.process and linux.capabilities against the real kernel.

Everything that changes process state runs in a forked child (``in_child``),
which sends its findings back as JSON through a pipe and ends with
``os._exit``: the pytest process itself is never changed.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest

from bulkhead.errors import SpecError
from bulkhead.linux import capabilities as caps
from bulkhead.linux import process

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)

NOBODY = 65534


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def in_child(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a forked child; return its JSON-able result or raise what it raised.

    An exception in the child comes back as ``ChildError`` carrying the
    exception's type name, message and errno.
    """
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(r)
        try:
            try:
                out: dict[str, Any] = {"ok": fn()}
            except BaseException as exc:
                out = {
                    "error": type(exc).__name__,
                    "message": str(exc),
                    "errno": getattr(exc, "errno", None),
                }
            data = json.dumps(out).encode()
            while data:
                data = data[os.write(w, data) :]
        finally:
            os._exit(0)
    os.close(w)
    raw = _read_all(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    out = json.loads(raw)
    if "error" in out:
        raise ChildError(out["error"], out["message"], out["errno"])
    return out["ok"]


class ChildError(Exception):
    def __init__(self, kind: str, message: str, errno_: int | None) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.errno = errno_


def run_exec(fn: Callable[[], None]) -> tuple[int, bytes, bytes]:
    """Fork; the child points stdout/stderr at pipes and calls ``fn`` (which execs)."""
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (out_r, out_w, err_r, err_w):
                os.close(fd)
            fn()
        except BaseException as exc:
            os.write(2, f"child: {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(99)
    os.close(out_w)
    os.close(err_w)
    out = _read_all(out_r)
    err = _read_all(err_r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out, err


# --------------------------------------------------------------------------
# prctl attributes


def test_no_new_privs() -> None:
    def body() -> list[object]:
        before = process.get_no_new_privs()
        process.set_no_new_privs()
        with open("/proc/self/status") as f:
            line = next(x for x in f if x.startswith("NoNewPrivs:"))
        return [before, process.get_no_new_privs(), line.split()[1]]

    assert in_child(body) == [False, True, "1"]


def test_dumpable() -> None:
    def body() -> list[int]:
        seen = [process.get_dumpable()]
        process.set_dumpable(False)
        seen.append(process.get_dumpable())
        process.set_dumpable(True)
        seen.append(process.get_dumpable())
        return seen

    assert in_child(body) == [1, 0, 1]


def test_non_dumpable_hides_proc_exe_from_other_users() -> None:
    """What the runtime relies on against CVE-2019-5736's /proc/<pid>/exe path."""

    def body() -> list[str]:
        # Everything below runs as one unprivileged uid: the kernel then lets a
        # process look at another one's /proc/<pid>/exe only if it is dumpable.
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        results = []
        for dumpable in (True, False):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                process.set_dumpable(dumpable)
                os.close(w)
                os.read(r, 1)
                os._exit(0)
            os.close(r)
            time.sleep(0.05)
            try:
                os.readlink(f"/proc/{pid}/exe")
                results.append("readable")
            except PermissionError:
                results.append("denied")
            os.close(w)
            os.waitpid(pid, 0)
        return results

    assert in_child(body) == ["readable", "denied"]


def test_child_subreaper_adopts_orphans() -> None:
    def body() -> list[object]:
        process.set_child_subreaper(True)
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:
            grandchild = os.fork()
            if grandchild == 0:
                time.sleep(0.1)  # outlive the middle process
                os.write(w, b"%d" % os.getppid())
                os._exit(0)
            os._exit(0)
        os.close(w)
        os.waitpid(middle, 0)
        new_parent = int(os.read(r, 32))
        os.wait()  # reap the adopted grandchild
        return [process.get_child_subreaper(), new_parent == os.getpid()]

    assert in_child(body) == [True, True]


def test_pdeathsig() -> None:
    def body() -> list[int]:
        before = process.get_pdeathsig()
        process.set_pdeathsig(signal.SIGKILL)
        return [before, process.get_pdeathsig()]

    assert in_child(body) == [0, signal.SIGKILL]


def test_set_name_truncates_to_15_bytes() -> None:
    def body() -> list[str]:
        process.set_name("bulkhead-init-with-a-long-name")
        with open("/proc/self/comm") as f:
            comm = f.read().strip()
        return [process.get_name(), comm]

    assert in_child(body) == ["bulkhead-init-w"] * 2


def test_securebits() -> None:
    def body() -> list[int]:
        before = process.get_securebits()
        process.set_securebits(process.SECBIT_NO_CAP_AMBIENT_RAISE)
        return [before, process.get_securebits()]

    assert in_child(body) == [0, process.SECBIT_NO_CAP_AMBIENT_RAISE]


# --------------------------------------------------------------------------
# keyrings


def _session_keyring() -> tuple[int, str]:
    serial = process.keyctl(process.KEYCTL_GET_KEYRING_ID, process.KEY_SPEC_SESSION_KEYRING, 0)
    return serial, process.describe_key(serial)


def test_join_anonymous_session_keyring() -> None:
    def body() -> list[object]:
        before, _ = _session_keyring()
        serial = process.join_session_keyring(None)
        after, description = _session_keyring()
        return [before != serial, after == serial, description]

    differs, current, description = in_child(body)
    assert differs and current
    kind, uid, gid, perm, name = description.split(";")
    assert (kind, uid, gid, name) == ("keyring", "0", "0", "_ses")
    # The possessor keeps everything; the key's user gains search, as runc does.
    assert int(perm, 16) & 0x3F000000 == 0x3F000000
    assert int(perm, 16) & process.KEY_USR_SEARCH


def test_join_named_keyring_twice_finds_it() -> None:
    def body() -> list[object]:
        a = process.join_session_keyring("_ses.bulkhead-test")
        b = process.join_session_keyring("_ses.bulkhead-test")
        return [a == b, _session_keyring()[1].split(";")[4]]

    assert in_child(body) == [True, "_ses.bulkhead-test"]


def test_join_keyring_in_user_namespace_mode_grants_other_search() -> None:
    def body() -> int:
        process.join_session_keyring("_ses.bulkhead-userns", user_namespace=True)
        return process.keyring_permissions(process.KEY_SPEC_SESSION_KEYRING)

    perm = in_child(body)
    assert perm & process.KEY_OTH_SEARCH
    assert not perm & process.KEY_USR_SEARCH


# --------------------------------------------------------------------------
# personality, I/O priority, scheduler, OOM score


def test_personality_linux32() -> None:
    def body() -> list[object]:
        process.set_personality("LINUX32")
        return [process.get_personality(), os.uname().machine]

    persona, machine = in_child(body)
    assert persona == process.PER_LINUX32
    if os.uname().machine == "x86_64":
        assert machine == "i686"


def test_personality_number() -> None:
    assert process.personality_number("LINUX") == 0
    assert process.personality_number("LINUX32") == 8
    with pytest.raises(SpecError, match="LINUX64"):
        process.personality_number("LINUX64")


@pytest.mark.parametrize(
    ("name", "level", "expected"),
    [
        ("IOPRIO_CLASS_BE", 3, [2, 3]),
        ("IOPRIO_CLASS_IDLE", 7, [3, 7]),
        ("IOPRIO_CLASS_RT", 0, [1, 0]),
    ],
)
def test_ioprio(name: str, level: int, expected: list[int]) -> None:
    def body() -> list[int]:
        process.set_ioprio(name, level)
        return list(process.get_ioprio())

    assert in_child(body) == expected


def test_ioprio_value() -> None:
    assert process.ioprio_value("IOPRIO_CLASS_BE", 4) == (2 << 13) | 4
    with pytest.raises(SpecError, match="IOPRIO_CLASS_FAST"):
        process.ioprio_value("IOPRIO_CLASS_FAST", 0)
    with pytest.raises(SpecError, match=r"0\.\.7"):
        process.ioprio_value("IOPRIO_CLASS_BE", 8)


def test_scheduler_batch_with_nice() -> None:
    def body() -> list[int]:
        process.set_scheduler("SCHED_BATCH", nice=5)
        attr = process.get_sched_attr()
        return [os.sched_getscheduler(0), os.getpriority(os.PRIO_PROCESS, 0), attr.sched_nice]

    assert in_child(body) == [os.SCHED_BATCH, 5, 5]


def test_scheduler_idle_prepared_before_fork() -> None:
    attr = process.sched_attr("SCHED_IDLE", flags=["SCHED_FLAG_RESET_ON_FORK"])

    def body() -> list[int]:
        process.set_sched_attr(attr)
        got = process.get_sched_attr()
        return [got.sched_policy, got.sched_flags & 1]

    assert in_child(body) == [process.SCHED_IDLE, 1]


def test_scheduler_fifo() -> None:
    def body() -> list[int]:
        process.set_scheduler("SCHED_FIFO", priority=10)
        return [os.sched_getscheduler(0), os.sched_getparam(0).sched_priority]

    try:
        assert in_child(body) == [os.SCHED_FIFO, 10]
    except ChildError as exc:
        # cgroup v1 with RT group scheduling gives a non-root cpu cgroup no RT time.
        if exc.errno != errno.EPERM:
            raise
        pytest.skip("this cgroup allows no real-time scheduling")


def test_scheduler_names_are_checked() -> None:
    with pytest.raises(SpecError, match="SCHED_FAST"):
        process.sched_attr("SCHED_FAST")
    with pytest.raises(SpecError) as info:
        process.sched_attr("SCHED_OTHER", flags=["SCHED_FLAG_RECLAIM", "SCHED_FLAG_NOPE"])
    assert info.value.where == "$.process.scheduler.flags[1]"


def test_oom_score_adj() -> None:
    def body() -> list[object]:
        process.set_oom_score_adj(500)
        value = process.get_oom_score_adj()
        try:
            process.set_oom_score_adj(-500)  # lowering needs CAP_SYS_RESOURCE
            lowered = "allowed"
        except PermissionError:
            lowered = "denied"
        return [value, lowered]

    value, lowered = in_child(body)
    assert value == 500
    if caps.CAPABILITIES["CAP_SYS_RESOURCE"] not in _effective_numbers():
        assert lowered == "denied"


def _effective_numbers() -> set[int]:
    eff = caps.current().effective
    return {n for n in range(64) if eff >> n & 1}


# --------------------------------------------------------------------------
# file descriptors and exec


def test_close_range_cloexec() -> None:
    def body() -> list[bool]:
        fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(3)]
        for fd in fds:
            os.set_inheritable(fd, True)
        process.close_range(fds[0], flags=process.CLOSE_RANGE_CLOEXEC)
        return [os.get_inheritable(fd) for fd in fds] + [os.get_inheritable(2)]

    assert in_child(body) == [False, False, False, True]


def test_close_range_closes() -> None:
    def body() -> list[bool]:
        fds = [100, 101, 102]
        null = os.open("/dev/null", os.O_RDONLY)
        for fd in fds:
            os.dup2(null, fd)
        process.close_range(fds[0], fds[1])
        alive = []
        for fd in fds:
            try:
                os.fstat(fd)
                alive.append(True)
            except OSError:
                alive.append(False)
        return alive

    assert in_child(body) == [False, False, True]


def test_memfd_create() -> None:
    fd = process.memfd_create("bulkhead-test")
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == "/memfd:bulkhead-test (deleted)"
        assert not os.get_inheritable(fd)
    finally:
        os.close(fd)


def test_execveat_relative_to_a_directory() -> None:
    argv, envp = process.prepare_exec_args(["sh", "-c", 'echo "$0:$GREETING"'], ["GREETING=hi"])
    dirfd = os.open("/bin", os.O_RDONLY | os.O_DIRECTORY)
    try:
        status, out, err = run_exec(lambda: process.execveat(dirfd, "sh", argv, envp))
    finally:
        os.close(dirfd)
    assert (status, out, err) == (0, b"sh:hi\n", b"")


def test_fexecve() -> None:
    argv, envp = process.prepare_exec_args(["my-cat", "/proc/self/cmdline"], [])
    fd = os.open("/bin/cat", os.O_PATH | os.O_CLOEXEC)
    try:
        status, out, _ = run_exec(lambda: process.fexecve(fd, argv, envp))
    finally:
        os.close(fd)
    assert status == 0
    assert out == b"my-cat\0/proc/self/cmdline\0"


def test_execveat_failure_raises() -> None:
    argv, envp = process.prepare_exec_args(["x"], [])

    def body() -> None:
        process.execveat(-100, "/nonexistent/program", argv, envp)  # AT_FDCWD

    with pytest.raises(ChildError) as info:
        in_child(body)
    assert info.value.errno == errno.ENOENT


# --------------------------------------------------------------------------
# capabilities, child side


def test_drop_bounding() -> None:
    keep = caps.mask_of(["CAP_CHOWN", "CAP_KILL", "CAP_SETPCAP"])

    def body() -> list[object]:
        caps.drop_bounding(keep)
        return [caps.current().bounding, caps.in_bounding(0), caps.in_bounding(21)]

    assert in_child(body) == [keep, True, False]


def test_capset_shrinks_and_cannot_grow() -> None:
    small = caps.mask_of(["CAP_CHOWN", "CAP_KILL"])

    def body() -> list[object]:
        caps.capset(small, small, 0)
        now = list(caps.capget())
        try:
            caps.capset(small, small | 1 << 21, 0)
            grew = "allowed"
        except PermissionError:
            grew = "denied"
        return [*now, grew]

    assert in_child(body) == [small, small, 0, "denied"]


def test_full_sequence_to_a_non_root_user_with_ambient() -> None:
    """runc's order: bounding, keepcaps, setuid, capset, ambient; then exec keeps ambient."""
    sets = caps.capability_sets_from_spec(
        bounding=["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"],
        effective=["CAP_CHOWN", "CAP_NET_BIND_SERVICE"],
        permitted=["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL"],
        inheritable=["CAP_NET_BIND_SERVICE"],
        ambient=["CAP_NET_BIND_SERVICE"],
    )

    def body() -> dict[str, object]:
        caps.drop_bounding(sets.bounding)
        caps.set_keep_caps(True)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        after_setuid = caps.current()
        caps.set_keep_caps(False)
        caps.capset(sets.effective, sets.permitted, sets.inheritable)
        caps.set_ambient(sets.ambient)
        before_exec = caps.current()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(w, 1)
            os.execv("/bin/cat", ["cat", "/proc/self/status"])
        os.close(w)
        status_text = _read_all(r).decode()
        os.waitpid(pid, 0)
        after_exec = caps.parse_status(status_text)
        return {
            "after_setuid_permitted": after_setuid.permitted,
            "after_setuid_effective": after_setuid.effective,
            "before_exec": [
                before_exec.bounding,
                before_exec.effective,
                before_exec.permitted,
                before_exec.inheritable,
                before_exec.ambient,
            ],
            "after_exec": [after_exec.effective, after_exec.permitted, after_exec.ambient],
        }

    got = in_child(body)
    assert got["after_setuid_permitted"] == caps.all_capabilities() & caps.current().bounding
    assert got["after_setuid_effective"] == 0  # keepcaps keeps permitted only
    assert got["before_exec"] == [
        sets.bounding,
        sets.effective,
        sets.permitted,
        sets.inheritable,
        sets.ambient,
    ]
    # An ordinary program run by a non-root user gets exactly the ambient set.
    assert got["after_exec"] == [sets.ambient] * 3


def test_without_keepcaps_setuid_empties_permitted() -> None:
    def body() -> int:
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        return caps.current().permitted

    assert in_child(body) == 0


def test_ambient_needs_inheritable_strict() -> None:
    def body() -> None:
        caps.set_ambient(caps.mask_of(["CAP_NET_RAW"]), strict=True)  # inheritable is empty

    with pytest.raises(ChildError) as info:
        in_child(body)
    assert info.value.errno == errno.EPERM
    assert "CAP_NET_RAW" in str(info.value)


def test_ambient_that_cannot_be_raised_is_returned() -> None:
    """As runc >= 1.2: raise what can be raised, report the rest (runc spec's default case)."""
    kill = caps.mask_of(["CAP_KILL"])
    raw = caps.mask_of(["CAP_NET_RAW"])

    def body() -> list[int]:
        effective, permitted, _ = caps.capget()
        caps.capset(effective, permitted, kill)  # only CAP_KILL is inheritable
        failed = caps.set_ambient(kill | raw)
        return [failed, caps.current().ambient]

    assert in_child(body) == [raw, kill]


def test_ambient_clear() -> None:
    mask = caps.mask_of(["CAP_KILL"])

    def body() -> list[int]:
        caps.capset(*caps.capget()[:2], mask)
        caps.set_ambient(mask)
        raised = caps.current().ambient
        caps.set_ambient(0)
        return [raised, caps.current().ambient]

    assert in_child(body) == [mask, 0]
