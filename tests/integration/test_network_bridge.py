"""The bridge driver and IPAM through the daemon, in a network namespace of the test's own.

Every daemon here runs in ``bh-t-<random>`` (``daemon_factory(netns=True)``):
its bridges, veths and addresses live there and go with it; traffic stays
between that namespace and its containers.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from tests.integration.engine_fixtures import Daemon


def ok(r: Any) -> str:
    assert r.returncode == 0, f"{r.args}: {r.stderr}"
    return str(r.stdout)


@pytest.fixture
def ndaemon(daemon_factory: Any) -> Daemon:
    d: Daemon = daemon_factory(netns=True)
    return d


def inspect(d: Daemon, ref: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(ok(d.docker("inspect", ref)))[0]
    return doc


def test_default_bridge_address_gateway_and_peer(ndaemon: Daemon) -> None:
    d = ndaemon
    names = [link["ifname"] for link in d.links()]
    assert "bh0" in names
    a = ok(d.docker("run", "-d", "--name", "ca", "busybox", "sleep", "100")).strip()
    info = inspect(d, a)
    ns = info["NetworkSettings"]
    assert info["HostConfig"]["NetworkMode"] == "bridge"
    assert ns["IPAddress"] == "172.17.0.2" and ns["Gateway"] == "172.17.0.1"
    assert ns["IPPrefixLen"] == 16 and ns["MacAddress"] == "02:42:ac:11:00:02"
    assert ns["Networks"]["bridge"]["IPAddress"] == "172.17.0.2"
    assert ns["SandboxKey"].endswith("/netns/" + a)
    out = ok(d.docker("exec", "ca", "ip", "-o", "addr", "show", "eth0"))
    assert "172.17.0.2/16" in out
    assert "default via 172.17.0.1" in ok(d.docker("exec", "ca", "ip", "route"))
    ok(d.docker("exec", "ca", "ping", "-c", "1", "-W", "5", "172.17.0.1"))
    out = ok(d.docker("run", "--rm", "busybox", "ping", "-c", "1", "-W", "5", "172.17.0.2"))
    assert "1 packets received" in out
    # the gateway is the bridge's address, in the daemon's namespace
    assert "inet 172.17.0.1/16" in d.in_netns("ip", "-o", "addr", "show", "bh0").stdout
    ok(d.docker("rm", "-f", "ca"))
    assert wait_links(d, "veth") == []


def links(d: Daemon, prefix: str) -> list[str]:
    return sorted(str(x["ifname"]) for x in d.links() if str(x["ifname"]).startswith(prefix))


def wait_links(d: Daemon, prefix: str, count: int = 0) -> list[str]:
    """The links named ``prefix...`` once there are ``count`` of them (a namespace's veths
    go with it, a moment after its file is unmounted: the kernel's clean-up is deferred)."""
    deadline = time.monotonic() + 20
    found = links(d, prefix)
    while len(found) != count and time.monotonic() < deadline:
        time.sleep(0.05)
        found = links(d, prefix)
    return found


def network_names(d: Daemon) -> list[str]:
    return sorted(ok(d.docker("network", "ls", "--format", "{{.Name}}")).split())


def test_network_create_ls_inspect_static_ip_rm(ndaemon: Daemon) -> None:
    d = ndaemon
    assert network_names(d) == ["bridge", "host", "none"]
    nid = ok(d.docker(
        "network", "create", "--subnet", "10.50.0.0/24", "--gateway", "10.50.0.254",
        "--ip-range", "10.50.0.128/25", "--label", "k=v", "--opt",
        "com.docker.network.driver.mtu=1400", "front",
    )).strip()  # fmt: skip
    assert len(nid) == 64
    assert network_names(d) == ["bridge", "front", "host", "none"]
    doc = json.loads(ok(d.docker("network", "inspect", "front")))[0]
    assert doc["Id"] == nid and doc["Driver"] == "bridge" and doc["Scope"] == "local"
    assert doc["IPAM"]["Config"] == [
        {"Subnet": "10.50.0.0/24", "IPRange": "10.50.0.128/25", "Gateway": "10.50.0.254"}
    ]
    assert doc["Labels"] == {"k": "v"}
    bridge_name = "br-" + nid[:12]
    assert bridge_name in links(d, "br-")
    # the first dynamic address comes from the range; --ip takes a given one
    ok(d.docker("run", "-d", "--name", "c1", "--network", "front", "busybox", "sleep", "100"))
    ok(d.docker(
        "run", "-d", "--name", "c2", "--network", "front", "--ip", "10.50.0.7", "busybox",
        "sleep", "100",
    ))  # fmt: skip
    n1 = inspect(d, "c1")["NetworkSettings"]["Networks"]["front"]
    n2 = inspect(d, "c2")["NetworkSettings"]["Networks"]["front"]
    assert (n1["IPAddress"], n1["Gateway"], n1["IPPrefixLen"]) == ("10.50.0.128", "10.50.0.254", 24)
    assert n2["IPAddress"] == "10.50.0.7" and n2["IPAMConfig"]["IPv4Address"] == "10.50.0.7"
    assert n1["NetworkID"] == nid and len(n1["EndpointID"]) == 64
    assert "mtu 1400" in ok(d.docker("exec", "c1", "ip", "link", "show", "eth0"))
    ok(d.docker("exec", "c1", "ping", "-c", "1", "-W", "5", "10.50.0.7"))
    doc = json.loads(ok(d.docker("network", "inspect", "front")))[0]
    assert sorted(v["Name"] for v in doc["Containers"].values()) == ["c1", "c2"]
    assert doc["Containers"][inspect(d, "c2")["Id"]]["IPv4Address"] == "10.50.0.7/24"
    # in use: 409 and nothing changed
    r = d.docker("network", "rm", "front")
    assert r.returncode != 0 and "has active endpoints" in r.stderr
    ok(d.docker("stop", "-t", "0", "c1"))  # Containers: the running ones, as Docker
    doc = json.loads(ok(d.docker("network", "inspect", "front")))[0]
    assert [v["Name"] for v in doc["Containers"].values()] == ["c2"]
    r = d.docker("run", "--rm", "--network", "front", "--ip", "10.50.0.7", "busybox", "true")
    assert r.returncode == 125 and "Address already in use" in r.stderr
    ok(d.docker("rm", "-f", "c1", "c2"))
    assert wait_links(d, "veth") == []
    ok(d.docker("network", "rm", "front"))
    assert links(d, "br-") == []
    assert network_names(d) == ["bridge", "host", "none"]


def test_bad_input_changes_nothing(ndaemon: Daemon) -> None:
    d = ndaemon
    ok(d.docker("network", "create", "--subnet", "10.60.0.0/16", "one"))
    before = network_names(d), links(d, "br-")
    cases = [
        (("network", "create", "--subnet", "10.60.5.0/24", "two"), "Pool overlaps"),
        (("network", "create", "--subnet", "10.61.0.0", "two"), "invalid CIDR address"),
        (("network", "create", "--subnet", "10.300.0.0/16", "two"), "invalid CIDR address"),
        (
            ("network", "create", "--subnet", "10.62.0.0/16", "--gateway", "10.63.0.1", "two"),
            "gateway 10.63.0.1",  # the CLI's check (the daemon's: "is not in subnet")
        ),
        (("network", "create", "one"), "already exists"),
        (("network", "create", "--subnet", "10.64.0.5/16", "two"),
         "invalid network config:\ninvalid subnet 10.64.0.5/16: it should be 10.64.0.0/16"),
        (("network", "create", "bridge"), "operation is not permitted on predefined bridge network"),
        (("network", "create", "--scope", "swarm", "two"), "only local networks are supported"),
        (("network", "create", "--config-only", "two"), "configuration-only networks"),
        (("network", "create", "--ingress", "two"), "ingress networks need a swarm"),
        (("network", "rm", "bridge"), "is a pre-defined network and cannot be removed"),
        (("network", "rm", "nosuch"), "not found"),
        (("network", "connect", "nosuch", "x1"), "not found"),
        (("run", "--rm", "--network", "one", "--ip", "10.99.0.5", "busybox", "true"),
         "no configured subnet or ip-range contain the IP address 10.99.0.5"),
        (("run", "--rm", "--ip", "172.17.0.9", "busybox", "true"),
         "user specified IP address is supported on user defined networks only"),
        (("run", "--rm", "--network", "nosuch", "busybox", "true"), "network nosuch not found"),
    ]  # fmt: skip
    for argv, message in cases:
        r = d.docker(*argv)
        assert r.returncode != 0 and message in r.stderr, (argv, r.stderr)
    assert (network_names(d), links(d, "br-")) == before
    assert ok(d.docker("ps", "-aq")) == ""
    # --aux-address: reserved (a container never gets it), shown in IPAM.Config
    ok(d.docker("network", "create", "--subnet", "10.65.0.0/29", "--aux-address", "r=10.65.0.2",
                "aux"))  # fmt: skip
    doc = json.loads(ok(d.docker("network", "inspect", "aux")))[0]
    assert doc["IPAM"]["Config"][0]["AuxiliaryAddresses"] == {"r": "10.65.0.2"}
    ok(d.docker("create", "--name", "x1", "--network", "aux", "busybox", "true"))
    assert inspect(d, "x1")["NetworkSettings"]["Networks"]["aux"]["IPAddress"] == "10.65.0.3"
    ok(d.docker("rm", "x1"))


def test_connect_disconnect_live(ndaemon: Daemon) -> None:
    d = ndaemon
    ok(d.docker("network", "create", "--subnet", "10.70.0.0/24", "side"))
    ok(d.docker("run", "-d", "--name", "live", "busybox", "sleep", "100"))
    ok(d.docker("network", "connect", "--ip", "10.70.0.9", "--alias", "al", "side", "live"))
    out = ok(d.docker("exec", "live", "ip", "-o", "addr", "show", "eth1"))
    assert "10.70.0.9/24" in out
    nets = inspect(d, "live")["NetworkSettings"]["Networks"]
    assert sorted(nets) == ["bridge", "side"]
    assert nets["side"]["Aliases"] == ["al"] and nets["side"]["IPAddress"] == "10.70.0.9"
    for key in ("side", nets["side"]["NetworkID"], "bridge"):
        out = ok(d.docker("ps", "--filter", f"network={key}", "--format", "{{.Names}}"))
        assert out.split() == ["live"], key
    # the default route stays on the first network
    assert "default via 172.17.0.1" in ok(d.docker("exec", "live", "ip", "route"))
    r = d.docker("network", "connect", "side", "live")
    assert r.returncode != 0 and "already exists" in r.stderr
    ok(d.docker("network", "disconnect", "side", "live"))
    r = d.docker("exec", "live", "ip", "link", "show", "eth1")
    assert r.returncode != 0
    assert sorted(inspect(d, "live")["NetworkSettings"]["Networks"]) == ["bridge"]
    assert len(links(d, "veth")) == 1
    # disconnected from every network, a container starts again with a loopback only
    ok(d.docker("run", "-d", "--name", "alone", "--network", "side", "busybox", "sleep", "100"))
    ok(d.docker("network", "disconnect", "side", "alone"))
    ok(d.docker("restart", "-t", "0", "alone"))
    assert ok(d.docker("exec", "alone", "ls", "/sys/class/net")).split() == ["lo"]
    assert inspect(d, "alone")["NetworkSettings"]["Networks"] == {}
    ok(d.docker("create", "--name", "never", "--network", "side", "busybox", "sleep", "100"))
    ok(d.docker("network", "disconnect", "side", "never"))
    ok(d.docker("start", "never"))
    assert ok(d.docker("exec", "never", "ls", "/sys/class/net")).split() == ["lo"]
    ok(d.docker("rm", "-f", "alone", "never"))
    # a stopped container: connected now, plugged in at its start
    ok(d.docker("create", "--name", "later", "busybox", "sleep", "100"))
    ok(d.docker("network", "connect", "side", "later"))
    ok(d.docker("start", "later"))
    assert "10.70.0.2/24" in ok(d.docker("exec", "later", "ip", "-o", "addr", "show", "eth1"))
    ok(d.docker("rm", "-f", "live", "later"))
    assert wait_links(d, "veth") == []


def test_restart_daemon_kill_and_removal(ndaemon: Daemon) -> None:
    d = ndaemon
    ok(d.docker("run", "-d", "--name", "r1", "busybox", "sleep", "100"))
    ok(d.docker("run", "-d", "--name", "r2", "busybox", "sleep", "100"))
    assert inspect(d, "r2")["NetworkSettings"]["IPAddress"] == "172.17.0.3"
    ok(d.docker("restart", "-t", "0", "r2"))
    assert inspect(d, "r2")["NetworkSettings"]["IPAddress"] == "172.17.0.3"
    assert "172.17.0.3/16" in ok(d.docker("exec", "r2", "ip", "-o", "addr", "show", "eth0"))
    ok(d.docker("stop", "-t", "0", "r2"))
    assert len(wait_links(d, "veth", 1)) == 1  # a stopped container has no veth
    d.restart(kill=True)
    assert inspect(d, "r1")["NetworkSettings"]["IPAddress"] == "172.17.0.2"
    ok(d.docker("exec", "r1", "ping", "-c", "1", "-W", "5", "172.17.0.1"))
    ok(d.docker("start", "r2"))
    assert inspect(d, "r2")["NetworkSettings"]["IPAddress"] == "172.17.0.3"
    # a new container does not get a kept address; a removed one's is free again
    ok(d.docker("run", "-d", "--name", "r3", "busybox", "sleep", "100"))
    assert inspect(d, "r3")["NetworkSettings"]["IPAddress"] == "172.17.0.4"
    ok(d.docker("rm", "-f", "r1"))
    ok(d.docker("run", "-d", "--name", "r4", "busybox", "sleep", "100"))
    assert inspect(d, "r4")["NetworkSettings"]["IPAddress"] == "172.17.0.2"
    ok(d.docker("rm", "-f", "r2", "r3", "r4"))
    assert wait_links(d, "veth") == []


def test_default_pool_skips_routed_subnets_and_ipv6(ndaemon: Daemon) -> None:
    d = ndaemon
    # 172.18.0.0/16 is reached from the daemon's namespace: the pool after it is taken
    d.in_netns("ip", "addr", "add", "172.18.5.1/16", "dev", "lo", check=True)
    d.in_netns("ip", "route", "add", "172.20.0.0/16", "dev", "lo", check=True)
    ok(d.docker("network", "create", "auto"))
    doc = json.loads(ok(d.docker("network", "inspect", "auto")))[0]
    assert doc["IPAM"]["Config"] == [{"Subnet": "172.19.0.0/16", "Gateway": "172.19.0.1"}]
    ok(d.docker("network", "create", "auto2"))
    doc = json.loads(ok(d.docker("network", "inspect", "auto2")))[0]
    assert doc["IPAM"]["Config"][0]["Subnet"] == "172.21.0.0/16"
    ok(d.docker("network", "create", "--ipv6", "six"))
    doc = json.loads(ok(d.docker("network", "inspect", "six")))[0]
    assert doc["EnableIPv6"] is True
    v6 = next(c for c in doc["IPAM"]["Config"] if ":" in c["Subnet"])
    assert v6["Subnet"].startswith("fd") and v6["Subnet"].endswith("::/64")
    ok(d.docker("run", "-d", "--name", "v6", "--network", "six", "busybox", "sleep", "100"))
    net = inspect(d, "v6")["NetworkSettings"]["Networks"]["six"]
    assert net["GlobalIPv6Address"].startswith(v6["Subnet"].split("::")[0])
    assert net["GlobalIPv6PrefixLen"] == 64 and net["IPv6Gateway"] == v6["Gateway"]
    ok(d.docker("exec", "v6", "ping", "-6", "-c", "1", "-W", "5", v6["Gateway"]))
    prefix = v6["Subnet"].split("::")[0]
    # as Docker: a static address needs a subnet the user configured, not the daemon's choice
    r = d.docker("run", "--rm", "--network", "six", "--ip6", f"{prefix}::99", "busybox", "true")
    assert r.returncode == 125 and (
        "user specified IP address is supported only when connecting to networks with user "
        "configured subnets" in r.stderr
    ), r.stderr
    ok(d.docker("network", "create", "--ipv6", "--subnet", "fd00:5::/64", "six2"))
    ok(d.docker("run", "-d", "--name", "v6s", "--network", "six2", "--ip6", "fd00:5::99",
                "busybox", "sleep", "100"))  # fmt: skip
    assert inspect(d, "v6s")["NetworkSettings"]["Networks"]["six2"]["GlobalIPv6Address"] == (
        "fd00:5::99"
    )
    ok(d.docker("exec", "v6s", "ping", "-6", "-c", "1", "-W", "5", "fd00:5::1"))
    ok(d.docker("rm", "-f", "v6s"))
    ok(d.docker("rm", "-f", "v6"))
    # made just now: not before an hour ago
    assert ok(d.docker("network", "prune", "-f", "--filter", "until=1h")) == ""
    out = ok(d.docker("network", "prune", "-f"))
    assert "auto" in out and "auto2" in out and "six" in out
    assert network_names(d) == ["bridge", "host", "none"]
    assert links(d, "br-") == []


def test_bulkhead_cli_network_verbs_and_run_flags(ndaemon: Daemon) -> None:
    d = ndaemon
    nid = ok(d.bulkhead(
        "network", "create", "--subnet", "10.80.0.0/24", "--gateway", "10.80.0.1",
        "--label", "team=a", "back",
    )).strip()  # fmt: skip
    out = ok(d.bulkhead("network", "ls"))
    assert out.splitlines()[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert f"{nid[:12]}   back      bridge    local" in out
    assert ok(d.bulkhead("network", "ls", "-q", "--filter", "label=team=a")).split() == [nid[:12]]
    assert ok(d.bulkhead("network", "ls", "--filter", "type=builtin", "--format", "{{.Name}}"))\
        .split() == ["bridge", "host", "none"]  # fmt: skip
    doc = json.loads(ok(d.bulkhead("network", "inspect", "back")))[0]
    assert doc["Id"] == nid and doc["IPAM"]["Config"][0]["Gateway"] == "10.80.0.1"
    ok(d.bulkhead(
        "run", "-d", "--name", "m1", "--network", "back", "--ip", "10.80.0.50",
        "--network-alias", "db", "--mac-address", "02:00:00:aa:bb:cc", "busybox", "sleep", "100",
    ))  # fmt: skip
    net = inspect(d, "m1")["NetworkSettings"]["Networks"]["back"]
    assert (net["IPAddress"], net["MacAddress"], net["Aliases"]) == (
        "10.80.0.50", "02:00:00:aa:bb:cc", ["db"],
    )  # fmt: skip
    assert "02:00:00:aa:bb:cc" in ok(d.docker("exec", "m1", "ip", "link", "show", "eth0"))
    ok(d.bulkhead("network", "connect", "--gw-priority", "-3", "bridge", "m1"))
    assert sorted(inspect(d, "m1")["NetworkSettings"]["Networks"]) == ["back", "bridge"]
    assert inspect(d, "m1")["NetworkSettings"]["Networks"]["bridge"]["GwPriority"] == -3
    # "back" keeps the default route: "bridge" sorts first but has the lower priority
    assert "default via 10.80.0.1" in ok(d.docker("exec", "m1", "ip", "route"))
    ok(d.bulkhead("network", "disconnect", "bridge", "m1"))
    r = d.bulkhead("network", "rm", "back")
    assert r.returncode == 1 and "has active endpoints" in r.stderr
    ok(d.bulkhead("rm", "-f", "m1"))
    assert ok(d.bulkhead("network", "rm", "back")).strip() == "back"
    r = d.bulkhead("run", "--rm", "--network", "none", "--ip", "10.0.0.1", "busybox", "true")
    assert r.returncode == 125 and "--ip" in r.stderr
    ok(d.bulkhead("network", "create", "--ipam-opt", "k=v", "gone"))
    assert json.loads(ok(d.bulkhead("network", "inspect", "gone")))[0]["IPAM"]["Options"] == {
        "k": "v"
    }
    assert ok(d.bulkhead("network", "prune", "-f")) == "Deleted Networks:\ngone\n"


def test_network_events(ndaemon: Daemon) -> None:
    d = ndaemon
    since = f"{time.time() - 1:.3f}"
    ok(d.docker("network", "create", "evt"))
    cid = ok(d.docker("run", "-d", "--network", "evt", "busybox", "sleep", "100")).strip()
    ok(d.docker("rm", "-f", cid))
    ok(d.docker("network", "rm", "evt"))
    out = ok(d.docker(
        "events", "--since", since, "--until", f"{time.time() + 1:.3f}", "--filter",
        "type=network", "--format",
        "{{.Action}} {{.Actor.Attributes.name}} {{.Actor.Attributes.type}} "
        "{{.Actor.Attributes.container}}",
    ))  # fmt: skip
    lines = [line for line in out.splitlines() if " evt " in line]
    assert lines == [
        "create evt bridge <no value>",
        f"connect evt bridge {cid}",
        f"disconnect evt bridge {cid}",
        "destroy evt bridge <no value>",
    ]


def test_container_mode_host_mode_and_bridges_across_daemon_restarts(ndaemon: Daemon) -> None:
    d = ndaemon
    ok(d.docker("run", "-d", "--name", "base", "busybox", "sleep", "100"))
    # container:NAME shares base's namespace, address included
    out = ok(d.docker(
        "run", "--rm", "--network", "container:base", "busybox", "ip", "-o", "addr", "show", "eth0"
    ))  # fmt: skip
    assert "172.17.0.2/16" in out
    # host: the daemon's namespace (the test's): its links, bh0 among them
    out = ok(d.docker("run", "--rm", "--network", "host", "busybox", "ls", "/sys/class/net"))
    assert "bh0" in out.split()
    assert inspect(d, "base")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
    ok(d.docker("network", "create", "--subnet", "10.90.0.0/24", "keep"))
    bridges = links(d, "br-")
    # a graceful stop removes the bridges no running container uses; bh0 stays while base,
    # still running (live restore), is on it; a start makes them again from the store
    d.stop()
    assert links(d, "br-") == [] and "bh0" in links(d, "bh")
    d.start()
    assert links(d, "br-") == bridges
    assert "inet 10.90.0.1/24" in d.in_netns("ip", "-o", "addr", "show", bridges[0]).stdout
    ok(d.docker("exec", "base", "ping", "-c", "1", "-W", "5", "172.17.0.1"))
    ok(d.docker("rm", "-f", "base"))
    # nothing running: a stop leaves no bridge, veth or nft table in the daemon's namespace
    d.stop()
    assert links(d, "br-") == [] and links(d, "bh") == [] and wait_links(d, "veth") == []
    assert d.in_netns("nft", "list", "tables").stdout.strip() == ""
    d.start()
    assert links(d, "br-") == bridges and "bh0" in links(d, "bh")
    ok(d.docker("network", "rm", "keep"))
    assert links(d, "br-") == [] and wait_links(d, "veth") == []


def test_docker_py_networks(ndaemon: Daemon) -> None:
    client = ndaemon.client()
    ipam_pool = {"Subnet": "10.91.0.0/24", "Gateway": "10.91.0.1"}
    import docker  # type: ignore[import-untyped]

    netw = client.networks.create(
        "pynet", driver="bridge", ipam=docker.types.IPAMConfig(pool_configs=[ipam_pool])
    )
    assert netw.name == "pynet" and len(netw.id) == 64
    c = client.containers.run("busybox", ["sleep", "100"], detach=True, network="pynet")
    netw.reload()
    assert [x.id for x in netw.containers] == [c.id]
    netw.disconnect(c)
    c.reload()
    assert list(c.attrs["NetworkSettings"]["Networks"]) == []
    netw.connect(c, ipv4_address="10.91.0.77")
    c.reload()
    assert c.attrs["NetworkSettings"]["Networks"]["pynet"]["IPAddress"] == "10.91.0.77"
    with pytest.raises(docker.errors.APIError) as err:
        netw.remove()
    assert err.value.status_code == 409
    c.remove(force=True)
    netw.remove()
    assert [n.name for n in client.networks.list(names=["pynet"])] == []
    with pytest.raises(docker.errors.NotFound):
        client.networks.get("pynet")


def test_bridge_name_option_never_takes_or_deletes_others_interfaces(ndaemon: Daemon) -> None:
    d = ndaemon
    d.in_netns("ip", "link", "add", "plain0", "type", "veth", "peer", "name", "plain1", check=True)
    d.in_netns("ip", "link", "add", "mybr", "type", "bridge", check=True)
    r = d.docker("network", "create", "-o", "com.docker.network.bridge.name=plain0", "bad")
    assert r.returncode != 0 and "interface plain0 exists and is not a bridge" in r.stderr
    assert "inet" not in d.in_netns("ip", "-o", "addr", "show", "plain0").stdout
    assert "bad" not in network_names(d)
    ok(d.docker("network", "create", "-o", "com.docker.network.bridge.name=mybr", "--subnet",
                "10.95.0.0/24", "theirs"))  # fmt: skip
    assert "inet 10.95.0.1/24" in d.in_netns("ip", "-o", "addr", "show", "mybr").stdout
    ok(d.docker("network", "rm", "theirs"))
    assert links(d, "mybr") == ["mybr"]  # an existing bridge stays, without our address
    assert "10.95.0.1" not in d.in_netns("ip", "-o", "addr", "show", "mybr").stdout


def test_daemon_bridge_option_names_the_default_bridge(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(["--bridge", "bhtest0"], netns=True)
    assert links(d, "bhtest0") == ["bhtest0"] and links(d, "bh0") == []
    doc = json.loads(ok(d.docker("network", "inspect", "bridge")))[0]
    assert doc["Options"]["com.docker.network.bridge.name"] == "bhtest0"
    out = ok(d.docker("run", "--rm", "busybox", "ip", "-o", "addr", "show", "eth0"))
    assert "172.17.0.2/16" in out


def test_a_start_that_fails_half_way_leaves_no_veth(ndaemon: Daemon) -> None:
    d = ndaemon
    d.in_netns("ip", "link", "add", "theirbr", "type", "bridge", check=True)
    ok(d.docker("network", "create", "-o", "com.docker.network.bridge.name=theirbr", "n2"))
    ok(d.docker("create", "--name", "half", "busybox", "sleep", "100"))
    ok(d.docker("network", "connect", "n2", "half"))
    # the second network's bridge is replaced by something that is not a bridge
    d.in_netns("ip", "link", "del", "theirbr", check=True)
    d.in_netns(
        "ip", "link", "add", "theirbr", "type", "veth", "peer", "name", "theirpr", check=True
    )
    r = d.docker("start", "half")
    assert r.returncode != 0 and "interface theirbr exists and is not a bridge" in r.stderr
    assert wait_links(d, "veth") == []
    assert inspect(d, "half")["State"]["Running"] is False
    ok(d.docker("rm", "-f", "half"))


def test_rm_of_a_network_only_stopped_containers_use_as_docker(ndaemon: Daemon) -> None:
    """moby: a stopped container holds no endpoint, so the network goes; the container's
    start then fails (network <id> not found) until it is disconnected from it."""
    d = ndaemon
    nid = ok(d.docker("network", "create", "--subnet", "10.81.0.0/24", "gone")).strip()
    ok(d.docker("run", "-d", "--name", "s2", "--network", "gone", "busybox", "sleep", "100"))
    ok(d.docker("run", "-d", "--name", "up", "--network", "gone", "busybox", "sleep", "100"))
    ok(d.docker("stop", "-t", "0", "s2"))
    listed = ok(d.docker("network", "ls", "--filter", "dangling=true", "--format", "{{.Name}}"))
    assert listed.split() == []  # "up" runs on it
    r = d.docker("network", "rm", "gone")
    assert r.returncode != 0 and 'has active endpoints (name:"up" id:"' in r.stderr, r.stderr
    ok(d.docker("rm", "-f", "up"))
    listed = ok(d.docker("network", "ls", "--filter", "dangling=true", "--format", "{{.Name}}"))
    assert listed.split() == ["gone"]  # only a stopped container: dangling, as Docker's
    ok(d.docker("network", "rm", "gone"))
    assert links(d, "br-") == [] and "gone" not in network_names(d)
    entry = inspect(d, "s2")["NetworkSettings"]["Networks"]["gone"]
    assert entry["NetworkID"] == nid and entry["IPAddress"] == ""
    r = d.docker("start", "s2")
    assert r.returncode != 0, r.stderr
    assert f"failed to set up container networking: network {nid} not found" in r.stderr
    assert wait_links(d, "veth") == [] and links(d, "br-") == []
    # a new network of that name: the disconnect takes the container off the old one (Docker
    # keys a container's networks by name)
    ok(d.docker("network", "create", "--subnet", "10.89.0.0/24", "gone"))
    ok(d.docker("network", "disconnect", "gone", "s2"))
    r = d.docker("network", "disconnect", "gone", "s2")
    sid = inspect(d, "s2")["Id"]
    assert f"container {sid} is not connected to the network gone" in r.stderr, r.stderr
    ok(d.docker("network", "rm", "gone"))
    ok(d.docker("start", "s2"))  # with no network but its loopback, as Docker's
    out = ok(d.docker("exec", "s2", "ip", "-o", "link"))
    assert "lo:" in out and "eth0" not in out
    assert inspect(d, "s2")["NetworkSettings"]["Networks"] == {}
    ok(d.docker("rm", "-f", "s2"))


def test_daemon_start_plugs_in_again_an_endpoint_left_without_veth(ndaemon: Daemon) -> None:
    """A daemon killed during a connect recorded the endpoint and died before its veth was
    made: the next start makes it (the container, still running, keeps its address)."""
    d = ndaemon
    ok(d.docker("network", "create", "--subnet", "10.82.0.0/24", "rp"))
    ok(d.docker("run", "-d", "--name", "keep", "--network", "rp", "busybox", "sleep", "100"))
    (veth,) = wait_links(d, "veth", 1)
    d.stop(kill=True)
    d.in_netns("ip", "link", "del", veth, check=True)  # the veth the killed daemon never made
    d.start()
    assert len(wait_links(d, "veth", 1)) == 1
    assert "10.82.0.2/24" in ok(d.docker("exec", "keep", "ip", "-o", "addr", "show", "eth0"))
    ok(d.docker("exec", "keep", "ping", "-c", "1", "-W", "5", "10.82.0.1"))
    doc = json.loads(ok(d.docker("network", "inspect", "rp")))[0]
    assert [v["Name"] for v in doc["Containers"].values()] == ["keep"]
    ok(d.docker("rm", "-f", "keep"))
    assert wait_links(d, "veth") == []


def test_daemon_bip_fixed_cidr_and_default_address_pools(daemon_factory: Any) -> None:
    """dockerd's --bip, --fixed-cidr, --default-address-pool; a new bip at a restart."""
    pools = ["--default-address-pool", "base=10.84.0.0/16,size=24"]
    d: Daemon = daemon_factory(
        ["--bip", "10.83.0.1/24", "--fixed-cidr", "10.83.0.128/25", *pools], netns=True
    )
    doc = json.loads(ok(d.docker("network", "inspect", "bridge")))[0]
    assert doc["IPAM"]["Config"] == [
        {"Subnet": "10.83.0.0/24", "IPRange": "10.83.0.128/25", "Gateway": "10.83.0.1"}
    ]
    assert "inet 10.83.0.1/24" in d.in_netns("ip", "-o", "addr", "show", "bh0").stdout
    ok(d.docker("run", "-d", "--name", "b1", "busybox", "sleep", "100"))
    assert inspect(d, "b1")["NetworkSettings"]["IPAddress"] == "10.83.0.128"
    ok(d.docker("exec", "b1", "ping", "-c", "1", "-W", "5", "10.83.0.1"))
    ok(d.docker("network", "create", "pooled"))
    doc = json.loads(ok(d.docker("network", "inspect", "pooled")))[0]
    assert doc["IPAM"]["Config"][0]["Subnet"] == "10.84.0.0/24"
    ok(d.docker("stop", "-t", "0", "b1"))
    d.stop()
    d.extra_args = ["--bip", "10.85.0.1/24", *pools]
    d.start()
    out = d.in_netns("ip", "-o", "addr", "show", "bh0").stdout
    assert "inet 10.85.0.1/24" in out and "10.83.0.1" not in out
    ok(d.docker("start", "b1"))
    assert inspect(d, "b1")["NetworkSettings"]["IPAddress"] == "10.85.0.2"
    ok(d.docker("exec", "b1", "ping", "-c", "1", "-W", "5", "10.85.0.1"))
    ok(d.docker("rm", "-f", "b1"))


def test_stopping_a_container_whose_namespace_another_joined_leaves_no_veth(
    ndaemon: Daemon,
) -> None:
    """--network container:X keeps X's namespace alive after X stops: X's veth must go all
    the same (else it stays on the bridge with X's address, and X's next start puts a
    second interface with that address there). As Docker, the joiner keeps only lo."""
    d = ndaemon
    ok(d.docker("run", "-d", "--name", "donor", "busybox", "sleep", "100"))
    ok(d.docker("run", "-d", "--name", "joiner", "--network", "container:donor", "busybox",
                "sleep", "100"))  # fmt: skip
    assert len(wait_links(d, "veth", 1)) == 1
    ok(d.docker("stop", "-t", "0", "donor"))
    assert wait_links(d, "veth") == []
    assert "eth0" not in ok(d.docker("exec", "joiner", "ip", "-o", "link"))
    ok(d.docker("start", "donor"))
    assert len(wait_links(d, "veth", 1)) == 1
    ok(d.docker("exec", "donor", "ping", "-c", "1", "-W", "5", "172.17.0.1"))
    ok(d.docker("rm", "-f", "donor"))  # removed while the joiner runs: its veth goes too
    assert wait_links(d, "veth") == []
    ok(d.docker("rm", "-f", "joiner"))


def test_disconnect_from_the_gateway_network_routes_via_another(ndaemon: Daemon) -> None:
    """The network that carried the default route is disconnected: another one (not
    --internal) takes it over at once, as Docker's sandbox picks a new gateway."""
    d = ndaemon
    ok(d.docker("network", "create", "--subnet", "10.86.0.0/24", "first"))
    ok(d.docker("network", "create", "--subnet", "10.87.0.0/24", "--internal", "inner"))
    ok(d.docker("network", "create", "--subnet", "10.88.0.0/24", "second"))
    ok(d.docker("run", "-d", "--name", "gw", "--network", "first", "busybox", "sleep", "100"))
    ok(d.docker("network", "connect", "inner", "gw"))
    ok(d.docker("network", "connect", "second", "gw"))
    assert "default via 10.86.0.1" in ok(d.docker("exec", "gw", "ip", "route"))
    ok(d.docker("network", "disconnect", "first", "gw"))
    routes = ok(d.docker("exec", "gw", "ip", "route"))
    assert "default via 10.88.0.1" in routes and "10.87.0.1" not in routes, routes
    ok(d.docker("network", "disconnect", "inner", "gw"))  # not the gateway: nothing changes
    assert "default via 10.88.0.1" in ok(d.docker("exec", "gw", "ip", "route"))
    ok(d.docker("rm", "-f", "gw"))


def test_the_default_route_goes_by_gw_priority_then_network_name(ndaemon: Daemon) -> None:
    """libnetwork's gateway endpoint: not --internal, then the highest GwPriority, then the
    network name; chosen again at each connect and disconnect."""
    d = ndaemon
    ok(d.docker("network", "create", "--subnet", "10.90.1.0/24", "zeta"))
    ok(d.docker("network", "create", "--subnet", "10.90.2.0/24", "alpha"))
    ok(d.docker("network", "create", "--subnet", "10.90.3.0/24", "--internal", "aaa"))
    ok(d.docker("run", "-d", "--name", "pr", "--network", "zeta", "busybox", "sleep", "100"))
    ok(d.docker("network", "connect", "aaa", "pr"))  # internal: never the gateway
    assert "default via 10.90.1.1" in ok(d.docker("exec", "pr", "ip", "route"))
    ok(d.docker("network", "connect", "alpha", "pr"))  # sorts first: takes it, as Docker
    assert "default via 10.90.2.1" in ok(d.docker("exec", "pr", "ip", "route"))
    ok(d.docker("network", "disconnect", "alpha", "pr"))
    assert "default via 10.90.1.1" in ok(d.docker("exec", "pr", "ip", "route"))
    # GwPriority (docker CLI 28: network connect --gw-priority) wins over the name
    client = d.client()
    client.api.connect_container_to_network("pr", "alpha")
    assert "default via 10.90.2.1" in ok(d.docker("exec", "pr", "ip", "route"))
    client.api.disconnect_container_from_network("pr", "alpha")
    client.api.disconnect_container_from_network("pr", "zeta")
    client.api.connect_container_to_network("pr", "zeta")
    r = client.api.post(
        client.api._url("/networks/alpha/connect"),
        json={"Container": "pr", "EndpointConfig": {"GwPriority": -1}},
    )
    assert r.status_code == 200, r.text
    assert "default via 10.90.1.1" in ok(d.docker("exec", "pr", "ip", "route"))
    assert inspect(d, "pr")["NetworkSettings"]["Networks"]["alpha"]["GwPriority"] == -1
    ok(d.docker("rm", "-f", "pr"))


def test_a_default_bridge_the_user_made_is_never_deleted(daemon_factory: Any) -> None:
    """``bridge: br0`` naming a bridge the user made (dockerd's usage): a daemon stop must
    not delete it (it may carry the host's own network), only take our address off."""
    d: Daemon = daemon_factory(["--bridge", "userbr0"], netns=True, start=False)
    d.in_netns("ip", "link", "add", "userbr0", "type", "bridge", check=True)
    d.in_netns("ip", "addr", "add", "192.0.2.1/24", "dev", "userbr0", check=True)
    d.start()
    ok(d.docker("run", "--rm", "busybox", "true"))
    assert "inet 172.17.0.1/16" in d.in_netns("ip", "-o", "addr", "show", "userbr0").stdout
    d.stop()
    assert links(d, "userbr0") == ["userbr0"]
    out = d.in_netns("ip", "-o", "addr", "show", "userbr0").stdout
    assert "192.0.2.1/24" in out and "172.17.0.1" not in out
    d.start()  # and the next start uses it again
    ok(d.docker("run", "--rm", "busybox", "ping", "-c", "1", "-W", "5", "172.17.0.1"))
    d.stop()
    assert links(d, "userbr0") == ["userbr0"]


def test_connect_with_ip_and_alias_to_a_created_container(ndaemon: Daemon) -> None:
    """network connect --ip/--alias before the first start: the endpoint waits for the start
    (Docker keeps the configuration, the address comes with the start)."""
    d = ndaemon
    ok(d.docker("network", "create", "--subnet", "10.91.5.0/24", "later"))
    ok(d.docker("create", "--name", "cc", "busybox", "sleep", "100"))
    ok(d.docker("network", "connect", "--ip", "10.91.5.20", "--alias", "svc", "later", "cc"))
    entry = inspect(d, "cc")["NetworkSettings"]["Networks"]["later"]
    assert entry["IPAMConfig"]["IPv4Address"] == "10.91.5.20" and entry["Aliases"] == ["svc"]
    doc = json.loads(ok(d.docker("network", "inspect", "later")))[0]
    assert doc["Containers"] == {}  # not running: no active endpoint
    ok(d.docker("network", "connect", "later", "cc"))  # again, stopped: moby says nothing
    entry = inspect(d, "cc")["NetworkSettings"]["Networks"]["later"]
    assert entry["IPAMConfig"]["IPv4Address"] == "10.91.5.20"  # the first config stays
    ok(d.docker("start", "cc"))
    out = ok(d.docker("exec", "cc", "ip", "-o", "addr", "show"))
    assert "10.91.5.20/24" in out and "172.17.0.2/16" in out
    r = d.docker("network", "connect", "later", "cc")
    assert r.returncode != 0 and "endpoint with name cc already exists in network later" in r.stderr
    ok(d.docker("rm", "-f", "cc"))
    assert wait_links(d, "veth") == []
