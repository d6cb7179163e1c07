"""The 127.0.0.11 redirect table rendered for a container's namespace (nft JSON)."""

from __future__ import annotations

from typing import Any

from bulkhead.network import dnsredirect


def test_render_rewrites_the_table_whole_with_dnat_masquerade_and_guard() -> None:
    cmds = dnsredirect.render("10.1.0.1", 53)
    table = {"table": {"family": "ip", "name": "bulkhead_dns"}}
    # flushed, not deleted (a table deletion waits for an RCU grace period: ~13 ms)
    assert cmds[:2] == [{"add": table}, {"flush": table}]
    rules = [c["add"]["rule"] for c in cmds if "rule" in c.get("add", {})]
    by_chain: dict[str, list[list[dict[str, Any]]]] = {}
    for r in rules:
        by_chain.setdefault(r["chain"], []).append(r["expr"])
    # UDP and TCP queries to 127.0.0.11:53 go to the gateway's resolver
    assert [e[-1] for e in by_chain["output"]] == [
        {"dnat": {"family": "ip", "addr": "10.1.0.1", "port": 53}}
    ] * 2
    assert {e[1]["match"]["left"]["payload"]["protocol"] for e in by_chain["output"]} == {
        "udp",
        "tcp",
    }
    assert by_chain["postrouting"][0][-1] == {"masquerade": None}
    # nothing from outside reaches the container's 127.0.0.0/8 (route_localnet is on)
    (guard,) = by_chain["guard"]
    assert guard[-1] == {"drop": None}
    assert {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}} in guard
    chains = {
        c["add"]["chain"]["name"]: c["add"]["chain"] for c in cmds if "chain" in c.get("add", {})
    }
    assert chains["guard"]["hook"] == "prerouting" and chains["guard"]["prio"] == -150
