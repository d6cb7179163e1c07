"""NetworkManager without netlink: endpoints, addresses, checks, collecting half-made ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from bulkhead.errors import (
    NetworkConflict,
    NetworkForbidden,
    NoSuchNetwork,
    SpecError,
    UnsupportedError,
)
from bulkhead.network.manager import NetworkManager
from bulkhead.network.store import Network, Pool

C1, C2 = "1" * 64, "2" * 64


def manager(tmp_path: Path) -> NetworkManager:
    m = NetworkManager(tmp_path / "root", tmp_path / "exec", default_bridge="none")
    m.ensure_predefined()
    for nid, name, subnet in (("b", "bridge", "172.17.0.0/16"), ("e", "user", "10.3.0.0/24")):
        net = Network(
            id=nid * 64,
            name=name,
            bridge="bh0" if name == "bridge" else "br-x",
            pools=[Pool(subnet=subnet, gateway=subnet.replace("0/", "1/").split("/")[0])],
            predefined=name == "bridge",
            created="2026-11-30T12:00:00.000000000Z",
            bridge_made=True,  # as if this daemon made it
        )
        with m.store.tx() as db:
            m.store.add_network(db, net)
            m.store.allocate(db, net.id, net.pools[0].gateway, "gateway")
    return m


def running(m: NetworkManager, container_id: str, up: bool = True) -> None:
    """Mark ``container_id``'s endpoints plugged in (``up``) or not, as a start or an exit
    does (no netlink in unit tests)."""
    with m.store.tx() as db:
        for n, ep in enumerate(m.endpoints(container_id)):
            ep.host_ifname, ep.ifname = (f"vethtest{n}", f"eth{n}") if up else ("", "")
            m.store.put_endpoint(db, ep)


def test_predefined_networks_and_their_protection(tmp_path: Path) -> None:
    m = manager(tmp_path)
    assert [n.name for n in m.networks()] == ["none", "host", "bridge", "user"]
    assert m.get("host").driver == "host" and m.get("none").driver == "null"
    for name in ("bridge", "host", "none"):
        with pytest.raises(NetworkForbidden, match="is a pre-defined network"):
            m.remove_network(name)
    with pytest.raises(NetworkForbidden, match='only one instance of "host"'):
        m.create_network("h2", driver="host")
    with pytest.raises(NoSuchNetwork, match="plugin"):
        m.create_network("o1", driver="overlay")
    with pytest.raises(SpecError, match="invalid network name"):
        m.create_network("-bad")
    with pytest.raises(NoSuchNetwork, match="network nosuch not found"):
        m.get("nosuch")
    assert m.get("e" * 12).name == "user"  # an id prefix


def test_attach_addresses_checks_and_forget(tmp_path: Path) -> None:
    m = manager(tmp_path)
    bridge, user = m.get("bridge"), m.get("user")
    ep = m.attach(C1, bridge)
    assert (ep.ipv4, ep.mac) == ("172.17.0.2", "02:42:ac:11:00:02")
    with pytest.raises(SpecError, match="user defined networks only"):
        m.attach(C2, bridge, ipv4="172.17.0.9")
    with pytest.raises(SpecError, match="network-scoped alias"):
        m.attach(C2, bridge, aliases=["x"])
    with pytest.raises(NetworkConflict, match="already exists in network bridge"):
        m.attach(C1, bridge)
    s = m.attach(C2, user, ipv4="10.3.0.9", aliases=["db"], mac="02:00:00:00:00:01")
    assert (s.ipv4, s.aliases, s.mac) == ("10.3.0.9", ["db"], "02:00:00:00:00:01")
    with pytest.raises(NetworkConflict, match="Address already in use"):
        m.attach(C1, user, ipv4="10.3.0.9")
    with pytest.raises(SpecError, match="invalid MAC"):
        m.attach(C1, user, mac="zz")
    assert [e.network_id for e in m.endpoints(C1)] == [bridge.id]  # nothing changed
    running(m, C2)
    with pytest.raises(NetworkConflict) as err:
        m.remove_network("user", {C2: "web"})
    # moby's words: the running containers' endpoints, by name and short endpoint id
    assert str(err.value) == (
        'error while removing network: network user has active endpoints (name:"web" '
        f'id:"{s.id[:12]}")'
    )
    running(m, C2, up=False)
    settings = m.settings(C2, "web")
    assert settings["user"]["IPAddress"] == "10.3.0.9"
    assert settings["user"]["IPAMConfig"] == {"IPv4Address": "10.3.0.9", "IPv6Address": ""}
    assert settings["user"]["DNSNames"] == ["web", "db", C2[:12]]
    assert m.settings(C1, "a")["bridge"]["DNSNames"] is None
    m.detach(C2, user)
    with pytest.raises(NoSuchNetwork, match="is not connected"):
        m.detach(C2, user)
    assert m.attach(C1, user).ipv4 == "10.3.0.2"
    m.forget_container(C1)
    assert m.endpoints(C1) == []
    assert m.attach(C2, bridge).ipv4 == "172.17.0.2"  # freed


def test_collect_forgets_endpoints_of_unknown_containers(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.attach(C1, m.get("bridge"))
    m.attach(C2, m.get("bridge"))
    assert m.collect({C1}) == [C2]
    assert m.endpoints(C2) == [] and len(m.endpoints(C1)) == 1
    # a new manager on the same root (a restarted daemon) keeps C1's address
    again = NetworkManager(tmp_path / "root", tmp_path / "exec", default_bridge="none")
    assert again.endpoints(C1)[0].ipv4 == "172.17.0.2"


def test_prune_filters(tmp_path: Path) -> None:
    m = manager(tmp_path)
    with pytest.raises(SpecError, match="invalid filter 'until=soon'"):
        m.prune({"until": ["soon"]})
    with pytest.raises(SpecError, match="invalid filter 'driver'"):
        m.prune({"driver": ["bridge"]})
    assert [n.name for n in m.networks()] == ["none", "host", "bridge", "user"]
    # nothing matches: "user" was made after that time, and has no label
    assert m.prune({"until": ["2026-11-30T11:00:00Z"]}) == []
    assert m.prune({"label": ["team"]}) == []
    # the removal itself refuses in the host's namespace (the suite's guard)
    with pytest.raises(UnsupportedError, match="host's network namespace"):
        m.prune({})
    assert [n.name for n in m.networks()] == ["none", "host", "bridge", "user"]


@pytest.fixture
def fake_links(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The bridge driver's link calls recorded, not made (and the suite's guard lifted for
    them: nothing here reaches netlink)."""
    from bulkhead.network import bridge

    deleted: list[str] = []
    monkeypatch.setattr(NetworkManager, "_guard", staticmethod(lambda: None))
    monkeypatch.setattr(bridge, "delete_link", deleted.append)
    monkeypatch.setattr(bridge, "remove_addresses", lambda name, addrs: None)
    return deleted


