"""bulkhead's nftables table, applied in a namespace of the test's own (no engine involved).

The topology, every piece in a ``bh-t-*`` network namespace removed afterwards::

    out (10.250.0.2) ── veth ── host (10.250.0.1)   ← the "daemon's" namespace: rules here
                                 ├── br-a 172.30.1.1 ── c1 172.30.1.2, c4 172.30.1.3
                                 ├── br-b 172.30.2.1 ── c2 172.30.2.2
                                 └── br-i 172.30.3.1 ── c3 172.30.3.2   (internal)

Servers (python sockets via ``nsenter``) answer each connection with the
peer address they saw, so a test checks both reachability and NAT. A refused
reach is a drop: the client's connect times out (1 s).

The last test runs the daemon itself (``ndaemon``: in a namespace of the
test's own) and attacks its default bridge from one more namespace.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from tests.integration.engine_fixtures import Daemon, delete_netns, make_netns

from bulkhead.network.firewall import FirewallState, NetworkRules, PortRule

PY = sys.executable

SERVER = r"""
import socket, sys, select
socks = []
for spec in sys.argv[1:]:
    proto, *addr, port = spec.split(":")  # tcp:80, udp:53, tcp:127.0.0.1:7000, tcp6:80
    addr = addr[0] if addr else "0.0.0.0"
    if proto == "tcp6":
        s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::", int(port))); s.listen(16)
    elif proto == "tcp":
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, int(port))); s.listen(16)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, int(port)))
    socks.append((proto, s))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s for _, s in socks], [], [])
    for proto, s in socks:
        if s not in r:
            continue
        if proto.startswith("tcp"):
            c, peer = s.accept(); c.sendall(("peer=%s" % peer[0]).encode()); c.close()
        else:
            data, peer = s.recvfrom(100); s.sendto(("peer=%s" % peer[0]).encode(), peer)
"""

CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=1.0)
        print(s.recv(100).decode())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1.0)
        s.sendto(b"x", (host, port)); print(s.recv(100).decode())
except OSError as e:
    print("error=%s" % type(e).__name__)
"""

