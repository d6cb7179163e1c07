"""Typed models of the OCI runtime specification's ``config.json``.

Vocabulary
----------
*bundle*
    A directory holding a ``config.json`` and (usually) the container's root
    filesystem. It is what an OCI runtime is given: ``create --bundle DIR ID``.
*config.json*
    The container's configuration, modelled here by :class:`Spec`: the
    process to run, its root filesystem, mounts, hooks and the Linux
    specifics (namespaces, id mappings, cgroup resources, seccomp, ...).
*ociVersion*
    The runtime-spec version a configuration was written for (SemVer, e.g.
    ``1.2.0``). Within major version 1 the format only grows, so bulkhead
    accepts every ``1.x.y``; it models 1.0 through 1.3.
*runtime namespace* / *container namespace*
    Where a path or id is interpreted: the runtime's own view of the host, or
    the view from inside the container.
*JSON path*
    Errors name the offending field as ``$.linux.namespaces[2].type``:
    ``$`` is the document's root, ``.key`` an object member and ``[i]`` an
    array element (``["key"]`` for map keys that are not identifiers).

Models
------
Every class is a :class:`msgspec.Struct` named exactly as its Go type in
``opencontainers/runtime-spec/specs-go/config.go``; every attribute is the
snake_case of its JSON key (``noNewPrivileges`` -> ``no_new_privileges``,
``containerID`` -> ``container_id``, ``blockIO`` -> ``block_io``,
``class`` -> ``class_``). A field the specification calls OPTIONAL defaults
to ``None``, so encoding a decoded configuration gives back what was read and
invents nothing; a REQUIRED field has no default. Unknown JSON members are
ignored, as Go's ``encoding/json`` ignores them. Values that name a kind of
thing (namespace types, seccomp actions, capability names, ...) are plain
strings: :func:`validate_spec` checks them, with the JSON path of a bad one.

Functions
---------
:func:`load_spec`          read a bundle's ``config.json`` (the one bit of I/O here)
:func:`decode_spec`        parse ``config.json`` bytes and check ``ociVersion``
:func:`check_oci_version`  accept ``1.x.y``, refuse anything else
:func:`encode_spec`        serialize a :class:`Spec` back to JSON
:func:`validate_spec`      the structural checks runc makes before creating;
                           returns warnings, raises :class:`SpecError`
:func:`validate_process`   the same checks for a lone ``process`` (``exec --process``)

The enumerations the checks use are public constants (:data:`NAMESPACE_TYPES`,
:data:`CAPABILITIES`, :data:`RLIMITS`, :data:`SECCOMP_ACTIONS`, ...), shared
with :mod:`bulkhead.oci.features`.
"""

# No ``from __future__ import annotations``: msgspec then gets the types as
# objects instead of evaluating ~300 strings, which halves the first decode.
import os
import re
from typing import Annotated, Any, TypeVar

import msgspec
from msgspec import Meta, field

from bulkhead.errors import SpecError

# --------------------------------------------------------------------------- numbers
#
# The Go types' ranges, so a value Go's encoding/json would refuse is refused
# here too ("Expected `int` >= 0 - at `$.process.user.uid`").

UInt16 = Annotated[int, Meta(ge=0, le=0xFFFF)]
UInt32 = Annotated[int, Meta(ge=0, le=0xFFFF_FFFF)]
UInt64 = Annotated[int, Meta(ge=0)]
Int32 = Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)]
Int64 = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]

# --------------------------------------------------------------------------- constants

#: The runtime-spec version bulkhead writes (``runc spec``) and knows best.
OCI_VERSION = "1.2.0"
#: The newest runtime-spec version whose fields are modelled here.
OCI_VERSION_MODELLED = "1.3.0"

#: ``linux.namespaces[].type`` values, in the order the spec lists them.
NAMESPACE_TYPES = ("pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time")

#: Capability names in the kernel's numbering (index = capability number).
CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
)

#: ``process.rlimits[].type`` names and their resource numbers on Linux.
RLIMITS = {
    "RLIMIT_CPU": 0,
    "RLIMIT_FSIZE": 1,
    "RLIMIT_DATA": 2,
    "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4,
    "RLIMIT_RSS": 5,
    "RLIMIT_NPROC": 6,
    "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8,
    "RLIMIT_AS": 9,
    "RLIMIT_LOCKS": 10,
    "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12,
    "RLIMIT_NICE": 13,
    "RLIMIT_RTPRIO": 14,
    "RLIMIT_RTTIME": 15,
}

#: Hook names (the members of ``hooks``), in lifecycle order.
HOOK_NAMES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)

#: ``linux.seccomp`` actions (``defaultAction``, ``syscalls[].action``).
SECCOMP_ACTIONS = (
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
    "SCMP_ACT_NOTIFY",
)
#: ``linux.seccomp.syscalls[].args[].op`` comparison operators.
SECCOMP_OPERATORS = (
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
)
#: ``linux.seccomp.architectures`` names (libseccomp v2.6.0's list).
SECCOMP_ARCHES = (
    "SCMP_ARCH_X86",
    "SCMP_ARCH_X86_64",
    "SCMP_ARCH_X32",
    "SCMP_ARCH_ARM",
    "SCMP_ARCH_AARCH64",
    "SCMP_ARCH_MIPS",
    "SCMP_ARCH_MIPS64",
    "SCMP_ARCH_MIPS64N32",
    "SCMP_ARCH_MIPSEL",
    "SCMP_ARCH_MIPSEL64",
    "SCMP_ARCH_MIPSEL64N32",
    "SCMP_ARCH_PPC",
    "SCMP_ARCH_PPC64",
    "SCMP_ARCH_PPC64LE",
    "SCMP_ARCH_S390",
    "SCMP_ARCH_S390X",
    "SCMP_ARCH_PARISC",
    "SCMP_ARCH_PARISC64",
    "SCMP_ARCH_RISCV64",
    "SCMP_ARCH_LOONGARCH64",
    "SCMP_ARCH_M68K",
    "SCMP_ARCH_SH",
    "SCMP_ARCH_SHEB",
)
#: ``linux.seccomp.flags``: flags to seccomp(2)'s SECCOMP_SET_MODE_FILTER.
SECCOMP_FLAGS = (
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
)
#: ``process.scheduler.policy`` values (sched_setattr(2)).
SCHEDULER_POLICIES = (
    "SCHED_OTHER",
    "SCHED_FIFO",
    "SCHED_RR",
    "SCHED_BATCH",
    "SCHED_ISO",
    "SCHED_IDLE",
    "SCHED_DEADLINE",
)
#: ``process.scheduler.flags`` values.
SCHEDULER_FLAGS = (
    "SCHED_FLAG_RESET_ON_FORK",
    "SCHED_FLAG_RECLAIM",
    "SCHED_FLAG_DL_OVERRUN",
    "SCHED_FLAG_KEEP_POLICY",
    "SCHED_FLAG_KEEP_PARAMS",
    "SCHED_FLAG_UTIL_CLAMP_MIN",
    "SCHED_FLAG_UTIL_CLAMP_MAX",
)
#: ``process.ioPriority.class`` values (ioprio_set(2)).
IOPRIO_CLASSES = ("IOPRIO_CLASS_RT", "IOPRIO_CLASS_BE", "IOPRIO_CLASS_IDLE")
#: ``linux.personality.domain`` values.
PERSONALITY_DOMAINS = ("LINUX", "LINUX32")
#: ``linux.memoryPolicy.mode`` values (set_mempolicy(2)), runtime-spec 1.3.
MEMORY_POLICY_MODES = (
    "MPOL_DEFAULT",
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_WEIGHTED_INTERLEAVE",
    "MPOL_PREFERRED",
    "MPOL_PREFERRED_MANY",
    "MPOL_LOCAL",
)
#: ``linux.memoryPolicy.flags`` values.
MEMORY_POLICY_FLAGS = ("MPOL_F_NUMA_BALANCING", "MPOL_F_RELATIVE_NODES", "MPOL_F_STATIC_NODES")
#: ``linux.rootfsPropagation`` values runc accepts.
ROOTFS_PROPAGATIONS = (
    "shared",
    "slave",
    "private",
    "unbindable",
    "rshared",
    "rslave",
    "rprivate",
    "runbindable",
)
#: ``linux.timeOffsets`` keys: the clocks a time namespace can offset.
TIME_NAMESPACE_CLOCKS = ("boottime", "monotonic")


