"""The nft JSON bulkhead renders from a declared firewall state (no kernel involved)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bulkhead.network.firewall import (
    FirewallError,
    FirewallState,
    NetworkRules,
    PortRule,
    render,
    sysctls,
)

NETS = (
    NetworkRules(bridge="br-a", subnets=("172.18.0.0/16", "fd00:1::/64")),
    NetworkRules(bridge="br-b", subnets=("172.19.0.0/16",)),
    NetworkRules(bridge="br-i", subnets=("172.20.0.0/16",), internal=True),
)
PORTS = (PortRule("tcp", "", 8080, "172.18.0.2", 80, "br-a"),)


def _rules(cmds: list[dict[str, Any]], chain: str) -> list[list[dict[str, Any]]]:
    return [
        c["add"]["rule"]["expr"]
        for c in cmds
        if "rule" in c.get("add", {}) and c["add"]["rule"]["chain"] == chain
    ]


def test_empty_state_deletes_the_table_only() -> None:
    table = {"table": {"family": "inet", "name": "bulkhead"}}
    assert render(FirewallState()) == [{"add": table}, {"delete": table}]


def test_the_table_is_replaced_whole_in_one_batch() -> None:
    cmds = render(FirewallState(networks=NETS, ports=PORTS))
    assert [next(iter(c)) for c in cmds[:3]] == ["add", "delete", "add"]
    chains = {
        c["add"]["chain"]["name"]: c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})
    }
    assert chains["prerouting"]["prio"] == -100 and chains["output"]["hook"] == "output"
    assert chains["forward"]["type"] == "filter" and chains["postrouting"]["prio"] == 100
    json.dumps(cmds)  # plain JSON


def test_forward_chain_only_drops() -> None:
    """An accept would not override a host firewall's drop anyway; bulkhead never claims one."""
    text = json.dumps(render(FirewallState(networks=NETS, ports=PORTS)))
    assert '"accept": null' not in text and "return" not in text
    for expr in _rules(render(FirewallState(networks=NETS, ports=PORTS)), "forward"):
        assert expr[-1] == {"drop": None}


def test_internal_network_no_masquerade_and_both_directions_dropped() -> None:
    cmds = render(FirewallState(networks=NETS))
    post = json.dumps(_rules(cmds, "postrouting"))
    assert "172.20.0.0" not in post and "172.18.0.0" in post and "fd00:1::" in post
    internal = [e for e in _rules(cmds, "forward") if e[0]["match"]["right"] == "br-i"]
    assert len(internal) == 2


def test_masquerade_off() -> None:
    nets = (NetworkRules(bridge="br-a", subnets=("172.18.0.0/16",), masquerade=False),)
    post = _rules(render(FirewallState(networks=nets)), "postrouting")
    assert all(any("ct" in json.dumps(m) for m in e) for e in post)  # hairpin only


def test_published_port_rule() -> None:
    ports = (
        PortRule("udp", "10.0.0.1", 53, "172.18.0.2", 5353, "br-a"),
        PortRule("tcp", "::", 80, "fd00:1::2", 80, "br-a"),
    )
    v4, v6 = _rules(render(FirewallState(networks=NETS, ports=ports)), "published")
    assert v4[0]["match"]["right"] == "10.0.0.1" and v4[1]["match"]["right"] == "udp"
    assert v4[-1] == {"dnat": {"family": "ip", "addr": "172.18.0.2", "port": 5353}}
    assert v6[-1]["dnat"]["family"] == "ip6"
    # every local IPv6 address but [::1] (the userland proxy's: no route_localnet for IPv6)
    ip6_daddr = {"payload": {"protocol": "ip6", "field": "daddr"}}
    assert v6[0]["match"] == {"op": "!=", "left": ip6_daddr, "right": "::1"}


@pytest.mark.parametrize(
    "port",
    [
        PortRule("icmp", "", 1, "172.18.0.2", 1, "br-a"),
        PortRule("tcp", "::1", 1, "172.18.0.2", 1, "br-a"),
    ],
)
def test_bad_port_rules(port: PortRule) -> None:
    with pytest.raises(FirewallError):
        render(FirewallState(networks=NETS, ports=(port,)))


def test_sysctls() -> None:
    assert sysctls(FirewallState(networks=NETS, ports=PORTS)) == {
        "net/ipv4/ip_forward": "1",
        "net/ipv6/conf/all/forwarding": "1",
        "net/ipv4/conf/br-a/route_localnet": "1",
        "net/ipv4/conf/br-b/route_localnet": "0",
        "net/ipv4/conf/br-i/route_localnet": "0",
    }
    assert sysctls(FirewallState(networks=NETS[2:])) == {"net/ipv4/conf/br-i/route_localnet": "0"}


def test_route_localnet_goes_with_the_last_published_port() -> None:
    """Docker leaves it on (moby#45578); bulkhead's sysctls follow the declared state."""
    assert sysctls(FirewallState(networks=NETS))["net/ipv4/conf/br-a/route_localnet"] == "0"


