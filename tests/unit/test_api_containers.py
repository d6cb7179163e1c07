"""The containers API's pure helpers: detach keys and the stdin scanner."""

from __future__ import annotations

import pytest

from bulkhead.api.containers import (
    DEFAULT_DETACH_KEYS,
    DetachScanner,
    parse_detach_keys,
)
from bulkhead.api.errors import BadRequest


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
