"""Docker-style seccomp profiles, rendered into a runtime-spec ``linux.seccomp``.

Docker's default profile (moby/profiles ``seccomp/default.json``; a copy is
in the repository's ``reference/``) is a *template*, not a config.json
section. Beside the runtime-spec fields (``defaultAction``,
``defaultErrnoRet``, ``syscalls[].names/action/errnoRet/args``) it has:

``archMap``
    per native architecture, the *sub-architectures* whose syscall tables
    are allowed too: on ``SCMP_ARCH_X86_64`` also ``SCMP_ARCH_X86`` and
    ``SCMP_ARCH_X32``. Only the host's entry becomes ``architectures``.
``includes`` / ``excludes`` on a rule
    conditions on the *container*: ``caps`` (capabilities in its bounding
    set), ``arches`` (the host architecture, in moby's names: ``amd64``,
    ``arm64``, ``x86``, ``x32`` ...) and ``minKernel`` (``"4.8"``). A rule
    is kept when every ``includes`` condition holds and no ``excludes``
    condition does. So a container with ``CAP_SYS_ADMIN`` gets ``mount``,
    and one without gets ``clone`` only for flag sets that make no new
    namespaces.
``comment``
    dropped.

:func:`render_profile` does this the way moby's ``setupSeccomp`` does;
:func:`docker_default_profile` reads the profile from a path and renders it.
The result is plain JSON data for ``config.json``'s ``linux.seccomp``.
Nothing here does I/O except reading the profile file named by the caller
(and ``uname`` for the kernel version when none is given).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec

from bulkhead.errors import SpecError

#: Host architecture names (Python's ``platform.machine()``, Go's ``GOARCH``,
#: moby's own) -> the name moby uses in ``includes.arches``/``excludes.arches``.
ARCH_ALIASES: dict[str, str] = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "i386": "x86",
    "i686": "x86",
    "386": "x86",
    "x86": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "arm": "arm",
    "armv7l": "arm",
    "armv6l": "arm",
    "loong64": "loongarch64",
    "loongarch64": "loongarch64",
    "mips64": "mips64",
    "mips64n32": "mips64n32",
    "mips64p32": "mips64n32",
    "mipsel64": "mipsel64",
    "mips64le": "mipsel64",
    "mips3l64n32": "mips3l64n32",
    "mips64p32le": "mips3l64n32",
    "mipsel": "mipsel",
    "mipsle": "mipsel",
    "ppc": "ppc",
    "ppc64": "ppc64",
    "ppc64le": "ppc64le",
    "riscv64": "riscv64",
    "s390": "s390",
    "s390x": "s390x",
}

#: moby's architecture name -> the runtime-spec architecture whose
#: ``archMap`` entry applies (moby's ``nativeToSeccomp``).
NATIVE_TO_SECCOMP: dict[str, str] = {
    "x86": "SCMP_ARCH_X86",
    "amd64": "SCMP_ARCH_X86_64",
    "arm": "SCMP_ARCH_ARM",
    "arm64": "SCMP_ARCH_AARCH64",
    "loongarch64": "SCMP_ARCH_LOONGARCH64",
    "mips64": "SCMP_ARCH_MIPS64",
    "mips64n32": "SCMP_ARCH_MIPS64N32",
    "mipsel64": "SCMP_ARCH_MIPSEL64",
    "mips3l64n32": "SCMP_ARCH_MIPSEL64N32",
    "mipsel": "SCMP_ARCH_MIPSEL",
    "ppc": "SCMP_ARCH_PPC",
    "ppc64": "SCMP_ARCH_PPC64",
    "ppc64le": "SCMP_ARCH_PPC64LE",
    "riscv64": "SCMP_ARCH_RISCV64",
    "s390": "SCMP_ARCH_S390",
    "s390x": "SCMP_ARCH_S390X",
}

#: Fields of the profile copied unchanged into ``linux.seccomp``.
_COPIED = ("defaultAction", "defaultErrnoRet", "flags", "listenerPath", "listenerMetadata")


def load_profile(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a Docker-style seccomp profile (JSON) from ``path``."""
    try:
        with open(path, "rb") as f:
            data = msgspec.json.decode(f.read())
    except msgspec.DecodeError as exc:
        raise SpecError(f"invalid JSON: {exc}", where=os.fspath(path)) from None
    if not isinstance(data, dict):
        raise SpecError("a seccomp profile must be a JSON object", where=os.fspath(path))
    return data


def normalize_arch(arch: str) -> str:
    """moby's name for host architecture ``arch`` (``x86_64`` -> ``amd64``)."""
    try:
        return ARCH_ALIASES[arch]
    except KeyError:
        raise SpecError(f"unknown architecture {arch!r}", where="arch") from None