# =========================================================================== models
#
# Field order follows config.go, so encoded JSON reads like runc's.


class _Model(msgspec.Struct, kw_only=True, omit_defaults=True, rename="camel"):
    """Base of every model: keyword-only, camelCase JSON, unset fields omitted."""


# --------------------------------------------------------------------------- process


class Box(_Model):
    """A rectangle's size; ``process.consoleSize`` in character cells."""

    height: UInt64
    width: UInt64


class User(_Model):
    """Who the process runs as: ``uid``/``gid`` in the container's user namespace."""

    uid: UInt32
    gid: UInt32
    #: the process's umask (runtime-spec 1.0.2+)
    umask: UInt32 | None = None
    #: supplementary groups
    additional_gids: list[UInt32] | None = None
    #: Windows only
    username: str | None = None


class LinuxCapabilities(_Model):
    """The process's five capability sets, as ``CAP_*`` names."""

    bounding: list[str] | None = None
    effective: list[str] | None = None
    inheritable: list[str] | None = None
    permitted: list[str] | None = None
    ambient: list[str] | None = None


class POSIXRlimit(_Model):
    """One resource limit: ``type`` (``RLIMIT_NOFILE``...) with soft and hard values."""

    type: str
    hard: UInt64
    soft: UInt64


class Scheduler(_Model):
    """``process.scheduler``: sched_setattr(2) attributes (runtime-spec 1.2)."""

    policy: str
    nice: Int32 | None = None
    priority: Int32 | None = None
    flags: list[str] | None = None
    #: SCHED_DEADLINE only, nanoseconds
    runtime: UInt64 | None = None
    deadline: UInt64 | None = None
    period: UInt64 | None = None


class LinuxIOPriority(_Model):
    """``process.ioPriority``: ioprio_set(2) class and level (runtime-spec 1.2)."""

    class_: str = field(name="class")
    priority: Int64


class CPUAffinity(_Model):
    """``process.execCPUAffinity``: CPUs an ``exec``'d process runs on (1.2.1).

    ``initial`` applies while the runtime moves the process into the
    container's cgroup, ``final`` afterwards; both are cpu lists like ``0-3,7``.
    """

    initial: str | None = None
    final: str | None = None


class Process(_Model, kw_only=True):
    """The container's process: what to run, as whom, with which limits."""

    terminal: bool | None = None
    console_size: Box | None = None
    user: User
    args: list[str] | None = None
    #: Windows only: the whole command line
    command_line: str | None = None
    env: list[str] | None = None
    #: working directory in the container, absolute
    cwd: str
    capabilities: LinuxCapabilities | None = None
    rlimits: list[POSIXRlimit] | None = None
    no_new_privileges: bool | None = None
    apparmor_profile: str | None = None
    oom_score_adj: Int64 | None = None
    scheduler: Scheduler | None = None
    selinux_label: str | None = None
    io_priority: LinuxIOPriority | None = None
    exec_cpu_affinity: CPUAffinity | None = field(default=None, name="execCPUAffinity")


# --------------------------------------------------------------------------- root, mounts, hooks


class Root(_Model):
    """The container's root filesystem: ``path`` (relative to the bundle or absolute)."""

    path: str
    readonly: bool | None = None


class LinuxIDMapping(_Model):
    """``size`` ids from ``host_id`` on the host appear as ``container_id`` onwards."""

    container_id: UInt32 = field(name="containerID")
    host_id: UInt32 = field(name="hostID")
    size: UInt32


class Mount(_Model):
    """One mount: ``source`` of ``type`` at ``destination``, with fstab-style ``options``.

    ``uid_mappings``/``gid_mappings`` (runtime-spec 1.1) make it an id-mapped
    mount. A relative ``destination`` (allowed by 1.2) is relative to ``/``.
    """

    destination: str
    type: str | None = None
    source: str | None = None
    options: list[str] | None = None
    uid_mappings: list[LinuxIDMapping] | None = None
    gid_mappings: list[LinuxIDMapping] | None = None


class Hook(_Model):
    """A program run at a lifecycle event, fed the container's state on stdin."""

    path: str
    args: list[str] | None = None
    env: list[str] | None = None
    #: seconds; the hook is killed when it runs longer
    timeout: Int64 | None = None


class Hooks(_Model):
    """The lifecycle hooks, by event.

    ``prestart`` (deprecated), ``create_runtime`` and ``poststart``/``poststop``
    run in the runtime namespace; ``create_container`` and ``start_container``
    in the container's.
    """

    prestart: list[Hook] | None = None
    create_runtime: list[Hook] | None = None
    create_container: list[Hook] | None = None
    start_container: list[Hook] | None = None
    poststart: list[Hook] | None = None
    poststop: list[Hook] | None = None


# --------------------------------------------------------------------------- linux: cgroup resources


class LinuxDeviceCgroup(_Model):
    """One device-cgroup rule: allow or deny ``access`` (``rwm``) to a device class."""

    allow: bool
    #: ``a`` (all), ``c`` or ``b``; unset means all
    type: str | None = None
    major: Int64 | None = None
    minor: Int64 | None = None
    access: str | None = None


