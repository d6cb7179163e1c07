"""Published ports, masquerade, isolation and internal networks through the daemon.

Every daemon runs in a network namespace of the test's own
(``daemon_factory(netns=True)``); an "outside" namespace, also the test's,
is linked to it by a veth pair (daemon side ``10.251.0.1``, outside
``10.251.0.2``). Traffic flows only between these namespaces and the
containers; every ``nft`` runs in the daemon's namespace.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.integration.engine_fixtures import Daemon, delete_netns, make_netns

PY = sys.executable
OUT_IP = "10.251.0.2"
HOST_IP = "10.251.0.1"

FETCH = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    s = socket.create_connection((host, port), timeout=2)
    s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.decode(errors="replace").rpartition("\r\n\r\n")[2].strip())
except OSError as e:
    print("error=%s" % type(e).__name__)
"""

PEER_SERVER = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000)); s.listen(8)
print("ready", flush=True)
while True:
    c, peer = s.accept(); c.sendall(("peer=%s\n" % peer[0]).encode()); c.close()
"""

UDP_SERVER = r"""
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(100); s.sendto(("peer=%s" % peer[0]).encode(), peer)
"""

UDP_QUERY = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
try:
    s.sendto(b"x", (sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode())
except OSError as e:
    print("error=%s" % type(e).__name__)
"""

HTTPD = "mkdir -p /www && echo hello-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www"


def ok(r: Any) -> str:
    assert r.returncode == 0, f"{r.args}: {r.stderr}"
    return str(r.stdout)


