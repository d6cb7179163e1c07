"""``make run``: a container from the offline busybox image says hello.

Builds a busybox bundle (from Debian's busybox-static, no network) in a
temporary directory and runs ``echo hello from $(hostname)`` in it with
``bulkhead-runtime run``, showing that the process is PID 1 of its own pid
namespace and has its own hostname.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

from bulkhead.devtools.busybox import make_bundle


def main() -> int:
    runtime = shutil.which("bulkhead-runtime") or str(
        Path(sys.executable).parent / "bulkhead-runtime"
    )
    workdir = Path(tempfile.mkdtemp(prefix="bulkhead-demo-"))
    container_id = "demo-" + uuid.uuid4().hex[:8]
    try:
        bundle = make_bundle(
            workdir / "bundle",
            ["sh", "-c", 'echo "hello from $(hostname), I am PID $$"'],
            config={
                "hostname": "busybox-demo",
                "linux": {"cgroupsPath": f"/bulkhead/{container_id}"},
            },
        )
        cmd = [
            runtime,
            "--root",
            str(workdir / "state"),
            "run",
            "--bundle",
            str(bundle),
            container_id,
        ]
        print("$", " ".join(cmd), flush=True)
        return subprocess.run(cmd, check=False).returncode
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("make run needs root (it creates namespaces, mounts and cgroups)")
    sys.exit(main())