class LinuxMemory(_Model):
    """The memory controller. Limits are bytes, ``-1`` meaning unlimited."""

    limit: Int64 | None = None
    reservation: Int64 | None = None
    #: memory + swap
    swap: Int64 | None = None
    #: deprecated (cgroup v1 kernel memory)
    kernel: Int64 | None = None
    kernel_tcp: Int64 | None = field(default=None, name="kernelTCP")
    swappiness: UInt64 | None = None
    disable_oom_killer: bool | None = field(default=None, name="disableOOMKiller")
    use_hierarchy: bool | None = None
    check_before_update: bool | None = None


class LinuxCPU(_Model):
    """The cpu and cpuset controllers. Times are microseconds."""

    shares: UInt64 | None = None
    quota: Int64 | None = None
    burst: UInt64 | None = None
    period: UInt64 | None = None
    realtime_runtime: Int64 | None = None
    realtime_period: UInt64 | None = None
    #: cpu list such as ``0-3,7``
    cpus: str | None = None
    #: memory-node list, same format
    mems: str | None = None
    #: 1 puts the cgroup in SCHED_IDLE
    idle: Int64 | None = None


class LinuxPids(_Model):
    """The pids controller: at most ``limit`` tasks (``-1``: no limit).

    REQUIRED before runtime-spec 1.3, OPTIONAL since; modelled as optional.
    """

    limit: Int64 | None = None


class LinuxBlockIODevice(_Model):
    """A block device by ``major:minor`` (embedded in the per-device settings)."""

    major: Int64
    minor: Int64


class LinuxWeightDevice(LinuxBlockIODevice):
    """A device's I/O weight."""

    weight: UInt16 | None = None
    leaf_weight: UInt16 | None = None


class LinuxThrottleDevice(LinuxBlockIODevice):
    """A device's I/O rate limit (bytes or operations per second)."""

    rate: UInt64


class LinuxBlockIO(_Model):
    """The blkio (v1) / io (v2) controller."""

    weight: UInt16 | None = None
    leaf_weight: UInt16 | None = None
    weight_device: list[LinuxWeightDevice] | None = None
    throttle_read_bps_device: list[LinuxThrottleDevice] | None = None
    throttle_write_bps_device: list[LinuxThrottleDevice] | None = None
    throttle_read_iops_device: list[LinuxThrottleDevice] | None = field(
        default=None, name="throttleReadIOPSDevice"
    )
    throttle_write_iops_device: list[LinuxThrottleDevice] | None = field(
        default=None, name="throttleWriteIOPSDevice"
    )


class LinuxHugepageLimit(_Model):
    """The hugetlb controller for one page size (``2MB``, ``1GB``...)."""

    page_size: str
    limit: UInt64


class LinuxInterfacePriority(_Model):
    """net_prio: the priority of traffic leaving through interface ``name``."""

    name: str
    priority: UInt32


class LinuxNetwork(_Model):
    """The net_cls and net_prio controllers (cgroup v1)."""

    class_id: UInt32 | None = field(default=None, name="classID")
    priorities: list[LinuxInterfacePriority] | None = None


class LinuxRdma(_Model):
    """The rdma controller for one device."""

    hca_handles: UInt32 | None = None
    hca_objects: UInt32 | None = None


class LinuxResources(_Model):
    """``linux.resources``: the container's cgroup settings, by controller.

    ``unified`` (cgroup v2 only) maps cgroup file names to values written as is.
    """

    devices: list[LinuxDeviceCgroup] | None = None
    memory: LinuxMemory | None = None
    cpu: LinuxCPU | None = None
    pids: LinuxPids | None = None
    block_io: LinuxBlockIO | None = field(default=None, name="blockIO")
    hugepage_limits: list[LinuxHugepageLimit] | None = None
    network: LinuxNetwork | None = None
    rdma: dict[str, LinuxRdma] | None = None
    unified: dict[str, str] | None = None


# --------------------------------------------------------------------------- linux: the rest


class LinuxNamespace(_Model):
    """A namespace to create (no ``path``) or to join (``path`` to an ns file)."""

    type: str
    path: str | None = None


class LinuxTimeOffset(_Model):
    """How far a time namespace's clock is moved from the host's."""

    secs: Int64 | None = None
    nanosecs: UInt32 | None = None


class LinuxDevice(_Model):
    """A device node to create in the container (``type``: ``c``, ``b``, ``u`` or ``p``)."""

    path: str
    type: str
    #: not needed for ``p`` (FIFO)
    major: Int64 | None = None
    minor: Int64 | None = None
    file_mode: UInt32 | None = None
    uid: UInt32 | None = None
    gid: UInt32 | None = None


class LinuxNetDevice(_Model):
    """A host network device moved into the container (1.3); ``name`` renames it."""

    name: str | None = None


class LinuxSeccompArg(_Model, kw_only=True):
    """A condition on syscall argument ``index``: ``arg op value`` (``value_two`` for masks)."""

    index: UInt64
    value: UInt64
    value_two: UInt64 | None = None
    op: str


class LinuxSyscall(_Model):
    """A seccomp rule: ``action`` for the syscalls ``names`` whose ``args`` match."""

    names: list[str]
    action: str
    errno_ret: UInt64 | None = None
    args: list[LinuxSeccompArg] | None = None


class LinuxSeccomp(_Model):
    """``linux.seccomp``: the syscall filter.

    ``listener_path`` is a unix socket that receives the notify fd when a rule
    uses ``SCMP_ACT_NOTIFY`` (with ``listener_metadata`` passed along).
    """

    default_action: str
    default_errno_ret: UInt64 | None = None
    architectures: list[str] | None = None
    flags: list[str] | None = None
    listener_path: str | None = None
    listener_metadata: str | None = None
    syscalls: list[LinuxSyscall] | None = None


class LinuxIntelRdt(_Model):
    """``linux.intelRdt``: the resctrl class of service (``closID``) and its schemata.

    ``enable_cmt``/``enable_mbm`` are runtime-spec 1.1-1.2; 1.3 replaced them
    with ``enable_monitoring`` and added ``schemata`` (one line per element).
    """

    clos_id: str | None = field(default=None, name="closID")
    schemata: list[str] | None = None
    l3_cache_schema: str | None = None
    mem_bw_schema: str | None = None
    enable_cmt: bool | None = field(default=None, name="enableCMT")
    enable_mbm: bool | None = field(default=None, name="enableMBM")
    enable_monitoring: bool | None = None


class LinuxMemoryPolicy(_Model):
    """``linux.memoryPolicy`` (1.3): the NUMA policy set_mempolicy(2) applies."""

    mode: str
    #: memory-node list such as ``0-3,7``
    nodes: str | None = None
    flags: list[str] | None = None


class LinuxPersonality(_Model):
    """``linux.personality``: the execution domain (``LINUX`` or ``LINUX32``)."""

    domain: str
    flags: list[str] | None = None


