"""virtnet.render.nft: pure rendering of a network's nftables rules.

The conformance part reads libvirt 9.0's networkxml2firewalldata: for every case, each
iptables rule libvirt installs (the *-linux.args files) is translated into the nft rule
that must stand for it in our per-network chains, and our chains must hold exactly those
rules, in an order with the same effect. Which stage fails tells what broke: parsing the
case's XML (parse), rendering (render) or the comparison (compare).
Loading the text into a real kernel is tested in tests/netns/test_apply.py.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import shlex
from collections import defaultdict
from pathlib import Path

import pytest

from virtnet.render import nft as firewall
from virtnet.errors import ValidationError
from virtnet.spec.model import (
    Bridge,
    DhcpRange,
    Forward,
    ForwardInterface,
    ForwardMode,
    IpDef,
    NatRange,
    Network,
)

A = ipaddress.ip_address
FIREWALL_CASES = [
    "nat-default",
    "nat-tftp",
    "nat-many-ips",
    "nat-no-dhcp",
    "nat-ipv6",
    "nat-ipv6-masquerade",
    "route-default",
]


def chains_of(ruleset: str) -> dict[str, list[str]]:
    """Rules per chain, in order, from our 'add rule inet virtnet CHAIN RULE' lines."""
    chains: dict[str, list[str]] = defaultdict(list)
    for line in ruleset.splitlines():
        match = re.fullmatch(r"add rule inet virtnet (\S+) (.*)", line)
        if match:
            chains[match.group(1)].append(match.group(2))
    return dict(chains)


# --- libvirt's iptables rules → the nft rules that stand for them ----------------------------


def read_args(path: Path) -> list[tuple[str, dict[str, str], bool]]:
    """Each iptables/ip6tables command of an .args file as (family, options, negate_dest)."""
    text = path.read_text().replace("\\\n", " ")
    commands = []
    for line in text.splitlines():
        words = shlex.split(line)
        if not words:
            continue
        family = {"iptables": "ipv4", "ip6tables": "ipv6"}[words[0]]
        options: dict[str, str] = {}
        negate_dest = False
        i = 1
        while i < len(words):
            word = words[i]
            if word == "!":
                negate_dest = True
                i += 1
                continue
            if word in ("-w", "--checksum-fill"):
                options[word] = ""
                i += 1
                continue
            options[word] = words[i + 1]
            i += 2
        commands.append((family, options, negate_dest))
    return commands


def _net(text: str) -> str:
    return str(ipaddress.ip_network(text, strict=False))


def expected_rules(args_path: Path, bridge: str) -> dict[str, object]:
    """What our chains must contain for libvirt's rules of one case."""
    input_ports: set[tuple[str, str, int]] = set()
    output_ports: set[tuple[str, str, int]] = set()
    to_accepts: set[str] = set()
    from_accepts: set[str] = set()
    nat: list[str] = []
    families_fenced: set[str] = set()
    cross = False
    for family, o, negate in read_args(args_path):
        proto = "ip" if family == "ipv4" else "ip6"
        table, chain = o["--table"], o["--insert"]
        jump = o["--jump"]
        if table == "mangle":
            continue  # the CHECKSUM fill of DHCP replies: not needed with nftables
        if table == "filter" and chain in ("LIBVIRT_INP", "LIBVIRT_OUT"):
            assert jump == "ACCEPT"
            target = input_ports if chain == "LIBVIRT_INP" else output_ports
            target.add((family, o["--protocol"], int(o["--destination-port"])))
        elif table == "filter" and chain == "LIBVIRT_FWX":
            assert (o["--in-interface"], o["--out-interface"], jump) == (bridge, bridge, "ACCEPT")
            cross = True
            families_fenced.add(family)
        elif table == "filter" and jump == "REJECT":
            families_fenced.add(family)
        elif table == "filter" and chain == "LIBVIRT_FWO":
            rule = f"{proto} saddr {_net(o['--source'])}"
            if "--out-interface" in o:
                rule += f' oifname "{o["--out-interface"]}"'
            from_accepts.add(rule + " accept")
        elif table == "filter" and chain == "LIBVIRT_FWI":
            rule = f"{proto} daddr {_net(o['--destination'])}"
            if "--in-interface" in o:
                rule += f' iifname "{o["--in-interface"]}"'
            if o.get("--ctstate") == "ESTABLISHED,RELATED":
                rule += " ct state established,related"
            to_accepts.add(rule + " accept")
        elif table == "nat":
            source = _net(o["--source"])
            destination = o["--destination"]
            rule = f"{proto} saddr {source} {proto} daddr "
            if jump == "RETURN":
                dest = ipaddress.ip_network(destination)
                rule += str(dest.network_address) if dest.num_addresses == 1 else str(dest)
                nat.append(rule + " return")
                continue
            assert negate and _net(destination) == source
            rule += f"!= {source}"
            if "--out-interface" in o:
                rule += f' oifname "{o["--out-interface"]}"'
            if "-p" in o:
                rule += f" meta l4proto {o['-p']}"
            if jump == "MASQUERADE":
                rule += " masquerade"
                if "--to-ports" in o:
                    rule += f" to :{o['--to-ports']}"
            else:
                assert jump == "SNAT"
                rule += f" snat {proto} to {o['--to-source']}"
            nat.append(rule)
        else:
            raise AssertionError(f"unexpected libvirt rule in {args_path.name}: {o}")
    return {
        "input": input_ports,
        "output": output_ports,
        "to_accepts": to_accepts,
        "from_accepts": from_accepts,
        "nat": nat,
        "fenced": families_fenced,
        "cross": cross,
    }


