"""The sealed exec trampoline (linux.dmz) against the real kernel.

Every exec happens in a forked child whose stdout and stderr are pipes read
by the test; the pytest process only creates memfds.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bulkhead.linux import capabilities as caps
from bulkhead.linux import dmz, process

if os.geteuid() != 0:
    pytest.skip("needs root", allow_module_level=True)

needs_trampoline = pytest.mark.skipif(not dmz.available(), reason="no trampoline for this machine")

NOBODY = 65534


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


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


@pytest.fixture
def tramp() -> Iterator[int]:
    fd = dmz.sealed_trampoline()
    yield fd
    os.close(fd)


# --------------------------------------------------------------------------
# the image


@pytest.mark.parametrize("machine", dmz.supported_machines())
def test_elf_headers(machine: str) -> None:
    image = dmz.elf_image(machine)
    assert image[:4] == b"\x7fELF"
    assert image[4:7] == bytes([2, 1, 1])  # 64-bit, little-endian, version 1
    e_type, e_machine, _, e_entry, e_phoff, e_shoff = struct.unpack_from("<HHIQQQ", image, 16)
    assert (e_type, e_phoff, e_shoff) == (2, 64, 0)
    assert e_machine == {"x86_64": 62, "aarch64": 183}[machine]
    assert e_entry == 0x400000 + 64 + 2 * 56
    p_type, p_flags, p_offset, p_vaddr, _, p_filesz, p_memsz, _ = struct.unpack_from(
        "<IIQQQQQQ", image, 64
    )
    assert (p_type, p_flags, p_offset, p_vaddr) == (1, 5, 0, 0x400000)
    assert p_filesz == p_memsz == len(image)
    gnu_stack_type, gnu_stack_flags = struct.unpack_from("<II", image, 64 + 56)
    assert (gnu_stack_type, gnu_stack_flags) == (0x6474E551, 6)  # RW, not X
    assert len(image) < 512


ASSEMBLERS = {
    "x86_64": ("as", "objcopy"),
    "aarch64": ("aarch64-linux-gnu-as", "aarch64-linux-gnu-objcopy"),
}


@pytest.mark.parametrize("machine", dmz.supported_machines())
def test_listing_assembles_to_the_same_bytes(machine: str, tmp_path: Path) -> None:
    """The assembly written beside each instruction is the truth about its bytes."""
    assembler, objcopy = ASSEMBLERS[machine]
    if not (shutil.which(assembler) and shutil.which(objcopy)):
        pytest.skip(f"{assembler} is not installed (binutils)")
    (tmp_path / "t.s").write_text(dmz.assembly(machine))
    subprocess.run([assembler, "-o", tmp_path / "t.o", tmp_path / "t.s"], check=True)
    subprocess.run(
        [objcopy, "-O", "binary", "-j", ".text", tmp_path / "t.o", tmp_path / "t.bin"], check=True
    )
    assert (tmp_path / "t.bin").read_bytes() == dmz.code(machine)


@pytest.mark.skipif(not shutil.which("qemu-aarch64"), reason="qemu-user is not installed")
def test_aarch64_trampoline_under_qemu(tmp_path: Path) -> None:
    """The aarch64 image cannot run natively here; qemu-user runs it (its execve runs host programs)."""
    path = tmp_path / "dmz-aarch64"
    path.write_bytes(dmz.elf_image("aarch64"))
    path.chmod(0o755)

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["qemu-aarch64", str(path), *args], env={"A": "1"}, capture_output=True, check=False
        )

    ok = run("/bin/cat", "my-cat", "/proc/self/cmdline")
    assert (ok.returncode, ok.stdout) == (0, b"my-cat\0/proc/self/cmdline\0")
    assert run("/usr/bin/env", "env").stdout == b"A=1\n"
    missing = run("/nonexistent", "x")
    assert missing.returncode == 127
    assert missing.stderr == b"bulkhead-dmz: exec /nonexistent failed: errno 2\n"
    assert run("/etc/passwd", "x").returncode == 126
    usage = run("/bin/true")
    assert usage.returncode == 127
    assert usage.stderr.startswith(b"bulkhead-dmz: usage:")


# --------------------------------------------------------------------------
# the sealed memfd


def test_available_here() -> None:
    assert dmz.available() == (os.uname().machine in dmz.supported_machines())


@needs_trampoline
def test_memfd_is_sealed_and_close_on_exec(tramp: int) -> None:
    assert os.readlink(f"/proc/self/fd/{tramp}") == "/memfd:bulkhead-dmz (deleted)"
    assert not os.get_inheritable(tramp)
    seals = fcntl.fcntl(tramp, fcntl.F_GET_SEALS)
    assert seals & dmz.SEALS == dmz.SEALS
    assert os.pread(tramp, 4096, 0) == dmz.elf_image()


@needs_trampoline
def test_memfd_cannot_be_changed(tramp: int) -> None:
    with pytest.raises(PermissionError):
        os.pwrite(tramp, b"\x90", 200)
    with pytest.raises(PermissionError):
        os.ftruncate(tramp, 10)
    with pytest.raises(PermissionError):
        os.ftruncate(tramp, 1 << 20)
    with pytest.raises(PermissionError):
        fcntl.fcntl(tramp, fcntl.F_ADD_SEALS, 0)  # F_SEAL_SEAL: no seal changes at all
    # Reopening it writable through /proc does not help either.
    fd = os.open(f"/proc/self/fd/{tramp}", os.O_RDWR)
    try:
        with pytest.raises(PermissionError):
            os.write(fd, b"#!/bin/sh\n")
    finally:
        os.close(fd)
    assert os.pread(tramp, 4096, 0) == dmz.elf_image()


@needs_trampoline
def test_proc_pid_exe_of_a_running_trampoline_is_not_writable(tramp: int) -> None:
    """Catch the trampoline while it runs (blocked writing its error message to a full
    pipe) and try to write to it through /proc/<pid>/exe, as CVE-2019-5736 did."""
    err_r, err_w = os.pipe()
    fcntl.fcntl(err_w, fcntl.F_SETPIPE_SZ, 4096)
    os.set_blocking(err_w, False)
    try:
        while True:
            os.write(err_w, b"x" * 4096)
    except BlockingIOError:
        pass
    os.set_blocking(err_w, True)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.dup2(err_w, 2)
            dmz.exec_through(tramp, "/nonexistent", ["x"], [])
        finally:
            os._exit(99)
    os.close(err_w)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
            exe = os.readlink(f"/proc/{pid}/exe")
            if state == "S" and exe.startswith("/memfd:bulkhead-dmz"):
                break
            time.sleep(0.01)
        assert exe.startswith("/memfd:bulkhead-dmz")
        try:
            fd = os.open(f"/proc/{pid}/exe", os.O_WRONLY)
        except OSError as exc:
            assert exc.errno == errno.ETXTBSY  # the kernel denies writes to running programs
        else:
            try:
                with pytest.raises(PermissionError):
                    os.write(fd, b"\x7fELF")
            finally:
                os.close(fd)
    finally:
        drained = b""
        while chunk := os.read(err_r, 65536):
            drained += chunk
        os.close(err_r)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 127
    assert drained.endswith(b"bulkhead-dmz: exec /nonexistent failed: errno 2\n")


# --------------------------------------------------------------------------
# running programs through it


@needs_trampoline
def test_echo(tramp: int) -> None:
    status, out, err = run_exec(lambda: dmz.exec_through(tramp, "/bin/echo", ["echo", "hi"], []))
    assert (status, out, err) == (0, b"hi\n", b"")


@needs_trampoline
def test_argv0_is_preserved(tramp: int) -> None:
    # argv[0] is what the program sees, whatever the path it was found at.
    status, out, _ = run_exec(
        lambda: dmz.exec_through(tramp, "/bin/cat", ["my-cat", "/proc/self/cmdline"], [])
    )
    assert (status, out) == (0, b"my-cat\0/proc/self/cmdline\0")
    if shutil.which("busybox"):
        # busybox picks its applet by argv[0]
        busybox = shutil.which("busybox")
        assert busybox is not None
        status, out, _ = run_exec(lambda: dmz.exec_through(tramp, busybox, ["echo", "hi"], []))
        assert (status, out) == (0, b"hi\n")


@needs_trampoline
def test_environment_is_preserved(tramp: int) -> None:
    env = ["A=1", "B=two words", "EMPTY=", "PATH=/usr/bin:/bin"]
    status, out, _ = run_exec(lambda: dmz.exec_through(tramp, "/usr/bin/env", ["env"], env))
    assert status == 0
    assert out.decode().splitlines() == env


@needs_trampoline
def test_empty_environment(tramp: int) -> None:
    status, out, _ = run_exec(lambda: dmz.exec_through(tramp, "/usr/bin/env", ["env"], []))
    assert (status, out) == (0, b"")


@needs_trampoline
def test_prepared_before_fork(tramp: int) -> None:
    prepared = dmz.prepare(["sh", "-c", 'echo "$0 $1 $X"', "zero", "one"], ["X=y"])
    status, out, _ = run_exec(lambda: dmz.exec_prepared(tramp, "/bin/sh", prepared))
    assert (status, out) == (0, b"zero one y\n")


@needs_trampoline
def test_missing_program_exits_127(tramp: int) -> None:
    status, out, err = run_exec(lambda: dmz.exec_through(tramp, "/no/such/program", ["p"], []))
    assert (status, out) == (127, b"")
    assert err == b"bulkhead-dmz: exec /no/such/program failed: errno 2\n"


@needs_trampoline
def test_not_executable_exits_126(tramp: int, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.write_text("just text\n")
    data.chmod(0o644)
    status, _, err = run_exec(lambda: dmz.exec_through(tramp, str(data), ["data"], []))
    assert status == 126
    assert err == f"bulkhead-dmz: exec {data} failed: errno {errno.EACCES}\n".encode()
    data.chmod(0o755)  # executable, but no #! and not ELF: ENOEXEC
    status, _, err = run_exec(lambda: dmz.exec_through(tramp, str(data), ["data"], []))
    assert status == 126
    assert err.endswith(f"errno {errno.ENOEXEC}\n".encode())


def test_empty_argv_is_refused() -> None:
    with pytest.raises(ValueError, match="argv"):
        dmz.prepare([], [])


def test_trampoline_argv_convention() -> None:
    assert dmz.trampoline_argv("/bin/ls", ["ls", "-l"]) == ["bulkhead-dmz", "/bin/ls", "ls", "-l"]


# --------------------------------------------------------------------------
# the attack


@pytest.fixture
def self_exe_script(tmp_path: Path) -> Path:
    """An entrypoint written the CVE-2019-5736 way: its interpreter is /proc/self/exe."""
    script = tmp_path / "entrypoint"
    script.write_text("#!/proc/self/exe\nimport os\nos.write(1, b'PYTHON RAN')\n")
    script.chmod(0o755)
    return script


def test_without_trampoline_proc_self_exe_is_python(self_exe_script: Path) -> None:
    """The control: exec'd straight from a Python process, the script runs Python."""
    status, out, _ = run_exec(lambda: os.execve(self_exe_script, [str(self_exe_script)], {}))
    assert (status, out) == (0, b"PYTHON RAN")
    assert Path(sys.executable).resolve().exists()