class Linux(_Model):
    """``linux``: everything specific to Linux containers."""

    uid_mappings: list[LinuxIDMapping] | None = None
    gid_mappings: list[LinuxIDMapping] | None = None
    sysctl: dict[str, str] | None = None
    resources: LinuxResources | None = None
    cgroups_path: str | None = None
    namespaces: list[LinuxNamespace] | None = None
    devices: list[LinuxDevice] | None = None
    net_devices: dict[str, LinuxNetDevice] | None = None
    seccomp: LinuxSeccomp | None = None
    rootfs_propagation: str | None = None
    masked_paths: list[str] | None = None
    readonly_paths: list[str] | None = None
    mount_label: str | None = None
    intel_rdt: LinuxIntelRdt | None = None
    memory_policy: LinuxMemoryPolicy | None = None
    personality: LinuxPersonality | None = None
    time_offsets: dict[str, LinuxTimeOffset] | None = None


# --------------------------------------------------------------------------- other platforms
#
# Modelled so a configuration written for several platforms round-trips; a
# Linux runtime reads none of it.


class SolarisCappedCPU(_Model):
    """Solaris ``cappedCPU``."""

    ncpus: str | None = None


class SolarisCappedMemory(_Model):
    """Solaris ``cappedMemory``."""

    physical: str | None = None
    swap: str | None = None


class SolarisAnet(_Model):
    """Solaris automatic network (``anet``) entry."""

    linkname: str | None = None
    lower_link: str | None = None
    allowed_address: str | None = None
    configure_allowed_address: str | None = None
    defrouter: str | None = None
    link_protection: str | None = None
    mac_address: str | None = None


class Solaris(_Model):
    """``solaris``: Solaris zones."""

    milestone: str | None = None
    limitpriv: str | None = None
    max_shm_memory: str | None = None
    anet: list[SolarisAnet] | None = None
    capped_cpu: SolarisCappedCPU | None = field(default=None, name="cappedCPU")
    capped_memory: SolarisCappedMemory | None = None


class WindowsDevice(_Model):
    """A Windows host device mapped into the container."""

    id: str
    id_type: str


class WindowsMemoryResources(_Model):
    """Windows memory limit."""

    limit: UInt64 | None = None


class WindowsCPUGroupAffinity(_Model):
    """A Windows processor group and mask."""

    mask: UInt64 | None = None
    group: UInt32 | None = None


class WindowsCPUResources(_Model):
    """Windows CPU limits."""

    count: UInt64 | None = None
    shares: UInt16 | None = None
    maximum: UInt16 | None = None
    affinity: list[WindowsCPUGroupAffinity] | None = None


class WindowsStorageResources(_Model):
    """Windows storage limits."""

    iops: UInt64 | None = None
    bps: UInt64 | None = None
    sandbox_size: UInt64 | None = None


class WindowsResources(_Model):
    """Windows resource limits."""

    memory: WindowsMemoryResources | None = None
    cpu: WindowsCPUResources | None = None
    storage: WindowsStorageResources | None = None


class WindowsNetwork(_Model):
    """Windows network settings."""

    endpoint_list: list[str] | None = None
    allow_unqualified_dns_query: bool | None = field(default=None, name="allowUnqualifiedDNSQuery")
    dns_search_list: list[str] | None = field(default=None, name="DNSSearchList")
    network_shared_container_name: str | None = None
    network_namespace: str | None = None


class WindowsHyperV(_Model):
    """Hyper-V isolation."""

    utility_vm_path: str | None = field(default=None, name="utilityVMPath")


class Windows(_Model):
    """``windows``: Windows containers."""

    layer_folders: list[str] | None = None
    devices: list[WindowsDevice] | None = None
    resources: WindowsResources | None = None
    credential_spec: Any = None
    servicing: bool | None = None
    ignore_flushes_during_boot: bool | None = None
    hyperv: WindowsHyperV | None = None
    network: WindowsNetwork | None = None


class VMHypervisor(_Model):
    """The hypervisor of a VM-based container."""

    path: str
    parameters: list[str] | None = None


class VMKernel(_Model):
    """The guest kernel of a VM-based container."""

    path: str
    parameters: list[str] | None = None
    initrd: str | None = None


class VMImage(_Model):
    """The guest root image of a VM-based container."""

    path: str
    format: str


class IOMems(_Model):
    """An iomem range passed to a VM (1.3)."""

    first_gfn: UInt64 | None = field(default=None, name="firstGFN")
    first_mfn: UInt64 | None = field(default=None, name="firstMFN")
    nr_mfns: UInt64 | None = field(default=None, name="nrMFNs")


class HWConfig(_Model):
    """Hardware given to a VM (1.3)."""

    device_tree: str | None = None
    vcpus: UInt32 | None = None
    memory: UInt64 | None = None
    dtdevs: list[str] | None = None
    iomems: list[IOMems] | None = None
    irqs: list[UInt32] | None = None


class VM(_Model, kw_only=True):
    """``vm``: virtual-machine-based containers."""

    hypervisor: VMHypervisor | None = None
    kernel: VMKernel
    image: VMImage | None = None
    hwconfig: HWConfig | None = None


class ZOSDevice(_Model):
    """A z/OS device node (runtime-spec 1.1-1.2)."""

    path: str
    type: str
    major: Int64 | None = None
    minor: Int64 | None = None
    file_mode: UInt32 | None = None
    uid: UInt32 | None = None
    gid: UInt32 | None = None


class ZOSNamespace(_Model):
    """A z/OS namespace (1.3)."""

    type: str
    path: str | None = None


class ZOS(_Model):
    """``zos``: z/OS containers (``devices`` until 1.2, ``namespaces`` from 1.3)."""

    devices: list[ZOSDevice] | None = None
    namespaces: list[ZOSNamespace] | None = None


class FreeBSDDevice(_Model):
    """A FreeBSD device, relative to /dev (1.3)."""

    path: str
    mode: UInt32 | None = None


class FreeBSDJailAllow(_Model):
    """What a FreeBSD jail may do (1.3)."""

    set_hostname: bool | None = None
    raw_sockets: bool | None = None
    chflags: bool | None = None
    mount: list[str] | None = None
    quotas: bool | None = None
    socket_af: bool | None = None
    mlock: bool | None = None
    reserved_ports: bool | None = None
    suser: bool | None = None


class FreeBSDJail(_Model):
    """A FreeBSD jail (1.3)."""

    parent: str | None = None
    host: str | None = None
    ip4: str | None = None
    ip4_addr: list[str] | None = None
    ip6: str | None = None
    ip6_addr: list[str] | None = None
    vnet: str | None = None
    interface: str | None = None
    vnet_interfaces: list[str] | None = None
    sysvmsg: str | None = None
    sysvsem: str | None = None
    sysvshm: str | None = None
    enforce_statfs: Int64 | None = None
    allow: FreeBSDJailAllow | None = None


