"""The ociVersion written for each runtime: ours, or the binary's own when that is older."""

from __future__ import annotations

from pathlib import Path

from bulkhead.engine.runtimes import Runtimes


def _fake_runtime(tmp_path: Path, name: str, version_output: str) -> str:
    path = tmp_path / name
    path.write_text(f"#!/bin/sh\nprintf '%s\\n' '{version_output}'\n")
    path.chmod(0o755)
    return str(path)


def test_builtin_runtime_gets_our_version() -> None:
    assert Runtimes().spec_version("bulkhead", "1.2.0") == "1.2.0"


def test_an_older_binary_gets_the_spec_version_it_prints(tmp_path: Path) -> None:
    crun = _fake_runtime(tmp_path, "crun18", "crun version 1.8.1\nspec: 1.0.0\n+SYSTEMD")
    runc = _fake_runtime(tmp_path, "runc11", "runc version 1.1.5\nspec: 1.0.2-dev\ngo: go1.19")
    runtimes = Runtimes(extra={"crun18": crun, "runc11": runc})
    assert runtimes.spec_version("crun18", "1.2.0") == "1.0.0"
    assert runtimes.spec_version("runc11", "1.2.0") == "1.0.2-dev"


def test_a_newer_or_silent_binary_gets_ours(tmp_path: Path) -> None:
    newer = _fake_runtime(tmp_path, "newer", "x version 9\nspec: 1.3.0")
    silent = _fake_runtime(tmp_path, "silent", "no spec line here")
    runtimes = Runtimes(extra={"newer": newer, "silent": silent, "gone": str(tmp_path / "nope")})
    assert runtimes.spec_version("newer", "1.2.0") == "1.2.0"
    assert runtimes.spec_version("silent", "1.2.0") == "1.2.0"
    assert runtimes.spec_version("gone", "1.2.0") == "1.2.0"


def test_a_pre_release_is_older_than_its_release(tmp_path: Path) -> None:
    dev = _fake_runtime(tmp_path, "dev", "spec: 1.2.0-rc.1")
    assert Runtimes(extra={"dev": dev}).spec_version("dev", "1.2.0") == "1.2.0-rc.1"
