"""``features``: what this runtime supports, measured on this host.

The document's shape lives in :mod:`bulkhead.oci.features`; this module
gathers the host facts it needs (seccomp flags the kernel accepts, the last
capability, which LSMs are on, idmapped mounts) and fills it in.
"""

from __future__ import annotations

import os
from typing import Any


def _lsm_enabled(name: str) -> bool:
    try:
        with open("/sys/kernel/security/lsm") as f:
            return name in f.read().split(",")
    except OSError:
        return False


def _last_cap() -> int | None:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def features_document() -> dict[str, Any]:
    """The runtime-spec features document for ``bulkhead-runtime features``."""
    from bulkhead.linux import seccomp
    from bulkhead.oci.features import features_document as build

    has_seccomp = seccomp.available()
    return build(
        seccomp_enabled=has_seccomp,
        seccomp_supported_flags=seccomp.supported_flags() if has_seccomp else None,
        seccomp_archs=seccomp.supported_archs() if has_seccomp else None,
        apparmor_enabled=os.path.exists("/sys/kernel/security/apparmor"),
        selinux_enabled=_lsm_enabled("selinux") and os.path.exists("/sys/fs/selinux/enforce"),
        last_cap=_last_cap(),
        cgroup_v1=True,
        cgroup_v2=True,
        cgroup_systemd=False,
        cgroup_systemd_user=False,
        idmap_mounts=False,
        annotations={"io.github.bulkhead.runtime.version": _version()},
    )


def _version() -> str:
    from bulkhead import __version__

    return __version__
