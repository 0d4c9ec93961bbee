"""virtnet.insight.graph: the DOT text (pure) and its rendering with Graphviz's dot."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from virtnet.insight.graph import GraphError, GuestPort, guests_of_ports, render, to_dot
from virtnet.insight.reach_terms import Topology
from virtnet.spec.xml.parse import parse_network

NAT = ("<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>"
       "<ip address='192.168.122.1' prefix='24'><dhcp><range start='192.168.122.2' "
       "end='192.168.122.254'/></dhcp></ip></network>")
VEPA = ("<network><name>lab</name><forward mode='vepa'><interface dev='eth1'/>"
        "<interface dev='eth2'/></forward></network>")


def red_edges(dot: str) -> list[tuple[str, str, str]]:
    """(from, to, dir) of the edges marking unreachable pairs."""
    return [(a, b, d) for a, b, d in re.findall(
        r"^  (\w+) -> (\w+) \[color=\"#c62828\".*dir=(\w+)", dot, re.M)]


def test_nat_picture_names_the_pieces_and_marks_what_nat_keeps_out() -> None:
    dot = to_dot(parse_network(NAT))
    assert dot.startswith("digraph virtnet {") and dot.rstrip().endswith("}")
    for text in ("bridge virbr0", "192.168.122.1/24", "DHCP 192.168.122.2 – 192.168.122.254",
                 "NAT (masquerade)", "guest1", "guest2", "external switch", "outside (upstream)",
                 "forward mode nat"):
        assert text in dot, text
    # LAN and outside cannot open connections to guests; guests reach everything
    assert sorted(red_edges(dot)) == [("lan", "guest1", "forward"), ("lan", "guest2", "forward"),
                                      ("upstream", "guest1", "forward"),
                                      ("upstream", "guest2", "forward")]
    assert "LAN→guest" in dot and "predicted reachability" in dot


def test_vepa_picture_with_ports_and_hairpin() -> None:
    net = parse_network(VEPA)
    guests = guests_of_ports([
        {"device": "macvtap0", "mac": "52:54:00:00:00:01", "uplink": "eth1", "owner": "vm-a"},
        {"device": "macvtap1", "mac": "52:54:00:00:00:02", "uplink": "eth1", "owner": None},
        {"device": "macvtap2", "mac": "52:54:00:00:00:03", "uplink": "eth2", "owner": "vm-c"},
    ])
    assert [g.name for g in guests] == ["guest1", "guest2", "guest3"]
    dot = to_dot(net, guests, Topology(guests=3))
    assert "macvtap0\\nmode vepa" in dot and "guest1 (vm-a)\\n52:54:00:00:00:01" in dot
    assert "uplink1 -> dev_guest3" in dot  # guest3's device hangs off eth2
    edges = red_edges(dot)
    # the two guests on eth1 cannot meet without hairpin; guest3 (eth2) meets both
    assert ("guest1", "guest2", "both") in edges
    assert not [e for e in edges if "guest3" in e[:2] and "host" not in e[:2]]
    assert "hairpin off" in dot
    hairpin = to_dot(net, guests, Topology(guests=3, hairpin=True))
    assert red_edges(hairpin) == [] and "hairpin on" in hairpin


def test_host_bridge_and_isolated_pictures() -> None:
    dot = to_dot(parse_network("<network><name>h</name><forward mode='bridge'/>"
                               "<bridge name='br0'/></network>"))
    assert "host bridge br0" in dot and red_edges(dot) == []
    isolated = to_dot(parse_network("<network><name>i</name><bridge name='virbr9'/>"
                                    "<ip address='10.9.0.1' prefix='24'/></network>"),
                      [GuestPort("guest1", "vnet3")])
    assert "vnet3" in isolated
    assert ("guest1", "lan", "both") in red_edges(isolated)


def test_quoting_is_safe() -> None:
    dot = to_dot(parse_network(NAT.replace("<name>default</name>", "<name>a\"b</name>")))
    assert 'network a\\"b' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz (apt-get install graphviz)")
def test_render_png_and_svg(tmp_path: Path) -> None:
    dot = to_dot(parse_network(VEPA))
    png, svg = tmp_path / "t.png", tmp_path / "t.svg"
    render(dot, png)
    render(dot, svg)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text() and "guest1" in svg.read_text()
    with pytest.raises(GraphError, match="must be .svg or .png"):
        render(dot, tmp_path / "t.gif")
