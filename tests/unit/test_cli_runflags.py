"""``run``/``create`` flags → the create body, compared with what the docker 28.2 CLI sends.

tests/unit/data/cli_create_bodies.json holds bodies captured from the real
``docker`` binary talking to a logging unix-socket server (the environment
had FOO=bar and no NOPE). Env order is Go map order in docker's output, so
Env is compared as a multiset.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from bulkhead.cli.flags import ArgCountError, UsageError, need_args
from bulkhead.cli.runflags import (
    CREATE_COMMAND,
    RUN_COMMAND,
    build_create,
    nano_cpus,
    parse_mount,
    ram_in_bytes,
)

DATA = Path(__file__).parent / "data" / "cli_create_bodies.json"
CASES: list[dict[str, Any]] = json.loads(DATA.read_text())["cases"]
ENVIRON = {"FOO": "bar", "PATH": "/usr/bin"}


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, str]:
    envfile = tmp_path / "env.list"
    envfile.write_text("# comment\nX=1\nY=2 \nFOO\n\nZ=a=b\n")
    seccomp = tmp_path / "sec.json"
    seccomp.write_text('{\n  "defaultAction": "SCMP_ACT_ALLOW"\n}\n')
    return {"{ENVFILE}": str(envfile), "{SECCOMP}": str(seccomp)}


def _body_for(argv: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    verb, rest = argv[0], argv[1:]
    cmd = RUN_COMMAND if verb == "run" else CREATE_COMMAND
    parsed = cmd.parse(rest)
    plan = build_create(parsed, run=verb == "run", environ=ENVIRON)
    return plan.body, plan.query


def _normal(body: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(json.dumps(body))
    if body.get("Env"):
        body["Env"] = sorted(body["Env"])
    return body


@pytest.mark.parametrize("case", CASES, ids=[" ".join(c["args"])[:60] for c in CASES])
def test_body_matches_docker_cli(case: dict[str, Any], files: dict[str, str]) -> None:
    argv = list(case["args"])
    for placeholder, path in files.items():
        argv = [a.replace(placeholder, path) for a in argv]
    body, query = _body_for(argv)
    assert _normal(body) == _normal(case["body"])
    want_query = {k: v[-1] for k, v in parse_qs(case["query"]).items()}
    assert query == want_query


def test_env_last_value_wins_once_per_name() -> None:
    body, _ = _body_for(["create", "-e", "A=1", "-e", "B", "-e", "A=2", "-e", "FOO", "img"])
    assert body["Env"] == ["A=2", "B", "FOO=bar"]


def test_grammar_shorthand_clusters_and_inline_values() -> None:
    parsed = RUN_COMMAND.parse(
        ["-itd", "-eA=B", "-e=C=D", "--name=x", "-u", "0", "img", "-x", "--y"]
    )
    assert parsed["interactive"] and parsed["tty"] and parsed["detach"]
    assert parsed["env"] == ["A=B", "C=D"]
    assert parsed["name"] == "x"
    assert parsed.args == ["img", "-x", "--y"]


def test_bool_flag_with_explicit_false() -> None:
    parsed = RUN_COMMAND.parse(["--rm=false", "--sig-proxy=false", "img"])
    assert parsed["rm"] is False and parsed["sig-proxy"] is False


def test_double_dash_ends_flags() -> None:
    parsed = RUN_COMMAND.parse(["--rm", "--", "img", "--rm"])
    assert parsed.args == ["img", "--rm"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--foo", "img"], "unknown flag: --foo"),
        (["-Z", "img"], "unknown shorthand flag: 'Z' in -Z"),
        (["--rm=maybe", "img"], 'invalid argument "maybe" for "--rm" flag: strconv.ParseBool'),
        (["-c", "x", "img"], 'invalid argument "x" for "-c, --cpu-shares" flag: strconv.ParseInt'),
        (["--name"], "flag needs an argument: --name"),
        (["img", "-e"], None),  # after the image: the command's own argument
    ],
)
def test_grammar_errors(argv: list[str], message: str | None) -> None:
    if message is None:
        assert RUN_COMMAND.parse(argv).args == argv
        return
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        RUN_COMMAND.parse(argv)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--cpus", "1.0000000001"],
            'invalid argument "1.0000000001" for "--cpus" flag: value is too precise',
        ),
        (
            ["--ulimit", "nofile=3:2"],
            "ulimit soft limit must be less than or equal to hard limit: 3 > 2",
        ),
        (["--ulimit", "foo=1"], "invalid ulimit type: foo"),
        (["--device-read-bps", "sda:1"], "bad format for device path: sda:1"),
        (
            ["--memory", "1x"],
            'invalid argument "1x" for "-m, --memory" flag: invalid suffix: \'x\'',
        ),
        (["--device", "/dev/a:/dev/b:xyz"], "bad mode specified: xyz"),
        (["-a", "foo"], "valid streams are STDIN, STDOUT and STDERR"),
        (["--pid", "bogus"], "--pid: invalid PID mode"),
        (["--uts", "bogus"], "--uts: invalid UTS mode"),
        (["--userns", "bogus"], "--userns: invalid USER mode"),
        (["--cgroupns", "bogus"], "--cgroupns: invalid CGROUP mode"),
        (["--security-opt", "bogus"], 'Invalid --security-opt: "bogus"'),
        (["-e", "=x"], "invalid environment variable: =x"),
        (["--mount", "type=volume,src=a"], "target is required"),
        (["--env-file", "/nonexistent/env"], "open /nonexistent/env: no such file or directory"),
        (["--pull", "sometimes"], "invalid pull option: 'sometimes'"),
        (["--sysctl", "a.b=1"], "sysctl 'a.b=1' is not allowed"),
        (["--oom-score-adj", "5000"], "Valid values are between -1000 and 1000"),
    ],
)
def test_option_errors_name_the_value(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        build_create(CREATE_COMMAND.parse([*argv, "img"]), run=False, environ=ENVIRON)
    assert message in str(info.value)


def test_detach_with_attach_conflicts() -> None:
    with pytest.raises(UsageError, match="cannot specify both --attach and --detach"):
        build_create(RUN_COMMAND.parse(["-d", "-a", "stdout", "img"]), run=True, environ=ENVIRON)


def test_run_detach_clears_attach_and_stdin_once() -> None:
    plan = build_create(RUN_COMMAND.parse(["-d", "-i", "img"]), run=True, environ=ENVIRON)
    body = plan.body
    assert (body["AttachStdin"], body["AttachStdout"], body["AttachStderr"]) == (
        False,
        False,
        False,
    )
    assert body["OpenStdin"] is True and body["StdinOnce"] is False
    assert plan.detach and plan.attach == []


def test_console_size_for_tty() -> None:
    plan = build_create(
        RUN_COMMAND.parse(["-t", "img"]), run=True, environ=ENVIRON, console_size=(24, 80)
    )
    assert plan.body["HostConfig"]["ConsoleSize"] == [24, 80]


def test_missing_image_is_an_argument_count_error() -> None:
    parsed = RUN_COMMAND.parse(["--rm"])
    with pytest.raises(ArgCountError, match="'bulkhead run' requires at least 1 argument"):
        need_args(RUN_COMMAND, parsed, 1)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("64m", 64 << 20),
        ("1g", 1 << 30),
        ("1.5k", 1536),
        ("100", 100),
        ("10b", 10),
        ("512KiB", 512 << 10),
        ("2 MB", 2 << 20),
    ],
)
def test_ram_in_bytes(text: str, value: int) -> None:
    assert ram_in_bytes(text) == value


@pytest.mark.parametrize("text", ["", "x", "1x", "1kbb", "-1", "1mx"])
def test_ram_in_bytes_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        ram_in_bytes(text)


def test_nano_cpus() -> None:
    assert nano_cpus("0.000000001") == 1
    assert nano_cpus("2") == 2_000_000_000


def test_mount_rejects_mixed_options() -> None:
    with pytest.raises(UsageError, match="cannot mix 'volume-\\*' options with mount type 'bind'"):
        parse_mount("type=bind,src=/a,dst=/b,volume-nocopy")
    with pytest.raises(UsageError, match="unexpected key 'bogus'"):
        parse_mount("type=bind,src=/a,dst=/b,bogus=1")


def test_publish_expose_and_publish_all() -> None:
    body, _ = _body_for(
        [
            "run",
            "-p",
            "8080:80",
            "-p",
            "127.0.0.1::53/UDP",
            "-p",
            "9000-9001:90-91",
            "-p",
            "7000-7005:70",
            "-p",
            "[::1]:6000:60/sctp",
            "-p",
            "5000",
            "--expose",
            "100-101/udp",
            "-P",
            "busybox",
        ]
    )
    hc = body["HostConfig"]
    assert hc["PublishAllPorts"] is True
    assert hc["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}],
        "53/udp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "90/tcp": [{"HostIp": "", "HostPort": "9000"}],
        "91/tcp": [{"HostIp": "", "HostPort": "9001"}],
        "70/tcp": [{"HostIp": "", "HostPort": "7000-7005"}],
        "60/sctp": [{"HostIp": "::1", "HostPort": "6000"}],
        "5000/tcp": [{"HostIp": "", "HostPort": ""}],
    }
    assert set(body["ExposedPorts"]) == {*hc["PortBindings"], "100/udp", "101/udp"}
    assert list(body)[list(body).index("AttachStderr") + 1] == "ExposedPorts"  # Go's order


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("8080:", "no port specified: 8080:<empty>"),
        ("x:80", "invalid hostPort: x"),
        ("8080:80x", "invalid containerPort: 80x"),
        ("8080:80/icmp", "invalid proto: icmp"),
        ("1.2.3:8080:80", "invalid IP address: 1.2.3"),
        (
            "8000-8002:80-81",
            "invalid ranges specified for container and host Ports: 80-81 and 8000-8002",
        ),
        ("8080:70000", "invalid containerPort: 70000"),
    ],
)
def test_publish_errors(spec: str, message: str) -> None:
    with pytest.raises(UsageError) as exc:
        _body_for(["run", "-p", spec, "busybox"])
    assert str(exc.value) == message
