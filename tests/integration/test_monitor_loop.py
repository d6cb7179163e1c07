"""``bh-monitor`` (``src/bulkhead/engine/monitor_loop.c``), the monitor's steady-state loop in C.

No containers: each test builds the hand-over itself. A helper process
(``python -c _HANDOFF``, the monitor-to-be) becomes a session leader and a
child subreaper, makes the "container"'s stdio (pipes, or a pty), forks the
"container" (``/bin/sh -c SCRIPT`` that first waits on an ``exec.fifo`` as a
runtime's init does), binds and listens ``ctl.sock`` and ``attach.sock``,
then execve()s ``bh-monitor`` with those fds. A fake zygote (a unix socket
served by a thread) takes the ``exec`` forwarding and the ``delete``.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import bulkhead.engine
from bulkhead.engine.jsonlog import JsonLogWriter
from bulkhead.engine.monitor import ExitStatus

BIN = Path(bulkhead.engine.__file__).resolve().parent / "bh-monitor"

pytestmark = [
    pytest.mark.skipif(
        not os.access(BIN, os.X_OK), reason=f"{BIN} is not built (`make deps` builds it)"
    ),
    pytest.mark.timeout(120),
]

# The monitor-to-be: argv[1] is a JSON spec. Its pid becomes bh-monitor's.
_HANDOFF = r"""
import ctypes, fcntl, json, os, select, socket, sys, termios
spec = json.loads(sys.argv[1])
state = spec["state_dir"]
os.setsid()
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    raise OSError(ctypes.get_errno(), "prctl")
fifo = os.path.join(state, "exec.fifo")
os.mkfifo(fifo, 0o600)
tty = spec["tty"]
keep = {}
if tty:
    master, slave = os.openpty()
    cont = (slave, slave, slave)
else:
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    if spec["stdin"]:
        in_r, in_w = os.pipe()
    else:
        in_r, in_w = os.open(os.devnull, os.O_RDONLY), -1
    cont = (in_r, out_w, err_w)
ready_r, ready_w = os.pipe()
pid = os.fork()
if pid == 0:
    try:
        if tty:
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for i, fd in enumerate(cont):
            os.dup2(fd, i)
        fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        os.write(ready_w, b"r")
        select.select([fd], [], [])
        os.read(fd, 1)
        os.execv("/bin/sh", ["sh", "-c", spec["script"]])
    finally:
        os._exit(127)
for fd in set(cont):
    os.close(fd)
os.read(ready_r, 1)
with open(os.path.join(state, "init.pid"), "w") as f:
    f.write(str(pid))

def listen(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(os.path.join(state, name))
    s.listen(64)
    s.setblocking(False)
    return s.detach()

argv = [spec["bin"], "--id", spec["id"], "--state-dir", state, "--init-pid", str(pid)]
fds = {"--fd-ctl": listen("ctl.sock"), "--fd-attach": listen("attach.sock")}
if tty:
    fds["--fd-out"] = os.dup(master)
    if spec["stdin"]:
        fds["--fd-stdin"] = os.dup(master)
    fds["--fd-master"] = master
else:
    fds["--fd-out"] = out_r
    fds["--fd-err"] = err_r
    if spec["stdin"]:
        fds["--fd-stdin"] = in_w
for name, fd in fds.items():
    os.set_inheritable(fd, True)
    argv += [name, str(fd)]
argv += ["--tty", str(int(tty)), "--stdin-once", str(int(spec["stdin_once"]))]
if spec["start_fifo"]:
    argv += ["--start-fifo", fifo]
argv += ["--zygote-socket", spec["zygote"]]
argv += spec["extra"]
null = os.open(os.devnull, os.O_RDWR)
log = os.open(os.path.join(state, "monitor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
os.dup2(null, 0)
os.dup2(null, 1)
os.dup2(log, 2)
os.execv(spec["bin"], argv)
"""


class FakeZygote:
    """A unix socket that takes bh-monitor's ``exec`` hand-overs and ``delete`` requests."""

    def __init__(self, path: str, delete_reply: bytes = b'{"ok": true}\n') -> None:
        self.path = path
        self.delete_reply = delete_reply
        self.messages: list[dict[str, Any]] = []
        self.fd_counts: list[int] = []
        self.got = threading.Condition()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 4)
                while msg and not msg.endswith(b"\n"):
                    more = conn.recv(1 << 20)
                    if not more:
                        break
                    msg += more
                doc = json.loads(msg)
                if doc.get("op") == "exec":
                    for fd in fds:  # the session answers the client, on its connection
                        with socket.socket(fileno=fd) as client:
                            client.sendall(b'{"pid": 4242}\n' + bytes.fromhex(doc["rest"]))
                else:
                    for fd in fds:
                        os.close(fd)
                    if doc.get("op") == "delete":
                        conn.sendall(self.delete_reply)
                with self.got:
                    self.messages.append(doc)
                    self.fd_counts.append(len(fds))
                    self.got.notify_all()

    def wait_for(self, op: str, timeout: float = 10) -> dict[str, Any]:
        with self.got:
            ok = self.got.wait_for(lambda: any(m.get("op") == op for m in self.messages), timeout)
            assert ok, f"the fake zygote got no {op!r}: {self.messages}"
            return next(m for m in self.messages if m.get("op") == op)

    def close(self) -> None:
        self.stopping = True
        self.sock.close()
        self.thread.join(5)


def _alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


class Mon:
    """One bh-monitor and its "container"."""

    def __init__(self, proc: subprocess.Popen[bytes], state: Path, log_path: Path) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.state = state
        self.log_path = log_path
        deadline = time.monotonic() + 10
        while not (state / "init.pid").exists() or not (state / "attach.sock").exists():
            assert proc.poll() is None, f"the hand-over failed: {self.monitor_log()}"
            assert time.monotonic() < deadline, "the hand-over did not finish in 10 s"
            time.sleep(0.01)
        self.init_pid = int((state / "init.pid").read_text())
        # until the execve happened (so that /proc shows bh-monitor)
        while os.path.realpath(f"/proc/{self.pid}/exe") != str(BIN.resolve()):
            assert proc.poll() is None, f"the hand-over failed: {self.monitor_log()}"
            assert time.monotonic() < deadline, "bh-monitor did not start in 10 s"
            time.sleep(0.01)

    def monitor_log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.state / "monitor.log").read_text(errors="replace")
        return ""

    def ctl_raw(self, line: bytes, timeout: float = 10) -> bytes:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.state / "ctl.sock"))
            s.sendall(line)
            out = b""
            while chunk := s.recv(65536):
                out += chunk
            return out

    def ctl(self, req: dict[str, Any]) -> dict[str, Any]:
        out = self.ctl_raw(json.dumps(req).encode() + b"\n")
        assert out.endswith(b"\n") and out.count(b"\n") == 1, out
        doc = json.loads(out)
        assert isinstance(doc, dict)
        return doc

    def attach(self, **opts: bool) -> tuple[socket.socket, dict[str, Any]]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(str(self.state / "attach.sock"))
        s.sendall(json.dumps(opts).encode() + b"\n")
        line = b""
        while not line.endswith(b"\n"):
            chunk = s.recv(1)
            assert chunk, f"attach: no reply (got {line!r})"
            line += chunk
        return s, json.loads(line)

    def start(self) -> None:
        assert self.ctl({"op": "start"}) == {"ok": True}

    def wait(self, timeout: float = 15) -> int:
        code = self.proc.wait(timeout)
        return code

    def exit_status(self) -> ExitStatus:
        return msgspec.json.decode((self.state / "exit.json").read_bytes(), type=ExitStatus)

    def memory(self) -> dict[str, int]:
        out: dict[str, int] = {}
        with open(f"/proc/{self.pid}/smaps_rollup") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if rest.strip().endswith("kB"):
                    out[key] = int(rest.split()[0])
        return out