def our_ports(rules: list[str]) -> set[tuple[str, str, int]]:
    ports = set()
    for rule in rules:
        match = re.fullmatch(
            r"meta nfproto (ipv[46]) (?:meta l4proto \{ (.*) \} th dport|(tcp|udp) dport) "
            r"(?:\{ (.*) \}|(\d+)) accept",
            rule,
        )
        assert match, f"unexpected input/output rule {rule!r}"
        family, protos, proto, port_set, port = match.groups()
        for p in (protos.split(", ") if protos else [proto]):
            for number in (port_set.split(", ") if port_set else [port]):
                ports.add((family, p, int(number)))
    return ports


@pytest.fixture(scope="module")
def firewall_data(libvirt_corpus: Path) -> Path:
    return libvirt_corpus / "tests" / "networkxml2firewalldata"


@pytest.mark.parametrize("case", FIREWALL_CASES)
def test_libvirt_firewall_conformance(case: str, firewall_data: Path) -> None:
    from virtnet.spec.xml.parse import parse_network

    # stage: parse
    net = parse_network((firewall_data / f"{case}.xml").read_bytes(), source=f"{case}.xml")
    # stage: render
    chains = chains_of(firewall.render_ruleset(net))
    names = firewall.chain_names(net.name)
    # stage: compare
    want = expected_rules(firewall_data / f"{case}-linux.args", net.bridge_name)
    assert our_ports(chains[names.input]) == want["input"]
    assert our_ports(chains[names.output]) == want["output"]

    to_rules = chains[names.to_bridge]
    from_rules = chains[names.from_bridge]
    v6_return = "meta nfproto ipv6 return"
    fenced_v6 = "ipv6" in want["fenced"]
    assert "ipv4" in want["fenced"]
    assert (to_rules[0] == v6_return) is (not fenced_v6)
    assert (from_rules[0] == v6_return) is (not fenced_v6)
    to_body = [r for r in to_rules if r != v6_return]
    from_body = [r for r in from_rules if r != v6_return]
    # guest-to-guest first (LIBVIRT_FWX precedes LIBVIRT_FWI), the catch-all reject last
    assert want["cross"] and to_body[0] == f'iifname "{net.bridge_name}" accept'
    assert to_body[-1] == "reject" and from_body[-1] == "reject"
    assert set(to_body[1:-1]) == want["to_accepts"] and len(to_body[1:-1]) == len(want["to_accepts"])
    assert set(from_body[:-1]) == want["from_accepts"] and len(from_body[:-1]) == len(want["from_accepts"])

    nat_rules = chains.get(names.nat, [])
    assert sorted(nat_rules) == sorted(want["nat"])
    # per source network: exemptions before port-mapped rules before the catch-all
    for rule in nat_rules:
        source = rule.split(" daddr ")[0]
        same = [r for r in nat_rules if r.startswith(source + " ")]
        kinds = ["return" if r.endswith(" return") else "l4" if " l4proto " in r else "any" for r in same]
        assert kinds == sorted(kinds, key=["return", "l4", "any"].index), same


