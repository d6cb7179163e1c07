"""``docker update``: new resource limits (and restart policy) for an existing container.

Vocabulary (Docker's ``POST /containers/{id}/update``):

*update request*
    Docker's ``ContainerUpdateRequest``: the resource fields of a
    ``HostConfig`` at the top level (``Memory``, ``MemoryReservation``,
    ``MemorySwap``, ``CpuShares``, ``CpuPeriod``, ``CpuQuota``,
    ``NanoCpus``, ``CpusetCpus``, ``CpusetMems``, ``PidsLimit``,
    ``BlkioWeight`` ...) plus ``RestartPolicy``. A field that is absent,
    null, zero or empty means *leave it as it is* (moby's
    ``UpdateContainer``); ``PidsLimit`` 0 or negative means *no limit*
    and ``MemorySwap`` -1 *unlimited swap*.
*merged HostConfig*
    the container's ``HostConfig`` with the request's non-zero fields laid
    over it. It is checked exactly as a create's is
    (:func:`bulkhead.engine.hostconfig.run_options`), so a bad value is the
    same 400 naming the same field, and turned into the OCI
    ``linux.resources`` by the same code as at create
    (:func:`bulkhead.engine.spec.update_resources`).
*applying*
    a running (or paused) container gets the merged resources through its
    OCI runtime's ``update`` (the cgroup is written all or nothing); the
    merged ``HostConfig`` is then stored (inspect shows it) and the bundle's
    ``config.json`` rewritten, so that the next start keeps the limits. A
    stopped container only gets the stored part, as with Docker.

:func:`plan_update` is the pure part (no container, no cgroup): the merge,
the checks and the resources. Conflicts with what the container already
has (``NanoCpus`` when ``CpuQuota`` is set, a memory limit above the
memory+swap limit, a restart policy on an AutoRemove container) are
:class:`UpdateConflict` (409), as in moby; bad values are 400.
"""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from bulkhead.engine.hostconfig import (
    RESTART_POLICIES,
    InvalidRequest,
    _get_int,
    _get_obj,
    _get_str,
    run_options,
)
from bulkhead.errors import WrongState

#: The integer resource fields ``docker update`` may change (``HostConfig`` names).
INT_FIELDS = (
    "Memory",
    "MemoryReservation",
    "MemorySwap",
    "CpuShares",
    "CpuPeriod",
    "CpuQuota",
    "NanoCpus",
    "BlkioWeight",
    "PidsLimit",
)
#: The string resource fields (cpuset lists such as ``0-1,3``).
STR_FIELDS = ("CpusetCpus", "CpusetMems")


class UpdateConflict(WrongState):
    """The update contradicts what the container already has (HTTP 409)."""


class UpdatePlan(msgspec.Struct, kw_only=True):
    """What an update does: the new ``HostConfig``, the resources, the warnings.

    ``resources`` is the OCI ``linux.resources`` (without device rules) that
    a running container's cgroup gets, None when the request changes no
    resource (only the restart policy). ``changed`` names the fields the
    request set (for the ``update`` event and the logs).
    """

    host_config: dict[str, Any]
    resources: dict[str, Any] | None
    warnings: list[str]
    changed: list[str]


def _conflict(container_id: str, message: str) -> UpdateConflict:
    return UpdateConflict(f"Cannot update container {container_id}: {message}")