class Harness:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="bhm-", dir="/tmp"))
        self.zygote = FakeZygote(str(self.root / "zygote.sock"))
        self.mons: list[Mon] = []
        self.pids: list[int] = []
        self.n = 0

    def launch(
        self,
        script: str,
        *,
        tty: bool = False,
        stdin: bool = False,
        stdin_once: bool = False,
        log: bool = True,
        max_size: int = 0,
        max_files: int = 1,
        extra: list[str] | None = None,
        zygote: str | None = None,
        start_fifo: bool = True,
    ) -> Mon:
        self.n += 1
        state = self.root / f"c{self.n}"
        state.mkdir()
        log_path = self.root / f"c{self.n}-json.log"
        args = list(extra or [])
        if log:
            args += ["--log-path", str(log_path), "--log-max-size", str(max_size)]
            args += ["--log-max-files", str(max_files)]
        spec = {
            "bin": str(BIN),
            "id": f"c{self.n}",
            "state_dir": str(state),
            "tty": tty,
            "stdin": stdin,
            "stdin_once": stdin_once,
            "script": script,
            "zygote": zygote or self.zygote.path,
            "extra": args,
            "start_fifo": start_fifo,
        }
        proc = subprocess.Popen([sys.executable, "-c", _HANDOFF, json.dumps(spec)])
        self.pids.append(proc.pid)
        try:
            mon = Mon(proc, state, log_path)
        except BaseException:
            self._kill(proc.pid)
            raise
        self.pids.append(mon.init_pid)
        self.mons.append(mon)
        return mon

    def _kill(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def cleanup(self) -> None:
        for mon in self.mons:  # the containers first: the monitors then record and exit
            self._kill(mon.init_pid)
        for mon in self.mons:
            try:
                mon.proc.wait(10)
            except subprocess.TimeoutExpired:
                self._kill(mon.pid)
                mon.proc.wait(5)
        for pid in self.pids:
            if _alive(pid):
                self._kill(pid)
        self.zygote.close()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def h() -> Iterator[Harness]:
    harness = Harness()
    try:
        yield harness
    finally:
        harness.cleanup()


def read_all(s: socket.socket, timeout: float = 15) -> bytes:
    s.settimeout(timeout)
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def demux(data: bytes) -> dict[int, bytes]:
    """Docker's 8-byte frames: {stream: bytes}."""
    out: dict[int, bytes] = {1: b"", 2: b""}
    i = 0
    while i < len(data):
        stream, n = struct.unpack(">BxxxI", data[i : i + 8])
        assert stream in (1, 2) and i + 8 + n <= len(data), data[i : i + 16]
        out[stream] += data[i + 8 : i + 8 + n]
        i += 8 + n
    return out


_TIME = re.compile(rb'"time":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d*[1-9])?Z)"')


def _untimed(log: bytes) -> bytes:
    for stamp in _TIME.findall(log):
        assert stamp.endswith(b"Z")
    return _TIME.sub(b'"time":"T"', log)


def _expected_log(tmp: Path, chunks: list[tuple[int, bytes]]) -> bytes:
    path = tmp / "expected.log"
    w = JsonLogWriter(path)
    for stream, data in chunks:
        w.write(stream, data)
    w.close()
    data = path.read_bytes()
    path.unlink()
    return data


# ---------------------------------------------------------------------- tests


def test_ping_start_output_log_and_exit(h: Harness) -> None:
    mon = h.launch("echo out; echo err >&2; printf partial; exit 3")
    ping = mon.ctl({"op": "ping"})
    assert ping == {
        "ok": True,
        "monitor_pid": mon.pid,
        "init_pid": mon.init_pid,
        "started": False,
        "exited": False,
    }
    assert list(ping) == ["ok", "monitor_pid", "init_pid", "started", "exited"]
    assert os.path.realpath(f"/proc/{mon.pid}/exe") == str(BIN.resolve())
    assert Path(f"/proc/{mon.pid}/comm").read_text() == "bh-mon c1\n"
    mon.start()
    assert mon.wait() == 0
    status = mon.exit_status()
    assert status.exit_code == 3 and status.oom_killed is False and status.error == ""
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d*[1-9])?Z", status.finished_at)
    raw = (mon.state / "exit.json").read_bytes()
    assert raw == msgspec.json.encode(status)  # exactly msgspec's encoding
    log = mon.log_path.read_bytes()
    expected = _expected_log(h.root, [(1, b"out\n"), (2, b"err\n"), (1, b"partial")])
    # the streams are read separately: compare per stream, then the whole set
    assert sorted(_untimed(log).splitlines()) == sorted(_untimed(expected).splitlines())
    assert oct(os.stat(mon.log_path).st_mode & 0o777) == oct(0o640 & ~_umask())
    # the listeners are gone, the zygote was asked to delete
    assert not (mon.state / "ctl.sock").exists() and not (mon.state / "attach.sock").exists()
    assert h.zygote.wait_for("delete") == {"op": "delete", "state_dir": str(mon.state)}
    assert not _alive(mon.init_pid)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_log_matches_jsonlogwriter(h: Harness) -> None:
    """A partial line, a 20 KB line, invalid UTF-8, control characters and <>& in both streams."""
    data = h.root / "data"
    data.mkdir()
    out = (
        b"plain line\n"
        + b"x" * 20000
        + b"\n"
        + b"<a href='x'>&amp;</a> \"q\" \\ \t\x01\x1b[0m\x7f \xe2\x80\xa8 \xef\xbb\xbf\n"
        + b"bad utf-8: \xff\xfe \xc3( \xe2\x82 \xed\xa0\x80 \xf0\x9f\x98 ok \xc3\xa9 \xf0\x9f\x98\x80\n"
        + b"y" * (3 * 16384 + 7)
        + b"\n"
        + b"\xe2\x82\xac" * 6000
        + b"\n"
        + b"exactly"
        + b"z" * (16384 - 8)
        + b"\n"
        + b"partial, no newline \xe2\x82"
    )
    err = b"err 1\n" + b"e" * 16385 + b"\n" + b"err partial"
    (data / "out").write_bytes(out)
    (data / "err").write_bytes(err)
    mon = h.launch(f"cat {data}/out; cat {data}/err >&2")
    mon.start()
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 0
    got = _untimed(mon.log_path.read_bytes())
    want_out = _untimed(_expected_log(h.root, [(1, out)]))
    want_err = _untimed(_expected_log(h.root, [(2, err)]))
    lines = got.splitlines(keepends=True)
    assert b"".join(x for x in lines if b'"stream":"stdout"' in x) == want_out
    assert b"".join(x for x in lines if b'"stream":"stderr"' in x) == want_err
    # Docker's escaping (moby jsonlog): <>& and control characters as \u00XX, bad bytes as \ufffd
    want = rb"\u003ca href='x'\u003e\u0026amp;\u003c/a\u003e \"q\" \\ \u0009\u0001\u001b[0m"
    want += b"\x7f " + rb"\u2028 " + b"\xef\xbb\xbf" + rb"\n"
    assert b'"log":"' + want + b'"' in got
    assert rb'"log":"bad utf-8: \ufffd\ufffd \ufffd( \ufffd\ufffd \ufffd\ufffd\ufffd ' in got
    # chunked differently (the monitor reads what the pipe has): the same lines
    want_chunked = _untimed(
        _expected_log(h.root, [(1, out[i : i + 1000]) for i in range(0, len(out), 1000)])
    )
    assert want_chunked == want_out