class Net:
    """The daemon in its namespace, plus an outside namespace linked to it."""

    def __init__(self, d: Daemon, out: str) -> None:
        self.d = d
        self.out = out

    def in_out(self, *argv: str) -> str:
        r = subprocess.run(
            ["nsenter", f"--net=/run/netns/{self.out}", *argv],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return r.stdout.strip()

    def fetch(self, where: str, host: str, port: int) -> str:
        if where == "out":
            return self.in_out(PY, "-c", FETCH, host, str(port))
        return str(self.d.in_netns(PY, "-c", FETCH, host, str(port)).stdout).strip()

    def wait_fetch(self, where: str, host: str, port: int, want: str) -> str:
        deadline = time.monotonic() + 20
        got = ""
        while time.monotonic() < deadline:
            got = self.fetch(where, host, port)
            if got == want:
                break
            time.sleep(0.2)
        return got

    def nft(self) -> str:
        r = self.d.in_netns("nft", "-j", "list", "tables")
        tables = [
            t["table"]["name"]
            for t in json.loads(r.stdout or "{}").get("nftables", [])
            if "table" in t
        ]
        if "bulkhead" not in tables:
            return ""
        return str(self.d.in_netns("nft", "list", "table", "inet", "bulkhead").stdout)


def _link_outside(d: Daemon, out: str) -> None:
    ok(
        d.in_netns(
            "ip", "link", "add", "vout", "type", "veth", "peer", "name", "eth0", "netns", out
        )
    )
    ok(d.in_netns("ip", "addr", "add", f"{HOST_IP}/24", "dev", "vout"))
    ok(d.in_netns("ip", "link", "set", "vout", "up"))
    enter = ["nsenter", f"--net=/run/netns/{out}"]
    subprocess.run([*enter, "ip", "addr", "add", f"{OUT_IP}/24", "dev", "eth0"], check=True)
    subprocess.run([*enter, "ip", "link", "set", "eth0", "up"], check=True)


@pytest.fixture
def net_factory(daemon_factory: Any) -> Iterator[Callable[..., Net]]:
    outs: list[str] = []

    def make(extra_args: list[str] | None = None) -> Net:
        d: Daemon = daemon_factory(extra_args, netns=True)
        out = make_netns()
        outs.append(out)
        _link_outside(d, out)
        return Net(d, out)

    try:
        yield make
    finally:
        for out in outs:
            delete_netns(out)


@pytest.fixture
def net(net_factory: Callable[..., Net]) -> Net:
    return net_factory()


def need_network_verbs(d: Daemon) -> None:
    """``network create/rm`` come with the API's /networks (skip until the daemon has them)."""
    if d.docker("network", "ls").returncode != 0:
        pytest.skip("the daemon does not serve /networks yet")


def inspect(d: Daemon, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(d.docker("inspect", ref)))[0]
    return doc


def test_published_port_from_host_localhost_and_outside(net: Net) -> None:
    d = net.d
    cid = ok(
        d.docker("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", HTTPD)
    ).strip()
    want = f"hello-{cid[:12]}"
    assert net.wait_fetch("host", "127.0.0.1", 8080, want) == want
    assert net.fetch("host", HOST_IP, 8080) == want
    assert net.fetch("out", HOST_IP, 8080) == want
    info = inspect(d, "web")
    # as Docker's (userland proxy on): [::] too, proxied to the IPv4-only container
    assert info["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}]
    }
    assert info["HostConfig"]["PortBindings"] == {"80/tcp": [{"HostIp": "", "HostPort": "8080"}]}
    assert ok(d.docker("port", "web")).splitlines() == [
        "80/tcp -> 0.0.0.0:8080",
        "80/tcp -> [::]:8080",
    ]
    assert ok(d.docker("port", "web", "80")).splitlines() == ["0.0.0.0:8080", "[::]:8080"]
    assert "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp" in ok(d.docker("ps", "--format", "{{.Ports}}"))
    assert "dnat ip to 172.17.0.2:80" in net.nft()
    # the container itself by the host's addresses (hairpin), another container likewise
    for ip in ("172.17.0.1", HOST_IP):
        got = ok(
            d.docker("exec", "web", "timeout", "5", "wget", "-qO-", f"http://{ip}:8080/index.html")
        )
        assert got.strip() == want
        got = ok(
            d.docker(
                "run",
                "--rm",
                "busybox",
                "timeout",
                "5",
                "wget",
                "-qO-",
                f"http://{ip}:8080/index.html",
            )
        )
        assert got.strip() == want
    # the port is held: nothing else in the namespace can bind it
    r = d.in_netns(PY, "-c", "import socket; socket.socket().bind(('0.0.0.0', 8080))")
    assert "Address already in use" in r.stderr
    ok(d.docker("rm", "-f", "web"))
    table = net.nft()
    assert "dnat ip to" not in table and "masquerade" in table
    assert net.fetch("host", "127.0.0.1", 8080).startswith("error=")
    ok(d.in_netns(PY, "-c", "import socket; socket.socket().bind(('0.0.0.0', 8080))"))


def test_port_ranges_publish_all_and_udp(net: Net) -> None:
    d = net.d
    ok(
        d.docker(
            "run", "-d", "--name", "rng", "-p", "9000-9001:80-81", "busybox", "sh", "-c", HTTPD
        )
    )
    assert inspect(d, "rng")["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}, {"HostIp": "::", "HostPort": "9000"}],
        "81/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9001"}, {"HostIp": "::", "HostPort": "9001"}],
    }
    assert net.wait_fetch(
        "out", HOST_IP, 9000, "hello-" + inspect(d, "rng")["Config"]["Hostname"]
    ).startswith("hello")
    # -P: every exposed port on an ephemeral host port of the kernel's range
    ok(
        d.docker(
            "run", "-d", "--name", "pall", "-P", "--expose", "80", "busybox", "sh", "-c", HTTPD
        )
    )
    ports = inspect(d, "pall")["NetworkSettings"]["Ports"]
    host_port = int(ports["80/tcp"][0]["HostPort"])
    lo, hi = (
        int(x) for x in d.in_netns("cat", "/proc/sys/net/ipv4/ip_local_port_range").stdout.split()
    )
    assert lo <= host_port <= hi
    assert net.wait_fetch(
        "out", HOST_IP, host_port, "hello-" + inspect(d, "pall")["Config"]["Hostname"]
    ).startswith("hello")
    # udp (busybox has no udp server: a python one in the container's network namespace)
    ok(d.docker("run", "-d", "--name", "dns", "-p", "8053:53/udp", "busybox", "sleep", "100"))
    sandbox = inspect(d, "dns")["NetworkSettings"]["SandboxKey"]
    server = subprocess.Popen(
        ["nsenter", f"--net={sandbox}", PY, "-c", UDP_SERVER], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        assert net.in_out(PY, "-c", UDP_QUERY, HOST_IP, "8053") == f"peer={OUT_IP}"
        assert (
            d.in_netns(PY, "-c", UDP_QUERY, "127.0.0.1", "8053").stdout.strip() == "peer=172.17.0.1"
        )
    finally:
        server.kill()
        server.wait()

    # ps filters: publish= a host port, expose= a container port (ranges, protocols)
    def names(*filters: str) -> list[str]:
        args = [a for f in filters for a in ("--filter", f)]
        return sorted(ok(d.docker("ps", *args, "--format", "{{.Names}}")).split())

    assert names("publish=9001") == ["rng"]
    assert names("publish=8053/udp") == ["dns"]
    assert names("publish=8053") == []
    assert names("expose=80") == ["pall", "rng"]
    assert names("expose=50-53/udp") == ["dns"]
    assert names(f"publish={host_port}-{host_port}/tcp") == ["pall"]
    r = d.docker("ps", "--filter", "publish=1.2.3.4:80")
    assert r.returncode != 0 and "should not contain ':'" in r.stderr
    ok(d.docker("rm", "-f", "rng", "pall", "dns"))
    assert "dnat ip to" not in net.nft()


def test_port_in_use_is_refused(net: Net) -> None:
    d = net.d
    ok(d.docker("run", "-d", "--name", "ca", "-p", "8080:80", "busybox", "sleep", "100"))
    before = net.nft()
    r = d.docker("run", "-d", "--name", "cb", "-p", "8080:80", "busybox", "sleep", "100")
    assert r.returncode != 0
    assert "Bind for 0.0.0.0:8080 failed: port is already allocated" in r.stderr
    assert inspect(d, "cb")["State"]["Status"] == "created"
    assert net.nft() == before
    # a port another program holds
    holder = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{d.netns}", PY, "-c",
         "import socket,sys; s=socket.socket(); s.bind(('0.0.0.0', 8081)); s.listen();"
         " print('ready', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"ready"
        r = d.docker("run", "-d", "--name", "cc", "-p", "8081:80", "busybox", "sleep", "100")
        assert r.returncode != 0
        # (the refused container b keeps its address: c has the next one)
        ip = inspect(d, "cc")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
        assert (
            f"failed to bind host port for 0.0.0.0:8081:{ip}:80/tcp: address already in use"
            in r.stderr
        )
        assert net.nft() == before
    finally:
        holder.kill()
        holder.wait()
    # the refused container starts once its port is free
    ok(d.docker("start", "cc"))
    assert inspect(d, "cc")["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"] == "8081"


def _peer_server(net: Net) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        ["nsenter", f"--net=/run/netns/{net.out}", PY, "-c", PEER_SERVER], stdout=subprocess.PIPE
    )
    assert p.stdout is not None and p.stdout.readline().strip() == b"ready"
    return p


