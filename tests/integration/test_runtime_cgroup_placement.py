"""How a created container's init gets into its cgroup (``runtime.container._self_placement``).

A parent's ``cgroup.procs`` write waits for an RCU grace period (the kernel's
global migration lock); an init we fork directly on a v1 host is instead
born in the cgroup2 directory (clone3 ``CLONE_INTO_CGROUP``) and writes
itself into each v1 hierarchy's ``tasks``. Either way the init must be in
every hierarchy when create returns, and the parent's move stays for what
cannot do that (hooks, user namespaces, a kernel that refuses clone3).

The library runs in a child Python (it forks: not from pytest's process),
with the parent's move or clone3 replaced to tell which path ran.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.integration.runtime_helpers import cgroup_dirs

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

SCRIPT = r"""
import json, sys
from bulkhead.cgroups import v1
from bulkhead.linux import process
from bulkhead.runtime.container import CreateOptions, Runtime

mode, root, bundle, cid = sys.argv[1:5]
moved = []
real_add_pid = v1.V1Manager.add_pid

def add_pid(self, pid):
    moved.append(pid)
    return real_add_pid(self, pid)

v1.V1Manager.add_pid = add_pid
if mode == "no-clone3":
    def refuse(fd, flags=0):
        raise OSError(38, "clone3: Function not implemented")
    process.fork_into_cgroup = refuse
rt = Runtime(root)
started = rt.create(cid, CreateOptions(bundle=bundle))
with open(f"/proc/{started.pid}/cgroup") as f:
    lines = f.read().splitlines()
print(json.dumps({"pid": started.pid, "parent_moved": moved, "cgroup": lines,
                  "pids": rt.pids(cid)}))
rt.delete(cid, force=True)
"""


def _create(mode: str, root: Path, bundle: Path, cid: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(root), str(bundle), cid],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return doc


def _in_every_hierarchy(lines: list[str], path: str) -> None:
    assert lines
    for line in lines:
        _, controllers, where = line.split(":", 2)
        assert where == path, f"{controllers or 'cgroup2'}: {where} != {path}"


def _is_v1_host() -> bool:
    return not Path("/sys/fs/cgroup/cgroup.controllers").exists()


@pytest.mark.skipif(not _is_v1_host(), reason="self-placement is for cgroup v1 hosts")
def test_init_joins_its_cgroup_itself(bundle, cid, cgroup_parent, tmp_path):
    doc = _create("plain", tmp_path / "root", bundle(["true"]), cid)
    assert doc["parent_moved"] == []
    _in_every_hierarchy(doc["cgroup"], f"{cgroup_parent}/{cid}")  # type: ignore[arg-type]
    assert doc["pids"] == [doc["pid"]]
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")


def test_the_parent_moves_the_init_when_clone3_is_refused(bundle, cid, cgroup_parent, tmp_path):
    doc = _create("no-clone3", tmp_path / "root", bundle(["true"]), cid)
    assert doc["parent_moved"] == [doc["pid"]]
    _in_every_hierarchy(doc["cgroup"], f"{cgroup_parent}/{cid}")  # type: ignore[arg-type]
    assert doc["pids"] == [doc["pid"]]
    assert not cgroup_dirs(f"{cgroup_parent}/{cid}")


def test_with_hooks_the_parent_moves_the_init_before_they_run(bundle, cid, cgroup_parent, tmp_path):
    seen = tmp_path / "seen"
    hook = {
        "path": "/bin/sh",
        "args": [
            "sh",
            "-c",
            f'pid=$(sed "s/.*\\"pid\\":\\([0-9]*\\).*/\\1/"); cat /proc/$pid/cgroup > {seen}',
        ],
    }
    doc = _create(
        "plain", tmp_path / "root", bundle(["true"], hooks={"createRuntime": [hook]}), cid
    )
    assert doc["parent_moved"] == [doc["pid"]]
    _in_every_hierarchy(seen.read_text().splitlines(), f"{cgroup_parent}/{cid}")
