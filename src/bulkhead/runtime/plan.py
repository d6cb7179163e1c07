"""Plans: everything a container's process must do, worked out before fork.

*Plan in the parent, execute in the child* (DESIGN.md). The runtime turns a
parsed ``config.json`` (and, for ``exec``, the command line) into the plain
data below *before* it forks. The forked children then only walk through the
plan making system calls: no parsing, no validation, no lookups that can fail
in interesting ways.

:class:`ProcessPlan`    the last steps of any container process (init or exec):
                        user, capabilities, rlimits, seccomp, cwd, argv, env
:class:`ContainerPlan`  what the init does before that: namespaces, id maps,
                        hostname, sysctls, the root filesystem
"""

from __future__ import annotations

import resource
from typing import TYPE_CHECKING, Any

import msgspec

from bulkhead.errors import SpecError
from bulkhead.linux.namespaces import NAMESPACES

if TYPE_CHECKING:
    from bulkhead.linux.capabilities import CapabilitySets
    from bulkhead.linux.seccomp import CompiledFilter
    from bulkhead.oci.runtime_spec import Process, Spec
    from bulkhead.runtime.rootfs import RootfsPlan

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

IdMap = list[tuple[int, int, int]]


class ProcessPlan(msgspec.Struct):
    """The last steps of a container process before it becomes the user's program."""

    args: list[str]
    env: list[str]
    cwd: str
    uid: int = 0
    gid: int = 0
    additional_gids: list[int] = []
    umask: int | None = None
    #: (resource number, soft, hard)
    rlimits: list[tuple[int, int, int]] = []
    capabilities: CapabilitySets | None = None
    no_new_privileges: bool = False
    seccomp: CompiledFilter | None = None
    apparmor_profile: str = ""
    selinux_label: str = ""
    oom_score_adj: int | None = None
    terminal: bool = False
    console_size: tuple[int, int] | None = None  # (height, width)
    #: ioPriority: (class name, priority)
    io_priority: tuple[str, int] | None = None
    scheduler: Any = None
    #: number of fds after stdio passed through (LISTEN_FDS)
    preserve_fds: int = 0

    @property
    def path_env(self) -> str:
        for entry in reversed(self.env):
            if entry.startswith("PATH="):
                return entry[5:]
        return DEFAULT_PATH


class ContainerPlan(msgspec.Struct):
    """What a container's init does, in order, from fork to exec."""

    process: ProcessPlan
    #: CLONE_* flags of the namespaces to create
    new_namespaces: int = 0
    #: (runtime-spec type, path) of namespaces to join, in join order
    join_namespaces: list[tuple[str, str]] = []
    uid_map: IdMap = []
    gid_map: IdMap = []
    #: clock name -> (seconds, nanoseconds)
    time_offsets: dict[str, tuple[int, int]] = {}
    hostname: str | None = None
    domainname: str | None = None
    sysctl: dict[str, str] = {}
    rootfs: RootfsPlan | None = None
    no_new_keyring: bool = False
    #: the session keyring the init joins (runc: ``_ses.<container id>``); None: anonymous
    keyring_name: str | None = None
    personality: str | None = None
    #: createContainer and startContainer hooks, run by the init itself
    create_container_hooks: list[Any] = []
    start_container_hooks: list[Any] = []
    #: the spec has hooks of any kind: the init stops for the parent's (prestart,
    #: createRuntime) once it is in its cgroup, before pivot_root. Without hooks it goes
    #: on and waits for its cgroup only just before it is ready (a *late placement*).
    hooks: bool = False

    def has_new(self, kind: str) -> bool:
        return bool(self.new_namespaces & NAMESPACES[kind][0])

    def joins(self, kind: str) -> bool:
        return any(k == kind for k, _ in self.join_namespaces)


_RLIMITS = {name: getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_")}


def rlimit_number(name: str, where: str) -> int:
    try:
        return int(_RLIMITS[name])
    except KeyError:
        raise SpecError(f"unknown rlimit type {name!r}", where=where) from None


def plan_process(proc: Process, *, where: str = "$.process") -> ProcessPlan:
    """Turn a runtime-spec ``process`` into a :class:`ProcessPlan` (parent side)."""
    from bulkhead.linux.capabilities import capability_sets_from_spec

    if not proc.args:
        raise SpecError("args must not be empty", where=f"{where}.args")
    user = proc.user
    rlimits = []
    for i, rl in enumerate(proc.rlimits or []):
        rlimits.append((rlimit_number(rl.type, f"{where}.rlimits[{i}].type"), rl.soft, rl.hard))
    caps = None
    if proc.capabilities is not None:
        c = proc.capabilities
        caps = capability_sets_from_spec(
            bounding=c.bounding or [],
            effective=c.effective or [],
            inheritable=c.inheritable or [],
            permitted=c.permitted or [],
            ambient=c.ambient or [],
        )
    console_size = None
    if proc.console_size is not None:
        console_size = (proc.console_size.height, proc.console_size.width)
    io_priority = None
    if proc.io_priority is not None:
        io_priority = (proc.io_priority.class_, proc.io_priority.priority)
    return ProcessPlan(
        args=list(proc.args),
        env=list(proc.env or []),
        cwd=proc.cwd or "/",
        uid=user.uid if user else 0,
        gid=user.gid if user else 0,
        additional_gids=list(user.additional_gids or []) if user else [],
        umask=user.umask if user else None,
        rlimits=rlimits,
        capabilities=caps,
        no_new_privileges=bool(proc.no_new_privileges),
        apparmor_profile=proc.apparmor_profile or "",
        selinux_label=proc.selinux_label or "",
        oom_score_adj=proc.oom_score_adj,
        terminal=bool(proc.terminal),
        console_size=console_size,
        io_priority=io_priority,
        scheduler=proc.scheduler,
    )


def id_map(mappings: list[Any] | None) -> IdMap:
    return [(m.container_id, m.host_id, m.size) for m in mappings or []]


def plan_namespaces(spec: Spec, plan: ContainerPlan) -> None:
    """Fill in which namespaces the init creates and which it joins."""
    linux = spec.linux
    if linux is None:
        return
    joins: dict[str, str] = {}
    for ns in linux.namespaces or []:
        if ns.path:
            joins[ns.type] = ns.path
        else:
            plan.new_namespaces |= NAMESPACES[ns.type][0]
    from bulkhead.linux.namespaces import JOIN_ORDER

    plan.join_namespaces = [(k, joins[k]) for k in JOIN_ORDER if k in joins]
    plan.uid_map = id_map(linux.uid_mappings)
    plan.gid_map = id_map(linux.gid_mappings)
    for clock, off in (linux.time_offsets or {}).items():
        plan.time_offsets[clock] = (off.secs or 0, off.nanosecs or 0)
