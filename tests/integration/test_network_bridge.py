"""The bridge driver and IPAM through the daemon, in a network namespace of the test's own.

Every daemon here runs in ``bh-t-<random>`` (``daemon_factory(netns=True)``):
its bridges, veths and addresses live there and go with it; traffic stays
between that namespace and its containers.
"""

from __future__ import annotations

import json
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
    left = [link["ifname"] for link in d.links() if link["ifname"].startswith("veth")]
    assert left == []
