"""bpf(2) wrappers: the retries of ``BPF_PROG_LOAD`` (no kernel needed)."""

from __future__ import annotations

import ctypes
import errno

import pytest

from bulkhead.linux import bpf

PROGRAM = bytes.fromhex("b7000000010000009500000000000000")  # r0 = 1; exit


def fake_bpf(failures: list[int], fd: int = 7) -> tuple[list[int], object]:
    """A stand-in for the system call that fails with ``failures`` in turn, then gives ``fd``."""
    calls: list[int] = []

    def call(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
        calls.append(cmd)
        if failures:
            code = failures.pop(0)
            raise OSError(code, f"bpf: {errno.errorcode[code]}")
        return fd

    return calls, call


def test_a_load_broken_off_by_a_signal_is_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, call = fake_bpf([errno.EAGAIN] * 3)
    monkeypatch.setattr(bpf, "_bpf", call)
    assert bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, PROGRAM) == 7
    assert calls == [bpf.BPF_PROG_LOAD] * 4


def test_eagain_every_time_gives_up_after_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, call = fake_bpf([errno.EAGAIN] * (bpf.PROG_LOAD_ATTEMPTS + 5))
    monkeypatch.setattr(bpf, "_bpf", call)
    with pytest.raises(OSError) as caught:
        bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, PROGRAM)
    assert caught.value.errno == errno.EAGAIN
    assert len(calls) == bpf.PROG_LOAD_ATTEMPTS


def test_other_errors_are_not_repeated(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, call = fake_bpf([errno.EPERM])
    monkeypatch.setattr(bpf, "_bpf", call)
    with pytest.raises(PermissionError):
        bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, PROGRAM)
    assert calls == [bpf.BPF_PROG_LOAD]


def test_a_refusal_is_loaded_again_with_the_verifier_log(monkeypatch: pytest.MonkeyPatch) -> None:
    calls, call = fake_bpf([errno.EINVAL, errno.EINVAL])
    monkeypatch.setattr(bpf, "_bpf", call)
    with pytest.raises(OSError) as caught:
        bpf.prog_load(bpf.BPF_PROG_TYPE_CGROUP_DEVICE, PROGRAM)
    assert caught.value.errno == errno.EINVAL
    assert "verifier:" in str(caught.value)
    assert len(calls) == 2