def test_remove_a_network_only_stopped_containers_use(
    tmp_path: Path, fake_links: list[str]
) -> None:
    """Docker's: stopped containers have no endpoint in libnetwork, the network goes; their
    start then fails (``network <id> not found``) until they are disconnected from it."""
    m = manager(tmp_path)
    user = m.get("user")
    ep = m.attach(C1, user, ipv4="10.3.0.9", aliases=["db"], name="web")
    m.remove_network("user")
    assert fake_links == ["br-x"] and m.find("user") is None
    assert [e.id for e in m.endpoints(C1)] == [ep.id]  # the stopped container keeps it
    doc = m.settings(C1, "web")["user"]
    assert (doc["NetworkID"], doc["IPAddress"], doc["EndpointID"]) == (user.id, "", "")
    assert doc["Aliases"] == ["db"] and doc["IPAMConfig"]["IPv4Address"] == "10.3.0.9"
    with pytest.raises(NoSuchNetwork, match=f"^network {user.id} not found$"):
        m.connect_live(C1, ep)
    assert not m.endpoints(C1)[0].host_ifname
    # the address went with the network: a new network of that subnet hands it out again
    again = Network(id="f" * 64, name="user", bridge="br-y", pools=user.pools)
    with m.store.tx() as db:
        m.store.add_network(db, again)
    assert m.attach(C2, again, ipv4="10.3.0.9").ipv4 == "10.3.0.9"
    with pytest.raises(NoSuchNetwork, match="network nosuch not found"):
        m.detach_gone(C1, "nosuch")
    m.detach_gone(C1, "user")  # by the name the network had
    assert m.endpoints(C1) == []


