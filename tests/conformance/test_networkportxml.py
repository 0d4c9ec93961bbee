"""Conformance with libvirt 9.0's network port XML (tests/virnetworkportxml2xmldata) and with
its port allocation, on the network definitions of its own test corpus.

Stages:
- parse: ``parse_port`` must accept every corpus document, and must refuse (XMLParseError
  naming the element) each document derived from a corpus one by removing or spoiling what
  libvirt's parser requires;
- format: ``format_port`` of the parsed port;
- compare: the text must equal the corpus document byte for byte (libvirt's test formats
  each file and compares it with itself).
Allocation: ports allocated on corpus networks (networkxml2xmlin) get the plug libvirt's
networkAllocatePort gives for the network's forward mode, or its error.

The cases are the files found in the corpus at collection time; none is written down here.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from lxml import etree

from virtnet.errors import XMLParseError
from virtnet.spec.model import Network, PciAddress
from virtnet.spec.portdef import MacvtapMode, PlugType, PortDef
from virtnet.errors import PortError
from virtnet.plan.ports import PortRequest, allocate
from virtnet.spec.portdef import PoolUsage
from tests.kit.corpus import corpus_root
from virtnet.spec.validate import validate
from virtnet.spec.xml.parse import parse_network
from virtnet.spec.xml.portxml import format_port, parse_port

DATA_DIR = "tests/virnetworkportxml2xmldata"
NETWORKS_DIR = "tests/networkxml2xmlin"


def _port_files() -> list[Path]:
    root = corpus_root(fetch=True)
    assert root is not None
    files = sorted((root / DATA_DIR).glob("*.xml"))
    assert files, f"no port documents in {root / DATA_DIR}"
    return files


PORT_FILES = _port_files()


@pytest.mark.parametrize("path", PORT_FILES, ids=[p.stem for p in PORT_FILES])
def test_parse_format_compare(path: Path) -> None:
    text = path.read_text()
    port = parse_port(text, str(path))  # stage parse
    out = format_port(port)  # stage format
    assert out == text  # stage compare
    assert format_port(parse_port(out)) == out


# --- refusals at parse, derived from the corpus documents ------------------------------------


def _spoil(path: Path, xpath: str, action: str, attribute: str = "",
           value: str = "") -> str:
    root = etree.fromstring(path.read_bytes())
    [target] = root.xpath(xpath)
    if action == "remove":
        target.getparent().remove(target)
    elif action == "drop-attribute":
        del target.attrib[attribute]
    else:
        target.set(attribute, value)
    return etree.tostring(root, encoding="unicode")


def _file(stem: str) -> Path:
    [found] = [p for p in PORT_FILES if p.stem == stem]
    return found


SPOILED = [
    # corpus file, what is spoiled, the element path the error must name, libvirt's reason
    ("plug-none", ("/networkport/uuid", "remove"), "/networkport/uuid", "has no uuid"),
    ("plug-none", ("/networkport/owner/name", "remove"), "/networkport/owner/name",
     "has no owner name"),
    ("plug-none", ("/networkport/owner/uuid", "remove"), "/networkport/owner/uuid",
     "has no owner UUID"),
    ("plug-none", ("/networkport/mac", "remove"), "/networkport/mac", "has no mac"),
    ("plug-none", ("/networkport/mac", "set", "address", "01:00:5e:00:00:01"),
     "/networkport/mac/@address", "multicast"),
    ("plug-bridge", ("/networkport/plug", "set", "type", "ethernet"), "/networkport/plug/@type",
     "unknown plug type"),
    ("plug-bridge", ("/networkport/plug", "drop-attribute", "bridge"),
     "/networkport/plug/@bridge", "Missing network port bridge name"),
    ("plug-bridge-mactbl", ("/networkport/plug", "set", "macTableManager", "default"),
     "/networkport/plug/@macTableManager", "Invalid macTableManager setting"),
    ("plug-direct", ("/networkport/plug", "drop-attribute", "dev"), "/networkport/plug/@dev",
     "Missing network port link device name"),
    ("plug-direct", ("/networkport/plug", "set", "mode", "passthru"),
     "/networkport/plug/@mode", "Invalid mode setting"),
    ("plug-hostdev-pci", ("/networkport/plug/address", "remove"),
     "/networkport/plug/address", "Missing network port PCI address"),
    ("plug-hostdev-pci", ("/networkport/plug/driver", "set", "name", "default"),
     "/networkport/plug/driver/@name", "Missing network port driver name"),
    ("plug-hostdev-pci", ("/networkport/plug", "set", "managed", "maybe"),
     "/networkport/plug/@managed", "expected 'yes' or 'no'"),
    ("plug-network", ("/networkport/bandwidth", "set", "classID", "x"),
     "/networkport/bandwidth/@classID", "invalid classID"),
    ("plug-network", ("/networkport/rxfilters", "set", "trustGuest", "1"),
     "/networkport/rxfilters/@trustGuest", "expected 'yes' or 'no'"),
    ("plug-network", ("/networkport/port", "set", "isolated", "on"),
     "/networkport/port/@isolated", "expected 'yes' or 'no'"),
]


@pytest.mark.parametrize("stem, spoil, where, reason", SPOILED,
                         ids=[f"{c[0]}:{c[2]}:{c[1][1]}" for c in SPOILED])
def test_refused_at_parse(stem: str, spoil: tuple[str, ...], where: str, reason: str) -> None:
    text = _spoil(_file(stem), *spoil)
    with pytest.raises(XMLParseError) as caught:
        parse_port(text, "spoiled.xml")
    assert caught.value.path == where
    assert reason in caught.value.message


# --- allocation on corpus networks ----------------------------------------------------------


def _network(name: str) -> Network:
    root = corpus_root(fetch=True)
    assert root is not None
    net = parse_network((root / NETWORKS_DIR / f"{name}.xml").read_bytes(), name)
    assert validate(net) == [], f"{name} must be a valid network for this test"
    return net


def _allocate(net: Network, request: PortRequest,
              pool: list[str] | list[PciAddress] | None = None) -> PortDef:
    forward = net.forward
    if pool is None and forward is not None:
        pool = [i.dev for i in forward.interfaces] or list(forward.addresses)
    return allocate(net, request, PoolUsage(), port_uuid="5d744f21-ba4a-4d6e-bdb2-"
                    "30a35ff3207d", pool=pool)


MAC = "52:54:00:7b:35:93"
# libvirt's networkAllocatePort switch: forward mode -> plug type (bridge mode depends on
# whether the network names a bridge)
PLUG_OF_MODE = {
    "none": PlugType.NETWORK, "nat": PlugType.NETWORK, "route": PlugType.NETWORK,
    "open": PlugType.NETWORK, "private": PlugType.DIRECT, "vepa": PlugType.DIRECT,
    "passthrough": PlugType.DIRECT, "hostdev": PlugType.HOSTDEV_PCI,
}
ALLOCATED = ["nat-network", "isolated-network", "routed-network", "open-network",
             "host-bridge-net", "direct-net"]


@pytest.mark.parametrize("network", ALLOCATED)
def test_allocation_plugs_as_libvirt(network: str) -> None:
    net = _network(network)
    port = _allocate(net, PortRequest(mac=MAC, owner_name="memtest",
                                      owner_uuid="d54df46f-1ab5-4a22-8618-4560ef5fac2c"))
    mode = net.forward_mode.value
    if mode == "bridge":
        expected = PlugType.BRIDGE if net.bridge_name else PlugType.DIRECT
    else:
        expected = PLUG_OF_MODE[mode]
    assert port.plug_type is expected
    if expected in (PlugType.NETWORK, PlugType.BRIDGE):
        assert port.bridge == net.bridge_name
        assert port.dev is None and port.mode is None
    else:
        assert port.dev == net.forward.interfaces[0].dev
        assert port.mode is MacvtapMode(mode)
    text = format_port(port)
    assert parse_port(text) == port  # what we allocate, libvirt's parser layout reads back


def test_isolated_ports_network_isolates_its_ports() -> None:
    port = _allocate(_network("isolated-ports"), PortRequest(mac=MAC))
    assert port.isolated is True
    assert "<port isolated='yes'/>" in format_port(port)


def test_hostdev_pool_gives_the_first_free_vf() -> None:
    port = _allocate(_network("hostdev"), PortRequest(mac=MAC))
    assert port.plug_type is PlugType.HOSTDEV_PCI
    assert port.address == PciAddress(0, 3, 0, 1)
    assert "<plug type='hostdev-pci' managed='yes'>" in format_port(port)


def test_vepa_net_virtualports_conflict_as_in_libvirt() -> None:
    """vepa-net's network virtualport and both its portgroups' disagree on a parameter, so
    libvirt's three-way merge refuses every port of it."""
    net = _network("vepa-net")
    with pytest.raises(PortError, match="mismatched typeids"):  # default portgroup 'bob'
        _allocate(net, PortRequest(mac=MAC))
    with pytest.raises(PortError, match="mismatched managerids"):
        _allocate(net, PortRequest(mac=MAC, portgroup="alice"))


def test_network_bandwidth_is_not_a_ports_bandwidth() -> None:
    net = _network("bandwidth-network")
    port = _allocate(net, PortRequest(mac=MAC))
    assert port.bandwidth is None
    from virtnet.spec.model import Bandwidth, BandwidthRate

    floored = _allocate(net, PortRequest(mac=MAC, bandwidth=Bandwidth(
        inbound=BandwidthRate(floor=500))))
    assert floored.class_id == 3
    assert "<bandwidth classID='3'>" in format_port(floored)


def test_corpus_documents_are_not_changed_by_parsing() -> None:
    path = PORT_FILES[0]
    port = parse_port(path.read_text())
    before = copy.deepcopy(port)
    format_port(port)
    assert port == before
