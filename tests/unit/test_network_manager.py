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
        )
        with m.store.tx() as db:
            m.store.add_network(db, net)
            m.store.allocate(db, net.id, net.pools[0].gateway, "gateway")
    return m


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
    with pytest.raises(NetworkConflict, match="has active endpoints"):
        m.remove_network("user")
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
