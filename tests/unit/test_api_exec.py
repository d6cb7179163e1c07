"""The exec API's bookkeeping and the OCI process it builds from the container's bundle."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bulkhead.api.errors import BadRequest
from bulkhead.api.exec import MAX_FINISHED, ExecAPI, ExecInstance
from bulkhead.api.routes import Request
from bulkhead.engine.bundle import ContainerPaths
from bulkhead.engine.spec import ALL_CAPABILITIES
from bulkhead.errors import ContainerNotRunning, NoSuchExec

CID = "c" * 64


class FakeEngine:
    def __init__(self, root: Path, running: bool = True) -> None:
        self.root = root
        self.running = running
        self.env: list[str] = []
        self.containers = {CID}
        self.store = SimpleNamespace(exists=lambda cid: cid in self.containers)
        self.emitted: list[tuple[str, dict[str, str]]] = []

    def emit(self, c: Any, action: str, **extra: str) -> None:
        self.emitted.append((action, extra))

    def paths(self, cid: str) -> ContainerPaths:
        return ContainerPaths(self.root, cid)

    def get(self, ref: str) -> Any:
        state = SimpleNamespace(running=self.running, paused=False)
        return SimpleNamespace(
            id=CID, state=state, host_config={"GroupAdd": ["42"]}, config={"Env": self.env}
        )


@pytest.fixture
def api(tmp_path: Path) -> ExecAPI:
    engine = FakeEngine(tmp_path)
    paths = engine.paths(CID)
    (paths.rootfs / "etc").mkdir(parents=True)
    (paths.rootfs / "etc" / "passwd").write_text(
        "root:x:0:0::/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"
    )
    (paths.rootfs / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    spec = {
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": ["sleep", "60"],
            "env": ["PATH=/usr/bin:/bin", "HOSTNAME=abc", "A=from-run"],
            "cwd": "/",
            "capabilities": {
                "bounding": ["CAP_CHOWN"],
                "effective": ["CAP_CHOWN"],
                "permitted": ["CAP_CHOWN"],
            },
            "noNewPrivileges": True,
        }
    }
    paths.config_json.write_text(json.dumps(spec))
    return ExecAPI(SimpleNamespace(engine=engine))  # type: ignore[arg-type]


def request(params: dict[str, str], body: Any) -> Request:
    return Request("POST", "/x", "1.45", {}, {}, json.dumps(body).encode(), params)


def create(api: ExecAPI, body: dict[str, Any]) -> ExecInstance:
    resp = asyncio.run(api.create(request({"id": CID}, body)))
    assert resp.status == 201
    return api.get(json.loads(resp.body)["Id"])


def test_process_keeps_the_containers_and_overrides_what_exec_says(api: ExecAPI) -> None:
    inst = create(
        api,
        {"Cmd": ["sh", "-c", "id"], "Env": ["HOSTNAME=x", "A=exec", "B=2"], "WorkingDir": "/tmp"},
    )
    p = api._process(inst)
    assert p["args"] == ["sh", "-c", "id"]
    # overrides keep their place (Docker's ReplaceOrAppendEnvValues), new ones are appended
    assert p["env"] == ["PATH=/usr/bin:/bin", "HOSTNAME=x", "A=exec", "B=2"]
    assert p["cwd"] == "/tmp"
    assert p["user"] == {"uid": 0, "gid": 0}
    assert p["noNewPrivileges"] is True
    assert p["terminal"] is False
    assert p["capabilities"]["effective"] == ["CAP_CHOWN"]


def test_process_user_tty_privileged_console(api: ExecAPI) -> None:
    inst = create(
        api,
        {
            "Cmd": ["sh"],
            "User": "nobody",
            "Tty": True,
            "Privileged": True,
            "ConsoleSize": [40, 120],
        },
    )
    p = api._process(inst)
    assert p["user"] == {"uid": 65534, "gid": 65534, "additionalGids": [42]}
    assert p["terminal"] is True
    assert "TERM=xterm" in p["env"]
    assert p["capabilities"]["bounding"] == list(ALL_CAPABILITIES)
    assert p["consoleSize"] == {"height": 40, "width": 120}
    inst = create(api, {"Cmd": ["sh"], "User": "nosuchuser"})
    with pytest.raises(BadRequest, match="invalid User"):
        api._process(inst)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "No exec command specified"),
        ({"Cmd": []}, "No exec command specified"),
        ({"Cmd": [1]}, "invalid Cmd"),
        ({"Cmd": ["x"], "Env": ["=bad"]}, "invalid Env"),
        ({"Cmd": ["x"], "WorkingDir": "tmp"}, "invalid WorkingDir"),
        ({"Cmd": ["x"], "Tty": "yes"}, "invalid Tty"),
        ({"Cmd": ["x"], "DetachKeys": "ctrl-"}, "Invalid detach keys"),
        ({"Cmd": ["x"], "ConsoleSize": [1]}, "invalid ConsoleSize"),
    ],
)
def test_create_rejects(api: ExecAPI, body: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        asyncio.run(api.create(request({"id": CID}, body)))


def test_create_needs_a_running_container(api: ExecAPI) -> None:
    api.engine.running = False  # type: ignore[attr-defined]
    with pytest.raises(ContainerNotRunning):
        asyncio.run(api.create(request({"id": CID}, {"Cmd": ["true"]})))


def test_inspect_shape_and_unknown_id(api: ExecAPI) -> None:
    inst = create(api, {"Cmd": ["ls", "-l"], "AttachStdout": True, "User": "nobody"})
    doc = json.loads(asyncio.run(api.inspect(request({"id": inst.id}, None))).body)
    assert doc["ID"] == inst.id and doc["ContainerID"] == CID
    assert doc["Running"] is False and doc["ExitCode"] is None
    assert doc["ProcessConfig"] == {
        "arguments": ["-l"], "entrypoint": "ls", "privileged": False, "tty": False, "user": "nobody",
    }  # fmt: skip
    assert doc["OpenStdout"] is True and doc["OpenStdin"] is False
    with pytest.raises(NoSuchExec):
        asyncio.run(api.inspect(request({"id": "nope"}, None)))


def test_finished_instances_are_forgotten(api: ExecAPI) -> None:
    first = create(api, {"Cmd": ["true"]})
    first.started, first.exit_code = True, 0
    api.engine.containers.discard(CID)  # type: ignore[attr-defined]
    api._forget_finished()  # its container is gone: so is it
    assert first.id not in api.instances
    api.engine.containers.add(CID)  # type: ignore[attr-defined]
    made = [create(api, {"Cmd": ["true"]}) for _ in range(MAX_FINISHED + 5)]
    for inst in made:
        inst.started = True
    api._forget_finished()
    assert len(api.instances) == MAX_FINISHED
    assert made[0].id not in api.instances and made[-1].id in api.instances


def test_exec_ids_are_the_containers_unfinished_instances(api: ExecAPI) -> None:
    created = create(api, {"Cmd": ["true"]})
    running = create(api, {"Cmd": ["sleep", "9"]})
    running.started = running.running = True
    ended = create(api, {"Cmd": ["true"]})
    ended.started, ended.exit_code = True, 0
    assert api.exec_ids(CID) == [created.id, running.id]
    assert api.exec_ids("other") == []


def test_term_follows_the_execs_tty_not_the_containers(api: ExecAPI) -> None:
    spec_path = api.engine.paths(CID).config_json
    spec = json.loads(spec_path.read_text())
    spec["process"]["env"].append("TERM=xterm")  # a container started with -t
    spec_path.write_text(json.dumps(spec))
    assert not any(
        e.startswith("TERM=") for e in api._process(create(api, {"Cmd": ["env"]}))["env"]
    )
    assert "TERM=xterm" in api._process(create(api, {"Cmd": ["env"], "Tty": True}))["env"]
    api.engine.env = ["TERM=vt100"]  # type: ignore[attr-defined]
    spec["process"]["env"][-1] = "TERM=vt100"
    spec_path.write_text(json.dumps(spec))
    assert "TERM=vt100" in api._process(create(api, {"Cmd": ["env"]}))["env"]
    assert "TERM=vt100" in api._process(create(api, {"Cmd": ["env"], "Tty": True}))["env"]


def test_exec_events_create_and_die_once(api: ExecAPI) -> None:
    inst = create(api, {"Cmd": ["sh", "-c", "exit 3"]})
    events: list[tuple[str, dict[str, str]]] = api.engine.emitted  # type: ignore[attr-defined]
    assert events == [("exec_create: sh -c exit 3", {"execID": inst.id})]
    inst.started = inst.running = True
    api._finish(inst, 3)
    api._finish(inst, 3)  # already ended: no second exec_die
    assert events[1:] == [("exec_die", {"execID": inst.id, "exitCode": "3"})]
    no_args = create(api, {"Cmd": ["ls"]})
    assert events[-1][0] == "exec_create: ls "  # Docker's action keeps the space
    assert events[-1][1] == {"execID": no_args.id}