def test_loopback_guard() -> None:
    """CVE-2020-8558: 127.0.0.0/8 arriving by anything but lo is dropped before any DNAT."""
    cmds = render(FirewallState(networks=NETS, ports=PORTS))
    chain = next(
        c["add"]["chain"]
        for c in cmds
        if "chain" in c.get("add", {}) and c["add"]["chain"]["name"] == "guard"
    )
    assert (chain["type"], chain["hook"], chain["policy"]) == ("filter", "prerouting", "accept")
    assert -200 < chain["prio"] < -100  # after conntrack, before dstnat
    loopnet = {"prefix": {"addr": "127.0.0.0", "len": 8}}
    not_lo = {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}}
    assert _rules(cmds, "guard") == [
        [
            not_lo,
            {
                "match": {
                    "op": "==",
                    "left": {"payload": {"protocol": "ip", "field": field}},
                    "right": loopnet,
                }
            },
            {"drop": None},
        ]
        for field in ("daddr", "saddr")
    ]
    # a table with networks but no port yet has it too (route_localnet may be left on)
    assert _rules(render(FirewallState(networks=NETS[1:2])), "guard")


def _fake_nft(tmp_path: Any, *, exit_code: int) -> tuple[Any, Any]:
    """An ``nft`` that records the route_localnet it saw when it ran."""
    seen = tmp_path / "seen"
    nft = tmp_path / "nft"
    rl = tmp_path / "proc" / "net/ipv4/conf/br-a/route_localnet"
    nft.write_text(f"#!/bin/sh\ncat >/dev/null\ncat {rl} > {seen}\nexit {exit_code}\n")
    nft.chmod(0o755)
    for path in ("net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"):
        (tmp_path / "proc" / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "proc" / path).write_text("0\n")
    for br in ("br-a", "br-b", "br-i"):
        (tmp_path / "proc" / f"net/ipv4/conf/{br}").mkdir(parents=True)
        (tmp_path / "proc" / f"net/ipv4/conf/{br}/route_localnet").write_text("0\n")
    return nft, seen


def test_apply_sets_the_sysctls_after_the_rules(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    """route_localnet only once the guard is in; forwarding only once the drops are."""
    from bulkhead.network.firewall import apply

    monkeypatch.delenv("BULKHEAD_FORBID_NETNS", raising=False)
    nft, seen = _fake_nft(tmp_path, exit_code=0)
    apply(FirewallState(networks=NETS, ports=PORTS), nft=str(nft), proc_sys=str(tmp_path / "proc"))
    assert seen.read_text().strip() == "0"  # nft ran before the sysctl
    proc = tmp_path / "proc"
    assert (proc / "net/ipv4/conf/br-a/route_localnet").read_text().strip() == "1"
    assert (proc / "net/ipv4/ip_forward").read_text().strip() == "1"


def test_a_refused_state_changes_no_sysctl(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    from bulkhead.network.firewall import apply

    monkeypatch.delenv("BULKHEAD_FORBID_NETNS", raising=False)
    nft, _ = _fake_nft(tmp_path, exit_code=1)
    proc = tmp_path / "proc"
    with pytest.raises(FirewallError, match="nft refused"):
        apply(FirewallState(networks=NETS, ports=PORTS), nft=str(nft), proc_sys=str(proc))
    bad = FirewallState(networks=NETS, ports=(PortRule("icmp", "", 1, "172.18.0.2", 1, "br-a"),))
    with pytest.raises(FirewallError, match="invalid protocol"):
        apply(bad, nft=str(nft), proc_sys=str(proc))
    assert (proc / "net/ipv4/ip_forward").read_text().strip() == "0"
    assert (proc / "net/ipv4/conf/br-a/route_localnet").read_text().strip() == "0"


def test_apply_refuses_the_forbidden_namespace(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    import os

    from bulkhead.network.firewall import apply

    monkeypatch.setenv("BULKHEAD_FORBID_NETNS", str(os.stat("/proc/self/ns/net").st_ino))
    ran = tmp_path / "ran"
    nft = tmp_path / "nft"
    nft.write_text(f"#!/bin/sh\ntouch {ran}\n")
    nft.chmod(0o755)
    for state in (FirewallState(networks=NETS), FirewallState()):
        with pytest.raises(FirewallError, match="host's network namespace"):
            apply(state, nft=str(nft), proc_sys=str(tmp_path))
    assert not ran.exists()


def test_untracked_and_invalid_packets_enter_no_bridge() -> None:
    """A ``ct status`` match never applies to a packet without a connection (notrack, invalid):
    each bridge that drops by connection also drops what conntrack does not follow."""
    forward = _rules(render(FirewallState(networks=NETS, ports=PORTS)), "forward")
    untracked = {
        "match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["invalid", "untracked"]}
    }
    for br in ("br-a", "br-b"):
        assert [
            {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": br}},
            {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": br}},
            untracked,
            {"drop": None},
        ] in forward