def test_every_libvirt_firewall_case_is_covered(firewall_data: Path) -> None:
    cases = sorted(p.name[: -len("-linux.args")] for p in firewall_data.glob("*-linux.args"))
    assert cases == sorted(FIREWALL_CASES)


# --- our own rules -----------------------------------------------------------------------------


def network(mode: ForwardMode | None, ips: list[IpDef], **forward: object) -> Network:
    return Network(
        name="n1",
        forward=Forward(mode=mode, **forward) if mode is not None else None,  # type: ignore[arg-type]
        bridge=Bridge(name="vbr9"),
        ips=ips,
    )


V4 = IpDef(address=A("10.1.2.1"), prefix=24, ranges=[DhcpRange(A("10.1.2.10"), A("10.1.2.20"))])
V6 = IpDef(family="ipv6", address=A("fd00:1::1"), prefix=64)


def test_open_has_no_firewall() -> None:
    net = network(ForwardMode.OPEN, [V4])
    assert not firewall.firewall_needed(net)
    with pytest.raises(ValueError, match="has no firewall"):
        firewall.render_ruleset(net)


def test_isolated_allows_only_guest_to_guest() -> None:
    net = network(None, [V4])
    chains = chains_of(firewall.render_ruleset(net))
    names = firewall.chain_names("n1")
    assert chains[names.to_bridge] == ["meta nfproto ipv6 return", 'iifname "vbr9" accept', "reject"]
    assert chains[names.from_bridge] == ["meta nfproto ipv6 return", "reject"]
    assert names.nat not in chains


def test_ipv6_yes_fences_ipv6_without_an_address() -> None:
    net = network(None, [V4])
    net.ipv6 = True
    chains = chains_of(firewall.render_ruleset(net))
    names = firewall.chain_names("n1")
    assert chains[names.to_bridge] == ['iifname "vbr9" accept', "reject"]
    assert not any("ipv6" in rule for rule in chains[names.input])  # no DHCPv6/DNS over v6


def test_nat_ipv6_is_routed_unless_nat_ipv6_yes() -> None:
    routed = chains_of(firewall.render_ruleset(network(ForwardMode.NAT, [V4, V6])))
    names = firewall.chain_names("n1")
    assert "ip6 daddr fd00:1::/64 accept" in routed[names.to_bridge]
    assert not any("ip6" in rule for rule in routed[names.nat])
    masq = chains_of(
        firewall.render_ruleset(network(ForwardMode.NAT, [V4, V6], nat=NatRange(ipv6=True)))
    )
    assert "ip6 daddr fd00:1::/64 ct state established,related accept" in masq[names.to_bridge]
    assert "ip6 saddr fd00:1::/64 ip6 daddr ff02::/16 return" in masq[names.nat]
    assert "ip6 saddr fd00:1::/64 ip6 daddr != fd00:1::/64 masquerade" in masq[names.nat]