def test_log_of_random_bytes_matches_jsonlogwriter(h: Harness) -> None:
    rng = random.Random(5)
    alphabet = [b"\n", b"a", b"\x00", b"\x1f", b'"', b"\\", b"\x7f", b"\xc3\xa9", b"\xe2\x82\xac"]
    alphabet += [b"\xf0\x9f\x98\x80", b"\xff", b"\xc3", b"\xe2\x82", b"\xed\xa0\x80", b"\x80"]
    alphabet += [b"<", b">", b"&", b"\t", b"\r", b"\xe2\x80\xa8", b"\xe2\x80\xa9", b"\xe2\x80"]
    alphabet += [b"\xef\xbf\xbd", b"\xc0\x80", b"\xf4\x90\x80\x80"]
    weights = [3, 60, 1, 1, 1, 1, 1, 2, 2, 1, 1, 1, 1, 1, 1] + [1] * 11
    blobs = {}
    for name in ("out", "err"):
        parts = rng.choices(alphabet, weights, k=150_000)
        for _ in range(5):  # a few long lines
            parts.insert(rng.randrange(len(parts)), b"L" * rng.randrange(16_000, 40_000))
        blobs[name] = b"".join(parts)
        (h.root / name).write_bytes(blobs[name])
    mon = h.launch(f"cat {h.root}/out; cat {h.root}/err >&2")
    mon.start()
    assert mon.wait() == 0
    lines = _untimed(mon.log_path.read_bytes()).splitlines(keepends=True)
    for stream, name in ((1, "out"), (2, "err")):
        tag = b'"stream":"stdout"' if stream == 1 else b'"stream":"stderr"'
        want = _untimed(_expected_log(h.root, [(stream, blobs[name])]))
        assert b"".join(x for x in lines if tag in x) == want


