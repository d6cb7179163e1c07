"""Name resolution through the daemon in a network namespace of the test's own:
/etc/hosts on the default bridge (own address, --add-host host-gateway, legacy
--link), and the embedded resolver of user-defined networks.

Every daemon runs in ``bh-t-<random>`` (``daemon_factory(netns=True)``); the
"outside" resolver is a fake one in that namespace: no query leaves it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from tests.integration.engine_fixtures import DOCKER, Daemon

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(DOCKER is None, reason="docker CLI not installed"),
]


def ok(r: Any) -> str:
    assert r.returncode == 0, f"{r.args}: exit {r.returncode}\n{r.stdout}\n{r.stderr}"
    return str(r.stdout)


def inspect(d: Daemon, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(d.docker("inspect", ref)))[0]
    return doc


@pytest.fixture
def ndaemon(daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(netns=True)
    return d


def test_default_bridge_hosts_links_and_host_gateway(ndaemon: Daemon) -> None:
    d = ndaemon
    db = ok(d.docker("run", "-d", "--name", "db", "-h", "dbhost", "busybox", "sleep", "100"))
    db_ip = inspect(d, db.strip())["NetworkSettings"]["IPAddress"]
    out = ok(
        d.docker(
            "run", "--name", "web", "--link", "db:dbalias", "--add-host", "gw:host-gateway",
            "busybox", "sh", "-c",
            "cat /etc/hosts; echo ---; ping -c1 -W5 dbalias >/dev/null && echo reached; "
            "echo ---; cat /etc/resolv.conf",
        )
    )  # fmt: skip
    hosts, ping, resolv = out.split("---\n")
    web = inspect(d, "web")
    own = web["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    assert hosts.endswith(
        "ff02::2\tip6-allrouters\n"
        "172.17.0.1\tgw\n"
        f"{db_ip}\tdbalias dbhost db\n"
        f"{own}\t{web['Id'][:12]}\n"
    )
    assert ping == "reached\n"
    assert "(legacy)" in resolv  # the default bridge has no embedded resolver
    assert web["HostConfig"]["Links"] == ["/db:/web/dbalias"]
    r = d.docker("run", "--rm", "--link", "nope:x", "busybox", "true")
    assert r.returncode == 125 and "could not get container for nope" in r.stderr
    assert "Unable to find image" not in r.stderr  # a 400: the CLI does not try a pull
    ok(d.docker("stop", "-t", "0", "db"))
    r = d.docker("start", "web")
    assert r.returncode != 0 and "Cannot link to a non running container: /db AS /web/dbalias" in (
        r.stderr
    )


# --- the embedded resolver of user-defined networks ------------------------------------

#: a resolver on argv[1]:53 that prints each name asked. argv[2]: the address of every
#: A query; without it only outside.test. has one (192.0.2.7), other names are NXDOMAIN
FAKE_UPSTREAM = r"""
import socket, sys
import dns.message, dns.rcode, dns.rrset
answer = sys.argv[2] if len(sys.argv) > 2 else None
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(4096)
    q = dns.message.from_wire(data)
    r = dns.message.make_response(q)
    name = q.question[0].name.to_text()
    if q.question[0].rdtype == 1 and (answer or name == "outside.test."):
        r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", answer or "192.0.2.7"))
    elif answer is None and name != "outside.test.":
        r.set_rcode(dns.rcode.NXDOMAIN)
    print(name, flush=True)
    s.sendto(r.to_wire(), peer)
