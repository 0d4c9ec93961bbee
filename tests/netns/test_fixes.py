"""The fix commands doctor suggests, applied in the lab, turn the cells they promise from "no"
into "yes" — and afterwards the whole matrix is again what reach predicts for the changed
topology (a fix must not break another cell).

Fixes run where they say: on the host (the lab's host namespace), on the LAN router (the lab's
LAN namespace) or on the external switch (the lab's switch namespace).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.kit.labfix import apply_fix
from virtnet.insight.lab import Lab
from virtnet.insight.lab_layout import LabOptions
from virtnet.insight.lab_report import LabCell
from virtnet.insight.reach_terms import ON_HOST, ON_LAN_ROUTER, ON_SWITCH, Fix
from virtnet.spec.xml.parse import parse_network

pytestmark = pytest.mark.netns

MACVTAP_BRIDGE = ("<network><name>mvbridge</name><forward mode='bridge'>"
                  "<interface dev='eth1'/></forward></network>")
VEPA = ("<network><name>mvvepa</name><forward mode='vepa'><interface dev='eth1'/></forward>"
        "</network>")
ROUTED = ("<network><name>routed</name><forward mode='route' dev='eth1'/>"
          "<bridge name='vntrt0' stp='off'/><ip address='192.168.150.1' prefix='24'/></network>")
NAT = ("<network><name>natnet</name><forward mode='nat'/><bridge name='vntnat0' stp='off'/>"
       "<ip address='192.168.122.1' prefix='24'/></network>")
OPEN = ("<network><name>opennet</name><forward mode='open'/><bridge name='vntopen0' stp='off'/>"
        "<ip address='192.168.160.1' prefix='24'/></network>")
HOSTBRIDGE = "<network><name>hostbr</name><forward mode='bridge'/><bridge name='br0'/></network>"


@pytest.fixture(autouse=True)
def _root() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (creates network namespaces)")


def unique_fixes(cells: list[LabCell]) -> list[Fix]:
    """Each fix once, in the order the cells name them."""
    seen: list[Fix] = []
    for cell in cells:
        for fix in cell.fix:
            if fix not in seen:
                seen.append(fix)
    return seen


MAX_ROUNDS = 3  # a fix may uncover the next "no" (a firewall, then a missing route)


def fix_and_verify(xml: str, hairpin: bool = False, before_start: str | None = None
                   ) -> tuple[list[LabCell], list[LabCell], list[Fix]]:
    """Measure, apply the suggested fixes (again for what they uncover, a bounded number of
    rounds), measure again; (before, after, fixes in the order applied)."""
    with Lab(parse_network(xml), xml, LabOptions(guests=2, hairpin=hairpin)) as lab:
        lab.build()
        if before_start is not None:
            apply_fix(lab, Fix(ON_HOST, before_start))
        lab.start_network()
        lab.add_guests()
        before = cells = lab.measure()
        applied: list[Fix] = []
        for _ in range(MAX_ROUNDS):
            assert [c for c in cells if not c.matches] == []
            fixes = [f for f in unique_fixes([c for c in cells if not c.predicted])
                     if f not in applied]
            if not fixes:
                break
            for fix in fixes:
                apply_fix(lab, fix)
            applied += fixes
            cells = lab.measure()
        after = cells
    promised = {(c.src, c.dst) for c in before if c.fix}
    assert promised, "the lab shows cells with fixes"
    turned = {(c.src, c.dst) for c in after if c.measured} & promised
    assert turned == promised, f"still no: {sorted(promised - turned)}"
    mismatches = [f"{c.src}→{c.dst}: predicted {c.predicted}, measured {c.measured}"
                  for c in after if not c.matches]
    assert mismatches == [], mismatches
    return before, after, applied


def test_host_shim_for_macvtap_bridge_mode() -> None:
    before, after, fixes = fix_and_verify(MACVTAP_BRIDGE)
    assert {(c.src, c.dst) for c in before if not c.measured} == {
        ("guest1", "host"), ("guest2", "host"), ("host", "guest1"), ("host", "guest2")}
    assert [f.where for f in fixes] == [ON_HOST] * 5
    assert fixes[0].command == "ip link add shim-eth1 link eth1 type macvlan mode bridge"
    assert all(c.measured for c in after)  # the host keeps its LAN and outside too


def test_hairpin_for_vepa() -> None:
    before, after, fixes = fix_and_verify(VEPA)
    assert [(f.where, f.command) for f in fixes] == [(ON_SWITCH,
                                                      "bridge link set dev sw1 hairpin on")]
    assert not next(c for c in before if (c.src, c.dst) == ("guest1", "guest2")).measured
    assert all(c.measured for c in after)


def test_lan_route_for_a_routed_network() -> None:
    before, after, fixes = fix_and_verify(ROUTED)
    assert [(f.where, f.command) for f in fixes] == [
        (ON_LAN_ROUTER, "ip route add 192.168.150.0/24 via 10.77.0.1")]
    for pair in [("lan", "guest1"), ("upstream", "guest2"), ("guest1", "upstream")]:
        assert not next(c for c in before if (c.src, c.dst) == pair).measured
    assert all(c.measured for c in after)


DOCKER_LIKE_DROP = ("nft add table ip filter && nft 'add chain ip filter FORWARD "
                    "{ type filter hook forward priority 0; policy drop; }'")


def test_a_forward_drop_firewall_then_the_lan_route_for_an_open_network() -> None:
    # what Docker leaves on a host: iptables-nft's FORWARD chain with policy drop; an open
    # network is left to the administrator's firewall, so doctor's fix is needed
    before, after, fixes = fix_and_verify(OPEN, before_start=DOCKER_LIKE_DROP)
    assert [(f.where, f.command) for f in fixes] == [
        (ON_HOST, 'nft insert rule ip filter FORWARD iifname "vntopen0" accept'),
        (ON_HOST, 'nft insert rule ip filter FORWARD oifname "vntopen0" accept'),
        (ON_LAN_ROUTER, "ip route add 192.168.160.0/24 via 10.77.0.1"),
    ]
    assert "drops forwarded traffic" in next(
        c for c in before if (c.src, c.dst) == ("guest1", "lan")).reason
    assert all(c.measured for c in after)


def test_nat_needs_no_fix_behind_the_same_firewall() -> None:
    """net-start lets a NAT network through the drop chain itself (virtnet.plan.coexist), as the
    prediction says."""
    xml = NAT
    with Lab(parse_network(xml), xml, LabOptions(guests=1)) as lab:
        lab.build()
        apply_fix(lab, Fix(ON_HOST, DOCKER_LIKE_DROP))
        lab.start_network()
        lab.add_guests()
        cells = lab.measure()
    assert [c for c in cells if not c.matches] == []
    assert next(c for c in cells if (c.src, c.dst) == ("guest1", "upstream")).measured


def test_hairpin_off_for_a_host_bridge_uplink() -> None:
    before, after, fixes = fix_and_verify(HOSTBRIDGE, hairpin=True)
    assert [(f.where, f.command) for f in fixes] == [(ON_SWITCH,
                                                      "bridge link set dev sw1 hairpin off")]
    assert all(c.measured for c in after)


def test_a_host_bridge_behind_a_forward_drop_with_br_netfilter() -> None:
    with Lab(parse_network(HOSTBRIDGE), HOSTBRIDGE, LabOptions(guests=1)) as probe_lab:
        probe_lab.build()
        if not probe_lab.topology().br_netfilter:
            pytest.skip("br_netfilter is not loaded: bridged frames skip the IP firewall")
    before, after, fixes = fix_and_verify(HOSTBRIDGE, before_start=DOCKER_LIKE_DROP)
    assert [(f.where, f.command) for f in fixes] == [
        (ON_HOST, 'nft insert rule ip filter FORWARD iifname "br0" accept'),
        (ON_HOST, 'nft insert rule ip filter FORWARD oifname "br0" accept'),
    ]
    assert not next(c for c in before if (c.src, c.dst) == ("guest1", "guest2")).measured
    assert all(c.measured for c in after)