def test_masquerade_internal_and_isolation(net: Net) -> None:
    d = net.d
    server = _peer_server(net)
    try:
        # the default bridge: out to the "outside", masqueraded behind the daemon's address
        r = d.docker("run", "--rm", "busybox", "nc", "-w", "5", OUT_IP, "9000")
        assert ok(r).strip() == f"peer={HOST_IP}"
        need_network_verbs(d)
        ok(d.docker("network", "create", "--internal", "inside"))
        ok(d.docker("network", "create", "n1"))
        ok(d.docker("network", "create", "n2"))
        r = d.docker(
            "run", "--rm", "--network", "inside", "busybox", "nc", "-w", "2", OUT_IP, "9000"
        )
        assert r.returncode != 0 or "peer=" not in r.stdout
        routes = ok(d.docker("run", "--rm", "--network", "inside", "busybox", "ip", "route"))
        assert "default" not in routes
        # two user networks do not reach each other; the same network does
        ok(d.docker("run", "-d", "--name", "s1", "--network", "n1", "busybox", "sh", "-c", HTTPD))
        ip1 = inspect(d, "s1")["NetworkSettings"]["Networks"]["n1"]["IPAddress"]
        ping = "ping -c 1 -W 2 " + ip1
        assert (
            d.docker("run", "--rm", "--network", "n2", "busybox", "sh", "-c", ping).returncode != 0
        )
        ok(d.docker("run", "--rm", "--network", "n1", "busybox", "sh", "-c", ping))
        ok(d.docker("rm", "-f", "s1"))
    finally:
        server.kill()
        server.wait()


