"""Coexistence with other firewalls, pure: finding dropping chains, the rules we add."""

from __future__ import annotations

from virtnet.plan import coexist
from virtnet.plan.planner import coexist_actions
from virtnet.service.engine import Engine

NAT = Engine.parse("""<network><name>n</name><forward mode='nat' dev='eth1'/>
<bridge name='virbr7'/><ip address='192.168.60.1' prefix='24'/>
<ip family='ipv6' address='fd00:60::1' prefix='64'/></network>""", "n.xml")


def chain(family: str, table: str, name: str, hook: str | None = None,
          policy: str = "accept", kind: str = "filter") -> dict:
    c = {"family": family, "table": table, "name": name}
    if hook:
        c.update({"hook": hook, "policy": policy, "type": kind, "prio": 0})
    return {"chain": c}


def rule(family: str, table: str, chain_name: str, verdict: str) -> dict:
    return {"rule": {"family": family, "table": table, "chain": chain_name,
                     "expr": [{"match": {}}, {verdict: None}]}}


def test_finds_policy_drop_and_dropping_rules_but_not_ours_or_accepting_ones() -> None:
    ruleset = {"nftables": [
        chain("ip", "filter", "FORWARD", "forward", "drop"),
        chain("ip", "filter", "DOCKER-USER"),
        chain("inet", "firewalld", "filter_FORWARD", "forward"),
        rule("inet", "firewalld", "filter_FORWARD", "reject"),
        chain("inet", "virtnet", "forward", "forward", "drop"),  # ours: never touched
        chain("ip", "nat", "POSTROUTING", "postrouting", "accept", "nat"),
        chain("inet", "quiet", "input", "input"),  # accepts everything
    ]}
    found, existing = coexist.find_drop_chains(ruleset)
    assert [(c.family, c.table, c.chain) for c in found] == [
        ("ip", "filter", "FORWARD"), ("inet", "firewalld", "filter_FORWARD")]
    assert "policy is drop" in found[0].reason and "1 rule(s) drop or reject" in found[1].reason
    assert ("ip", "filter", "DOCKER-USER") in existing


def test_iptables_tables_are_recognised() -> None:
    assert coexist.is_iptables_table("ip", "filter")
    assert coexist.is_iptables_table("ip6", "filter")
    assert not coexist.is_iptables_table("inet", "firewalld")


def test_nat_allowances_are_narrow() -> None:
    (action,) = coexist_actions(NAT)
    rules = [(a.hook, a.version, " ".join(a.iptables)) for a in action.allowances()]
    assert ("forward", 4, "-i virbr7 -o virbr7 -j ACCEPT") in rules
    assert ("forward", 4, "-i virbr7 -s 192.168.60.0/24 -o eth1 -j ACCEPT") in rules
    assert ("forward", 4, "-o virbr7 -d 192.168.60.0/24 -i eth1 -m conntrack --ctstate "
            "RELATED,ESTABLISHED -j ACCEPT") in rules
    assert ("forward", 6, "-i virbr7 -s fd00:60::/64 -o eth1 -j ACCEPT") in rules
    assert ("input", 4, "-i virbr7 -p udp --dport 67 -j ACCEPT") in rules
    assert ("input", 6, "-i virbr7 -p udp --dport 547 -j ACCEPT") in rules
    assert all(" -j ACCEPT" in r[2] and ("virbr7" in r[2]) for r in rules)
    nft = [a.nft for a in action.allowances()]
    assert 'oifname "virbr7" ip daddr 192.168.60.0/24 iifname "eth1" ct state established,related accept' in nft


def test_isolated_networks_only_allow_guest_to_guest_and_services() -> None:
    isolated = Engine.parse("<network><name>i</name><bridge name='virbr6'/>"
                            "<ip address='192.168.61.1' prefix='24'/></network>", "i.xml")
    (action,) = coexist_actions(isolated)
    forward = [a for a in action.allowances() if a.hook == "forward"]
    assert [" ".join(a.iptables) for a in forward] == ["-i virbr6 -o virbr6 -j ACCEPT"]


def test_open_and_bridge_networks_get_no_step() -> None:
    open_net = Engine.parse("<network><name>o</name><forward mode='open'/><bridge name='virbr5'/>"
                            "<ip address='192.168.62.1' prefix='24'/></network>", "o.xml")
    assert coexist_actions(open_net) == []


def test_recorded_rules_say_what_and_why() -> None:
    actions = [{"kind": "create-bridge", "name": "x"},
               {"kind": coexist.AllowThroughOtherFirewalls.kind, "added": [
                   {"tool": "iptables", "family": "ip", "table": "filter",
                    "chain": "DOCKER-USER", "rule": "-i virbr7 -o virbr7 -j ACCEPT",
                    "why": "ip filter chain FORWARD on the forward hook: its policy is drop",
                    "spec": [], "binary": "iptables"}]}]
    assert coexist.recorded_rules(actions) == [{
        "table": "ip filter", "chain": "DOCKER-USER", "rule": "-i virbr7 -o virbr7 -j ACCEPT",
        "why": "ip filter chain FORWARD on the forward hook: its policy is drop",
        "tool": "iptables"}]
