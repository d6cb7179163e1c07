"""``bulkhead pause``/``unpause``/``update`` against a scripted daemon: requests and output."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.unit.cli_fake_daemon import FakeDaemon

from bulkhead.cli.main import main


@pytest.fixture()
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    d = FakeDaemon(str(tmp_path / "fake.sock"))
    monkeypatch.setenv("BULKHEAD_HOST", d.host)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("BULKHEAD_AUTOSTART", "0")
    yield d
    d.close()


def test_pause_and_unpause_each_container(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.route("POST", "/containers/a/pause", (204, b""))
    fake.route("POST", "/containers/b/pause", (409, {"message": "Container b is not running"}))
    assert main(["pause", "a", "b"]) == 1
    out = capsys.readouterr()
    assert out.out == "a\n"
    assert out.err == "Error response from daemon: Container b is not running\n"
    fake.route("POST", "/containers/a/unpause", (204, b""))
    assert main(["container", "unpause", "a"]) == 0
    assert capsys.readouterr().out == "a\n"
    assert fake.calls()[-1] == "POST /containers/a/unpause"


def test_update_sends_dockers_body(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.route("POST", "/containers/web/update", (200, {"Warnings": ["careful"]}))
    argv = ["update", "-m", "64m", "--memory-swap", "-1", "--cpus", "1.5", "--cpu-shares", "512"]
    argv += ["--pids-limit", "-1", "--restart", "on-failure:3", "--cpuset-cpus", "0", "web"]
    assert main(argv) == 0
    out = capsys.readouterr()
    assert (out.out, out.err) == ("web\n", "careful\n")
    assert fake.requests[-1].json() == {
        "BlkioWeight": 0,
        "CpuShares": 512,
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpusetCpus": "0",
        "CpusetMems": "",
        "Memory": 64 << 20,
        "MemoryReservation": 0,
        "MemorySwap": -1,
        "NanoCpus": 1_500_000_000,
        "PidsLimit": -1,
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3},
    }


def test_update_leaves_out_what_was_not_given(fake: FakeDaemon) -> None:
    fake.route("POST", "/containers/web/update", (200, {"Warnings": None}))
    assert main(["update", "--blkio-weight", "300", "web"]) == 0
    body = fake.requests[-1].json()
    assert body["BlkioWeight"] == 300
    assert "PidsLimit" not in body and "RestartPolicy" not in body


def test_update_usage_errors(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["update", "web"]) == 1  # docker's status for it
    assert "you must provide one or more flags" in capsys.readouterr().err
    assert main(["update", "-m", "lots", "web"]) == 125
    assert 'invalid argument "lots" for "-m, --memory" flag' in capsys.readouterr().err
    assert main(["update", "--cpus", "x", "web"]) == 125
    assert main(["update", "--restart", "on-failure:x", "web"]) == 125
    assert fake.requests == []


def test_operate_verbs_stay_off_the_engine(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from bulkhead.cli.main import main\n"
        "main(['update', '-m', '8m', '--cpus', '1', 'x'])\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('bulkhead.engine', "
        "'bulkhead.runtime', 'msgspec')))\n"
        "print(bad)\n"
    )
    env = {"BULKHEAD_HOST": f"unix://{tmp_path}/none.sock", "BULKHEAD_AUTOSTART": "0"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr
