"""Pull/push progress: docker's lines without a terminal, rich bars with one, errors raised."""

from __future__ import annotations

import io
from typing import Any

import pytest

from bulkhead.cli.progress import StreamError, show, show_bars, show_plain

MESSAGES: list[dict[str, Any]] = [
    {"status": "Pulling from library/busybox", "id": "latest"},
    {"status": "Pulling fs layer", "progressDetail": {}, "id": "abc"},
    {"status": "Downloading", "progressDetail": {"current": 512, "total": 2048}, "id": "abc"},
    {"status": "Download complete", "progressDetail": {}, "id": "abc"},
    {"status": "Pull complete", "progressDetail": {}, "id": "abc"},
    {"status": "Digest: sha256:00"},
    {"status": "Status: Downloaded newer image for busybox:latest"},
]


def test_plain_lines_as_docker_without_a_terminal() -> None:
    out = io.StringIO()
    show_plain(MESSAGES, out)
    assert out.getvalue().splitlines() == [
        "latest: Pulling from library/busybox",
        "abc: Pulling fs layer",
        "abc: Download complete",
        "abc: Pull complete",
        "Digest: sha256:00",
        "Status: Downloaded newer image for busybox:latest",
    ]


def test_error_message_raises() -> None:
    msgs: list[dict[str, Any]] = [
        *MESSAGES[:2],
        {"errorDetail": {"message": "manifest unknown"}, "error": "x"},
    ]
    with pytest.raises(StreamError, match="manifest unknown"):
        show(msgs, io.StringIO())
    with pytest.raises(StreamError, match="manifest unknown"):
        show(msgs, io.StringIO(), quiet=True)


def test_bars_render_every_layer_and_the_final_status() -> None:
    out = io.StringIO()
    show_bars(MESSAGES, out)
    text = out.getvalue()
    assert "abc: Pull complete" in text
    assert "Status: Downloaded newer image for busybox:latest" in text


def test_quiet_prints_nothing() -> None:
    out = io.StringIO()
    show(MESSAGES, out, quiet=True)
    assert out.getvalue() == ""
