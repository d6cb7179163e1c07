"""The daemon's settings: daemon.json and flags, as ``docker info`` reports them; bad ones refused."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration.engine_fixtures import Daemon


def _daemon_exit(tmp_path: Path, config: dict[str, Any] | None, *flags: str) -> tuple[int, str]:
    """Run the daemon with a config file/flags that it must refuse; its exit code and stderr."""
    args = [
        sys.executable,
        "-m",
        "bulkhead.daemon",
        "--host",
        f"unix://{tmp_path}/s.sock",
        "--data-root",
        str(tmp_path / "root"),
        "--exec-root",
        str(tmp_path / "run"),
    ]
    if config is not None:
        path = tmp_path / "daemon.json"
        path.write_text(json.dumps(config))
        args += ["--config-file", str(path)]
    r = subprocess.run([*args, *flags], capture_output=True, text=True, timeout=30, check=False)
    return r.returncode, r.stderr


def test_info_reports_configured_registries_runtimes_and_driver(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    doc = json.loads(d.config_file().read_text())
    doc.update({"insecure-registries": ["10.9.8.0/24", "myregistry.test:5000"]})
    doc.update({"runtimes": {"myrunc": {"path": "/usr/sbin/runc"}}})
    d.config_file().write_text(json.dumps(doc))
    d.start()
    r = d.docker("info", "--format", "{{json .}}")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert "10.9.8.0/24" in info["RegistryConfig"]["InsecureRegistryCIDRs"]
    assert "myregistry.test:5000" in info["RegistryConfig"]["IndexConfigs"]
    assert info["Runtimes"]["myrunc"]["path"] == "/usr/sbin/runc"
    assert info["DefaultRuntime"] == "bulkhead"
    assert info["Driver"] in ("overlay2", "vfs")
    # the added runtime runs containers
    r = d.docker("run", "--rm", "--runtime", "myrunc", "busybox", "echo", "via runc")
    assert (r.returncode, r.stdout) == (0, "via runc\n"), r.stderr


def test_log_opts_from_daemon_json_rotate_the_log(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(start=False)
    doc = json.loads(d.config_file().read_text())
    doc["log-opts"] = {"max-size": "1k", "max-file": "2"}
    d.config_file().write_text(json.dumps(doc))
    d.start()
    r = d.docker(
        "run",
        "--name",
        "chatty",
        "busybox",
        "sh",
        "-c",
        "seq 1 2000 | while read i; do echo $i; done",
    )
    assert r.returncode == 0, r.stderr
    inspect = json.loads(d.docker("inspect", "chatty").stdout)[0]
    log_path = Path(inspect["LogPath"])
    rotated = sorted(p.name for p in log_path.parent.glob(log_path.name + "*"))
    assert rotated == [log_path.name, log_path.name + ".1"]  # max-file 2: one current, one old
    assert log_path.stat().st_size <= 1100
    tail = d.docker("logs", "--tail", "1", "chatty")
    assert tail.stdout == "2000\n"
    d.docker("rm", "chatty")


def test_bad_settings_are_refused_naming_the_key(tmp_path: Path) -> None:
    code, err = _daemon_exit(tmp_path, {"no-such-key": 1})
    assert code == 1 and "no-such-key" in err and "daemon.json" in err
    code, err = _daemon_exit(tmp_path, {"log-opts": {"max-size": "lots"}})
    assert code == 1 and "log-opts.max-size" in err and "lots" in err
    code, err = _daemon_exit(tmp_path, {"default-runtime": "nosuch"})
    assert code == 1 and "nosuch" in err
    code, err = _daemon_exit(tmp_path, {"debug": "yes"})
    assert code == 1 and "debug" in err and "expected bool" in err
    code, err = _daemon_exit(tmp_path, None, "--cgroup-parent", "relative/path")
    assert code == 1 and "--cgroup-parent" in err
    code, err = _daemon_exit(tmp_path, None, "--config-file", str(tmp_path / "missing.json"))
    assert code == 1 and "missing.json" in err
    assert not (tmp_path / "s.sock").exists()


def test_default_runtime_flag_selects_the_runtime_cli(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(["--default-runtime", "bulkhead-runtime"])
    r = d.docker("run", "--name", "viacli", "busybox", "echo", "via bulkhead-runtime")
    assert (r.returncode, r.stdout) == (0, "via bulkhead-runtime\n"), r.stderr
    inspect = json.loads(d.docker("inspect", "viacli").stdout)[0]
    assert inspect["HostConfig"]["Runtime"] == "bulkhead-runtime"
    info = json.loads(d.docker("info", "--format", "{{json .}}").stdout)
    assert info["DefaultRuntime"] == "bulkhead-runtime"
    d.docker("rm", "viacli")
