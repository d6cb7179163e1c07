"""OCI hooks: each kind runs at its moment with the state on stdin; failures as the spec says."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.runtime_helpers import cgroup_dirs


def hook_script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def test_every_hook_runs_with_state(rt, bundle, cid, tmp_path):
    log = tmp_path / "hooks.log"
    hooks = {}
    for kind in ("prestart", "createRuntime", "createContainer", "poststart", "poststop"):
        script = hook_script(tmp_path, kind, f'read -r s; echo "{kind} $s" >> {log}')
        hooks[kind] = [{"path": script, "args": [kind]}]
    # startContainer resolves in the container: use the container's own shell
    hooks["startContainer"] = [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /tmp/start-state"]}]
    b = bundle(["sh", "-c", "cat /tmp/start-state"], hooks=hooks)
    proc = rt("run", "--bundle", str(b), cid)
    lines = log.read_text().splitlines()
    kinds = [line.split(" ", 1)[0] for line in lines]
    assert kinds == ["prestart", "createRuntime", "createContainer", "poststart", "poststop"]
    states = {line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1]) for line in lines}
    assert states["prestart"]["status"] == "creating"
    assert states["prestart"]["id"] == cid
    assert states["prestart"]["pid"] > 0
    assert states["prestart"]["bundle"] == str(b)
    assert states["poststart"]["status"] == "running"
    assert states["poststop"]["status"] == "stopped"
    assert json.loads(proc.stdout)["status"] == "created"


def test_failing_prestart_fails_create_and_cleans_up(rt, bundle, cid, tmp_path, cgroup_parent):
    b = bundle(
        ["true"],
        hooks={"prestart": [{"path": hook_script(tmp_path, "bad", "echo nope >&2; exit 3")}]},
    )
    proc = rt("create", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "prestart hook" in proc.stderr and "exit status 3" in proc.stderr
    assert not (rt.root / cid).exists()
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")


def test_hook_timeout(rt, bundle, cid, tmp_path):
    b = bundle(
        ["true"],
        hooks={
            "createRuntime": [{"path": hook_script(tmp_path, "slow", "sleep 10"), "timeout": 1}]
        },
    )
    proc = rt("create", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "did not finish within 1s" in proc.stderr


def test_failing_poststart_is_only_a_warning(rt, bundle, cid, tmp_path):
    b = bundle(["true"], hooks={"poststart": [{"path": hook_script(tmp_path, "bad", "exit 1")}]})
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 0
