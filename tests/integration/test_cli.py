"""bulkhead's own CLI against a real daemon (the shared ``daemon`` fixture).

Each test drives ``.venv/bin/bulkhead`` as a user would, with BULKHEAD_HOST
pointing at the fixture's daemon; the fixture removes every container,
mount and process afterwards.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.integration.engine_fixtures import Daemon, _cmdline, _processes_mentioning
from tests.integration.registry_fixtures import PASSWORD, USER, Registry

pytestmark = [pytest.mark.root, pytest.mark.slow]


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"rc={r.returncode}\nstdout={r.stdout}\nstderr={r.stderr}"
    return r.stdout


def test_run_rm_echo_and_exit_statuses(daemon: Daemon) -> None:
    r = daemon.bulkhead("run", "--rm", "busybox", "echo", "hello world")
    assert (r.returncode, r.stdout) == (0, "hello world\n"), r.stderr
    r = daemon.bulkhead("run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3
    assert r.stdout == "out\n" and r.stderr == "err\n"
    r = daemon.bulkhead("run", "--rm", "busybox", "no-such-command")
    assert r.returncode == 127 and "executable file not found" in r.stderr
    r = daemon.bulkhead("run", "--rm", "busybox", "/etc")
    assert r.returncode == 126, r.stderr
    r = daemon.bulkhead("run", "--rm", "--pull", "never", "no-such-image:1")
    assert r.returncode == 125 and "No such image" in r.stderr
    r = daemon.bulkhead("run", "--memory", "12zz", "busybox")
    assert r.returncode == 125 and "invalid suffix" in r.stderr
    # --rm left nothing behind, not even for the command that could not start
    assert ok(daemon.bulkhead("ps", "-a", "-q")) == ""


def test_run_stdin_and_options(daemon: Daemon) -> None:
    r = daemon.bulkhead("run", "--rm", "-i", "busybox", "sh", "-c", "tr a-z A-Z", input="abc\n")
    assert ok(r) == "ABC\n"
    out = ok(
        daemon.bulkhead(
            "run",
            "--rm",
            "-e",
            "A=1",
            "--env=B=two",
            "-w",
            "/tmp",
            "-u",
            "1000:1000",
            "-h",
            "box",
            "--read-only",
            "busybox",
            "sh",
            "-c",
            'echo "$A $B $(pwd) $(id -u):$(id -g) $(hostname)"; touch /x 2>/dev/null || echo ro',
        )
    )
    assert out == "1 two /tmp 1000:1000 box\nro\n"


def test_run_detached_logs_stop_rm(daemon: Daemon) -> None:
    cid = ok(
        daemon.bulkhead(
            "run",
            "-d",
            "--name",
            "talker",
            "busybox",
            "sh",
            "-c",
            "echo one; echo two >&2; echo three; exec sleep 100",
        )
    ).strip()
    assert len(cid) == 64
    deadline = time.monotonic() + 10
    while "three" not in daemon.bulkhead("logs", "talker").stdout:
        assert time.monotonic() < deadline, "no output"
        time.sleep(0.1)
    r = daemon.bulkhead("logs", "talker")
    assert (r.stdout, r.stderr) == ("one\nthree\n", "two\n")
    # --tail and --timestamps: what docker's CLI prints for the same daemon
    for args in (
        ["--tail", "2"],
        ["--tail", "1"],
        ["-t"],
        ["--since", "1h"],
        ["--since", "2000-01-01T00:00:00Z"],
        ["--until", "2000-01-01"],
    ):
        mine = daemon.bulkhead("logs", *args, "talker")
        theirs = daemon.docker("logs", *args, "talker")
        assert (mine.stdout, mine.stderr) == (theirs.stdout, theirs.stderr)
    stamped = ok(daemon.bulkhead("logs", "-t", "talker")).splitlines()
    assert stamped[-1].endswith(" three") and stamped[-1][:4].isdigit()
    assert "talker" in ok(daemon.bulkhead("ps"))
    # logs -f ends when the container does
    follow = subprocess.Popen(
        [str(Path(sys.executable).with_name("bulkhead")), "logs", "-f", "talker"],
        env=daemon.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(0.5)
        assert follow.poll() is None
        assert ok(daemon.bulkhead("stop", "-t", "1", "talker")) == "talker\n"
        out, _ = follow.communicate(timeout=20)
        assert out == "one\nthree\n" and follow.returncode == 0
    finally:
        if follow.poll() is None:
            follow.kill()
            follow.wait()
    assert ok(daemon.bulkhead("wait", "talker")).strip().lstrip("-").isdigit()
    status = ok(daemon.bulkhead("inspect", "-f", "{{.State.Status}} {{.State.Running}}", "talker"))
    assert status == "exited false\n"
    r = daemon.bulkhead("rm", "talker", "ghost")
    assert r.returncode == 1 and r.stdout == "talker\n"
    assert "No such container: ghost" in r.stderr
    assert ok(daemon.bulkhead("ps", "-a", "-q")) == ""


def test_ps_formats_and_filters(daemon: Daemon) -> None:
    ok(daemon.bulkhead("run", "-d", "--name", "up", "-l", "role=web", "busybox", "sleep", "100"))
    ok(daemon.bulkhead("run", "--name", "down", "busybox", "true"))
    table = ok(daemon.bulkhead("ps")).splitlines()
    assert table[0].split() == [
        "CONTAINER",
        "ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ]
    assert len(table) == 2 and table[1].endswith("up") and '"sleep 100"' in table[1]
    assert sorted(ok(daemon.bulkhead("ps", "-a", "--format", "{{.Names}}")).split()) == [
        "down",
        "up",
    ]
    assert (
        ok(
            daemon.bulkhead(
                "ps", "-a", "--filter", "status=exited", "--format", "{{.Names}} {{.State}}"
            )
        )
        == "down exited\n"
    )
    assert ok(daemon.bulkhead("ps", "--format", '{{.Label "role"}}')) == "web\n"
    doc = json.loads(ok(daemon.bulkhead("ps", "--format", "json")))
    assert doc["Names"] == "up" and doc["State"] == "running" and doc["Status"].startswith("Up")
    ids = ok(daemon.bulkhead("ps", "-aq", "--no-trunc")).split()
    assert len(ids) == 2 and all(len(i) == 64 for i in ids)
    assert ok(daemon.bulkhead("ps", "-l", "--format", "{{.Names}}")) == "down\n"
    # the same daemon through docker's CLI agrees
    assert (
        daemon.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
        == ok(daemon.bulkhead("ps", "-a", "--format", "{{.Names}}")).split()
    )
    ok(daemon.bulkhead("rm", "-f", "up", "down"))


def test_exec(daemon: Daemon) -> None:
    ok(daemon.bulkhead("run", "-d", "--name", "box", "busybox", "sleep", "100"))
    r = daemon.bulkhead(
        "exec",
        "-e",
        "X=42",
        "-w",
        "/etc",
        "-u",
        "65534",
        "box",
        "sh",
        "-c",
        'echo "$X $(pwd) $(id -u)"; exit 4',
    )
    assert (r.returncode, r.stdout) == (4, "42 /etc 65534\n")
    assert ok(daemon.bulkhead("exec", "-i", "box", "cat", input="piped\n")) == "piped\n"
    r = daemon.bulkhead("exec", "box", "no-such-thing")
    assert r.returncode in (126, 127)
    ok(daemon.bulkhead("exec", "-d", "box", "sh", "-c", "echo bg > /bg"))
    deadline = time.monotonic() + 5
    while daemon.bulkhead("exec", "box", "cat", "/bg").stdout != "bg\n":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    ok(daemon.bulkhead("rm", "-f", "box"))
    r = daemon.bulkhead("exec", "box", "true")
    assert r.returncode == 1 and "No such container" in r.stderr


def test_tty_run_and_exec_under_a_pty(daemon: Daemon) -> None:
    exe = str(Path(sys.executable).with_name("bulkhead"))
    cmd = f"{exe} run -it --rm busybox sh -c 'tty; stty size'"
    r = subprocess.run(
        ["script", "-qec", cmd, "/dev/null"],
        env=daemon.env(),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "/dev/pts/0" in r.stdout
    # without a terminal -it is refused, as docker does
    r = daemon.bulkhead("run", "-it", "--rm", "busybox", "true", input="")
    assert r.returncode == 1 and "the input device is not a TTY" in r.stderr


def test_files_cp_diff_export_commit(daemon: Daemon, tmp_path: Path) -> None:
    ok(
        daemon.bulkhead(
            "run",
            "-d",
            "--name",
            "files",
            "busybox",
            "sh",
            "-c",
            "mkdir /data && echo inside > /data/f && sleep 100",
        )
    )
    deadline = time.monotonic() + 5
    while "A /data/f" not in daemon.bulkhead("diff", "files").stdout:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    ok(daemon.bulkhead("cp", "files:/data", str(tmp_path / "copied")))
    assert (tmp_path / "copied" / "f").read_text() == "inside\n"
    (tmp_path / "host.txt").write_text("from host\n")
    ok(daemon.bulkhead("cp", str(tmp_path / "host.txt"), "files:/data/"))
    ok(daemon.bulkhead("cp", str(tmp_path / "host.txt"), "files:/renamed"))
    assert (
        ok(daemon.bulkhead("exec", "files", "cat", "/data/host.txt", "/renamed"))
        == "from host\n" * 2
    )
    ok(daemon.bulkhead("export", "-o", str(tmp_path / "fs.tar"), "files"))
    listing = subprocess.run(
        ["tar", "tf", str(tmp_path / "fs.tar")], capture_output=True, text=True, check=True
    ).stdout
    assert "data/f" in listing and "bin/busybox" in listing
    image_id = ok(daemon.bulkhead("commit", "-c", "ENV FROM_COMMIT=yes", "files", "snap:1")).strip()
    assert image_id.startswith("sha256:")
    assert (
        ok(daemon.bulkhead("run", "--rm", "snap:1", "sh", "-c", 'cat /data/f; echo "$FROM_COMMIT"'))
        == "inside\nyes\n"
    )
    ok(daemon.bulkhead("rename", "files", "renamed"))
    assert ok(daemon.bulkhead("inspect", "--format", "{{.Name}}", "renamed")) == "/renamed\n"
    assert ok(daemon.bulkhead("port", "renamed")) == ""
    ok(daemon.bulkhead("rm", "-f", "renamed"))
    ok(daemon.bulkhead("rmi", "snap:1"))


def test_volumes(daemon: Daemon) -> None:
    assert ok(daemon.bulkhead("volume", "create", "--label", "k=v", "shared")) == "shared\n"
    ok(
        daemon.bulkhead(
            "run", "--rm", "-v", "shared:/data", "busybox", "sh", "-c", "echo kept > /data/f"
        )
    )
    assert (
        ok(daemon.bulkhead("run", "--rm", "-v", "shared:/d:ro", "busybox", "cat", "/d/f"))
        == "kept\n"
    )
    listed = ok(daemon.bulkhead("volume", "ls")).splitlines()
    assert listed[0].split() == ["DRIVER", "VOLUME", "NAME"] and any(
        line.endswith("shared") for line in listed
    )
    assert ok(daemon.bulkhead("volume", "ls", "-q", "--filter", "label=k=v")) == "shared\n"
    doc = json.loads(ok(daemon.bulkhead("volume", "inspect", "shared")))
    assert (
        doc[0]["Name"] == "shared"
        and doc[0]["Labels"] == {"k": "v"}
        and doc[0]["Driver"] == "local"
    )
    assert (
        ok(daemon.bulkhead("volume", "inspect", "-f", "{{.Mountpoint}}", "shared"))
        .strip()
        .endswith("/shared/_data")
    )
    ok(
        daemon.bulkhead(
            "run", "-d", "--name", "user", "-v", "shared:/data", "busybox", "sleep", "100"
        )
    )
    r = daemon.bulkhead("volume", "rm", "shared")
    assert r.returncode == 1 and "in use" in r.stderr
    ok(daemon.bulkhead("rm", "-f", "user"))
    assert ok(daemon.bulkhead("volume", "rm", "shared")) == "shared\n"
    anon = ok(daemon.bulkhead("volume", "create")).strip()
    assert len(anon) == 64
    assert "Total reclaimed space" in ok(daemon.bulkhead("volume", "prune", "-a", "-f"))
    assert ok(daemon.bulkhead("volume", "ls", "-q")) == ""


def test_images_tag_history_save_load_import(daemon: Daemon, tmp_path: Path) -> None:
    rows = ok(daemon.bulkhead("images")).splitlines()
    assert rows[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert rows[1].startswith("busybox      latest")
    ok(daemon.bulkhead("tag", "busybox", "mine/bb:v1"))
    assert (
        ok(daemon.bulkhead("images", "--format", "{{.Repository}}:{{.Tag}}", "mine/bb"))
        == "mine/bb:v1\n"
    )
    assert ok(daemon.bulkhead("image", "inspect", "-f", "{{.Os}}", "mine/bb:v1")) == "linux\n"
    history = ok(daemon.bulkhead("history", "mine/bb:v1")).splitlines()
    assert history[0].split()[:2] == ["IMAGE", "CREATED"] and len(history) >= 2
    ok(daemon.bulkhead("save", "-o", str(tmp_path / "bb.tar"), "mine/bb:v1"))
    out = ok(daemon.bulkhead("rmi", "mine/bb:v1"))
    assert out == "Untagged: mine/bb:v1\n"
    assert "Loaded image: mine/bb:v1" in ok(daemon.bulkhead("load", "-i", str(tmp_path / "bb.tar")))
    with open(tmp_path / "bb.tar", "rb") as fh:
        r = subprocess.run(
            [str(Path(sys.executable).with_name("bulkhead")), "load"],
            stdin=fh,
            env=daemon.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert "Loaded image" in ok(r)
    ok(
        daemon.bulkhead(
            "export",
            "-o",
            str(tmp_path / "root.tar"),
            ok(daemon.bulkhead("create", "busybox")).strip(),
        )
    )
    imported = ok(
        daemon.bulkhead(
            "import", "-c", 'CMD ["echo", "imported"]', str(tmp_path / "root.tar"), "flat:1"
        )
    ).strip()
    assert imported.startswith("sha256:")
    assert ok(daemon.bulkhead("run", "--rm", "flat:1")) == "imported\n"
    r = daemon.bulkhead("rmi", "nope:nope")
    assert r.returncode == 1 and "No such image" in r.stderr
    assert "Total reclaimed space" in ok(daemon.bulkhead("image", "prune", "-f"))


def test_pull_and_push_with_a_local_registry(
    daemon: Daemon, registry_factory: Callable[..., Registry]
) -> None:
    reg = registry_factory("htpasswd")
    ref = reg.ref("cli/bb:1")
    ok(daemon.bulkhead("tag", "busybox", ref))
    r = daemon.bulkhead("push", ref)
    assert r.returncode == 1
    r = daemon.bulkhead("login", "-u", USER, "--password-stdin", reg.host, input="wrong\n")
    assert r.returncode == 1
    r = daemon.bulkhead("login", "-u", USER, "--password-stdin", reg.host, input=PASSWORD + "\n")
    assert "Login Succeeded" in ok(r)
    config = json.loads((Path(daemon.env()["DOCKER_CONFIG"]) / "config.json").read_text())
    assert reg.host in config["auths"]
    out = ok(daemon.bulkhead("push", ref))
    assert "Pushed" in out or "digest: sha256:" in out
    ok(daemon.bulkhead("rmi", ref))
    out = ok(daemon.bulkhead("pull", ref))
    assert "Pull complete" in out or "Already exists" in out
    assert out.rstrip().endswith(ref)
    assert ok(daemon.bulkhead("run", "--rm", ref, "echo", "pulled")) == "pulled\n"
    ok(daemon.bulkhead("rmi", ref))
    # run pulls a missing image itself (progress on stderr), as docker does
    r = daemon.bulkhead("run", "--rm", ref, "echo", "auto")
    assert ok(r) == "auto\n" and "Unable to find image" in r.stderr
    ok(daemon.bulkhead("logout", reg.host))
    ok(daemon.bulkhead("rmi", ref))
    r = daemon.bulkhead("pull", ref)
    assert r.returncode == 1


def test_version_info_inspect(daemon: Daemon) -> None:
    out = ok(daemon.bulkhead("version"))
    assert "Server: bulkhead" in out and "API version" in out
    assert ok(daemon.bulkhead("version", "-f", "{{.Server.ApiVersion}}")).strip().startswith("1.")
    assert "Images: 1" in ok(daemon.bulkhead("info"))
    assert ok(daemon.bulkhead("info", "-f", "{{.OSType}}")) == "linux\n"
    r = daemon.bulkhead("inspect", "nothing-here")
    assert r.returncode == 1 and "No such object: nothing-here" in r.stderr


def _daemon_pids(exec_root: Path) -> list[int]:
    return [p for p in _processes_mentioning(str(exec_root)) if "bulkhead.daemon" in _cmdline(p)]


def test_autostart_on_a_silent_socket(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    env = dict(
        d.env(),
        BULKHEAD_AUTOSTART="1",
        BULKHEAD_DAEMON_ARGS=shlex.join(
            [
                "--data-root",
                str(d.root),
                "--exec-root",
                str(d.exec_root),
                "--config-file",
                str(d.config_file()),
            ]
        ),
    )
    env.pop("DOCKER_HOST", None)
    exe = str(Path(sys.executable).with_name("bulkhead"))
    try:
        # three CLIs at once on a silent socket: one daemon, all three answered
        procs = [
            subprocess.Popen(
                [exe, "ps", "-q"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(3)
        ]
        for p in procs:
            out, err = p.communicate(timeout=60)
            assert (p.returncode, out) == (0, ""), err
        assert len(_daemon_pids(d.exec_root)) == 1
        r = subprocess.run(
            [exe, "run", "--rm", "busybox", "echo", "first"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert (r.returncode, r.stdout) == (0, "first\n"), r.stderr
        pids = _daemon_pids(d.exec_root)
        assert len(pids) == 1
        assert os.getsid(pids[0]) == pids[0], "the daemon runs in a session of its own"
        assert (d.exec_root / "daemon.log").exists()
        # the next command finds it running: no second daemon
        assert (
            ok(
                subprocess.run(
                    [exe, "ps", "-q"],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                )
            )
            == ""
        )
        assert _daemon_pids(d.exec_root) == pids
        # without autostart a silent socket is an error, not a new daemon
        env_off = dict(env, BULKHEAD_AUTOSTART="0")
        os.kill(pids[0], signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _daemon_pids(d.exec_root) and time.monotonic() < deadline:
            time.sleep(0.05)
        r = subprocess.run(
            [exe, "ps"], env=env_off, capture_output=True, text=True, timeout=30, check=False
        )
        assert r.returncode == 1 and "Cannot connect to the bulkhead daemon" in r.stderr
        assert not _daemon_pids(d.exec_root)
    finally:
        for pid in _daemon_pids(d.exec_root):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        while _daemon_pids(d.exec_root) and time.monotonic() < deadline:
            time.sleep(0.05)


def test_daemon_subcommand_delegates(daemon: Daemon) -> None:
    exe = str(Path(sys.executable).with_name("bulkhead"))
    r = subprocess.run(
        [exe, "daemon", "--help"], capture_output=True, text=True, timeout=30, check=False
    )
    assert r.returncode == 0 and "--data-root" in r.stdout


def test_same_output_as_the_docker_cli(daemon: Daemon) -> None:
    """For the same daemon, bulkhead's listings print what docker 28's do, byte for byte."""
    ok(daemon.bulkhead("volume", "create", "--label", "k=v", "v-one"))
    ok(
        daemon.bulkhead(
            "run", "-d", "--name", "one", "-l", "a=b", "-v", "v-one:/d", "busybox", "sleep", "100"
        )
    )
    assert (
        daemon.bulkhead(
            "run", "--name", "two", "busybox", "sh", "-c", "echo bye; exit 3"
        ).returncode
        == 3
    )
    ok(daemon.bulkhead("tag", "busybox", "example.com/team/bb:1.0"))
    same = [
        ["images"],
        ["images", "-q"],
        ["images", "--digests"],
        ["images", "--format", "{{.Repository}} {{.Tag}} {{.ID}} {{.Size}}"],
        ["history", "busybox"],
        ["history", "--no-trunc", "--format", "{{.CreatedBy}}|{{.Size}}|{{.Comment}}", "busybox"],
        ["volume", "ls"],
        ["volume", "ls", "--format", "{{.Name}} {{.Driver}} {{.Labels}} {{.Scope}}"],
        [
            "ps",
            "-a",
            "--format",
            "{{.ID}} {{.Image}} {{.Command}} {{.Names}} {{.Labels}} {{.State}}",
        ],
        ["ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Command}} {{.Mounts}}"],
        ["ps", "-q"],
        ["ps", "-a", "--format", "json"],
        ["images", "--format", "json"],
        ["volume", "ls", "--format", "json"],
        ["history", "--format", "json", "busybox"],
        ["history", "-H=false", "busybox"],
        ["history", "-q", "busybox"],
        ["ps", "-a", "--format", "table {{.ID}}\t{{.CreatedAt}}\t{{.Ports}}"],
        ["images", "--format", "table {{.Repository}}\t{{.CreatedAt}}\t{{.VirtualSize}}"],
        ["ps", "-a", "-s", "--format", "{{.Names}} {{.Size}} {{.Status}}"],
        ["ps", "-a", "--format", "table {{.Names}}\t{{.Size}}\t{{.Mounts}}\t{{.Networks}}"],
        ["ps", "-a", "--filter", "exited=3", "--format", "{{.Names}}"],
        [
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}} {{json .Config.Cmd}}",
            "two",
        ],
        [
            "inspect",
            "--format",
            '{{index .Config.Labels "a"}} {{range .Mounts}}{{.Name}}:{{.Destination}}{{end}}',
            "one",
        ],
        ["volume", "inspect", "--format", "{{.Name}} {{.Labels}}", "v-one"],
        ["image", "inspect", "--format", "{{.Os}}/{{.Architecture}} {{.RepoTags}}", "busybox"],
        ["diff", "one"],
        ["port", "one"],
        ["logs", "two"],
        ["wait", "two"],
        ["inspect", "nothing-here"],
        ["container", "inspect", "nothing-here"],
        ["image", "inspect", "nothing-here"],
        ["volume", "inspect", "nothing-here"],
        ["inspect", "-f", "{{.Id}}", "busybox", "nothing-here"],
        ["rm", "nothing-here"],
        ["volume", "rm", "nothing-here"],
    ]
    for args in same:
        # Relative times ("1 second ago") may cross a second between the two
        # calls: a difference is only one if it is there three times running.
        for _ in range(3):
            mine, theirs = daemon.bulkhead(*args), daemon.docker(*args)
            if args[0] == "images":
                # docker walks an image's repositories through a Go map: random order
                mine.stdout, theirs.stdout = (
                    "\n".join(sorted(r.stdout.splitlines())) for r in (mine, theirs)
                )
            if (mine.returncode, mine.stdout, mine.stderr) == (
                theirs.returncode,
                theirs.stdout,
                theirs.stderr,
            ):
                break
            time.sleep(0.2)
        assert (mine.returncode, mine.stdout, mine.stderr) == (
            theirs.returncode,
            theirs.stdout,
            theirs.stderr,
        ), (
            f"{args}:\nbulkhead ({mine.returncode}):\n{mine.stdout}{mine.stderr}\n"
            f"docker ({theirs.returncode}):\n{theirs.stdout}{theirs.stderr}"
        )

    # info: the same report, the client's own version aside
    def info_lines(r: subprocess.CompletedProcess[str]) -> list[str]:
        lines = [line for line in r.stdout.splitlines() if not line.startswith(" Version:")]
        # docker lists runtimes in Go map order (random)
        return [
            " Runtimes: " + " ".join(sorted(line.split()[1:]))
            if line.startswith(" Runtimes:")
            else line
            for line in lines
        ]

    mine_info, docker_info = (
        info_lines(daemon.bulkhead("info")),
        info_lines(daemon.docker("info")),
    )
    assert mine_info == docker_info
    # version: the server half is the same
    mine_v, docker_v = (
        r.stdout.split("\nServer:", 1)[1]
        for r in (daemon.bulkhead("version"), daemon.docker("version"))
    )
    assert mine_v == docker_v
    # errors: the same status and text (the program's name aside)
    failing = [
        ["start", "nothing-here"],
        ["rename", "nothing-here", "other"],
        ["stop", "nothing-here"],
        ["logs", "nothing-here"],
        ["exec", "nothing-here", "true"],
        ["run", "--rm", "--pull", "never", "nothing:1"],
        ["create", "--pull", "never", "nothing:1"],
        ["run", "--rm", "busybox", "no-such-command"],
        ["run", "--foo", "busybox"],
        ["run", "-m", "1x", "busybox"],
        ["run", "--pid", "bogus", "busybox"],
        ["run", "--ulimit", "nofile=3:2", "busybox"],
        ["ps", "--bogus"],
        ["run"],
        ["rm"],
        ["volume", "create", "--bogus"],
    ]
    for args in failing:
        mine, theirs = daemon.bulkhead(*args), daemon.docker(*args)
        theirs_err = "\n".join(
            line for line in theirs.stderr.splitlines() if "level=error" not in line
        )
        assert (mine.returncode, mine.stdout, mine.stderr.rstrip("\n")) == (
            theirs.returncode,
            theirs.stdout,
            theirs_err.replace("docker", "bulkhead").rstrip("\n"),
        ), f"{args}:\nbulkhead: {mine}\ndocker: {theirs}"
    ok(daemon.bulkhead("rm", "-f", "one", "two"))
    ok(daemon.bulkhead("rmi", "example.com/team/bb:1.0"))


def test_unknown_image_tries_a_pull_then_fails_with_125(daemon: Daemon, registry: Registry) -> None:
    """The issue's bad-input case, without leaving loopback: a pull from the test registry."""
    ref = registry.ref("nosuch/image:1")
    mine = daemon.bulkhead("run", "--rm", ref, "true")
    theirs = daemon.docker("run", "--rm", ref, "true")
    assert mine.returncode == theirs.returncode == 125
    assert f"Unable to find image '{ref}' locally" in mine.stderr
    last_line = [line for line in mine.stderr.splitlines() if line][-2]
    assert last_line.startswith("bulkhead: Error response from daemon: ")
    theirs_line = next(line for line in theirs.stderr.splitlines() if "Error response" in line)
    assert last_line == theirs_line.replace("docker:", "bulkhead:")
    # nothing left behind: no container, no image
    assert ok(daemon.bulkhead("ps", "-a", "-q")) == ""
    assert ok(daemon.bulkhead("images", "-q", ref)) == ""
    # a registry that does not answer: the same, fast
    from tests.integration.registry_fixtures import free_port

    start = time.monotonic()
    r = daemon.bulkhead("run", "--rm", f"127.0.0.1:{free_port()}/x:1", "true")
    assert r.returncode == 125 and "Error response from daemon" in r.stderr
    assert time.monotonic() - start < 30


