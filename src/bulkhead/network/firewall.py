"""bulkhead's nftables table: masquerade, published ports, isolation, internal networks.

Vocabulary
----------
*NAT* (network address translation) rewrites the addresses of a connection
once, on its first packet; the kernel's connection tracking (*conntrack*)
then rewrites every later packet of the connection, both ways.

- *Masquerade* is source NAT to the address of the interface a packet leaves
  by: a container's ``172.17.0.2`` becomes the host's address when the
  container talks to the world, and replies find their way back.
- *DNAT* (destination NAT) is how a *published port* works: a connection to
  the host's port 8080 is rewritten to go to ``172.17.0.2:80``. It happens in
  the ``prerouting`` hook for packets arriving from another interface, and in
  the ``output`` hook for connections the host itself makes (``curl
  127.0.0.1:8080``).
- *Isolation*: packets between two different bulkhead bridges are dropped
  (each user-defined network is its own island), and an *internal* network's
  bridge forwards nothing in or out: its containers talk only to each other.

One table of our own
--------------------
Everything lives in ``table inet bulkhead``: the ``inet`` family serves IPv4
and IPv6 at once, NAT chains included (Linux ≥ 5.2), so one table and one
transaction cover both families; nothing else on the host is touched, and
the table is deleted when no network needs it. The table is always written
whole, in one ``nft -j -f -`` transaction (``add table; delete table; add
table; ...chains and rules``: the add makes the delete safe when the table
does not exist yet), so no packet ever sees a half-written rule set, and what
is in the kernel is exactly what :func:`render` made of the declared
:class:`FirewallState`: there is no incremental bookkeeping to get out of
step after a crash.

Why published ports and a host firewall interact (Docker vs ufw/firewalld)
--------------------------------------------------------------------------
DNAT in ``prerouting`` runs before the routing decision, so a connection to
a published port is no longer *for the host*: it is *forwarded* to the
container. It never traverses the ``input`` hook, where ufw and firewalld put
their "deny port 8080" rules — that is how Docker "bypasses" them; and Docker
adds ``ACCEPT`` rules in iptables' ``FORWARD`` chain, the very chain where ufw
would otherwise drop forwarded traffic. bulkhead's ``forward`` chain never
accepts: it only drops (isolation, internal networks, direct routed access to
unpublished container ports). In nftables every base chain on a hook is
evaluated, an ``accept`` in one chain does not stop another table's chain, and
a ``drop`` anywhere is final: a host firewall that drops forwarded traffic
keeps doing so for published ports, and the user allows them there (e.g.
``ufw route allow proto tcp to 172.17.0.2 port 80`` or an nft rule on
``ct original proto-dst 8080``). The README's "Networking and your firewall"
says this for users.

Published ports from the host itself
------------------------------------
``127.0.0.1:8080`` is DNATed in the ``output`` hook. Linux drops packets with a
loopback source that leave by a real interface unless ``route_localnet`` is set
on that interface; as podman (netavark) and Docker without its proxy do,
bulkhead sets ``net.ipv4.conf.<bridge>.route_localnet=1`` on each bridge with
a published port (and 0 on the others: :func:`sysctls` follows the state) and
masquerades DNATed ``127.0.0.0/8``-sourced packets going into the bridge, so
the container answers the bridge's address. DNAT keeps the client's address
(for every client but loopback ones), which a userland proxy (docker-proxy)
hides from the container. IPv6 has no ``route_localnet``: connections to
``[::1]`` are left alone here (an IPv6 published port matches every local
address but ``::1``), and the daemon's userland proxy
(:mod:`bulkhead.network.proxy`) serves them, as it serves the host's IPv6
addresses for a container that has no IPv6 address (NAT cannot change the
family).

The loopback guard (CVE-2020-8558)
----------------------------------
``route_localnet`` cuts both ways: packets *arriving* on the bridge with a
``127.0.0.0/8`` destination are no longer martians either, so a container
(or anything plugged into the bridge) that routes 127.0.0.1 via the gateway
reaches the services the host bound to 127.0.0.1 only — kube-proxy's
CVE-2020-8558 (kubelet answered it with a filter rule dropping such packets
that are not part of a connection). Independently of ``route_localnet``, a
port published on ``127.0.0.1`` is DNATed in ``prerouting``, before the
routing decision that would drop the loopback destination, so a neighbour
on any interface that routes 127.0.0.1 to the host reached it (moby#41872).
The ``guard`` chain (filter, ``prerouting``, priority -150: after conntrack,
before ``dstnat``) drops every packet that arrives by an interface other than
``lo`` with a ``127.0.0.0/8`` destination, or source: with ``route_localnet``
a container could also send as ``127.0.0.2`` (no address of the host's, so
not refused as one) to a host service that trusts its loopback. At that
priority a packet still carries the addresses it had on the wire: the
container's answer to the host's ``127.0.0.1:8080`` (masqueraded above) is
addressed to the bridge's address and passes; the NAT that turns it back
into ``127.0.0.1`` comes later. Nothing legitimate carries a loopback address
on a wire (RFC 1122), so the guard covers every interface, not only
bulkhead's bridges (a bridge being removed, or one whose ``route_localnet``
outlived its ports, included). IPv6 needs none: the kernel drops ``::1``
arriving by a real interface before any hook.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
from typing import Any

import msgspec

from bulkhead.errors import BulkheadError

#: The one table bulkhead owns (family ``inet``: IPv4 and IPv6).
TABLE = "bulkhead"
FAMILY = "inet"

#: Chain priorities (nft's named ones): ``dstnat`` -100, ``filter`` 0, ``srcnat`` 100.
#: The guard runs after conntrack (-200) and before ``dstnat``: it sees a packet's
#: destination as it arrived (see "The loopback guard").
PRIO_GUARD = -150
PRIO_DSTNAT = -100
PRIO_FILTER = 0
PRIO_SRCNAT = 100

PROTOCOLS = ("tcp", "udp", "sctp")


class FirewallError(BulkheadError):
    """``nft`` refused bulkhead's rule set (or is missing)."""


