"""The containers API's pure helpers: detach keys, the stdin scanner, prune's ``until``."""

from __future__ import annotations

import pytest

from bulkhead.api.containers import (
    DEFAULT_DETACH_KEYS,
    DetachScanner,
    _until_seconds,
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


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1700000000", 1_700_000_000.0),
        ("1700000000.5", 1_700_000_000.5),
        ("24h", 1_000_000.0 - 86400),
        ("1h30m", 1_000_000.0 - 5400),
        ("90s", 1_000_000.0 - 90),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14", 1_699_920_000.0),
    ],
)
def test_prune_until(value: str, expected: float) -> None:
    assert _until_seconds(value, now=1_000_000.0) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["soon", "1x", ""])
def test_prune_until_rejects(value: str) -> None:
    with pytest.raises(BadRequest, match="invalid until filter"):
        _until_seconds(value, now=0)