def plan_update(
    container_id: str,
    config: dict[str, Any],
    host_config: dict[str, Any],
    body: Any,
) -> UpdatePlan:
    """Merge an update request into ``host_config`` and check it; see the module docstring."""
    if not isinstance(body, dict):
        raise InvalidRequest("a ContainerUpdateRequest object is required", "body")
    want: dict[str, Any] = {}
    for key in INT_FIELDS:
        value = _get_int(body, key, key)
        if value:
            want[key] = value
        elif key == "PidsLimit" and value is not None:
            want[key] = 0  # 0: "no limit" (Docker accepts 0 and -1 for it)
    for key in STR_FIELDS:
        text = _get_str(body, key, key)
        if text:
            want[key] = text
    if want.get("PidsLimit", 0) < 0:
        want["PidsLimit"] = 0
    restart = _get_obj(body, "RestartPolicy", "RestartPolicy")
    rname = _get_str(restart, "Name", "RestartPolicy.Name")
    retries = _get_int(restart, "MaximumRetryCount", "RestartPolicy.MaximumRetryCount") or 0

    current = host_config
    # moby: NanoCpus replaces CpuPeriod/CpuQuota (and back) only when the other is unset
    for new, old, new_name, old_name in (
        ("NanoCpus", "CpuPeriod", "Nano CPUs", "CPU Period"),
        ("NanoCpus", "CpuQuota", "Nano CPUs", "CPU Quota"),
        ("CpuPeriod", "NanoCpus", "CPU Period", "NanoCPUs"),
        ("CpuQuota", "NanoCpus", "CPU Quota", "NanoCPUs"),
    ):
        if want.get(new, 0) > 0 and int(current.get(old) or 0) > 0 and old not in want:
            raise _conflict(
                container_id,
                f"Conflicting options: {new_name} cannot be updated as {old_name} "
                "has already been set",
            )
    memory = int(current.get("Memory") or 0)
    swap = int(current.get("MemorySwap") or 0)
    if memory > 0 and swap == 0:
        swap = 2 * memory  # what the container got at create: Docker's default, stored
    if (
        want.get("Memory", 0) > 0
        and "MemorySwap" not in want
        and swap > 0
        and want["Memory"] > swap
    ):
        raise _conflict(
            container_id,
            "Memory limit should be smaller than already set memoryswap limit, "
            "update the memoryswap at the same time",
        )

    merged = copy.deepcopy(host_config)
    if "Memory" in want and memory > 0 and int(host_config.get("MemorySwap") or 0) == 0:
        merged["MemorySwap"] = swap  # pinned: a new Memory does not drag the swap along
    merged.update(want)
    if rname:
        if rname not in RESTART_POLICIES:
            raise InvalidRequest(f"invalid restart policy {rname!r}", "RestartPolicy.Name")
        if retries and rname != "on-failure":
            raise InvalidRequest(
                "maximum retry count can only be used with 'on-failure'",
                "RestartPolicy.MaximumRetryCount",
            )
        if retries < 0:
            raise InvalidRequest(
                "maximum retry count cannot be negative", "RestartPolicy.MaximumRetryCount"
            )
        if host_config.get("AutoRemove") and rname != "no":
            raise _conflict(
                container_id,
                "Restart policy cannot be updated because AutoRemove is enabled for the container",
            )
        merged["RestartPolicy"] = {"Name": rname, "MaximumRetryCount": retries}

    # the same checks and translation as a create's (field names as HostConfig.X)
    opts = run_options(config, merged, stat_devices=False)
    from bulkhead.engine.spec import update_resources

    resources: dict[str, Any] | None = None
    if want:
        resources = update_resources(opts)
        if want.get("PidsLimit") == 0:
            resources["pids"] = {"limit": -1}  # lift a limit the cgroup may have
    from bulkhead.engine.hostconfig import resource_warnings

    changed = sorted(want) + (["RestartPolicy"] if rname else [])
    return UpdatePlan(
        host_config=merged,
        resources=resources,
        warnings=resource_warnings(opts) if want else [],
        changed=changed,
    )


def merge_into_spec(spec: dict[str, Any], resources: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` with ``linux.resources`` replaced by ``resources`` (device rules kept)."""
    out = dict(spec)
    linux = dict(out.get("linux") or {})
    old = dict(linux.get("resources") or {})
    new = {k: v for k, v in old.items() if k == "devices" or k not in _RESOURCE_KEYS}
    new.update(resources)
    if new.get("pids", {}).get("limit") == -1:
        del new["pids"]  # no limit: what a fresh cgroup has anyway
    linux["resources"] = new
    out["linux"] = linux
    return out


#: The ``linux.resources`` sections an update owns (``devices`` and the rest stay).
_RESOURCE_KEYS = ("memory", "cpu", "pids", "blockIO")
