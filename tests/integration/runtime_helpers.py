"""Driving ``bulkhead-runtime`` as a separate process, the way containerd and Podman do."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import VENV_BIN

RUNTIME = str(VENV_BIN / "bulkhead-runtime")
CGROUP_V1_ROOT = Path("/sys/fs/cgroup")


@dataclass
class RuntimeCLI:
    """``bulkhead-runtime --root <root> ...`` with cleanup of what it created."""

    root: Path
    created: list[str] = field(default_factory=list)

    def __call__(
        self,
        *args: str,
        check: bool = True,
        input: bytes | None = None,
        timeout: float = 60,
        env: dict[str, str] | None = None,
        pass_fds: tuple[int, ...] = (),
    ) -> subprocess.CompletedProcess[str]:
        cmd = [RUNTIME, "--root", str(self.root), *args]
        proc = subprocess.run(
            cmd,
            capture_output=True,
            input=input.decode() if input is not None else None,
            text=True,
            timeout=timeout,
            env=env,
            pass_fds=pass_fds,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def state(self, cid: str) -> dict[str, Any]:
        return json.loads(self("state", cid).stdout)

    def cleanup(self) -> None:
        proc = self("list", "-q", check=False)
        for cid in proc.stdout.split():
            self("delete", "--force", cid, check=False)
        for cid in self.created:
            self("delete", "--force", cid, check=False)


def cgroup_dirs(path: str) -> list[Path]:
    """Where the v1 hierarchies hold cgroup ``path`` (existing ones only)."""
    out = []
    for hierarchy in ("memory", "pids", "cpu,cpuacct", "freezer", "devices", "cpuset", "blkio"):
        d = CGROUP_V1_ROOT / hierarchy / path.lstrip("/")
        if d.exists():
            out.append(d)
    return out


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
