"""An offline busybox root filesystem and OCI bundles built from it.

Debian's ``busybox-static`` package installs one statically linked
``/bin/busybox``. Copying it into an empty directory and adding one symlink
per applet (``sh``, ``ls``, ``echo`` ...) plus a few files of ``/etc`` gives a
complete, tiny root filesystem with no network access and no image registry.

A *bundle* is what an OCI runtime consumes: a directory holding
``config.json`` and (usually) the root filesystem in ``rootfs/``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bulkhead.oci.defaults import default_spec

BUSYBOX = Path("/bin/busybox")

_ETC_FILES = {
    "passwd": (
        "root:x:0:0:root:/root:/bin/sh\n"
        "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        "user:x:1000:1000:user:/home/user:/bin/sh\n"
    ),
    "group": (
        "root:x:0:\n"
        "daemon:x:1:\n"
        "tty:x:5:\n"
        "audio:x:29:user\n"
        "video:x:44:user\n"
        "user:x:1000:\n"
        "nogroup:x:65534:\n"
    ),
    "hostname": "busybox\n",
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    "resolv.conf": "",
}


def busybox_applets(busybox: Path = BUSYBOX) -> list[str]:
    """The applet names the host's busybox binary provides."""
    out = subprocess.run([str(busybox), "--list"], check=True, capture_output=True, text=True)
    return [line for line in out.stdout.split() if line and "/" not in line]


_applet_cache: dict[Path, list[str]] = {}


def build_rootfs(dest: str | os.PathLike[str], busybox: Path = BUSYBOX) -> Path:
    """Build a busybox root filesystem in ``dest`` (created if missing) and return it."""
    if not busybox.exists():
        raise FileNotFoundError(
            f"{busybox} not found: install Debian's busybox-static package (apt install busybox-static)"
        )
    root = Path(dest)
    for d in (
        "bin",
        "sbin",
        "usr/bin",
        "usr/sbin",
        "etc",
        "dev",
        "proc",
        "sys",
        "tmp",
        "root",
        "home/user",
        "var/run",
        "run",
        "mnt",
    ):
        (root / d).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "tmp", 0o1777)
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = _applet_cache.get(busybox)
    if applets is None:
        applets = _applet_cache[busybox] = busybox_applets(busybox)
    for applet in applets:
        link = root / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    for name, text in _ETC_FILES.items():
        (root / "etc" / name).write_text(text)
    return root


def make_bundle(
    bundle: str | os.PathLike[str],
    args: list[str] | None = None,
    *,
    terminal: bool = False,
    rootfs: str | os.PathLike[str] | None = None,
    config: dict[str, Any] | None = None,
) -> Path:
    """Create an OCI bundle in ``bundle`` running ``args`` in a busybox rootfs.

    The configuration starts as ``runc spec``'s default with ``terminal`` as
    given and a writable root; ``config`` is merged over it at the top level
    (and one level down for ``process`` and ``linux``). With ``rootfs`` an
    existing root filesystem is used (as an absolute ``root.path``) instead of
    building one inside the bundle.
    """
    path = Path(bundle)
    path.mkdir(parents=True, exist_ok=True)
    spec = default_spec()
    spec["process"]["terminal"] = terminal
    spec["root"]["readonly"] = False
    if args is not None:
        spec["process"]["args"] = list(args)
    if rootfs is None:
        build_rootfs(path / "rootfs")
    else:
        spec["root"]["path"] = os.path.abspath(rootfs)
    for key, value in (config or {}).items():
        if key in ("process", "linux") and isinstance(value, dict):
            spec[key].update(value)
        else:
            spec[key] = value
    (path / "config.json").write_text(json.dumps(spec, indent=2))
    return path