def test_restart_restores_rules_and_ports(net: Net) -> None:
    d = net.d
    cid = ok(
        d.docker("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", HTTPD)
    ).strip()
    want = f"hello-{cid[:12]}"
    assert net.wait_fetch("out", HOST_IP, 8080, want) == want
    d.stop(kill=True)
    # the kernel keeps the rules; take them away to see the daemon put them back
    ok(d.in_netns("nft", "delete", "table", "inet", "bulkhead"))
    assert net.fetch("out", HOST_IP, 8080).startswith("error=")
    d.start()
    assert net.wait_fetch("out", HOST_IP, 8080, want) == want
    r = d.in_netns(PY, "-c", "import socket; socket.socket().bind(('0.0.0.0', 8080))")
    assert "Address already in use" in r.stderr  # held again
    assert inspect(d, "web")["NetworkSettings"]["Ports"]["80/tcp"] == [
        {"HostIp": "0.0.0.0", "HostPort": "8080"},
        {"HostIp": "::", "HostPort": "8080"},
    ]
    # the stopped daemon leaves the rules of running containers
    d.stop()
    assert "dnat ip to 172.17.0.2:80" in net.nft()
    d.start()
    ok(d.docker("rm", "-f", "web"))


def test_last_network_removes_the_table(net_factory: Callable[..., Net]) -> None:
    net = net_factory(["--bridge", "none"])
    d = net.d
    need_network_verbs(d)
    assert net.nft() == ""
    ok(d.docker("network", "create", "n1"))
    assert "masquerade" in net.nft()
    ok(d.docker("network", "rm", "n1"))
    assert net.nft() == ""
    # a daemon that stops with no container running leaves no table
    ok(d.docker("network", "create", "n2"))
    d.stop()
    assert net.nft() == ""
    d.start()
    assert "masquerade" in net.nft()
    ok(d.docker("network", "rm", "n2"))
    assert net.nft() == ""
    assert not os.path.exists(d.exec_root / "ports" / ".table")


def test_disconnect_takes_the_published_ports(net: Net) -> None:
    d = net.d
    ok(d.docker("network", "create", "n1"))
    cid = ok(
        d.docker(
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "n1",
            "-p",
            "8080:80",
            "busybox",
            "sh",
            "-c",
            HTTPD,
        )
    ).strip()
    want = f"hello-{cid[:12]}"
    assert net.wait_fetch("out", HOST_IP, 8080, want) == want
    ok(d.docker("network", "disconnect", "n1", "web"))
    assert net.fetch("out", HOST_IP, 8080).startswith("error=")
    assert "dnat ip to" not in net.nft()
    assert inspect(d, "web")["NetworkSettings"]["Ports"] in ({}, {"80/tcp": None})
    ok(d.in_netns(PY, "-c", "import socket; socket.socket().bind(('0.0.0.0', 8080))"))
    ok(d.docker("rm", "-f", "web"))
    ok(d.docker("network", "rm", "n1"))


def test_publish_all_with_the_image_expose(net: Net, tmp_path: Any) -> None:
    d = net.d
    ok(d.docker("create", "--name", "src", "busybox"))
    tar = tmp_path / "fs.tar"
    ok(d.docker("export", "-o", str(tar), "src"))
    ok(d.docker("import", "-c", "EXPOSE 80/tcp 81", str(tar), "exposed:1"))
    ok(d.docker("run", "-d", "--name", "web", "-P", "exposed:1", "sh", "-c", HTTPD))
    ports = inspect(d, "web")["NetworkSettings"]["Ports"]
    assert sorted(ports) == ["80/tcp", "81/tcp"]
    p80 = int(ports["80/tcp"][0]["HostPort"])
    assert int(ports["81/tcp"][0]["HostPort"]) != p80
    host = inspect(d, "web")["Config"]["Hostname"]
    assert net.wait_fetch("out", HOST_IP, p80, f"hello-{host}") == f"hello-{host}"
    ok(d.docker("rm", "-f", "web", "src"))


