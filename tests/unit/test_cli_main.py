"""The bulkhead CLI against a scripted daemon: call order, output and docker's exit statuses."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.unit.cli_fake_daemon import FakeDaemon, Hijacked, Request, frame

from bulkhead.cli.containers import start_error_status
from bulkhead.cli.main import main

CID = "c" * 64


@pytest.fixture()
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDaemon]:
    d = FakeDaemon(str(tmp_path / "fake.sock"))
    monkeypatch.setenv("BULKHEAD_HOST", d.host)
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("BULKHEAD_AUTOSTART", "0")
    monkeypatch.setenv("BULKHEAD_CONFIG", str(tmp_path / "config"))
    yield d
    d.close()


def _summary(name: str, state: str = "running") -> dict[str, Any]:
    return {
        "Id": CID,
        "Names": [f"/{name}"],
        "Image": "busybox",
        "Command": "sleep 100000000000000",
        "Created": 1_700_000_000,
        "State": state,
        "Status": "Up 2 minutes",
        "Labels": {"k": "v"},
        "Mounts": [],
        "Ports": [],
    }


def test_version_needs_no_daemon(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("bulkhead version ")


def test_unknown_command_is_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 1
    assert "unknown command: bulkhead frobnicate" in capsys.readouterr().err


def test_bad_flag_is_125(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--nope", "busybox"]) == 125
    err = capsys.readouterr().err
    assert "unknown flag: --nope" in err and "bulkhead run --help" in err


def test_missing_argument_is_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rm"]) == 1
    assert "'bulkhead rm' requires at least 1 argument" in capsys.readouterr().err


def test_no_daemon_is_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BULKHEAD_AUTOSTART", "0")
    assert main(["-H", f"unix://{tmp_path}/none.sock", "ps"]) == 1
    assert "Cannot connect to the bulkhead daemon" in capsys.readouterr().err
    # run and create fail with docker's 125
    assert main(["-H", f"unix://{tmp_path}/none.sock", "run", "busybox"]) == 125
    assert "Cannot connect to the bulkhead daemon" in capsys.readouterr().err


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ps", "--help"]) == 0
    out = capsys.readouterr().out
    assert "Usage:  bulkhead ps [OPTIONS]" in out and "--format" in out


def test_ps_table_quiet_and_format(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    fake.route("GET", "/containers/json", (200, [_summary("web")]))
    assert main(["ps"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "CONTAINER",
        "ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    assert lines[1].startswith('cccccccccccc   busybox   "sleep 1000000000000…"')
    assert lines[1].endswith("web")
    assert main(["ps", "-q", "--no-trunc"]) == 0
    assert capsys.readouterr().out == CID + "\n"
    assert main(["ps", "--format", '{{.Names}} {{.Label "k"}} {{.State}}']) == 0
    assert capsys.readouterr().out == "web v running\n"
    assert main(["ps", "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["Names"] == "web" and doc["Labels"] == "k=v" and "Label" not in doc


def test_ps_sends_docker_query(fake: FakeDaemon) -> None:
    fake.route("GET", "/containers/json", (200, []))
    assert main(["ps", "-a", "-s", "--filter", "status=exited", "-f", "label=a=b"]) == 0
    req = fake.requests[-1]
    assert req.query["all"] == ["1"] and req.query["size"] == ["1"]
    assert json.loads(req.query["filters"][0]) == {
        "status": {"exited": True},
        "label": {"a=b": True},
    }


def _run_routes(
    fake: FakeDaemon, status: int = 0, output: bytes = b"hi\n", wait_stdin: bool = False
) -> Hijacked:
    attach = Hijacked(frame(1, output) + frame(2, b"warn\n"), wait_stdin=wait_stdin)
    fake.route("POST", "/containers/create", (201, {"Id": CID, "Warnings": []}))
    fake.route("POST", f"/containers/{CID}/attach", lambda _r: attach)
    fake.route("POST", f"/containers/{CID}/wait", (200, {"StatusCode": status}))

    def start(_req: Any) -> tuple[int, bytes]:
        # The wait comes on its own connection (its handler thread may lag the start's): a
        # client that sent it before the start has it arrive within moments; note if it did.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if any(r.path.endswith("/wait") for r in list(fake.requests)):
                attach.wait_seen_at_start = True
                break
            time.sleep(0.005)
        return (204, b"")

    fake.route("POST", f"/containers/{CID}/start", start)
    return attach


def test_run_attaches_and_waits_before_start(
    fake: FakeDaemon, capfd: pytest.CaptureFixture[str]
) -> None:
    attach_stream = _run_routes(fake, status=3)
    assert main(["run", "--rm", "busybox", "echo", "hi"]) == 3
    out, err = capfd.readouterr()
    assert out == "hi\n" and "warn\n" in err
    calls = fake.calls()
    assert calls[0] == "POST /containers/create"
    assert calls.index(f"POST /containers/{CID}/attach") < calls.index(
        f"POST /containers/{CID}/start"
    )
    assert attach_stream.wait_seen_at_start  # the wait was sent before the start
    wait = next(r for r in fake.requests if r.path.endswith("/wait"))
    assert wait.query["condition"] == ["removed"]
    attach = next(r for r in fake.requests if r.path.endswith("/attach"))
    assert attach.headers["upgrade"] == "tcp" and attach.query["stdin"] == ["0"]
    create = fake.requests[0].json()
    assert create["Cmd"] == ["echo", "hi"] and create["HostConfig"]["AutoRemove"] is True


def test_run_interactive_sends_stdin_and_half_closes(
    fake: FakeDaemon,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    attach = _run_routes(fake, wait_stdin=True)
    src = tmp_path / "in.txt"
    src.write_bytes(b"some input\n")
    import os

    fd = os.open(src, os.O_RDONLY)
    saved = os.dup(0)
    os.dup2(fd, 0)
    try:
        assert main(["run", "-i", "busybox", "cat"]) == 0
    finally:
        os.dup2(saved, 0)
        os.close(saved)
        os.close(fd)
    assert bytes(attach.stdin) == b"some input\n"
    req = next(r for r in fake.requests if r.path.endswith("/attach"))
    assert req.query["stdin"] == ["1"]


def test_run_detached_prints_id(fake: FakeDaemon, capsys: pytest.CaptureFixture[str]) -> None:
    _run_routes(fake)
    assert main(["run", "-d", "--name", "web", "busybox", "sleep", "9"]) == 0
    assert capsys.readouterr().out == CID + "\n"
    assert fake.calls() == ["POST /containers/create", f"POST /containers/{CID}/start"]
    assert fake.requests[0].query["name"] == ["web"]


def test_run_pulls_a_missing_image_then_creates(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_routes(fake)
    created: list[int] = []

    def create(_req: Request) -> Any:
        created.append(1)
        if len(created) == 1:
            return (404, {"message": "No such image: busybox:latest"})
        return (201, {"Id": CID, "Warnings": []})

    fake.route("POST", "/containers/create", create)
    progress = [
        b'{"status":"Pulling from library/busybox","id":"latest"}\n',
        b'{"status":"Pulling fs layer","progressDetail":{},"id":"abc"}\n',
        b'{"status":"Downloading","progressDetail":{"current":5,"total":10},"id":"abc"}\n',
        b'{"status":"Pull complete","progressDetail":{},"id":"abc"}\n',
        b'{"status":"Status: Downloaded newer image for busybox:latest"}\n',
    ]
    fake.route("POST", "/images/create", (200, progress))
    assert main(["run", "-d", "busybox"]) == 0
    captured = capsys.readouterr()
    assert captured.out == CID + "\n"
    assert "Unable to find image 'busybox:latest' locally" in captured.err
    assert "abc: Pull complete" in captured.err and "Downloading" not in captured.err
    pull = next(r for r in fake.requests if r.path == "/images/create")
    assert pull.query["fromImage"] == ["busybox"] and pull.query["tag"] == ["latest"]
    assert "x-registry-auth" in pull.headers


def test_run_missing_image_with_pull_never_is_125(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.route("POST", "/containers/create", (404, {"message": "No such image: nope:latest"}))
    assert main(["run", "--pull", "never", "nope"]) == 125
    assert "No such image: nope:latest" in capsys.readouterr().err


def test_pull_error_in_stream_is_125_for_run(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.route("POST", "/containers/create", (404, {"message": "No such image: nope:latest"}))
    fake.route(
        "POST",
        "/images/create",
        (200, [b'{"errorDetail":{"message":"manifest unknown"},"error":"manifest unknown"}\n']),
    )
    assert main(["run", "nope"]) == 125
    assert "manifest unknown" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("message", "status"),
    [
        ('exec: "nope": executable file not found in $PATH', 127),
        ("no such file or directory", 127),
        ('exec: "/etc": permission denied', 126),
        ("something else", 125),
    ],
)
def test_start_failure_statuses(
    fake: FakeDaemon, message: str, status: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _run_routes(fake)
    fake.route("POST", f"/containers/{CID}/start", (400, {"message": message}))
    assert main(["run", "--rm", "busybox", "nope"]) == status
    assert message in capsys.readouterr().err
    assert start_error_status(message) == status
    # --rm: the CLI asks for the removal of the container that never ran
    assert f"DELETE /containers/{CID}" in fake.calls()


def test_exec_returns_the_command_status(
    fake: FakeDaemon, capfd: pytest.CaptureFixture[str]
) -> None:
    fake.route("GET", "/containers/web/json", (200, {"Id": CID, "State": {"Running": True}}))
    fake.route("POST", "/containers/web/exec", (201, {"Id": "e1"}))
    fake.route("POST", "/exec/e1/start", lambda _r: Hijacked(frame(1, b"out\n")))
    fake.route("GET", "/exec/e1/json", (200, {"ExitCode": 7, "Running": False}))
    assert main(["exec", "-e", "A=1", "-u", "0", "-w", "/tmp", "web", "sh", "-c", "exit 7"]) == 7
    assert capfd.readouterr().out == "out\n"
    body = next(r for r in fake.requests if r.path == "/containers/web/exec").json()
    assert body["Cmd"] == ["sh", "-c", "exit 7"] and body["Env"] == ["A=1"]
    assert body["User"] == "0" and body["WorkingDir"] == "/tmp" and body["AttachStdout"] is True


def test_rm_reports_each_error_and_exits_1(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.route("DELETE", "/containers/a", (204, b""))
    fake.route("DELETE", "/containers/b", (404, {"message": "No such container: b"}))
    assert main(["rm", "-f", "a", "b"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "a\n"
    assert "Error response from daemon: No such container: b" in captured.err
    assert fake.requests[0].query["force"] == ["1"]


def test_logs_demultiplexes(fake: FakeDaemon, capfd: pytest.CaptureFixture[str]) -> None:
    fake.route("GET", "/containers/web/json", (200, {"Id": CID, "Config": {"Tty": False}}))
    fake.route(
        "GET",
        f"/containers/{CID}/logs",
        (200, [frame(1, b"a\n"), frame(2, b"b\n") + frame(1, b"c\n")]),
    )
    assert main(["logs", "--tail", "2", "-t", "web"]) == 0
    out, err = capfd.readouterr()
    assert out == "a\nc\n" and err == "b\n"
    q = fake.requests[-1].query
    assert q["tail"] == ["2"] and q["timestamps"] == ["1"]


def test_inspect_falls_back_to_images_and_formats(
    fake: FakeDaemon, capsys: pytest.CaptureFixture[str]
) -> None:
    fake.route("GET", "/containers/busybox/json", (404, {"message": "No such container: busybox"}))
    fake.route("GET", "/images/busybox/json", (200, {"Id": "sha256:1", "Os": "linux"}))
    assert main(["inspect", "-f", "{{.Os}}", "busybox"]) == 0
    assert capsys.readouterr().out == "linux\n"
    fake.route("GET", "/volumes/nope", (404, {"message": "no such volume"}))
    fake.route("GET", "/images/nope/json", (404, {"message": "No such image: nope"}))
    fake.route("GET", "/containers/nope/json", (404, {"message": "No such container: nope"}))
    assert main(["inspect", "nope"]) == 1
    assert "Error: No such object: nope" in capsys.readouterr().err


def test_login_stores_docker_compatible_credentials(
    fake: FakeDaemon,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import base64
    import io

    fake.route("POST", "/auth", (200, {"Status": "Login Succeeded"}))
    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    assert main(["login", "-u", "me", "--password-stdin", "localhost:5000"]) == 0
    assert "Login Succeeded" in capsys.readouterr().out
    assert fake.requests[-1].json() == {
        "username": "me",
        "password": "s3cret",
        "serveraddress": "localhost:5000",
    }
    config = json.loads((tmp_path / "config" / "config.json").read_text())
    assert base64.b64decode(config["auths"]["localhost:5000"]["auth"]) == b"me:s3cret"
    # the credentials travel with a pull from that registry
    fake.route("POST", "/images/create", (200, [b'{"status":"Digest: sha256:0"}\n']))
    assert main(["pull", "-q", "localhost:5000/x:1"]) == 0
    header = fake.requests[-1].headers["x-registry-auth"]
    creds = json.loads(base64.urlsafe_b64decode(header + "=" * (-len(header) % 4)))
    assert creds["username"] == "me" and creds["password"] == "s3cret"
    assert main(["logout", "localhost:5000"]) == 0
    assert (
        "localhost:5000"
        not in json.loads((tmp_path / "config" / "config.json").read_text())["auths"]
    )


def test_autostart_failure_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("BULKHEAD_AUTOSTART", "1")
    # the socket's directory cannot be made: a file is in the way
    assert main(["-H", f"unix://{blocker}/sub/bulkhead.sock", "ps"]) == 1
    assert "cannot start one" in capsys.readouterr().err


def _all_command_lines() -> list[list[str]]:
    from bulkhead.cli.main import COMMANDS, GROUPS

    lines = [[verb] for verb in COMMANDS]
    lines += [[group, sub] for group, subs in GROUPS.items() for sub in subs]
    return lines


@pytest.mark.parametrize("words", _all_command_lines(), ids=" ".join)
def test_every_command_has_help(words: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*words, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Usage:  bulkhead ")


def test_group_without_subcommand_lists_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["volume"]) == 0
    assert "prune" in capsys.readouterr().out
    assert main(["volume", "nope"]) == 1