def test_log_continues_an_existing_file_and_rotates(h: Harness) -> None:
    lines = [f"line {i:03d} {'.' * 40}\n".encode() for i in range(60)]
    data = h.root / "lines"
    data.write_bytes(b"".join(lines))
    mon = h.launch(f"cat {data}", max_size=1000, max_files=3)
    # what a previous run left: the new lines are appended, its size counted
    mon.log_path.write_bytes(b"x" * 900 + b"\n")
    mon.start()
    assert mon.wait() == 0
    base = mon.log_path
    assert base.exists() and Path(f"{base}.1").exists() and Path(f"{base}.2").exists()
    assert not Path(f"{base}.3").exists()
    kept = b""
    for p in (Path(f"{base}.2"), Path(f"{base}.1"), base):
        size = p.stat().st_size
        assert 0 < size <= 1000, (p, size)
        kept += p.read_bytes()
    messages = [json.loads(x)["log"].encode() for x in kept.splitlines()]
    assert messages == lines[len(lines) - len(messages) :]
    assert len(messages) >= 20
    # max_files=1: truncated in place
    mon2 = h.launch(f"cat {data}", max_size=1000, max_files=1)
    mon2.start()
    assert mon2.wait() == 0
    assert mon2.log_path.stat().st_size <= 1000
    assert not Path(f"{mon2.log_path}.1").exists()
    last = json.loads(mon2.log_path.read_bytes().splitlines()[-1])
    assert last["log"] == lines[-1].decode()


def _without_log_position(reply: dict[str, Any], mon: Any) -> dict[str, Any]:
    """The attach reply without its "log" [inode, size], checked against the log file."""
    reply = dict(reply)
    inode, size = reply.pop("log")
    st = mon.log_path.stat()
    assert inode == st.st_ino and 0 <= size <= st.st_size
    return reply


def test_no_log(h: Harness) -> None:
    mon = h.launch("echo hi", log=False)
    sock, reply = mon.attach(stdout=True, stderr=True)
    assert reply == {"ok": True, "tty": False}
    mon.start()
    assert demux(read_all(sock)) == {1: b"hi\n", 2: b""}
    sock.close()
    assert mon.wait() == 0
    assert not mon.log_path.exists()


def test_attach_frames_without_tty(h: Harness) -> None:
    mon = h.launch("echo one; echo two >&2; head -c 300000 /dev/zero; echo three >&2")
    both, reply = mon.attach(stdout=True, stderr=True)
    assert _without_log_position(reply, mon) == {"ok": True, "tty": False}
    only_err, _ = mon.attach(stdout=False)
    mon.start()
    got = demux(read_all(both))
    assert got[1] == b"one\n" + b"\0" * 300000 and got[2] == b"two\nthree\n"
    assert demux(read_all(only_err)) == {1: b"", 2: b"two\nthree\n"}
    both.close()
    only_err.close()
    assert mon.wait() == 0


def test_attach_bad_header(h: Harness) -> None:
    mon = h.launch("exec sleep 100")
    for header, error in (
        (b"[1]\n", "attach: not an object"),
        (b"{nope\n", "attach: Expecting property name enclosed in double quotes: "),
    ):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(mon.state / "attach.sock"))
            s.sendall(header)
            reply = json.loads(read_all(s))
            assert reply["kind"] == "bad_request" and reply["error"].startswith(error), reply