"""


@pytest.fixture
def rdaemon(daemon_factory: Any) -> Iterator[tuple[Daemon, subprocess.Popen[str]]]:
    """A daemon in its own namespace whose upstream resolver (``--dns``) is a fake one
    on 127.0.0.53:53 in that namespace; yields (daemon, the fake's process)."""
    d: Daemon = daemon_factory(["--dns", "127.0.0.53"], netns=True)
    fake = subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{d.netns}",
            sys.executable,
            "-c",
            FAKE_UPSTREAM,
            "127.0.0.53",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline() == "ready\n"
        yield d, fake
    finally:
        fake.kill()
        fake.wait()


def lookup(d: Daemon, container: str, name: str) -> subprocess.CompletedProcess[str]:
    return d.docker("exec", container, "nslookup", "-type=a", name)


def test_user_network_names_aliases_isolation_and_forwarding(rdaemon: Any) -> None:
    d, fake = rdaemon
    ok(d.docker("network", "create", "--subnet", "10.80.0.0/24", "front"))
    ok(d.docker("network", "create", "--subnet", "10.81.0.0/24", "back"))
    run = ("run", "-d", "--network")
    ok(
        d.docker(
            *run, "front", "--name", "web", "--network-alias", "www", "busybox", "sleep", "300"
        )
    )
    ok(d.docker(*run, "front", "--name", "client", "-h", "clienthost", "busybox", "sleep", "300"))
    ok(d.docker(*run, "back", "--name", "db", "busybox", "sleep", "300"))
    # --dns 127.0.0.53 is the container's own loopback (not the fake upstream on the
    # daemon's): asked inside the container, where nothing listens
    ok(d.docker(*run, "back", "--name", "own", "--dns", "127.0.0.53", "busybox", "sleep", "300"))
    web_ip = inspect(d, "web")["NetworkSettings"]["Networks"]["front"]["IPAddress"]
    client = inspect(d, "client")
    names = client["NetworkSettings"]["Networks"]["front"]["DNSNames"]
    assert names == ["client", client["Id"][:12], "clienthost"]
    client_ip = client["NetworkSettings"]["Networks"]["front"]["IPAddress"]
    assert f"Address: {client_ip}" in ok(lookup(d, "web", "clienthost"))
    # by name and alias, answered at Docker's 127.0.0.11 (redirected to the gateway's resolver)
    out = ok(lookup(d, "client", "web"))
    assert "Server:\t\t127.0.0.11" in out and f"Address: {web_ip}" in out
    assert f"Address: {web_ip}" in ok(lookup(d, "client", "www"))
    assert f"Address: {web_ip}" in ok(lookup(d, "client", "WEB.front"))
    assert "web.front" in ok(d.docker("exec", "client", "nslookup", web_ip))  # PTR
    assert "1 packets received" in ok(d.docker("exec", "client", "ping", "-c1", "-W5", "web"))
    d.restart()  # the containers keep running; the new daemon serves their names again
    assert f"Address: {web_ip}" in ok(lookup(d, "client", "web"))
    resolv = ok(d.docker("exec", "client", "cat", "/etc/resolv.conf"))
    assert "\n\nnameserver 127.0.0.11\noptions ndots:0\n\n" in resolv
    assert "(internal resolver)\n" in resolv
    assert "# ExtServers: [127.0.0.53]\n" in resolv
    assert "ff02::2\tip6-allrouters\n10.80.0." in ok(
        d.docker("exec", "client", "cat", "/etc/hosts")
    )
    # not across networks: db (on back) cannot resolve web; the fake upstream says NXDOMAIN
    r = lookup(d, "db", "web")
    assert r.returncode != 0 and "NXDOMAIN" in r.stdout + r.stderr
    # an outside name is forwarded to the upstream (the fake one in this namespace)
    assert "Address: 192.0.2.7" in ok(lookup(d, "client", "outside.test"))
    r = lookup(d, "own", "own-loopback.test")
    assert r.returncode != 0 and "SERVFAIL" in r.stdout + r.stderr
    # a legacy link on a user network: an alias for the linking container only
    out = ok(d.docker("run", "--rm", "--network", "front", "--link", "web:webby", "busybox",
                      "nslookup", "-type=a", "webby"))  # fmt: skip
    assert f"Address: {web_ip}" in out
    r = lookup(d, "client", "webby")
    assert r.returncode != 0 and "NXDOMAIN" in r.stdout + r.stderr
    # --network container:client shares client's files, so its names too
    out = ok(d.docker("run", "--rm", "--network", "container:client", "busybox", "sh", "-c",
                      "cat /etc/resolv.conf; nslookup -type=a www"))  # fmt: skip
    assert "\nnameserver 127.0.0.11\n" in out and f"Address: {web_ip}" in out
    # the default bridge has no resolver: the daemon's dns option is the nameserver
    out = ok(d.docker("run", "--rm", "busybox", "cat", "/etc/resolv.conf"))
    assert "\nnameserver 127.0.0.53\n" in out and "(legacy)" in out
    # an --internal network: names resolve, nothing is forwarded
    ok(d.docker("network", "create", "--internal", "--subnet", "10.82.0.0/24", "quiet"))
    ok(d.docker(*run, "quiet", "--name", "q1", "busybox", "sleep", "300"))
    ok(d.docker(*run, "quiet", "--name", "q2", "busybox", "sleep", "300"))
    q2_ip = inspect(d, "q2")["NetworkSettings"]["Networks"]["quiet"]["IPAddress"]
    assert f"Address: {q2_ip}" in ok(lookup(d, "q1", "q2"))
    r = lookup(d, "q1", "inside-only.test")
    assert r.returncode != 0 and "SERVFAIL" in r.stdout + r.stderr
    ok(d.docker("rm", "-f", "q1", "q2"))
    ok(d.docker("network", "rm", "quiet"))
    # connect takes effect at once, and so does disconnect
    ok(d.docker("network", "connect", "back", "web"))
    back_ip = inspect(d, "web")["NetworkSettings"]["Networks"]["back"]["IPAddress"]
    assert f"Address: {back_ip}" in ok(lookup(d, "db", "web"))
    ok(d.docker("network", "disconnect", "back", "web"))
    r = lookup(d, "db", "web")
    assert r.returncode != 0 and "NXDOMAIN" in r.stdout + r.stderr
    # a stopped container no longer resolves; removing the network closes its resolver
    ok(d.docker("stop", "-t", "0", "web"))
    r = lookup(d, "client", "web")
    assert r.returncode != 0
    ok(d.docker("rm", "-f", "web", "client", "db", "own"))
    ok(d.docker("network", "rm", "front", "back"))
    udp = d.in_netns("ss", "-Hlun", check=True).stdout
    assert "10.80.0.1:53" not in udp and "10.81.0.1:53" not in udp
    fake.kill()
    assert fake.stdout is not None
    asked = fake.stdout.read().split()
    assert "outside.test." in asked and "web." in asked  # what the resolver forwarded
    assert "own-loopback.test." not in asked
    assert "inside-only.test." not in asked


def test_own_loopback_dns_is_asked_inside_the_container(rdaemon: Any) -> None:
    """A container on a user network with ``--dns 127.0.0.1`` (a DNS server on its own
    loopback): 127.0.0.11 forwards its outside names to that server, inside the
    container's namespace (as Docker's resolver), for it and for a ``--network
    container:`` sidecar; a server on 127.0.0.1:53 of the daemon's namespace is not
    asked for it; with nothing listening in there, SERVFAIL."""
    d, upstream = rdaemon
    ok(d.docker("network", "create", "--subnet", "10.84.0.0/24", "mine"))
    cid = ok(d.docker("run", "-d", "--network", "mine", "--name", "own", "--dns", "127.0.0.1",
                      "busybox", "sleep", "300")).strip()  # fmt: skip
    ns = d.exec_root / "netns" / cid
    r = lookup(d, "own", "early.test")  # nothing listens on its loopback yet
    assert r.returncode != 0 and "SERVFAIL" in r.stdout + r.stderr
    fakes: list[subprocess.Popen[str]] = []
    try:
        for where, answer in ((ns, "192.0.2.99"), (f"/run/netns/{d.netns}", "192.0.2.66")):
            fake = subprocess.Popen(
                [
                    "nsenter",
                    f"--net={where}",
                    sys.executable,
                    "-c",
                    FAKE_UPSTREAM,
                    "127.0.0.1",
                    answer,
                ],
                stdout=subprocess.PIPE,
                text=True,
            )
            fakes.append(fake)
            assert fake.stdout is not None and fake.stdout.readline() == "ready\n"
        out = ok(lookup(d, "own", "outside.test"))
        assert "Server:\t\t127.0.0.11" in out and "Address: 192.0.2.99" in out
        # its own names are still the resolver's
        own_ip = inspect(d, "own")["NetworkSettings"]["Networks"]["mine"]["IPAddress"]
        assert f"Address: {own_ip}" in ok(lookup(d, "own", "own"))
        resolv = ok(d.docker("exec", "own", "cat", "/etc/resolv.conf"))
        assert "nameserver 127.0.0.11\n" in resolv and "# ExtServers: [127.0.0.1]\n" in resolv
        # a --network container: sidecar shares that loopback, and so that server
        ok(d.docker("run", "-d", "--network", "container:own", "--name", "side", "busybox",
                    "sleep", "300"))  # fmt: skip
        assert "Address: 192.0.2.99" in ok(lookup(d, "side", "sidecar.test"))
    finally:
        for fake in fakes:
            fake.kill()
            fake.wait()
    ok(d.docker("rm", "-f", "side", "own"))
    ok(d.docker("network", "rm", "mine"))
    inside, daemons = (f.stdout.read().split() if f.stdout else [] for f in fakes)
    assert "outside.test." in inside and "sidecar.test." in inside
    assert "early.test." not in inside
    assert daemons == []  # the daemon's 127.0.0.1: never asked for it
    upstream.kill()
    assert upstream.stdout is not None
    assert "outside.test." not in upstream.stdout.read().split()  # nor the daemon's --dns


def test_ipv6_network_answers_aaaa(rdaemon: Any) -> None:
    d, _ = rdaemon
    ok(d.docker("network", "create", "--ipv6", "--subnet", "10.83.0.0/24", "six"))
    ok(d.docker("run", "-d", "--network", "six", "--name", "a6", "busybox", "sleep", "300"))
    ok(d.docker("run", "-d", "--network", "six", "--name", "b6", "busybox", "sleep", "300"))
    net = inspect(d, "b6")["NetworkSettings"]["Networks"]["six"]
    v6 = net["GlobalIPv6Address"]
    assert v6
    out = ok(d.docker("exec", "a6", "nslookup", "-type=aaaa", "b6"))
    assert f"Address: {v6}" in out
    listening = d.in_netns("ss", "-Hlun", check=True).stdout
    assert f"[{net['IPv6Gateway']}]:53" in listening and "10.83.0.1:53" in listening
    ok(d.docker("rm", "-f", "a6", "b6"))


ASK = r"""
import sys
import dns.message, dns.query
q = dns.message.make_query(sys.argv[1], "A")
for how in (dns.query.udp, dns.query.tcp):
    r = how(q, "127.0.0.11", timeout=5)
    print(how.__name__, *sorted(a.to_text() for rr in r.answer for a in rr))
"""

#: GET argv[1]:7777/hostname (up to argv[2] tries: the server may be starting); "hi" if served
HI = r"""
import socket, sys, time
for attempt in range(int(sys.argv[2])):
    try:
        with socket.create_connection((sys.argv[1], 7777), timeout=2) as s:
            s.sendall(b"GET /hostname HTTP/1.0\r\n\r\n")
            print("hi" if b" 200 " in s.recv(100) else "no")
            break
    except ConnectionRefusedError:
        time.sleep(0.1)
    except TimeoutError:
        print("timed out", file=sys.stderr)
"""


def test_127_0_0_11_redirect_over_udp_and_tcp_follows_the_networks(ndaemon: Daemon) -> None:
    """127.0.0.11:53 in a user-network container answers over UDP and TCP (the DNAT in
    the container's namespace); it follows the container's first user network as
    networks are connected and disconnected; a packet from the bridge to the
    container's 127.0.0.0/8 is dropped (route_localnet is on in there)."""
    d = ndaemon
    ok(d.docker("network", "create", "--subnet", "10.90.0.0/24", "front"))
    ok(d.docker("network", "create", "--subnet", "10.91.0.0/24", "back"))
    ok(d.docker("run", "-d", "--network", "front", "--name", "web", "busybox", "sleep", "300"))
    ok(d.docker("run", "-d", "--network", "back", "--name", "db", "busybox", "sleep", "300"))
    cid = ok(d.docker("run", "-d", "--network", "front", "--name", "client", "busybox",
                      "sleep", "300")).strip()  # fmt: skip
    ns = str(d.exec_root / "netns" / cid)

    def ask(name: str) -> str:
        r = subprocess.run(["nsenter", f"--net={ns}", sys.executable, "-c", ASK, name],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        return ok(r)

    def ip(name: str, net: str) -> str:
        return str(inspect(d, name)["NetworkSettings"]["Networks"][net]["IPAddress"])

    web = ip("web", "front")
    assert ask("web") == f"udp {web}\ntcp {web}\n"
    ok(d.docker("network", "connect", "back", "client"))
    ok(d.docker("network", "disconnect", "front", "client"))  # now only on back
    db = ip("db", "back")
    assert ask("db") == f"udp {db}\ntcp {db}\n"
    assert "\nnameserver 127.0.0.11\n" in ok(d.docker("exec", "client", "cat", "/etc/resolv.conf"))
    ruleset = subprocess.run(["nsenter", f"--net={ns}", "nft", "list", "table", "ip", "bulkhead_dns"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "dnat to 10.91.0.1:53" in ruleset
    # the guard: from the daemon's side of the bridge, 127.0.0.99 routed to the container
    # (a neighbour's CVE-2020-8558 trick) does not reach its listener on 0.0.0.0
    ok(d.docker("exec", "client", "httpd", "-p", "7777", "-h", "/etc"))
    client_ip = ip("client", "back")
    assert d.in_netns(sys.executable, "-c", HI, client_ip, "50").stdout == "hi\n"
    d.in_netns("ip", "route", "del", "local", "127.0.0.0/8", "dev", "lo", "table", "local",
               check=True)  # fmt: skip
    bridge = json.loads(ok(d.docker("network", "inspect", "back")))[0]["Id"][:12]
    d.in_netns("sysctl", "-qw", f"net.ipv4.conf.br-{bridge}.route_localnet=1", check=True)
    d.in_netns("ip", "route", "add", "127.0.0.99/32", "via", client_ip, check=True)
    sneaked = d.in_netns(sys.executable, "-c", HI, "127.0.0.99", "3")
    assert sneaked.stdout == "" and "timed out" in sneaked.stderr
    ok(d.docker("rm", "-f", "web", "db", "client"))
    ok(d.docker("network", "rm", "front", "back"))


#: A fake upstream on argv[1]:53 (UDP and TCP) that speaks no EDNS: argv[2] "servfail"
#: answers everything so; "good": outside.test one address, big.test 79 (over 512 bytes:
#: empty with TC over UDP), else NXDOMAIN. Prints each name asked, with the transport.
FAKE_UPSTREAM_TCP = r"""
import socket, sys, threading
import dns.message, dns.rcode, dns.rrset, dns.flags
addr, mode = sys.argv[1], sys.argv[2]

def reply(data, transport):
    q = dns.message.from_wire(data)
    name = q.question[0].name.to_text()
    print(transport, name, flush=True)
    r = dns.message.make_response(q)
    r.use_edns(False)  # no EDNS here: no OPT in its answers
    if mode == "servfail":
        r.set_rcode(dns.rcode.SERVFAIL)
    elif name == "outside.test.":
        r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "192.0.2.7"))
    elif name == "big.test.":
        ips = [f"192.0.2.{i}" for i in range(1, 80)]
        r.answer.append(dns.rrset.from_text_list(name, 30, "IN", "A", ips))
    else:
        r.set_rcode(dns.rcode.NXDOMAIN)
    wire = r.to_wire()
    if transport == "udp" and len(wire) > 512:
        r.answer.clear()
        r.flags |= dns.flags.TC
        wire = r.to_wire()
    return wire

def tcp():
    srv = socket.create_server((addr, 53))
    while True:
        c, _ = srv.accept()
        with c:
            size = int.from_bytes(c.recv(2), "big")
            data = b""
            while len(data) < size:
                data += c.recv(size - len(data))
            out = reply(data, "tcp")
            c.sendall(len(out).to_bytes(2, "big") + out)

u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((addr, 53))
threading.Thread(target=tcp, daemon=True).start()
print("ready", flush=True)
while True:
    data, peer = u.recvfrom(4096)
    u.sendto(reply(data, "udp"), peer)
"""

#: From a container's namespace: argv[1] asked of 127.0.0.11 as argv[2] says
#: ("udp", "udp-edns": a 4096-byte buffer, "tcp"); prints rcode, TC and the addresses.
ASK_HOW = r"""
import sys
import dns.flags, dns.message, dns.query, dns.rcode
edns = sys.argv[2] == "udp-edns"
q = dns.message.make_query(sys.argv[1], "A", use_edns=0 if edns else False, payload=4096)
how = dns.query.tcp if sys.argv[2] == "tcp" else dns.query.udp
r = how(q, "127.0.0.11", timeout=10)
tc = "TC" if r.flags & dns.flags.TC else "-"
print(dns.rcode.to_text(r.rcode()), tc, len([a for rr in r.answer for a in rr]))
"""


def test_forwarding_fails_over_and_big_answers_through_127_0_0_11(daemon_factory: Any) -> None:
    """The daemon's first upstream answers SERVFAIL: the second answers (Docker's
    resolver). An upstream that speaks no EDNS truncates a big answer: the resolver asks
    it again over TCP, so a client with a 4096-byte buffer gets it whole over UDP; a
    512-byte one gets the upstream's TC, and over TCP all of it. Also /etc/hosts: a user's
    last line without a newline stays whole through connect and disconnect."""
    d: Daemon = daemon_factory(["--dns", "127.0.0.54", "--dns", "127.0.0.53"], netns=True)
    fakes = []
    for addr, mode in (("127.0.0.54", "servfail"), ("127.0.0.53", "good")):
        argv = [sys.executable, "-c", FAKE_UPSTREAM_TCP, addr, mode]
        fakes.append(
            subprocess.Popen(
                ["nsenter", f"--net=/run/netns/{d.netns}", *argv], stdout=subprocess.PIPE, text=True
            )
        )
    try:
        for f in fakes:
            assert f.stdout is not None and f.stdout.readline() == "ready\n"
        ok(d.docker("network", "create", "--subnet", "10.92.0.0/24", "front"))
        ok(d.docker("network", "create", "--subnet", "10.93.0.0/24", "back"))
        cid = ok(d.docker("run", "-d", "--network", "front", "--name", "cx", "busybox",
                          "sleep", "300")).strip()  # fmt: skip
        ns = str(d.exec_root / "netns" / cid)

        def ask(name: str, how: str) -> str:
            r = subprocess.run(["nsenter", f"--net={ns}", sys.executable, "-c", ASK_HOW, name, how],
                               capture_output=True, text=True, timeout=60)  # fmt: skip
            return ok(r)

        assert ask("outside.test", "udp") == "NOERROR - 1\n"
        assert ask("big.test", "udp-edns") == "NOERROR - 79\n"
        assert ask("big.test", "udp") == "NOERROR TC 0\n"  # the upstream's, as Docker
        assert ask("big.test", "tcp") == "NOERROR - 79\n"
        # /etc/hosts: the user's unterminated line, then a connect and a disconnect
        ok(d.docker("exec", "cx", "sh", "-c", "printf '10.0.0.5 cache' >> /etc/hosts"))
        ok(d.docker("network", "connect", "back", "cx"))
        back_ip = inspect(d, "cx")["NetworkSettings"]["Networks"]["back"]["IPAddress"]
        hosts = ok(d.docker("exec", "cx", "cat", "/etc/hosts"))
        assert hosts.endswith(f"\n10.0.0.5 cache\n{back_ip}\t{cid[:12]}\n")
        assert "fe00::\tip6-localnet\n" in hosts
        ok(d.docker("network", "disconnect", "back", "cx"))
        assert ok(d.docker("exec", "cx", "cat", "/etc/hosts")).endswith("\n10.0.0.5 cache\n")
        ok(d.docker("rm", "-f", "cx"))
        ok(d.docker("network", "rm", "front", "back"))
    finally:
        for f in fakes:
            f.kill()
            f.wait()
    assert fakes[0].stdout is not None and fakes[1].stdout is not None
    assert "udp outside.test." in fakes[0].stdout.read()  # asked first, failed
    asked = fakes[1].stdout.read()
    assert "udp outside.test." in asked and "tcp big.test." in asked


#: From a container's namespace: argv[1] (A) asked of the resolver at argv[2] directly.
ASK_AT = r"""
import sys
import dns.message, dns.query, dns.rcode
r = dns.query.udp(dns.message.make_query(sys.argv[1], "A"), sys.argv[2], timeout=10)
print(dns.rcode.to_text(r.rcode()), *sorted(a.to_text() for rr in r.answer for a in rr))
"""


def test_another_networks_resolver_tells_no_names(rdaemon: Any) -> None:
    """A container on ``back`` that sends its query to ``front``'s gateway (the host's
    address, reachable as any) learns none of front's names: the resolver answers a
    client that is no container on its network from no network's records."""
    d, _ = rdaemon
    ok(d.docker("network", "create", "--subnet", "10.94.0.0/24", "front"))
    ok(d.docker("network", "create", "--subnet", "10.95.0.0/24", "back"))
    ok(d.docker("run", "-d", "--network", "front", "--name", "web", "busybox", "sleep", "300"))
    cid = ok(d.docker("run", "-d", "--network", "back", "--name", "db", "busybox",
                      "sleep", "300")).strip()  # fmt: skip
    ns = str(d.exec_root / "netns" / cid)

    def ask(name: str, at: str) -> str:
        r = subprocess.run(["nsenter", f"--net={ns}", sys.executable, "-c", ASK_AT, name, at],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
        return ok(r)

    db_ip = inspect(d, "db")["NetworkSettings"]["Networks"]["back"]["IPAddress"]
    assert ask("db", "10.95.0.1") == f"NOERROR {db_ip}\n"  # its own network's resolver
    assert ask("web", "10.94.0.1") == "NXDOMAIN\n"  # forwarded: the fake upstream's answer
    assert ask("db", "10.94.0.1") == "NXDOMAIN\n"
    ok(d.docker("rm", "-f", "web", "db"))
    ok(d.docker("network", "rm", "front", "back"))


def test_network_connect_link_is_an_alias_for_that_container_on_that_network(
    rdaemon: Any,
) -> None:
    """``docker network connect --link web:webby front client``: on ``front``, ``webby``
    resolves to ``web`` for ``client`` alone; shown in inspect's ``Links``; a missing
    container or the default bridge refused (as Docker)."""
    d, _ = rdaemon
    ok(d.docker("network", "create", "--subnet", "10.83.0.0/24", "front"))
    ok(d.docker("network", "create", "--subnet", "10.84.0.0/24", "back"))
    run = ("run", "-d", "--network")
    ok(d.docker(*run, "front", "--name", "web", "busybox", "sleep", "300"))
    ok(d.docker(*run, "front", "--name", "other", "busybox", "sleep", "300"))
    ok(d.docker(*run, "back", "--name", "client", "busybox", "sleep", "300"))
    ok(d.docker("network", "connect", "--link", "web:webby", "front", "client"))
    web_ip = inspect(d, "web")["NetworkSettings"]["Networks"]["front"]["IPAddress"]
    assert f"Address: {web_ip}" in ok(lookup(d, "client", "webby"))
    r = lookup(d, "other", "webby")
    assert r.returncode != 0 and "NXDOMAIN" in r.stdout + r.stderr
    assert inspect(d, "client")["NetworkSettings"]["Networks"]["front"]["Links"] == ["web:webby"]
    r = d.docker("network", "connect", "--link", "nope:x", "back", "other")
    assert r.returncode != 0 and "could not get container for nope" in r.stderr
    r = d.docker("network", "connect", "--link", "web:w", "bridge", "other")
    assert r.returncode != 0 and "links are only supported for user-defined networks" in r.stderr
    assert "back" not in inspect(d, "other")["NetworkSettings"]["Networks"]  # nothing changed
    ok(d.bulkhead("network", "connect", "--link", "web:webby2", "back", "other"))  # our CLI
    assert inspect(d, "other")["NetworkSettings"]["Networks"]["back"]["Links"] == ["web:webby2"]
    assert f"Address: {web_ip}" in ok(lookup(d, "other", "webby2"))
    ok(d.docker("rm", "-f", "web", "other", "client"))
    ok(d.docker("network", "rm", "front", "back"))