class FreeBSD(_Model):
    """``freebsd``: FreeBSD jails (1.3)."""

    devices: list[FreeBSDDevice] | None = None
    jail: FreeBSDJail | None = None


# --------------------------------------------------------------------------- the document


#: An other platform's section that is not in the document.
_ABSENT = msgspec.Raw(b"")


class Spec(_Model):
    """A whole ``config.json``."""

    oci_version: str
    process: Process | None = None
    root: Root | None = None
    hostname: str | None = None
    #: runtime-spec 1.1
    domainname: str | None = None
    mounts: list[Mount] | None = None
    hooks: Hooks | None = None
    annotations: dict[str, str] | None = None
    linux: Linux | None = None
    #: The other platforms' sections stay undecoded JSON here: building their
    #: decoders would cost ~5 ms, most of a Linux config's first decode.
    #: :func:`decode_spec` still checks them when present;
    #: :func:`platform_section` decodes one (``platform_section(spec, Windows)``).
    solaris: msgspec.Raw = _ABSENT
    windows: msgspec.Raw = _ABSENT
    vm: msgspec.Raw = _ABSENT
    zos: msgspec.Raw = _ABSENT
    freebsd: msgspec.Raw = _ABSENT


_PlatformSection = TypeVar("_PlatformSection", Solaris, Windows, VM, ZOS, FreeBSD)

#: The member of :class:`Spec` holding each other platform's section.
PLATFORM_SECTIONS: dict[type[_Model], str] = {
    Solaris: "solaris",
    Windows: "windows",
    VM: "vm",
    ZOS: "zos",
    FreeBSD: "freebsd",
}


def platform_section(spec: Spec, section: type[_PlatformSection]) -> _PlatformSection | None:
    """The decoded section of another platform (``Windows``, ``VM`` ...), None if absent."""
    name = PLATFORM_SECTIONS[section]
    raw: msgspec.Raw = getattr(spec, name)
    if not raw or bytes(raw) == b"null":
        return None
    try:
        return msgspec.json.decode(raw, type=section)
    except msgspec.ValidationError as exc:
        raise SpecError(_section_error(exc, name)) from None


def _section_error(exc: msgspec.ValidationError, name: str) -> str:
    """msgspec's message about a section, its path made the path in the whole document."""
    return str(exc).replace("`$", f"`$.{name}")


# =========================================================================== loading

# patterns are compiled on first use (re caches them), not at import
_VERSION_RE = r"^(\d+)\.(\d+)\.(\d+)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$"

_decoder: msgspec.json.Decoder[Spec] | None = None


def check_oci_version(version: str, where: str = "$.ociVersion") -> tuple[int, int, int]:
    """The (major, minor, patch) of a supported ``ociVersion``, or :class:`SpecError`.

    Every ``1.x.y`` is supported, pre-release and build suffixes included
    (``1.0.2-dev``, ``1.2.0+dev``): within a major version the format only
    grows, and fields this module does not know are ignored.
    """
    m = re.match(_VERSION_RE, version)
    if m is None:
        raise SpecError(
            f"ociVersion {version!r} is not a version (expected MAJOR.MINOR.PATCH, e.g. "
            f"{OCI_VERSION!r})",
            where=where,
        )
    major, minor, patch = int(m[1]), int(m[2]), int(m[3])
    if major != 1:
        raise SpecError(
            f"unsupported ociVersion {version!r}: bulkhead supports runtime-spec 1.x",
            where=where,
        )
    return major, minor, patch


def decode_spec(data: bytes, source: str = "config.json") -> Spec:
    """Parse ``config.json`` bytes into a :class:`Spec`.

    ``source`` names the input in errors. Unknown members are ignored; a
    value of the wrong type is a :class:`SpecError` whose message keeps the
    JSON path (``... - at `$.process.user.uid```); so is malformed JSON and an
    ``ociVersion`` other than ``1.x.y``.
    """
    global _decoder
    if _decoder is None:
        _decoder = msgspec.json.Decoder(Spec)
    try:
        spec = _decoder.decode(data)
    except msgspec.ValidationError as exc:
        raise SpecError(str(exc), where=source) from None
    except msgspec.DecodeError as exc:
        raise SpecError(f"invalid JSON: {exc}", where=source) from None
    check_oci_version(spec.oci_version, where=f"{source}: $.ociVersion")
    for section, name in PLATFORM_SECTIONS.items():
        raw = getattr(spec, name)
        if raw and bytes(raw) != b"null":
            try:
                msgspec.json.decode(raw, type=section)
            except msgspec.ValidationError as exc:
                raise SpecError(_section_error(exc, name), where=source) from None
    return spec


