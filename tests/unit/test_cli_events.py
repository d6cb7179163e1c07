"""``bulkhead events``: docker's default line, ``--format`` over Go's field names, relative times."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bulkhead.cli.events import message, pretty, rfc3339_nano_fixed
from bulkhead.cli.fmt import parse_since
from bulkhead.cli.template import Template

DOC: dict[str, Any] = {
    "Type": "container",
    "Action": "start",
    "Actor": {"ID": "abc", "Attributes": {"name": "x", "image": "busybox", "a": "1"}},
    "scope": "local",
    "time": 1704067200,
    "timeNano": 1704067200123456789,
    "status": "start",
    "id": "abc",
    "from": "busybox",
}


@pytest.fixture
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if old is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = old
    time.tzset()


def test_pretty_is_dockers_line(utc: None) -> None:
    assert pretty(DOC) == (
        "2024-01-01T00:00:00.123456789Z container start abc (a=1, image=busybox, name=x)"
    )
    bare = {"Type": "image", "Action": "pull", "Actor": {"ID": "b"}, "time": 1704067200}
    assert pretty(bare) == "2024-01-01T00:00:00.000000000Z image pull b"


def test_time_in_the_local_zone() -> None:
    old = os.environ.get("TZ")
    os.environ["TZ"] = "XXX-02"  # two hours east of UTC
    time.tzset()
    try:
        assert rfc3339_nano_fixed(1704067200 * 10**9 + 5) == "2024-01-01T02:00:00.000000005+02:00"
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


def test_format_sees_go_field_names() -> None:
    m = message(DOC)
    out = Template("{{.Type}} {{.Action}} {{.Actor.ID}} {{.Scope}} {{.TimeNano}} {{.Status}}")
    assert out.execute(m) == "container start abc local 1704067200123456789 start"
    assert Template("{{.Actor.Attributes.name}}").execute(m) == "x"
    # a field of the API 1.52+ message that is absent prints Go's zero value
    assert Template("[{{.Status}}]").execute(message({**DOC, "status": None})) == "[]"


def test_format_json_is_gos_encoding_of_the_message() -> None:
    line = Template("{{json .}}").execute(message(DOC))
    assert line == (
        '{"status":"start","id":"abc","from":"busybox","Type":"container","Action":"start",'
        '"Actor":{"ID":"abc","Attributes":{"a":"1","image":"busybox","name":"x"}},'
        '"scope":"local","time":1704067200,"timeNano":1704067200123456789}'
    )
    newer = {k: v for k, v in DOC.items() if k not in ("status", "id", "from")}
    assert Template("{{json .}}").execute(message(newer)).startswith('{"Type":"container"')


def test_relative_times_as_the_docker_cli_sends_them() -> None:
    now = 1_700_000_000.0
    assert parse_since("10m", now) == "1699999400"
    assert parse_since("1h30m", now) == "1699994600"
    assert parse_since("-5s", now) == "1700000005"  # a negative duration is ahead of now
    assert parse_since("1700000000.5", now) == "1700000000.5"
    assert parse_since("2023-11-14T22:13:20Z", now) == "1700000000"


def test_events_against_a_daemon_sends_dockers_query_and_stays_lean(tmp_path: Path) -> None:
    from tests.unit.cli_fake_daemon import FakeDaemon
    from tests.unit.test_cli_startup import _assert_lean, _clean_env, _imported

    first = json.dumps(DOC).encode() + b"\n"
    second = json.dumps({**DOC, "Action": "die", "timeNano": DOC["timeNano"] + 1}).encode()
    fake = FakeDaemon(str(tmp_path / "d.sock"))
    try:
        # an event split across chunks is still one line
        fake.route(
            "GET", "/events", (200, [first[:10], first[10:] + second[:5], second[5:] + b"\n"])
        )
        env = _clean_env(BULKHEAD_HOST=fake.host, TZ="UTC")
        modules, proc = _imported(
            ["events", "--since", "1700000000", "--until", "2023-11-14T22:13:21Z",
             "-f", "event=start", "-f", "container=x", "--format", "{{.Action}} {{.Actor.ID}}"],
            env,
        )  # fmt: skip
    finally:
        fake.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == "start abc\ndie abc\n"
    query = fake.requests[-1].query
    assert query["since"] == ["1700000000"] and query["until"] == ["1700000001"]
    assert json.loads(query["filters"][0]) == {"event": {"start": True}, "container": {"x": True}}
    _assert_lean(modules)


def test_events_bad_format_is_refused_before_streaming(tmp_path: Path) -> None:
    from bulkhead.cli.main import main

    assert main(["-H", f"unix://{tmp_path}/none.sock", "events", "--format", "{{.Action"]) == 64
