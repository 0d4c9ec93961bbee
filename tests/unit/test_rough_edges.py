"""Issue #18's rough edges, their pure parts: libvirt's bridges skipped when virtnet allocates
a name where libvirt runs, doctor's warning for a subnet libvirt has, graph's named uplink and
page-sized picture, and rich's output when piped. The CLI end to end is in
tests/netns/test_netns_rough_edges.py."""

from __future__ import annotations

import ipaddress
import shutil
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from virtnet.spec.defaults import assign_defaults, libvirt_bridges_here
from virtnet.insight.doctor import HostView, diagnose, libvirt_overlaps
from virtnet.service.engine import Engine
from virtnet.facts import AddressInfo, HostFacts, KernelFeatures, LinkInfo, RouteInfo
from virtnet.insight.graph import drawn_topology, render, to_dot
from virtnet.host import HostProcess
from virtnet.host.libvirt import shares_init_netns
from virtnet.spec.libvirtnets import LibvirtNetwork, libvirt_bridges, libvirt_networks
from virtnet.paths import StatePaths
from virtnet.insight.reach_terms import Topology
from virtnet.spec.xml.parse import parse_network

ROOT = Path(__file__).resolve().parents[2]
NAT = ("<network><name>default</name><forward mode='nat'/><bridge name='virbr0'/>"
       "<ip address='192.168.122.1' prefix='24'><dhcp><range start='192.168.122.2' "
       "end='192.168.122.254'/></dhcp></ip></network>")
LIBVIRT_DEFAULT = (b"<network><name>default</name><bridge name='virbr0'/><forward/>"
                   b"<ip address='192.168.122.1' netmask='255.255.255.0'/></network>")
LIBVIRT_STATUS = (b"<networkstatus><class_id bitmap='0-2'/><network><name>lan</name>"
                  b"<bridge name='virbr1' stp='on'/><ip address='10.20.0.1' prefix='16'/>"
                  b"</network></networkstatus>")
FILES = [("/etc/libvirt/qemu/networks/default.xml", LIBVIRT_DEFAULT),
         ("/run/libvirt/network/lan.xml", LIBVIRT_STATUS),
         ("/run/libvirt/network/default.xml", LIBVIRT_DEFAULT),
         ("/etc/libvirt/qemu/networks/broken.xml", b"<network><name>x</nam"),
         ("/etc/libvirt/qemu/networks/nobridge.xml", b"<network><name>nb</name></network>")]


# --- 4(a): libvirt's bridge names ---------------------------------------------------------


def test_libvirt_bridges_from_definitions_and_status_files_tolerantly() -> None:
    assert libvirt_bridges(FILES) == ["virbr0", "virbr1"]
    nets = libvirt_networks(FILES)
    assert [(n.name, n.bridge) for n in nets] == [("default", "virbr0"), ("lan", "virbr1"),
                                                  ("default", "virbr0"), ("nb", None)]
    assert nets[1].subnets == (ipaddress.ip_network("10.20.0.0/16"),)


def test_an_allocated_bridge_skips_the_reserved_names_an_explicit_one_is_not_refused() -> None:
    net = assign_defaults(parse_network("<network><name>n</name></network>"),
                          other_bridges=[], link_in_use=lambda name: False,
                          reserved=lambda: ["virbr0", "virbr1"])
    assert net.bridge is not None and net.bridge.name == "virbr2"
    explicit = assign_defaults(parse_network("<network><name>e</name><bridge name='virbr0'/>"
                                             "</network>"),
                               other_bridges=[], link_in_use=lambda name: False,
                               reserved=lambda: pytest.fail("read although nothing allocated"))
    assert explicit.bridge is not None and explicit.bridge.name == "virbr0"


class _LibvirtHere(HostProcess):
    shared = True

    @classmethod
    def in_libvirt_netns(cls) -> bool:  # type: ignore[override]
        return cls.shared

    @staticmethod
    def libvirt_network_files(dirs: Any = None) -> list[tuple[str, bytes]]:  # type: ignore
        return FILES


def test_libvirts_bridges_count_only_in_libvirts_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    assert libvirt_bridges_here(_LibvirtHere) == ["virbr0", "virbr1"]
    monkeypatch.setattr(_LibvirtHere, "shared", False)
    assert libvirt_bridges_here(_LibvirtHere) == []
    assert isinstance(shares_init_netns(), bool)