def test_remove_refuses_an_endpoint_coming_up_and_the_other_way_round(
    tmp_path: Path, fake_links: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A container starting while its network is removed: whichever comes second loses,
    and nothing is left half-made (no endpoint plugged into a network that is gone)."""
    m = manager(tmp_path)
    ep = m.attach(C1, m.get("user"), name="web")
    seen: list[str] = []

    def plug(container_id: str, e: object, net: object) -> object:
        with pytest.raises(NetworkConflict, match='active endpoints \\(name:"web"'):
            m.remove_network("user", {C1: "web"})  # the removal arrives mid-start
        seen.append("plugged")
        return e

    monkeypatch.setattr(m, "_plug", plug)
    m.connect_live(C1, ep)
    assert seen == ["plugged"] and m.find("user") is not None
    assert m.endpoints(C1)[0].host_ifname.startswith("veth")

    # and the other way round: a removal that began first makes the start fail
    m2 = manager(tmp_path / "two")
    ep2 = m2.attach(C2, m2.get("user"))
    net = m2.get("user")
    net.removing = True
    with m2.store.tx() as db:
        m2.store.put_network(db, net)
    with pytest.raises(NoSuchNetwork, match="not found"):
        m2.connect_live(C2, ep2)
    with pytest.raises(NoSuchNetwork, match="not found"):
        m2.attach(C1, net)
    assert [n.name for n in m2.networks()] == ["none", "host", "bridge"]
    assert not m2.endpoints(C2)[0].host_ifname


def test_a_removal_a_killed_daemon_left_is_finished_at_start(
    tmp_path: Path, fake_links: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    m = manager(tmp_path)
    net = m.get("user")
    net.removing = True  # the daemon died between the two transactions of remove_network
    with m.store.tx() as db:
        m.store.put_network(db, net)
    again = NetworkManager(tmp_path / "root", tmp_path / "exec", default_bridge="none")
    monkeypatch.setattr(again, "_bridge_up", lambda net: False)
    monkeypatch.setattr(again.nat, "restore", lambda: None)
    again.start_up()
    assert fake_links == ["br-x"]
    assert "user" not in [n.name for n in again.store.networks()]


def test_prune_removes_networks_only_stopped_containers_use(
    tmp_path: Path, fake_links: list[str]
) -> None:
    m = manager(tmp_path)
    m.attach(C1, m.get("user"))
    with m.store.tx() as db:
        m.store.add_network(db, Network(id="d" * 64, name="busy", bridge="br-d"))
    m.attach(C2, m.get("busy"))
    running(m, C2)
    assert m.prune({}) == ["user"]  # as Docker: C1 is stopped, C2 runs
    assert [n.name for n in m.networks()] == ["none", "host", "bridge", "busy"]


def test_docker_words_for_names_ids_and_created(tmp_path: Path) -> None:
    m = manager(tmp_path)
    for name in ("bridge", "host", "none"):
        with pytest.raises(NetworkForbidden) as err:
            m.create_network(name)
        assert str(err.value) == f"operation is not permitted on predefined {name} network "
    with m.store.tx() as db:
        m.store.add_network(db, Network(id="e" * 63 + "f", name="other", bridge="br-o"))
    with pytest.raises(SpecError) as amb:
        m.get("eee")
    assert str(amb.value) == "network eee is ambiguous (2 matches found based on ID prefix)"
    with pytest.raises(SpecError, match="host network mode"):
        m.attach(C1, m.get("host"))
    with pytest.raises(SpecError, match=r"in private \(none\) mode"):
        m.attach(C1, m.get("none"))
    m.attach(C1, m.get("user"), name="web")
    with pytest.raises(NetworkConflict, match=r"^endpoint with name web already exists in"):
        m.attach(C1, m.get("user"), name="web")


def test_created_is_go_rfc3339nano(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Created`` as Go's RFC3339Nano: trailing zeros of the fraction dropped."""
    import time

    from bulkhead.network.manager import _now

    monkeypatch.setattr(time, "time", lambda: 1.5)
    monkeypatch.setattr(time, "time_ns", lambda: 1_500_000_000)
    assert _now() == "1970-01-01T00:00:01.5Z"


def test_static_addresses_need_a_user_configured_subnet(tmp_path: Path) -> None:
    """moby's validateEndpointIPAddress, its words (``invalid endpoint settings:``...)."""
    m = manager(tmp_path)
    auto = Network(
        id="a" * 64,
        name="auto",
        bridge="br-a",
        pools=[Pool(subnet="172.18.0.0/16", gateway="172.18.0.1", auto=True)],
    )
    with m.store.tx() as db:
        m.store.add_network(db, auto)
        m.store.allocate(db, auto.id, "172.18.0.1", "gateway")
    with pytest.raises(SpecError) as err:
        m.attach(C1, m.get("auto"), ipv4="172.18.0.9")
    assert str(err.value) == (
        "invalid endpoint settings:\nuser specified IP address is supported only when "
        "connecting to networks with user configured subnets"
    )
    assert m.attach(C1, m.get("auto")).ipv4 == "172.18.0.2"  # dynamic: fine
    with pytest.raises(SpecError) as err:
        m.attach(C2, m.get("user"), ipv4="10.9.0.1")
    assert str(err.value) == (
        "invalid endpoint settings:\nno configured subnet or ip-range contain the IP address "
        "10.9.0.1"
    )
    with pytest.raises(SpecError, match=r"^invalid IPv4 address: x$"):
        m.attach(C2, m.get("user"), ipv4="x")
    assert m.endpoints(C2) == []


def test_create_reads_enable_ipv4_ipv6_as_moby_and_keeps_ipam_options(
    tmp_path: Path, fake_links: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bulkhead.network import bridge, ipam

    m = manager(tmp_path)
    monkeypatch.setattr(bridge, "link_exists", lambda name: False)
    monkeypatch.setattr(m, "_bridge_up", lambda net: True)
    monkeypatch.setattr(ipam, "routed_subnets", lambda: [])
    opt6 = "com.docker.network.enable_ipv6"
    net = m.create_network("six", options={opt6: "true"}, ipam_options={})
    assert net.enable_ipv6 and any(":" in p.subnet for p in net.pools)
    doc = m.network_doc(net)
    assert doc["EnableIPv6"] is True and doc["IPAM"]["Options"] == {}
    assert doc["Options"] == {opt6: "true"}
    # the request's field wins, and the option it overrides is dropped (moby)
    net = m.create_network("four", enable_ipv6=False, options={opt6: "true"})
    assert not net.enable_ipv6 and net.options == {}
    assert m.network_doc(net)["IPAM"]["Options"] is None
    with pytest.raises(SpecError, match=f'^driver-opt "{opt6}" is not a valid bool$'):
        m.create_network("bad", options={opt6: "yes"})
    with pytest.raises(UnsupportedError, match="IPv6-only"):
        m.create_network("v6only", enable_ipv4=False, enable_ipv6=True)
    with pytest.raises(UnsupportedError, match="IPv6-only"):
        m.create_network("v6only", options={"com.docker.network.enable_ipv4": "false"})
    assert "bad" not in [n.name for n in m.networks()]
    assert "v6only" not in [n.name for n in m.networks()]


def test_inspect_status_counts_addresses_as_moby(tmp_path: Path) -> None:
    """``Status.IPAM.Subnets`` (API 1.52+): in use = network, gateway, broadcast and the
    endpoints' addresses; available = what the range has left for dynamic ones."""
    m = manager(tmp_path)
    m.attach(C1, m.get("user"))
    m.attach(C2, m.get("user"))
    doc = m.network_doc(m.get("user"), {}, status=True)
    assert doc["Status"] == {
        "IPAM": {"Subnets": {"10.3.0.0/24": {"IPsInUse": 5, "DynamicIPsAvailable": 251}}}
    }
    ranged = Network(
        id="9" * 64,
        name="ranged",
        bridge="br-r",
        pools=[
            Pool(subnet="10.4.0.0/24", gateway="10.4.0.1", ip_range="10.4.0.128/25"),
            Pool(subnet="fd00:4::/64", gateway="fd00:4::1"),
        ],
        enable_ipv6=True,
    )
    with m.store.tx() as db:
        m.store.add_network(db, ranged)
        for p in ranged.pools:
            m.store.allocate(db, ranged.id, p.gateway, "gateway")
    m.attach(C1, m.get("ranged"))
    subnets = m.network_doc(m.get("ranged"), {}, status=True)["Status"]["IPAM"]["Subnets"]
    # the broadcast (10.4.0.255) is in the range, the gateway is not
    assert subnets["10.4.0.0/24"] == {"IPsInUse": 4, "DynamicIPsAvailable": 126}
    assert subnets["fd00:4::/64"] == {"IPsInUse": 3, "DynamicIPsAvailable": (1 << 64) - 3}
    assert "Status" not in m.network_doc(m.get("ranged"), {})  # the list has none


def test_aux_addresses_are_reserved_and_shown(
    tmp_path: Path, fake_links: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--aux-address``: kept from the endpoints, in ``IPAM.Config`` (it was ignored)."""
    m = manager(tmp_path)
    monkeypatch.setattr(m, "_bridge_up", lambda net: True)
    monkeypatch.setattr("bulkhead.network.bridge.link_exists", lambda name: False)
    pool = Pool(subnet="10.8.0.0/29", aux={"router": "10.8.0.2", "printer": "10.8.0.3"})
    net = m.create_network("aux", pools=[pool])
    config = m.network_doc(net)["IPAM"]["Config"]
    assert config == [
        {
            "Subnet": "10.8.0.0/29",
            "Gateway": "10.8.0.1",
            "AuxiliaryAddresses": {"printer": "10.8.0.3", "router": "10.8.0.2"},
        }
    ]
    assert m.attach(C1, net).ipv4 == "10.8.0.4"
    with pytest.raises(NetworkConflict, match="Address already in use"):
        m.attach(C2, net, ipv4="10.8.0.2")


def test_cli_pairs_aux_addresses_with_their_subnet() -> None:
    from bulkhead.cli.flags import UsageError
    from bulkhead.cli.networks import ipam_config

    config = ipam_config(["10.1.0.0/16", "fd00::/64"], [], [], ["a=fd00::5", "b=10.1.0.5"])
    assert config == [
        {"Subnet": "10.1.0.0/16", "AuxiliaryAddresses": {"b": "10.1.0.5"}},
        {"Subnet": "fd00::/64", "AuxiliaryAddresses": {"a": "fd00::5"}},
    ]
    with pytest.raises(UsageError, match=r"no matching subnet for aux-address 10\.9\.0\.1"):
        ipam_config(["10.1.0.0/16"], [], [], ["c=10.9.0.1"])


def test_bip_fixed_cidr_and_default_address_pools(
    tmp_path: Path, fake_links: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dockerd's daemon options; a changed bip applies at the next start."""
    from bulkhead.network import bridge, ipam

    monkeypatch.setattr(ipam, "routed_subnets", lambda: [])
    removed: list[tuple[str, list[str]]] = []
    monkeypatch.setattr(
        bridge,
        "remove_addresses",
        lambda name, addrs: removed.append((name, [f"{a.address}/{a.prefixlen}" for a in addrs])),
    )

    def daemon(**options: object) -> NetworkManager:
        m = NetworkManager(tmp_path / "root", tmp_path / "exec", **options)  # type: ignore[arg-type]
        monkeypatch.setattr(m, "_bridge_up", lambda net: True)
        monkeypatch.setattr(m.nat, "restore", lambda: None)
        return m

    m = daemon(bip="10.9.0.1/24", fixed_cidr="10.9.0.128/25", address_pools=[("10.10.0.0/16", 24)])
    m.start_up()
    assert m.get("bridge").pools == [
        Pool(subnet="10.9.0.0/24", gateway="10.9.0.1", ip_range="10.9.0.128/25")
    ]
    ep = m.attach(C1, m.get("bridge"))
    assert (ep.ipv4, ep.mac) == ("10.9.0.128", "02:42:0a:09:00:80")
    monkeypatch.setattr(bridge, "link_exists", lambda name: False)
    assert m.create_network("user").pools[0].subnet == "10.10.0.0/24"  # from the pools
    assert m.create_network("user2").pools[0].subnet == "10.10.1.0/24"

    # another bip at the next start: the stopped container's endpoint re-addressed, the old
    # gateway address taken off the bridge
    m = daemon(bip="10.11.0.1/24")
    m.start_up()
    assert m.get("bridge").pools == [Pool(subnet="10.11.0.0/24", gateway="10.11.0.1")]
    (ep,) = m.endpoints(C1)
    assert (ep.ipv4, ep.mac) == ("10.11.0.2", "02:42:0a:0b:00:02")
    assert removed == [("bh0", ["10.9.0.1/24"])]
    assert m.attach(C2, m.get("bridge")).ipv4 == "10.11.0.3"

    # a running container (live restore) keeps the old one, until it stopped
    running(m, C1)
    m = daemon(bip="10.12.0.1/24")
    m.start_up()
    assert m.get("bridge").pools[0].subnet == "10.11.0.0/24"
    running(m, C1, up=False)

    # a subnet another network has: the daemon does not start
    with pytest.raises(NetworkConflict, match="Pool overlaps"):
        daemon(bip="10.10.0.1/16").start_up()
    assert m.get("bridge").pools[0].subnet == "10.11.0.0/24"  # nothing changed


def test_concurrent_attaches_never_share_an_address(tmp_path: Path) -> None:
    """Two containers created at once on one network (the daemon's worker threads): the
    IPAM's read and write are one transaction, so each gets its own address."""
    import threading

    m = manager(tmp_path)
    user = m.get("user")
    ids = [f"{n:064x}" for n in range(1, 41)]
    errors: list[BaseException] = []

    def work(chunk: list[str]) -> None:
        try:
            for cid in chunk:
                m.attach(cid, user)
        except BaseException as exc:  # handed to the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    addresses = [m.endpoints(cid)[0].ipv4 for cid in ids]
    assert len(set(addresses)) == 40 and "10.3.0.1" not in addresses


def test_host_and_none_documents_as_docker_28(tmp_path: Path) -> None:
    """Docker 28's inspect of host and none: EnableIPv4 true, IPAM.Config null."""
    m = manager(tmp_path)
    for name in ("host", "none"):
        doc = m.network_doc(m.get(name), {})
        assert doc["EnableIPv4"] is True and doc["EnableIPv6"] is False
        assert doc["IPAM"] == {"Driver": "default", "Options": None, "Config": None}
        assert doc["Options"] == {} and doc["Labels"] == {} and doc["Containers"] == {}
    doc = m.network_doc(m.get("user"), {})
    assert doc["IPAM"]["Config"] == [{"Subnet": "10.3.0.0/24", "Gateway": "10.3.0.1"}]


def test_an_exits_hooks_see_every_endpoint_down(tmp_path: Path) -> None:
    """A container on two networks exiting: each network's ``on_endpoint_down`` hook runs
    once all its endpoints are unplugged (the name service then rewrites its files once for
    a container that is gone, and redoes no 127.0.0.11 redirect into a dying namespace)."""
    m = manager(tmp_path)
    m.attach(C1, m.get("user"))
    m.attach(C1, m.get("bridge"))
    running(m, C1)
    seen: list[list[str]] = []
    m.on_endpoint_down.append(lambda net, ep: seen.append([e.host_ifname for e in m.endpoints(C1)]))
    m.down(C1)
    assert seen == [["", ""], ["", ""]]
    assert not any(e.host_ifname for e in m.endpoints(C1))
