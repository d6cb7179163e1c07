"""The runtime *features* document: what ``bulkhead-runtime features`` prints.

Vocabulary
----------
*features document*
    runtime-spec ``features.md``: a JSON object in which a runtime lists
    what it recognizes, so that callers (containerd, Podman) can adapt
    before writing a ``config.json``: the ``ociVersion`` range, hook names,
    mount options, and under ``linux`` the namespaces, capabilities, cgroup
    drivers, seccomp actions/operators/architectures/flags, LSMs and mount
    extensions.
*recognized* vs *supported*
    "Recognized" means the runtime understands the value, whether or not the
    host can honour it; a ``null``/absent entry means *unknown*, not *no*.
    Only ``seccomp.supportedFlags`` describes the host (flags the running
    kernel accepts).
*compiled in*
    The ``enabled`` booleans (cgroup ``v1``/``v2``/``systemd``, ``apparmor``,
    ``selinux``, ``intelRdt``, ``idmap``) say whether the runtime implements
    the feature, independent of the host.

The models mirror specs-go ``features`` (class names as the Go types). This
module does no I/O: the caller passes in what depends on the host or on
other packages (:func:`runtime_features`), and :func:`encode_features`
produces runc's bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from bulkhead.oci.runtime_spec import (
    CAPABILITIES,
    HOOK_NAMES,
    NAMESPACE_TYPES,
    OCI_VERSION,
    SECCOMP_ACTIONS,
    SECCOMP_ARCHES,
    SECCOMP_FLAGS,
    SECCOMP_OPERATORS,
)
from bulkhead.oci.state import go_json_escape

#: the oldest runtime-spec version bulkhead reads
OCI_VERSION_MIN = "1.0.0"

#: Mount options (``mounts[].options``) bulkhead's runtime interprets itself,
#: as runc lists them; any other option is passed to mount(2) as data.
MOUNT_OPTIONS = (
    "acl",
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noacl",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "unbindable",
)
#: the id-mapped mount options (runtime-spec 1.2), listed when idmap mounts are enabled
IDMAP_MOUNT_OPTIONS = ("idmap", "ridmap")


class _Model(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """Base of the features models: absent (``None``) means *unknown*."""


class Cgroup(_Model):
    """Which cgroup drivers are implemented (not what the host runs)."""

    v1: bool | None = None
    v2: bool | None = None
    systemd: bool | None = None
    systemd_user: bool | None = None
    rdma: bool | None = None


class Seccomp(_Model):
    """Recognized seccomp values, and the filter flags this host supports."""

    enabled: bool | None = None
    actions: list[str] | None = None
    operators: list[str] | None = None
    archs: list[str] | None = None
    known_flags: list[str] | None = None
    supported_flags: list[str] | None = None


class Apparmor(_Model):
    """Whether AppArmor profiles (``process.apparmorProfile``) are implemented."""

    enabled: bool | None = None


class Selinux(_Model):
    """Whether SELinux labels (``process.selinuxLabel``, ``mountLabel``) are implemented."""

    enabled: bool | None = None


class IntelRdt(_Model):
    """Intel RDT (resctrl): ``schemata`` and ``monitoring`` are runtime-spec 1.3."""

    enabled: bool | None = None
    schemata: bool | None = None
    monitoring: bool | None = None


class MemoryPolicy(_Model):
    """Recognized ``linux.memoryPolicy`` modes and flags (1.3)."""

    modes: list[str] | None = None
    flags: list[str] | None = None


class IDMap(_Model):
    """Whether id-mapped mounts (``mounts[].uidMappings``) are implemented."""

    enabled: bool | None = None


class MountExtensions(_Model):
    """Mount features beyond plain mount(2)."""

    idmap: IDMap | None = None


class NetDevices(_Model):
    """Whether ``linux.netDevices`` is implemented (1.3)."""

    enabled: bool | None = None


class Linux(_Model):
    """The Linux part of the features document."""

    namespaces: list[str] | None = None
    capabilities: list[str] | None = None
    cgroup: Cgroup | None = None
    seccomp: Seccomp | None = None
    apparmor: Apparmor | None = None
    selinux: Selinux | None = None
    intel_rdt: IntelRdt | None = None
    memory_policy: MemoryPolicy | None = None
    mount_extensions: MountExtensions | None = None
    net_devices: NetDevices | None = None


class Features(_Model):
    """The features document (specs-go ``features.Features``)."""

    oci_version_min: str | None = None
    oci_version_max: str | None = None
    hooks: list[str] | None = None
    mount_options: list[str] | None = None
    linux: Linux | None = None
    annotations: dict[str, str] | None = None
    #: annotations (a trailing ``.`` means a prefix) that change behaviour in
    #: ways an orchestrator may want to forbid (runtime-spec 1.2)
    potentially_unsafe_config_annotations: list[str] | None = None


_Toggle = TypeVar("_Toggle", Apparmor, Selinux, IntelRdt, NetDevices)


def _enabled(cls: type[_Toggle], value: bool | None) -> _Toggle | None:
    """``cls(enabled=value)``, or None (unknown) when ``value`` is None."""
    return None if value is None else cls(enabled=value)


def runtime_features(
    *,
    seccomp_supported_flags: Sequence[str] | None = None,
    apparmor_enabled: bool | None = None,
    selinux_enabled: bool | None = None,
    last_cap: int | None = None,
    seccomp_enabled: bool | None = True,
    seccomp_archs: Sequence[str] | None = None,
    cgroup_v1: bool | None = True,
    cgroup_v2: bool | None = True,
    cgroup_systemd: bool | None = False,
    cgroup_systemd_user: bool | None = False,
    cgroup_rdma: bool | None = None,
    intel_rdt: bool | None = None,
    idmap_mounts: bool | None = None,
    net_devices: bool | None = None,
    memory_policy: MemoryPolicy | None = None,
    mount_options: Sequence[str] | None = None,
    annotations: Mapping[str, str] | None = None,
    potentially_unsafe_config_annotations: Sequence[str] | None = None,
    oci_version_min: str = OCI_VERSION_MIN,
    oci_version_max: str = OCI_VERSION,
) -> Features:
    """The features document of bulkhead's runtime.

    Host facts come from the caller; ``None`` leaves an entry out (the spec's
    *unknown*):

    ``seccomp_supported_flags``
        the ``SECCOMP_FILTER_FLAG_*`` names this kernel accepts
    ``apparmor_enabled``, ``selinux_enabled``
        whether those LSM settings are honoured
    ``last_cap``
        ``/proc/sys/kernel/cap_last_cap``: capabilities up to that number
        are listed (all bulkhead knows when ``None``)

    The rest describe what bulkhead implements, with defaults for what it
    does today: all eight namespaces, every seccomp action, operator and
    flag the spec defines, the cgroup v1 and v2 drivers (``cgroup_systemd``
    for the systemd driver), and :data:`MOUNT_OPTIONS` (plus
    :data:`IDMAP_MOUNT_OPTIONS` when ``idmap_mounts``). Lists are sorted, as
    runc sorts them; capabilities keep the kernel's numbering.
    """
    caps = list(CAPABILITIES if last_cap is None else CAPABILITIES[: last_cap + 1])
    options = set(MOUNT_OPTIONS if mount_options is None else mount_options)
    if idmap_mounts:
        options.update(IDMAP_MOUNT_OPTIONS)
    seccomp = None
    if seccomp_enabled is not None:
        seccomp = Seccomp(enabled=seccomp_enabled)
        if seccomp_enabled:
            seccomp.actions = sorted(SECCOMP_ACTIONS)
            seccomp.operators = sorted(SECCOMP_OPERATORS)
            seccomp.archs = sorted(SECCOMP_ARCHES if seccomp_archs is None else seccomp_archs)
            seccomp.known_flags = list(SECCOMP_FLAGS)
            if seccomp_supported_flags is not None:
                seccomp.supported_flags = list(seccomp_supported_flags)
    cgroup = Cgroup(
        v1=cgroup_v1,
        v2=cgroup_v2,
        systemd=cgroup_systemd,
        systemd_user=cgroup_systemd_user,
        rdma=cgroup_rdma,
    )
    linux = Linux(
        namespaces=sorted(NAMESPACE_TYPES),
        capabilities=caps,
        cgroup=cgroup,
        seccomp=seccomp,
        apparmor=_enabled(Apparmor, apparmor_enabled),
        selinux=_enabled(Selinux, selinux_enabled),
        intel_rdt=_enabled(IntelRdt, intel_rdt),
        memory_policy=memory_policy,
        mount_extensions=(
            None if idmap_mounts is None else MountExtensions(idmap=IDMap(enabled=idmap_mounts))
        ),
        net_devices=_enabled(NetDevices, net_devices),
    )
    return Features(
        oci_version_min=oci_version_min,
        oci_version_max=oci_version_max,
        hooks=list(HOOK_NAMES),
        mount_options=sorted(options),
        linux=linux,
        annotations=dict(annotations) if annotations else None,
        potentially_unsafe_config_annotations=(
            list(potentially_unsafe_config_annotations)
            if potentially_unsafe_config_annotations is not None
            else None
        ),
    )


def features_document(**kwargs: Any) -> dict[str, Any]:
    """:func:`runtime_features` as plain JSON data (dicts and lists, keys in JSON order)."""
    doc: dict[str, Any] = msgspec.to_builtins(runtime_features(**kwargs))
    return doc


def encode_features(features: Features) -> bytes:
    """``features`` as runc prints it: four-space indent, Go escaping, trailing newline."""
    data = msgspec.json.encode(features, order="deterministic")
    return go_json_escape(msgspec.json.format(data, indent=4)) + b"\n"