def test_attach_after_exit_gets_reply_then_eof(h: Harness) -> None:
    # the init exits, a descendant keeps stdout open: the monitor drains for 2 s
    mon = h.launch("(exec sleep 1.5) & echo bye")
    early, _ = mon.attach()
    mon.start()
    deadline = time.monotonic() + 5
    while not mon.ctl({"op": "ping"})["exited"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    late, reply = mon.attach(stdin=True)
    assert _without_log_position(reply, mon) == {"ok": True, "tty": False}
    assert read_all(late) == b""
    assert demux(read_all(early))[1] == b"bye\n"
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 0


def test_tty_raw_stdin_and_resize(h: Harness) -> None:
    mon = h.launch("stty size; read line; echo got:$line; exit 5", tty=True, stdin=True)
    assert mon.ctl({"op": "resize", "height": 40, "width": 120}) == {"ok": True}
    sock, reply = mon.attach(stdin=True, stdout=True, stderr=True)
    assert _without_log_position(reply, mon) == {"ok": True, "tty": True}
    mon.start()
    seen = b""
    sock.settimeout(10)
    while b"40 120" not in seen:
        chunk = sock.recv(65536)
        assert chunk, seen
        seen += chunk
    sock.sendall(b"hello\n")
    seen += read_all(sock)
    assert b"\x00" not in seen[:8]  # raw, no frames
    assert b"40 120\r\n" in seen and b"got:hello\r\n" in seen, seen
    sock.close()
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 5
    log = [json.loads(x) for x in mon.log_path.read_bytes().splitlines()]
    assert {e["stream"] for e in log} == {"stdout"}
    assert "got:hello\r\n" in [e["log"] for e in log]


def test_resize_errors(h: Harness) -> None:
    mon = h.launch("exec sleep 100")
    assert mon.ctl({"op": "resize", "height": 10, "width": 10}) == {
        "error": "the container has no terminal",
        "kind": "bad_request",
    }
    assert mon.ctl({"op": "resize", "height": -1, "width": "x"}) == {
        "error": "invalid terminal size -1x'x'",
        "kind": "bad_request",
    }
    for height, text in ((1.5, "1.5"), (1e16, "1e+16"), (0.0001, "0.0001"), (1e-05, "1e-05")):
        assert mon.ctl({"op": "resize", "height": height}) == {
            "error": f"invalid terminal size {text}xNone",
            "kind": "bad_request",
        }
    assert mon.ctl({"op": "resize", "height": True, "width": False}) == {
        "error": "the container has no terminal",  # bools are ints to Python
        "kind": "bad_request",
    }


def test_stdin_through_attach_and_stdin_once(h: Harness) -> None:
    mon = h.launch("cat; echo done >&2", stdin=True, stdin_once=True)
    sock, _ = mon.attach(stdin=True, stdout=True, stderr=True)
    mon.start()
    sock.sendall(b"line one\n")
    sock.sendall(b"x" * 200000)
    sock.shutdown(socket.SHUT_WR)  # stdin-once: the container's stdin closes after flushing
    got = demux(read_all(sock))
    assert got[1] == b"line one\n" + b"x" * 200000
    assert got[2] == b"done\n"
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 0


def test_stdin_without_stdin_once_stays_open(h: Harness) -> None:
    mon = h.launch("read a; echo a=$a; read b; echo b=$b", stdin=True, stdin_once=False)
    first, _ = mon.attach(stdin=True)
    mon.start()
    first.sendall(b"1\n")
    first.shutdown(socket.SHUT_WR)
    first.settimeout(10)
    assert demux(first.recv(4096))[1] == b"a=1\n"
    second, _ = mon.attach(stdin=True)  # stdin still open: a second client writes
    second.sendall(b"2\n")
    assert demux(read_all(second))[1] == b"b=2\n"
    first.close()
    second.close()
    assert mon.wait() == 0


def test_stdin_backpressure(h: Harness) -> None:
    """A container that does not read its stdin: the monitor stops reading the client too."""
    mon = h.launch("exec sleep 100", stdin=True)
    sock, _ = mon.attach(stdin=True)
    mon.start()
    sock.setblocking(False)
    sent = 0
    block = b"i" * 65536
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            sent += sock.send(block)
        except BlockingIOError:
            time.sleep(0.1)
            try:
                sent += sock.send(block)
            except BlockingIOError:
                break
    assert sent < 8 << 20, sent  # held back, not queued without bound
    assert mon.memory()["Rss"] < 8192
    sock.close()
    assert mon.ctl({"op": "ping"})["exited"] is False
    assert mon.ctl({"op": "kill", "signal": 9}) == {"ok": True}
    assert mon.wait() == 0


def test_kill_single(h: Harness) -> None:
    mon = h.launch("exec sleep 100")
    assert mon.ctl({"op": "kill", "signal": 0})["error"] == "invalid signal 0"
    assert mon.ctl({"op": "kill", "signal": "9"})["error"] == "invalid signal '9'"
    assert mon.ctl({"op": "kill", "signal": 65}) == {
        "error": "invalid signal 65",
        "kind": "bad_request",
    }
    mon.start()
    assert mon.ctl({"op": "kill", "signal": 9, "all": False}) == {"ok": True}
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 137


def test_kill_all_with_cgroup_procs(h: Harness) -> None:
    pids = h.root / "sleeper.pid"
    procs = h.root / "cgroup.procs"
    script = f"sleep 100 & echo $! > {pids}; echo started; wait"
    mon = h.launch(script, extra=["--cgroup-procs", str(procs)])
    sock, _ = mon.attach()
    mon.start()
    sock.settimeout(10)
    assert demux(sock.recv(4096))[1] == b"started\n"
    sleeper = int(pids.read_text())
    h.pids.append(sleeper)
    procs.write_text(f"{mon.init_pid}\n{sleeper}\n")
    assert mon.ctl({"op": "kill", "signal": 9, "all": True}) == {"ok": True}
    sock.close()
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 137
    assert not _alive(sleeper)


def test_kill_all_with_argv(h: Harness) -> None:
    seen = h.root / "kill-argv"
    tool = h.root / "fake-kill"
    tool.write_text(f'#!/bin/sh\necho "$@" > {seen}\nkill -"$3" "$2"\n')
    tool.chmod(0o755)
    failing = h.root / "failing-kill"
    failing.write_text("#!/bin/sh\necho 'container not running' >&2\nexit 1\n")
    failing.chmod(0o755)
    mon = h.launch("exec sleep 100", extra=["--kill-all-arg", str(failing), "--kill-all-arg", "x"])
    assert mon.ctl({"op": "kill", "signal": 15, "all": True}) == {
        "error": "container not running",
        "kind": "not_running",
    }
    mon2 = h.launch("exec sleep 100", extra=["--kill-all-arg", str(tool)])
    # the fake kill gets: <the kill-all args> + [signal]; here "$2" must be the pid
    os.unlink(tool)
    # and it starts with SIGPIPE at its default, though a Python parent ignored it
    tool.write_text(
        f'#!/bin/sh\necho "$@" > {seen}\ngrep SigIgn /proc/$$/status >> {seen}\n'
        f'kill -"$1" {mon2.init_pid}\n'
    )
    tool.chmod(0o755)
    mon2.start()
    assert mon2.ctl({"op": "kill", "signal": 9, "all": 1}) == {"ok": True}
    assert mon2.wait() == 0
    assert seen.read_text() == "9\nSigIgn:\t0000000000000000\n"
    assert mon2.exit_status().exit_code == 137


def test_signal_death(h: Harness) -> None:
    mon = h.launch("kill -9 $$")
    mon.start()
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 137


@pytest.mark.parametrize("sig", ["TERM", "INT", "QUIT"])
def test_signals_to_the_monitor_are_forwarded(h: Harness, sig: str) -> None:
    script = f"trap 'echo {sig}; exit 42' {sig}; echo ready; while :; do sleep 0.05; done"
    mon = h.launch(script)
    sock, _ = mon.attach()
    mon.start()
    sock.settimeout(10)
    assert demux(sock.recv(4096))[1] == b"ready\n"
    os.kill(mon.pid, getattr(signal, f"SIG{sig}"))  # forwarded to the init; the monitor stays
    os.kill(mon.pid, signal.SIGHUP)  # ignored (handled)
    assert demux(read_all(sock))[1] == f"{sig}\n".encode()
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 42


def test_start_errors(h: Harness) -> None:
    mon = h.launch("exit 0")
    os.unlink(mon.state / "exec.fifo")
    assert mon.ctl({"op": "start"}) == {
        "error": "cannot start a container that has stopped",
        "kind": "not_running",
    }
    mon2 = h.launch("exec sleep 100")
    mon2.start()
    assert mon2.ctl({"op": "start"}) == {
        "error": "the container is already started",
        "kind": "bad_request",
    }
    assert mon2.ctl({"op": "ping"})["started"] is True
    assert mon2.ctl({"op": "kill", "signal": 9}) == {"ok": True}
    assert mon2.wait() == 0


def test_start_with_argv(h: Harness) -> None:
    """Without --start-fifo, start runs the --start-arg argv (the runtime's start)."""
    tool = h.root / "start-tool"
    seen = h.root / "start-argv"
    tool.write_text(f'#!/bin/sh\necho "$@" > {seen}\nprintf 0 > "$2" && rm -f "$2"\n')
    tool.chmod(0o755)
    failing = h.root / "failing-start"
    failing.write_text(
        "#!/bin/sh\necho 'some noise' >&2\n"
        "echo 'exec: \"nope\": executable file not found in $PATH' >&2\nexit 1\n"
    )
    failing.chmod(0o755)
    mon = h.launch("exec sleep 100", extra=["--start-arg", str(failing)], start_fifo=False)
    assert mon.ctl({"op": "start"}) == {
        "error": 'exec: "nope": executable file not found in $PATH',
        "kind": "not_found",
    }
    assert mon.ctl({"op": "ping"})["started"] is False
    mon2 = h.launch(
        "echo started",
        extra=["--start-arg", str(tool), "--start-arg", "start", "--start-arg", ""],
        start_fifo=False,
    )
    # the fifo's path is known only now: a second launch-time argument would not have it
    os.unlink(tool)
    fifo = mon2.state / "exec.fifo"
    # (it leaves a process behind that holds its stderr: start does not wait for that one)
    tool.write_text(
        f'#!/bin/sh\necho "$@" > {seen}\nsleep 3 &\necho $! > {seen}.pid\n'
        f"printf 0 > {fifo} && rm -f {fifo}\n"
    )
    tool.chmod(0o755)
    sock, _ = mon2.attach()
    began = time.monotonic()
    mon2.start()
    assert time.monotonic() - began < 2
    h.pids.append(int(Path(f"{seen}.pid").read_text()))
    assert demux(read_all(sock))[1] == b"started\n"
    assert seen.read_text() == "start \n"
    assert mon2.wait() == 0
    mon3 = h.launch("exec sleep 100", start_fifo=False)
    assert mon3.ctl({"op": "start"})["kind"] == "runtime"
    assert mon3.ctl({"op": "kill", "signal": 9}) == {"ok": True}
    assert mon3.wait() == 0


def test_ctl_bad_requests(h: Harness) -> None:
    mon = h.launch("exec sleep 100")
    cases = {
        b"\n": "bad request: Expecting value: line 1 column 1 (char 0)",
        b'{"op": 1\n': "bad request: Expecting ',' delimiter: line 1 column 9 (char 8)",
        b"[1]x\n": "bad request: Extra data: line 1 column 4 (char 3)",
        b'{"op": "\\x"}\n': "bad request: Invalid \\escape: line 1 column 9 (char 8)",
        b"\xff\n": "bad request: 'utf-8' codec can't decode byte 0xff in position 0: "
        "invalid start byte",
        b"[1]\n": "a request is a JSON object",
        b'{"op": "nope"}\n': "unknown op 'nope'",
        b'{"op": null}\n': "unknown op None",
        b"{}\n": "unknown op None",
        b'{"op": ["ping"]}\n': "unknown op ['ping']",
        b'{"op": "it\'s"}\n': 'unknown op "it\'s"',
    }
    for line, error in cases.items():
        out = mon.ctl_raw(line)
        assert json.loads(out) == {"error": error, "kind": "bad_request"}, (line, out)
    # malformed JSON: Python's json.loads' own message
    for bad in (
        b'{"a":1,}',
        b'{"a":1 "b"}',
        '{"é": x}'.encode(),
        b'\xef\xbb\xbf{"a": x}',
        b"[1,]",
        b'{"a": tru}',
        b'{"a": -}',
        b'{"a": 01}',
        b'{"a": 1.}',
        b'{"a": "\t"}',
        b'{"a": "\\u12"}',
        b'{"a": "\\ud800\\u12"}',
        b'{"a": "abc',
        b'{"a": "abc\\',
        b'{"a"',
        b'{"a":',
        b"{",
        b"[",
        b'{"a": [1 2]}',
        b'{"a": {"b": 1,}}',
        b"  ",
        b"nul",
        b"-Infinity x",
        b'{"a": 1e}',
        b'{"a": "\xc3\xa9" x}',
        b"\xc3(",
        b"\xe2\x82",
        b"\xe2\x82(",
        b"\xf0\x9f\x98",
        b'{"a": 1}\xed\xa0\x80',
        b"\xf5",
    ):
        try:
            json.loads(bad)
        except ValueError as exc:
            want = f"bad request: {exc}"
        else:
            raise AssertionError(bad)
        assert json.loads(mon.ctl_raw(bad + b"\n")) == {"error": want, "kind": "bad_request"}, bad
    # op names of all sorts: Python's repr() in json.dumps
    rng = random.Random(7)
    chars = "aZ09 '\"\\\n\r\t\x00\x1b\x7f\x80\x9f\xa0\xad\xe9\xff\u0100\u2028\u20ac\u4e2d\U0001f600"
    for _ in range(200):
        op = "".join(rng.choices(chars, k=rng.randrange(0, 8)))
        want = json.dumps({"error": f"unknown op {op!r}", "kind": "bad_request"}) + "\n"
        if op in ("ping", "start", "kill", "resize", "exec", "exec_resize"):
            continue
        assert mon.ctl_raw(json.dumps({"op": op}).encode() + b"\n") == want.encode(), op
    # what Python's json.dumps sends back, byte for byte (", " and ": ", ASCII only)
    out = mon.ctl_raw(b'{"op": "p\\u00e9"}\n')
    assert out == b'{"error": "unknown op \'p\\u00e9\'", "kind": "bad_request"}\n'
    # a request split in pieces, and escaped op names
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(mon.state / "ctl.sock"))
        s.sendall(b'{"op"')
        time.sleep(0.05)
        s.sendall(b': "\\u0070ing"}\n')
        assert json.loads(read_all(s))["ok"] is True
    # a half-closed connection without a request: closed without a reply
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(mon.state / "ctl.sock"))
        s.shutdown(socket.SHUT_WR)
        assert read_all(s) == b""


