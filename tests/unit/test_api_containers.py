"""The containers API's stream helpers: detach keys, the stdin scanner, and splice
(the hijacked client's connection joined to the monitor's socket)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable

import pytest

from bulkhead.api.containers import (
    DEFAULT_DETACH_KEYS,
    DetachScanner,
    parse_detach_keys,
    splice,
)
from bulkhead.api.errors import BadRequest
from bulkhead.api.routes import RawStream


@pytest.mark.parametrize(
    ("text", "keys"),
    [
        (None, b"\x10\x11"),
        ("", b"\x10\x11"),
        ("ctrl-p,ctrl-q", b"\x10\x11"),
        ("ctrl-x,x", b"\x18x"),
        ("a,b", b"ab"),
        ("ctrl-@,ctrl-[,ctrl-\\,ctrl-],ctrl-^,ctrl-_", bytes([0, 27, 28, 29, 30, 31])),
        ("ctrl-A", b"\x01"),
    ],
)
def test_parse_detach_keys(text: str | None, keys: bytes) -> None:
    assert parse_detach_keys(text) == keys


@pytest.mark.parametrize("text", ["ctrl-", "ctrl-1", "ab", "ctrl-p,,"])
def test_parse_detach_keys_rejects(text: str) -> None:
    with pytest.raises(BadRequest, match="Invalid detach keys"):
        parse_detach_keys(text)


def test_scanner_passes_plain_input_and_detaches_on_the_sequence() -> None:
    s = DetachScanner(DEFAULT_DETACH_KEYS)
    assert s.feed(b"hello\n") == (b"hello\n", False)
    assert s.feed(b"ab\x10\x11cd") == (b"ab", True)


def test_scanner_holds_a_partial_sequence_across_chunks() -> None:
    s = DetachScanner(b"\x10\x11")
    assert s.feed(b"x\x10") == (b"x", False)  # ctrl-p held back
    assert s.feed(b"\x11") == (b"", True)


def test_scanner_releases_a_prefix_that_does_not_continue() -> None:
    s = DetachScanner(b"\x10\x11")
    assert s.feed(b"\x10") == (b"", False)
    assert s.feed(b"y") == (b"\x10y", False)
    assert s.feed(b"\x10\x10\x11") == (b"\x10", True)


def test_scanner_with_longer_and_no_keys() -> None:
    s = DetachScanner(b"abc")
    assert s.feed(b"aab") == (b"a", False)
    assert s.feed(b"x") == (b"abx", False)
    assert s.feed(b"abc") == (b"", True)
    assert DetachScanner(b"").feed(b"\x10\x11") == (b"\x10\x11", False)


# --- splice: the hijacked client <-> the monitor's socket ----------------------------------


Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _pair() -> tuple[Streams, Streams]:
    a, b = socket.socketpair()
    return await asyncio.open_connection(sock=a), await asyncio.open_connection(sock=b)


def run_splice(
    scenario: Callable[[Streams, Streams], Awaitable[None]], *, stdin: bool, tty: bool
) -> None:
    """``scenario(client, monitor)`` drives both far ends while splice runs between them;
    splice must then return (the server closes the client's connection after it)."""

    async def main() -> None:
        (client, server_side), (monitor, api_side) = await _pair(), await _pair()
        stream = RawStream(*server_side)
        task = asyncio.ensure_future(
            splice(stream, *api_side, stdin=stdin, detach_keys=DEFAULT_DETACH_KEYS, tty=tty)
        )
        await asyncio.wait_for(scenario(client, monitor), 5)
        await asyncio.wait_for(task, 5)
        server_side[1].close()
        for _, w in (client, monitor):
            w.close()

    asyncio.run(main())


def test_splice_stdin_eof_is_passed_on_and_output_continues() -> None:
    async def scenario(client: Streams, monitor: Streams) -> None:
        client[1].write(b"input")
        client[1].write_eof()
        assert await monitor[0].read() == b"input"  # then EOF: stdin closed
        monitor[1].write(b"output after stdin ended")
        monitor[1].write_eof()  # the process ended
        assert await client[0].readexactly(24) == b"output after stdin ended"

    run_splice(scenario, stdin=True, tty=False)


def test_splice_tty_eof_ends_the_attach() -> None:
    async def scenario(client: Streams, monitor: Streams) -> None:
        client[1].write_eof()
        assert await monitor[0].read() == b""  # the monitor connection is closed, not half-closed

    run_splice(scenario, stdin=True, tty=True)


def test_splice_without_stdin_ignores_the_clients_half_close() -> None:
    async def scenario(client: Streams, monitor: Streams) -> None:
        client[1].write(b"ignored")
        client[1].write_eof()
        await asyncio.sleep(0.05)
        monitor[1].write(b"still streaming")
        monitor[1].write_eof()
        assert await client[0].readexactly(15) == b"still streaming"
        assert await monitor[0].read() == b""  # nothing of the client's reached stdin

    run_splice(scenario, stdin=False, tty=True)


def test_splice_detach_keys_end_the_attach_without_forwarding_them() -> None:
    async def scenario(client: Streams, monitor: Streams) -> None:
        client[1].write(b"ls\x10\x11more")
        await client[1].drain()
        assert await monitor[0].read() == b"ls"  # then closed: splice returned

    run_splice(scenario, stdin=True, tty=True)


def test_splice_without_a_tty_forwards_the_detach_sequence_as_data() -> None:
    # Docker scans for detach keys on a terminal only: piped bytes are data
    # (100 kB of random input holds ctrl-p ctrl-q about once or twice).
    async def scenario(client: Streams, monitor: Streams) -> None:
        client[1].write(b"ls\x10\x11more")
        client[1].write_eof()
        assert await monitor[0].read() == b"ls\x10\x11more"
        monitor[1].write_eof()

    run_splice(scenario, stdin=True, tty=False)
