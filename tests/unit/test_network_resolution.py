"""NameService: the manager's hooks keep the resolver's records and the containers'
/etc/hosts and resolv.conf current (a fake manager; listeners on 127.0.0.x)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import dns.asyncquery
import dns.message
import dns.rcode

from bulkhead.network import hosts as hostsfile
from bulkhead.network.resolution import ContainerNames, NameService

A, B = "a" * 64, "b" * 64


class FakeManager:
    def __init__(self, ns_dir: Path | None = None) -> None:
        self.ns_dir = ns_dir
        self.on_network_up: list[Any] = []
        self.on_network_down: list[Any] = []
        self.on_endpoint_up: list[Any] = []
        self.on_endpoint_down: list[Any] = []
        self.nets: dict[str, Any] = {}
        self.eps: list[Any] = []
        self.store = SimpleNamespace(endpoints=lambda: list(self.eps))

    def find(self, ref: str) -> Any:
        return self.nets.get(ref)

    def ns_path(self, container_id: str) -> Path:
        """A plain file stands in for the namespace (its inode is what counts)."""
        assert self.ns_dir is not None
        path = self.ns_dir / container_id
        path.touch()
        return path

    def endpoints(self, container_id: str) -> list[Any]:
        return [e for e in self.eps if e.container_id == container_id]

    def net(self, nid: str, name: str, gateway: str) -> Any:
        net = SimpleNamespace(
            id=nid, name=name, driver="bridge", pools=[SimpleNamespace(gateway=gateway)],
            internal=False,
        )  # fmt: skip
        self.nets[nid] = net
        for hook in self.on_network_up:
            hook(net)
        return net

    def up(self, net: Any, cid: str, ip: str, aliases: tuple[str, ...] = (), ipv6: str = "") -> Any:
        ep = SimpleNamespace(
            container_id=cid, network_id=net.id, ipv4=ip, ipv6=ipv6, aliases=list(aliases),
            host_ifname="veth", links=[],
        )  # fmt: skip
        self.eps.append(ep)
        for hook in self.on_endpoint_up:
            hook(net, ep)
        return ep

    def down(self, net: Any, ep: Any) -> None:
        self.eps.remove(ep)
        for hook in self.on_endpoint_down:
            hook(net, ep)


def test_hooks_keep_records_and_files_current(tmp_path: Path) -> None:
    host_resolv = tmp_path / "host-resolv.conf"
    host_resolv.write_text("nameserver 127.0.0.77\nsearch corp\n")
    cs: dict[str, ContainerNames] = {}
    for cid, name, links in ((A, "web", (("db", "dbalias"),)), (B, "db", ())):
        d = tmp_path / name
        d.mkdir()
        (d / "hosts").write_text(hostsfile.build())
        (d / "resolv.conf").write_text("")
        cs[cid] = cs[name] = ContainerNames(
            id=cid, name=name, hostname=cid[:12], domainname="",
            hosts_path=str(d / "hosts"), resolv_conf_path=str(d / "resolv.conf"),
            dns=("10.9.9.9",) if name == "db" else (), links=links,
        )  # fmt: skip
    mgr = FakeManager(tmp_path)
    redirects: list[tuple[str, str, int]] = []
    svc = NameService(
        mgr, cs.get, host_resolv_conf=str(host_resolv), port=0,
        redirect=lambda *a: redirects.append(a),
    )  # fmt: skip
    svc.install()

    async def main() -> None:
        net = mgr.net("n1", "front", "127.0.0.1")  # before the loop: pending
        assert svc.server.listening("n1") == []
        svc.attach()
        (_, port, _), *_ = svc.server.listening("n1")
        ea = mgr.up(net, A, "127.0.1.1", ("www",))
        eb = mgr.up(net, B, "127.0.1.2")

        async def ask(name: str) -> dns.message.Message:
            q = dns.message.make_query(name, "A")
            return await dns.asyncquery.udp(q, "127.0.0.1", 5, port, source="127.0.1.1")

        assert [r.to_text() for r in (await ask("db")).answer[0]] == ["127.0.1.2"]
        assert [r.to_text() for r in (await ask("www")).answer[0]] == ["127.0.1.1"]
        web = Path(cs["web"].resolv_conf_path).read_text()
        assert "nameserver 127.0.0.11\nsearch corp\noptions ndots:0\n" in web
        # 127.0.0.11 leads to the network's gateway, set up once per container namespace
        assert redirects == [
            (str(tmp_path / A), "127.0.0.1", 0),
            (str(tmp_path / B), "127.0.0.1", 0),
        ]
        assert "# ExtServers: [host(127.0.0.77)]" in web
        assert svc.table.upstreams("n1", "127.0.1.1") == ("127.0.0.77",)
        assert svc.table.upstreams("n1", "127.0.1.2") == ("10.9.9.9",)  # db's --dns
        assert Path(cs["web"].hosts_path).read_text().endswith("127.0.1.1\t" + A[:12] + "\n")
        # a new daemon finds the plugged-in endpoints' records again
        again = NameService(
            mgr, cs.get, host_resolv_conf=str(host_resolv), port=0,
            redirect=lambda *a: redirects.append(a),
        )  # fmt: skip
        again.restore()
        assert len(redirects) == 2  # the running containers' namespaces have theirs
        assert again.table.lookup("n1", "127.0.1.1", "db") == ["127.0.1.2"]
        assert again.table.upstreams("n1", "127.0.1.2") == ("10.9.9.9",)
        mgr.down(net, eb)  # disconnect: gone at once, everywhere
        assert svc.table.lookup("n1", "127.0.1.1", "db") is None
        assert Path(cs["db"].hosts_path).read_text() == hostsfile.build()
        db = Path(cs["db"].resolv_conf_path).read_text()
        assert "nameserver 10.9.9.9\n" in db and "(legacy)" in db
        # a resolv.conf the user edited stays as it is
        Path(cs["web"].resolv_conf_path).write_text("nameserver 1.1.1.1\n")
        mgr.down(net, ea)
        assert Path(cs["web"].resolv_conf_path).read_text() == "nameserver 1.1.1.1\n"
        # the default bridge: link lines, no resolver
        bridge = mgr.net("b0", "bridge", "127.0.0.9")
        assert svc.server.listening("b0") == []
        mgr.up(bridge, B, "127.0.2.2")
        ea = mgr.up(bridge, A, "127.0.2.1")
        assert (
            Path(cs["web"].hosts_path)
            .read_text()
            .endswith(f"127.0.2.2\tdbalias {B[:12]} db\n127.0.2.1\t{A[:12]}\n")
        )
        mgr.down(bridge, ea)
        assert Path(cs["web"].hosts_path).read_text() == hostsfile.build()
        for hook in mgr.on_network_down:
            hook(net)
        assert svc.server.listening("n1") == []
        svc.close()

    asyncio.run(asyncio.wait_for(main(), 30))


def _names(tmp_path: Path, cid: str, name: str) -> ContainerNames:
    d = tmp_path / name
    d.mkdir()
    (d / "hosts").write_text(hostsfile.build())
    (d / "resolv.conf").write_text("")
    return ContainerNames(
        id=cid, name=name, hostname=cid[:12], domainname="",
        hosts_path=str(d / "hosts"), resolv_conf_path=str(d / "resolv.conf"),
    )  # fmt: skip


def test_127_0_0_11_follows_the_first_user_network(tmp_path: Path) -> None:
    """Docker's resolver address in resolv.conf, redirected to the gateway of the first
    user network the container is on: again when that network goes, and again in a
    new namespace (a restart), but not twice for the same one."""
    host_resolv = tmp_path / "host-resolv.conf"
    host_resolv.write_text("nameserver 10.0.0.53\n")
    c = _names(tmp_path, A, "web")
    mgr = FakeManager(tmp_path)
    redirects: list[tuple[str, str, int]] = []
    svc = NameService(
        mgr, {A: c}.get, host_resolv_conf=str(host_resolv), port=53,
        redirect=lambda *a: redirects.append(a),
    )  # fmt: skip
    svc.install()
    n1 = mgr.net("n1", "front", "10.1.0.1")
    n2 = mgr.net("n2", "back", "10.2.0.1")
    e1 = mgr.up(n1, A, "10.1.0.2")
    e2 = mgr.up(n2, A, "10.2.0.2")
    ns = str(tmp_path / A)
    assert redirects == [(ns, "10.1.0.1", 53)]
    text = Path(c.resolv_conf_path).read_text()
    assert text.startswith(
        "# Generated by bulkhead.\n# This file can be edited; bulkhead will not make further "
        "changes once it\n# has been modified.\n\nnameserver 127.0.0.11\noptions ndots:0\n\n"
        "# Based on host file: '" + str(host_resolv) + "' (internal resolver)\n"
        "# ExtServers: [10.0.0.53]\n"
    )
    mgr.down(n1, e1)  # the first network goes: 127.0.0.11 now leads to the second's gateway
    assert redirects[-1] == (ns, "10.2.0.1", 53)
    assert "nameserver 127.0.0.11\n" in Path(c.resolv_conf_path).read_text()
    # a new namespace (the container restarted) gets its redirect again
    mgr.down(n2, e2)
    assert "nameserver 10.0.0.53\n" in Path(c.resolv_conf_path).read_text()  # legacy again
    (tmp_path / A).unlink()
    mgr.up(n2, A, "10.2.0.2")
    assert redirects[-1] == (ns, "10.2.0.1", 53) and len(redirects) == 3


def test_a_failed_redirect_falls_back_to_the_gateway(tmp_path: Path) -> None:
    from bulkhead.network.dnsredirect import RedirectError

    host_resolv = tmp_path / "host-resolv.conf"
    host_resolv.write_text("nameserver 10.0.0.53\n")
    c = _names(tmp_path, A, "web")
    mgr = FakeManager(tmp_path)

    def broken(*_: Any) -> None:
        raise RedirectError("nft refused the 127.0.0.11 redirect")

    svc = NameService(mgr, {A: c}.get, host_resolv_conf=str(host_resolv), redirect=broken)
    svc.install()
    mgr.up(mgr.net("n1", "front", "10.1.0.1"), A, "10.1.0.2")
    assert "nameserver 10.1.0.1\noptions ndots:0\n" in Path(c.resolv_conf_path).read_text()


def test_records_carry_ndots_and_where_each_upstream_is_asked(tmp_path: Path) -> None:
    """Docker's NdotsSet (an ndots of the host's file or of --dns-option), and upstreams:
    a container's own-loopback --dns is asked inside its namespace, 127.0.0.11 never;
    the daemon's ``dns`` option and the host file's loopback servers from the daemon's."""
    host_resolv = tmp_path / "host-resolv.conf"
    host_resolv.write_text("nameserver 127.0.0.53\nnameserver 10.0.0.53\n")
    mgr = FakeManager(tmp_path)
    cids = [c * 64 for c in "abcde"]
    specs: dict[str, dict[str, Any]] = {
        cids[0]: {},  # the host file's servers
        cids[1]: {"dns_options": ("ndots:3",)},
        cids[2]: {"dns": ("127.0.0.1", "127.0.0.11", "10.9.9.9")},
        cids[3]: {"dns": ("127.0.0.1",)},
    }
    cs = {}
    for i, (cid, extra) in enumerate(specs.items()):
        base = _names(tmp_path, cid, f"c{i}")
        cs[cid] = ContainerNames(**{**base.__dict__, **extra})
    svc = NameService(mgr, cs.get, host_resolv_conf=str(host_resolv), redirect=lambda *a: None)
    svc.install()
    net = mgr.net("n1", "front", "10.1.0.1")
    for i, cid in enumerate(specs):
        mgr.up(net, cid, f"10.1.0.{i + 2}")
    table = svc.table
    assert table.upstreams("n1", "10.1.0.2") == ("127.0.0.53", "10.0.0.53")
    assert not table.ndots_set("n1", "10.1.0.2")
    assert table.ndots_set("n1", "10.1.0.3")

    def inside(client: str) -> tuple[str, ...]:
        me = table.asker("n1", client)
        assert me is not None
        return me.in_container

    assert inside("10.1.0.2") == inside("10.1.0.3") == ()  # the host's: the daemon's side
    assert table.upstreams("n1", "10.1.0.4") == ("127.0.0.1", "10.9.9.9")
    assert inside("10.1.0.4") == ("127.0.0.1",)  # its own loopback, in its namespace
    assert table.upstreams("n1", "10.1.0.5") == ("127.0.0.1",)
    assert inside("10.1.0.5") == ("127.0.0.1",)
    # the resolver finds the namespace from the container id
    assert svc.server.netns_path is not None
    assert svc.server.netns_path(cids[3]) == str(mgr.ns_path(cids[3]))
    # the daemon's own dns option: its loopback servers are the host's
    daemon_dns = NameService(
        FakeManager(tmp_path), {cids[0]: cs[cids[0]]}.get, default_dns=("127.0.0.53",),
        host_resolv_conf=str(host_resolv), redirect=lambda *a: None,
    )  # fmt: skip
    daemon_dns.install()
    m2 = daemon_dns.manager
    m2.up(m2.net("n2", "back", "10.2.0.1"), cids[0], "10.2.0.2")
    assert daemon_dns.table.upstreams("n2", "10.2.0.2") == ("127.0.0.53",)
    me = daemon_dns.table.asker("n2", "10.2.0.2")
    assert me is not None and me.in_container == ()


def test_link_lines_name_both_addresses_of_the_linked_container(tmp_path: Path) -> None:
    """A legacy link on the default bridge: a line per address (moby: IPv4, then IPv6)."""
    host_resolv = tmp_path / "host-resolv.conf"
    host_resolv.write_text("nameserver 10.0.0.53\n")
    web = ContainerNames(**{**_names(tmp_path, A, "web").__dict__, "links": (("db", "d"),)})
    db = _names(tmp_path, B, "db")
    cs = {A: web, B: db, "db": db}
    mgr = FakeManager(tmp_path)
    svc = NameService(mgr, cs.get, host_resolv_conf=str(host_resolv), redirect=lambda *a: None)
    svc.install()
    bridge = mgr.net("b0", "bridge", "172.17.0.1")
    mgr.up(bridge, B, "172.17.0.3", ipv6="fd00::3")
    mgr.up(bridge, A, "172.17.0.2")
    assert (
        Path(web.hosts_path)
        .read_text()
        .endswith(f"172.17.0.3\td {B[:12]} db\nfd00::3\td {B[:12]} db\n172.17.0.2\t{A[:12]}\n")
    )
