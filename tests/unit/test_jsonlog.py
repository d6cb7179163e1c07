"""The json-file log: Docker's line format, 16 KiB messages, rotation, and the reader."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest

from bulkhead.engine.jsonlog import (
    MAX_MESSAGE,
    JsonLogWriter,
    fixed_time,
    follow_logs,
    log_files,
    log_position,
    log_time,
    parse_time,
)

T0 = 1_700_000_000 * 10**9  # 2023-11-14T22:13:20Z


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def collect(path: Path, **kwargs: Any) -> list[tuple[int, bytes]]:
    async def go() -> list[tuple[int, bytes]]:
        return [item async for item in follow_logs(path, **kwargs)]

    return asyncio.run(go())


def test_lines_are_dockers_format(tmp_path: Path) -> None:
    log = tmp_path / "c-json.log"
    w = JsonLogWriter(log)
    w.write(1, b"hello\nwor", now_ns=T0 + 5)
    w.write(2, b"oops\n", now_ns=T0 + 6)
    w.write(1, b"ld\n", now_ns=T0 + 7)
    w.close()
    raw = log.read_text().splitlines()
    assert raw[0] == '{"log":"hello\\n","stream":"stdout","time":"2023-11-14T22:13:20.000000005Z"}'
    assert [(e["stream"], e["log"]) for e in entries(log)] == [
        ("stdout", "hello\n"),
        ("stderr", "oops\n"),
        ("stdout", "world\n"),
    ]


def test_partial_line_is_written_at_close(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log)
    w.write(1, b"no newline")
    assert log.read_text() == ""
    w.close()
    assert [e["log"] for e in entries(log)] == ["no newline"]


def test_long_lines_are_cut_at_16k(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log)
    w.write(1, b"a" * (MAX_MESSAGE * 2 + 10) + b"\nb\n")
    w.close()
    logs = [e["log"] for e in entries(log)]
    assert logs == ["a" * MAX_MESSAGE, "a" * MAX_MESSAGE, "a" * 10 + "\n", "b\n"]


def test_invalid_utf8_is_replaced(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log)
    w.write(1, b"\xff\xfeok\n")
    w.close()
    assert entries(log)[0]["log"] == "\ufffd\ufffdok\n"


def test_rotation_keeps_max_files(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log, max_size=300, max_files=3)
    for i in range(50):
        w.write(1, f"line {i:03d}\n".encode())
    w.close()
    files = log_files(log)
    assert [Path(f).name for f in files] == ["c.log.2", "c.log.1", "c.log"]
    assert all(Path(f).stat().st_size <= 300 for f in files)
    got = [e["log"] for f in files for e in entries(Path(f))]
    assert got[-1] == "line 049\n"
    first = int(got[0].split()[1])
    assert got == [f"line {i:03d}\n" for i in range(first, 50)]


def test_rotation_with_one_file_truncates(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log, max_size=200, max_files=1)
    for i in range(20):
        w.write(1, f"line {i}\n".encode())
    w.close()
    assert log_files(log) == [str(log)]
    assert log.stat().st_size <= 200
    assert entries(log)[-1]["log"] == "line 19\n"


def test_writer_appends_to_an_existing_log(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    JsonLogWriter(log).write(1, b"one\n")
    w = JsonLogWriter(log, max_size=10_000)
    w.write(1, b"two\n")
    w.close()
    assert [e["log"] for e in entries(log)] == ["one\n", "two\n"]
    assert w.size == log.stat().st_size


def test_time_format_round_trips() -> None:
    assert log_time(T0 + 120_000) == "2023-11-14T22:13:20.00012Z"  # Go's RFC3339Nano
    assert log_time(T0) == "2023-11-14T22:13:20Z"
    assert fixed_time(T0 + 120_000) == "2023-11-14T22:13:20.000120000Z"
    assert parse_time("2023-11-14T22:13:20.000120000Z") == T0 + 120_000
    assert parse_time("2023-11-14T22:13:20.00012Z") == T0 + 120_000
    assert parse_time("2023-11-14T22:13:20Z") == T0
    assert parse_time("2023-11-15T00:13:20+02:00") == T0
    with pytest.raises(ValueError, match="invalid log time 'yesterday'"):
        parse_time("yesterday")


def _sample(tmp_path: Path) -> Path:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log, max_size=250, max_files=5)
    for i in range(10):
        w.write(1 if i % 2 == 0 else 2, f"m{i}\n".encode(), now_ns=T0 + i * 10**9)
    w.close()
    assert len(log_files(log)) > 1  # the reader must cross rotated files
    return log


def test_reader_reads_rotated_files_in_order_and_filters_streams(tmp_path: Path) -> None:
    log = _sample(tmp_path)
    assert [d for _, d in collect(log)] == [f"m{i}\n".encode() for i in range(10)]
    assert collect(log, stderr=False) == [(1, f"m{i}\n".encode()) for i in range(0, 10, 2)]
    assert collect(log, stdout=False) == [(2, f"m{i}\n".encode()) for i in range(1, 10, 2)]


def test_reader_tail_since_until_timestamps(tmp_path: Path) -> None:
    log = _sample(tmp_path)
    assert [d for _, d in collect(log, tail=3)] == [b"m7\n", b"m8\n", b"m9\n"]
    assert collect(log, tail=0) == []
    assert [d for _, d in collect(log, tail=2, stdout=False)] == [b"m7\n", b"m9\n"]
    since = (T0 + 7 * 10**9) / 1e9
    assert [d for _, d in collect(log, since=since)] == [b"m7\n", b"m8\n", b"m9\n"]
    until = (T0 + 1 * 10**9) / 1e9
    assert [d for _, d in collect(log, until=until)] == [b"m0\n", b"m1\n"]
    stamped = collect(log, tail=1, timestamps=True)
    assert stamped == [(2, b"2023-11-14T22:13:29.000000000Z m9\n")]


def test_reader_of_a_missing_log_yields_nothing(tmp_path: Path) -> None:
    assert collect(tmp_path / "none.log") == []


def test_follow_sees_new_lines_across_rotation_until_stopped(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log, max_size=200, max_files=3)
    w.write(1, b"before\n")

    async def go() -> list[bytes]:
        stop = asyncio.Event()
        got: list[bytes] = []

        async def reader() -> None:
            async for _, data in follow_logs(log, follow=True, stop_event=stop, poll_interval=0.01):
                got.append(data)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        for i in range(12):  # several rotations
            w.write(1, f"live {i}\n".encode())
            await asyncio.sleep(0.02)
        w.write(2, b"last\n")
        stop.set()
        await asyncio.wait_for(task, 5)
        return got

    got = asyncio.run(go())
    w.close()
    assert got == [b"before\n"] + [f"live {i}\n".encode() for i in range(12)] + [b"last\n"]


def test_follow_with_tail_zero_only_shows_new_lines(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log)
    w.write(1, b"old\n")

    async def go() -> list[bytes]:
        stop = asyncio.Event()
        got: list[bytes] = []

        async def reader() -> None:
            async for _, data in follow_logs(
                log, follow=True, tail=0, stop_event=stop, poll_interval=0.01
            ):
                got.append(data)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        w.write(1, b"new\n")
        await asyncio.sleep(0.05)
        stop.set()
        await asyncio.wait_for(task, 5)
        return got

    assert asyncio.run(go()) == [b"new\n"]
    w.close()


def test_follow_wakes_on_writes_and_stop_without_polling(tmp_path: Path) -> None:
    """inotify: with a 30 s poll interval, new lines and the stop still arrive at once."""
    log = tmp_path / "c.log"
    w = JsonLogWriter(log, max_size=150, max_files=2)

    async def go() -> tuple[list[bytes], float]:
        stop = asyncio.Event()
        got: list[bytes] = []

        async def reader() -> None:
            async for _, data in follow_logs(log, follow=True, stop_event=stop, poll_interval=30):
                got.append(data)

        task = asyncio.create_task(reader())
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(5):  # crosses rotations too
            w.write(1, f"msg {i}\n".encode())
            while len(got) < i + 1 and loop.time() - t0 < 5:
                await asyncio.sleep(0.005)
        took = loop.time() - t0
        stop.set()
        await asyncio.wait_for(task, 2)
        return got, took

    got, took = asyncio.run(go())
    w.close()
    assert got == [f"msg {i}\n".encode() for i in range(5)]
    assert took < 2


def test_upto_stops_where_the_log_was_even_after_growth_and_rotation(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log, max_size=250, max_files=5)
    for i in range(6):
        w.write(1, f"m{i}\n".encode(), now_ns=T0 + i * 10**9)
    mark = log_position(log)
    assert mark is not None
    for i in range(6, 12):  # written after the mark: rotates the marked file away too
        w.write(1, f"m{i}\n".encode(), now_ns=T0 + i * 10**9)
    w.close()
    assert os.stat(log).st_ino != mark.inode
    assert [d for _, d in collect(log, upto=mark)] == [f"m{i}\n".encode() for i in range(6)]
    assert len(collect(log)) == 12


def test_upto_of_an_empty_log_replays_the_rotated_files_only(tmp_path: Path) -> None:
    log = tmp_path / "c.log"
    log.write_bytes(b"")
    mark = log_position(log)
    w = JsonLogWriter(log)
    w.write(1, b"later\n", now_ns=T0)
    w.close()
    assert collect(log, upto=mark) == []
    assert log_position(tmp_path / "missing.log") is None


@pytest.mark.parametrize(
    ("message", "body"),
    [  # moby's jsonlogbytes_test.go cases, and what its rules give for the rest
        (b'"A log line with \\"', rb"\"A log line with \\\""),
        (b"A log line with \r", rb"A log line with \r"),
        (b"A log line with & < >", rb"A log line with \u0026 \u003c \u003e"),
        ("utf8 : 🚀 ψ ω β\n".encode(), "utf8 : 🚀 ψ ω β".encode() + rb"\n"),
        ("\u2028 \u2029".encode(), rb"\u2028 \u2029"),
        (b"\xaf", rb"\ufffd"),
        (b"\x7f'", b"\x7f'"),
        (b"\t\x08\x0c\x00\x1b", rb"\u0009\u0008\u000c\u0000\u001b"),
        # each byte of a torn or invalid sequence on its own; a real U+FFFD stays raw
        (b"\xe2\x82A\xed\xa0\x80\xc0\x80", rb"\ufffd\ufffdA" + rb"\ufffd" * 5),
        ("\ufffd".encode(), "\ufffd".encode()),
    ],
)
def test_lines_escape_as_dockers_json_file(tmp_path: Path, message: bytes, body: bytes) -> None:
    log = tmp_path / "c.log"
    w = JsonLogWriter(log)
    w.write(2, message, now_ns=T0)
    w.flush(now_ns=T0)  # the messages without a newline
    w.close()
    want = b'{"log":"' + body + b'","stream":"stderr","time":"2023-11-14T22:13:20Z"}\n'
    assert log.read_bytes() == want
    # and the reader gives the text back, each bad byte as one U+FFFD
    text = message.decode("utf-8", "surrogateescape")
    text = "".join("\ufffd" if "\udc80" <= c <= "\udcff" else c for c in text)
    assert collect(log) == [(2, text.encode())]


def _follow_while_rotating(log: Path, w: JsonLogWriter, later: list[bytes]) -> list[bytes]:
    """Read the first message, then (the reader busy) write ``later``, then drain to the end."""

    async def go() -> list[bytes]:
        stop = asyncio.Event()
        agen = follow_logs(log, follow=True, stop_event=stop, poll_interval=0.01)
        got = [(await agen.__anext__())[1]]  # the reader holds the first file open
        for data in later:
            w.write(1, data)
        stop.set()
        got += [data async for _, data in agen]
        return got

    return asyncio.run(go())


def test_follow_reads_every_file_rotated_while_it_was_busy(tmp_path: Path) -> None:
    """Three rotations between two reads: the files are followed by inode, none skipped."""
    log = tmp_path / "c.log"
    w = JsonLogWriter(log, max_size=300, max_files=5)
    w.write(1, b"m00\n")
    later = [f"m{i:02d}\n".encode() for i in range(1, 13)]
    got = _follow_while_rotating(log, w, later)
    w.close()
    assert len(log_files(log)) == 4  # it did rotate three times meanwhile
    assert got == [b"m00\n", *later]


def test_follow_that_fell_behind_goes_on_from_the_oldest_file_left(tmp_path: Path) -> None:
    """More rotations than files kept: what was deleted is lost (as in Docker), nothing repeats."""
    log = tmp_path / "c.log"
    w = JsonLogWriter(log, max_size=300, max_files=2)
    w.write(1, b"m00\n")
    later = [f"m{i:02d}\n".encode() for i in range(1, 30)]
    got = _follow_while_rotating(log, w, later)
    w.close()
    kept = [d for _, d in collect(log)]
    assert got[0] == b"m00\n" and got[-len(kept) :] == kept
    assert got == sorted(set(got)) and set(got) <= {b"m00\n", *later}
