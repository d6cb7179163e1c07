"""Docker's resolver address, ``127.0.0.11``, inside a container on a user network.

A container on a user-defined network finds the embedded DNS resolver at
``nameserver 127.0.0.11`` in its resolv.conf, as in Docker. The resolver
itself (:mod:`bulkhead.network.dns`) listens once per network, on the
network's gateway address in the daemon's namespace; what connects the two is
a *redirect*: a small nftables table inside the container's own network
namespace.

Vocabulary:

*redirect table*
    ``table ip bulkhead_dns`` in the container's namespace (the container's
    own firewall, not the host's: nothing outside the container changes). It
    holds three base chains:

    - ``output`` (nat, priority -100): a query to ``127.0.0.11`` port 53, UDP
      or TCP, is DNATed to ``<gateway>:53``, the resolver of the container's
      first user network;
    - ``postrouting`` (nat, priority 100): such a query now leaves by the
      container's interface with a loopback source, so it is masqueraded to
      the container's own address on that network. That is also how the
      resolver tells which container asks (its *scope*);
    - ``guard`` (filter, prerouting, priority -150): a packet arriving from
      outside with a ``127.0.0.0/8`` destination is dropped (see below).

*route_localnet*
    Linux drops packets with a loopback address that leave or arrive by a
    real interface, unless ``net.ipv4.conf.<dev>.route_localnet`` is set;
    the redirect sets it (``all``) in the container's namespace. The answers
    come back to the container's address and are turned back into
    ``127.0.0.11 → 127.0.0.1`` by connection tracking before routing. The
    setting alone would also let a neighbour on the bridge send packets to
    the container's ``127.0.0.1`` services (CVE-2020-8558); the ``guard``
    chain drops those, ahead of the NAT that restores legitimate answers
    (they still carry the container's address at priority -150).

Docker binds a resolver socket inside every container's namespace instead,
and redirects port 53 to it; bulkhead keeps one listener per network and
redirects to it, which costs one ``nft`` run (~5 ms) per container start on
a user network and nothing in the daemon per container. The rules live and
die with the namespace: nothing to remove, and a daemon restart finds them
in place.

The table is written whole in one ``nft -j -f -`` transaction, run from a
thread that has entered the container's namespace (:func:`netns.run_in`;
the ``nft`` child inherits that thread's namespace): ``add table; flush
table`` then the chains (``add`` keeps an existing one) and the rules. Not
``delete table``, as the host's table is rewritten: a table deletion waits
for an RCU grace period, which made the set-up in a new namespace cost
~18 ms instead of ~5.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from bulkhead.errors import BulkheadError
from bulkhead.network import netns

#: The address Docker's containers know their resolver by.
RESOLVER_ADDRESS = "127.0.0.11"
TABLE = "bulkhead_dns"
FAMILY = "ip"
DNS_PORT = 53
LOOPBACK_NET = {"prefix": {"addr": "127.0.0.0", "len": 8}}


class RedirectError(BulkheadError):
    """The redirect could not be set up in the container's namespace."""


def _match(left: dict[str, Any], op: str, right: Any) -> dict[str, Any]:
    return {"match": {"op": op, "left": left, "right": right}}


def _rule(chain: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"add": {"rule": {"family": FAMILY, "table": TABLE, "chain": chain, "expr": list(expr)}}}


def _chain(name: str, kind: str, hook: str, prio: int) -> dict[str, Any]:
    return {
        "add": {
            "chain": {
                "family": FAMILY,
                "table": TABLE,
                "name": name,
                "type": kind,
                "hook": hook,
                "prio": prio,
                "policy": "accept",
            }
        }
    }


def render(gateway: str, port: int = DNS_PORT) -> list[dict[str, Any]]:
    """The nft JSON commands that (re)write the redirect table to ``gateway:port``."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    daddr = {"payload": {"protocol": "ip", "field": "daddr"}}
    saddr = {"payload": {"protocol": "ip", "field": "saddr"}}
    not_lo = [
        _match({"meta": {"key": "iifname"}}, "!=", "lo"),
        _match({"meta": {"key": "oifname"}}, "!=", "lo"),
    ]
    cmds: list[dict[str, Any]] = [
        {"add": table},
        {"flush": table},
        _chain("output", "nat", "output", -100),
        _chain("postrouting", "nat", "postrouting", 100),
        _chain("guard", "filter", "prerouting", -150),
    ]
    for proto in ("udp", "tcp"):
        cmds.append(
            _rule(
                "output",
                _match(daddr, "==", RESOLVER_ADDRESS),
                _match({"payload": {"protocol": proto, "field": "dport"}}, "==", DNS_PORT),
                {"dnat": {"family": "ip", "addr": gateway, "port": port}},
            )
        )
    cmds.append(
        _rule(
            "postrouting",
            not_lo[1],
            _match(saddr, "==", LOOPBACK_NET),
            _match({"ct": {"key": "status"}}, "in", "dnat"),
            {"masquerade": None},
        )
    )
    cmds.append(_rule("guard", not_lo[0], _match(daddr, "==", LOOPBACK_NET), {"drop": None}))
    return cmds


def install(ns_path: str, gateway: str, *, port: int = DNS_PORT, nft: str = "nft") -> None:
    """Point ``127.0.0.11:53`` of the namespace at ``ns_path`` to ``gateway:port``."""
    doc = json.dumps({"nftables": render(gateway, port)}).encode()

    def inside() -> subprocess.CompletedProcess[bytes]:
        with open("/proc/sys/net/ipv4/conf/all/route_localnet", "w") as f:
            f.write("1")
        return subprocess.run([nft, "-j", "-f", "-"], input=doc, capture_output=True, check=False)

    try:
        r = netns.run_in(ns_path, inside)
    except OSError as exc:
        raise RedirectError(f"cannot redirect {RESOLVER_ADDRESS} in {ns_path}: {exc}") from None
    if r.returncode != 0:
        raise RedirectError(
            f"nft refused the {RESOLVER_ADDRESS} redirect in {ns_path}: "
            f"{r.stderr.decode(errors='replace').strip()}"
        )