def test_ipv6_published_port(net: Net) -> None:
    d = net.d
    ok(d.in_netns("ip", "addr", "add", "fd00:aa::1/64", "dev", "vout", "nodad"))
    subprocess.run(
        [
            "nsenter",
            f"--net=/run/netns/{net.out}",
            "ip",
            "addr",
            "add",
            "fd00:aa::2/64",
            "dev",
            "eth0",
            "nodad",
        ],
        check=True,
    )
    ok(d.docker("network", "create", "--ipv6", "--subnet", "fd00:bb::/64", "n6"))
    cid = ok(
        d.docker(
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "n6",
            "-p",
            "8080:80",
            "busybox",
            "sh",
            "-c",
            HTTPD,
        )
    )
    want = f"hello-{cid.strip()[:12]}"
    ports = inspect(d, "web")["NetworkSettings"]["Ports"]["80/tcp"]
    assert ports == [
        {"HostIp": "0.0.0.0", "HostPort": "8080"},
        {"HostIp": "::", "HostPort": "8080"},
    ]
    assert net.wait_fetch("out", "fd00:aa::1", 8080, want) == want
    assert net.fetch("out", HOST_IP, 8080) == want
    assert "dnat ip6 to [fd00:bb::2]:80" in net.nft()
    # both CLIs print them as docker does
    for cli in (d.docker, d.bulkhead):
        assert ok(cli("port", "web")).splitlines() == [
            "80/tcp -> 0.0.0.0:8080",
            "80/tcp -> [::]:8080",
        ]
        ps = ok(cli("ps", "--format", "{{.Ports}}")).strip()
        assert ps == "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp"
    ok(d.docker("rm", "-f", "web"))
    ok(d.docker("network", "rm", "n6"))


UDP_TAG_SERVER = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(100); s.sendto(sys.argv[1].encode(), peer)
"""

UDP_FIXED_SPORT = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("0.0.0.0", 40053))
for _ in range(5):
    try:
        s.sendto(b"x", (sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode()); break
    except OSError:
        pass
else:
    print("error=timeout")
"""


def test_udp_port_follows_a_new_container(net: Net) -> None:
    """The conntrack entry of a client that keeps its source port goes with the container."""
    d = net.d
    ok(d.docker("network", "create", "--subnet", "172.30.9.0/24", "un"))
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for name, ip in (("u1", "172.30.9.10"), ("u2", "172.30.9.11")):
            args = ("--network", "un", "--ip", ip, "-p", "8053:53/udp", "busybox", "sleep", "100")
            ok(d.docker("run", "-d", "--name", name, *args))
            sandbox = inspect(d, name)["NetworkSettings"]["SandboxKey"]
            server = subprocess.Popen(
                ["nsenter", f"--net={sandbox}", PY, "-c", UDP_TAG_SERVER, name],
                stdout=subprocess.PIPE,
            )
            servers.append(server)
            assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
            assert net.in_out(PY, "-c", UDP_FIXED_SPORT, HOST_IP, "8053") == name
            if name == "u1":
                ok(d.docker("rm", "-f", "u1"))
    finally:
        for server in servers:
            server.kill()
            server.wait()
    ok(d.docker("rm", "-f", "u2"))


def test_a_host_firewall_drop_is_not_bypassed(net: Net) -> None:
    """A forward drop of the host's own table wins over published ports, rewrites included."""
    d = net.d
    cid = ok(
        d.docker("run", "-d", "--name", "web", "-p", "8080:80", "busybox", "sh", "-c", HTTPD)
    ).strip()
    want = f"hello-{cid[:12]}"
    assert net.wait_fetch("out", HOST_IP, 8080, want) == want
    hostfw = (
        "table inet hostfw {\n chain forward {\n  type filter hook forward priority 0; policy accept;\n"
        "  meta l4proto tcp ct original proto-dst 8080 drop\n }\n}\n"
    )
    ok(_nft_file(d, hostfw))
    assert net.fetch("out", HOST_IP, 8080).startswith("error=")
    assert net.fetch("host", "127.0.0.1", 8080) == want  # the host's own: not forwarded
    # bulkhead rewrites its table (another container publishes): the host's drop stays in force
    cid2 = ok(
        d.docker("run", "-d", "--name", "web2", "-p", "8081:80", "busybox", "sh", "-c", HTTPD)
    ).strip()
    assert net.wait_fetch("out", HOST_IP, 8081, f"hello-{cid2[:12]}") == f"hello-{cid2[:12]}"
    assert net.fetch("out", HOST_IP, 8080).startswith("error=")
    assert "proto-dst 8080 drop" in str(d.in_netns("nft", "list", "table", "inet", "hostfw").stdout)
    ok(d.docker("rm", "-f", "web", "web2"))


def _nft_file(d: Daemon, text: str) -> subprocess.CompletedProcess[str]:
    path = d.root.parent / "hostfw.nft"
    path.write_text(text)
    return d.in_netns("nft", "-f", str(path))