def test_exec_is_forwarded_to_the_zygote(h: Harness) -> None:
    mon = h.launch("exec sleep 100")
    req = {"op": "exec", "exec_id": "e1", "process": {"args": ["true"]}, "tty": False}
    assert mon.ctl(req) == {"error": "container c1 is not running", "kind": "not_running"}
    bad = dict(req, exec_id="-x")
    assert mon.ctl(bad) == {"error": "invalid exec_id '-x'", "kind": "bad_request"}
    assert mon.ctl(dict(req, process=[])) == {
        "error": "exec: process must be an OCI process object",
        "kind": "bad_request",
    }
    mon.start()
    line = json.dumps(dict(req, stdin=True)).encode()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(str(mon.state / "ctl.sock"))
        s.sendall(line + b"\nearly stdin")
        # the fake session answers on the passed connection, echoing the bytes it was handed
        assert read_all(s) == b'{"pid": 4242}\nearly stdin'
    msg = h.zygote.wait_for("exec")
    assert msg == {
        "op": "exec",
        "state_dir": str(mon.state),
        "request": line.decode(),
        "rest": b"early stdin".hex(),
    }
    assert h.zygote.fd_counts[h.zygote.messages.index(msg)] == 1
    assert mon.ctl({"op": "ping"})["exited"] is False


