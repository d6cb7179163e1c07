"""bulkhead's nftables table, applied in a namespace of the test's own (no engine involved).

The topology, every piece in a ``bh-t-*`` network namespace removed afterwards::

    out (10.250.0.2) ── veth ── host (10.250.0.1)   ← the "daemon's" namespace: rules here
                                 ├── br-a 172.30.1.1 ── c1 172.30.1.2, c4 172.30.1.3
                                 ├── br-b 172.30.2.1 ── c2 172.30.2.2
                                 └── br-i 172.30.3.1 ── c3 172.30.3.2   (internal)

Servers (python sockets via ``nsenter``) answer each connection with the
peer address they saw, so a test checks both reachability and NAT. A refused
reach is a drop: the client's connect times out (1 s).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator

import msgspec
import pytest

from bulkhead.network.firewall import FirewallState, NetworkRules, PortRule

PY = sys.executable

SERVER = r"""
import socket, sys, select
socks = []
for spec in sys.argv[1:]:
    proto, port = spec.split(":")
    if proto == "tcp":
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", int(port))); s.listen(16)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(port)))
    socks.append((proto, s))
print("ready", flush=True)
while True:
    r, _, _ = select.select([s for _, s in socks], [], [])
    for proto, s in socks:
        if s not in r:
            continue
        if proto == "tcp":
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