def normalize_capability(cap: str) -> str:
    """``sys_admin`` or ``SYS_ADMIN`` -> ``CAP_SYS_ADMIN``."""
    cap = cap.upper()
    return cap if cap.startswith("CAP_") else "CAP_" + cap


def kernel_version(release: str) -> tuple[int, int]:
    """(major, minor) of a kernel release string such as ``6.1.0-18-amd64``."""
    parts = release.split(".", 2)
    try:
        minor = parts[1]
        end = next((i for i, c in enumerate(minor) if not c.isdigit()), len(minor))
        return int(parts[0]), int(minor[:end])
    except (IndexError, ValueError):
        raise SpecError(f"cannot parse kernel version {release!r}", where="minKernel") from None


def render_profile(
    profile: Mapping[str, Any],
    capabilities: Iterable[str],
    arch: str,
    kernel_release: str | None = None,
) -> dict[str, Any]:
    """Render a Docker-style profile into runtime-spec ``linux.seccomp`` data.

    ``capabilities`` is the container's *bounding* set, ``arch`` the host
    architecture (``x86_64``, ``amd64``, ``aarch64`` ...), ``kernel_release``
    the host kernel (``os.uname().release`` when None) for ``minKernel``.
    """
    native = normalize_arch(arch)
    caps = {normalize_capability(c) for c in capabilities}
    kernel = kernel_version(kernel_release or os.uname().release)

    out: dict[str, Any] = {k: _copy(profile[k]) for k in _COPIED if profile.get(k) is not None}
    archs = list(profile.get("architectures") or ())
    arch_map = profile.get("archMap") or ()
    if archs and arch_map:
        raise SpecError(
            "both 'architectures' and 'archMap' are set; use one", where="$.architectures"
        )
    seccomp_arch = NATIVE_TO_SECCOMP.get(native)
    for entry in arch_map:
        if entry.get("architecture") == seccomp_arch:
            archs.append(seccomp_arch)
            archs.extend(entry.get("subArchitectures") or ())
            break
    if archs:
        out["architectures"] = archs

    syscalls: list[dict[str, Any]] = []
    for i, call in enumerate(profile.get("syscalls") or ()):
        where = f"$.syscalls[{i}]"
        if not _wanted(call, caps, native, kernel, where):
            continue
        names = call.get("names")
        if call.get("name"):
            if names:
                raise SpecError("both 'name' and 'names' are set; use one", where=where)
            names = [call["name"]]
        rule: dict[str, Any] = {"names": list(names or ()), "action": call.get("action")}
        if call.get("errnoRet") is not None:
            rule["errnoRet"] = call["errnoRet"]
        if call.get("args"):
            rule["args"] = [
                {k: arg[k] for k in ("index", "value", "valueTwo", "op") if k in arg}
                for arg in call["args"]
            ]
        syscalls.append(rule)
    out["syscalls"] = syscalls
    return out


def docker_default_profile(
    capabilities: Iterable[str],
    arch: str,
    *,
    path: str | os.PathLike[str],
    kernel_release: str | None = None,
) -> dict[str, Any]:
    """Docker's default profile at ``path``, rendered for a container.

    The ``linux.seccomp`` section moby would put in the container's
    config.json, given its bounding ``capabilities`` and the host ``arch``.
    """
    return render_profile(load_profile(path), capabilities, arch, kernel_release)


def _wanted(
    call: Mapping[str, Any],
    caps: set[str],
    native: str,
    kernel: tuple[int, int],
    where: str,
) -> bool:
    """moby's filter: every ``includes`` condition holds, no ``excludes`` one does."""
    excludes = call.get("excludes") or {}
    if native in (excludes.get("arches") or ()):
        return False
    if any(normalize_capability(c) in caps for c in excludes.get("caps") or ()):
        return False
    if excludes.get("minKernel") and kernel >= _min_kernel(excludes["minKernel"], where):
        return False
    includes = call.get("includes") or {}
    if includes.get("arches") and native not in includes["arches"]:
        return False
    if any(normalize_capability(c) not in caps for c in includes.get("caps") or ()):
        return False
    return not (includes.get("minKernel") and kernel < _min_kernel(includes["minKernel"], where))


def _min_kernel(value: str, where: str) -> tuple[int, int]:
    try:
        return kernel_version(value)
    except SpecError:
        raise SpecError(f"cannot parse minKernel {value!r}", where=where) from None


def _copy(value: Any) -> Any:
    """A deep copy of JSON data (so callers may change the result freely)."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value