def test_exec_resize_of_an_unknown_exec(h: Harness) -> None:
    """The C loop runs no execs (the zygote's sessions do): answered as Python does for one."""
    mon = h.launch("exec sleep 100")
    req = {"op": "exec_resize", "exec_id": "e1", "height": 10, "width": 20}
    assert mon.ctl(req) == {"error": "no running exec 'e1'", "kind": "not_running"}
    assert mon.ctl(dict(req, width=70000)) == {
        "error": "invalid terminal size 10x70000",
        "kind": "bad_request",
    }


def test_delete_error_and_fallback(h: Harness) -> None:
    h.zygote.delete_reply = b'{"error": "delete: it broke", "kind": "runtime"}\n'
    mon = h.launch("exit 0")
    mon.start()
    assert mon.wait() == 0
    assert "delete: it broke" in mon.monitor_log()
    # no zygote: --delete-arg is execve()d at the end (same pid), after exit.json
    marker = h.root / "deleted"
    tool = h.root / "delete-tool"
    tool.write_text(f'#!/bin/sh\necho "$@" > {marker}\ntest -e "$2/exit.json"\n')
    tool.chmod(0o755)
    missing = str(h.root / "no-zygote.sock")
    state = h.root / f"c{h.n + 1}"
    extra = ["--delete-arg", str(tool), "--delete-arg", "delete", "--delete-arg", str(state)]
    mon2 = h.launch("exit 0", zygote=missing, extra=extra)
    mon2.start()
    assert mon2.wait() == 0
    assert marker.read_text() == f"delete {state}\n"
    assert "running" in mon2.monitor_log()