def test_create_then_start_attached(daemon: Daemon) -> None:
    cid = ok(daemon.bulkhead("create", "--name", "later", "busybox", "sh", "-c", "echo hi; exit 2"))
    assert len(cid.strip()) == 64
    assert ok(daemon.bulkhead("ps", "-a", "--format", "{{.Names}} {{.State}}")) == "later created\n"
    r = daemon.bulkhead("start", "-a", "later")
    assert (r.returncode, r.stdout) == (2, "hi\n"), r.stderr
    # started again, detached: prints the name, as docker
    assert ok(daemon.bulkhead("start", "later")) == "later\n"
    assert ok(daemon.bulkhead("wait", "later")) == "2\n"
    r = daemon.bulkhead("start", "-a", "-i", "later", input="")
    assert r.returncode == 2
    ok(daemon.bulkhead("rm", "later"))


def _tree(root: Path) -> list[str]:
    out = []
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        out.append(f"{rel}:{p.read_text() if p.is_file() else '/'}")
    return out


@pytest.mark.parametrize(
    ("src", "dst_exists"),
    [
        ("/data", False),
        ("/data", True),
        ("/data/", True),
        ("/data/.", False),
        ("/data/.", True),
        ("/data/f", False),
        ("/data/f", True),
    ],
)
def test_cp_out_matches_docker(daemon: Daemon, tmp_path: Path, src: str, dst_exists: bool) -> None:
    ok(
        daemon.bulkhead(
            "run",
            "-d",
            "--name",
            "src",
            "busybox",
            "sh",
            "-c",
            "mkdir -p /data/sub && echo f > /data/f && echo g > /data/sub/g && sleep 100",
        )
    )
    deadline = time.monotonic() + 5
    while daemon.bulkhead("exec", "src", "cat", "/data/sub/g").stdout != "g\n":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    trees = []
    for tool in ("bulkhead", "docker"):
        base = tmp_path / tool
        base.mkdir()
        dst = base / "dst"
        if dst_exists:
            dst.mkdir()
        run = daemon.bulkhead if tool == "bulkhead" else daemon.docker
        r = run("cp", f"src:{src}", str(dst))
        trees.append((r.returncode, _tree(base)))
    assert trees[0] == trees[1]
    ok(daemon.bulkhead("rm", "-f", "src"))


@pytest.mark.parametrize(
    ("src", "dst"),
    [
        ("dir", "/tmp"),
        ("dir", "/newdir"),
        ("dir/.", "/tmp"),
        ("file", "/tmp/"),
        ("file", "/tmp/renamed"),
    ],
)
def test_cp_in_matches_docker(daemon: Daemon, tmp_path: Path, src: str, dst: str) -> None:
    (tmp_path / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "dir" / "a").write_text("a")
    (tmp_path / "dir" / "sub" / "b").write_text("b")
    (tmp_path / "file").write_text("file")
    listings = []
    for tool in ("bulkhead", "docker"):
        name = f"dst-{tool}"
        ok(daemon.bulkhead("run", "-d", "--name", name, "busybox", "sleep", "100"))
        run = daemon.bulkhead if tool == "bulkhead" else daemon.docker
        r = run("cp", str(tmp_path / src), f"{name}:{dst}")
        listing = ok(
            daemon.bulkhead("exec", name, "sh", "-c", "cd / && find tmp newdir 2>/dev/null | sort")
        )
        listings.append((r.returncode, listing))
        ok(daemon.bulkhead("rm", "-f", name))
    assert listings[0] == listings[1]
