"""The v1 net_cls and net_prio controllers: tagging a cgroup's network traffic.

``linux.resources.network.classID`` goes to ``net_cls.classid``: every
packet the cgroup's sockets send carries that class id, which tc filters
(and iptables' ``cgroup`` match) can act on. ``priorities`` go to
``net_prio.ifpriomap``, one ``"<interface> <priority>"`` line per write:
the socket priority of the cgroup's traffic on that interface.

cgroup v2 has neither; its replacement is matching the cgroup path itself
(nftables ``socket cgroupv2``), so the v2 manager refuses these fields.
Many hosts (this project's machines included) do not mount these v1
hierarchies at all; asking for the fields there is a CgroupError.
"""

from __future__ import annotations

from bulkhead.cgroups.fs import Write
from bulkhead.cgroups.resources import PREFIX, NetworkResources, need_int
from bulkhead.errors import CgroupError

F = f"{PREFIX}.network"


def plan_net_cls(net: NetworkResources | None, d: str) -> list[Write]:
    """The write of ``classID`` to the v1 net_cls cgroup ``d``."""
    if net is None or not net.class_id:
        return []
    class_id = need_int(net.class_id, f"{F}.classID")
    if not 0 <= class_id < 2**32:
        raise CgroupError(f"{F}.classID: {class_id} is not a 32-bit class id")
    return [Write(f"{d}/net_cls.classid", str(class_id), f"{F}.classID")]


def plan_net_prio(net: NetworkResources | None, d: str) -> list[Write]:
    """The writes of ``priorities`` to the v1 net_prio cgroup ``d``."""
    if net is None or not net.priorities:
        return []
    writes: list[Write] = []
    for i, entry in enumerate(net.priorities):
        field = f"{F}.priorities[{i}]"
        name = entry.name
        if not isinstance(name, str) or not name or any(c.isspace() or c == "/" for c in name):
            raise CgroupError(f"{field}.name: {name!r} is not an interface name")
        prio = need_int(entry.priority, f"{field}.priority")
        if not 0 <= prio < 2**32:
            raise CgroupError(f"{field}.priority: {prio} is out of range")
        writes.append(Write(f"{d}/net_prio.ifpriomap", f"{name} {prio}", field))
    return writes
