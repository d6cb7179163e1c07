"""docker's printing helpers: durations, sizes, timestamps, references, ps columns."""

from __future__ import annotations

import json

import pytest

from bulkhead.cli.client import build_target, socket_from_env
from bulkhead.cli.containers import filters_query, ps_context, split_repo_tag
from bulkhead.cli.flags import UsageError
from bulkhead.cli.fmt import format_time, parse_rfc3339, parse_since
from bulkhead.cli.images import normalize_ref, registry_of
from bulkhead.units import human_duration, human_size


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.5, "Less than a second"),
        (1, "1 second"),
        (59, "59 seconds"),
        (60, "About a minute"),
        (150, "2 minutes"),
        (3600, "About an hour"),
        (3 * 3600, "3 hours"),
        (3 * 86400, "3 days"),
        (20 * 86400, "2 weeks"),
        (90 * 86400, "3 months"),
        (800 * 86400, "2 years"),
    ],
)
def test_human_duration(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0B"), (999, "999B"), (1040000, "1.04MB"), (4096, "4.1kB"), (2.5e9, "2.5GB")],
)
def test_human_size(size: float, text: str) -> None:
    assert human_size(size) == text


def test_rfc3339_with_nanoseconds() -> None:
    assert parse_rfc3339("2024-01-02T03:04:05.123456789Z") == pytest.approx(1704164645.123456789)
    assert parse_rfc3339("2024-01-02T03:04:05+01:00") == 1704161045
    assert parse_rfc3339("0001-01-01T00:00:00Z") == 0
    assert format_time(1704164645) == "2024-01-02 03:04:05 +0000 UTC"


def test_since_relative_absolute_and_unix() -> None:
    assert parse_since("10m", now=1000.0) == "400"
    assert parse_since("1h30m", now=10000.0) == "4600"
    assert parse_since("1700000000.5") == "1700000000.5"
    assert parse_since("2024-01-02T03:04:05Z") == "1704164645"
    with pytest.raises(ValueError):
        parse_since("yesterday")


@pytest.mark.parametrize(
    ("ref", "repo", "tag"),
    [
        ("busybox", "busybox", ""),
        ("busybox:1.36", "busybox", "1.36"),
        ("localhost:5000/team/bb", "localhost:5000/team/bb", ""),
        ("localhost:5000/team/bb:v1", "localhost:5000/team/bb", "v1"),
        ("bb@sha256:00", "bb@sha256:00", ""),
    ],
)
def test_split_repo_tag(ref: str, repo: str, tag: str) -> None:
    assert split_repo_tag(ref) == (repo, tag)


def test_references() -> None:
    assert normalize_ref("busybox") == "busybox:latest"
    assert normalize_ref("localhost:5000/x") == "localhost:5000/x:latest"
    assert normalize_ref("x:1") == "x:1"
    assert registry_of("busybox") == "docker.io"
    assert registry_of("library/busybox") == "docker.io"
    assert registry_of("localhost:5000/x") == "localhost:5000"
    assert registry_of("quay.io/a/b") == "quay.io"


def test_filters_as_docker_sends_them() -> None:
    assert filters_query([]) is None
    assert json.loads(filters_query(["label=a=b", "label=c", "status=exited"]) or "") == {
        "label": {"a=b": True, "c": True},
        "status": {"exited": True},
    }
    with pytest.raises(UsageError, match="bad format of filter"):
        filters_query(["nonsense"])


def test_ps_context_columns() -> None:
    summary = {
        "Id": "a" * 64,
        "Names": ["/web", "/other/link"],
        "Image": "sha256:" + "b" * 64,
        "Command": 'sh -c "echo a very long command line"',
        "Created": 0,
        "State": "exited",
        "Status": "Exited (3) 2 minutes ago",
        "SizeRw": 4096,
        "SizeRootFs": 1040000,
        "Mounts": [{"Name": "vol", "Driver": "local"}, {"Source": "/host", "Driver": ""}],
    }
    ctx = ps_context(summary)
    assert ctx["ID"] == "a" * 12
    assert ctx["Names"] == "web"
    assert ctx["Image"] == "b" * 12
    assert ctx["Command"] == '"sh -c \\"echo a very …"'
    assert ctx["Size"] == "4.1kB (virtual 1.04MB)"
    assert ctx["Mounts"] == "vol,/host" and ctx["LocalVolumes"] == "1"
    full = ps_context(summary, trunc=False)
    assert full["ID"] == "a" * 64 and full["Command"] == json.dumps(summary["Command"])


def test_host_selection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BULKHEAD_HOST", raising=False)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    assert socket_from_env() == ("/run/bulkhead/bulkhead.sock", True)
    monkeypatch.setenv("DOCKER_HOST", "unix:///tmp/d.sock")
    assert socket_from_env() == ("/tmp/d.sock", False)
    monkeypatch.setenv("BULKHEAD_HOST", "unix:///tmp/b.sock")
    assert socket_from_env() == ("/tmp/b.sock", False)
    assert socket_from_env("unix:///run/bulkhead/bulkhead.sock") == (
        "/run/bulkhead/bulkhead.sock",
        True,
    )


def test_targets_are_versioned_and_quoted() -> None:
    assert (
        build_target("/containers/json", {"all": True, "limit": None})
        == "/v1.50/containers/json?all=1"
    )
    assert (
        build_target("/images/localhost:5000/a b/push", {"tag": "v 1", "names": ["x", "y&z"]})
        == "/v1.50/images/localhost:5000/a%20b/push?tag=v+1&names=x&names=y%26z"
    )
