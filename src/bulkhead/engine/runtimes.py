"""Which OCI runtime runs a container: names to binaries.

*runtime name*
    what ``--runtime`` / ``HostConfig.Runtime`` and the daemon config's
    ``default-runtime`` say. ``bulkhead`` is the built-in runtime, driven
    as a library inside the container's monitor (no extra process); the
    others are runc-compatible command-line binaries: ``runc``, ``crun``,
    ``bulkhead-runtime`` (our own CLI), plus whatever the daemon config's
    ``runtimes`` map adds (``{"name": "/path/to/binary"}``; Docker's form
    ``{"name": {"path": ...}}`` is accepted too).

:meth:`Runtimes.resolve` turns a name into what
:class:`bulkhead.engine.monitor.MonitorConfig` takes as ``runtime``:
``"bulkhead"`` or a binary's path. An unknown name is Docker's 400
``unknown or invalid runtime name: x``.

*spec version*
    the ``ociVersion`` a ``config.json`` declares. Runtimes check it:
    crun 1.8 refuses any version newer than the runtime spec it was built
    with ("unknown version specified"). :meth:`Runtimes.spec_version` gives
    the version to write for a runtime: ours for the built-in runtime, the
    ``spec:`` line of ``<binary> --version`` (runc and crun print one) when
    that is older, asked once per binary. The spec's content does not change:
    fields an older runtime does not know it ignores, as with podman's specs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bulkhead.errors import SpecError

BUILTIN = "bulkhead"

#: The runc-compatible binaries known by name (looked up on PATH when used).
KNOWN_BINARIES = ("runc", "crun", "bulkhead-runtime")


def _bulkhead_runtime_cli() -> str:
    """Our own CLI: next to this interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "bulkhead-runtime"
    if beside.exists():
        return str(beside)
    return shutil.which("bulkhead-runtime") or "bulkhead-runtime"


class Runtimes:
    """The runtimes a daemon offers: the built-in one, the known binaries and the configured ones."""

    def __init__(
        self, default: str = BUILTIN, extra: Mapping[str, str | Mapping[str, Any]] | None = None
    ) -> None:
        self.extra: dict[str, str] = {}
        for name, value in (extra or {}).items():
            path = value if isinstance(value, str) else str(value.get("path") or "")
            if not path:
                raise SpecError(f"runtime {name!r} has no path", where="runtimes")
            self.extra[name] = path
        self.default = default
        self.resolve(default)  # an unknown default is a configuration error
        self._spec_versions: dict[str, str] = {}

    def names(self) -> list[str]:
        """Every runtime name this daemon accepts (built-in first)."""
        out = [BUILTIN]
        out.extend(n for n in KNOWN_BINARIES if n not in self.extra)
        out.extend(self.extra)
        return out

    def resolve(self, name: str | None) -> tuple[str, str]:
        """(runtime name, what the monitor runs: ``"bulkhead"`` or a binary path)."""
        name = name or self.default
        if name in self.extra:
            return name, self.extra[name]
        if name == BUILTIN:
            return name, BUILTIN
        if name == "bulkhead-runtime":
            return name, _bulkhead_runtime_cli()
        if name in KNOWN_BINARIES:
            return name, shutil.which(name) or name
        raise SpecError(f"unknown or invalid runtime name: {name}")

    def spec_version(self, name: str | None, ours: str) -> str:
        """The ``ociVersion`` to write for runtime ``name``: ``ours``, or the binary's if older."""
        _, path = self.resolve(name)
        if path == BUILTIN:
            return ours
        if path not in self._spec_versions:
            self._spec_versions[path] = _declared_spec_version(path) or ours
        theirs = self._spec_versions[path]
        return theirs if _version_key(theirs) < _version_key(ours) else ours

    def info(self) -> dict[str, dict[str, str]]:
        """``/info``'s ``Runtimes``: name -> {"path": ...} (the built-in one's path is its name)."""
        out: dict[str, dict[str, str]] = {}
        for name in self.names():
            _, path = self.resolve(name)
            if path == BUILTIN or os.path.isabs(path) or name in self.extra:
                out[name] = {"path": path}
        return out


def _declared_spec_version(binary: str) -> str | None:
    """The ``spec: X`` line of ``binary --version`` (runc, crun), or None."""
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"^spec:\s*(\d+\.\d+\.\d+\S*)", out, re.MULTILINE)
    return m.group(1) if m else None


def _version_key(version: str) -> tuple[int, int, int, int]:
    """Orders ``1.0.2-dev`` before ``1.0.2`` (a pre-release), ``1.1.0`` after both."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)(.*)", version)
    if m is None:
        return (0, 0, 0, 0)
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)), 0 if m.group(4) else 1)