class NetworkRules(msgspec.Struct, frozen=True):
    """What the firewall needs to know of one bridge network."""

    bridge: str
    #: CIDRs, IPv4 and/or IPv6 (``172.18.0.0/16``, ``fd12:3456::/64``).
    subnets: tuple[str, ...] = ()
    #: ``--internal``: nothing forwarded in or out of the bridge, no masquerade.
    internal: bool = False
    #: Docker's ``com.docker.network.bridge.enable_ip_masquerade`` (default on).
    masquerade: bool = True


class PortRule(msgspec.Struct, frozen=True):
    """One published port: ``host_ip:host_port/proto`` → ``container_ip:container_port``.

    Ranges are expanded by the caller (``-p 8000-8001:80-81`` is two rules).
    ``host_ip`` ``""`` (or ``0.0.0.0``/``::``) means every local address of the
    container address's family.
    """

    proto: str
    host_ip: str
    host_port: int
    container_ip: str
    container_port: int
    bridge: str


class FirewallState(msgspec.Struct, frozen=True):
    """The whole declared state: the table is rendered from this alone."""

    networks: tuple[NetworkRules, ...] = ()
    ports: tuple[PortRule, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.networks and not self.ports


# --- rendering: nft JSON ------------------------------------------------------------


def _meta(key: str, op: str, right: Any) -> dict[str, Any]:
    return {"match": {"op": op, "left": {"meta": {"key": key}}, "right": right}}


def _payload(proto: str, field: str, op: str, right: Any) -> dict[str, Any]:
    return {
        "match": {
            "op": op,
            "left": {"payload": {"protocol": proto, "field": field}},
            "right": right,
        }
    }


def _prefix(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> dict[str, Any]:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _ct(key: str, op: str, right: str) -> dict[str, Any]:
    return {"match": {"op": op, "left": {"ct": {"key": key}}, "right": right}}


def _chain(name: str, **base: Any) -> dict[str, Any]:
    chain: dict[str, Any] = {"family": FAMILY, "table": TABLE, "name": name}
    chain.update(base)
    return {"add": {"chain": chain}}


def _rule(chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": list(expr)}}}


_DROP: dict[str, Any] = {"drop": None}
_MASQ: dict[str, Any] = {"masquerade": None}


def _port_rule(p: PortRule) -> dict[str, Any]:
    if p.proto not in PROTOCOLS:
        raise FirewallError(f"invalid protocol {p.proto!r} for published port {p.host_port}")
    cip = ipaddress.ip_address(p.container_ip)
    fam, nfproto = ("ip", "ipv4") if cip.version == 4 else ("ip6", "ipv6")
    expr: list[dict[str, Any]] = []
    hip = ipaddress.ip_address(p.host_ip) if p.host_ip else None
    if hip is not None and hip.version != cip.version:
        raise FirewallError(
            f"host address {p.host_ip} and container address {cip} differ in family"
        )
    if (hip is None or hip.is_unspecified) and cip.version == 6:
        # every local address but [::1]: the userland proxy's (a ::1 source may not
        # leave by the bridge); the ip6 match implies nfproto ipv6
        expr.append(_payload(fam, "daddr", "!=", "::1"))
    elif hip is None or hip.is_unspecified:
        expr.append(_meta("nfproto", "==", nfproto))
    else:
        expr.append(_payload(fam, "daddr", "==", str(hip)))
    expr.append(_meta("l4proto", "==", p.proto))
    expr.append(_payload("th", "dport", "==", p.host_port))
    expr.append({"dnat": {"family": fam, "addr": str(cip), "port": p.container_port}})
    return _rule("published", *expr)


def render(state: FirewallState) -> list[dict[str, Any]]:
    """The nft JSON commands that replace bulkhead's table with ``state`` (one transaction).

    An empty state renders to the deletion of the table.
    """
    table = {"table": {"family": FAMILY, "name": TABLE}}
    cmds: list[dict[str, Any]] = [{"add": table}, {"delete": table}]
    if state.empty:
        return cmds
    cmds.append({"add": table})
    cmds += [
        _chain("published"),
        _chain("guard", type="filter", hook="prerouting", prio=PRIO_GUARD, policy="accept"),
        _chain("prerouting", type="nat", hook="prerouting", prio=PRIO_DSTNAT, policy="accept"),
        _chain("output", type="nat", hook="output", prio=PRIO_DSTNAT, policy="accept"),
        _chain("postrouting", type="nat", hook="postrouting", prio=PRIO_SRCNAT, policy="accept"),
        _chain("forward", type="filter", hook="forward", prio=PRIO_FILTER, policy="accept"),
    ]
    local = {
        "match": {
            "op": "==",
            "left": {"fib": {"result": "type", "flags": ["daddr"]}},
            "right": "local",
        }
    }
    jump = {"jump": {"target": "published"}}
    # the loopback guard (CVE-2020-8558): 127.0.0.0/8 never arrives by a real interface
    loopnet = _prefix(ipaddress.ip_network("127.0.0.0/8"))
    for field in ("daddr", "saddr"):
        cmds.append(
            _rule(
                "guard", _meta("iifname", "!=", "lo"), _payload("ip", field, "==", loopnet), _DROP
            )
        )
    cmds.append(_rule("prerouting", local, jump))
    cmds.append(_rule("output", local, jump))
    cmds += [_port_rule(p) for p in state.ports]

    bridges = sorted({n.bridge for n in state.networks})
    published_bridges = sorted({p.bridge for p in state.ports})
    for n in state.networks:
        br = n.bridge
        others = [b for b in bridges if b != br]
        if n.internal:
            # an internal network: its bridge forwards only to itself
            cmds.append(
                _rule("forward", _meta("iifname", "==", br), _meta("oifname", "!=", br), _DROP)
            )
            cmds.append(
                _rule("forward", _meta("oifname", "==", br), _meta("iifname", "!=", br), _DROP)
            )
            continue
        if others:
            # isolation: nothing from this bridge into another one, published ports excepted
            # (Docker's proxy serves a published port to every network)
            cmds.append(
                _rule(
                    "forward",
                    _meta("iifname", "==", br),
                    _meta("oifname", "==", {"set": others} if len(others) > 1 else others[0]),
                    _ct("status", "!", "dnat"),
                    _DROP,
                )
            )
        # routed access from outside reaches only published ports (new connections that
        # were DNATed) and the answers to the containers' own connections (not new)...
        cmds.append(
            _rule(
                "forward",
                _meta("oifname", "==", br),
                _meta("iifname", "!=", br),
                _ct("state", "in", "new"),
                _ct("status", "!", "dnat"),
                _DROP,
            )
        )
        # ... and nothing conntrack does not follow: a packet a host firewall exempts
        # (notrack) or finds invalid has no connection, so no "ct status" to test (that
        # match never applies to it) and is no answer to anything (Docker drops it too)
        cmds.append(
            _rule(
                "forward",
                _meta("oifname", "==", br),
                _meta("iifname", "!=", br),
                {
                    "match": {
                        "op": "in",
                        "left": {"ct": {"key": "state"}},
                        "right": ["invalid", "untracked"],
                    }
                },
                _DROP,
            )
        )
        for cidr in n.subnets:
            net = ipaddress.ip_network(cidr, strict=False)
            fam = "ip" if net.version == 4 else "ip6"
            saddr = _payload(fam, "saddr", "==", _prefix(net))
            # hairpin: a container reaching a published port of its own bridge by the host's
            # address; unmasqueraded, the answer would go straight back over the bridge
            # with the container's address and not be recognised (postrouting knows no
            # input interface: the source subnet says where the packet came from)
            cmds.append(
                _rule(
                    "postrouting",
                    _meta("oifname", "==", br),
                    saddr,
                    _ct("status", "in", "dnat"),
                    _MASQ,
                )
            )
            if n.masquerade:
                cmds.append(_rule("postrouting", saddr, _meta("oifname", "!=", br), _MASQ))
    for br in published_bridges:
        # the host's own 127.0.0.1:port → container: the container must answer the bridge
        cmds.append(
            _rule(
                "postrouting",
                _meta("oifname", "==", br),
                _ct("status", "in", "dnat"),
                _payload("ip", "saddr", "==", _prefix(ipaddress.ip_network("127.0.0.0/8"))),
                _MASQ,
            )
        )
    return cmds


def sysctls(state: FirewallState) -> dict[str, str]:
    """The ``/proc/sys`` settings the rules need (paths relative to ``/proc/sys``)."""
    out: dict[str, str] = {}
    outside = [n for n in state.networks if not n.internal]
    if outside or state.ports:
        out["net/ipv4/ip_forward"] = "1"
    if any(":" in s for n in outside for s in n.subnets):
        out["net/ipv6/conf/all/forwarding"] = "1"
    published = {p.bridge for p in state.ports}
    # route_localnet only where a port needs it, and off again when the last one goes
    for br in sorted(published | {n.bridge for n in state.networks}):
        out[f"net/ipv4/conf/{br}/route_localnet"] = "1" if br in published else "0"
    return out


# --- applying ----------------------------------------------------------------------------


def apply(state: FirewallState, *, nft: str = "nft", proc_sys: str = "/proc/sys") -> None:
    """Make the kernel's table exactly ``state`` (or delete it when empty), atomically.

    Runs in the calling process's network namespace: the daemon's (a test's
    daemon runs inside the test's own namespace). Refuses, before touching
    anything, in the namespace ``BULKHEAD_FORBID_NETNS`` names by inode (the
    test suite's own, the host's).
    """
    forbidden = os.environ.get("BULKHEAD_FORBID_NETNS", "")
    if forbidden.isdigit() and os.stat("/proc/thread-self/ns/net").st_ino == int(forbidden):
        raise FirewallError(
            "refusing to change the firewall of the host's network namespace "
            "(BULKHEAD_FORBID_NETNS): run the daemon in a namespace of its own"
        )
    # the rules first, the sysctls after: forwarding is switched on only once the
    # forward chain's drops are in place, route_localnet only once the guard is; a
    # state nft refuses (or render rejects) changes nothing at all
    doc = json.dumps({"nftables": render(state)})
    try:
        r = subprocess.run(
            [nft, "-j", "-f", "-"], input=doc.encode(), capture_output=True, check=False
        )
    except OSError as exc:
        raise FirewallError(f"cannot run {nft}: {exc}") from None
    if r.returncode != 0:
        raise FirewallError(
            f"nft refused bulkhead's rules: {r.stderr.decode(errors='replace').strip()}"
        )
    for path, value in sysctls(state).items():
        _write_sysctl(os.path.join(proc_sys, path), value)


def _write_sysctl(path: str, value: str) -> None:
    try:
        with open(path) as f:
            if f.read().strip() == value:
                return
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        # an interface that is gone (a bridge removed concurrently): nothing to set
        if "/conf/" not in path:
            raise FirewallError(f"cannot set {path}: no such sysctl") from None
    except OSError as exc:
        raise FirewallError(f"cannot set {path}: {exc}") from None


def table_exists(*, nft: str = "nft") -> bool:
    """Whether ``table inet bulkhead`` is in the kernel (of this namespace)."""
    r = subprocess.run([nft, "-j", "list", "tables", FAMILY], capture_output=True, check=False)
    if r.returncode != 0:
        return False
    doc = json.loads(r.stdout or b"{}")
    return any(item.get("table", {}).get("name") == TABLE for item in doc.get("nftables", []))
