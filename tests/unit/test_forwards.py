"""Port forwards, pure: flags, metadata round trip, validation, nftables rendering."""

from __future__ import annotations

import ipaddress

import pytest

from virtnet.render import nft as firewall
from virtnet.plan import forwards as planned
from virtnet.spec import forwards
from virtnet.service.engine import Engine
from virtnet.errors import ValidationError

NAT_XML = """<network>
  <name>web</name>
  <forward mode='nat'/>
  <bridge name='virbr9'/>
  {metadata}
  <ip address='192.168.50.1' netmask='255.255.255.0'/>
  <ip family='ipv6' address='fd00:50::1' prefix='64'/>
</network>"""

OTHER_METADATA = "<metadata><app:info xmlns:app='http://example.org/app'>keep me</app:info></metadata>"


def nat(metadata: str = "") -> object:
    return Engine.parse(NAT_XML.format(metadata=metadata), "web.xml")


@pytest.mark.parametrize("text,expected", [("80", (80, 80)), ("5000-5010", (5000, 5010))])
def test_port_ranges(text: str, expected: tuple[int, int]) -> None:
    assert forwards.parse_port_range(text) == expected


@pytest.mark.parametrize("text", ["0", "70000", "90-80", "a", "1-2-3", ""])
def test_bad_port_ranges_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        forwards.parse_port_range(text)


def test_targets_with_and_without_port() -> None:
    assert forwards.parse_target("10.0.0.5:80") == (ipaddress.ip_address("10.0.0.5"), 80)
    assert forwards.parse_target("10.0.0.5") == (ipaddress.ip_address("10.0.0.5"), None)
    assert forwards.parse_target("[fd00::5]:443") == (ipaddress.ip_address("fd00::5"), 443)
    assert forwards.parse_target("fd00::5") == (ipaddress.ip_address("fd00::5"), None)
    with pytest.raises(ValueError):
        forwards.parse_target("10.0.0.5:0")


def test_metadata_round_trip_keeps_other_namespaces() -> None:
    net = nat(OTHER_METADATA)
    wanted = [
        forwards.make_forward("tcp", "8080", "192.168.50.10:80"),
        forwards.make_forward("udp", "6000-6010", "fd00:50::10", "2001:db8::1"),
    ]
    forwards.write_forwards(net, wanted)
    text = Engine.format(net)
    assert forwards.NAMESPACE in text and "keep me" in text
    again = Engine.parse(text, "again.xml")
    assert forwards.read_forwards(again) == wanted
    forwards.write_forwards(again, [])
    assert forwards.read_forwards(again) == [] and "keep me" in (again.metadata or "")
    bare = nat()
    forwards.write_forwards(bare, wanted[:1])
    forwards.write_forwards(bare, [])
    assert bare.metadata is None


def test_bad_metadata_is_a_validation_error() -> None:
    bad = (f"<metadata><v:forwards xmlns:v='{forwards.NAMESPACE}'>"
           "<v:port proto='sctp' port='1' to='192.168.50.2'/></v:forwards></metadata>")
    with pytest.raises(ValidationError, match="protocol"):
        forwards.read_forwards(nat(bad))


def test_checks_name_each_problem() -> None:
    net = nat()
    problems = planned.check_forwards(net, [
        forwards.make_forward("tcp", "80", "10.9.9.9"),
        forwards.make_forward("tcp", "100-110", "192.168.50.3:7000"),
        forwards.make_forward("tcp", "8000", "192.168.50.4"),
        forwards.make_forward("tcp", "7990-8010", "192.168.50.5"),
        forwards.make_forward("udp", "8000", "192.168.50.5"),  # other protocol: fine
    ])
    reasons = [p.message for p in problems]
    assert len(reasons) == 3, reasons
    assert "none of the network's subnets" in reasons[0]
    assert "same ports" in reasons[1]
    assert "already forwarded" in reasons[2]
    isolated = Engine.parse("<network><name>i</name><bridge name='virbr8'/>"
                            "<ip address='192.168.51.1' prefix='24'/></network>", "i.xml")
    assert "nat or route" in planned.check_forwards(
        isolated, [forwards.make_forward("tcp", "1", "192.168.51.2")])[0].message


