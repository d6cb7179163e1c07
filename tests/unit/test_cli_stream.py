"""The hijacked stream: frame demultiplexing, stdin forwarding with half-close, detach keys."""

from __future__ import annotations

import os
import socket
import termios

import pytest
from tests.unit.cli_fake_daemon import frame

from bulkhead.cli.stream import Demuxer, parse_detach_keys, pump


def test_demuxer_across_chunk_boundaries() -> None:
    data = frame(1, b"hello ") + frame(2, b"oops") + frame(1, b"world\n")
    demux = Demuxer()
    got = []
    for i in range(0, len(data), 5):
        got += list(demux.feed(data[i : i + 5]))
    assert got == [(1, b"hello "), (2, b"oops"), (1, b"world\n")]
    assert demux.pending == b""


@pytest.mark.parametrize(
    ("spec", "keys"),
    [("", b"\x10\x11"), ("ctrl-a,ctrl-b", b"\x01\x02"), ("ctrl-[,q", b"\x1bq"), ("a", b"a")],
)
def test_detach_keys(spec: str, keys: bytes) -> None:
    assert parse_detach_keys(spec) == keys


def test_detach_keys_reject_words() -> None:
    with pytest.raises(ValueError):
        parse_detach_keys("ctrl-p,quit")


@pytest.mark.timeout(20)
def test_pump_demuxes_and_forwards_stdin_then_half_closes() -> None:
    ours, theirs = socket.socketpair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    in_r, in_w = os.pipe()
    os.write(in_w, b"typed\n")
    os.close(in_w)
    # the "daemon" answers after stdin's end, like `cat`
    theirs.sendall(frame(1, b"early\n"))
    try:
        import threading

        received = bytearray()

        def daemon() -> None:
            while data := theirs.recv(1024):
                received.extend(data)
            theirs.sendall(frame(1, bytes(received)) + frame(2, b"bye\n"))
            theirs.close()

        t = threading.Thread(target=daemon)
        t.start()
        assert pump(
            ours, b"", tty=False, stdin=True, stdin_fd=in_r, stdout_fd=out_w, stderr_fd=err_w
        )
        t.join(5)
        os.close(out_w)
        os.close(err_w)
        assert os.read(out_r, 1024) == b"early\ntyped\n"
        assert os.read(err_r, 1024) == b"bye\n"
    finally:
        for fd in (out_r, err_r, in_r):
            os.close(fd)


@pytest.mark.timeout(20)
def test_pump_raw_tty_detaches_on_the_key_sequence() -> None:
    import tty

    master, slave = os.openpty()
    ours, theirs = socket.socketpair()
    out_r, out_w = os.pipe()
    try:
        # raw before the keys are typed: a cooked terminal would hold them until a newline
        tty.setraw(slave)
        before = termios.tcgetattr(slave)
        os.write(master, b"ls\x10")
        os.write(master, b"\x11more")
        theirs.sendall(b"raw output")
        keep = pump(ours, b"", tty=True, stdin=True, stdin_fd=slave, stdout_fd=out_w)
        assert keep is False
        assert termios.tcgetattr(slave) == before, "the terminal mode is restored"
        theirs.settimeout(2)
        assert theirs.recv(1024) == b"ls"
        os.close(out_w)
        assert os.read(out_r, 1024) == b"raw output"
    finally:
        for fd in (master, slave, out_r):
            os.close(fd)
        theirs.close()


@pytest.mark.timeout(20)
def test_pump_sends_the_terminal_size_at_start_and_on_sigwinch() -> None:
    import fcntl
    import signal
    import struct
    import threading
    import time

    master, slave = os.openpty()
    ours, theirs = socket.socketpair()

    def set_size(rows: int, cols: int) -> None:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    set_size(40, 120)
    sizes: list[tuple[int, int]] = []
    handler_before = signal.getsignal(signal.SIGWINCH)

    def user() -> None:
        time.sleep(0.2)
        set_size(50, 150)
        os.kill(os.getpid(), signal.SIGWINCH)
        time.sleep(0.3)
        theirs.close()

    t = threading.Thread(target=user)
    t.start()
    try:
        pump(
            ours,
            b"",
            tty=True,
            stdin=False,
            stdout_fd=slave,
            on_resize=lambda h, w: sizes.append((h, w)),
        )
    finally:
        t.join(5)
        os.close(master)
        os.close(slave)
    assert sizes == [(40, 120), (50, 150)]
    assert signal.getsignal(signal.SIGWINCH) == handler_before, "the SIGWINCH handler is restored"


@pytest.mark.timeout(30)
def test_pump_large_stdin_through_an_echoing_daemon_does_not_deadlock(tmp_path: object) -> None:
    """A command answering as it reads, with megabytes of input: stdin must wait while
    output is drained (a blocking sendall would deadlock once both buffers fill)."""
    import threading

    ours, theirs = socket.socketpair()
    payload = bytes(range(256)) * (16 * 1024)  # 4 MiB
    src = os.path.join(str(tmp_path), "in.bin")
    with open(src, "wb") as fh:
        fh.write(payload)
    out_r, out_w = os.pipe()
    got = bytearray()

    def reader() -> None:
        while chunk := os.read(out_r, 1 << 16):
            got.extend(chunk)

    def daemon() -> None:  # answer every chunk twice (output outpaces input), then close
        while data := theirs.recv(1 << 16):
            theirs.sendall(frame(1, data) + frame(1, data))
        theirs.close()

    threads = [threading.Thread(target=reader), threading.Thread(target=daemon)]
    for t in threads:
        t.start()
    fd = os.open(src, os.O_RDONLY)
    try:
        assert pump(ours, b"", tty=False, stdin=True, stdin_fd=fd, stdout_fd=out_w)
    finally:
        os.close(fd)
        os.close(out_w)
        for t in threads:
            t.join(10)
        os.close(out_r)
    assert len(got) == 2 * len(payload)
