"""Driving ``bulkhead-runtime`` as a separate process, the way containerd and Podman do."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import VENV_BIN

RUNTIME = str(VENV_BIN / "bulkhead-runtime")


@dataclass
class RuntimeCLI:
    """``bulkhead-runtime --root <root> ...`` with cleanup of what it created."""

    root: Path
    created: list[str] = field(default_factory=list)
    #: seconds one call may take (the emulated cgroup v2 VM needs more)
    timeout: float = 60

    def __call__(
        self,
        *args: str,
        check: bool = True,
        input: bytes | None = None,
        timeout: float | None = None,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        cmd = [RUNTIME, "--root", str(self.root), *args]
        # Output goes to files, not pipes: a detached container (create,
        # run -d) inherits them and would keep a pipe open long after the
        # runtime exited, as it does for containerd's shim.
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            completed = subprocess.run(
                cmd,
                stdin=subprocess.DEVNULL if input is None else None,
                stdout=out,
                stderr=err,
                input=input,
                timeout=self.timeout if timeout is None else timeout,
                env=env,
                pass_fds=pass_fds,
                check=False,
            )
            out.seek(0)
            err.seek(0)
            proc = subprocess.CompletedProcess(
                cmd,
                completed.returncode,
                out.read().decode(errors="replace"),
                err.read().decode(errors="replace"),
            )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def state(self, cid: str) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self("state", cid).stdout)
        return doc

    def cleanup(self) -> None:
        proc = self("list", "-q", check=False)
        for cid in proc.stdout.split():
            self("delete", "--force", cid, check=False)
        for cid in self.created:
            self("delete", "--force", cid, check=False)


def cgroup_dirs(path: str) -> list[Path]:
    """Where the host's hierarchies hold cgroup ``path`` (existing ones only)."""
    from bulkhead.cgroups import new_manager

    return [Path(d) for d in new_manager(path).paths().values() if os.path.isdir(d)]


def mounts_mentioning(text: str) -> int:
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if text in line)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
