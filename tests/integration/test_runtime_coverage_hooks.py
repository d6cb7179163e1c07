"""OCI hooks through the real CLI: where each kind runs, its args/env/state, failures, timeouts.

``test_runtime_hooks.py`` covers that all six kinds run in order, a failing
prestart, a createRuntime timeout and a failing poststart; these cover the
rest of the spec's rules.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from tests.integration.runtime_helpers import RuntimeCLI, cgroup_dirs, mounts_mentioning

KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.sh"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return str(path)


def in_container_script(rootfs: Path, name: str, body: str) -> str:
    """A hook program inside the rootfs (for the kinds that run in the container)."""
    path = rootfs / name
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(0o755)
    return "/" + name


def assert_nothing_left(rt: RuntimeCLI, cid: str, cgroup: str) -> None:
    assert not (rt.root / cid).exists()
    assert rt("list", "-q").stdout == ""
    assert not cgroup_dirs(cgroup)
    assert mounts_mentioning(str(rt.root)) == 0


def test_hooks_run_in_the_right_namespaces(rt, bundle, cid, tmp_path):
    """prestart/createRuntime/poststart/poststop in the runtime's; createContainer/startContainer in the container's."""
    log = tmp_path / "ns.log"
    probe = 'read -r s; echo "$1 $(readlink /proc/self/ns/mnt) $(readlink /proc/self/ns/uts)"'
    hooks = {}
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        hooks[kind] = [{"path": script(tmp_path, kind, f"{probe} >> {log}"), "args": ["h", kind]}]
    # createContainer runs before pivot_root (host paths still visible), in the container's namespaces
    hooks["createContainer"] = [
        {"path": script(tmp_path, "cc", f"{probe} >> {log}"), "args": ["h", "createContainer"]}
    ]
    b = bundle(["sh", "-c", "readlink /proc/self/ns/mnt; cat /tmp/start.log"], hooks=hooks)
    start = in_container_script(b / "rootfs", "start.sh", f"{probe} > /tmp/start.log")
    spec = json.loads((b / "config.json").read_text())
    spec["hooks"]["startContainer"] = [{"path": start, "args": ["h", "startContainer"]}]
    (b / "config.json").write_text(json.dumps(spec))
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 0, proc.stderr
    container_mnt, start_line = proc.stdout.splitlines()
    seen = {line.split()[0]: line.split()[1:] for line in log.read_text().splitlines()}
    seen["startContainer"] = start_line.split()[1:]
    host = [os.readlink("/proc/self/ns/mnt"), os.readlink("/proc/self/ns/uts")]
    for kind in ("prestart", "createRuntime", "poststart", "poststop"):
        assert seen[kind] == host, kind
    for kind in ("createContainer", "startContainer"):
        assert seen[kind][0] == container_mnt, kind
        assert seen[kind][1] != host[1], kind


def test_hook_gets_exactly_its_args_and_env(rt, bundle, cid, tmp_path):
    out = tmp_path / "out"
    hook = script(tmp_path, "h", f'echo "$0|$1|$2" > {out}; env | grep -v ^PWD= | sort >> {out}')
    b = bundle(
        ["true"],
        hooks={
            "createRuntime": [
                {"path": hook, "args": ["argv0-name", "one", "two words"], "env": ["A=1", "B=x y"]}
            ]
        },
    )
    rt("run", "--bundle", str(b), cid)
    lines = out.read_text().splitlines()
    assert lines[0].endswith("|one|two words")
    assert lines[1:] == ["A=1", "B=x y"]


def test_state_on_stdin_for_every_kind(rt, bundle, cid, tmp_path):
    log = tmp_path / "state.log"
    hooks = {}
    for kind in KINDS:
        if kind == "startContainer":
            continue
        body = f'read -r s; echo "{kind} $s" >> {log}'
        hooks[kind] = [{"path": script(tmp_path, kind, body)}]
    b = bundle(["sh", "-c", "cat /tmp/start-state"], hooks=hooks, annotations={"k": "v"})
    spec = json.loads((b / "config.json").read_text())
    spec["hooks"]["startContainer"] = [
        {"path": "/bin/sh", "args": ["sh", "-c", "cat > /tmp/start-state"]}
    ]
    (b / "config.json").write_text(json.dumps(spec))
    proc = rt("run", "--bundle", str(b), cid)
    states = {
        line.split(" ", 1)[0]: json.loads(line.split(" ", 1)[1])
        for line in log.read_text().splitlines()
    }
    states["startContainer"] = json.loads(proc.stdout)
    want_status = {
        "prestart": "creating",
        "createRuntime": "creating",
        "createContainer": "creating",
        "startContainer": "created",
        "poststart": "running",
        "poststop": "stopped",
    }
    for kind, status in want_status.items():
        st = states[kind]
        assert st["status"] == status, kind
        assert st["id"] == cid, kind
        assert st["bundle"] == str(b), kind
        assert st["annotations"] == {"k": "v"}, kind
        assert st["ociVersion"].startswith("1."), kind
    assert states["prestart"]["pid"] == states["poststart"]["pid"] > 0


def test_hooks_of_one_kind_run_in_order_and_stop_at_the_first_failure(
    rt, bundle, cid, tmp_path, cgroup_parent
):
    log = tmp_path / "order.log"
    b = bundle(
        ["true"],
        hooks={
            "prestart": [
                {"path": script(tmp_path, "a", f"echo a >> {log}")},
                {"path": script(tmp_path, "b", f"echo b >> {log}; exit 2")},
                {"path": script(tmp_path, "c", f"echo c >> {log}")},
            ]
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert log.read_text().split() == ["a", "b"]
    assert_nothing_left(rt, cid, f"{cgroup_parent}/{cid}")


@pytest.mark.parametrize("kind", ["createRuntime", "createContainer"])
def test_failing_create_hook_fails_create_and_leaves_nothing(
    rt, bundle, cid, tmp_path, cgroup_parent, kind
):
    b = bundle(["true"], hooks={kind: [{"path": script(tmp_path, "bad", "echo why >&2; exit 4")}]})
    proc = rt("create", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "exit status 4" in lines[0]
    assert_nothing_left(rt, cid, f"{cgroup_parent}/{cid}")


def test_failing_start_container_hook_stops_the_container(rt, bundle, cid):
    """The user's program never runs; the container ends stopped (as runc)."""
    b = bundle(
        ["sh", "-c", "echo program-ran"],
        hooks={
            "createContainer": [{"path": "/bin/true"}],
            "startContainer": [{"path": "/bin/false"}],
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode != 0
    assert "program-ran" not in proc.stdout


def test_failing_start_container_hook_says_so(rt, bundle, cid):
    """runc prints 'error running hook #0: ...' on the container's stderr."""
    b = bundle(
        ["sh", "-c", "echo program-ran"],
        hooks={
            "createContainer": [{"path": "/bin/true"}],
            "startContainer": [{"path": "/bin/false"}],
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert "hook" in proc.stderr and "exit status 1" in proc.stderr


def test_start_container_hook_without_other_hooks(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "cat /tmp/started"],
        hooks={
            "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "echo hi > /tmp/started"]}]
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "hi\n"


def test_start_container_hook_leaves_no_python_noise(rt, bundle, cid):
    b = bundle(
        ["sh", "-c", "echo main"],
        hooks={
            "createContainer": [{"path": "/bin/true"}],
            "startContainer": [{"path": "/bin/true"}],
        },
    )
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 0
    assert proc.stdout == "main\n"
    assert proc.stderr == ""


def test_failing_poststop_is_only_a_warning(rt, bundle, cid, tmp_path, cgroup_parent):
    log = tmp_path / "after"
    b = bundle(
        ["true"],
        hooks={
            "poststop": [
                {"path": script(tmp_path, "bad", "exit 3")},
                {"path": script(tmp_path, "next", f"echo ran > {log}")},
            ]
        },
    )
    rt("run", "-d", "--bundle", str(b), cid)
    deadline = time.monotonic() + 10
    while rt.state(cid)["status"] != "stopped":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc = rt("delete", cid, check=False)
    assert proc.returncode == 0
    assert "poststop" in proc.stderr
    assert log.read_text() == "ran\n"  # the remaining hooks still run
    assert_nothing_left(rt, cid, f"{cgroup_parent}/{cid}")


@pytest.mark.parametrize("kind", ["prestart", "createContainer", "poststart", "poststop"])
def test_hook_timeout_for_each_kind(rt, bundle, cid, tmp_path, kind):
    b = bundle(
        ["true"],
        hooks={kind: [{"path": script(tmp_path, "slow", "sleep 5"), "timeout": 1}]},
    )
    proc = rt("run", "--bundle", str(b), cid, check=False, timeout=30)
    assert "did not finish within 1s" in proc.stderr or "timed out" in proc.stderr
    if kind in ("prestart", "createContainer"):
        assert proc.returncode == 1
    else:
        assert proc.returncode == 0  # poststart/poststop failures are warnings


def test_hook_with_a_missing_program(rt, bundle, cid, tmp_path, cgroup_parent):
    b = bundle(["true"], hooks={"prestart": [{"path": str(tmp_path / "no-such-hook")}]})
    proc = rt("create", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no-such-hook" in lines[0]
    assert_nothing_left(rt, cid, f"{cgroup_parent}/{cid}")
