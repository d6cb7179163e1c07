"""Bad input: a clear one-line error, a non-zero exit, and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from tests.integration.runtime_helpers import RuntimeCLI, cgroup_dirs, mounts_mentioning


def our_children() -> set[int]:
    """The processes this test session has as direct children right now."""
    out = subprocess.run(["pgrep", "-P", str(os.getpid())], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def assert_nothing_left(rt: RuntimeCLI, cid: str, cgroup: str, before_pids: set[int]) -> None:
    assert not (rt.root / cid).exists()
    assert rt("list", "-q").stdout == ""
    assert not cgroup_dirs(cgroup)
    assert mounts_mentioning(str(rt.root)) == 0
    # (a session-wide daemon such as the conformance tests' containerd is in before_pids)
    assert our_children() <= before_pids


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_missing_bundle(rt, cid, tmp_path):
    proc = rt("create", "--bundle", str(tmp_path / "nope"), cid, check=False)
    assert proc.returncode == 1
    assert "nope" in one_line_error(proc)
    assert not (rt.root / cid).exists()


def test_bundle_without_config(rt, cid, tmp_path):
    proc = rt("create", "--bundle", str(tmp_path), cid, check=False)
    assert proc.returncode == 1
    assert "config.json" in one_line_error(proc)


def test_invalid_json(rt, cid, tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    proc = rt("create", "--bundle", str(tmp_path), cid, check=False)
    assert proc.returncode == 1
    assert "config.json" in one_line_error(proc)


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda s: s["process"]["user"].__setitem__("uid", "zero"), "$.process.user.uid"),
        (lambda s: s.__setitem__("ociVersion", "2.0.0"), "2.0.0"),
        (lambda s: s["process"].__setitem__("args", []), "args"),
        (lambda s: s["linux"]["namespaces"].append({"type": "bogus"}), "bogus"),
    ],
    ids=["wrong-type", "oci-major", "empty-args", "bad-namespace"],
)
def test_bad_config_names_the_field(rt, bundle, cid, cgroup_parent, mutate, expect):
    b = bundle(["true"])
    spec = json.loads((b / "config.json").read_text())
    mutate(spec)
    (b / "config.json").write_text(json.dumps(spec))
    before = our_children()
    proc = rt("create", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert expect in one_line_error(proc)
    assert_nothing_left(rt, cid, f"{cgroup_parent}/{cid}", before)


@pytest.mark.parametrize("bad_id", ["a/b", "..", "", "with space", "x" * 1025])
def test_invalid_container_id(rt, bundle, bad_id):
    b = bundle(["true"])
    proc = rt("create", "--bundle", str(b), bad_id, check=False)
    assert proc.returncode != 0
    assert not any(rt.root.iterdir()) if rt.root.exists() else True


def test_duplicate_id(rt, bundle, cid):
    b = bundle(["sleep", "10"])
    rt("create", "--bundle", str(b), cid)
    proc = rt("create", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "exists" in one_line_error(proc)
    assert rt.state(cid)["status"] == "created"


def test_unknown_container(rt):
    for verb in (["state"], ["start"], ["kill"], ["delete"], ["pause"], ["exec"], ["ps"]):
        args = [*verb, "nope"] + (["true"] if verb == ["exec"] else [])
        proc = rt(*args, check=False)
        assert proc.returncode == 1, verb
        assert "does not exist" in one_line_error(proc), verb
    assert rt("delete", "--force", "nope").returncode == 0


def test_failing_mount_leaves_nothing(rt, bundle, cid, cgroup_parent):
    b = bundle(
        ["true"],
        mounts=[
            {
                "destination": "/mnt",
                "type": "bind",
                "source": "/nonexistent-bh",
                "options": ["bind"],
            }
        ],
    )
    before = our_children()
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "/nonexistent-bh" in one_line_error(proc)
    assert_nothing_left(rt, cid, f"{cgroup_parent}/{cid}", before)


def test_log_file_json_format(rt, bundle, cid, tmp_path):
    log = tmp_path / "log.json"
    proc = rt("--log", str(log), "--log-format", "json", "state", "nope", check=False)
    assert proc.returncode == 1
    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error" and "does not exist" in entry["msg"]
    assert "does not exist" in proc.stderr


def test_systemd_cgroup_is_a_clear_error(rt, bundle, cid):
    b = bundle(["true"])
    proc = rt("--systemd-cgroup", "run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "systemd" in one_line_error(proc)


def test_apparmor_requested_but_missing(rt, bundle, cid):
    if Path("/sys/kernel/security/apparmor").exists():
        pytest.skip("AppArmor is enabled here")
    b = bundle(["true"], process={"apparmorProfile": "docker-default"})
    proc = rt("run", "--bundle", str(b), cid, check=False)
    assert proc.returncode == 1
    assert "AppArmor" in one_line_error(proc)