def test_nat_address_range_and_ports() -> None:
    nat = NatRange(address_start=A("203.0.113.5"), address_end=A("203.0.113.9"), port_start=2000, port_end=3000)
    rules = chains_of(firewall.render_ruleset(network(ForwardMode.NAT, [V4], nat=nat)))
    assert rules[firewall.chain_names("n1").nat][2:] == [
        "ip saddr 10.1.2.0/24 ip daddr != 10.1.2.0/24 meta l4proto tcp snat ip to 203.0.113.5-203.0.113.9:2000-3000",
        "ip saddr 10.1.2.0/24 ip daddr != 10.1.2.0/24 meta l4proto udp snat ip to 203.0.113.5-203.0.113.9:2000-3000",
        "ip saddr 10.1.2.0/24 ip daddr != 10.1.2.0/24 snat ip to 203.0.113.5-203.0.113.9",
    ]
    start_only = NatRange(address_start=A("203.0.113.5"))
    rules = chains_of(firewall.render_ruleset(network(ForwardMode.NAT, [V4], nat=start_only)))
    assert rules[firewall.chain_names("n1").nat][2].endswith("snat ip to 203.0.113.5:1024-65535")


@pytest.mark.parametrize("ports", [(3000, 2000), (5, 5), (1, 70000)])
def test_invalid_nat_port_range_is_refused(ports: tuple[int, int]) -> None:
    net = network(ForwardMode.NAT, [V4], nat=NatRange(port_start=ports[0], port_end=ports[1]))
    with pytest.raises(ValidationError) as info:
        firewall.render_ruleset(net)
    assert info.value.problems[0].path == "/network/forward/nat/port"


def test_forward_dev_restricts_both_directions() -> None:
    net = network(ForwardMode.NAT, [V4], interfaces=[ForwardInterface(dev="eth7")])
    chains = chains_of(firewall.render_ruleset(net))
    names = firewall.chain_names("n1")
    assert 'ip saddr 10.1.2.0/24 oifname "eth7" accept' in chains[names.from_bridge]
    assert 'ip daddr 10.1.2.0/24 iifname "eth7" ct state established,related accept' in chains[names.to_bridge]
    assert all('oifname "eth7"' in rule for rule in chains[names.nat])


@pytest.mark.parametrize("bridge", ['vb"r', "vb r", "vb\\r", ""])
def test_unusable_bridge_names_are_refused(bridge: str) -> None:
    net = network(None, [V4])
    net.bridge = Bridge(name=bridge or None)
    with pytest.raises(ValidationError) as info:
        firewall.render_ruleset(net)
    assert info.value.problems[0].path == "/network/bridge/@name"


def test_chain_ids_are_safe_and_distinct() -> None:
    assert firewall.chain_id("default") == "default"
    ids = {firewall.chain_id(name) for name in ("a.b", "a_b", "a b", "a/b", "ä")}
    assert len(ids) == 5
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", i) for i in ids)
    long_name = "x" * 300
    assert len(firewall.chain_names(long_name).output) < 80


@pytest.mark.parametrize("mode", [None, ForwardMode.NAT, ForwardMode.ROUTE])
def test_teardown_removes_exactly_what_the_ruleset_adds(mode: ForwardMode | None) -> None:
    net = network(mode, [V4, V6])
    ruleset = firewall.render_ruleset(net)
    teardown = firewall.render_teardown(net)
    added_chains = set(re.findall(r"^add chain inet virtnet (net-\S+)", ruleset, re.M))
    deleted_chains = set(re.findall(r"^delete chain inet virtnet (\S+)", teardown, re.M))
    assert added_chains == deleted_chains
    added_keys = set(re.findall(r"^add element inet virtnet (\S+) \{ (\S+) :", ruleset, re.M))
    deleted_keys = set(re.findall(r"^delete element inet virtnet (\S+) \{ (\S+) \}", teardown, re.M))
    assert added_keys == deleted_keys
    # shared objects (base chains, maps, the table) are never deleted by one network
    assert not re.search(r"^delete (table|map)|^delete chain inet virtnet (forward|input|output)\b", teardown, re.M)


def test_rendering_is_pure_and_stays_in_our_table() -> None:
    net = network(ForwardMode.NAT, [V4, V6], nat=NatRange(ipv6=True))
    before = copy.deepcopy(net)
    first = firewall.render_ruleset(net) + firewall.render_teardown(net)
    assert first == firewall.render_ruleset(net) + firewall.render_teardown(net)
    assert net == before
    for line in first.splitlines():
        if line and not line.startswith("#"):
            assert " inet virtnet" in line, line