@needs_trampoline
def test_through_trampoline_proc_self_exe_is_the_trampoline(
    tramp: int, self_exe_script: Path
) -> None:
    """The kernel runs /proc/self/exe, i.e. the sealed trampoline, with
    [/proc/self/exe, script]: too few arguments, so it prints its usage."""
    status, out, err = run_exec(
        lambda: dmz.exec_through(tramp, str(self_exe_script), [str(self_exe_script)], [])
    )
    assert b"PYTHON" not in out
    assert status == 127
    assert err.startswith(b"bulkhead-dmz: usage:")


@needs_trampoline
def test_self_exe_with_arguments_ends_too(tramp: int, self_exe_script: Path) -> None:
    """Each round through ``#!/proc/self/exe`` loses one argument, so it ends."""
    argv = [str(self_exe_script), *(f"a{i}" for i in range(5))]
    status, out, err = run_exec(lambda: dmz.exec_through(tramp, str(self_exe_script), argv, []))
    assert b"PYTHON" not in out
    assert status in (126, 127)
    assert err.startswith(b"bulkhead-dmz:")


# --------------------------------------------------------------------------
# capabilities are what a direct exec would give


def _status_after_exec(tramp: int | None, program: str, sets: caps.CapabilitySets) -> str:
    """In a child: apply ``sets`` as a non-root user (runc's order), then exec
    ``program /proc/self/status`` directly or through the trampoline."""

    def body() -> None:
        caps.drop_bounding(sets.bounding)
        caps.set_keep_caps(True)
        os.setgroups([])
        os.setresgid(NOBODY, NOBODY, NOBODY)
        os.setresuid(NOBODY, NOBODY, NOBODY)
        caps.set_keep_caps(False)
        caps.capset(sets.effective, sets.permitted, sets.inheritable)
        caps.set_ambient(sets.ambient)
        argv = ["cat", "/proc/self/status"]
        if tramp is None:
            os.execve(program, argv, {})
        dmz.exec_through(tramp, program, argv, [])

    status, out, err = run_exec(body)
    assert status == 0, err
    return out.decode()


