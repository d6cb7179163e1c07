"""The CLI starts lean: ``--version`` and ``ps`` import neither the engine, the runtime,
the image store nor msgspec (measured with ``python -X importtime``, as the issue asks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tests.unit.cli_fake_daemon import FakeDaemon

FORBIDDEN = ("bulkhead.engine", "bulkhead.runtime", "bulkhead.images", "msgspec", "rich")
LAUNCHER = Path(sys.executable).with_name("bulkhead")


def _imported(
    args: list[str], env: dict[str, str]
) -> tuple[set[str], subprocess.CompletedProcess[str]]:
    cmd = [sys.executable, "-X", "importtime", str(LAUNCHER), *args]
    if not LAUNCHER.exists():
        cmd = [sys.executable, "-X", "importtime", "-m", "bulkhead.cli.main", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=30, check=False)
    modules = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            modules.add(line.rsplit("|", 1)[1].strip())
    return modules, proc


def _clean_env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "BULKHEAD_"))}
    env.update(extra)
    return env


def _assert_lean(modules: set[str]) -> None:
    heavy = sorted(m for m in modules if m.startswith(FORBIDDEN))
    assert not heavy, f"the CLI imported {heavy}"
    for costly in ("typing", "dataclasses", "argparse", "urllib.parse", "asyncio"):
        assert costly not in modules, f"the CLI imported {costly} at start-up"


def test_version_imports_nothing_heavy() -> None:
    modules, proc = _imported(["--version"], _clean_env())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bulkhead.cli.main" in modules
    _assert_lean(modules)
    assert "json" not in modules and "socket" not in modules


def test_ps_imports_nothing_heavy(tmp_path: Path) -> None:
    fake = FakeDaemon(str(tmp_path / "d.sock"))
    try:
        fake.route("GET", "/containers/json", (200, []))
        modules, proc = _imported(["ps"], _clean_env(BULKHEAD_HOST=fake.host))
    finally:
        fake.close()
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "bulkhead.cli.containers" in modules
    _assert_lean(modules)
    # docker's default table needs neither the template engine nor json's regexes
    for costly in ("re", "json", "bulkhead.cli.template", "socket", "enum"):
        assert costly not in modules, f"ps imported {costly}"


def test_run_imports_nothing_heavy(tmp_path: Path) -> None:
    from tests.unit.cli_fake_daemon import Hijacked, frame

    cid = "c" * 64
    fake = FakeDaemon(str(tmp_path / "d.sock"))
    try:
        fake.route("POST", "/containers/create", (201, {"Id": cid, "Warnings": []}))
        fake.route("POST", f"/containers/{cid}/attach", lambda _r: Hijacked(frame(1, b"hi\n")))
        fake.route("POST", f"/containers/{cid}/wait", (200, {"StatusCode": 0}))
        fake.route("POST", f"/containers/{cid}/start", (204, b""))
        modules, proc = _imported(
            ["run", "--rm", "busybox", "echo", "hi"], _clean_env(BULKHEAD_HOST=fake.host)
        )
    finally:
        fake.close()
    assert (proc.returncode, proc.stdout) == (0, "hi\n"), proc.stderr[-2000:]
    _assert_lean(modules)
    for costly in ("re", "json", "fractions", "contextlib", "bulkhead.cli.template"):
        assert costly not in modules, f"run imported {costly}"
    # socket and signal build IntEnums at import (enum, selectors, functools: ~8 ms)
    for costly in ("socket", "signal", "enum", "selectors"):
        assert costly not in modules, f"run imported {costly}"


@pytest.mark.parametrize("verb", ["run", "images", "volume"])
def test_other_commands_stay_off_the_engine(verb: str, tmp_path: Path) -> None:
    modules, _proc = _imported(
        [verb, "--help"], _clean_env(BULKHEAD_HOST=f"unix://{tmp_path}/none.sock")
    )
    assert not sorted(m for m in modules if m.startswith(FORBIDDEN))