def test_docker_py_ports(net: Net) -> None:
    import docker  # type: ignore[import-untyped]

    client = net.d.client()
    c = client.containers.run(
        "busybox",
        ["sh", "-c", HTTPD],
        detach=True,
        ports={"80/tcp": 8080, "81/tcp": ("127.0.0.1", None)},
    )
    try:
        c.reload()
        both = [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}]
        assert c.ports["80/tcp"] == both
        [local] = c.ports["81/tcp"]
        assert local["HostIp"] == "127.0.0.1" and int(local["HostPort"]) >= 1024
        want = f"hello-{c.id[:12]}"
        assert net.wait_fetch("out", HOST_IP, 8080, want) == want
        assert client.api.port(c.id, 80) == both
        with pytest.raises(docker.errors.APIError, match="port is already allocated"):
            client.containers.run(
                "busybox", ["sleep", "100"], detach=True, ports={"80/tcp": 8080}, name="dup"
            )
    finally:
        c.remove(force=True)
        with contextlib.suppress(Exception):
            client.containers.get("dup").remove(force=True)


def test_a_failed_start_gives_the_port_back(net: Net) -> None:
    d = net.d
    r = d.docker("run", "-d", "--name", "bad", "-p", "8080:80", "busybox", "/no/such/binary")
    assert r.returncode != 0
    assert "dnat ip to" not in net.nft()
    ok(d.in_netns(PY, "-c", "import socket; socket.socket().bind(('0.0.0.0', 8080))"))
    ok(d.docker("run", "-d", "--name", "good", "-p", "8080:80", "busybox", "sleep", "100"))
    ok(d.docker("rm", "-f", "bad", "good"))


UDP_QUERY6 = r"""
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); s.settimeout(2)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); s.send(b"x"); print(s.recv(100).decode())
except OSError as e:
    print("error=%s" % type(e).__name__)
"""

# as a server binds (SO_REUSEADDR): the proxied connections' TIME_WAIT is no conflict
BIND6 = (
    "import socket, sys; s = socket.socket(socket.AF_INET6);"
    " s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
    " s.bind((sys.argv[1], int(sys.argv[2]))); s.listen()"
)


def _outside_v6(net: Net) -> None:
    """IPv6 on the link to the outside namespace: the daemon's side fd00:aa::1."""
    ok(net.d.in_netns("ip", "addr", "add", "fd00:aa::1/64", "dev", "vout", "nodad"))
    enter = ["nsenter", f"--net=/run/netns/{net.out}"]
    subprocess.run(
        [*enter, "ip", "addr", "add", "fd00:aa::2/64", "dev", "eth0", "nodad"], check=True
    )


