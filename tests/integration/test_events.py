"""``docker events`` and ``bulkhead events`` against a real daemon; OOM kills in inspect and events.

Every stream here is bounded by ``--until`` (a time already past: the
history only; or a few seconds ahead: the live stream ends then), so each
command exits by itself.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from typing import Any

import pytest
from tests.integration.engine_fixtures import DOCKER, Daemon

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
]

needs_docker = pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed")


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\nstdout: {r.stdout}\nstderr: {r.stderr}"
    return r.stdout


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def actions(events: list[dict[str, Any]], actor: str) -> list[str]:
    return [e["Action"] for e in events if e["Actor"]["ID"] == actor]


@needs_docker
def test_docker_events_since_until_shows_a_run(daemon: Daemon) -> None:
    since = f"{time.time() - 1:.3f}"
    r = daemon.docker(
        "run", "--name", "ev-run", "--label", "team=a", "busybox", "sh", "-c", "exit 3"
    )
    assert r.returncode == 3, r.stderr
    cid = ok(daemon.docker("inspect", "-f", "{{.Id}}", "ev-run")).strip()
    ok(daemon.docker("rm", "ev-run"))
    out = ok(
        daemon.docker(
            "events", "--since", since, "--until", f"{time.time():.3f}", "--format", "{{json .}}"
        )
    )
    events = json_lines(out)
    assert actions(events, cid) == ["create", "attach", "start", "die", "destroy"]
    die = next(e for e in events if e["Action"] == "die")
    attrs = die["Actor"]["Attributes"]
    assert attrs["exitCode"] == "3"
    assert attrs["name"] == "ev-run" and attrs["image"] == "busybox" and attrs["team"] == "a"
    assert "execDuration" in attrs
    assert die["Type"] == "container" and die["scope"] == "local"
    assert die["timeNano"] // 1_000_000_000 == die["time"]


@needs_docker
def test_docker_events_filters(daemon: Daemon) -> None:
    since = f"{time.time() - 1:.3f}"
    ok(daemon.docker("create", "--name", "ev-a", "--label", "k=1", "busybox", "true"))
    ok(daemon.docker("create", "--name", "ev-b", "busybox", "true"))
    ok(daemon.docker("start", "ev-a"))
    ok(daemon.docker("wait", "ev-a"))
    until = f"{time.time():.3f}"

    def names(*filters: str) -> list[tuple[str, str]]:
        args = [a for f in filters for a in ("--filter", f)]
        out = ok(
            daemon.docker(
                "events", "--since", since, "--until", until, *args, "--format", "{{json .}}"
            )
        )
        return [(e["Actor"]["Attributes"]["name"], e["Action"]) for e in json_lines(out)]

    assert names("container=ev-b") == [("ev-b", "create")]
    assert names("event=start") == [("ev-a", "start")]
    assert names("event=create", "event=die") == [
        ("ev-a", "create"),
        ("ev-b", "create"),
        ("ev-a", "die"),
    ]
    assert names("label=k=1", "event=create") == [("ev-a", "create")]
    assert names("label=k=2") == []
    assert names("image=busybox", "event=create") == [("ev-a", "create"), ("ev-b", "create")]
    assert names("type=image") == []
    # the default (human) format: time, type, action, id, sorted attributes
    out = ok(daemon.docker("events", "--since", since, "--until", until, "-f", "container=ev-b"))
    line = out.strip()
    assert " container create " in line and line.endswith("(image=busybox, name=ev-b)")


@needs_docker
def test_docker_events_until_in_the_future_streams_live_then_ends(daemon: Daemon) -> None:
    # --since: a start that comes before the subscription is made (a slow machine)
    # is in the replayed past, not lost; either way the stream ends at --until.
    since, until = f"{time.time():.3f}", f"{time.time() + 6:.3f}"
    watcher = subprocess.Popen(
        [str(DOCKER), "events", "--since", since, "--until", until, "--format", "{{json .}}",
         "-f", "event=start"],
        env=daemon.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        ok(daemon.docker("run", "--rm", "--name", "ev-live", "busybox", "true"))
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert watcher.returncode == 0, err
    assert [e["Actor"]["Attributes"]["name"] for e in json_lines(out)] == ["ev-live"]


@needs_docker
def test_docker_events_since_after_until_is_refused(daemon: Daemon) -> None:
    r = daemon.docker("events", "--since", "2000000000", "--until", "1000000000")
    assert r.returncode != 0
    assert "cannot be after" in r.stderr


def test_bulkhead_events_cli(daemon: Daemon) -> None:
    ok(daemon.bulkhead("create", "--name", "ev-cli", "busybox", "true"))
    ok(daemon.bulkhead("rename", "ev-cli", "ev-cli2"))
    out = ok(daemon.bulkhead("events", "--since", "1m", "--until", "0s", "--format", "{{json .}}"))
    events = json_lines(out)
    assert [e["Action"] for e in events] == ["create", "rename"]
    assert events[1]["Actor"]["Attributes"]["oldName"] == "/ev-cli"
    assert events[1]["Actor"]["Attributes"]["name"] == "ev-cli2"
    out = ok(
        daemon.bulkhead("events", "--since", "1m", "--until", "0s", "--filter", "event=create")
    )
    line = out.strip()
    assert line.endswith("(image=busybox, name=ev-cli)")
    stamp, kind, action, ident = line.split(" ")[:4]
    assert (kind, action, ident) == ("container", "create", events[0]["Actor"]["ID"])
    assert len(stamp) == len("2024-01-01T00:00:00.123456789Z") and stamp.endswith("Z")
    out = ok(
        daemon.bulkhead(
            "events",
            "--since",
            "1m",
            "--until",
            "0s",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        )
    )
    assert out.splitlines() == ["create ev-cli", "rename ev-cli2"]


def test_bulkhead_exec_events(daemon: Daemon) -> None:
    ok(daemon.bulkhead("run", "-d", "--name", "ev-exec", "busybox", "sleep", "60"))
    assert daemon.bulkhead("exec", "ev-exec", "sh", "-c", "exit 5").returncode == 5
    out = ok(
        daemon.bulkhead(
            "events", "--since", "1m", "--until", "0s", "-f", "event=exec_create", "-f",
            "event=exec_start", "-f", "event=exec_die", "--format", "{{json .}}",
        )
    )  # fmt: skip
    events = json_lines(out)
    assert [e["Action"] for e in events] == [
        "exec_create: sh -c exit 5",
        "exec_start: sh -c exit 5",
        "exec_die",
    ]
    assert len({e["Actor"]["Attributes"]["execID"] for e in events}) == 1
    assert events[2]["Actor"]["Attributes"]["exitCode"] == "5"
    ok(daemon.bulkhead("rm", "-f", "ev-exec"))


@needs_docker
@pytest.mark.parametrize("runtime", ["default", "runc"])
def test_oom_kill_is_reported_in_inspect_and_events(daemon_factory: Any, runtime: str) -> None:
    if runtime != "default" and shutil.which(runtime) is None:
        pytest.skip(f"{runtime} is not installed")
    daemon = daemon_factory(None if runtime == "default" else ["--default-runtime", runtime])
    since = f"{time.time() - 1:.3f}"
    r = daemon.docker(
        "run", "--name", "hog", "-m", "16m", "--memory-swap", "16m", "busybox",
        "sh", "-c", "x=a; while :; do x=$x$x; done",
    )  # fmt: skip
    assert r.returncode == 137, r.stderr
    state = json.loads(ok(daemon.docker("inspect", "-f", "{{json .State}}", "hog")))
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    out = ok(
        daemon.docker(
            "events", "--since", since, "--until", f"{time.time():.3f}",
            "-f", "container=hog", "--format", "{{json .}}",
        )
    )  # fmt: skip
    events = json_lines(out)
    acts = [e["Action"] for e in events]
    assert acts[-2:] == ["oom", "die"], acts
    assert events[-1]["Actor"]["Attributes"]["exitCode"] == "137"


def _events(daemon: Daemon, since: str, *filters: str) -> list[dict[str, Any]]:
    args = [a for f in filters for a in ("--filter", f)]
    out = ok(
        daemon.docker(
            "events", "--since", since, "--until", f"{time.time():.3f}", *args,
            "--format", "{{json .}}",
        )
    )  # fmt: skip
    return json_lines(out)


@needs_docker
def test_image_events_tag_save_load_rmi_commit(daemon: Daemon, tmp_path: Any) -> None:
    since = f"{time.time() - 1:.3f}"
    bb = ok(daemon.docker("image", "inspect", "-f", "{{.Id}}", "busybox")).strip()
    ok(daemon.docker("tag", "busybox", "mine:1"))
    archive = str(tmp_path / "bb.tar")
    ok(daemon.docker("save", "-o", archive, "mine:1"))
    ok(daemon.docker("rmi", "mine:1"))  # busybox still names it: an untag only
    ok(daemon.docker("load", "-i", archive))
    ok(daemon.docker("create", "--name", "ev-commit", "busybox", "true"))
    new = ok(daemon.docker("commit", "-m", "why", "ev-commit", "snap:2")).strip()
    ok(daemon.docker("rm", "ev-commit"))
    ok(daemon.docker("rmi", "snap:2"))  # its last name: untag, then delete
    got = [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"].get("name")) for e in
           _events(daemon, since, "type=image")]  # fmt: skip
    assert got == [
        ("tag", bb, "mine:1"),
        ("save", bb, bb),
        ("untag", bb, bb),
        ("load", bb, bb),
        ("tag", new, "snap:2"),
        ("untag", new, new),
        ("delete", new, new),
    ]
    commit = _events(daemon, since, "event=commit")
    assert len(commit) == 1
    assert commit[0]["Actor"]["Attributes"]["imageID"] == new
    assert commit[0]["Actor"]["Attributes"]["imageRef"] == "snap:2"
    assert commit[0]["Actor"]["Attributes"]["comment"] == "why"
    # the image filter: an image event by name, a container event by its image
    assert [e["Action"] for e in _events(daemon, since, "image=mine")] == ["tag"]


@needs_docker
def test_volume_events(daemon: Daemon) -> None:
    since = f"{time.time() - 1:.3f}"
    ok(daemon.docker("volume", "create", "ev-vol"))
    ok(daemon.docker("volume", "create", "ev-vol"))  # exists already: no second create
    ok(daemon.docker("volume", "rm", "ev-vol"))
    ok(daemon.docker("run", "--rm", "-v", "/data", "busybox", "true"))
    events = _events(daemon, since, "type=volume", "event=create", "event=destroy")
    acts = [(e["Action"], e["Actor"]["Attributes"]) for e in events]
    assert acts[:2] == [("create", {"driver": "local"}), ("destroy", {"driver": "local"})]
    assert events[0]["Actor"]["ID"] == "ev-vol"
    anonymous = [(e["Action"], e["Actor"]["ID"]) for e in events[2:]]
    assert [a for a, _ in anonymous] == ["create", "destroy"]
    assert anonymous[0][1] == anonymous[1][1] and len(anonymous[0][1]) == 64
    assert [e["Action"] for e in _events(daemon, since, "volume=ev-vol")] == ["create", "destroy"]
    assert [e["Action"] for e in _events(daemon, since, "event=mount")] == ["mount"]


@needs_docker
def test_volume_mount_and_unmount_events(daemon: Daemon) -> None:
    since = f"{time.time() - 1:.3f}"
    ok(daemon.docker("run", "--name", "ev-mnt", "-v", "ev-data:/data:ro", "busybox", "true"))
    cid = ok(daemon.docker("inspect", "-f", "{{.Id}}", "ev-mnt")).strip()
    events = _events(daemon, since, "event=mount", "event=unmount", "event=start", "event=die")
    got = [(e["Type"], e["Action"]) for e in events]
    assert got == [
        ("volume", "mount"),
        ("container", "start"),
        ("volume", "unmount"),
        ("container", "die"),
    ]
    assert events[0]["Actor"]["ID"] == "ev-data"
    assert events[0]["Actor"]["Attributes"] == {
        "container": cid, "destination": "/data", "driver": "local",
        "propagation": "", "read/write": "false",
    }  # fmt: skip
    assert events[2]["Actor"]["Attributes"] == {"container": cid, "driver": "local"}


@needs_docker
def test_push_and_pull_events(daemon: Daemon, registry: Any) -> None:
    since = f"{time.time() - 1:.3f}"
    ref = registry.ref("ev/bb:1")
    ok(daemon.docker("tag", "busybox", ref))
    ok(daemon.docker("push", ref))
    ok(daemon.docker("pull", ref))
    got = [
        (e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]["name"])
        for e in _events(daemon, since, "event=push", "event=pull")
    ]
    name = ref.rsplit(":", 1)[0]
    assert got == [("push", ref, name), ("pull", ref, name)]


@needs_docker
def test_import_event(daemon: Daemon, tmp_path: Any) -> None:
    import tarfile

    since = f"{time.time() - 1:.3f}"
    path = tmp_path / "root.tar"
    (tmp_path / "hello").write_text("hi\n")
    with tarfile.open(path, "w") as tar:
        tar.add(tmp_path / "hello", arcname="hello")
    new = ok(daemon.docker("import", str(path), "imp:1")).strip()
    events = _events(daemon, since, "type=image")
    got = [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]["name"]) for e in events]
    assert got == [("tag", new, "imp:1"), ("import", new, new)]


@needs_docker
def test_stop_restart_kill_rm_sequences(daemon: Daemon) -> None:
    ok(daemon.docker("run", "-d", "--name", "ev-seq", "busybox", "sleep", "60"))
    cid = ok(daemon.docker("inspect", "-f", "{{.Id}}", "ev-seq")).strip()

    def seq(*cmd: str) -> list[str]:
        since = f"{time.time() - 0.001:.6f}"
        ok(daemon.docker(*cmd))
        return [
            e["Action"]
            + (f" {e['Actor']['Attributes']['signal']}" if e["Action"] == "kill" else "")
            for e in _events(daemon, since, f"container={cid}")
        ]

    # sleep ignores SIGTERM as PID 1: docker stop -t 1 escalates to SIGKILL
    assert seq("stop", "-t", "1", "ev-seq") == ["kill 15", "kill 9", "die", "stop"]
    assert seq("start", "ev-seq") == ["start"]
    assert seq("restart", "-t", "0", "ev-seq") == [
        "kill 15",
        "kill 9",
        "die",
        "stop",
        "start",
        "restart",
    ]
    assert seq("kill", "-s", "USR1", "ev-seq") == ["kill 10"]
    assert seq("rm", "-f", "ev-seq") == ["kill 9", "die", "destroy"]


def test_docker_py_events(daemon: Daemon) -> None:
    client = daemon.client()
    since = time.time() - 1
    client.containers.create("busybox", "true", name="ev-py", labels={"via": "py"})
    until = time.time()
    got = list(client.events(since=since, until=until, decode=True, filters={"label": "via=py"}))
    assert [(e["Type"], e["Action"], e["Actor"]["Attributes"]["name"]) for e in got] == [
        ("container", "create", "ev-py")
    ]


@needs_docker
def test_file_and_tty_events(daemon: Daemon, tmp_path: Any) -> None:
    ok(daemon.docker("run", "-d", "-t", "--name", "ev-files", "busybox", "sleep", "60"))
    since = f"{time.time() - 0.001:.6f}"
    (tmp_path / "in.txt").write_text("x")
    ok(daemon.docker("cp", str(tmp_path / "in.txt"), "ev-files:/tmp/"))
    ok(daemon.docker("cp", "ev-files:/tmp/in.txt", str(tmp_path / "out.txt")))
    ok(daemon.docker("export", "-o", str(tmp_path / "fs.tar"), "ev-files"))
    daemon.client().api.resize("ev-files", height=30, width=100)
    events = _events(daemon, since, "container=ev-files")
    assert [e["Action"] for e in events] == ["extract-to-dir", "archive-path", "export", "resize"]
    assert events[-1]["Actor"]["Attributes"]["height"] == "30"
    assert events[-1]["Actor"]["Attributes"]["width"] == "100"
    ok(daemon.docker("rm", "-f", "ev-files"))