def test_exec_without_zygote(h: Harness) -> None:
    missing = str(h.root / "no-zygote.sock")
    mon = h.launch("exec sleep 100", zygote=missing)
    mon.start()
    req = {"op": "exec", "exec_id": "e1", "process": {"args": ["true"]}, "tty": False}
    assert mon.ctl(req) == {
        "error": f"exec: the monitor zygote is not running ({missing})",
        "kind": "runtime",
    }
    assert mon.ctl({"op": "kill", "signal": 9}) == {"ok": True}
    assert mon.wait() == 0  # no zygote for the delete either: noted in monitor.log
    assert "delete" in mon.monitor_log()
    assert mon.exit_status().exit_code == 137


def test_after_exit(h: Harness) -> None:
    mon = h.launch("(exec sleep 2) & exit 7")  # a descendant holds stdout: 2 s of draining
    mon.start()
    deadline = time.monotonic() + 5
    while not (ping := mon.ctl({"op": "ping"}))["exited"]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert ping["started"] is True
    assert mon.ctl({"op": "start"}) == {"error": "the container has exited", "kind": "not_running"}
    assert mon.ctl({"op": "kill", "signal": 9}) == {
        "error": "the container is not running",
        "kind": "not_running",
    }
    assert mon.wait() == 0
    assert mon.exit_status().exit_code == 7


def test_oom_counter(h: Harness) -> None:
    cg = h.root / "memcg"
    cg.mkdir()
    (cg / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 2\noom_kill 2\n")
    mon = h.launch("exit 0", extra=["--oom-cgroup", str(cg), "--oom-base", "1"])
    mon.start()
    assert mon.wait() == 0
    assert mon.exit_status().oom_killed is True
    mon2 = h.launch("exit 0", extra=["--oom-cgroup", str(cg), "--oom-base", "2"])
    mon2.start()
    assert mon2.wait() == 0
    assert mon2.exit_status().oom_killed is False


def test_backpressure_and_slow_client(h: Harness) -> None:
    """A client that does not read: output stops at the high-water mark, the log lags with it."""
    mon = h.launch("head -c 8000000 /dev/zero | tr '\\0' 'a'; echo; echo end")
    slow, _ = mon.attach()
    mon.start()
    time.sleep(1.0)
    size = mon.log_path.stat().st_size if mon.log_path.exists() else 0
    assert size < 4_000_000, size  # paused behind the client, not everything read
    assert mon.ctl({"op": "ping"})["exited"] is False
    got = demux(read_all(slow, timeout=30))
    assert got[1] == b"a" * 8000000 + b"\nend\n"
    slow.close()
    assert mon.wait() == 0
    messages = [json.loads(x)["log"] for x in mon.log_path.read_bytes().splitlines()]
    assert "".join(messages) == "a" * 8000000 + "\nend\n"


def _cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_no_fd_leak_and_no_busy_loop(h: Harness) -> None:
    mon = h.launch("exec sleep 100")
    base = len(os.listdir(f"/proc/{mon.pid}/fd"))
    for _ in range(200):
        assert mon.ctl({"op": "ping"})["ok"] is True
    socks = [mon.attach()[0] for _ in range(50)]
    for s in socks:
        s.close()
    for _ in range(20):  # clients that connect and go away without a word
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(mon.state / "ctl.sock"))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(mon.state / "ctl.sock"))
        s.sendall(b'{"op": "ping"}')  # no newline, then gone
    assert mon.ctl({"op": "ping"})["ok"] is True
    # the monitor closes each gone client when its poll() sees the hang-up: give a loaded
    # machine time; a leaked fd stays for good
    deadline = time.monotonic() + 10
    while len(os.listdir(f"/proc/{mon.pid}/fd")) != base and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir(f"/proc/{mon.pid}/fd")) == base, os.listdir(f"/proc/{mon.pid}/fd")
    before = _cpu_ticks(mon.pid)
    time.sleep(1.0)
    assert _cpu_ticks(mon.pid) - before <= 1  # idle: asleep in poll()
    assert mon.ctl({"op": "kill", "signal": 9}) == {"ok": True}
    assert mon.wait() == 0


def test_memory_of_an_idle_monitor(h: Harness) -> None:
    mon = h.launch("echo up; exec sleep 100")
    sock, _ = mon.attach()
    mon.start()
    sock.settimeout(10)
    assert demux(sock.recv(4096))[1] == b"up\n"
    time.sleep(0.2)
    mem = mon.memory()
    private = mem["Private_Clean"] + mem["Private_Dirty"]
    print(
        f"\nbh-monitor idle with 1 attached client: Rss {mem['Rss']} KiB, "
        f"Pss {mem['Pss']} KiB, private (USS) {private} KiB"
    )
    assert mem["Rss"] < 4096, mem
    assert private < 1024, mem
    sock.close()
    assert mon.ctl({"op": "kill", "signal": 9}) == {"ok": True}
    assert mon.wait() == 0