def load_spec(path: str | os.PathLike[str]) -> Spec:
    """Read and parse a bundle's ``config.json``.

    ``path`` is the file, or the bundle directory holding it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        bundle = os.path.dirname(path) or "."
        raise SpecError(
            f"the bundle {bundle} has no config.json (JSON specification file not found)",
            where=path,
        ) from None
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror}", where=path) from None
    return decode_spec(data, path)


def encode_spec(spec: Spec) -> bytes:
    """``spec`` as compact JSON; fields left unset are omitted."""
    return msgspec.json.encode(spec)


# =========================================================================== validation

_ENV_NAME_NUL = "\x00"
_CPU_LIST_RE = r"^\d+(?:-\d+)?(?:,\d+(?:-\d+)?)*$"
_PAGE_SIZE_RE = r"^\d+[KMGTP]?B$"
_CAP_SET = frozenset(CAPABILITIES)
_SYSCTL_IPC = frozenset(
    {
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    }
)


def _key(base: str, key: str) -> str:
    """The JSON path of map member ``key`` under ``base``."""
    if key.isidentifier():
        return f"{base}.{key}"
    return f"{base}[{msgspec.json.encode(key).decode()}]"


def _fail(where: str, message: str) -> SpecError:
    return SpecError(message, where=where)


def _check_cpu_list(value: str | None, where: str) -> None:
    if value is None or value == "":
        return
    if not re.match(_CPU_LIST_RE, value):
        raise _fail(where, f"{value!r} is not a list like '0-3,7'")
    for part in value.split(","):
        lo, _, hi = part.partition("-")
        if hi and int(hi) < int(lo):
            raise _fail(where, f"{value!r}: range {part!r} runs backwards")


def validate_spec(spec: Spec) -> list[str]:
    """Check ``spec`` the way runc does before it creates a container.

    Raises :class:`SpecError` naming the JSON path of the first problem and
    the bad value. Returns warnings: things accepted but worth logging (a
    relative mount destination, taken as relative to ``/``).

    The checks are structural only (no host lookups): allowed values of the
    enumerations, absolute paths where the spec demands them, namespaces
    that settings depend on (id mappings need a user namespace, time offsets
    a time namespace, a hostname a UTS namespace, namespaced sysctls their
    namespace), no duplicates where duplicates make no sense.
    """
    warnings: list[str] = []
    namespaces = _validate_namespaces(spec.linux)
    if spec.process is not None:
        validate_process(spec.process, "$.process")
    if spec.root is not None and not spec.root.path:
        raise _fail("$.root.path", "must not be empty")
    for name in ("hostname", "domainname"):
        value = getattr(spec, name)
        if value and "uts" not in namespaces:
            raise _fail(f"$.{name}", f"unable to set {name} {value!r} without a UTS namespace")
    for i, mount in enumerate(spec.mounts or []):
        _validate_mount(mount, f"$.mounts[{i}]", warnings)
    if spec.hooks is not None:
        _validate_hooks(spec.hooks)
    if spec.linux is not None:
        _validate_linux(spec.linux, namespaces, warnings)
    return warnings


def _validate_namespaces(linux: Linux | None) -> dict[str, str | None]:
    """Namespace type -> path to join (None: a new one), after checking the list."""
    found: dict[str, str | None] = {}
    for i, ns in enumerate((linux.namespaces if linux else None) or []):
        where = f"$.linux.namespaces[{i}]"
        if ns.type not in NAMESPACE_TYPES:
            raise _fail(
                f"{where}.type",
                f"unknown namespace type {ns.type!r} (known: {', '.join(NAMESPACE_TYPES)})",
            )
        if ns.type in found:
            raise _fail(f"{where}.type", f"duplicate namespace {ns.type!r}")
        if ns.path is not None and ns.path != "" and not ns.path.startswith("/"):
            raise _fail(f"{where}.path", f"namespace path {ns.path!r} must be absolute")
        found[ns.type] = ns.path or None
    return found


def validate_process(process: Process, where: str = "$.process") -> None:
    """Check a ``process`` (of ``config.json``, or ``exec --process``)."""
    if not process.args:
        raise _fail(f"{where}.args", "args must not be empty")
    for i, arg in enumerate(process.args):
        if _ENV_NAME_NUL in arg:
            raise _fail(f"{where}.args[{i}]", f"{arg!r} contains a NUL byte")
    if not process.cwd:
        raise _fail(f"{where}.cwd", "cwd must not be empty")
    if not process.cwd.startswith("/"):
        raise _fail(f"{where}.cwd", f"cwd {process.cwd!r} must be an absolute path")
    for i, entry in enumerate(process.env or []):
        name, eq, _ = entry.partition("=")
        if not eq:
            raise _fail(f"{where}.env[{i}]", f"invalid environment variable {entry!r}: missing '='")
        if not name:
            raise _fail(f"{where}.env[{i}]", f"invalid environment variable {entry!r}: empty name")
        if _ENV_NAME_NUL in entry:
            raise _fail(
                f"{where}.env[{i}]", f"invalid environment variable {name!r}: contains a NUL byte"
            )
    if process.capabilities is not None:
        caps = process.capabilities
        for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            for i, cap in enumerate(getattr(caps, kind) or []):
                if cap not in _CAP_SET:
                    raise _fail(f"{where}.capabilities.{kind}[{i}]", f"unknown capability {cap!r}")
    seen: dict[str, int] = {}
    for i, rl in enumerate(process.rlimits or []):
        rwhere = f"{where}.rlimits[{i}]"
        if rl.type not in RLIMITS:
            raise _fail(f"{rwhere}.type", f"unknown rlimit type {rl.type!r}")
        if rl.type in seen:
            raise _fail(
                f"{rwhere}.type",
                f"duplicate rlimit {rl.type!r} (also at {where}.rlimits[{seen[rl.type]}])",
            )
        seen[rl.type] = i
        if rl.soft > rl.hard:
            raise _fail(rwhere, f"{rl.type}: soft limit {rl.soft} exceeds hard limit {rl.hard}")
    if process.oom_score_adj is not None and not -1000 <= process.oom_score_adj <= 1000:
        raise _fail(f"{where}.oomScoreAdj", f"{process.oom_score_adj} is outside -1000..1000")
    if process.scheduler is not None:
        _validate_scheduler(process.scheduler, f"{where}.scheduler")
    if process.io_priority is not None:
        io = process.io_priority
        if io.class_ not in IOPRIO_CLASSES:
            raise _fail(f"{where}.ioPriority.class", f"unknown I/O priority class {io.class_!r}")
        if not 0 <= io.priority <= 7:
            raise _fail(f"{where}.ioPriority.priority", f"invalid priority {io.priority} (0..7)")
    if process.exec_cpu_affinity is not None:
        aff = process.exec_cpu_affinity
        _check_cpu_list(aff.initial, f"{where}.execCPUAffinity.initial")
        _check_cpu_list(aff.final, f"{where}.execCPUAffinity.final")


def _validate_scheduler(s: Scheduler, where: str) -> None:
    if s.policy not in SCHEDULER_POLICIES:
        raise _fail(f"{where}.policy", f"unknown scheduler policy {s.policy!r}")
    for i, flag in enumerate(s.flags or []):
        if flag not in SCHEDULER_FLAGS:
            raise _fail(f"{where}.flags[{i}]", f"unknown scheduler flag {flag!r}")
    if s.nice is not None and not -20 <= s.nice <= 19:
        raise _fail(f"{where}.nice", f"invalid nice value {s.nice} (-20..19)")
    if s.priority and s.policy not in ("SCHED_FIFO", "SCHED_RR"):
        raise _fail(
            f"{where}.priority", "priority can only be specified for SCHED_FIFO or SCHED_RR"
        )
    if s.policy != "SCHED_DEADLINE" and (s.runtime or s.deadline or s.period):
        raise _fail(where, "runtime/deadline/period can only be specified for SCHED_DEADLINE")


def _is_bind(mount: Mount) -> bool:
    opts = mount.options or []
    return mount.type == "bind" or "bind" in opts or "rbind" in opts


def _validate_mount(mount: Mount, where: str, warnings: list[str]) -> None:
    if not mount.destination:
        raise _fail(f"{where}.destination", "mount destination must not be empty")
    if not mount.destination.startswith("/"):
        warnings.append(
            f"{where}.destination: relative mount destination {mount.destination!r} "
            "is taken as relative to /"
        )
    for kind in ("uid_mappings", "gid_mappings"):
        for i, m in enumerate(getattr(mount, kind) or []):
            if m.size == 0:
                camel = "uidMappings" if kind == "uid_mappings" else "gidMappings"
                raise _fail(f"{where}.{camel}[{i}].size", "mapping size must be greater than 0")
    if mount.uid_mappings or mount.gid_mappings:
        if not (mount.uid_mappings and mount.gid_mappings):
            raise _fail(where, "id-mapped mounts must have both uid and gid mappings specified")
        if not _is_bind(mount):
            raise _fail(where, "id-mapped mounts are only supported for bind mounts")


_HOOK_ATTRS = (
    "prestart",
    "create_runtime",
    "create_container",
    "start_container",
    "poststart",
    "poststop",
)


def _validate_hooks(hooks: Hooks) -> None:
    for name, attr in zip(HOOK_NAMES, _HOOK_ATTRS, strict=True):
        for i, hook in enumerate(getattr(hooks, attr) or []):
            where = f"$.hooks.{name}[{i}]"
            if not hook.path.startswith("/"):
                raise _fail(f"{where}.path", f"hook path {hook.path!r} must be absolute")
            if hook.timeout is not None and hook.timeout <= 0:
                raise _fail(f"{where}.timeout", f"timeout {hook.timeout} must be greater than 0")


def _validate_id_mappings(linux: Linux, namespaces: dict[str, str | None]) -> None:
    for camel, mappings in (
        ("uidMappings", linux.uid_mappings),
        ("gidMappings", linux.gid_mappings),
    ):
        for i, m in enumerate(mappings or []):
            if m.size == 0:
                raise _fail(f"$.linux.{camel}[{i}].size", "mapping size must be greater than 0")
    has_maps = bool(linux.uid_mappings) or bool(linux.gid_mappings)
    if "user" not in namespaces:
        if has_maps:
            where = "$.linux.uidMappings" if linux.uid_mappings else "$.linux.gidMappings"
            raise _fail(
                where,
                "user namespace mappings specified, but user namespace isn't enabled in the config",
            )
        return
    if namespaces["user"] is not None:
        if has_maps:
            raise _fail(
                "$.linux.uidMappings",
                "user namespaces enabled, but both namespace path and mapping specified "
                "-- you may only provide one",
            )
        return
    if not linux.uid_mappings:
        raise _fail("$.linux.uidMappings", "user namespaces enabled, but no uid mappings specified")
    if not linux.gid_mappings:
        raise _fail("$.linux.gidMappings", "user namespaces enabled, but no gid mappings specified")


def _validate_linux(linux: Linux, namespaces: dict[str, str | None], warnings: list[str]) -> None:
    _validate_id_mappings(linux, namespaces)
    if linux.time_offsets:
        if "time" not in namespaces:
            raise _fail(
                "$.linux.timeOffsets",
                "time namespace offsets specified, but time namespace isn't enabled in the config",
            )
        if namespaces["time"] is not None:
            raise _fail(
                "$.linux.timeOffsets",
                "time namespace offsets specified, but the time namespace is joined, not created",
            )
        for clock, off in linux.time_offsets.items():
            where = _key("$.linux.timeOffsets", clock)
            if clock not in TIME_NAMESPACE_CLOCKS:
                raise _fail(where, f"unknown clock {clock!r} (boottime or monotonic)")
            if off.nanosecs is not None and off.nanosecs >= 1_000_000_000:
                raise _fail(f"{where}.nanosecs", f"{off.nanosecs} is not below 1000000000")
    for key in linux.sysctl or {}:
        _validate_sysctl(key, namespaces)
    if linux.rootfs_propagation and linux.rootfs_propagation not in ROOTFS_PROPAGATIONS:
        raise _fail(
            "$.linux.rootfsPropagation",
            f"rootfsPropagation {linux.rootfs_propagation!r} is not supported",
        )
    for camel, paths in (
        ("maskedPaths", linux.masked_paths),
        ("readonlyPaths", linux.readonly_paths),
    ):
        for i, p in enumerate(paths or []):
            if not p.startswith("/"):
                raise _fail(f"$.linux.{camel}[{i}]", f"{p!r} must be an absolute path")
    for i, dev in enumerate(linux.devices or []):
        where = f"$.linux.devices[{i}]"
        if dev.type not in ("c", "b", "u", "p"):
            raise _fail(f"{where}.type", f"unknown device type {dev.type!r} (c, b, u or p)")
        if not dev.path.startswith("/"):
            raise _fail(f"{where}.path", f"device path {dev.path!r} must be absolute")
    if linux.net_devices:
        if "network" not in namespaces:
            raise _fail(
                "$.linux.netDevices",
                "unable to move network devices without a network namespace",
            )
        for host_name, netdev in linux.net_devices.items():
            where = _key("$.linux.netDevices", host_name)
            _check_ifname(host_name, where)
            if netdev.name is not None:
                _check_ifname(netdev.name, f"{where}.name")
    if linux.resources is not None:
        _validate_resources(linux.resources)
    if linux.seccomp is not None:
        _validate_seccomp(linux.seccomp)
    if linux.intel_rdt is not None:
        _validate_intel_rdt(linux.intel_rdt, warnings)
    if linux.memory_policy is not None:
        _validate_memory_policy(linux.memory_policy)
    if linux.personality is not None:
        pers = linux.personality
        if pers.domain not in PERSONALITY_DOMAINS:
            raise _fail("$.linux.personality.domain", f"unknown personality domain {pers.domain!r}")
        if pers.flags:
            warnings.append(
                f"$.linux.personality.flags: no personality flags are defined; ignoring {pers.flags!r}"
            )


def _check_ifname(name: str, where: str) -> None:
    if (
        not name
        or len(name.encode()) > 15
        or name in (".", "..")
        or any(c in name for c in "/: \t\n\x00")
    ):
        raise _fail(where, f"{name!r} is not a valid network interface name")


def _validate_sysctl(key: str, namespaces: dict[str, str | None]) -> None:
    where = _key("$.linux.sysctl", key)
    parts = re.split(r"[./]", key)
    if (
        not key
        or any(p in ("", ".", "..") or any(c.isspace() for c in p) for p in parts)
        or ("\x00" in key)
    ):
        raise _fail(where, f"sysctl key {key!r} is not well-formed")
    # runc accepts both the dotted form and the /proc/sys path form
    dotted = ".".join(parts) if "/" in key else key
    if dotted in _SYSCTL_IPC or dotted.startswith("fs.mqueue."):
        if "ipc" not in namespaces:
            raise _fail(where, f"sysctl {key!r} is not allowed in the host's ipc namespace")
        return
    if dotted.startswith("net."):
        if "network" not in namespaces:
            raise _fail(where, f"sysctl {key!r} is not allowed in the host's network namespace")
        return
    if "uts" in namespaces:
        if dotted == "kernel.domainname":
            return
        if dotted == "kernel.hostname":
            raise _fail(where, f"sysctl {key!r} is not allowed: it conflicts with $.hostname")
    raise _fail(where, f"sysctl {key!r} is not in a separate kernel namespace")


def _validate_resources(res: LinuxResources) -> None:
    base = "$.linux.resources"
    for i, rule in enumerate(res.devices or []):
        where = f"{base}.devices[{i}]"
        if rule.type not in (None, "", "a", "b", "c"):
            raise _fail(f"{where}.type", f"unknown device type {rule.type!r} (a, b or c)")
        access = rule.access or ""
        if any(c not in "rwm" for c in access) or len(set(access)) != len(access):
            raise _fail(f"{where}.access", f"invalid device access {access!r} (letters of 'rwm')")
    if res.cpu is not None:
        _check_cpu_list(res.cpu.cpus, f"{base}.cpu.cpus")
        _check_cpu_list(res.cpu.mems, f"{base}.cpu.mems")
    if res.block_io is not None:
        for i, wd in enumerate(res.block_io.weight_device or []):
            if wd.weight is None and wd.leaf_weight is None:
                raise _fail(
                    f"{base}.blockIO.weightDevice[{i}]", "needs at least one of weight, leafWeight"
                )
    for i, hp in enumerate(res.hugepage_limits or []):
        if not re.match(_PAGE_SIZE_RE, hp.page_size):
            raise _fail(
                f"{base}.hugepageLimits[{i}].pageSize",
                f"{hp.page_size!r} is not a page size like '2MB'",
            )
    for dev, rdma in (res.rdma or {}).items():
        if rdma.hca_handles is None and rdma.hca_objects is None:
            raise _fail(_key(f"{base}.rdma", dev), "needs at least one of hcaHandles, hcaObjects")
    for key in res.unified or {}:
        where = _key(f"{base}.unified", key)
        if "/" in key or key in (".", ".."):
            raise _fail(where, f"unified resource {key!r} must be a file name (no slashes)")
        controller, dot, rest = key.partition(".")
        if not dot or not controller or not rest:
            raise _fail(where, f"unified resource {key!r} must be of the form CONTROLLER.PARAMETER")


def _validate_seccomp(sc: LinuxSeccomp) -> None:
    base = "$.linux.seccomp"
    if sc.default_action not in SECCOMP_ACTIONS:
        raise _fail(f"{base}.defaultAction", f"unknown seccomp action {sc.default_action!r}")
    if sc.default_action == "SCMP_ACT_NOTIFY":
        raise _fail(f"{base}.defaultAction", "SCMP_ACT_NOTIFY cannot be used as default action")
    if sc.default_errno_ret is not None and sc.default_action not in (
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
    ):
        raise _fail(
            f"{base}.defaultErrnoRet",
            f"an errno return code needs SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {sc.default_action}",
        )
    for i, arch in enumerate(sc.architectures or []):
        if arch not in SECCOMP_ARCHES:
            raise _fail(f"{base}.architectures[{i}]", f"unknown seccomp architecture {arch!r}")
    for i, flag in enumerate(sc.flags or []):
        if flag not in SECCOMP_FLAGS:
            raise _fail(f"{base}.flags[{i}]", f"unknown seccomp flag {flag!r}")
    if sc.listener_metadata and not sc.listener_path:
        raise _fail(f"{base}.listenerMetadata", "listenerMetadata is set but listenerPath is not")
    for i, rule in enumerate(sc.syscalls or []):
        where = f"{base}.syscalls[{i}]"
        if rule.action not in SECCOMP_ACTIONS:
            raise _fail(f"{where}.action", f"unknown seccomp action {rule.action!r}")
        if not rule.names:
            raise _fail(f"{where}.names", "names must contain at least one syscall")
        for j, name in enumerate(rule.names):
            if not name:
                raise _fail(f"{where}.names[{j}]", "syscall name must not be empty")
        if rule.action == "SCMP_ACT_NOTIFY":
            if not sc.listener_path:
                raise _fail(
                    f"{where}.action", "SCMP_ACT_NOTIFY is used but listenerPath is not set"
                )
            if "write" in rule.names:
                raise _fail(
                    f"{where}.names", "SCMP_ACT_NOTIFY cannot be used for the write syscall"
                )
        if rule.errno_ret is not None and rule.action not in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            raise _fail(
                f"{where}.errnoRet",
                f"an errno return code needs SCMP_ACT_ERRNO or SCMP_ACT_TRACE, not {rule.action}",
            )
        for j, arg in enumerate(rule.args or []):
            if arg.index > 5:
                raise _fail(f"{where}.args[{j}].index", f"argument index {arg.index} is not 0..5")
            if arg.op not in SECCOMP_OPERATORS:
                raise _fail(f"{where}.args[{j}].op", f"unknown seccomp operator {arg.op!r}")


def _validate_intel_rdt(rdt: LinuxIntelRdt, warnings: list[str]) -> None:
    base = "$.linux.intelRdt"
    if (
        rdt.clos_id is not None
        and rdt.clos_id != "/"
        and ("/" in rdt.clos_id or rdt.clos_id in ("", ".", "..") or "\n" in rdt.clos_id)
    ):
        raise _fail(f"{base}.closID", f"invalid closID {rdt.clos_id!r}")
    if rdt.l3_cache_schema is not None:
        if "\n" in rdt.l3_cache_schema:
            raise _fail(f"{base}.l3CacheSchema", "must not contain newlines")
        if not rdt.l3_cache_schema.startswith("L3"):
            warnings.append(
                f"{base}.l3CacheSchema: {rdt.l3_cache_schema!r} should start with 'L3:'"
            )
    if rdt.mem_bw_schema is not None:
        if "\n" in rdt.mem_bw_schema:
            raise _fail(f"{base}.memBwSchema", "must not contain newlines")
        if not rdt.mem_bw_schema.startswith("MB:"):
            raise _fail(f"{base}.memBwSchema", f"{rdt.mem_bw_schema!r} must start with 'MB:'")
    for i, line in enumerate(rdt.schemata or []):
        if "\n" in line:
            raise _fail(f"{base}.schemata[{i}]", "must not contain newlines")


_MPOL_NO_NODES = ("MPOL_DEFAULT", "MPOL_LOCAL")
_MPOL_NEEDS_NODES = (
    "MPOL_BIND",
    "MPOL_INTERLEAVE",
    "MPOL_PREFERRED_MANY",
    "MPOL_WEIGHTED_INTERLEAVE",
)


def _validate_memory_policy(mp: LinuxMemoryPolicy) -> None:
    base = "$.linux.memoryPolicy"
    if mp.mode not in MEMORY_POLICY_MODES:
        raise _fail(f"{base}.mode", f"unknown memory policy mode {mp.mode!r}")
    for i, flag in enumerate(mp.flags or []):
        if flag not in MEMORY_POLICY_FLAGS:
            raise _fail(f"{base}.flags[{i}]", f"unknown memory policy flag {flag!r}")
    _check_cpu_list(mp.nodes, f"{base}.nodes")
    if mp.mode in _MPOL_NO_NODES and mp.nodes:
        raise _fail(f"{base}.nodes", f"{mp.mode} takes no nodes, got {mp.nodes!r}")
    if mp.mode in _MPOL_NEEDS_NODES and not mp.nodes:
        raise _fail(f"{base}.nodes", f"{mp.mode} needs at least one node")