def test_ruleset_dnats_prerouting_and_output_and_hairpins() -> None:
    net = nat()
    fwd = [forwards.make_forward("tcp", "8080", "192.168.50.10:80"),
           forwards.make_forward("tcp", "443", "[fd00:50::10]:8443", "2001:db8::1")]
    text = firewall.render_forwards(net, fwd)
    chains = firewall.forward_chains("web")
    assert f"add chain inet virtnet {chains.pre} {{ type nat hook prerouting" in text
    assert f"add chain inet virtnet {chains.out} {{ type nat hook output" in text
    assert (f"add rule inet virtnet {chains.pre} meta nfproto ipv4 fib daddr type local "
            "tcp dport 8080 dnat ip to 192.168.50.10:80") in text
    assert (f"add rule inet virtnet {chains.out} meta nfproto ipv4 fib daddr type local "
            "ip daddr != 127.0.0.0/8 tcp dport 8080 dnat ip to 192.168.50.10:80") in text
    assert (f"add rule inet virtnet {chains.pre} ip6 daddr 2001:db8::1 tcp dport 443 "
            "dnat ip6 to [fd00:50::10]:8443") in text
    assert (f'add rule inet virtnet {chains.post} oifname "virbr9" ip saddr 192.168.50.0/24 '
            "ip daddr 192.168.50.10 tcp dport 80 ct status dnat masquerade") in text
    teardown = firewall.render_forwards_teardown(net)
    for chain in chains.all():
        assert f"delete chain inet virtnet {chain}" in teardown


def test_firewall_accepts_exactly_the_forwarded_connections() -> None:
    net = nat()
    plain = firewall.render_ruleset(net)
    assert "ct status dnat" not in plain  # libvirt's rules unchanged without forwards
    forwards.write_forwards(net, [forwards.make_forward("tcp", "8080", "192.168.50.10:80")])
    with_fwd = firewall.render_ruleset(net)
    to_chain = firewall.chain_names("web").to_bridge
    lines = [line for line in with_fwd.splitlines()
             if line.startswith(f"add rule inet virtnet {to_chain} ")]
    assert lines[-2].endswith("ip daddr 192.168.50.10 tcp dport 80 ct status dnat accept")
    assert lines[-1].endswith(" reject")


def test_plan_step_only_with_forwards_and_refuses_bad_ones() -> None:
    net = nat()
    assert planned.plan_actions(net) == []
    forwards.write_forwards(net, [forwards.make_forward("tcp", "22", "192.168.50.2")])
    (action,) = planned.plan_actions(net)
    assert action.kind == "load-forwards" and "1 port forward(s)" in action.describe()
    forwards.write_forwards(net, [forwards.make_forward("tcp", "22", "10.0.0.2")])
    with pytest.raises(ValidationError):
        planned.plan_actions(net)


def test_a_start_plan_parses_the_forwards_metadata_once() -> None:
    """The coexistence checks, the planner and the nft renderer all read the forwards: the
    metadata text is parsed once for them all, and each caller gets a list of its own."""
    from pathlib import Path

    from virtnet.facts import HostFacts
    from virtnet.paths import StatePaths
    from virtnet.plan.drivers.bridged import BridgedDriver
    from virtnet.plan.planner import day_two_actions

    net = nat(OTHER_METADATA)
    forwards.write_forwards(net, [forwards.make_forward("tcp", "8080", "192.168.50.10:80")])
    net.metadata = net.metadata.replace("keep me", "keep me once")  # a text no test read yet
    before = forwards._kept_forwards_in.cache_info()
    plan = BridgedDriver().plan_start(net, HostFacts(), StatePaths.under(Path("/state")))
    extra = day_two_actions(net)
    after = forwards._kept_forwards_in.cache_info()
    assert any("8080" in action.ruleset for action in extra if hasattr(action, "ruleset"))
    assert any("192.168.50.10 tcp dport 80 " in str(action) for action in plan.actions)
    assert after.misses - before.misses == 1
    assert after.hits - before.hits >= 1
    first = forwards.read_forwards(net)
    first.clear()
    assert len(forwards.read_forwards(net)) == 1