def test_ipv6_loopback_and_v6_to_v4_through_the_proxy(net: Net) -> None:
    """``[::1]`` and the host's IPv6 addresses of an IPv4-only container (the userland
    proxy, as Docker's docker-proxy); after a ``kill -9`` and a restart, again."""
    d = net.d
    assert "inet6 ::1/128" in ok(d.in_netns("ip", "-6", "addr", "show", "dev", "lo"))
    _outside_v6(net)
    cid = ok(
        d.docker(
            "run", "-d", "--name", "web", "-p", "18080:80", "-p", "18053:53/udp",
            "busybox", "sh", "-c", HTTPD,
        )
    ).strip()  # fmt: skip
    want = f"hello-{cid[:12]}"
    assert inspect(d, "web")["NetworkSettings"]["Ports"] == {
        "80/tcp": [
            {"HostIp": "0.0.0.0", "HostPort": "18080"},
            {"HostIp": "::", "HostPort": "18080"},
        ],
        "53/udp": [
            {"HostIp": "0.0.0.0", "HostPort": "18053"},
            {"HostIp": "::", "HostPort": "18053"},
        ],
    }
    assert ok(d.docker("port", "web", "80")).splitlines() == ["0.0.0.0:18080", "[::]:18080"]
    assert net.wait_fetch("host", "::1", 18080, want) == want
    assert net.fetch("out", "fd00:aa::1", 18080) == want  # IPv6 to an IPv4-only container
    assert net.fetch("host", "127.0.0.1", 18080) == want  # DNAT as before
    # with curl too, when the machine has it
    r = d.in_netns("curl", "-sS", "-g", "--max-time", "10", "http://[::1]:18080/index.html")
    if r.returncode != 127:
        assert r.stdout.strip() == want
    sandbox = inspect(d, "web")["NetworkSettings"]["SandboxKey"]
    server = subprocess.Popen(
        ["nsenter", f"--net={sandbox}", PY, "-c", UDP_SERVER], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        # the proxy's own connection to the container comes from the bridge's gateway
        assert d.in_netns(PY, "-c", UDP_QUERY6, "::1", "18053").stdout.strip() == "peer=172.17.0.1"
        assert net.in_out(PY, "-c", UDP_QUERY6, "fd00:aa::1", "18053") == "peer=172.17.0.1"
        # a daemon killed (or stopped) and started again, the container still running:
        # served again (a stopped daemon closes its proxy with the rest)
        for kill in (True, False):
            d.stop(kill=kill)
            assert net.fetch("host", "::1", 18080).startswith("error=")
            assert net.fetch("host", "127.0.0.1", 18080) == want  # the kernel's DNAT stays
            d.start()
            assert net.wait_fetch("host", "::1", 18080, want) == want
        assert d.in_netns(PY, "-c", UDP_QUERY6, "::1", "18053").stdout.strip() == "peer=172.17.0.1"
    finally:
        server.kill()
        server.wait()
    r = d.in_netns(PY, "-c", BIND6, "::1", "18080")
    assert "Address already in use" in r.stderr  # held
    ok(d.docker("rm", "-f", "web"))
    assert net.fetch("host", "::1", 18080).startswith("error=")
    for host in ("::1", "::"):  # free again
        ok(d.in_netns(PY, "-c", BIND6, host, "18080"))
    # an explicit [::1] binding of an IPv4-only container: the proxy only
    cid = ok(
        d.docker("run", "-d", "--name", "lo6", "-p", "[::1]:18081:80", "busybox", "sh", "-c", HTTPD)
    ).strip()
    assert inspect(d, "lo6")["NetworkSettings"]["Ports"] == {
        "80/tcp": [{"HostIp": "::1", "HostPort": "18081"}]
    }
    assert net.wait_fetch("host", "::1", 18081, f"hello-{cid[:12]}") == f"hello-{cid[:12]}"
    assert net.fetch("host", "127.0.0.1", 18081).startswith("error=")
    ok(d.docker("rm", "-f", "lo6"))


def test_ipv6_loopback_of_a_dual_stack_container(net: Net) -> None:
    """A container with an IPv6 address: DNAT serves the host's IPv6 addresses (the client's
    address kept), the proxy only ``[::1]``."""
    d = net.d
    _outside_v6(net)
    ok(d.docker("network", "create", "--ipv6", "--subnet", "fd00:bb::/64", "n6"))
    cid = ok(
        d.docker(
            "run", "-d", "--name", "web", "--network", "n6", "-p", "18080:80",
            "busybox", "sh", "-c", HTTPD,
        )
    ).strip()  # fmt: skip
    want = f"hello-{cid[:12]}"
    assert net.wait_fetch("out", "fd00:aa::1", 18080, want) == want
    assert net.wait_fetch("host", "::1", 18080, want) == want
    assert net.fetch("host", "127.0.0.1", 18080) == want
    assert "dnat ip6 to [fd00:bb::2]:80" in net.nft()
    ok(d.docker("rm", "-f", "web"))
    ok(d.docker("network", "rm", "n6"))


def test_userland_proxy_off_publishes_with_dnat_alone(net_factory: Callable[..., Net]) -> None:
    """dockerd's ``--userland-proxy=false``: an IPv4-only container's ``-p`` gets no
    ``[::]`` binding and ``[::1]`` is not served; ``127.0.0.1`` still is (DNAT)."""
    net = net_factory(["--userland-proxy=false"])
    d = net.d
    cid = ok(
        d.docker("run", "-d", "--name", "web", "-p", "18080:80", "busybox", "sh", "-c", HTTPD)
    ).strip()
    want = f"hello-{cid[:12]}"
    assert ok(d.docker("port", "web", "80")).splitlines() == ["0.0.0.0:18080"]
    assert net.wait_fetch("host", "127.0.0.1", 18080, want) == want
    assert net.fetch("host", "::1", 18080).startswith("error=")
    ok(d.in_netns(PY, "-c", BIND6, "::1", "18080"))  # not held either: free
    r = d.docker("run", "-d", "-p", "[::1]:18081:80", "busybox", "true")
    assert r.returncode != 0 and "userland-proxy is off" in r.stderr
    ok(d.docker("rm", "-f", "web"))