FETCH = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
print(data.decode(errors="replace").rpartition("\r\n\r\n")[2])
"""

HTTPD = "mkdir -p /www && echo hello-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www"

APPLY = r"""
import sys, msgspec
from bulkhead.network import firewall
firewall.apply(msgspec.json.decode(sys.stdin.buffer.read(), type=firewall.FirewallState))
"""


class Topology:
    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:6]
        self.ns = {k: f"bh-t-{tag}-{k}" for k in ("host", "out", "c1", "c2", "c3", "c4")}
        self.servers: list[subprocess.Popen[bytes]] = []

    def run(self, where: str, *args: str, input: bytes | None = None, check: bool = True) -> str:
        r = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.ns[where]}", *args],
            input=input,
            capture_output=True,
            check=False,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"{args} in {where}: {r.stderr.decode()}")
        return r.stdout.decode().strip()

    def ip(self, where: str, *args: str) -> None:
        self.run(where, "ip", *args)

    def build(self) -> None:
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "add", name], check=True)
        for where in self.ns:
            self.ip(where, "link", "set", "lo", "up")
        self.ip("host", "link", "add", "vout", "type", "veth", "peer", "name", "eth0")
        self.ip("host", "link", "set", "eth0", "netns", self.ns["out"])
        self.ip("host", "addr", "add", "10.250.0.1/24", "dev", "vout")
        self.ip("host", "link", "set", "vout", "up")
        self.ip("out", "addr", "add", "10.250.0.2/24", "dev", "eth0")
        self.ip("out", "link", "set", "eth0", "up")
        for br, net in (("br-a", 1), ("br-b", 2), ("br-i", 3)):
            self.ip("host", "link", "add", br, "type", "bridge")
            self.ip("host", "addr", "add", f"172.30.{net}.1/24", "dev", br)
            self.ip("host", "link", "set", br, "up")
        for c, br, addr in (
            ("c1", "br-a", "172.30.1.2"),
            ("c4", "br-a", "172.30.1.3"),
            ("c2", "br-b", "172.30.2.2"),
            ("c3", "br-i", "172.30.3.2"),
        ):
            self.ip("host", "link", "add", f"v{c}", "type", "veth", "peer", "name", "eth0")
            self.ip("host", "link", "set", "eth0", "netns", self.ns[c])
            self.ip("host", "link", "set", f"v{c}", "master", br)
            self.ip("host", "link", "set", f"v{c}", "up")
            # hairpin: the bridge may send a frame back out of the port it came in by
            # (a container reaching its own published port), as Docker and podman set it
            self.ip("host", "link", "set", f"v{c}", "type", "bridge_slave", "hairpin", "on")
            self.ip(c, "addr", "add", f"{addr}/24", "dev", "eth0")
            self.ip(c, "link", "set", "eth0", "up")
            self.ip(c, "route", "add", "default", "via", addr.rsplit(".", 1)[0] + ".1")

    def serve(self, where: str, *specs: str) -> None:
        p = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns[where]}", PY, "-c", SERVER, *specs],
            stdout=subprocess.PIPE,
        )
        self.servers.append(p)
        assert p.stdout is not None
        assert p.stdout.readline().strip() == b"ready"

    def reach(self, where: str, host: str, port: int, proto: str = "tcp") -> str:
        return self.run(where, PY, "-c", CLIENT, proto, host, str(port))

    def apply(self, state: FirewallState) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.ns['host']}", PY, "-c", APPLY],
            input=msgspec.json.encode(state),
            capture_output=True,
            check=False,
        )

    def tables(self) -> list[str]:
        doc = json.loads(self.run("host", "nft", "-j", "list", "tables"))
        return [
            f"{t['table']['family']} {t['table']['name']}" for t in doc["nftables"] if "table" in t
        ]

    def teardown(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait()
        for name in self.ns.values():
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


@pytest.fixture
def topo() -> Iterator[Topology]:
    t = Topology()
    try:
        t.build()
        t.serve("c1", "tcp:80", "tcp:81", "udp:53")
        t.serve("out", "tcp:9000", "udp:9000")
        yield t
    finally:
        t.teardown()


NETS = (
    NetworkRules(bridge="br-a", subnets=("172.30.1.0/24",)),
    NetworkRules(bridge="br-b", subnets=("172.30.2.0/24",)),
    NetworkRules(bridge="br-i", subnets=("172.30.3.0/24",), internal=True),
)
PORTS = (
    PortRule("tcp", "", 8080, "172.30.1.2", 80, "br-a"),
    PortRule("udp", "", 8053, "172.30.1.2", 53, "br-a"),
    PortRule("tcp", "127.0.0.1", 8081, "172.30.1.2", 81, "br-a"),
)


def test_firewall_nat_isolation_internal(topo: Topology) -> None:
    r = topo.apply(FirewallState(networks=NETS, ports=PORTS))
    assert r.returncode == 0, r.stderr.decode()
    assert topo.tables() == ["inet bulkhead"]
    assert topo.run("host", "cat", "/proc/sys/net/ipv4/conf/br-a/route_localnet") == "1"

    # masquerade: the outside sees the host's address, not the container's
    assert topo.reach("c1", "10.250.0.2", 9000) == "peer=10.250.0.1"
    assert topo.reach("c1", "10.250.0.2", 9000, "udp") == "peer=10.250.0.1"
    # an internal network reaches nothing outside its bridge (even with a route)
    assert topo.reach("c3", "10.250.0.2", 9000).startswith("error=")
    assert topo.reach("c3", "172.30.1.2", 80).startswith("error=")
    assert topo.reach("c1", "172.30.3.2", 80).startswith("error=")
    # isolation: two networks do not reach each other
    assert topo.reach("c2", "172.30.1.2", 80).startswith("error=")

    # published ports: from another namespace (client address kept), udp too
    assert topo.reach("out", "10.250.0.1", 8080) == "peer=10.250.0.2"
    assert topo.reach("out", "10.250.0.1", 8053, "udp") == "peer=10.250.0.2"
    # from the host itself: its own addresses and 127.0.0.1 (route_localnet + masquerade)
    assert topo.reach("host", "10.250.0.1", 8080) == "peer=10.250.0.1"
    assert topo.reach("host", "127.0.0.1", 8080) == "peer=172.30.1.1"
    assert topo.reach("host", "127.0.0.1", 8053, "udp") == "peer=172.30.1.1"
    # a port bound to 127.0.0.1 only: the host yes, the outside no
    assert topo.reach("host", "127.0.0.1", 8081) == "peer=172.30.1.1"
    assert topo.reach("out", "10.250.0.1", 8081).startswith("error=")
    # hairpin: a container of the same bridge, and the container itself, by the host's address
    assert topo.reach("c4", "10.250.0.1", 8080) == "peer=172.30.1.1"
    assert topo.reach("c1", "10.250.0.1", 8080) == "peer=172.30.1.1"
    # a published port serves other networks too (as Docker's proxy does)
    assert topo.reach("c2", "10.250.0.1", 8080) == "peer=172.30.1.1"
    # same bridge: direct
    assert topo.reach("c4", "172.30.1.2", 81) == "peer=172.30.1.3"

    # routed access from outside reaches only what is published
    topo.ip("out", "route", "add", "172.30.0.0/16", "via", "10.250.0.1")
    assert topo.reach("out", "172.30.1.2", 81).startswith("error=")
    assert topo.reach("out", "172.30.1.2", 80).startswith("error=")
    assert topo.reach("out", "10.250.0.1", 8080) == "peer=10.250.0.2"


def test_firewall_host_firewall_is_not_bypassed(topo: Topology) -> None:
    assert topo.apply(FirewallState(networks=NETS, ports=PORTS)).returncode == 0
    assert topo.reach("out", "10.250.0.1", 8080) == "peer=10.250.0.2"
    # a host firewall (another table) that drops forwarded traffic to port 80 of containers,
    # whatever bulkhead's chain says: published ports obey it
    topo.run(
        "host",
        "nft",
        "-f",
        "-",
        input=b"table inet hostfw { chain hostforward { type filter hook forward priority 10; "
        b"policy accept; meta l4proto tcp ct original proto-dst 8080 drop; }\n}\n",
    )
    assert topo.reach("out", "10.250.0.1", 8080).startswith("error=")
    # ... also after bulkhead rewrites its table (its chains never accept)
    assert topo.apply(FirewallState(networks=NETS, ports=PORTS)).returncode == 0
    assert topo.reach("out", "10.250.0.1", 8080).startswith("error=")
    assert sorted(topo.tables()) == ["inet bulkhead", "inet hostfw"]
    # bulkhead's rewrite did not touch the other table
    assert "proto-dst 8080 drop" in topo.run("host", "nft", "list", "table", "inet", "hostfw")


def test_firewall_routed_access_untracked_by_the_host(topo: Topology) -> None:
    """A host firewall that exempts traffic from conntrack (a DNS server's ``notrack``) opens no
    unpublished container port: only established/related or DNATed traffic enters a bridge."""
    assert topo.apply(FirewallState(networks=NETS, ports=PORTS)).returncode == 0
    topo.run(
        "host",
        "nft",
        "-f",
        "-",
        input=b"table inet hostraw { chain pre { type filter hook prerouting priority raw; "
        b"policy accept; udp dport { 53, 7001 } notrack; }\n}\n",
    )
    topo.ip("out", "route", "add", "172.30.0.0/16", "via", "10.250.0.1")
    assert topo.reach("out", "172.30.1.2", 53, "udp").startswith("error=")
    # nor does it cross networks (isolation) or leave an internal one
    assert spoofed_datagram_seen(topo, "c2", "172.30.2.2", "172.30.1.2", "c1") == "nothing"
    assert spoofed_datagram_seen(topo, "c3", "172.30.3.2", "172.30.1.2", "c1") == "nothing"
    assert spoofed_datagram_seen(topo, "c4", "172.30.1.3", "172.30.1.2", "c1") == "peer=172.30.1.3"
    # the container's own connections still get their answers, the published port its clients
    assert topo.reach("c1", "10.250.0.2", 9000, "udp") == "peer=10.250.0.1"
    assert topo.reach("out", "10.250.0.1", 8053, "udp") == "peer=10.250.0.2"


def test_firewall_replace_refuse_and_delete(topo: Topology) -> None:
    assert topo.apply(FirewallState(networks=NETS, ports=PORTS)).returncode == 0
    before = topo.run("host", "nft", "list", "table", "inet", "bulkhead")
    # a state nft refuses (port out of range) changes nothing
    bad = FirewallState(
        networks=NETS, ports=(PortRule("tcp", "", 70000, "172.30.1.2", 80, "br-a"),)
    )
    r = topo.apply(bad)
    assert r.returncode != 0 and b"nft refused" in r.stderr
    assert topo.run("host", "nft", "list", "table", "inet", "bulkhead") == before
    # the port unpublished: gone at once
    assert topo.apply(FirewallState(networks=NETS)).returncode == 0
    assert topo.reach("out", "10.250.0.1", 8080).startswith("error=")
    assert "dnat ip to" not in topo.run("host", "nft", "list", "table", "inet", "bulkhead")
    # nothing left to do: no table at all (twice: deleting a missing table is fine)
    for _ in range(2):
        assert topo.apply(FirewallState()).returncode == 0
        assert topo.tables() == []


def route_loopback_via(topo: Topology, where: str, gateway: str) -> None:
    """CVE-2020-8558's proof of concept: ``where`` sends 127.0.0.0/8 to ``gateway``.

    It gives up its own loopback address (and with it the local routes of
    127.0.0.0/8, and the martian check that would refuse answers from an
    address of its own), lets its interface carry loopback addresses
    (``route_localnet``), and routes 127.0.0.0/8 via the neighbour under attack.
    """
    topo.ip(where, "addr", "del", "127.0.0.1/8", "dev", "lo")
    topo.run(where, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet")
    topo.ip(where, "route", "add", "127.0.0.0/8", "via", gateway, "dev", "eth0")


def test_firewall_guard_keeps_the_hosts_loopback_from_its_bridges(topo: Topology) -> None:
    """A neighbour on a bridge cannot reach the host's 127.0.0.1-only services (CVE-2020-8558).

    route_localnet on br-a (set for the host's own 127.0.0.1:8080) would let
    packets to 127.0.0.1 arriving on br-a be delivered locally.
    """
    topo.serve("host", "tcp:127.0.0.1:7000")
    assert topo.apply(FirewallState(networks=NETS, ports=PORTS)).returncode == 0
    assert topo.run("host", "cat", "/proc/sys/net/ipv4/conf/br-a/route_localnet") == "1"
    route_loopback_via(topo, "c4", "172.30.1.1")
    assert topo.reach("c4", "127.0.0.1", 7000).startswith("error=")
    # the published ports still work: from the host's loopback, from a container
    assert topo.reach("host", "127.0.0.1", 8080) == "peer=172.30.1.1"
    assert topo.reach("host", "127.0.0.1", 8081) == "peer=172.30.1.1"
    assert topo.reach("host", "127.0.0.1", 7000) == "peer=127.0.0.1"
    assert topo.reach("c1", "10.250.0.1", 8080) == "peer=172.30.1.1"
    # the proof that the attack is real: without the guard it gets through
    topo.run("host", "nft", "delete", "chain", "inet", "bulkhead", "guard")
    assert topo.reach("c4", "127.0.0.1", 7000) == "peer=172.30.1.3"


def test_firewall_guard_keeps_loopback_published_ports_from_the_outside(topo: Topology) -> None:
    """``-p 127.0.0.1:8081:81`` is the host's alone, even for a neighbour routing 127.0.0.1 to it.

    The DNAT runs before the routing decision that would drop a loopback
    destination arriving by a real interface (moby#41872).
    """
    assert topo.apply(FirewallState(networks=NETS, ports=PORTS)).returncode == 0
    route_loopback_via(topo, "out", "10.250.0.1")
    assert topo.reach("out", "127.0.0.1", 8081).startswith("error=")
    assert topo.reach("out", "10.250.0.1", 8080) == "peer=10.250.0.2"
    topo.run("host", "nft", "delete", "chain", "inet", "bulkhead", "guard")
    assert topo.reach("out", "127.0.0.1", 8081) == "peer=10.250.0.2"


RECV_ONE = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
s.settimeout(float(sys.argv[2])); print("ready", flush=True)
try:
    print("peer=%s" % s.recvfrom(100)[1][0])
except OSError:
    print("nothing")
"""

SEND_FROM = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, 15, 1)  # IP_FREEBIND: a source the sender does not own
s.bind((sys.argv[1], 0))
for _ in range(3):
    s.sendto(b"x", (sys.argv[2], int(sys.argv[3])))
"""


def spoofed_datagram_seen(
    topo: Topology, where: str, source: str, dest: str, receiver: str = "host"
) -> str:
    """What a UDP server of ``receiver`` on port 7001 saw of ``where``'s datagrams from
    ``source`` to ``dest`` (an answer cannot tell: it may be what is dropped)."""
    server = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{topo.ns[receiver]}", PY, "-c", RECV_ONE, "7001", "2"],
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == b"ready"
        topo.run(where, PY, "-c", SEND_FROM, source, dest, "7001")
        return server.stdout.readline().decode().strip()
    finally:
        server.kill()
        server.wait()


def test_firewall_guard_drops_loopback_sources_from_bridges(topo: Topology) -> None:
    """A container cannot pass for the host's loopback (127.0.0.2 is no address of the host's)."""
    assert topo.apply(FirewallState(networks=NETS, ports=PORTS)).returncode == 0
    topo.run("c4", "sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/eth0/route_localnet")
    assert spoofed_datagram_seen(topo, "c4", "172.30.1.3", "172.30.1.1") == "peer=172.30.1.3"
    assert spoofed_datagram_seen(topo, "c4", "127.0.0.2", "172.30.1.1") == "nothing"
    topo.run("host", "nft", "delete", "chain", "inet", "bulkhead", "guard")
    assert spoofed_datagram_seen(topo, "c4", "127.0.0.2", "172.30.1.1") == "peer=127.0.0.2"


def _add_ipv6(topo: Topology) -> None:
    """IPv6 on the same topology: ``fd00:250::/64`` outside, ``fd00:30:N::/64`` on the bridges."""
    topo.ip("host", "addr", "add", "fd00:250::1/64", "dev", "vout", "nodad")
    topo.ip("out", "addr", "add", "fd00:250::2/64", "dev", "eth0", "nodad")
    for br, net in (("br-a", 1), ("br-b", 2), ("br-i", 3)):
        topo.ip("host", "addr", "add", f"fd00:30:{net}::1/64", "dev", br, "nodad")
    for c, net, host in (("c1", 1, 2), ("c4", 1, 3), ("c2", 2, 2), ("c3", 3, 2)):
        topo.ip(c, "addr", "add", f"fd00:30:{net}::{host}/64", "dev", "eth0", "nodad")
        topo.ip(c, "-6", "route", "add", "default", "via", f"fd00:30:{net}::1")


def test_firewall_ipv6_nat_isolation_internal(topo: Topology) -> None:
    """The same promises for IPv6 (one inet table): masquerade, ports, isolation, internal."""
    _add_ipv6(topo)
    topo.serve("c1", "tcp6:80", "tcp6:81")
    topo.serve("out", "tcp6:9000")
    nets = (
        NetworkRules(bridge="br-a", subnets=("172.30.1.0/24", "fd00:30:1::/64")),
        NetworkRules(bridge="br-b", subnets=("172.30.2.0/24", "fd00:30:2::/64")),
        NetworkRules(bridge="br-i", subnets=("172.30.3.0/24", "fd00:30:3::/64"), internal=True),
    )
    ports = (PortRule("tcp", "::", 8080, "fd00:30:1::2", 80, "br-a"),)
    assert topo.apply(FirewallState(networks=nets, ports=ports)).returncode == 0
    assert topo.run("host", "cat", "/proc/sys/net/ipv6/conf/all/forwarding") == "1"
    # masquerade to the host's address
    assert topo.reach("c1", "fd00:250::2", 9000) == "peer=fd00:250::1"
    # internal: nothing in or out; isolation between networks
    assert topo.reach("c3", "fd00:250::2", 9000).startswith("error=")
    assert topo.reach("c3", "fd00:30:1::2", 80).startswith("error=")
    assert topo.reach("c1", "fd00:30:3::2", 80).startswith("error=")
    assert topo.reach("c2", "fd00:30:1::2", 80).startswith("error=")
    # the published port from outside (client kept), hairpin and another network (masqueraded)
    assert topo.reach("out", "fd00:250::1", 8080) == "peer=fd00:250::2"
    assert topo.reach("c4", "fd00:250::1", 8080) == "peer=fd00:30:1::1"
    assert topo.reach("c1", "fd00:250::1", 8080) == "peer=fd00:30:1::1"
    assert topo.reach("c2", "fd00:250::1", 8080) == "peer=fd00:30:1::1"
    assert topo.reach("c4", "fd00:30:1::2", 81) == "peer=fd00:30:1::3"
    # routed access from outside reaches only what is published
    topo.ip("out", "-6", "route", "add", "fd00:30::/32", "via", "fd00:250::1")
    assert topo.reach("out", "fd00:30:1::2", 81).startswith("error=")
    assert topo.reach("out", "fd00:30:1::2", 80).startswith("error=")
    assert topo.reach("out", "fd00:250::1", 8080) == "peer=fd00:250::2"


# --- through the daemon -------------------------------------------------------------


@pytest.fixture
def ndaemon(daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(netns=True)
    return d


def _ok(r: Any) -> str:
    assert r.returncode == 0, f"{r.args}: {r.stderr}"
    return str(r.stdout)


def test_daemon_bridge_neighbour_cannot_reach_the_hosts_loopback(ndaemon: Daemon) -> None:
    """CVE-2020-8558 against the daemon: its bh0 has route_localnet for a published port.

    An attacker namespace of the test's own is plugged into bh0 like a
    container and routes 127.0.0.0/8 to the gateway; a service of the daemon's
    namespace bound to 127.0.0.1 only must stay out of its reach, while the
    host's 127.0.0.1:8080 still reaches the container.
    """
    d = ndaemon
    _ok(d.docker("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", HTTPD))
    assert _ok(d.in_netns("cat", "/proc/sys/net/ipv4/conf/bh0/route_localnet")).strip() == "1"
    listener = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{d.netns}", PY, "-c", SERVER, "tcp:127.0.0.1:7000"],
        stdout=subprocess.PIPE,
    )
    attacker = make_netns()
    topo = Topology()
    topo.ns = {"host": str(d.netns), "atk": attacker}
    try:
        assert listener.stdout is not None
        assert listener.stdout.readline().strip() == b"ready"
        topo.ip("host", "link", "add", "vatk", "type", "veth", "peer", "name", "eth0")
        topo.ip("host", "link", "set", "eth0", "netns", attacker)
        topo.ip("host", "link", "set", "vatk", "master", "bh0", "up")
        topo.ip("atk", "addr", "add", "172.17.255.250/16", "dev", "eth0")
        topo.ip("atk", "link", "set", "eth0", "up")
        route_loopback_via(topo, "atk", "172.17.0.1")
        assert topo.reach("atk", "172.17.0.1", 7000).startswith("error=")  # bound to lo only
        assert topo.reach("atk", "127.0.0.1", 7000).startswith("error=")
        # the published port from the daemon's own loopback still works
        got = _ok(d.in_netns(PY, "-c", FETCH, "127.0.0.1", "8080")).strip()
        assert got.startswith("hello-"), got
        # the proof: without bulkhead's guard the attacker gets through
        topo.run("host", "nft", "delete", "chain", "inet", "bulkhead", "guard")
        assert topo.reach("atk", "127.0.0.1", 7000) == "peer=172.17.255.250"
    finally:
        listener.kill()
        listener.wait()
        delete_netns(attacker)
