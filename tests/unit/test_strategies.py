"""Unit tests of virtnet.testing.strategies, against our own parser and validator (the
differential test checks the same strategies against a live libvirtd).

A valid definition must parse and validate cleanly; a broken one must be refused at parse or
validate time. Derandomized, so every run checks the same examples.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import HealthCheck, Phase, find, given, settings

from virtnet.errors import XMLParseError
from virtnet.testing.strategies import (
    DEFECT_NAMES,
    BrokenNetwork,
    broken_network_xml,
    network_trees,
    network_xml,
)
from virtnet.validate import validate
from virtnet.xml.parse import parse_network

_SETTINGS = settings(derandomize=True, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.too_slow])


@settings(_SETTINGS, max_examples=150)
@given(xml=network_xml())
def test_valid_definitions_parse_and_validate(xml: str) -> None:
    problems = validate(parse_network(xml, source="generated.xml"))
    assert problems == [], f"{[str(p) for p in problems]}\n{xml}"


@settings(_SETTINGS, max_examples=60)
@given(xml=network_xml(newer_features=True, pci_pools=True))
def test_newer_feature_definitions_are_valid_for_us(xml: str) -> None:
    problems = validate(parse_network(xml, source="generated.xml"))
    assert problems == [], f"{[str(p) for p in problems]}\n{xml}"


@settings(_SETTINGS, max_examples=150)
@given(broken=broken_network_xml())
def test_broken_definitions_are_refused(broken: BrokenNetwork) -> None:
    assert broken.defect in DEFECT_NAMES
    try:
        net = parse_network(broken.xml, source="broken.xml")
    except XMLParseError:
        return  # refused at parse time
    assert validate(net), f"defect '{broken.defect}' was accepted:\n{broken.xml}"


# Hypothesis biases generation with constants found in the modules loaded in the session, so
# which examples a derandomized run draws depends on what else was imported. Coverage is
# therefore checked with find(): "some example has it", searched for within a bound.
_FIND = settings(derandomize=True, database=None, max_examples=2000, deadline=None,
                 phases=[Phase.generate, Phase.shrink])

FORWARD_MODES = ("none", "nat", "route", "open", "bridge", "private", "vepa", "passthrough",
                 "hostdev")
ELEMENTS = ("ip/dhcp/range", "ip/dhcp/host", "ip/dhcp/range/lease", "ip/tftp", "ip/dhcp/bootp",
            "route", "dns/host", "dns/srv", "dns/txt", "dns/forwarder", "domain", "portgroup",
            "portgroup/bandwidth", "portgroup/vlan", "bandwidth", "vlan", "virtualport", "mtu",
            "mac", "bridge", "forward/nat", "forward/interface", "forward/pf", "port")


def _mode(root: ET.Element) -> str:
    forward = root.find("forward")
    return "none" if forward is None else forward.get("mode") or "nat"


@pytest.mark.parametrize("mode", FORWARD_MODES)
def test_valid_strategy_covers_forward_mode(mode: str) -> None:
    found = find(network_trees(), lambda root: _mode(root) == mode, settings=_FIND)
    assert _mode(found) == mode


@pytest.mark.parametrize("path", ELEMENTS)
def test_valid_strategy_covers_element(path: str) -> None:
    found = find(network_trees(), lambda root: root.find(path) is not None, settings=_FIND)
    assert found.find(path) is not None


@pytest.mark.parametrize("defect", DEFECT_NAMES)
def test_broken_strategy_covers_defect(defect: str) -> None:
    found = find(broken_network_xml(), lambda broken: broken.defect == defect, settings=_FIND)
    assert found.defect == defect

