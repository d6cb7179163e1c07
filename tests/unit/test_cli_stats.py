"""``bulkhead stats --no-stream`` and ``bulkhead top`` against a scripted daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cli_fake_daemon import FakeDaemon

from bulkhead.cli.main import main

CID = "c" * 64


@pytest.fixture()
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    d = FakeDaemon(str(tmp_path / "fake.sock"))
    monkeypatch.setenv("BULKHEAD_HOST", d.host)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("BULKHEAD_AUTOSTART", "0")
    yield d
    d.close()


def sample(name: str) -> dict[str, Any]:
    """A v1 document: 0.5 s of CPU over 2 s of host time on 2 CPUs is 50%."""
    return {
        "name": f"/{name}",
        "id": CID,
        "read": "2026-11-30T10:00:01Z",
        "cpu_stats": {
            "cpu_usage": {"total_usage": 1_500_000_000},
            "system_cpu_usage": 12_000_000_000,
            "online_cpus": 2,
        },
        "precpu_stats": {
            "cpu_usage": {"total_usage": 1_000_000_000},
            "system_cpu_usage": 10_000_000_000,
        },
        "memory_stats": {
            "usage": 3 * 1024 * 1024,
            "limit": 64 * 1024 * 1024,
            "stats": {"total_inactive_file": 1024 * 1024},
        },
        "networks": {"eth0": {"rx_bytes": 1500, "tx_bytes": 20}},
        "blkio_stats": {
            "io_service_bytes_recursive": [
                {"major": 8, "minor": 0, "op": "Read", "value": 4096},
                {"major": 8, "minor": 0, "op": "Write", "value": 2_000_000},
            ]
        },
        "pids_stats": {"current": 4},
    }


def test_stats_no_stream_table_and_formats(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.route("GET", "/containers/json", (200, [{"Id": CID}]))
    fake.route("GET", "/containers/[^/]+/stats", (200, sample("web")))
    assert main(["stats", "--no-stream"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        *("CONTAINER", "ID", "NAME", "CPU", "%", "MEM", "USAGE", "/", "LIMIT"),
        *("MEM", "%", "NET", "I/O", "BLOCK", "I/O", "PIDS"),
    ]
    assert lines[1].split() == [
        *("cccccccccccc", "web", "50.00%", "2MiB", "/", "64MiB", "3.12%"),
        *("1.5kB", "/", "20B", "4.1kB", "/", "2MB", "4"),
    ]
    stats_requests = [r for r in fake.requests if r.path.endswith("/stats")]
    assert stats_requests[0].path == f"/containers/{CID}/stats"
    assert stats_requests[0].query["stream"] == ["0"]  # two samples, precpu filled

    assert main(["stats", "--no-stream", "--format", "{{json .}}", "web"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["Container"] == "web" and doc["ID"] == "c" * 12 and doc["PIDs"] == "4"
    assert main(["stats", "--no-stream", "--no-trunc", "--format", "{{.ID}}", "web"]) == 0
    assert capsys.readouterr().out == CID + "\n"
    assert main(["stats", "--no-stream", "--format", "table {{.Name}}\t{{.CPUPerc}}", "web"]) == 0
    assert capsys.readouterr().out.splitlines() == ["NAME      CPU %", "web       50.00%"]


def test_stats_errors_are_joined_and_exit_1(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.route("GET", "/containers/[^/]+/stats", (404, {"message": "No such container: x"}))
    assert main(["stats", "--no-stream", "x", "y"]) == 1
    err = capsys.readouterr().err
    assert err.count("Error response from daemon: No such container: x") == 2


def test_top_prints_dockers_columns_and_sends_ps_args(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.route(
        "GET",
        "/containers/web/top",
        (200, {"Titles": ["PID", "COMMAND"], "Processes": [["4242", "sleep 60"]]}),
    )
    assert main(["top", "web", "-o", "pid,args"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "PID                 COMMAND",
        "4242                sleep 60",
    ]
    assert fake.requests[-1].query["ps_args"] == ["-o pid,args"]
    assert main(["top", "web"]) == 0
    assert "ps_args" not in fake.requests[-1].query
    assert main(["top"]) == 1  # a container is required