@pytest.fixture
def cat_with_file_caps() -> Iterator[str]:
    """A copy of cat with the file capability cap_net_bind_service+ep (as setcap writes it)."""
    directory = tempfile.mkdtemp(prefix="bulkhead-dmz-")
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "cat")
    shutil.copy("/bin/cat", path)
    bit = 1 << caps.CAPABILITIES["CAP_NET_BIND_SERVICE"]
    # struct vfs_cap_data, revision 2 with the "effective" flag: permitted, inheritable x 2
    value = struct.pack("<IIIII", 0x02000001, bit, 0, 0, 0)
    try:
        os.setxattr(path, "security.capability", value)
    except OSError as exc:
        shutil.rmtree(directory)
        pytest.skip(f"cannot set file capabilities here: {exc}")
    yield path
    shutil.rmtree(directory)


DEFAULT_CAPS = caps.capability_sets_from_spec(
    bounding=["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_SETUID"],
    effective=["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_SETUID"],
    permitted=["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_KILL", "CAP_SETUID"],
)


@needs_trampoline
@pytest.mark.parametrize(
    "sets",
    [
        DEFAULT_CAPS,
        caps.CapabilitySets(
            bounding=DEFAULT_CAPS.bounding,
            effective=DEFAULT_CAPS.effective,
            permitted=DEFAULT_CAPS.permitted,
            inheritable=caps.mask_of(["CAP_CHOWN", "CAP_KILL"]),
            ambient=caps.mask_of(["CAP_CHOWN", "CAP_KILL"]),
        ),
    ],
    ids=["no-ambient", "ambient"],
)
@pytest.mark.parametrize("program", ["plain", "file-caps"])
def test_non_root_capabilities_match_a_direct_exec(
    tramp: int, cat_with_file_caps: str, sets: caps.CapabilitySets, program: str
) -> None:
    """runc#4125 found its dmz changed capabilities for non-root users; ours must not."""
    path = "/bin/cat" if program == "plain" else cat_with_file_caps
    direct = caps.parse_status(_status_after_exec(None, path, sets))
    through = caps.parse_status(_status_after_exec(tramp, path, sets))
    assert through == direct
    if program == "file-caps":
        assert direct.permitted & 1 << caps.CAPABILITIES["CAP_NET_BIND_SERVICE"]
    else:
        assert direct.permitted == sets.ambient


