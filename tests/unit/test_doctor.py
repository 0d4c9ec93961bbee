"""virtnet.insight.doctor's judgements, fed with hand-made host views (no host is read here).

The nftables input is the JSON ``nft -j list ruleset`` prints (its shape as nft 1.0.6 writes
it for iptables-nft rules: `iptables-nft -P FORWARD DROP`, `-A FORWARD -j REJECT`). The real
host reading is exercised in tests/netns/test_doctor.py.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from virtnet.insight.doctor import (
    HostView,
    ProcessInfo,
    diagnose,
    diagnose_network,
    forward_blockers,
    host_checks,
    host_topology,
    legacy_blockers,
    other_dhcp_servers,
)
from virtnet.facts import AddressInfo, HostFacts, KernelFeatures, LinkInfo, RouteInfo
from virtnet.spec.xml.parse import parse_network

NAT = ("<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>"
       "<ip address='192.168.122.1' prefix='24'><dhcp><range start='192.168.122.2' "
       "end='192.168.122.254'/></dhcp></ip></network>")
OPEN = ("<network><name>o</name><forward mode='open'/><bridge name='virbr5'/>"
        "<ip address='192.168.160.1' prefix='24'/></network>")
MACVTAP = ("<network><name>mv</name><forward mode='bridge'><interface dev='eth1'/>"
           "</forward></network>")


def chain(family: str, table: str, name: str, hook: str | None = None,
          policy: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {"family": family, "table": table, "name": name, "handle": 1}
    if hook:
        data.update({"type": "filter", "hook": hook, "prio": 0, "policy": policy or "accept"})
    return {"chain": data}


def rule(family: str, table: str, chain_name: str, *expr: dict[str, Any]) -> dict[str, Any]:
    return {"rule": {"family": family, "table": table, "chain": chain_name, "handle": 2,
                     "expr": list(expr)}}


COUNTER = {"counter": {"packets": 0, "bytes": 0}}
IIF_DOCKER = {"match": {"op": "==", "left": {"meta": {"key": "iifname"}}, "right": "docker0"}}


def ruleset(*items: dict[str, Any]) -> dict[str, Any]:
    return {"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, *items]}


def link(name: str, index: int, kind: str | None = None, master: int | None = None) -> LinkInfo:
    return LinkInfo(name=name, index=index, kind=kind, up=True, mac="52:54:00:00:00:01",
                    mtu=1500, master=master)


def facts(**extra: Any) -> HostFacts:
    links = {"lo": link("lo", 1), "eth0": link("eth0", 2)}
    base: dict[str, Any] = {
        "links": links,
        "addresses": [AddressInfo("eth0", ipaddress.ip_interface("10.0.0.5/24"))],
        "routes": [
            RouteInfo(ipaddress.ip_network("0.0.0.0/0"), "eth0",
                      ipaddress.ip_address("10.0.0.1"), 0, 4, 254),
            RouteInfo(ipaddress.ip_network("10.0.0.0/24"), "eth0", None, 0, 2, 254),
        ],
    }
    base.update(extra)
    return HostFacts(**base)


def view(**extra: Any) -> HostView:
    base: dict[str, Any] = {"facts": facts(), "kernel": KernelFeatures(), "ip_forward": True,
                            "ruleset": ruleset()}
    base.update(extra)
    return HostView(**base)


# --- firewalls -----------------------------------------------------------------------------------


def test_forward_policy_drop_of_iptables_nft_is_found() -> None:
    found = forward_blockers(ruleset(
        {"table": {"family": "ip", "name": "filter", "handle": 1}},
        chain("ip", "filter", "FORWARD", "forward", "drop"),
        rule("ip", "filter", "FORWARD", IIF_DOCKER, COUNTER, {"accept": None}),
    ))
    assert found == [("ip filter FORWARD",
                      "ip filter (iptables-nft) chain FORWARD: policy drop")]


def test_unconditional_reject_rule_is_found_and_conditional_ones_are_not() -> None:
    found = forward_blockers(ruleset(
        chain("inet", "fw", "fwd", "forward"),
        rule("inet", "fw", "fwd", IIF_DOCKER, {"drop": None}),  # only docker0: harmless here
        chain("ip", "filter", "FORWARD", "forward"),
        rule("ip", "filter", "FORWARD", COUNTER, {"xt": {"type": "target", "name": "REJECT"}}),
    ))
    assert [chain for chain, _ in found] == ["ip filter FORWARD"]
    assert "rejects everything" in found[0][1]


def test_our_own_table_and_other_hooks_are_not_blockers() -> None:
    assert forward_blockers(ruleset(
        chain("inet", "virtnet", "forward", "forward"),
        rule("inet", "virtnet", "forward", {"reject": None}),
        chain("ip", "filter", "INPUT", "input", "drop"),
    )) == []
    assert [c for c, _ in forward_blockers(ruleset(chain("ip", "filter", "INPUT", "input",
                                                         "drop")), hook="input")] == [
        "ip filter INPUT"]
    assert forward_blockers(None) == []


def test_legacy_iptables_forward() -> None:
    assert legacy_blockers(["-P FORWARD ACCEPT", "-A FORWARD -i docker0 -j ACCEPT"]) == []
    assert legacy_blockers(["-P FORWARD DROP", "-A FORWARD -j REJECT"]) == [
        "legacy iptables FORWARD: policy DROP",
        "legacy iptables FORWARD: -j REJECT for everything",
    ]


# --- DHCP servers --------------------------------------------------------------------------------


def test_other_dhcp_servers_on_the_bridge() -> None:
    ours = ProcessInfo(100, "dnsmasq", ("dnsmasq", "--conf-file=/x/default.conf"),
                       "interface=virbr0\ndhcp-range=192.168.122.2,192.168.122.254\n")
    rogue = ProcessInfo(200, "dnsmasq", ("dnsmasq", "--interface=virbr0",
                                         "--dhcp-range=192.168.122.50,192.168.122.60"))
    dns_only = ProcessInfo(300, "dnsmasq", ("dnsmasq", "-i", "virbr0"))
    everywhere = ProcessInfo(400, "dnsmasq", ("dnsmasq", "--dhcp-range=10.1.0.10,10.1.0.20"))
    elsewhere = ProcessInfo(500, "dnsmasq", ("dnsmasq", "-ieth7", "--dhcp-range=1.2.3.4,static"))
    dhcpd = ProcessInfo(600, "dhcpd", ("dhcpd", "-4", "-cf", "/etc/dhcpd.conf", "virbr0"))
    found = other_dhcp_servers([ours, rogue, dns_only, everywhere, elsewhere, dhcpd],
                               "virbr0", ours=100)
    assert found == [
        "dnsmasq (pid 200) serves DHCP on virbr0",
        "dnsmasq (pid 400) serves DHCP on every interface",
        "dhcpd (pid 600) may answer DHCP on virbr0",
    ]
    # without our pid, our own dnsmasq would count as a second one
    assert len(other_dhcp_servers([ours], "virbr0", ours=None)) == 1


# --- host checks ---------------------------------------------------------------------------------


def test_healthy_host() -> None:
    report = diagnose(view(), [(parse_network(NAT), None, [])])
    assert report.healthy, report.to_dict()
    names = [c.name for c in report.checks]
    for expected in ("kernel: bridge", "kernel: macvtap", "kernel: tun", "kernel: nftables",
                     "kernel: netns", "dnsmasq", "nftables", "IPv4 forwarding"):
        assert expected in names


def test_missing_kernel_feature_is_a_problem_only_when_needed() -> None:
    no_macvtap = KernelFeatures(macvtap=False)
    checks = host_checks(view(kernel=no_macvtap), [parse_network(NAT)])
    macvtap_check = next(c for c in checks if c.name == "kernel: macvtap")
    assert not macvtap_check.ok and not macvtap_check.problem
    checks = host_checks(view(kernel=no_macvtap), [parse_network(MACVTAP)])
    assert next(c for c in checks if c.name == "kernel: macvtap").problem
    assert "CONFIG_MACVTAP" in next(c for c in checks if c.name == "kernel: macvtap").detail


def test_missing_dnsmasq_is_a_problem_and_a_forward_blocker_a_note_for_nat() -> None:
    blocked = ruleset(chain("ip", "filter", "FORWARD", "forward", "drop"))
    report = diagnose(view(facts=facts(dnsmasq=None), ruleset=blocked),
                      [(parse_network(NAT), None, [])])
    assert not report.healthy
    assert {c.name for c in report.checks if c.problem} == {"dnsmasq"}
    firewall = next(c for c in report.checks if c.name == "firewall")
    assert not firewall.ok and "ip filter (iptables-nft) chain FORWARD" in firewall.detail
    # net-start lets a NAT network through such a chain itself (virtnet.plan.coexist)
    nat = report.networks[0]
    assert nat.problems == ["cannot start: dnsmasq is not installed; it serves DHCP and DNS here"]
    assert next(r for r in nat.rows if r.label == "guest→LAN").cell.predicted


def test_an_open_network_behind_a_forward_blocker() -> None:
    blocked = ruleset(chain("ip", "filter", "FORWARD", "forward", "drop"))
    diagnosis = diagnose_network(parse_network(OPEN), view(ruleset=blocked))
    assert any("drops forwarded traffic: ip filter FORWARD" in p for p in diagnosis.problems)
    row = next(r for r in diagnosis.rows if r.label == "guest→LAN")
    assert not row.cell.predicted
    assert [f.command for f in row.cell.fix] == [
        'nft insert rule ip filter FORWARD iifname "virbr5" accept',
        'nft insert rule ip filter FORWARD oifname "virbr5" accept',
    ]
    # once the chain accepts the bridge both ways, it no longer blocks this network
    opened = ruleset(
        chain("ip", "filter", "FORWARD", "forward", "drop"),
        rule("ip", "filter", "FORWARD", {"match": {"op": "==", "left": {"meta": {
            "key": "iifname"}}, "right": "virbr5"}}, COUNTER, {"accept": None}),
        rule("ip", "filter", "FORWARD", {"match": {"op": "==", "left": {"meta": {
            "key": "oifname"}}, "right": "virbr5"}}, {"match": {"op": "==", "left": {
                "payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {
                    "addr": "192.168.160.0", "len": 24}}}}, {"accept": None}),
    )
    assert forward_blockers(opened, bridge="virbr5") == []
    assert forward_blockers(opened, bridge="virbr6") != []
    assert diagnose_network(parse_network(OPEN), view(ruleset=opened)).problems == []


def test_subnet_collision_and_preflight() -> None:
    colliding = facts(routes=[RouteInfo(ipaddress.ip_network("192.168.0.0/16"), "eth0", None,
                                        0, 2, 254)])
    diagnosis = diagnose_network(parse_network(NAT), view(facts=colliding))
    assert diagnosis.problems[0] == ("cannot start: subnet 192.168.122.0/24 overlaps the host "
                                     "route 192.168.0.0/16 on eth0")
    missing = diagnose_network(parse_network(MACVTAP), view())
    assert "cannot start: interface eth1 does not exist" in missing.problems


def test_doctor_names_the_collision_start_refuses() -> None:
    # A (192.168.122.0/24 on virbr0) is active; B (192.168.122.128/25) is not
    overlapping = facts(
        addresses=[AddressInfo("virbr0", ipaddress.ip_interface("192.168.122.1/24"))],
        routes=[RouteInfo(ipaddress.ip_network("192.168.122.0/24"), "virbr0", None, 0, 2, 254)],
        networks={"virbr0": "A"},
    )
    net_b = parse_network(NAT.replace("default", "B").replace("virbr0", "virbr1")
                          .replace("prefix='24'", "prefix='25'")
                          .replace("192.168.122.1'", "192.168.122.129'")
                          .replace("192.168.122.2'", "192.168.122.130'"))
    from virtnet.plan.drivers import driver_for

    start_says = [p.message for p in driver_for(net_b).preflight(net_b, overlapping)]
    assert start_says == ["subnet 192.168.122.128/25 overlaps 192.168.122.0/24 of active "
                          "network 'A' (on virbr0)"]
    diagnosis = diagnose_network(net_b, view(facts=overlapping))
    assert diagnosis.problems == [f"cannot start: {start_says[0]}"]


def test_topology_from_facts() -> None:
    eth1 = link("eth1", 3)
    with_eth1 = facts(links={"lo": link("lo", 1), "eth0": link("eth0", 2), "eth1": eth1},
                      addresses=[AddressInfo("eth1", ipaddress.ip_interface("10.1.0.5/24"))],
                      routes=[RouteInfo(ipaddress.ip_network("0.0.0.0/0"), "eth1",
                                        ipaddress.ip_address("10.1.0.1"), 0, 4, 254)])
    topo, notes = host_topology(parse_network(MACVTAP), view(facts=with_eth1), active=False)
    assert (topo.host_uplink, topo.host_address) == ("eth1", "10.1.0.5/24")
    assert topo.uplink_routes == ("default via 10.1.0.1",)
    assert any("hairpin" in note for note in notes)
    diagnosis = diagnose_network(parse_network(MACVTAP), view(facts=with_eth1))
    row = next(r for r in diagnosis.rows if r.label == "guest→host")
    assert not row.cell.predicted
    assert "ip address del 10.1.0.5/24 dev eth1" in [f.command for f in row.cell.fix]
    assert diagnosis.problems == []


def test_topology_names_the_uplinks_that_answer_arp_for_the_host() -> None:
    links = {"lo": link("lo", 1), "eth1": link("eth1", 3), "eth2": link("eth2", 4)}
    two = facts(links=links,
                addresses=[AddressInfo("eth1", ipaddress.ip_interface("10.1.0.5/24"))])
    private = parse_network("<network><name>p</name><forward mode='private'>"
                            "<interface dev='eth1'/><interface dev='eth2'/></forward></network>")
    topo, _ = host_topology(private, view(facts=two, arp_flux=("lo", "eth2")), active=False)
    assert (topo.host_uplink, topo.flux_uplinks) == ("eth1", ("eth2",))
    topo, _ = host_topology(private, view(facts=two, arp_flux=()), active=False)
    assert topo.flux_uplinks == ()
    topo, _ = host_topology(private, view(facts=two), active=False)
    assert topo.flux_uplinks is None  # not read: the kernel's defaults


def test_report_json_shape() -> None:
    data = diagnose(view(), [(parse_network(NAT), None, [])]).to_dict()
    assert set(data) == {"healthy", "host", "networks"}
    network = data["networks"][0]
    assert network["network"] == "default" and network["mode"] == "nat"
    assert network["reachability"][0]["pair"] == "guest↔guest"
    assert "ifupdown" in network["guest_dhcp_config"]
