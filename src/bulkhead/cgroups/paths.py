"""``linux.cgroupsPath``: checking it and finding it in each hierarchy.

The runtime spec lets a bundle name its container's cgroup:

absolute path (``/bulkhead/abc``)
    relative to the root of each hierarchy: ``/sys/fs/cgroup/memory/bulkhead/abc``
    on v1, ``/sys/fs/cgroup/bulkhead/abc`` on v2.
relative path (``bulkhead/abc``)
    relative to the runtime's *own* cgroup in each hierarchy
    (``/proc/self/cgroup``), as runc does for the cgroupfs driver.
``slice:prefix:name``
    the systemd driver's form (``system.slice:docker:abc``); bulkhead has no
    systemd driver and says so with :class:`~bulkhead.errors.UnsupportedError`.
none
    the runtime uses :func:`default_path` (``/bulkhead/<container-id>``).

``.`` and empty components are dropped; a ``..`` component is refused
(:class:`~bulkhead.errors.SpecError`) so a path can never climb out of the
place it names.
"""

from __future__ import annotations

import re

from bulkhead.errors import SpecError, UnsupportedError

FIELD = "linux.cgroupsPath"

#: The parent of every cgroup bulkhead creates when the spec names none.
DEFAULT_PARENT = "/bulkhead"

_SYSTEMD_FORM = re.compile(r"^[^/:]*:[^/:]*:[^/:]+$")


def default_path(container_id: str) -> str:
    """The cgroups path of a container whose spec has no ``linux.cgroupsPath``."""
    return f"{DEFAULT_PARENT}/{container_id}"


def check(path: str) -> str:
    """``path`` cleaned (``//``, ``.`` dropped; absolute stays absolute), or an error.

    Raises :class:`SpecError` for an empty path, a NUL byte or a ``..``
    component, :class:`UnsupportedError` for the systemd ``slice:prefix:name``
    form.
    """
    if not path:
        raise SpecError("the cgroups path is empty", FIELD)
    if "\0" in path:
        raise SpecError(f"{path!r} contains a NUL byte", FIELD)
    if _SYSTEMD_FORM.match(path):
        raise UnsupportedError(
            f"{FIELD} {path!r} is in the systemd driver's slice:prefix:name form; "
            "bulkhead only has the cgroupfs driver: give a path such as /bulkhead/<id>"
        )
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise SpecError(f"{path!r} has a '..' component", FIELD)
    if not parts:
        raise SpecError(
            f"{path!r} names the root (or the runtime's own) cgroup, not one for the container",
            FIELD,
        )
    cleaned = "/".join(parts)
    return "/" + cleaned if path.startswith("/") else cleaned


def resolve(cleaned: str, own: str) -> str:
    """Where the cleaned path lies below a hierarchy's mount, without a leading ``/``.

    ``own`` is the process's cgroup in that hierarchy (relative to the
    mount); it only matters for a relative path. ``""`` means the
    hierarchy's root itself.
    """
    if cleaned.startswith("/"):
        return cleaned.strip("/")
    base = own.strip("/")
    if not cleaned:
        return base
    return f"{base}/{cleaned}" if base else cleaned