def test_engine_allocates_past_libvirts_bridges_in_its_namespace(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(HostProcess, "in_libvirt_netns", staticmethod(lambda: True))
    monkeypatch.setattr(HostProcess, "libvirt_network_files",
                        staticmethod(lambda dirs=None: FILES))
    engine = Engine(StatePaths.under(tmp_path), link_in_use=lambda name: False)
    net = engine.define("<network><name>n</name><ip address='10.9.0.1' prefix='24'/></network>",
                        "test")
    assert net.bridge is not None and net.bridge.name == "virbr2"
    monkeypatch.setattr(HostProcess, "in_libvirt_netns", staticmethod(lambda: False))
    other = engine.define("<network><name>m</name></network>", "test")
    assert other.bridge is not None and other.bridge.name == "virbr0"  # as in a --netns


# --- 4(b): doctor warns of libvirt's subnets ------------------------------------------------


def _facts(default_dev: str | None = "eth0") -> HostFacts:
    links = {"lo": LinkInfo("lo", 1, None, True, "00:00:00:00:00:00", 65536, None),
             "eth0": LinkInfo("eth0", 2, None, True, "52:54:00:00:00:01", 1500, None)}
    routes = [RouteInfo(ipaddress.ip_network("10.0.0.0/24"), "eth0", None, 0, 2, 254)]
    if default_dev is not None:
        routes.append(RouteInfo(ipaddress.ip_network("0.0.0.0/0"), default_dev,
                                ipaddress.ip_address("10.0.0.1"), 0, 4, 254))
    return HostFacts(links=links, routes=routes,
                     addresses=[AddressInfo("eth0", ipaddress.ip_interface("10.0.0.5/24"))])


def _view(**extra: Any) -> HostView:
    return HostView(facts=_facts(), kernel=KernelFeatures(), ip_forward=True,
                    ruleset={"nftables": []}, **extra)


def test_doctor_warns_of_a_subnet_libvirt_defines_or_runs() -> None:
    net = parse_network(NAT)
    warnings = libvirt_overlaps(net, libvirt_networks(FILES))
    assert warnings == [
        "192.168.122.0/24 overlaps libvirt's network 'default' (192.168.122.0/24, "
        "/etc/libvirt/qemu/networks/default.xml and /run/libvirt/network/default.xml): "
        "where both run, their routes and DHCP collide"]
    report = diagnose(_view(libvirt=libvirt_networks(FILES)), [(net, None, [])])
    assert report.networks[0].warnings == warnings
    assert report.to_dict()["networks"][0]["warnings"] == warnings
    assert report.healthy  # a warning, not a problem
    other = LibvirtNetwork("far", "f.xml", "virbr3", (ipaddress.ip_network("10.1.0.0/16"),))
    assert libvirt_overlaps(net, [other]) == []
    assert diagnose(_view(), [(net, None, [])]).networks[0].warnings == []


# --- 3: graph ------------------------------------------------------------------------------


def test_graph_names_the_uplink_from_the_doctors_facts() -> None:
    net = parse_network(NAT)
    topo = drawn_topology(net, _view(), active=False, guests=2, hairpin=False)
    assert topo.outside_dev == "eth0" and topo.guests == 2
    assert 'uplink [label="uplink eth0\\n(of the default route)"]' in to_dot(net, None, topo)
    no_route = HostView(facts=_facts(None), kernel=KernelFeatures(), ruleset={"nftables": []})
    lonely = to_dot(net, None, drawn_topology(net, no_route, False, 2, False))
    assert "uplink\\n(none: no default route)" in lonely
    # the definition's device wins over the host's default route
    dev = parse_network(NAT.replace("<forward mode='nat'/>", "<forward mode='nat' dev='eth7'/>"))
    assert 'label="uplink eth7"' in to_dot(dev, None, drawn_topology(dev, _view(), False, 2,
                                                                     False))
    assert drawn_topology(net, None, False, 3, True) == Topology(guests=3, hairpin=True)


def test_graph_wraps_long_labels() -> None:
    net = parse_network("<network><name>hb</name><forward mode='bridge'/><bridge name="
                        "'br-with-a-rather-long-name0'/></network>")
    dot = to_dot(net, None, Topology(host_uplink_port="enp3s0f1np1"))
    assert "LAN interface enp3s0f1np1 (a port of\\nbr-with-a-rather-long-name0)" in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="needs Graphviz (apt-get install graphviz)")
def test_the_default_networks_picture_fits_a_page(tmp_path: Path) -> None:
    net = parse_network((ROOT / "examples" / "default.xml").read_text())
    png = tmp_path / "default.png"
    render(to_dot(net, None, Topology(outside_dev="eth0")), png)
    width, height = struct.unpack(">II", png.read_bytes()[16:24])
    assert width <= 1000, (width, height)  # it was 2384 px wide, laid out left to right


# --- 1: rich's output when piped -----------------------------------------------------------


def test_piped_console_is_wide_enough_for_any_row() -> None:
    code = ("from virtnet.face.cli import output_console; from rich.table import Table\n"
            "t = Table(); t.add_column('a'); t.add_column('b')\n"
            "t.add_row('x' * 30, 'y ' * 200)\n"
            "output_console().print(t)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True, env={"PATH": "/usr/bin:/bin",
                                                      "COLUMNS": "80"}).stdout
    rows = [line for line in out.splitlines() if "x" * 30 in line]
    assert len(rows) == 1 and ("y " * 199).strip() in rows[0], out