# --------------------------------------------------------------------------
# cost


def _time_execs(fn: Callable[[], None], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                fn()
            finally:
                os._exit(99)
        _, status = os.waitpid(pid, 0)
        times.append(time.perf_counter() - start)
        assert os.waitstatus_to_exitcode(status) == 0
    return times


@needs_trampoline
def test_cost_per_exec(tramp: int, capsys: pytest.CaptureFixture[str]) -> None:
    """fork + exec of /bin/true + wait, directly and through the trampoline."""
    true_path = "/bin/true"
    argv, envp = process.prepare_exec_args(["true"], [])
    prepared = dmz.prepare(["true"], [])
    null = os.open("/dev/null", os.O_WRONLY)

    def direct() -> None:
        process.execveat(-100, true_path, argv, envp)  # AT_FDCWD

    def through() -> None:
        dmz.exec_prepared(tramp, true_path, prepared)

    rounds = 200
    direct_times: list[float] = []
    through_times: list[float] = []
    for _ in range(5):  # interleave, so drift hits both alike
        direct_times += _time_execs(direct, rounds // 5)
        through_times += _time_execs(through, rounds // 5)
    os.close(null)
    created = []
    for _ in range(50):
        start = time.perf_counter()
        os.close(dmz.sealed_trampoline())
        created.append(time.perf_counter() - start)
    d = statistics.median(direct_times) * 1e6
    t = statistics.median(through_times) * 1e6
    c = statistics.median(created) * 1e6
    with capsys.disabled():
        print(
            f"\n[dmz] fork+exec+wait of /bin/true, median of {rounds}: direct {d:.0f} us, "
            f"through the trampoline {t:.0f} us, overhead {t - d:.0f} us; "
            f"sealed_trampoline() {c:.0f} us"
        )
    assert t - d < 2000  # a second exec of a 468-byte static binary is cheap


def test_trampoline_if_available_probes_with_the_one_it_returns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[int] = []
    real = dmz.sealed_trampoline

    def counting() -> int:
        fd = real()
        made.append(fd)
        return fd

    monkeypatch.setattr(dmz, "_available", None)
    monkeypatch.setattr(dmz, "sealed_trampoline", counting)
    fd = dmz.trampoline_if_available()
    try:
        if os.uname().machine in dmz.supported_machines():
            assert fd is not None and made == [fd] and dmz.available()
        else:
            assert fd is None and made == [] and not dmz.available()
    finally:
        if fd is not None:
            os.close(fd)


def test_trampoline_if_available_says_none_where_memfds_fail(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse() -> int:
        raise OSError(22, "no sealed memfds here")

    monkeypatch.setattr(dmz, "_available", None)
    monkeypatch.setattr(dmz, "sealed_trampoline", refuse)
    assert dmz.trampoline_if_available() is None
    assert dmz.available() is False
